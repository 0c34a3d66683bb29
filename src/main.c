// SPDX-License-Identifier: GPL-2.0
/*
 * kvm_lapic_pin - fire KVM's emulated local-APIC timer on the vCPU's CPU.
 *
 * Since Linux 5.3 KVM arms the hrtimer behind a vCPU's LAPIC timer with
 * HRTIMER_MODE_ABS_HARD, without HRTIMER_MODE_PINNED.  On a nohz_full host
 * the hrtimer core then queues it on a housekeeping CPU, so the timer fires
 * away from the isolated CPU that runs the vCPU.  This module puts it back:
 * kretprobes on the two kvm.ko functions that arm the timer re-queue it,
 * expiry unchanged, on the CPU that armed it, which is the vCPU's CPU.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#ifndef CONFIG_X86_64
#error "kvm_lapic_pin supports x86_64 only"
#endif
#if !defined(CONFIG_KRETPROBES) || !defined(CONFIG_PREEMPT_NOTIFIERS)
#error "kvm_lapic_pin needs CONFIG_KRETPROBES and CONFIG_PREEMPT_NOTIFIERS"
#endif

#include <linux/hrtimer.h>
#include <linux/kprobes.h>
#include <linux/kstrtox.h>
#include <linux/kvm_host.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/percpu.h>
#include <linux/preempt.h>
#include <linux/sysfs.h>
#include <linux/uaccess.h>
#include <linux/workqueue.h>
#include <kvm/iodev.h>

/*
 * The leading members of struct kvm_lapic (arch/x86/kvm/lapic.h, which no
 * headers package ships); struct hrtimer is the first member of struct
 * kvm_timer lapic_timer.  Every pointer derived through this is checked
 * against apic_timer_fn before the timer is touched.
 */
struct klp_lapic_head {
	unsigned long base_address;
	struct kvm_io_device dev;
	struct hrtimer timer;
};

/* What an entry handler hands to the return handler. */
struct klp_arm {
	struct klp_lapic_head *apic;
	struct kvm_vcpu *vcpu;		/* NULL: identify it at return */
};

enum klp_stat {
	KLP_REARMED,		/* moved to the vCPU's CPU */
	KLP_LOCAL,		/* already on the vCPU's CPU */
	KLP_POSTED,		/* elsewhere, but KVM posts this timer: left */
	KLP_RACE,		/* fired or firing before it could move */
	KLP_UNMATCHED,		/* elsewhere, no loaded vCPU owns it: left */
	KLP_NR_STATS
};

static DEFINE_PER_CPU(unsigned long, klp_stats[KLP_NR_STATS]);

/* A kvm function that arms the timer, with its candidate symbols. */
struct klp_site {
	const char *const candidates[2];
	struct kretprobe rp;
	const char *symbol;		/* attached candidate, NULL if none */
	char name[MODULE_NAME_LEN + KSYM_NAME_LEN];
};

static int klp_start_entry(struct kretprobe_instance *ri, struct pt_regs *regs);
static int klp_migrate_entry(struct kretprobe_instance *ri,
			     struct pt_regs *regs);

/*
 * start_sw_timer() holds both hrtimer_start() calls of the start path, and
 * start_apic_timer(), the vCPU-block path and the hv-timer fallbacks all go
 * through it; start_apic_timer() stands in only where it is not a symbol.
 */
static struct klp_site klp_sites[] = {
	{ .candidates = { "start_sw_timer", "start_apic_timer" },
	  .rp.entry_handler = klp_start_entry },
	{ .candidates = { "__kvm_migrate_apic_timer" },
	  .rp.entry_handler = klp_migrate_entry },
};

static DEFINE_MUTEX(klp_lock);	/* serialises attach, detach, the switch */
static bool klp_enabled = true;
static bool klp_attached;
static bool klp_refused;	/* layout mismatch: inert until reloaded */
static unsigned long klp_missed; /* misses of probes already detached */
static unsigned long klp_timer_fn;	/* kvm's apic_timer_fn */
static unsigned long klp_sched_in;	/* kvm's kvm_sched_in */
static const int *klp_pi_inject_timer; /* kvm.pi_inject_timer, if any */
static struct work_struct klp_refuse_work;

static void klp_count(enum klp_stat stat)
{
	this_cpu_inc(klp_stats[stat]);
}

/*
 * kvm_can_post_timer_interrupt(): KVM leaves the timer of such a vCPU on a
 * housekeeping CPU on purpose and posts its interrupt.  APICv state is read
 * per vCPU where struct kvm_vcpu_arch has it, else per VM.
 */
static bool klp_kvm_posts_timer(const struct kvm_vcpu *vcpu)
{
	const struct kvm *kvm = vcpu->kvm;

	if (!klp_pi_inject_timer || !READ_ONCE(*klp_pi_inject_timer))
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

/* The vCPU loaded on this task (vcpu_load() registers its notifier). */
static struct kvm_vcpu *klp_loaded_vcpu(const struct klp_lapic_head *apic)
{
	struct preempt_notifier *pn;
	struct kvm_vcpu *vcpu;

	hlist_for_each_entry(pn, &current->preempt_notifiers, link) {
		if ((unsigned long)pn->ops->sched_in != klp_sched_in)
			continue;
		vcpu = container_of(pn, struct kvm_vcpu, preempt_notifier);
		if ((void *)vcpu->arch.apic == apic)
			return vcpu;
	}
	return NULL;
}

static int klp_start_entry(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	struct klp_arm *arm = (struct klp_arm *)ri->data;

	arm->apic = (struct klp_lapic_head *)regs->di;
	arm->vcpu = NULL;
	return 0;
}

static int klp_migrate_entry(struct kretprobe_instance *ri,
			     struct pt_regs *regs)
{
	struct klp_arm *arm = (struct klp_arm *)ri->data;

	arm->vcpu = (struct kvm_vcpu *)regs->di;
	arm->apic = (struct klp_lapic_head *)arm->vcpu->arch.apic;
	return arm->apic ? 0 : 1;	/* no in-kernel LAPIC: nothing armed */
}

static int klp_rearm(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	struct klp_arm *arm = (struct klp_arm *)ri->data;
	struct hrtimer *timer = &arm->apic->timer;
	enum hrtimer_mode mode = HRTIMER_MODE_ABS_PINNED;

	if (READ_ONCE(klp_refused) || !READ_ONCE(klp_enabled))
		return 0;
	if ((unsigned long)ACCESS_PRIVATE(timer, function) != klp_timer_fn) {
		WRITE_ONCE(klp_refused, true);
		schedule_work(&klp_refuse_work);
		return 0;
	}
	if (!hrtimer_is_queued(timer))
		return 0;
	if (READ_ONCE(timer->base)->cpu_base->cpu == smp_processor_id()) {
		klp_count(KLP_LOCAL);
		return 0;
	}
	if (!arm->vcpu) {
		arm->vcpu = klp_loaded_vcpu(arm->apic);
		if (!arm->vcpu) {
			klp_count(KLP_UNMATCHED);
			return 0;
		}
	}
	if (klp_kvm_posts_timer(arm->vcpu)) {
		klp_count(KLP_POSTED);
		return 0;
	}
	/* Only a timer taken off its queue unfired moves: none lost, none doubled. */
	if (hrtimer_try_to_cancel(timer) != 1) {
		klp_count(KLP_RACE);
		return 0;
	}
	if (timer->is_hard)
		mode |= HRTIMER_MODE_HARD;
	if (timer->is_soft)
		mode |= HRTIMER_MODE_SOFT;
	hrtimer_start_expires(timer, mode);
	klp_count(KLP_REARMED);
	return 0;
}

/*
 * The entry address of a kvm function, found through a kprobe registered
 * disabled (no text is patched).  On IBT kernels a kprobe may sit past the
 * function's ENDBR64: the address a function pointer holds is before it.
 */
static int klp_resolve(const char *sym, unsigned long *addr)
{
	struct kprobe kp = { .flags = KPROBE_FLAG_DISABLED };
	char name[MODULE_NAME_LEN + KSYM_NAME_LEN];
	u32 insn;
	int ret;

	snprintf(name, sizeof(name), "kvm:%s", sym);
	kp.symbol_name = name;
	ret = register_kprobe(&kp);
	if (ret)
		return ret;
	*addr = (unsigned long)kp.addr;
	unregister_kprobe(&kp);
	if (IS_ENABLED(CONFIG_X86_KERNEL_IBT) &&
	    !copy_from_kernel_nofault(&insn, (void *)(*addr - 4), sizeof(insn)) &&
	    insn == 0xfa1e0ff3)		/* endbr64 */
		*addr -= 4;
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

static const char *klp_reason(int err)
{
	switch (err) {
	case -ENOENT:
		return "symbol not found";
	case -EPERM:
		return "kprobes not permitted (kernel lockdown?)";
	default:
		return "kprobe registration failed";
	}
}

static unsigned long klp_site_missed(const struct klp_site *site)
{
	return site->rp.nmissed + site->rp.kp.nmissed;
}

static int klp_attach_site(struct klp_site *site)
{
	int i, ret = -ENOENT;

	for (i = 0; i < ARRAY_SIZE(site->candidates) && site->candidates[i];
	     i++) {
		memset(&site->rp.kp, 0, sizeof(site->rp.kp));
		site->rp.nmissed = 0;
		site->rp.handler = klp_rearm;
		site->rp.data_size = sizeof(struct klp_arm);
		snprintf(site->name, sizeof(site->name), "kvm:%s",
			 site->candidates[i]);
		site->rp.kp.symbol_name = site->name;
		site->rp.kp.flags = klp_enabled ? 0 : KPROBE_FLAG_DISABLED;
		ret = register_kretprobe(&site->rp);
		if (!ret) {
			site->symbol = site->candidates[i];
			return 0;
		}
		if (ret != -ENOENT)
			break;
	}
	pr_err("not attaching to kvm: %s: %s (%d)\n", site->name,
	       klp_reason(ret), ret);
	return ret;
}

static void klp_detach_site(struct klp_site *site)
{
	unregister_kretprobe(&site->rp);
	klp_missed += klp_site_missed(site);
	site->symbol = NULL;
}

static void klp_attach(const struct module *kvm)
{
	int i, ret;

	lockdep_assert_held(&klp_lock);
	if (klp_attached || klp_refused)
		return;
	ret = klp_resolve("apic_timer_fn", &klp_timer_fn);
	if (!ret)
		ret = klp_resolve("kvm_sched_in", &klp_sched_in);
	if (ret) {
		pr_err("not attaching to kvm: %s (%d)\n", klp_reason(ret), ret);
		return;
	}
	klp_pi_inject_timer = klp_find_pi_inject_timer(kvm);
	for (i = 0; i < ARRAY_SIZE(klp_sites); i++) {
		if (klp_attach_site(&klp_sites[i])) {
			while (i--)
				klp_detach_site(&klp_sites[i]);
			return;
		}
	}
	klp_attached = true;
	pr_info("attached to kvm: %s %s%s\n", klp_sites[0].symbol,
		klp_sites[1].symbol, klp_enabled ? "" : " (disabled)");
}

static void klp_detach(void)
{
	int i;

	lockdep_assert_held(&klp_lock);
	if (!klp_attached)
		return;
	for (i = 0; i < ARRAY_SIZE(klp_sites); i++)
		klp_detach_site(&klp_sites[i]);
	klp_attached = false;
	klp_pi_inject_timer = NULL;
	pr_info("detached from kvm\n");
}

static void klp_refuse(struct work_struct *work)
{
	pr_err("struct kvm_lapic does not start with the LAPIC hrtimer on this kernel: detaching, module inert\n");
	mutex_lock(&klp_lock);
	klp_detach();
	mutex_unlock(&klp_lock);
}

static int klp_module_event(struct notifier_block *nb, unsigned long action,
			    void *data)
{
	struct module *mod = data;

	if (strcmp(mod->name, "kvm"))
		return NOTIFY_DONE;
	mutex_lock(&klp_lock);
	if (action == MODULE_STATE_LIVE)
		klp_attach(mod);
	else if (action == MODULE_STATE_GOING)
		klp_detach();
	mutex_unlock(&klp_lock);
	return NOTIFY_DONE;
}

static struct notifier_block klp_module_nb = {
	.notifier_call = klp_module_event,
};

/* Attach to a kvm that was live before this module was loaded. */
static void klp_attach_live_kvm(void)
{
	struct kobject *kobj;
	struct module *kvm;

	kobj = kset_find_obj(THIS_MODULE->mkobj.kobj.kset, "kvm");
	if (!kobj)
		return;
	kvm = container_of(kobj, struct module_kobject, kobj)->mod;
	if (!kvm) {
		pr_err("not attaching: kvm is built into this kernel\n");
	} else if (try_module_get(kvm)) {
		mutex_lock(&klp_lock);
		klp_attach(kvm);
		mutex_unlock(&klp_lock);
		module_put(kvm);
	}
	kobject_put(kobj);
}

/* Arm or disarm every probe; all or nothing. */
static int klp_switch_sites(bool on)
{
	int i, ret = 0;

	for (i = 0; i < ARRAY_SIZE(klp_sites); i++) {
		ret = on ? enable_kretprobe(&klp_sites[i].rp) :
			   disable_kretprobe(&klp_sites[i].rp);
		if (ret)
			break;
	}
	while (ret && i--) {
		if (on)
			disable_kretprobe(&klp_sites[i].rp);
		else
			enable_kretprobe(&klp_sites[i].rp);
	}
	return ret;
}

static int klp_set_enabled(const char *val, const struct kernel_param *kp)
{
	int ret = 0;
	bool on;

	if (kstrtobool(val, &on))
		return -EINVAL;
	mutex_lock(&klp_lock);
	if (on != klp_enabled) {
		/* Off: handlers still in flight see it before the disarm. */
		WRITE_ONCE(klp_enabled, on);
		if (klp_attached)
			ret = klp_switch_sites(on);
		if (ret)
			WRITE_ONCE(klp_enabled, !on);
	}
	mutex_unlock(&klp_lock);
	return ret;
}

static const struct kernel_param_ops klp_enabled_ops = {
	.set = klp_set_enabled,
	.get = param_get_bool,
};

module_param_cb(enabled, &klp_enabled_ops, &klp_enabled, 0644);
MODULE_PARM_DESC(enabled, "Re-arm KVM's LAPIC timer on the vCPU's CPU (default: on)");

static ssize_t attached_show(struct kobject *kobj, struct kobj_attribute *attr,
			     char *buf)
{
	return sysfs_emit(buf, "%d\n", READ_ONCE(klp_attached));
}

static ssize_t symbols_show(struct kobject *kobj, struct kobj_attribute *attr,
			    char *buf)
{
	ssize_t len;

	mutex_lock(&klp_lock);
	if (klp_attached)
		len = sysfs_emit(buf, "%s %s\n", klp_sites[0].symbol,
				 klp_sites[1].symbol);
	else
		len = sysfs_emit(buf, "\n");
	mutex_unlock(&klp_lock);
	return len;
}

static ssize_t missed_show(struct kobject *kobj, struct kobj_attribute *attr,
			   char *buf)
{
	unsigned long missed;
	int i;

	mutex_lock(&klp_lock);
	missed = klp_missed;
	for (i = 0; klp_attached && i < ARRAY_SIZE(klp_sites); i++)
		missed += klp_site_missed(&klp_sites[i]);
	mutex_unlock(&klp_lock);
	return sysfs_emit(buf, "%lu\n", missed);
}

static ssize_t klp_stat_show(enum klp_stat stat, char *buf)
{
	unsigned long sum = 0;
	int cpu;

	for_each_possible_cpu(cpu)
		sum += per_cpu(klp_stats[stat], cpu);
	return sysfs_emit(buf, "%lu\n", sum);
}

#define KLP_STAT_ATTR(_name, _stat)					\
static ssize_t _name##_show(struct kobject *kobj,			\
			    struct kobj_attribute *attr, char *buf)	\
{									\
	return klp_stat_show(_stat, buf);				\
}									\
static struct kobj_attribute _name##_attr = __ATTR_RO(_name)

KLP_STAT_ATTR(rearmed, KLP_REARMED);
KLP_STAT_ATTR(local, KLP_LOCAL);
KLP_STAT_ATTR(posted, KLP_POSTED);
KLP_STAT_ATTR(races, KLP_RACE);
KLP_STAT_ATTR(unmatched, KLP_UNMATCHED);
static struct kobj_attribute attached_attr = __ATTR_RO(attached);
static struct kobj_attribute symbols_attr = __ATTR_RO(symbols);
static struct kobj_attribute missed_attr = __ATTR_RO(missed);

static struct attribute *klp_status_attrs[] = {
	&attached_attr.attr,
	&symbols_attr.attr,
	&rearmed_attr.attr,
	&local_attr.attr,
	&posted_attr.attr,
	&races_attr.attr,
	&unmatched_attr.attr,
	&missed_attr.attr,
	NULL
};

static const struct attribute_group klp_status_group = {
	.name = "status",
	.attrs = klp_status_attrs,
};

static int __init klp_init(void)
{
	int ret;

	INIT_WORK(&klp_refuse_work, klp_refuse);
	ret = sysfs_create_group(&THIS_MODULE->mkobj.kobj, &klp_status_group);
	if (ret)
		return ret;
	ret = register_module_notifier(&klp_module_nb);
	if (ret) {
		sysfs_remove_group(&THIS_MODULE->mkobj.kobj, &klp_status_group);
		return ret;
	}
	pr_info("version %s loaded, enabled=%d\n", KLP_VERSION, klp_enabled);
	klp_attach_live_kvm();
	return 0;
}

static void __exit klp_exit(void)
{
	unregister_module_notifier(&klp_module_nb);
	mutex_lock(&klp_lock);
	klp_detach();
	mutex_unlock(&klp_lock);
	cancel_work_sync(&klp_refuse_work);
	sysfs_remove_group(&THIS_MODULE->mkobj.kobj, &klp_status_group);
}

module_init(klp_init);
module_exit(klp_exit);

MODULE_LICENSE("GPL");
MODULE_VERSION(KLP_VERSION);
MODULE_DESCRIPTION("Re-arm KVM's emulated LAPIC timer pinned to the vCPU's CPU");
