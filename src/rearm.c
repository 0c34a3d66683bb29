// SPDX-License-Identifier: GPL-2.0
/*
 * The re-arm method, the fallback where KVM's call sites cannot be proven:
 * kretprobes on the kvm functions that arm the LAPIC timer.  When KVM has
 * just queued the timer on another CPU, the return handler takes it off
 * that queue unfired and queues it again, expiry unchanged, pinned on this
 * CPU, the vCPU's.  The Hyper-V synthetic timers are left as kvm arms
 * them: only the call-site method pins those.
 */
#include <linux/hrtimer.h>
#include <linux/kprobes.h>
#include <linux/module.h>
#include <linux/smp.h>
#include <linux/sysfs.h>
#ifdef KLP_HAVE_HRTIMER_BASES_H
#include <linux/hrtimer_bases.h>
#endif

#include "klp.h"
#include "owner.h"

/* What an entry handler hands to the return handler. */
struct klp_arm {
	struct hrtimer *timer;
	struct kvm_vcpu *vcpu;		/* NULL: identify it at return */
};

struct klp_rearm_probe {
	struct kretprobe rp;
	char name[MODULE_NAME_LEN + KSYM_NAME_LEN];
};

static struct klp_rearm_probe klp_rearm_probes[KLP_NR_LAPIC_FNS];

/* start_sw_timer(struct kvm_lapic *apic) */
static int klp_start_entry(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	struct klp_arm *arm = (struct klp_arm *)ri->data;

	arm->timer = klp_apic_timer((void *)regs->di);
	arm->vcpu = NULL;
	return 0;
}

/* __kvm_migrate_apic_timer(struct kvm_vcpu *vcpu) */
static int klp_migrate_entry(struct kretprobe_instance *ri,
			     struct pt_regs *regs)
{
	struct klp_arm *arm = (struct klp_arm *)ri->data;
	struct kvm_vcpu *vcpu = (struct kvm_vcpu *)regs->di;

	if (!vcpu->arch.apic)
		return 1;	/* no in-kernel LAPIC: nothing armed */
	arm->vcpu = vcpu;
	arm->timer = klp_apic_timer(vcpu->arch.apic);
	return 0;
}

static int klp_rearm_ret(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	struct klp_arm *arm = (struct klp_arm *)ri->data;
	struct hrtimer *timer = arm->timer;
	enum hrtimer_mode mode = HRTIMER_MODE_ABS_PINNED;

	if (READ_ONCE(klp_refused) || !READ_ONCE(klp_enabled) ||
	    !klp_is_kvm_timer(timer, KLP_LAPIC) || !hrtimer_is_queued(timer))
		return 0;
	if (READ_ONCE(timer->base)->cpu_base->cpu == smp_processor_id()) {
		klp_count(KLP_LAPIC, KLP_LOCAL);
		return 0;
	}
	if (!klp_owner_wants_pin(timer, arm->vcpu, KLP_LAPIC))
		return 0;
	/* Only a timer taken off its queue unfired moves: none lost, none doubled. */
	if (hrtimer_try_to_cancel(timer) != 1) {
		klp_count(KLP_LAPIC, KLP_RACE);
		return 0;
	}
	if (timer->is_hard)
		mode |= HRTIMER_MODE_HARD;
	if (timer->is_soft)
		mode |= HRTIMER_MODE_SOFT;
	hrtimer_start_expires(timer, mode);
	klp_count(KLP_LAPIC, KLP_PINNED);
	return 0;
}

static void klp_rearm_detach(void)
{
	int i;

	for (i = 0; i < KLP_NR_LAPIC_FNS; i++)
		unregister_kretprobe(&klp_rearm_probes[i].rp);
}

static int klp_rearm_attach(char *why, size_t len)
{
	static const kretprobe_handler_t entry[KLP_NR_LAPIC_FNS] = {
		[KLP_FN_START] = klp_start_entry,
		[KLP_FN_MIGRATE] = klp_migrate_entry,
	};
	struct klp_rearm_probe *p;
	int i, ret;

	for (i = 0; i < KLP_NR_LAPIC_FNS; i++) {
		p = &klp_rearm_probes[i];
		memset(p, 0, sizeof(*p));
		snprintf(p->name, sizeof(p->name), "kvm:%s", klp_fns[i].name);
		p->rp.kp.symbol_name = p->name;
		p->rp.kp.flags = klp_enabled ? 0 : KPROBE_FLAG_DISABLED;
		p->rp.entry_handler = entry[i];
		p->rp.handler = klp_rearm_ret;
		p->rp.data_size = sizeof(struct klp_arm);
		ret = register_kretprobe(&p->rp);
		if (ret) {
			snprintf(why, len, "kretprobe on %s failed (%d)",
				 klp_fns[i].name, ret);
			while (i--)
				unregister_kretprobe(&klp_rearm_probes[i].rp);
			return ret;
		}
	}
	return 0;
}

static unsigned long klp_rearm_missed(void)
{
	unsigned long missed = 0;
	int i;

	for (i = 0; i < KLP_NR_LAPIC_FNS; i++)
		missed += klp_rearm_probes[i].rp.nmissed +
			  klp_rearm_probes[i].rp.kp.nmissed;
	return missed;
}

static int klp_rearm_symbols(char *buf)
{
	return sysfs_emit(buf, "%s %s\n", klp_fns[KLP_FN_START].name,
			  klp_fns[KLP_FN_MIGRATE].name);
}

static struct kprobe *const klp_rearm_kps[KLP_NR_LAPIC_FNS] = {
	&klp_rearm_probes[KLP_FN_START].rp.kp,
	&klp_rearm_probes[KLP_FN_MIGRATE].rp.kp,
};

static const unsigned int klp_rearm_nr_kps = KLP_NR_LAPIC_FNS;

const struct klp_method klp_rearm = {
	.name = "rearm",
	.attach = klp_rearm_attach,
	.detach = klp_rearm_detach,
	.missed = klp_rearm_missed,
	.symbols = klp_rearm_symbols,
	.kps = klp_rearm_kps,
	.nr_kps = &klp_rearm_nr_kps,
};
