#!/bin/bash
# Fetch Debian kernels into a private cache and run kbuild against them.
#
#   tests/kernels.sh fetch NAME...             download and unpack kernels
#   tests/kernels.sh info NAME                 print KVER, KDIR, VMLINUZ, MODDIR, ENV
#   tests/kernels.sh run NAME -- CMD...        run CMD in NAME's build environment
#   tests/kernels.sh kbuild NAME -- ARGS...    run `make -C KDIR ARGS...` there
#   tests/kernels.sh mirrors                   print the mirrors fetch uses
#
# The build environment is the host, or for kernels built with a compiler
# other than the host's gcc-12 a chroot with that compiler, make and dkms, in
# which the repo and every absolute M= directory appear at their host paths.
#
# NAME is one of: 5.10 6.1 6.1-rt 6.12 6.12-rt 7.x
#
# Mirror: the base URIs of the Debian archive and of its security archive
# are those of the host's apt sources (Dir::Etc::sourcelist and the *.list
# and *.sources files of Dir::Etc::sourceparts): the first deb entry with a
# main component that is Debian's (by its Release file's Origin where the
# host's apt lists have it, else by its suite: bookworm, trixie-backports,
# sid, ...), and the first that is Debian's security archive (Label
# Debian-Security, or a -security suite).  Without the latter, the security
# base is the Debian base with its path component "debian" spelt
# "debian-security".  The environment overrides them:
#   KLP_DEBIAN_MIRROR=URI            Debian archive base (as in a sources entry)
#   KLP_DEBIAN_SECURITY_MIRROR=URI   security archive base (default: derived
#                                    from KLP_DEBIAN_MIRROR when that is set)
# The mirror must serve every suite in SUITES; fetch prints what it uses.
#
# Everything lives under tests/.cache/: a private apt configuration (the
# host's apt sources are only read, never changed), one unpacked root per
# kernel, and chroots for kernels whose compiler the host does not have.
set -euo pipefail

TESTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(dirname "$TESTS_DIR")
CACHE=$TESTS_DIR/.cache
APT_DIR=$CACHE/apt
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
readonly TESTS_DIR REPO_ROOT CACHE APT_DIR KEYRING

# Meta-package that names the newest image of each kernel line ...
declare -rA META=(
    [5.10]=linux-image-amd64
    [6.1]=linux-image-amd64
    [6.1-rt]=linux-image-rt-amd64
    [6.12]=linux-image-6.12-amd64
    [6.12-rt]=linux-image-6.12-rt-amd64
    [7.x]=linux-image-amd64
)
# ... and the suites it may come from (bookworm-backports carries a 6.12
# linux-image-amd64, so it is not a source for 6.1).
declare -rA SUITES=(
    [5.10]="bullseye bullseye-security"
    [6.1]="bookworm bookworm-security"
    [6.1-rt]="bookworm bookworm-security"
    [6.12]="bookworm bookworm-security bookworm-backports"
    [6.12-rt]="bookworm bookworm-security bookworm-backports"
    [7.x]="sid"
)
# Kernels built with a compiler other than the host's gcc-12 are built in a
# chroot of this suite; the others are built on the host.
declare -rA CHROOT_SUITE=(
    [5.10]=bullseye
    [7.x]=sid
)

# Suite names of the Debian archive, and of its security archive, by which
# the host's apt sources are recognised.
DEBIAN_SUITE_RE='^(buster|bullseye|bookworm|trixie|forky|duke|sid|oldoldstable|oldstable|stable|testing|unstable|experimental)(-updates|-backports|-backports-sloppy|-proposed-updates)?$'
SECURITY_SUITE_RE='^(buster|bullseye|bookworm|trixie|forky|duke|oldoldstable|oldstable|stable|testing)(-security|/updates)$'
readonly DEBIAN_SUITE_RE SECURITY_SUITE_RE

# Binary packages of the kernel itself, as opposed to host tools.
KERNEL_PKG_RE='^linux-(headers|kbuild|binary|modules|base|image)-'
readonly KERNEL_PKG_RE

# Private apt state and sources. The binary package cache is kept even where
# the host's apt configuration disables it: rebuilding it costs seconds per
# apt-cache call. Release files are accepted past their Valid-Until, as the
# archive may be served from a snapshot.
APT_OPTS=(
    -o "Dir::State=$APT_DIR/state"
    -o "Dir::Cache=$APT_DIR/cache"
    -o Dir::Cache::pkgcache=pkgcache.bin
    -o "Dir::Etc::SourceList=$APT_DIR/sources.list"
    -o Dir::Etc::SourceParts=/dev/null
    -o Dir::Etc::Preferences=/dev/null
    -o Dir::Etc::PreferencesParts=/dev/null
    -o Acquire::Languages=none
    -o Acquire::Check-Valid-Until=false
    -o APT::Sandbox::User=root
)
readonly APT_OPTS

usage() {
    awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' \
        "${BASH_SOURCE[0]}" >&2
    exit 2
}

die() {
    echo "kernels.sh: $*" >&2
    exit 1
}

check_name() {
    [[ -n ${META[$1]+set} ]] || die "unknown kernel '$1' (known: ${!META[*]})"
}

kernel_root() {
    echo "$CACHE/kernels/$1"
}

chroot_dir() {
    echo "$CACHE/chroot/${CHROOT_SUITE[$1]}"
}

# --- mirror -------------------------------------------------------------------

# The host's apt source files, in the order apt reads them.
host_source_files() {
    local SOURCELIST='' SOURCEPARTS=''
    eval "$(apt-config shell SOURCELIST Dir::Etc::sourcelist/f \
        SOURCEPARTS Dir::Etc::sourceparts/d)"
    [[ ! -f $SOURCELIST ]] || echo "$SOURCELIST"
    [[ ! -d $SOURCEPARTS ]] ||
        LC_ALL=C find "$SOURCEPARTS" -maxdepth 1 -type f \
            \( -name '*.list' -o -name '*.sources' \) | LC_ALL=C sort
}

# "KIND URI SUITE SOURCE" for the binary entries of the host's apt sources
# with a main component, in the order apt reads them; KIND is debian,
# security or other. First those whose Release file the host's apt has (the
# kind from its Origin and Label), then every entry of the source files
# (one-line .list and deb822 .sources), the kind from the suite's name.
host_sources() {
    # shellcheck disable=SC2016 # apt's format, not the shell's
    apt-get indextargets --format \
        '$(TARGET_OF)|$(IDENTIFIER)|$(COMPONENT)|$(REPO_URI)|$(RELEASE)|$(ORIGIN)|$(LABEL)|$(SOURCESENTRY)' \
        2>/dev/null | awk -F'|' '
        $1 == "deb" && $2 == "Packages" && $3 == "main" && !seen[$4 " " $5]++ {
            kind = "other"
            if ($7 == "Debian-Security") kind = "security"
            else if ($6 == "Debian" || $6 == "Debian Backports") kind = "debian"
            print kind, $4, $5, $8
        }'
    local -a files
    mapfile -t files < <(host_source_files)
    ((${#files[@]})) || return 0
    awk -v debian="$DEBIAN_SUITE_RE" -v security="$SECURITY_SUITE_RE" '
        function out(uri, suite, where) {
            if (suite ~ security) print "security", uri, suite, where
            else if (suite ~ debian) print "debian", uri, suite, where
        }
        function flush(   nu, ns, u, s, uri, suite) {
            if (enabled != "no" && (" " types " ") ~ /[ \t]deb[ \t]/ &&
                (" " comps " ") ~ /[ \t]main[ \t]/) {
                nu = split(uris, uri, /[ \t]+/)
                ns = split(suites, suite, /[ \t]+/)
                for (u = 1; u <= nu; u++)
                    for (s = 1; s <= ns; s++)
                        if (uri[u] != "" && suite[s] != "")
                            out(uri[u], suite[s], file ":" line)
            }
            types = uris = suites = comps = enabled = field = ""
        }
        FNR == 1 { flush(); deb822 = FILENAME ~ /\.sources$/ }
        !deb822 {
            sub(/#.*/, "")
            gsub(/\[[^]]*\]/, " ")
            $0 = $0
            if ($1 == "deb" && (" " $0 " ") ~ /[ \t]main[ \t]/)
                out($2, $3, FILENAME ":" FNR)
            next
        }
        /^#/ { next }
        /^[ \t]*$/ { flush(); next }
        /^[ \t]/ {
            if (field == "types") types = types " " $0
            else if (field == "uris") uris = uris " " $0
            else if (field == "suites") suites = suites " " $0
            else if (field == "components") comps = comps " " $0
            next
        }
        {
            if (field == "") { file = FILENAME; line = FNR }
            field = tolower(substr($0, 1, index($0, ":") - 1))
            value = substr($0, index($0, ":") + 1)
            if (field == "types") types = value
            else if (field == "uris") uris = value
            else if (field == "suites") suites = value
            else if (field == "components") comps = value
            else if (field == "enabled") enabled = tolower(value)
            gsub(/[ \t]/, "", enabled)
        }
        END { flush() }
    ' "${files[@]}"
}

# Set MIRROR and SECURITY_MIRROR (and where each came from) once.
MIRROR='' SECURITY_MIRROR='' MIRROR_FROM='' SECURITY_MIRROR_FROM=''
resolve_mirrors() {
    [[ -z $MIRROR ]] || return 0
    local kind uri suite from
    local -A other=()
    if [[ -n ${KLP_DEBIAN_MIRROR-} ]]; then
        MIRROR=$KLP_DEBIAN_MIRROR MIRROR_FROM="from KLP_DEBIAN_MIRROR"
    fi
    if [[ -n ${KLP_DEBIAN_SECURITY_MIRROR-} ]]; then
        SECURITY_MIRROR=$KLP_DEBIAN_SECURITY_MIRROR
        SECURITY_MIRROR_FROM="from KLP_DEBIAN_SECURITY_MIRROR"
    fi
    while read -r kind uri suite from; do
        uri=${uri%/}
        # Not Debian's, by its Release file, whatever its suite is called.
        [[ $kind == other ]] && other["$uri $suite"]=1
        [[ $uri == cdrom:* || -n ${other["$uri $suite"]-} ]] && continue
        if [[ -z $MIRROR && $kind == debian ]]; then
            MIRROR=$uri MIRROR_FROM="from $from, $suite"
        elif [[ -z $SECURITY_MIRROR && -z ${KLP_DEBIAN_MIRROR-} &&
            $kind == security ]]; then
            SECURITY_MIRROR=$uri SECURITY_MIRROR_FROM="from $from, $suite"
        fi
    done < <(host_sources)
    [[ -n $MIRROR ]] || die "no Debian archive in the host's apt sources" \
        "($(host_source_files | xargs): no entry for bookworm, trixie, sid, ...);" \
        "set KLP_DEBIAN_MIRROR to the base URI of a Debian mirror, as in a" \
        "sources.list entry"
    MIRROR=${MIRROR%/}
    if [[ -z $SECURITY_MIRROR ]]; then
        [[ $MIRROR =~ ^(.*/)debian(/.*)?$ ]] ||
            die "cannot derive the security archive from $MIRROR; set" \
                "KLP_DEBIAN_SECURITY_MIRROR to its base URI"
        SECURITY_MIRROR=${BASH_REMATCH[1]}debian-security${BASH_REMATCH[2]}
        SECURITY_MIRROR_FROM="derived from $MIRROR"
    fi
    SECURITY_MIRROR=${SECURITY_MIRROR%/}
}

# --- private apt --------------------------------------------------------------

cmd_mirrors() {
    (($# == 0)) || usage
    resolve_mirrors
    echo "mirror: $MIRROR ($MIRROR_FROM)"
    echo "security mirror: $SECURITY_MIRROR ($SECURITY_MIRROR_FROM)"
}

apt_update() {
    cmd_mirrors
    mkdir -p "$APT_DIR/state/lists/partial" "$APT_DIR/cache/archives/partial"
    local suite
    {
        for suite in bullseye bookworm bookworm-backports sid; do
            echo "deb [signed-by=$KEYRING] $MIRROR $suite main"
        done
        for suite in bullseye-security bookworm-security; do
            echo "deb [signed-by=$KEYRING] $SECURITY_MIRROR $suite main"
        done
    } >"$APT_DIR/sources.list"
    apt-get "${APT_OPTS[@]}" -qq update ||
        die "apt-get update failed: the mirrors above must serve" \
            "$(sed 's/.* \([^ ]*\) main$/\1/' "$APT_DIR/sources.list" | xargs)"
}

# Newest version of package $1 in any of the suites $2 (space separated).
newest_version() {
    apt-cache "${APT_OPTS[@]}" madison "$1" |
        awk -F' [|] ' -v suites=" $2 " '{
            split($3, url, " "); split(url[2], dist, "/")
            if (index(suites, " " dist[1] " ")) { print $2; exit }
        }' | tr -d ' '
}

# Names in the Depends of package $1 at version $2, one per line, every
# alternative included.
depends_of() {
    apt-cache "${APT_OPTS[@]}" show "$1=$2" | sed -n 's/^Depends: //p' | head -n1 |
        tr ',|' '\n' | awk '{ print $1 }'
}

has_version() {
    apt-cache "${APT_OPTS[@]}" show "$1=$2" >/dev/null 2>&1
}

# --- fetch --------------------------------------------------------------------

# Rewrite the absolute symlinks and Makefile includes of the unpacked packages
# so that the tree works in place, without anything under the host's /usr/src.
relocate_tree() {
    local root=$1 kver=$2 link target
    while IFS= read -r -d '' link; do
        target=$root$(readlink "$link")
        target=$(realpath -ms --relative-to="$(dirname "$link")" "$target")
        ln -sfn "$target" "$link"
    done < <(find "$root" -type l -lname '/*' -print0)
    sed -i "s|/usr/src/|$root/usr/src/|g" \
        "$root/usr/src/linux-headers-$kver/Makefile"
}

fetch_kernel() {
    local name=$1 root meta version kver image
    root=$(kernel_root "$name")
    meta=${META[$name]}
    version=$(newest_version "$meta" "${SUITES[$name]}")
    [[ -n $version ]] || die "$name: no $meta in ${SUITES[$name]}"
    kver=$(depends_of "$meta" "$version" | sed -n 's/^linux-image-//p' | head -n1)
    [[ -n $kver ]] || die "$name: $meta $version depends on no linux-image-*"

    if [[ -f $root/.fetched ]] && grep -qxF "VERSION=$version" "$root/.fetched"; then
        echo "$name: $kver ($version) already fetched"
        return
    fi
    echo "$name: fetching $kver ($version)"

    image=linux-image-$kver-unsigned
    has_version "$image" "$version" || image=linux-image-$kver
    # All binary packages of the kernel share the source version, so walk the
    # kernel packages in the Depends closure and take each at that version.
    local -a todo=("$image" "linux-headers-$kver") pkgs=() host_deps=()
    local pkg dep
    while ((${#todo[@]})); do
        pkg=${todo[0]}
        todo=("${todo[@]:1}")
        [[ " ${pkgs[*]} " == *" $pkg "* ]] && continue
        has_version "$pkg" "$version" || die "$name: $pkg $version not found"
        pkgs+=("$pkg")
        for dep in $(depends_of "$pkg" "$version"); do
            if [[ $dep =~ $KERNEL_PKG_RE ]]; then
                [[ $dep == linux-image-* ]] || todo+=("$dep")
            elif [[ $pkg =~ ^linux-(headers|kbuild)- && $dep != linux-base ]]; then
                host_deps+=("$dep")
            fi
        done
    done

    local debs=$root.debs
    rm -rf "$root" "$debs"
    mkdir -p "$root" "$debs"
    (cd "$debs" && apt-get "${APT_OPTS[@]}" -qq download "${pkgs[@]/%/=$version}")
    for pkg in "$debs"/*.deb; do
        dpkg -x "$pkg" "$root"
    done
    rm -rf "$debs"
    relocate_tree "$root" "$kver"
    printf '%s\n' "VERSION=$version" "KVER=$kver" "HOST_DEPS=${host_deps[*]}" \
        >"$root/.fetched"
}

cmd_fetch() {
    (($#)) || usage
    local name
    for name; do
        check_name "$name"
    done
    # One fetch at a time: they share the apt state and may share kernels.
    mkdir -p "$CACHE"
    local lock
    exec {lock}>"$CACHE/fetch.lock"
    flock "$lock"
    apt_update
    for name; do
        fetch_kernel "$name"
    done
}

# --- info ---------------------------------------------------------------------

# Value of KEY in the .fetched stamp of kernel $1.
stamp() {
    local file
    file=$(kernel_root "$1")/.fetched
    [[ -f $file ]] || die "$1: not fetched; run: tests/kernels.sh fetch $1"
    sed -n "s/^$2=//p" "$file"
}

cmd_info() {
    (($# == 1)) || usage
    local name=$1 root kver moddir vmlinuz env=host
    check_name "$name"
    root=$(kernel_root "$name")
    kver=$(stamp "$name" KVER)
    # Newer kernels are usr-merged and keep vmlinuz beside the modules.
    moddir=$root/lib/modules/$kver
    [[ -d $moddir ]] || moddir=$root/usr/lib/modules/$kver
    vmlinuz=$root/boot/vmlinuz-$kver
    [[ -f $vmlinuz ]] || vmlinuz=$moddir/vmlinuz
    [[ -n ${CHROOT_SUITE[$name]+set} ]] && env=chroot:$(chroot_dir "$name")
    printf '%s=%q\n' \
        KVER "$kver" \
        KDIR "$root/usr/src/linux-headers-$kver" \
        VMLINUZ "$vmlinuz" \
        MODDIR "$moddir" \
        ENV "$env"
}

# --- run, kbuild --------------------------------------------------------------

# Create (once) the chroot for kernel $1 with make, dkms and the host packages
# its headers and kbuild depend on; recreate it when that list changes.
ensure_chroot() {
    local name=$1 dir pkgs
    dir=$(chroot_dir "$name")
    pkgs=$(stamp "$name" HOST_DEPS | tr ' ' '\n' | sort -u | tr '\n' ',')make,dkms
    [[ -f $dir/.pkgs && $(<"$dir/.pkgs") == "$pkgs" ]] && return
    resolve_mirrors
    echo "$name: creating ${CHROOT_SUITE[$name]} chroot from $MIRROR with $pkgs" >&2
    rm -rf "$dir" "$dir.tmp"
    mkdir -p "$(dirname "$dir")"
    # mmdebstrap rather than debootstrap: it installs with apt in one go,
    # which takes a third of the time, and its "essential" variant is leaner
    # than minbase.
    mmdebstrap --variant=essential --include="$pkgs" --keyring="$KEYRING" \
        --aptopt='Acquire::Check-Valid-Until "false"' \
        "${CHROOT_SUITE[$name]}" "$dir.tmp" "$MIRROR" >"$dir.log" 2>&1 ||
        die "mmdebstrap failed, see $dir.log"
    echo "$pkgs" >"$dir.tmp/.pkgs"
    mv "$dir.tmp" "$dir"
}

# Run "$@" chrooted into $1 in a private mount namespace in which the repo and
# every absolute M= directory appear at their host paths, so that paths on the
# command line mean the same inside and out. The command runs in the chroot's
# /, so relative paths on its command line do not work.
run_in_chroot() {
    local dir=$1 arg bound
    shift
    local -a binds=("$REPO_ROOT")
    for arg; do
        [[ $arg == M=/?* && -d ${arg#M=} ]] || continue
        for bound in "${binds[@]}"; do
            [[ ${arg#M=}/ == "$bound"/* ]] && continue 2
        done
        binds+=("${arg#M=}")
    done
    # shellcheck disable=SC2016 # expanded by the inner shell
    unshare --mount --propagation private -- bash -euo pipefail -c '
        dir=$1
        shift
        mount --bind /dev "$dir/dev"
        mount -t proc proc "$dir/proc"
        while [[ $1 != -- ]]; do
            mkdir -p "$dir$1"
            mount --bind "$1" "$dir$1"
            shift
        done
        shift
        exec chroot "$dir" "$@"
    ' bash "$dir" "${binds[@]}" -- \
        env -i HOME=/root LC_ALL=C.UTF-8 \
        PATH=/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin "$@"
}

cmd_run() {
    if (($# < 3)) || [[ $2 != -- ]]; then
        usage
    fi
    local name=$1
    check_name "$name"
    stamp "$name" KVER >/dev/null
    shift 2
    if [[ -n ${CHROOT_SUITE[$name]+set} ]]; then
        ensure_chroot "$name"
        run_in_chroot "$(chroot_dir "$name")" "$@"
    else
        "$@"
    fi
}

cmd_kbuild() {
    if (($# < 2)) || [[ $2 != -- ]]; then
        usage
    fi
    local name=$1 kdir
    check_name "$name"
    shift 2
    kdir=$(kernel_root "$name")/usr/src/linux-headers-$(stamp "$name" KVER)
    cmd_run "$name" -- make -C "$kdir" "$@"
}

main() {
    (($#)) || usage
    local cmd=$1
    shift
    case $cmd in
    fetch) cmd_fetch "$@" ;;
    info) cmd_info "$@" ;;
    run) cmd_run "$@" ;;
    kbuild) cmd_kbuild "$@" ;;
    mirrors) cmd_mirrors "$@" ;;
    *) usage ;;
    esac
}

main "$@"
