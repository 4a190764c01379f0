/*
 * p2pc_posix.c - POSIX transport for p2pc (see p2pc_posix.h).
 */
#define _POSIX_C_SOURCE 200809L

#include "p2pc_posix.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

static uint32_t posix_now_ms(void *ctx) {
    struct timespec ts;
    (void)ctx;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint32_t)((uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u);
}

static void posix_sleep_ms(void *ctx, uint32_t ms) {
    struct timespec ts;
    (void)ctx;
    ts.tv_sec = (time_t)(ms / 1000u);
    ts.tv_nsec = (long)(ms % 1000u) * 1000000L;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Waits until fd is ready for `events` or the deadline passes: 1 ready, 0 timeout, -1 error. */
static int wait_fd(int fd, short events, uint32_t timeout_ms) {
    struct pollfd p;
    uint32_t t0 = posix_now_ms(NULL);
    for (;;) {
        uint32_t spent = posix_now_ms(NULL) - t0;
        int r;
        if (spent > timeout_ms) return 0;
        p.fd = fd;
        p.events = events;
        p.revents = 0;
        r = poll(&p, 1, (int)(timeout_ms - spent));
        if (r > 0) return 1;
        if (r == 0) return 0;
        if (errno != EINTR) return -1;
    }
}

static void posix_close(void *ctx) {
    p2pc_posix *s = (p2pc_posix *)ctx;
    if (s->fd >= 0) {
        close(s->fd);
        s->fd = -1;
    }
}

static int posix_open(void *ctx, const char *host, uint16_t port, uint32_t timeout_ms) {
    p2pc_posix *s = (p2pc_posix *)ctx;
    struct addrinfo hints, *res = NULL, *ai;
    char service[8];
    int rc = -1;
    posix_close(s);
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(service, sizeof service, "%u", (unsigned)port);
    if (getaddrinfo(host, service, &hints, &res) != 0) return -1;
    for (ai = res; ai != NULL && rc != 0; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
        int flags, one = 1, err = 0;
        socklen_t elen = sizeof err;
        if (fd < 0) continue;
        /* Connect without blocking past the deadline, then go back to blocking mode. */
        flags = fcntl(fd, F_GETFL, 0);
        fcntl(fd, F_SETFL, flags | O_NONBLOCK);
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
            if (errno != EINPROGRESS || wait_fd(fd, POLLOUT, timeout_ms) != 1 ||
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0 || err != 0) {
                close(fd);
                continue;
            }
        }
        fcntl(fd, F_SETFL, flags);
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
#ifdef SO_NOSIGPIPE
        setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
#endif
        s->fd = fd;
        rc = 0;
    }
    freeaddrinfo(res);
    return rc;
}

static int posix_write(void *ctx, const uint8_t *buf, size_t len, uint32_t timeout_ms) {
    p2pc_posix *s = (p2pc_posix *)ctx;
    int flags = 0;
    uint32_t t0 = posix_now_ms(NULL);
    if (s->fd < 0) return -1;
#ifdef MSG_NOSIGNAL
    flags |= MSG_NOSIGNAL;
#endif
#ifdef MSG_DONTWAIT
    flags |= MSG_DONTWAIT; /* never block past the deadline, even on a full send buffer */
#endif
    for (;;) {
        uint32_t spent = posix_now_ms(NULL) - t0;
        ssize_t n;
        if (spent > timeout_ms || wait_fd(s->fd, POLLOUT, timeout_ms - spent) != 1) return -1;
        n = send(s->fd, buf, len > INT_MAX ? (size_t)INT_MAX : len, flags);
        if (n > 0) return (int)n;
        if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
        return -1;
    }
}

static int posix_read(void *ctx, uint8_t *buf, size_t cap, uint32_t timeout_ms) {
    p2pc_posix *s = (p2pc_posix *)ctx;
    ssize_t n;
    int w;
    if (s->fd < 0) return -1;
    w = wait_fd(s->fd, POLLIN, timeout_ms);
    if (w == 0) return 0;
    if (w < 0) return -1;
    do {
        n = recv(s->fd, buf, cap > INT_MAX ? (size_t)INT_MAX : cap, 0);
    } while (n < 0 && errno == EINTR);
    return n > 0 ? (int)n : -1; /* 0: the server closed the connection */
}

static int posix_random(void *ctx, uint8_t *buf, size_t len) {
    p2pc_posix *s = (p2pc_posix *)ctx;
    if (s->urandom < 0) s->urandom = open("/dev/urandom", O_RDONLY);
    if (s->urandom < 0) return -1;
    while (len > 0) {
        ssize_t n = read(s->urandom, buf, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

void p2pc_posix_transport(p2pc_posix *s, p2pc_transport *io) {
    s->fd = -1;
    s->urandom = -1;
    io->ctx = s;
    io->open = posix_open;
    io->write = posix_write;
    io->read = posix_read;
    io->close = posix_close;
    io->now_ms = posix_now_ms;
    io->sleep_ms = posix_sleep_ms;
    io->random = posix_random;
}

void p2pc_posix_cleanup(p2pc_posix *s) {
    posix_close(s);
    if (s->urandom >= 0) {
        close(s->urandom);
        s->urandom = -1;
    }
}
