// SPDX-License-Identifier: GPL-2.0
/*
 * What the module knows of kvm: the functions that arm the LAPIC timer,
 * the timer itself, the vCPU that owns it and whether KVM posts its
 * interrupt.  Nothing here is linked against kvm.ko: symbols are found
 * through kprobes registered disabled, which patch no text.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/kallsyms.h>
#include <linux/kprobes.h>
#include <linux/kvm_host.h>
#include <linux/module.h>
#include <linux/preempt.h>

#include "klp.h"

struct klp_kvm_fn klp_fns[KLP_NR_FNS];

/*
 * start_sw_timer() holds both hrtimer_start() calls of the start path, and
 * start_apic_timer(), the vCPU-block path and the hv-timer fallbacks all go
 * through it; start_apic_timer() stands in only where it is not a symbol.
 */
static const char *const klp_fn_candidates[KLP_NR_FNS][2] = {
	[KLP_FN_START] = { "start_sw_timer", "start_apic_timer" },
	[KLP_FN_MIGRATE] = { "__kvm_migrate_apic_timer" },
};

static unsigned long klp_timer_fn;	/* kvm's apic_timer_fn */
static unsigned long klp_sched_in;	/* kvm's kvm_sched_in */
static const int *klp_pi_inject_timer;	/* kvm.pi_inject_timer, if any */

/*
 * The start and size of a kvm function, found through a kprobe registered
 * disabled (no text is patched) and kallsyms' "sym+0xoff/0xsize": on IBT
 * kernels the kprobe sits past the function's ENDBR64, where the address
 * that a function pointer holds is not.
 */
int klp_resolve(const char *sym, unsigned long *addr, unsigned long *size)
{
	struct kprobe kp = { .flags = KPROBE_FLAG_DISABLED };
	char name[MODULE_NAME_LEN + KSYM_NAME_LEN];
	char buf[KSYM_SYMBOL_LEN];
	unsigned long off, len;
	int ret;

	snprintf(name, sizeof(name), "kvm:%s", sym);
	kp.symbol_name = name;
	ret = register_kprobe(&kp);
	if (ret)
		return ret;
	unregister_kprobe(&kp);
	sprint_symbol(buf, (unsigned long)kp.addr);
	if (strncmp(buf, sym, strlen(sym)) ||
	    sscanf(buf + strlen(sym), "+%lx/%lx", &off, &len) != 2)
		return -ENOENT;
	*addr = (unsigned long)kp.addr - off;
	if (size)
		*size = len;
	return 0;
}

static const int *klp_find_pi_inject_timer(const struct module *kvm)
{
	unsigned int i;

	for (i = 0; i < kvm->num_kp; i++)
		if (!strcmp(kvm->kp[i].name, "pi_inject_timer") &&
		    kvm->kp[i].ops == &param_ops_bint)
			return kvm->kp[i].arg;
	return NULL;
}

static int klp_resolve_fn(enum klp_fn fn)
{
	const char *const *sym = klp_fn_candidates[fn];
	int i, ret = -ENOENT;

	for (i = 0; i < ARRAY_SIZE(klp_fn_candidates[fn]) && sym[i]; i++) {
		ret = klp_resolve(sym[i], &klp_fns[fn].addr,
				  &klp_fns[fn].size);
		if (!ret) {
			klp_fns[fn].name = sym[i];
			return 0;
		}
		if (ret != -ENOENT)
			break;
	}
	pr_err("not attaching to kvm: %s: %s (%d)\n", sym[0],
	       ret == -ENOENT ? "symbol not found" : "kprobes refused", ret);
	return ret;
}

/* Find what the methods need in kvm; 0 or an error, said in dmesg. */
int klp_kvm_attach(const struct module *kvm)
{
	int fn, ret;

	ret = klp_resolve("apic_timer_fn", &klp_timer_fn, NULL);
	if (!ret)
		ret = klp_resolve("kvm_sched_in", &klp_sched_in, NULL);
	if (ret) {
		pr_err("not attaching to kvm: %s (%d)\n",
		       ret == -EPERM ? "kprobes not permitted (kernel lockdown?)" :
				       "symbol not found", ret);
		return ret;
	}
	for (fn = 0; fn < KLP_NR_FNS; fn++) {
		ret = klp_resolve_fn(fn);
		if (ret)
			return ret;
	}
	klp_pi_inject_timer = klp_find_pi_inject_timer(kvm);
	return 0;
}

void klp_kvm_detach(void)
{
	klp_pi_inject_timer = NULL;
}

/*
 * Whether @timer is kvm's LAPIC timer.  A timer that KVM's arming code
 * handles and that is not means the layout is not what this module knows:
 * it refuses, once, and goes inert.
 */
bool klp_is_lapic_timer(const struct hrtimer *timer)
{
	if ((unsigned long)ACCESS_PRIVATE(timer, function) == klp_timer_fn)
		return true;
	klp_refuse();
	return false;
}

/* The vCPU loaded on this task (vcpu_load() registers its notifier). */
static struct kvm_vcpu *klp_loaded_vcpu(const struct hrtimer *timer)
{
	struct preempt_notifier *pn;
	struct kvm_vcpu *vcpu;

	hlist_for_each_entry(pn, &current->preempt_notifiers, link) {
		if ((unsigned long)pn->ops->sched_in != klp_sched_in)
			continue;
		vcpu = container_of(pn, struct kvm_vcpu, preempt_notifier);
		if (vcpu->arch.apic && timer == klp_apic_timer(vcpu->arch.apic))
			return vcpu;
	}
	return NULL;
}

/*
 * kvm_can_post_timer_interrupt(): KVM leaves the timer of such a vCPU on a
 * housekeeping CPU on purpose and posts its interrupt.  APICv state is read
 * per vCPU where struct kvm_vcpu_arch has it, else per VM.
 */
static bool klp_kvm_posts_timer(const struct kvm_vcpu *vcpu)
{
	const struct kvm *kvm = vcpu->kvm;
	const int *pi_inject_timer = READ_ONCE(klp_pi_inject_timer);

	if (!pi_inject_timer || !READ_ONCE(*pi_inject_timer))
		return false;
#ifdef KLP_HAVE_VCPU_APICV_ACTIVE
	if (!READ_ONCE(vcpu->arch.apicv_active))
		return false;
#else
	if (READ_ONCE(kvm->arch.apicv_inhibit_reasons))
		return false;
#endif
#ifdef KLP_HAVE_DISABLED_EXITS
	return READ_ONCE(kvm->arch.disabled_exits) &
	       (KVM_X86_DISABLE_EXITS_HLT | KVM_X86_DISABLE_EXITS_MWAIT);
#else
	return READ_ONCE(kvm->arch.hlt_in_guest) ||
	       READ_ONCE(kvm->arch.mwait_in_guest);
#endif
}

/*
 * Whether the LAPIC timer @timer, being armed on this CPU, belongs here:
 * its vCPU (@vcpu, or NULL to find it) is loaded on the arming task, so
 * this CPU is the vCPU's, and KVM does not post its interrupt.  Counts the
 * timers it leaves alone.
 */
bool klp_owner_wants_pin(const struct hrtimer *timer, struct kvm_vcpu *vcpu)
{
	if (!vcpu)
		vcpu = klp_loaded_vcpu(timer);
	if (!vcpu) {
		klp_count(KLP_UNMATCHED);
		return false;
	}
	if (klp_kvm_posts_timer(vcpu)) {
		klp_count(KLP_POSTED);
		return false;
	}
	return true;
}
