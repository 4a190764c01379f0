// Profiles the server under one workload: `node bench/profile.ts [p2p|across|fanout|rtt|conns|cluster] [workers]` (across:
// sender on shard 0, receiver on shard 1; cluster: two nodes on one redis-server, pushes from a device on the first to a
// device on the second, both nodes profiled).
// Starts the server with --cpu-prof, runs the load, stops it, and prints the top functions by self time
// for every thread's profile. Profiles stay in bench/results/profiles/ for flame-graph tools.

import { mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SqliteStore } from '../src/store/sqlite.ts';
import { startRedis } from '../test/helpers/redis.ts';
import { newAccount } from './cluster.ts';
import { PAYLOAD, pingPong, pipeline, register } from './load.ts';
import { cpuMicros, onShard, startServer, stopServer } from './server.ts';

const kind = process.argv[2] ?? 'p2p';
const workers = Number(process.argv[3] ?? 1);
const dir = fileURLToPath(new URL('./results/profiles', import.meta.url));
rmSync(dir, { recursive: true, force: true });
mkdirSync(dir, { recursive: true });
process.env.BENCH_NODE_ARGS = `--cpu-prof --cpu-prof-dir=${dir}`;
const redis = kind === 'cluster' ? await startRedis() : null;
const clusterEnv = (id: string): Record<string, string> =>
  redis === null
    ? {}
    : { P2PC_CLUSTER_REDIS_URL: redis.url, P2PC_CLUSTER_PREFIX: `prof${process.pid}:`, P2PC_CLUSTER_NODE_ID: id };
const s = await startServer(workers, clusterEnv('n1'));
const s2 = redis === null ? null : await startServer(workers, clusterEnv('n2'));
let deliveries = 0;
const cpu0 = cpuMicros(s.child.pid!) + (s2 === null ? 0 : cpuMicros(s2.child.pid!));
if (s2 !== null) {
  const { key } = await newAccount(s);
  const r = await register(s2.port, key, 'PR');
  const snd = await register(s.port, key, 'PS');
  await new Promise((res) => setTimeout(res, 100));
  const res = await pipeline(snd, [r], `TCP:PUSH:${key}:RID:PR:${PAYLOAD}\r\n`, 200_000, 1, 4096);
  deliveries = res.deliveries;
  process.stdout.write(`cross-node p2p ${Math.round(res.perSecond)} msgs/s\n`);
} else if (kind === 'rtt') {
  // One message in flight (as the round-trip benchmarks): the per-turn costs a pipelined load spreads thin.
  const a = await register(s.port, s.key, 'PA');
  const b = await register(s.port, s.key, 'PB');
  await pingPong(a, b, s.key, 'PA', 'PB', 500);
  const t = await pingPong(a, b, s.key, 'PA', 'PB', 30_000);
  deliveries = t.length * 2;
  process.stdout.write(`${t.length} round trips\n`);
} else if (kind === 'conns') {
  // The connection rate: 5,000 connections registering, 100 at a time (as bench:peers).
  const socks = [];
  const t0 = performance.now();
  for (let i = 0; i < 5000; i += 100)
    socks.push(...(await Promise.all(Array.from({ length: 100 }, (_, k) => register(s.port, s.key, `N${i + k}`)))));
  deliveries = socks.length;
  process.stdout.write(`${Math.round(5000 / ((performance.now() - t0) / 1000))} connections/s\n`);
  for (const x of socks) x.destroy();
} else if (kind === 'p2p' || kind === 'across') {
  // across: the receiver on shard 1, the sender on shard 0
  const [r, rid] = await onShard(s, workers, 'PR', kind === 'across' ? 1 : 0);
  const [snd] = await onShard(s, workers, 'PS', 0);
  const res = await pipeline(snd, [r], `TCP:PUSH:${s.key}:RID:${rid}:${PAYLOAD}\r\n`, 1_000_000, 1, 16384);
  deliveries = res.deliveries;
  process.stdout.write(`p2p ${Math.round(res.perSecond)} msgs/s\n`);
} else {
  const store = new SqliteStore(s.dir);
  const key = store.createAccount('fan@profile.example', null, 4).key;
  store.close();
  const rs = await Promise.all(Array.from({ length: 100 }, (_, i) => register(s.port, key, `F${i}`)));
  const snd = await register(s.port, key, 'FS');
  const res = await pipeline(snd, rs, `TCP:PUSH:${key}:FRIENDS:${PAYLOAD}\r\n`, 20_000, 100, 256);
  deliveries = res.deliveries;
  process.stdout.write(`fan-out ${Math.round(res.perSecond)} deliveries/s\n`);
}
const cpu1 = cpuMicros(s.child.pid!) + (s2 === null ? 0 : cpuMicros(s2.child.pid!));
process.stdout.write(`broker CPU ${((cpu1 - cpu0) / deliveries).toFixed(3)} µs per delivery\n`);
await stopServer(s);
if (s2 !== null) await stopServer(s2);
await redis?.stop();

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount: number;
}
for (const f of readdirSync(dir)) {
  const prof = JSON.parse(readFileSync(join(dir, f), 'utf8')) as { nodes: Node[] };
  const self = new Map<string, number>();
  let total = 0;
  for (const n of prof.nodes) {
    const url = n.callFrame.url.replace(/^.*\/(src|node_modules|bench)\//, '$1/');
    const name = `${n.callFrame.functionName || '(anon)'} ${url}:${n.callFrame.lineNumber + 1}`;
    self.set(name, (self.get(name) ?? 0) + n.hitCount);
    total += n.hitCount;
  }
  const top = [...self].sort((a, b) => b[1] - a[1]).slice(0, 25);
  process.stdout.write(`\n${f} (${total} samples)\n`);
  for (const [name, hits] of top) process.stdout.write(`${((100 * hits) / total).toFixed(1).padStart(5)}%  ${name}\n`);
}

// Line-level ticks of the hottest project functions (V8 positionTicks).
interface LineNode extends Node {
  positionTicks?: { line: number; ticks: number }[];
}
for (const f of readdirSync(dir)) {
  const prof = JSON.parse(readFileSync(join(dir, f), 'utf8')) as { nodes: LineNode[] };
  const lines = new Map<string, number>();
  for (const n of prof.nodes) {
    if (!n.callFrame.url.includes('/src/') || !n.positionTicks) continue;
    const file = n.callFrame.url.replace(/^.*\/src\//, 'src/');
    for (const t of n.positionTicks) lines.set(`${file}:${t.line}`, (lines.get(`${file}:${t.line}`) ?? 0) + t.ticks);
  }
  if (lines.size === 0) continue;
  process.stdout.write(`\nhottest lines in ${f}\n`);
  for (const [l, t] of [...lines].sort((a, b) => b[1] - a[1]).slice(0, 25))
    process.stdout.write(`${String(t).padStart(6)}  ${l}\n`);
}
