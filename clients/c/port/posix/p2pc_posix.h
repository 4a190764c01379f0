/*
 * p2pc_posix.h - the p2pc transport over POSIX sockets (Linux, macOS, BSD; lwIP's socket layer is close
 * enough to port from): blocking sockets with poll() deadlines, CLOCK_MONOTONIC, /dev/urandom.
 */
#ifndef P2PC_POSIX_H
#define P2PC_POSIX_H

#include "p2pc.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct p2pc_posix {
    int fd;     /* -1 when closed */
    int urandom;/* -1 until first use */
} p2pc_posix;

/* Fills io with the POSIX functions over state s (which must outlive the client). */
void p2pc_posix_transport(p2pc_posix *s, p2pc_transport *io);
/* Releases what the transport holds (the socket and /dev/urandom). */
void p2pc_posix_cleanup(p2pc_posix *s);

#ifdef __cplusplus
}
#endif

#endif /* P2PC_POSIX_H */
