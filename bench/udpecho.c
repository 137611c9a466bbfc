/*
 * udpecho: RFC 862 echo over UDP in C, blocking recvfrom/sendto: the ceiling the benchmark's UDP figures
 * compare echod with. No checks at all: it answers any source.
 *
 *   udpecho [PORT]    binds 127.0.0.1:PORT (default 0: a free port) and prints the port it got
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>

int main(int argc, char **argv)
{
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    addr.sin_port = htons(argc > 1 ? atoi(argv[1]) : 0);
    socklen_t len = sizeof addr;
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0 ||
        getsockname(fd, (struct sockaddr *)&addr, &len) < 0) {
        perror("udpecho");
        return 1;
    }
    printf("udpecho listening on 127.0.0.1:%d\n", ntohs(addr.sin_port));
    fflush(stdout);
    static char buf[65536];
    for (;;) {
        struct sockaddr_storage peer;
        socklen_t peer_len = sizeof peer;
        ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&peer, &peer_len);
        if (n >= 0)
            sendto(fd, buf, n, 0, (struct sockaddr *)&peer, peer_len);
    }
}
