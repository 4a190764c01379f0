/*
 * p2pc.h - portable C99 device client for P2Pcluster (the raw-TCP IoT relay; wire contract: PROTOCOL.md).
 *
 *   - no heap, no global state: the caller allocates a p2pc_client and hands it two buffers (received lines,
 *     outgoing commands); everything is bounded by those sizes and by the constants below;
 *   - I/O, clock and randomness go through p2pc_transport (a handful of function pointers), so the same code
 *     runs over POSIX sockets (port/posix), lwIP/ESP-IDF sockets, or an Arduino Client (examples/arduino);
 *   - blocking with timeouts: a command sends one line and waits for its reply; pushes, presence events and
 *     [SYNC:...] lines that arrive meanwhile (or during p2pc_poll) go to the event callback;
 *   - secure sessions STCP, DSTCP and HSTCP (PROTOCOL.md section 9) are transparent: every command's KEY field
 *     is computed for the active mode;
 *   - after a lost connection p2pc_poll reconnects with exponential backoff, re-opens the secure session and
 *     re-registers the ID.
 *
 * Return codes: P2PC_OK (0); a server refusal [FAIL:<CODE>] is the positive P2PC_FAIL_<CODE>; a local error is
 * a negative P2PC_ERR_*. p2pc_err_name() names any of them.
 */
#ifndef P2PC_H
#define P2PC_H

#include <stddef.h>
#include <stdint.h>

#include "p2pc_crypto.h"

#ifdef __cplusplus
extern "C" {
#endif

#define P2PC_VERSION "1.0.0"

/* Longest device ID the client stores (the server's NODE.MAX_ID default). */
#ifndef P2PC_MAX_ID
#define P2PC_MAX_ID 64
#endif
/* Bytes of the last reply kept in the client (longer replies are truncated there; p2pc_command can copy a
 * whole reply into a caller buffer). */
#ifndef P2PC_REPLY_MAX
#define P2PC_REPLY_MAX 96
#endif
/* Longest server nonce accepted from an ACTIVATE reply (the server sends 8 or 16 hex characters). */
#define P2PC_RND_MAX 32
/* Smallest buffers p2pc_init accepts. */
#define P2PC_MIN_BUF 64

/* ------------------------------------------------------------------ return codes */

/* Every [FAIL:<CODE>] the server sends (src/protocol/codes.ts), with stable numbers. */
#define P2PC_FAIL_CODES(X)                                                                                       \
    X(NOID, 1)                                                                                                   \
    X(NOKEY, 2)                                                                                                  \
    X(INVALID_KEY, 3)                                                                                            \
    X(INVALID_CMD, 4)                                                                                            \
    X(INVALID_FORMAT, 5)                                                                                         \
    X(UNKNOWN_COMMAND, 6)                                                                                        \
    X(UNKNOWN_CMD, 7)                                                                                            \
    X(NODEEXIST, 8)                                                                                              \
    X(INVALID_DATA, 9)                                                                                           \
    X(QUOTA, 10)                                                                                                 \
    X(REM_ID, 11)                                                                                                \
    X(REM_LINK, 12)                                                                                              \
    X(NO_ID, 13)                                                                                                 \
    X(NO_PARENT, 14)                                                                                             \
    X(NO_ROUTER, 15)                                                                                             \
    X(NO_ALIAS, 16)                                                                                              \
    X(FANOUT_LIMIT, 17)                                                                                          \
    X(RATE_LIMIT, 18)                                                                                            \
    X(NO_DATA, 19)                                                                                               \
    X(LINE_TOO_LONG, 20)                                                                                         \
    X(SERVER_FULL, 21)                                                                                           \
    X(MAIL_DISABLED, 22)                                                                                         \
    X(SMS_DISABLED, 23)                                                                                          \
    X(INVALID_ID, 24)                                                                                            \
    X(INVALID_USERID, 25)                                                                                        \
    X(UNAVAILABLE, 26)                                                                                           \
    X(SECURE_REQUIRED, 27)

typedef enum p2pc_err {
    P2PC_OK = 0,
#define P2PC_X_ENUM(name, n) P2PC_FAIL_##name = n,
    P2PC_FAIL_CODES(P2PC_X_ENUM)
#undef P2PC_X_ENUM
    /* [FAIL:<text>] with a code not listed above; for TCP:ID it is [FAIL:<CURRENT_ID>]: this connection
     * already holds another ID. */
    P2PC_FAIL_OTHER = 63,

    P2PC_ERR_ARG = -1,           /* bad argument: NULL, a field with ':' / CR / LF, an invalid ID, ... */
    P2PC_ERR_NOSPACE = -2,       /* the command does not fit the tx buffer, or a reply does not fit `out` */
    P2PC_ERR_NOT_CONNECTED = -3, /* no connection (p2pc_poll reconnects) */
    P2PC_ERR_IO = -4,            /* the transport failed (connect, read or write) */
    P2PC_ERR_CLOSED = -5,        /* the server closed the connection */
    P2PC_ERR_TIMEOUT = -6,       /* no reply within reply_timeout_ms (the connection is dropped) */
    P2PC_ERR_PROTOCOL = -7,      /* a reply the client cannot interpret */
    P2PC_ERR_AUTH = -8,          /* the server's proof of the KEY in a secure ACTIVATE reply did not verify */
    P2PC_ERR_BUSY = -9,          /* a command was issued from the event callback while another was waiting */
    P2PC_ERR_NO_ID = -10,        /* the command needs a registered ID first (p2pc_register) */
    P2PC_ERR_RANDOM = -11        /* the transport's random source failed */
} p2pc_err;

/* "P2PC_OK", "P2PC_FAIL_REM_ID", "P2PC_ERR_TIMEOUT", ... ("P2PC_UNKNOWN" for anything else). */
const char *p2pc_err_name(int code);
/* The server's code for a P2PC_FAIL_* ("REM_ID"), or NULL. */
const char *p2pc_fail_text(int code);
/* The P2PC_FAIL_* of a server code ("REM_ID", length n), P2PC_FAIL_OTHER when unknown. */
int p2pc_fail_from_text(const char *code, size_t n);

/* ------------------------------------------------------------------ line framer */

/* Frames the server's byte stream into lines over a caller buffer. A line ends at LF; one CR before it is
 * dropped (so CRLF and bare LF both work). The longest line is cap - 2 bytes (cap - 1 with a bare LF); a longer
 * one is reported once (P2PC_LINE_TOO_LONG) and discarded up to its LF. Usable on its own. */
typedef struct p2pc_framer {
    uint8_t *buf;
    size_t cap;
    size_t len;        /* bytes held: buf[0, len) */
    size_t start;      /* first byte not yet returned as a line */
    size_t scanned;    /* buf[start, start + scanned) holds no LF */
    uint8_t discarding;/* inside an overlong line, dropping bytes up to the next LF */
} p2pc_framer;

#define P2PC_LINE_NONE 0      /* no complete line yet */
#define P2PC_LINE 1           /* *line, *len: a line without its terminator, NUL-terminated in place */
#define P2PC_LINE_TOO_LONG 2  /* an overlong line was dropped */

void p2pc_framer_init(p2pc_framer *f, void *buf, size_t cap);
void p2pc_framer_reset(p2pc_framer *f);
/* Free space at the end of the buffer for a direct read (compacts first). Returns its size, 0 when full. */
size_t p2pc_framer_space(p2pc_framer *f, uint8_t **dst);
/* Declares n bytes written at the pointer p2pc_framer_space gave. */
void p2pc_framer_commit(p2pc_framer *f, size_t n);
/* Copies up to len bytes in; returns how many were taken (take lines out with p2pc_framer_next, then feed
 * the rest). */
size_t p2pc_framer_feed(p2pc_framer *f, const void *data, size_t len);
/* The next complete line. The pointer stays valid until the next p2pc_framer_space/feed/reset call. */
int p2pc_framer_next(p2pc_framer *f, char **line, size_t *len);

/* ------------------------------------------------------------------ transport (the porting interface) */

/* All calls are blocking with a deadline. Return values: open 0 or < 0; write: bytes written (> 0, at most
 * INT_MAX; a partial write is fine) or < 0; read: bytes read (> 0, at most INT_MAX), 0 on timeout with nothing
 * read, < 0 when the connection failed or was closed.
 * now_ms: a monotonic millisecond clock (may wrap). sleep_ms: optional (NULL: p2pc_poll returns instead of
 * sleeping while it waits to reconnect). random: fills buf from a cryptographic source, 0 on success
 * (only needed for secure sessions and backoff jitter; NULL disables both). */
typedef struct p2pc_transport {
    void *ctx;
    int (*open)(void *ctx, const char *host, uint16_t port, uint32_t timeout_ms);
    int (*write)(void *ctx, const uint8_t *buf, size_t len, uint32_t timeout_ms);
    int (*read)(void *ctx, uint8_t *buf, size_t cap, uint32_t timeout_ms);
    void (*close)(void *ctx);
    uint32_t (*now_ms)(void *ctx);
    void (*sleep_ms)(void *ctx, uint32_t ms);
    int (*random)(void *ctx, uint8_t *buf, size_t len);
} p2pc_transport;

/* ------------------------------------------------------------------ events */

typedef enum p2pc_event_type {
    P2PC_EV_PUSH = 1,       /* PUSH:<DATA>: data/len is the payload (any bytes but CR/LF) */
    P2PC_EV_PRESENCE = 2,   /* PRESENCE:<ID>:ONLINE|OFFLINE: id/id_len, online */
    P2PC_EV_SYNC = 3,       /* [SYNC:dd.MM.yyyy_HH:mm:ss]: data/len is the stamp; the client already answered */
    P2PC_EV_CONNECTED = 4,  /* (re)connected, secure session open, ID (re)registered: id/id_len (may be empty) */
    P2PC_EV_DISCONNECTED = 5, /* the connection was lost: error is why; p2pc_poll will reconnect */
    P2PC_EV_LINE = 6        /* any other line no command was waiting for (e.g. PUSHRAW:, [FAIL:REM_LINK]) */
} p2pc_event_type;

typedef struct p2pc_event {
    p2pc_event_type type;
    const char *data; /* payload / stamp / whole line; NUL-terminated, but may itself contain NUL bytes */
    size_t len;
    const char *id;
    size_t id_len;
    int online;
    int error;
} p2pc_event;

struct p2pc_client;
/* Called from inside p2pc_poll and while a command waits for its reply. Pointers are valid during the call
 * only. The callback may issue commands when no other command is waiting (else they return P2PC_ERR_BUSY),
 * e.g. re-issue WATCH/WILL on P2PC_EV_CONNECTED. */
typedef void (*p2pc_event_fn)(struct p2pc_client *c, const p2pc_event *ev, void *user);

/* ------------------------------------------------------------------ configuration and client */

typedef enum p2pc_secure {
    P2PC_SECURE_NONE = 0, /* plain TCP: the KEY in every command */
    P2PC_SECURE_STCP = 1, /* legacy: MD5HEX(KEY+RND) */
    P2PC_SECURE_DSTCP = 2,/* legacy: MD5HEX(KEY+RND+F) per command */
    P2PC_SECURE_HSTCP = 3 /* recommended: HMAC-SHA256 over every command and its sequence number */
} p2pc_secure;

typedef struct p2pc_config {
    const char *host;   /* kept by pointer: must outlive the client */
    uint16_t port;
    const char *key;    /* the account KEY, 32 hex characters (copied, upper-cased) */
    const char *uid;    /* the account e-mail, for secure sessions (kept by pointer) */
    p2pc_secure secure;
    uint8_t nonce_len;  /* client nonce bytes for ACTIVATE (sent as 2*n hex; 4..32; default 8) */
    uint32_t connect_timeout_ms; /* default 5000 */
    uint32_t reply_timeout_ms;   /* default 5000 */
    uint32_t backoff_min_ms;     /* first reconnect delay; default 500 */
    uint32_t backoff_max_ms;     /* delay cap (doubles up to it, +-25% jitter); default 30000 */
    uint32_t keepalive_ms;       /* 0: off; else TCP:GID after that much send silence, to detect dead links */
    void *rx_buf;       /* received lines; the longest line accepted is rx_size - 2 */
    size_t rx_size;
    void *tx_buf;       /* one outgoing command */
    size_t tx_size;
    p2pc_event_fn on_event;
    void *user;
} p2pc_config;

typedef enum p2pc_state {
    P2PC_STATE_IDLE = 0,    /* not started, or closed by p2pc_close */
    P2PC_STATE_BACKOFF = 1, /* lost: p2pc_poll reconnects when the backoff delay has passed */
    P2PC_STATE_READY = 2    /* connected (and registered when an ID was set) */
} p2pc_state;

typedef enum p2pc_target {
    P2PC_RID = 1,       /* name = the device ID */
    P2PC_FRIENDS = 2,
    P2PC_CHILDS = 3,
    P2PC_ALLCHILDS = 4,
    P2PC_PARENT = 5,
    P2PC_RO = 6,        /* name = the router */
    P2PC_ALIAS = 7      /* name = the alias */
} p2pc_target;

typedef struct p2pc_push_result {
    uint32_t delivered; /* [OK:DATA_SENT] 1/1, [OK:ALL_n] n/n, [OK:d/t] d/t, [OK:DATA_HELD] 0/1 */
    uint32_t total;
    int held;           /* [OK:DATA_HELD]: stored for an offline device */
} p2pc_push_result;

/* The client. Allocate it (static, stack, or inside your own struct) and treat the fields as private. */
typedef struct p2pc_client {
    p2pc_transport io;
    const char *host;
    const char *uid;
    uint16_t port;
    uint8_t secure;
    uint8_t state;
    uint8_t connected;  /* transport open */
    uint8_t registered; /* the server holds our ID on this connection */
    uint8_t waiting;    /* a command waits for its reply */
    uint8_t nonce_len;
    uint8_t session;    /* the secure mode active on this connection (p2pc_deactivate ends it) */
    uint8_t was_ready;  /* READY at least once (later successes count as reconnections) */
    char key[33];
    char id[P2PC_MAX_ID + 1];
    char rnd[P2PC_RND_MAX + 1]; /* server nonce of the session */
    char skey[33];              /* STCP session key */
    uint32_t seq;               /* HSTCP: n of the next command */
    union {
        p2pc_md5_ctx md5;           /* DSTCP: MD5 state after KEY+RND */
        p2pc_hmac_sha256_ctx hmac;  /* HSTCP: HMAC keyed with the KEY */
    } mac;
    p2pc_framer rx;
    uint8_t *tx;
    size_t tx_size;
    uint32_t connect_timeout_ms;
    uint32_t reply_timeout_ms;
    uint32_t backoff_min_ms;
    uint32_t backoff_max_ms;
    uint32_t backoff_ms;        /* the current delay */
    uint32_t retry_at;          /* now_ms of the next attempt */
    uint32_t keepalive_ms;
    uint32_t last_tx;
    uint32_t reconnects;        /* successful reconnections so far */
    char reply[P2PC_REPLY_MAX]; /* last reply, NUL-terminated, possibly truncated */
    size_t reply_len;           /* its full length on the wire (may exceed what reply holds) */
    p2pc_event_fn on_event;
    void *user;
} p2pc_client;

/* Fills cfg with the defaults above (and zeroes the rest). */
void p2pc_config_defaults(p2pc_config *cfg);
/* Validates cfg and prepares c; no I/O. The transport struct is copied. */
int p2pc_init(p2pc_client *c, const p2pc_config *cfg, const p2pc_transport *io);

/* One connection attempt: open, ACTIVATE the secure session, register the ID set by p2pc_register (if any).
 * On failure the client is in P2PC_STATE_BACKOFF and p2pc_poll retries. */
int p2pc_connect(p2pc_client *c);
/* TCP:ID: registers id (connects first when needed) and remembers it for reconnections. */
int p2pc_register(p2pc_client *c, const char *id);
/* TCP:REMID: gives the ID up (no will fires, watches end); the connection stays. */
int p2pc_unregister(p2pc_client *c);

/* TCP:PUSH to any target but RAW. name is the ID, router or alias (NULL for the others); data may hold any
 * bytes but CR and LF. res may be NULL. */
int p2pc_push(p2pc_client *c, p2pc_target target, const char *name, const void *data, size_t len,
              p2pc_push_result *res);
/* TCP:TIME:<arg> with arg e.g. "+05:30", "+05:30:ISO", "Asia/Kolkata:EPOCH". Copies the reply line
 * (e.g. "[IST:(Thu)(26,11,2026)(02:13:39)(1795639419)]") into out; unix (may be NULL) gets the Unix seconds
 * of the legacy and EPOCH formats (0 for the others). */
int p2pc_time(p2pc_client *c, const char *arg, char *out, size_t out_size, int64_t *unix_seconds);
/* TCP:WATCH / TCP:UNWATCH:<target>, target e.g. "RID:LAMP", "CHILDS", "RO:HALL". */
int p2pc_watch(p2pc_client *c, const char *target, int watch);
/* TCP:WILL:<target>:<data>, or clears the will when target is NULL. */
int p2pc_will(p2pc_client *c, const char *target, const char *data);
/* Any TCP sub-command: TCP:<sub>:<KEY field>[:<args>]. Copies the reply line into out (may be NULL; NUL-
 * terminated; p2pc_last_reply_len tells its length, as it may contain NUL bytes). Returns P2PC_OK for [OK:...]
 * and other non-FAIL replies, P2PC_FAIL_* for [FAIL:...], P2PC_ERR_NOSPACE when out was too small. */
int p2pc_command(p2pc_client *c, const char *sub, const char *args, char *out, size_t out_size);
/* Ends the secure session with <MODE>:<UID>:DEACTIVATE (HSTCP: with its MAC); later commands use the KEY. */
int p2pc_deactivate(p2pc_client *c);

/* Waits up to timeout_ms for input and handles it (events, SYNC answers, keepalive); reconnects when the
 * connection was lost and the backoff delay has passed. Returns P2PC_OK, or the error of this call's failed
 * read or reconnection attempt (the client keeps retrying). Call it in your main loop. */
int p2pc_poll(p2pc_client *c, uint32_t timeout_ms);
/* Closes the connection; no reconnection until p2pc_connect or p2pc_register. */
void p2pc_close(p2pc_client *c);

p2pc_state p2pc_get_state(const p2pc_client *c);
/* The last reply line (without CRLF; truncated to P2PC_REPLY_MAX - 1; "" when the last call sent nothing). */
const char *p2pc_last_reply(const p2pc_client *c);
/* Its full length on the wire (replies may contain NUL bytes, and may be longer than p2pc_last_reply holds). */
size_t p2pc_last_reply_len(const p2pc_client *c);

/* ------------------------------------------------------------------ session arithmetic (for tests) */

/* The 32-character KEY field of the command line `line` (len bytes, no CRLF) whose KEY field is empty and
 * starts at key_at, under the client's current session. Advances nothing. */
void p2pc_key_field(p2pc_client *c, const char *line, size_t len, size_t key_at, char out[32]);

#ifdef __cplusplus
}
#endif

#endif /* P2PC_H */
