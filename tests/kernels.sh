#!/bin/bash
# Fetch Debian kernels into a private cache and run kbuild against them.
#
#   tests/kernels.sh fetch NAME...             download and unpack kernels and
#                                              prepare their build environments
#   tests/kernels.sh build NAME...             build the kernels of BUILT named
#                                              (fetch does too, if need be)
#   tests/kernels.sh image NAME                build a guest's kernel of BUILT
#                                              if need be, print its image's path
#   tests/kernels.sh info NAME                 print KVER, KDIR, VMLINUZ, MODDIR,
#                                              ENV, COMPILER, SUITE, HEADER_DEBS
#   tests/kernels.sh run NAME -- CMD...        run CMD in NAME's build environment
#   tests/kernels.sh kbuild NAME -- ARGS...    run `make -C KDIR ARGS...` there
#   tests/kernels.sh names NAME...             print each NAME's canonical name
#   tests/kernels.sh built                     print the names of BUILT
#   tests/kernels.sh mirrors                   print the mirrors fetch uses
#
# NAME is one of: 5.10 6.1 6.1-rt 6.12-bookworm 6.12-bookworm-rt 6.12-trixie
# 6.12-trixie-rt 7.3 7.3-rt 7.x-sid 7.x-sid-rt (6.12, 6.12-rt and 7.x are
# older names of 6.12-bookworm, 6.12-bookworm-rt and 7.x-sid).  Each is the
# newest build of that line in its suites (see SUITES below).  NAME may also
# be 6.12-debug, a kernel built here from Debian's source (see BUILT below):
# its first fetch builds it (about 16 min on 2 cores), later ones take it
# from KLP_BUILD_CACHE (default ~/.cache/kvm-lapic-pin), kept across clones.
# The real guest's kernel, guest-6.12, is built and kept the same way
# (about 4 min).
#
# The build environment is the host for a kernel built with the host's gcc
# version (CONFIG_CC_VERSION_TEXT in the kernel's headers), and otherwise a
# chroot of a Debian release that has that gcc (the kernel's own release if it
# does), with CHROOT_PKGS and the packages the headers and kbuild depend on.
# In it, the repo and every absolute M= directory appear at their host paths.
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
# kernel with its headers' .debs beside it (HEADER_DEBS), and chroots for
# kernels whose compiler the host does not have.
set -euo pipefail

TESTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(dirname "$TESTS_DIR")
CACHE=$TESTS_DIR/.cache
APT_DIR=$CACHE/apt
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
# Format of the .fetched stamps; older stamps are fetched again.
STAMP_FORMAT=3
readonly TESTS_DIR REPO_ROOT CACHE APT_DIR KEYRING STAMP_FORMAT

# Meta-package that names the newest image of each kernel line ...
declare -rA META=(
    [5.10]=linux-image-amd64
    [6.1]=linux-image-amd64
    [6.1-rt]=linux-image-rt-amd64
    [6.12-bookworm]=linux-image-6.12-amd64
    [6.12-bookworm-rt]=linux-image-6.12-rt-amd64
    [6.12-trixie]=linux-image-amd64
    [6.12-trixie-rt]=linux-image-rt-amd64
    [7.3]=linux-image-amd64
    [7.3-rt]=linux-image-rt-amd64
    [7.x-sid]=linux-image-amd64
    [7.x-sid-rt]=linux-image-rt-amd64
)
# ... the suites it may come from; its version must also be of the line the
# name starts with (6.12 for 6.12.*, 7.x for 7.*), so that a suite moving on
# to another line is an error, not a silent change of what is tested ...
declare -rA SUITES=(
    [5.10]="bullseye bullseye-security"
    [6.1]="bookworm bookworm-security"
    [6.1-rt]="bookworm bookworm-security"
    [6.12-bookworm]="bookworm bookworm-security bookworm-backports"
    [6.12-bookworm-rt]="bookworm bookworm-security bookworm-backports"
    [6.12-trixie]="trixie trixie-security"
    [6.12-trixie-rt]="trixie trixie-security"
    [7.3]="trixie-backports"
    [7.3-rt]="trixie-backports"
    [7.x-sid]="sid"
    [7.x-sid-rt]="sid"
)
# Kernels built here: each from the source package of the kernel it
# names, with the fragment BUILT_FRAGMENT names.  6.12-debug is the debug
# kernel: Debian's 6.12 of bookworm with that kernel's config, the checkers
# of tests/debug-kernel.config, and no modules but those BUILT_MODULES
# names: the ones the test VM loads (tests/vm/mkinitramfs.sh: kvm, kvm_amd
# and what Debian's builds of them depend on).  guest-6.12 is the kernel
# of the real-guest scenario's guest (tests/e2e/real-guest.sh), from
# tinyconfig: an image alone (no modules), that QEMU boots in the test VM,
# not a kernel to test (image prints its path; fetch refuses it).
declare -rA BUILT=(
    [6.12-debug]=6.12-bookworm
    [guest-6.12]=6.12-bookworm
)
declare -rA BUILT_FRAGMENT=(
    [6.12-debug]=$TESTS_DIR/debug-kernel.config
    [guest-6.12]=$TESTS_DIR/guest-kernel.config
)
declare -rA BUILT_MODULES=(
    [6.12-debug]="kvm kvm_amd irqbypass ccp"
)
# Built kernels, kept across clones and runs (KLP_BUILD_CACHE).
BUILD_CACHE=${KLP_BUILD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kvm-lapic-pin}
readonly BUILD_CACHE
# ... and the older names that still work.
declare -rA ALIAS=(
    [6.12]=6.12-bookworm
    [6.12-rt]=6.12-bookworm-rt
    [7.x]=7.x-sid
)

# Debian releases, oldest first, searched for a kernel's compiler when its
# own release does not have it.
RELEASES=(bullseye bookworm trixie sid)
# Suite names of the Debian archive, and of its security archive, by which
# the host's apt sources are recognised.
DEBIAN_SUITE_RE='^(buster|bullseye|bookworm|trixie|forky|duke|sid|oldoldstable|oldstable|stable|testing|unstable|experimental)(-updates|-backports|-backports-sloppy|-proposed-updates)?$'
SECURITY_SUITE_RE='^(buster|bullseye|bookworm|trixie|forky|duke|oldoldstable|oldstable|stable|testing)(-security|/updates)$'
readonly RELEASES DEBIAN_SUITE_RE SECURITY_SUITE_RE

# What every chroot has besides the kernel's build dependencies: the tools
# of the suite's steps, and what the headers' packages need to install.
CHROOT_PKGS="make dkms apt linux-base"
readonly CHROOT_PKGS

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

# Canonical name of kernel $1, or die.
canonical() {
    if [[ -n ${META[$1]+set} || -n ${BUILT[$1]+set} ]]; then
        echo "$1"
    elif [[ -n ${ALIAS[$1]+set} ]]; then
        echo "${ALIAS[$1]}"
    else
        die "unknown kernel '$1' (known: $(printf '%s\n' "${!META[@]}" "${!BUILT[@]}" | sort -V | xargs))"
    fi
}

kernel_root() {
    echo "$CACHE/kernels/$1"
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
    local suite sources
    # shellcheck disable=SC2068 # the suites of each kernel, split
    sources=$(for suite in "${RELEASES[@]}" ${SUITES[@]}; do
        echo "$suite"
    done | sort -u | while read -r suite; do
        if [[ $suite == *-security ]]; then
            echo "deb [signed-by=$KEYRING] $SECURITY_MIRROR $suite main"
        else
            echo "deb [signed-by=$KEYRING] $MIRROR $suite main"
        fi
    done)
    # Lists updated from the same sources in the last 10 minutes will do: a
    # test run fetches its kernels one by one.
    if [[ -f $APT_DIR/updated && $(<"$APT_DIR/sources.list") == "$sources" &&
        -n $(find "$APT_DIR/updated" -mmin -10) ]]; then
        echo "apt lists: updated less than 10 minutes ago"
        return
    fi
    local start=$SECONDS
    rm -f "$APT_DIR/updated"
    echo "$sources" >"$APT_DIR/sources.list"
    apt-get "${APT_OPTS[@]}" -qq update ||
        die "apt-get update failed: the mirrors above must serve" \
            "$(sed 's/.* \([^ ]*\) main$/\1/' "$APT_DIR/sources.list" | xargs)"
    touch "$APT_DIR/updated"
    echo "apt lists: updated in $((SECONDS - start)) s"
}

# "VERSION SUITE" of the newest package $1 in any of the suites $2 (space
# separated) whose version starts with $3.
newest_version() {
    apt-cache "${APT_OPTS[@]}" madison "$1" |
        awk -F' [|] ' -v suites=" $2 " -v prefix="$3" '{
            split($3, url, " "); split(url[2], dist, "/"); gsub(/ /, "", $2)
            if (index(suites, " " dist[1] " ") && index($2, prefix) == 1) {
                print $2, dist[1]; exit
            }
        }'
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

# Whether Debian release $2 has package $1.
release_has() {
    apt-cache "${APT_OPTS[@]}" madison "$1" 2>/dev/null |
        awk -F' [|] ' -v rel="$2" '{ split($3, url, " "); split(url[2], dist, "/")
            if (dist[1] == rel) found = 1 } END { exit !found }'
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

# The compiler that built the kernel whose headers are in $1, as the kernel
# names it (CONFIG_CC_VERSION_TEXT).
cc_text() {
    local text
    text=$(sed -n 's/^CONFIG_CC_VERSION_TEXT="\(.*\)"$/\1/p' "$1/.config" 2>/dev/null)
    [[ -n $text ]] || text=$(sed -n 's/^#define CONFIG_CC_VERSION_TEXT "\(.*\)"$/\1/p' \
        "$1/include/generated/autoconf.h" 2>/dev/null)
    echo "$text"
}

# Major version of the gcc named by CONFIG_CC_VERSION_TEXT $1
# ("x86_64-linux-gnu-gcc-14 (Debian 14.2.0-19) 14.2.0", "gcc-10 (...) ...").
gcc_major() {
    if [[ $1 =~ ^[^\ ]*gcc-([0-9]+)\  ]]; then
        echo "${BASH_REMATCH[1]}"
    elif [[ $1 =~ ^[^\ ]*gcc\ \(.*\)\ ([0-9]+)\. ]]; then
        echo "${BASH_REMATCH[1]}"
    fi
}

# Where to build kernel $1 (from release $2) with gcc $3: nothing for the
# host, else the Debian release for its chroot.
build_suite() {
    local name=$1 release=$2 major=$3 host rel
    host=$(gcc -dumpversion 2>/dev/null || true)
    [[ ${host%%.*} == "$major" ]] && return
    for rel in "$release" "${RELEASES[@]}"; do
        if release_has "gcc-$major" "$rel"; then
            echo "$rel"
            return
        fi
    done
    die "$name: built with gcc-$major, which no release in ${RELEASES[*]} has"
}

# All binary packages of a kernel share the source version: add those in the
# Depends closure of package $3 at version $2 (kernel $1), but images, to
# fetch_kernel's pkgs, and what headers and kbuild need of the host to its
# host_deps.
walk_kernel_pkgs() {
    local name=$1 version=$2 pkg dep
    local -a todo=("$3")
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
}

fetch_kernel() {
    local name=$1 root meta version suite kver image prefix
    root=$(kernel_root "$name")
    meta=${META[$name]}
    # The line the name starts with: "6.12-trixie" is 6.12.*, "7.x-sid" 7.*.
    prefix=${name%%-*}
    prefix=${prefix%x}
    [[ $prefix == *. ]] || prefix+=.
    read -r version suite < <(newest_version "$meta" "${SUITES[$name]}" "$prefix") || true
    if [[ -z ${version-} ]]; then
        die "$name: no $meta $prefix* in ${SUITES[$name]}; the archive has:" \
            "$(apt-cache "${APT_OPTS[@]}" madison "$meta" | awk -F' [|] ' '{
                split($3, url, " "); split(url[2], dist, "/"); gsub(/ /, "", $2)
                printf "%s (%s) ", $2, dist[1] }')"
    fi
    kver=$(depends_of "$meta" "$version" | sed -n 's/^linux-image-//p' | head -n1)
    [[ -n $kver ]] || die "$name: $meta $version depends on no linux-image-*"

    if unpacked_as "$name" "$version"; then
        echo "$name: $kver ($version, $suite) already fetched"
        return
    fi
    echo "$name: fetching $kver ($version, $suite)"

    image=linux-image-$kver-unsigned
    has_version "$image" "$version" || image=linux-image-$kver
    # The headers' packages first: their .debs stay, for tests that install
    # them as a user would.
    local -a pkgs=() host_deps=() keep
    local pkg
    walk_kernel_pkgs "$name" "$version" "linux-headers-$kver"
    keep=("${pkgs[@]}")
    walk_kernel_pkgs "$name" "$version" "$image"

    rm -rf "$root" "$root.debs"
    mkdir -p "$root" "$root.debs"
    (cd "$root.debs" && apt-get "${APT_OPTS[@]}" -qq download "${pkgs[@]/%/=$version}")
    unpack_kernel "$name" "$version" "$suite" "$kver"
}

# Whether kernel $1 is unpacked at version $2, by this format of stamp.
unpacked_as() {
    local file
    file=$(kernel_root "$1")/.fetched
    [[ -f $file ]] && grep -qxF "VERSION=$2" "$file" &&
        grep -qxF "STAMP=$STAMP_FORMAT" "$file"
}

# Unpack the packages in ROOT.debs into ROOT, the root of kernel $1 ($4),
# keep of them only the headers' (named in the caller's keep), and stamp
# ROOT with version $2, suite $3 and the caller's host_deps.
unpack_kernel() {
    local name=$1 version=$2 suite=$3 kver=$4 root pkg
    root=$(kernel_root "$name")
    for pkg in "$root.debs"/*.deb; do
        dpkg -x "$pkg" "$root"
    done
    for pkg in "$root.debs"/*.deb; do
        [[ " ${keep[*]} " == *" $(dpkg-deb -f "$pkg" Package) "* ]] || rm "$pkg"
    done
    relocate_tree "$root" "$kver"

    local cc major release=${suite%%-*} chroot_suite
    cc=$(cc_text "$root/usr/src/linux-headers-$kver")
    major=$(gcc_major "$cc")
    [[ -n $major ]] || die "$name: no gcc version in CONFIG_CC_VERSION_TEXT '$cc'"
    chroot_suite=$(build_suite "$name" "$release" "$major")
    echo "$name: built with $cc; built here in" \
        "$([[ -n $chroot_suite ]] && echo "a $chroot_suite chroot" || echo "the host")"
    printf '%s\n' "STAMP=$STAMP_FORMAT" "VERSION=$version" "SUITE=$suite" \
        "KVER=$kver" "CC=$cc" "CHROOT_SUITE=$chroot_suite" \
        "HOST_DEPS=${host_deps[*]}" >"$root/.fetched"
}

# Built kernel $1's cache entry: sets base, version (the base kernel,
# fetched, and its version), config (its config, or tinyconfig for a
# kernel without modules) and key (the hash of that config, of the
# fragment's settings and of the modules kept), and entry, its directory in
# BUILD_CACHE; downloads the source package into entry.src unless the
# entry is built.  Under the fetch lock (it uses the private apt state).
built_entry() {
    base=${BUILT[$1]}
    fetch_kernel "$base"
    [[ -z $(stamp "$base" CHROOT_SUITE) ]] ||
        die "$1: $base is not built with the host's gcc; only such a kernel is rebuilt here"
    version=$(stamp "$base" VERSION)
    local bkver src modules=${BUILT_MODULES[$1]-}
    bkver=$(stamp "$base" KVER)
    config=tinyconfig
    [[ -z $modules ]] || config=$(kernel_root "$base")/boot/config-$bkver
    key=$({ if [[ -f $config ]]; then cat "$config"; else echo "$config"; fi
        grep -E '^(CONFIG_|# CONFIG_.* is not set$)' "${BUILT_FRAGMENT[$1]}"
        echo "$modules"; } | sha256sum | cut -c1-12)
    entry=$BUILD_CACHE/$1-$version-$key
    src=linux-source-${bkver%.*}
    [[ ! -f $entry/.built && -z $(compgen -G "$entry.src/*.deb") ]] || return 0
    has_version "$src" "$version" || die "$1: $src $version not found"
    rm -rf "$entry.src" "$entry.src.tmp"
    mkdir -p "$entry.src.tmp"
    (cd "$entry.src.tmp" && apt-get "${APT_OPTS[@]}" -qq download "$src=$version")
    mv "$entry.src.tmp" "$entry.src"
}

# Build kernel $1 into its entry (built_entry) unless it is there, by
# tests/kernel-build.sh from the source package, under the entry's lock:
# one build at a time, from any clone.
build_kernel() {
    local lock start=$SECONDS
    exec {lock}>"$entry.lock"
    flock "$lock"
    if [[ -f $entry/.built ]]; then
        echo "$1: built before, in $entry"
    else
        echo "$1: building $(basename "$entry.src"/*.deb) with config $key into $entry"
        rm -rf "$entry"
        "$TESTS_DIR/kernel-build.sh" "$entry.src"/*.deb "$config" \
            "${BUILT_FRAGMENT[$1]}" "${BUILT_MODULES[$1]-}" "$entry" ||
            die "$1: build failed, see $entry/build.log"
        rm -rf "$entry.src"
        touch "$entry/.built"
        echo "$1: built in $((SECONDS - start)) s"
    fi
    exec {lock}>&-
}

# A kernel of BUILT with modules, built (build_kernel) and unpacked from its
# entry like a fetched kernel.
fetch_built() {
    local name=$1 base version config key entry root kver
    [[ -n ${BUILT_MODULES[$name]-} ]] ||
        die "$name: a guest's kernel image, not a kernel to test (tests/kernels.sh image $name)"
    built_entry "$name"
    root=$(kernel_root "$name")
    if unpacked_as "$name" "$version+$key"; then
        echo "$name: $(stamp "$name" KVER) ($version, config $key) already built"
        return
    fi
    build_kernel "$name"
    rm -rf "$root" "$root.debs"
    mkdir -p "$root" "$root.debs"
    cp "$entry"/*.deb "$root.debs/"
    kver=$(dpkg-deb -f "$entry"/linux-image-*.deb Package)
    kver=${kver#linux-image-}
    local -a keep=("linux-headers-$kver") host_deps
    mapfile -t host_deps < <(dpkg-deb -f "$entry/linux-headers-${kver}_"*.deb Depends |
        tr ',|' '\n' | awk 'NF { print $1 }')
    unpack_kernel "$name" "$version+$key" "$(stamp "$base" SUITE)" "$kver"
}

# Build kernel $1 of BUILT unless its entry is built (sets entry); the
# fetch lock only while the apt state is used, so that fetches go on
# meanwhile.
build_one() {
    local lock
    mkdir -p "$CACHE" "$BUILD_CACHE"
    exec {lock}>"$CACHE/fetch.lock"
    flock "$lock"
    apt_update
    built_entry "$1"
    exec {lock}>&-
    build_kernel "$1"
}

cmd_build() {
    (($#)) || usage
    local name base version config key entry
    for name; do
        name=$(canonical "$name")
        [[ -n ${BUILT[$name]+set} ]] || die "$name: not a kernel built here"
        build_one "$name"
    done
}

cmd_image() {
    (($# == 1)) || usage
    local name base version config key entry
    name=$(canonical "$1")
    [[ -n ${BUILT[$name]+set} && -z ${BUILT_MODULES[$name]-} ]] ||
        die "$name: not a guest's kernel built here"
    build_one "$name" >&2
    echo "$entry/bzImage"
}

cmd_fetch() {
    (($#)) || usage
    local name
    local -a names=()
    for name; do
        names+=("$(canonical "$name")")
    done
    # One fetch at a time: they share the apt state and may share kernels.
    mkdir -p "$CACHE"
    local lock start
    exec {lock}>"$CACHE/fetch.lock"
    flock "$lock"
    apt_update
    for name in "${names[@]}"; do
        start=$SECONDS
        if [[ -n ${BUILT[$name]+set} ]]; then
            fetch_built "$name"
        else
            fetch_kernel "$name"
        fi
        echo "$name: fetched in $((SECONDS - start)) s"
        if [[ -n $(stamp "$name" CHROOT_SUITE) ]]; then
            start=$SECONDS
            ensure_chroot "$name"
            echo "$name: $(stamp "$name" CHROOT_SUITE) chroot ready in $((SECONDS - start)) s"
        fi
        check_compiler "$name"
    done
}

# Say which compiler kernel $1's build environment has for it, or die.
check_compiler() {
    local cc have
    cc=$(stamp "$1" CC)
    cc=${cc%% *}
    have=$(cmd_run "$1" -- "$cc" --version 2>/dev/null | head -n1) ||
        die "$1: its compiler $cc is not in its build environment"
    echo "$1: compiler here: $have"
}

# --- info ---------------------------------------------------------------------

# Value of KEY in the .fetched stamp of kernel $1.
stamp() {
    local file
    file=$(kernel_root "$1")/.fetched
    [[ -f $file ]] || die "$1: not fetched; run: tests/kernels.sh fetch $1"
    grep -qxF "STAMP=$STAMP_FORMAT" "$file" ||
        die "$1: fetched by an older kernels.sh; run: tests/kernels.sh fetch $1"
    sed -n "s/^$2=//p" "$file"
}

chroot_dir() {
    echo "$CACHE/chroot/$(stamp "$1" CHROOT_SUITE)"
}

cmd_info() {
    (($# == 1)) || usage
    local name root kver moddir vmlinuz env=host
    name=$(canonical "$1")
    root=$(kernel_root "$name")
    kver=$(stamp "$name" KVER)
    # Newer kernels are usr-merged and keep vmlinuz beside the modules.
    moddir=$root/lib/modules/$kver
    [[ -d $moddir ]] || moddir=$root/usr/lib/modules/$kver
    vmlinuz=$root/boot/vmlinuz-$kver
    [[ -f $vmlinuz ]] || vmlinuz=$moddir/vmlinuz
    [[ -z $(stamp "$name" CHROOT_SUITE) ]] || env=chroot:$(chroot_dir "$name")
    printf '%s=%q\n' \
        KVER "$kver" \
        KDIR "$root/usr/src/linux-headers-$kver" \
        VMLINUZ "$vmlinuz" \
        MODDIR "$moddir" \
        ENV "$env" \
        COMPILER "$(stamp "$name" CC)" \
        SUITE "$(stamp "$name" SUITE)" \
        HEADER_DEBS "$root.debs"
}

cmd_names() {
    (($#)) || usage
    local name
    for name; do
        canonical "$name"
    done
}

# --- run, kbuild --------------------------------------------------------------

# Create (once) the chroot for kernel $1 with CHROOT_PKGS and the host packages
# its headers and kbuild depend on. Kernels share the chroot of a release:
# when one needs packages it lacks, it is made again with what every fetched
# kernel of that release needs, so that it does not change back and forth.
ensure_chroot() {
    local name=$1 suite dir need have lock k
    suite=$(stamp "$name" CHROOT_SUITE)
    dir=$CACHE/chroot/$suite
    mkdir -p "$CACHE/chroot"
    exec {lock}>"$dir.lock"
    flock "$lock"
    need=$(stamp "$name" HOST_DEPS)
    have=$(cat "$dir/.pkgs" 2>/dev/null || true)
    if [[ -z $(comm -23 <(tr ' ' '\n' <<<"$need $CHROOT_PKGS" | sort -u) \
        <(tr ',' '\n' <<<"$have" | sort -u)) ]]; then
        exec {lock}>&-
        return
    fi
    for k in "${!META[@]}"; do
        [[ -f $(kernel_root "$k")/.fetched ]] || continue
        grep -qxF "STAMP=$STAMP_FORMAT" "$(kernel_root "$k")/.fetched" || continue
        [[ $(stamp "$k" CHROOT_SUITE) == "$suite" ]] || continue
        need+=" $(stamp "$k" HOST_DEPS)"
    done
    local pkgs
    pkgs=$(tr -s ' ,' '\n' <<<"$need $have $CHROOT_PKGS" | sed '/^$/d' | sort -u |
        paste -sd,)
    resolve_mirrors
    echo "$name: creating $suite chroot from $MIRROR with $pkgs" >&2
    rm -rf "$dir" "$dir.tmp"
    # mmdebstrap rather than debootstrap: it installs with apt in one go,
    # which takes a third of the time, and its "essential" variant is leaner
    # than minbase.
    mmdebstrap --variant=essential --include="$pkgs" --keyring="$KEYRING" \
        --aptopt='Acquire::Check-Valid-Until "false"' \
        "$suite" "$dir.tmp" "$MIRROR" >"$dir.log" 2>&1 ||
        die "mmdebstrap failed, see $dir.log"
    echo "$pkgs" >"$dir.tmp/.pkgs"
    mv "$dir.tmp" "$dir"
    exec {lock}>&-
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
    local name
    name=$(canonical "$1")
    stamp "$name" KVER >/dev/null
    shift 2
    if [[ -n $(stamp "$name" CHROOT_SUITE) ]]; then
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
    local name kdir
    name=$(canonical "$1")
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
    build) cmd_build "$@" ;;
    info) cmd_info "$@" ;;
    run) cmd_run "$@" ;;
    kbuild) cmd_kbuild "$@" ;;
    names) cmd_names "$@" ;;
    image) cmd_image "$@" ;;
    built) (($# == 0)) || usage; printf '%s\n' "${!BUILT[@]}" ;;
    mirrors) cmd_mirrors "$@" ;;
    *) usage ;;
    esac
}

main "$@"
