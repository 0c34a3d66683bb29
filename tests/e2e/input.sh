# shellcheck shell=sh
# Bad input gets a clear error and changes nothing:
# - the switch refuses what kstrtobool does not take, and keeps its value;
# - every status file and the method are read-only;
# - an unknown method refuses the load, with a clear message (bad_method,
#   run once with the module not loaded).
group_input() {
	bad_write '"2"' printf 2
	bad_write '"-1"' printf -- -1
	bad_write 'empty line' echo
	bad_write '4 KiB of junk' junk_4k
	bad_write 'non-UTF-8' printf '\377\376'
	for f in "$PIN"/status/* "$PIN"/parameters/method; do
		if { echo rearm >"$f"; } 2>/dev/null; then
			result FAIL "read-only ${f#"$PIN"/}" "write accepted"
		else
			result PASS "read-only ${f#"$PIN"/}" "write refused"
		fi
	done
}

junk_4k() {
	head -c 4096 /dev/zero | tr '\0' x
}

bad_write() { # name command-writing-the-bytes...
	name=$1
	shift
	before=$(cat $KNOB)
	if "$@" >$KNOB 2>/dev/null; then
		result FAIL "bad input $name" "write accepted"
	else
		check "bad input $name" "rejected, enabled=$(cat $KNOB)" \
			'[ "$(cat $KNOB)" = "$before" ]'
	fi
}

# With the module not loaded.
bad_method() {
	if modprobe kvm_lapic_pin method=bogus 2>/tmp/m.err; then
		result FAIL "bad input method=bogus" "module loaded"
		rmmod kvm_lapic_pin
	else
		check "bad input method=bogus" \
			"load refused: $(dmesg | grep 'invalid for parameter' | tail -n 1)" \
			'[ ! -d $PIN ] && dmesg | grep -q "bogus.* invalid for parameter .method"'
	fi
}
