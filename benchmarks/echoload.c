/*
 * echoload: a load generator for echo servers (one thread, epoll).
 *
 * Modes (-m):
 *   pingpong  C TCP connections; each sends a message of S bytes and waits
 *             for the whole echo before sending the next.  Every echoed byte
 *             is compared with what was sent, every request's latency is
 *             recorded (exact percentiles).
 *   stream    C TCP connections write chunks of S bytes and read continuously,
 *             at most I bytes in flight (sent, not yet echoed) per connection;
 *             every echoed byte is verified.
 *   udp       C connected UDP sockets, one datagram of S bytes in flight each;
 *             no answer within the timeout counts as a loss.  Answers are
 *             matched by a sequence number and verified byte for byte.
 *   idle      opens C TCP connections (at most B being set up at once), checks
 *             each with a 1-byte echo, holds them, reads the server's VmRSS
 *             before and after, checks them all again, closes them.
 *
 * Load runs for the warm-up (-w), then the measured window (-d); at most -n
 * measured operations (requests, datagrams, or chunks of S bytes echoed);
 * everything stops after -T seconds whatever happens.
 * With -p PID the server's CPU time (/proc/PID/stat) and, in idle mode, its
 * RSS are sampled at the window's edges, with this process's rusage and the
 * machine's busy time (/proc/stat).  Prints one JSON line on stdout.
 *
 * Build (loadgen.h next to it): gcc -O2 -Wall -o echoload echoload.c
 */
#define LOADGEN_MODE "pingpong"
#define LOADGEN_DURATION 5.0
#include "loadgen.h"

#define PERIOD 65521u /* pattern period (prime) */
#define PATLEN (PERIOD + (1u << 20) + 8192u)

static uint8_t *pat;
static uint8_t rbuf[RBUF];

/* options of echoload alone (the others: loadgen.h) */
static int nconns = 10;
static size_t size = 1024;
static uint64_t maxcount = 100000000ull;
static double udp_timeout_ms = 100.0;
static size_t inflight = 1 << 20;

/* ------------------------------------------------------------------ util */

static void set_nonblock(int fd) {
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static int tcp_connect_blocking(void) {
    int fd = socket(addr.ss_family, SOCK_STREAM, 0);
    if (fd < 0) fail("socket: %s", strerror(errno));
    if (connect(fd, (struct sockaddr *)&addr, addrlen) < 0)
        fail("connect to port %d: %s", port, strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    set_nonblock(fd);
    return fd;
}

/* pattern offset of request k on connection c (pingpong) */
static size_t msg_off(int c, uint64_t k) {
    return (size_t)((c * 131u + k * 977u) % 4093u);
}

/* ------------------------------------------------------------- pingpong */

struct pconn {
    int fd;
    uint64_t k;
    size_t sent, recvd;
    const uint8_t *msg;
    uint64_t t0;
    int wout;
};

static uint64_t pp_count, pp_bytes;

static void pp_send(struct pconn *c, int id) {
    while (c->sent < size) {
        ssize_t n = send(c->fd, c->msg + c->sent, size - c->sent, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            fail("send: %s", strerror(errno));
        }
        c->sent += n;
    }
    int want = c->sent < size;
    if (want != c->wout) {
        ep_set(c->fd, EPOLLIN | (want ? EPOLLOUT : 0), id, EPOLL_CTL_MOD);
        c->wout = want;
    }
}

static void pp_start(struct pconn *c, int id) {
    c->msg = pat + msg_off(id, c->k);
    c->sent = c->recvd = 0;
    c->t0 = now_ns();
    pp_send(c, id);
}

static void run_pingpong(void) {
    struct pconn *cs = calloc(nconns, sizeof *cs);
    for (int i = 0; i < nconns; i++) {
        cs[i].fd = tcp_connect_blocking();
        ep_set(cs[i].fd, EPOLLIN, i, EPOLL_CTL_ADD);
    }
    start_window();
    for (int i = 0; i < nconns; i++) pp_start(&cs[i], i);
    struct epoll_event evs[256];
    double last_progress = now();
    while (!done) {
        int n = wait_events(evs, 256, 10);
        for (int e = 0; e < n; e++) {
            int id = evs[e].data.u32;
            struct pconn *c = &cs[id];
            if (evs[e].events & EPOLLOUT) pp_send(c, id);
            if (evs[e].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                size_t want = size - c->recvd;
                if (want > RBUF) want = RBUF;
                if (want == 0) fail("server sent more than was asked (connection %d)", id);
                ssize_t r = recv(c->fd, rbuf, want, 0);
                if (r == 0) fail("server closed connection %d after %llu requests", id,
                                 (unsigned long long)c->k);
                if (r < 0) {
                    if (errno == EAGAIN || errno == EINTR) continue;
                    fail("recv: %s", strerror(errno));
                }
                if (c->recvd + r > c->sent)
                    fail("server echoed bytes not sent yet (connection %d)", id);
                if (memcmp(rbuf, c->msg + c->recvd, r))
                    fail("wrong echo on connection %d, request %llu", id,
                         (unsigned long long)c->k);
                c->recvd += r;
                if (c->recvd == size) {
                    uint64_t t1 = now_ns();
                    if (measuring) {
                        add_lat(t1 - c->t0);
                        pp_count++;
                        pp_bytes += size;
                        if (pp_count >= maxcount) end_window();
                    }
                    c->k++;
                    last_progress = t1 * 1e-9;
                    if (!done) pp_start(c, id);
                }
            }
        }
        double t = now();
        tick(t);
        if (t - last_progress > 5.0) fail("no echo for 5 s (server stalled?)");
    }
    printf("{\"ok\": true, \"mode\": \"pingpong\", \"conns\": %d, \"size\": %zu, "
           "\"warmup_s\": %.3f, \"requests\": %llu, \"rps\": %.1f, \"mib_s\": %.2f",
           nconns, size, warmup, (unsigned long long)pp_count, pp_count / (s1.t - s0.t),
           pp_bytes / (s1.t - s0.t) / 1048576.0);
    print_lat("us", 1e3, 1);
    print_snaps(&s0, &s1);
    printf("}\n");
    for (int i = 0; i < nconns; i++) close(cs[i].fd);
}

/* --------------------------------------------------------------- stream */

struct sconn {
    int fd;
    uint64_t sent, recvd;
    int wout;
};

static uint64_t st_bytes;

static void st_pump(struct sconn *c, int id) {
    int blocked = 0;
    while (c->sent - c->recvd + size <= inflight) {
        size_t off = c->sent % PERIOD;
        ssize_t n = send(c->fd, pat + off, size, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) { blocked = 1; break; }
            fail("send: %s", strerror(errno));
        }
        c->sent += n;
    }
    if (blocked != c->wout) {
        ep_set(c->fd, EPOLLIN | (blocked ? EPOLLOUT : 0), id, EPOLL_CTL_MOD);
        c->wout = blocked;
    }
}

static void run_stream(void) {
    if (size > (1u << 20)) fail("stream chunk size is at most 1 MiB");
    if (inflight < size) inflight = size;
    struct sconn *cs = calloc(nconns, sizeof *cs);
    for (int i = 0; i < nconns; i++) {
        cs[i].fd = tcp_connect_blocking();
        ep_set(cs[i].fd, EPOLLIN, i, EPOLL_CTL_ADD);
    }
    start_window();
    for (int i = 0; i < nconns; i++) st_pump(&cs[i], i);
    struct epoll_event evs[256];
    double last_progress = now();
    while (!done) {
        int n = wait_events(evs, 256, 10);
        for (int e = 0; e < n; e++) {
            int id = evs[e].data.u32;
            struct sconn *c = &cs[id];
            if (evs[e].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                ssize_t r = recv(c->fd, rbuf, RBUF, 0);
                if (r == 0) fail("server closed connection %d", id);
                if (r < 0) {
                    if (errno != EAGAIN && errno != EINTR) fail("recv: %s", strerror(errno));
                } else {
                    if (c->recvd + r > c->sent) fail("server echoed bytes not sent yet");
                    size_t done_b = 0;
                    while (done_b < (size_t)r) {
                        size_t off = (c->recvd + done_b) % PERIOD;
                        size_t take = PERIOD - off;
                        if (take > r - done_b) take = r - done_b;
                        if (memcmp(rbuf + done_b, pat + off, take))
                            fail("wrong echo on connection %d at byte %llu", id,
                                 (unsigned long long)(c->recvd + done_b));
                        done_b += take;
                    }
                    c->recvd += r;
                    if (measuring) {
                        st_bytes += r;
                        if (st_bytes >= maxcount * size) end_window();
                    }
                    last_progress = now();
                }
            }
            if (!done) st_pump(c, id);
        }
        double t = now();
        tick(t);
        if (t - last_progress > 5.0) fail("no echo for 5 s (server stalled?)");
    }
    printf("{\"ok\": true, \"mode\": \"stream\", \"conns\": %d, \"size\": %zu, "
           "\"inflight\": %zu, \"warmup_s\": %.3f, \"bytes\": %llu, \"mib_s\": %.2f",
           nconns, size, inflight, warmup, (unsigned long long)st_bytes,
           st_bytes / (s1.t - s0.t) / 1048576.0);
    print_snaps(&s0, &s1);
    printf("}\n");
    for (int i = 0; i < nconns; i++) close(cs[i].fd);
}

/* ------------------------------------------------------------------ udp */

struct uconn {
    int fd;
    uint32_t seq;
    uint64_t t0;
    double deadline;
};

static uint8_t ubuf[65536];
static uint64_t u_ok, u_lost, u_late, u_bad, u_refused;

static void u_fill(uint8_t *b, uint32_t id, uint32_t seq) {
    memcpy(b, &id, 4);
    memcpy(b + 4, &seq, 4);
    memcpy(b + 8, pat + msg_off(id, seq), size - 8);
}

static void u_send(struct uconn *c, int id) {
    c->seq++;
    u_fill(ubuf, id, c->seq);
    c->t0 = now_ns();
    c->deadline = c->t0 * 1e-9 + udp_timeout_ms / 1000.0;
    ssize_t n = send(c->fd, ubuf, size, 0);
    if (n < 0) {
        if (errno == ECONNREFUSED) { if (measuring) u_refused++; return; }
        if (errno == EAGAIN || errno == ENOBUFS) return; /* times out: a loss */
        fail("udp send: %s", strerror(errno));
    }
}

static void run_udp(void) {
    if (size < 8 || size > 65507) fail("udp size must be 8-65507");
    struct uconn *cs = calloc(nconns, sizeof *cs);
    for (int i = 0; i < nconns; i++) {
        int fd = socket(addr.ss_family, SOCK_DGRAM, 0);
        if (fd < 0) fail("socket: %s", strerror(errno));
        if (connect(fd, (struct sockaddr *)&addr, addrlen) < 0) fail("connect: %s", strerror(errno));
        set_nonblock(fd);
        cs[i].fd = fd;
        ep_set(fd, EPOLLIN, i, EPOLL_CTL_ADD);
    }
    start_window();
    for (int i = 0; i < nconns; i++) u_send(&cs[i], i);
    struct epoll_event evs[256];
    double last_progress = now();
    static uint8_t expect[65536];
    while (!done) {
        int n = wait_events(evs, 256, 2);
        for (int e = 0; e < n; e++) {
            int id = evs[e].data.u32;
            struct uconn *c = &cs[id];
            for (;;) {
                ssize_t r = recv(c->fd, rbuf, sizeof rbuf, MSG_TRUNC);
                if (r < 0) {
                    if (errno == EAGAIN || errno == EINTR) break;
                    if (errno == ECONNREFUSED) { if (measuring) u_refused++; break; }
                    fail("udp recv: %s", strerror(errno));
                }
                uint32_t rid = 0, rseq = 0;
                if (r >= 8) { memcpy(&rid, rbuf, 4); memcpy(&rseq, rbuf + 4, 4); }
                if (r >= 8 && rid == (uint32_t)id && rseq != c->seq) {
                    if (measuring) u_late++; /* answer to a datagram already counted lost */
                    continue;
                }
                uint64_t t1 = now_ns();
                u_fill(expect, id, c->seq);
                int good = (size_t)r == size && !memcmp(rbuf, expect, size);
                if (measuring) {
                    if (good) { u_ok++; add_lat(t1 - c->t0); }
                    else u_bad++;
                    if (u_ok >= maxcount) end_window();
                }
                last_progress = t1 * 1e-9;
                if (!done) u_send(c, id);
            }
        }
        double t = now();
        for (int i = 0; i < nconns && !done; i++)
            if (t >= cs[i].deadline) {
                if (measuring) u_lost++;
                u_send(&cs[i], i);
            }
        tick(t);
        if (t - last_progress > 5.0) fail("no echo for 5 s (server stalled or absent?)");
    }
    double w = s1.t - s0.t;
    printf("{\"ok\": true, \"mode\": \"udp\", \"conns\": %d, \"size\": %zu, \"warmup_s\": %.3f, "
           "\"timeout_ms\": %.1f, \"datagrams\": %llu, \"dps\": %.1f, \"mib_s\": %.2f, "
           "\"lost\": %llu, \"late\": %llu, \"bad\": %llu, \"refused\": %llu",
           nconns, size, warmup, udp_timeout_ms, (unsigned long long)u_ok, u_ok / w,
           u_ok * (double)size / w / 1048576.0, (unsigned long long)u_lost,
           (unsigned long long)u_late, (unsigned long long)u_bad,
           (unsigned long long)u_refused);
    print_lat("us", 1e3, 1);
    print_snaps(&s0, &s1);
    printf("}\n");
    for (int i = 0; i < nconns; i++) close(cs[i].fd);
}

/* ----------------------------------------------------------------- idle */

enum { I_CONNECTING, I_CHECKING, I_IDLE, I_FAILED };

struct iconn {
    int fd;
    int state;
};

static int check_all(struct iconn *cs, int n, double limit_s, int *answered) {
    /* send one byte on each idle connection, then collect the echoes */
    int sent = 0;
    *answered = 0;
    for (int i = 0; i < n; i++) {
        if (cs[i].state != I_IDLE) continue;
        uint8_t b = (uint8_t)(i * 7 + 3);
        if (send(cs[i].fd, &b, 1, MSG_NOSIGNAL) == 1) {
            ep_set(cs[i].fd, EPOLLIN, i, EPOLL_CTL_ADD);
            cs[i].state = I_CHECKING;
            sent++;
        }
    }
    struct epoll_event evs[512];
    double deadline = now() + limit_s;
    int pending = sent;
    while (pending > 0 && now() < deadline) {
        int k = epoll_wait(epfd, evs, 512, 100);
        for (int e = 0; e < k; e++) {
            int id = evs[e].data.u32;
            uint8_t b;
            ssize_t r = recv(cs[id].fd, &b, 1, 0);
            if (r < 0 && errno == EAGAIN) continue;
            epoll_ctl(epfd, EPOLL_CTL_DEL, cs[id].fd, NULL);
            pending--;
            if (r == 1 && b == (uint8_t)(id * 7 + 3)) {
                cs[id].state = I_IDLE;
                (*answered)++;
            } else {
                cs[id].state = I_FAILED;
            }
        }
    }
    return sent;
}

static void run_idle(void) {
    struct iconn *cs = calloc(nconns, sizeof *cs);
    struct snap before, after, t_open0, t_open1;
    take_snap(&before);
    t_open0 = before;
    int opened = 0, active = 0, established = 0, failed = 0;
    char first_error[160] = "";
    struct epoll_event evs[512];
    double deadline = now() + (hardlimit > 0 ? hardlimit * 0.6 : 120);
    double last_progress = now();
    while ((opened < nconns || active > 0) && now() < deadline) {
        while (opened < nconns && active < batch) {
            int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK, 0);
            if (fd < 0) {
                snprintf(first_error, sizeof first_error, "socket after %d connections: %s",
                         opened, strerror(errno));
                nconns = opened; /* stop opening more */
                break;
            }
            int r = connect(fd, (struct sockaddr *)&addr, addrlen);
            if (r < 0 && errno != EINPROGRESS) {
                if (!first_error[0])
                    snprintf(first_error, sizeof first_error, "connect #%d: %s", opened,
                             strerror(errno));
                close(fd);
                cs[opened].fd = -1;
                cs[opened].state = I_FAILED;
                failed++;
                opened++;
                continue;
            }
            cs[opened].fd = fd;
            cs[opened].state = I_CONNECTING;
            ep_set(fd, EPOLLOUT, opened, EPOLL_CTL_ADD);
            opened++;
            active++;
        }
        int k = epoll_wait(epfd, evs, 512, 100);
        for (int e = 0; e < k; e++) {
            int id = evs[e].data.u32;
            struct iconn *c = &cs[id];
            if (c->state == I_CONNECTING) {
                int err = 0;
                socklen_t el = sizeof err;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
                uint8_t b = (uint8_t)(id * 7 + 3);
                if (err || send(c->fd, &b, 1, MSG_NOSIGNAL) != 1) {
                    if (!first_error[0])
                        snprintf(first_error, sizeof first_error, "connect #%d: %s", id,
                                 strerror(err ? err : errno));
                    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
                    close(c->fd);
                    c->fd = -1;
                    c->state = I_FAILED;
                    failed++;
                    active--;
                    continue;
                }
                c->state = I_CHECKING;
                ep_set(c->fd, EPOLLIN, id, EPOLL_CTL_MOD);
            } else if (c->state == I_CHECKING) {
                uint8_t b;
                ssize_t r = recv(c->fd, &b, 1, 0);
                if (r < 0 && errno == EAGAIN) continue;
                epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
                active--;
                if (r == 1 && b == (uint8_t)(id * 7 + 3)) {
                    c->state = I_IDLE;
                    established++;
                    last_progress = now();
                } else {
                    if (!first_error[0])
                        snprintf(first_error, sizeof first_error,
                                 "connection #%d: %s", id,
                                 r == 0 ? "closed by the server" : "bad echo");
                    close(c->fd);
                    c->fd = -1;
                    c->state = I_FAILED;
                    failed++;
                }
            }
        }
        if (now() - last_progress > 10.0) {
            if (!first_error[0]) snprintf(first_error, sizeof first_error, "no progress for 10 s");
            break;
        }
    }
    take_snap(&t_open1);
    /* let the server settle (deferred frees, lazy allocations) */
    usleep(1000000);
    take_snap(&after);
    int answered = 0;
    int checked = check_all(cs, opened, 30.0, &answered);
    printf("{\"ok\": %s, \"mode\": \"idle\", \"asked\": %d, \"established\": %d, "
           "\"failed\": %d, \"connect_s\": %.3f, \"rechecked\": %d, \"answered\": %d, "
           "\"rss_before_kib\": %ld, \"rss_after_kib\": %ld",
           established > 0 ? "true" : "false", opened, established, failed,
           t_open1.t - t_open0.t, checked, answered, before.rss_kib, after.rss_kib);
    if (established > 0 && before.rss_kib >= 0 && after.rss_kib >= 0)
        printf(", \"kib_per_conn\": %.4f",
               (double)(after.rss_kib - before.rss_kib) / established);
    if (first_error[0]) {
        printf(", \"error\": ");
        json_str(first_error);
    }
    print_snaps(&before, &after);
    printf("}\n");
    fflush(stdout);
    for (int i = 0; i < opened; i++)
        if (cs[i].fd >= 0) close_rst(cs[i].fd);
}

/* ----------------------------------------------------------------- main */

/* the options of echoload alone (the others: common_option) */
static int own_option(int opt, const char *arg) {
    switch (opt) {
    case 'c': nconns = atoi(arg); return 1;
    case 's': size = strtoul(arg, NULL, 10); return 1;
    case 'n': maxcount = strtoull(arg, NULL, 10); return 1;
    case 't': udp_timeout_ms = atof(arg); return 1;
    case 'i': inflight = strtoul(arg, NULL, 10); return 1;
    }
    return 0;
}

static const char USAGE[] =
    "usage: echoload -m pingpong|stream|udp|idle -P PORT [-h HOST] [-c CONNS]\n"
    "       [-s SIZE] [-w WARMUP_S] [-d DURATION_S] [-n MAXCOUNT] [-p SERVER_PID]\n"
    "       [-t UDP_TIMEOUT_MS] [-i INFLIGHT_BYTES] [-b CONNECT_BATCH] [-T HARD_LIMIT_S]\n";

int main(int argc, char **argv) {
    parse_options(argc, argv, "m:h:P:c:s:w:d:n:p:t:i:b:T:", USAGE, own_option);
    if (port <= 0 || port > 65535 || nports > 1 || nconns < 1 || batch < 1 || duration <= 0 ||
        warmup < 0)
        usage();
    if (size < 1 || size > (16u << 20)) fail("size must be 1 byte to 16 MiB");
    if (hardlimit <= 0) hardlimit = warmup + duration + 30;
    start();

    /* the pattern: random bytes, periodic with PERIOD so a stream can be
       written from any offset without wrapping */
    size_t plen = PATLEN + size;
    pat = malloc(plen);
    if (!pat) fail("out of memory");
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < PERIOD; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        pat[i] = (uint8_t)(x >> 24);
    }
    for (size_t i = PERIOD; i < plen; i++) pat[i] = pat[i - PERIOD];

    if (!strcmp(mode, "pingpong")) run_pingpong();
    else if (!strcmp(mode, "stream")) run_stream();
    else if (!strcmp(mode, "udp")) run_udp();
    else if (!strcmp(mode, "idle")) run_idle();
    else usage();
    fflush(stdout);
    return 0;
}
