/*
 * chatload: a load generator for IRC servers (one thread, epoll).
 *
 * Modes (-m):
 *   fanout  N clients (-c) register and JOIN #bench; the first S of them
 *           (-S) are senders, each keeping at most W messages (-W) in flight.
 *           A message is complete when all N-1 other members received it;
 *           then its sender sends the next one.  Counts deliveries (lines
 *           received) and completed messages; latency = send -> last receipt.
 *   pm      2P clients (-c P pairs): in each pair one side sends PRIVMSG to
 *           the other (at most W in flight), which answers each with a
 *           PRIVMSG back; round trips and their latency.
 *   idle    N clients register (at most B registrations in flight, -b) and
 *           stay idle; the server's VmRSS (-p PID) is read before the first
 *           connect and 1 s after the last 001.
 *
 * With several ports (-P P1,P2,...: the nodes of a cluster that acts as one
 * server) client i connects to port i modulo their number.
 *
 * Every PRIVMSG sent is exactly -s bytes long (CRLF included, default 100).
 * Every client socket has TCP_NODELAY, and TCP_QUICKACK is set again after
 * every read: without it a server that leaves Nagle on (ngIRCd) waits for
 * our delayed ACKs and the figures measure the 40 ms ACK timer, not the server.
 * Registration: [PASS p] NICK <prefix><offset+i>, USER; registered = 001;
 * joined = 366 (end of NAMES) for #bench.  PINGs are answered.
 *
 * Load runs for the settle time (-e, nothing sent), the warm-up (-w), then
 * the measured window (-d); everything stops after -T seconds whatever
 * happens (SIGALRM).  Errors are counted per run: ERROR lines, numerics
 * 400-599 (except 422, no MOTD), connections closed by the server, and
 * messages lost, duplicated or out of order (each receiver checks every
 * sender's sequence numbers).  A closed connection during the load ends the
 * run (ok false).  With -p PID[,PID...] the server's CPU time (/proc/PID/stat)
 * and VmRSS (summed over the PIDs) are sampled at the window's edges, with this process's rusage and
 * the machine's per-CPU busy and idle time (/proc/stat).  Prints one JSON line.
 *
 * Build (loadgen.h next to it): gcc -O2 -Wall -o chatload chatload.c
 */
#define LOADGEN_MODE "fanout"
#define LOADGEN_DURATION 3.0
#include "loadgen.h"

#define CARRY 2048   /* partial line kept per connection */
#define OUTBUF 4096  /* unsent bytes kept per connection */

/* options of chatload alone (the others: loadgen.h) */
static const char *prefix = "cb";
static const char *password = NULL;
static const char *channel = "#bench";
static int nclients = 50;   /* fanout/idle: clients; pm: pairs */
static int nsenders = 1;
static int window = 1;
static int offset = 0;
static size_t linesize = 100;
static double settle = 1.0;
static double reglimit = 30.0;

/* ----------------------------------------------------------- connections */

enum { C_FREE, C_CONNECTING, C_REGISTERING, C_JOINING, C_READY, C_DEAD };

struct conn {
    int fd;
    int state;
    int wout;
    uint16_t carry_len, out_len;
    char nick[24];
    char carry[CARRY];
    char out[OUTBUF];
};

static struct conn *cs;
static int ncs;              /* connections in use */
static int want_join;
static int opened, registering, registered, joined, closed_n;
static int loading;          /* the load phase has begun */
static double last_progress;

/* errors */
static uint64_t n_error_lines, n_err_numerics, n_misorder, n_stray, n_bad, n_self;
static char first_error[240];

static void note_error(const char *fmt, ...) {
    if (first_error[0]) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(first_error, sizeof first_error, fmt, ap);
    va_end(ap);
}

static void conn_dead(int id, const char *why) {
    struct conn *c = &cs[id];
    if (c->state == C_DEAD) return;
    if (c->state == C_CONNECTING || c->state == C_REGISTERING) registering--;
    note_error("%s %s (%s)", c->nick, why,
               c->state == C_CONNECTING ? "connecting" :
               c->state == C_REGISTERING ? "registering" :
               c->state == C_JOINING ? "joining" : "registered");
    c->state = C_DEAD;
    closed_n++;
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
}

static void flush_out(int id) {
    struct conn *c = &cs[id];
    size_t sent = 0;
    while (sent < c->out_len) {
        ssize_t n = send(c->fd, c->out + sent, c->out_len - sent, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            if (errno == EINTR) continue;
            conn_dead(id, strerror(errno));
            return;
        }
        sent += n;
    }
    if (sent) {
        memmove(c->out, c->out + sent, c->out_len - sent);
        c->out_len -= sent;
    }
    int want = c->out_len > 0;
    if (want != c->wout) {
        ep_set(c->fd, EPOLLIN | (want ? EPOLLOUT : 0), id, EPOLL_CTL_MOD);
        c->wout = want;
    }
}

/* queue bytes and try to send them at once */
static void put(int id, const char *data, size_t len) {
    struct conn *c = &cs[id];
    if (c->state == C_DEAD) return;
    if (c->out_len + len > OUTBUF)
        fail("%s: more than %d bytes unsent (the server does not read?)", c->nick, OUTBUF);
    memcpy(c->out + c->out_len, data, len);
    c->out_len += len;
    if (!c->wout) flush_out(id);
}

/* PRIVMSG <target> :<tag><a>.<b>.xxxx CRLF, exactly linesize bytes */
static void send_privmsg(int id, const char *target, char tag, unsigned a, unsigned b) {
    char line[1024];
    int n = snprintf(line, sizeof line, "PRIVMSG %s :%c%u.%u.", target, tag, a, b);
    if (n < 0 || (size_t)n + 2 > linesize) fail("line size %zu too small", linesize);
    memset(line + n, 'x', linesize - 2 - n);
    line[linesize - 2] = '\r';
    line[linesize - 1] = '\n';
    put(id, line, linesize);
}

/* the server's address with the i-th port of -P (modulo their number): client i's node */
static struct sockaddr_storage address_for(int i) {
    struct sockaddr_storage a = addr;
    uint16_t p = htons(ports[i % nports]);
    if (a.ss_family == AF_INET) ((struct sockaddr_in *)&a)->sin_port = p;
    else ((struct sockaddr_in6 *)&a)->sin6_port = p;
    return a;
}

static void open_one(void) {
    int id = opened;
    struct conn *c = &cs[id];
    snprintf(c->nick, sizeof c->nick, "%s%d", prefix, offset + id);
    opened++;
    registering++;
    int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) fail("socket after %d connections: %s", id, strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    c->state = C_CONNECTING;
    struct sockaddr_storage a = address_for(id);
    int r = connect(fd, (struct sockaddr *)&a, addrlen);
    if (r < 0 && errno != EINPROGRESS) {
        c->state = C_REGISTERING; /* so conn_dead accounts for it */
        ep_set(fd, EPOLLIN, id, EPOLL_CTL_ADD);
        conn_dead(id, strerror(errno));
        return;
    }
    ep_set(fd, EPOLLOUT, id, EPOLL_CTL_ADD);
    c->wout = 1;
}

static void connected(int id) {
    struct conn *c = &cs[id];
    int err = 0;
    socklen_t el = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
    if (err) {
        conn_dead(id, strerror(err));
        return;
    }
    c->state = C_REGISTERING;
    ep_set(c->fd, EPOLLIN, id, EPOLL_CTL_MOD);
    c->wout = 0;
    char msg[256];
    int n = 0;
    if (password) n += snprintf(msg + n, sizeof msg - n, "PASS %s\r\n", password);
    n += snprintf(msg + n, sizeof msg - n, "NICK %s\r\nUSER %s 0 * :chatload\r\n", c->nick,
                  c->nick);
    put(id, msg, n);
}

/* ---------------------------------------------------------- load state */

struct slot {
    uint32_t seq;
    uint32_t remaining; /* fanout: receipts still missing; pm: 1 while waiting */
    uint64_t t0;
};

static struct slot *slots;    /* [sender * window + seq % window] */
static uint32_t *next_seq;    /* per sender */
static uint32_t *expect;      /* fanout: [receiver * S + sender]; pm: [pair] at responder */
static uint32_t *expect_back; /* pm: [pair] at initiator */
static uint64_t st_deliveries, st_msgs, all_deliveries, all_msgs;
static size_t fan_payload; /* bytes after "PRIVMSG #bench :" in the lines we send */

static void fan_send(int s) {
    if (done || cs[s].state == C_DEAD) return;
    uint32_t q = next_seq[s]++;
    struct slot *sl = &slots[(size_t)s * window + q % window];
    sl->seq = q;
    sl->remaining = nclients - 1;
    sl->t0 = now_ns();
    send_privmsg(s, channel, 's', s, q);
}

static void pm_send(int pair) {
    int a = 2 * pair;
    if (done || cs[a].state == C_DEAD) return;
    uint32_t q = next_seq[pair]++;
    struct slot *sl = &slots[(size_t)pair * window + q % window];
    sl->seq = q;
    sl->remaining = 1;
    sl->t0 = now_ns();
    send_privmsg(a, cs[a + 1].nick, 'q', pair, q);
}

static void complete(struct slot *sl, uint64_t t1) {
    sl->remaining = 0;
    all_msgs++;
    if (measuring) {
        st_msgs++;
        add_lat(t1 - sl->t0);
    }
    last_progress = t1 * 1e-9;
}

/* payload: <tag><a>.<b>.xxx; returns 0 when malformed */
static int parse_payload(const char *p, const char *end, char *tag, unsigned *a, unsigned *b) {
    if (p >= end) return 0;
    *tag = *p++;
    unsigned long x = 0, y = 0;
    const char *q = p;
    while (p < end && *p >= '0' && *p <= '9') x = x * 10 + (*p++ - '0');
    if (p == q || p >= end || *p++ != '.') return 0;
    q = p;
    while (p < end && *p >= '0' && *p <= '9') y = y * 10 + (*p++ - '0');
    if (p == q || p >= end || *p != '.') return 0;
    *a = (unsigned)x;
    *b = (unsigned)y;
    return 1;
}

static uint64_t t_read; /* when the data being parsed was read: receipt time */

static void on_privmsg(int id, const char *payload, const char *end) {
    char tag;
    unsigned a, b;
    uint64_t t1 = t_read;
    /* the payload we sent is linesize - 2 - strlen("PRIVMSG <target> :") bytes */
    if (!parse_payload(payload, end, &tag, &a, &b)) {
        n_bad++;
        note_error("%s: malformed PRIVMSG payload", cs[id].nick);
        return;
    }
    if (*mode == 'f') {
        if (tag != 's' || a >= (unsigned)nsenders) { n_bad++; return; }
        if ((size_t)(end - payload) != fan_payload) {
            n_bad++;
            note_error("%s: PRIVMSG payload of %zu bytes, sent %zu", cs[id].nick,
                       (size_t)(end - payload), fan_payload);
        }
        if ((int)a == id) { n_self++; return; } /* our own message echoed */
        uint32_t *ex = &expect[(size_t)id * nsenders + a];
        if (b != *ex) {
            n_misorder++;
            note_error("%s: message %u of sender %u arrived, expected %u", cs[id].nick, b, a, *ex);
        }
        *ex = b + 1;
        struct slot *sl = &slots[(size_t)a * window + b % window];
        if (sl->seq != b || sl->remaining == 0) { n_stray++; return; }
        all_deliveries++;
        if (measuring) st_deliveries++;
        if (--sl->remaining == 0) {
            complete(sl, t1);
            fan_send(a);
        }
    } else { /* pm */
        if (a >= (unsigned)nclients) { n_bad++; return; }
        if (tag == 'q' && id == 2 * (int)a + 1) {
            if (b != expect[a]) {
                n_misorder++;
                note_error("%s: PM %u of pair %u arrived, expected %u", cs[id].nick, b, a,
                           expect[a]);
            }
            expect[a] = b + 1;
            send_privmsg(id, cs[id - 1].nick, 'r', a, b);
        } else if (tag == 'r' && id == 2 * (int)a) {
            if (b != expect_back[a]) {
                n_misorder++;
                note_error("%s: answer %u of pair %u arrived, expected %u", cs[id].nick, b, a,
                           expect_back[a]);
            }
            expect_back[a] = b + 1;
            struct slot *sl = &slots[(size_t)a * window + b % window];
            if (sl->seq != b || sl->remaining == 0) { n_stray++; return; }
            all_deliveries++;
            if (measuring) st_deliveries++;
            complete(sl, t1);
            pm_send(a);
        } else {
            n_bad++;
        }
    }
}

/* ---------------------------------------------------------- line handling */

static int is_numeric(const char *cmd, size_t len) {
    return len == 3 && cmd[0] >= '0' && cmd[0] <= '9' && cmd[1] >= '0' && cmd[1] <= '9' &&
           cmd[2] >= '0' && cmd[2] <= '9';
}

static void handle_line(int id, char *line, size_t len) {
    struct conn *c = &cs[id];
    char *p = line, *end = line + len;
    if (len && *p == ':') { /* skip the prefix */
        char *sp = memchr(p, ' ', len);
        if (!sp) return;
        p = sp + 1;
    }
    char *cmd = p;
    char *sp = memchr(p, ' ', end - p);
    size_t clen = sp ? (size_t)(sp - p) : (size_t)(end - p);
    char *rest = sp ? sp + 1 : end;
    if (clen == 7 && !memcmp(cmd, "PRIVMSG", 7)) {
        /* <target> :<payload> */
        char *colon = memchr(rest, ' ', end - rest);
        if (!colon || colon + 1 >= end || colon[1] != ':') {
            n_bad++;
            return;
        }
        if (loading) on_privmsg(id, colon + 2, end);
        return;
    }
    if (clen == 4 && !memcmp(cmd, "PING", 4)) {
        char msg[600];
        int n = snprintf(msg, sizeof msg, "PONG %.*s\r\n", (int)(end - rest), rest);
        put(id, msg, n > (int)sizeof msg - 1 ? (int)sizeof msg - 1 : n);
        return;
    }
    if (clen == 5 && !memcmp(cmd, "ERROR", 5)) {
        n_error_lines++;
        note_error("%s got: %.*s", c->nick, (int)(len > 160 ? 160 : len), line);
        return;
    }
    if (!is_numeric(cmd, clen)) return;
    int num = (cmd[0] - '0') * 100 + (cmd[1] - '0') * 10 + (cmd[2] - '0');
    if (num == 1 && c->state == C_REGISTERING) {
        registering--;
        registered++;
        last_progress = now();
        if (want_join) {
            char msg[64];
            int n = snprintf(msg, sizeof msg, "JOIN %s\r\n", channel);
            c->state = C_JOINING;
            put(id, msg, n);
        } else {
            c->state = C_READY;
        }
    } else if (num == 366 && c->state == C_JOINING) {
        c->state = C_READY;
        joined++;
        last_progress = now();
    } else if (num >= 400 && num < 600 && num != 422) {
        n_err_numerics++;
        note_error("%s got: %.*s", c->nick, (int)(len > 160 ? 160 : len), line);
    }
}

static char rbuf[RBUF + CARRY];

static void on_readable(int id) {
    struct conn *c = &cs[id];
    for (;;) {
        memcpy(rbuf, c->carry, c->carry_len);
        ssize_t r = recv(c->fd, rbuf + c->carry_len, RBUF, 0);
        if (r < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            if (errno == EINTR) continue;
            conn_dead(id, strerror(errno));
            return;
        }
        if (r == 0) {
            conn_dead(id, "closed by the server");
            return;
        }
        t_read = now_ns();
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
        size_t total = c->carry_len + (size_t)r;
        char *p = rbuf, *end = rbuf + total;
        for (;;) {
            char *nl = memchr(p, '\n', end - p);
            if (!nl) break;
            size_t len = nl - p;
            if (len && p[len - 1] == '\r') len--;
            handle_line(id, p, len);
            if (c->state == C_DEAD) return;
            p = nl + 1;
        }
        size_t left = end - p;
        if (left > CARRY) {
            n_bad++;
            note_error("%s: line longer than %d bytes", c->nick, CARRY);
            left = 0;
        }
        memmove(c->carry, p, left);
        c->carry_len = (uint16_t)left;
        if ((size_t)r < RBUF) return; /* drained: back to epoll */
    }
}

static void pump(int timeout_ms) {
    struct epoll_event evs[512];
    int n = wait_events(evs, 512, timeout_ms);
    for (int e = 0; e < n; e++) {
        int id = evs[e].data.u32;
        struct conn *c = &cs[id];
        if (c->state == C_DEAD) continue;
        if (c->state == C_CONNECTING) {
            connected(id);
            continue;
        }
        if (evs[e].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) on_readable(id);
        if (c->state != C_DEAD && (evs[e].events & EPOLLOUT)) flush_out(id);
    }
}

/* ------------------------------------------------------------------ run */

static void print_errors(void) {
    printf(", \"closed\": %d, \"error_lines\": %llu, \"err_numerics\": %llu, "
           "\"misorder\": %llu, \"stray\": %llu, \"bad\": %llu, \"self_echo\": %llu",
           closed_n, (unsigned long long)n_error_lines, (unsigned long long)n_err_numerics,
           (unsigned long long)n_misorder, (unsigned long long)n_stray,
           (unsigned long long)n_bad, (unsigned long long)n_self);
    if (first_error[0]) {
        printf(", \"first_error\": ");
        json_str(first_error);
    }
}

/* connect and register everyone (and join), at most `batch` registering */
static int register_all(double *reg_s, double *join_s) {
    double t0 = now(), deadline = t0 + reglimit;
    double t_reg = -1;
    last_progress = t0;
    while (now() < deadline) {
        while (opened < ncs && registering < batch) open_one();
        if (registered + closed_n >= ncs && t_reg < 0) t_reg = now();
        if (closed_n) break;
        if (registered == ncs && (!want_join || joined == ncs)) break;
        pump(20);
        if (now() - last_progress > 10.0) {
            note_error("no registration progress for 10 s (%d registered, %d joined of %d)",
                       registered, joined, ncs);
            break;
        }
    }
    double t1 = now();
    *reg_s = (t_reg < 0 ? t1 : t_reg) - t0;
    *join_s = t1 - t0;
    if (registered < ncs || (want_join && joined < ncs)) {
        note_error("registered %d, joined %d of %d within %.0f s", registered, joined, ncs,
                   reglimit);
        return 0;
    }
    return 1;
}

static void close_all(void) {
    for (int i = 0; i < opened; i++)
        if (cs[i].state != C_DEAD && cs[i].fd >= 0) close_rst(cs[i].fd);
}

static void run_load(void) {
    int fan = *mode == 'f';
    want_join = fan;
    ncs = fan ? nclients : 2 * nclients;
    if (fan && (nsenders < 1 || nsenders > nclients)) fail("senders must be 1..clients");
    if (fan && nclients < 2) fail("fanout needs at least 2 clients");
    int units = fan ? nsenders : nclients;
    fan_payload = linesize - 2 - (strlen("PRIVMSG  :") + strlen(channel));
    cs = calloc(ncs, sizeof *cs);
    slots = calloc((size_t)units * window, sizeof *slots);
    next_seq = calloc(units, sizeof *next_seq);
    expect = calloc(fan ? (size_t)nclients * nsenders : (size_t)nclients, sizeof *expect);
    expect_back = calloc(units, sizeof *expect_back);
    if (!cs || !slots || !next_seq || !expect || !expect_back) fail("out of memory");
    double reg_s, join_s;
    int ok = register_all(&reg_s, &join_s);
    uint64_t loaded = 0;
    if (ok) {
        /* settle: let join floods drain, send nothing */
        double t = now(), until = t + settle;
        while (now() < until && !closed_n) pump(10);
        if (closed_n) ok = 0;
    }
    if (ok) {
        loading = 1;
        last_progress = start_window();
        for (int u = 0; u < units; u++)
            for (int k = 0; k < window; k++)
                if (fan) fan_send(u);
                else pm_send(u);
        while (!done) {
            pump(2);
            double t = now();
            tick(t);
            if (closed_n) {
                ok = 0;
                break;
            }
            if (t - last_progress > 10.0) {
                note_error("no message completed for 10 s (server stalled?)");
                ok = 0;
                break;
            }
        }
        loaded = all_msgs;
    }
    double w = s1.t - s0.t;
    printf("{\"ok\": %s, \"mode\": \"%s\", \"clients\": %d", ok && done ? "true" : "false", mode,
           ncs);
    if (fan) printf(", \"senders\": %d", nsenders);
    else printf(", \"pairs\": %d", nclients);
    printf(", \"window\": %d, \"line\": %zu, \"registered\": %d, \"joined\": %d, "
           "\"reg_s\": %.3f, \"join_s\": %.3f, \"settle_s\": %.3f, \"warmup_s\": %.3f",
           window, linesize, registered, joined, reg_s, join_s, settle, warmup);
    if (ok && done && w > 0) {
        printf(", \"msgs\": %llu, \"deliveries\": %llu, \"msgs_s\": %.1f, \"deliveries_s\": %.1f, "
               "\"msgs_total\": %llu",
               (unsigned long long)st_msgs, (unsigned long long)st_deliveries, st_msgs / w,
               st_deliveries / w, (unsigned long long)loaded);
        print_lat("ms", 1e6, 4);
        print_snaps(&s0, &s1);
    }
    print_errors();
    printf("}\n");
    fflush(stdout);
    close_all();
}

static void run_idle(void) {
    want_join = 0;
    ncs = nclients;
    cs = calloc(ncs, sizeof *cs);
    if (!cs) fail("out of memory");
    struct snap before, after;
    take_snap(&before);
    double reg_s, join_s;
    int ok = register_all(&reg_s, &join_s);
    double until = now() + 1.0; /* let the server settle (deferred frees, lazy allocations) */
    while (now() < until) pump(10);
    take_snap(&after);
    int still = 0;
    for (int i = 0; i < ncs; i++) still += cs[i].state == C_READY;
    printf("{\"ok\": %s, \"mode\": \"idle\", \"clients\": %d, \"batch\": %d, \"registered\": %d, "
           "\"connected_after\": %d, \"reg_s\": %.3f, \"rss_before_kib\": %ld, "
           "\"rss_after_kib\": %ld",
           ok && still == ncs ? "true" : "false", ncs, batch, registered, still, reg_s,
           before.rss_kib, after.rss_kib);
    if (registered > 0 && before.rss_kib >= 0 && after.rss_kib >= 0)
        printf(", \"kib_per_conn\": %.4f", (double)(after.rss_kib - before.rss_kib) / registered);
    print_snaps(&before, &after);
    print_errors();
    printf("}\n");
    fflush(stdout);
    close_all();
}

/* ----------------------------------------------------------------- main */

/* the options of chatload alone (the others: common_option) */
static int own_option(int opt, const char *arg) {
    switch (opt) {
    case 'c': nclients = atoi(arg); return 1;
    case 'S': nsenders = atoi(arg); return 1;
    case 'W': window = atoi(arg); return 1;
    case 's': linesize = strtoul(arg, NULL, 10); return 1;
    case 'e': settle = atof(arg); return 1;
    case 'R': reglimit = atof(arg); return 1;
    case 'x': prefix = arg; return 1;
    case 'o': offset = atoi(arg); return 1;
    case 'a': password = arg; return 1;
    }
    return 0;
}

static const char USAGE[] =
    "usage: chatload -m fanout|pm|idle -P PORT[,PORT...] [-h HOST] [-c CLIENTS|PAIRS]\n"
    "       [-S SENDERS] [-W WINDOW] [-s LINE_BYTES] [-e SETTLE_S] [-w WARMUP_S]\n"
    "       [-d DURATION_S] [-b REGISTRATIONS_IN_FLIGHT] [-R REGISTRATION_LIMIT_S]\n"
    "       [-x NICK_PREFIX] [-o NICK_OFFSET] [-a PASSWORD] [-p SERVER_PID[,PID...]]\n"
    "       [-T HARD_LIMIT_S]\n";

int main(int argc, char **argv) {
    parse_options(argc, argv, "m:h:P:c:S:W:s:e:w:d:b:R:x:o:a:p:T:", USAGE, own_option);
    if (port <= 0 || port > 65535 || nclients < 1 || nclients > 1000000 || batch < 1 ||
        window < 1 || window > 4096 || duration <= 0 || warmup < 0 || settle < 0 ||
        reglimit <= 0 || strlen(prefix) > 12 || offset < 0)
        usage();
    if (strcmp(mode, "fanout") && strcmp(mode, "pm") && strcmp(mode, "idle")) usage();
    if (linesize < 64 || linesize > 512) fail("line size must be 64-512 bytes");
    if (hardlimit <= 0) hardlimit = reglimit + settle + warmup + duration + 30;
    start();

    /* enough descriptors for every client */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rlim_t want = (rlim_t)(2 * nclients + 64);
        if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
            rl.rlim_cur = (rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want) ? want : rl.rlim_max;
            setrlimit(RLIMIT_NOFILE, &rl);
        }
    }

    if (!strcmp(mode, "idle")) run_idle();
    else run_load();
    return 0;
}
