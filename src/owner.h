/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Whether a timer that kvm is arming is its LAPIC timer (or a Hyper-V
 * synthetic timer) and belongs on this CPU: what the probe handlers of both
 * methods decide, inline, because they decide it on every arm.
 */
#ifndef KLP_OWNER_H
#define KLP_OWNER_H

#include <linux/hrtimer.h>
#include <linux/kvm_host.h>
#include <linux/preempt.h>

#include "klp.h"

/* Found in kvm by kvm.c when it attaches. */
extern unsigned long klp_timer_fn[KLP_NR_KINDS];	/* the timers' callbacks */
extern unsigned long klp_sched_in;		/* kvm_sched_in */
extern const int *klp_pi_inject_timer;		/* kvm.pi_inject_timer, or NULL */

/*
 * Whether @timer is a timer of @kind: its callback is apic_timer_fn, or
 * stimer_timer_callback.  A timer that KVM's arming code for that kind
 * handles and that is not means the layout is not what this module knows:
 * it refuses, once, and goes inert.
 */
static __always_inline bool klp_is_kvm_timer(const struct hrtimer *timer,
					     enum klp_kind kind)
{
	if (likely((unsigned long)ACCESS_PRIVATE(timer, function) ==
		   klp_timer_fn[kind]))
		return true;
	klp_refuse(kind);
	return false;
}

/* The Hyper-V state of @vcpu: a pointer since 5.12, optional since 6.8. */
static inline struct kvm_vcpu_hv *klp_vcpu_hv(struct kvm_vcpu *vcpu)
{
#if defined(KLP_HYPERV_OPTIONAL) && !defined(CONFIG_KVM_HYPERV)
	return NULL;
#elif defined(KLP_HAVE_VCPU_HV_PTR)
	return vcpu->arch.hyperv;
#else
	return &vcpu->arch.hyperv;
#endif
}

/*
 * Whether @timer is one of the synthetic timers whose state is @hv: where
 * the headers define struct kvm_vcpu_hv (up to 7.2), one of its four; from
 * 7.3 on kvm keeps it private, and what is known is that the vCPU has
 * Hyper-V state, and that kvm_hv_process_stimers(), the only call site
 * probed, arms only the timers of the vCPU it runs for.
 */
#ifdef KLP_HAVE_VCPU_HV_STIMERS
static inline bool klp_hv_owns(struct kvm_vcpu_hv *hv, const struct hrtimer *timer)
{
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(hv->stimer); i++)
		if (timer == &hv->stimer[i].timer)
			return true;
	return false;
}
#else
static inline bool klp_hv_owns(struct kvm_vcpu_hv *hv, const struct hrtimer *timer)
{
	return true;
}
#endif

/* Whether @timer is @vcpu's timer of @kind. */
static __always_inline bool klp_vcpu_owns(struct kvm_vcpu *vcpu,
					  const struct hrtimer *timer,
					  enum klp_kind kind)
{
	struct kvm_vcpu_hv *hv;

	if (kind == KLP_LAPIC)
		return vcpu->arch.apic && timer == klp_apic_timer(vcpu->arch.apic);
	hv = klp_vcpu_hv(vcpu);
	return hv && klp_hv_owns(hv, timer);
}

/*
 * The vCPU loaded on this task (vcpu_load() registers its notifier) that
 * owns @timer, a timer of @kind.
 */
static __always_inline struct kvm_vcpu *
klp_loaded_vcpu(const struct hrtimer *timer, enum klp_kind kind)
{
	struct preempt_notifier *pn;
	struct kvm_vcpu *vcpu;

	hlist_for_each_entry(pn, &current->preempt_notifiers, link) {
		if ((unsigned long)pn->ops->sched_in != klp_sched_in)
			continue;
		vcpu = container_of(pn, struct kvm_vcpu, preempt_notifier);
		if (klp_vcpu_owns(vcpu, timer, kind))
			return vcpu;
	}
	return NULL;
}

/*
 * kvm_can_post_timer_interrupt(): KVM leaves the timer of such a vCPU on a
 * housekeeping CPU on purpose and posts its interrupt.  APICv state is read
 * per vCPU where struct kvm_vcpu_arch has it, else per VM.
 */
static inline bool klp_kvm_posts_timer(const struct kvm_vcpu *vcpu)
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
 * Whether @timer, a timer of @kind being armed on this CPU, belongs here:
 * its vCPU (@vcpu, or NULL to find it) is loaded on the arming task, so
 * this CPU is the vCPU's, and KVM does not post its interrupt (KVM posts
 * only LAPIC timer interrupts).  Counts the timers it leaves alone.
 */
static __always_inline bool klp_owner_wants_pin(const struct hrtimer *timer,
						struct kvm_vcpu *vcpu,
						enum klp_kind kind)
{
	if (!vcpu)
		vcpu = klp_loaded_vcpu(timer, kind);
	if (!vcpu) {
		klp_count(kind, KLP_UNMATCHED);
		return false;
	}
	if (kind == KLP_LAPIC && klp_kvm_posts_timer(vcpu)) {
		klp_count(kind, KLP_POSTED);
		return false;
	}
	return true;
}

#endif
