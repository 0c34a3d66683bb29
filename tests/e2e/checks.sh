# shellcheck shell=sh
# The e2e scenarios' vocabulary (busybox sh in the test VM), copied next to
# them as /payload/checks.sh.  CPU0 is housekeeping, CPUs 1-2 are
# nohz_full; the vCPU runs on CPU1.  Conditions are shell code handed to
# check(), which evals them: single quotes and variables set only for
# check() are deliberate.
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

status() {
	cat $PIN/status/"$1"
}

knob() {
	echo "$1" >$KNOB
}

# The module, loaded with this round's method.
load_module() {
	modprobe kvm_lapic_pin method="$METHOD"
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

# A traced workload run: trace_start, the run, trace_parse.  trace_parse
# sets, from the trace of the timers whose callback is $FN: N0 N1 N2 (expiries per CPU),
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
	eval "$(awk -v fn="function=$FN " '
		!index($0, fn) { next }
		{
			match($0, /\[[0-9]+\]/)
			cpu = substr($0, RSTART + 1, RLENGTH - 2) + 0
			match($0, /hrtimer=[0-9a-f]+/)
			t = substr($0, RSTART, RLENGTH)
		}
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

# Every expiry on the vCPU's CPU.  Enough expiries to mean something: KVM
# delivers a TSC deadline that has passed by the time it is written without
# the hrtimer, so the trace may hold fewer expiries than timers armed (the
# guest's own count, no_loss, is exact).
pinned() { # name count
	count=$2
	check "$1: on vCPU CPU" "$(hist)" \
		'[ "$N1" -eq "$TOTAL" ] && [ "$TOTAL" -ge $((count / 2)) ]'
	no_loss "$1"
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
	count=$2
	check_nohz "$1: off vCPU CPU" "$(hist)" \
		'[ "$TOTAL" -ge "$count" ] && [ $((N0 * 2)) -ge "$TOTAL" ]'
	no_loss "$1"
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
