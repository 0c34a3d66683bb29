# shellcheck shell=sh
# Load order and attach, for this round's method:
# - the module loads before kvm and stays detached;
# - it attaches when kvm loads, with the method asked for, listing what it
#   probes (call-site: the four call sites, three of the LAPIC timer and
#   the synthetic timers' one; re-arm: the two functions);
# - the switch defaults on.
group_load() {
	check "load before kvm" "modprobe kvm_lapic_pin method=$METHOD" \
		'load_module'
	check "load before kvm: not attached" \
		"attached=$(status attached) method=$(status method)" \
		'[ "$(status attached)" = 0 ] && [ -z "$(status method)" ]'
	modprobe kvm_amd
	check "load before kvm: attaches when kvm loads" \
		"method=$(status method) symbols=$(status symbols)" 'attached_ok'
	echo "INFO $METHOD: kprobes: $(grep ' kvm' /sys/kernel/debug/kprobes/list | tr -s ' \n' ' ;')"
	check "switch defaults on" "enabled=$(cat $KNOB)" '[ "$(cat $KNOB)" = Y ]'
}
