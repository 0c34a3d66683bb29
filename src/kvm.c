// SPDX-License-Identifier: GPL-2.0
/*
 * What the module finds in kvm when it attaches: the functions that arm
 * the LAPIC timer and the Hyper-V synthetic timers, and what owner.h
 * compares with (the timers' callbacks, the vCPU's preempt notifier,
 * kvm.pi_inject_timer).  Nothing here is
 * linked against kvm.ko: symbols are found through kprobes registered
 * disabled, which patch no text.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/kallsyms.h>
#include <linux/kprobes.h>
#include <linux/kvm_host.h>
#include <linux/module.h>

#include "klp.h"
#include "owner.h"

struct klp_kvm_fn klp_fns[KLP_NR_FNS];

/*
 * start_sw_timer() holds both hrtimer_start() calls of the start path, and
 * start_apic_timer(), the vCPU-block path and the hv-timer fallbacks all go
 * through it; start_apic_timer() stands in only where it is not a symbol.
 * kvm_hv_process_stimers() holds stimer_start(), inlined, the only arm of
 * the synthetic timers; kvm built without Hyper-V has none.
 */
static const char *const klp_fn_candidates[KLP_NR_FNS][2] = {
	[KLP_FN_START] = { "start_sw_timer", "start_apic_timer" },
	[KLP_FN_MIGRATE] = { "__kvm_migrate_apic_timer" },
	[KLP_FN_STIMERS] = { "kvm_hv_process_stimers" },
};

unsigned long klp_timer_fn[KLP_NR_KINDS];
unsigned long klp_sched_in;
const int *klp_pi_inject_timer;

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

/* The synthetic timers' arming function and callback; both 0 if either is missing. */
static void klp_resolve_stimers(void)
{
	struct klp_kvm_fn *f = &klp_fns[KLP_FN_STIMERS];

	f->name = klp_fn_candidates[KLP_FN_STIMERS][0];
	if (klp_resolve("stimer_timer_callback", &klp_timer_fn[KLP_STIMER], NULL) ||
	    klp_resolve(f->name, &f->addr, &f->size)) {
		klp_timer_fn[KLP_STIMER] = 0;
		f->addr = 0;
	}
}

/* Find what the methods need in kvm; 0 or an error, said in dmesg. */
int klp_kvm_attach(const struct module *kvm)
{
	int fn, ret;

	ret = klp_resolve("apic_timer_fn", &klp_timer_fn[KLP_LAPIC], NULL);
	if (!ret)
		ret = klp_resolve("kvm_sched_in", &klp_sched_in, NULL);
	if (ret) {
		pr_err("not attaching to kvm: %s (%d)\n",
		       ret == -EPERM ? "kprobes not permitted (kernel lockdown?)" :
				       "symbol not found", ret);
		return ret;
	}
	for (fn = 0; fn < KLP_NR_LAPIC_FNS; fn++) {
		ret = klp_resolve_fn(fn);
		if (ret)
			return ret;
	}
	klp_resolve_stimers();
	klp_pi_inject_timer = klp_find_pi_inject_timer(kvm);
	return 0;
}

void klp_kvm_detach(void)
{
	klp_pi_inject_timer = NULL;
}
