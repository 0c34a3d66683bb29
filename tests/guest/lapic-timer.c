// SPDX-License-Identifier: GPL-2.0
/*
 * lapic-timer - minimal KVM workload that arms the guest's local APIC timer
 * (or, with --mode stimer, a Hyper-V synthetic timer in direct mode, which
 * interrupts through the same LAPIC vector) N times and checks that every
 * expiry is delivered exactly once.
 *
 * The guest runs in flat 32-bit protected mode without paging, set up
 * directly through KVM_SET_SREGS.  It uses the in-kernel irqchip, so every
 * timer expiry goes through KVM's emulated LAPIC timer (apic_timer_fn).
 * Progress and completion are reported through OUT instructions; the
 * per-interrupt latency samples, and the TSC ticks each arming write took
 * (one VM exit, handled in KVM), are written by the guest into its memory
 * and summarised by the host; --dump prints them all.
 *
 * With --vcpus N the VM has N vCPUs, each run by its own thread (vCPU 0
 * by the main one) with its own timer, counts and samples: each vCPU's
 * data page, stack and samples lie in its own region of guest memory,
 * which its data and stack segments have as their base; the code, the IDT
 * and the APIC (addressed through %es, based at 0) are shared.  Each vCPU
 * prints "VCPU id=I tid=T" when its thread starts and its own RESULT line.
 *
 * Exit status: 0 if received == armed on every vCPU, 1 otherwise (including
 * watchdog expiry), 2 on setup error or guest crash.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define XSTR(x)			STR(x)
#define STR(x)			#x

/*
 * Guest physical memory layout: a single memslot starting at GPA 0, one
 * region per vCPU; the code and the IDT are in the first.  The addresses
 * below are offsets in a vCPU's region (the base of its data and stack
 * segments) but for CODE_GPA and IDT_GPA, which are guest physical.
 */
#define GDT_GPA			0x1000
#define IDT_GPA			0x2000
#define DATA_GPA		0x3000
#define CODE_GPA		0x10000
#define STACK_TOP		0x80000
#define SAMPLES_GPA		0x100000
#define MAX_COUNT		1000000
#define MEM_ALIGN		(2UL << 20)
#define DUMP_PER_LINE		16
#define MAX_VCPUS		16

/* GDT selectors */
#define SEL_CODE		0x08	/* flat 32-bit code */
#define SEL_DATA		0x10	/* 32-bit data, based at the vCPU's region */
#define SEL_FLAT		0x18	/* flat 32-bit data, for the APIC */
#define GDT_ENTRIES		4

/* struct guest_data field offsets, shared with the guest assembly. */
#define D_MODE			0x00
#define D_COUNT			0x04
#define D_TMICT			0x08
#define D_RECEIVED		0x0c
#define D_SPURIOUS		0x10
#define D_TSC_INTERVAL		0x18
#define D_DEADLINE		0x20
#define D_ARMS			0x28
#define D_ARM_SAMPLES		0x2c
#define D_STIMER_INTERVAL	0x30

/* Guest -> host I/O ports. */
#define PORT_PROGRESS		0x500
#define PORT_DONE		0x501
#define PORT_UNEXPECTED		0x502

/* Local APIC (xAPIC MMIO) */
#define APIC_BASE		0xfee00000
#define APIC_EOI		0xb0
#define APIC_SVR		0xf0
#define APIC_ISR		0x100
#define APIC_LVTT		0x320
#define APIC_TMICT		0x380
#define APIC_TDCR		0x3e0
#define APIC_SVR_ENABLE		0x100
#define APIC_LVT_MASKED		(1 << 16)
#define APIC_LVT_PERIODIC	(1 << 17)
#define APIC_LVT_TSCDEADLINE	(2 << 17)
#define APIC_TDCR_DIV1		0xb
#define MSR_IA32_TSC_DEADLINE	0x6e0

/*
 * Hyper-V synthetic timer 0: one-shot, direct mode (the expiry is a fixed
 * interrupt at the vector in the config), enabled by each write of its
 * count, an absolute time of the reference counter (100 ns units).
 */
#define HV_MSR_TIME_REF_COUNT	0x40000020
#define HV_MSR_STIMER0_CONFIG	0x400000b0
#define HV_MSR_STIMER0_COUNT	0x400000b1
#define HV_STIMER_AUTO_ENABLE	(1 << 3)
#define HV_STIMER_VECTOR_SHIFT	4
#define HV_STIMER_DIRECT	(1 << 12)
#define HV_CPUID_FIRST		0x40000000
#define HV_CPUID_LAST		0x4fffffff

#define TIMER_VECTOR		0xec
#define SPURIOUS_VECTOR		0xff
#define TIMER_ISR_REG		(APIC_ISR + 0x10 * (TIMER_VECTOR / 32))
#define TIMER_ISR_BIT		(1 << (TIMER_VECTOR % 32))

/*
 * KVM's APIC bus runs at 1 GHz (APIC_BUS_CYCLE_NS = 1, the default of the
 * KVM_CAP_X86_APIC_BUS_CYCLES_NS knob on newer kernels, which we leave
 * alone), so with divide 1 TMICT counts nanoseconds.
 */
#define APIC_BUS_CYCLE_NS	1

#define MODE_ONESHOT		0
#define MODE_PERIODIC		1
#define MODE_TSCDEADLINE	2
#define MODE_STIMER		3
#define NR_MODES		4

#define CPUID_TSC_DEADLINE	(1u << 24)	/* CPUID.1:ECX */

struct guest_data {
	uint32_t mode;
	uint32_t count;
	uint32_t tmict;
	uint32_t received;
	uint32_t spurious;
	uint32_t pad;
	uint64_t tsc_interval;
	uint64_t deadline;
	uint32_t arms;
	uint32_t arm_samples;	/* GPA of uint32_t arm_cost[count] */
	uint32_t stimer_interval;	/* 100 ns units */
};

_Static_assert(offsetof(struct guest_data, mode) == D_MODE, "layout");
_Static_assert(offsetof(struct guest_data, count) == D_COUNT, "layout");
_Static_assert(offsetof(struct guest_data, tmict) == D_TMICT, "layout");
_Static_assert(offsetof(struct guest_data, received) == D_RECEIVED, "layout");
_Static_assert(offsetof(struct guest_data, spurious) == D_SPURIOUS, "layout");
_Static_assert(offsetof(struct guest_data, tsc_interval) == D_TSC_INTERVAL,
	       "layout");
_Static_assert(offsetof(struct guest_data, deadline) == D_DEADLINE, "layout");
_Static_assert(offsetof(struct guest_data, arms) == D_ARMS, "layout");
_Static_assert(offsetof(struct guest_data, arm_samples) == D_ARM_SAMPLES,
	       "layout");
_Static_assert(offsetof(struct guest_data, stimer_interval) == D_STIMER_INTERVAL,
	       "layout");

#define D(off)			XSTR(DATA_GPA + off)
#define APIC(reg)		"%es:" XSTR(APIC_BASE + reg)

/*
 * Both arms start alike: push the low half of the TSC, and store (and leave
 * in edx:eax) deadline = rdtsc + tsc_interval.
 */
#define NEXT_DEADLINE							\
	"	rdtsc\n"						\
	"	pushl %eax\n"						\
	"	addl " D(D_TSC_INTERVAL) ", %eax\n"			\
	"	adcl " D(D_TSC_INTERVAL + 4) ", %edx\n"			\
	"	movl %eax, " D(D_DEADLINE) "\n"				\
	"	movl %edx, " D(D_DEADLINE + 4) "\n"
#define MOVL(imm, dst)		"	movl $" XSTR(imm) ", " dst "\n"

/*
 * Guest code, 32-bit, position independent apart from the absolute
 * addresses of the data page and the samples array (in the vCPU's region,
 * through %ds) and of the APIC (through %es).
 *
 * guest_stubs: 256 16-byte stubs, one per vector, that report an
 * unexpected exception or interrupt to the host and halt.
 */
__asm__(
	".pushsection .rodata\n"
	".code32\n"
	".globl guest_code, guest_code_end, guest_timer_isr, guest_stubs\n"
	"guest_code:\n"
	MOVL(APIC_SVR_ENABLE | SPURIOUS_VECTOR, APIC(APIC_SVR))
	MOVL(APIC_TDCR_DIV1, APIC(APIC_TDCR))
	"	movl " D(D_MODE) ", %eax\n"
	"	cmpl $" XSTR(MODE_TSCDEADLINE) ", %eax\n"
	"	je .Lstart_tscdl\n"
	"	cmpl $" XSTR(MODE_PERIODIC) ", %eax\n"
	"	je .Lstart_periodic\n"
	"	cmpl $" XSTR(MODE_STIMER) ", %eax\n"
	"	je .Lstart_stimer\n"
	MOVL(TIMER_VECTOR, APIC(APIC_LVTT))
	"	call .Larm_oneshot\n"
	"	jmp .Lwait\n"
	".Lstart_periodic:\n"
	MOVL(TIMER_VECTOR | APIC_LVT_PERIODIC, APIC(APIC_LVTT))
	"	call .Larm_oneshot\n"
	"	jmp .Lwait\n"
	".Lstart_stimer:\n"
	"	movl $" XSTR(HV_MSR_STIMER0_CONFIG) ", %ecx\n"
	"	movl $" XSTR(HV_STIMER_AUTO_ENABLE | HV_STIMER_DIRECT |
			     TIMER_VECTOR << HV_STIMER_VECTOR_SHIFT) ", %eax\n"
	"	xorl %edx, %edx\n"
	"	wrmsr\n"
	"	call .Larm_stimer\n"
	"	jmp .Lwait\n"
	".Lstart_tscdl:\n"
	MOVL(TIMER_VECTOR | APIC_LVT_TSCDEADLINE, APIC(APIC_LVTT))
	"	call .Larm_tscdl\n"
	".Lwait:\n"
	"	cli\n"
	"	movl " D(D_RECEIVED) ", %eax\n"
	"	cmpl " D(D_COUNT) ", %eax\n"
	"	jae .Ldone\n"
	"	sti\n"
	"	hlt\n"
	"	jmp .Lwait\n"
	".Ldone:\n"
	"	movw $" XSTR(PORT_DONE) ", %dx\n"
	"	outl %eax, %dx\n"
	".Lhalt:\n"
	"	cli\n"
	"	hlt\n"
	"	jmp .Lhalt\n"

	/*
	 * deadline = rdtsc + tsc_interval; TMICT = tmict.
	 * Clobbers eax, ecx, edx.
	 */
	".Larm_oneshot:\n"
	NEXT_DEADLINE
	"	movl " D(D_TMICT) ", %eax\n"
	"	movl %eax, " APIC(APIC_TMICT) "\n"
	"	jmp .Lrecord_arm\n"

	/*
	 * deadline = rdtsc + tsc_interval; IA32_TSC_DEADLINE = deadline.
	 * Clobbers eax, ecx, edx.
	 */
	".Larm_tscdl:\n"
	NEXT_DEADLINE
	"	movl $" XSTR(MSR_IA32_TSC_DEADLINE) ", %ecx\n"
	"	wrmsr\n"
	"	jmp .Lrecord_arm\n"

	/*
	 * deadline = rdtsc + tsc_interval; STIMER0_COUNT = reference
	 * counter + stimer_interval.  Clobbers eax, ecx, edx.
	 */
	".Larm_stimer:\n"
	NEXT_DEADLINE
	"	movl $" XSTR(HV_MSR_TIME_REF_COUNT) ", %ecx\n"
	"	rdmsr\n"
	"	addl " D(D_STIMER_INTERVAL) ", %eax\n"
	"	adcl $0, %edx\n"
	"	movl $" XSTR(HV_MSR_STIMER0_COUNT) ", %ecx\n"
	"	wrmsr\n"

	/*
	 * Tail of both arms: the low half of the TSC read before the arming
	 * write is on the stack; record the ticks since then (the write's VM
	 * exit and a handful of instructions) as arm sample number arms.
	 */
	".Lrecord_arm:\n"
	"	rdtsc\n"
	"	popl %ecx\n"
	"	subl %ecx, %eax\n"
	"	movl " D(D_ARMS) ", %ecx\n"
	"	cmpl " D(D_COUNT) ", %ecx\n"
	"	jae .Lrecorded\n"
	"	movl " D(D_ARM_SAMPLES) ", %edx\n"
	"	movl %eax, (%edx,%ecx,4)\n"
	"	incl %ecx\n"
	"	movl %ecx, " D(D_ARMS) "\n"
	".Lrecorded:\n"
	"	ret\n"

	/*
	 * Timer interrupt: count it only if the vector is in service and
	 * this is not a re-delivery of the interrupt being handled (QEMU's
	 * SVM emulation occasionally delivers an event twice: after the EOI
	 * the ISR bit is clear, before it the second delivery nests inside
	 * this handler, which runs with IF clear so nothing else can nest).
	 * Then record the latency, EOI, re-arm (before reporting, so that
	 * the timer is armed while the host may migrate the vCPU thread),
	 * and report.
	 */
	"guest_timer_isr:\n"
	"	pushl %eax\n"
	"	pushl %ecx\n"
	"	pushl %edx\n"
	"	rdtsc\n"
	"	movl 12(%esp), %ecx\n"
	"	subl $(" XSTR(CODE_GPA) "+guest_timer_isr-guest_code), %ecx\n"
	"	cmpl $(.Lisr_end - guest_timer_isr), %ecx\n"
	"	jb .Lspurious\n"
	"	testl $" XSTR(TIMER_ISR_BIT) ", " APIC(TIMER_ISR_REG) "\n"
	"	jz .Lspurious\n"
	"	subl " D(D_DEADLINE) ", %eax\n"
	"	sbbl " D(D_DEADLINE + 4) ", %edx\n"
	"	movl " D(D_RECEIVED) ", %ecx\n"
	"	movl %eax, " XSTR(SAMPLES_GPA) "(,%ecx,8)\n"
	"	movl %edx, " XSTR(SAMPLES_GPA + 4) "(,%ecx,8)\n"
	"	incl %ecx\n"
	"	movl %ecx, " D(D_RECEIVED) "\n"
	"	movl $0, " APIC(APIC_EOI) "\n"
	"	cmpl " D(D_COUNT) ", %ecx\n"
	"	jae .Lstop\n"
	"	movl " D(D_MODE) ", %eax\n"
	"	cmpl $" XSTR(MODE_TSCDEADLINE) ", %eax\n"
	"	je .Lrearm_tscdl\n"
	"	cmpl $" XSTR(MODE_PERIODIC) ", %eax\n"
	"	je .Lnext_period\n"
	"	cmpl $" XSTR(MODE_STIMER) ", %eax\n"
	"	je .Lrearm_stimer\n"
	"	call .Larm_oneshot\n"
	"	jmp .Lreport\n"
	".Lrearm_stimer:\n"
	"	call .Larm_stimer\n"
	"	jmp .Lreport\n"
	".Lrearm_tscdl:\n"
	"	call .Larm_tscdl\n"
	"	jmp .Lreport\n"
	".Lnext_period:\n"
	"	movl " D(D_TSC_INTERVAL) ", %eax\n"
	"	movl " D(D_TSC_INTERVAL + 4) ", %edx\n"
	"	addl %eax, " D(D_DEADLINE) "\n"
	"	adcl %edx, " D(D_DEADLINE + 4) "\n"
	"	jmp .Lreport\n"
	".Lstop:\n"
	MOVL(TIMER_VECTOR | APIC_LVT_MASKED, APIC(APIC_LVTT))
	".Lreport:\n"
	"	movl " D(D_RECEIVED) ", %eax\n"
	"	movw $" XSTR(PORT_PROGRESS) ", %dx\n"
	"	outl %eax, %dx\n"
	".Liret:\n"
	"	popl %edx\n"
	"	popl %ecx\n"
	"	popl %eax\n"
	"	iret\n"
	".Lspurious:\n"
	"	incl " D(D_SPURIOUS) "\n"
	"	jmp .Liret\n"
	".Lisr_end:\n"

	".balign 16\n"
	"guest_stubs:\n"
	".set .Lvec, 0\n"
	".rept 256\n"
	"	.balign 16\n"
	"	movl $.Lvec, %eax\n"
	"	jmp .Lunexpected\n"
	"	.set .Lvec, .Lvec + 1\n"
	".endr\n"
	".Lunexpected:\n"
	"	movw $" XSTR(PORT_UNEXPECTED) ", %dx\n"
	"	outl %eax, %dx\n"
	"	jmp .Lhalt\n"
	"guest_code_end:\n"
	".code64\n"
	".popsection\n");

extern const unsigned char guest_code[], guest_code_end[];
extern const unsigned char guest_timer_isr[], guest_stubs[];

static const char *const mode_names[] = {
	[MODE_ONESHOT] = "oneshot",
	[MODE_PERIODIC] = "periodic",
	[MODE_TSCDEADLINE] = "tscdeadline",
	[MODE_STIMER] = "stimer",
};

struct options {
	int mode;
	unsigned long interval_us;
	unsigned long count;
	unsigned int vcpus;
	unsigned int ncpus;		/* entries in cpus[]; 0: not pinned */
	int cpus[MAX_VCPUS];
	int migrate_to;
	unsigned long migrate_after;
	int idle;
	int dump;
};

struct vm;

struct vcpu {
	struct vm *vm;
	unsigned int id;
	int fd;
	struct kvm_run *run;
	uint32_t base;			/* GPA of its region */
	int cpu;			/* to run on, or -1 */
	pthread_t thread;
	int rc;				/* run_vcpu()'s */
};

struct vm {
	int kvm_fd;
	int vm_fd;
	unsigned char *mem;
	size_t region_size;
	unsigned int tsc_khz;
	int tsc_deadline;
	const struct options *o;
	unsigned int nr_vcpus;
	struct vcpu vcpus[MAX_VCPUS];
};

/* Each vCPU thread's watchdog: a timer that signals that thread. */
static __thread struct kvm_run *watchdog_run;
static __thread volatile sig_atomic_t watchdog_fired;
static __thread timer_t watchdog_timer;

#ifndef sigev_notify_thread_id	/* glibc before 2.37 */
#define sigev_notify_thread_id	_sigev_un._tid
#endif

static void __attribute__((noreturn, format(printf, 1, 2)))
die(const char *fmt, ...)
{
	va_list ap;

	fputs("lapic-timer: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(2);
}

static void __attribute__((noreturn)) usage(void)
{
	fprintf(stderr,
		"usage: lapic-timer [--mode oneshot|tscdeadline|periodic|stimer]\n"
		"                   [--interval-us U] [--count N] [--vcpus V]\n"
		"                   [--cpu C | --cpus C0,C1,...]\n"
		"                   [--migrate-to D --migrate-after K] [--dump]\n"
		"       lapic-timer --idle\n"
		"--cpus: vCPU i on CPU Ci, one CPU for each vCPU; --cpu C (or a\n"
		"list of one): every vCPU on CPU C; neither: not pinned.\n");
	exit(2);
}

static unsigned long parse_ulong(const char *opt, const char *s,
				 unsigned long min, unsigned long max)
{
	unsigned long v;
	char *end;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end || *s == '-' || v < min || v > max)
		die("%s: expected an integer in [%lu, %lu], got '%s'",
		    opt, min, max, s);
	return v;
}

/* --cpus C0,C1,...: o->cpus[] and o->ncpus. */
static void parse_cpus(const char *opt, char *list, struct options *o,
		       long ncpus)
{
	char *s, *save = NULL;

	o->ncpus = 0;
	for (s = strtok_r(list, ",", &save); s; s = strtok_r(NULL, ",", &save)) {
		if (o->ncpus == MAX_VCPUS)
			die("%s: more than %d CPUs", opt, MAX_VCPUS);
		o->cpus[o->ncpus++] = parse_ulong(opt, s, 0, ncpus - 1);
	}
	if (!o->ncpus)
		die("%s: no CPU", opt);
}

static void parse_args(int argc, char **argv, struct options *o)
{
	static const struct option longopts[] = {
		{ "mode", required_argument, NULL, 'm' },
		{ "interval-us", required_argument, NULL, 'i' },
		{ "count", required_argument, NULL, 'n' },
		{ "vcpus", required_argument, NULL, 'v' },
		{ "cpu", required_argument, NULL, 'c' },
		{ "cpus", required_argument, NULL, 'C' },
		{ "migrate-to", required_argument, NULL, 't' },
		{ "migrate-after", required_argument, NULL, 'a' },
		{ "idle", no_argument, NULL, 'I' },
		{ "dump", no_argument, NULL, 'D' },
		{ NULL, 0, NULL, 0 }
	};
	long ncpus = sysconf(_SC_NPROCESSORS_CONF);
	unsigned int i;
	int c;

	*o = (struct options) {
		.mode = MODE_ONESHOT, .interval_us = 10000, .count = 20,
		.vcpus = 1, .migrate_to = -1,
	};

	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'm':
			for (i = 0; i < NR_MODES; i++)
				if (!strcmp(optarg, mode_names[i]))
					break;
			if (i == NR_MODES)
				die("--mode: unknown mode '%s'", optarg);
			o->mode = i;
			break;
		case 'i':
			/* TMICT is 32 bits wide. */
			o->interval_us = parse_ulong("--interval-us", optarg,
						     1, 4000000);
			break;
		case 'n':
			o->count = parse_ulong("--count", optarg, 1, MAX_COUNT);
			break;
		case 'v':
			o->vcpus = parse_ulong("--vcpus", optarg, 1, MAX_VCPUS);
			break;
		case 'c':
			o->cpus[0] = parse_ulong("--cpu", optarg, 0, ncpus - 1);
			o->ncpus = 1;
			break;
		case 'C':
			parse_cpus("--cpus", optarg, o, ncpus);
			break;
		case 't':
			o->migrate_to = parse_ulong("--migrate-to", optarg,
						    0, ncpus - 1);
			break;
		case 'a':
			o->migrate_after = parse_ulong("--migrate-after",
						       optarg, 1, MAX_COUNT);
			break;
		case 'I':
			o->idle = 1;
			break;
		case 'D':
			o->dump = 1;
			break;
		default:
			usage();
		}
	}
	if (optind != argc)
		usage();
	if ((o->migrate_to < 0) != (o->migrate_after == 0))
		die("--migrate-to and --migrate-after go together");
	if (o->migrate_after >= o->count)
		die("--migrate-after must be less than --count");
	if (o->ncpus > 1 && o->ncpus != o->vcpus)
		die("--cpus: %u CPUs for %u vCPUs", o->ncpus, o->vcpus);
}

static void set_cpu(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set))
		die("sched_setaffinity(%d): %s", cpu, strerror(errno));
}

/* KVM_GET_SUPPORTED_CPUID or KVM_GET_SUPPORTED_HV_CPUID on @fd. */
static struct kvm_cpuid2 *get_cpuid(int fd, unsigned long req, const char *name)
{
	struct kvm_cpuid2 *cpuid = NULL;
	unsigned int nent = 64;

	for (;;) {
		cpuid = realloc(cpuid, sizeof(*cpuid) +
				nent * sizeof(cpuid->entries[0]));
		if (!cpuid)
			die("out of memory");
		cpuid->nent = nent;
		if (!ioctl(fd, req, cpuid))
			return cpuid;
		if (errno != E2BIG)
			die("%s: %s", name, strerror(errno));
		nent *= 2;
	}
}

/*
 * The vCPU's CPUID: what KVM supports, the TSC deadline timer, and for
 * --mode stimer the Hyper-V leaves in place of KVM's own.
 */
static void set_cpuid(struct vm *vm, struct vcpu *vcpu, int hyperv)
{
	struct kvm_cpuid2 *cpuid, *hv;
	unsigned int i, n = 0;

	cpuid = get_cpuid(vm->kvm_fd, KVM_GET_SUPPORTED_CPUID,
			  "KVM_GET_SUPPORTED_CPUID");
	/* KVM emulates the TSC deadline timer but does not report it. */
	vm->tsc_deadline = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION,
				 KVM_CAP_TSC_DEADLINE_TIMER) > 0;
	for (i = 0; i < cpuid->nent; i++) {
		struct kvm_cpuid_entry2 *e = &cpuid->entries[i];

		if (e->function == 1 && vm->tsc_deadline)
			e->ecx |= CPUID_TSC_DEADLINE;
		if (!hyperv || e->function < HV_CPUID_FIRST ||
		    e->function > HV_CPUID_LAST)
			cpuid->entries[n++] = *e;
	}
	cpuid->nent = n;
	if (hyperv) {
		hv = get_cpuid(vcpu->fd, KVM_GET_SUPPORTED_HV_CPUID,
			       "KVM_GET_SUPPORTED_HV_CPUID");
		cpuid = realloc(cpuid, sizeof(*cpuid) + (n + hv->nent) *
				sizeof(cpuid->entries[0]));
		if (!cpuid)
			die("out of memory");
		memcpy(&cpuid->entries[n], hv->entries,
		       hv->nent * sizeof(hv->entries[0]));
		cpuid->nent += hv->nent;
		free(hv);
	}

	if (ioctl(vcpu->fd, KVM_SET_CPUID2, cpuid))
		die("KVM_SET_CPUID2: %s", strerror(errno));
	free(cpuid);
}

/* The SynIC, which the synthetic timers need, on for the vCPU. */
static void enable_synic(struct vcpu *vcpu)
{
	struct kvm_enable_cap cap = { .cap = KVM_CAP_HYPERV_SYNIC2 };

	if (ioctl(vcpu->fd, KVM_ENABLE_CAP, &cap))
		die("KVM_ENABLE_CAP(KVM_CAP_HYPERV_SYNIC2): %s",
		    strerror(errno));
}

static void create_vcpu(struct vm *vm, unsigned int id, int hyperv)
{
	struct vcpu *vcpu = &vm->vcpus[id];
	int run_size, ret;

	vcpu->vm = vm;
	vcpu->id = id;
	vcpu->base = id * vm->region_size;
	vcpu->fd = ioctl(vm->vm_fd, KVM_CREATE_VCPU, id);
	if (vcpu->fd < 0)
		die("KVM_CREATE_VCPU(%u): %s", id, strerror(errno));
	run_size = ioctl(vm->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (run_size < (int)sizeof(*vcpu->run))
		die("KVM_GET_VCPU_MMAP_SIZE: %s", strerror(errno));
	vcpu->run = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED,
			 vcpu->fd, 0);
	if (vcpu->run == MAP_FAILED)
		die("mmap kvm_run: %s", strerror(errno));

	set_cpuid(vm, vcpu, hyperv);
	if (hyperv)
		enable_synic(vcpu);

	ret = ioctl(vcpu->fd, KVM_GET_TSC_KHZ, 0);
	if (ret <= 0)
		die("KVM_GET_TSC_KHZ: %s", ret ? strerror(errno) : "zero");
	vm->tsc_khz = ret;
}

/* A VM with @nr_vcpus vCPUs, each with a region of @region_size bytes. */
static void create_vm(struct vm *vm, unsigned int nr_vcpus,
		      size_t region_size, int hyperv)
{
	struct kvm_userspace_memory_region region;
	size_t mem_size = nr_vcpus * region_size;
	unsigned int i;
	int ret;

	vm->nr_vcpus = nr_vcpus;
	vm->region_size = region_size;
	vm->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (vm->kvm_fd < 0)
		die("open /dev/kvm: %s", strerror(errno));
	ret = ioctl(vm->kvm_fd, KVM_GET_API_VERSION, 0);
	if (ret != KVM_API_VERSION)
		die("unexpected KVM API version %d", ret);

	vm->vm_fd = ioctl(vm->kvm_fd, KVM_CREATE_VM, 0);
	if (vm->vm_fd < 0)
		die("KVM_CREATE_VM: %s", strerror(errno));

	vm->mem = mmap(NULL, mem_size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (vm->mem == MAP_FAILED)
		die("mmap guest memory: %s", strerror(errno));
	region = (struct kvm_userspace_memory_region) {
		.slot = 0,
		.guest_phys_addr = 0,
		.memory_size = mem_size,
		.userspace_addr = (uintptr_t)vm->mem,
	};
	if (ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &region))
		die("KVM_SET_USER_MEMORY_REGION: %s", strerror(errno));

	if (ioctl(vm->vm_fd, KVM_CREATE_IRQCHIP, 0))
		die("KVM_CREATE_IRQCHIP: %s", strerror(errno));

	for (i = 0; i < nr_vcpus; i++)
		create_vcpu(vm, i, hyperv);
}

static struct guest_data *vcpu_data(const struct vcpu *vcpu)
{
	return (struct guest_data *)(vcpu->vm->mem + vcpu->base + DATA_GPA);
}

static int64_t *vcpu_samples(const struct vcpu *vcpu)
{
	return (int64_t *)(vcpu->vm->mem + vcpu->base + SAMPLES_GPA);
}

static void set_segment(struct kvm_segment *s, uint16_t sel, uint8_t type,
			uint32_t base)
{
	*s = (struct kvm_segment) {
		.base = base, .limit = 0xffffffff, .selector = sel, .type = type,
		.present = 1, .dpl = 0, .db = 1, .s = 1, .l = 0, .g = 1,
	};
}

/* A 4 GiB, 32-bit, present, DPL 0 code or data descriptor at @base. */
static uint64_t gdt_entry(uint32_t base, uint8_t type)
{
	return 0x00cf80000000ffffull | (uint64_t)(0x10 | type) << 40 |
	       (uint64_t)(base & 0xffffff) << 16 |
	       (uint64_t)(base >> 24) << 56;
}

/* The vCPU's GDT, data page, segments and registers, in its region. */
static void setup_vcpu(struct vcpu *vcpu, const struct options *o)
{
	struct vm *vm = vcpu->vm;
	uint64_t *gdt = (uint64_t *)(vm->mem + vcpu->base + GDT_GPA);
	struct guest_data *data = vcpu_data(vcpu);
	/* KVM starts vCPUs other than the BSP waiting for INIT/SIPI. */
	struct kvm_mp_state mp = { .mp_state = KVM_MP_STATE_RUNNABLE };
	struct kvm_sregs sregs;
	struct kvm_regs regs;

	vcpu->cpu = o->ncpus ? o->cpus[o->ncpus > 1 ? vcpu->id : 0] : -1;

	gdt[0] = 0;
	gdt[SEL_CODE / 8] = gdt_entry(0, 0xb);
	gdt[SEL_DATA / 8] = gdt_entry(vcpu->base, 0x3);
	gdt[SEL_FLAT / 8] = gdt_entry(0, 0x3);

	data->mode = o->mode;
	data->count = o->count;
	data->tmict = o->interval_us * 1000 / APIC_BUS_CYCLE_NS;
	data->tsc_interval = (uint64_t)o->interval_us * vm->tsc_khz / 1000;
	data->stimer_interval = o->interval_us * 10;
	data->arm_samples = SAMPLES_GPA + o->count * sizeof(int64_t);

	if (ioctl(vcpu->fd, KVM_GET_SREGS, &sregs))
		die("KVM_GET_SREGS: %s", strerror(errno));
	set_segment(&sregs.cs, SEL_CODE, 0xb, 0);
	set_segment(&sregs.ds, SEL_DATA, 0x3, vcpu->base);
	sregs.ss = sregs.ds;
	set_segment(&sregs.es, SEL_FLAT, 0x3, 0);
	sregs.fs = sregs.gs = sregs.es;
	sregs.gdt.base = vcpu->base + GDT_GPA;
	sregs.gdt.limit = GDT_ENTRIES * 8 - 1;
	sregs.idt.base = IDT_GPA;
	sregs.idt.limit = 256 * 8 - 1;
	sregs.cr0 = 0x11;		/* PE | ET, no paging */
	sregs.cr4 = 0;
	sregs.efer = 0;
	if (ioctl(vcpu->fd, KVM_SET_SREGS, &sregs))
		die("KVM_SET_SREGS: %s", strerror(errno));

	memset(&regs, 0, sizeof(regs));
	regs.rip = CODE_GPA;
	regs.rsp = STACK_TOP;
	regs.rflags = 0x2;
	if (ioctl(vcpu->fd, KVM_SET_REGS, &regs))
		die("KVM_SET_REGS: %s", strerror(errno));
	if (ioctl(vcpu->fd, KVM_SET_MP_STATE, &mp))
		die("KVM_SET_MP_STATE: %s", strerror(errno));
}

/* The shared code and IDT, then each vCPU's own state. */
static void setup_guest(struct vm *vm, const struct options *o)
{
	uint32_t *idt = (uint32_t *)(vm->mem + IDT_GPA);
	size_t code_size = guest_code_end - guest_code;
	unsigned int v;

	if (code_size > STACK_TOP - CODE_GPA - 0x1000)
		die("guest code too large");
	memcpy(vm->mem + CODE_GPA, guest_code, code_size);

	/* 32-bit interrupt gates, selector SEL_CODE, DPL 0. */
	for (v = 0; v < 256; v++) {
		uint32_t handler = CODE_GPA + (v == TIMER_VECTOR ?
			guest_timer_isr - guest_code :
			guest_stubs - guest_code + 16 * v);

		idt[2 * v] = (SEL_CODE << 16) | (handler & 0xffff);
		idt[2 * v + 1] = (handler & 0xffff0000) | 0x8e00;
	}

	vm->o = o;
	for (v = 0; v < vm->nr_vcpus; v++)
		setup_vcpu(&vm->vcpus[v], o);
}

static void watchdog_handler(int sig)
{
	(void)sig;
	watchdog_fired = 1;
	watchdog_run->immediate_exit = 1;
}

/* This thread's watchdog, on @run: SIGALRM to this thread. */
static void watchdog_init(struct kvm_run *run)
{
	struct sigevent sev = {
		.sigev_notify = SIGEV_THREAD_ID,
		.sigev_signo = SIGALRM,
	};

	sev.sigev_notify_thread_id = gettid();
	watchdog_run = run;
	if (timer_create(CLOCK_MONOTONIC, &sev, &watchdog_timer))
		die("timer_create: %s", strerror(errno));
}

static void watchdog_arm(long ms)
{
	struct itimerspec it = {
		.it_value.tv_sec = ms / 1000,
		.it_value.tv_nsec = ms % 1000 * 1000000,
	};

	if (timer_settime(watchdog_timer, 0, &it, NULL))
		die("timer_settime: %s", strerror(errno));
}

static int cmp_s64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return (x > y) - (x < y);
}

static void print_lat(const char *name, const int64_t *s, unsigned int idx,
		      unsigned int n, unsigned int tsc_khz)
{
	if (n)
		printf(" lat_%s_us=%.2f", name, s[idx] * 1000.0 / tsc_khz);
	else
		printf(" lat_%s_us=na", name);
}

static void dump_sample(const char *tag, unsigned int i, unsigned int n,
			long long v)
{
	printf("%s%lld%s", i % DUMP_PER_LINE ? " " : tag, v,
	       i % DUMP_PER_LINE == DUMP_PER_LINE - 1 || i == n - 1 ? "\n" : "");
}

/*
 * --dump: "SAMPLES tsc_khz=K lat=N arm=M", then every sample in TSC ticks,
 * in the order taken, DUMP_PER_LINE to a line: N latencies on "LAT" lines
 * and M arm costs on "ARM" lines.
 */
static void dump_samples(const struct vcpu *vcpu, unsigned int n)
{
	const struct vm *vm = vcpu->vm;
	const struct guest_data *data = vcpu_data(vcpu);
	const int64_t *lat = vcpu_samples(vcpu);
	const uint32_t *arm = (const uint32_t *)(vm->mem + vcpu->base +
						 data->arm_samples);
	unsigned int arms = data->arms < vm->o->count ? data->arms : vm->o->count;
	unsigned int i;

	printf("SAMPLES tsc_khz=%u lat=%u arm=%u\n", vm->tsc_khz, n, arms);
	for (i = 0; i < n; i++)
		dump_sample("LAT ", i, n, lat[i]);
	for (i = 0; i < arms; i++)
		dump_sample("ARM ", i, arms, arm[i]);
}

/* The vCPU's --dump lines and its RESULT line, together. */
static void print_result(const struct vcpu *vcpu, int cpu_start)
{
	const struct vm *vm = vcpu->vm;
	const struct options *o = vm->o;
	struct guest_data *data = vcpu_data(vcpu);
	unsigned int n = data->received < o->count ? data->received : o->count;
	int64_t *s = vcpu_samples(vcpu);

	flockfile(stdout);
	if (o->dump)
		dump_samples(vcpu, n);
	qsort(s, n, sizeof(*s), cmp_s64);
	printf("RESULT mode=%s interval_us=%lu armed=%lu received=%u "
	       "spurious=%u cpu_start=%d cpu_end=%d",
	       mode_names[o->mode], o->interval_us, o->count, data->received,
	       data->spurious, cpu_start, sched_getcpu());
	print_lat("min", s, 0, n, vm->tsc_khz);
	print_lat("med", s, n ? (n - 1) / 2 : 0, n, vm->tsc_khz);
	print_lat("p99", s, n ? (99 * n + 99) / 100 - 1 : 0, n, vm->tsc_khz);
	print_lat("max", s, n ? n - 1 : 0, n, vm->tsc_khz);
	printf(" vcpu=%u\n", vcpu->id);
	fflush(stdout);
	funlockfile(stdout);
}

/* A vCPU's thread: runs it to completion; 0 if every expiry came. */
static int run_vcpu(struct vcpu *vcpu)
{
	const struct options *o = vcpu->vm->o;
	struct guest_data *data = vcpu_data(vcpu);
	struct kvm_run *run = vcpu->run;
	long timeout_ms = o->interval_us * 20 / 1000;
	int cpu_start;
	uint32_t val;

	if (timeout_ms < 2000)
		timeout_ms = 2000;
	watchdog_init(run);

	if (vcpu->cpu >= 0)
		set_cpu(vcpu->cpu);
	cpu_start = sched_getcpu();
	printf("VCPU id=%u tid=%d\n", vcpu->id, gettid());
	fflush(stdout);
	watchdog_arm(timeout_ms);

	for (;;) {
		if (ioctl(vcpu->fd, KVM_RUN, 0) && errno != EINTR)
			die("KVM_RUN: %s", strerror(errno));
		if (watchdog_fired) {
			fprintf(stderr,
				"lapic-timer: watchdog: vCPU %u: no progress for %ld ms\n",
				vcpu->id, timeout_ms);
			print_result(vcpu, cpu_start);
			return 1;
		}

		switch (run->exit_reason) {
		case KVM_EXIT_INTR:
			continue;
		case KVM_EXIT_IO:
			break;
		case KVM_EXIT_SHUTDOWN:
			die("guest shut down (triple fault)");
		case KVM_EXIT_FAIL_ENTRY:
			die("KVM_EXIT_FAIL_ENTRY: reason 0x%llx",
			    run->fail_entry.hardware_entry_failure_reason);
		case KVM_EXIT_INTERNAL_ERROR:
			die("KVM_EXIT_INTERNAL_ERROR: suberror %u",
			    run->internal.suberror);
		default:
			die("unexpected exit reason %u", run->exit_reason);
		}

		if (run->io.direction != KVM_EXIT_IO_OUT || run->io.size != 4)
			die("unexpected I/O on port 0x%x", run->io.port);
		memcpy(&val, (char *)run + run->io.data_offset, sizeof(val));

		switch (run->io.port) {
		case PORT_PROGRESS:
			watchdog_arm(timeout_ms);
			if (o->migrate_to >= 0 && val == o->migrate_after) {
				set_cpu(o->migrate_to);
				printf("MIGRATED to=%d after=%u vcpu=%u\n",
				       o->migrate_to, val, vcpu->id);
				fflush(stdout);
			}
			break;
		case PORT_DONE:
			watchdog_arm(0);
			print_result(vcpu, cpu_start);
			return data->received == o->count ? 0 : 1;
		case PORT_UNEXPECTED:
			die("guest took unexpected vector %u (received=%u, vCPU %u)",
			    val, data->received, vcpu->id);
		default:
			die("unexpected OUT to port 0x%x", run->io.port);
		}
	}
}

static void *vcpu_thread(void *arg)
{
	struct vcpu *vcpu = arg;

	vcpu->rc = run_vcpu(vcpu);
	return NULL;
}

/* vCPU 0 on this thread, the others each on a thread of its own. */
static int run_guest(struct vm *vm)
{
	struct sigaction sa = { .sa_handler = watchdog_handler };
	unsigned int i;
	int rc, err;

	if (sigaction(SIGALRM, &sa, NULL))
		die("sigaction: %s", strerror(errno));
	for (i = 1; i < vm->nr_vcpus; i++) {
		err = pthread_create(&vm->vcpus[i].thread, NULL, vcpu_thread,
				     &vm->vcpus[i]);
		if (err)
			die("pthread_create: %s", strerror(err));
	}
	rc = run_vcpu(&vm->vcpus[0]);
	for (i = 1; i < vm->nr_vcpus; i++) {
		err = pthread_join(vm->vcpus[i].thread, NULL);
		if (err)
			die("pthread_join: %s", strerror(err));
		if (vm->vcpus[i].rc)
			rc = vm->vcpus[i].rc;
	}
	return rc;
}

int main(int argc, char **argv)
{
	struct options o;
	static struct vm vm;

	parse_args(argc, argv, &o);

	if (o.idle) {
		create_vm(&vm, 1, MEM_ALIGN, 0);
		printf("IDLE ready\n");
		fflush(stdout);
		for (;;)
			pause();
	}

	/*
	 * Each vCPU's region: room for int64_t latency[count] at SAMPLES_GPA
	 * and arm_cost[count] after it, rounded up to 2 MiB.
	 */
	create_vm(&vm, o.vcpus, (SAMPLES_GPA +
				 o.count * (sizeof(int64_t) + sizeof(uint32_t)) +
				 MEM_ALIGN) & ~(MEM_ALIGN - 1),
		  o.mode == MODE_STIMER);
	if (o.mode == MODE_TSCDEADLINE && !vm.tsc_deadline)
		die("KVM does not support the TSC deadline timer");
	setup_guest(&vm, &o);
	return run_guest(&vm);
}
