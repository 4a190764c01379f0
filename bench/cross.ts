// The cross-thread bar of issue 4, measured as an A/B: `node bench/cross.ts [messages] [rounds]` starts a one-worker
// and a two-worker server side by side and alternates a pipelined p2p run on each (the two-worker one with the sender
// on shard 0 and the receiver on shard 1), one warm-up pair first; prints broker CPU µs per delivery of both, split by
// thread, and the ratio (two workers across shards ÷ one worker) of every pair, then all ratios sorted.
// `npm run bench` runs the same (crossThreadCost) and prints its summary under the end-to-end table.

import { fileURLToPath } from 'node:url';
import { PAYLOAD, pipeline } from './load.ts';
import { cpuMicros, cpuPerThread, onShard, type Server, startServer, stopServer, threadCpuMicros } from './server.ts';

/** One p2p run: msgs/s, broker CPU µs per delivery, and the threads' share of it. */
export interface CrossRun {
  perSecond: number;
  cpu: number;
  threads: string;
}

async function run(s: Server, workers: number, across: boolean, n: number): Promise<CrossRun> {
  const [receiver, rid] = await onShard(s, workers, 'R', across ? 1 : 0);
  const [sender] = await onShard(s, workers, 'S', 0);
  const line = `TCP:PUSH:${s.key}:RID:${rid}:${PAYLOAD}\r\n`;
  const c0 = cpuMicros(s.child.pid!);
  const t0 = threadCpuMicros(s.child.pid!);
  const r = await pipeline(sender, [receiver], line, n, 1, 16384);
  const c1 = cpuMicros(s.child.pid!);
  const t1 = threadCpuMicros(s.child.pid!);
  const threads = cpuPerThread(t0, t1, r.deliveries, 3)
    .map(([k, v]) => `${k} ${v}`)
    .join(', ');
  sender.destroy();
  receiver.destroy();
  return { perSecond: r.perSecond, cpu: (c1 - c0) / r.deliveries, threads };
}

/**
 * `rounds` interleaved pairs (after one unmeasured pair) of `n`-message p2p runs: one worker, then two workers across
 * shards. `onPair` sees each pair as it ends.
 */
export async function crossThreadCost(
  n: number,
  rounds: number,
  onPair: (one: CrossRun, across: CrossRun) => void = () => {},
): Promise<[one: CrossRun, across: CrossRun][]> {
  const one = await startServer(1);
  const two = await startServer(2);
  try {
    await run(one, 1, false, n);
    await run(two, 2, true, n);
    const pairs: [CrossRun, CrossRun][] = [];
    for (let i = 0; i < rounds; i++) {
      const a = await run(one, 1, false, n);
      const b = await run(two, 2, true, n);
      pairs.push([a, b]);
      onPair(a, b);
    }
    return pairs;
  } finally {
    await stopServer(one);
    await stopServer(two);
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const pairs = await crossThreadCost(Number(process.argv[2] ?? 1_000_000), Number(process.argv[3] ?? 6), (a, b) =>
    console.log(
      `1w ${Math.round(a.perSecond)} ${a.cpu.toFixed(3)} [${a.threads}] | across ${Math.round(b.perSecond)} ${b.cpu.toFixed(3)} [${b.threads}] | ratio ${(b.cpu / a.cpu).toFixed(2)}`,
    ),
  );
  console.log(
    'ratios sorted',
    pairs
      .map(([a, b]) => b.cpu / a.cpu)
      .sort((x, y) => x - y)
      .map((x) => x.toFixed(2))
      .join(' '),
  );
}
