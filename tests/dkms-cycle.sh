#!/bin/bash
# make install, then make uninstall, for kernel KVER with headers in KDIR, and
# what each must leave: installed, the module under updates/dkms, the udev
# rule, kvm-lapic-pin-check; then nothing of the project anywhere.  Runs as root in the kernel's
# build environment (the host or its chroot, see kernels.sh).
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
kver=$1 kdir=$2
moddir=/lib/modules/$kver
had_moddir=$([[ -d $moddir ]] && echo yes || echo no)

leftovers() {
	find /usr/src /var/lib/dkms "$moddir" /usr/lib/udev/rules.d \
		/etc/modprobe.d /usr/local/sbin /usr/local/share/man \
		\( -name '*kvm-lapic-pin*' -o \
		-name 'kvm_lapic_pin*' \) 2>/dev/null
}

[[ -z $(leftovers) ]] || { echo "left over before install:"; leftovers; exit 1; }
# As if the kernel and its headers were installed, which dkms expects.
mkdir -p "$moddir"
ln -sfn "$kdir" "$moddir/build"
make -C "$REPO_ROOT" -s install KVER="$kver"
dkms status -m kvm-lapic-pin -k "$kver" | grep -q ': installed'
ls "$moddir"/updates/dkms/kvm_lapic_pin.ko*
test -f /usr/lib/udev/rules.d/90-kvm-lapic-pin.rules
test -x /usr/local/sbin/kvm-lapic-pin-check
make -C "$REPO_ROOT" -s uninstall
make -C "$REPO_ROOT" -s uninstall	# idempotent
if [[ -n $(leftovers) ]]; then
	echo "left over after uninstall:"
	leftovers
	exit 1
fi
rm "$moddir/build"
[[ $had_moddir = yes ]] || rm -rf "$moddir"
echo "install and uninstall clean for $kver"
