/*
 * Migration URIs on the command line and the control socket: the parse
 * with a reason a user can act on, instead of one "Bad uri" for all.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>

#include "cli/cli.h"
#include "livemig/migrate.h"

int lm_cli_uri_parse(const char *s, struct lm_uri *u, char *err, size_t errlen)
{
	int r = lm_uri_parse(s, u);
	if (r == 0)
		return 0;
	size_t n = strlen(s);
	if (r == -ENAMETOOLONG && !strncmp(s, "unix:", 5))
		snprintf(err, errlen, "Bad uri '%.60s...': the UNIX socket path is %zu bytes, at most %zu fit",
			 s, n - 5, sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
	else if (r == -ENAMETOOLONG)
		snprintf(err, errlen, "Bad uri '%.60s...': the host name is longer than %zu bytes", s,
			 sizeof(u->host) - 1);
	else if (!strncmp(s, "tcp:", 4) && strchr(s + 4, ':') != strrchr(s + 4, ':') && s[4] != '[')
		snprintf(err, errlen, "Bad uri '%.100s': an IPv6 address goes in brackets, tcp:[ADDR]:PORT", s);
	else if (!strncmp(s, "tcp:", 4))
		snprintf(err, errlen, "Bad uri '%.100s': use tcp:HOST:PORT (PORT 0..65535)", s);
	else
		snprintf(err, errlen, "Bad uri '%.100s': use tcp:HOST:PORT or unix:PATH", s);
	return r;
}
