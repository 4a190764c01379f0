// The cross-thread bar of issue 4, measured as an A/B: `node bench/cross.ts [messages] [rounds] [warm] [servers]
// [mode] [pairs]` starts a one-worker and a two-worker server side by side, each with a sender and a receiver connected
// (mode `across`, the default: on the two-worker one the sender on shard 0 and the receiver on shard 1), and alternates
// pipelined bursts of `messages` p2p pushes on each (`warm` unmeasured pairs first); prints broker CPU µs per delivery
// of both, split by thread, and the ratio (two workers ÷ one worker) of every pair, then the ratio of the totals and
// the pairs' ratios sorted. The `rounds` pairs are shared out over `servers` fresh pairs of servers, one after the
// other: two servers running the same build differ by up to ±12 % on this box for as long as they run (one worker
// against one worker, same method: 1.067, 0.878, 0.983), so a single pair of servers carries that bias into the result.
// Other modes: `control` runs that comparison itself (one worker against a second one-worker server); `same` puts both
// devices on shard 0; `spread` opens `pairs` senders with their receivers (default 4) wherever the kernel's reusePort
// hash puts them, as a deployment would, and shares each burst among them (both servers); `cold` measures the first
// `messages` (default 2,000,000) on fresh servers with devices spread, `rounds` times (see coldCost).
// `npm run bench` runs the same (crossThreadCost) and prints its summary under the end-to-end table.

import type { Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { PAYLOAD, pipeline, register } from './load.ts';
import { cpuPerThread, cpuTotal, onShard, type Server, startServer, stopServer, threadCpuMicros } from './server.ts';

/** One burst of p2p messages: msgs/s, broker CPU µs per delivery, and the threads' share of it. */
export interface CrossRun {
  perSecond: number;
  cpu: number;
  threads: string;
}

/** Registered senders, each with its receiver, on a server, used for every burst (no connection set-up between them). */
interface Pairs {
  server: Server;
  devices: { sender: Socket; receiver: Socket; line: string }[];
}

/** How devices are placed on the two-worker server: see CrossOptions. */
type Placement = 'across' | 'same' | 'spread';

/** A registered device: on the shard asked for, or (`shard` -1, or one worker) wherever the kernel put it. */
async function device(s: Server, workers: number, prefix: string, shard: number): Promise<[Socket, string]> {
  if (shard >= 0 && workers > 1) return onShard(s, workers, prefix, shard);
  const id = `${prefix}${s.port}`;
  return [await register(s.port, s.key, id), id];
}

async function openPairs(s: Server, workers: number, placement: Placement, count: number): Promise<Pairs> {
  const p: Pairs = { server: s, devices: [] };
  const spread = placement === 'spread';
  for (let i = 0; i < count; i++) {
    const [receiver, rid] = await device(s, workers, `R${i}X`, spread ? -1 : placement === 'across' ? 1 : 0);
    const [sender] = await device(s, workers, `S${i}X`, spread ? -1 : 0);
    p.devices.push({ sender, receiver, line: `TCP:PUSH:${s.key}:RID:${rid}:${PAYLOAD}\r\n` });
  }
  return p;
}

async function burst(p: Pairs, n: number): Promise<CrossRun> {
  const pid = p.server.child.pid!;
  const k = p.devices.length;
  const t0 = threadCpuMicros(pid);
  const runs = await Promise.all(
    p.devices.map((d) => pipeline(d.sender, [d.receiver], d.line, Math.floor(n / k), 1, 16384 / k)),
  );
  const t1 = threadCpuMicros(pid);
  const r = { deliveries: 0, perSecond: 0 };
  for (const one of runs) {
    r.deliveries += one.deliveries;
    r.perSecond += one.perSecond;
  }
  const threads = cpuPerThread(t0, t1, r.deliveries, 3)
    .map(([k, v]) => `${k} ${v}`)
    .join(', ');
  return { perSecond: r.perSecond, cpu: cpuTotal(t0, t1) / r.deliveries, threads };
}

export interface CrossOptions {
  /** Unmeasured pairs of bursts on each pair of servers first. */
  warm?: number;
  /** Fresh pairs of servers that share the rounds, one pair after the other. */
  servers?: number;
  /** The control: one worker against one worker, same method (the second column reads as the noise floor). */
  control?: boolean;
  /**
   * Where the two-worker server's devices are: every sender on shard 0 and its receiver on shard 1 ('across', the
   * default), both on shard 0 ('same'), or wherever the kernel's reusePort hash put them ('spread').
   */
  placement?: Placement;
  /** Senders, each with its receiver, on each server (default 1); a burst's messages are shared among them. */
  devicePairs?: number;
  /** Sees each pair as it ends. */
  onPair?: (one: CrossRun, other: CrossRun) => void;
}

/**
 * One worker against two workers across shards (or, as a control, against another one-worker server), each server
 * with its pair of devices connected throughout: `warm` unmeasured bursts of each, then pairs of `n`-message bursts,
 * in the order one, two, two, one, ... so that both sides meet the same minutes of this box (its run-to-run noise is
 * larger than the difference). The `rounds` pairs are shared out over `servers` fresh pairs of servers.
 */
export async function crossThreadCost(
  n: number,
  rounds: number,
  opts: CrossOptions = {},
): Promise<[one: CrossRun, other: CrossRun][]> {
  const servers = opts.servers ?? 1;
  const pairs: [CrossRun, CrossRun][] = [];
  for (let k = 0; k < servers; k++) {
    const share = Math.floor(rounds / servers) + (k < rounds % servers ? 1 : 0);
    for (const p of await onServers(n, share, opts)) pairs.push(p);
  }
  return pairs;
}

/** crossThreadCost on one fresh pair of servers. */
async function onServers(n: number, rounds: number, opts: CrossOptions): Promise<[one: CrossRun, other: CrossRun][]> {
  const workers = opts.control === true ? 1 : 2;
  const one = await startServer(1);
  const other = await startServer(workers);
  try {
    const count = opts.devicePairs ?? 1;
    const a = await openPairs(one, 1, 'spread', count);
    const b = await openPairs(other, workers, opts.placement ?? 'across', count);
    for (let i = 0; i < (opts.warm ?? 4); i++) {
      await burst(a, n);
      await burst(b, n);
    }
    const pairs: [CrossRun, CrossRun][] = [];
    for (let i = 0; i < rounds; i++) {
      let ra: CrossRun;
      let rb: CrossRun;
      if (i % 2 === 0) {
        ra = await burst(a, n);
        rb = await burst(b, n);
      } else {
        rb = await burst(b, n);
        ra = await burst(a, n);
      }
      pairs.push([ra, rb]);
      opts.onPair?.(ra, rb);
    }
    return pairs;
  } finally {
    await stopServer(one);
    await stopServer(other);
  }
}

/**
 * The same from cold: for each of `rounds`, a fresh one-worker and a fresh two-worker server (in alternating order),
 * each with `devicePairs` senders and receivers wherever the kernel put them, measured over the first `n` messages
 * after registration, with no warm-up: what a short benchmark of a just-started server sees, V8 compiling the hot
 * code in each shard's isolate included. Returns the pairs [one worker, two workers].
 */
export async function coldCost(n: number, rounds: number, devicePairs = 4): Promise<[one: CrossRun, two: CrossRun][]> {
  const pairs: [CrossRun, CrossRun][] = [];
  for (let i = 0; i < rounds; i++) {
    const runs: CrossRun[] = [];
    for (const workers of i % 2 === 0 ? [1, 2] : [2, 1]) {
      const s = await startServer(workers);
      try {
        runs[workers - 1] = await burst(await openPairs(s, workers, 'spread', devicePairs), n);
      } finally {
        await stopServer(s);
      }
    }
    pairs.push([runs[0]!, runs[1]!]);
  }
  return pairs;
}

/** Ratio of the two sides' summed CPU (every burst has the same messages), and the median of the pairs' ratios. */
export function crossRatios(pairs: [CrossRun, CrossRun][]): { total: number; median: number; sorted: number[] } {
  const sorted = pairs.map(([a, b]) => b.cpu / a.cpu).sort((x, y) => x - y);
  const m = sorted.length >> 1;
  const median = sorted.length % 2 === 1 ? sorted[m]! : (sorted[m - 1]! + sorted[m]!) / 2;
  let one = 0;
  let across = 0;
  for (const [a, b] of pairs) {
    one += a.cpu;
    across += b.cpu;
  }
  return { total: across / one, median, sorted };
}

if (process.argv[1] === fileURLToPath(import.meta.url) && process.argv[6] === 'cold') {
  // `node bench/cross.ts <messages> <rounds> - - cold [pairs]`
  const pairs = await coldCost(
    Number(process.argv[2] ?? 2_000_000),
    Number(process.argv[3] ?? 6),
    Number(process.argv[7] ?? 4),
  );
  for (const [a, b] of pairs)
    console.log(
      `1w ${a.cpu.toFixed(3)} [${a.threads}] | 2w ${b.cpu.toFixed(3)} [${b.threads}] | ratio ${(b.cpu / a.cpu).toFixed(2)}`,
    );
  const r = crossRatios(pairs);
  console.log(`ratio of totals ${r.total.toFixed(3)}, median of pairs ${r.median.toFixed(3)}`);
} else if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const mode = process.argv[6] ?? 'across';
  const control = mode === 'control';
  const placement: Placement = mode === 'same' || mode === 'spread' ? mode : 'across';
  const devicePairs = Number(process.argv[7] ?? (mode === 'spread' ? 4 : 1));
  const pairs = await crossThreadCost(Number(process.argv[2] ?? 250_000), Number(process.argv[3] ?? 24), {
    warm: Number(process.argv[4] ?? 32),
    servers: Number(process.argv[5] ?? 3),
    control,
    placement,
    devicePairs,
    onPair: (a, b) =>
      console.log(
        `1w ${Math.round(a.perSecond)} ${a.cpu.toFixed(3)} [${a.threads}] | ${control ? '1w' : placement} ${Math.round(b.perSecond)} ${b.cpu.toFixed(3)} [${b.threads}] | ratio ${(b.cpu / a.cpu).toFixed(2)}`,
      ),
  });
  const r = crossRatios(pairs);
  console.log(
    `ratio of totals ${r.total.toFixed(3)}, median of pairs ${r.median.toFixed(3)}; sorted ${r.sorted.map((x) => x.toFixed(2)).join(' ')}`,
  );
}
