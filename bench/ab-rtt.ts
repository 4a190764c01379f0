// Round trips of several P2Pcluster variants side by side, with NATS as the reference (AB_RTT_NATS=0 leaves it out):
// `node bench/ab-rtt.ts [rounds] [runs] [chunk] <variant> [<variant> ...]`, a variant being
// `name=<source tree>[,<node flags>][,<NAME=value> ...]`, e.g.
//   node bench/ab-rtt.ts 5000 5 250 base=/work/main stgc=/work/exp,--single-threaded-gc
// Every run starts a fresh server per variant (one shard), warms each ping-pong with RTT_WARMUP round trips, then lets
// them take turns every `chunk` round trips (bench/peers/flow.ts interleavedRoundTrips), so every variant meets the
// same minutes of this machine. Prints p50/p99/p99.9 and round trips over 1 ms per run, then the medians.

import { percentile } from './load.ts';
import { interleavedRoundTrips, type PingPong } from './peers/flow.ts';
import { type Broker, startBroker, stopAll } from './peers/procs.ts';
import { rawDriver } from './peers/raw.ts';
import type { Server } from './server.ts';

interface Variant {
  name: string;
  tree: string;
  nodeArgs: string;
  env: Record<string, string>;
}

const [rounds, runs, chunk] = [5000, 3, 250].map((d, i) => Number(process.argv[2 + i] ?? d));
const variants: Variant[] = process.argv.slice(5).map((spec) => {
  const eq = spec.indexOf('=');
  const name = spec.slice(0, Math.max(eq, 0));
  const [tree = '', ...parts] = spec.slice(eq + 1).split(',');
  if (name === '' || tree === '') throw new Error(`bad variant ${spec} (name=<tree>[,flags][,K=V])`);
  const env: Record<string, string> = {};
  const flags: string[] = [];
  for (const p of parts) {
    const eq = p.indexOf('=');
    if (p.startsWith('--') || eq < 0) flags.push(p);
    else env[p.slice(0, eq)] = p.slice(eq + 1);
  }
  return { name, tree, nodeArgs: flags.join(' '), env };
});
if (variants.length === 0)
  throw new Error('usage: node bench/ab-rtt.ts [rounds] [runs] [chunk] name=<tree>[,flags] ...');

type ServerModule = {
  startServer(workers: number, extra: Record<string, string>): Promise<Server>;
  stopServer(s: Server): Promise<void>;
};

const rows = new Map<string, number[][]>();
try {
  for (let r = 0; r < runs; r++) {
    const names: string[] = [];
    const pings: PingPong[] = [];
    const stops: (() => Promise<void>)[] = [];
    try {
      for (const v of variants) {
        const m = (await import(`${v.tree}/bench/server.ts`)) as ServerModule;
        process.env.BENCH_NODE_ARGS = v.nodeArgs; // read by startServer when it spawns the server
        const s = await m.startServer(1, v.env);
        stops.push(() => m.stopServer(s));
        pings.push(await rawDriver('P2Pcluster', s.port, s.key, () => Promise.reject(new Error('no'))).pingPong());
        names.push(v.name);
      }
      if (process.env.AB_RTT_NATS !== '0') {
        const b: Broker = await startBroker('NATS', 0);
        stops.push(() => b.stop());
        pings.push(await rawDriver('NATS', b.port, b.key, b.newAccount).pingPong());
        names.push('NATS');
      }
      const times = await interleavedRoundTrips(pings, rounds, chunk);
      const line = times.map((t, i) => {
        t.sort((x, y) => x - y);
        const row = [50, 99, 99.9].map((p) => Math.round(percentile(t, p)));
        row.push(t.filter((x) => x > 1000).length);
        const name = names[i]!;
        rows.set(name, [...(rows.get(name) ?? []), row]);
        return `${name} ${row.slice(0, 3).join('/')} >1ms ${row[3]}`;
      });
      console.log(`${r + 1}: ${line.join(' | ')}`);
    } finally {
      for (const p of pings) p.close();
      for (const stop of stops) await stop();
    }
  }
} finally {
  await stopAll();
}
const med = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
for (const [name, rs] of rows) {
  const col = (j: number): number[] => rs.map((x) => x[j]!);
  console.log(
    `${name.padEnd(10)} p50 ${med(col(0))}  p99 ${med(col(1))} [${col(1).join(', ')}]  p99.9 ${med(col(2))}  >1ms ${med(col(3))}`,
  );
}
