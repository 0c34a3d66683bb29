// SPDX-License-Identifier: GPL-2.0
/*
 * /sys/module/kvm_lapic_pin/status: whether and how the module is attached,
 * and per-CPU counters that mean the same for both methods.
 */
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/percpu.h>
#include <linux/sysfs.h>

#include "klp.h"

DEFINE_PER_CPU(unsigned long, klp_stats[KLP_NR_KINDS][KLP_NR_STATS]);

static ssize_t attached_show(struct kobject *kobj, struct kobj_attribute *attr,
			     char *buf)
{
	return sysfs_emit(buf, "%d\n", !!READ_ONCE(klp_active));
}

static ssize_t method_show(struct kobject *kobj, struct kobj_attribute *attr,
			   char *buf)
{
	const struct klp_method *m = READ_ONCE(klp_active);

	return sysfs_emit(buf, "%s\n", m ? m->name : "");
}

static ssize_t symbols_show(struct kobject *kobj, struct kobj_attribute *attr,
			    char *buf)
{
	ssize_t len;

	mutex_lock(&klp_lock);
	len = klp_active ? klp_active->symbols(buf) : sysfs_emit(buf, "\n");
	mutex_unlock(&klp_lock);
	return len;
}

static ssize_t missed_show(struct kobject *kobj, struct kobj_attribute *attr,
			   char *buf)
{
	unsigned long missed;

	mutex_lock(&klp_lock);
	missed = klp_missed + (klp_active ? klp_active->missed() : 0);
	mutex_unlock(&klp_lock);
	return sysfs_emit(buf, "%lu\n", missed);
}

static ssize_t klp_stat_show(enum klp_kind kind, enum klp_stat stat, char *buf)
{
	unsigned long sum = 0;
	int cpu;

	for_each_possible_cpu(cpu)
		sum += per_cpu(klp_stats[kind][stat], cpu);
	return sysfs_emit(buf, "%lu\n", sum);
}

#define KLP_STAT_ATTR(_name, _kind, _stat)				\
static ssize_t _name##_show(struct kobject *kobj,			\
			    struct kobj_attribute *attr, char *buf)	\
{									\
	return klp_stat_show(_kind, _stat, buf);			\
}									\
static struct kobj_attribute _name##_attr = __ATTR_RO(_name)

/* The LAPIC timer's without a prefix; the synthetic timers' with one. */
KLP_STAT_ATTR(pinned, KLP_LAPIC, KLP_PINNED);
KLP_STAT_ATTR(local, KLP_LAPIC, KLP_LOCAL);
KLP_STAT_ATTR(posted, KLP_LAPIC, KLP_POSTED);
KLP_STAT_ATTR(races, KLP_LAPIC, KLP_RACE);
KLP_STAT_ATTR(unmatched, KLP_LAPIC, KLP_UNMATCHED);
KLP_STAT_ATTR(stimer_pinned, KLP_STIMER, KLP_PINNED);
KLP_STAT_ATTR(stimer_local, KLP_STIMER, KLP_LOCAL);
KLP_STAT_ATTR(stimer_unmatched, KLP_STIMER, KLP_UNMATCHED);
static struct kobj_attribute attached_attr = __ATTR_RO(attached);
static struct kobj_attribute method_attr = __ATTR_RO(method);
static struct kobj_attribute symbols_attr = __ATTR_RO(symbols);
static struct kobj_attribute missed_attr = __ATTR_RO(missed);

static struct attribute *klp_status_attrs[] = {
	&attached_attr.attr,
	&method_attr.attr,
	&symbols_attr.attr,
	&pinned_attr.attr,
	&local_attr.attr,
	&posted_attr.attr,
	&races_attr.attr,
	&unmatched_attr.attr,
	&stimer_pinned_attr.attr,
	&stimer_local_attr.attr,
	&stimer_unmatched_attr.attr,
	&missed_attr.attr,
	NULL
};

static const struct attribute_group klp_status_group = {
	.name = "status",
	.attrs = klp_status_attrs,
};

int klp_status_init(void)
{
	return sysfs_create_group(&THIS_MODULE->mkobj.kobj, &klp_status_group);
}

void klp_status_exit(void)
{
	sysfs_remove_group(&THIS_MODULE->mkobj.kobj, &klp_status_group);
}
