# shellcheck shell=sh
# The bug and the fix, with the vCPU on CPU1:
# - control: switched off, KVM's timers fire on the housekeeping CPU, and
#   the module makes none pinned;
# - fix: one-shot, TSC-deadline and periodic timers at 10 ms, one-shot at
#   50 ms, fire on the vCPU's CPU, none lost or doubled; call-site: one
#   start per arm, pinned; re-arm: KVM's start and the module's;
# - the same with the housekeeping CPU busy.
group_fix() {
	knob 0
	before=$(status pinned)
	run_timer --mode oneshot --interval-us 10000 --count 20 --cpu $VCPU
	unpinned "control oneshot 10ms" 20
	run_timer --mode oneshot --interval-us 50000 --count 10 --cpu $VCPU
	unpinned "control oneshot 50ms" 10
	check "control: disabled module pins nothing" \
		"pinned $before -> $(status pinned)" \
		'[ "$(status pinned)" = "$before" ]'

	knob 1
	for mode in oneshot tscdeadline periodic; do
		run_timer --mode $mode --interval-us 10000 --count 20 --cpu $VCPU
		pinned "fix $mode 10ms" 20
		[ $mode = periodic ] || starts "fix $mode 10ms" 20
	done
	run_timer --mode oneshot --interval-us 50000 --count 10 --cpu $VCPU
	pinned "fix oneshot 50ms" 10
	starts "fix oneshot 50ms" 10
	check_nohz "fix: timers were pinned" "pinned=$(status pinned)" \
		'[ "$(status pinned)" -gt "$before" ]'

	taskset -c 0 sh -c 'while :; do :; done' &
	busy=$!
	for mode in oneshot tscdeadline periodic; do
		run_timer --mode $mode --interval-us 10000 --count 20 --cpu $VCPU
		pinned "fix $mode 10ms, CPU0 busy" 20
	done
	kill $busy
}
