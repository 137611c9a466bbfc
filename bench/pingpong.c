/*
 * pingpong: one TCP connection, one message at a time, on a fixed schedule: the C reference for the
 * round trips `echod probe` measures (bench/run.py's probe precision figure).
 *
 *   pingpong -p PORT [-c COUNT] [-i INTERVAL_S] [-s SIZE]
 *
 * Connects to 127.0.0.1:PORT with TCP_NODELAY and, every INTERVAL seconds (default 0.005) on an
 * absolute schedule, sends a SIZE-byte message (default 64: an 8-byte sequence number, then
 * pseudo-random bytes), reads until all of it is back, and checks every byte; the round trip is from
 * just before send() to the return of the read that completed the echo, on CLOCK_MONOTONIC, as the
 * probe takes it. Blocking calls: between the send and the echo, the process sleeps in recv() as the
 * probe sleeps in epoll_wait(). Output: one JSON line with the count, the errors (a wrong byte, a
 * short read) and min, avg, p50, p90, p99 and max in microseconds (nearest rank).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + ts.tv_nsec;
}

static int by_value(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double rank_us(const uint64_t *sorted, size_t n, double p)
{
    size_t rank = (size_t)(p / 100.0 * n + 0.999999999);
    if (rank < 1)
        rank = 1;
    return sorted[rank - 1] / 1000.0;
}

int main(int argc, char **argv)
{
    int port = 0, opt;
    size_t count = 400, size = 64;
    double interval = 0.005;
    while ((opt = getopt(argc, argv, "p:c:i:s:")) != -1) {
        switch (opt) {
        case 'p': port = atoi(optarg); break;
        case 'c': count = strtoul(optarg, NULL, 10); break;
        case 'i': interval = atof(optarg); break;
        case 's': size = strtoul(optarg, NULL, 10); break;
        default:
            fprintf(stderr, "usage: pingpong -p PORT [-c COUNT] [-i INTERVAL_S] [-s SIZE]\n");
            return 2;
        }
    }
    if (!port || !count || size < 8) {
        fprintf(stderr, "pingpong: a port, a count and a size of 8 or more\n");
        return 2;
    }
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in server = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &server.sin_addr);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&server, sizeof server) < 0) {
        perror("pingpong: connect");
        return 1;
    }
    unsigned char *out = malloc(size), *in = malloc(size);
    uint64_t *rtt = malloc(count * sizeof *rtt);
    uint64_t state = 0x9E3779B97F4A7C15ull, errors = 0;
    size_t done = 0;
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (size_t seq = 0; seq < count; seq++) {
        uint64_t due_ns = (uint64_t)(seq * interval * 1e9);
        struct timespec due = {start.tv_sec + (start.tv_nsec + due_ns) / 1000000000u,
                               (start.tv_nsec + due_ns) % 1000000000u};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &due, NULL) == EINTR)
            ;
        uint64_t number = seq + 1;
        for (int b = 0; b < 8; b++)
            out[b] = (unsigned char)(number >> (56 - 8 * b));
        for (size_t b = 8; b < size; b++) {
            state ^= state << 13, state ^= state >> 7, state ^= state << 17;
            out[b] = (unsigned char)state;
        }
        uint64_t t0 = now_ns();
        if (send(fd, out, size, MSG_NOSIGNAL) != (ssize_t)size) {
            perror("pingpong: send");
            return 1;
        }
        size_t got = 0;
        while (got < size) {
            ssize_t r = recv(fd, in + got, size - got, 0);
            if (r <= 0) {
                fprintf(stderr, "pingpong: the server closed or failed after %zu probes\n", done);
                return 1;
            }
            got += r;
        }
        uint64_t t1 = now_ns();
        if (memcmp(in, out, size) != 0) {
            errors++;
            continue;
        }
        rtt[done++] = t1 - t0;
    }
    close(fd);
    if (!done) {
        printf("{\"count\":0,\"errors\":%llu}\n", (unsigned long long)errors);
        return 1;
    }
    double sum = 0;
    for (size_t k = 0; k < done; k++)
        sum += rtt[k];
    qsort(rtt, done, sizeof *rtt, by_value);
    printf("{\"count\":%zu,\"errors\":%llu,\"min_us\":%.1f,\"avg_us\":%.1f,\"p50_us\":%.1f,\"p90_us\":%.1f,"
           "\"p99_us\":%.1f,\"max_us\":%.1f}\n",
           done, (unsigned long long)errors, rtt[0] / 1000.0, sum / done / 1000.0, rank_us(rtt, done, 50),
           rank_us(rtt, done, 90), rank_us(rtt, done, 99), rtt[done - 1] / 1000.0);
    return errors ? 1 : 0;
}
