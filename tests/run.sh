#!/bin/bash
# The whole test suite: checkpatch, the Debian package's build, then for
# each kernel the W=1 -Werror build, the DKMS cycle, the package's cycle and
# the end-to-end scenarios in a QEMU VM booted from that Debian kernel with
# nested KVM.  Closes with the time each kernel took
# and "N passed, N failed, N skipped" as the last line.
#
#   tests/run.sh [KERNEL...]      default (or "all"): every kernel of the matrix;
#                                 "quick": a representative few
set -uo pipefail

TESTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(dirname "$TESTS_DIR")
CACHE=$TESTS_DIR/.cache
# Names as tests/kernels.sh knows them (its header says what each is).
MATRIX=(6.1 6.1-rt 6.12-bookworm 6.12-bookworm-rt 6.12-trixie 6.12-trixie-rt
	7.3 7.3-rt 7.x-sid 7.x-sid-rt 5.10 6.12-debug)
# Day to day: the oldest line built on the host, the stable release's RT
# flavour built with its gcc-14 in a chroot, and the newest line.
QUICK=(6.1 6.12-trixie-rt 7.3)
# The kernels whose VM runs the storm scenarios (tests/e2e/storm.sh, about
# 90 s a round), and in which method's round: klp.storms=METHOD on their
# command line.  The other kernels and rounds SKIP them, to keep the whole
# matrix within the CI budget.
declare -rA STORM_KERNELS=([6.1]=callsite [6.12-trixie-rt]=rearm [7.3]=callsite)
# The kernels whose VM runs the real-guest scenario (tests/e2e/real-guest.sh:
# QEMU boots guest-6.12 four times, 30 to 300 s), in the call-site method's
# round (klp.real_guest=callsite: the re-arm's known window, a timer that
# expires before the return handler moves it, is open to a real guest's
# shortest timers), with the QEMU root in their payload: those that
# KLP_REAL_GUEST names (the matrix's names, e.g. "6.1 6.12-trixie
# 6.12-bookworm-rt"); none by default, so not in CI: under QEMU's emulated
# SVM, the test VM's CPU, one boot of the guest in four deadlocks or resets,
# and one in two with its one-shot timer (real-guest.sh says more).  The
# others SKIP it.
read -ra REAL_GUEST_KERNELS <<<"${KLP_REAL_GUEST-}"
# The debug kernel (KASAN, lockdep, ...: tests/debug-kernel.config) runs
# every scenario about three times slower (7 min in all).
declare -rA VM_TIMEOUT=([6.12-debug]=1200)
readonly TESTS_DIR REPO_ROOT CACHE MATRIX QUICK
# shellcheck source=tests/lib.sh
. "$TESTS_DIR/lib.sh"

PASSED=0 FAILED=0 SKIPPED=0 BUILDER='' REAL_GUEST_ROOT=''
TIMES=() STEP_TIMES=()
# Build environment (kernels.sh info's ENV) -> the kernel that ran the
# kernel-independent cycles in it.
declare -A CYCLED=()

record() { # verdict text
	echo "$1 $2"
	case $1 in
	PASS) PASSED=$((PASSED + 1)) ;;
	FAIL) FAILED=$((FAILED + 1)) ;;
	SKIP) SKIPPED=$((SKIPPED + 1)) ;;
	esac
}

# run_step NAME LOG COMMAND...: one test whose verdict is COMMAND's status
# (77: skipped, why on the last line of LOG).
# Its duration goes to STEP_TIMES as "WORD N", WORD the first word of NAME
# after "KERNEL: ".
run_step() {
	local name=$1 log=$2 start=$SECONDS rc=0
	shift 2
	"$@" >"$log" 2>&1 || rc=$?
	step_time "$name" "$start"
	if ((rc == 0)); then
		record PASS "$name"
	elif ((rc == 77)); then
		record SKIP "$name: $(tail -n 1 "$log")"
	else
		record FAIL "$name: see $log"
		tail -n 20 "$log" | sed 's/^/    /'
		return 1
	fi
}

step_time() { # name start
	local word=${1#*: }
	STEP_TIMES+=("${word%% *} $((SECONDS - $2))")
}

test_kernel() { # kernel
	local k=$1 logs=$CACHE/logs/$1 dir initrd payload env cycle steps
	mkdir -p "$logs"
	run_step "$k: fetch" "$logs/fetch.log" "$TESTS_DIR/kernels.sh" fetch "$k" ||
		return
	dir=$CACHE/build/$k
	module_tree "$dir"
	run_step "$k: build W=1 -Werror" "$logs/build.log" \
		"$TESTS_DIR/kernels.sh" kbuild "$k" -- M="$dir" W=1 \
		KCFLAGS=-Werror modules || return
	# What does not depend on the kernel (make install/uninstall, the
	# package's reinstall and upgrade) runs with the first kernel of each
	# build environment (its dkms and apt), the others SKIP them; every
	# kernel gets the package's DKMS build with its headers (CI budget).
	env=$("$TESTS_DIR/kernels.sh" info "$k" | sed -n 's/^ENV=//p')
	cycle=short steps=install/purge
	if [[ -z ${CYCLED[$env]-} ]]; then
		CYCLED[$env]=$k cycle=full steps=install/reinstall/upgrade/purge
		run_step "$k: dkms add/build/install/remove" "$logs/dkms.log" \
			"$TESTS_DIR/dkms.sh" "$k"
	else
		record SKIP "$k: dkms add/build/install/remove: with ${CYCLED[$env]}"
	fi
	rm -rf "$CACHE/package/$k"
	mkdir -p "$CACHE/package/$k"
	run_step "$k: package $steps" "$logs/package.log" \
		"$TESTS_DIR/package.sh" "$k" "$CACHE/deb" \
		"$CACHE/package/$k/kvm_lapic_pin.ko" $cycle

	payload=$CACHE/payload/$k
	initrd=$CACHE/payload/$k.cpio.gz
	rm -rf "$payload"
	mkdir -p "$payload"
	cp "$TESTS_DIR"/e2e/*.sh "$payload/"
	mv "$payload/guest.sh" "$payload/run"
	cp "$TESTS_DIR/guest/lapic-timer" "$REPO_ROOT/tools/kvm-lapic-pin-check" \
		"$payload/"
	cp -r "$CACHE/package/$k" "$payload/package"
	cp -a "$CACHE/udev-root" "$payload/"
	local start=$SECONDS rc=0 append=''
	[[ -z ${STORM_KERNELS[$k]-} ]] || append=klp.storms=${STORM_KERNELS[$k]}
	if real_guest_kernel "$k" && real_guest_root "$k"; then
		cp -a "$CACHE/real-guest-root" "$payload/"
		append+=" klp.real_guest=callsite"
	fi
	"$TESTS_DIR/vm/mkinitramfs.sh" "$k" "$initrd" "$payload" \
		"$dir/kvm_lapic_pin.ko" >"$logs/initramfs.log" 2>&1 || {
		record FAIL "$k: initramfs: see $logs/initramfs.log"
		return
	}
	# Single-threaded TCG: with a host thread per vCPU, the guest's live code
	# patching (static keys, kprobes, ftrace) now and then leaves a vCPU on
	# a stale int3.
	"$TESTS_DIR/vm/boot.sh" --kernel "$k" --initrd "$initrd" --tcg single \
		${append:+--append "$append"} \
		--log "$logs/console.log" --timeout "${VM_TIMEOUT[$k]-600}" \
		>"$logs/boot.log" 2>&1 ||
		rc=$?
	step_time "$k: vm" "$start"
	case $rc in
	0) record PASS "$k: VM ran every scenario" ;;
	*) record FAIL "$k: VM ran every scenario: console $logs/console.log"
	   tail -n 3 "$logs/boot.log" | sed 's/^/    /' ;;
	esac
	local verdict rest
	while read -r verdict rest; do
		record "$verdict" "$k: $rest"
	done < <(tr -d '\r' <"$logs/console.log" | grep -oE '(PASS|FAIL|SKIP) .*')
}

real_guest_kernel() { # kernel
	[[ " ${REAL_GUEST_KERNELS[*]} " == *" $1 "* ]]
}

# The real-guest scenario's root ($CACHE/real-guest-root), made once a run,
# by the first kernel to want it (which waits for guest-6.12's build).
real_guest_root() { # kernel
	[[ -z $REAL_GUEST_ROOT ]] || return "$REAL_GUEST_ROOT"
	local log=$CACHE/logs/guest-kernel.log image
	REAL_GUEST_ROOT=1
	if image=$("$TESTS_DIR/kernels.sh" image guest-6.12 2>"$log"); then
		run_step "$1: real-guest root: QEMU, guest-6.12, cyclictest" \
			"$CACHE/logs/real-guest-root.log" \
			"$TESTS_DIR/e2e/real-guest-root.sh" "$CACHE/real-guest-root" \
			"$image" && REAL_GUEST_ROOT=0
	else
		record FAIL "$1: real-guest root: guest-6.12 built: see $log"
	fi
	return "$REAL_GUEST_ROOT"
}

# The kernels named by $@ ("quick", "all" or kernels.sh's names; none: all),
# each once, by its canonical name; exits if one is unknown.
kernel_list() {
	local arg
	local -a names=()
	(($#)) || set -- all
	for arg; do
		case $arg in
		all) names+=("${MATRIX[@]}") ;;
		quick) names+=("${QUICK[@]}") ;;
		*) names+=("$arg") ;;
		esac
	done
	"$TESTS_DIR/kernels.sh" names "${names[@]}" | awk '!seen[$0]++'
}

# The kernels built here (the debug kernel) take longest to get: their
# builds (tests/kernels.sh build: a no-op once in its cache) start now, at
# the lowest priority, and the fetch of each waits for its build.  The
# matrix runs its VMs on one host thread (TCG), which leaves most of the
# other core to the build.
build_in_background() {
	local k
	local -a built
	mapfile -t built < <(printf '%s\n' "$@" | grep -xFf <("$TESTS_DIR/kernels.sh" built))
	for k; do
		if real_guest_kernel "$k"; then
			built=(guest-6.12 "${built[@]}")
			break
		fi
	done
	((${#built[@]})) || return 0
	echo "building ${built[*]} in the background (log: $CACHE/logs/build-kernels.log)"
	# A session of its own, so that a run stopped early stops it too.
	setsid nice -n 19 "$TESTS_DIR/kernels.sh" build "${built[@]}" \
		>"$CACHE/logs/build-kernels.log" 2>&1 &
	BUILDER=$!
	trap 'kill -- -"$BUILDER" 2>/dev/null' EXIT
}

main() {
	local k start steps list
	local -a kernels
	list=$(kernel_list "$@") || exit 2
	mapfile -t kernels <<<"$list"
	install_missing "${TEST_PACKAGES[@]}" || exit 2
	mkdir -p "$CACHE/logs"
	run_step "checkpatch --strict" "$CACHE/logs/checkpatch.log" \
		"$TESTS_DIR/checkpatch.sh"
	run_step "guest workload build" "$CACHE/logs/guest-build.log" \
		make -C "$TESTS_DIR/guest"
	run_step "udev for the VM" "$CACHE/logs/udev-root.log" \
		"$TESTS_DIR/e2e/udev-root.sh" "$CACHE/udev-root"
	run_step "package: make deb offline, lintian clean" "$CACHE/logs/deb.log" \
		"$TESTS_DIR/deb.sh" "$CACHE/deb"
	build_in_background "${kernels[@]}"
	for k in "${kernels[@]}"; do
		start=$SECONDS STEP_TIMES=()
		test_kernel "$k"
		printf -v steps '%s, ' "${STEP_TIMES[@]}"
		TIMES+=("time $k: $((SECONDS - start)) s (${steps%, })")
	done
	[[ -z $BUILDER ]] || wait "$BUILDER" || true
	printf '%s\n' "${TIMES[@]}"
	echo "time total: $SECONDS s"
	echo "$PASSED passed, $FAILED failed, $SKIPPED skipped"
	[[ $FAILED -eq 0 ]]
}

main "$@"
