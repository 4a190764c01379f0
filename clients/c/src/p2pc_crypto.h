/*
 * p2pc_crypto.h - the hashes the secure sessions need (PROTOCOL.md section 9): MD5 (RFC 1321, for the legacy
 * STCP/DSTCP modes), SHA-256 (FIPS 180-4) and HMAC-SHA256 (RFC 2104, for HSTCP). Small, portable C99, no heap,
 * no tables larger than the 256 bytes of round constants, streaming (init/update/final) so nothing is ever
 * concatenated into a temporary buffer.
 */
#ifndef P2PC_CRYPTO_H
#define P2PC_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define P2PC_MD5_LEN 16
#define P2PC_SHA256_LEN 32

typedef struct p2pc_md5_ctx {
    uint32_t state[4];
    uint64_t bytes;      /* total bytes hashed so far */
    uint8_t block[64];   /* pending partial block */
} p2pc_md5_ctx;

typedef struct p2pc_sha256_ctx {
    uint32_t state[8];
    uint64_t bytes;
    uint8_t block[64];
} p2pc_sha256_ctx;

/* HMAC-SHA256 keyed context. Initialise once per key; copy the struct to MAC many messages under one key
 * (the inner and outer pads are already absorbed, which saves two compressions per message). */
typedef struct p2pc_hmac_sha256_ctx {
    p2pc_sha256_ctx inner;
    p2pc_sha256_ctx outer;
} p2pc_hmac_sha256_ctx;

void p2pc_md5_init(p2pc_md5_ctx *c);
void p2pc_md5_update(p2pc_md5_ctx *c, const void *data, size_t len);
void p2pc_md5_final(p2pc_md5_ctx *c, uint8_t out[P2PC_MD5_LEN]);

void p2pc_sha256_init(p2pc_sha256_ctx *c);
void p2pc_sha256_update(p2pc_sha256_ctx *c, const void *data, size_t len);
void p2pc_sha256_final(p2pc_sha256_ctx *c, uint8_t out[P2PC_SHA256_LEN]);

void p2pc_hmac_sha256_init(p2pc_hmac_sha256_ctx *c, const void *key, size_t key_len);
void p2pc_hmac_sha256_update(p2pc_hmac_sha256_ctx *c, const void *data, size_t len);
void p2pc_hmac_sha256_final(p2pc_hmac_sha256_ctx *c, uint8_t out[P2PC_SHA256_LEN]);

/* Writes 2*n upper-case hex characters (no terminator). */
void p2pc_hex_upper(const uint8_t *in, size_t n, char *out);

/* 1 when the n characters of a and b are equal ignoring ASCII case, else 0. Takes the same time whatever the
 * contents (for checking the server's proofs). */
int p2pc_hex_equal(const char *a, const char *b, size_t n);

#ifdef __cplusplus
}
#endif

#endif /* P2PC_CRYPTO_H */
