#!/bin/sh
# Benchmark payload, run inside the VM (busybox sh) as /payload/run; see
# bench/run.sh.  CPU0 is housekeeping, CPUs 1-2 are nohz_full; the vCPU
# runs on CPU1.  For each configuration (stock, tm0, upstream, callsite,
# rearm, disabled: see configure) it runs the KVM workload in every timer
# mode and interval, tracing where the timer's callback fires (apic_timer_fn;
# stimer_timer_callback in stimer mode), and then the host hrtimer workload.
# It prints:
#
#   CONFIG name                      the configuration the next lines are for
#   KPROBES method=M type=T probe=P flags=F
#                                    a kprobe on kvm.ko after loading the
#                                    module with method=M (debugfs
#                                    kprobes/list; F: [OPTIMIZED] etc., or -)
#   RUN mode=M interval_us=U         a workload run; its SAMPLES, LAT, ARM
#                                    and RESULT lines follow (--dump)
#   RETRY mode=M interval_us=U: ...  a failed run, run again (see run_timer)
#   TRACE vcpu=N other=M             expiries of that run on CPU1 and elsewhere
#   HOST interval_us=U               a timerfd-loop run; SAMPLES and ARM follow
#   ERROR text                       the run is invalid
#   DONE                             all configurations ran
#
# Settings come from the kernel command line, which passes them to init as
# environment variables: BENCH_COUNTS (interval_us:count,...), BENCH_RUNS
# (runs per mode and interval) and BENCH_HOST_COUNT (arms per timerfd-loop
# run, 0 for none).  /payload/kvm-upstream.ko is kvm.ko with the upstream
# fix (bench/upstream-kvm.sh).
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

# run_timer MODE INTERVAL_US COUNT: one traced workload run.  A failed run
# is run once more (RETRY says why): under wall-clock TCG on a loaded host a
# 1 ms periodic guest can lag by periods and take one more expiry after it
# masked its timer.
run_timer() {
	try=1
	while :; do
		echo >$T/trace
		echo 1 >$T/tracing_on
		ok=1
		$W --mode "$1" --interval-us "$2" --count "$3" --cpu $VCPU --dump \
			>/tmp/run.out 2>&1 || ok=0
		echo 0 >$T/tracing_on
		if [ "$ok" = 1 ] || [ "$try" = 2 ]; then
			break
		fi
		echo "RETRY mode=$1 interval_us=$2: $(grep -v '^LAT' /tmp/run.out |
			tail -n 2 | tr '\n' ' ')"
		try=2
	done
	echo "RUN mode=$1 interval_us=$2"
	cat /tmp/run.out
	[ "$ok" = 1 ] || error "workload failed: mode=$1 interval_us=$2"
	fn=apic_timer_fn
	[ "$1" != stimer ] || fn=stimer_timer_callback
	awk -v vcpu=$VCPU -v fn="$fn" 'index($0, fn) && !/^#/ {
			match($0, /\[[0-9]+\]/)
			if (substr($0, RSTART + 1, RLENGTH - 2) + 0 == vcpu)
				n++
			else
				o++
		}
		END { printf "TRACE vcpu=%d other=%d\n", n, o }' $T/trace
}

# swap_kvm [FILE]: reload kvm, from FILE (insmod, after kvm's dependencies)
# or the stock module; then the idle VM and the trace again.
swap_kvm() {
	kill "$IDLE"
	wait "$IDLE" 2>/dev/null
	{ rmmod kvm_amd && rmmod kvm; } || error "cannot unload kvm"
	if [ $# = 1 ]; then
		# shellcheck disable=SC2013 # the line's words
		for dep in $(sed -n 's|^[^:]*/kvm\.ko: *||p' \
			/lib/modules/"$(uname -r)"/modules.dep); do
			dep=${dep##*/}
			modprobe "${dep%.ko}" || error "cannot load $dep"
		done
		insmod "$1" || error "cannot insmod $1"
		case $(cat /sys/module/kvm/taint) in
		*E*) ;;
		*) error "kvm is not the unsigned $1" ;;
		esac
	else
		modprobe kvm || error "cannot load kvm"
	fi
	modprobe kvm_amd || error "cannot load kvm_amd"
	idle_vm_start || error "idle VM did not start"
	trace_setup || error "cannot trace the timer callbacks"
}

# pin_load METHOD: load kvm_lapic_pin with method=METHOD; print its probes.
pin_load() {
	modprobe kvm_lapic_pin method="$1" || error "cannot load kvm_lapic_pin"
	[ "$(cat $PIN/status/attached 2>/dev/null)" = 1 ] ||
		error "kvm_lapic_pin not attached"
	[ "$(cat $PIN/status/method 2>/dev/null)" = "$1" ] ||
		error "kvm_lapic_pin method is '$(cat $PIN/status/method 2>/dev/null)', not $1"
	sleep 1	# the kprobe optimizer works a few jiffies later
	awk -v m="$1" '$4 == "kvm" {
		print "KPROBES method=" m, "type=" $2, "probe=" $3,
		      "flags=" ($5 == "" ? "-" : $5)
	}' /sys/kernel/debug/kprobes/list
}

# pin_unload: check and remove kvm_lapic_pin.
pin_unload() {
	pin_status
	rmmod kvm_lapic_pin || error "cannot unload kvm_lapic_pin"
}

# pin_status: the module's counters, for the log; misses are an error.
pin_status() {
	echo "STATUS $(cd $PIN/status && grep . ./* | sed 's|^\./||' | tr '\n' ' ')"
	[ "$(cat $PIN/status/missed)" = 0 ] || error "kretprobe misses"
}

# configure NAME: switch to configuration NAME from the one before it.
configure() {
	echo "CONFIG $1"
	case $1 in
	stock) ;;
	tm0) echo 0 >/proc/sys/kernel/timer_migration ;;
	upstream)
		echo 1 >/proc/sys/kernel/timer_migration
		swap_kvm /payload/kvm-upstream.ko
		;;
	callsite)
		swap_kvm
		pin_load callsite
		;;
	rearm)
		pin_unload
		pin_load rearm
		;;
	disabled) echo 0 >$PIN/parameters/enabled ;;
	esac
}

online_cpus
grep -q 1-2 /sys/devices/system/cpu/nohz_full || error "CPUs 1-2 not nohz_full"
modprobe kvm_amd || error "cannot load kvm_amd"
idle_vm_start || error "idle VM did not start"
trace_setup || error "cannot trace the timer callbacks"

for config in stock tm0 upstream callsite rearm disabled; do
	configure $config
	for mode in oneshot tscdeadline periodic stimer; do
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
pin_status
echo DONE
