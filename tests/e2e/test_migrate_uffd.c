/*
 * End to end: a 256 MiB region of ordinary process memory, written by a
 * writer thread at ~50 MB/s (random pages, content that says which page it
 * is), migrated live over TCP loopback with the userfaultfd dirty source to
 * a receiver in another process.
 *
 * The verdict does not trust the engine's own digest: the receiver process,
 * once it has read COMMIT, hashes every destination page with XXH3-64 and
 * sends the hashes back over a pipe; the parent hashes its paused source
 * the same way and compares page by page. It also checks that the digest
 * check passed on the receiver, and the page contents (each written page
 * starts with its own index). Once uncompressed, once with zstd.
 *
 * Waits have generous deadlines that only turn a hang into a failure; no
 * assertion depends on how fast anything runs.
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xxhash.h>
#include <cmocka.h>

#include "livemig/migrate.h"
#include "support/child.h"
#include "support/dirty_check.h"
#include "support/mig_helpers.h"

#define NPAGES 65536u /* 256 MiB */
#define RATE (50u << 20)
#define DEADLINE_S 120

/* What the receiver process sends back before the page hashes. */
struct verdict {
	int32_t err;
	int32_t finish_calls;
	int32_t finish_err;
	int32_t digest_ok;
	uint64_t caps;
	uint64_t pages_data, pages_zero, rounds;
	uint64_t npages;
	char error[256];
};

static int write_all(int fd, const void *p, size_t n)
{
	const uint8_t *b = p;
	while (n) {
		ssize_t w = write(fd, b, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		b += w;
		n -= (size_t)w;
	}
	return 0;
}

static int read_all(int fd, void *p, size_t n)
{
	uint8_t *b = p;
	while (n) {
		ssize_t r = read(fd, b, n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		b += r;
		n -= (size_t)r;
	}
	return 0;
}

static void hash_pages(const void *mem, uint64_t npages, uint64_t *out)
{
	const uint8_t *p = mem;
	for (uint64_t i = 0; i < npages; i++)
		out[i] = XXH3_64bits(p + i * LM_PAGE_SIZE, LM_PAGE_SIZE);
}

/* The receiver process: accept one connection, receive, report. Never
 * returns. */
static void receiver_child(int lfd, int report_fd, bool zstd)
{
	struct verdict v = { 0 };
	struct lm_test_dest d = { 0 };
	struct lm_receive_stats st;
	struct lm_receive_params p = { .idle_timeout_ms = 60000 };
	alarm(DEADLINE_S);
	if (!zstd)
		p.caps_disabled = LM_CAP_ZSTD; /* this side also says no */
	int fd = lm_transport_accept(lfd, 60000);
	close(lfd);
	if (fd < 0) {
		v.err = fd;
		snprintf(v.error, sizeof(v.error), "accept: %s", lm_strerror(fd));
		(void)write_all(report_fd, &v, sizeof(v));
		_exit(2);
	}
	v.err = lm_migrate_receive(fd, &p, &lm_test_dest_ops, &d, &st);
	close(fd);
	v.finish_calls = d.finish_calls;
	v.finish_err = d.finish_err;
	v.digest_ok = st.digest_ok;
	v.caps = st.caps;
	v.pages_data = st.pages_data;
	v.pages_zero = st.pages_zero;
	v.rounds = st.rounds;
	snprintf(v.error, sizeof(v.error), "%s", st.error);
	uint64_t *h = NULL;
	if (v.err == 0 && d.n == 1 && d.r[0].npages == NPAGES) {
		v.npages = NPAGES;
		h = malloc(NPAGES * sizeof(*h));
		if (!h)
			_exit(3);
		hash_pages(d.r[0].host, NPAGES, h);
	}
	if (write_all(report_fd, &v, sizeof(v)) || (h && write_all(report_fd, h, NPAGES * sizeof(*h))))
		_exit(4);
	free(h);
	lm_test_dest_free(&d);
	_exit(v.err ? 1 : 0);
}

static void migrate_once(bool zstd)
{
	if (lm_uffd_supported()) {
		print_message("userfaultfd write-protect tracking is not available here\n");
		skip();
	}
	struct lm_mem_region r = { 0, NPAGES, lm_test_map(NPAGES) };
	assert_non_null(r.host);
	/* Data in the first quarter, explicitly written zero pages in the
	 * second, the rest never touched until the writer gets there. */
	uint64_t rs = zstd ? 17 : 7;
	for (uint64_t pg = 0; pg < NPAGES / 4; pg++) {
		uint64_t *w = (uint64_t *)((uint8_t *)r.host + pg * LM_PAGE_SIZE);
		w[0] = pg;
		/* Half of each page compressible, half noise. */
		for (int k = 256; k < 512; k++)
			w[k] = lm_test_rand(&rs);
	}
	memset((uint8_t *)r.host + (NPAGES / 4) * LM_PAGE_SIZE, 0, (NPAGES / 4) * LM_PAGE_SIZE);

	struct lm_uri u;
	assert_int_equal(lm_uri_parse("tcp:127.0.0.1:0", &u), 0);
	int lfd = lm_transport_listen(&u);
	assert_true(lfd >= 0);
	int port = lm_transport_local_port(lfd);
	assert_true(port > 0);
	snprintf(u.port, sizeof(u.port), "%d", port);
	int rep[2];
	assert_int_equal(pipe(rep), 0);

	/* Fork before any thread exists in this process. */
	pid_t parent = getpid();
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		lm_test_die_with_parent(parent);
		close(rep[0]);
		receiver_child(lfd, rep[1], zstd);
	}
	close(lfd);
	close(rep[1]);

	struct lm_dirty_source *src;
	assert_int_equal(lm_uffd_source_new(&src), 0);
	struct lm_test_writer w = { .regions = &r, .n = 1, .bytes_per_sec = RATE, .seed = zstd ? 23 : 29 };
	assert_int_equal(lm_test_writer_start(&w), 0);
	/* Let the writer get going before the migration starts. */
	usleep(100 * 1000);

	int fd = lm_transport_connect(&u);
	assert_true(fd >= 0);
	struct lm_migrate_params p;
	lm_migrate_params_default(&p);
	p.compress = zstd;
	p.result_timeout_ms = 60000;
	/* A tight limit makes it run a few live rounds with the writer going,
	 * which is what exercises the dirty tracking; it always ends in a
	 * switchover (max_rounds, then switch over anyway). */
	p.downtime_limit_ms = 2;
	p.max_rounds = 5;
	struct lm_migrate_stats st;
	uint64_t before = lm_test_writer_count(&w);
	int err = lm_migrate_send(fd, &r, 1, src, &lm_test_writer_ops, &w, &p, &st);
	close(fd);

	struct verdict v;
	bool got = read_all(rep[0], &v, sizeof(v)) == 0;
	if (err || !got || v.err)
		print_message("sender: %s\nreceiver: %s\n", err ? st.error : "ok", got ? v.error : "(no report)");
	assert_int_equal(err, 0);
	assert_true(got);
	assert_int_equal(v.err, 0);

	/* The source is paused (the migration completed); compare it as is. */
	assert_int_equal(st.status, LM_MIG_COMPLETED);
	assert_true(__atomic_load_n(&w.paused, __ATOMIC_ACQUIRE));
	uint64_t writes = lm_test_writer_count(&w);
	assert_true(writes > before); /* it was live during the migration */
	assert_int_equal(v.npages, NPAGES);
	uint64_t *theirs = malloc(NPAGES * sizeof(uint64_t)), *ours = malloc(NPAGES * sizeof(uint64_t));
	assert_non_null(theirs);
	assert_non_null(ours);
	assert_int_equal(read_all(rep[0], theirs, NPAGES * sizeof(uint64_t)), 0);
	hash_pages(r.host, NPAGES, ours);
	uint64_t mismatch = 0, first_bad = UINT64_MAX, bad_content = 0;
	for (uint64_t i = 0; i < NPAGES; i++) {
		if (ours[i] != theirs[i]) {
			mismatch++;
			if (first_bad == UINT64_MAX)
				first_bad = i;
		}
		/* Every page is zero, or starts with its own index. */
		uint64_t w0 = ((const uint64_t *)((const uint8_t *)r.host + i * LM_PAGE_SIZE))[0];
		if (w0 != i && !(w0 == 0 && lm_page_is_zero((const uint8_t *)r.host + i * LM_PAGE_SIZE)))
			bad_content++;
	}
	int status = 0;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);

	print_message("%s: %llu writes during the migration, %llu rounds, downtime %.1f ms, %llu MB on the wire, "
		      "%llu data + %llu zero pages sent, %llu skipped\n",
		      zstd ? "zstd" : "raw", (unsigned long long)(writes - before), (unsigned long long)st.rounds,
		      (double)st.downtime_us / 1000, (unsigned long long)(st.transferred / 1000000),
		      (unsigned long long)st.normal, (unsigned long long)st.duplicate, (unsigned long long)st.skipped);
	if (mismatch)
		print_message("%llu pages differ, first %llu\n", (unsigned long long)mismatch,
			      (unsigned long long)first_bad);
	assert_int_equal(mismatch, 0);
	assert_int_equal(bad_content, 0);
	assert_true(v.digest_ok);
	assert_int_equal(v.finish_calls, 1);
	assert_int_equal(v.finish_err, 0);
	assert_true(st.skipped > 0); /* never-touched pages were not sent */
	assert_true(st.duplicate > 0);
	if (zstd) {
		assert_true(v.caps & LM_CAP_ZSTD);
		/* Half of every data page is zero: compression must show. */
		assert_true(st.transferred < st.normal * LM_PAGE_SIZE);
	} else {
		assert_false(v.caps & LM_CAP_ZSTD);
		assert_true(st.transferred > st.normal * LM_PAGE_SIZE);
	}

	free(theirs);
	free(ours);
	close(rep[0]);
	__atomic_store_n(&w.pause_req, 0, __ATOMIC_RELEASE);
	lm_test_writer_stop(&w);
	lm_dirty_source_free(src);
	munmap(r.host, (size_t)NPAGES * LM_PAGE_SIZE);
}

static void test_uffd_tcp_raw(void **state)
{
	migrate_once(false);
}

static void test_uffd_tcp_zstd(void **state)
{
	migrate_once(true);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_uffd_tcp_raw),
		cmocka_unit_test(test_uffd_tcp_zstd),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
