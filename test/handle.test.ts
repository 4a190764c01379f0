// Connection handles (src/routing/handle.ts): shard (6 bits), slot (17 bits), generation (28 bits) packed into a
// double, and the shared per-slot status word gen << 3 | flags.

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MAX_SLOTS_PER_SHARD, MAX_WORKERS } from '../src/config/schema.ts';
import {
  ALIVE,
  beginRegistration,
  clearAllFlags,
  clearFlag,
  endRegistration,
  FULL,
  GEN_MASK,
  genOf,
  isLive,
  liveFlags,
  makeHandle,
  newStatusTable,
  setFlag,
  shardOf,
  slotGen,
  slotOf,
} from '../src/routing/handle.ts';

const MAX_SLOT = MAX_SLOTS_PER_SHARD - 1; // 2^17 - 1
const MAX_SHARD = MAX_WORKERS - 1; // 63
const MAX_GEN = GEN_MASK; // 2^28 - 1
/** The status word's free flag bit: flags are independent bits, whatever they mean. */
const SPARE = 4;

describe('handle packing', () => {
  it('the bounds are 2^17 slots, 64 shards, 2^28 generations', () => {
    expect(MAX_SLOT).toBe(131071);
    expect(MAX_SHARD).toBe(63);
    expect(MAX_GEN).toBe(268435455);
    expect([ALIVE, FULL]).toEqual([1, 2]);
  });

  it('round-trips at the bounds', () => {
    const gens = [0, 1, 2, MAX_GEN - 1, MAX_GEN];
    const slots = [0, 1, 63, 64, MAX_SLOT - 1, MAX_SLOT];
    const shards = [0, 1, 62, MAX_SHARD];
    for (const g of gens)
      for (const sl of slots)
        for (const sh of shards) {
          const h = makeHandle(g, sl, sh);
          expect([genOf(h), slotOf(h), shardOf(h)]).toEqual([g, sl, sh]);
          expect(Number.isSafeInteger(h)).toBe(true);
        }
  });

  it('exact packing: gen * 2^23 + slot * 2^6 + shard', () => {
    expect(makeHandle(0, 0, 0)).toBe(0);
    expect(makeHandle(0, 0, 63)).toBe(63);
    expect(makeHandle(0, 1, 0)).toBe(64);
    expect(makeHandle(1, 0, 0)).toBe(2 ** 23);
    expect(makeHandle(MAX_GEN, MAX_SLOT, MAX_SHARD)).toBe(2 ** 51 - 1);
  });

  it('property: round-trip and injectivity over the whole range', () => {
    const triple = fc.tuple(
      fc.integer({ min: 0, max: MAX_GEN }),
      fc.integer({ min: 0, max: MAX_SLOT }),
      fc.integer({ min: 0, max: MAX_SHARD }),
    );
    fc.assert(
      fc.property(triple, triple, ([g, sl, sh], [g2, sl2, sh2]) => {
        const h = makeHandle(g, sl, sh);
        expect([genOf(h), slotOf(h), shardOf(h)]).toEqual([g, sl, sh]);
        const same = g === g2 && sl === sl2 && sh === sh2;
        expect(makeHandle(g2, sl2, sh2) === h).toBe(same);
      }),
      { numRuns: 5000 },
    );
  });
});

describe('registration and generations', () => {
  it('a fresh table has generation 0 everywhere, and nothing is live', () => {
    const t = newStatusTable(8);
    expect(t.length).toBe(8);
    expect(t.buffer).toBeInstanceOf(SharedArrayBuffer);
    for (let i = 0; i < 8; i++) expect(slotGen(t, i)).toBe(0);
    expect(isLive([t], makeHandle(0, 3, 0))).toBe(false);
    expect(liveFlags([t], makeHandle(0, 3, 0))).toBe(0);
  });

  it('beginRegistration bumps the generation and marks ALIVE; endRegistration bumps and clears', () => {
    const t = newStatusTable(4);
    const tables = [newStatusTable(1), t];
    const h1 = beginRegistration(t, 2, 1);
    expect([genOf(h1), slotOf(h1), shardOf(h1)]).toEqual([1, 2, 1]);
    expect(slotGen(t, 2)).toBe(1);
    expect(liveFlags(tables, h1)).toBe(ALIVE);
    expect(isLive(tables, h1)).toBe(true);

    endRegistration(t, 2);
    expect(slotGen(t, 2)).toBe(2);
    expect(isLive(tables, h1)).toBe(false);
    expect(liveFlags(tables, h1)).toBe(0);
    // The ended generation itself is not live either.
    expect(isLive(tables, makeHandle(2, 2, 1))).toBe(false);

    const h2 = beginRegistration(t, 2, 1);
    expect(genOf(h2)).toBe(3);
    expect(isLive(tables, h2)).toBe(true);
    expect(isLive(tables, h1)).toBe(false);
    // Other slots are untouched.
    expect([slotGen(t, 0), slotGen(t, 1), slotGen(t, 3)]).toEqual([0, 0, 0]);
  });

  it('a new registration without an end also retires the old handle', () => {
    const t = newStatusTable(1);
    const h1 = beginRegistration(t, 0, 0);
    const h2 = beginRegistration(t, 0, 0);
    expect(genOf(h2)).toBe(genOf(h1) + 1);
    expect(isLive([t], h1)).toBe(false);
    expect(isLive([t], h2)).toBe(true);
  });

  it('works at the highest slot and shard', () => {
    const t = newStatusTable(MAX_SLOTS_PER_SHARD);
    const tables = Array.from({ length: MAX_WORKERS }, (_, i) => (i === MAX_SHARD ? t : newStatusTable(1)));
    const h = beginRegistration(t, MAX_SLOT, MAX_SHARD);
    expect([genOf(h), slotOf(h), shardOf(h)]).toEqual([1, MAX_SLOT, MAX_SHARD]);
    expect(liveFlags(tables, h)).toBe(ALIVE);
    endRegistration(t, MAX_SLOT);
    expect(isLive(tables, h)).toBe(false);
  });

  it('a handle of a shard without a table is not live', () => {
    const t = newStatusTable(1);
    beginRegistration(t, 0, 0);
    expect(liveFlags([t], makeHandle(1, 0, 5))).toBe(0);
  });

  it('the generation wraps from 2^28-1 to 1, never to 0; the status word stays positive', () => {
    const t = newStatusTable(2);
    Atomics.store(t, 0, ((MAX_GEN - 1) << 3) | ALIVE);
    const hMax = beginRegistration(t, 0, 0);
    expect(genOf(hMax)).toBe(MAX_GEN);
    expect(t[0]).toBeGreaterThan(0);
    expect(slotGen(t, 0)).toBe(MAX_GEN);
    setFlag(t, 0, FULL | SPARE);
    expect(liveFlags([t], hMax)).toBe(ALIVE | FULL | SPARE);
    const hWrap = beginRegistration(t, 0, 0);
    expect(genOf(hWrap)).toBe(1);
    expect(isLive([t], hMax)).toBe(false);
    expect(liveFlags([t], hWrap)).toBe(ALIVE);

    Atomics.store(t, 1, MAX_GEN << 3);
    endRegistration(t, 1);
    expect(slotGen(t, 1)).toBe(1);
    expect(isLive([t], makeHandle(0, 1, 0))).toBe(false);
  });
});

describe('flags', () => {
  it('FULL and SPARE set and clear independently on a live handle', () => {
    const t = newStatusTable(2);
    const h = beginRegistration(t, 1, 0);
    setFlag(t, 1, FULL);
    expect(liveFlags([t], h)).toBe(ALIVE | FULL);
    setFlag(t, 1, SPARE);
    expect(liveFlags([t], h)).toBe(ALIVE | FULL | SPARE);
    clearFlag(t, 1, FULL);
    expect(liveFlags([t], h)).toBe(ALIVE | SPARE);
    clearFlag(t, 1, SPARE);
    expect(liveFlags([t], h)).toBe(ALIVE);
    clearFlag(t, 1, SPARE);
    expect(liveFlags([t], h)).toBe(ALIVE);
    expect(slotGen(t, 1)).toBe(1);
    expect(liveFlags([t], makeHandle(1, 0, 0))).toBe(0);
  });

  it('flags are not visible through an old handle, and a new registration starts without them', () => {
    const t = newStatusTable(1);
    const h1 = beginRegistration(t, 0, 0);
    setFlag(t, 0, FULL | SPARE);
    const h2 = beginRegistration(t, 0, 0);
    expect(liveFlags([t], h1)).toBe(0);
    expect(liveFlags([t], h2)).toBe(ALIVE);
    setFlag(t, 0, SPARE);
    endRegistration(t, 0);
    expect(liveFlags([t], h2)).toBe(0);
    expect(t[0]! & 7).toBe(0);
  });

  it('clearAllFlags clears every flag but keeps generations', () => {
    const t = newStatusTable(4);
    const h0 = beginRegistration(t, 0, 2);
    const h1 = beginRegistration(t, 1, 2);
    beginRegistration(t, 1, 2);
    const h1b = beginRegistration(t, 1, 2);
    setFlag(t, 1, FULL | SPARE);
    endRegistration(t, 3);
    const tables = [newStatusTable(1), newStatusTable(1), t];
    const gens = [0, 1, 2, 3].map((i) => slotGen(t, i));
    expect(gens).toEqual([1, 3, 0, 1]);

    clearAllFlags(t);
    expect([0, 1, 2, 3].map((i) => slotGen(t, i))).toEqual(gens);
    expect([0, 1, 2, 3].map((i) => t[i]! & 7)).toEqual([0, 0, 0, 0]);
    for (const h of [h0, h1, h1b]) expect(liveFlags(tables, h)).toBe(0);
    // The next registration continues the generation sequence: no old handle comes back.
    const h1c = beginRegistration(t, 1, 2);
    expect(genOf(h1c)).toBe(4);
    expect(isLive(tables, h1c)).toBe(true);
    expect(isLive(tables, h1b)).toBe(false);
    expect(isLive(tables, h1)).toBe(false);
  });
});

describe('liveFlags contract', () => {
  // handle.ts documents liveFlags as "the flags of h if h is the current registration of its slot and alive, else 0".
  it('a registration that is no longer alive reports 0, even if a flag is set on its slot afterwards', () => {
    const t = newStatusTable(1);
    const h = beginRegistration(t, 0, 0);
    clearAllFlags(t); // the shard died: h is no longer alive
    expect(isLive([t], h)).toBe(false);
    setFlag(t, 0, FULL);
    expect(isLive([t], h)).toBe(false);
    expect(liveFlags([t], h)).toBe(0);
  });
});

describe('model-based: an old handle is never live again', () => {
  type Op =
    | { op: 'begin'; slot: number }
    | { op: 'end'; slot: number }
    | { op: 'set'; slot: number; flag: number }
    | { op: 'clear'; slot: number; flag: number }
    | { op: 'clearAll' };
  const SLOTS = 4;
  const SHARD = 5;
  const slotArb = fc.integer({ min: 0, max: SLOTS - 1 });
  const flagArb = fc.constantFrom(FULL, SPARE, FULL | SPARE);
  const opArb: fc.Arbitrary<Op> = fc.oneof(
    fc.record({ op: fc.constant('begin' as const), slot: slotArb }),
    fc.record({ op: fc.constant('end' as const), slot: slotArb }),
    fc.record({ op: fc.constant('set' as const), slot: slotArb, flag: flagArb }),
    fc.record({ op: fc.constant('clear' as const), slot: slotArb, flag: flagArb }),
    fc.record({ op: fc.constant('clearAll' as const) }),
  );

  it('only the latest registration of a slot can be live, with exactly the model flags', () => {
    fc.assert(
      fc.property(fc.array(opArb, { maxLength: 60 }), (ops) => {
        const t = newStatusTable(SLOTS);
        const tables = Array.from({ length: SHARD + 1 }, (_, i) => (i === SHARD ? t : newStatusTable(SLOTS)));
        const issued: number[] = [];
        /** Per slot: the live handle and its flags, or null. */
        const live: ({ h: number; flags: number } | null)[] = Array(SLOTS).fill(null);
        const gen: number[] = Array(SLOTS).fill(0);
        for (const o of ops) {
          switch (o.op) {
            case 'begin': {
              const h = beginRegistration(t, o.slot, SHARD);
              gen[o.slot]!++;
              expect([genOf(h), slotOf(h), shardOf(h)]).toEqual([gen[o.slot], o.slot, SHARD]);
              expect(issued.includes(h)).toBe(false);
              issued.push(h);
              live[o.slot] = { h, flags: ALIVE };
              break;
            }
            case 'end':
              endRegistration(t, o.slot);
              gen[o.slot]!++;
              live[o.slot] = null;
              break;
            case 'set':
              setFlag(t, o.slot, o.flag);
              if (live[o.slot]) live[o.slot]!.flags |= o.flag;
              break;
            case 'clear':
              clearFlag(t, o.slot, o.flag);
              if (live[o.slot]) live[o.slot]!.flags &= ~o.flag;
              break;
            case 'clearAll':
              clearAllFlags(t);
              for (let i = 0; i < SLOTS; i++) live[i] = null;
              break;
          }
          for (let i = 0; i < SLOTS; i++) expect(slotGen(t, i)).toBe(gen[i]);
          for (const h of issued) {
            const cur = live[slotOf(h)];
            const isCur = cur !== null && cur.h === h;
            expect(isLive(tables, h)).toBe(isCur);
            // Callers test ALIVE first; the other flags only count on a live handle.
            if (isCur) expect(liveFlags(tables, h)).toBe(cur.flags);
            else expect(liveFlags(tables, h) & ALIVE).toBe(0);
          }
        }
      }),
      { numRuns: 1000 },
    );
  });
});
