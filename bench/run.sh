#!/bin/bash
# The benchmark: what pinning buys and what the hook costs, on Debian's
# kernels booted with nohz_full in QEMU (TCG, emulated SVM, nested KVM), with
# the end-to-end tests' VM machinery and KVM workload.
#
#   bench/run.sh [--quick] [KERNEL...]  default: 6.1 6.12-trixie 7.x-sid
#
# Each kernel boots twice with the same payload (bench/guest.sh):
#   wallclock  TCG as in the tests: the guest's clock is the host's.
#   icount     TCG with -icount shift=0: virtual time, and so every TSC,
#              advances 1 ns per instruction executed by the emulated CPUs,
#              idle time skipped; repeatable, unlike wall-clock time.
# Configurations: stock (module not loaded), tm0 (stock with
# kernel.timer_migration=0), upstream (the kernel's kvm.ko with the upstream
# fix: its arming calls' mode made pinned, bench/upstream-kvm.sh), callsite
# and rearm (the module loaded with method=callsite / method=rearm),
# disabled (module loaded, switched off).  Writes bench/out/table.txt
# (printed at the end), table.csv, latency.png, samples.csv (every sample)
# and logs/.  --quick takes fewer samples.  Exit status 0 if the table has
# every figure of every configuration.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(dirname "$BENCH_DIR")
TESTS_DIR=$REPO_ROOT/tests
OUT=$BENCH_DIR/out
WORK=$OUT/work
DEFAULT_KERNELS=(6.1 6.12-trixie 7.x-sid)
CONFIGS="stock tm0 upstream callsite rearm disabled"	# as bench/guest.sh runs them
readonly BENCH_DIR REPO_ROOT TESTS_DIR OUT WORK DEFAULT_KERNELS CONFIGS
# shellcheck source=tests/lib.sh
. "$TESTS_DIR/lib.sh"
QUICK=0

usage() {
	sed -n '2,21s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
	exit 2
}

die() {
	echo "bench: $*" >&2
	exit 1
}

# The workload and timerfd-loop, built in $WORK/bin with tests/guest/Makefile
# (timerfd-loop by make's built-in rule for a C file, with its flags).
build_tools() {
	mkdir -p "$WORK/bin"
	ln -sf "$TESTS_DIR/guest/lapic-timer.c" "$BENCH_DIR/timerfd-loop.c" "$WORK/bin/"
	make -s -C "$WORK/bin" -f "$TESTS_DIR/guest/Makefile" lapic-timer timerfd-loop
}

# The module for kernel $1, built as tests/run.sh builds it; prints the .ko.
build_module() {
	local dir=$WORK/build/$1
	module_tree "$dir"
	"$TESTS_DIR/kernels.sh" kbuild "$1" -- M="$dir" modules \
		>"$OUT/logs/$1-build.log" 2>&1 ||
		die "$1: module build failed, see $OUT/logs/$1-build.log"
	echo "$dir/kvm_lapic_pin.ko"
}

# Two emulated VMs at once on a small machine make both unreliable.  (The
# process name is cut to 15 characters.)
wait_for_other_vms() {
	if pgrep -x qemu-system-x86 >/dev/null; then
		echo "waiting for other QEMU processes to exit: $(pgrep -d ' ' -x qemu-system-x86)"
		while pgrep -x qemu-system-x86 >/dev/null; do
			sleep 5
		done
	fi
}

# The settings bench/guest.sh takes from the kernel command line, for boot
# SETTING.  A wall-clock run lasts as long as its timers: one run each.
# Under icount idle time costs nothing: five runs, and the host hrtimer
# workload.
guest_params() {
	local runs=$((QUICK ? 1 : 5)) host_count=$((QUICK ? 100 : 500))
	[[ $1 == icount ]] || runs=1 host_count=0
	if ((QUICK)); then
		echo -n "BENCH_COUNTS=1000:50,10000:10,50000:5"
	else
		echo -n "BENCH_COUNTS=1000:500,10000:100,50000:40"
	fi
	echo " BENCH_RUNS=$runs BENCH_HOST_COUNT=$host_count"
}

# boot KERNEL SETTING INITRD: one VM run, console in $OUT/logs/.
boot() {
	local k=$1 setting=$2 initrd=$3 append
	local -a icount=()
	append=$(guest_params "$setting")
	if [[ $setting == icount ]]; then
		# With a fixed -icount shift, the boot CPU and a starting AP
		# wait for each other for minutes; bench/guest.sh brings the
		# APs up at run time instead, in a fraction of a second.
		icount=(--icount 0)
		append+=" maxcpus=1"
	fi
	wait_for_other_vms
	echo -n "$k: $setting boot"
	local start=$SECONDS
	if "$TESTS_DIR/vm/boot.sh" --kernel "$k" --initrd "$initrd" --tcg single \
		"${icount[@]}" --append "$append" --timeout 600 \
		--log "$OUT/logs/$k-$setting.log" >/dev/null 2>"$OUT/logs/$k-$setting.err"; then
		echo ": $((SECONDS - start)) s"
	else
		echo ": failed after $((SECONDS - start)) s, see $OUT/logs/$k-$setting.err"
	fi
}

# parse KERNEL SETTING: append the console's samples to $OUT/samples.csv
# (kernel,boot,config,workload,interval_us,metric,value) and its traces to
# $WORK/locality.csv (kernel,boot,config,mode,interval_us,vcpu,other), and
# its kprobes to $WORK/kprobes.csv (kernel,boot,method,type,probe,flags).
# Fails on an ERROR line, a damaged dump or a missing DONE line; prints
# RETRY lines.
parse() {
	local console=$OUT/logs/$1-$2.log
	[[ -f $console ]] || return 1
	tr -d '\r' <"$console" | awk -v OFS=, -v k="$1" -v b="$2" \
		-v console="$console" -v samples="$OUT/samples.csv" \
		-v locality="$WORK/locality.csv" -v kprobes="$WORK/kprobes.csv" '
	function val(key,   i) {
		for (i = 2; i <= NF; i++)
			if (index($i, key "=") == 1)
				return substr($i, length(key) + 2)
		return ""
	}
	function complain(what) {
		print k ": " b ": " what
		bad = 1
	}
	function check_dump() {
		if (got_lat != want_lat || got_arm != want_arm)
			complain("damaged dump in " config " " workload " " interval)
	}
	# The console may put other output before a line of ours.
	match($0, /(CONFIG|KPROBES|RETRY|RUN|HOST|SAMPLES|LAT|ARM|TRACE|ERROR|DONE)( |$)/) {
		$0 = substr($0, RSTART)
	}
	$1 == "CONFIG" { config = $2 }
	$1 == "RUN" { workload = val("mode"); interval = val("interval_us") }
	$1 == "HOST" { workload = "timerfd"; interval = val("interval_us") }
	$1 == "SAMPLES" {
		check_dump()
		khz = val("tsc_khz")
		want_lat = val("lat") + 0
		want_arm = val("arm") + 0
		got_lat = got_arm = 0
	}
	$1 == "LAT" || $1 == "ARM" {
		for (i = 2; i <= NF; i++) {
			if ($i !~ /^-?[0-9]+$/)
				continue
			if ($1 == "LAT") {
				got_lat++
				print k, b, config, workload, interval, "latency_ns",
				      sprintf("%.0f", $i * 1000000 / khz) >>samples
			} else {
				got_arm++
				print k, b, config, workload, interval, "arm_ticks",
				      $i >>samples
			}
		}
	}
	$1 == "TRACE" {
		print k, b, config, workload, interval, val("vcpu"),
		      val("other") >>locality
	}
	$1 == "KPROBES" {
		print k, b, val("method"), val("type"), val("probe"),
		      val("flags") >>kprobes
	}
	$1 == "RETRY" { print k ": " b ": " config ": " $0 }
	$1 == "ERROR" { complain($0) }
	$1 == "DONE" { done = 1 }
	END {
		check_dump()
		if (!done)
			complain("incomplete, see " console)
		exit bad
	}'
}

# Quantiles (nearest rank) of each group of samples: $WORK/stats.csv,
# kernel,boot,config,workload,interval_us,metric,n,p10,median,p90,p99,max.
stats() {
	sort -t, -k1,6 -k7,7n "$OUT/samples.csv" | awk -F, -v OFS=, '
	function q(p,   r) {
		r = int(p * n)
		if (r < p * n || r < 1)
			r++
		return v[r]
	}
	function flush() {
		if (n)
			print group, n, q(0.1), q(0.5), q(0.9), q(0.99), v[n]
	}
	{
		g = $1 OFS $2 OFS $3 OFS $4 OFS $5 OFS $6
		if (g != group) {
			flush()
			group = g
			n = 0
		}
		v[++n] = $7
	}
	END { flush() }' >"$WORK/stats.csv"
}

# $OUT/table.csv, one row per figure:
# metric,kernel,boot,config,workload,interval_us,unit,n,value,p10,p90,p99,max
# value is the median, or for locality the % of expiries on the vCPU's CPU.
# Arm costs are kept from the icount boot only, and not for periodic mode,
# which arms once per run.
table_csv() {
	echo metric,kernel,boot,config,workload,interval_us,unit,n,value,p10,p90,p99,max
	awk -F, -v OFS=, '
	{
		g = $1 OFS $2 OFS $3 OFS $4 OFS $5
		vcpu[g] += $6
		all[g] += $6 + $7
	}
	END {
		for (g in all)
			if (all[g])
				print "locality", g, "%", all[g],
				      sprintf("%.1f", 100 * vcpu[g] / all[g]), "", "", "", ""
	}' "$WORK/locality.csv" | sort
	awk -F, -v OFS=, '
	$6 == "latency_ns" { print "latency", $1, $2, $3, $4, $5, "ns", $7, $9, $8, $10, $11, $12 }
	$6 == "arm_ticks" && $2 == "icount" && $4 != "periodic" {
		print $4 == "timerfd" ? "host_arm_cost" : "arm_cost", $1, $2, $3, $4, $5,
		      "ticks", $7, $9, $8, $10, $11, $12
	}' "$WORK/stats.csv"
}

# table.txt from table.csv and $WORK/kprobes.csv; KERNEL=KVER arguments name
# the kernels.
table_txt() {
	awk -F, -v kernels="$*" -v configs="$CONFIGS" -v kprobes="$WORK/kprobes.csv" \
		-v qemu="$(qemu-system-x86_64 --version | head -n 1)" \
		-v wallclock="$(guest_params wallclock)" -v icount="$(guest_params icount)" '
	function cell(m, k, b, c, w, i) {
		return (m, k, b, c, w, i) in v ? v[m, k, b, c, w, i] : "MISSING"
	}
	# median of configuration c minus that of configuration r, or "."
	function diff(m, k, c, w, i, r) {
		if (c == r || !((m, k, "icount", c, w, i) in v) ||
		    !((m, k, "icount", r, w, i) in v))
			return "."
		return sprintf("%+d", v[m, k, "icount", c, w, i] - v[m, k, "icount", r, w, i])
	}
	# median [p10-p90], then the median minus stock'"'"'s and upstream'"'"'s
	function cost(m, k, c, w, i,   key) {
		key = m SUBSEP k SUBSEP "icount" SUBSEP c SUBSEP w SUBSEP i
		if (!(key in v))
			return sprintf("%-19s %6s %6s ", "MISSING", "", "")
		return sprintf("%-19s %6s %6s ", v[key] " [" p10[key] "-" p90[key] "]",
			       diff(m, k, c, w, i, "stock"), diff(m, k, c, w, i, "upstream"))
	}
	# median, p99, max in us, and the median relative to stock
	function lat(k, c, w,   key, stock, d) {
		key = "latency" SUBSEP k SUBSEP "icount" SUBSEP c SUBSEP w SUBSEP 10000
		stock = "latency" SUBSEP k SUBSEP "icount" SUBSEP "stock" SUBSEP w SUBSEP 10000
		if (!(key in v))
			return sprintf("%-30s", "MISSING")
		d = ""
		if (c != "stock" && stock in v)
			d = sprintf("%+.1f%%", 100 * (v[key] - v[stock]) / v[stock])
		return sprintf("%6.1f %6.1f %6.1f %8s ", v[key] / 1000, p99[key] / 1000,
			       max[key] / 1000, d)
	}
	# the call-site method against the upstream fix (see the heading)
	function versus(k, w, i,   a, s, u, c, r) {
		a = "arm_cost" SUBSEP k SUBSEP "icount" SUBSEP
		s = a "stock" SUBSEP w SUBSEP i
		u = a "upstream" SUBSEP w SUBSEP i
		c = a "callsite" SUBSEP w SUBSEP i
		r = a "rearm" SUBSEP w SUBSEP i
		if (!(s in v && u in v && c in v && r in v))
			return sprintf("%8s %8s %8s %8s", "MISSING", "", "", "")
		return sprintf("%+8d %7.1f%% %+8d %8s", v[c] - v[u], 100 * (v[c] - v[u]) / v[s],
			       v[r] - v[u], v[r] == v[u] ? "." : sprintf("%.2f", (v[c] - v[u]) / (v[r] - v[u])))
	}
	NR > 1 {
		key = $1 SUBSEP $2 SUBSEP $3 SUBSEP $4 SUBSEP $5 SUBSEP $6
		v[key] = $9
		p10[key] = $10
		p90[key] = $11
		p99[key] = $12
		max[key] = $13
	}
	END {
		nk = split(kernels, K, " ")
		nc = split(configs, C, " ")
		kw = 6	# width of the kernel column
		nm = split("oneshot tscdeadline periodic stimer", M, " ")
		na = split("oneshot tscdeadline stimer", A, " ")	# modes that arm per expiry
		split("1000 10000 50000", I, " ")
		split("wallclock icount", B, " ")
		printf "kvm-lapic-pin benchmark: Debian"
		for (k = 1; k <= nk; k++) {
			split(K[k], kv, "=")
			K[k] = kv[1]
			printf " %s (%s)", kv[1], kv[2]
			if (length(kv[1]) > kw)
				kw = length(kv[1])
		}
		KF = "%-" kw "s"
		print ""
		print qemu
		print "TCG, emulated SVM, nested KVM; 3 CPUs, nohz_full=1-2; the vCPU runs on CPU1."
		print "stock: module not loaded; tm0: stock + sysctl kernel.timer_migration=0;"
		print "upstream: the upstream fix, the kernel'"'"'s own kvm.ko with the mode of its"
		print "  three arming calls changed from HRTIMER_MODE_ABS_HARD to ..._ABS_PINNED_HARD"
		print "  (bench/upstream-kvm.sh), module not loaded;"
		print "callsite / rearm: module loaded with method=callsite / method=rearm;"
		print "disabled: module loaded (method=rearm), parameters/enabled = 0."
		print "wallclock boot: TCG as in make check. icount boot: -icount shift=0, so"
		print "every TSC advances 1 tick per instruction the emulated CPUs execute."
		print "Runs per configuration, mode and interval (interval_us:timer interrupts),"
		print "timerfd arms per run:"
		print "  wallclock: " wallclock
		print "  icount:    " icount
		print ""
		print "1. Locality: % of timer expiries on the vCPU'"'"'s CPU: of apic_timer_fn, or in"
		print "   stimer mode (Hyper-V synthetic timer 0, one-shot, direct mode) of"
		print "   stimer_timer_callback, which the upstream fix and method=rearm leave"
		print "   as KVM arms it. The hrtimer core keeps a timer on the arming CPU when it"
		print "   expires before the housekeeping CPU'"'"'s next event (its tick: HZ=250), as"
		print "   1 ms timers often do; a periodic timer stays where its first expiry was"
		print "   queued."
		printf "%-" (kw + 20) "s", ""
		for (m = 1; m <= nm; m++)
			printf "%-21s", M[m]
		printf "\n" KF " %-9s %-9s", "kernel", "boot", "config"
		for (m = 1; m <= nm; m++)
			printf "%6s %6s %6s  ", "1ms", "10ms", "50ms"
		print ""
		for (k = 1; k <= nk; k++)
			for (b = 1; b <= 2; b++)
				for (c = 1; c <= nc; c++) {
					printf KF " %-9s %-9s", K[k], B[b], C[c]
					for (m = 1; m <= nm; m++)
						for (i = 1; i <= 3; i++)
							printf "%6s%s", cell("locality", K[k], B[b], C[c], M[m], I[i]), i == 3 ? "  " : " "
					print ""
				}
		print ""
		print "2. Cost per timer arm, icount boot: TSC ticks (= instructions) the L2 guest"
		print "   sees across its arming write (TMICT, or the TSC_DEADLINE MSR: one VM exit;"
		print "   stimer: the reference counter'"'"'s rdmsr and the STIMER0_COUNT wrmsr, two),"
		print "   handled by KVM in L1, the hrtimer start (start_sw_timer, or"
		print "   kvm_hv_process_stimers before the vCPU re-enters) and the module'"'"'s"
		print "   probes included. median [p10-p90] over all arms of all runs, then the"
		print "   median minus stock'"'"'s and minus upstream'"'"'s."
		printf KF " %-8s %-9s", "kernel", "interval", "config"
		for (a = 1; a <= na; a++)
			printf " %-34s", A[a]
		printf "\n%-" (kw + 19) "s", ""
		for (a = 1; a <= na; a++)
			printf " %-19s %6s %6s ", "median [p10-p90]", "-stock", "-upstr"
		print ""
		for (k = 1; k <= nk; k++)
			for (i = 1; i <= 3; i++)
				for (c = 1; c <= nc; c++) {
					printf KF " %-8s %-9s", K[k], I[i] / 1000 "ms", C[c]
					for (a = 1; a <= na; a++)
						printf " %s", cost("arm_cost", K[k], C[c], A[a], I[i])
					print ""
				}
		print ""
		print "3. The call-site method against the upstream fix, from table 2, for the"
		print "   LAPIC timer (neither the fix nor the re-arm pins a synthetic timer):"
		print "   callsite minus upstream, in ticks and as % of a stock arm; rearm minus"
		print "   upstream; and the ratio of the two (the share of the re-arm'"'"'s extra"
		print "   cost left)."
		printf KF " %-8s %-39s%s\n", "kernel", "interval", "oneshot", "tscdeadline"
		printf KF " %-8s ", "", ""
		for (m = 1; m <= 2; m++)
			printf "%8s %8s %8s %8s    ", "callsite", "% stock", "rearm", "ratio"
		print ""
		for (k = 1; k <= nk; k++)
			for (i = 1; i <= 3; i++)
				printf KF " %-8s %s    %s\n", K[k], I[i] / 1000 "ms",
				       versus(K[k], "oneshot", I[i]), versus(K[k], "tscdeadline", I[i])
		print ""
		print "4. System-wide cost: the same for a host hrtimer without KVM, timerfd_settime()"
		print "   on CPU1 arming a 10 ms timer (bench/timerfd-loop.c), icount boot."
		printf KF " %-9s %-19s %6s %6s\n", "kernel", "config", "timerfd_settime", "-stock", "-upstr"
		for (k = 1; k <= nk; k++)
			for (c = 1; c <= nc; c++)
				printf KF " %-9s %s\n", K[k], C[c], cost("host_arm_cost", K[k], C[c], "timerfd", 10000)
		print ""
		print "5. Guest-visible latency at 10 ms, icount boot: programmed deadline to the"
		print "   L2 timer handler, in us of virtual time (1 ns = 1 instruction executed by"
		print "   any emulated CPU, an IPI costs only its instructions): median, p99, max,"
		print "   and the median relative to stock'"'"'s. Absolute numbers are emulation'"'"'s;"
		print "   compare configurations. Wall-clock latencies (table.csv, latency.png) are"
		print "   host time of a TCG guest ~100x slower than hardware, and vary 2x from run"
		print "   to run: they do not separate the configurations."
		printf "%-" (kw + 11) "s", ""
		for (a = 1; a <= na; a++)
			printf "%-30s", A[a]
		printf "\n" KF " %-9s ", "kernel", "config"
		for (a = 1; a <= na; a++)
			printf "%6s %6s %6s %8s ", "med", "p99", "max", "vs stock"
		print ""
		for (k = 1; k <= nk; k++)
			for (c = 1; c <= nc; c++) {
				printf KF " %-9s ", K[k], C[c]
				for (a = 1; a <= na; a++)
					printf "%s", lat(K[k], C[c], A[a])
				print ""
			}
		print ""
		print "6. The module'"'"'s probes on kvm.ko, icount boot (debugfs kprobes/list right"
		print "   after loading it): k = kprobe, r = kretprobe; OPTIMIZED = a jump instead"
		print "   of int3."
		printf KF " %-9s %-4s %-32s %s\n", "kernel", "method", "type", "probe", "flags"
		FS = ","
		while ((getline line <kprobes) > 0) {
			split(line, f, ",")
			if (f[2] != "icount")
				continue
			probes[f[1]] = probes[f[1]] sprintf(KF " %-9s %-4s %-32s %s\n", f[1], f[3], f[4], f[5], f[6])
		}
		for (k = 1; k <= nk; k++)
			printf "%s", K[k] in probes ? probes[K[k]] : sprintf(KF " %s\n", K[k], "MISSING")
	}' "$OUT/table.csv"
}

# $OUT/latency.png: distribution of the latency at 10 ms per configuration,
# one panel per kernel (rows) and boot and mode (columns), as in table.txt.
# Configurations that measure about the same (stock and disabled; tm0,
# upstream and callsite, under icount; in stimer mode upstream and rearm
# with stock) draw on top of each other: thick and thin lines.
plot() {
	local k b m c i line panels=() sorted=$WORK/plot/samples-by-value.csv
	local -a configs
	read -ra configs <<<"$CONFIGS"
	local styles=("lw 6" "lw 6" "lw 4" "lw 2 dt 2" "lw 2" "lw 2 dt 2")
	mkdir -p "$WORK/plot"
	sort -t, -k7,7n "$OUT/samples.csv" >"$sorted"
	for k; do
		for b in icount wallclock; do
			for m in oneshot tscdeadline stimer; do
				# CDF points per configuration, one data block each
				awk -F, -v k="$k" -v b="$b" -v m="$m" -v configs="$CONFIGS" '
				$1 == k && $2 == b && $4 == m && $5 == 10000 && $6 == "latency_ns" {
					x[$3, ++n[$3]] = $7
				}
				END {
					nc = split(configs, C, " ")
					for (c = 1; c <= nc; c++) {
						for (i = 1; i <= n[C[c]]; i++)
							print x[C[c], i] / 1000, i / n[C[c]]
						printf "\n\n"
					}
				}' "$sorted" >"$WORK/plot/$k-$b-$m.dat"
				panels+=("$WORK/plot/$k-$b-$m.dat" "$k $b $m")
			done
		done
	done
	gnuplot <<-EOF
	set terminal pngcairo size 2700,$((420 * $#)) font ",10"
	set output "$OUT/latency.png"
	set multiplot layout $#,6 title "kvm-lapic-pin: deadline-to-handler latency at 10 ms (CDF; icount: virtual us = 1000 instructions; wallclock: host us under TCG)"
	set xlabel "latency (us)"
	set ylabel "fraction of timer interrupts"
	set yrange [0:1]
	set key bottom right
	set grid
	$(for ((i = 0; i < ${#panels[@]}; i += 2)); do
		echo "set title \"${panels[i + 1]}\""
		# wall-clock tails are long
		case ${panels[i + 1]} in
		*wallclock*) echo "set logscale x" ;;
		*) echo "unset logscale x" ;;
		esac
		line=plot
		for c in "${!configs[@]}"; do
			line+=" \"${panels[i]}\" index $c using 1:2 with steps"
			line+=" ${styles[c]} title \"${configs[c]}\","
		done
		echo "${line%,}"
	done)
	unset multiplot
	EOF
}

main() {
	if [[ ${1-} == --quick ]]; then
		QUICK=1
		shift
	fi
	[[ ${1-} != -* ]] || usage
	local kernels=("$@") k ko payload initrd setting failed=0
	[[ ${#kernels[@]} -gt 0 ]] || kernels=("${DEFAULT_KERNELS[@]}")
	# tests/kernels.sh's names for them (it also takes older ones)
	local canonical
	canonical=$("$TESTS_DIR/kernels.sh" names "${kernels[@]}") || exit 2
	mapfile -t kernels <<<"$canonical"

	install_missing "${TEST_PACKAGES[@]}" gnuplot-nox || exit 2
	rm -rf "$OUT"
	mkdir -p "$OUT/logs" "$WORK"
	echo "fetching kernels: ${kernels[*]}"
	"$TESTS_DIR/kernels.sh" fetch "${kernels[@]}" >"$OUT/logs/fetch.log" 2>&1 ||
		die "kernel fetch failed, see $OUT/logs/fetch.log"
	build_tools
	: >"$OUT/samples.csv"
	: >"$WORK/locality.csv"
	: >"$WORK/kprobes.csv"
	for k in "${kernels[@]}"; do
		ko=$(build_module "$k")
		payload=$WORK/payload/$k
		initrd=$WORK/$k.cpio.gz
		mkdir -p "$payload"
		cp "$BENCH_DIR/guest.sh" "$payload/run"
		cp "$TESTS_DIR/e2e/lib.sh" "$payload/"
		cp "$WORK/bin/lapic-timer" "$WORK/bin/timerfd-loop" "$payload/"
		"$BENCH_DIR/upstream-kvm.sh" "$k" "$payload/kvm-upstream.ko" \
			>"$OUT/logs/$k-upstream-kvm.log" 2>&1 ||
			die "$k: no upstream-fix kvm.ko, see $OUT/logs/$k-upstream-kvm.log"
		"$TESTS_DIR/vm/mkinitramfs.sh" "$k" "$initrd" "$payload" "$ko" \
			>"$OUT/logs/$k-initramfs.log" 2>&1 ||
			die "$k: initramfs failed, see $OUT/logs/$k-initramfs.log"
		for setting in wallclock icount; do
			boot "$k" "$setting" "$initrd"
			parse "$k" "$setting" || failed=1
		done
	done
	stats
	table_csv >"$OUT/table.csv"
	local -a names=()
	for k in "${kernels[@]}"; do
		names+=("$k=$("$TESTS_DIR/kernels.sh" info "$k" | sed -n 's/^KVER=//p')")
	done
	table_txt "${names[@]}" | sed 's/ *$//' >"$OUT/table.txt"
	cat "$OUT/table.txt"
	if grep -q MISSING "$OUT/table.txt"; then
		echo "bench: figures are MISSING from the table" >&2
		failed=1
	fi
	plot "${kernels[@]}" >"$OUT/logs/plot.log" 2>&1 || {
		echo "bench: no plot, see $OUT/logs/plot.log" >&2
		failed=1
	}
	return $failed
}

main "$@"
