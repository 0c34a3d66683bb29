#!/bin/sh
# Benchmark payload, run inside the VM (busybox sh) as /payload/run; see
# bench/run.sh.  CPU0 is housekeeping, CPUs 1-2 are nohz_full; the vCPU
# runs on CPU1.  For each configuration (stock, tm0, enabled, disabled:
# see configure) it runs the KVM workload in every timer mode and interval,
# tracing where apic_timer_fn fires, and then the host hrtimer workload.
# It prints:
#
#   CONFIG name                      the configuration the next lines are for
#   RUN mode=M interval_us=U         a workload run; its SAMPLES, LAT, ARM
#                                    and RESULT lines follow (--dump)
#   TRACE vcpu=N other=M             expiries of that run on CPU1 and elsewhere
#   HOST interval_us=U               a timerfd-loop run; SAMPLES and ARM follow
#   ERROR text                       the run is invalid
#   DONE                             all configurations ran
#
# Settings come from the kernel command line, which passes them to init as
# environment variables: BENCH_COUNTS (interval_us:count,...), BENCH_RUNS
# (runs per mode and interval) and BENCH_HOST_COUNT (arms per timerfd-loop
# run, 0 for none).
set -u
: "${BENCH_COUNTS:?}" "${BENCH_RUNS:?}" "${BENCH_HOST_COUNT:?}"

PIN=/sys/module/kvm_lapic_pin
# shellcheck source=tests/e2e/lib.sh
. /payload/lib.sh
VCPU=1
HOST_INTERVAL_US=10000

error() {
	echo "ERROR $*"
}

# -icount runs boot with maxcpus=1 (bench/run.sh says why): bring the
# other CPUs up now.
online_cpus() {
	for f in /sys/devices/system/cpu/cpu[0-9]*/online; do
		[ "$(cat "$f")" = 1 ] || echo 1 >"$f" || error "cannot online $f"
	done
}

# run_timer MODE INTERVAL_US COUNT: one traced workload run.
run_timer() {
	echo "RUN mode=$1 interval_us=$2"
	echo >$T/trace
	echo 1 >$T/tracing_on
	$W --mode "$1" --interval-us "$2" --count "$3" --cpu $VCPU --dump ||
		error "workload failed: mode=$1 interval_us=$2"
	echo 0 >$T/tracing_on
	awk -v vcpu=$VCPU '/apic_timer_fn/ && !/^#/ {
			match($0, /\[[0-9]+\]/)
			if (substr($0, RSTART + 1, RLENGTH - 2) + 0 == vcpu)
				n++
			else
				o++
		}
		END { printf "TRACE vcpu=%d other=%d\n", n, o }' $T/trace
}

# configure NAME: switch to configuration NAME from the one before it.
configure() {
	echo "CONFIG $1"
	case $1 in
	stock) ;;
	tm0) echo 0 >/proc/sys/kernel/timer_migration ;;
	enabled)
		echo 1 >/proc/sys/kernel/timer_migration
		modprobe kvm_lapic_pin
		[ "$(cat $PIN/status/attached 2>/dev/null)" = 1 ] ||
			error "kvm_lapic_pin not attached"
		;;
	disabled) echo 0 >$PIN/parameters/enabled ;;
	esac
}

online_cpus
grep -q 1-2 /sys/devices/system/cpu/nohz_full || error "CPUs 1-2 not nohz_full"
modprobe kvm_amd || error "cannot load kvm_amd"
idle_vm_start || error "idle VM did not start"
trace_setup || error "cannot trace apic_timer_fn"

for config in stock tm0 enabled disabled; do
	configure $config
	for mode in oneshot tscdeadline periodic; do
		for ic in $(echo "$BENCH_COUNTS" | tr , ' '); do
			run=0
			while [ $run -lt "$BENCH_RUNS" ]; do
				run_timer $mode "${ic%:*}" "${ic#*:}"
				run=$((run + 1))
			done
		done
	done
	run=0
	while [ "$BENCH_HOST_COUNT" -gt 0 ] && [ $run -lt "$BENCH_RUNS" ]; do
		echo "HOST interval_us=$HOST_INTERVAL_US"
		/payload/timerfd-loop --interval-us $HOST_INTERVAL_US \
			--count "$BENCH_HOST_COUNT" --cpu $VCPU ||
			error "timerfd-loop failed"
		run=$((run + 1))
	done
done
[ "$(cat $PIN/status/missed)" = 0 ] || error "kretprobe misses"
echo DONE
