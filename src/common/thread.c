/* Thread names (src/common/thread.h). */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>

#include "common/thread.h"

void lm__thread_name(const char *fmt, ...)
{
	char name[16]; /* TASK_COMM_LEN */
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(name, sizeof(name), fmt, ap);
	va_end(ap);
	/* Only a name: a failure changes nothing else. */
	(void)pthread_setname_np(pthread_self(), name);
}
