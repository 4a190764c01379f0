// Cluster mode, RAW channels across nodes (PROTOCOL.md §7, issue 9): the one line a node sends when it opens a
// direct TCP stream to another node's device port on behalf of a device of its own. Pure: building and checking.
//
//   NODE:RAW:<account>:<target ID>:<unix ms>:<nonce>:<MAC>
//
// MAC = upper-case hex HMAC-SHA256(cluster secret, everything before ":<MAC>"). The cluster secret is made once
// by the first node and kept in the cluster's Redis, so only a node that can read that Redis can open a stream.
// A header older (or newer) than RAW_HEADER_MAX_AGE_MS is refused, and a nonce is accepted once per shard within
// that window, so a header seen on the wire cannot be replayed later. The receiving node answers as it would a
// device's `TCP:PUSH:<KEY>:RAW:<ID>` (`[OK:LINK_SYNC]` or `[FAIL:...]`); after `[OK:LINK_SYNC]` every byte is stream.

import { createHmac, timingSafeEqual } from 'node:crypto';

export const NODE_RAW = 'NODE:RAW:';
/** A header this far from the receiver's clock is refused. */
export const RAW_HEADER_MAX_AGE_MS = 30_000;
/** A header line is never longer than this (the rest of a longer first line is not looked at). */
export const RAW_HEADER_MAX = 256;

export interface RawHeader {
  account: number;
  id: string;
  at: number;
  nonce: string;
}

function mac(secret: Buffer, body: string): string {
  return createHmac('sha256', secret).update(body, 'latin1').digest('hex').toUpperCase();
}

/** The header line (no line end) for a stream to `id` of `account`. */
export function rawHeader(secret: Buffer, account: number, id: string, at: number, nonce: string): string {
  const body = `${NODE_RAW}${account}:${id}:${at}:${nonce}`;
  return `${body}:${mac(secret, body)}`;
}

/** The header's fields when its MAC is right and it is fresh, else null. */
export function checkRawHeader(line: string, secret: Buffer, now: number): RawHeader | null {
  if (line.length > RAW_HEADER_MAX || !line.startsWith(NODE_RAW)) return null;
  const cut = line.lastIndexOf(':');
  const body = line.slice(0, cut);
  const given = Buffer.from(line.slice(cut + 1), 'latin1');
  const want = Buffer.from(mac(secret, body), 'latin1');
  if (given.length !== want.length || !timingSafeEqual(given, want)) return null;
  const f = body.slice(NODE_RAW.length).split(':');
  if (f.length !== 4) return null;
  const account = Number(f[0]);
  const at = Number(f[2]);
  if (!Number.isSafeInteger(account) || account <= 0 || !Number.isSafeInteger(at)) return null;
  if (Math.abs(now - at) > RAW_HEADER_MAX_AGE_MS) return null;
  return { account, id: f[1]!, at, nonce: f[3]! };
}

/** Slots of the nonce table every shard of a node shares (Int32 pairs: nonce hash, second it was accepted). */
export const NONCE_SLOTS = 16384;
/** Int32s the table needs. */
export const NONCE_TABLE_INTS = NONCE_SLOTS * 2;
/** Slots a nonce may land in (open addressing from its hash). */
const NONCE_PROBES = 16;

function nonceHash(nonce: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < nonce.length; i++) {
    h ^= nonce.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h | 1; // never 0: 0 marks a free slot
}

/**
 * The nonces of headers accepted within twice the freshness window, in a table every shard of the node shares
 * (the kernel spreads a node's incoming streams over its shards): a header is good once per node, whichever shard
 * takes it. Bounded: a slot whose nonce could no longer pass is reused; with every slot of a nonce's run fresh (more
 * than a thousand streams opened per second), the header is refused and the writer's device gets [FAIL:UNAVAILABLE].
 */
export class NonceTable {
  private readonly table: Int32Array;

  constructor(table: Int32Array) {
    this.table = table;
  }

  /** True the first time a nonce is offered within the window. */
  accept(nonce: string, now: number): boolean {
    const h = nonceHash(nonce);
    const sec = Math.floor(now / 1000) & 0x7fffffff;
    const keep = (2 * RAW_HEADER_MAX_AGE_MS) / 1000;
    const t = this.table;
    const start = (h >>> 0) % NONCE_SLOTS;
    for (let attempt = 0; attempt < 4; attempt++) {
      let free = -1;
      let freeHash = 0;
      for (let k = 0; k < NONCE_PROBES; k++) {
        const i = ((start + k) % NONCE_SLOTS) * 2;
        const cur = Atomics.load(t, i);
        // Seen (or a 32-bit hash twin, or being stored by another shard right now): refused, never let through.
        if (cur === h) return false;
        const fresh = cur !== 0 && sec - Atomics.load(t, i + 1) <= keep;
        if (!fresh && free < 0) {
          free = i;
          freeHash = cur;
        }
      }
      if (free < 0) return false;
      if (Atomics.compareExchange(t, free, freeHash, h) === freeHash) {
        Atomics.store(t, free + 1, sec);
        return true;
      }
      // Another shard took that slot meanwhile: look again (it may have taken it for this very nonce).
    }
    return false;
  }
}
