// SPDX-License-Identifier: GPL-2.0
/*
 * The call-site method, the default: at run time, what upstream commit
 * 61abdbe0bcc2 did in the source.  KVM arms the LAPIC timer with
 * hrtimer_start_range_ns(timer, tim, delta, HRTIMER_MODE_ABS_HARD); a
 * kprobe at each of those calls sets HRTIMER_MODE_PINNED in the mode
 * argument (%rcx) before the call runs, so that the hrtimer core queues the
 * timer once, on this CPU, the vCPU's.
 *
 * The calls are found in the code of the arming functions and proven
 * before anything is probed: a call or tail jump whose rel32 targets
 * hrtimer_start_range_ns, at an instruction boundary, preceded within a
 * few instructions by a "mov $0x8,%ecx" at an instruction boundary (the
 * kernel's own decoder judges boundaries: register_kprobe() refuses any
 * other address, and a kprobe registered disabled patches nothing).  The
 * number found must be the layout's: two in start_sw_timer, one in
 * __kvm_migrate_apic_timer.
 *
 * A kprobe on a branch always traps (int3).  Where the instructions between
 * the mov and the branch are at least the 5 bytes of a jump and are
 * register-only forms that leave %rcx and %rdi alone, the probe goes on the
 * first of them instead: the mode and the timer are then already what the
 * call gets, and kprobes can replace the trap with a jump (an optimized
 * kprobe restores the registers its handler changed).
 */
#include <linux/hrtimer.h>
#include <linux/kprobes.h>
#include <linux/module.h>
#include <linux/sysfs.h>

#include "klp.h"
#include "owner.h"

#define KLP_NR_CALLSITES 3
#define KLP_MOV_WINDOW 32	/* bytes before a branch searched for the mov */
#define KLP_JMP_SIZE 5		/* what an optimized kprobe writes */
#define KLP_RCX 1
#define KLP_RDI 7

/* mov $HRTIMER_MODE_ABS_HARD,%ecx */
static const u8 klp_mov_mode[] = { 0xb9, HRTIMER_MODE_ABS_HARD, 0, 0, 0 };

static const unsigned int klp_expected[KLP_NR_FNS] = {
	[KLP_FN_START] = 2,
	[KLP_FN_MIGRATE] = 1,
};

struct klp_callsite {
	struct kprobe kp;
	enum klp_fn fn;
};

static struct klp_callsite klp_callsites[KLP_NR_CALLSITES];

static int klp_pin_mode(struct kprobe *kp, struct pt_regs *regs)
{
	const struct hrtimer *timer = (const struct hrtimer *)regs->di;

	if (READ_ONCE(klp_refused) || !READ_ONCE(klp_enabled))
		return 0;
	if (regs->cx & HRTIMER_MODE_PINNED) {
		klp_count(KLP_LOCAL);
		return 0;
	}
	if (klp_is_lapic_timer(timer) && klp_owner_wants_pin(timer, NULL)) {
		regs->cx |= HRTIMER_MODE_PINNED;
		klp_count(KLP_PINNED);
	}
	return 0;
}

static bool klp_insn_boundary(const u8 *addr)
{
	struct kprobe kp = {
		.addr = (kprobe_opcode_t *)addr,
		.flags = KPROBE_FLAG_DISABLED,
	};

	if (register_kprobe(&kp))
		return false;
	unregister_kprobe(&kp);
	return true;
}

static bool klp_names_rcx_rdi(unsigned int reg)
{
	return reg == KLP_RCX || reg == KLP_RDI;
}

/*
 * The length of the instruction at @p (@n bytes before the branch) if it
 * is one of the register-only forms compilers put between loading the mode
 * and the call (pop; add, sub, xor, mov between registers; add or sub of an
 * 8-bit immediate) and names neither %rcx nor %rdi; else 0.
 */
static unsigned int klp_plain_insn_len(const u8 *p, size_t n)
{
	unsigned int i = 0, reg, rm;
	u8 rex = 0, op, modrm;

	if (n > 1 && (p[0] & 0xf0) == 0x40)
		rex = p[i++];
	op = p[i++];
	if (op >= 0x58 && op <= 0x5f)				/* pop */
		return klp_names_rcx_rdi((op & 7) | (rex & 1) << 3) ? 0 : i;
	if (i >= n)
		return 0;
	modrm = p[i++];
	if (modrm >> 6 != 3)
		return 0;
	reg = (modrm >> 3 & 7) | (rex & 4) << 1;
	rm = (modrm & 7) | (rex & 1) << 3;
	switch (op) {
	case 0x01: case 0x03:					/* add */
	case 0x29: case 0x2b:					/* sub */
	case 0x31: case 0x33:					/* xor */
	case 0x89: case 0x8b:					/* mov */
		break;
	case 0x83:
		if ((modrm >> 3 & 7) != 0 && (modrm >> 3 & 7) != 5)
			return 0;				/* add, sub */
		reg = rm;
		i++;
		break;
	default:
		return 0;
	}
	if (i > n || klp_names_rcx_rdi(reg) || klp_names_rcx_rdi(rm))
		return 0;
	return i;
}

/*
 * Where to set the mode for the branch at @branch in the function at @fn:
 * after the mov, if what lies between it and the branch qualifies (see
 * above), else the branch.  NULL if no mov loads KVM's mode before it.
 */
static const u8 *klp_probe_point(const u8 *fn, const u8 *branch)
{
	const u8 *mov, *p;
	unsigned int len;

	for (mov = branch - sizeof(klp_mov_mode);
	     mov >= fn && branch - mov <= KLP_MOV_WINDOW; mov--) {
		if (memcmp(mov, klp_mov_mode, sizeof(klp_mov_mode)) ||
		    !klp_insn_boundary(mov))
			continue;
		p = mov + sizeof(klp_mov_mode);
		if (branch - p < KLP_JMP_SIZE)
			return branch;
		for (; p < branch; p += len) {
			len = klp_plain_insn_len(p, branch - p);
			if (!len)
				return branch;
		}
		return p == branch ? mov + sizeof(klp_mov_mode) : branch;
	}
	return NULL;
}

/* The target of the call or jmp rel32 at @p. */
static unsigned long klp_branch_target(const u8 *p)
{
	s32 rel;

	memcpy(&rel, p + 1, sizeof(rel));
	return (unsigned long)p + 5 + rel;
}

/*
 * Find and prove the calls of hrtimer_start_range_ns() in @fn, filling
 * klp_callsites from *@next on; 0, or a reason in @why.
 */
static int klp_find_callsites(enum klp_fn fn, unsigned int *next, char *why,
			      size_t len)
{
	const unsigned long target = (unsigned long)hrtimer_start_range_ns;
	const u8 *start = (const u8 *)klp_fns[fn].addr, *p, *probe;
	unsigned int found = 0;

	for (p = start; p + 5 <= start + klp_fns[fn].size; p++) {
		if ((*p != 0xe8 && *p != 0xe9) ||	/* call, jmp rel32 */
		    klp_branch_target(p) != target || !klp_insn_boundary(p))
			continue;
		probe = klp_probe_point(start, p);
		if (!probe) {
			snprintf(why, len, "%s+0x%lx: no mov $0x%x,%%ecx before the call",
				 klp_fns[fn].name, (unsigned long)(p - start),
				 HRTIMER_MODE_ABS_HARD);
			return -ENOEXEC;
		}
		if (found++ < klp_expected[fn]) {
			klp_callsites[*next].kp.addr = (kprobe_opcode_t *)probe;
			klp_callsites[(*next)++].fn = fn;
		}
	}
	if (found != klp_expected[fn]) {
		snprintf(why, len, "%s: %u calls of hrtimer_start_range_ns, expected %u",
			 klp_fns[fn].name, found, klp_expected[fn]);
		return -ENOEXEC;
	}
	return 0;
}

static struct kprobe *klp_callsite_kps[KLP_NR_CALLSITES] = {
	&klp_callsites[0].kp, &klp_callsites[1].kp, &klp_callsites[2].kp,
};

static int klp_callsite_attach(char *why, size_t len)
{
	unsigned int i, next = 0;
	int fn, ret;

	memset(klp_callsites, 0, sizeof(klp_callsites));
	for (fn = 0; fn < KLP_NR_FNS; fn++) {
		ret = klp_find_callsites(fn, &next, why, len);
		if (ret)
			return ret;
	}
	for (i = 0; i < KLP_NR_CALLSITES; i++) {
		klp_callsites[i].kp.pre_handler = klp_pin_mode;
		klp_callsites[i].kp.flags = klp_enabled ? 0 : KPROBE_FLAG_DISABLED;
	}
	ret = register_kprobes(klp_callsite_kps, KLP_NR_CALLSITES);
	if (ret)
		snprintf(why, len, "kprobe registration failed (%d)", ret);
	return ret;
}

static void klp_callsite_detach(void)
{
	unregister_kprobes(klp_callsite_kps, KLP_NR_CALLSITES);
}

static unsigned long klp_callsite_missed(void)
{
	unsigned long missed = 0;
	int i;

	for (i = 0; i < KLP_NR_CALLSITES; i++)
		missed += klp_callsites[i].kp.nmissed;
	return missed;
}

static int klp_callsite_symbols(char *buf)
{
	const struct klp_callsite *cs;
	int i, len = 0;

	for (i = 0; i < KLP_NR_CALLSITES; i++) {
		cs = &klp_callsites[i];
		len += sysfs_emit_at(buf, len, "%s%s+0x%lx", i ? " " : "",
				     klp_fns[cs->fn].name,
				     (unsigned long)cs->kp.addr - klp_fns[cs->fn].addr);
	}
	return len + sysfs_emit_at(buf, len, "\n");
}

const struct klp_method klp_callsite = {
	.name = "callsite",
	.attach = klp_callsite_attach,
	.detach = klp_callsite_detach,
	.missed = klp_callsite_missed,
	.symbols = klp_callsite_symbols,
	.kps = klp_callsite_kps,
	.nr_kps = KLP_NR_CALLSITES,
};
