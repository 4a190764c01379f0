// Secure sessions, client side (PROTOCOL.md §9, docs/security.md): STCP and DSTCP (legacy, MD5) and HSTCP
// (HMAC-SHA256), plus the TLS-PSK key. KEY bytes are the ASCII of its 32 upper-case hex characters; hex in replies
// is upper case. Everything hashed is bytes: strings are taken in the encoding they are sent in.

import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { ConnectionOptions } from 'node:tls';

export type SecureMode = 'STCP' | 'DSTCP' | 'HSTCP';

/** Bytes or text in a given encoding. */
export type Part = string | Uint8Array;

function feed(h: { update(d: string | Uint8Array, e?: BufferEncoding): unknown }, parts: Part[], enc: BufferEncoding) {
  for (const p of parts) {
    if (typeof p === 'string') h.update(p, enc);
    else h.update(p);
  }
}

export function md5Hex(parts: Part[], enc: BufferEncoding = 'latin1'): string {
  const h = createHash('md5');
  feed(h, parts, enc);
  return h.digest('hex').toUpperCase();
}

export function hmacHex(key: string, parts: Part[], enc: BufferEncoding = 'latin1'): string {
  const h = createHmac('sha256', Buffer.from(key, 'latin1'));
  feed(h, parts, enc);
  return h.digest('hex').toUpperCase();
}

/** STCP: the session key every command carries in place of the KEY: MD5HEX(KEY+RND). */
export function stcpSessionKey(key: string, rnd: string): string {
  return md5Hex([key, rnd]);
}

/** STCP/DSTCP: the server's proof for a client nonce: MD5HEX(KEY+CLIRND). */
export function md5Proof(key: string, cliRnd: string): string {
  return md5Hex([key, cliRnd]);
}

/** DSTCP: the KEY field of a command whose checked field is f: MD5HEX(KEY+RND+F). */
export function dstcpKey(key: string, rnd: string, f: Part, enc: BufferEncoding = 'latin1'): string {
  const h = createHash('md5');
  h.update(key + rnd, 'latin1');
  if (typeof f === 'string') h.update(f, enc);
  else h.update(f);
  return h.digest('hex').toUpperCase();
}

/** HSTCP: the server's proof: HMAC_SHA256_HEX(KEY, "S:"+CLIRND+":"+RND). */
export function hstcpProof(key: string, cliRnd: string, rnd: string): string {
  return hmacHex(key, [`S:${cliRnd}:${rnd}`]);
}

/** HSTCP: the MAC of the n-th command, whose line with the KEY field emptied is the concatenation of `line`. */
export function hstcpMac(key: string, rnd: string, n: number, line: Part[], enc: BufferEncoding = 'latin1'): string {
  const h = createHmac('sha256', Buffer.from(key, 'latin1'));
  h.update(`C:${rnd}:${n}:`, 'latin1');
  feed(h, line, enc);
  return h.digest('hex').slice(0, 32).toUpperCase();
}

/** Constant-time comparison of hex strings, case-insensitively. */
export function hexEquals(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  return timingSafeEqual(Buffer.from(a.toUpperCase(), 'latin1'), Buffer.from(b.toUpperCase(), 'latin1'));
}

/**
 * DSTCP's checked field F of the text after the KEY field (without its colon): the first field before the
 * connection registered an ID, the second after it ("" if none).
 */
export function dstcpField(rest: Uint8Array | null, registered: boolean): Uint8Array {
  if (rest === null) return EMPTY;
  const want = registered ? 1 : 0;
  let field = 0;
  let start = 0;
  for (let i = 0; i <= rest.length; i++) {
    if (i === rest.length || rest[i] === 58) {
      if (field === want) return rest.subarray(start, i);
      field++;
      start = i + 1;
    }
  }
  return EMPTY;
}

const EMPTY = new Uint8Array(0);

/** A fresh client nonce: 16 upper-case hex characters. */
export function clientNonce(): string {
  return randomBytes(8).toString('hex').toUpperCase();
}

/** The activation line: `<MODE>:<UID>:ACTIVATE:<CLIRND>:`. */
export function activateLine(mode: SecureMode, uid: string, nonce: string): string {
  return `${mode}:${uid}:ACTIVATE:${nonce}:`;
}

/** A live session on one connection. */
export interface Session {
  mode: SecureMode;
  rnd: string;
  /** STCP's session key ('' otherwise). */
  skey: string;
  /** HSTCP: the sequence number the next verified command carries. */
  seq: number;
  /** HSTCP: bumped whenever seq is rewound after a command the server did not verify. */
  epoch: number;
}

/**
 * Checks the activation reply `[OK:<RND>:<PROOF>]` (the brackets already removed: `<RND>:<PROOF>`) and returns the
 * session, or null when the proof does not verify.
 */
export function openSession(mode: SecureMode, key: string, nonce: string, body: string): Session | null {
  const i = body.indexOf(':');
  if (i <= 0) return null;
  const rnd = body.slice(0, i);
  const proof = body.slice(i + 1);
  if (!/^[0-9A-Fa-f]+$/.test(rnd) || rnd.length !== (mode === 'HSTCP' ? 16 : 8)) return null;
  const expected = mode === 'HSTCP' ? hstcpProof(key, nonce, rnd) : md5Proof(key, nonce);
  if (!hexEquals(proof, expected)) return null;
  const r = rnd.toUpperCase();
  return { mode, rnd: r, skey: mode === 'STCP' ? stcpSessionKey(key, r) : '', seq: 1, epoch: 0 };
}

/** TLS-PSK: the pre-shared key of an account: HMAC_SHA256(KEY, "P2PC-TLS-PSK"). */
export function tlsPskKey(key: string): Buffer {
  return createHmac('sha256', Buffer.from(key.toUpperCase(), 'latin1')).update('P2PC-TLS-PSK').digest();
}

/**
 * TLS options for a server with `TLS.PSK` on: TLS 1.2 PSK cipher suites, identity = the account e-mail, no
 * certificates. Pass as `tls` to P2PClient.connect.
 */
export function tlsPsk(uid: string, key: string, extra: ConnectionOptions = {}): ConnectionOptions {
  const psk = tlsPskKey(key);
  return {
    ciphers: 'PSK-AES256-GCM-SHA384:PSK-AES128-GCM-SHA256',
    maxVersion: 'TLSv1.2',
    minVersion: 'TLSv1.2',
    pskCallback: () => ({ identity: uid, psk }),
    checkServerIdentity: () => undefined,
    ...extra,
  };
}
