// `npm run bench -- cluster` (issue 9): two nodes on one real redis-server, next to the single-node figures of the
// same run. Point-to-point (1 → 1, 64 B, pipelined) with both devices on one node and with the receiver on the
// other node; fan-out (1 → 100 CHILDS) with the children on the sender's node and on the other node. Cross-node
// deliveries go through Redis (one Lua call each: directory lookup and XADD to the other node's inbox).
// RAW channel (one-way MB/s and 64-byte ping-pong) with both devices on one node and across nodes (a direct TCP
// stream between the nodes). Knobs: BENCH_RUNS (3), BENCH_CLUSTER_P2P (100000 messages), BENCH_CLUSTER_FANOUT (1000
// messages to 100), BENCH_RAW_BYTES (bytes per one-way run), BENCH_RAW_ROUNDS (round trips).

import { mkdirSync, writeFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startRedis } from '../test/helpers/redis.ts';
import { PAYLOAD, pipeline, register } from './load.ts';
import { link, measure as measureRaw } from './raw.ts';
import { adminApi, cpuMicros, type Server, startServer, stopServer } from './server.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const env = process.env;
const RUNS = Number(env.BENCH_RUNS ?? 3);
const P2P = Number(env.BENCH_CLUSTER_P2P ?? 100_000);
const FANOUT = Number(env.BENCH_CLUSTER_FANOUT ?? 1000);

let seq = 0;

const api = async (s: Server, method: string, path: string, body?: unknown): Promise<Record<string, unknown>> =>
  ((await adminApi(s, method, path, body)) ?? {}) as Record<string, unknown>;

export async function newAccount(s: Server): Promise<{ key: string; path: string }> {
  const email = `cb${++seq}@bench.example`;
  const r = await api(s, 'POST', '/api/v1/accounts', { email });
  return { key: r.key as string, path: `/api/v1/accounts/${encodeURIComponent(email)}` };
}

interface Rate {
  perSecond: number;
  /** CPU µs per delivery, both nodes together. */
  cpu: number;
}

async function measure(nodes: Server[], run: () => Promise<{ perSecond: number; deliveries: number }>): Promise<Rate> {
  const cpu0 = nodes.reduce((t, n) => t + cpuMicros(n.child.pid!), 0);
  const r = await run();
  const cpu = nodes.reduce((t, n) => t + cpuMicros(n.child.pid!), 0) - cpu0;
  return { perSecond: r.perSecond, cpu: cpu / r.deliveries };
}

async function p2p(from: Server, to: Server, nodes: Server[]): Promise<Rate> {
  const { key } = await newAccount(from);
  const rx = await register(to.port, key, 'RX');
  const tx = await register(from.port, key, 'TX');
  const r = await measure(nodes, () => pipeline(tx, [rx], `TCP:PUSH:${key}:RID:RX:${PAYLOAD}\r\n`, P2P, 1, 4096));
  tx.destroy();
  rx.destroy();
  return r;
}

async function fanout(from: Server, to: Server, nodes: Server[]): Promise<Rate> {
  const { key, path } = await newAccount(from);
  await api(from, 'POST', `${path}/tree/nodes`, { id: 'P', parent: null });
  const kids: Socket[] = [];
  for (let i = 0; i < 100; i++) await api(from, 'POST', `${path}/tree/nodes`, { id: `K${i}`, parent: 'P' });
  for (let i = 0; i < 100; i++) kids.push(await register(to.port, key, `K${i}`));
  const p = await register(from.port, key, 'P');
  const r = await measure(nodes, () => pipeline(p, kids, `TCP:PUSH:${key}:CHILDS:${PAYLOAD}\r\n`, FANOUT, 100, 64));
  p.destroy();
  for (const k of kids) k.destroy();
  return r;
}

interface RawRate {
  mbs: number;
  rtt: number;
}

/** A full-duplex RAW pair, A on `from` and B on `to`: ping-pong median µs, then one-way MB/s A -> B. */
function rawAcross(from: Server, to: Server): Promise<RawRate> {
  return measureRaw(async () => {
    const { key } = await newAccount(from);
    const b = await register(to.port, key, 'RB');
    const a = await register(from.port, key, 'RA');
    await new Promise((r) => setTimeout(r, 100)); // the directory entries are written asynchronously
    await link(key, a, b, 'RB');
    await link(key, b, a, 'RA');
    return [a, b];
  });
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)]!;
const fmt = (rates: Rate[]): string => {
  const ps = rates.map((r) => r.perSecond);
  const n = (x: number): string => Math.round(x).toLocaleString('en-US');
  return `${n(median(ps))} (${n(Math.min(...ps))}–${n(Math.max(...ps))}), ${median(rates.map((r) => r.cpu)).toFixed(2)} µs`;
};

function rawFmt(same: RawRate[], cross: RawRate[], f: (r: RawRate) => number, digits: number): string {
  const m = (xs: RawRate[]): string =>
    median(xs.map(f)).toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
  return `${m(same)} / ${m(cross)}`;
}

export async function clusterBench(): Promise<string> {
  const redis = await startRedis();
  const prefix = `bench${process.pid}:`;
  const cluster = (id: string): Record<string, string> => ({
    P2PC_CLUSTER_REDIS_URL: redis.url,
    P2PC_CLUSTER_PREFIX: prefix,
    P2PC_CLUSTER_NODE_ID: id,
  });
  const n1 = await startServer(1, cluster('n1'));
  const n2 = await startServer(1, cluster('n2'));
  const nodes = [n1, n2];
  const rows: Record<string, Rate[]> = {
    'point-to-point msgs/s, both devices on one node': [],
    'point-to-point msgs/s, receiver on the other node': [],
    'fan-out deliveries/s (1 → 100 CHILDS), children on the sender’s node': [],
    'fan-out deliveries/s (1 → 100 CHILDS), children on the other node': [],
  };
  const cols = Object.values(rows);
  const rawSame: RawRate[] = [];
  const rawCross: RawRate[] = [];
  try {
    for (let i = 0; i < RUNS; i++) {
      cols[0]!.push(await p2p(n1, n1, nodes));
      cols[1]!.push(await p2p(n1, n2, nodes));
      cols[2]!.push(await fanout(n1, n1, nodes));
      cols[3]!.push(await fanout(n1, n2, nodes));
      rawSame.push(await rawAcross(n1, n1));
      rawCross.push(await rawAcross(n1, n2));
    }
  } finally {
    await stopServer(n1);
    await stopServer(n2);
    await redis.stop();
  }
  const lines = [
    `## Cluster mode: 2 nodes (1 worker each) on one redis-server, loader on the same machine (median of ${RUNS})`,
    '',
    '| workload | rate (min–max), CPU per delivery (both nodes) |',
    '|---|---|',
    ...Object.entries(rows).map(([k, v]) => `| ${k} | ${fmt(v)} |`),
    `| RAW one-way MB/s: both devices on one node / across nodes | ${rawFmt(rawSame, rawCross, (r) => r.mbs, 0)} |`,
    `| RAW 64 B ping-pong median µs: one node / across nodes | ${rawFmt(rawSame, rawCross, (r) => r.rtt, 0)} |`,
    '',
  ];
  const report = lines.join('\n');
  mkdirSync(join(ROOT, 'bench/results'), { recursive: true });
  writeFileSync(join(ROOT, 'bench/results/cluster-latest.md'), `${report}\n`);
  return report;
}
