#!/bin/bash
# The upstream fix as a module: a copy of a fetched kernel's own kvm.ko in
# which KVM arms its LAPIC hrtimer pinned, as commit 61abdbe0bcc2 had it.
#
#   bench/upstream-kvm.sh KERNEL OUT.ko
#
# In the kvm.ko of KERNEL (a name of tests/kernels.sh), decompressed and with
# its module signature cut off, the mode immediate of each of KVM's arming
# calls, `mov $0x8,%ecx` (HRTIMER_MODE_ABS_HARD) a few instructions before a
# call of hrtimer_start_range_ns (two in start_sw_timer: one-shot/periodic
# and TSC-deadline) or a tail jump to it (one in __kvm_migrate_apic_timer),
# becomes 0xa (HRTIMER_MODE_ABS_PINNED_HARD).  Fails, writing nothing, unless
# it finds exactly those 2 + 1 sites and the result differs from the
# original in exactly their 3 bytes.  Prints the sites.  The result is
# unsigned: it loads, and taints, on a kernel that does not enforce module
# signatures (Debian's do not).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TESTS_DIR=$(dirname "$BENCH_DIR")/tests
MAGIC='~Module signature appended~'
readonly BENCH_DIR TESTS_DIR MAGIC

die() {
	echo "upstream-kvm.sh: $*" >&2
	exit 1
}

# decompress KO OUT
decompress() {
	case $1 in
	*.ko) cp "$1" "$2" ;;
	*.ko.xz) xz -dc "$1" >"$2" ;;
	*.ko.zst) zstd -qdc "$1" >"$2" ;;
	*.ko.gz) gzip -dc "$1" >"$2" ;;
	*) die "$1: unknown module compression" ;;
	esac
}

# strip_signature KO: cut the appended signature: the magic line, before it
# a struct module_signature (12 bytes: signer_len and key_id_len at offsets
# 3 and 4, the big-endian sig_len in the last 4), before that the signature.
strip_signature() {
	local size tail sig
	size=$(stat -c %s "$1")
	tail=$(tail -c $((${#MAGIC} + 1)) "$1" | tr -d '\n')
	[[ $tail == "$MAGIC" ]] || return 0
	read -ra sig < <(od -An -tu1 -v -j $((size - ${#MAGIC} - 1 - 12)) -N 12 "$1")
	((${#sig[@]} == 12)) || die "$1: cannot read the module signature"
	local len=$((sig[3] + sig[4] + (sig[8] << 24 | sig[9] << 16 | sig[10] << 8 | sig[11])))
	((len > 0 && len < size)) || die "$1: implausible signature length $len"
	truncate -s $((size - ${#MAGIC} - 1 - 12 - len)) "$1"
	! tail -c $((${#MAGIC} + 1)) "$1" | grep -qF "$MAGIC" ||
		die "$1: still signed after stripping"
}

# sites KO IMM: "FUNCTION OFFSET" for each `mov $IMM,%ecx` (OFFSET: in .text)
# followed, within 4 instructions that are neither branches nor calls, by a
# call of hrtimer_start_range_ns (in start_sw_timer) or a jump to it (in
# __kvm_migrate_apic_timer).  In a .ko, the branch's target is a
# R_X86_64_PLT32 relocation to the symbol.
sites() {
	objdump -dr --no-show-raw-insn -j .text "$1" | awk -v imm="$2" '
	/^[0-9a-f]+ <[^>]+>:$/ {
		fn = substr($2, 2, length($2) - 3)
		pending = ""
		next
	}
	/^ +[0-9a-f]+:\t/ {
		# a branch not consumed by the relocation below ends the site
		if (branch)
			pending = ""
		branch = 0
		addr = $1
		sub(/:$/, "", addr)
		insn = $0
		sub(/^ +[0-9a-f]+:\t/, "", insn)
		split(insn, w, " ")
		if (fn != "start_sw_timer" && fn != "__kvm_migrate_apic_timer")
			next
		if (insn ~ ("^mov +\\$" imm ",%ecx$")) {
			pending = addr
			n = 0
			next
		}
		if (pending != "" && ++n > 5)
			pending = ""
		if (w[1] ~ /^(call|jmp|j[a-z]+|ret)/) {
			branch = w[1]
			if (branch !~ /^(call|jmp)$/)
				pending = ""
		}
		next
	}
	/R_X86_64_PLT32\thrtimer_start_range_ns-0x4$/ && pending != "" {
		if ((fn == "start_sw_timer" && branch == "call") ||
		    (fn == "__kvm_migrate_apic_timer" && branch == "jmp"))
			print fn, pending
		pending = ""
		branch = 0
	}'
}

main() {
	(($# == 2)) || {
		sed -n '2,17s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
		exit 2
	}
	local name=$1 out=$2 KVER MODDIR src
	eval "$("$TESTS_DIR/kernels.sh" info "$name" | grep -E '^(KVER|MODDIR)=')"
	src=$(find "$MODDIR/kernel/arch/x86/kvm" -name 'kvm.ko*' -print -quit)
	[[ -n $src ]] || die "$name: no kvm.ko in $MODDIR"
	local tmp
	tmp=$(mktemp -d)
	# shellcheck disable=SC2064 # expand now
	trap "rm -rf '$tmp'" EXIT
	decompress "$src" "$tmp/orig.ko"
	strip_signature "$tmp/orig.ko"

	local -a found
	mapfile -t found < <(sites "$tmp/orig.ko" 0x8)
	local n_sw n_mig
	n_sw=$(printf '%s\n' "${found[@]}" | grep -c '^start_sw_timer ' || true)
	n_mig=$(printf '%s\n' "${found[@]}" | grep -c '^__kvm_migrate_apic_timer ' || true)
	if ((n_sw != 2 || n_mig != 1)); then
		die "$name: $src: found $n_sw sites in start_sw_timer and $n_mig in" \
			"__kvm_migrate_apic_timer, not 2 + 1; refusing to patch" \
			"(sites: ${found[*]:-none})"
	fi

	local text_off site fn off pos byte
	text_off=$(objdump -h "$tmp/orig.ko" | awk '$2 == ".text" { print $6 }')
	[[ -n $text_off ]] || die "$src: no .text section"
	cp "$tmp/orig.ko" "$tmp/new.ko"
	local -a want=()
	for site in "${found[@]}"; do
		read -r fn off <<<"$site"
		# b9 imm32: mov $imm32,%ecx; the immediate's low byte follows
		pos=$((0x$text_off + 0x$off + 1))
		byte=$(od -An -tx1 -j $((pos - 1)) -N 2 "$tmp/orig.ko" | tr -d ' ')
		[[ $byte == b908 ]] || die "$src: $fn .text+0x$off: bytes $byte, not b9 08"
		printf '\x0a' | dd of="$tmp/new.ko" bs=1 seek="$pos" conv=notrunc status=none
		want+=("$((pos + 1)) 10 12")	# cmp -l: 1-based offset, octal bytes
		echo "$fn .text+0x$off file offset $pos: \$0x8 -> \$0xa"
	done

	# Exactly those three bytes changed, and they disassemble as intended.
	local changed
	changed=$(cmp -l "$tmp/orig.ko" "$tmp/new.ko" | awk '{ print $1, $2, $3 }' || true)
	[[ $changed == "$(printf '%s\n' "${want[@]}")" ]] ||
		die "$src: the patched copy differs in other bytes than the 3 sites"
	local after
	after=$(sites "$tmp/new.ko" 0xa)
	[[ $after == "$(printf '%s\n' "${found[@]}")" ]] ||
		die "$src: after patching, the sites read: ${after:-none}"
	[[ -z $(sites "$tmp/new.ko" 0x8) ]] || die "$src: a 0x8 site is left"
	[[ $(modinfo -F name "$tmp/new.ko") == kvm ]] || die "$src: patched copy is no kvm module"
	mv "$tmp/new.ko" "$out"
	echo "$name: $out: upstream-fix kvm.ko for $KVER, from $src, signature stripped"
}

main "$@"
