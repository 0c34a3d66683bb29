// SPDX-License-Identifier: GPL-2.0
/*
 * kvm_lapic_pin - fire KVM's emulated local-APIC timer on the vCPU's CPU.
 *
 * Since Linux 5.3 KVM arms the hrtimer behind a vCPU's LAPIC timer with
 * HRTIMER_MODE_ABS_HARD, without HRTIMER_MODE_PINNED.  On a nohz_full host
 * the hrtimer core then queues it on a housekeeping CPU, so the timer fires
 * away from the isolated CPU that runs the vCPU; KVM's Hyper-V synthetic
 * timers likewise.  This module puts them back, by one of two methods (see
 * callsite.c and rearm.c).  This file follows
 * kvm being loaded and unloaded, chooses the method, and holds the switch.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#ifndef CONFIG_X86_64
#error "kvm_lapic_pin supports x86_64 only"
#endif
#if !defined(CONFIG_KRETPROBES) || !defined(CONFIG_PREEMPT_NOTIFIERS)
#error "kvm_lapic_pin needs CONFIG_KRETPROBES and CONFIG_PREEMPT_NOTIFIERS"
#endif

#include <linux/kprobes.h>
#include <linux/kstrtox.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/string.h>
#include <linux/workqueue.h>

#include "klp.h"

enum klp_method_choice { KLP_AUTO, KLP_CALLSITE, KLP_REARM };

static const char *const klp_method_names[] = {
	[KLP_AUTO] = "auto",
	[KLP_CALLSITE] = "callsite",
	[KLP_REARM] = "rearm",
};

DEFINE_MUTEX(klp_lock);	/* serialises attach, detach, the switch */
bool klp_enabled = true;
bool klp_refused;		/* layout mismatch: inert until reloaded */
const struct klp_method *klp_active;	/* NULL: not attached */
unsigned long klp_missed;	/* misses of probes already detached */
static int klp_method_choice = KLP_AUTO;	/* read-only after load */
static struct work_struct klp_refuse_work;
static enum klp_kind klp_refused_kind;

static void klp_attach(const struct module *kvm)
{
	const struct klp_method *m;
	char why[128];
	int ret;

	lockdep_assert_held(&klp_lock);
	if (klp_active || klp_refused || klp_kvm_attach(kvm))
		return;
	m = klp_method_choice == KLP_REARM ? &klp_rearm : &klp_callsite;
	ret = m->attach(why, sizeof(why));
	if (ret && klp_method_choice == KLP_AUTO) {
		pr_info("call sites not proven (%s): using rearm\n", why);
		m = &klp_rearm;
		ret = m->attach(why, sizeof(why));
	}
	if (ret) {
		pr_err("not attaching to kvm: %s: %s\n", m->name, why);
		klp_kvm_detach();
		return;
	}
	WRITE_ONCE(klp_active, m);
	pr_info("attached to kvm, method %s%s\n", m->name,
		klp_enabled ? "" : " (disabled)");
}

static void klp_detach(void)
{
	lockdep_assert_held(&klp_lock);
	if (!klp_active)
		return;
	klp_active->detach();
	klp_missed += klp_active->missed();
	WRITE_ONCE(klp_active, NULL);
	klp_kvm_detach();
	pr_info("detached from kvm\n");
}

static void klp_refuse_fn(struct work_struct *work)
{
	static const char *const what[KLP_NR_KINDS] = {
		[KLP_LAPIC] = "LAPIC timer",
		[KLP_STIMER] = "Hyper-V synthetic timer",
	};

	pr_err("a timer armed by kvm's %s code is not kvm's %s on this kernel: detaching, module inert\n",
	       what[klp_refused_kind], what[klp_refused_kind]);
	mutex_lock(&klp_lock);
	klp_detach();
	mutex_unlock(&klp_lock);
}

/* From a probe handler for timers of @kind: go inert now, detach soon. */
void klp_refuse(enum klp_kind kind)
{
	if (!xchg(&klp_refused, true)) {
		klp_refused_kind = kind;
		schedule_work(&klp_refuse_work);
	}
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

/* Arm or disarm every probe of the active method; all or nothing. */
static int klp_arm(bool on)
{
	struct kprobe *const *kps = klp_active->kps;
	unsigned int i;
	int ret = 0;

	for (i = 0; i < *klp_active->nr_kps; i++) {
		ret = on ? enable_kprobe(kps[i]) : disable_kprobe(kps[i]);
		if (ret)
			break;
	}
	while (ret && i--) {
		if (on)
			disable_kprobe(kps[i]);
		else
			enable_kprobe(kps[i]);
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
		if (klp_active)
			ret = klp_arm(on);
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
MODULE_PARM_DESC(enabled, "Make KVM's LAPIC (and Hyper-V synthetic) timers fire on the vCPU's CPU (default: on)");

static int klp_set_method(const char *val, const struct kernel_param *kp)
{
	int i = sysfs_match_string(klp_method_names, val);

	if (i < 0)
		return -EINVAL;
	klp_method_choice = i;
	return 0;
}

static int klp_get_method(char *buf, const struct kernel_param *kp)
{
	return sysfs_emit(buf, "%s\n", klp_method_names[klp_method_choice]);
}

static const struct kernel_param_ops klp_method_ops = {
	.set = klp_set_method,
	.get = klp_get_method,
};

module_param_cb(method, &klp_method_ops, NULL, 0444);
MODULE_PARM_DESC(method, "auto (default: callsite where KVM's call sites are proven, else rearm), callsite or rearm");

static int __init klp_init(void)
{
	int ret;

	INIT_WORK(&klp_refuse_work, klp_refuse_fn);
	ret = klp_status_init();
	if (ret)
		return ret;
	ret = register_module_notifier(&klp_module_nb);
	if (ret) {
		klp_status_exit();
		return ret;
	}
	pr_info("version %s loaded, enabled=%d, method=%s\n", KLP_VERSION,
		klp_enabled, klp_method_names[klp_method_choice]);
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
	klp_status_exit();
}

module_init(klp_init);
module_exit(klp_exit);

MODULE_LICENSE("GPL");
MODULE_VERSION(KLP_VERSION);
MODULE_DESCRIPTION("Make KVM's emulated LAPIC and Hyper-V synthetic timers fire on the vCPU's CPU");
