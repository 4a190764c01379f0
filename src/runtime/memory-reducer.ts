// Idle memory reducer: gives a thread's heap back to the system once a burst is over.
//
// V8 grows a thread's heap for a burst (a reconnect storm, a minute of heavy traffic): the young generation to its
// cap, old-space pages for what survives, and it keeps those pages committed, in its own pool, for the next burst.
// In a browser V8's memory reducer returns them when the page goes idle; in Node nothing starts it, so an idle server
// keeps the memory of its busiest minute (10,000 registrations left 0.3–0.7 KB per connection committed beyond the
// connections themselves, start-up 25–35 MB in the process: docs/performance.md). This class watches for the end of
// a burst (the thread's own CPU time low for `quietMs`, after its heap grew by `growthBytes`, and by a quarter, since
// the last collection) and then runs one memory-reducing collection (`gc` with the last-resort flavour: full collections until nothing more
// is freed, the new space shrunk, pooled pages released). That pauses the thread for tens of milliseconds (about
// 70 ms with 10,000 connections), so only when it is quiet, and at most once per growth. Not at start: a collection
// right after start-up shrank the young generation below what the first traffic needs, and V8's worker threads then
// kept collecting (3-5 µs more per round trip in `bench/peers/rtt.ts`); after a burst that did not show.

import { getHeapStatistics, setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/** A thread is quiet while it uses at most this share of a core (its own CPU time over the window). */
export const QUIET_CPU_SHARE = 0.05;

/**
 * The growth that makes a collection worth its pause is also at least this share of the heap left after the last one:
 * the pause grows with the live heap (a thread holding 100,000 connections pauses several times longer than one with
 * 10,000), while what a burst leaves committed does not (the young generation is capped).
 */
export const GROWTH_SHARE = 0.25;

export interface ReducerOptions {
  /** How long the thread must have been quiet (0 = never collect). */
  quietMs: number;
  /** How much its committed heap must have grown since the last collection (or since start). */
  growthBytes: number;
}

/** What the reducer reads and calls; the defaults are this thread's (tests pass their own). */
export interface ReducerProbes {
  /** Bytes of this isolate's heap that are committed (backed by memory). */
  committed: () => number;
  /** This thread's CPU time so far, in milliseconds. */
  cpuMs: () => number;
  /** Runs the memory-reducing collection; null when this Node cannot. */
  collect: (() => void) | null;
}

/**
 * V8's `gc` for this isolate, without putting it on the global object: the flag is set just long enough to create one
 * context that has it (a function of the isolate, not of the context), then cleared again, so contexts and threads
 * created later do not get a `gc` global either (unless Node was started with --expose-gc: then that one is used and
 * the flag left alone). Null when the runtime refuses.
 */
export function isolateGc(): ((options: object) => void) | null {
  const own = (globalThis as { gc?: unknown }).gc;
  if (typeof own === 'function') return own as (options: object) => void;
  try {
    setFlagsFromString('--expose-gc');
    try {
      const gc = runInNewContext('gc') as unknown;
      return typeof gc === 'function' ? (gc as (options: object) => void) : null;
    } finally {
      setFlagsFromString('--no-expose-gc');
    }
  } catch {
    return null;
  }
}

/** The probes of the calling thread. */
export function threadProbes(): ReducerProbes {
  const gc = isolateGc();
  return {
    committed: () => getHeapStatistics().total_physical_size,
    cpuMs: () => {
      const u = process.threadCpuUsage();
      return (u.user + u.system) / 1000;
    },
    collect: gc === null ? null : () => gc({ type: 'major', execution: 'sync', flavor: 'last-resort' }),
  };
}

export class IdleMemoryReducer {
  /** Collections run, the milliseconds they took in all, and the committed bytes they released. */
  collections = 0;
  collectMs = 0;
  releasedBytes = 0;
  /** The last collection's milliseconds and released bytes. */
  lastMs = 0;
  lastReleasedBytes = 0;
  /** Committed heap after the last collection (or at start): growth counts from here. */
  private baseline: number;
  /**
   * The most committed heap seen since: V8 shrinks its young generation again on its own after a burst, but keeps the
   * pages in its pool (still resident), so what counts is how far the heap grew, not where it is now.
   */
  private peak: number;
  private windowAt = -1;
  private cpuAt = 0;
  private readonly options: ReducerOptions;
  private readonly probes: ReducerProbes;

  constructor(options: ReducerOptions, probes: ReducerProbes = threadProbes()) {
    this.options = options;
    this.probes = probes;
    this.baseline = probes.committed();
    this.peak = this.baseline;
  }

  /**
   * Called now and then (the thread's own timers, a few times per window): notes the heap's size, and at the end of
   * each window of `quietMs` collects when the window was quiet and the heap has grown enough. True when it collected.
   */
  tick(now: number): boolean {
    const { quietMs, growthBytes } = this.options;
    const collect = this.probes.collect;
    if (quietMs === 0 || collect === null) return false;
    const committed = this.probes.committed();
    if (committed > this.peak) this.peak = committed;
    const cpu = this.probes.cpuMs();
    if (this.windowAt < 0 || now < this.windowAt) {
      this.windowAt = now;
      this.cpuAt = cpu;
      return false;
    }
    const elapsed = now - this.windowAt;
    if (elapsed < quietMs) return false;
    const busy = (cpu - this.cpuAt) / elapsed;
    this.windowAt = now;
    this.cpuAt = cpu;
    if (busy > QUIET_CPU_SHARE) return false;
    if (this.peak - this.baseline < Math.max(growthBytes, this.baseline * GROWTH_SHARE)) return false;
    this.collectNow();
    // The collection's own CPU time is not the thread being busy: the next window starts at the next tick.
    this.windowAt = -1;
    return true;
  }

  /** Collects now, whatever the heap holds (tick calls it), and counts it. False when this Node cannot. */
  collectNow(): boolean {
    const collect = this.probes.collect;
    if (collect === null) return false;
    const committed = this.probes.committed();
    if (committed > this.peak) this.peak = committed;
    const t0 = performance.now();
    collect();
    const after = this.probes.committed();
    this.collections++;
    this.lastMs = performance.now() - t0;
    this.collectMs += this.lastMs;
    this.lastReleasedBytes = Math.max(0, this.peak - after);
    this.releasedBytes += this.lastReleasedBytes;
    this.baseline = after;
    this.peak = after;
    return true;
  }
}

/** The debug line of a collection (never per message: at most once per burst). */
export function collectionLog(r: IdleMemoryReducer): { ms: number; releasedMB: number; collections: number } {
  return {
    ms: Math.round(r.lastMs),
    releasedMB: Math.round(r.lastReleasedBytes / 1048576),
    collections: r.collections,
  };
}
