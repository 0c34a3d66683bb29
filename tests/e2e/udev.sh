# shellcheck shell=sh
# The project's udev rule, run by Debian's systemd-udevd:
# - loading kvm loads kvm_lapic_pin, attached and enabled, with the method
#   that /etc/modprobe.d asks for (none: the default, call-site), and it
#   pins timers;
# - kvm reloaded: re-attached, not loaded twice;
# - udevd logs nothing about the module.
group_udev() {
	idle_vm_stop
	kvm_unload
	rm -f /etc/modprobe.d/kvm-lapic-pin.conf
	[ "$METHOD" = callsite ] ||
		echo "options kvm_lapic_pin method=$METHOD" >/etc/modprobe.d/kvm-lapic-pin.conf
	if ! udevadm control --ping 2>/dev/null; then
		cp -a /payload/udev-root/. /
		mkdir -p /run/udev /etc/modprobe.d	# as on any Debian host
		/lib/systemd/systemd-udevd --daemon 2>/tmp/udevd.log
	fi
	check "udev: systemd-udevd runs" "$(udevadm --version)" \
		'udevadm control --ping'
	udevadm control --reload	# what an operator does after editing modprobe.d
	modprobe kvm
	udevadm settle --timeout=30
	check "udev: loading kvm loads kvm_lapic_pin" \
		"loaded=$([ -d $PIN ] && echo yes) method=$(status method) enabled=$(cat $KNOB)" \
		'attached_ok && [ "$(cat $KNOB)" = Y ]'
	modprobe kvm_amd
	idle_vm
	run_timer --mode oneshot --interval-us 10000 --count 20 --cpu $VCPU
	pinned "fix oneshot 10ms, loaded by udev" 20
	idle_vm_stop
	loaded=$(loads)
	kvm_unload
	modprobe kvm_amd
	udevadm settle --timeout=30
	check "udev: kvm reloaded: re-attached, not loaded twice" \
		"attached=$(status attached) loads $loaded -> $(loads)" \
		'attached_ok && [ "$(loads)" = "$loaded" ]'
	check "udev: no errors" "$(grep -ci 'kvm_lapic_pin' /tmp/udevd.log) udevd lines on kvm_lapic_pin" \
		'! grep -qi "kvm_lapic_pin" /tmp/udevd.log && ! dmesg | grep -q "kvm_lapic_pin: not attaching"'
	rm -f /etc/modprobe.d/kvm-lapic-pin.conf
	idle_vm
}

loads() {
	dmesg | grep -c 'kvm_lapic_pin: version'
}
