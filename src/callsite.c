// SPDX-License-Identifier: GPL-2.0
/*
 * The call-site method, the default: at run time, what upstream commit
 * 61abdbe0bcc2 did in the source.  KVM arms the LAPIC timer with
 * hrtimer_start_range_ns(timer, tim, delta, HRTIMER_MODE_ABS_HARD), and a
 * Hyper-V synthetic timer with the same call and HRTIMER_MODE_ABS; a
 * kprobe at each of those calls sets HRTIMER_MODE_PINNED in the mode
 * argument (%rcx) before the call runs, so that the hrtimer core queues the
 * timer once, on this CPU, the vCPU's.
 *
 * The calls are found in the code of the arming functions and proven
 * before anything is probed: a call or tail jump whose rel32 targets
 * hrtimer_start_range_ns, at an instruction boundary, preceded within a
 * few instructions by the instruction that loads kvm's mode ("mov
 * $0x8,%ecx", or "xor %ecx,%ecx" for mode 0) at an instruction boundary
 * (the kernel's own decoder judges boundaries: register_kprobe() refuses
 * any other address, and a kprobe registered disabled patches nothing).
 * The number found must be the layout's: two in start_sw_timer, one in
 * __kvm_migrate_apic_timer, one in kvm_hv_process_stimers.  The LAPIC
 * timer's must all be proven; where the synthetic timers' is not (or kvm
 * has no Hyper-V), they are left alone, said in one dmesg line.
 *
 * A kprobe on a branch always traps (int3).  Where the instructions between
 * the mode's and the branch are at least the 5 bytes of a jump and are
 * register-only forms that leave %rcx and %rdi alone, the probe goes on the
 * first of them instead: the mode and the timer are then already what the
 * call gets, and kprobes can replace the trap with a jump (an optimized
 * kprobe restores the registers its handler changed).
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/hrtimer.h>
#include <linux/kprobes.h>
#include <linux/module.h>
#include <linux/sysfs.h>

#include "klp.h"
#include "owner.h"

#define KLP_NR_CALLSITES 4	/* at most: 3 of the LAPIC timer, 1 of the stimers */
#define KLP_MODE_WINDOW 32	/* bytes before a branch searched for the mode */
#define KLP_JMP_SIZE 5		/* what an optimized kprobe writes */
#define KLP_RCX 1
#define KLP_RDI 7

static const u8 klp_mov_abs_hard[] = { 0xb9, HRTIMER_MODE_ABS_HARD, 0, 0, 0 };
static const u8 klp_xor_ecx[] = { 0x31, 0xc9 };		/* HRTIMER_MODE_ABS */

/* What the calls of hrtimer_start_range_ns() in a kvm function look like. */
struct klp_layout {
	const u8 *mode;		/* the instruction that loads kvm's mode */
	unsigned int mode_len;
	const char *mode_asm;
	unsigned int expected;	/* how many calls */
	enum klp_kind kind;	/* of the timers they arm */
};

static const struct klp_layout klp_layouts[KLP_NR_FNS] = {
	[KLP_FN_START] = { klp_mov_abs_hard, sizeof(klp_mov_abs_hard),
			   "mov $0x8,%ecx", 2, KLP_LAPIC },
	[KLP_FN_MIGRATE] = { klp_mov_abs_hard, sizeof(klp_mov_abs_hard),
			     "mov $0x8,%ecx", 1, KLP_LAPIC },
	[KLP_FN_STIMERS] = { klp_xor_ecx, sizeof(klp_xor_ecx),
			     "xor %ecx,%ecx", 1, KLP_STIMER },
};

struct klp_callsite {
	struct kprobe kp;
	enum klp_fn fn;
};

static struct klp_callsite klp_callsites[KLP_NR_CALLSITES];
static unsigned int klp_nr_callsites;

static __always_inline int klp_pin_mode(struct pt_regs *regs, enum klp_kind kind)
{
	const struct hrtimer *timer = (const struct hrtimer *)regs->di;

	if (READ_ONCE(klp_refused) || !READ_ONCE(klp_enabled))
		return 0;
	if (regs->cx & HRTIMER_MODE_PINNED) {
		klp_count(kind, KLP_LOCAL);
		return 0;
	}
	if (klp_is_kvm_timer(timer, kind) && klp_owner_wants_pin(timer, NULL, kind)) {
		regs->cx |= HRTIMER_MODE_PINNED;
		klp_count(kind, KLP_PINNED);
	}
	return 0;
}

static int klp_pin_lapic(struct kprobe *kp, struct pt_regs *regs)
{
	return klp_pin_mode(regs, KLP_LAPIC);
}

static int klp_pin_stimer(struct kprobe *kp, struct pt_regs *regs)
{
	return klp_pin_mode(regs, KLP_STIMER);
}

static const kprobe_pre_handler_t klp_handlers[KLP_NR_KINDS] = {
	[KLP_LAPIC] = klp_pin_lapic,
	[KLP_STIMER] = klp_pin_stimer,
};

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
 * Where to set the mode for the branch at @branch in the function at @fn,
 * whose mode is loaded as @l says: after that instruction, if what lies
 * between it and the branch qualifies (see above), else the branch.  NULL
 * if no such instruction precedes it.
 */
static const u8 *klp_probe_point(const u8 *fn, const u8 *branch,
				 const struct klp_layout *l)
{
	const u8 *ld, *p;
	unsigned int len;

	for (ld = branch - l->mode_len;
	     ld >= fn && branch - ld <= KLP_MODE_WINDOW; ld--) {
		if (memcmp(ld, l->mode, l->mode_len) || !klp_insn_boundary(ld))
			continue;
		p = ld + l->mode_len;
		if (branch - p < KLP_JMP_SIZE)
			return branch;
		for (; p < branch; p += len) {
			len = klp_plain_insn_len(p, branch - p);
			if (!len)
				return branch;
		}
		return p == branch ? ld + l->mode_len : branch;
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
	const struct klp_layout *l = &klp_layouts[fn];
	unsigned int found = 0;

	for (p = start; p + 5 <= start + klp_fns[fn].size; p++) {
		if ((*p != 0xe8 && *p != 0xe9) ||	/* call, jmp rel32 */
		    klp_branch_target(p) != target || !klp_insn_boundary(p))
			continue;
		probe = klp_probe_point(start, p, l);
		if (!probe) {
			snprintf(why, len, "%s+0x%lx: no %s before the call",
				 klp_fns[fn].name, (unsigned long)(p - start),
				 l->mode_asm);
			return -ENOEXEC;
		}
		if (found++ < l->expected) {
			klp_callsites[*next].kp.addr = (kprobe_opcode_t *)probe;
			klp_callsites[(*next)++].fn = fn;
		}
	}
	if (found != l->expected) {
		snprintf(why, len, "%s: %u calls of hrtimer_start_range_ns, expected %u",
			 klp_fns[fn].name, found, l->expected);
		return -ENOEXEC;
	}
	return 0;
}

static struct kprobe *klp_callsite_kps[KLP_NR_CALLSITES] = {
	&klp_callsites[0].kp, &klp_callsites[1].kp, &klp_callsites[2].kp,
	&klp_callsites[3].kp,
};

/* The synthetic timers' call site after the LAPIC timer's, if proven. */
static void klp_find_stimer_callsite(unsigned int *next)
{
	unsigned int lapic = *next;
	char why[128];

	if (!klp_fns[KLP_FN_STIMERS].addr) {
		pr_info("Hyper-V synthetic timers not pinned: kvm has no %s\n",
			klp_fns[KLP_FN_STIMERS].name);
	} else if (klp_find_callsites(KLP_FN_STIMERS, next, why, sizeof(why))) {
		pr_info("Hyper-V synthetic timers not pinned: call site not proven (%s)\n",
			why);
		*next = lapic;
	}
}

static int klp_callsite_attach(char *why, size_t len)
{
	unsigned int i, next = 0;
	int fn, ret;

	memset(klp_callsites, 0, sizeof(klp_callsites));
	for (fn = 0; fn < KLP_NR_LAPIC_FNS; fn++) {
		ret = klp_find_callsites(fn, &next, why, len);
		if (ret)
			return ret;
	}
	klp_find_stimer_callsite(&next);
	for (i = 0; i < next; i++) {
		klp_callsites[i].kp.pre_handler =
			klp_handlers[klp_layouts[klp_callsites[i].fn].kind];
		klp_callsites[i].kp.flags = klp_enabled ? 0 : KPROBE_FLAG_DISABLED;
	}
	ret = register_kprobes(klp_callsite_kps, next);
	if (ret) {
		snprintf(why, len, "kprobe registration failed (%d)", ret);
		return ret;
	}
	klp_nr_callsites = next;
	return 0;
}

static void klp_callsite_detach(void)
{
	unregister_kprobes(klp_callsite_kps, klp_nr_callsites);
}

static unsigned long klp_callsite_missed(void)
{
	unsigned long missed = 0;
	unsigned int i;

	for (i = 0; i < klp_nr_callsites; i++)
		missed += klp_callsites[i].kp.nmissed;
	return missed;
}

static int klp_callsite_symbols(char *buf)
{
	const struct klp_callsite *cs;
	unsigned int i;
	int len = 0;

	for (i = 0; i < klp_nr_callsites; i++) {
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
	.nr_kps = &klp_nr_callsites,
};
