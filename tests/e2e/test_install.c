/* liblivemig installs like a library: `make install` into a temporary
 * DESTDIR, then a program (tests/install/embed.c) is built against the
 * installed copy with nothing but `pkg-config --cflags --libs livemig`,
 * once against the static archive and once against the shared object
 * (found through its installed path), and run. The installed command
 * runs the installed benchmarks (livemig-bench). Every public header is
 * installed and compiles on its own; no lm__ symbol is exported;
 * `make uninstall` removes exactly what was installed. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "livemig/version.h"

static char stage[64];
static char srcdir[4096];
static char builddir[4096];

/* Runs cmd with /bin/sh, output into out (NUL-terminated, truncated to
 * cap). Returns the exit status, or -1 if it did not exit normally. */
static int run(char *out, size_t cap, const char *fmt, ...)
{
	char cmd[8192];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	FILE *f = popen(cmd, "r");
	assert_non_null(f);
	size_t n = 0, k;
	char sink[4096];
	while ((k = fread(out && n + 1 < cap ? out + n : sink, 1,
			  out && n + 1 < cap ? cap - 1 - n : sizeof(sink), f)) > 0)
		if (out && n + 1 < cap)
			n += k;
	if (out)
		out[n] = 0;
	int st = pclose(f);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* The pkg-config environment for the staged copy. */
#define PKG "PKG_CONFIG_PATH=%s/usr/local/lib/pkgconfig pkg-config --define-variable=prefix=%s/usr/local"

static int setup(void **state)
{
	const char *s = getenv("LM_SRCDIR"), *b = getenv("LM_BUILD");
	if (!s || !b) {
		print_message("LM_SRCDIR and LM_BUILD must name the source and build folders (make check sets them)\n");
		return -1;
	}
	snprintf(srcdir, sizeof(srcdir), "%s", s);
	snprintf(builddir, sizeof(builddir), "%s", b);
	snprintf(stage, sizeof(stage), "/tmp/livemig-install.XXXXXX");
	if (!mkdtemp(stage))
		return -1;
	/* A make started by this test is not a sub-make of `make check`. */
	char out[16384];
	int rc = run(out, sizeof(out),
		     "env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s -C '%s' BUILD='%s' install "
		     "PREFIX=/usr/local DESTDIR=%s 2>&1",
		     srcdir, builddir, stage);
	if (rc != 0) {
		print_message("make install failed (%d):\n%s\n", rc, out);
		return -1;
	}
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", stage);
	return system(cmd) == 0 ? 0 : -1;
}

static void test_files_installed(void **state)
{
	static const char *files[] = {
		"bin/livemig", "lib/liblivemig.a", "lib/liblivemig.so",
		"lib/pkgconfig/livemig.pc", "share/man/man1/livemig.1", "share/livemig/guest.elf",
		"libexec/livemig/livemig-bench",
	};
	char path[4096];
	struct stat sb;
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		snprintf(path, sizeof(path), "%s/usr/local/%s", stage, files[i]);
		if (stat(path, &sb) != 0)
			print_message("missing after install: %s\n", path);
		assert_int_equal(stat(path, &sb), 0);
	}
	/* The shared object's name carries MAJOR.MINOR, its soname MAJOR. */
	char out[4096];
	snprintf(path, sizeof(path), "%s/usr/local/lib/liblivemig.so.%d.%d", stage, LM_VERSION_MAJOR,
		 LM_VERSION_MINOR);
	assert_int_equal(stat(path, &sb), 0);
	assert_true(S_ISREG(sb.st_mode));
	assert_int_equal(run(out, sizeof(out), "readelf -d %s", path), 0);
	char want[64];
	snprintf(want, sizeof(want), "[liblivemig.so.%d]", LM_VERSION_MAJOR);
	if (!strstr(out, want))
		print_message("soname: %s\n", out);
	assert_non_null(strstr(out, want));
	/* The installed command reports the headers' version. */
	assert_int_equal(run(out, sizeof(out), "%s/usr/local/bin/livemig --version", stage), 0);
	assert_string_equal(out, "livemig " LM_VERSION_STRING "\n");
	/* The installed command finds the installed benchmarks (livemig-bench,
	 * a program of its own) and runs them. */
	assert_int_equal(run(out, sizeof(out), "%s/usr/local/bin/livemig bench --help 2>&1", stage), 0);
	if (!strstr(out, "qemu-cpu"))
		print_message("livemig bench --help: %s\n", out);
	assert_non_null(strstr(out, "qemu-cpu"));
	/* The man page renders and names every subcommand. */
	assert_int_equal(run(out, sizeof(out), "grep -c '' %s/usr/local/share/man/man1/livemig.1", stage), 0);
	static const char *subs[] = { "run", "incoming", "migrate", "bench" };
	for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
		int rc = run(NULL, 0, "grep -q '^\\.SS.*%s' %s/usr/local/share/man/man1/livemig.1", subs[i],
			     stage);
		if (rc)
			print_message("the man page has no section for %s\n", subs[i]);
		assert_int_equal(rc, 0);
	}
}

/* Every header of include/livemig is installed and compiles alone, and
 * none declares an internal lm__ name. */
static void test_headers(void **state)
{
	char out[16384];
	int rc = run(out, sizeof(out),
		     "cd '%s/include/livemig' && for h in *.h; do "
		     "  [ -f %s/usr/local/include/livemig/$h ] || { echo \"not installed: $h\"; exit 1; }; "
		     "  grep -n 'lm__' %s/usr/local/include/livemig/$h && { echo \"lm__ in $h\"; exit 1; }; "
		     "  echo \"#include <livemig/$h>\" | cc -std=c11 -Wall -Werror -fsyntax-only "
		     "    $(" PKG " --cflags livemig) -x c - || { echo \"does not compile alone: $h\"; exit 1; }; "
		     "done 2>&1",
		     srcdir, stage, stage, stage, stage);
	if (rc)
		print_message("%s\n", out);
	assert_int_equal(rc, 0);
}

/* Only lm_ names are global in the installed libraries. */
static void test_exports(void **state)
{
	char out[16384];
	int rc = run(out, sizeof(out),
		     "nm -D --defined-only %s/usr/local/lib/liblivemig.so | awk '{print $3}' | grep -v '^lm_[^_]'",
		     stage);
	if (rc != 1)
		print_message("the shared object exports other names:\n%s\n", out);
	assert_int_equal(rc, 1); /* grep found nothing */
	rc = run(out, sizeof(out),
		 "nm -g --defined-only %s/usr/local/lib/liblivemig.a | awk 'NF == 3 {print $3}' | grep -v '^lm_[^_]'",
		 stage);
	if (rc != 1)
		print_message("the archive exports other names:\n%s\n", out);
	assert_int_equal(rc, 1);
	/* ... and the public API is there. */
	assert_int_equal(run(out, sizeof(out), "nm -D --defined-only %s/usr/local/lib/liblivemig.so | grep -c ' T lm_'",
			     stage), 0);
	assert_true(atoi(out) > 50);
}

static void build_and_run(const char *how)
{
	char out[16384], libdir[4096];
	bool stat_link = !strcmp(how, "static");
	/* The shared program finds the installed object through its path,
	 * which the .pc gives (an rpath, as a packager's -rpath would). */
	assert_int_equal(run(libdir, sizeof(libdir), PKG " --variable=libdir livemig", stage, stage), 0);
	libdir[strcspn(libdir, "\n")] = 0;
	assert_true(libdir[0] == '/');
	int rc = run(out, sizeof(out),
		     "cc -std=c11 -Wall -Werror -o %s/embed-%s '%s/tests/install/embed.c' %s%s "
		     "$(" PKG " %s --cflags --libs livemig) 2>&1",
		     stage, how, srcdir, stat_link ? "-static" : "-Wl,-rpath,", stat_link ? "" : libdir,
		     stage, stage, stat_link ? "--static" : "");
	if (rc)
		print_message("building the %s program failed:\n%s\n", how, out);
	assert_int_equal(rc, 0);
	rc = run(out, sizeof(out), "%s/embed-%s 2>&1", stage, how);
	print_message("%s: %s", how, out);
	assert_int_equal(rc, 0);
	assert_string_equal(out, "embed ok " LM_VERSION_STRING " " LM_VERSION_STRING "\n");
}

static void test_embed_static(void **state)
{
	build_and_run("static");
	/* The static program needs no shared object at all. */
	assert_int_equal(run(NULL, 0, "readelf -d %s/embed-static | grep -q NEEDED", stage), 1);
}

static void test_embed_shared(void **state)
{
	char out[8192];
	/* Linked against the shared object, and uses it at run time. */
	build_and_run("shared");
	int rc = run(out, sizeof(out), "ldd %s/embed-shared", stage);
	assert_int_equal(rc, 0);
	char want[256];
	snprintf(want, sizeof(want), "liblivemig.so.%d => %s/usr/local/lib/liblivemig.so.%d", LM_VERSION_MAJOR,
		 stage, LM_VERSION_MAJOR);
	if (!strstr(out, want))
		print_message("ldd: %s\n", out);
	assert_non_null(strstr(out, want));
}

/* Last: uninstall leaves the stage without a file that install put there. */
static void test_uninstall(void **state)
{
	char out[16384];
	/* The programs this test built are not the install's. */
	assert_int_equal(run(NULL, 0, "rm -f %s/embed-static %s/embed-shared", stage, stage), 0);
	int rc = run(out, sizeof(out),
		     "env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s -C '%s' BUILD='%s' uninstall "
		     "PREFIX=/usr/local DESTDIR=%s 2>&1",
		     srcdir, builddir, stage);
	if (rc)
		print_message("%s\n", out);
	assert_int_equal(rc, 0);
	assert_int_equal(run(out, sizeof(out), "find %s ! -type d", stage), 0);
	if (*out)
		print_message("left after uninstall:\n%s\n", out);
	assert_string_equal(out, "");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_files_installed),
		cmocka_unit_test(test_headers),
		cmocka_unit_test(test_exports),
		cmocka_unit_test(test_embed_static),
		cmocka_unit_test(test_embed_shared),
		cmocka_unit_test(test_uninstall),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
