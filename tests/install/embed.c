/* A program a VMM author could write against the installed liblivemig:
 * build with `cc embed.c $(pkg-config --cflags --libs livemig)`. It syncs
 * a dirty-log word into a bitmap, then migrates 64 pages over a socketpair
 * and checks they arrived. Prints "embed ok VERSION" and exits 0. */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS under -std=c11 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <livemig/bitmap.h>
#include <livemig/migrate.h>
#include <livemig/version.h>

#define NPAGES 64
static void *dst_mem;
static int nop(void *ctx) { return 0; }
static int setup(void *ctx, const lm_stream_layout *l, struct lm_mem_region *out)
{
	dst_mem = mmap(NULL, NPAGES * LM_PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	out[0].host = dst_mem;
	return dst_mem == MAP_FAILED ? -1 : 0;
}
static const struct lm_workload_ops ops = { .pause = nop, .resume = nop, .setup = setup };
static void *receive(void *fd) { return (void *)(long)lm_migrate_receive(*(int *)fd, NULL, &ops, NULL, NULL); }

int main(void)
{
	lm_bitmap b;
	uint64_t word = 0x5;
	if (lm_bitmap_init(&b, 128) || lm_bitmap_sync_from(&b, 64, &word, 64) != 2 || !lm_bitmap_test(&b, 66))
		return printf("bitmap: wrong\n"), 1;
	lm_bitmap_destroy(&b);
	char *mem = mmap(NULL, NPAGES * LM_PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	for (int i = 0; i < NPAGES; i += 3)
		memset(mem + i * LM_PAGE_SIZE, 'a' + i % 26, LM_PAGE_SIZE);
	struct lm_mem_region r = { 0, NPAGES, mem };
	struct lm_dirty_source *src;
	int fds[2];
	pthread_t t;
	void *rx;
	struct lm_migrate_stats st;
	if (lm_sim_source_new(LM_SIM_EXCHANGE, &src) || socketpair(AF_UNIX, SOCK_STREAM, 0, fds) ||
	    pthread_create(&t, NULL, receive, &fds[1]))
		return printf("setup failed\n"), 1;
	int err = lm_migrate_send(fds[0], &r, 1, src, &ops, NULL, NULL, &st);
	pthread_join(t, &rx);
	if (err || rx || memcmp(mem, dst_mem, NPAGES * LM_PAGE_SIZE))
		return printf("migrate: %s (%s)\n", lm_strerror(err), st.error), 1;
	lm_dirty_source_free(src);
	printf("embed ok %s %s\n", lm_version(), LM_VERSION_STRING);
	return 0;
}
