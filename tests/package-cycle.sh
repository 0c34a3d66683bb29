#!/bin/bash
# The package's life on a machine with kernel KVER, as apt drives it, run as
# root in the kernel's build environment (the host or its chroot, see
# kernels.sh), and what each step must leave:
# - installed before the kernel's headers: installing the headers (their
#   packages, HEADER_DEBS) has DKMS build and install it for KVER;
# - installed again: the package's DKMS hook builds and installs it again
#   (no "already added");
# - upgraded to NEXT_DEB (the version bumped): the new version built and
#   installed for KVER, nothing left of the old one;
# - purged: nothing of it under /usr/src, /var/lib/dkms, /lib/modules,
#   the udev rules, /etc, /usr/sbin, /usr/share; the headers, and what they
#   pulled in, purged too.
# The kernel's image is not installed (its modules and initramfs hooks cost
# more than all the rest, and DKMS needs only the headers): where the
# headers depend on it, a stand-in package provides it.
# CYCLE "short": installed, then purged (no reinstall, no upgrade).
# MODULE_OUT gets the module the last DKMS build made, for the VM.
# Exit status 77 (skip, saying why on the last line) where the test cannot
# mean what it says: the package's dkms dependency is not met by this
# release, the running kernel is installed here (Debian's DKMS hook
# then builds for it, not for a kernel that only has headers), or the
# headers' packages are upstream's bindeb-pkg ones (no DKMS hook).
#
#   tests/package-cycle.sh KVER HEADER_DEBS DEB NEXT_DEB MODULE_OUT CYCLE
set -euo pipefail

kver=$1 header_debs=$2 deb=$3 next_deb=$4 module_out=$5 cycle=$6
pkg=kvm-lapic-pin-dkms
export DEBIAN_FRONTEND=noninteractive
start=$SECONDS

skip() {
	echo "$*"
	exit 77
}

apt_get() {
	apt-get -y -q -o Dpkg::Use-Pty=0 --no-install-recommends "$@" </dev/null
}

leftovers() {
	find /usr/src /var/lib/dkms /lib/modules /usr/lib/modules \
		/lib/udev/rules.d /usr/lib/udev/rules.d /etc /usr/sbin /usr/share \
		\( -name '*kvm-lapic-pin*' -o -name 'kvm_lapic_pin*' \) 2>/dev/null
	dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' "$pkg" 2>/dev/null |
		grep -v '^un ' || true
}

# installed VERSION: dkms built and installed VERSION for KVER, and only it.
installed() {
	local status
	status=$(dkms status -m kvm-lapic-pin -k "$kver")
	echo "dkms status: $status"
	[[ $status == "kvm-lapic-pin/$1, $kver, "*": installed" ||
		$status == "kvm-lapic-pin, $1, $kver, "*": installed" ]] &&
		[[ $(wc -l <<<"$status") == 1 ]]
	ls "$moddir"/updates/dkms/kvm_lapic_pin.ko*
}

is_installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'
}

step() {
	echo "== $* ($((SECONDS - start)) s)"
}

version_of() {
	dpkg-deb -f "$1" Version
}

need=$(dpkg-deb -f "$deb" Depends | sed -n 's/.*dkms (>= \([^)]*\)).*/\1/p')
have=$(dpkg-query -W -f='${Version}' dkms)
dpkg --compare-versions "$have" ge "$need" ||
	skip "the package needs dkms >= $need; this release has $have"
[[ ! -d /lib/modules/$(uname -r) ]] ||
	skip "the running kernel $(uname -r) is installed here: DKMS builds" \
		"for it, not for $kver"
[[ -z $(leftovers) ]] || { echo "left over before install:"; leftovers; exit 1; }

header_files=("$header_debs"/*.deb)
# Debian's headers packages have DKMS build for their kernel; those the
# kernel's own `make bindeb-pkg` makes (Source: linux-upstream, the debug
# kernel's) run no such hook.
for f in "${header_files[@]}"; do
	[[ $(dpkg-deb -f "$f" Source) != linux-upstream ]] ||
		skip "the headers' packages of $kver are upstream's bindeb-pkg ones:" \
			"they run no DKMS hook"
done
# What they pull in that is not here yet (linux-base, the compiler's
# metapackage), purged with them.
mapfile -t deps < <(for f in "${header_files[@]}"; do dpkg-deb -f "$f" Depends; done |
	tr ',|' '\n' | awk '{ print $1 }' | sort -u)
pulled=()
for p in "${deps[@]}"; do
	is_installed "$p" || pulled+=("$p")
done
moddir=/lib/modules/$kver
had_moddir=$([[ -d $moddir ]] && echo yes || echo no)
# The stand-in for the image the headers depend on, if they do.
image=$(for f in "${header_files[@]}"; do dpkg-deb -f "$f" Depends; done |
	grep -o "linux-image-$kver (= [^)]*)" | head -n 1 || true)
if [[ -n $image ]]; then
	stand_in=$(mktemp -d)
	mkdir "$stand_in/DEBIAN"
	cat >"$stand_in/DEBIAN/control" <<-END
	Package: kvm-lapic-pin-test-image
	Version: 1
	Architecture: all
	Maintainer: kvm-lapic-pin tests <root@localhost>
	Provides: $image
	Description: stand-in for $image (kvm-lapic-pin's package test)
	END
	dpkg-deb -b "$stand_in" "$stand_in.deb" >/dev/null
	rm -rf "$stand_in"
	header_files+=("$stand_in.deb")
	headers+=(kvm-lapic-pin-test-image)
fi
# Whatever happens, leave the package, the headers and what they pulled in
# purged, and no modules directory (depmod's files) that was not there.
purge_installed() {
	local p present=()
	for p; do
		! is_installed "$p" || present+=("$p")
	done
	((${#present[@]} == 0)) || apt_get purge "${present[@]}"
}
purged=no
cleanup() {
	[[ $purged == yes ]] || purge_installed "$pkg" "${headers[@]}" \
		"${pulled[@]}" >/dev/null 2>&1 || true
	[[ $had_moddir == yes ]] || rm -rf "$moddir"
	[[ -z $image ]] || rm -f "$stand_in.deb"
}
trap cleanup EXIT

step "install $(basename "$deb"), then the headers of $kver"
apt_get install "$deb"
[[ -z $(dpkg-query -W -f='${Conffiles}' "$pkg") ]]
test -x /usr/sbin/kvm-lapic-pin-check
/usr/sbin/kvm-lapic-pin-check --help >/dev/null
test -f /usr/share/doc/$pkg/examples/kvm-lapic-pin.conf
[[ -f /lib/udev/rules.d/90-kvm-lapic-pin.rules ||
	-f /usr/lib/udev/rules.d/90-kvm-lapic-pin.rules ]]
apt_get install "${header_files[@]}"
installed "$(version_of "$deb")"

if [[ $cycle == full ]]; then
	step "install it again"
	apt_get install --reinstall "$deb"
	installed "$(version_of "$deb")"

	step "upgrade to $(basename "$next_deb")"
	apt_get install "$next_deb"
	installed "$(version_of "$next_deb")"
	test ! -e /usr/src/kvm-lapic-pin-"$(version_of "$deb")"
fi
ko=$(ls "$moddir"/updates/dkms/kvm_lapic_pin.ko*)
case $ko in
*.ko) cp "$ko" "$module_out" ;;
*.ko.xz) xz -dc "$ko" >"$module_out" ;;
*.ko.zst) zstd -qdc "$ko" >"$module_out" ;;
*.ko.gz) gzip -dc "$ko" >"$module_out" ;;
esac

step "purge"
apt_get purge "$pkg"
purge_installed "${headers[@]}" "${pulled[@]}"
purged=yes
if [[ -n $(leftovers) ]]; then
	echo "left over after purge:"
	leftovers
	exit 1
fi
step "done: install, $([[ $cycle == full ]] && echo "reinstall, upgrade, ")purge clean for $kver"
