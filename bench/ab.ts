// One measurement for interleaved A/B comparisons of two source trees: a fresh server, then one workload.
// `node bench/ab.ts p2p|across|fanout|idle|rtt|conns [workers] [count]` prints one JSON line: rate, broker CPU (user +
// system, all threads) per delivery in µs and its user and system parts, deliveries per batch posted between threads;
// for `idle`, RSS bytes per idle registered connection; for `rtt`, round-trip p50/p99/p99.9 in µs over `count` round
// trips (bench/load.ts pingPong, 500 warm-up rounds) after what `bench:peers` does first on the same server (10,000
// idle registrations, then 5,000 connections; AB_PRELUDE=0 skips it), with the shards the two devices landed on; for
// `conns`, connections registered per second (100 at a time) and broker CPU per connection. AB_THREADS=1 adds the CPU
// of each server thread.
// Run the same script from each tree in turn (before, after, before, after) and compare within one session.

import { readFileSync, writeFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { SqliteStore } from '../src/store/sqlite.ts';
import { PAYLOAD, percentile, pingPong, pipeline, register } from './load.ts';
import {
  cpuPerThread,
  onShard,
  rssBytes,
  type Server,
  shardOf,
  startServer,
  stopServer,
  threadCpuMicros,
} from './server.ts';

const kind = process.argv[2] ?? 'p2p';
const workers = Number(process.argv[3] ?? (kind === 'across' ? 2 : 1));
const count = Number(
  process.argv[4] ??
    (kind === 'idle'
      ? 10_000
      : kind === 'fanout'
        ? 20_000
        : kind === 'rtt'
          ? 10_000
          : kind === 'conns'
            ? 5_000
            : 3_000_000),
);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
let seq = 0;

/** User and system CPU (all threads) in µs. */
function cpu(pid: number): [number, number] {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return [(Number(f[11]) * 1e6) / 100, (Number(f[12]) * 1e6) / 100];
}

/** Opens and registers `n` connections, `parallel` at a time, then closes them all. */
async function churn(s: Server, n: number, parallel: number): Promise<void> {
  const socks: Socket[] = [];
  for (let i = 0; i < n; i += parallel) {
    const k = Math.min(parallel, n - i);
    socks.push(...(await Promise.all(Array.from({ length: k }, () => register(s.port, s.key, `C${++seq}`)))));
  }
  for (const x of socks) x.destroy();
}

/** AB_THREADS=1: `{ threads }`, CPU µs per unit of each server thread between two readings; else nothing. */
function threadsField(th0: Map<string, number>, th1: Map<string, number>, units: number, digits: number): object {
  return process.env.AB_THREADS ? { threads: Object.fromEntries(cpuPerThread(th0, th1, units, digits)) } : {};
}

/** Batches the server's threads have posted to each other so far (its Prometheus counter). */
async function batchesPosted(s: Server): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${s.httpPort}/metrics`)).text();
  const m = /^p2pc_cross_thread_batches_total(?:\{[^}]*\})? (\d+)/m.exec(text);
  return m === null ? 0 : Number(m[1]);
}

const s = await startServer(workers);
const pid = s.child.pid!;
try {
  if (kind === 'idle') {
    await sleep(1000);
    const before = rssBytes(pid);
    const socks: Socket[] = [];
    for (let i = 0; i < count; i += 250) {
      const n = Math.min(250, count - i);
      socks.push(...(await Promise.all(Array.from({ length: n }, () => register(s.port, s.key, `I${++seq}`)))));
    }
    await sleep(1000);
    const after = rssBytes(pid);
    process.stdout.write(`${JSON.stringify({ kind, workers, perConn: Math.round((after - before) / count) })}\n`);
    for (const x of socks) x.destroy();
  } else if (kind === 'conns') {
    // As bench:peers measures the connection rate: `count` connections, 100 registering at a time, kept open.
    await sleep(500);
    const [u0, s0] = cpu(pid);
    const th0 = threadCpuMicros(pid, true);
    const t0 = performance.now();
    const socks: Socket[] = [];
    for (let i = 0; i < count; i += 100) {
      const n = Math.min(100, count - i);
      socks.push(...(await Promise.all(Array.from({ length: n }, () => register(s.port, s.key, `N${++seq}`)))));
    }
    const seconds = (performance.now() - t0) / 1000;
    const [u1, s1] = cpu(pid);
    const th1 = threadCpuMicros(pid, true);
    process.stdout.write(
      `${JSON.stringify({
        kind,
        workers,
        perSecond: Math.round(count / seconds),
        cpu: +((u1 - u0 + s1 - s0) / count).toFixed(1),
        ...threadsField(th0, th1, count, 1),
      })}\n`,
    );
    for (const x of socks) x.destroy();
  } else if (kind === 'rtt') {
    if (process.env.AB_PRELUDE !== '0') {
      await sleep(1000);
      await churn(s, 10_000, 100);
      await sleep(800);
      await churn(s, 5_000, 100);
      await sleep(800);
    }
    // AB_RTT_SHARDS=0,1 puts the two devices on those shards; by default they land where the kernel puts them.
    const want = process.env.AB_RTT_SHARDS?.split(',').map(Number);
    const [a, ida] = want ? await onShard(s, workers, 'A', want[0]!) : [await register(s.port, s.key, 'A0'), 'A0'];
    const [b, idb] = want ? await onShard(s, workers, 'B', want[1]!) : [await register(s.port, s.key, 'B0'), 'B0'];
    const shards = workers === 1 ? [0, 0] : [await shardOf(s, ida), await shardOf(s, idb)];
    await pingPong(a, b, s.key, ida, idb, 500);
    const [u0, s0] = cpu(pid);
    const th0 = threadCpuMicros(pid, true);
    const t = await pingPong(a, b, s.key, ida, idb, count);
    const [u1, s1] = cpu(pid);
    const th1 = threadCpuMicros(pid, true);
    const sorted = [...t].sort((x, y) => x - y);
    const slow = t.filter((x) => x > 1000).length;
    process.stdout.write(
      `${JSON.stringify({
        kind,
        workers,
        shards,
        p50: Math.round(percentile(sorted, 50)),
        p99: Math.round(percentile(sorted, 99)),
        p999: Math.round(percentile(sorted, 99.9)),
        over1ms: slow,
        cpu: +((u1 - u0 + s1 - s0) / count).toFixed(1),
        ...threadsField(th0, th1, count, 1),
      })}\n`,
    );
    if (process.env.AB_TRACE) writeFileSync(process.env.AB_TRACE, t.map((x) => x.toFixed(0)).join('\n'));
  } else {
    let sender: Socket;
    let receivers: Socket[];
    let line: string;
    let per = 1;
    let window = 16384;
    if (kind === 'fanout') {
      const store = new SqliteStore(s.dir);
      const key = store.createAccount('fan@ab.example', null, 4).key;
      store.close();
      receivers = [];
      for (let i = 0; i < 100; i++) receivers.push(await register(s.port, key, `F${i}`));
      sender = await register(s.port, key, 'FS');
      line = `TCP:PUSH:${key}:FRIENDS:${PAYLOAD}\r\n`;
      per = 100;
      window = 512; // as bench:peers (writes of 128 lines)
    } else {
      const [r, rid] = await onShard(s, workers, 'R', kind === 'across' ? 1 : 0);
      [sender] = await onShard(s, workers, 'S', 0);
      receivers = [r];
      line = `TCP:PUSH:${s.key}:RID:${rid}:${PAYLOAD}\r\n`;
    }
    // Warm-up (JIT), then the measured run.
    await pipeline(sender, receivers, line, Math.min(100_000, count), per, window);
    const [u0, s0] = cpu(pid);
    const l0 = process.cpuUsage();
    const th0 = threadCpuMicros(pid, true);
    const b0 = await batchesPosted(s);
    const r = await pipeline(sender, receivers, line, count, per, window);
    const [u1, s1] = cpu(pid);
    const l1 = process.cpuUsage(l0);
    const th1 = threadCpuMicros(pid, true);
    const b1 = await batchesPosted(s);
    const d = r.deliveries;
    process.stdout.write(
      `${JSON.stringify({
        kind,
        workers,
        rate: Math.round(r.perSecond),
        cpu: +((u1 - u0 + s1 - s0) / d).toFixed(3),
        user: +((u1 - u0) / d).toFixed(3),
        sys: +((s1 - s0) / d).toFixed(3),
        loader: +((l1.user + l1.system) / d).toFixed(3),
        // deliveries per batch posted between threads
        ...(b1 > b0 ? { perBatch: Math.round(d / (b1 - b0)) } : {}),
        ...threadsField(th0, th1, d, 3),
      })}\n`,
    );
  }
} finally {
  await stopServer(s);
}
