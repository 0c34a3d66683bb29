# shellcheck shell=sh
# Hyper-V synthetic timers: a vCPU with KVM's Hyper-V CPUID leaves and its
# SynIC on, synthetic timer 0 one-shot in direct mode (its expiry is an
# interrupt at a LAPIC vector), re-armed from each interrupt, on CPU1:
# - control: switched off, stimer_timer_callback fires on the housekeeping
#   CPU;
# - call-site: every expiry on the vCPU's CPU, one pinned start per arm,
#   none lost, counted in status/stimer_pinned, none unmatched;
# - call-site, the vCPU thread moved to CPU2 once: KVM does not move
#   synthetic timers, so the one armed before the move expires on CPU1
#   and every later one on CPU2; and floating between CPUs 1 and 2: every
#   expiry on the CPU that last started that timer, none lost;
# - call-site, with the synthetic timers' call site taken by another
#   kprobe: the LAPIC timer is still pinned, the synthetic timers are
#   left alone, said in one dmesg line;
# - re-arm: synthetic timers are left as KVM arms them (the method pins
#   only the LAPIC timer).
group_stimer() {
	FN=stimer_timer_callback
	knob 0
	run_timer --mode stimer --interval-us 10000 --count 20 --cpu $VCPU
	unpinned "stimer control 10ms" 20
	knob 1
	before=$(status stimer_pinned)
	run_timer --mode stimer --interval-us 10000 --count 20 --cpu $VCPU
	case $METHOD in
	callsite)
		pinned "stimer fix 10ms" 20
		starts "stimer fix 10ms" 20
		check_nohz "stimer fix: counted, each identified" \
			"stimer_pinned $before -> $(status stimer_pinned), unmatched $(status stimer_unmatched)" \
			'[ "$(status stimer_pinned)" -ge $((before + STARTS)) ] &&
			 [ "$(status stimer_unmatched)" = 0 ]'
		stimer_migration
		float stimer 10000 100
		float stimer 1000 500
		stimer_unproven
		;;
	rearm)
		unpinned "stimer rearm: left as KVM arms it" 20
		check "stimer rearm: counts nothing" \
			"stimer_pinned $before -> $(status stimer_pinned)" \
			'[ "$(status stimer_pinned)" = "$before" ]'
		;;
	esac
	FN=apic_timer_fn
}

stimer_migration() {
	moved stimer "stimer migration"
	check "stimer migration: each expiry where it was armed" \
		"away=$AWAY seq=$SEQ" '[ "$AWAY" = 0 ]'
}

stimer_unproven() {
	site=$(status symbols | tr ' ' '\n' | grep '^kvm_hv_process_stimers+')
	rmmod kvm_lapic_pin
	echo "p:klp/stimer_block kvm:$site" >>$T/kprobe_events
	echo 1 >$T/events/klp/stimer_block/enable
	lines=$(dmesg | grep -c 'synthetic timers not pinned')
	load_module
	check "stimer site unproven: LAPIC timer attached, says why once" \
		"symbols=$(status symbols): $(dmesg | grep 'synthetic timers not pinned' | tail -n 1)" \
		'[ "$(status method)" = callsite ] &&
		 ! status symbols | grep -q kvm_hv_process_stimers &&
		 [ "$(dmesg | grep -c "synthetic timers not pinned: call site not proven")" = $((lines + 1)) ]'
	run_timer --mode stimer --interval-us 10000 --count 20 --cpu $VCPU
	unpinned "stimer site unproven: left alone" 20
	FN=apic_timer_fn
	run_timer --mode oneshot --interval-us 10000 --count 20 --cpu $VCPU
	pinned "stimer site unproven: LAPIC oneshot 10ms still pinned" 20
	FN=stimer_timer_callback
	rmmod kvm_lapic_pin
	echo 0 >$T/events/klp/stimer_block/enable
	echo "-:klp/stimer_block" >>$T/kprobe_events
	load_module
	check "stimer site free again: attached with it" \
		"symbols=$(status symbols)" 'attached_ok'
}
