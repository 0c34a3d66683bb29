# shellcheck shell=sh
# Call sites that cannot be proven (another kprobe sits on them, so their
# bytes are not KVM's call any more):
# - method=auto falls back to the re-arm, says so in one dmesg line, and
#   still pins;
# - method=callsite refuses to attach, with a clear line.
# Run with kvm loaded and the module not; $1 is what the call-site round's
# status/symbols listed.
group_fallback() {
	i=0
	for sym in $1; do
		echo "p:klp/block$i kvm:$sym" >>$T/kprobe_events
		echo 1 >$T/events/klp/block$i/enable
		i=$((i + 1))
	done
	METHOD=auto
	lines=$(dmesg | grep -c 'call sites not proven')
	check "fallback: auto attaches" "modprobe kvm_lapic_pin" \
		'modprobe kvm_lapic_pin'
	check "fallback: auto uses rearm, says why once" \
		"method=$(status method): $(dmesg | grep 'call sites not proven' | tail -n 1)" \
		'[ "$(status method)" = rearm ] &&
		 [ "$(dmesg | grep -c "call sites not proven")" = $((lines + 1)) ]'
	run_timer --mode oneshot --interval-us 10000 --count 20 --cpu $VCPU
	pinned "fallback: fix oneshot 10ms" 20
	rmmod kvm_lapic_pin
	METHOD=callsite
	load_module
	check "fallback: callsite forced: not attached, says why" \
		"attached=$(status attached): $(dmesg | grep 'not attaching' | tail -n 1)" \
		'[ "$(status attached)" = 0 ] &&
		 dmesg | tail -n 3 | grep -q "not attaching to kvm: callsite: start_sw_timer"'
	rmmod kvm_lapic_pin
	while [ $i -gt 0 ]; do
		i=$((i - 1))
		echo 0 >$T/events/klp/block$i/enable
		echo "-:klp/block$i" >>$T/kprobe_events
	done
}
