// `npm run bench`: micro-benchmarks (tinybench), then the end-to-end load against the real server,
// started as a child process with workers = 1 and workers = N (the throughput workloads run twice unmeasured first,
// so the measured runs see compiled code). Prints a Markdown table and writes it to
// bench/results/latest.md. Never a timed assertion: numbers are for people and docs/performance.md.
//
// Environment knobs: BENCH_RUNS (3), BENCH_P2P (1000000 messages), BENCH_FANOUT (20000 messages to 100),
// BENCH_RTT (5000 round trips), BENCH_IDLE (10000 connections), BENCH_WORKERS ("1,<cores>"), BENCH_MICRO (1),
// BENCH_CROSS_ROUNDS (24 pairs of bursts for the cross-thread cost; 0 skips it), BENCH_CROSS_BURST (250000
// messages), BENCH_CROSS_WARM (32 unmeasured pairs first, on each pair of servers), BENCH_CROSS_SERVERS (3 fresh
// pairs of servers share the rounds), BENCH_COLD_ROUNDS (6 pairs of fresh servers for the cross-thread cost from
// cold), BENCH_COLD_MESSAGES (2000000);
// for the RAW channel rows see bench/raw.ts (BENCH_RAW_BYTES, BENCH_RAW_RUNS, BENCH_RAW_ROUNDS).

import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SqliteStore } from '../src/store/sqlite.ts';
import { coldCost, crossRatios, crossThreadCost } from './cross.ts';
import { countLines, openSocket, PAYLOAD, percentile, pingPong, pipeline, register } from './load.ts';
import { runMicro } from './micro.ts';
import { presenceBench } from './presence.ts';
import { rawBench } from './raw.ts';
import { adminApi, cpuMicros, onShard, rssBytes, type Server, startServer, stopServer } from './server.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const env = process.env;
const RUNS = Number(env.BENCH_RUNS ?? 3);
const P2P = Number(env.BENCH_P2P ?? 1_000_000);
const FANOUT = Number(env.BENCH_FANOUT ?? 20_000);
const RTT = Number(env.BENCH_RTT ?? 5000);
const IDLE = Number(env.BENCH_IDLE ?? 10_000);
const WORKERS = (env.BENCH_WORKERS ?? `1,${availableParallelism()}`).split(',').map(Number);
const CROSS_ROUNDS = Number(env.BENCH_CROSS_ROUNDS ?? 24);
const CROSS_BURST = Number(env.BENCH_CROSS_BURST ?? 250_000);
const CROSS_WARM = Number(env.BENCH_CROSS_WARM ?? 32);
const CROSS_SERVERS = Number(env.BENCH_CROSS_SERVERS ?? 3);
const COLD_ROUNDS = Number(env.BENCH_COLD_ROUNDS ?? 6);
const COLD_MESSAGES = Number(env.BENCH_COLD_MESSAGES ?? 2_000_000);

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
let idSeq = 0;
const freshId = (p: string): string => `${p}${++idSeq}`;

interface Rate {
  perSecond: number;
  /** Broker CPU (all threads) per delivery, µs. */
  cpu: number;
}

/** Point-to-point; with `across`, sender on shard 0 and receiver on shard 1 (else both on shard 0). */
async function p2p(s: Server, across = false, messages = P2P): Promise<Rate> {
  const [receiver, rid] = await onShard(s, 2, 'R', across ? 1 : 0);
  const [sender] = await onShard(s, 2, 'S', 0);
  const line = `TCP:PUSH:${s.key}:RID:${rid}:${PAYLOAD}\r\n`;
  const cpu0 = cpuMicros(s.child.pid!);
  const r = await pipeline(sender, [receiver], line, messages, 1, 16384);
  const cpu = (cpuMicros(s.child.pid!) - cpu0) / r.deliveries;
  sender.destroy();
  receiver.destroy();
  return { perSecond: r.perSecond, cpu };
}

async function fanout(s: Server, messages = FANOUT): Promise<Rate> {
  // A fresh account per run, so FRIENDS is exactly the 100 receivers.
  const store = new SqliteStore(s.dir);
  const key = store.createAccount(`fan${++idSeq}@bench.example`, null, 4).key;
  store.close();
  const receivers = [];
  for (let i = 0; i < 100; i++) receivers.push(await register(s.port, key, freshId('F')));
  const sender = await register(s.port, key, freshId('FS'));
  const line = `TCP:PUSH:${key}:FRIENDS:${PAYLOAD}\r\n`;
  const cpu0 = cpuMicros(s.child.pid!);
  const r = await pipeline(sender, receivers, line, messages, 100, 256);
  const cpu = (cpuMicros(s.child.pid!) - cpu0) / r.deliveries;
  sender.destroy();
  for (const x of receivers) x.destroy();
  return { perSecond: r.perSecond, cpu };
}

async function rtt(s: Server): Promise<{ p50: number; p99: number }> {
  const ida = freshId('A');
  const idb = freshId('B');
  const a = await register(s.port, s.key, ida);
  const b = await register(s.port, s.key, idb);
  await pingPong(a, b, s.key, ida, idb, 500); // warm-up
  const times = (await pingPong(a, b, s.key, ida, idb, RTT)).sort((x, y) => x - y);
  a.destroy();
  b.destroy();
  return { p50: percentile(times, 50), p99: percentile(times, 99) };
}

async function idleRss(s: Server): Promise<number> {
  await sleep(1000);
  const before = rssBytes(s.child.pid!);
  const socks = [];
  for (let i = 0; i < IDLE; i += 250) {
    const n = Math.min(250, IDLE - i);
    socks.push(...(await Promise.all(Array.from({ length: n }, () => register(s.port, s.key, freshId('I'))))));
  }
  await sleep(1000);
  const after = rssBytes(s.child.pid!);
  for (const x of socks) x.destroy();
  await sleep(300);
  return (after - before) / IDLE;
}

const api = adminApi;

/** Runs fn over items with at most `n` calls in flight. */
async function inParallel<T>(items: T[], n: number, fn: (x: T) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: n }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}

async function newAccount(s: Server): Promise<{ path: string; key: string }> {
  const email = `topo${++idSeq}@bench.example`;
  const r = (await api(s, 'POST', '/api/v1/accounts', { email })) as { key: string };
  return { path: `/api/v1/accounts/${encodeURIComponent(email)}`, key: r.key };
}

/** 1 → 1,000 through CHILDS (a parent with 1,000 children) or RO (a router of 1,001 members). */
async function topoFanout(s: Server, kind: 'CHILDS' | 'RO'): Promise<number> {
  const { path, key } = await newAccount(s);
  const ids = Array.from({ length: 1000 }, (_, i) => `M${i}`);
  if (kind === 'CHILDS') {
    await api(s, 'POST', `${path}/tree/nodes`, { id: 'P' });
    await inParallel(ids, 32, (id) => api(s, 'POST', `${path}/tree/nodes`, { id, parent: 'P' }));
  } else {
    await api(s, 'POST', `${path}/routers`, { name: 'R' });
    await inParallel(['P', ...ids], 32, (id) => api(s, 'PUT', `${path}/routers/R/members/${id}`));
  }
  const members = [];
  for (let i = 0; i < ids.length; i += 250) {
    members.push(...(await Promise.all(ids.slice(i, i + 250).map((id) => register(s.port, key, id)))));
  }
  const sender = await register(s.port, key, 'P');
  const line = `TCP:PUSH:${key}:${kind === 'CHILDS' ? 'CHILDS' : 'RO:R'}:${PAYLOAD}\r\n`;
  const r = await pipeline(sender, members, line, Math.max(100, Math.floor(FANOUT / 10)), 1000, 32);
  sender.destroy();
  for (const m of members) m.destroy();
  return r.perSecond;
}

/** Time for a topology change to be applied on every shard, with 10,000 live devices under the moved node. */
async function topoChange(s: Server): Promise<{ move: number; alias: number; member: number }> {
  const { path, key } = await newAccount(s);
  const n = Math.min(IDLE, 10_000);
  const ids = Array.from({ length: n }, (_, i) => `D${i}`);
  await api(s, 'POST', `${path}/tree/nodes`, { id: 'A' });
  await api(s, 'POST', `${path}/tree/nodes`, { id: 'B' });
  await api(s, 'POST', `${path}/routers`, { name: 'R' });
  await inParallel(ids, 64, (id) => api(s, 'POST', `${path}/tree/nodes`, { id, parent: 'A' }));
  const socks = [];
  for (let i = 0; i < ids.length; i += 250) {
    socks.push(...(await Promise.all(ids.slice(i, i + 250).map((id) => register(s.port, key, id)))));
  }
  const timeIt = async (fn: (i: number) => Promise<unknown>): Promise<number> => {
    const t: number[] = [];
    for (let i = 0; i < 20; i++) {
      const t0 = performance.now();
      await fn(i);
      t.push(performance.now() - t0);
    }
    return median(t);
  };
  const move = await timeIt((i) => api(s, 'PATCH', `${path}/tree/nodes/A`, { parent: i % 2 === 0 ? 'B' : null }));
  const alias = await timeIt((i) => api(s, 'PUT', `${path}/aliases/X`, { target: ids[i]! }));
  const member = await timeIt((i) => api(s, i % 2 === 0 ? 'PUT' : 'DELETE', `${path}/routers/R/members/D1`));
  for (const x of socks) x.destroy();
  return { move, alias, member };
}

/** §5 Hold: held pushes per second (pipelined, durable before each reply) and the backlog delivery rate. */
async function holdBench(s: Server): Promise<{ held: number; backlog: number }> {
  const n = Number(env.BENCH_HOLD ?? 10_000);
  const id = freshId('H');
  const gone = await register(s.port, s.key, id);
  gone.destroy();
  await sleep(200);
  const sender = await register(s.port, s.key, freshId('HS'));
  const line = Buffer.from(`TCP:PUSH:${s.key}:RID:${id}:${PAYLOAD}\r\n`.repeat(100), 'latin1');
  const t0 = performance.now();
  await new Promise<void>((resolve, reject) => {
    let replies = 0;
    let sent = 0;
    const pump = (): void => {
      while (sent < n && sent - replies < 2000) {
        sender.write(line);
        sent += 100;
      }
    };
    sender.on('data', (b: Buffer) => {
      if (b.indexOf('REM_ID') >= 0 || b.indexOf('FAIL') >= 0) reject(new Error(b.toString('latin1').slice(0, 100)));
      replies += countLines(b);
      if (replies >= n) resolve();
      else pump();
    });
    pump();
  });
  const held = n / ((performance.now() - t0) / 1000);
  sender.destroy();
  const back = await openSocket(s.port);
  const t1 = performance.now();
  await new Promise<void>((resolve) => {
    let lines = 0;
    back.on('data', (b: Buffer) => {
      lines += countLines(b);
      if (lines >= n + 1) resolve();
    });
    back.write(`TCP:ID:${s.key}:${id}\r\n`);
  });
  const backlog = n / ((performance.now() - t1) / 1000);
  back.destroy();
  return { held, backlog };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor((s.length - 1) / 2)]!;
}

const fmtInt = (n: number): string => Math.round(n).toLocaleString('en-US');
const range = (xs: number[]): string => `${fmtInt(Math.min(...xs))}–${fmtInt(Math.max(...xs))}`;

async function endToEnd(): Promise<string> {
  const rows: Record<string, string[]> = {
    'point-to-point msgs/s (1 → 1, 64 B, pipelined, same shard)': [],
    'point-to-point msgs/s, sender and receiver on different shards': [],
    'fan-out deliveries/s (1 → 100 FRIENDS)': [],
    'broker CPU per delivery: p2p same shard / p2p across shards / fan-out (µs, all threads)': [],
    'round-trip latency p50 / p99 (µs)': [],
    [`RSS per idle registered connection at ${fmtInt(IDLE)} (bytes)`]: [],
    'CHILDS fan-out deliveries/s (1 → 1,000 children)': [],
    'RO fan-out deliveries/s (1 → 1,000 router members)': [],
    'topology change applied on every shard, 10,000 live devices: move subtree / re-point alias / router member (ms)':
      [],
    'held pushes/s (durable before each [OK:DATA_HELD]) / backlog of 10,000 delivered on reconnect (msgs/s)': [],
    'presence events/s to 1,000 watchers (8 devices flapping) / broker CPU per event (µs)': [],
    'RAW channel one-way MB/s: same shard / across shards / direct Node socket pipe (ratio to the pipe)': [],
    'RAW channel 64 B ping-pong median µs: same shard / across shards / direct Node socket pipe': [],
  };
  const cols = Object.values(rows);
  for (const workers of WORKERS) {
    // Memory first, on a fresh server, so earlier load does not pre-grow the heap it is measured against.
    const fresh = await startServer(workers);
    let mem: number;
    try {
      mem = await idleRss(fresh);
    } finally {
      await stopServer(fresh);
    }
    const s = await startServer(workers);
    try {
      const p: Rate[] = [];
      const f: Rate[] = [];
      const x: Rate[] = [];
      // Unmeasured passes first, as long as the measured ones: the measured runs see compiled code, as a long-running
      // broker does (a shard's per-batch code is still being optimized a few million messages in).
      for (let i = 0; i < 2; i++) {
        await p2p(s, false);
        if (workers > 1) await p2p(s, true);
        await fanout(s);
      }
      for (let i = 0; i < RUNS; i++) {
        p.push(await p2p(s));
        if (workers > 1) x.push(await p2p(s, true));
        f.push(await fanout(s));
      }
      const l = await rtt(s);
      const childs = await topoFanout(s, 'CHILDS');
      const ro = await topoFanout(s, 'RO');
      const change = await topoChange(s);
      const hold = await holdBench(s);
      const presence = await presenceBench(s, (await newAccount(s)).key);
      const raw = await rawBench(s);
      const pr = p.map((x) => x.perSecond);
      const fr = f.map((x) => x.perSecond);
      const xr = x.map((r) => r.perSecond);
      cols[0]!.push(`${fmtInt(median(pr))} (${range(pr)})`);
      cols[1]!.push(x.length === 0 ? '—' : `${fmtInt(median(xr))} (${range(xr)})`);
      cols[2]!.push(`${fmtInt(median(fr))} (${range(fr)})`);
      const cpuX = x.length === 0 ? '—' : median(x.map((r) => r.cpu)).toFixed(2);
      cols[3]!.push(`${median(p.map((r) => r.cpu)).toFixed(2)} / ${cpuX} / ${median(f.map((r) => r.cpu)).toFixed(2)}`);
      cols[4]!.push(`${fmtInt(l.p50)} / ${fmtInt(l.p99)}`);
      cols[5]!.push(fmtInt(mem));
      cols[6]!.push(fmtInt(childs));
      cols[7]!.push(fmtInt(ro));
      cols[8]!.push(`${change.move.toFixed(2)} / ${change.alias.toFixed(2)} / ${change.member.toFixed(2)}`);
      const vsPipe = (mbs: number): string =>
        Number.isNaN(mbs) ? '—' : `${fmtInt(mbs)} (${Math.round((100 * mbs) / raw.direct)} %)`;
      cols[9]!.push(`${fmtInt(hold.held)} / ${fmtInt(hold.backlog)}`);
      cols[10]!.push(`${fmtInt(presence.perSecond)} / ${presence.cpu.toFixed(2)}`);
      cols[11]!.push(`${vsPipe(raw.oneWaySame)} / ${vsPipe(raw.oneWayCross)} / ${fmtInt(raw.direct)}`);
      const us = (x: number): string => (Number.isNaN(x) ? '—' : fmtInt(x));
      cols[12]!.push(`${us(raw.rttSame)} / ${us(raw.rttCross)} / ${us(raw.rttDirect)}`);
      process.stderr.write(`workers=${workers} done\n`);
    } finally {
      await stopServer(s);
    }
  }
  const header = `| workload | ${WORKERS.map((w) => `workers = ${w}`).join(' | ')} |`;
  const sep = `|---|${WORKERS.map(() => '---').join('|')}|`;
  const body = Object.entries(rows).map(([k, v]) => `| ${k} | ${v.join(' | ')} |`);
  return [header, sep, ...body].join('\n');
}

/**
 * One worker against two with sender and receiver on different shards, in alternating bursts on two servers side by
 * side (bench/cross.ts): this box's run-to-run noise is larger than the difference, so both sides meet the same minutes;
 * several fresh pairs of servers, because each server process keeps its own bias for as long as it runs.
 */
async function crossThread(): Promise<string> {
  const opts = { warm: CROSS_WARM, servers: CROSS_SERVERS };
  const pairs = await crossThreadCost(CROSS_BURST, CROSS_ROUNDS, opts);
  const control = crossRatios(await crossThreadCost(CROSS_BURST, CROSS_ROUNDS, { ...opts, control: true }));
  const spreadPairs = await crossThreadCost(CROSS_BURST, CROSS_ROUNDS, {
    ...opts,
    placement: 'spread',
    devicePairs: 4,
  });
  const spread = crossRatios(spreadPairs);
  const coldPairs = await coldCost(COLD_MESSAGES, COLD_ROUNDS);
  const cold = crossRatios(coldPairs);
  const one = pairs.map(([a]) => a.cpu);
  const across = pairs.map(([, b]) => b.cpu);
  const r = crossRatios(pairs);
  const us = (xs: number[]): string =>
    `${median(xs).toFixed(3)} (${Math.min(...xs).toFixed(3)}–${Math.max(...xs).toFixed(3)})`;
  return [
    `Broker CPU µs per p2p delivery (all threads), ${CROSS_ROUNDS} pairs of bursts of ${fmtInt(CROSS_BURST)} messages`,
    `on connected devices, over ${CROSS_SERVERS} pairs of servers, each after ${CROSS_WARM} unmeasured pairs: one worker ${us(one)}; two workers, sender on shard 0 and receiver`,
    `on shard 1, ${us(across)}. Two workers across ÷ one worker: **${r.total.toFixed(2)}×** (summed CPU; median of the`,
    `pairs' ratios ${r.median.toFixed(2)}, quartiles ${r.sorted[Math.floor(r.sorted.length / 4)]!.toFixed(2)}–${r.sorted[Math.floor((3 * r.sorted.length) / 4)]!.toFixed(2)}).`,
    `Control, the same method with one worker on both sides (should read 1.00; how far it is off is this run's noise):`,
    `**${control.total.toFixed(2)}×** (median of the pairs' ratios ${control.median.toFixed(2)}).`,
    `Devices spread over both shards as a deployment has them: four senders, each with its receiver, on each server,`,
    `wherever the kernel's reusePort hash put them (some pairs cross, some do not; bursts shared among the four): one`,
    `worker ${us(spreadPairs.map(([a]) => a.cpu))}, two workers ${us(spreadPairs.map(([, b]) => b.cpu))}: **${spread.total.toFixed(2)}×** (median of the pairs' ratios ${spread.median.toFixed(2)}).`,
    `From cold, the same four pairs on ${COLD_ROUNDS} fresh pairs of servers, the first ${fmtInt(COLD_MESSAGES)} messages after`,
    `registration (V8 compiling the hot code in each shard's isolate included): one worker ${us(coldPairs.map(([a]) => a.cpu))},`,
    `two workers ${us(coldPairs.map(([, b]) => b.cpu))}: **${cold.total.toFixed(2)}×** (median of the pairs' ratios ${cold.median.toFixed(2)}).`,
  ].join('\n');
}

function describeMachine(): string {
  let commit = 'unknown';
  try {
    commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT }).toString().trim();
  } catch {}
  return `commit ${commit}, Node ${process.version}, ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${new Date().toISOString()}`;
}

if (process.argv[2] === 'cluster') {
  // `npm run bench -- cluster`: the cluster-mode table only (bench/cluster.ts).
  const { clusterBench } = await import('./cluster.ts');
  process.stdout.write(`# P2Pcluster cluster benchmark\n\n${describeMachine()}\n\n${await clusterBench()}\n`);
  process.exit(0);
}

const parts: string[] = [`# P2Pcluster benchmark\n\n${describeMachine()}\n`];
if (env.BENCH_MICRO !== '0') parts.push(`## Micro-benchmarks\n\n${await runMicro()}\n`);
parts.push(
  `## End to end (loader on the same machine, median of ${RUNS} runs, min–max in brackets)\n\n${await endToEnd()}\n`,
);
if (CROSS_ROUNDS > 0) parts.push(`## Cross-thread cost (issue 4: at most 1.25×)\n\n${await crossThread()}\n`);
const report = parts.join('\n');
process.stdout.write(`${report}\n`);
mkdirSync(join(ROOT, 'bench/results'), { recursive: true });
writeFileSync(join(ROOT, 'bench/results/latest.md'), report);
