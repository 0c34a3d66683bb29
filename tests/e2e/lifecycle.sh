# shellcheck shell=sh
# The module's life beside kvm and a running guest:
# - kvm unloaded under the module: it detaches; reloaded: it re-attaches,
#   with the same method, leaves nothing allocated (leaks.sh), and pins
#   again;
# - the switch toggled 200 times under a guest arming 1 ms timers: no
#   interrupt lost or doubled, ends enabled;
# - rmmod while a guest runs timers: the guest is unharmed, and the timers
#   fire where stock KVM puts them again.
group_lifecycle() {
	idle_vm_stop
	kvm_unload
	check "kvm unload: detaches" "attached=$(status attached)" \
		'[ "$(status attached)" = 0 ]'
	modprobe kvm_amd
	check "kvm reload: re-attaches" \
		"attached=$(status attached) method=$(status method)" 'attached_ok'
	leak_check "kvm reload: nothing of the module's left allocated"
	idle_vm
	run_timer --mode oneshot --interval-us 10000 --count 20 --cpu $VCPU
	pinned "fix oneshot 10ms after kvm reload" 20

	$W --mode oneshot --interval-us 1000 --count 2000 --cpu $VCPU >/tmp/t.out &
	guest=$!
	toggle 100
	wait $guest
	no_loss "toggle 200x under load" "$(grep '^RESULT' /tmp/t.out)"
	check "toggle 200x under load: ends enabled" "enabled=$(cat $KNOB)" \
		'[ "$(cat $KNOB)" = Y ]'

	$W --mode oneshot --interval-us 1000 --count 2000 --cpu $VCPU >/tmp/r.out &
	guest=$!
	sleep 1
	check "rmmod under load" "rmmod kvm_lapic_pin" 'rmmod kvm_lapic_pin'
	wait $guest
	no_loss "rmmod under load: guest unharmed" "$(grep '^RESULT' /tmp/r.out)"
	run_timer --mode oneshot --interval-us 10000 --count 20 --cpu $VCPU
	unpinned "control oneshot 10ms, module not loaded" 20
}
