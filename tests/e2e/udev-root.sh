#!/bin/bash
# A root overlay for the e2e VM: Debian's systemd-udevd and udevadm (from
# the host release's udev package), the libraries they load, and the
# project's udev rule.
#
#   tests/e2e/udev-root.sh OUTDIR
set -euo pipefail

TESTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPO_ROOT=$(dirname "$TESTS_DIR")
# shellcheck source=tests/lib.sh
source "$TESTS_DIR/lib.sh"
DEBS=$TESTS_DIR/.cache/udev
out=${1:?usage: udev-root.sh OUTDIR}

mkdir -p "$DEBS"
if ! compgen -G "$DEBS/udev_*.deb" >/dev/null; then
	(cd "$DEBS" && apt-get download -q -o APT::Sandbox::User=root udev)
fi
rm -rf "$out"
mkdir -p "$out"
dpkg -x "$(echo "$DEBS"/udev_*.deb)" "$out"
rm -rf "${out:?}/usr/share" "$out/lib/udev/hwdb.d"
copy_libs "$out" "$out/bin/udevadm"
install -D -m 0644 "$REPO_ROOT/udev/90-kvm-lapic-pin.rules" \
	"$out/lib/udev/rules.d/90-kvm-lapic-pin.rules"
