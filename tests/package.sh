#!/bin/bash
# The package's install/reinstall/upgrade/purge cycle (package-cycle.sh) for
# one kernel of the matrix, in that kernel's build environment, with the
# packages tests/deb.sh built in DEB_DIR; CYCLE "short": install and purge
# only.  Takes the same host-wide lock as dkms.sh: both change the host's
# dpkg and DKMS state.
#
#   tests/package.sh KERNEL DEB_DIR MODULE_OUT [full|short]
set -euo pipefail

TESTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
eval "$("$TESTS_DIR/kernels.sh" info "$1")"
exec {lock}>/run/lock/kvm-lapic-pin-dkms.lock
flock "$lock"
"$TESTS_DIR/kernels.sh" run "$1" -- "$TESTS_DIR/package-cycle.sh" "$KVER" \
	"$HEADER_DEBS" "$(readlink -f "$2/current.deb")" \
	"$(readlink -f "$2/next.deb")" "$(realpath -m "$3")" "${4:-full}"
