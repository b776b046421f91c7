/*
 * livemig: the library's version.
 *
 * LM_VERSION_* are the version of the headers a program was compiled
 * against; lm_version() is the version of the library it runs with (the
 * shared object's soname carries the major version, liblivemig.so.MAJOR).
 * The Makefile reads these three lines: keep their form.
 */
#ifndef LIVEMIG_VERSION_H
#define LIVEMIG_VERSION_H

#define LM_VERSION_MAJOR 0
#define LM_VERSION_MINOR 2
#define LM_VERSION_PATCH 0

/* "MAJOR.MINOR.PATCH" as a string literal. */
#define LM_VERSION_STRINGIFY_(x) #x
#define LM_VERSION_STRINGIFY(x) LM_VERSION_STRINGIFY_(x)
#define LM_VERSION_STRING                                                                          \
	LM_VERSION_STRINGIFY(LM_VERSION_MAJOR)                                                     \
	"." LM_VERSION_STRINGIFY(LM_VERSION_MINOR) "." LM_VERSION_STRINGIFY(LM_VERSION_PATCH)

/* The running library's version, "MAJOR.MINOR.PATCH". Never NULL. */
const char *lm_version(void);

#endif
