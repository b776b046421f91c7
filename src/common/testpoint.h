/*
 * Test points: named places in the switchover where the e2e tests kill the
 * process (`LIVEMIG_TEST_KILL_AT=NAME`), to prove what each side does when
 * the other dies there, or stall it once (`LIVEMIG_TEST_STALL_AT=NAME:MS`),
 * and in-process tests cut the connection (or stall:
 * sender-in-pause, right after the workload stopped). The points:
 * sender-in-pause, receiver-before-result, receiver-after-result, receiver-after-commit,
 * receiver-after-committed, sender-after-result, sender-after-commit,
 * sender-after-committed. Compiled in only with -DLM_TEST_HOOKS, which the
 * test builds set (build/hooks/livemig, the ASan unit-test library); in the
 * product lm__test_point() is an empty inline function.
 */
#ifndef LIVEMIG_COMMON_TESTPOINT_H
#define LIVEMIG_COMMON_TESTPOINT_H

#ifdef LM_TEST_HOOKS
void lm__test_point(const char *name);
/* In-process tests: fn(name, arg) is called at every test point instead
 * (NULL: back to the environment variable). */
void lm__test_point_set(void (*fn)(const char *name, void *arg), void *arg);
#else
static inline void lm__test_point(const char *name)
{
	(void)name;
}
#endif

#endif
