/*
 * livemig: definitions shared by every layer.
 *
 * Errors: every fallible call returns 0 (or a count) on success and -errno
 * on failure. lm_strerror() turns such a value into a message.
 */
#ifndef LIVEMIG_COMMON_H
#define LIVEMIG_COMMON_H

#include <stdint.h>
#include <stddef.h>
#include <stdbool.h>

#define LM_PAGE_SHIFT 12
#define LM_PAGE_SIZE (1ull << LM_PAGE_SHIFT)

/* Message for a negative errno value (or 0). Never returns NULL. */
const char *lm_strerror(int err);

#endif
