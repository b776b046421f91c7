/* lm_strerror: errno values are the project's error codes. */
#include <string.h>
#include "livemig/common.h"

const char *lm_strerror(int err)
{
	if (err == 0)
		return "success";
	if (err < 0)
		err = -err;
	return strerror(err);
}
