/* SPDX-License-Identifier: GPL-2.0 */
/*
 * kvm_lapic_pin: what the module's files share.
 *
 * main.c      lifecycle: following kvm, choosing a method, the switch
 * kvm.c       what the module finds in kvm: its symbols, the LAPIC timer's
 *             callback, the vCPU's notifier, kvm.pi_inject_timer
 * owner.h     whether a timer being armed is the LAPIC timer (or a Hyper-V
 *             synthetic timer) of a vCPU loaded here whose interrupt KVM
 *             does not post (inline)
 * callsite.c  the call-site method: KVM's own hrtimer_start_range_ns()
 *             calls made pinned, for both kinds of timer
 * rearm.c     the re-arm method: the timer moved after KVM queued it
 * status.c    counters and /sys/module/kvm_lapic_pin/status
 */
#ifndef KLP_H
#define KLP_H

#include <linux/hrtimer.h>
#include <linux/kvm_host.h>
#include <linux/mutex.h>
#include <linux/percpu.h>
#include <linux/types.h>
#include <kvm/iodev.h>

/*
 * The leading members of struct kvm_lapic (arch/x86/kvm/lapic.h, which no
 * headers package ships); struct hrtimer is the first member of struct
 * kvm_timer lapic_timer.  A timer found through this is checked to be kvm's
 * LAPIC timer (klp_is_lapic_timer()) before it is touched.
 */
struct klp_lapic_head {
	unsigned long base_address;
	struct kvm_io_device dev;
	struct hrtimer timer;
};

static inline struct hrtimer *klp_apic_timer(void *apic)
{
	return &((struct klp_lapic_head *)apic)->timer;
}

/* The kinds of kvm timer the module pins. */
enum klp_kind {
	KLP_LAPIC,		/* the vCPU's LAPIC timer (apic_timer_fn) */
	KLP_STIMER,		/* Hyper-V synthetic timers (call-site only) */
	KLP_NR_KINDS
};

enum klp_stat {
	KLP_PINNED,		/* made to fire on the vCPU's CPU */
	KLP_LOCAL,		/* already pinned or on the vCPU's CPU */
	KLP_POSTED,		/* KVM posts this vCPU's timer: left */
	KLP_RACE,		/* fired or firing before it could move */
	KLP_UNMATCHED,		/* no vCPU loaded on the arming task owns it */
	KLP_NR_STATS
};

DECLARE_PER_CPU(unsigned long, klp_stats[KLP_NR_KINDS][KLP_NR_STATS]);

static inline void klp_count(enum klp_kind kind, enum klp_stat stat)
{
	this_cpu_inc(klp_stats[kind][stat]);
}

/* The kvm functions that arm the timers. */
enum klp_fn {
	KLP_FN_START,		/* start_sw_timer, or start_apic_timer */
	KLP_FN_MIGRATE,		/* __kvm_migrate_apic_timer */
	KLP_NR_LAPIC_FNS,
	/* kvm_hv_process_stimers; addr 0 where kvm has none */
	KLP_FN_STIMERS = KLP_NR_LAPIC_FNS,
	KLP_NR_FNS
};

struct klp_kvm_fn {
	const char *name;	/* the symbol found */
	unsigned long addr;	/* its first byte, before any ENDBR64 */
	unsigned long size;
};

extern struct klp_kvm_fn klp_fns[KLP_NR_FNS];

/* A way of making the timer fire on the vCPU's CPU. */
struct klp_method {
	const char *name;
	/* Probes registered, armed if klp_enabled; 0, or why not in @why. */
	int (*attach)(char *why, size_t len);
	void (*detach)(void);
	unsigned long (*missed)(void);
	/* What is probed, space separated, into buf (PAGE_SIZE). */
	int (*symbols)(char *buf);
	/* What the switch arms and disarms. */
	struct kprobe *const *kps;
	const unsigned int *nr_kps;
};

extern const struct klp_method klp_callsite;
extern const struct klp_method klp_rearm;

extern struct mutex klp_lock;	/* serialises attach, detach, the switch */
extern bool klp_enabled;
extern bool klp_refused;
extern const struct klp_method *klp_active;	/* NULL: not attached */
extern unsigned long klp_missed;	/* misses of probes already detached */

/* kvm.c */
int klp_kvm_attach(const struct module *kvm);
void klp_kvm_detach(void);
int klp_resolve(const char *sym, unsigned long *addr, unsigned long *size);

/* main.c */
void klp_refuse(enum klp_kind kind);

/* status.c */
int klp_status_init(void);
void klp_status_exit(void);

#endif
