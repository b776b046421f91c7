/*
 * Transports: "tcp:HOST:PORT" and "unix:PATH", both ends. The engine itself
 * takes any connected stream fd; these only make one.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "livemig/migrate.h"

int lm_uri_parse(const char *s, struct lm_uri *u)
{
	memset(u, 0, sizeof(*u));
	if (!s)
		return -EINVAL;
	if (!strncmp(s, "unix:", 5)) {
		size_t n = strlen(s + 5);
		if (n == 0 || n >= sizeof(u->path))
			return -EINVAL;
		u->kind = LM_URI_UNIX;
		memcpy(u->path, s + 5, n + 1);
		return 0;
	}
	if (strncmp(s, "tcp:", 4))
		return -EINVAL;
	const char *h = s + 4, *colon;
	size_t hl;
	if (*h == '[') {
		const char *close = strchr(h, ']');
		if (!close || close[1] != ':')
			return -EINVAL;
		hl = (size_t)(close - h - 1);
		h++;
		colon = close + 1;
	} else {
		colon = strrchr(h, ':');
		if (!colon)
			return -EINVAL;
		hl = (size_t)(colon - h);
		if (memchr(h, ':', hl))
			return -EINVAL; /* bare IPv6 needs brackets */
	}
	const char *port = colon + 1;
	size_t pl = strlen(port);
	if (hl == 0 || hl >= sizeof(u->host) || pl == 0 || pl >= sizeof(u->port))
		return -EINVAL;
	for (size_t i = 0; i < pl; i++)
		if (port[i] < '0' || port[i] > '9')
			return -EINVAL;
	long pn = strtol(port, NULL, 10);
	if (pn > 65535)
		return -EINVAL;
	u->kind = LM_URI_TCP;
	memcpy(u->host, h, hl);
	memcpy(u->port, port, pl + 1);
	return 0;
}

static int unix_addr(const struct lm_uri *u, struct sockaddr_un *a)
{
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	if (strlen(u->path) >= sizeof(a->sun_path))
		return -ENAMETOOLONG;
	strcpy(a->sun_path, u->path);
	return 0;
}

/* Keepalive: the first probe after KA_IDLE_S of silence, then every
 * KA_INTVL_S; KA_CNT unanswered ones end the connection. */
#define KA_IDLE_S 10
#define KA_INTVL_S 5
#define KA_CNT 4
/* Data sent but not acknowledged for this long ends the connection too. */
#define USER_TIMEOUT_MS ((KA_IDLE_S + KA_INTVL_S * KA_CNT) * 1000)

static void tune(int fd, int family)
{
	if (family == AF_INET || family == AF_INET6) {
		int one = 1;
		/* The END and RESULT records are small and on the downtime path. */
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		/*
		 * A peer host that died or a link that went away sends nothing,
		 * not even a reset: without probes a side that only waits (for
		 * RESULT, for COMMIT, for the next round) would notice only by
		 * its idle timeout, and a connection no one writes to never.
		 * About 30 s to notice either way: the keepalive probes for an
		 * idle connection, TCP_USER_TIMEOUT for data the peer never
		 * acknowledges (it also caps the probes' total time).
		 * Best effort: a kernel without an option keeps its defaults.
		 */
		int idle = KA_IDLE_S, intvl = KA_INTVL_S, cnt = KA_CNT;
		unsigned int user = USER_TIMEOUT_MS;
		(void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
		(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
		(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
		(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
		(void)setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user, sizeof(user));
	}
}

/* A UNIX stream socket and the address of u, or -errno. */
static int unix_socket(const struct lm_uri *u, struct sockaddr_un *a)
{
	int err = unix_addr(u, a);
	if (err)
		return err;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	return fd < 0 ? -errno : fd;
}

int lm_transport_connect(const struct lm_uri *u)
{
	int fd, err;
	if (u->kind == LM_URI_UNIX) {
		struct sockaddr_un a;
		fd = unix_socket(u, &a);
		if (fd < 0)
			return fd;
		if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
			err = -errno;
			close(fd);
			return err;
		}
		return fd;
	}
	if (u->kind != LM_URI_TCP)
		return -EINVAL;
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res, *ai;
	int gai = getaddrinfo(u->host, u->port, &hints, &res);
	if (gai)
		return gai == EAI_SYSTEM ? -errno : -EHOSTUNREACH;
	err = -ECONNREFUSED;
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
		if (fd < 0) {
			err = -errno;
			continue;
		}
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
			tune(fd, ai->ai_family);
			freeaddrinfo(res);
			return fd;
		}
		err = -errno;
		close(fd);
	}
	freeaddrinfo(res);
	return err;
}

int lm_transport_listen(const struct lm_uri *u)
{
	int fd, err;
	if (u->kind == LM_URI_UNIX) {
		struct sockaddr_un a;
		fd = unix_socket(u, &a);
		if (fd < 0)
			return fd;
		(void)unlink(u->path); /* a stale socket from an earlier run */
		if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 4) < 0) {
			err = -errno;
			close(fd);
			return err;
		}
		return fd;
	}
	if (u->kind != LM_URI_TCP)
		return -EINVAL;
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE }, *res, *ai;
	int gai = getaddrinfo(u->host, u->port, &hints, &res);
	if (gai)
		return gai == EAI_SYSTEM ? -errno : -EADDRNOTAVAIL;
	err = -EADDRNOTAVAIL;
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
		if (fd < 0) {
			err = -errno;
			continue;
		}
		int one = 1;
		(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 4) == 0) {
			freeaddrinfo(res);
			return fd;
		}
		err = -errno;
		close(fd);
	}
	freeaddrinfo(res);
	return err;
}

int lm_transport_local_port(int lfd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	if (getsockname(lfd, (struct sockaddr *)&ss, &len) < 0)
		return -errno;
	if (ss.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&ss)->sin_port);
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return -EINVAL;
}

int lm_transport_accept(int lfd, uint64_t timeout_ms)
{
	struct pollfd p = { .fd = lfd, .events = POLLIN };
	for (;;) {
		int n = poll(&p, 1, timeout_ms ? (int)timeout_ms : -1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -ETIMEDOUT;
		break;
	}
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	int fd = accept4(lfd, (struct sockaddr *)&ss, &len, SOCK_CLOEXEC);
	if (fd < 0)
		return -errno;
	tune(fd, ss.ss_family);
	return fd;
}
