/*
 * Transports: "tcp:HOST:PORT" and "unix:PATH", both ends. The engine itself
 * takes any connected stream fd; these only make one.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "livemig/migrate.h"

int lm_uri_parse(const char *s, struct lm_uri *u)
{
	memset(u, 0, sizeof(*u));
	if (!s)
		return -EINVAL;
	if (!strncmp(s, "unix:", 5)) {
		size_t n = strlen(s + 5);
		if (n == 0)
			return -EINVAL;
		if (n >= sizeof(u->path))
			return -ENAMETOOLONG;
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
	if (hl >= sizeof(u->host))
		return -ENAMETOOLONG;
	if (hl == 0 || pl == 0 || pl >= sizeof(u->port))
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

int lm_uri_format(const struct lm_uri *u, int port, char *buf, size_t len)
{
	int n;
	if (u->kind == LM_URI_UNIX)
		n = snprintf(buf, len, "unix:%s", u->path);
	else if (u->kind != LM_URI_TCP)
		return -EINVAL;
	else if (port >= 0)
		n = snprintf(buf, len, strchr(u->host, ':') ? "tcp:[%s]:%d" : "tcp:%s:%d", u->host, port);
	else
		n = snprintf(buf, len, strchr(u->host, ':') ? "tcp:[%s]:%s" : "tcp:%s:%s", u->host, u->port);
	return n < 0 ? -EINVAL : (size_t)n >= len ? -ENOSPC : 0;
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

/* Says why into why[whylen] (when given), returns err. */
static int because(int err, char *why, size_t whylen, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int because(int err, char *why, size_t whylen, const char *fmt, ...)
{
	if (why && whylen) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(why, whylen, fmt, ap);
		va_end(ap);
	}
	return err;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/*
 * connect() on a non-blocking socket, then poll for the outcome until the
 * deadline (0: none, the kernel's own SYN retries then bound it) or until
 * cancel_fd (>= 0) becomes readable. 0, or -errno: -ETIMEDOUT when the
 * deadline passed, -ECANCELED when cancelled.
 */
static int connect_wait(int fd, const struct sockaddr *a, socklen_t alen, double deadline, int cancel_fd)
{
	while (connect(fd, a, alen) < 0) {
		if (errno == EINPROGRESS || errno == EINTR)
			goto wait;
		/* A UNIX listener with a full backlog: a blocking connect
		 * would wait for room, so wait too (in steps, cancellable). */
		if (errno != EAGAIN || a->sa_family != AF_UNIX)
			return -errno;
		if (deadline > 0 && now_s() >= deadline)
			return -ETIMEDOUT;
		struct pollfd c = {.fd = cancel_fd, .events = POLLIN};
		if (poll(&c, cancel_fd >= 0 ? 1 : 0, 10) > 0)
			return -ECANCELED;
	}
	return 0;
wait:
	for (;;) {
		int ms = -1;
		if (deadline > 0) {
			double left = deadline - now_s();
			if (left <= 0)
				return -ETIMEDOUT;
			ms = (int)(left * 1000) + 1;
		}
		struct pollfd p[2] = {{.fd = fd, .events = POLLOUT}, {.fd = cancel_fd, .events = POLLIN}};
		int n = poll(p, cancel_fd >= 0 ? 2 : 1, ms);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			continue; /* the deadline check above decides */
		if (cancel_fd >= 0 && p[1].revents)
			return -ECANCELED;
		int soerr = 0;
		socklen_t sl = sizeof(soerr);
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
			return -errno;
		return -soerr;
	}
}

/*
 * A name lookup in a thread of its own, so that the caller can stop
 * waiting for a name server that never answers. The caller and the thread
 * each hold a reference; whoever lets go last frees it (and the result,
 * unless the caller took it).
 */
struct lookup {
	int refs;
	int done_fd; /* eventfd, written once the lookup has ended */
	int gai;     /* getaddrinfo's result; errno for EAI_SYSTEM in sys_errno */
	int sys_errno;
	struct addrinfo *res;
	char host[sizeof(((struct lm_uri *)0)->host)], port[sizeof(((struct lm_uri *)0)->port)];
};

static void lookup_put(struct lookup *l)
{
	if (__atomic_sub_fetch(&l->refs, 1, __ATOMIC_ACQ_REL))
		return;
	struct addrinfo *res = __atomic_exchange_n(&l->res, NULL, __ATOMIC_ACQ_REL);
	if (res)
		freeaddrinfo(res);
	close(l->done_fd);
	free(l);
}

static void *lookup_main(void *arg)
{
	struct lookup *l = arg;
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
	int gai = getaddrinfo(l->host, l->port, &hints, &res);
	__atomic_store_n(&l->sys_errno, gai == EAI_SYSTEM ? errno : 0, __ATOMIC_RELAXED);
	__atomic_store_n(&l->res, gai ? NULL : res, __ATOMIC_RELAXED);
	__atomic_store_n(&l->gai, gai, __ATOMIC_RELEASE);
	uint64_t one = 1;
	if (write(l->done_fd, &one, sizeof(one)) < 0) {
		/* an eventfd write fails only on overflow: it is readable */
	}
	lookup_put(l);
	return NULL;
}

/*
 * getaddrinfo() for a stream connection to u, bounded like the connect:
 * with a deadline or a cancel fd it runs in a thread of its own, so that a
 * name server that never answers is given up at the deadline or on a
 * cancel. 0 with *res; -ETIMEDOUT, -ECANCELED or another -errno;
 * getaddrinfo's own failures as -EHOSTUNREACH (-EAGAIN for EAI_AGAIN) with
 * *gai_err its EAI_* code.
 */
static int resolve(const struct lm_uri *u, double deadline, int cancel_fd, struct addrinfo **res, int *gai_err)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
	int gai, sys_errno = 0;
	if (deadline <= 0 && cancel_fd < 0) {
		gai = getaddrinfo(u->host, u->port, &hints, res);
		sys_errno = errno;
		goto out;
	}
	struct lookup *l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->refs = 2;
	l->gai = EAI_INPROGRESS;
	memcpy(l->host, u->host, sizeof(l->host));
	memcpy(l->port, u->port, sizeof(l->port));
	l->done_fd = eventfd(0, EFD_CLOEXEC);
	if (l->done_fd < 0) {
		int err = -errno;
		free(l);
		return err;
	}
	pthread_t th;
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	int e = pthread_create(&th, &attr, lookup_main, l);
	pthread_attr_destroy(&attr);
	if (e) {
		close(l->done_fd);
		free(l);
		return -e;
	}
	int err = 0;
	for (;;) {
		int ms = -1;
		if (deadline > 0) {
			double left = deadline - now_s();
			if (left <= 0) {
				err = -ETIMEDOUT;
				break;
			}
			ms = (int)(left * 1000) + 1;
		}
		struct pollfd p[2] = {{.fd = l->done_fd, .events = POLLIN}, {.fd = cancel_fd, .events = POLLIN}};
		int n = poll(p, cancel_fd >= 0 ? 2 : 1, ms);
		if (n < 0 && errno != EINTR) {
			err = -errno;
			break;
		}
		if (n > 0 && p[0].revents)
			break;
		if (n > 0 && cancel_fd >= 0 && p[1].revents) {
			err = -ECANCELED;
			break;
		}
	}
	if (!err) {
		gai = __atomic_load_n(&l->gai, __ATOMIC_ACQUIRE);
		sys_errno = __atomic_load_n(&l->sys_errno, __ATOMIC_RELAXED);
		*res = __atomic_exchange_n(&l->res, NULL, __ATOMIC_ACQ_REL);
	}
	lookup_put(l); /* a lookup still running frees it when it ends */
	if (err)
		return err;
out:
	if (gai == 0)
		return 0;
	*gai_err = gai;
	if (gai == EAI_SYSTEM)
		return sys_errno ? -sys_errno : -EIO;
	return gai == EAI_AGAIN ? -EAGAIN : -EHOSTUNREACH;
}

/* A stream socket for family, non-blocking while it connects. */
static int nb_socket(int family, int type, int proto)
{
	int fd = socket(family, type | SOCK_CLOEXEC | SOCK_NONBLOCK, proto);
	return fd < 0 ? -errno : fd;
}

/* Back to blocking: the engine's io layer expects that. */
static int set_blocking(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0)
		return -errno;
	return 0;
}

int lm_transport_connect_opts(const struct lm_uri *u, uint64_t timeout_ms, int cancel_fd, char *why,
			      size_t whylen)
{
	int fd, err;
	double deadline = timeout_ms && timeout_ms != LM_TIMEOUT_NEVER ? now_s() + (double)timeout_ms / 1000 : 0;
	if (why && whylen)
		why[0] = 0;
	if (u->kind == LM_URI_UNIX) {
		struct sockaddr_un a;
		err = unix_addr(u, &a);
		if (err)
			return because(err, why, whylen, "the UNIX socket path is %zu bytes, at most %zu fit",
				       strlen(u->path), sizeof(a.sun_path) - 1);
		fd = nb_socket(AF_UNIX, SOCK_STREAM, 0);
		if (fd < 0)
			return because(fd, why, whylen, "%s", strerror(-fd));
		err = connect_wait(fd, (struct sockaddr *)&a, sizeof(a), deadline, cancel_fd);
		if (!err)
			err = set_blocking(fd);
		if (err) {
			close(fd);
			goto fail;
		}
		return fd;
	}
	if (u->kind != LM_URI_TCP)
		return because(-EINVAL, why, whylen, "not a tcp: or unix: address");
	struct addrinfo *res = NULL, *ai;
	int gai = 0;
	err = resolve(u, deadline, cancel_fd, &res, &gai);
	if (err == -ETIMEDOUT)
		return because(err, why, whylen, "cannot resolve '%s': no answer within %g s", u->host,
			       (double)timeout_ms / 1000);
	if (err == -ECANCELED)
		return because(err, why, whylen, "cancelled while resolving '%s'", u->host);
	if (gai && gai != EAI_SYSTEM)
		/* getaddrinfo's own words ("Name or service not known"), not
		 * an errno that would blame the network. */
		return because(err, why, whylen, "cannot resolve '%s': %s", u->host, gai_strerror(gai));
	if (err < 0)
		return because(err, why, whylen, "cannot resolve '%s': %s", u->host, strerror(-err));
	err = -ECONNREFUSED;
	for (ai = res; ai; ai = ai->ai_next) {
		fd = nb_socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
		if (fd < 0) {
			err = fd;
			continue;
		}
		err = connect_wait(fd, ai->ai_addr, ai->ai_addrlen, deadline, cancel_fd);
		if (!err)
			err = set_blocking(fd);
		if (!err) {
			tune(fd, ai->ai_family);
			freeaddrinfo(res);
			return fd;
		}
		close(fd);
		/* The deadline and a cancel cover every address. */
		if (err == -ECANCELED || (err == -ETIMEDOUT && deadline > 0 && now_s() >= deadline))
			break;
	}
	freeaddrinfo(res);
fail:
	if (err == -ETIMEDOUT && deadline > 0)
		return because(err, why, whylen, "Connection timed out after %g s", (double)timeout_ms / 1000);
	if (err == -ECANCELED)
		return because(err, why, whylen, "cancelled while connecting");
	return because(err, why, whylen, "%s", strerror(-err));
}

int lm_transport_connect(const struct lm_uri *u)
{
	return lm_transport_connect_opts(u, 0, -1, NULL, 0);
}

/*
 * What is at path, for a listener about to bind there: 0 when nothing is
 * (or only a stale socket was, now removed). A socket file is stale when
 * connecting to it is refused: no process listens on it any more. Anything
 * else is not ours to remove: -EEXIST for a file that is not a socket
 * (regular file, directory, symlink, ...), -EADDRINUSE for a socket some
 * process accepts connections on (connect succeeded, or its backlog is
 * full), or the connect's own error (-EACCES: a socket we may not even try)
 * when it cannot tell. Between this check and the bind another process may
 * create the path; bind then fails with -EADDRINUSE, and nothing of theirs
 * was removed.
 */
static int remove_stale(const char *path, const struct sockaddr_un *a)
{
	struct stat st;
	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISSOCK(st.st_mode))
		return -EEXIST;
	/* Non-blocking, so that a listener with a full backlog answers
	 * EAGAIN at once instead of holding us. */
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (s < 0)
		return -errno;
	int r = connect(s, (const struct sockaddr *)a, sizeof(*a));
	int e = r == 0 ? 0 : errno;
	close(s);
	if (r == 0 || e == EAGAIN || e == EINPROGRESS)
		return -EADDRINUSE;
	if (e != ECONNREFUSED)
		return -e;
	if (unlink(path) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

int lm_transport_unix_listen(const char *path, int backlog)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	if (!path || !*path)
		return -EINVAL;
	if (strlen(path) >= sizeof(a.sun_path))
		return -ENAMETOOLONG;
	strcpy(a.sun_path, path);
	int err = remove_stale(path, &a);
	if (err)
		return err;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		err = -errno; /* EADDRINUSE: someone else's, created since the check */
		close(fd);
		return err;
	}
	/*
	 * Owner-only. chmod right after bind rather than umask around it: the
	 * umask is per process and other threads may be creating files at the
	 * same time (fchmod on the socket fd does not reach the file bind
	 * creates). The mode is set before listen(): until then a connect is
	 * refused anyway, so no client gets in through the wider mode.
	 */
	if (chmod(path, 0600) < 0 || listen(fd, backlog) < 0) {
		err = -errno;
		(void)unlink(path); /* ours: we just created it */
		close(fd);
		return err;
	}
	return fd;
}

int lm_transport_listen(const struct lm_uri *u)
{
	int fd, err;
	if (u->kind == LM_URI_UNIX)
		return lm_transport_unix_listen(u->path, 4);
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
