// The cross-thread bar of issue 4, measured as an A/B: `node bench/cross.ts [messages] [rounds] [warm]` starts a
// one-worker and a two-worker server side by side, each with a sender and a receiver connected (on the two-worker one
// the sender on shard 0 and the receiver on shard 1), and alternates pipelined bursts of `messages` p2p pushes on each
// (`warm` unmeasured pairs first); prints broker CPU µs per delivery of both, split by thread, and the ratio (two
// workers across shards ÷ one worker) of every pair, then the ratio of the totals and the pairs' ratios sorted.
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

/**
 * One worker against two workers across shards, each server with its pair of devices connected throughout: `warm`
 * unmeasured bursts of each, then `rounds` pairs of `n`-message bursts, in the order one, two, two, one, ... so
 * that both sides meet the same minutes of this box (its run-to-run noise is larger than the difference). `onPair`
 * sees each pair as it ends.
 */
export async function crossThreadCost(
  n: number,
  rounds: number,
  warm = 4,
  onPair: (one: CrossRun, across: CrossRun) => void = () => {},
): Promise<[one: CrossRun, across: CrossRun][]> {
  const one = await startServer(1);
  const two = await startServer(2);
  try {
    const a = await openPair(one, 1, false);
    const b = await openPair(two, 2, true);
    for (let i = 0; i < warm; i++) {
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
      onPair(ra, rb);
    }
    return pairs;
  } finally {
    await stopServer(one);
    await stopServer(two);
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
  const pairs = await crossThreadCost(
    Number(process.argv[2] ?? 250_000),
    Number(process.argv[3] ?? 24),
    Number(process.argv[4] ?? 4),
    (a, b) =>
      console.log(
        `1w ${Math.round(a.perSecond)} ${a.cpu.toFixed(3)} [${a.threads}] | across ${Math.round(b.perSecond)} ${b.cpu.toFixed(3)} [${b.threads}] | ratio ${(b.cpu / a.cpu).toFixed(2)}`,
      ),
  );
  const r = crossRatios(pairs);
  console.log(
    `ratio of totals ${r.total.toFixed(3)}, median of pairs ${r.median.toFixed(3)}; sorted ${r.sorted.map((x) => x.toFixed(2)).join(' ')}`,
  );
}
