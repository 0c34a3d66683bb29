#!/bin/bash
# Build a busybox initramfs for a kernel fetched by tests/kernels.sh.
#
#   tests/vm/mkinitramfs.sh NAME OUT.cpio.gz [DIR | FILE.ko]...
#
# The image holds busybox-static with its applet links, tests/vm/init as
# /init, the kvm and kvm_amd modules of kernel NAME with everything they
# depend on (decompressed, so that busybox's modprobe can load them), each
# FILE.ko under /lib/modules/KVER/extra/, and a modules.dep made by the
# host's depmod over all of them. The contents of each DIR are copied into
# /payload; the init runs /payload/run.
set -euo pipefail

VM_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BUSYBOX=/bin/busybox
readonly VM_DIR BUSYBOX

usage() {
    sed -n '2,11s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
    exit 2
}

die() {
    echo "mkinitramfs.sh: $*" >&2
    exit 1
}

main() {
    (($# >= 2)) || usage
    local name=$1 out=$2 arg
    shift 2
    local -a extra=() payload=()
    for arg; do
        if [[ -d $arg ]]; then
            payload+=("$arg")
        elif [[ -f $arg && $arg == *.ko ]]; then
            extra+=("$arg")
        else
            die "$arg: neither a directory nor a .ko file"
        fi
    done

    local KVER MODDIR
    eval "$("$VM_DIR/../kernels.sh" info "$name" | grep -E '^(KVER|MODDIR)=')"
    [[ -d $MODDIR/kernel ]] || die "$name: no modules in $MODDIR"
    if ldd "$BUSYBOX" >/dev/null 2>&1; then
        die "$BUSYBOX is dynamically linked: apt-get install busybox-static"
    fi

    stage=$(mktemp -d)
    trap 'rm -rf "$stage"' EXIT
    mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,run,root,payload}

    cp "$BUSYBOX" "$stage/bin/busybox"
    local applet
    for applet in $("$BUSYBOX" --list-full); do
        [[ -e $stage/$applet ]] || ln -s /bin/busybox "$stage/$applet"
    done
    install -m 755 "$VM_DIR/init" "$stage/init"

    # Index the kernel's modules by name ("-" and "_" are the same in module
    # names), then copy the closure of kvm, kvm_amd and the FILE.ko modules under
    # their dependencies.
    local -A file_of=()
    local path mod
    while IFS= read -r -d '' path; do
        mod=${path##*/}
        mod=${mod%%.ko*}
        file_of[${mod//-/_}]=$path
    done < <(find "$MODDIR/kernel" -name '*.ko*' -print0)

    local moddir=$stage/lib/modules/$KVER ko
    mkdir -p "$moddir/extra"
    local -a todo=(kvm kvm_amd) deps
    for ko in "${extra[@]}"; do
        cp "$ko" "$moddir/extra/"
        IFS=, read -ra deps <<<"$(modinfo -F depends "$ko")"
        todo+=("${deps[@]}")
    done
    local -A copied=()
    local dest
    while ((${#todo[@]})); do
        mod=${todo[0]//-/_}
        todo=("${todo[@]:1}")
        [[ -z ${copied[$mod]+set} ]] || continue
        path=${file_of[$mod]-}
        [[ -n $path ]] || die "$name: module $mod not found in $MODDIR"
        copied[$mod]=1
        dest=$moddir/${path#"$MODDIR"/}
        dest=${dest%.ko*}.ko
        mkdir -p "$(dirname "$dest")"
        case $path in
        *.ko) cp "$path" "$dest" ;;
        *.ko.xz) xz -dc "$path" >"$dest" ;;
        *.ko.zst) zstd -qdc "$path" >"$dest" ;;
        *.ko.gz) gzip -dc "$path" >"$dest" ;;
        *) die "$path: unknown module compression" ;;
        esac
        IFS=, read -ra deps <<<"$(modinfo -F depends "$path")"
        todo+=("${deps[@]}")
    done
    cp "$MODDIR"/modules.builtin* "$moddir/"
    (cd "$moddir" && find kernel extra -name '*.ko') >"$moddir/modules.order"
    depmod -b "$stage" "$KVER"

    for arg in "${payload[@]}"; do
        cp -a "$arg/." "$stage/payload/"
    done

    (cd "$stage" && find . | cpio -o -H newc -R 0:0 --quiet) | gzip -1 >"$out"
}

main "$@"
