// `node bench/peers/rtt.ts [rounds] [runs]`: round trips only, P2Pcluster and NATS interleaved on fresh brokers (raw
// clients, as `bench:peers` measures them), with the broker CPU per round trip split by thread. For tuning the
// latency tail without the full suite; BENCH_PEERS_SYSTEMS picks the systems (default P2Pcluster,NATS).

import { percentile } from '../load.ts';
import { cpuPerThread, threadCpuMicros } from '../server.ts';
import { type Broker, SYSTEMS, type System, startBroker, stopAll } from './procs.ts';
import { rawDriver } from './raw.ts';

const rounds = Number(process.argv[2] ?? 10_000);
const runs = Number(process.argv[3] ?? 3);
const systems = (process.env.BENCH_PEERS_SYSTEMS ?? 'P2Pcluster,NATS')
  .split(',')
  .map((s) => SYSTEMS.find((x) => x.toLowerCase() === s.trim().toLowerCase()))
  .filter((s): s is System => s !== undefined);

try {
  for (let r = 0; r < runs; r++) {
    for (const system of systems) {
      const b: Broker = await startBroker(system, 0);
      try {
        const d = rawDriver(system, b.port, b.key, b.newAccount);
        const c0 = threadCpuMicros(b.pid);
        const t = (await d.rtt(rounds)).sort((x, y) => x - y);
        const c1 = threadCpuMicros(b.pid);
        const threads = cpuPerThread(c0, c1, rounds + 500, 0)
          .map(([k, v]) => `${k} ${v}`)
          .join(', ');
        const total = [...c1].reduce((a, [k, v]) => a + v - (c0.get(k) ?? 0), 0) / (rounds + 500);
        const [p50, p99, p999] = [50, 99, 99.9].map((p) => Math.round(percentile(t, p)));
        const slow = t.filter((x) => x > 1000).length;
        console.log(
          `${r + 1} ${system.padEnd(10)} p50 ${p50} p99 ${p99} p99.9 ${p999} >1ms ${slow}  CPU µs/round trip ${total.toFixed(0)} (${threads})`,
        );
      } finally {
        await b.stop();
      }
    }
  }
} finally {
  await stopAll();
}
