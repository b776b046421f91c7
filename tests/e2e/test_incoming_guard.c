/*
 * End-to-end: `livemig incoming` cannot be held by an idle peer, takes one
 * migration at a time, and neither it nor `livemig run` removes what is not
 * theirs.
 *
 * - A connection that sends nothing is dropped after --handshake-timeout
 *   (2 s here) and incoming waits on; a real migration that comes while
 *   another idle connection is open succeeds.
 * - A second migration attempted while one is being received is refused
 *   ("another migration is in progress"); its source keeps running, and the
 *   first migration completes.
 * - Paths: --listen unix:PATH and --control PATH refuse a regular file
 *   (left intact) and another process's live socket (left working), and
 *   replace a stale socket; the sockets they create are mode 0600 and are
 *   removed at exit.
 *
 * Deadlines only turn a hang into a failure; nothing here judges timing.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <cmocka.h>

#include "support/live.h"
#include "support/live_assert.h"

static int group_setup(void **state)
{
	lm_live_setup("incoming-guard");
	return 0;
}

#define SMALL_GUEST "workload=hotset wss=4M rate=1M verify=1 progress=200"

/* The peer closed fd (EOF or reset) within deadline_s. */
static bool closed_by_peer(int fd, double deadline_s)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	if (poll(&p, 1, (int)(deadline_s * 1000)) <= 0)
		return false;
	char b[64];
	ssize_t n = recv(fd, b, sizeof(b), MSG_DONTWAIT);
	return n == 0 || (n < 0 && errno == ECONNRESET);
}

/* A socket file nobody listens on: bound, then closed without unlink. */
static void make_stale_socket(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	assert_true(strlen(path) < sizeof(sa.sun_path));
	memcpy(sa.sun_path, path, strlen(path) + 1);
	unlink(path);
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(fd);
	struct stat st;
	assert_int_equal(lstat(path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void expect_mode_0600(const char *path)
{
	struct stat st;
	assert_int_equal(lstat(path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	if ((st.st_mode & 0777) != 0600)
		fprintf(stderr, "%s has mode %o\n", path, st.st_mode & 0777);
	assert_int_equal(st.st_mode & 0777, 0600);
}

/* The one line of out that holds needle (it must be there). */
static void expect_line(const char *out, const char *needle)
{
	char line[1024] = "";
	if (lm_live_count_file(out, needle, line, sizeof(line)) < 1) {
		fprintf(stderr, "no line with \"%s\" in:\n", needle);
		lm_live_dump(out, 4000);
	}
	assert_true(lm_live_count_file(out, needle, NULL, 0) >= 1);
	fprintf(stderr, "      %s\n", line);
}

/* ---- the handshake timeout -------------------------------------------------- */

static void test_idle_then_migration(void **state)
{
	if (!lm_live_ready())
		skip();
	struct lm_live_vm src, dst;
	lm_live_expect_running(&src, "src", "128M", SMALL_GUEST, NULL, 1);
	const char *const in_opts[] = {"--handshake-timeout", "2", NULL};
	assert_int_equal(lm_live_incoming(&dst, "dst", "tcp", in_opts), 0);

	/* A peer that connects and says nothing is dropped... */
	int idle = lm_live_tcp_connect(dst.uri);
	assert_true(idle >= 0);
	char line[512];
	assert_true(lm_live_wait_line(dst.out, "dropped a connection that sent nothing for 2 s", 0,
				      line, sizeof(line), dst.pid, LM_LIVE_DEADLINE_S));
	fprintf(stderr, "      %s\n", line);
	assert_true(closed_by_peer(idle, LM_LIVE_DEADLINE_S));
	close(idle);

	/* ... and one open while a real migration comes does not hold it. */
	idle = lm_live_tcp_connect(dst.uri);
	assert_true(idle >= 0);
	struct lm_live_mig m;
	int rc = lm_live_migrate(&m, &src, dst.uri, NULL);
	if (rc != 0)
		fprintf(stderr, "      migrate: exit %d: %s\n", rc, m.errtext);
	assert_int_equal(rc, 0);
	lm_live_mig_free(&m);
	lm_live_expect_switchover(&src, &dst, "writes=");
	assert_true(closed_by_peer(idle, LM_LIVE_DEADLINE_S));
	close(idle);
	assert_int_equal(lm_live_count_file(dst.out, "migration failed", NULL, 0), 0);
	assert_int_equal(lm_live_vm_quit(&dst), 0);
}

/* ---- one migration at a time ------------------------------------------------- */

static void test_second_migration_refused(void **state)
{
	if (!lm_live_ready())
		skip();
	struct lm_live_vm src1, src2, dst;
	lm_live_expect_running(&src1, "src1", "256M",
			       "workload=hotset wss=32M rate=2M verify=1 progress=200", NULL, 1);
	lm_live_expect_running(&src2, "src2", "64M", SMALL_GUEST, NULL, 1);
	assert_int_equal(lm_live_incoming(&dst, "dst", "tcp", NULL), 0);

	/* The first, slow enough (a capped link) to be in progress... */
	static const char *const slow[] = {"--max-bandwidth", "10M", NULL};
	struct lm_live_mig m1, m2;
	assert_int_equal(lm_live_mig_start(&m1, &src1, dst.uri, slow), 0);
	assert_true(lm_live_wait_migration_active(&src1, 1 << 20));

	/* ... when the second comes: refused, its guest runs on. */
	int rc2 = lm_live_migrate(&m2, &src2, dst.uri, NULL);
	fprintf(stderr, "      second migrate: exit %d: %s%s", rc2, m2.errtext,
		strchr(m2.errtext, '\n') ? "" : "\n");
	assert_int_not_equal(rc2, 0);
	assert_true(strstr(m2.errtext, "another migration is in progress") ||
		    strstr(m2.json, "another migration is in progress"));
	lm_live_mig_free(&m2);
	lm_live_expect_survived(&src2, "writes=");
	expect_line(dst.out, "refused a second sender: another migration is in progress");

	/* The first never noticed. */
	int rc1 = lm_live_mig_finish(&m1);
	if (rc1 != 0)
		fprintf(stderr, "      first migrate: exit %d: %s\n", rc1, m1.errtext);
	assert_int_equal(rc1, 0);
	lm_live_mig_free(&m1);
	lm_live_expect_switchover(&src1, &dst, "writes=");
	assert_int_equal(lm_live_count_file(dst.out, "migration failed", NULL, 0), 0);
	assert_int_equal(lm_live_vm_quit(&dst), 0);
	assert_int_equal(lm_live_vm_quit(&src2), 0);
}

/* ---- --listen unix:PATH ---------------------------------------------------------- */

static void test_listen_paths(void **state)
{
	if (!lm_live_ready())
		skip();
	/* A regular file: refused, left as it was. */
	const char *file = lm_live_path("file.mig");
	char listen[300];
	write_file(file, "keep me\n");
	snprintf(listen, sizeof(listen), "unix:%s", file);
	const char *out = lm_live_path("file.out");
	const char *const a1[] = {"incoming", "--listen", listen, NULL};
	pid_t pid = lm_live_expect_spawn(out, a1);
	assert_int_equal(lm_live_wait(pid, LM_LIVE_DEADLINE_S), 1);
	expect_line(out, "is a regular file, not a stale socket: refusing to replace it");
	char *t = lm_live_slurp(file);
	assert_string_equal(t, "keep me\n");
	free(t);

	/* Another incoming's live socket: refused, and that one still works. */
	struct lm_live_vm a, src;
	assert_int_equal(lm_live_incoming(&a, "a", "unix", NULL), 0);
	expect_mode_0600(a.uri + 5);
	out = lm_live_path("b.out");
	const char *const a2[] = {"incoming", "--listen", a.uri, "--control", lm_live_path("b.sock"),
				  NULL};
	pid = lm_live_expect_spawn(out, a2);
	assert_int_equal(lm_live_wait(pid, LM_LIVE_DEADLINE_S), 1);
	expect_line(out, "is a live socket (another process accepts connections on it): refusing");
	assert_int_equal(access(lm_live_path("b.sock"), F_OK), -1); /* b's own socket is gone */
	lm_live_expect_running(&src, "src", "64M", SMALL_GUEST, NULL, 1);
	struct lm_live_mig m;
	int rc = lm_live_migrate(&m, &src, a.uri, NULL);
	if (rc != 0)
		fprintf(stderr, "      migrate: exit %d: %s\n", rc, m.errtext);
	assert_int_equal(rc, 0);
	lm_live_mig_free(&m);
	lm_live_expect_switchover(&src, &a, "writes=");
	/* Received: the listening socket is closed and its file removed. */
	assert_int_equal(access(a.uri + 5, F_OK), -1);
	assert_int_equal(lm_live_vm_quit(&a), 0);

	/* A stale socket: replaced. */
	const char *stale = lm_live_path("stale.mig");
	make_stale_socket(stale);
	snprintf(listen, sizeof(listen), "unix:%s", stale);
	out = lm_live_path("stale.out");
	const char *const a3[] = {"incoming", "--listen", listen, NULL};
	pid = lm_live_expect_spawn(out, a3);
	char line[512];
	assert_true(lm_live_wait_line(out, "listening on unix:", 0, line, sizeof(line), pid,
				      LM_LIVE_DEADLINE_S));
	expect_mode_0600(stale);
	lm_live_kill(pid, SIGTERM);
	assert_int_equal(lm_live_wait(pid, LM_LIVE_DEADLINE_S), 1);
	assert_int_equal(access(stale, F_OK), -1);
}

/* ---- --control PATH ------------------------------------------------------------- */

static pid_t run_with_control(const char *name, const char *control)
{
	const char *const args[] = {"run",	 lm_live_guest(),		   "--mem", "64M",
				    "--append",	 "workload=idle progress=200",	   "--control",
				    control,	 "--console", lm_live_path("%s.console", name),
				    NULL};
	return lm_live_expect_spawn(lm_live_path("%s.out", name), args);
}

static void test_control_paths(void **state)
{
	if (!lm_live_ready())
		skip();
	/* A regular file: refused, left as it was. */
	const char *file = lm_live_path("file.sock");
	write_file(file, "keep me too\n");
	pid_t pid = run_with_control("cfile", file);
	assert_int_equal(lm_live_wait(pid, LM_LIVE_DEADLINE_S), 1);
	expect_line(lm_live_path("cfile.out"),
		    "is a regular file, not a stale socket: refusing to replace it");
	char *t = lm_live_slurp(file);
	assert_string_equal(t, "keep me too\n");
	free(t);

	/* Another VM's live control socket: refused, and it still answers
	 * (its file still there after the refused one exited). */
	struct lm_live_vm a;
	assert_int_equal(lm_live_run(&a, "ca", "64M", "workload=idle progress=200", NULL), 0);
	struct lm_live_ctl *c = lm_live_expect_vm_ctl(&a);
	lm_live_expect_status(c, "running");
	expect_mode_0600(a.sock);
	pid = run_with_control("clive", a.sock);
	assert_int_equal(lm_live_wait(pid, LM_LIVE_DEADLINE_S), 1);
	expect_line(lm_live_path("clive.out"),
		    "is a live socket (another process accepts connections on it): refusing");
	expect_mode_0600(a.sock);
	lm_live_vm_ctl_close(&a);
	lm_live_expect_status(lm_live_expect_vm_ctl(&a), "running");
	assert_int_equal(lm_live_vm_quit(&a), 0);
	assert_int_equal(access(a.sock, F_OK), -1);

	/* A stale socket: replaced; `incoming --control` takes it as `run`
	 * does. */
	const char *stale = lm_live_path("stale.sock");
	make_stale_socket(stale);
	pid = run_with_control("cstale", stale);
	struct lm_live_ctl sc;
	lm_live_expect_ctl_open(&sc, stale, LM_LIVE_DEADLINE_S);
	lm_live_expect_status(&sc, "running");
	expect_mode_0600(stale);
	lm_live_expect_ok(&sc, "{\"execute\":\"quit\"}", NULL, 0);
	lm_live_ctl_close(&sc);
	assert_int_equal(lm_live_wait(pid, LM_LIVE_DEADLINE_S), 0);
	assert_int_equal(access(stale, F_OK), -1);

	make_stale_socket(stale);
	struct lm_live_vm in;
	const char *const in_opts[] = {"--control", stale, NULL};
	/* lm_live_incoming passes its own --control first; the last wins. */
	assert_int_equal(lm_live_incoming(&in, "cin", "tcp", in_opts), 0);
	lm_live_expect_ctl_open(&sc, stale, LM_LIVE_DEADLINE_S);
	lm_live_expect_status(&sc, "inmigrate");
	expect_mode_0600(stale);
	lm_live_ctl_close(&sc);
	lm_live_kill(in.pid, SIGTERM);
	assert_int_equal(lm_live_wait(in.pid, LM_LIVE_DEADLINE_S), 1);
	assert_int_equal(access(stale, F_OK), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(test_idle_then_migration, lm_live_test_teardown),
	    cmocka_unit_test_teardown(test_second_migration_refused, lm_live_test_teardown),
	    cmocka_unit_test_teardown(test_listen_paths, lm_live_test_teardown),
	    cmocka_unit_test_teardown(test_control_paths, lm_live_test_teardown),
	};
	return cmocka_run_group_tests(tests, group_setup, lm_live_group_teardown);
}
