# shellcheck shell=sh
# The e2e scenarios' vocabulary (busybox sh in the test VM), copied next to
# them as /payload/checks.sh.  CPU0 is housekeeping, CPUs 1-2 are
# nohz_full; the vCPU runs on CPU $VCPU (1; each_vcpu sets it for each
# vCPU of a multi-vCPU run).  Conditions are shell code handed to check(),
# which evals them: single quotes and variables set only for check() are
# deliberate.
# shellcheck disable=SC2016,SC2034

PIN=/sys/module/kvm_lapic_pin
KNOB=$PIN/parameters/enabled
VCPU=1
FN=apic_timer_fn	# the callback of the timers traced

case "$(cat /sys/devices/system/cpu/nohz_full 2>/dev/null)" in
*1*) NOHZ_FULL=1 ;;
*) NOHZ_FULL=0 ;;
esac

result() { # verdict name detail
	echo "$1 $METHOD: $2: $3"
}

# check NAME DETAIL CONDITION: CONDITION is shell code, evaluated.
check() {
	if eval "$3"; then
		result PASS "$1" "$2"
	else
		result FAIL "$1" "$2"
	fi
}

# Checks that only mean something where the bug can show.
check_nohz() { # name detail condition
	if [ "$NOHZ_FULL" = 1 ]; then
		check "$@"
	else
		result SKIP "$1" "no nohz_full on this kernel"
	fi
}

# timed FUNCTION: run it, and say how long it took (an INFO line).
timed() {
	set -- "$1" "$(date +%s)"
	"$1"
	echo "INFO $METHOD: time ${1#group_}: $(($(date +%s) - $2)) s"
}

status() {
	cat $PIN/status/"$1"
}

knob() {
	echo "$1" >$KNOB
}

# toggle N: the switch off and on again, N times.
toggle() {
	i=0
	while [ $i -lt "$1" ]; do
		knob 0
		knob 1
		i=$((i + 1))
	done
}

# The module, loaded with this round's method (where its text is: leaks.sh).
load_module() {
	modprobe kvm_lapic_pin method="$METHOD" && module_text
}

# What status/symbols lists for this round's method.
symbols_ok() {
	case $METHOD in
	callsite) echo "$(status symbols)" | grep -Eqx \
		'start_sw_timer\+0x[0-9a-f]+ start_sw_timer\+0x[0-9a-f]+ __kvm_migrate_apic_timer\+0x[0-9a-f]+ kvm_hv_process_stimers\+0x[0-9a-f]+' ;;
	rearm) [ "$(status symbols)" = "start_sw_timer __kvm_migrate_apic_timer" ] ;;
	esac
}

attached_ok() {
	[ "$(status attached)" = 1 ] && [ "$(status method)" = "$METHOD" ] &&
		symbols_ok
}

# Trace KVM's hrtimers: where they are started and where they expire.
# Core trace events: set up once per boot, no code patching between runs.
events_setup() {
	echo 0 >$T/tracing_on
	echo nop >$T/current_tracer
	echo 4096 >$T/buffer_size_kb
	echo 1 >$T/events/timer/hrtimer_start/enable
	echo 1 >$T/events/timer/hrtimer_expire_entry/enable
}

# A traced workload run: trace_start, the run, trace_parse [TID...].
# trace_parse sets, from the trace of the timers whose callback is $FN
# (and, given TIDs, that those threads started): N0 N1 N2 (expiries per CPU),
# TOTAL, SEQ (the CPU of each expiry, in order), STARTS and PINNED_STARTS
# (its hrtimer_start events, and those in a PINNED mode), AWAY (expiries
# on another CPU than the one that last started that timer) and
# AWAY_PINNED (those of them whose last start was pinned).
trace_start() {
	echo >$T/trace
	echo 1 >$T/tracing_on
}

trace_parse() {
	echo 0 >$T/tracing_on
	eval "$(awk -v fn="function=$FN " -v tids=" $* " '
		!index($0, fn) { next }
		{
			match($0, /\[[0-9]+\]/)
			cpu = substr($0, RSTART + 1, RLENGTH - 2) + 0
			match($0, /hrtimer=[0-9a-f]+/)
			t = substr($0, RSTART, RLENGTH)
		}
		tids != "  " && / hrtimer_start:/ {
			match($0, /-[0-9]+ +\[[0-9]+\]/)
			if (!index(tids, " " substr($0, RSTART + 1, RLENGTH - 1) + 0 " "))
				next
			mine[t] = 1
		}
		tids != "  " && !(t in mine) { next }
		/ hrtimer_start:/ {
			starts++
			pin[t] = $0 ~ /mode=[A-Z|]*PINNED/
			pinned += pin[t]
			last[t] = cpu
		}
		/ hrtimer_expire_entry:/ {
			n[cpu]++
			total++
			seq = seq cpu " "
			if (!(t in last) || last[t] != cpu) {
				away++
				away_pinned += pin[t]
			}
		}
		END {
			printf "N0=%d N1=%d N2=%d TOTAL=%d SEQ=\"%s\" ", n[0], n[1], n[2], total, seq
			printf "STARTS=%d PINNED_STARTS=%d ", starts, pinned
			printf "AWAY=%d AWAY_PINNED=%d\n", away, away_pinned
		}' $T/trace)"
}

# run_timer ARGS...: one workload run, traced; RES is its RESULT line.
run_timer() {
	trace_start
	RES=$($W "$@" | grep '^RESULT')
	trace_parse
}

# run_vms NVMS NVCPUS HOW ARGS...: NVMS workloads (VMs) of NVCPUS vCPUs
# each, with ARGS, at once, traced.  HOW=float: their vCPU threads are
# moved between CPUs 1 and 2 every 5 ms while they run, each the other way
# from the one before it; HOW=fixed: left where ARGS put them.  The
# output of workload V is /tmp/vmV.out; VCPUS is how many vCPUs ran, and
# ALL and ALL_PINNED the trace_parse TOTAL and PINNED_STARTS of the run.
run_vms() {
	NVMS=$1 VCPUS=$(($1 * $2)) nvcpus=$2 how=$3
	shift 3
	rm -f /tmp/vm*.out
	trace_start
	pids='' v=0
	while [ $v -lt "$NVMS" ]; do
		$W --vcpus "$nvcpus" "$@" >/tmp/vm$v.out &
		pids="$pids $!"
		v=$((v + 1))
	done
	# shellcheck disable=SC2086  # one word per pid
	[ "$how" = fixed ] || float_vcpus $pids
	# shellcheck disable=SC2086
	wait $pids
	trace_parse
	ALL=$TOTAL ALL_PINNED=$PINNED_STARTS
}

float_vcpus() { # pid...
	phase=1
	while running "$@"; do
		c=$phase
		# shellcheck disable=SC2013  # one number a line
		for tid in $(sed -n 's/^VCPU id=[0-9]* tid=//p' /tmp/vm*.out); do
			taskset -pc $((1 + c % 2)) "$tid"
			c=$((c + 1))
		done
		phase=$((phase + 1))
		sleep 0.005
	done >/dev/null 2>&1
}

# float_count BASE NTHREADS: how many 10 ms arms a floating run of
# NTHREADS vCPU threads takes for float_vcpus to move each at least 8
# times: BASE, or more where a taskset (a fork and an exec) is slow, as on
# the debug kernel.  Timed over 10 tasksets, in centiseconds (/proc/uptime).
float_count() {
	fc_t0=$(tr -d . </proc/uptime | cut -d' ' -f1)
	fc_i=0
	while [ $fc_i -lt 10 ]; do
		taskset -pc 0-2 $$ >/dev/null
		fc_i=$((fc_i + 1))
	done
	fc_t=$(($(tr -d . </proc/uptime | cut -d' ' -f1) - fc_t0))
	# A round: a taskset per thread, the sed, the 5 ms sleep.
	fc_n=$((8 * (($2 + 1) * fc_t / 10 + 1)))
	echo $((fc_n > $1 ? fc_n : $1))
}

# vcpus_up N FILE...: wait (up to 10 s) until the workloads writing
# FILE... have started N vCPUs between them.
vcpus_up() {
	vu_n=$1 vu_w=0
	shift
	while [ "$(cat "$@" 2>/dev/null | grep -c '^VCPU')" -lt "$vu_n" ] &&
		[ $vu_w -lt 100 ]; do
		sleep 0.1
		vu_w=$((vu_w + 1))
	done
}

running() { # pid...
	for p; do
		! kill -0 "$p" 2>/dev/null || return 0
	done
	return 1
}

# each_vcpu NAME COUNT CHECK: for each vCPU I of workload V of the
# last run_vms, CHECK "NAME: vmV vcpuI" COUNT, with trace_parse's
# variables for the timers its thread started, RES its RESULT line, and
# VCPU the CPU that --cpus 1,2 gives it (I + 1).  Then: every vCPU
# reported, and each expiry was of the timer of exactly one of them.
each_vcpu() {
	ev_name=$1 ev_fn=$3
	ev_seen=0 ev_sum=0 ev_v=0
	while [ $ev_v -lt "$NVMS" ]; do
		# shellcheck disable=SC2013  # one word a line
		for ev_vt in $(sed -n 's/^VCPU id=\([0-9]*\) tid=\([0-9]*\)$/\1:\2/p' \
			/tmp/vm$ev_v.out); do
			ev_id=${ev_vt%:*}
			RES=$(grep "^RESULT .* vcpu=$ev_id\$" /tmp/vm$ev_v.out)
			trace_parse "${ev_vt#*:}"
			VCPU=$((ev_id + 1))
			"$ev_fn" "$ev_name: vm$ev_v vcpu$ev_id" "$2"
			ev_seen=$((ev_seen + 1)) ev_sum=$((ev_sum + TOTAL))
		done
		ev_v=$((ev_v + 1))
	done
	VCPU=1
	check "$ev_name: each expiry of one vCPU's timer" \
		"vcpus=$ev_seen of $VCPUS, expiries=$ev_sum of $ALL" \
		'[ "$ev_seen" = "$VCPUS" ] && [ "$ev_sum" = "$ALL" ]'
}

field() { # name line
	echo "$2" | sed -n "s/.* $1=\\([0-9]*\\).*/\\1/p"
}

# Nothing lost, nothing doubled: the guest counted exactly what it armed.
no_loss() { # name [RESULT line]
	line=${2:-$RES}
	armed=$(field armed "$line")
	received=$(field received "$line")
	check "$1: no loss" "armed=$armed received=$received" \
		'[ -n "$armed" ] && [ "$armed" = "$received" ]'
}

hist() {
	echo "cpu0=$N0 cpu1=$N1 cpu2=$N2"
}

# Every expiry on the vCPU's CPU, $VCPU.  Enough expiries to mean
# something: KVM delivers a TSC deadline that has passed by the time it is
# written without the hrtimer, so the trace may hold fewer expiries than
# timers armed (the guest's own count, no_loss, is exact).
pinned() { # name count
	on_vcpu_cpu "$1" $(($2 / 2))
	no_loss "$1"
}

# Every expiry, and at least MIN of them, on the vCPU's CPU.
on_vcpu_cpu() { # name min
	min=$2
	eval "on=\$N$VCPU"
	check "$1: on vCPU CPU" "$(hist)" \
		'[ "$on" -eq "$TOTAL" ] && [ "$TOTAL" -ge "$min" ]'
}

# How the timer got there.  Call-site: KVM starts it once per arm, pinned
# (fewer starts than arms where a TSC deadline had passed).  Re-arm: KVM
# starts it unpinned, the module starts it again pinned: two starts per
# timer moved.
starts() { # name count
	count=$2
	case $METHOD in
	callsite) check "$1: one pinned start per arm" \
		"starts=$STARTS pinned=$PINNED_STARTS arms=$count" \
		'[ "$PINNED_STARTS" = "$STARTS" ] && [ "$STARTS" -le "$count" ] &&
		 [ "$STARTS" -ge $((count / 2)) ]' ;;
	rearm) check_nohz "$1: two starts per moved arm" \
		"starts=$STARTS pinned=$PINNED_STARTS arms=$count" \
		'kvm=$((STARTS - PINNED_STARTS)); [ "$kvm" -le "$count" ] &&
		 [ "$kvm" -ge $((count / 2)) ] && [ "$PINNED_STARTS" -ge $((count / 2)) ]' ;;
	esac
}

# The bug shows: most of KVM's timers fire on the housekeeping CPU.  (Not
# all: the hrtimer core keeps a timer local when it expires before the
# housekeeping CPU's next event, which under emulation is often enough.)
unpinned() { # name count
	off_vcpu_cpu "$1" "$2"
	no_loss "$1"
}

# At least MIN expiries, at least half of them on the housekeeping CPU.
off_vcpu_cpu() { # name min
	min=$2
	check_nohz "$1: off vCPU CPU" "$(hist)" \
		'[ "$TOTAL" -ge "$min" ] && [ $((N0 * 2)) -ge "$TOTAL" ]'
}

idle_vm() {
	idle_vm_start
	check "idle VM" "keeps KVM's static keys set for the run: after ${IDLE_WAIT}s:$(
		kill -0 "$IDLE" 2>/dev/null || echo " exited") $(cat /tmp/idle.out)" \
		"grep -q 'IDLE ready' /tmp/idle.out"
}

idle_vm_stop() {
	kill "$IDLE"
	wait "$IDLE" 2>/dev/null
}

kvm_unload() {
	rmmod kvm_amd && rmmod kvm
}
