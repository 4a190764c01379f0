// `node bench/peers/rtt.ts [rounds] [runs] [chunk]`: round trips only (raw clients, as `bench:peers` measures them),
// P2Pcluster and NATS running side by side on fresh brokers and taking turns every `chunk` round trips (250), with
// the broker CPU per round trip split by thread. For tuning the latency tail without the full suite;
// BENCH_PEERS_SYSTEMS picks the systems (default P2Pcluster,NATS).

import { percentile } from '../load.ts';
import { cpuPerThread, cpuTotal, threadCpuMicros } from '../server.ts';
import { interleavedRoundTrips, type PingPong } from './flow.ts';
import { type Broker, SYSTEMS, type System, startBroker, stopAll } from './procs.ts';
import { rawDriver } from './raw.ts';

const rounds = Number(process.argv[2] ?? 10_000);
const runs = Number(process.argv[3] ?? 3);
const chunk = Number(process.argv[4] ?? 250);
const systems = (process.env.BENCH_PEERS_SYSTEMS ?? 'P2Pcluster,NATS')
  .split(',')
  .map((s) => SYSTEMS.find((x) => x.toLowerCase() === s.trim().toLowerCase()))
  .filter((s): s is System => s !== undefined);

try {
  for (let r = 0; r < runs; r++) {
    const brokers: Broker[] = [];
    const pings: PingPong[] = [];
    try {
      for (const system of systems) {
        const b = await startBroker(system, 0);
        brokers.push(b);
        pings.push(await rawDriver(system, b.port, b.key, b.newAccount).pingPong());
      }
      // CPU per thread summed over each broker's own measured chunks (not its warm-up, the first run of each, nor
      // its idle time during the others' turns).
      const cpu = brokers.map(() => new Map<string, number>());
      const warmed = brokers.map(() => false);
      const times = await interleavedRoundTrips(
        pings.map((p, i) => ({
          run: async (n: number) => {
            const c0 = threadCpuMicros(brokers[i]!.pid);
            const t = await p.run(n);
            if (!warmed[i]) warmed[i] = true;
            else {
              for (const [k, v] of threadCpuMicros(brokers[i]!.pid)) {
                cpu[i]!.set(k, (cpu[i]!.get(k) ?? 0) + v - (c0.get(k) ?? 0));
              }
            }
            return t;
          },
          close: () => p.close(),
        })),
        rounds,
        chunk,
      );
      for (let i = 0; i < brokers.length; i++) {
        const t = times[i]!.sort((x, y) => x - y);
        const n = t.length;
        const threads = cpuPerThread(new Map(), cpu[i]!, n, 0)
          .map(([k, v]) => `${k} ${v}`)
          .join(', ');
        const total = cpuTotal(new Map(), cpu[i]!) / n;
        const [p50, p99, p999] = [50, 99, 99.9].map((p) => Math.round(percentile(t, p)));
        const slow = t.filter((x) => x > 1000).length;
        console.log(
          `${r + 1} ${brokers[i]!.system.padEnd(10)} p50 ${p50} p99 ${p99} p99.9 ${p999} >1ms ${slow}  CPU µs/round trip ${total.toFixed(0)} (${threads})`,
        );
      }
    } finally {
      for (const p of pings) p.close();
      for (const b of brokers) await b.stop();
    }
  }
} finally {
  await stopAll();
}
