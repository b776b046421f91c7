/*
 * Naming the threads livemig starts, so perf, top -H and gdb tell the
 * sender from a channel, a receiving lane from its placer. Not part of
 * the public API.
 */
#ifndef LIVEMIG_COMMON_THREAD_H
#define LIVEMIG_COMMON_THREAD_H

/* Name the calling thread (printf format; cut to the kernel's 15 bytes). */
void lm__thread_name(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
