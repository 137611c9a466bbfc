/*
 * cecho: a minimal RFC 862 echo server in C, one thread on epoll: the near-physical-limit reference the
 * benchmark compares echod with.
 *
 *   cecho [PORT]      listens on 127.0.0.1:PORT (default 0: a free port) and prints the port it got
 *
 * It reads into one shared 64 KiB buffer and writes straight back; only what the socket does not take at
 * once is copied aside for the connection, and while that is pending it stops reading (the peer's own
 * buffers absorb what it keeps sending). A client that half-closes still gets all of its echo before the
 * server closes. TCP_NODELAY is set, so no echo waits on Nagle's algorithm.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

struct client {
    int fd;
    char *pending; /* pending[off..len) is still to be written */
    size_t off, len;
};

static int ep;
static char buf[65536];

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static void watch(struct client *c, uint32_t events, int op)
{
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(ep, op, c->fd, &ev) < 0)
        die("epoll_ctl");
}

static void drop(struct client *c)
{
    close(c->fd);
    free(c->pending);
    free(c);
}

/* Write data[off..len). Returns 1 when all of it is out, 0 if the socket is full, -1 on error. */
static int write_out(int fd, const char *data, size_t *off, size_t len)
{
    while (*off < len) {
        ssize_t w = send(fd, data + *off, len - *off, MSG_NOSIGNAL);
        if (w < 0)
            return errno == EAGAIN ? 0 : -1;
        *off += w;
    }
    return 1;
}

static void serve(struct client *c, uint32_t events)
{
    if (c->pending) { /* waiting to write */
        int done = write_out(c->fd, c->pending, &c->off, c->len);
        if (done < 0) {
            drop(c);
        } else if (done) {
            free(c->pending);
            c->pending = NULL;
            watch(c, EPOLLIN, EPOLL_CTL_MOD);
        }
        return;
    }
    if (!(events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
        return;
    ssize_t n = recv(c->fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EAGAIN)
        return;
    if (n <= 0) { /* end of file: everything read has been echoed already */
        drop(c);
        return;
    }
    size_t off = 0;
    int done = write_out(c->fd, buf, &off, n);
    if (done < 0) {
        drop(c);
    } else if (!done) {
        c->len = n - off;
        c->off = 0;
        if (!(c->pending = malloc(c->len)))
            die("malloc");
        memcpy(c->pending, buf + off, c->len);
        watch(c, EPOLLOUT, EPOLL_CTL_MOD);
    }
}

static void accept_all(int lfd)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
        if (fd < 0) {
            if (errno != EAGAIN && errno != ECONNABORTED && errno != EINTR)
                perror("accept4");
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct client *c = calloc(1, sizeof *c);
        if (!c)
            die("calloc");
        c->fd = fd;
        watch(c, EPOLLIN, EPOLL_CTL_ADD);
    }
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    if (lfd < 0)
        die("socket");
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    addr.sin_port = htons(argc > 1 ? atoi(argv[1]) : 0);
    socklen_t len = sizeof addr;
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lfd, 4096) < 0 ||
        getsockname(lfd, (struct sockaddr *)&addr, &len) < 0)
        die("listen");
    printf("cecho listening on 127.0.0.1:%d\n", ntohs(addr.sin_port));
    fflush(stdout);

    if ((ep = epoll_create1(0)) < 0)
        die("epoll_create1");
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) < 0)
        die("epoll_ctl");
    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        if (n < 0 && errno != EINTR)
            die("epoll_wait");
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == NULL)
                accept_all(lfd);
            else
                serve(evs[i].data.ptr, evs[i].events);
        }
    }
}
