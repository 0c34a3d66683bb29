# shellcheck shell=bash
# Shared by tests/run.sh and bench/run.sh.

# What the suite and the benchmark need on a Debian host (used by both);
# the last line, what the kernels built here need (tests/kernel-build.sh),
# and the real guest's cyclictest (tests/e2e/real-guest-root.sh).
# shellcheck disable=SC2034
TEST_PACKAGES=(build-essential kmod cpio gzip xz-utils zstd dkms mmdebstrap
	       dwarves qemu-system-x86 busybox-static debhelper dh-dkms lintian
	       bc bison flex libelf-dev libssl-dev openssl rsync rt-tests)

# install_missing PACKAGE...: install those not installed yet (as root), or
# name the apt-get line to run and fail.
install_missing() {
	local missing=() p
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null |
			grep -q 'install ok installed' || missing+=("$p")
	done
	[[ ${#missing[@]} -eq 0 ]] && return 0
	if [[ $EUID -ne 0 ]]; then
		echo "missing packages; run as root or install them first:" >&2
		echo "  sudo apt-get install -y ${missing[*]}" >&2
		return 2
	fi
	apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

# copy_libs ROOT FILE...: the shared libraries that the programs FILE...
# load (by ldd), copied under ROOT at their own paths.
copy_libs() {
	local root=$1
	shift
	ldd "$@" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }
		$1 ~ /^\/lib64\// { print $1 }' | sort -u |
		while read -r lib; do
			cp -L --parents "$lib" "$root"
		done
}

# module_tree DIR: a fresh copy of the module's sources (REPO_ROOT's) in DIR,
# so that builds for different kernels never share objects.
module_tree() {
	rm -rf "$1"
	mkdir -p "$1"
	cp -r "$REPO_ROOT"/{Kbuild,Makefile,dkms.conf,src} "$1"/
}
