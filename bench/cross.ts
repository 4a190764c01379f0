// The cross-thread bar of issue 4, measured as an A/B: `node bench/cross.ts [messages] [rounds]` starts a one-worker
// and a two-worker server side by side and alternates a pipelined p2p run on each (the two-worker one with the sender
// on shard 0 and the receiver on shard 1), one warm-up pair first; prints broker CPU µs per delivery of both, split by
// thread, and the ratio (two workers across shards ÷ one worker) of every pair, then all ratios sorted.

import { PAYLOAD, pipeline } from './load.ts';
import { cpuMicros, cpuPerThread, onShard, type Server, startServer, stopServer, threadCpuMicros } from './server.ts';

const n = Number(process.argv[2] ?? 1_000_000);
const rounds = Number(process.argv[3] ?? 6);
const one = await startServer(1);
const two = await startServer(2);
/** One p2p run: msgs/s, broker CPU µs per delivery, and the threads' share of it. */
async function run(s: Server, workers: number, across: boolean): Promise<[number, number, string]> {
  const [receiver, rid] = await onShard(s, workers, 'R', across ? 1 : 0);
  const [sender] = await onShard(s, workers, 'S', 0);
  const line = `TCP:PUSH:${s.key}:RID:${rid}:${PAYLOAD}\r\n`;
  const c0 = cpuMicros(s.child.pid!);
  const t0 = threadCpuMicros(s.child.pid!);
  const r = await pipeline(sender, [receiver], line, n, 1, 16384);
  const c1 = cpuMicros(s.child.pid!);
  const t1 = threadCpuMicros(s.child.pid!);
  const th = cpuPerThread(t0, t1, r.deliveries, 3)
    .map(([k, v]) => `${k} ${v}`)
    .join(', ');
  sender.destroy();
  receiver.destroy();
  return [r.perSecond, (c1 - c0) / r.deliveries, th];
}
await run(one, 1, false);
await run(two, 2, true);
const ratios: number[] = [];
for (let i = 0; i < rounds; i++) {
  const a = await run(one, 1, false);
  const b = await run(two, 2, true);
  ratios.push(b[1] / a[1]);
  console.log(
    `1w ${Math.round(a[0])} ${a[1].toFixed(3)} [${a[2]}] | across ${Math.round(b[0])} ${b[1].toFixed(3)} [${b[2]}] | ratio ${(b[1] / a[1]).toFixed(2)}`,
  );
}
console.log(
  'ratios sorted',
  ratios
    .sort((x, y) => x - y)
    .map((x) => x.toFixed(2))
    .join(' '),
);
await stopServer(one);
await stopServer(two);
