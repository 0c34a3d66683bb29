# shellcheck shell=sh
# Memory the module leaves allocated (kmemleak: the debug kernel; where the
# kernel has no kmemleak these SKIP):
# - kvm reloaded under the module (it detached and re-attached): no
#   unreferenced object allocated by the module's code;
# - the module removed and kvm unloaded, at the end of each method's round:
#   none either.
# An object is the module's if a frame of its allocation's backtrace is in
# the module: "[kvm_lapic_pin]" while it is loaded; once it is gone
# kmemleak prints the bare address ("0x..."; before 6.x after the hashed
# "[<...>]"), matched against the pages the module's text had at each load
# (module_text).

KMEMLEAK=/sys/kernel/debug/kmemleak
TEXT_PAGES=/tmp/klp-text-pages	# "LO HI" per load: [LO, HI) as 16 hex digits

# Record the pages of the loaded module's text: from its lowest function's
# page to the page after its highest one's (the allocation ends there at
# the latest; a guard page follows it).
module_text() {
	[ -e $KMEMLEAK ] || return 0
	awk '$NF == "[kvm_lapic_pin]" && $2 ~ /^[tT]$/ {
		if (lo == "" || $1 < lo) lo = $1
		if ($1 > hi) hi = $1
	}
	function page_add(a, n,   low, i, v) {	# a: 16 hex digits
		low = 0
		for (i = 9; i <= 13; i++)
			low = low * 16 + index("0123456789abcdef", substr(a, i, 1)) - 1
		return sprintf("%s%05x000", substr(a, 1, 8), low + n)
	}
	END { if (lo != "") print page_add(lo, 0), page_add(hi, 2) }
	' /proc/kallsyms >>$TEXT_PAGES
}

# The unreferenced objects kmemleak finds now that the module allocated,
# as kmemleak reports them.  Objects are reported once they are older than
# 5 s and unchanged across two scans.
module_leaks() {
	sleep 6
	echo scan >$KMEMLEAK
	echo scan >$KMEMLEAK
	awk -v pages="$(cat $TEXT_PAGES 2>/dev/null)" '
	BEGIN { n = split(pages, p, /[ \n]+/) }
	function ours(a,   i) {
		for (i = 1; i + 1 <= n; i += 2)
			if (a >= p[i] && a < p[i + 1])
				return 1
		return 0
	}
	function flush() { if (mine) printf "%s", obj; obj = ""; mine = 0 }
	/^unreferenced object/ { flush() }
	{ obj = obj $0 "\n" }
	/\[kvm_lapic_pin\]/ { mine = 1 }
	/^ +(\[<[0-9a-f]+>\] )?0x[0-9a-f]+$/ {
		a = $NF
		sub(/^0x/, "", a)
		if (length(a) == 16 && ours(a)) mine = 1
	}
	END { flush() }
	' $KMEMLEAK
}

# leak_check NAME: nothing of the module's among kmemleak's objects.
leak_check() {
	if [ ! -e $KMEMLEAK ]; then
		result SKIP "$1" "no kmemleak in this kernel"
		return
	fi
	module_leaks >/tmp/leaks.out
	check "$1" "$(grep -c '^unreferenced object' /tmp/leaks.out) objects of the module's, $(grep -c '^unreferenced object' $KMEMLEAK) in all" \
		'[ ! -s /tmp/leaks.out ] || { cat /tmp/leaks.out; false; }'
	# Whose all of them are, for the console log: the commonest first
	# frames past the allocator.
	echo "INFO $METHOD: kmemleak's objects by allocating function: $(awk '/^  backtrace/ { f = 1; next }
		f { s = ($1 ~ /^\[</) ? $2 : $1 }
		f && s !~ /^(kmemleak|__kmalloc|kmalloc|kmem_cache|__kmem|slab|__slab|__alloc|alloc_|__vmalloc|vmalloc|__do_kmalloc|kstrdup|kvmalloc|__kvmalloc|krealloc|pcpu_alloc|__kmalloc_node|kmalloc_node)/ {
			sub(/\+.*/, "", s); print s; f = 0 }
		/^unreferenced/ { f = 0 }' $KMEMLEAK | sort | uniq -c | sort -rn | head -n 5 | xargs)"
}
