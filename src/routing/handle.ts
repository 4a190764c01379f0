// Connection handles and the shared status table.
//
// A handle names one registration of one connection: shard (6 bits), slot (17 bits) and the slot's
// generation (28 bits), packed into a double: gen * 2^23 + slot * 2^6 + shard. A new registration, REMID
// or close bumps the generation, so a stale handle never reaches a later occupant of the slot.
//
// Each shard publishes, per slot, a 32-bit status word in a SharedArrayBuffer: gen << 3 | flags.
// Any shard can read whether a handle is live (ALIVE) or over its output bound (FULL) without a
// cross-thread round trip. Only the owning shard writes its table. (Bit 4 is free.)

import { MAX_SLOTS_PER_SHARD, MAX_WORKERS } from '../config/schema.ts';

export const ALIVE = 1;
export const FULL = 2;
const FLAG_BITS = 3;
const FLAGS = 7;
export const GEN_MASK = (1 << 28) - 1;

const SHARD_SPAN = MAX_WORKERS; // 2^6
const SLOT_SPAN = MAX_SLOTS_PER_SHARD * SHARD_SPAN; // 2^23

export function makeHandle(gen: number, slot: number, shard: number): number {
  return gen * SLOT_SPAN + slot * SHARD_SPAN + shard;
}
export function shardOf(h: number): number {
  return h % SHARD_SPAN;
}
export function slotOf(h: number): number {
  return Math.floor(h / SHARD_SPAN) % MAX_SLOTS_PER_SHARD;
}
export function genOf(h: number): number {
  return Math.floor(h / SLOT_SPAN);
}

/** Status tables of every shard, indexed by shard. */
export type StatusTables = readonly Int32Array[];

export function newStatusTable(slots: number): Int32Array {
  return new Int32Array(new SharedArrayBuffer(slots * 4));
}

/** The flags of h if h is the current registration of its slot and alive, else 0. */
export function liveFlags(tables: StatusTables, h: number): number {
  const table = tables[shardOf(h)];
  if (table === undefined) return 0;
  const w = Atomics.load(table, slotOf(h));
  return w >>> FLAG_BITS === genOf(h) && (w & ALIVE) !== 0 ? w & FLAGS : 0;
}

export function isLive(tables: StatusTables, h: number): boolean {
  return (liveFlags(tables, h) & ALIVE) !== 0;
}

/** Current generation stored in a slot. */
export function slotGen(table: Int32Array, slot: number): number {
  return Atomics.load(table, slot) >>> FLAG_BITS;
}

/** Starts a new registration in a slot: bumps the generation, marks it ALIVE, returns the new handle. */
export function beginRegistration(table: Int32Array, slot: number, shard: number): number {
  const gen = (slotGen(table, slot) + 1) & GEN_MASK || 1;
  Atomics.store(table, slot, (gen << FLAG_BITS) | ALIVE);
  return makeHandle(gen, slot, shard);
}

/** Ends the registration: bumps the generation and clears every flag. */
export function endRegistration(table: Int32Array, slot: number): void {
  const gen = (slotGen(table, slot) + 1) & GEN_MASK || 1;
  Atomics.store(table, slot, gen << FLAG_BITS);
}

export function setFlag(table: Int32Array, slot: number, flag: number): void {
  Atomics.or(table, slot, flag);
}
export function clearFlag(table: Int32Array, slot: number, flag: number): void {
  Atomics.and(table, slot, ~flag);
}

/** After a shard died: clear every flag but keep generations, so old handles stay stale. */
export function clearAllFlags(table: Int32Array): void {
  for (let i = 0; i < table.length; i++) {
    const w = Atomics.load(table, i);
    if (w & FLAGS) Atomics.store(table, i, (w >>> FLAG_BITS) << FLAG_BITS);
  }
}
