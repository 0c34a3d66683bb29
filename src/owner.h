/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Whether a timer that kvm is arming is its LAPIC timer and belongs on this
 * CPU: what the probe handlers of both methods decide, inline, because
 * they decide it on every arm.
 */
#ifndef KLP_OWNER_H
#define KLP_OWNER_H

#include <linux/hrtimer.h>
#include <linux/kvm_host.h>
#include <linux/preempt.h>

#include "klp.h"

/* Found in kvm by kvm.c when it attaches. */
extern unsigned long klp_timer_fn;		/* apic_timer_fn */
extern unsigned long klp_sched_in;		/* kvm_sched_in */
extern const int *klp_pi_inject_timer;		/* kvm.pi_inject_timer, or NULL */

/*
 * Whether @timer is kvm's LAPIC timer.  A timer that KVM's arming code
 * handles and that is not means the layout is not what this module knows:
 * it refuses, once, and goes inert.
 */
static inline bool klp_is_lapic_timer(const struct hrtimer *timer)
{
	if (likely((unsigned long)ACCESS_PRIVATE(timer, function) == klp_timer_fn))
		return true;
	klp_refuse();
	return false;
}

/* The vCPU loaded on this task (vcpu_load() registers its notifier). */
static inline struct kvm_vcpu *klp_loaded_vcpu(const struct hrtimer *timer)
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
 * Whether the LAPIC timer @timer, being armed on this CPU, belongs here:
 * its vCPU (@vcpu, or NULL to find it) is loaded on the arming task, so
 * this CPU is the vCPU's, and KVM does not post its interrupt.  Counts the
 * timers it leaves alone.
 */
static inline bool klp_owner_wants_pin(const struct hrtimer *timer, struct kvm_vcpu *vcpu)
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

#endif
