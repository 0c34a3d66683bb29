# shellcheck shell=sh
# Several vCPUs and several VMs: each vCPU its own thread and its own
# timer, which the module must tell apart on every arm (the vCPU loaded on
# the arming thread).  Each timer is attributed to its vCPU by the thread
# that started it (the workload's VCPU lines); every expiry must be of the
# timer of exactly one vCPU, and every vCPU's RESULT exact.
# - control: switched off, the timers of both vCPUs of a VM on CPUs 1 and
#   2 fire on the housekeeping CPU;
# - fix: the two vCPUs arming one-shot timers at once on CPUs 1 and 2:
#   each vCPU's expiries all on its own CPU, none lost or doubled on
#   either; call-site: one pinned start per arm for each (re-arm: KVM's
#   start and the module's); status/pinned counts exactly the pinned
#   starts;
# - two VMs of two vCPUs each at once, on CPUs 1 and 2, arming
#   TSC-deadline timers: the same for all four vCPUs;
# - call-site: the Hyper-V synthetic timers of a two-vCPU VM, likewise;
# - no arm unmatched throughout;
# - floating: the vCPU threads of two two-vCPU VMs, given no CPU, moved
#   between CPUs 1 and 2 every 5 ms while they arm: each expiry of each
#   vCPU's timer on the CPU where that timer was last started (armed, or
#   migrated with the thread), on both CPUs, none lost or doubled; the
#   same for TSC-deadline timers; switched off, the expiries are
#   elsewhere.
group_multi() {
	unmatched=$(status unmatched)
	knob 0
	run_vms 1 2 fixed --mode oneshot --interval-us 10000 --count 20 --cpus 1,2
	each_vcpu "multi control oneshot 10ms" 20 unpinned
	knob 1
	multi_fix "multi oneshot 10ms" 1 pinned --mode oneshot
	multi_fix "two VMs tscdeadline 10ms" 2 pinned --mode tscdeadline
	if [ "$METHOD" = callsite ]; then
		FN=stimer_timer_callback
		multi_fix "multi stimer 10ms" 1 stimer_pinned --mode stimer
		FN=apic_timer_fn
	fi
	check "multi: every arm identified" \
		"unmatched $unmatched -> $(status unmatched), stimer_unmatched $(status stimer_unmatched)" \
		'[ "$(status unmatched)" = "$unmatched" ] &&
		 [ "$(status stimer_unmatched)" = 0 ]'

	n=$(float_count 60 4)
	run_vms 2 2 float --mode oneshot --interval-us 10000 --count "$n"
	each_vcpu "multi floating oneshot 10ms" "$n" floated
	n=$(float_count 60 2)
	run_vms 1 2 float --mode tscdeadline --interval-us 10000 --count "$n"
	each_vcpu "multi floating tscdeadline 10ms" "$n" floated
	knob 0
	run_vms 1 2 float --mode oneshot --interval-us 10000 --count "$n"
	each_vcpu "multi control floating oneshot 10ms" "$n" floated_control
	knob 1
}

# multi_fix NAME NVMS COUNTER ARGS...: NVMS two-vCPU VMs on CPUs 1 and 2,
# 20 arms at 10 ms each: every vCPU's timer on its CPU, and how it got
# there; status/COUNTER went up by the pinned starts.
multi_fix() {
	before=$(status "$3")
	name=$1 nvms=$2 counter=$3
	shift 3
	run_vms "$nvms" 2 fixed "$@" --interval-us 10000 --count 20 --cpus 1,2
	each_vcpu "$name" 20 pinned_starts
	check "$name: $counter counts each pinned start" \
		"$counter $before -> $(status "$counter"), pinned starts $ALL_PINNED" \
		'[ $(($(status "$counter") - before)) = "$ALL_PINNED" ]'
}

pinned_starts() { # name count
	pinned "$@"
	starts "$@"
}
