// SPDX-License-Identifier: GPL-2.0
/*
 * timerfd-loop - a host hrtimer workload without KVM, for the benchmark.
 *
 * Arms a one-shot CLOCK_MONOTONIC timerfd COUNT times, each time waiting
 * for it to expire, and records the TSC ticks each arming syscall took
 * (timerfd_settime(), which queues an unpinned hrtimer like KVM's LAPIC
 * timer).  Prints them in lapic-timer --dump's format: "SAMPLES arm=N",
 * then N values on "ARM" lines, 16 to a line.
 *
 * Exit status: 0 on success, 2 on error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <unistd.h>
#include <x86intrin.h>

#define PER_LINE		16
#define MAX_COUNT		1000000

static void __attribute__((noreturn)) die(const char *what)
{
	fprintf(stderr, "timerfd-loop: %s: %s\n", what, strerror(errno));
	exit(2);
}

static void __attribute__((noreturn)) usage(void)
{
	fprintf(stderr,
		"usage: timerfd-loop [--interval-us U] [--count N] [--cpu C]\n");
	exit(2);
}

static unsigned long parse_ulong(const char *s, unsigned long min,
				 unsigned long max)
{
	unsigned long v;
	char *end;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end || *s == '-' || v < min || v > max)
		usage();
	return v;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "interval-us", required_argument, NULL, 'i' },
		{ "count", required_argument, NULL, 'n' },
		{ "cpu", required_argument, NULL, 'c' },
		{ NULL, 0, NULL, 0 }
	};
	unsigned long interval_us = 1000, count = 1000, i;
	struct itimerspec its = { 0 };
	uint64_t expirations;
	uint32_t *ticks;
	cpu_set_t set;
	int c, fd;

	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'i':
			interval_us = parse_ulong(optarg, 1, 1000000);
			break;
		case 'n':
			count = parse_ulong(optarg, 1, MAX_COUNT);
			break;
		case 'c':
			CPU_ZERO(&set);
			CPU_SET(parse_ulong(optarg, 0, CPU_SETSIZE - 1), &set);
			if (sched_setaffinity(0, sizeof(set), &set))
				die("sched_setaffinity");
			break;
		default:
			usage();
		}
	}
	if (optind != argc)
		usage();

	ticks = calloc(count, sizeof(*ticks));
	if (!ticks)
		die("calloc");
	fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
	if (fd < 0)
		die("timerfd_create");
	its.it_value.tv_sec = interval_us / 1000000;
	its.it_value.tv_nsec = interval_us % 1000000 * 1000;

	for (i = 0; i < count; i++) {
		uint64_t t0 = __rdtsc();

		if (timerfd_settime(fd, 0, &its, NULL))
			die("timerfd_settime");
		ticks[i] = __rdtsc() - t0;
		if (read(fd, &expirations, sizeof(expirations)) !=
		    sizeof(expirations))
			die("read timerfd");
	}

	printf("SAMPLES arm=%lu\n", count);
	for (i = 0; i < count; i++)
		printf("%s%u%s", i % PER_LINE ? " " : "ARM ", ticks[i],
		       i % PER_LINE == PER_LINE - 1 || i == count - 1 ?
		       "\n" : "");
	return 0;
}
