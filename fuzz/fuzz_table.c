/*
 * libFuzzer target for the destination side of the table stream:
 * lm_table_write must accept exactly the well-formed buffers, change nothing
 * when it refuses one, and apply an accepted one as a naive decoder would.
 * An accepted result is then read back through a source (full first pass)
 * into a second destination holding stale entries, which must end equal.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "livemig/table.h"

#define N 64
#define ES LM_TABLE_ENTRY_SIZE

static void initial(unsigned char *t)
{
	/* Some entries valid, some invalid, so invalidation shows. */
	for (unsigned i = 0; i < N; i++)
		memset(t + i * ES, (i % 3) ? (int)(i + 1) : 0, ES);
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static unsigned le16(const uint8_t *p)
{
	return (unsigned)(p[0] | p[1] << 8);
}

/* The reference: apply records one by one, refusing anything doubtful. */
static int naive_apply(unsigned char *t, const uint8_t *p, size_t len)
{
	size_t off = 0;
	while (off < len) {
		if (len - off < 8)
			return -1;
		uint64_t idx = le32(p + off);
		unsigned nv = le16(p + off + 4), ni = le16(p + off + 6);
		if (nv + ni == 0 || idx + nv + ni > N || len - off - 8 < (size_t)nv * ES)
			return -1;
		for (unsigned k = 0; k < nv; k++) {
			const uint8_t *e = p + off + 8 + (size_t)k * ES;
			unsigned char any = 0;
			for (unsigned b = 0; b < ES; b++)
				any |= e[b];
			if (!any)
				return -1;
			memcpy(t + (idx + k) * ES, e, ES);
		}
		memset(t + (idx + nv) * ES, 0, (size_t)ni * ES);
		off += 8 + (size_t)nv * ES;
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static unsigned char t[N * ES], ref[N * ES], back[N * ES], buf[100];
	lm_table_dst *dst, *dst2;
	lm_table_src *src;

	initial(t);
	initial(ref);
	if (lm_table_dst_open(&dst, t, N, 0))
		abort();
	int64_t r = lm_table_write(dst, data, size);
	int want = naive_apply(ref, data, size);
	if (r < 0) {
		/* Refused: nothing changed, a reason was given, the reference agrees. */
		initial(ref);
		if (want == 0 || memcmp(t, ref, sizeof(t)) || !lm_table_dst_error(dst)[0])
			abort();
		lm_table_dst_close(dst);
		return 0;
	}
	if (want != 0 || r != (int64_t)size || memcmp(t, ref, sizeof(t)))
		abort();
	lm_table_dst_close(dst);

	/* Round trip with small reads into a destination full of stale data. */
	memset(back, 0xee, sizeof(back));
	if (lm_table_src_open(&src, t, N, LM_TABLE_FULL_FIRST_PASS) || lm_table_dst_open(&dst2, back, N, 0))
		abort();
	size_t cap = LM_TABLE_READ_MIN + size % (sizeof(buf) - LM_TABLE_READ_MIN);
	for (;;) {
		int64_t got = lm_table_read(src, buf, cap);
		if (got < 0)
			abort();
		if (got == 0)
			break;
		if (lm_table_write(dst2, buf, (size_t)got) != got)
			abort();
	}
	if (memcmp(t, back, sizeof(t)))
		abort();
	lm_table_src_close(src);
	lm_table_dst_close(dst2);
	return 0;
}
