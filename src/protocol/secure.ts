// Secure sessions (PROTOCOL.md §9): STCP, DSTCP (legacy, MD5) and HSTCP (HMAC-SHA256). Pure: parsing and
// the session arithmetic; the shard keeps the per-connection state. Strings are latin1 (one byte per char);
// KEY bytes are the ASCII of its 32 upper-case hex characters; hex in replies is upper case.

import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import type { FailCode } from './codes.ts';

export const MODE = { STCP: 1, DSTCP: 2, HSTCP: 3 } as const;
export type Mode = (typeof MODE)[keyof typeof MODE];

export const MODE_NAME: Record<Mode, string> = { 1: 'STCP', 2: 'DSTCP', 3: 'HSTCP' };

export function md5Hex(s: string): string {
  return createHash('md5').update(s, 'latin1').digest('hex').toUpperCase();
}

export function hmacHex(key: string, msg: string): string {
  return createHmac('sha256', Buffer.from(key, 'latin1')).update(msg, 'latin1').digest('hex').toUpperCase();
}

/** STCP: the session key every TCP command carries in place of the KEY. */
export function stcpSessionKey(key: string, rnd: string): string {
  return md5Hex(key + rnd);
}

/** STCP/DSTCP: the server's proof for a client nonce. */
export function md5Proof(key: string, cliRnd: string): string {
  return md5Hex(key + cliRnd);
}

/** TLS-PSK: the pre-shared key of an account (identity = its e-mail). */
export function tlsPsk(key: string): Buffer {
  return createHmac('sha256', Buffer.from(key, 'latin1')).update('P2PC-TLS-PSK').digest();
}

/** DSTCP: the KEY field of a command whose checked field is f. */
export function dstcpKey(key: string, rnd: string, f: string): string {
  return md5Hex(key + rnd + f);
}

/** HSTCP: the server's proof for the client nonce. */
export function hstcpProof(key: string, cliRnd: string, rnd: string): string {
  return hmacHex(key, `S:${cliRnd}:${rnd}`);
}

/** HSTCP: the MAC of the n-th command, whose line with the KEY field emptied is l. */
export function hstcpMac(key: string, rnd: string, n: number, l: string): string {
  return hmacHex(key, `C:${rnd}:${n}:${l}`).slice(0, 32);
}

/**
 * DSTCP's checked field F: before registration the first field after the KEY, after it the second ("" if
 * none). Fields are the line split on ':' (`TCP:PUSH:<k>:RID:555:hi` → after registration F = `555`).
 */
export function dstcpField(s: string, keyEnd: number, end: number, registered: boolean): string {
  if (keyEnd >= end) return '';
  const fields = s.slice(keyEnd + 1, end).split(':');
  return (registered ? fields[1] : fields[0]) ?? '';
}

/** Constant-time comparison of hex strings, case-insensitively. */
export function hexEquals(given: string, expected: string): boolean {
  if (given.length !== expected.length) return false;
  return timingSafeEqual(Buffer.from(given.toUpperCase(), 'latin1'), Buffer.from(expected, 'latin1'));
}

export interface SecureCommand {
  mode: Mode;
  uid: string;
  verb: 'ACTIVATE' | 'DEACTIVATE';
  /** Client nonce of ACTIVATE ('' when none). */
  nonce: string;
  /** HSTCP DEACTIVATE: the MAC field, and the line it covers (up to and including the colon before it). */
  mac: string;
  macLine: string;
}

/**
 * Parses `STCP:<UID>:ACTIVATE:[<CLIRND>:]`, `STCP:<UID>:DEACTIVATE:` (and the DSTCP/HSTCP forms; HSTCP's
 * DEACTIVATE carries a MAC as its last field). Returns the command or the failure code.
 */
export function parseSecure(mode: Mode, line: string): SecureCommand | FailCode {
  const prefix = MODE_NAME[mode].length + 1;
  const parts = line.slice(prefix).split(':');
  const [uid, verb] = parts;
  if (uid === undefined || uid === '' || verb === undefined) return 'INVALID_FORMAT';
  if (verb === 'ACTIVATE') {
    // ACTIVATE: | ACTIVATE:<CLIRND>: | ACTIVATE (no colon) | ACTIVATE:<CLIRND>
    const nonce = parts[2] ?? '';
    if (parts.length > 4 || (parts.length === 4 && parts[3] !== '')) return 'INVALID_FORMAT';
    if (nonce !== '' && !/^[\x21-\x7e]+$/.test(nonce)) return 'INVALID_FORMAT';
    if (mode === MODE.HSTCP && (nonce.length < 8 || nonce.length > 64)) return 'INVALID_FORMAT';
    if (nonce !== '' && nonce.length < 8) return 'INVALID_FORMAT';
    return { mode, uid, verb, nonce, mac: '', macLine: '' };
  }
  if (verb === 'DEACTIVATE') {
    if (mode === MODE.HSTCP) {
      if (parts.length !== 3 || parts[2] === '') return 'INVALID_FORMAT';
      const mac = parts[2]!;
      return { mode, uid, verb, nonce: '', mac, macLine: line.slice(0, line.length - mac.length) };
    }
    if (parts.length > 3 || (parts.length === 3 && parts[2] !== '')) return 'INVALID_FORMAT';
    return { mode, uid, verb, nonce: '', mac: '', macLine: '' };
  }
  return 'INVALID_FORMAT';
}
