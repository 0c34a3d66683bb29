# shellcheck shell=sh
# shellcheck disable=SC2016,SC2034  # conditions are code for check()
# A real VMM and a real guest kernel: the host's QEMU (real-guest-root.sh)
# with -accel kvm and -M microvm boots guest-6.12, a Linux kernel built from
# Debian's source (tests/guest-kernel.config), with two vCPUs that are
# pinned the way operators pin them (QMP query-cpus-fast, then taskset) to
# the nohz_full CPUs 1 and 2 before the guest starts; its user space runs
# Debian's cyclictest with a thread on each vCPU (real-guest-init).  For
# each vCPU thread, the expiries of the LAPIC timers it armed, over the
# guest's boot and cyclictest's run:
# - with the guest's TSC-deadline timer (Linux's default), switched off
#   (the control): some fire on the housekeeping CPU;
# - switched on: every one on the vCPU's own CPU;
# - the same with its one-shot timer (-cpu host,-tsc-deadline);
# - each run: the guest used that timer, cyclictest ran its loops on both
#   vCPUs (one thread all of them), and the guest shut down by itself.
# Under QEMU's emulated SVM (the test VM's CPU) a Linux guest now and then
# deadlocks: a handler is entered again where the code it interrupted holds
# a lock with interrupts off, and spins on it (RIP in
# queued_spin_lock_slowpath, or ktime_get on the timekeeper's seqcount;
# with one vCPU as with two), or resets before user space.  With KVM's
# paravirtual features (PV EOI, IPIs, TLB flush, ...) every boot tried here
# deadlocked: they are off in the guest's CPU model.  Without them, of 96
# boots on 6.1 and 6.12-trixie (one soak of each), 10 of 40 with the
# TSC-deadline timer and 29 of 56 with the one-shot timer did not run to
# their end, most before user space.  A boot that has not ended in RG_TIMEOUT
# is stopped and done again (an INFO line gives its vCPUs' RIPs and its
# last lines), RG_BOOTS times at most; the checks are those of the last
# boot.  That is too often for CI: tests/run.sh runs this only on the
# kernels KLP_REAL_GUEST names, in the call-site round (klp.real_guest=METHOD
# on the kernel command line names the round); SKIP elsewhere.
RG_PV_OFF=-kvm-pv-ipi,-kvm-pv-unhalt,-kvm-pv-eoi,-kvm-pv-tlb-flush,-kvm-pv-sched-yield
RG_LOOPS=50
RG_MIN=10	# expiries per vCPU, at least
RG_TIMEOUT=60	# seconds; a boot that ends takes 5 to 35
RG_BOOTS=3

group_real_guest() {
	if ! grep -qw "klp.real_guest=$METHOD" /proc/cmdline; then
		result SKIP "real guest" "not in CI (the emulated SVM deadlocks \
its guests too often): it runs in the round that klp.real_guest=METHOD names \
(tests/run.sh KLP_REAL_GUEST); here: $(grep -o 'klp.real_guest=[a-z]*' \
			/proc/cmdline || echo none)"
		return
	fi
	[ -x /usr/bin/qemu-system-x86_64 ] || cp -a /payload/real-guest-root/. /
	for mode in tscdeadline oneshot; do
		cpu=host,$RG_PV_OFF
		[ $mode = tscdeadline ] || cpu=$cpu,-tsc-deadline
		knob 0
		real_guest "real guest $mode, control" $cpu off_vcpu_cpu
		knob 1
		real_guest "real guest $mode" $cpu on_vcpu_cpu
	done
}

# qmp COMMAND: send it on the QMP pipe (fd 3), RES its reply (fd 4; empty
# after 30 s without one), the events QEMU sends meanwhile skipped.
qmp() {
	echo "$1" >&3
	qmp_reply
}

qmp_reply() {
	RES=
	# shellcheck disable=SC3045  # busybox sh's read has -t
	while read -t 30 -r RES <&4 && [ "${RES#\{\"timestamp\"}" != "$RES" ]; do
		:
	done
}

# real_guest NAME CPU CHECK: boot the guest with -cpu CPU (rg_boot) until
# a boot runs to its end, at most RG_BOOTS times; then the checks of that
# boot: the guest's own, and for each vCPU, CHECK "NAME: vcpuI" RG_MIN with
# trace_parse's counts for the timers its thread started.
real_guest() {
	rg_boot=1
	while ! rg_boot "$2" && [ $rg_boot -lt $RG_BOOTS ]; do
		echo "INFO $METHOD: $1: boot $rg_boot did not run to its end" \
			"(${rg_rip:+stopped after ${RG_TIMEOUT}s, RIP $rg_rip; }its last" \
			"lines: $(tail -n 3 /tmp/rg.txt | tr '\n' '|')); booting again"
		rg_boot=$((rg_boot + 1))
	done
	rg_want=$(rg_clockevent "$2")
	check "$1: the guest ran cyclictest on its timer and shut down" \
		"boot $rg_boot: $(echo "$rg_vcpus" | wc -l) vCPUs, clockevent $rg_clock, loops $rg_loops, exit $rg_rc after ${rg_wait}s" \
		'[ "$(echo "$rg_vcpus" | wc -l)" = 2 ] && [ $rg_rc = 0 ] &&
		 [ "$rg_clock" = "$rg_want" ] &&
		 echo "$rg_loops" | grep -Eqx "0:[1-9][0-9]* 1:[1-9][0-9]*" &&
		 echo " $rg_loops " | grep -q ":$RG_LOOPS "'
	echo "$rg_vcpus" | while read -r i tid; do
		VCPU=$((i + 1))
		trace_parse "$tid"
		"$3" "$1: vcpu$i" $RG_MIN
	done
	VCPU=1
}

# rg_boot CPU: one boot of the guest with -cpu CPU, its vCPU I's thread
# pinned to CPU I + 1 while it is stopped (-S), traced from its start to
# its exit or RG_TIMEOUT; true if it ran to its end ("GUEST done") and shut
# down by itself.  Sets rg_vcpus
# ("I TID" a line), rg_rc, rg_wait, rg_clock, rg_loops ("0:N 1:N": each
# cyclictest thread's loops) and, where it was stopped, rg_rip (its vCPUs').
rg_boot() {
	rm -f /tmp/qmp.in /tmp/qmp.out /tmp/rg.log
	mkfifo /tmp/qmp.in /tmp/qmp.out
	taskset -c 0 qemu-system-x86_64 -M microvm -accel kvm -cpu "$1" \
		-smp 2 -m 128M -nodefaults -no-user-config -display none \
		-no-reboot -serial file:/tmp/rg.log -S \
		-chardev pipe,id=qmp,path=/tmp/qmp \
		-mon chardev=qmp,mode=control \
		-kernel /guest/bzImage -initrd /guest/initrd.cpio.gz \
		-append "console=ttyS0 reboot=t panic=-1 CYCLICTEST_LOOPS=$RG_LOOPS" &
	rg_qemu=$!
	# Opened read-write, so that neither open waits for QEMU.
	exec 3<>/tmp/qmp.in 4<>/tmp/qmp.out
	qmp_reply	# the greeting
	qmp '{"execute":"qmp_capabilities"}'
	qmp '{"execute":"query-cpus-fast"}'
	# From [{"thread-id": TID, ..., "cpu-index": I, ...}, ...]
	rg_vcpus=$(echo "$RES" | awk '{
		n = split($0, cpu, /\{"thread-id": /)
		for (i = 2; i <= n; i++) {
			match(cpu[i], /"cpu-index": [0-9]+/)
			print substr(cpu[i], RSTART + 13, RLENGTH - 13), cpu[i] + 0
		}
	}')
	echo "$rg_vcpus" | while read -r i tid; do
		taskset -pc $((i + 1)) "$tid" >/dev/null
	done
	trace_start
	qmp '{"execute":"cont"}'
	rg_wait=0
	while kill -0 $rg_qemu 2>/dev/null && [ $rg_wait -lt $RG_TIMEOUT ]; do
		sleep 1
		rg_wait=$((rg_wait + 1))
	done
	rg_rip=
	if kill -0 $rg_qemu 2>/dev/null; then
		qmp '{"execute":"human-monitor-command","arguments":{"command-line":"info registers -a"}}'
		rg_rip=$(echo "$RES" | grep -o 'RIP=[0-9a-f]*' | xargs)
		kill $rg_qemu
	fi
	wait $rg_qemu
	rg_rc=$?
	exec 3>&- 4<&-
	echo 0 >$T/tracing_on
	tr -d '\r' </tmp/rg.log >/tmp/rg.txt
	rg_clock=$(sed -n 's/^GUEST clockevent //p' /tmp/rg.txt | head -n 1)
	# The serial log may hold a line twice.
	rg_loops=$(sed -n 's/^GUEST cyclictest T: \([0-9]\) .* C: *\([0-9]*\) .*/\1:\2/p' \
		/tmp/rg.txt | sort -u | xargs)
	[ -z "$rg_rip" ] && grep -q '^GUEST done' /tmp/rg.txt
}

# The guest kernel's clock event device for -cpu CPU.
rg_clockevent() {
	case $1 in
	*-tsc-deadline*) echo lapic ;;
	*) echo lapic-deadline ;;
	esac
}
