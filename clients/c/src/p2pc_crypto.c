/*
 * p2pc_crypto.c - MD5 (RFC 1321), SHA-256 (FIPS 180-4), HMAC-SHA256 (RFC 2104). Straightforward reference
 * constructions written for clarity and portability (no unaligned loads, no endianness assumptions, every
 * shift on uint32_t), checked by test/unit.c against the RFC and FIPS vectors.
 */
#include "p2pc_crypto.h"

#include <string.h>

#define ROTL(x, n) (((x) << (n)) | ((x) >> (32u - (n))))
#define ROTR(x, n) (((x) >> (n)) | ((x) << (32u - (n))))

/* ------------------------------------------------------------------ MD5 */

static const uint32_t MD5_K[64] = {
    0xd76aa478u, 0xe8c7b756u, 0x242070dbu, 0xc1bdceeeu, 0xf57c0fafu, 0x4787c62au, 0xa8304613u, 0xfd469501u,
    0x698098d8u, 0x8b44f7afu, 0xffff5bb1u, 0x895cd7beu, 0x6b901122u, 0xfd987193u, 0xa679438eu, 0x49b40821u,
    0xf61e2562u, 0xc040b340u, 0x265e5a51u, 0xe9b6c7aau, 0xd62f105du, 0x02441453u, 0xd8a1e681u, 0xe7d3fbc8u,
    0x21e1cde6u, 0xc33707d6u, 0xf4d50d87u, 0x455a14edu, 0xa9e3e905u, 0xfcefa3f8u, 0x676f02d9u, 0x8d2a4c8au,
    0xfffa3942u, 0x8771f681u, 0x6d9d6122u, 0xfde5380cu, 0xa4beea44u, 0x4bdecfa9u, 0xf6bb4b60u, 0xbebfbc70u,
    0x289b7ec6u, 0xeaa127fau, 0xd4ef3085u, 0x04881d05u, 0xd9d4d039u, 0xe6db99e5u, 0x1fa27cf8u, 0xc4ac5665u,
    0xf4292244u, 0x432aff97u, 0xab9423a7u, 0xfc93a039u, 0x655b59c3u, 0x8f0ccc92u, 0xffeff47du, 0x85845dd1u,
    0x6fa87e4fu, 0xfe2ce6e0u, 0xa3014314u, 0x4e0811a1u, 0xf7537e82u, 0xbd3af235u, 0x2ad7d2bbu, 0xeb86d391u,
};

static const uint8_t MD5_S[16] = {7, 12, 17, 22, 5, 9, 14, 20, 4, 11, 16, 23, 6, 10, 15, 21};

static void md5_block(uint32_t st[4], const uint8_t *p) {
    uint32_t m[16];
    uint32_t a = st[0], b = st[1], c = st[2], d = st[3];
    unsigned i;
    for (i = 0; i < 16; i++) {
        m[i] = (uint32_t)p[4 * i] | ((uint32_t)p[4 * i + 1] << 8) | ((uint32_t)p[4 * i + 2] << 16) |
               ((uint32_t)p[4 * i + 3] << 24);
    }
    for (i = 0; i < 64; i++) {
        uint32_t f, t;
        unsigned g;
        switch (i >> 4) {
        case 0: f = (b & c) | (~b & d); g = i; break;
        case 1: f = (d & b) | (~d & c); g = (5u * i + 1u) & 15u; break;
        case 2: f = b ^ c ^ d; g = (3u * i + 5u) & 15u; break;
        default: f = c ^ (b | ~d); g = (7u * i) & 15u; break;
        }
        t = d;
        d = c;
        c = b;
        f = a + f + MD5_K[i] + m[g];
        b = b + ROTL(f, (uint32_t)MD5_S[((i >> 4) << 2) | (i & 3u)]);
        a = t;
    }
    st[0] += a;
    st[1] += b;
    st[2] += c;
    st[3] += d;
}

void p2pc_md5_init(p2pc_md5_ctx *c) {
    c->state[0] = 0x67452301u;
    c->state[1] = 0xefcdab89u;
    c->state[2] = 0x98badcfeu;
    c->state[3] = 0x10325476u;
    c->bytes = 0;
}

void p2pc_md5_update(p2pc_md5_ctx *c, const void *data, size_t len) {
    const uint8_t *p = (const uint8_t *)data;
    size_t used = (size_t)(c->bytes & 63u);
    c->bytes += len;
    if (used != 0) {
        size_t take = 64 - used < len ? 64 - used : len;
        memcpy(c->block + used, p, take);
        p += take;
        len -= take;
        if (used + take < 64) return;
        md5_block(c->state, c->block);
    }
    for (; len >= 64; p += 64, len -= 64) md5_block(c->state, p);
    if (len != 0) memcpy(c->block, p, len);
}

void p2pc_md5_final(p2pc_md5_ctx *c, uint8_t out[P2PC_MD5_LEN]) {
    uint64_t bits = c->bytes << 3;
    size_t used = (size_t)(c->bytes & 63u);
    unsigned i;
    c->block[used++] = 0x80;
    if (used > 56) {
        memset(c->block + used, 0, 64 - used);
        md5_block(c->state, c->block);
        used = 0;
    }
    memset(c->block + used, 0, 56 - used);
    for (i = 0; i < 8; i++) c->block[56 + i] = (uint8_t)(bits >> (8 * i));
    md5_block(c->state, c->block);
    for (i = 0; i < 16; i++) out[i] = (uint8_t)(c->state[i >> 2] >> (8 * (i & 3u)));
}

/* ------------------------------------------------------------------ SHA-256 */

static const uint32_t SHA256_K[64] = {
    0x428a2f98u, 0x71374491u, 0xb5c0fbcfu, 0xe9b5dba5u, 0x3956c25bu, 0x59f111f1u, 0x923f82a4u, 0xab1c5ed5u,
    0xd807aa98u, 0x12835b01u, 0x243185beu, 0x550c7dc3u, 0x72be5d74u, 0x80deb1feu, 0x9bdc06a7u, 0xc19bf174u,
    0xe49b69c1u, 0xefbe4786u, 0x0fc19dc6u, 0x240ca1ccu, 0x2de92c6fu, 0x4a7484aau, 0x5cb0a9dcu, 0x76f988dau,
    0x983e5152u, 0xa831c66du, 0xb00327c8u, 0xbf597fc7u, 0xc6e00bf3u, 0xd5a79147u, 0x06ca6351u, 0x14292967u,
    0x27b70a85u, 0x2e1b2138u, 0x4d2c6dfcu, 0x53380d13u, 0x650a7354u, 0x766a0abbu, 0x81c2c92eu, 0x92722c85u,
    0xa2bfe8a1u, 0xa81a664bu, 0xc24b8b70u, 0xc76c51a3u, 0xd192e819u, 0xd6990624u, 0xf40e3585u, 0x106aa070u,
    0x19a4c116u, 0x1e376c08u, 0x2748774cu, 0x34b0bcb5u, 0x391c0cb3u, 0x4ed8aa4au, 0x5b9cca4fu, 0x682e6ff3u,
    0x748f82eeu, 0x78a5636fu, 0x84c87814u, 0x8cc70208u, 0x90befffau, 0xa4506cebu, 0xbef9a3f7u, 0xc67178f2u,
};

static void sha256_block(uint32_t st[8], const uint8_t *p) {
    uint32_t w[16];
    uint32_t a = st[0], b = st[1], c = st[2], d = st[3], e = st[4], f = st[5], g = st[6], h = st[7];
    unsigned i;
    for (i = 0; i < 64; i++) {
        uint32_t t1, t2;
        if (i < 16) {
            w[i] = ((uint32_t)p[4 * i] << 24) | ((uint32_t)p[4 * i + 1] << 16) | ((uint32_t)p[4 * i + 2] << 8) |
                   (uint32_t)p[4 * i + 3];
        } else {
            /* The message schedule kept in a 16-word ring: w[i] = s1(w[i-2]) + w[i-7] + s0(w[i-15]) + w[i-16]. */
            uint32_t w15 = w[(i - 15) & 15u], w2 = w[(i - 2) & 15u];
            uint32_t s0 = ROTR(w15, 7) ^ ROTR(w15, 18) ^ (w15 >> 3);
            uint32_t s1 = ROTR(w2, 17) ^ ROTR(w2, 19) ^ (w2 >> 10);
            w[i & 15u] = s1 + w[(i - 7) & 15u] + s0 + w[i & 15u];
        }
        t1 = h + (ROTR(e, 6) ^ ROTR(e, 11) ^ ROTR(e, 25)) + ((e & f) ^ (~e & g)) + SHA256_K[i] + w[i & 15u];
        t2 = (ROTR(a, 2) ^ ROTR(a, 13) ^ ROTR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        h = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    st[0] += a;
    st[1] += b;
    st[2] += c;
    st[3] += d;
    st[4] += e;
    st[5] += f;
    st[6] += g;
    st[7] += h;
}

void p2pc_sha256_init(p2pc_sha256_ctx *c) {
    c->state[0] = 0x6a09e667u;
    c->state[1] = 0xbb67ae85u;
    c->state[2] = 0x3c6ef372u;
    c->state[3] = 0xa54ff53au;
    c->state[4] = 0x510e527fu;
    c->state[5] = 0x9b05688cu;
    c->state[6] = 0x1f83d9abu;
    c->state[7] = 0x5be0cd19u;
    c->bytes = 0;
}

void p2pc_sha256_update(p2pc_sha256_ctx *c, const void *data, size_t len) {
    const uint8_t *p = (const uint8_t *)data;
    size_t used = (size_t)(c->bytes & 63u);
    c->bytes += len;
    if (used != 0) {
        size_t take = 64 - used < len ? 64 - used : len;
        memcpy(c->block + used, p, take);
        p += take;
        len -= take;
        if (used + take < 64) return;
        sha256_block(c->state, c->block);
    }
    for (; len >= 64; p += 64, len -= 64) sha256_block(c->state, p);
    if (len != 0) memcpy(c->block, p, len);
}

void p2pc_sha256_final(p2pc_sha256_ctx *c, uint8_t out[P2PC_SHA256_LEN]) {
    uint64_t bits = c->bytes << 3;
    size_t used = (size_t)(c->bytes & 63u);
    unsigned i;
    c->block[used++] = 0x80;
    if (used > 56) {
        memset(c->block + used, 0, 64 - used);
        sha256_block(c->state, c->block);
        used = 0;
    }
    memset(c->block + used, 0, 56 - used);
    for (i = 0; i < 8; i++) c->block[56 + i] = (uint8_t)(bits >> (56 - 8 * i));
    sha256_block(c->state, c->block);
    for (i = 0; i < 32; i++) out[i] = (uint8_t)(c->state[i >> 2] >> (24 - 8 * (i & 3u)));
}

/* ------------------------------------------------------------------ HMAC-SHA256 */

void p2pc_hmac_sha256_init(p2pc_hmac_sha256_ctx *c, const void *key, size_t key_len) {
    uint8_t k[64];
    uint8_t pad[64];
    unsigned i;
    memset(k, 0, sizeof k);
    if (key_len > 64) {
        p2pc_sha256_init(&c->inner);
        p2pc_sha256_update(&c->inner, key, key_len);
        p2pc_sha256_final(&c->inner, k);
    } else if (key_len != 0) {
        memcpy(k, key, key_len);
    }
    for (i = 0; i < 64; i++) pad[i] = (uint8_t)(k[i] ^ 0x36u);
    p2pc_sha256_init(&c->inner);
    p2pc_sha256_update(&c->inner, pad, 64);
    for (i = 0; i < 64; i++) pad[i] = (uint8_t)(k[i] ^ 0x5cu);
    p2pc_sha256_init(&c->outer);
    p2pc_sha256_update(&c->outer, pad, 64);
    memset(k, 0, sizeof k);
    memset(pad, 0, sizeof pad);
}

void p2pc_hmac_sha256_update(p2pc_hmac_sha256_ctx *c, const void *data, size_t len) {
    p2pc_sha256_update(&c->inner, data, len);
}

void p2pc_hmac_sha256_final(p2pc_hmac_sha256_ctx *c, uint8_t out[P2PC_SHA256_LEN]) {
    uint8_t ih[P2PC_SHA256_LEN];
    p2pc_sha256_final(&c->inner, ih);
    p2pc_sha256_update(&c->outer, ih, sizeof ih);
    p2pc_sha256_final(&c->outer, out);
}

/* ------------------------------------------------------------------ hex */

void p2pc_hex_upper(const uint8_t *in, size_t n, char *out) {
    static const char digits[] = "0123456789ABCDEF";
    size_t i;
    for (i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15u];
    }
}

int p2pc_hex_equal(const char *a, const char *b, size_t n) {
    unsigned diff = 0;
    size_t i;
    for (i = 0; i < n; i++) {
        /* Fold ASCII letters to upper case without branches: clear bit 5 when the byte is a-z. */
        unsigned x = (unsigned char)a[i], y = (unsigned char)b[i];
        unsigned xl = ((x - 'a') <= ('z' - 'a')) ? 0x20u : 0u;
        unsigned yl = ((y - 'a') <= ('z' - 'a')) ? 0x20u : 0u;
        diff |= (x ^ xl) ^ (y ^ yl);
    }
    return diff == 0;
}
