/* A fake IPVS for keepalived's checker on a host without IPVS (bench/vs_keepalived.py).
 *
 * Debian's keepalived 2.2.7 reaches IPVS only through libnl-genl-3 (libipvs.c: one generic
 * netlink socket, genl_ctrl_resolve("IPVS"), then per command nl_send_auto + nl_recvmsgs_default
 * until its ACK callback has set a flag). Preloaded (LD_PRELOAD), this library
 *
 *   - answers genl_ctrl_resolve(sock, "IPVS") with a made-up family id and marks the socket,
 *   - swallows what is sent on that socket (nl_send_auto, nl_send_auto_complete, nl_sendmsg),
 *     logging one line per command: "<unix time> <genl cmd> <virtual addr:port> <dest addr:port>
 *     <weight>" to the file named by $FAKE_IPVS_LOG (O_APPEND, one write per line),
 *   - answers the next receive (nl_recvmsgs_default, nl_recvmsgs, nl_wait_for_ack) by calling
 *     the socket's NL_CB_ACK callback (recorded from nl_socket_modify_cb) with an empty message:
 *     every IPVS command succeeds, a dump (GET_*) returns nothing, GET_INFO's callback is never
 *     called (keepalived then only needs the command to succeed).
 *
 * keepalived therefore never falls back to the IPVS sockopts (getsockopt IP_VS_SO_GET_INFO on a
 * raw socket) nor runs modprobe ip_vs, which it does when genl_ctrl_resolve fails (strace).
 *
 * Anything else (other families, other sockets) goes to the real libnl. No libnl headers are
 * needed: the few types are opaque and the message layout is the kernel's.
 * Build: cc -shared -fPIC -O2 -o fake_ipvs_nl.so fake_ipvs_nl.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <linux/genetlink.h>
#include <linux/ip_vs.h>
#include <linux/netlink.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

struct nl_sock;
struct nl_msg;
struct nl_cb;
struct sockaddr_nl;
typedef int (*nl_recvmsg_msg_cb_t)(struct nl_msg *, void *);

enum { NL_CB_ACK = 4 }; /* in libnl-3's enum nl_cb_type */

#define FAKE_FAMILY 0x7ff0
#define MAX_SOCKS 16

extern struct nlmsghdr *nlmsg_hdr(struct nl_msg *);
extern struct nl_msg *nlmsg_alloc_simple(int, int);
extern void nlmsg_free(struct nl_msg *);

static struct fake {
	struct nl_sock *sock;
	nl_recvmsg_msg_cb_t ack;
	void *ack_arg;
} fakes[MAX_SOCKS];

static int log_fd = -2;

static struct fake *find(struct nl_sock *sock, int add)
{
	if (!sock)
		return NULL;
	for (int i = 0; i < MAX_SOCKS; i++)
		if (fakes[i].sock == sock)
			return &fakes[i];
	if (!add)
		return NULL;
	for (int i = 0; i < MAX_SOCKS; i++)
		if (!fakes[i].sock) {
			fakes[i].sock = sock;
			return &fakes[i];
		}
	return NULL;
}

static void *real(const char *name)
{
	void *f = dlsym(RTLD_NEXT, name);
	if (!f) {
		fprintf(stderr, "fake_ipvs_nl: no %s in the next library\n", name);
		_exit(70);
	}
	return f;
}

/* the first attribute of `type` in [attrs, attrs+len) */
static struct nlattr *attr(void *attrs, int len, int type)
{
	struct nlattr *a = attrs;
	while (len >= (int)sizeof(*a) && a->nla_len >= sizeof(*a) && a->nla_len <= len) {
		if ((a->nla_type & NLA_TYPE_MASK) == type)
			return a;
		len -= NLA_ALIGN(a->nla_len);
		a = (struct nlattr *)((char *)a + NLA_ALIGN(a->nla_len));
	}
	return NULL;
}

static void *payload(struct nlattr *a) { return (char *)a + NLA_HDRLEN; }
static int payload_len(struct nlattr *a) { return a->nla_len - NLA_HDRLEN; }

/* "addr:port" of a nested service or destination attribute, "-" when absent */
static void endpoint(char *out, size_t size, struct nlattr *nest, int addr_type, int port_type)
{
	struct nlattr *addr, *port;
	char text[INET6_ADDRSTRLEN] = "-";
	if (!nest) {
		snprintf(out, size, "-");
		return;
	}
	addr = attr(payload(nest), payload_len(nest), addr_type);
	port = attr(payload(nest), payload_len(nest), port_type);
	if (addr && payload_len(addr) >= 16 && memcmp((char *)payload(addr) + 4, "\0\0\0\0\0\0\0\0\0\0\0\0", 12))
		inet_ntop(AF_INET6, payload(addr), text, sizeof(text));
	else if (addr && payload_len(addr) >= 4)
		inet_ntop(AF_INET, payload(addr), text, sizeof(text));
	snprintf(out, size, "%s:%u", text, port ? ntohs(*(unsigned short *)payload(port)) : 0);
}

static void log_command(struct nl_msg *msg)
{
	struct nlmsghdr *h = nlmsg_hdr(msg);
	struct genlmsghdr *g = NLMSG_DATA(h);
	void *attrs = (char *)g + GENL_HDRLEN;
	int len = (int)h->nlmsg_len - NLMSG_HDRLEN - GENL_HDRLEN;
	struct nlattr *svc = attr(attrs, len, IPVS_CMD_ATTR_SERVICE);
	struct nlattr *dest = attr(attrs, len, IPVS_CMD_ATTR_DEST);
	struct nlattr *weight = dest ? attr(payload(dest), payload_len(dest), IPVS_DEST_ATTR_WEIGHT) : NULL;
	char vs[64], rs[64], line[256];
	struct timeval tv;
	int n;

	if (log_fd == -2) {
		const char *path = getenv("FAKE_IPVS_LOG");
		log_fd = path ? open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644) : -1;
	}
	if (log_fd < 0)
		return;
	endpoint(vs, sizeof(vs), svc, IPVS_SVC_ATTR_ADDR, IPVS_SVC_ATTR_PORT);
	endpoint(rs, sizeof(rs), dest, IPVS_DEST_ATTR_ADDR, IPVS_DEST_ATTR_PORT);
	gettimeofday(&tv, NULL);
	n = snprintf(line, sizeof(line), "%ld.%06ld %u %s %s %d\n", (long)tv.tv_sec, (long)tv.tv_usec,
		     g->cmd, vs, rs, weight ? (int)*(unsigned *)payload(weight) : -1);
	if (n > 0 && write(log_fd, line, (size_t)n) < 0)
		log_fd = -1;
}

typedef int (*resolve_fn)(struct nl_sock *, const char *);
typedef int (*modify_cb_fn)(struct nl_sock *, int, int, nl_recvmsg_msg_cb_t, void *);
typedef void (*free_fn)(struct nl_sock *);
typedef int (*send_fn)(struct nl_sock *, struct nl_msg *);
typedef int (*sendmsg_fn)(struct nl_sock *, struct nl_msg *, void *);
typedef int (*recv_fn)(struct nl_sock *);
typedef int (*recv_cb_fn)(struct nl_sock *, struct nl_cb *);

/* return what the real libnl function `name` (of type `type`) returns for these arguments */
#define FORWARD(name, type, ...)                        \
	do {                                            \
		static type next;                       \
		if (!next)                              \
			next = (type)real(#name);       \
		return next(__VA_ARGS__);               \
	} while (0)

int genl_ctrl_resolve(struct nl_sock *sock, const char *name)
{
	if (name && !strcmp(name, IPVS_GENL_NAME) && find(sock, 1))
		return FAKE_FAMILY;
	FORWARD(genl_ctrl_resolve, resolve_fn, sock, name);
}

int nl_socket_modify_cb(struct nl_sock *sock, int type, int kind, nl_recvmsg_msg_cb_t func, void *arg)
{
	struct fake *f = find(sock, 0);
	if (f && type == NL_CB_ACK) {
		f->ack = func;
		f->ack_arg = arg;
	}
	FORWARD(nl_socket_modify_cb, modify_cb_fn, sock, type, kind, func, arg);
}

void nl_socket_free(struct nl_sock *sock)
{
	struct fake *f = find(sock, 0);
	static free_fn next;
	if (f)
		memset(f, 0, sizeof(*f));
	if (!next)
		next = (free_fn)real("nl_socket_free");
	next(sock);
}

/* a command on a fake socket: logged, and taken as sent whole */
static int swallow(struct nl_sock *sock, struct nl_msg *msg, int *sent)
{
	struct fake *f = find(sock, 0);
	if (!f || nlmsg_hdr(msg)->nlmsg_type != FAKE_FAMILY)
		return 0;
	log_command(msg);
	*sent = (int)nlmsg_hdr(msg)->nlmsg_len;
	return 1;
}

int nl_send_auto(struct nl_sock *sock, struct nl_msg *msg)
{
	int sent;
	if (swallow(sock, msg, &sent))
		return sent;
	FORWARD(nl_send_auto, send_fn, sock, msg);
}

int nl_send_auto_complete(struct nl_sock *sock, struct nl_msg *msg)
{
	int sent;
	if (swallow(sock, msg, &sent))
		return sent;
	FORWARD(nl_send_auto_complete, send_fn, sock, msg);
}

int nl_sendmsg(struct nl_sock *sock, struct nl_msg *msg, void *hdr)
{
	int sent;
	if (swallow(sock, msg, &sent))
		return sent;
	FORWARD(nl_sendmsg, sendmsg_fn, sock, msg, hdr);
}

/* the kernel's answer to a command on a fake socket: its ACK callback, called with an empty
 * NLMSG_ERROR message (keepalived's ignores the message and sets its ack flag) */
static int acknowledge(struct fake *f)
{
	struct nl_msg *ack;
	if (!f->ack)
		return 0;
	ack = nlmsg_alloc_simple(NLMSG_ERROR, 0);
	f->ack(ack, f->ack_arg);
	if (ack)
		nlmsg_free(ack);
	return 0;
}

int nl_recvmsgs_default(struct nl_sock *sock)
{
	struct fake *f = find(sock, 0);
	if (f)
		return acknowledge(f);
	FORWARD(nl_recvmsgs_default, recv_fn, sock);
}

int nl_recvmsgs(struct nl_sock *sock, struct nl_cb *cb)
{
	struct fake *f = find(sock, 0);
	if (f)
		return acknowledge(f);
	FORWARD(nl_recvmsgs, recv_cb_fn, sock, cb);
}

int nl_wait_for_ack(struct nl_sock *sock)
{
	if (find(sock, 0))
		return 0;
	FORWARD(nl_wait_for_ack, recv_fn, sock);
}
