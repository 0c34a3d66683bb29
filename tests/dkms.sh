#!/bin/bash
# The DKMS install/uninstall cycle for one kernel of the matrix, run in that
# kernel's build environment.  Runs of it from any clone take turns: they
# share the host's /usr/src, /var/lib/dkms and /lib/modules.
#
#   tests/dkms.sh KERNEL
set -euo pipefail

TESTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
eval "$("$TESTS_DIR/kernels.sh" info "$1")"
exec {lock}>/run/lock/kvm-lapic-pin-dkms.lock
flock "$lock"
"$TESTS_DIR/kernels.sh" run "$1" -- "$TESTS_DIR/dkms-cycle.sh" "$KVER" "$KDIR"
