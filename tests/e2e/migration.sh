# shellcheck shell=sh
# The vCPU thread moving:
# - a periodic timer armed on CPU1 follows the vCPU to CPU2 (only
#   __kvm_migrate_apic_timer re-arms it); switched off, it does not;
# - floating: the vCPU thread moved between CPUs 1 and 2 from outside
#   while it arms 1 ms and 10 ms one-shot and TSC-deadline timers: every
#   expiry on the CPU that last started that timer, every interrupt
#   delivered; switched off, the expiries are elsewhere.  The re-arm has a
#   window the call-site method has not: a timer may fire on the
#   housekeeping CPU before the module moves it (a 1 ms one often; any,
#   when the vCPU thread is preempted between KVM's arm and the module's
#   return handler, as on -rt under load); there, every timer the module
#   pinned expires where it was started, and at most 1 in 20 expiries are
#   such early ones.
group_migration() {
	moved periodic "migration periodic"

	for mode in oneshot tscdeadline; do
		float $mode 1000 500
		float $mode 10000 100
	done

	knob 0
	move_run periodic
	check_nohz "control migration periodic: not on CPU2" "$(hist)" \
		'[ "$N2" -le 1 ]'
	no_loss "control migration periodic"
	float_run oneshot 10000 100
	floated_control "control floating oneshot 10ms" 100
	knob 1
}

# move_run MODE: a traced run of 40 10 ms timers whose vCPU thread moves
# from CPU1 to CPU2 after 20.
move_run() {
	run_timer --mode "$1" --interval-us 10000 --count 40 --cpu $VCPU \
		--migrate-to 2 --migrate-after 20
}

# moved MODE NAME: move_run, then: none on CPU0, from the first on CPU2 all
# there, none lost.
moved() {
	move_run "$1"
	after_move=$(echo "$SEQ" | sed -n 's/^[^2]*\(2.*\)$/\1/p')
	check "$2: on CPU2 after the move" "$(hist) seq=$SEQ" \
		'[ "$N0" = 0 ] && [ "$N2" -ge 15 ] && ! echo "$after_move" | grep -q "[01]"'
	no_loss "$2"
}

# float_run MODE INTERVAL_US COUNT: a traced run whose vCPU thread is moved
# between CPUs 1 and 2 every few milliseconds.
float_run() {
	run_vms 1 1 float --mode "$1" --interval-us "$2" --count "$3" --cpu $VCPU
	RES=$(grep '^RESULT' /tmp/vm0.out)
}

float() { # mode interval_us count
	float_run "$@"
	floated "floating $1 $(($2 / 1000))ms" "$3"
}

# The checks of a floating run: every expiry on the CPU that last started
# that timer (the re-arm: every timer it pinned, and at most 1 in 20
# expiries early, see above), on both CPUs, none lost.
floated() { # name count
	count=$2
	early=0
	[ "$METHOD" = rearm ] && early=$((AWAY - AWAY_PINNED))
	check "$1: on the CPU that started it" \
		"$(hist) away=$AWAY away_pinned=$AWAY_PINNED starts=$STARTS" \
		'[ $((AWAY - early)) = 0 ] && [ $((early * 20)) -le "$TOTAL" ] &&
		 [ "$N1" -gt 0 ] && [ "$N2" -gt 0 ] && [ "$TOTAL" -ge $((count / 2)) ]'
	no_loss "$1"
}

# Switched off: most expiries elsewhere than where the timer was started.
floated_control() { # name count
	count=$2
	check_nohz "$1: expiries elsewhere" "away=$AWAY of $TOTAL" \
		'[ $((AWAY * 2)) -ge "$TOTAL" ] && [ "$TOTAL" -ge $((count / 2)) ]'
	no_loss "$1"
}
