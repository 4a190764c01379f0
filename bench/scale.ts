// Throughput across shards, for machines with cores to spare: `node bench/scale.ts [workers] [loaders] [pairs]
// [messages]` starts a server with `workers` shards and `loaders` loader processes, each with `pairs` independent
// device pairs (a sender pipelining `messages` RID pushes of 64 bytes to its receiver, window 16,384, as `npm run
// bench`), all at once. The kernel spreads the connections over the shards (reusePort), so with W shards about
// (W − 1)/W of the pairs cross shards, as devices of one account would. Prints one JSON line: aggregate deliveries/s,
// broker CPU µs per delivery (all threads, and per thread), how many pairs crossed shards.
//
// A Node loader drives about one core; to see shards scale, give the loaders cores of their own and as many as the
// shards need: SCALE_SERVER_CPUS and SCALE_LOADER_CPUS (taskset lists, e.g. "0-7" and "8-15") pin the server's and the
// loaders' threads. On the project's 2-core box there is nothing to spare (docs/performance.md, "Scaling model").

import { execFileSync, fork } from 'node:child_process';
import { once } from 'node:events';
import type { Socket } from 'node:net';
import { PAYLOAD, pipeline, register } from './load.ts';
import { cpuPerThread, cpuTotal, shardsOf, startServer, stopServer, threadCpuMicros } from './server.ts';

const WINDOW = 16_384;

interface Ready {
  ids: [sender: string, receiver: string][];
}
interface Done {
  deliveries: number;
  seconds: number;
}

/** Pins every thread of a process to a CPU list (taskset), when one is given. */
function pin(pid: number, cpus: string | undefined): void {
  if (cpus !== undefined && cpus !== '')
    execFileSync('taskset', ['-a', '-p', '-c', cpus, String(pid)], { stdio: 'ignore' });
}

/** A loader process: registers its pairs, reports ready, runs them all when told, reports what arrived. */
async function loader(port: number, key: string, pairs: number, messages: number): Promise<void> {
  const socks: Socket[] = [];
  const runs: { s: Socket; r: Socket; rid: string }[] = [];
  const ids: [string, string][] = [];
  for (let i = 0; i < pairs; i++) {
    const sid = `SC${process.pid}S${i}`;
    const rid = `SC${process.pid}R${i}`;
    const r = await register(port, key, rid);
    const s = await register(port, key, sid);
    socks.push(r, s);
    runs.push({ s, r, rid });
    ids.push([sid, rid]);
  }
  process.send!({ ids } satisfies Ready);
  await once(process, 'message');
  const t0 = performance.now();
  const results = await Promise.all(
    runs.map(({ s, r, rid }) => pipeline(s, [r], `TCP:PUSH:${key}:RID:${rid}:${PAYLOAD}\r\n`, messages, 1, WINDOW)),
  );
  const done: Done = {
    deliveries: results.reduce((a, x) => a + x.deliveries, 0),
    seconds: (performance.now() - t0) / 1000,
  };
  process.send!(done);
  for (const x of socks) x.destroy();
  process.disconnect();
}

async function main(): Promise<void> {
  const [workers, loaders, pairs, messages] = [2, 1, 4, 500_000].map((d, i) => Number(process.argv[2 + i] ?? d));
  const s = await startServer(workers!);
  pin(s.child.pid!, process.env.SCALE_SERVER_CPUS);
  try {
    const children = Array.from({ length: loaders! }, () =>
      fork(new URL(import.meta.url).pathname, ['--loader', String(s.port), s.key, String(pairs), String(messages)]),
    );
    for (const c of children) pin(c.pid!, process.env.SCALE_LOADER_CPUS);
    const ready = (await Promise.all(children.map((c) => once(c, 'message')))).map(([m]) => m as Ready);
    const where = await shardsOf(s);
    const pairIds = ready.flatMap((r) => r.ids);
    const across = pairIds.filter(([a, b]) => where.get(a) !== where.get(b)).length;
    const th0 = threadCpuMicros(s.child.pid!);
    const finished = children.map((c) => once(c, 'message'));
    for (const c of children) c.send('go');
    const done = (await Promise.all(finished)).map(([m]) => m as Done);
    const th1 = threadCpuMicros(s.child.pid!);
    const deliveries = done.reduce((a, d) => a + d.deliveries, 0);
    const seconds = Math.max(...done.map((d) => d.seconds));
    console.log(
      JSON.stringify({
        workers,
        loaders,
        pairs: pairIds.length,
        across,
        rate: Math.round(deliveries / seconds),
        cpu: +(cpuTotal(th0, th1) / deliveries).toFixed(3),
        threads: Object.fromEntries(cpuPerThread(th0, th1, deliveries, 3)),
      }),
    );
  } finally {
    await stopServer(s);
  }
}

if (process.argv[2] === '--loader') {
  const [port, key, pairs, messages] = process.argv.slice(3);
  await loader(Number(port), key!, Number(pairs), Number(messages));
} else {
  await main();
}
