/*
 * unit.c - unit tests of the p2pc library, no network:
 *   - MD5 against RFC 1321 appendix A.5, SHA-256 against FIPS 180-2 / NIST examples, HMAC-SHA256 against
 *     RFC 4231, each also fed one byte at a time and split at every position;
 *   - every line of the docs/security.md worked example (STCP, DSTCP, HSTCP), both as arithmetic and as the
 *     exact bytes a client writes in a scripted session;
 *   - the line framer, with the input split at every byte;
 *   - the client over a scripted transport: replies and events interleaved, SYNC answers, error codes, HSTCP
 *     sequence numbers, timeouts, reconnection with re-registration.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "p2pc.h"

static int passed, failed;

#define CHECK(cond)                                                                                        \
    do {                                                                                                   \
        if (cond) {                                                                                        \
            passed++;                                                                                      \
        } else {                                                                                           \
            failed++;                                                                                      \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                               \
        }                                                                                                  \
    } while (0)

#define CHECK_STR(got, want)                                                                               \
    do {                                                                                                   \
        const char *g_ = (got), *w_ = (want);                                                              \
        if (strcmp(g_, w_) == 0) {                                                                         \
            passed++;                                                                                      \
        } else {                                                                                           \
            failed++;                                                                                      \
            fprintf(stderr, "FAIL %s:%d: got \"%s\", want \"%s\"\n", __FILE__, __LINE__, g_, w_);          \
        }                                                                                                  \
    } while (0)

#define CHECK_INT(got, want)                                                                               \
    do {                                                                                                   \
        long g_ = (long)(got), w_ = (long)(want);                                                          \
        if (g_ == w_) {                                                                                    \
            passed++;                                                                                      \
        } else {                                                                                           \
            failed++;                                                                                      \
            fprintf(stderr, "FAIL %s:%d: %s = %ld, want %ld\n", __FILE__, __LINE__, #got, g_, w_);         \
        }                                                                                                  \
    } while (0)

/* ------------------------------------------------------------------ hashes */

static void hex(const uint8_t *d, size_t n, char *out) {
    p2pc_hex_upper(d, n, out);
    out[2 * n] = '\0';
}

static void md5_hex(const void *data, size_t len, char out[33]) {
    p2pc_md5_ctx c;
    uint8_t d[16];
    p2pc_md5_init(&c);
    p2pc_md5_update(&c, data, len);
    p2pc_md5_final(&c, d);
    hex(d, 16, out);
}

static void sha256_hex(const void *data, size_t len, char out[65]) {
    p2pc_sha256_ctx c;
    uint8_t d[32];
    p2pc_sha256_init(&c);
    p2pc_sha256_update(&c, data, len);
    p2pc_sha256_final(&c, d);
    hex(d, 32, out);
}

static void hmac_hex(const void *key, size_t klen, const void *data, size_t len, char out[65]) {
    p2pc_hmac_sha256_ctx c;
    uint8_t d[32];
    p2pc_hmac_sha256_init(&c, key, klen);
    p2pc_hmac_sha256_update(&c, data, len);
    p2pc_hmac_sha256_final(&c, d);
    hex(d, 32, out);
}

/* The same digests fed one byte at a time, and split in two at every position. */
static void check_streaming(const char *msg, size_t len, const char *md5, const char *sha) {
    size_t i, cut;
    char out[65];
    uint8_t d[32];
    p2pc_md5_ctx m;
    p2pc_sha256_ctx s;
    p2pc_md5_init(&m);
    p2pc_sha256_init(&s);
    for (i = 0; i < len; i++) {
        p2pc_md5_update(&m, msg + i, 1);
        p2pc_sha256_update(&s, msg + i, 1);
    }
    p2pc_md5_final(&m, d);
    hex(d, 16, out);
    CHECK_STR(out, md5);
    p2pc_sha256_final(&s, d);
    hex(d, 32, out);
    CHECK_STR(out, sha);
    for (cut = 0; cut <= len; cut++) {
        int ok_md5, ok_sha;
        p2pc_md5_init(&m);
        p2pc_md5_update(&m, msg, cut);
        p2pc_md5_update(&m, msg + cut, len - cut);
        p2pc_md5_final(&m, d);
        hex(d, 16, out);
        ok_md5 = strcmp(out, md5) == 0;
        p2pc_sha256_init(&s);
        p2pc_sha256_update(&s, msg, cut);
        p2pc_sha256_update(&s, msg + cut, len - cut);
        p2pc_sha256_final(&s, d);
        hex(d, 32, out);
        ok_sha = strcmp(out, sha) == 0;
        if (!ok_md5 || !ok_sha) {
            fprintf(stderr, "FAIL streaming split at %lu of %lu\n", (unsigned long)cut, (unsigned long)len);
            failed++;
            return;
        }
    }
    passed++;
}

static void test_md5(void) {
    /* RFC 1321, A.5 test suite */
    static const char *const vec[][2] = {
        {"", "D41D8CD98F00B204E9800998ECF8427E"},
        {"a", "0CC175B9C0F1B6A831C399E269772661"},
        {"abc", "900150983CD24FB0D6963F7D28E17F72"},
        {"message digest", "F96B697D7CB7938D525A2F31AAF161D0"},
        {"abcdefghijklmnopqrstuvwxyz", "C3FCD3D76192E4007DFB496CCA67E13B"},
        {"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", "D174AB98D277D9F5A5611C2C9F419D9F"},
        {"12345678901234567890123456789012345678901234567890123456789012345678901234567890",
         "57EDF4A22BE3C955AC49DA2E2107B67A"},
    };
    size_t i;
    char out[33];
    for (i = 0; i < sizeof vec / sizeof vec[0]; i++) {
        md5_hex(vec[i][0], strlen(vec[i][0]), out);
        CHECK_STR(out, vec[i][1]);
    }
}

static void test_sha256(void) {
    static const char *const vec[][2] = {
        {"abc", "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD"},
        {"", "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248D6A61D20638B8E5C026930C3E6039A33CE45964FF2167F6ECEDD419DB06C1"},
        {"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrst"
         "nopqrstu",
         "CF5B16A778AF8380036CE59E7B0492370B249B11E8F07A51AFAC45037AFEE9D1"},
    };
    size_t i;
    char out[65];
    p2pc_sha256_ctx c;
    uint8_t d[32], block[1000];
    for (i = 0; i < sizeof vec / sizeof vec[0]; i++) {
        sha256_hex(vec[i][0], strlen(vec[i][0]), out);
        CHECK_STR(out, vec[i][1]);
    }
    /* One million 'a', in uneven pieces. */
    memset(block, 'a', sizeof block);
    p2pc_sha256_init(&c);
    for (i = 0; i < 1000000;) {
        size_t n = 1 + (i * 7) % 997;
        if (n > 1000000 - i) n = 1000000 - i;
        p2pc_sha256_update(&c, block, n);
        i += n;
    }
    p2pc_sha256_final(&c, d);
    hex(d, 32, out);
    CHECK_STR(out, "CDC76E5C9914FB9281A1C7E284D73E67F1809A48A497200E046D39CCC7112CD0");
    /* Lengths around the padding boundary (55, 56, 63, 64 bytes), streamed and split. */
    check_streaming("The quick brown fox jumps over the lazy dog", 43, "9E107D9D372BB6826BD81D3542A419D6",
                    "D7A8FBB307D7809469CA9ABCB0082E4F8D5651E46D3CDB762D02D0BF37C9E592");
    check_streaming("12345678901234567890123456789012345678901234567890123456789012345678901234567890", 80,
                    "57EDF4A22BE3C955AC49DA2E2107B67A",
                    "F371BC4A311F2B009EEF952DD83CA80E2B60026C8E935592D0F9C308453C813E");
}

static void test_hmac(void) {
    /* RFC 4231 test cases 1-7 */
    uint8_t key[131], data[50];
    char out[65];
    memset(key, 0x0b, 20);
    hmac_hex(key, 20, "Hi There", 8, out);
    CHECK_STR(out, "B0344C61D8DB38535CA8AFCEAF0BF12B881DC200C9833DA726E9376C2E32CFF7");
    hmac_hex("Jefe", 4, "what do ya want for nothing?", 28, out);
    CHECK_STR(out, "5BDCC146BF60754E6A042426089575C75A003F089D2739839DEC58B964EC3843");
    memset(key, 0xaa, 20);
    memset(data, 0xdd, 50);
    hmac_hex(key, 20, data, 50, out);
    CHECK_STR(out, "773EA91E36800E46854DB8EBD09181A72959098B3EF8C122D9635514CED565FE");
    {
        size_t i;
        for (i = 0; i < 25; i++) key[i] = (uint8_t)(i + 1);
        memset(data, 0xcd, 50);
        hmac_hex(key, 25, data, 50, out);
        CHECK_STR(out, "82558A389A443C0EA4CC819899F2083A85F0FAA3E578F8077A2E3FF46729665B");
    }
    memset(key, 0x0c, 20);
    hmac_hex(key, 20, "Test With Truncation", 20, out);
    out[32] = '\0';
    CHECK_STR(out, "A3B6167473100EE06E0C796C2955552B");
    memset(key, 0xaa, 131);
    hmac_hex(key, 131, "Test Using Larger Than Block-Size Key - Hash Key First", 54, out);
    CHECK_STR(out, "60E431591EE0B67F0D8A26AACBF5B77F8E0BC6213728C5140546040F0EE37F54");
    hmac_hex(key, 131,
             "This is a test using a larger than block-size key and a larger than block-size data. The key needs "
             "to be hashed before being used by the HMAC algorithm.",
             152, out);
    CHECK_STR(out, "9B09FFA71B942FCB27635FBCD5B0E944BFDC63644F0713938A7F51535C3A35E2");
    /* A keyed context copied and reused gives the same MAC as a fresh one. */
    {
        p2pc_hmac_sha256_ctx base, a;
        uint8_t d[32];
        p2pc_hmac_sha256_init(&base, "Jefe", 4);
        a = base;
        p2pc_hmac_sha256_update(&a, "what do ya ", 11);
        p2pc_hmac_sha256_update(&a, "want for nothing?", 17);
        p2pc_hmac_sha256_final(&a, d);
        hex(d, 32, out);
        CHECK_STR(out, "5BDCC146BF60754E6A042426089575C75A003F089D2739839DEC58B964EC3843");
        a = base;
        p2pc_hmac_sha256_update(&a, "what do ya want for nothing?", 28);
        p2pc_hmac_sha256_final(&a, d);
        hex(d, 32, out);
        CHECK_STR(out, "5BDCC146BF60754E6A042426089575C75A003F089D2739839DEC58B964EC3843");
    }
    CHECK(p2pc_hex_equal("abcdef0123", "ABCDEF0123", 10));
    CHECK(!p2pc_hex_equal("abcdef0123", "ABCDEF0124", 10));
}

/* ------------------------------------------------------------------ docs/security.md worked example */

#define DEMO_KEY "0123456789ABCDEF0123456789ABCDEF"
#define DEMO_UID "demo@example.com"

static void test_security_arithmetic(void) {
    char out[65];
    hmac_hex(DEMO_KEY, 32, "S:0011223344556677:89ABCDEF01234567", 35, out);
    CHECK_STR(out, "C827ED6CACBE5F2D99C0005F983202DF6A81EC76F5FD316853C383A691A53E2E");
    md5_hex(DEMO_KEY "CAFEBABE01", 42, out);
    CHECK_STR(out, "D795E6868A367DC5E18E6D233D6A90B8");
    md5_hex(DEMO_KEY "1A2B3C4D", 40, out);
    CHECK_STR(out, "ECBE6C737531EE9CBDD2FE1E06A69752");
    md5_hex(DEMO_KEY "1A2B3C4D"
                     "556",
            43, out);
    CHECK_STR(out, "6CDC931E5CAB9327EFDB96A9E3A7330F");
    md5_hex(DEMO_KEY "1A2B3C4D"
                     "555",
            43, out);
    CHECK_STR(out, "D7509FDF32A25AB1A885CA5D4D1756FD");
    hmac_hex(DEMO_KEY, 32, "C:89ABCDEF01234567:1:TCP:ID::556", 32, out);
    out[32] = '\0';
    CHECK_STR(out, "1AFEB52A384CBF0F8813242E81411A30");
    hmac_hex(DEMO_KEY, 32, "C:89ABCDEF01234567:2:TCP:PUSH::RID:555:hi", 41, out);
    out[32] = '\0';
    CHECK_STR(out, "578A1C316215946DD956937B00AA403A");
    hmac_hex(DEMO_KEY, 32, "C:89ABCDEF01234567:3:HSTCP:demo@example.com:DEACTIVATE:", 55, out);
    out[32] = '\0';
    CHECK_STR(out, "07941887F8BD678742DC9D9F2AEEE9F1");
}

/* ------------------------------------------------------------------ framer */

static void test_framer(void) {
    static const char stream[] = "PUSH:a\r\n[OK:X]\nline3\r\n\r\nmid\rcr\r\nPRESENCE:A:ONLINE\n";
    static const char *const want[] = {"PUSH:a", "[OK:X]", "line3", "", "mid\rcr", "PRESENCE:A:ONLINE"};
    const size_t nwant = sizeof want / sizeof want[0];
    size_t total = sizeof stream - 1, cut, i;
    uint8_t buf[64];
    p2pc_framer f;
    char *line;
    size_t len;
    int bad = 0;

    /* Two chunks, split at every position (including none). */
    for (cut = 0; cut <= total; cut++) {
        size_t got = 0, fed = 0;
        p2pc_framer_init(&f, buf, sizeof buf);
        while (fed < total) {
            size_t end = fed < cut ? cut : total;
            fed += p2pc_framer_feed(&f, stream + fed, end - fed);
            while (p2pc_framer_next(&f, &line, &len) == P2PC_LINE) {
                if (got >= nwant || strlen(want[got]) != len || memcmp(line, want[got], len) != 0 ||
                    line[len] != '\0')
                    bad++;
                got++;
            }
        }
        if (got != nwant) bad++;
    }
    CHECK_INT(bad, 0);

    /* One byte at a time: a line comes out exactly when its LF arrives. */
    {
        size_t got = 0;
        bad = 0;
        p2pc_framer_init(&f, buf, sizeof buf);
        for (i = 0; i < total; i++) {
            int k;
            CHECK_INT(p2pc_framer_feed(&f, stream + i, 1), 1);
            k = p2pc_framer_next(&f, &line, &len);
            if ((k == P2PC_LINE) != (stream[i] == '\n')) bad++;
            if (k == P2PC_LINE) {
                if (got >= nwant || strlen(want[got]) != len || memcmp(line, want[got], len) != 0) bad++;
                got++;
            }
        }
        CHECK_INT(bad, 0);
        CHECK_INT(got, nwant);
    }

    /* Overlong lines: reported once, dropped up to their LF, the next line intact; at every split. */
    {
        static const char s2[] = "0123456789abcdefXYZ\r\nok\r\n12345678901234\r\n123456789012345\n1234567890123456\nz\n";
        /* cap 16: longest line 14 with CRLF, 15 with a bare LF */
        static const char *const want2[] = {"ok", "12345678901234", "123456789012345", "z"};
        size_t n2 = sizeof s2 - 1;
        uint8_t small[16];
        for (cut = 0; cut <= n2; cut++) {
            size_t got = 0, fed = 0;
            int too_long = 0, k;
            p2pc_framer_init(&f, small, sizeof small);
            while (fed < n2) {
                size_t end = fed < cut ? cut : n2;
                size_t step = p2pc_framer_feed(&f, s2 + fed, end - fed);
                fed += step;
                while ((k = p2pc_framer_next(&f, &line, &len)) != P2PC_LINE_NONE) {
                    if (k == P2PC_LINE_TOO_LONG) {
                        too_long++;
                        continue;
                    }
                    if (got >= 4 || strlen(want2[got]) != len || memcmp(line, want2[got], len) != 0) bad++;
                    got++;
                }
            }
            if (got != 4 || too_long != 2) {
                bad++;
                fprintf(stderr, "overlong at cut %lu: %lu lines, %d too long\n", (unsigned long)cut,
                        (unsigned long)got, too_long);
            }
        }
        CHECK_INT(bad, 0);
    }

    /* Zero-copy use: read straight into the free space. */
    {
        uint8_t *dst;
        size_t room;
        p2pc_framer_init(&f, buf, sizeof buf);
        room = p2pc_framer_space(&f, &dst);
        CHECK_INT(room, sizeof buf);
        memcpy(dst, "[OK:DATA_SENT]\r\nPU", 18);
        p2pc_framer_commit(&f, 18);
        CHECK_INT(p2pc_framer_next(&f, &line, &len), P2PC_LINE);
        CHECK_STR(line, "[OK:DATA_SENT]");
        CHECK_INT(p2pc_framer_next(&f, &line, &len), P2PC_LINE_NONE);
        room = p2pc_framer_space(&f, &dst);
        CHECK_INT(room, sizeof buf - 2);
        memcpy(dst, "SH:x\n", 5);
        p2pc_framer_commit(&f, 5);
        CHECK_INT(p2pc_framer_next(&f, &line, &len), P2PC_LINE);
        CHECK_STR(line, "PUSH:x");
    }
}

/* ------------------------------------------------------------------ scripted transport */

#define MAX_STEPS 16

typedef struct step {
    const char *expect; /* a line the client must write (without CRLF) */
    const char *reply;  /* bytes to deliver after it (NULL: none) */
} step;

typedef struct fake {
    step steps[MAX_STEPS];
    int nsteps, at;
    char wline[512];
    size_t wlen;
    char in[2048];       /* bytes to deliver */
    size_t in_len, in_pos;
    size_t chunk;        /* deliver at most this many bytes per read (0: all) */
    int eof;             /* reads fail once the input is used up */
    int refuse_open;
    int opens, closes, blank_lines, mismatches;
    uint32_t clock;
    const uint8_t *rand;
    size_t rand_len;
    char last_mismatch[512];
} fake;

static void fake_queue(fake *f, const char *bytes) {
    size_t n = strlen(bytes);
    if (f->in_pos == f->in_len) f->in_pos = f->in_len = 0;
    memcpy(f->in + f->in_len, bytes, n);
    f->in_len += n;
}

static void fake_script(fake *f, const char *expect, const char *reply) {
    f->steps[f->nsteps].expect = expect;
    f->steps[f->nsteps].reply = reply;
    f->nsteps++;
}

static int f_open(void *ctx, const char *host, uint16_t port, uint32_t timeout_ms) {
    fake *f = (fake *)ctx;
    (void)host;
    (void)port;
    (void)timeout_ms;
    f->opens++;
    if (f->refuse_open) return -1;
    f->eof = 0;
    f->in_pos = f->in_len = 0;
    f->wlen = 0;
    return 0;
}

static int f_write(void *ctx, const uint8_t *buf, size_t len, uint32_t timeout_ms) {
    fake *f = (fake *)ctx;
    size_t i;
    (void)timeout_ms;
    for (i = 0; i < len; i++) {
        if (buf[i] != '\n') {
            if (f->wlen < sizeof f->wline - 1) f->wline[f->wlen++] = (char)buf[i];
            continue;
        }
        if (f->wlen > 0 && f->wline[f->wlen - 1] == '\r') f->wlen--;
        f->wline[f->wlen] = '\0';
        if (f->wlen == 0) {
            f->blank_lines++;
        } else if (f->at < f->nsteps && strcmp(f->wline, f->steps[f->at].expect) == 0) {
            if (f->steps[f->at].reply != NULL) fake_queue(f, f->steps[f->at].reply);
            f->at++;
        } else {
            f->mismatches++;
            strcpy(f->last_mismatch, f->wline);
            fprintf(stderr, "scripted server: unexpected line \"%s\" (step %d, want \"%s\")\n", f->wline, f->at,
                    f->at < f->nsteps ? f->steps[f->at].expect : "(none)");
        }
        f->wlen = 0;
    }
    return (int)len;
}

static int f_read(void *ctx, uint8_t *buf, size_t cap, uint32_t timeout_ms) {
    fake *f = (fake *)ctx;
    size_t n = f->in_len - f->in_pos;
    if (n == 0) {
        if (f->eof) return -1;
        f->clock += timeout_ms; /* nothing arrives within the deadline */
        return 0;
    }
    if (f->chunk != 0 && n > f->chunk) n = f->chunk;
    if (n > cap) n = cap;
    memcpy(buf, f->in + f->in_pos, n);
    f->in_pos += n;
    return (int)n;
}

static void f_close(void *ctx) {
    ((fake *)ctx)->closes++;
}

static uint32_t f_now(void *ctx) {
    return ((fake *)ctx)->clock;
}

static void f_sleep(void *ctx, uint32_t ms) {
    ((fake *)ctx)->clock += ms;
}

static int f_random(void *ctx, uint8_t *buf, size_t len) {
    fake *f = (fake *)ctx;
    size_t i;
    for (i = 0; i < len; i++) buf[i] = f->rand_len != 0 ? f->rand[i % f->rand_len] : (uint8_t)0x42;
    return 0;
}

typedef struct seen {
    char log[2048];
    int pushes, presences, syncs, connected, disconnected, lines;
    int last_error;
} seen;

static void record(p2pc_client *c, const p2pc_event *ev, void *user) {
    seen *s = (seen *)user;
    char tmp[300];
    (void)c;
    switch (ev->type) {
    case P2PC_EV_PUSH:
        s->pushes++;
        snprintf(tmp, sizeof tmp, "push(%.*s)", (int)ev->len, ev->data);
        break;
    case P2PC_EV_PRESENCE:
        s->presences++;
        snprintf(tmp, sizeof tmp, "presence(%.*s,%d)", (int)ev->id_len, ev->id, ev->online);
        break;
    case P2PC_EV_SYNC:
        s->syncs++;
        snprintf(tmp, sizeof tmp, "sync(%.*s)", (int)ev->len, ev->data);
        break;
    case P2PC_EV_CONNECTED:
        s->connected++;
        snprintf(tmp, sizeof tmp, "connected(%.*s)", (int)ev->id_len, ev->id);
        break;
    case P2PC_EV_DISCONNECTED:
        s->disconnected++;
        s->last_error = ev->error;
        snprintf(tmp, sizeof tmp, "disconnected(%s)", p2pc_err_name(ev->error));
        break;
    default:
        s->lines++;
        snprintf(tmp, sizeof tmp, "line(%.*s)", (int)ev->len, ev->data);
        break;
    }
    strncat(s->log, tmp, sizeof s->log - strlen(s->log) - 1);
}

static uint8_t rx[256], tx[256];

static void setup(p2pc_client *c, fake *f, seen *s, p2pc_secure mode, const char *key, uint8_t nonce_len) {
    p2pc_config cfg;
    p2pc_transport io;
    int r;
    memset(f, 0, sizeof *f);
    memset(s, 0, sizeof *s);
    io.ctx = f;
    io.open = f_open;
    io.write = f_write;
    io.read = f_read;
    io.close = f_close;
    io.now_ms = f_now;
    io.sleep_ms = f_sleep;
    io.random = f_random;
    p2pc_config_defaults(&cfg);
    cfg.host = "test";
    cfg.key = key;
    cfg.uid = DEMO_UID;
    cfg.secure = mode;
    cfg.nonce_len = nonce_len;
    cfg.rx_buf = rx;
    cfg.rx_size = sizeof rx;
    cfg.tx_buf = tx;
    cfg.tx_size = sizeof tx;
    cfg.on_event = record;
    cfg.user = s;
    cfg.backoff_min_ms = 100;
    cfg.backoff_max_ms = 400;
    r = p2pc_init(c, &cfg, &io);
    CHECK_INT(r, P2PC_OK);
}

static const uint8_t HSTCP_NONCE[] = {0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77};
static const uint8_t STCP_NONCE[] = {0xCA, 0xFE, 0xBA, 0xBE, 0x01};

/* The worked example of docs/security.md, byte for byte, as a client session. */
static void test_session_vectors(void) {
    p2pc_client c;
    fake f;
    seen s;
    p2pc_push_result res;
    char field[33];

    /* HSTCP */
    setup(&c, &f, &s, P2PC_SECURE_HSTCP, DEMO_KEY, 8);
    f.rand = HSTCP_NONCE;
    f.rand_len = sizeof HSTCP_NONCE;
    f.chunk = 3; /* replies arrive in small pieces */
    fake_script(&f, "HSTCP:demo@example.com:ACTIVATE:0011223344556677:",
                "[OK:89ABCDEF01234567:C827ED6CACBE5F2D99C0005F983202DF6A81EC76F5FD316853C383A691A53E2E]\r\n");
    fake_script(&f, "TCP:ID:1AFEB52A384CBF0F8813242E81411A30:556", "[OK:556]\r\n");
    fake_script(&f, "TCP:PUSH:578A1C316215946DD956937B00AA403A:RID:555:hi", "[OK:DATA_SENT]\r\n");
    fake_script(&f, "HSTCP:demo@example.com:DEACTIVATE:07941887F8BD678742DC9D9F2AEEE9F1", "[OK:HSTCP_DEACTIVATED]\r\n");
    fake_script(&f, "TCP:GID:" DEMO_KEY, "[OK:556]\r\n");
    CHECK_INT(p2pc_register(&c, "556"), P2PC_OK);
    CHECK_STR(p2pc_last_reply(&c), "[OK:556]");
    CHECK_INT(p2pc_get_state(&c), P2PC_STATE_READY);
    CHECK_INT(c.seq, 2);
    p2pc_key_field(&c, "TCP:PUSH::RID:555:hi", 20, 9, field);
    field[32] = '\0';
    CHECK_STR(field, "578A1C316215946DD956937B00AA403A");
    CHECK_INT(p2pc_push(&c, P2PC_RID, "555", "hi", 2, &res), P2PC_OK);
    CHECK_INT(res.delivered, 1);
    CHECK_INT(res.total, 1);
    CHECK_INT(p2pc_deactivate(&c), P2PC_OK);
    CHECK_STR(p2pc_last_reply(&c), "[OK:HSTCP_DEACTIVATED]");
    CHECK_INT(p2pc_command(&c, "GID", NULL, NULL, 0), P2PC_OK);
    CHECK_INT(f.at, 5);
    CHECK_INT(f.mismatches, 0);
    CHECK_STR(s.log, "connected(556)");

    /* STCP, client nonce CAFEBABE01 */
    setup(&c, &f, &s, P2PC_SECURE_STCP, DEMO_KEY, 5);
    f.rand = STCP_NONCE;
    f.rand_len = sizeof STCP_NONCE;
    fake_script(&f, "STCP:demo@example.com:ACTIVATE:CAFEBABE01:", "[OK:1A2B3C4D:D795E6868A367DC5E18E6D233D6A90B8]\r\n");
    fake_script(&f, "TCP:ID:ECBE6C737531EE9CBDD2FE1E06A69752:556", "[OK:556]\r\n");
    fake_script(&f, "TCP:PUSH:ECBE6C737531EE9CBDD2FE1E06A69752:RID:555:hi", "[OK:DATA_SENT]\r\n");
    fake_script(&f, "STCP:demo@example.com:DEACTIVATE:", "[OK:STCP_DEACTIVATED]\r\n");
    CHECK_INT(p2pc_register(&c, "556"), P2PC_OK);
    CHECK_INT(p2pc_push(&c, P2PC_RID, "555", "hi", 2, NULL), P2PC_OK);
    CHECK_INT(p2pc_deactivate(&c), P2PC_OK);
    CHECK_INT(f.at, 4);
    CHECK_INT(f.mismatches, 0);

    /* DSTCP: F is the ID before registration, the second field after it */
    setup(&c, &f, &s, P2PC_SECURE_DSTCP, DEMO_KEY, 5);
    f.rand = STCP_NONCE;
    f.rand_len = sizeof STCP_NONCE;
    fake_script(&f, "DSTCP:demo@example.com:ACTIVATE:CAFEBABE01:", "[OK:1A2B3C4D:D795E6868A367DC5E18E6D233D6A90B8]\r\n");
    fake_script(&f, "TCP:ID:6CDC931E5CAB9327EFDB96A9E3A7330F:556", "[OK:556]\r\n");
    fake_script(&f, "TCP:PUSH:D7509FDF32A25AB1A885CA5D4D1756FD:RID:555:hi", "[OK:DATA_SENT]\r\n");
    CHECK_INT(p2pc_register(&c, "556"), P2PC_OK);
    CHECK_INT(p2pc_push(&c, P2PC_RID, "555", "hi", 2, NULL), P2PC_OK);
    CHECK_INT(f.at, 3);
    CHECK_INT(f.mismatches, 0);
    /* ...and "hello" for FRIENDS:hello, "" for GID */
    {
        char want[65];
        md5_hex(DEMO_KEY "1A2B3C4Dhello", 45, want);
        p2pc_key_field(&c, "TCP:PUSH::FRIENDS:hello", 23, 9, field);
        field[32] = '\0';
        CHECK_STR(field, want);
        md5_hex(DEMO_KEY "1A2B3C4D", 40, want);
        p2pc_key_field(&c, "TCP:GID:", 8, 8, field);
        field[32] = '\0';
        CHECK_STR(field, want);
    }

    /* A server that cannot prove the KEY is refused. */
    setup(&c, &f, &s, P2PC_SECURE_HSTCP, DEMO_KEY, 8);
    f.rand = HSTCP_NONCE;
    f.rand_len = sizeof HSTCP_NONCE;
    fake_script(&f, "HSTCP:demo@example.com:ACTIVATE:0011223344556677:",
                "[OK:89ABCDEF01234567:C827ED6CACBE5F2D99C0005F983202DF6A81EC76F5FD316853C383A691A53E2F]\r\n");
    CHECK_INT(p2pc_register(&c, "556"), P2PC_ERR_AUTH);
    CHECK_INT(p2pc_get_state(&c), P2PC_STATE_BACKOFF);
    CHECK_INT(f.closes, 1);
    setup(&c, &f, &s, P2PC_SECURE_STCP, DEMO_KEY, 5);
    f.rand = STCP_NONCE;
    f.rand_len = sizeof STCP_NONCE;
    fake_script(&f, "STCP:demo@example.com:ACTIVATE:CAFEBABE01:", "[OK:1A2B3C4D:0795E6868A367DC5E18E6D233D6A90B8]\r\n");
    CHECK_INT(p2pc_register(&c, "556"), P2PC_ERR_AUTH);
    setup(&c, &f, &s, P2PC_SECURE_STCP, DEMO_KEY, 5);
    fake_script(&f, "STCP:demo@example.com:ACTIVATE:4242424242:", "[FAIL:INVALID_USERID]\r\n");
    CHECK_INT(p2pc_register(&c, "556"), P2PC_FAIL_INVALID_USERID);
}

#define KEY "00112233445566778899AABBCCDDEEFF"

/* Replies, events and error codes over plain TCP. */
static void test_client_plain(void) {
    p2pc_client c;
    fake f;
    seen s;
    p2pc_push_result res;
    char out[64];
    int64_t unix_s;

    setup(&c, &f, &s, P2PC_SECURE_NONE, "00112233445566778899aabbccddeeff", 8);
    f.chunk = 1; /* byte by byte */
    fake_script(&f, "TCP:ID:" KEY ":lamp", "[OK:LAMP]\r\n");
    /* Deliveries, presence and a SYNC before the reply; the SYNC is not the reply, and is answered. */
    fake_script(&f, "TCP:PUSH:" KEY ":RID:B:hello world",
                "PUSH:one\r\nPRESENCE:B:ONLINE\r\n[SYNC:01.02.2026_03:04:05]\r\nPUSH:a:b:c\n[OK:DATA_SENT]\r\n");
    fake_script(&f, "TCP:PUSH:" KEY ":RID:NOBODY:x", "[FAIL:REM_ID]\r\n");
    fake_script(&f, "TCP:PUSH:" KEY ":FRIENDS:", "[OK:2/3]\r\n");
    fake_script(&f, "TCP:PUSH:" KEY ":CHILDS:c", "[OK:ALL_12]\r\n");
    fake_script(&f, "TCP:PUSH:" KEY ":ALLCHILDS:d", "[FAIL:NO_ID]\r\n");
    fake_script(&f, "TCP:PUSH:" KEY ":PARENT:e", "[OK:DATA_HELD]\r\n");
    fake_script(&f, "TCP:PUSH:" KEY ":RO:HALL:f", "[FAIL:NO_ROUTER]\r\n");
    fake_script(&f, "TCP:PUSH:" KEY ":ALIAS:lamp:g", "[FAIL:NO_ALIAS]\r\n");
    fake_script(&f, "TCP:TIME:" KEY ":+05:30", "[IST:(Thu)(26,11,2026)(02:13:39)(1795639419)]\r\n");
    fake_script(&f, "TCP:TIME:" KEY ":+05:30:EPOCH", "[OK:1795639419]\r\n");
    fake_script(&f, "TCP:ID:" KEY ":other", "[FAIL:LAMP]\r\n");
    fake_script(&f, "TCP:WATCH:" KEY ":RID:B", "[OK:WATCHING]\r\n");
    fake_script(&f, "TCP:FOO:" KEY, "[FAIL:INVALID_CMD]\r\n");

    CHECK_INT(p2pc_register(&c, "lamp"), P2PC_OK);
    CHECK_STR(c.id, "LAMP");
    CHECK_INT(p2pc_push(&c, P2PC_RID, "B", "hello world", 11, &res), P2PC_OK);
    CHECK_STR(s.log, "connected(LAMP)push(one)presence(B,1)sync(01.02.2026_03:04:05)push(a:b:c)");
    CHECK_INT(f.blank_lines, 1);
    CHECK_INT(p2pc_push(&c, P2PC_RID, "NOBODY", "x", 1, &res), P2PC_FAIL_REM_ID);
    CHECK_STR(p2pc_err_name(P2PC_FAIL_REM_ID), "P2PC_FAIL_REM_ID");
    CHECK_STR(p2pc_last_reply(&c), "[FAIL:REM_ID]");
    CHECK_INT(p2pc_push(&c, P2PC_FRIENDS, NULL, "", 0, &res), P2PC_OK);
    CHECK(res.delivered == 2 && res.total == 3 && !res.held);
    CHECK_INT(p2pc_push(&c, P2PC_CHILDS, NULL, "c", 1, &res), P2PC_OK);
    CHECK(res.delivered == 12 && res.total == 12);
    CHECK_INT(p2pc_push(&c, P2PC_ALLCHILDS, NULL, "d", 1, &res), P2PC_FAIL_NO_ID);
    CHECK_INT(p2pc_push(&c, P2PC_PARENT, NULL, "e", 1, &res), P2PC_OK);
    CHECK(res.delivered == 0 && res.total == 1 && res.held);
    CHECK_INT(p2pc_push(&c, P2PC_RO, "HALL", "f", 1, &res), P2PC_FAIL_NO_ROUTER);
    CHECK_INT(p2pc_push(&c, P2PC_ALIAS, "lamp", "g", 1, &res), P2PC_FAIL_NO_ALIAS);
    CHECK_INT(p2pc_time(&c, "+05:30", out, sizeof out, &unix_s), P2PC_OK);
    CHECK_STR(out, "[IST:(Thu)(26,11,2026)(02:13:39)(1795639419)]");
    CHECK(unix_s == 1795639419);
    CHECK_INT(p2pc_time(&c, "+05:30:EPOCH", out, sizeof out, &unix_s), P2PC_OK);
    CHECK(unix_s == 1795639419);
    CHECK_INT(p2pc_register(&c, "other"), P2PC_FAIL_OTHER);
    CHECK_STR(c.id, "LAMP");
    CHECK_INT(p2pc_watch(&c, "RID:B", 1), P2PC_OK);
    CHECK_INT(p2pc_last_reply_len(&c), 13);
    CHECK_INT(p2pc_deactivate(&c), P2PC_OK); /* no session: nothing sent */
    CHECK_STR(p2pc_last_reply(&c), "");
    CHECK_INT(p2pc_last_reply_len(&c), 0);
    CHECK_INT(p2pc_command(&c, "FOO", NULL, out, sizeof out), P2PC_FAIL_INVALID_CMD);
    CHECK_STR(out, "[FAIL:INVALID_CMD]");
    CHECK_INT(f.at, f.nsteps);
    CHECK_INT(f.mismatches, 0);

    /* Bad arguments never reach the wire. */
    CHECK_INT(p2pc_push(&c, P2PC_RID, "B", "a\nb", 3, NULL), P2PC_ERR_ARG);
    CHECK_INT(p2pc_push(&c, P2PC_RID, "B", "a\rb", 3, NULL), P2PC_ERR_ARG);
    CHECK_INT(p2pc_push(&c, P2PC_RID, "B:C", "x", 1, NULL), P2PC_ERR_ARG);
    CHECK_INT(p2pc_push(&c, P2PC_RID, NULL, "x", 1, NULL), P2PC_ERR_ARG);
    CHECK_INT(p2pc_register(&c, "bad id"), P2PC_ERR_ARG);
    CHECK_INT(p2pc_command(&c, "gid", NULL, NULL, 0), P2PC_ERR_ARG);
    {
        char big[300];
        memset(big, 'x', sizeof big);
        CHECK_INT(p2pc_push(&c, P2PC_RID, "B", big, sizeof big, NULL), P2PC_ERR_NOSPACE);
    }
    CHECK_INT(f.mismatches, 0);

    /* Unsolicited lines during poll; a reply-shaped one with no command waiting is a LINE event. */
    memset(s.log, 0, sizeof s.log);
    fake_queue(&f, "PUSH:later\r\n[FAIL:REM_LINK]\r\nPRESENCE:B:OFFLINE\r\nPRESENCE:B:WEIRD\r\n");
    CHECK_INT(p2pc_poll(&c, 10), P2PC_OK);
    while (f.in_pos < f.in_len) CHECK_INT(p2pc_poll(&c, 10), P2PC_OK);
    CHECK_STR(s.log, "push(later)line([FAIL:REM_LINK])presence(B,0)line(PRESENCE:B:WEIRD)");

    /* No reply in time: P2PC_ERR_TIMEOUT, and the connection is dropped (its state is unknown). */
    fake_script(&f, "TCP:GID:" KEY, NULL);
    CHECK_INT(p2pc_command(&c, "GID", NULL, NULL, 0), P2PC_ERR_TIMEOUT);
    CHECK_INT(p2pc_get_state(&c), P2PC_STATE_BACKOFF);
    CHECK_INT(s.disconnected, 1);
    CHECK_INT(s.last_error, P2PC_ERR_TIMEOUT);
    CHECK_INT(p2pc_push(&c, P2PC_RID, "B", "x", 1, NULL), P2PC_ERR_NOT_CONNECTED);

    CHECK_STR(p2pc_err_name(P2PC_ERR_TIMEOUT), "P2PC_ERR_TIMEOUT");
    CHECK_STR(p2pc_fail_text(P2PC_FAIL_NODEEXIST), "NODEEXIST");
    CHECK_INT(p2pc_fail_from_text("SECURE_REQUIRED", 15), P2PC_FAIL_SECURE_REQUIRED);
    CHECK_INT(p2pc_fail_from_text("NOPE", 4), P2PC_FAIL_OTHER);
}

/* HSTCP's sequence number advances exactly when the server counted the command. */
static void test_hstcp_sequence(void) {
    p2pc_client c;
    fake f;
    seen s;
    char l1[128], l2[128], l3[128], l4[128], field[33];
    setup(&c, &f, &s, P2PC_SECURE_HSTCP, DEMO_KEY, 8);
    f.rand = HSTCP_NONCE;
    f.rand_len = sizeof HSTCP_NONCE;
    fake_script(&f, "HSTCP:demo@example.com:ACTIVATE:0011223344556677:",
                "[OK:89ABCDEF01234567:C827ED6CACBE5F2D99C0005F983202DF6A81EC76F5FD316853C383A691A53E2E]\r\n");
    CHECK_INT(p2pc_connect(&c), P2PC_OK);
    CHECK_INT(c.seq, 1);
    /* NOID comes before the KEY is checked: n stays 1. */
    p2pc_key_field(&c, "TCP:GID:", 8, 8, field);
    snprintf(l1, sizeof l1, "TCP:GID:%.32s", field);
    fake_script(&f, l1, "[FAIL:NOID]\r\n");
    CHECK_INT(p2pc_command(&c, "GID", NULL, NULL, 0), P2PC_FAIL_NOID);
    CHECK_INT(c.seq, 1);
    /* The ID, n = 1 (the vector). */
    fake_script(&f, "TCP:ID:1AFEB52A384CBF0F8813242E81411A30:556", "[OK:556]\r\n");
    CHECK_INT(p2pc_register(&c, "556"), P2PC_OK);
    CHECK_INT(c.seq, 2);
    /* A command the server refuses after checking the MAC (REM_ID) counts: n = 2 then 3. */
    p2pc_key_field(&c, "TCP:PUSH::RID:9:x", 17, 9, field);
    snprintf(l2, sizeof l2, "TCP:PUSH:%.32s:RID:9:x", field);
    fake_script(&f, l2, "[FAIL:REM_ID]\r\n");
    CHECK_INT(p2pc_push(&c, P2PC_RID, "9", "x", 1, NULL), P2PC_FAIL_REM_ID);
    CHECK_INT(c.seq, 3);
    /* INVALID_KEY (say the server lost count) does not advance. */
    p2pc_key_field(&c, "TCP:GID:", 8, 8, field);
    snprintf(l3, sizeof l3, "TCP:GID:%.32s", field);
    fake_script(&f, l3, "[FAIL:INVALID_KEY]\r\n");
    CHECK_INT(p2pc_command(&c, "GID", NULL, NULL, 0), P2PC_FAIL_INVALID_KEY);
    CHECK_INT(c.seq, 3);
    fake_script(&f, l3, "[OK:556]\r\n");
    CHECK_INT(p2pc_command(&c, "GID", NULL, NULL, 0), P2PC_OK);
    CHECK_INT(c.seq, 4);
    /* A SYNC answer is an empty line, not a command: n unchanged. */
    fake_queue(&f, "[SYNC:01.01.2026_00:00:00]\r\n");
    CHECK_INT(p2pc_poll(&c, 10), P2PC_OK);
    CHECK_INT(f.blank_lines, 1);
    CHECK_INT(c.seq, 4);
    p2pc_key_field(&c, "TCP:GID:", 8, 8, field);
    snprintf(l4, sizeof l4, "TCP:GID:%.32s", field);
    CHECK(strcmp(l3, l4) != 0);
    CHECK_INT(f.mismatches, 0);
}

/* Lost connection: DISCONNECTED, backoff, reconnect with a fresh session, the ID registered again. */
static void test_reconnect(void) {
    p2pc_client c;
    fake f;
    seen s;
    int i, r;
    static const uint8_t nonce2[] = {0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77};
    setup(&c, &f, &s, P2PC_SECURE_HSTCP, DEMO_KEY, 8);
    f.rand = nonce2;
    f.rand_len = sizeof nonce2;
    fake_script(&f, "HSTCP:demo@example.com:ACTIVATE:0011223344556677:",
                "[OK:89ABCDEF01234567:C827ED6CACBE5F2D99C0005F983202DF6A81EC76F5FD316853C383A691A53E2E]\r\n");
    fake_script(&f, "TCP:ID:1AFEB52A384CBF0F8813242E81411A30:556", "[OK:556]\r\n");
    CHECK_INT(p2pc_register(&c, "556"), P2PC_OK);
    /* The server goes away. */
    f.eof = 1;
    r = p2pc_poll(&c, 10);
    CHECK_INT(r, P2PC_ERR_CLOSED);
    CHECK_INT(s.disconnected, 1);
    CHECK_INT(p2pc_get_state(&c), P2PC_STATE_BACKOFF);
    /* It refuses connections for a while: the delay grows, capped, with jitter. */
    f.refuse_open = 1;
    for (i = 0; i < 6; i++) {
        uint32_t before = f.clock;
        r = p2pc_poll(&c, 10000);
        CHECK_INT(r, P2PC_ERR_IO);
        CHECK(f.clock - before <= 400u * 5u / 4u + 1u);
    }
    CHECK_INT(f.opens, 7);
    CHECK(c.backoff_ms == 400);
    /* Back: the same session handshake and registration again (the scripted server replays the vector). */
    f.refuse_open = 0;
    f.at = 0;
    r = p2pc_poll(&c, 10000);
    CHECK_INT(r, P2PC_OK);
    CHECK_INT(p2pc_get_state(&c), P2PC_STATE_READY);
    CHECK_INT(f.at, 2);
    CHECK_INT(c.reconnects, 1);
    CHECK_INT(c.backoff_ms, 100);
    CHECK_STR(s.log, "connected(556)disconnected(P2PC_ERR_CLOSED)connected(556)");
    /* NODEEXIST on re-registration: back off and try again. */
    f.eof = 1;
    CHECK_INT(p2pc_poll(&c, 10), P2PC_ERR_CLOSED);
    f.at = 1;
    f.steps[1].reply = "[FAIL:NODEEXIST]\r\n";
    fake_script(&f, "HSTCP:demo@example.com:ACTIVATE:0011223344556677:",
                "[OK:89ABCDEF01234567:C827ED6CACBE5F2D99C0005F983202DF6A81EC76F5FD316853C383A691A53E2E]\r\n");
    /* steps: [0] activate, [1] ID -> NODEEXIST, [2] activate ... */
    f.at = 0;
    CHECK_INT(p2pc_poll(&c, 10000), P2PC_FAIL_NODEEXIST);
    CHECK_INT(p2pc_get_state(&c), P2PC_STATE_BACKOFF);
    /* p2pc_close stops everything. */
    p2pc_close(&c);
    CHECK_INT(p2pc_get_state(&c), P2PC_STATE_IDLE);
    CHECK_INT(p2pc_poll(&c, 10), P2PC_ERR_NOT_CONNECTED);
}

/* Keepalive: a GID after keepalive_ms of silence; no reply means a dead link. */
static void test_keepalive(void) {
    p2pc_client c;
    fake f;
    seen s;
    p2pc_config cfg;
    p2pc_transport io;
    memset(&f, 0, sizeof f);
    memset(&s, 0, sizeof s);
    io.ctx = &f;
    io.open = f_open;
    io.write = f_write;
    io.read = f_read;
    io.close = f_close;
    io.now_ms = f_now;
    io.sleep_ms = NULL;
    io.random = NULL;
    p2pc_config_defaults(&cfg);
    cfg.host = "test";
    cfg.key = KEY;
    cfg.keepalive_ms = 1000;
    cfg.rx_buf = rx;
    cfg.rx_size = sizeof rx;
    cfg.tx_buf = tx;
    cfg.tx_size = sizeof tx;
    cfg.on_event = record;
    cfg.user = &s;
    CHECK_INT(p2pc_init(&c, &cfg, &io), P2PC_OK);
    fake_script(&f, "TCP:ID:" KEY ":K", "[OK:K]\r\n");
    fake_script(&f, "TCP:GID:" KEY, "[OK:K]\r\n");
    fake_script(&f, "TCP:GID:" KEY, NULL);
    CHECK_INT(p2pc_register(&c, "K"), P2PC_OK);
    CHECK_INT(p2pc_poll(&c, 5000), P2PC_OK); /* waits the 1000 ms of the keepalive, no more */
    CHECK_INT(f.clock, 1000);
    CHECK_INT(p2pc_poll(&c, 5000), P2PC_OK); /* GID answered, then waits up to the next keepalive */
    CHECK_INT(f.at, 2);
    CHECK_INT(f.clock, 2000);
    CHECK_INT(p2pc_poll(&c, 5000), P2PC_ERR_TIMEOUT); /* GID unanswered */
    CHECK_INT(s.disconnected, 1);
    /* Without sleep_ms, poll returns while the backoff delay runs. */
    CHECK_INT(p2pc_poll(&c, 5000), P2PC_OK);
    CHECK_INT(p2pc_get_state(&c), P2PC_STATE_BACKOFF);
    /* init refuses bad configurations */
    cfg.key = "0011";
    CHECK_INT(p2pc_init(&c, &cfg, &io), P2PC_ERR_ARG);
    cfg.key = KEY;
    cfg.secure = P2PC_SECURE_HSTCP; /* no random source, no uid */
    CHECK_INT(p2pc_init(&c, &cfg, &io), P2PC_ERR_ARG);
    cfg.secure = P2PC_SECURE_NONE;
    cfg.rx_size = 8;
    CHECK_INT(p2pc_init(&c, &cfg, &io), P2PC_ERR_ARG);
}

int main(void) {
    test_md5();
    test_sha256();
    test_hmac();
    test_security_arithmetic();
    test_framer();
    test_session_vectors();
    test_client_plain();
    test_hstcp_sequence();
    test_reconnect();
    test_keepalive();
    printf("p2pc unit tests: %d passed, %d failed (client struct %lu bytes)\n", passed, failed,
           (unsigned long)sizeof(p2pc_client));
    return failed == 0 ? 0 : 1;
}
