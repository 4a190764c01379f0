// RAW transparent channel benchmark (PROTOCOL.md §7, issue 7): one-way throughput and 64-byte ping-pong latency
// through the channel, with both devices on one shard and on two shards, next to a direct Node socket-to-socket
// pipe as the reference: a tiny TCP relay (`a.pipe(b); b.pipe(a)`) on its own worker thread in this process, so
// it has an event loop to itself as a shard does. Loaders are in this process for both.
//
// Environment knobs: BENCH_RAW_BYTES (268435456 bytes per one-way run), BENCH_RAW_RUNS (3 runs of each, median),
// BENCH_RAW_ROUNDS (2000 round trips).

import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import { Worker } from 'node:worker_threads';
import { openSocket, readLine } from './load.ts';
import { onShard, type Server } from './server.ts';

const env = process.env;
const BYTES = Number(env.BENCH_RAW_BYTES ?? 256 * 1024 * 1024);
const RUNS = Number(env.BENCH_RAW_RUNS ?? 3);
const ROUNDS = Number(env.BENCH_RAW_ROUNDS ?? 2000);
const WARMUP = 200;
/** What the writers send: one 1 MiB block, over and over (never modified, so safe to queue many times). */
const BLOCK = randomBytes(1 << 20);

export interface RawResult {
  /** One-way MB/s (10^6 bytes per second): same shard, across shards (NaN with one shard), direct pipe. */
  oneWaySame: number;
  oneWayCross: number;
  direct: number;
  /** 64-byte ping-pong, median round trip in µs. */
  rttSame: number;
  rttCross: number;
  rttDirect: number;
}

async function shardCount(s: Server): Promise<number> {
  const r = (await (await fetch(`http://127.0.0.1:${s.httpPort}/api/v1/health`)).json()) as { shards: number };
  return r.shards;
}

/** `TCP:PUSH:<KEY>:RAW:<to>` from `from`, with the exact replies on both ends. */
export async function link(key: string, from: Socket, to: Socket, toId: string): Promise<void> {
  from.write(`TCP:PUSH:${key}:RAW:${toId}\r\n`);
  const [a, b] = await Promise.all([readLine(from), readLine(to)]);
  if (a !== '[OK:LINK_SYNC]' || b !== 'PUSHRAW:') throw new Error(`RAW link to ${toId}: ${a} / ${b}`);
}

/** A full-duplex RAW pair: writer on shard `wa`, reader on shard `wb`. */
async function rawPair(s: Server, wa: number, wb: number): Promise<[Socket, Socket]> {
  // Any shard count above one: onShard only skips the placement check for a one-shard server.
  const [a, ida] = await onShard(s, 2, 'RAWA', wa);
  const [b, idb] = await onShard(s, 2, 'RAWB', wb);
  await link(s.key, a, b, idb);
  await link(s.key, b, a, ida);
  return [a, b];
}

/** The reference: a TCP relay that pipes the first connection of each pair into the second and back. */
const RELAY = `
const { parentPort } = require('node:worker_threads');
const net = require('node:net');
let first = null;
const server = net.createServer((s) => {
  s.setNoDelay(true);
  s.on('error', () => {});
  if (first === null) { first = s; return; }
  const a = first;
  first = null;
  a.pipe(s);
  s.pipe(a);
});
server.listen(0, '127.0.0.1', () => parentPort.postMessage(server.address().port));
`;

async function startRelay(): Promise<{ port: number; stop: () => Promise<number> }> {
  const worker = new Worker(RELAY, { eval: true });
  const port = await new Promise<number>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  return { port, stop: () => worker.terminate() };
}

async function directPair(port: number): Promise<[Socket, Socket]> {
  const a = await openSocket(port);
  await new Promise((r) => setTimeout(r, 5)); // accepted in order: a is first
  const b = await openSocket(port);
  await new Promise((r) => setTimeout(r, 5));
  return [a, b];
}

/** Writes BYTES from w as fast as w drains; MB/s from the first write to the last byte at r. */
export function oneWay(w: Socket, r: Socket, bytes = BYTES): Promise<number> {
  return new Promise((resolve, reject) => {
    let got = 0;
    let sent = 0;
    const t0 = performance.now();
    w.on('data', (b: Buffer) => reject(new Error(`writer received ${JSON.stringify(b.toString('latin1', 0, 80))}`)));
    r.on('data', (b: Buffer) => {
      got += b.length;
      if (got < bytes) return;
      const seconds = (performance.now() - t0) / 1000;
      w.removeAllListeners('data');
      r.removeAllListeners('data');
      if (got > bytes) reject(new Error(`reader got ${got - bytes} bytes too many`));
      else resolve(bytes / 1e6 / seconds);
    });
    const pump = (): void => {
      while (sent < bytes) {
        const n = Math.min(BLOCK.length, bytes - sent);
        sent += n;
        if (!w.write(n === BLOCK.length ? BLOCK : BLOCK.subarray(0, n))) {
          w.once('drain', pump);
          return;
        }
      }
    };
    pump();
  });
}

/** A sends 64 bytes, B echoes 64 bytes back as soon as it has them; median round trip in µs. */
export function pingPong(a: Socket, b: Socket, rounds = ROUNDS): Promise<number> {
  return new Promise((resolve) => {
    const msg = Buffer.alloc(64, 0x5a);
    const times: number[] = [];
    let atA = 0;
    let atB = 0;
    let t0 = 0;
    let n = 0;
    const send = (): void => {
      t0 = performance.now();
      a.write(msg);
    };
    b.on('data', (d: Buffer) => {
      atB += d.length;
      for (; atB >= 64; atB -= 64) b.write(msg);
    });
    a.on('data', (d: Buffer) => {
      atA += d.length;
      for (; atA >= 64; atA -= 64) {
        if (++n > WARMUP) times.push((performance.now() - t0) * 1000);
        if (times.length >= rounds) {
          a.removeAllListeners('data');
          b.removeAllListeners('data');
          times.sort((x, y) => x - y);
          resolve(times[Math.floor((times.length - 1) / 2)]!);
          return;
        }
        send();
      }
    });
    send();
  });
}

function median(xs: number[]): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor((s.length - 1) / 2)]!;
}

/** Ping-pong median µs, then one-way MB/s, through a fresh full-duplex pair (closed afterwards). */
export async function measure(pair: () => Promise<[Socket, Socket]>): Promise<{ mbs: number; rtt: number }> {
  const [a, b] = await pair();
  try {
    const rtt = await pingPong(a, b);
    const mbs = await oneWay(a, b);
    return { mbs, rtt };
  } finally {
    a.destroy();
    b.destroy();
  }
}

/**
 * Runs BENCH_RAW_RUNS rounds of: direct pipe, RAW same shard, RAW across shards (when the server has more than
 * one shard), each a fresh pair doing ping-pong then one-way; returns the medians.
 */
export async function rawBench(s: Server): Promise<RawResult> {
  const shards = await shardCount(s);
  const relay = await startRelay();
  const direct: { mbs: number; rtt: number }[] = [];
  const same: { mbs: number; rtt: number }[] = [];
  const cross: { mbs: number; rtt: number }[] = [];
  try {
    for (let i = 0; i < RUNS; i++) {
      direct.push(await measure(() => directPair(relay.port)));
      same.push(await measure(() => rawPair(s, 0, 0)));
      if (shards > 1) cross.push(await measure(() => rawPair(s, 0, 1)));
    }
  } finally {
    await relay.stop();
  }
  return {
    oneWaySame: median(same.map((r) => r.mbs)),
    oneWayCross: median(cross.map((r) => r.mbs)),
    direct: median(direct.map((r) => r.mbs)),
    rttSame: median(same.map((r) => r.rtt)),
    rttCross: median(cross.map((r) => r.rtt)),
    rttDirect: median(direct.map((r) => r.rtt)),
  };
}
