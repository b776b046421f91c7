/* Test points (see testpoint.h): only in builds with -DLM_TEST_HOOKS. */
#ifdef LM_TEST_HOOKS
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/testpoint.h"

static void (*point_fn)(const char *name, void *arg);
static void *point_arg;

void lm__test_point_set(void (*fn)(const char *name, void *arg), void *arg)
{
	__atomic_store_n(&point_arg, arg, __ATOMIC_RELEASE);
	__atomic_store_n(&point_fn, fn, __ATOMIC_RELEASE);
}

void lm__test_point(const char *name)
{
	void (*fn)(const char *, void *) = __atomic_load_n(&point_fn, __ATOMIC_ACQUIRE);
	if (fn) {
		fn(name, __atomic_load_n(&point_arg, __ATOMIC_ACQUIRE));
		return;
	}
	/* LIVEMIG_TEST_STALL_AT=NAME:MS: sleep MS ms there, the first time. */
	const char *st = getenv("LIVEMIG_TEST_STALL_AT");
	size_t nl = strlen(name);
	static int stalled;
	if (st && !strncmp(st, name, nl) && st[nl] == ':' && !__atomic_exchange_n(&stalled, 1, __ATOMIC_SEQ_CST)) {
		long ms = strtol(st + nl + 1, NULL, 10);
		char line[128];
		int n = snprintf(line, sizeof(line), "livemig test point: stalled %ld ms at %s\n", ms, name);
		if (n > 0)
			(void)!write(STDERR_FILENO, line, (size_t)n);
		if (ms > 0)
			usleep((useconds_t)ms * 1000);
	}
	const char *at = getenv("LIVEMIG_TEST_KILL_AT");
	if (!at || strcmp(at, name) != 0)
		return;
	/* Say where, so that a test can tell the kill happened here. */
	char line[128];
	int n = snprintf(line, sizeof(line), "livemig test point: killed at %s\n", name);
	if (n > 0)
		(void)!write(STDERR_FILENO, line, (size_t)n);
	raise(SIGKILL);
}
#else
/* ISO C wants a translation unit to declare something. */
typedef int lm__testpoint_unused;
#endif
