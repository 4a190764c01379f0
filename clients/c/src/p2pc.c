/*
 * p2pc.c - the P2Pcluster device client: line framer, command building (with the KEY field of every secure
 * mode), request/reply with events in between, reconnection with backoff. See p2pc.h for the API and
 * PROTOCOL.md for the wire format.
 */
#include "p2pc.h"

#include <string.h>

/* ------------------------------------------------------------------ return codes */

const char *p2pc_err_name(int code) {
    switch (code) {
    case P2PC_OK: return "P2PC_OK";
#define P2PC_X_NAME(name, n) \
    case P2PC_FAIL_##name: return "P2PC_FAIL_" #name;
        P2PC_FAIL_CODES(P2PC_X_NAME)
#undef P2PC_X_NAME
    case P2PC_FAIL_OTHER: return "P2PC_FAIL_OTHER";
    case P2PC_ERR_ARG: return "P2PC_ERR_ARG";
    case P2PC_ERR_NOSPACE: return "P2PC_ERR_NOSPACE";
    case P2PC_ERR_NOT_CONNECTED: return "P2PC_ERR_NOT_CONNECTED";
    case P2PC_ERR_IO: return "P2PC_ERR_IO";
    case P2PC_ERR_CLOSED: return "P2PC_ERR_CLOSED";
    case P2PC_ERR_TIMEOUT: return "P2PC_ERR_TIMEOUT";
    case P2PC_ERR_PROTOCOL: return "P2PC_ERR_PROTOCOL";
    case P2PC_ERR_AUTH: return "P2PC_ERR_AUTH";
    case P2PC_ERR_BUSY: return "P2PC_ERR_BUSY";
    case P2PC_ERR_NO_ID: return "P2PC_ERR_NO_ID";
    case P2PC_ERR_RANDOM: return "P2PC_ERR_RANDOM";
    default: return "P2PC_UNKNOWN";
    }
}

const char *p2pc_fail_text(int code) {
    switch (code) {
#define P2PC_X_TEXT(name, n) \
    case P2PC_FAIL_##name: return #name;
        P2PC_FAIL_CODES(P2PC_X_TEXT)
#undef P2PC_X_TEXT
    default: return NULL;
    }
}

int p2pc_fail_from_text(const char *code, size_t n) {
    static const struct {
        const char *text;
        int code;
    } table[] = {
#define P2PC_X_ROW(name, v) {#name, v},
        P2PC_FAIL_CODES(P2PC_X_ROW)
#undef P2PC_X_ROW
    };
    size_t i;
    for (i = 0; i < sizeof table / sizeof table[0]; i++) {
        if (strlen(table[i].text) == n && memcmp(table[i].text, code, n) == 0) return table[i].code;
    }
    return P2PC_FAIL_OTHER;
}

/* ------------------------------------------------------------------ line framer */

void p2pc_framer_init(p2pc_framer *f, void *buf, size_t cap) {
    f->buf = (uint8_t *)buf;
    f->cap = cap;
    p2pc_framer_reset(f);
}

void p2pc_framer_reset(p2pc_framer *f) {
    f->len = 0;
    f->start = 0;
    f->scanned = 0;
    f->discarding = 0;
}

size_t p2pc_framer_space(p2pc_framer *f, uint8_t **dst) {
    if (f->start != 0) {
        memmove(f->buf, f->buf + f->start, f->len - f->start);
        f->len -= f->start;
        f->start = 0;
    }
    *dst = f->buf + f->len;
    return f->cap - f->len;
}

void p2pc_framer_commit(p2pc_framer *f, size_t n) {
    f->len = n > f->cap - f->len ? f->cap : f->len + n;
}

size_t p2pc_framer_feed(p2pc_framer *f, const void *data, size_t len) {
    uint8_t *dst;
    size_t room = p2pc_framer_space(f, &dst);
    size_t take = len < room ? len : room;
    if (take != 0) memcpy(dst, data, take);
    f->len += take;
    return take;
}

int p2pc_framer_next(p2pc_framer *f, char **line, size_t *len) {
    for (;;) {
        uint8_t *p = f->buf + f->start;
        size_t avail = f->len - f->start;
        const uint8_t *lf = avail > f->scanned ? (const uint8_t *)memchr(p + f->scanned, '\n', avail - f->scanned)
                                               : NULL;
        size_t end, l;
        if (lf == NULL) {
            f->scanned = avail;
            if (f->discarding) {
                /* Inside an overlong line: nothing before the LF is worth keeping. */
                f->start = f->len = f->scanned = 0;
                return P2PC_LINE_NONE;
            }
            if (avail == f->cap) { /* full without a line end (start is 0 here) */
                f->start = f->len = f->scanned = 0;
                f->discarding = 1;
                return P2PC_LINE_TOO_LONG;
            }
            return P2PC_LINE_NONE;
        }
        end = (size_t)(lf - p);
        f->start += end + 1;
        f->scanned = 0;
        if (f->discarding) {
            f->discarding = 0;
            continue;
        }
        l = end;
        if (l > 0 && p[l - 1] == '\r') l--;
        p[l] = '\0'; /* the CR or LF, already consumed */
        *line = (char *)p;
        *len = l;
        return P2PC_LINE;
    }
}

/* ------------------------------------------------------------------ helpers */

static uint32_t now_ms(p2pc_client *c) {
    return c->io.now_ms(c->io.ctx);
}

static int starts(const char *s, size_t n, const char *prefix) {
    size_t k = strlen(prefix);
    return n >= k && memcmp(s, prefix, k) == 0;
}

static int has_byte(const char *s, size_t n, int b) {
    return s != NULL && memchr(s, b, n) != NULL;
}

/* No CR or LF (which would end the command early). */
static int clean(const char *s, size_t n) {
    return !has_byte(s, n, '\r') && !has_byte(s, n, '\n');
}

static int valid_id(const char *id) {
    size_t n = id == NULL ? 0 : strlen(id), i;
    if (n == 0 || n > P2PC_MAX_ID) return 0;
    for (i = 0; i < n; i++) {
        char ch = id[i];
        if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_' ||
            ch == '-' || ch == '.' || ch == '@')
            continue;
        return 0;
    }
    return 1;
}

static int is_hex(const char *s, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= '0' && ch <= '9') || (ch >= 'A' && ch <= 'F') || (ch >= 'a' && ch <= 'f'))) return 0;
    }
    return 1;
}

static size_t put_uint(char *out, uint32_t v) {
    char tmp[10];
    size_t n = 0, i;
    do {
        tmp[n++] = (char)('0' + v % 10u);
        v /= 10u;
    } while (v != 0);
    for (i = 0; i < n; i++) out[i] = tmp[n - 1 - i];
    return n;
}

static void emit(p2pc_client *c, p2pc_event *ev) {
    if (c->on_event != NULL) c->on_event(c, ev, c->user);
}

static void copy_reply(p2pc_client *c, const char *line, size_t len) {
    size_t n = len < P2PC_REPLY_MAX - 1 ? len : P2PC_REPLY_MAX - 1;
    memcpy(c->reply, line, n);
    c->reply[n] = '\0';
    c->reply_len = len;
}

/* ------------------------------------------------------------------ session arithmetic */

/* The KEY field of a command whose line, with the KEY field empty, is pre + post (post starts at the colon
 * after the KEY field, or is empty). */
static void key_field(p2pc_client *c, const char *pre, size_t pre_len, const char *post, size_t post_len,
                      char out[32]) {
    uint8_t digest[P2PC_SHA256_LEN];
    switch (c->session) {
    case P2PC_SECURE_STCP:
        memcpy(out, c->skey, 32);
        break;
    case P2PC_SECURE_DSTCP: {
        /* F: the first field after the KEY before registration, the second after it ("" if none). */
        p2pc_md5_ctx m = c->mac.md5;
        const char *f = post_len > 0 ? post + 1 : post;
        size_t left = post_len > 0 ? post_len - 1 : 0;
        const char *colon = (const char *)memchr(f, ':', left);
        size_t flen = colon != NULL ? (size_t)(colon - f) : left;
        if (c->registered) {
            if (colon == NULL) {
                flen = 0;
            } else {
                f = colon + 1;
                left -= (size_t)(f - (post + 1));
                colon = (const char *)memchr(f, ':', left);
                flen = colon != NULL ? (size_t)(colon - f) : left;
            }
        }
        p2pc_md5_update(&m, f, flen);
        p2pc_md5_final(&m, digest);
        p2pc_hex_upper(digest, P2PC_MD5_LEN, out);
        break;
    }
    case P2PC_SECURE_HSTCP: {
        /* HMAC_SHA256(KEY, "C:" + RND + ":" + n + ":" + L), first 32 hex characters. */
        p2pc_hmac_sha256_ctx h = c->mac.hmac;
        char num[12];
        size_t k = put_uint(num, c->seq);
        p2pc_hmac_sha256_update(&h, "C:", 2);
        p2pc_hmac_sha256_update(&h, c->rnd, strlen(c->rnd));
        p2pc_hmac_sha256_update(&h, ":", 1);
        p2pc_hmac_sha256_update(&h, num, k);
        p2pc_hmac_sha256_update(&h, ":", 1);
        p2pc_hmac_sha256_update(&h, pre, pre_len);
        p2pc_hmac_sha256_update(&h, post, post_len);
        p2pc_hmac_sha256_final(&h, digest);
        p2pc_hex_upper(digest, 16, out);
        break;
    }
    default:
        memcpy(out, c->key, 32);
        break;
    }
}

void p2pc_key_field(p2pc_client *c, const char *line, size_t len, size_t key_at, char out[32]) {
    key_field(c, line, key_at, line + key_at, len - key_at, out);
}

/* Opens the session state for the server nonce rnd (already stored in c->rnd). */
static void session_start(p2pc_client *c, p2pc_secure mode) {
    uint8_t digest[P2PC_MD5_LEN];
    c->session = (uint8_t)mode;
    c->seq = 1;
    switch (mode) {
    case P2PC_SECURE_STCP:
        p2pc_md5_init(&c->mac.md5);
        p2pc_md5_update(&c->mac.md5, c->key, 32);
        p2pc_md5_update(&c->mac.md5, c->rnd, strlen(c->rnd));
        p2pc_md5_final(&c->mac.md5, digest);
        p2pc_hex_upper(digest, P2PC_MD5_LEN, c->skey);
        c->skey[32] = '\0';
        break;
    case P2PC_SECURE_DSTCP:
        p2pc_md5_init(&c->mac.md5);
        p2pc_md5_update(&c->mac.md5, c->key, 32);
        p2pc_md5_update(&c->mac.md5, c->rnd, strlen(c->rnd));
        break;
    case P2PC_SECURE_HSTCP:
        p2pc_hmac_sha256_init(&c->mac.hmac, c->key, 32);
        break;
    default:
        break;
    }
}

/* ------------------------------------------------------------------ connection state */

static void schedule_retry(p2pc_client *c) {
    uint32_t delay = c->backoff_ms;
    uint8_t r;
    if (c->io.random != NULL && c->io.random(c->io.ctx, &r, 1) == 0) {
        /* +-25% jitter, so a fleet that lost the server together does not come back in lockstep. */
        delay = (uint32_t)(((uint64_t)delay * (384u + (uint32_t)r)) / 512u);
    }
    c->retry_at = now_ms(c) + delay;
    c->backoff_ms = c->backoff_ms > c->backoff_max_ms / 2 ? c->backoff_max_ms : c->backoff_ms * 2;
}

/* The connection is gone (or failed to come up): close it, plan the next attempt, tell the application when
 * a working connection was lost. */
static void lost(p2pc_client *c, int why) {
    int was_ready = c->state == P2PC_STATE_READY;
    if (c->connected) {
        c->io.close(c->io.ctx);
        c->connected = 0;
    }
    c->registered = 0;
    c->session = P2PC_SECURE_NONE;
    c->waiting = 0;
    p2pc_framer_reset(&c->rx);
    if (c->state == P2PC_STATE_IDLE) return;
    c->state = P2PC_STATE_BACKOFF;
    schedule_retry(c);
    if (was_ready) {
        p2pc_event ev;
        memset(&ev, 0, sizeof ev);
        ev.type = P2PC_EV_DISCONNECTED;
        ev.data = "";
        ev.id = c->id;
        ev.id_len = strlen(c->id);
        ev.error = why;
        emit(c, &ev);
    }
}

static int write_all(p2pc_client *c, const uint8_t *p, size_t n) {
    while (n > 0) {
        int w = c->io.write(c->io.ctx, p, n, c->reply_timeout_ms);
        if (w <= 0) return P2PC_ERR_IO;
        p += w;
        n -= (size_t)w;
    }
    c->last_tx = now_ms(c);
    return P2PC_OK;
}

/* Reads what the transport has within timeout_ms into the framer: > 0 bytes, 0 timeout, < 0 lost. */
static int read_some(p2pc_client *c, uint32_t timeout_ms) {
    uint8_t *dst;
    size_t room = p2pc_framer_space(&c->rx, &dst);
    int n = c->io.read(c->io.ctx, dst, room, timeout_ms);
    if (n < 0) return P2PC_ERR_CLOSED;
    if (n > 0) p2pc_framer_commit(&c->rx, (size_t)n);
    return n;
}

static int is_reply(const char *line, size_t len) {
    return len > 0 && line[0] == '[' && !starts(line, len, "[SYNC:");
}

/* A line no command waits for: a delivery, a presence event, a liveness tick, or something else. */
static void dispatch(p2pc_client *c, char *line, size_t len) {
    p2pc_event ev;
    memset(&ev, 0, sizeof ev);
    ev.type = P2PC_EV_LINE;
    ev.data = line;
    ev.len = len;
    if (starts(line, len, "PUSH:")) {
        ev.type = P2PC_EV_PUSH;
        ev.data = line + 5;
        ev.len = len - 5;
    } else if (starts(line, len, "PRESENCE:")) {
        const char *id = line + 9;
        const char *colon = (const char *)memchr(id, ':', len - 9);
        if (colon != NULL) {
            size_t rest = len - (size_t)(colon + 1 - line);
            int on = rest == 6 && memcmp(colon + 1, "ONLINE", 6) == 0;
            int off = rest == 7 && memcmp(colon + 1, "OFFLINE", 7) == 0;
            if (on || off) {
                ev.type = P2PC_EV_PRESENCE;
                ev.id = id;
                ev.id_len = (size_t)(colon - id);
                ev.online = on;
                ev.data = colon + 1;
                ev.len = rest;
            }
        }
    } else if (starts(line, len, "[SYNC:") && line[len - 1] == ']') {
        /* The server ticks silent connections; answer with an empty line (not a command: no reply, no HSTCP
         * sequence number) so this connection counts as alive and keeps its ID. A failed write shows up as a
         * failed read right after. */
        static const uint8_t crlf[2] = {'\r', '\n'};
        (void)write_all(c, crlf, 2);
        ev.type = P2PC_EV_SYNC;
        line[len - 1] = '\0';
        ev.data = line + 6;
        ev.len = len - 7;
    }
    emit(c, &ev);
}

/* Sends tx[0, len) + CRLF and waits for the reply line, dispatching everything else that arrives. On failure
 * the connection is dropped. */
static int send_and_wait(p2pc_client *c, size_t len, char **reply, size_t *reply_len) {
    uint32_t t0;
    int r;
    char *line;
    size_t n;
    /* Lines already framed came before this command's reply: hand them out first (with the command marked
     * as waiting, so the callback cannot overwrite it in tx). */
    c->waiting = 1;
    for (;;) {
        int k = p2pc_framer_next(&c->rx, &line, &n);
        if (k == P2PC_LINE_NONE) break;
        if (k == P2PC_LINE) dispatch(c, line, n);
        if (!c->connected) return P2PC_ERR_NOT_CONNECTED;
    }
    c->tx[len] = '\r';
    c->tx[len + 1] = '\n';
    r = write_all(c, c->tx, len + 2);
    if (r != P2PC_OK) {
        lost(c, r);
        return r;
    }
    t0 = now_ms(c);
    for (;;) {
        uint32_t spent;
        int k = p2pc_framer_next(&c->rx, &line, &n);
        if (k == P2PC_LINE) {
            if (is_reply(line, n)) {
                c->waiting = 0;
                *reply = line;
                *reply_len = n;
                return P2PC_OK;
            }
            dispatch(c, line, n);
            if (!c->connected) return P2PC_ERR_NOT_CONNECTED; /* closed from the callback */
            continue;
        }
        if (k == P2PC_LINE_TOO_LONG) continue;
        spent = now_ms(c) - t0;
        if (spent >= c->reply_timeout_ms) {
            lost(c, P2PC_ERR_TIMEOUT);
            return P2PC_ERR_TIMEOUT;
        }
        r = read_some(c, c->reply_timeout_ms - spent);
        if (r < 0) {
            lost(c, r);
            return r;
        }
    }
}

/* The result code of a reply line. */
static int reply_code(const char *line, size_t len) {
    if (starts(line, len, "[FAIL:") && line[len - 1] == ']') return p2pc_fail_from_text(line + 6, len - 7);
    return P2PC_OK;
}

/* HSTCP: did the server count this command (verify its MAC and advance n)? Not for the refusals it gives
 * before looking at the KEY field, nor for a MAC that did not verify. */
static int hstcp_counted(int code) {
    return !(code == P2PC_FAIL_NOID || code == P2PC_FAIL_INVALID_CMD || code == P2PC_FAIL_INVALID_FORMAT ||
             code == P2PC_FAIL_INVALID_KEY || code == P2PC_FAIL_UNKNOWN_COMMAND || code == P2PC_FAIL_LINE_TOO_LONG);
}

typedef struct piece {
    const char *p;
    size_t n;
} piece;

/* TCP:<sub>:<KEY field>[:<piece>]... : builds it in tx, sends it, waits for the reply. */
static int tcp_request(p2pc_client *c, const char *sub, const piece *pieces, size_t np, char **reply,
                       size_t *reply_len) {
    size_t len = 0, key_at, i, sub_len;
    int r, code;
    if (c->waiting) return P2PC_ERR_BUSY;
    if (!c->connected) return P2PC_ERR_NOT_CONNECTED;
    sub_len = strlen(sub);
    /* The line and its CRLF must fit. */
    len = 4 + sub_len + 1 + 32;
    for (i = 0; i < np; i++) len += 1 + pieces[i].n;
    if (len + 2 > c->tx_size) return P2PC_ERR_NOSPACE;
    memcpy(c->tx, "TCP:", 4);
    memcpy(c->tx + 4, sub, sub_len);
    c->tx[4 + sub_len] = ':';
    key_at = 5 + sub_len;
    len = key_at + 32;
    for (i = 0; i < np; i++) {
        c->tx[len++] = ':';
        if (pieces[i].n != 0) memcpy(c->tx + len, pieces[i].p, pieces[i].n);
        len += pieces[i].n;
    }
    key_field(c, (const char *)c->tx, key_at, (const char *)c->tx + key_at + 32, len - key_at - 32,
              (char *)c->tx + key_at);
    r = send_and_wait(c, len, reply, reply_len);
    if (r != P2PC_OK) return r;
    code = reply_code(*reply, *reply_len);
    if (c->session == P2PC_SECURE_HSTCP && hstcp_counted(code)) c->seq++;
    copy_reply(c, *reply, *reply_len);
    return code;
}

static int copy_out(const char *line, size_t len, char *out, size_t out_size) {
    if (out == NULL) return P2PC_OK;
    if (out_size == 0) return P2PC_ERR_NOSPACE;
    if (len >= out_size) {
        memcpy(out, line, out_size - 1);
        out[out_size - 1] = '\0';
        return P2PC_ERR_NOSPACE;
    }
    memcpy(out, line, len);
    out[len] = '\0';
    return P2PC_OK;
}

/* <MODE>:<UID>:ACTIVATE:<CLIRND>: -> [OK:<RND>:<proof>], the proof checked against the KEY. */
static int activate(p2pc_client *c) {
    static const char *const names[] = {"", "STCP", "DSTCP", "HSTCP"};
    const char *mode = names[c->secure];
    size_t mode_len = strlen(mode), uid_len = strlen(c->uid), nonce_len = 2u * c->nonce_len, len, rnd_len;
    uint8_t raw[32];
    char expect[64];
    const char *nonce, *rnd, *proof, *colon;
    size_t proof_len;
    char *reply;
    size_t reply_len;
    int r;
    if (c->waiting) return P2PC_ERR_BUSY;
    len = mode_len + 1 + uid_len + 10 + nonce_len + 1;
    if (len + 2 > c->tx_size) return P2PC_ERR_NOSPACE;
    if (c->io.random(c->io.ctx, raw, c->nonce_len) != 0) return P2PC_ERR_RANDOM;
    memcpy(c->tx, mode, mode_len);
    c->tx[mode_len] = ':';
    memcpy(c->tx + mode_len + 1, c->uid, uid_len);
    memcpy(c->tx + mode_len + 1 + uid_len, ":ACTIVATE:", 10);
    p2pc_hex_upper(raw, c->nonce_len, (char *)c->tx + mode_len + 11 + uid_len);
    c->tx[len - 1] = ':';
    nonce = (const char *)c->tx + mode_len + 11 + uid_len;
    r = send_and_wait(c, len, &reply, &reply_len);
    if (r != P2PC_OK) return r;
    copy_reply(c, reply, reply_len);
    r = reply_code(reply, reply_len);
    if (r != P2PC_OK) return r;
    /* [OK:<RND>:<PROOF>] */
    if (!starts(reply, reply_len, "[OK:") || reply[reply_len - 1] != ']') return P2PC_ERR_PROTOCOL;
    rnd = reply + 4;
    colon = (const char *)memchr(rnd, ':', reply_len - 5);
    if (colon == NULL) return P2PC_ERR_PROTOCOL;
    rnd_len = (size_t)(colon - rnd);
    proof = colon + 1;
    proof_len = (size_t)(reply + reply_len - 1 - proof);
    if (rnd_len == 0 || rnd_len > P2PC_RND_MAX || !is_hex(rnd, rnd_len)) return P2PC_ERR_PROTOCOL;
    if (c->secure == P2PC_SECURE_HSTCP) {
        /* HMAC_SHA256_HEX(KEY, "S:" + CLIRND + ":" + RND) */
        p2pc_hmac_sha256_ctx h;
        uint8_t d[P2PC_SHA256_LEN];
        p2pc_hmac_sha256_init(&h, c->key, 32);
        p2pc_hmac_sha256_update(&h, "S:", 2);
        p2pc_hmac_sha256_update(&h, nonce, nonce_len);
        p2pc_hmac_sha256_update(&h, ":", 1);
        p2pc_hmac_sha256_update(&h, rnd, rnd_len);
        p2pc_hmac_sha256_final(&h, d);
        p2pc_hex_upper(d, P2PC_SHA256_LEN, expect);
        if (proof_len != 64 || !p2pc_hex_equal(proof, expect, 64)) return P2PC_ERR_AUTH;
    } else {
        /* MD5HEX(KEY + CLIRND) */
        p2pc_md5_ctx m;
        uint8_t d[P2PC_MD5_LEN];
        p2pc_md5_init(&m);
        p2pc_md5_update(&m, c->key, 32);
        p2pc_md5_update(&m, nonce, nonce_len);
        p2pc_md5_final(&m, d);
        p2pc_hex_upper(d, P2PC_MD5_LEN, expect);
        if (proof_len != 32 || !p2pc_hex_equal(proof, expect, 32)) return P2PC_ERR_AUTH;
    }
    memcpy(c->rnd, rnd, rnd_len);
    c->rnd[rnd_len] = '\0';
    session_start(c, (p2pc_secure)c->secure);
    return P2PC_OK;
}

/* TCP:ID:<k>:<id>; on success the connection holds the ID and c->id is its canonical form. */
static int do_register(p2pc_client *c, const char *id) {
    piece p;
    char *reply;
    size_t reply_len;
    int r;
    p.p = id;
    p.n = strlen(id);
    r = tcp_request(c, "ID", &p, 1, &reply, &reply_len);
    if (r != P2PC_OK) return r;
    if (!starts(reply, reply_len, "[OK:") || reply[reply_len - 1] != ']' || reply_len - 5 > P2PC_MAX_ID ||
        reply_len - 5 != p.n)
        return P2PC_ERR_PROTOCOL;
    memcpy(c->id, reply + 4, reply_len - 5);
    c->id[reply_len - 5] = '\0';
    c->registered = 1;
    return P2PC_OK;
}

/* ------------------------------------------------------------------ public API */

void p2pc_config_defaults(p2pc_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->port = 8080;
    cfg->nonce_len = 8;
    cfg->connect_timeout_ms = 5000;
    cfg->reply_timeout_ms = 5000;
    cfg->backoff_min_ms = 500;
    cfg->backoff_max_ms = 30000;
}

int p2pc_init(p2pc_client *c, const p2pc_config *cfg, const p2pc_transport *io) {
    size_t i;
    if (c == NULL || cfg == NULL || io == NULL) return P2PC_ERR_ARG;
    memset(c, 0, sizeof *c);
    if (io->open == NULL || io->write == NULL || io->read == NULL || io->close == NULL || io->now_ms == NULL)
        return P2PC_ERR_ARG;
    if (cfg->host == NULL || cfg->key == NULL || strlen(cfg->key) != 32 || !is_hex(cfg->key, 32)) return P2PC_ERR_ARG;
    if (cfg->rx_buf == NULL || cfg->rx_size < P2PC_MIN_BUF || cfg->tx_buf == NULL || cfg->tx_size < P2PC_MIN_BUF)
        return P2PC_ERR_ARG;
    if (cfg->secure > P2PC_SECURE_HSTCP) return P2PC_ERR_ARG;
    if (cfg->secure != P2PC_SECURE_NONE) {
        if (cfg->uid == NULL || cfg->uid[0] == '\0' || strchr(cfg->uid, ':') != NULL ||
            !clean(cfg->uid, strlen(cfg->uid)) || io->random == NULL)
            return P2PC_ERR_ARG;
        if (cfg->nonce_len != 0 && (cfg->nonce_len < 4 || cfg->nonce_len > 32)) return P2PC_ERR_ARG;
    }
    c->io = *io;
    c->host = cfg->host;
    c->port = cfg->port;
    c->uid = cfg->uid;
    c->secure = (uint8_t)cfg->secure;
    c->nonce_len = cfg->nonce_len != 0 ? cfg->nonce_len : 8;
    for (i = 0; i < 32; i++) {
        char ch = cfg->key[i];
        c->key[i] = (ch >= 'a' && ch <= 'f') ? (char)(ch - 'a' + 'A') : ch;
    }
    c->key[32] = '\0';
    p2pc_framer_init(&c->rx, cfg->rx_buf, cfg->rx_size);
    c->tx = (uint8_t *)cfg->tx_buf;
    c->tx_size = cfg->tx_size;
    c->connect_timeout_ms = cfg->connect_timeout_ms;
    c->reply_timeout_ms = cfg->reply_timeout_ms;
    c->backoff_min_ms = cfg->backoff_min_ms != 0 ? cfg->backoff_min_ms : 1;
    c->backoff_max_ms = cfg->backoff_max_ms >= c->backoff_min_ms ? cfg->backoff_max_ms : c->backoff_min_ms;
    c->backoff_ms = c->backoff_min_ms;
    c->keepalive_ms = cfg->keepalive_ms;
    c->on_event = cfg->on_event;
    c->user = cfg->user;
    c->state = P2PC_STATE_IDLE;
    return P2PC_OK;
}

int p2pc_connect(p2pc_client *c) {
    int r, again;
    p2pc_event ev;
    if (c->waiting) return P2PC_ERR_BUSY;
    if (c->connected && c->state == P2PC_STATE_READY) return P2PC_OK;
    again = c->was_ready;
    if (c->connected) lost(c, P2PC_ERR_CLOSED);
    c->state = P2PC_STATE_BACKOFF; /* until it works: a failure schedules the next attempt */
    if (c->io.open(c->io.ctx, c->host, c->port, c->connect_timeout_ms) < 0) {
        lost(c, P2PC_ERR_IO);
        return P2PC_ERR_IO;
    }
    c->connected = 1;
    c->registered = 0;
    c->session = P2PC_SECURE_NONE;
    c->last_tx = now_ms(c);
    p2pc_framer_reset(&c->rx);
    if (c->secure != P2PC_SECURE_NONE) {
        r = activate(c);
        if (r != P2PC_OK) {
            if (c->connected) lost(c, r);
            return r;
        }
    }
    if (c->id[0] != '\0') {
        r = do_register(c, c->id);
        if (r != P2PC_OK) {
            if (c->connected) lost(c, r);
            return r;
        }
    }
    c->state = P2PC_STATE_READY;
    c->backoff_ms = c->backoff_min_ms;
    if (again) c->reconnects++;
    c->was_ready = 1;
    memset(&ev, 0, sizeof ev);
    ev.type = P2PC_EV_CONNECTED;
    ev.data = "";
    ev.id = c->id;
    ev.id_len = strlen(c->id);
    emit(c, &ev);
    return P2PC_OK;
}

int p2pc_register(p2pc_client *c, const char *id) {
    size_t n;
    int r;
    if (!valid_id(id)) return P2PC_ERR_ARG;
    if (c->waiting) return P2PC_ERR_BUSY;
    if (!c->connected) {
        n = strlen(id);
        memcpy(c->id, id, n + 1);
        return p2pc_connect(c);
    }
    r = do_register(c, id);
    return r;
}

int p2pc_unregister(p2pc_client *c) {
    char *reply;
    size_t reply_len;
    int r = tcp_request(c, "REMID", NULL, 0, &reply, &reply_len);
    if (r == P2PC_OK) {
        c->registered = 0;
        c->id[0] = '\0';
    }
    return r;
}

int p2pc_push(p2pc_client *c, p2pc_target target, const char *name, const void *data, size_t len,
              p2pc_push_result *res) {
    static const char *const names[] = {"", "RID", "FRIENDS", "CHILDS", "ALLCHILDS", "PARENT", "RO", "ALIAS"};
    piece p[3];
    size_t np = 0;
    char *reply;
    size_t reply_len;
    const char *v;
    size_t vn;
    int r;
    if (res != NULL) memset(res, 0, sizeof *res);
    if (target < P2PC_RID || target > P2PC_ALIAS || (data == NULL && len != 0)) return P2PC_ERR_ARG;
    if (!clean((const char *)data, len)) return P2PC_ERR_ARG;
    p[np].p = names[target];
    p[np++].n = strlen(names[target]);
    if (target == P2PC_RID || target == P2PC_RO || target == P2PC_ALIAS) {
        if (name == NULL || name[0] == '\0' || strchr(name, ':') != NULL || !clean(name, strlen(name)))
            return P2PC_ERR_ARG;
        p[np].p = name;
        p[np++].n = strlen(name);
    }
    p[np].p = (const char *)data;
    p[np++].n = len;
    r = tcp_request(c, "PUSH", p, np, &reply, &reply_len);
    if (r != P2PC_OK || res == NULL) return r;
    /* [OK:DATA_SENT] | [OK:DATA_HELD] | [OK:ALL_<n>] | [OK:<d>/<t>] */
    v = reply + 4;
    vn = reply_len >= 5 ? reply_len - 5 : 0;
    if (vn == 9 && memcmp(v, "DATA_SENT", 9) == 0) {
        res->delivered = res->total = 1;
    } else if (vn == 9 && memcmp(v, "DATA_HELD", 9) == 0) {
        res->total = 1;
        res->held = 1;
    } else {
        uint32_t a = 0, b = 0;
        size_t i = 0;
        int all = vn > 4 && memcmp(v, "ALL_", 4) == 0;
        if (all) i = 4;
        for (; i < vn && v[i] >= '0' && v[i] <= '9'; i++) a = a * 10u + (uint32_t)(v[i] - '0');
        if (all) {
            b = a;
        } else if (i < vn && v[i] == '/') {
            for (i++; i < vn && v[i] >= '0' && v[i] <= '9'; i++) b = b * 10u + (uint32_t)(v[i] - '0');
        }
        res->delivered = a;
        res->total = b;
    }
    return P2PC_OK;
}

int p2pc_time(p2pc_client *c, const char *arg, char *out, size_t out_size, int64_t *unix_seconds) {
    piece p;
    char *reply;
    size_t reply_len;
    int r;
    if (unix_seconds != NULL) *unix_seconds = 0;
    if (arg == NULL || !clean(arg, strlen(arg))) return P2PC_ERR_ARG;
    p.p = arg;
    p.n = strlen(arg);
    r = tcp_request(c, "TIME", &p, 1, &reply, &reply_len);
    if (r != P2PC_OK) return r;
    if (unix_seconds != NULL && reply_len >= 3) {
        /* Legacy: the last "(digits)"; EPOCH: [OK:<digits>]. */
        size_t end = reply_len - 1, i = end;
        int64_t v = 0;
        if (reply[end - 1] == ')') i = --end;
        while (i > 0 && reply[i - 1] >= '0' && reply[i - 1] <= '9') i--;
        if (i < end && (reply[i - 1] == '(' || (i == 4 && starts(reply, reply_len, "[OK:"))) && end - i <= 12) {
            for (; i < end; i++) v = v * 10 + (reply[i] - '0');
            *unix_seconds = v;
        }
    }
    return copy_out(reply, reply_len, out, out_size);
}

int p2pc_watch(p2pc_client *c, const char *target, int watch) {
    piece p;
    char *reply;
    size_t reply_len;
    if (target == NULL || target[0] == '\0' || !clean(target, strlen(target))) return P2PC_ERR_ARG;
    p.p = target;
    p.n = strlen(target);
    return tcp_request(c, watch ? "WATCH" : "UNWATCH", &p, 1, &reply, &reply_len);
}

int p2pc_will(p2pc_client *c, const char *target, const char *data) {
    piece p[2];
    size_t np = 0;
    char *reply;
    size_t reply_len;
    if (target == NULL) {
        p[np].p = "CLEAR";
        p[np++].n = 5;
    } else {
        if (target[0] == '\0' || data == NULL || !clean(target, strlen(target)) || !clean(data, strlen(data)))
            return P2PC_ERR_ARG;
        p[np].p = target;
        p[np++].n = strlen(target);
        p[np].p = data;
        p[np++].n = strlen(data);
    }
    return tcp_request(c, "WILL", p, np, &reply, &reply_len);
}

int p2pc_command(p2pc_client *c, const char *sub, const char *args, char *out, size_t out_size) {
    piece p = {NULL, 0};
    char *reply;
    size_t reply_len, i, n;
    int r, k;
    if (sub == NULL || sub[0] == '\0') return P2PC_ERR_ARG;
    n = strlen(sub);
    for (i = 0; i < n; i++)
        if (sub[i] < 'A' || sub[i] > 'Z') return P2PC_ERR_ARG;
    if (args != NULL && !clean(args, strlen(args))) return P2PC_ERR_ARG;
    if (args != NULL) {
        p.p = args;
        p.n = strlen(args);
    }
    r = tcp_request(c, sub, &p, args != NULL ? 1 : 0, &reply, &reply_len);
    if (r < 0) return r;
    k = copy_out(reply, reply_len, out, out_size);
    if (r == P2PC_OK && strcmp(sub, "REMID") == 0) {
        c->registered = 0;
        c->id[0] = '\0';
    }
    return r != P2PC_OK ? r : k;
}

int p2pc_deactivate(p2pc_client *c) {
    static const char *const names[] = {"", "STCP", "DSTCP", "HSTCP"};
    const char *mode;
    size_t mode_len, uid_len, len;
    char *reply;
    size_t reply_len;
    int r;
    if (c->waiting) return P2PC_ERR_BUSY;
    if (!c->connected) return P2PC_ERR_NOT_CONNECTED;
    if (c->session == P2PC_SECURE_NONE) {
        copy_reply(c, "", 0); /* nothing to end, nothing sent */
        return P2PC_OK;
    }
    mode = names[c->session];
    mode_len = strlen(mode);
    uid_len = strlen(c->uid);
    len = mode_len + 1 + uid_len + 12;
    if (len + 32 + 2 > c->tx_size) return P2PC_ERR_NOSPACE;
    memcpy(c->tx, mode, mode_len);
    c->tx[mode_len] = ':';
    memcpy(c->tx + mode_len + 1, c->uid, uid_len);
    memcpy(c->tx + mode_len + 1 + uid_len, ":DEACTIVATE:", 12);
    if (c->session == P2PC_SECURE_HSTCP) {
        /* The MAC the next command would carry, over the line up to its last colon. */
        key_field(c, (const char *)c->tx, len, "", 0, (char *)c->tx + len);
        len += 32;
    }
    r = send_and_wait(c, len, &reply, &reply_len);
    if (r != P2PC_OK) return r;
    copy_reply(c, reply, reply_len);
    r = reply_code(reply, reply_len);
    if (r == P2PC_OK) c->session = P2PC_SECURE_NONE;
    return r;
}

int p2pc_poll(p2pc_client *c, uint32_t timeout_ms) {
    char *line;
    size_t n;
    int k, r;
    uint32_t t;
    if (c->waiting) return P2PC_ERR_BUSY;
    if (c->state == P2PC_STATE_IDLE) return P2PC_ERR_NOT_CONNECTED;
    if (c->state == P2PC_STATE_BACKOFF || !c->connected) {
        int32_t wait = (int32_t)(c->retry_at - now_ms(c));
        if (wait > 0) {
            if (c->io.sleep_ms == NULL) return P2PC_OK;
            if ((uint32_t)wait > timeout_ms) {
                c->io.sleep_ms(c->io.ctx, timeout_ms);
                return P2PC_OK;
            }
            c->io.sleep_ms(c->io.ctx, (uint32_t)wait);
        }
        return p2pc_connect(c);
    }
    /* READY */
    t = timeout_ms;
    if (c->keepalive_ms != 0) {
        uint32_t idle = now_ms(c) - c->last_tx;
        if (idle >= c->keepalive_ms) {
            char *reply;
            size_t reply_len;
            r = tcp_request(c, "GID", NULL, 0, &reply, &reply_len);
            if (r < 0) return r;
            idle = 0;
        }
        if (c->keepalive_ms - idle < t) t = c->keepalive_ms - idle;
    }
    for (;;) {
        k = p2pc_framer_next(&c->rx, &line, &n);
        if (k == P2PC_LINE_NONE) break;
        if (k == P2PC_LINE) dispatch(c, line, n);
        if (!c->connected) return P2PC_ERR_NOT_CONNECTED;
    }
    r = read_some(c, t);
    if (r < 0) {
        lost(c, r);
        return r;
    }
    while ((k = p2pc_framer_next(&c->rx, &line, &n)) != P2PC_LINE_NONE) {
        if (k == P2PC_LINE) dispatch(c, line, n);
        if (!c->connected) return P2PC_ERR_NOT_CONNECTED;
    }
    return P2PC_OK;
}

void p2pc_close(p2pc_client *c) {
    c->state = P2PC_STATE_IDLE;
    lost(c, P2PC_ERR_CLOSED);
}

p2pc_state p2pc_get_state(const p2pc_client *c) {
    return (p2pc_state)c->state;
}

const char *p2pc_last_reply(const p2pc_client *c) {
    return c->reply;
}

size_t p2pc_last_reply_len(const p2pc_client *c) {
    return c->reply_len;
}
