// The header of a RAW stream between nodes (src/cluster/raw-header.ts): signed, fresh, good once per node.

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  checkRawHeader,
  NONCE_SLOTS,
  NONCE_TABLE_INTS,
  NonceTable,
  RAW_HEADER_MAX_AGE_MS,
  rawHeader,
} from '../src/cluster/raw-header.ts';

const secret = Buffer.alloc(32, 0x42);
const NOW = 1_800_000_000_000;
const idArb = fc.stringMatching(/^[A-Z0-9_.@-]{1,64}$/);
const nonceArb = fc.stringMatching(/^[0-9a-f]{24}$/);

describe('RAW stream header', () => {
  it('round-trips any account, ID and nonce under the right secret', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 2 ** 40 }), idArb, nonceArb, (account, id, nonce) => {
        expect(checkRawHeader(rawHeader(secret, account, id, NOW, nonce), secret, NOW)).toEqual({
          account,
          id,
          at: NOW,
          nonce,
        });
      }),
    );
  });

  it('any one changed character, or another secret, is refused', () => {
    fc.assert(
      fc.property(idArb, nonceArb, fc.nat(), fc.integer({ min: 33, max: 126 }), (id, nonce, pos, code) => {
        const line = rawHeader(secret, 7, id, NOW, nonce);
        const i = pos % line.length;
        fc.pre(line.charCodeAt(i) !== code);
        const bad = line.slice(0, i) + String.fromCharCode(code) + line.slice(i + 1);
        expect(checkRawHeader(bad, secret, NOW)).toBeNull();
      }),
    );
    expect(checkRawHeader(rawHeader(Buffer.alloc(32, 1), 7, 'X', NOW, 'n'), secret, NOW)).toBeNull();
  });

  it('is fresh for RAW_HEADER_MAX_AGE_MS either side of the receiver’s clock', () => {
    const line = rawHeader(secret, 7, 'X', NOW, 'n');
    expect(checkRawHeader(line, secret, NOW + RAW_HEADER_MAX_AGE_MS)).not.toBeNull();
    expect(checkRawHeader(line, secret, NOW - RAW_HEADER_MAX_AGE_MS)).not.toBeNull();
    expect(checkRawHeader(line, secret, NOW + RAW_HEADER_MAX_AGE_MS + 1)).toBeNull();
    expect(checkRawHeader(line, secret, NOW - RAW_HEADER_MAX_AGE_MS - 1)).toBeNull();
    expect(checkRawHeader(`${line}${'0'.repeat(300)}`, secret, NOW)).toBeNull();
  });
});

describe('nonce table shared by the shards of a node', () => {
  it('a nonce is good once, on any shard (two views of one buffer); others pass', () => {
    const buf = new SharedArrayBuffer(4 * NONCE_TABLE_INTS);
    const shard0 = new NonceTable(new Int32Array(buf));
    const shard1 = new NonceTable(new Int32Array(buf));
    expect(shard0.accept('abc', NOW)).toBe(true);
    expect(shard1.accept('abc', NOW)).toBe(false);
    expect(shard0.accept('abc', NOW + 10_000)).toBe(false);
    expect(shard1.accept('abd', NOW)).toBe(true);
  });

  it('stays bounded: slots of nonces that can no longer pass are reused; a full run is refused, never let through', () => {
    const t = new NonceTable(new Int32Array(new SharedArrayBuffer(4 * NONCE_TABLE_INTS)));
    let accepted = 0;
    for (let i = 0; i < NONCE_SLOTS; i++) if (t.accept(`n${i}`, NOW)) accepted++;
    // Open addressing with short runs: most go in, the rest are refused (a writer then sees UNAVAILABLE).
    expect(accepted).toBeGreaterThan(NONCE_SLOTS * 0.9);
    for (let i = 0; i < 1000; i++) expect(t.accept(`n${i}`, NOW)).toBe(false);
    // Two windows later every slot is reusable.
    const later = NOW + 2 * RAW_HEADER_MAX_AGE_MS + 1000;
    let again = 0;
    for (let i = 0; i < 1000; i++) if (t.accept(`m${i}`, later)) again++;
    expect(again).toBe(1000);
  });
});
