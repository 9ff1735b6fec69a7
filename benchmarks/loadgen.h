/*
 * loadgen.h: what the load generators echoload.c and chatload.c share (one
 * thread, epoll, one JSON line on stdout): clocks, the failure line, the
 * hard time limit, samples of the server's and the machine's counters
 * (/proc), latency percentiles, the measured window, the options both take
 * and the server's address.
 *
 * -P takes one port or a comma-separated list (chatload connects client i
 * to the i-th port modulo their number: several nodes of one server), -p one
 * PID or a list (their CPU times and VmRSS are summed; with more than one,
 * each one's CPU time is printed too).
 *
 * Each generator stays a single-file compile (this header is found next to
 * it), from benchmarks/:
 *
 *     gcc -O2 -Wall -o build/echoload echoload.c
 *
 * Before including it a generator defines LOADGEN_MODE and LOADGEN_DURATION,
 * the defaults of -m and -d.  Everything here is static: it is included once.
 */
#ifndef LOADGEN_H
#define LOADGEN_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define MAXCPU 256
#define MAXLIST 16 /* ports of -P, PIDs of -p */
#define RBUF (256 * 1024)

/* options both generators take (common_option) */
static const char *mode = LOADGEN_MODE;
static const char *host = "127.0.0.1";
static int port = 0;     /* the first of ports */
static int ports[MAXLIST], nports;
static int batch = 50;   /* connections (echoload) or registrations (chatload) in flight */
static double warmup = 1.0, duration = LOADGEN_DURATION, hardlimit = 0;
static int srvpids[MAXLIST], nsrvpids; /* -p: the server processes sampled */

static struct sockaddr_storage addr; /* host:port (start) */
static socklen_t addrlen;
static int epfd;
static double ticks_per_s;

/* ------------------------------------------------------------------ util */

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

/* a JSON string; control and non-ASCII bytes become spaces */
static void json_str(const char *s) {
    putchar('"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') putchar('\\');
        if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e) putchar(' ');
        else putchar(*s);
    }
    putchar('"');
}

/* print {"ok": false, "mode": ..., "error": ...} and exit 1 */
static void fail(const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    printf("{\"ok\": false, \"mode\": ");
    json_str(mode);
    printf(", \"error\": ");
    json_str(msg);
    printf("}\n");
    fflush(stdout);
    exit(1);
}

static void on_alarm(int sig) {
    (void)sig;
    static const char m[] = "{\"ok\": false, \"error\": \"hard time limit reached\"}\n";
    if (write(1, m, sizeof m - 1) < 0) {}
    _exit(3);
}

static const char *usage_text; /* the generator's, for usage() */

static void usage(void) {
    fputs(usage_text, stderr);
    exit(2);
}

/* N[,N...] into list (at most MAXLIST); their number, 0 when malformed */
static int parse_list(const char *arg, int *list) {
    int n = 0;
    for (const char *p = arg; n < MAXLIST; p++) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v <= 0 || v > 0x7fffffff || (*end && *end != ',')) return 0;
        list[n++] = (int)v;
        p = end;
        if (!*p) return n;
    }
    return 0;
}

/* one of the options both generators take; 0 when opt is not one of them */
static int common_option(int opt, const char *arg) {
    switch (opt) {
    case 'm': mode = arg; return 1;
    case 'h': host = arg; return 1;
    case 'P':
        nports = parse_list(arg, ports);
        for (int i = 0; i < nports; i++)
            if (ports[i] > 65535) nports = 0;
        if (!nports) usage();
        port = ports[0];
        return 1;
    case 'w': warmup = atof(arg); return 1;
    case 'd': duration = atof(arg); return 1;
    case 'b': batch = atoi(arg); return 1;
    case 'p':
        if (!(nsrvpids = parse_list(arg, srvpids))) usage();
        return 1;
    case 'T': hardlimit = atof(arg); return 1;
    }
    return 0;
}

/* the command line: the options above, then the generator's own (own_option
   returns 0 for an option it does not know); usage (usage_text) on others */
static void parse_options(int argc, char **argv, const char *optstring, const char *usage_line,
                          int (*own_option)(int opt, const char *arg)) {
    int opt;
    usage_text = usage_line;
    while ((opt = getopt(argc, argv, optstring)) != -1)
        if (!common_option(opt, optarg) && !own_option(opt, optarg)) usage();
}

/* after the options (hardlimit set): SIGPIPE ignored, the hard time limit
   armed (SIGALRM), the address parsed, the epoll instance created */
static void start(void) {
    ticks_per_s = sysconf(_SC_CLK_TCK);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGALRM, on_alarm);
    alarm((unsigned)(hardlimit + 1));

    memset(&addr, 0, sizeof addr);
    struct sockaddr_in *a4 = (struct sockaddr_in *)&addr;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&addr;
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons(port);
        addrlen = sizeof *a4;
    } else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(port);
        addrlen = sizeof *a6;
    } else {
        fail("host must be a numeric IP address: %s", host);
    }
    if (nports == 0) ports[nports++] = port;

    epfd = epoll_create1(0);
    if (epfd < 0) fail("epoll_create1: %s", strerror(errno));
}

static void ep_set(int fd, uint32_t events, uint32_t id, int op) {
    struct epoll_event ev = {.events = events, .data.u32 = id};
    if (epoll_ctl(epfd, op, fd, &ev) < 0) fail("epoll_ctl: %s", strerror(errno));
}

/* epoll_wait; 0 when interrupted by a signal */
static int wait_events(struct epoll_event *evs, int max, int timeout_ms) {
    int n = epoll_wait(epfd, evs, max, timeout_ms);
    if (n < 0 && errno != EINTR) fail("epoll_wait: %s", strerror(errno));
    return n < 0 ? 0 : n;
}

/* close with RST instead of FIN: no TIME_WAIT left behind by thousands of sockets */
static void close_rst(int fd) {
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
}

/* ------------------------------------------------------------- counters */

/* machine and server counters at one moment */
struct snap {
    double t;
    double gen_cpu;      /* our rusage, s */
    double srv_cpu;      /* servers' utime+stime, s (-1 when unknown) */
    double srv_each[MAXLIST]; /* each server's */
    double busy[MAXCPU]; /* per-CPU busy time (sampled by ticks), s */
    double idle[MAXCPU]; /* per-CPU idle + iowait time (exact with NO_HZ), s */
    int ncpu;
    long rss_kib;        /* servers' VmRSS (-1 when unknown) */
};

static void take_snap(struct snap *s) {
    struct rusage ru;
    char path[64], line[1024];
    FILE *f;
    s->t = now();
    getrusage(RUSAGE_SELF, &ru);
    s->gen_cpu = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 +
                 ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
    s->srv_cpu = nsrvpids ? 0 : -1;
    s->rss_kib = nsrvpids ? 0 : -1;
    for (int i = 0; i < nsrvpids; i++) {
        int srvpid = srvpids[i];
        double cpu = -1;
        long rss = -1;
        snprintf(path, sizeof path, "/proc/%d/stat", srvpid);
        f = fopen(path, "r");
        if (f) {
            char buf[2048];
            size_t n = fread(buf, 1, sizeof buf - 1, f);
            buf[n] = 0;
            fclose(f);
            char *p = strrchr(buf, ')');
            if (p) {
                /* fields after ')': state(3) ... utime(14) stime(15) */
                unsigned long ut = 0, st = 0;
                int field = 3;
                char *save = NULL;
                char *tok = strtok_r(p + 2, " ", &save);
                while (tok) {
                    if (field == 14) ut = strtoul(tok, NULL, 10);
                    if (field == 15) { st = strtoul(tok, NULL, 10); break; }
                    tok = strtok_r(NULL, " ", &save);
                    field++;
                }
                cpu = (ut + st) / ticks_per_s;
            }
        }
        snprintf(path, sizeof path, "/proc/%d/status", srvpid);
        f = fopen(path, "r");
        if (f) {
            while (fgets(line, sizeof line, f))
                if (!strncmp(line, "VmRSS:", 6)) rss = strtol(line + 6, NULL, 10);
            fclose(f);
        }
        s->srv_each[i] = cpu;
        s->srv_cpu = cpu < 0 || s->srv_cpu < 0 ? -1 : s->srv_cpu + cpu;
        s->rss_kib = rss < 0 || s->rss_kib < 0 ? -1 : s->rss_kib + rss;
    }
    s->ncpu = 0;
    f = fopen("/proc/stat", "r");
    if (f) {
        while (fgets(line, sizeof line, f)) {
            unsigned long long v[10] = {0};
            int cpu;
            if (strncmp(line, "cpu", 3) || line[3] < '0' || line[3] > '9') continue;
            if (sscanf(line + 3, "%d %llu %llu %llu %llu %llu %llu %llu %llu", &cpu,
                       &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]) < 9)
                continue;
            if (cpu < 0 || cpu >= MAXCPU) continue;
            /* user nice system idle iowait irq softirq steal */
            s->busy[cpu] = (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / ticks_per_s;
            s->idle[cpu] = (v[3] + v[4]) / ticks_per_s;
            if (cpu + 1 > s->ncpu) s->ncpu = cpu + 1;
        }
        fclose(f);
    }
}

/* the JSON fields of the interval a..b: wall, our CPU, the server's, per-CPU busy and idle */
static void print_snaps(const struct snap *a, const struct snap *b) {
    printf(", \"wall_s\": %.6f, \"gen_cpu_s\": %.6f", b->t - a->t, b->gen_cpu - a->gen_cpu);
    if (a->srv_cpu >= 0 && b->srv_cpu >= 0) {
        printf(", \"srv_cpu_s\": %.4f", b->srv_cpu - a->srv_cpu);
        if (nsrvpids > 1) {
            printf(", \"srv_cpu_each_s\": [");
            for (int i = 0; i < nsrvpids; i++)
                printf("%s%.4f", i ? ", " : "", b->srv_each[i] - a->srv_each[i]);
            printf("]");
        }
    }
    printf(", \"cpu_busy_s\": [");
    for (int i = 0; i < b->ncpu; i++)
        printf("%s%.4f", i ? ", " : "", b->busy[i] - a->busy[i]);
    printf("], \"cpu_idle_s\": [");
    for (int i = 0; i < b->ncpu; i++)
        printf("%s%.4f", i ? ", " : "", b->idle[i] - a->idle[i]);
    printf("]");
}

/* ------------------------------------------------------------- latencies */

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* latencies in ns, grown on demand */
static uint64_t *lat;
static size_t nlat, caplat;

static void add_lat(uint64_t ns) {
    if (nlat == caplat) {
        size_t nc = caplat ? caplat * 2 : 1 << 16;
        if (nc > (64u << 20)) return; /* 512 MiB of samples: keep the first 64 M */
        uint64_t *p = realloc(lat, nc * sizeof *lat);
        if (!p) fail("out of memory for latencies");
        lat = p;
        caplat = nc;
    }
    lat[nlat++] = ns;
}

/* p50/p90/p99/p999/min/max/mean_<unit>: ns divided by scale, `decimals` digits */
static void print_lat(const char *unit, double scale, int decimals) {
    if (!nlat) return;
    qsort(lat, nlat, sizeof *lat, cmp_u64);
    static const double ps[] = {50, 90, 99, 99.9};
    static const char *names[] = {"p50", "p90", "p99", "p999"};
    double sum = 0;
    for (size_t i = 0; i < nlat; i++) sum += lat[i];
    for (int i = 0; i < 4; i++) {
        size_t r = (size_t)((ps[i] / 100.0) * nlat + 0.999999999); /* nearest rank */
        if (r < 1) r = 1;
        if (r > nlat) r = nlat;
        printf(", \"%s_%s\": %.*f", names[i], unit, decimals, lat[r - 1] / scale);
    }
    printf(", \"min_%s\": %.*f, \"max_%s\": %.*f, \"mean_%s\": %.*f", unit, decimals,
           lat[0] / scale, unit, decimals, lat[nlat - 1] / scale, unit, decimals,
           sum / nlat / scale);
}

/* ---------------------------------------------------- the measured window */

static double t_warm, t_end;
static int measuring, done;
static struct snap s0, s1; /* the window's edges */

/* the load begins now: warm-up, then the window; returns now */
static double start_window(void) {
    double t0 = now();
    t_warm = t0 + warmup;
    t_end = t_warm + duration;
    return t0;
}

static void end_window(void) {
    take_snap(&s1);
    measuring = 0;
    done = 1;
}

/* open or close the window when its time has come */
static void tick(double t) {
    if (!measuring && !done && t >= t_warm) {
        measuring = 1;
        take_snap(&s0);
    }
    if (measuring && t >= t_end) end_window();
}

#endif /* LOADGEN_H */
