/*
 * Internal helpers of the stream layer: little-endian loads and stores
 * (the wire is little-endian whatever the host), and the error reporter
 * every decoder uses. Not part of the public API.
 */
#ifndef LIVEMIG_STREAM_WIRE_H
#define LIVEMIG_STREAM_WIRE_H

#include <stdint.h>
#include <stddef.h>

#include "livemig/stream.h"

static inline uint16_t ld16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}
static inline uint32_t ld32(const uint8_t *p)
{
	return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
	       ((uint32_t)p[3] << 24);
}
static inline uint64_t ld64(const uint8_t *p)
{
	return (uint64_t)ld32(p) | ((uint64_t)ld32(p + 4) << 32);
}
static inline void st16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}
static inline void st32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
static inline void st64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* Record code and a printf-style message in err (if non-NULL); returns code. */
int lm__stream_fail(lm_stream_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Start a frame in b: reserves the header and returns its offset in *off.
 * lm__frame_finish fills payload_len and the checksum once the payload
 * bytes have been appended after it.
 */
int lm__frame_start(lm_buf *b, uint16_t type, size_t payload_hint, size_t *off);
void lm__frame_finish(lm_buf *b, size_t off);
/* The same with a checksum the caller computed over the payload. */
void lm__frame_finish_with(lm_buf *b, size_t off, uint32_t checksum);

/* zstd contexts of s (record.c). */
void lm__stream_free_zstd(lm_stream *s);
/* HELLO payload decoder (handshake.c); p holds len bytes. */
int lm__stream_hello_decode(const uint8_t *p, size_t len, lm_stream_hello *h, lm_stream_err *err);

#endif
