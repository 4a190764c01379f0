// Per-address counters shared by every shard (PServer.IP_VELOCITY, NODE.AUTH_FAILS): a fixed table of
// [window, count] pairs in a SharedArrayBuffer, indexed by a hash of the address. Bounded memory whatever
// the number of addresses; two addresses that share a bucket share a limit (rare with 4,096 buckets).

export const ADDRESS_BUCKETS = 4096;

/** Int32 slots one table needs. */
export const ADDRESS_TABLE_INTS = ADDRESS_BUCKETS * 2;

function bucketOf(addr: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < addr.length; i++) {
    h ^= addr.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0) % ADDRESS_BUCKETS;
}

export class AddressCounters {
  private readonly table: Int32Array;
  private readonly windowMs: number;

  constructor(table: Int32Array, windowMs: number) {
    this.table = table;
    this.windowMs = windowMs;
  }

  private slot(addr: string, now: number): number {
    const i = bucketOf(addr) * 2;
    const w = Math.floor(now / this.windowMs) & 0x7fffffff;
    const seen = Atomics.load(this.table, i);
    if (seen !== w && Atomics.compareExchange(this.table, i, seen, w) === seen) Atomics.store(this.table, i + 1, 0);
    return i + 1;
  }

  /** Counts one event for addr; returns the count in the current window, this one included. */
  hit(addr: string, now: number): number {
    return Atomics.add(this.table, this.slot(addr, now), 1) + 1;
  }

  /** Events counted for addr in the current window. */
  count(addr: string, now: number): number {
    return Atomics.load(this.table, this.slot(addr, now));
  }
}
