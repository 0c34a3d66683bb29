#!/bin/bash
# A root overlay for the e2e VM's real-guest scenario (real-guest.sh): the
# host's QEMU (qemu-system-x86_64, the libraries it loads, the firmware of
# -M microvm) and, in /guest, the guest it boots: IMAGE (the kernel
# tests/kernels.sh builds as guest-6.12) and an initramfs of busybox-static,
# Debian's cyclictest with its libraries, and real-guest-init as /init.
#
#   tests/e2e/real-guest-root.sh OUTDIR IMAGE
set -euo pipefail

TESTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=tests/lib.sh
source "$TESTS_DIR/lib.sh"
(($# == 2)) || { sed -n '7s/^# *//p' "${BASH_SOURCE[0]}" >&2; exit 2; }
out=$1 image=$2
QEMU=/usr/bin/qemu-system-x86_64
CYCLICTEST=/usr/bin/cyclictest

rm -rf "$out"
mkdir -p "$out/guest"
cp -L --parents $QEMU /usr/share/qemu/{bios-microvm.bin,linuxboot_dma.bin} "$out"
copy_libs "$out" $QEMU
cp "$image" "$out/guest/bzImage"

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{bin,dev/shm,proc,sys}
cp /bin/busybox "$stage/bin/"
for applet in sh mount cat echo sed reboot; do
	ln -s busybox "$stage/bin/$applet"
done
cp -L --parents $CYCLICTEST "$stage"
copy_libs "$stage" $CYCLICTEST
install -m 755 "$TESTS_DIR/e2e/real-guest-init" "$stage/init"
mknod "$stage/dev/console" c 5 1
(cd "$stage" && find . | cpio -o -H newc -R 0:0 --quiet) | gzip -1 \
	>"$out/guest/initrd.cpio.gz"
