# Shared by the VM payloads of tests/e2e/guest.sh and bench/guest.sh
# (busybox sh), copied next to them as /payload/lib.sh.
# shellcheck shell=sh

T=/sys/kernel/tracing
W=/payload/lapic-timer

# One VM that exists throughout, so that KVM's static keys do not flip
# between runs.  Sets IDLE (its pid) and IDLE_WAIT (seconds waited); fails
# if it is not ready within 120 s.
idle_vm_start() {
	: >/tmp/idle.out	# not the last VM's "ready": the job truncates late
	$W --idle >/tmp/idle.out 2>&1 &
	# shellcheck disable=SC2034  # for the caller
	IDLE=$!
	IDLE_WAIT=0
	while ! grep -q 'IDLE ready' /tmp/idle.out && [ $IDLE_WAIT -lt 120 ]; do
		sleep 1
		IDLE_WAIT=$((IDLE_WAIT + 1))
	done
	grep -q 'IDLE ready' /tmp/idle.out
}

# Function-trace the callbacks of KVM's LAPIC timer and Hyper-V synthetic
# timers; set up once per kvm load, so that runs only flip tracing_on (no
# code patching between runs).
trace_setup() {
	echo 0 >$T/tracing_on
	echo nop >$T/current_tracer
	echo apic_timer_fn >$T/set_ftrace_filter &&
		echo stimer_timer_callback >>$T/set_ftrace_filter &&
		echo function >$T/current_tracer
}
