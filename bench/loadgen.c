/*
 * loadgen: load generator for echo servers, one thread on epoll.
 *
 *   loadgen -p PORT [-m MODE] [-c CONNS] [-s SIZE] [-w WARMUP] [-d SECONDS] [-a ADDRS] [-x]
 *           [-P SERVER_PID[,PID...]]
 *
 * Modes:
 *   echo       CONNS persistent connections. Each sends a SIZE-byte message, waits for all of its echo,
 *              then sends the next one.
 *   connect    CONNS connections at a time, each a new one: send SIZE bytes, shut down the sending side
 *              (SHUT_WR), read the echo until the server closes, close.
 *   bytecount  like connect, but the request is "SIZE " and the payload, with no half-close: the server
 *              closes once it has echoed the payload.
 *   hold       open CONNS connections, check each with one SIZE-byte echo, print one JSON line and keep
 *              them open until standard input reaches end of file.
 *
 * Every byte that comes back is compared with what was sent; anything else (a wrong, missing or extra
 * byte, a reset, a refused connection) counts as an error and the connection is replaced. Payloads are
 * random bytes taken at a varying offset of one buffer, so a server that mixes up messages fails.
 *
 * The run is WARMUP seconds (not counted) and then SECONDS measured; requests finishing inside the
 * measured window are counted and their latencies (first byte sent to last byte received; for the
 * connection modes, from connect()) go into a 1 us histogram. Then requests in flight get up to two
 * seconds to finish. Output: one JSON line. "mib_s" is payload echoed per second, one direction;
 * "cpu_pct" is this process's CPU time during the window, in percent of one core: near 100 means the
 * load generator, not the server, was the limit. "wait_pct" is the time it spent runnable but waiting for
 * a CPU, in percent of the window: other processes' doing. With -P, the same two figures for the server
 * process over the same window ("server_cpu_pct", "server_wait_pct"), from /proc.
 *
 * ADDRS > 1 spreads the connections over the source addresses 127.0.0.1 .. 127.0.0.ADDRS, as from
 * several client hosts: a server's per-peer connection cap sees several peers, and new connections draw
 * on as many ranges of ephemeral ports (from one address, connect() runs short of ports whose TIME_WAIT
 * may be reused near 14k connections/s on Linux).
 *
 * -x begins every connection with a PROXY protocol v2 header (HAProxy's proxy-protocol.txt), as a
 * balancer with send-proxy-v2 does: command PROXY, TCP over IPv4, the connection's own source address
 * and port and its destination. It goes out with the first request, in the same write, as HAProxy
 * sends it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "procstat.h"

enum mode { ECHO, CONNECT, BYTECOUNT, HOLD };
enum phase { WARMUP, MEASURE, DRAIN, DONE };

/* Opening connections faster than the server accepts them overflows its listen queue; the kernel then
 * drops SYNs and the client retries only after a second. So at most this many connections may be waiting
 * for their first echo at once. */
#define MAX_OPENING 32
#define HIST_US 1000000 /* latencies up to 1 s at 1 us resolution; longer ones count as 1 s */
#define STDIN_TAG ((void *)1)

struct conn {
    int fd;
    int connecting; /* non-blocking connect() not finished yet */
    int opened;     /* its first request completed (the server accepted it) */
    unsigned src;   /* source address index */
    const unsigned char *payload;
    char head[64];  /* PROXY header (first request, with -x), then the bytecount header */
    size_t head_len, sent, want, got;
    uint64_t start_ns;
};

static struct {
    const char *server_pid;
    enum mode mode;
    struct sockaddr_in server;
    unsigned conns, addrs;
    size_t size;
    double warmup, duration;
    int proxy;
} cfg = {NULL, ECHO, {0}, 10, 1, 1024, 1.0, 3.0, 0};

static int ep;
static enum phase phase = WARMUP;
static unsigned char *pattern, *rbuf;
static size_t rbuf_size;
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t *hist;
static uint64_t requests, errors, opening, live;
/* Failed connections are replaced from the main loop, not from fail(): no recursion, and a server that
 * refuses everything costs one round of the loop per attempt, not a spin inside it. */
static struct conn **reopen, **reopen_batch;
static unsigned reopen_count;
static char first_error[160];

static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void die(const char *what)
{
    perror(what);
    exit(2);
}

static void set_events(struct conn *c, uint32_t events, int op)
{
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(ep, op, c->fd, &ev) < 0)
        die("epoll_ctl");
}

static void open_conn(struct conn *c);

/* Give up on c: count the error, close it, and open a replacement while the run goes on. */
static void fail(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(struct conn *c, const char *fmt, ...)
{
    if (!first_error[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(first_error, sizeof first_error, fmt, ap);
        va_end(ap);
    }
    errors++;
    close(c->fd);
    c->fd = -1;
    live--;
    if (!c->opened)
        opening--;
    if (phase < DRAIN)
        reopen[reopen_count++] = c;
}

static void start_request(struct conn *c)
{
    /* Offsets vary by 1..4096 bytes: the pattern buffer is SIZE + 4096 bytes long. */
    c->payload = pattern + rng() % 4096;
    c->sent = c->got = 0;
    c->want = cfg.size;
    c->head_len = cfg.mode == BYTECOUNT ? (size_t)snprintf(c->head, sizeof c->head, "%zu ", cfg.size) : 0;
    if (cfg.mode == ECHO || cfg.mode == HOLD)
        c->start_ns = now_ns();
}

/* Write as much of the request as the socket takes; returns 0 when all is written, 1 if more remains. */
static int send_some(struct conn *c)
{
    size_t total = c->head_len + cfg.size;
    while (c->sent < total) {
        struct iovec iov[2];
        int n = 0;
        if (c->sent < c->head_len)
            iov[n++] = (struct iovec){c->head + c->sent, c->head_len - c->sent};
        size_t off = c->sent > c->head_len ? c->sent - c->head_len : 0;
        iov[n++] = (struct iovec){(void *)(c->payload + off), cfg.size - off};
        struct msghdr msg = {.msg_iov = iov, .msg_iovlen = n};
        ssize_t w = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN)
                return 1;
            fail(c, "send: %s", strerror(errno));
            return -1;
        }
        c->sent += w;
    }
    if (cfg.mode == CONNECT && shutdown(c->fd, SHUT_WR) < 0) {
        fail(c, "shutdown: %s", strerror(errno));
        return -1;
    }
    return 0;
}

/* Send what can be sent and watch for the rest. `registered`: whether c->fd is in the epoll set yet. */
static void pump(struct conn *c, int registered, int had_out)
{
    int more = send_some(c);
    if (more < 0)
        return;
    uint32_t events = EPOLLIN | (more ? EPOLLOUT : 0);
    if (!registered)
        set_events(c, events, EPOLL_CTL_ADD);
    else if (more != had_out)
        set_events(c, events, EPOLL_CTL_MOD);
}

/* Put a PROXY v2 header naming this connection's own ends before what c->head holds (the bytecount
 * header, if any): 16 bytes of signature, version and command, family and length, then 12 of addresses. */
static void add_proxy_header(struct conn *c)
{
    static const unsigned char signature[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                                0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
    struct sockaddr_in src;
    socklen_t len = sizeof src;
    if (getsockname(c->fd, (struct sockaddr *)&src, &len) < 0)
        die("getsockname");
    unsigned char header[28];
    memcpy(header, signature, 12);
    header[12] = 0x21; /* version 2, PROXY */
    header[13] = 0x11; /* AF_INET, STREAM */
    header[14] = 0;
    header[15] = 12;
    memcpy(header + 16, &src.sin_addr, 4);
    memcpy(header + 20, &cfg.server.sin_addr, 4);
    memcpy(header + 24, &src.sin_port, 2);
    memcpy(header + 26, &cfg.server.sin_port, 2);
    memmove(c->head + sizeof header, c->head, c->head_len);
    memcpy(c->head, header, sizeof header);
    c->head_len += sizeof header;
}

static void open_conn(struct conn *c)
{
    c->opened = 0;
    c->connecting = 0;
    opening++;
    live++;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0)
        die("socket");
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (cfg.addrs > 1) {
        /* Without IP_BIND_ADDRESS_NO_PORT, bind() would pick the port now, from a smaller pool. */
        setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        struct sockaddr_in src = {.sin_family = AF_INET};
        src.sin_addr.s_addr = htonl(INADDR_LOOPBACK + c->src);
        if (bind(c->fd, (struct sockaddr *)&src, sizeof src) < 0)
            die("bind");
    }
    start_request(c);
    if (cfg.mode == CONNECT || cfg.mode == BYTECOUNT)
        c->start_ns = now_ns();
    int done = connect(c->fd, (struct sockaddr *)&cfg.server, sizeof cfg.server);
    int err = done == 0 ? 0 : errno;
    if (cfg.proxy && (done == 0 || err == EINPROGRESS))
        add_proxy_header(c); /* the source port is chosen by connect() */
    if (done == 0) {
        pump(c, 0, 0);
    } else if (err == EINPROGRESS) {
        c->connecting = 1;
        set_events(c, EPOLLIN | EPOLLOUT, EPOLL_CTL_ADD);
    } else {
        fail(c, "connect: %s", strerror(err));
    }
}

static void record(struct conn *c)
{
    if (!c->opened) {
        c->opened = 1;
        opening--;
    }
    if (phase != MEASURE)
        return;
    uint64_t us = (now_ns() - c->start_ns) / 1000;
    hist[us < HIST_US ? us : HIST_US - 1]++;
    requests++;
}

/* The whole echo is in: go on with this connection, replace it, or let it rest. */
static void complete(struct conn *c, int eof)
{
    record(c);
    if (eof) {
        close(c->fd);
        c->fd = -1;
        live--;
        if (phase < DRAIN)
            open_conn(c);
    } else if (cfg.mode == ECHO && phase < DRAIN) {
        start_request(c);
        pump(c, 1, 0);
    } else if (cfg.mode == ECHO) {
        close(c->fd);
        c->fd = -1;
        live--;
    }
}

static void readable(struct conn *c)
{
    ssize_t n = recv(c->fd, rbuf, rbuf_size, 0);
    if (n < 0) {
        if (errno != EAGAIN)
            fail(c, "recv: %s", strerror(errno));
        return;
    }
    if (n == 0) {
        if (c->got == c->want && c->sent == c->head_len + cfg.size && cfg.mode != ECHO && cfg.mode != HOLD)
            complete(c, 1);
        else
            fail(c, "the server closed after %zu of %zu bytes of echo", c->got, c->want);
        return;
    }
    if (c->got + n > c->want) {
        fail(c, "%zu bytes of echo for a %zu-byte message", c->got + n, c->want);
        return;
    }
    if (memcmp(rbuf, c->payload + c->got, n) != 0) {
        fail(c, "wrong bytes in the echo at offset %zu..%zu", c->got, c->got + n);
        return;
    }
    c->got += n;
    if (c->got == c->want && (cfg.mode == ECHO || cfg.mode == HOLD))
        complete(c, 0); /* the connection modes complete at end of file */
}

static void handle(struct conn *c, uint32_t events)
{
    if (c->connecting) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            fail(c, "connect: %s", strerror(err));
            return;
        }
        c->connecting = 0;
        pump(c, 1, 1);
        return;
    }
    if (events & EPOLLOUT) {
        int more = send_some(c);
        if (more < 0)
            return;
        if (!more)
            set_events(c, EPOLLIN, EPOLL_CTL_MOD);
    }
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
        readable(c);
}

static void usage(void)
{
    fprintf(stderr, "usage: loadgen -p PORT [-H 127.0.0.1] [-m echo|connect|bytecount|hold] [-c CONNS] "
                    "[-s SIZE] [-w WARMUP_S] [-d SECONDS] [-a ADDRS] [-x] [-P SERVER_PID]\n");
    exit(2);
}

static void parse(int argc, char **argv)
{
    const char *host = "127.0.0.1";
    int port = 0, opt;
    while ((opt = getopt(argc, argv, "H:p:m:c:s:w:d:a:P:x")) != -1) {
        switch (opt) {
        case 'x': cfg.proxy = 1; break;
        case 'P': cfg.server_pid = optarg; break;
        case 'H': host = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'c': cfg.conns = strtoul(optarg, NULL, 10); break;
        case 's': cfg.size = strtoul(optarg, NULL, 10); break;
        case 'w': cfg.warmup = atof(optarg); break;
        case 'd': cfg.duration = atof(optarg); break;
        case 'a': cfg.addrs = strtoul(optarg, NULL, 10); break;
        case 'm':
            if (!strcmp(optarg, "echo")) cfg.mode = ECHO;
            else if (!strcmp(optarg, "connect")) cfg.mode = CONNECT;
            else if (!strcmp(optarg, "bytecount")) cfg.mode = BYTECOUNT;
            else if (!strcmp(optarg, "hold")) cfg.mode = HOLD;
            else usage();
            break;
        default: usage();
        }
    }
    if (port <= 0 || port > 65535 || !cfg.conns || !cfg.size || !cfg.addrs || cfg.addrs > 254)
        usage();
    cfg.server.sin_family = AF_INET;
    cfg.server.sin_port = htons(port);
    if (inet_pton(AF_INET, host, &cfg.server.sin_addr) != 1)
        usage();
}

static const char *mode_name(void)
{
    static const char *names[] = {"echo", "connect", "bytecount", "hold"};
    return names[cfg.mode];
}

static double percentile(double p)
{
    uint64_t rank = (uint64_t)(p * requests), seen = 0;
    for (unsigned us = 0; us < HIST_US; us++) {
        seen += hist[us];
        if (seen > rank)
            return us + 0.5;
    }
    return HIST_US;
}

/* CPU and run-queue wait of this process and the server at the start (i = 0) or end (1) of the window. */
static void sample(double *cpu, double *wait, double *server_cpu, double *server_wait, int i)
{
    cpu[i] = cpu_seconds();
    wait[i] = runq_wait_seconds("self");
    if (cfg.server_pid) {
        server_cpu[i] = over_pids(cfg.server_pid, process_cpu_seconds);
        server_wait[i] = over_pids(cfg.server_pid, runq_wait_seconds);
    }
}

int main(int argc, char **argv)
{
    parse(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    pattern = malloc(cfg.size + 4096);
    rbuf_size = 256 * 1024;
    rbuf = malloc(rbuf_size);
    hist = calloc(HIST_US, sizeof *hist);
    struct conn *conns = calloc(cfg.conns, sizeof *conns);
    reopen = calloc(cfg.conns, sizeof *reopen);
    reopen_batch = calloc(cfg.conns, sizeof *reopen_batch);
    if (!pattern || !rbuf || !hist || !conns || !reopen || !reopen_batch)
        die("malloc");
    for (size_t i = 0; i < cfg.size + 4096; i++)
        pattern[i] = rng() >> 32;
    if ((ep = epoll_create1(0)) < 0)
        die("epoll_create1");
    if (cfg.mode == HOLD) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = STDIN_TAG};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev) < 0)
            die("epoll_ctl stdin");
    }

    unsigned started = 0;
    int persistent = cfg.mode == ECHO || cfg.mode == HOLD;
    uint64_t t_open = now_ns(), t_measure = 0, t_end = 0, t_drain = 0, t_start = 0;
    double cpu[2] = {0}, wait[2] = {0}, server_cpu[2] = {0}, server_wait[2] = {0};
    struct epoll_event evs[256];
    while (phase != DONE) {
        unsigned batch = reopen_count;
        memcpy(reopen_batch, reopen, batch * sizeof *reopen);
        reopen_count = 0;
        for (unsigned i = 0; i < batch; i++)
            open_conn(reopen_batch[i]);
        while (started < cfg.conns && (!persistent || opening < MAX_OPENING)) {
            conns[started].src = started % cfg.addrs;
            open_conn(&conns[started++]);
        }
        uint64_t now = now_ns();
        /* Persistent connections warm up once all are open, or after 10 s of trying: a server that
         * refuses some of them gets measured anyway, errors and all. New connections keep opening. */
        int all_open = (started == cfg.conns && (opening == 0 || !persistent)) || now - t_open > 10000000000ull;
        if (phase == WARMUP && all_open && !t_measure) {
            if (cfg.mode == HOLD) {
                printf("{\"mode\":\"hold\",\"conns\":%u,\"open_s\":%.3f,\"errors\":%llu}\n", cfg.conns,
                       (now - t_open) / 1e9, (unsigned long long)errors);
                fflush(stdout);
                t_measure = UINT64_MAX;
            } else {
                t_measure = now + (uint64_t)(cfg.warmup * 1e9);
            }
        }
        if (phase == WARMUP && t_measure && now >= t_measure) {
            phase = MEASURE;
            sample(cpu, wait, server_cpu, server_wait, 0);
            t_start = now;
            t_end = now + (uint64_t)(cfg.duration * 1e9);
        } else if (phase == MEASURE && now >= t_end) {
            phase = DRAIN;
            sample(cpu, wait, server_cpu, server_wait, 1);
            t_drain = now + 2000000000u;
            t_end = now;
        } else if (phase == DRAIN && (live == 0 || now >= t_drain)) {
            phase = DONE;
            break;
        }
        int n = epoll_wait(ep, evs, 256, 5);
        if (n < 0 && errno != EINTR)
            die("epoll_wait");
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == STDIN_TAG) {
                char b[256];
                if (read(0, b, sizeof b) <= 0)
                    phase = DONE;
                continue;
            }
            struct conn *c = evs[i].data.ptr;
            if (c->fd >= 0)
                handle(c, evs[i].events);
        }
    }
    if (cfg.mode == HOLD)
        return 0;
    /* Requests still unanswered after the drain are lost echoes. */
    errors += live;
    if (live && !first_error[0])
        snprintf(first_error, sizeof first_error, "%llu requests unanswered 2 s after the end",
                 (unsigned long long)live);
    double secs = (t_end - t_start) / 1e9;
    printf("{\"mode\":\"%s\",\"proxy\":%d,\"conns\":%u,\"size\":%zu,\"seconds\":%.3f,\"requests\":%llu,\"errors\":%llu,"
           "\"req_s\":%.1f,\"mib_s\":%.2f,\"p50_us\":%.1f,\"p99_us\":%.1f,\"cpu_pct\":%.1f,"
           "\"wait_pct\":%.1f,\"server_cpu_pct\":%.1f,\"server_wait_pct\":%.1f,\"first_error\":\"%s\"}\n",
           mode_name(), cfg.proxy, cfg.conns, cfg.size, secs, (unsigned long long)requests, (unsigned long long)errors,
           requests / secs, requests * (double)cfg.size / secs / 1048576.0, requests ? percentile(0.50) : 0,
           requests ? percentile(0.99) : 0, 100 * (cpu[1] - cpu[0]) / secs, 100 * (wait[1] - wait[0]) / secs,
           100 * (server_cpu[1] - server_cpu[0]) / secs, 100 * (server_wait[1] - server_wait[0]) / secs,
           first_error);
    return 0;
}
