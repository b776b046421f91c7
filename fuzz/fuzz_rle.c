/*
 * libFuzzer target for the run-length decoder (src/bitmap/rle.c).
 *
 * Input: two bytes choosing the destination size (1..4096 pages), then the
 * encoded page set. The decoder must never read past the buffer nor write
 * past the bitmap (ASan), and must return 0, -EINVAL or -ERANGE. The
 * format is canonical (minimal varints, maximal runs), so whatever decodes
 * successfully must re-encode to exactly the same bytes.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "livemig/bitmap.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	uint64_t nbits = 1 + ((uint64_t)data[0] | (uint64_t)data[1] << 8) % 4096;
	const uint8_t *buf = data + 2;
	size_t len = size - 2;
	lm_bitmap b;
	if (lm_bitmap_init(&b, nbits) < 0)
		return 0;
	int rc = lm_rle_decode(buf, len, &b);
	if (rc != 0 && rc != -EINVAL && rc != -ERANGE)
		__builtin_trap();
	if (rc == 0) {
		int64_t need = lm_rle_encoded_size(&b);
		if (need != (int64_t)len)
			__builtin_trap();
		uint8_t *out = malloc(len + 1);
		if (!out)
			__builtin_trap();
		if (lm_rle_encode(&b, out, len) != (int64_t)len || memcmp(out, buf, len) != 0)
			__builtin_trap();
		free(out);
	}
	lm_bitmap_destroy(&b);
	return 0;
}
