#!/bin/sh
# End-to-end scenarios, run inside the test VM (busybox sh) as /payload/run.
# CPU0 is housekeeping, CPUs 1-2 are nohz_full; the vCPU runs on CPU1.
# Every group runs once per method (call-site, then re-arm); each file
# says what its group proves.  Prints one line per test: "PASS method:
# name: detail", "FAIL ..." or "SKIP ...: why"; the host counts them;
# "INFO" lines (such as each group's time) are for the console log.
# shellcheck disable=SC2034  # METHOD is read by checks.sh
set -u

# shellcheck source=tests/e2e/lib.sh
. /payload/lib.sh
for f in checks leaks load fix migration stimer multi storm real-guest lifecycle input udev \
	fallback; do
	# shellcheck disable=SC1090
	. /payload/$f.sh
done
# shellcheck source=tests/e2e/check-command.sh
. /payload/check-command.sh

# What the kernel says when something is wrong: WARN and BUG (the reports
# of KASAN, KFENCE and might_sleep() among them, and most of lockdep's),
# lockdep's INFO reports and its giving up, RCU stalls, debugobjects, list
# corruption.  (kmemleak's scans find objects of other code too: leaks.sh
# judges the module's.)
scan_dmesg() {
	! dmesg | grep -E 'WARNING:|BUG:|Oops|general protection|INFO: (possible|trying to register|task .* blocked)|locking correctness validator|circular locking|stall|kprobe.*(fail|error)|Call Trace|ODEBUG|list_(add|del) corruption'
}

events_setup
for METHOD in callsite rearm; do
	group_load
	[ "$METHOD" = callsite ] && CALLSITE_SYMBOLS=$(status symbols)
	idle_vm
	for g in fix migration stimer multi storm real_guest input lifecycle udev; do
		timed group_$g
	done
	module_text	# loaded by udev, the last group
	rmmod kvm_lapic_pin
	idle_vm_stop
	kvm_unload
	leak_check "rmmod, kvm unloaded: nothing of the module's left allocated"
done

METHOD=auto
bad_method
modprobe kvm_amd
udevadm settle --timeout=30
rmmod kvm_lapic_pin	# loaded by udev; the fallback loads it itself
idle_vm
group_fallback "$CALLSITE_SYMBOLS"
group_check_command	# once, not per method

METHOD=module
check "panic_on_warn stays on" "$(cat /proc/sys/kernel/panic_on_warn)" \
	'[ "$(cat /proc/sys/kernel/panic_on_warn)" = 1 ]'
check "clean dmesg" "no WARN/BUG/KASAN/lockdep/stall/ODEBUG/kprobe error" scan_dmesg
exit 0
