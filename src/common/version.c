/* lm_version: the version this library was built as. */
#include "livemig/version.h"

const char *lm_version(void)
{
	return LM_VERSION_STRING;
}
