# shellcheck shell=sh
# Storms, with guests running: two VMs of two vCPUs on CPUs 1 and 2 (run
# again and again while a storm lasts, or between kvm reloads):
# - the module removed and inserted 20 times: each insert attaches with
#   its method; status/missed 0 before each removal;
# - the switch toggled 500 times: ends enabled, status/missed 0;
# - kvm_amd and kvm unloaded and reloaded 10 times, the module staying:
#   it detaches at each unload and re-attaches with its method at each
#   load, and the guests run between reloads have every timer expiry on
#   their vCPUs' CPUs (none on the housekeeping CPU, each counted in
#   status/pinned: with nohz_full); status/missed stays 0;
# and in each, every vCPU of every guest run received exactly the
# interrupts it armed.
# Only in the round of the method that the kernel command line names with
# klp.storms=METHOD: tests/run.sh gives it to the kernels of its
# STORM_KERNELS (CI budget); SKIP elsewhere.
group_storm() {
	if ! grep -qw "klp.storms=$METHOD" /proc/cmdline; then
		result SKIP storms "CI budget: they run in the round that \
klp.storms=METHOD names (tests/run.sh STORM_KERNELS); here: $(grep -o \
			'klp.storms=[a-z]*' /proc/cmdline || echo none)"
		return
	fi
	timed storm_module
	timed storm_switch
	timed storm_kvm
}

storm_module() {
	guests_start
	i=0 bad='' missed=0
	while [ $i -lt 20 ]; do
		missed=$((missed + $(status missed)))
		rmmod kvm_lapic_pin || bad="$bad rmmod$i"
		load_module || bad="$bad modprobe$i"
		attached_ok || bad="$bad attach$i"
		i=$((i + 1))
	done
	guests_stop "module storm"
	check "module storm: removed and inserted 20x, each attached" \
		"${bad:-all attached}, missed=$missed" \
		'[ -z "$bad" ] && [ "$missed" = 0 ]'
}

storm_switch() {
	guests_start
	toggle 250
	guests_stop "toggle storm"
	check "toggle storm: toggled 500x, ends enabled" \
		"enabled=$(cat $KNOB) missed=$(status missed)" \
		'[ "$(cat $KNOB)" = Y ] && [ "$(status missed)" = 0 ]'
}

storm_kvm() {
	idle_vm_stop
	i=0 bad=''
	while [ $i -lt 10 ]; do
		kvm_unload || bad="$bad unload$i"
		[ "$(status attached)" = 0 ] || bad="$bad detach$i"
		modprobe kvm_amd || bad="$bad load$i"
		attached_ok || bad="$bad attach$i"
		before=$(status pinned)
		run_vms 2 2 fixed --mode oneshot --interval-us 10000 --count 20 \
			--cpus 1,2
		[ "$(inexact /tmp/vm*.out)" = "0 of 4" ] || bad="$bad loss$i"
		[ "$NOHZ_FULL" = 0 ] || { [ "$N0" = 0 ] && [ "$ALL_PINNED" -gt 0 ] &&
			[ $(($(status pinned) - before)) = "$ALL_PINNED" ]; } ||
			bad="$bad unpinned$i($(hist))"
		i=$((i + 1))
	done
	check "kvm reload storm: 10x, each re-attached, guests pinned, none lost" \
		"${bad:-all good}, missed=$(status missed)" \
		'[ -z "$bad" ] && [ "$(status missed)" = 0 ]'
	idle_vm
}

# Two VMs of two vCPUs on CPUs 1 and 2 arming 1 ms one-shot timers, each
# run again until guests_stop; returns once both run.
guests_start() {
	rm -f /tmp/storm.stop /tmp/storm*.out
	GUESTS=''
	for v in 0 1; do
		while [ ! -e /tmp/storm.stop ]; do
			$W --vcpus 2 --cpus 1,2 --mode oneshot --interval-us 1000 \
				--count 300 || echo "EXIT $?"
		done >/tmp/storm$v.out &
		GUESTS="$GUESTS $!"
	done
	vcpus_up 4 /tmp/storm*.out
}

guests_stop() { # name
	touch /tmp/storm.stop
	# shellcheck disable=SC2086  # one word per pid
	wait $GUESTS
	runs=$(inexact /tmp/storm*.out)
	failed=$(cat /tmp/storm*.out | grep -c '^EXIT')
	check "$1: no guest lost or doubled an interrupt" \
		"$runs vCPU runs inexact, $failed runs failed" \
		'[ "${runs%% *}" = 0 ] && [ "${runs##* }" -ge 4 ] && [ "$failed" = 0 ]'
}

# "N of M": of the RESULT lines of FILE..., those with armed != received.
inexact() { # file...
	cat "$@" | awk '/^RESULT / {
		a = $0; sub(/.* armed=/, "", a); sub(/ .*/, "", a)
		r = $0; sub(/.* received=/, "", r); sub(/ .*/, "", r)
		n++; bad += a != r
	} END { printf "%d of %d\n", bad, n }'
}
