# shellcheck shell=sh
# The package's module and kvm-lapic-pin-check, with the vCPU on CPU1:
# - the module the package's DKMS built on the host (tests/package-cycle.sh,
#   the upgraded version) loads, attaches and pins;
# - switched off, kvm-lapic-pin-check sees the guest's vCPU run on CPU1,
#   reports its timer expiries elsewhere and exits 1; switched on, every
#   expiry local and exit 0, in the table and in --json; the same for a
#   guest's Hyper-V synthetic timer;
# - with no guest running, it exits 2 and says why.
# Run once, with kvm loaded, the module not, the idle VM running; stops the
# idle VM.  Conditions are code for check(), METHOD is read by checks.sh.
# shellcheck disable=SC2016,SC2034
CHECK=/payload/kvm-lapic-pin-check
PACKAGE_KO=/payload/package/kvm_lapic_pin.ko

# check_run MODE ARGS...: kvm-lapic-pin-check ARGS for 2 s while a guest
# arms a timer of workload mode MODE every 10 ms (for 10 s: the check starts
# once the vCPU runs, and must end before the guest does, also where the
# debug kernel makes both slow); OUT is its output, RC its status, ROW the
# guest vCPU's row of the table.
check_run() {
	$W --mode "$1" --interval-us 10000 --count 1000 --cpu $VCPU \
		>/tmp/check.out &
	shift
	guest=$!
	vcpus_up 1 /tmp/check.out
	sleep 0.5
	OUT=$($CHECK -d 2 "$@" 2>&1)
	RC=$?
	kill $guest
	wait $guest 2>/dev/null
	ROW=$(echo "$OUT" | awk '$2 == "lapic-timer" && $3 == 0')
}

# The row's columns: PID PROCESS VCPU THREAD "RAN ON" LOCAL ELSEWHERE.
row() {
	echo "$ROW" | awk -v f="$1" '{ print $f }'
}

group_check_command() {
	METHOD=package
	if [ -f $PACKAGE_KO ]; then
		check "loads" "version $(modinfo -F version $PACKAGE_KO)" \
			'insmod $PACKAGE_KO'
		check "attaches" "attached=$(status attached) method=$(status method)" \
			'[ "$(status attached)" = 1 ]'
		run_timer --mode oneshot --interval-us 10000 --count 20 --cpu $VCPU
		pinned "fix oneshot 10ms" 20
	else
		result SKIP "loads, attaches, pins" "the host's package step built none"
		modprobe kvm_lapic_pin
	fi

	METHOD=check
	for mode in oneshot stimer; do
		knob 0
		check_run $mode
		check_nohz "$mode disabled: remote expiries, exit 1" "rc=$RC: $ROW" \
			'[ $RC = 1 ] && [ "$(row 5)" = $VCPU ] && [ "$(row 7)" -gt 0 ]'
		knob 1
		check_run $mode
		check "$mode enabled: all local, exit 0" "rc=$RC: $ROW" \
			'[ $RC = 0 ] && [ "$(row 5)" = $VCPU ] && [ "$(row 6)" -gt 0 ] &&
			 [ "$(row 7)" = 0 ]'
		echo "$OUT" | sed "s/^/INFO check $mode: /"
	done
	check_run oneshot --json
	check "enabled, --json: status 0, the vCPU listed" "rc=$RC: $OUT" \
		'[ $RC = 0 ] && echo "$OUT" | grep -q "^{\"status\":0," &&
		 echo "$OUT" | grep -q "\"process\":\"lapic-timer\",\"vcpu\":0,[^}]*\"cpus\":\[$VCPU\],[^}]*\"elsewhere\":0}"'
	rmmod kvm_lapic_pin
	idle_vm_stop
	OUT=$($CHECK -d 1 2>&1)
	RC=$?
	check "no guest: exit 2, says why" "rc=$RC: $(echo "$OUT" | tail -n 1)" \
		'[ $RC = 2 ] && echo "$OUT" | grep -q "cannot measure: no vCPU running"'
}
