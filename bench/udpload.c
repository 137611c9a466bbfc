/*
 * udpload: load client for UDP echo servers, one thread on epoll.
 *
 *   udpload -p PORT [-H 127.0.0.1] [-m window|rate] [-S SOCKETS] [-a ADDRS] [-s SIZE] [-W WINDOW]
 *           [-r RATE] [-t TIMEOUT_S] [-D DRAIN_S] [-w WARMUP_S] [-d SECONDS] [-P SERVER_PID[,PID...]]
 *
 * Modes:
 *   window  closed loop (the default): each of SOCKETS sockets keeps WINDOW datagrams in flight, sending
 *           the next one when one comes back or when one's TIMEOUT expires.
 *   rate    open loop: RATE datagrams a second in all, on a fixed schedule, over the sockets in turn,
 *           whatever comes back. At 1,000/s from one socket, one datagram is in flight at a time.
 *
 * Socket i is bound to 127.0.0.(1 + i % ADDRS), as from several client hosts (a server's per-peer rate
 * sees several peers), and connected to the server, as most clients are: the kernel then hands it only
 * what comes from the server's address and port, so an answer from another source counts as lost.
 *
 * A datagram is SIZE bytes (16 or more): its sequence number on its socket (8 bytes), the socket's index
 * (4), a tag of this run (4), then bytes of a random pattern from an offset that depends on the sequence
 * number. Every byte that comes back is checked. A datagram sent ends as one of
 *   answered  back intact within TIMEOUT; its round trip (from just before the send to the return of the
 *             receive) goes into a 1 us histogram;
 *   late      back intact after TIMEOUT;
 *   lost      not back by DRAIN seconds (default 2 x TIMEOUT) after the measured window;
 * and apart from those are counted: duplicates (a datagram back again), corrupted (a wrong length, wrong
 * bytes, another socket's datagram or a sequence number never sent), send errors (datagrams the kernel
 * would not take: a full send buffer, a port unreachable), stale (answers to datagrams sent too long ago to
 * be told apart, from the warm-up; not counted otherwise).
 *
 * The run is WARMUP seconds (not counted) and then SECONDS measured: the datagrams sent in that window are
 * those counted. Then nothing more is sent, and the run ends once every counted datagram is answered, or
 * DRAIN seconds after the window. In rate mode, a sender woken late sends a few of the datagrams it missed
 * and skips the rest of them ("skipped" in the window, not counted as sent): "sent_s" is the rate it
 * offered.
 * Output: one JSON line. "echoed_s" is counted datagrams answered a second,
 * "loss_pct" the lost and late ones in percent of those sent. "cpu_pct", "wait_pct" are this process's
 * CPU time and time spent runnable waiting for a CPU in the window, in percent of one core; with -P, the
 * same for the server ("server_cpu_pct", "server_wait_pct"), and its CPU time a datagram answered
 * ("server_cpu_us"). "server_rx_drops" and "client_rx_drops" are the kernel's receive-queue drops
 * (/proc/net/udp's last column) of the server's port and of this run's sockets, from the start of the
 * window to the end of the run: which side could not keep up when datagrams were lost.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "procstat.h"

enum mode { WINDOW, RATE };
enum phase { WARMUP, MEASURE, DRAIN, DONE };
enum state { FREE, OUT, ANSWERED, TIMED_OUT };

#define BATCH 64       /* datagrams a sendmmsg or recvmmsg */
#define HIST_US 1000000 /* round trips up to 1 s at 1 us resolution; longer ones count as 1 s */
#define HEADER 16
#define PATTERN_SPAN 4096
#define TIMER_TAG UINT32_MAX
/* In rate mode the sender wakes at most every MIN_GAP_NS and sends what is due: a burst of RATE x 200 us
 * datagrams (10 at 50k/s, 100 at 500k/s), below what a socket's default 208 KiB receive queue holds (256
 * datagrams of 64 B, 92 of 1,400 B, measured: 2,000 sent to a socket that did not read), so the bursts
 * lose nothing that a smooth sender would not. Every wake-up costs: in this VM a timed one cost the client
 * 15 to 20 us of CPU. Measured against the C echo, 8 sockets: with a 20 us gap the client used 97% of its
 * core to offer 160k/s and fell behind; a 100 us gap cost it 25% at 10k/s, 36% at 50k/s, 77% at 200k/s;
 * a 250 us gap 13%, 19% and 52%; this 200 us gap 11%, 20% to 23% and 42% to 48%. */
#define MIN_GAP_NS 200000u
/* A sender woken late (descheduled on a busy machine) sends what one wake-up sends and at most MAX_BURST
 * more of the datagrams it missed, and skips the rest ("skipped"): a catching-up burst would overflow the
 * server's receive queue and count the client's hiccup as the server's loss. */
#define MAX_BURST 32

struct slot {
    uint64_t seq, sent_ns;
    uint8_t state, counted;
};

struct sock {
    int fd;
    uint32_t index;
    uint16_t port; /* its own, for its kernel drop counter */
    uint64_t next_seq, oldest;
    unsigned in_flight, refill;
    struct slot *ring;
    unsigned char *out; /* BATCH datagrams being sent */
};

static struct {
    const char *server_pid;
    enum mode mode;
    struct sockaddr_in server;
    unsigned sockets, addrs, window;
    size_t size;
    double rate, timeout, drain, warmup, duration;
} cfg = {NULL, WINDOW, {0}, 1, 1, 16, 64, 1000, 0.2, -1, 0.2, 1.0};

static struct sock *socks;
static uint64_t ring_mask, timeout_ns, tag;
static unsigned char *pattern;
static uint32_t *hist;
static enum phase phase = WARMUP;
static uint64_t sent, answered, late, lost, duplicates, corrupted, send_errors, stale, counted_out;
/* Rate mode: datagrams of the schedule so far (sent, refused or skipped), and those of the measured
 * window skipped. */
static uint64_t scheduled, skipped, max_burst;
static uint64_t max_rtt_ns, t_first;

static void die(const char *what)
{
    perror(what);
    exit(2);
}

static void put32(unsigned char *p, uint32_t v) { memcpy(p, &v, 4); }
static void put64(unsigned char *p, uint64_t v) { memcpy(p, &v, 8); }
static uint32_t get32(const unsigned char *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t get64(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return v; }

static const unsigned char *body_of(uint64_t seq)
{
    return pattern + (seq * 2654435761u) % PATTERN_SPAN;
}

/* The kernel's receive-queue drops of the UDP sockets bound to any of `ports` (IPv4 and IPv6 alike). */
static unsigned long long rx_drops(const uint16_t *ports, unsigned count)
{
    static const char *files[] = {"/proc/net/udp", "/proc/net/udp6"};
    unsigned long long total = 0;
    char line[512];
    for (unsigned f = 0; f < 2; f++) {
        FILE *in = fopen(files[f], "r");
        if (!in)
            continue;
        while (fgets(line, sizeof line, in)) {
            /* sl, local address:port, remote, st, tx:rx queue, tr:tm, retrnsmt, uid, timeout, inode, ref,
             * pointer, drops; the header line does not parse. */
            unsigned port;
            unsigned long long drops;
            if (sscanf(line, " %*s %*[0-9A-Fa-f]:%x %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %llu", &port,
                       &drops) != 2)
                continue;
            for (unsigned i = 0; i < count; i++)
                if (ports[i] == port)
                    total += drops;
        }
        fclose(in);
    }
    return total;
}

static unsigned long long client_drops(void)
{
    uint16_t ports[256];
    for (unsigned i = 0; i < cfg.sockets; i++)
        ports[i] = socks[i].port;
    return rx_drops(ports, cfg.sockets);
}

/* Send up to `count` datagrams on s; returns how many the kernel took. */
static unsigned send_some(struct sock *s, unsigned count, uint64_t now)
{
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    unsigned done = 0;
    while (done < count) {
        unsigned n = count - done < BATCH ? count - done : BATCH;
        for (unsigned k = 0; k < n; k++) {
            unsigned char *d = s->out + k * cfg.size;
            uint64_t seq = s->next_seq + k;
            put64(d, seq);
            put32(d + 8, s->index);
            put32(d + 12, (uint32_t)tag);
            memcpy(d + HEADER, body_of(seq), cfg.size - HEADER);
            iov[k] = (struct iovec){d, cfg.size};
            msgs[k] = (struct mmsghdr){.msg_hdr = {.msg_iov = &iov[k], .msg_iovlen = 1}};
        }
        int w = sendmmsg(s->fd, msgs, n, 0);
        if (w <= 0) {
            send_errors += count - done;
            break;
        }
        for (int k = 0; k < w; k++) {
            struct slot *slot = &s->ring[s->next_seq & ring_mask];
            if (slot->state == OUT) { /* overrun: the ring is sized so that it never is */
                s->in_flight--;
                if (slot->counted) {
                    counted_out--;
                    lost++;
                }
            }
            *slot = (struct slot){s->next_seq++, now, OUT, phase == MEASURE};
            s->in_flight++;
            if (slot->counted) {
                sent++;
                counted_out++;
            }
        }
        done += w;
        if ((unsigned)w < n)
            break;
    }
    return done;
}

/* One datagram that came back on s at `now`. */
static void received(struct sock *s, const unsigned char *d, size_t len, int truncated, uint64_t now)
{
    if (truncated || len != cfg.size || get32(d + 8) != s->index || get32(d + 12) != (uint32_t)tag) {
        corrupted++;
        return;
    }
    uint64_t seq = get64(d);
    if (seq >= s->next_seq || memcmp(d + HEADER, body_of(seq), cfg.size - HEADER) != 0) {
        corrupted++;
        return;
    }
    struct slot *slot = &s->ring[seq & ring_mask];
    if (slot->seq != seq || slot->state == FREE) {
        stale++;
        return;
    }
    if (slot->state == ANSWERED) {
        duplicates++;
        return;
    }
    uint64_t rtt = now - slot->sent_ns;
    if (slot->state == OUT) {
        s->in_flight--;
        if (phase < DRAIN)
            s->refill++;
        if (slot->counted) {
            counted_out--;
            if (rtt < timeout_ns) {
                answered++;
                uint64_t us = rtt / 1000;
                hist[us < HIST_US ? us : HIST_US - 1]++;
                if (rtt > max_rtt_ns)
                    max_rtt_ns = rtt;
            } else {
                late++;
            }
        }
    } else if (slot->counted) { /* TIMED_OUT: counted lost until now */
        lost--;
        late++;
    }
    slot->state = ANSWERED;
}

static void receive(struct sock *s)
{
    static unsigned char *bufs;
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    if (!bufs && !(bufs = malloc(BATCH * (cfg.size + 1))))
        die("malloc");
    for (unsigned k = 0; k < BATCH; k++) {
        iov[k] = (struct iovec){bufs + k * (cfg.size + 1), cfg.size + 1}; /* + 1: a longer one shows */
        msgs[k] = (struct mmsghdr){.msg_hdr = {.msg_iov = &iov[k], .msg_iovlen = 1}};
    }
    int n = recvmmsg(s->fd, msgs, BATCH, MSG_DONTWAIT, NULL);
    if (n < 0) {
        if (errno != EAGAIN && errno != EINTR)
            send_errors++; /* ECONNREFUSED: an earlier datagram met a closed port */
        return;
    }
    uint64_t now = now_ns();
    for (int k = 0; k < n; k++)
        received(s, iov[k].iov_base, msgs[k].msg_len, msgs[k].msg_hdr.msg_flags & MSG_TRUNC, now);
}

/* Rate mode: send what the schedule has due by `now`; returns when the next datagram is due. */
static uint64_t send_due(uint64_t now)
{
    uint64_t due = (uint64_t)((now - t_first) / 1e9 * cfg.rate) + 1;
    if (due - scheduled > max_burst) {
        if (phase == MEASURE)
            skipped += due - scheduled - max_burst;
        scheduled = due - max_burst;
    }
    /* Datagram n of the schedule goes out on socket n % SOCKETS; each socket's share at once. */
    for (unsigned i = 0; i < cfg.sockets && scheduled < due; i++) {
        uint64_t first = scheduled + (i + cfg.sockets - scheduled % cfg.sockets) % cfg.sockets;
        if (first < due)
            send_some(&socks[i], (due - first + cfg.sockets - 1) / cfg.sockets, now);
    }
    scheduled = due < scheduled ? scheduled : due;
    uint64_t next = t_first + (uint64_t)(scheduled * 1e9 / cfg.rate);
    return next < now + MIN_GAP_NS ? now + MIN_GAP_NS : next;
}

/* Mark what has been out longer than TIMEOUT; returns the earliest deadline still pending on s. */
static uint64_t expire(struct sock *s, uint64_t now)
{
    while (s->oldest < s->next_seq) {
        struct slot *slot = &s->ring[s->oldest & ring_mask];
        if (slot->seq == s->oldest && slot->state == OUT) {
            if (slot->sent_ns + timeout_ns > now)
                return slot->sent_ns + timeout_ns;
            slot->state = TIMED_OUT;
            s->in_flight--;
            if (phase < DRAIN)
                s->refill++;
            if (slot->counted) {
                counted_out--;
                lost++;
            }
        }
        s->oldest++;
    }
    return UINT64_MAX;
}

static void usage(void)
{
    fprintf(stderr, "usage: udpload -p PORT [-H 127.0.0.1] [-m window|rate] [-S SOCKETS] [-a ADDRS] "
                    "[-s SIZE] [-W WINDOW] [-r RATE] [-t TIMEOUT_S] [-D DRAIN_S] [-w WARMUP_S] [-d SECONDS] "
                    "[-P SERVER_PID]\n");
    exit(2);
}

static void parse(int argc, char **argv)
{
    const char *host = "127.0.0.1";
    int port = 0, opt;
    while ((opt = getopt(argc, argv, "H:p:m:S:a:s:W:r:t:D:w:d:P:")) != -1) {
        switch (opt) {
        case 'H': host = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'S': cfg.sockets = strtoul(optarg, NULL, 10); break;
        case 'a': cfg.addrs = strtoul(optarg, NULL, 10); break;
        case 's': cfg.size = strtoul(optarg, NULL, 10); break;
        case 'W': cfg.window = strtoul(optarg, NULL, 10); break;
        case 'r': cfg.rate = atof(optarg); break;
        case 't': cfg.timeout = atof(optarg); break;
        case 'D': cfg.drain = atof(optarg); break;
        case 'w': cfg.warmup = atof(optarg); break;
        case 'd': cfg.duration = atof(optarg); break;
        case 'P': cfg.server_pid = optarg; break;
        case 'm':
            if (!strcmp(optarg, "window")) cfg.mode = WINDOW;
            else if (!strcmp(optarg, "rate")) cfg.mode = RATE;
            else usage();
            break;
        default: usage();
        }
    }
    if (port <= 0 || port > 65535 || !cfg.sockets || cfg.sockets > 256 || !cfg.addrs || cfg.addrs > 254 ||
        cfg.size < HEADER || cfg.size > 65507 || !cfg.window || cfg.rate <= 0 || cfg.timeout <= 0 ||
        cfg.duration <= 0)
        usage();
    if (cfg.drain < 0)
        cfg.drain = 2 * cfg.timeout;
    cfg.server.sin_family = AF_INET;
    cfg.server.sin_port = htons(port);
    if (inet_pton(AF_INET, host, &cfg.server.sin_addr) != 1)
        usage();
}

static double percentile(double p)
{
    uint64_t rank = (uint64_t)(p * answered), seen = 0;
    for (unsigned us = 0; us < HIST_US; us++) {
        seen += hist[us];
        if (seen > rank)
            return us + 0.5;
    }
    return HIST_US;
}

static void open_sockets(void)
{
    /* Room for every datagram that can be in flight or answered late on a socket: a window, or twice
     * its share of the rate over the longest wait for an answer. */
    double wait = cfg.timeout > cfg.drain ? cfg.timeout : cfg.drain;
    double per_socket = cfg.mode == WINDOW ? cfg.window : cfg.rate / cfg.sockets * wait * 2;
    uint64_t ring = 1024;
    while (ring < per_socket + 2 * BATCH)
        ring <<= 1;
    ring_mask = ring - 1;
    socks = calloc(cfg.sockets, sizeof *socks);
    if (!socks)
        die("calloc");
    for (unsigned i = 0; i < cfg.sockets; i++) {
        struct sock *s = &socks[i];
        s->index = i;
        s->ring = calloc(ring, sizeof *s->ring);
        s->out = malloc(BATCH * cfg.size);
        if (!s->ring || !s->out)
            die("malloc");
        s->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        if (s->fd < 0)
            die("socket");
        struct sockaddr_in src = {.sin_family = AF_INET};
        src.sin_addr.s_addr = htonl(INADDR_LOOPBACK + i % cfg.addrs);
        socklen_t len = sizeof src;
        if (bind(s->fd, (struct sockaddr *)&src, sizeof src) < 0 ||
            connect(s->fd, (struct sockaddr *)&cfg.server, sizeof cfg.server) < 0 ||
            getsockname(s->fd, (struct sockaddr *)&src, &len) < 0)
            die("bind/connect");
        s->port = ntohs(src.sin_port);
    }
}

int main(int argc, char **argv)
{
    parse(argc, argv);
    /* The default 50 us timer slack would delay every paced send by up to that much. */
    prctl(PR_SET_TIMERSLACK, 1UL);
    timeout_ns = (uint64_t)(cfg.timeout * 1e9);
    max_burst = (uint64_t)(cfg.rate * MIN_GAP_NS / 1e9) + MAX_BURST;
    pattern = malloc(cfg.size + PATTERN_SPAN);
    hist = calloc(HIST_US, sizeof *hist);
    if (!pattern || !hist)
        die("malloc");
    uint64_t state = now_ns() | 1;
    for (size_t i = 0; i < cfg.size + PATTERN_SPAN; i++) {
        state ^= state << 13, state ^= state >> 7, state ^= state << 17;
        pattern[i] = state >> 32;
    }
    tag = state;
    open_sockets();
    int ep = epoll_create1(0), timer = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    if (ep < 0 || timer < 0)
        die("epoll_create1/timerfd_create");
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = TIMER_TAG};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, timer, &ev) < 0)
        die("epoll_ctl");
    for (unsigned i = 0; i < cfg.sockets; i++) {
        ev.data.u32 = i;
        if (epoll_ctl(ep, EPOLL_CTL_ADD, socks[i].fd, &ev) < 0)
            die("epoll_ctl");
        socks[i].refill = cfg.mode == WINDOW ? cfg.window : 0;
    }

    t_first = now_ns();
    uint64_t t_start = t_first + (uint64_t)(cfg.warmup * 1e9);
    uint64_t t_end = t_start + (uint64_t)(cfg.duration * 1e9), t_done = t_end + (uint64_t)(cfg.drain * 1e9);
    uint64_t armed = 0;
    double cpu[2] = {0}, wait[2] = {0}, server_cpu[2] = {0}, server_wait[2] = {0};
    unsigned long long server_drops = 0, own_drops = 0;
    uint16_t server_port = ntohs(cfg.server.sin_port);
    struct epoll_event evs[64];
    for (;;) {
        uint64_t now = now_ns();
        if (phase == WARMUP && now >= t_start) {
            phase = MEASURE;
            cpu[0] = cpu_seconds(), wait[0] = runq_wait_seconds("self");
            if (cfg.server_pid) {
                server_cpu[0] = over_pids(cfg.server_pid, process_cpu_seconds);
                server_wait[0] = over_pids(cfg.server_pid, runq_wait_seconds);
            }
            server_drops = rx_drops(&server_port, 1), own_drops = client_drops();
        } else if (phase == MEASURE && now >= t_end) {
            phase = DRAIN;
            cpu[1] = cpu_seconds(), wait[1] = runq_wait_seconds("self");
            if (cfg.server_pid) {
                server_cpu[1] = over_pids(cfg.server_pid, process_cpu_seconds);
                server_wait[1] = over_pids(cfg.server_pid, runq_wait_seconds);
            }
        }
        if (phase == DRAIN && ((counted_out == 0 && lost == 0) || now >= t_done))
            break;
        uint64_t wake = phase == WARMUP ? t_start : phase == MEASURE ? t_end : t_done;
        if (cfg.mode == RATE && phase < DRAIN) {
            uint64_t next = send_due(now);
            if (next < wake)
                wake = next;
        }
        for (unsigned i = 0; i < cfg.sockets; i++) {
            struct sock *s = &socks[i];
            uint64_t deadline = expire(s, now);
            if (cfg.mode == WINDOW && s->refill && phase < DRAIN) {
                unsigned want = s->refill, took = send_some(s, want, now);
                s->refill = want - took;
                if (took < want)
                    deadline = now + 1000000; /* refused: try again in a millisecond */
                deadline = deadline < now + timeout_ns ? deadline : now + timeout_ns;
            }
            if (deadline < wake)
                wake = deadline;
        }
        if (!armed || wake < armed) { /* one set earlier than needed only wakes the loop sooner */
            struct itimerspec at = {.it_value = {wake / 1000000000u, wake % 1000000000u}};
            if (timerfd_settime(timer, TFD_TIMER_ABSTIME, &at, NULL) < 0)
                die("timerfd_settime");
            armed = wake;
        }
        int n = epoll_wait(ep, evs, 64, -1);
        if (n < 0 && errno != EINTR)
            die("epoll_wait");
        for (int i = 0; i < n; i++) {
            if (evs[i].data.u32 == TIMER_TAG) {
                uint64_t expirations;
                if (read(timer, &expirations, sizeof expirations) < 0 && errno != EAGAIN)
                    die("read timerfd");
                armed = 0; /* a timer that fired must be set again, even to the same time */
            } else {
                receive(&socks[evs[i].data.u32]);
                /* A long batch of answers must not hold back what is due meanwhile: sent between them. */
                if (cfg.mode == RATE && phase < DRAIN)
                    send_due(now_ns());
            }
        }
    }
    server_drops = rx_drops(&server_port, 1) - server_drops;
    own_drops = client_drops() - own_drops;
    double secs = (t_end - t_start) / 1e9, server_cpu_s = server_cpu[1] - server_cpu[0];
    printf("{\"mode\":\"%s\",\"sockets\":%u,\"addrs\":%u,\"size\":%zu,\"window\":%u,\"rate\":%.0f,"
           "\"timeout_s\":%.3f,\"seconds\":%.3f,\"sent\":%llu,\"answered\":%llu,\"late\":%llu,\"lost\":%llu,"
           "\"duplicates\":%llu,\"corrupted\":%llu,\"send_errors\":%llu,\"stale\":%llu,\"skipped\":%llu,"
           "\"sent_s\":%.1f,\"echoed_s\":%.1f,\"loss_pct\":%.4f,\"p50_us\":%.1f,\"p99_us\":%.1f,"
           "\"max_us\":%.1f,\"cpu_pct\":%.1f,\"wait_pct\":%.1f,\"server_cpu_pct\":%.1f,"
           "\"server_wait_pct\":%.1f,\"server_cpu_us\":%.3f,\"server_rx_drops\":%llu,"
           "\"client_rx_drops\":%llu}\n",
           cfg.mode == WINDOW ? "window" : "rate", cfg.sockets, cfg.addrs, cfg.size, cfg.window,
           cfg.mode == RATE ? cfg.rate : 0, cfg.timeout, secs, (unsigned long long)sent,
           (unsigned long long)answered, (unsigned long long)late, (unsigned long long)lost,
           (unsigned long long)duplicates, (unsigned long long)corrupted, (unsigned long long)send_errors,
           (unsigned long long)stale, (unsigned long long)skipped, sent / secs, answered / secs,
           sent ? 100.0 * (lost + late) / sent : 0, answered ? percentile(0.50) : 0,
           answered ? percentile(0.99) : 0, max_rtt_ns / 1000.0, 100 * (cpu[1] - cpu[0]) / secs,
           100 * (wait[1] - wait[0]) / secs, 100 * server_cpu_s / secs,
           100 * (server_wait[1] - server_wait[0]) / secs, answered ? server_cpu_s * 1e6 / answered : 0,
           server_drops, own_drops);
    return 0;
}
