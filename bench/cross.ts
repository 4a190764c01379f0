// The cross-thread bar of issue 4, measured as an A/B: `node bench/cross.ts [messages] [rounds] [warm] [servers]
// [control]` starts a one-worker and a two-worker server side by side, each with a sender and a receiver connected (on the
// two-worker one the sender on shard 0 and the receiver on shard 1), and alternates pipelined bursts of `messages` p2p
// pushes on each (`warm` unmeasured pairs first); prints broker CPU µs per delivery of both, split by thread, and the
// ratio (two workers across shards ÷ one worker) of every pair, then the ratio of the totals and the pairs' ratios
// sorted. The `rounds` pairs are shared out over `servers` fresh pairs of servers, one after the other: two servers
// running the same build differ by up to ±12 % on this box for as long as they run (one worker against one worker,
// same method: 1.067, 0.878, 0.983), so a single pair of servers carries that bias into the result. `control` runs
// that comparison itself: one worker against a second one-worker server.
// `npm run bench` runs the same (crossThreadCost) and prints its summary under the end-to-end table.

import type { Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { PAYLOAD, pipeline } from './load.ts';
import { cpuPerThread, cpuTotal, onShard, type Server, startServer, stopServer, threadCpuMicros } from './server.ts';

/** One burst of p2p messages: msgs/s, broker CPU µs per delivery, and the threads' share of it. */
export interface CrossRun {
  perSecond: number;
  cpu: number;
  threads: string;
}

/** A registered sender and receiver on a server, used for every burst (no connection set-up between them). */
interface Pair {
  server: Server;
  sender: Socket;
  receiver: Socket;
  line: string;
}

async function openPair(s: Server, workers: number, across: boolean): Promise<Pair> {
  const [receiver, rid] = await onShard(s, workers, 'R', across ? 1 : 0);
  const [sender] = await onShard(s, workers, 'S', 0);
  return { server: s, sender, receiver, line: `TCP:PUSH:${s.key}:RID:${rid}:${PAYLOAD}\r\n` };
}

async function burst(p: Pair, n: number): Promise<CrossRun> {
  const pid = p.server.child.pid!;
  const t0 = threadCpuMicros(pid);
  const r = await pipeline(p.sender, [p.receiver], p.line, n, 1, 16384);
  const t1 = threadCpuMicros(pid);
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
    const a = await openPair(one, 1, false);
    const b = await openPair(other, workers, workers === 2);
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

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const control = process.argv[6] === 'control';
  const pairs = await crossThreadCost(Number(process.argv[2] ?? 250_000), Number(process.argv[3] ?? 24), {
    warm: Number(process.argv[4] ?? 32),
    servers: Number(process.argv[5] ?? 3),
    control,
    onPair: (a, b) =>
      console.log(
        `1w ${Math.round(a.perSecond)} ${a.cpu.toFixed(3)} [${a.threads}] | ${control ? '1w' : 'across'} ${Math.round(b.perSecond)} ${b.cpu.toFixed(3)} [${b.threads}] | ratio ${(b.cpu / a.cpu).toFixed(2)}`,
      ),
  });
  const r = crossRatios(pairs);
  console.log(
    `ratio of totals ${r.total.toFixed(3)}, median of pairs ${r.median.toFixed(3)}; sorted ${r.sorted.map((x) => x.toFixed(2)).join(' ')}`,
  );
}
