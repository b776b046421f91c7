/*
 * For test code that forks: the child dies with the test process, so that
 * a test binary that crashes, fails an assertion on its way out or is
 * killed by tests/run.sh's timeout leaves no livemig or QEMU process behind.
 */
#ifndef LIVEMIG_TEST_CHILD_H
#define LIVEMIG_TEST_CHILD_H

#include <signal.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <unistd.h>

/*
 * Call in the child right after fork(), with the parent's pid as getpid()
 * returned it before the fork. The kernel then sends SIGKILL when the
 * parent goes, also across execve. A parent that went already, between the
 * fork and the prctl, would never deliver it: the child was reparented and
 * getppid() tells, so it exits at once. The signal follows the thread that
 * forked, not the process: fork from a thread that outlives the child (the
 * tests fork from their main thread).
 */
static inline void lm_test_die_with_parent(pid_t parent)
{
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
		_exit(125);
}

#endif
