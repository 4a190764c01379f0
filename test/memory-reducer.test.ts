import { describe, expect, it } from 'vitest';
import { SCHEMA } from '../src/config/schema.ts';
import { IdleMemoryReducer, isolateGc, type ReducerProbes } from '../src/runtime/memory-reducer.ts';

/** Probes the test drives: committed heap and CPU time set by hand, collections counted (and shrinking the heap). */
function fake(committed: number): ReducerProbes & { heap: number; cpu: number; runs: number; after: number } {
  const p = {
    heap: committed,
    cpu: 0,
    runs: 0,
    after: committed,
    committed: () => p.heap,
    cpuMs: () => p.cpu,
    collect: () => {
      p.runs++;
      p.heap = p.after;
    },
  };
  return p;
}

const MB = 1048576;

/** A reducer that has run its start-up collection (collectNow), as the server's threads do. */
function started(p: ReturnType<typeof fake>, quietMs: number, growthBytes: number): IdleMemoryReducer {
  const r = new IdleMemoryReducer({ quietMs, growthBytes }, p);
  const after = p.after;
  p.after = p.heap;
  expect(r.collectNow()).toBe(true);
  p.after = after;
  p.runs = 0;
  return r;
}

describe('IdleMemoryReducer (PServer.IDLE_GC_MS, PServer.IDLE_GC_MB)', () => {
  it('collects once a quiet window follows enough growth, and gives the numbers', () => {
    const p = fake(10 * MB);
    const r = started(p, 250, 8 * MB);
    expect(r.tick(1000)).toBe(false); // the first tick after a collection opens a window
    p.heap = 30 * MB; // a burst
    p.cpu += 200; // 80 % of a core over the window
    expect(r.tick(1250)).toBe(false);
    p.after = 12 * MB;
    p.cpu += 5; // 2 %
    expect(r.tick(1500)).toBe(true);
    expect([p.runs, r.collections, r.releasedBytes]).toEqual([1, 2, 18 * MB]);
    // Quiet again, but nothing grew: no second collection.
    for (let t = 1750; t <= 5000; t += 250) expect(r.tick(t)).toBe(false);
    expect(p.runs).toBe(1);
  });

  it('waits for the whole window: a tick inside it decides nothing', () => {
    const p = fake(10 * MB);
    const r = started(p, 250, 8 * MB);
    r.tick(0);
    p.heap = 40 * MB;
    expect(r.tick(100)).toBe(false);
    expect(r.tick(249)).toBe(false);
    expect(r.tick(250)).toBe(true);
  });

  it('does not collect while the thread is busy (over 5 % of a core), however much the heap grew', () => {
    const p = fake(10 * MB);
    const r = started(p, 100, 1 * MB);
    r.tick(0);
    p.heap = 100 * MB;
    for (let t = 100; t <= 2000; t += 100) {
      p.cpu += 6; // 6 % of each window
      expect(r.tick(t)).toBe(false);
    }
    p.cpu += 4;
    expect(r.tick(2100)).toBe(true);
  });

  it('needs growth of IDLE_GC_MB and of a quarter of the heap left by the last collection', () => {
    const p = fake(100 * MB);
    const r = started(p, 100, 8 * MB);
    r.tick(0);
    p.heap = 120 * MB; // 20 MB: over IDLE_GC_MB, under a quarter of 100 MB
    expect(r.tick(100)).toBe(false);
    p.heap = 126 * MB;
    expect(r.tick(200)).toBe(true);
    // Small heap: IDLE_GC_MB decides.
    const q = fake(2 * MB);
    const s = started(q, 100, 8 * MB);
    s.tick(0);
    q.heap = 9 * MB;
    expect(s.tick(100)).toBe(false);
    q.heap = 10 * MB + 1;
    expect(s.tick(200)).toBe(true);
  });

  it('counts how far the heap grew since the last collection, though V8 shrank it again since', () => {
    const p = fake(10 * MB);
    const r = started(p, 250, 8 * MB);
    r.tick(0);
    p.cpu += 200;
    p.heap = 30 * MB; // seen at a tick during the burst
    expect(r.tick(100)).toBe(false);
    p.heap = 12 * MB; // young generation shrunk on its own: its pages stay in V8's pool
    expect(r.tick(250)).toBe(false); // the window was busy
    p.after = 9 * MB;
    expect(r.tick(500)).toBe(true);
    expect(r.releasedBytes).toBe(21 * MB);
  });

  it('collectNow collects whatever the heap holds; later only growth does', () => {
    const p = fake(30 * MB);
    const r = new IdleMemoryReducer({ quietMs: 100, growthBytes: 8 * MB }, p);
    // Quiet, but no growth since construction: the ticks alone never collect.
    for (let t = 0; t < 1000; t += 100) expect(r.tick(t)).toBe(false);
    p.after = 12 * MB;
    expect(r.collectNow()).toBe(true);
    expect([p.runs, r.collections, r.lastReleasedBytes]).toEqual([1, 1, 18 * MB]);
    for (let t = 1000; t < 3000; t += 100) expect(r.tick(t)).toBe(false);
    expect(p.runs).toBe(1);
  });

  it('defaults: 250 ms of quiet after 4 MB of growth', () => {
    expect([SCHEMA.PServer.IDLE_GC_MS.def, SCHEMA.PServer.IDLE_GC_MB.def]).toEqual([250, 4]);
  });

  it('IDLE_GC_MS = 0 never collects', () => {
    const p = fake(1 * MB);
    const r = new IdleMemoryReducer({ quietMs: 0, growthBytes: 1 }, p);
    p.heap = 1000 * MB;
    for (let t = 0; t < 10000; t += 100) expect(r.tick(t)).toBe(false);
    expect(p.runs).toBe(0);
  });

  it("this Node gives the isolate's gc without putting gc on the global object", () => {
    const gc = isolateGc();
    expect(typeof gc).toBe('function');
    expect((globalThis as { gc?: unknown }).gc).toBeUndefined();
    gc!({ type: 'minor', execution: 'sync' });
  });
});
