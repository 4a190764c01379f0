// `npm run bench:peers`: P2Pcluster side by side with NATS, Redis, Mosquitto and Aedes on this machine, identical
// workloads, one loader. Starts every broker on a free loopback port (skipping, with the apt-get line, any that is not
// installed), runs each workload in raw mode (lean pipelined clients, the headline) and library mode (nats, mqtt,
// ioredis, and P2Pcluster's own @p2pcluster/client), systems interleaved and every broker restarted per run and mode,
// then prints a Markdown table, writes it to bench/results/peers-latest.md and rewrites the README section
// "Benchmarks against NATS, Redis, Mosquitto and Aedes".
//
// Environment knobs: BENCH_PEERS_RUNS (3), BENCH_PEERS_P2P (2000000 messages), BENCH_PEERS_FANOUT (100000 messages
// to 100 subscribers), BENCH_PEERS_CAP_S (15 s per throughput run), BENCH_PEERS_RTT (10000 round trips),
// BENCH_PEERS_IDLE (10000 idle connections), BENCH_PEERS_CONNS (5000 connections for the connection rate),
// BENCH_PEERS_WORKERS (0 = P2Pcluster's default, one shard per core but one), BENCH_PEERS_SYSTEMS (comma list, all),
// BENCH_PEERS_MODES ("raw,library"), BENCH_PEERS_README (1; 0 leaves README.md alone).

import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { shardCount } from '../../src/config/schema.ts';
import { percentile } from '../load.ts';
import { rssBytes } from '../server.ts';
import { type Driver, interleavedRoundTrips, openMany, type PingPong, RTT_WARMUP } from './flow.ts';
import { clientVersion, LIBRARIES, libDriver } from './lib.ts';
import {
  type Broker,
  cpuMicros,
  missing,
  packageVersion,
  SYSTEMS,
  type System,
  sleep,
  startBroker,
  stopAll,
  versionOf,
} from './procs.ts';
import { rawDriver } from './raw.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const env = process.env;
const num = (name: string, def: number): number => {
  const v = Number(env[name] ?? def);
  if (!Number.isFinite(v) || v < 0) throw new Error(`${name} must be a non-negative number`);
  return v;
};
const RUNS = Math.max(1, num('BENCH_PEERS_RUNS', 3));
const P2P = num('BENCH_PEERS_P2P', 2_000_000);
const FANOUT = num('BENCH_PEERS_FANOUT', 100_000);
const SUBSCRIBERS = 100;
const CAP_MS = num('BENCH_PEERS_CAP_S', 15) * 1000;
const RTT = Math.max(1, num('BENCH_PEERS_RTT', 10_000));
/** Round trips a system runs before the next one takes its turn (see roundTripsSideBySide). */
const RTT_CHUNK = Math.max(1, num('BENCH_PEERS_RTT_CHUNK', 250));
const IDLE = Math.max(1, num('BENCH_PEERS_IDLE', 10_000));
const CONNS = Math.max(1, num('BENCH_PEERS_CONNS', 5_000));
const WORKERS = num('BENCH_PEERS_WORKERS', 0);
/** Connection attempts in flight while opening idle connections and measuring the connection rate. */
const PARALLEL = 100;
const MODES = (env.BENCH_PEERS_MODES ?? 'raw,library').split(',').map((m) => m.trim()) as Mode[];
const WANTED = (env.BENCH_PEERS_SYSTEMS ?? SYSTEMS.join(','))
  .split(',')
  .map((s) => s.trim().toLowerCase())
  .filter((s) => s !== '');
const HEADING = '## Benchmarks against NATS, Redis, Mosquitto and Aedes';

type Mode = 'raw' | 'library';
type Metric = 'p2p' | 'fanout' | 'rttP50' | 'rttP99' | 'rttP999' | 'cpuP2p' | 'cpuFan' | 'rss' | 'connRate';

interface Cell {
  values: number[];
  errors: string[];
  capped: number;
}
const cells = new Map<string, Cell>();
const cell = (mode: Mode, metric: Metric, system: System): Cell => {
  const k = `${mode}/${metric}/${system}`;
  let c = cells.get(k);
  if (c === undefined) {
    c = { values: [], errors: [], capped: 0 };
    cells.set(k, c);
  }
  return c;
};

const log = (s: string): void => void process.stderr.write(`${s}\n`);
const fmtInt = (n: number): string => Math.round(n).toLocaleString('en-US');
const fmt2 = (n: number): string => n.toFixed(2);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 === 1 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

// ---------------------------------------------------------------- workloads

async function idleRss(d: Driver, pid: number): Promise<number> {
  await sleep(1000);
  const before = rssBytes(pid);
  const closers = await openMany(
    IDLE,
    PARALLEL,
    () => d.open(),
    (c) => c(),
  );
  await sleep(1000);
  const after = rssBytes(pid);
  for (const c of closers) c();
  await sleep(500);
  return (after - before) / IDLE;
}

async function connRate(d: Driver): Promise<number> {
  const t0 = performance.now();
  const closers = await openMany(
    CONNS,
    PARALLEL,
    () => d.open(),
    (c) => c(),
  );
  const seconds = (performance.now() - t0) / 1000;
  for (const c of closers) c();
  await sleep(500);
  return CONNS / seconds;
}

async function suite(mode: Mode, b: Broker, d: Driver, tag: string): Promise<void> {
  const cpu = (): number => cpuMicros(b.pid);
  const step = async (what: string, metrics: Metric[], fn: () => Promise<string>): Promise<void> => {
    try {
      // A dead broker fails every remaining step (cpuMicros throws once /proc/<pid> is gone).
      cpu();
      log(`${tag} ${what}: ${await fn()}`);
    } catch (e) {
      const msg = (e as Error).message.replace(/\s+/g, ' ').trim();
      for (const m of metrics) cell(mode, m, b.system).errors.push(msg);
      log(`${tag} ${what}: ERROR ${msg}`);
    }
    await sleep(300);
  };
  await step('idle RSS', ['rss'], async () => {
    const v = await idleRss(d, b.pid);
    cell(mode, 'rss', b.system).values.push(v);
    return `${fmtInt(v)} B per connection`;
  });
  await step('connection rate', ['connRate'], async () => {
    const v = await connRate(d);
    cell(mode, 'connRate', b.system).values.push(v);
    return `${fmtInt(v)} connections/s`;
  });
  const flow = async (
    metric: 'p2p' | 'fanout',
    cpuMetric: 'cpuP2p' | 'cpuFan',
    run: () => ReturnType<Driver['p2p']>,
  ) => {
    const r = await run();
    const c = cell(mode, metric, b.system);
    c.values.push(r.rate);
    if (r.capped) c.capped++;
    const perMsg = r.cpuMicros / r.delivered;
    cell(mode, cpuMetric, b.system).values.push(perMsg);
    return (
      `${fmtInt(r.rate)}/s, ${fmtInt(r.delivered)} deliveries in ${r.seconds.toFixed(2)} s` +
      `${r.capped ? ' (capped)' : ''}, broker CPU ${fmt2(perMsg)} µs each`
    );
  };
  await step('point-to-point', ['p2p', 'cpuP2p'], () => flow('p2p', 'cpuP2p', () => d.p2p(P2P, CAP_MS, cpu)));
  await step('fan-out', ['fanout', 'cpuFan'], () =>
    flow('fanout', 'cpuFan', () => d.fanout(FANOUT, SUBSCRIBERS, CAP_MS, cpu)),
  );
}

/** The driver of a system's broker in a client mode. */
const driverOf = (mode: Mode, b: Broker): Driver =>
  mode === 'raw' ? rawDriver(b.system, b.port, b.key, b.newAccount) : libDriver(b.system, b.port, b.key, b.newAccount);

/**
 * Round trips: every system's broker running at once, taking turns every RTT_CHUNK round trips, so that the bursts of
 * this shared machine's load (tens of milliseconds to seconds long, and they set a run's p99) fall on every system alike
 * instead of on whichever ran in those seconds. A system whose broker fails to start or whose ping-pong fails drops
 * out of this run with the error in its cells; the others go on.
 */
async function roundTripsSideBySide(mode: Mode, systems: System[], run: number): Promise<void> {
  const live: { system: System; b: Broker; p: PingPong }[] = [];
  const failed = new Set<System>();
  const fail = (system: System, e: unknown): void => {
    failed.add(system);
    const msg = (e as Error).message.replace(/\s+/g, ' ').trim();
    for (const m of ['rttP50', 'rttP99', 'rttP999'] as const) cell(mode, m, system).errors.push(msg);
    log(`[run ${run + 1}/${RUNS}] ${mode} ${system} round trips: ERROR ${msg}`);
  };
  try {
    for (const system of systems) {
      try {
        const b = await startBroker(system, WORKERS);
        try {
          live.push({ system, b, p: await driverOf(mode, b).pingPong() });
        } catch (e) {
          await b.stop();
          throw e;
        }
      } catch (e) {
        fail(system, e);
      }
    }
    const pings: PingPong[] = live.map(({ system, p }) => ({
      run: async (n) => {
        if (failed.has(system)) return [];
        try {
          return await p.run(n);
        } catch (e) {
          fail(system, e);
          return [];
        }
      },
      close: () => p.close(),
    }));
    const times = await interleavedRoundTrips(pings, RTT, RTT_CHUNK);
    live.forEach(({ system }, i) => {
      if (failed.has(system)) return;
      const t = times[i]!.sort((x, y) => x - y);
      const [p50, p99, p999] = [percentile(t, 50), percentile(t, 99), percentile(t, 99.9)];
      cell(mode, 'rttP50', system).values.push(p50);
      cell(mode, 'rttP99', system).values.push(p99);
      cell(mode, 'rttP999', system).values.push(p999);
      log(
        `[run ${run + 1}/${RUNS}] ${mode} ${system} round trips: ` +
          `p50 ${fmtInt(p50)} µs, p99 ${fmtInt(p99)} µs, p99.9 ${fmtInt(p999)} µs`,
      );
    });
  } finally {
    for (const { b, p } of live) {
      p.close();
      await b.stop();
    }
  }
}

// ---------------------------------------------------------------- report

interface Row {
  label: string;
  metric: Metric | 'rtt';
  show: (n: number) => string;
  /** Ratio P2Pcluster / peer on medians, for the workloads the issue sets a bar on. */
  ratio: boolean;
}

const ROWS: Row[] = [
  {
    label: `point-to-point msgs/s (1 → 1, 64 B, ${fmtInt(P2P)} messages)`,
    metric: 'p2p',
    show: fmtInt,
    ratio: true,
  },
  {
    label: `fan-out deliveries/s (1 → ${SUBSCRIBERS}, 64 B, ${fmtInt(FANOUT)} messages)`,
    metric: 'fanout',
    show: fmtInt,
    ratio: true,
  },
  {
    label: 'round-trip latency p50 / p99 / p99.9 (µs, one message in flight)',
    metric: 'rtt',
    show: fmtInt,
    ratio: true,
  },
  { label: 'broker CPU µs per p2p message', metric: 'cpuP2p', show: fmt2, ratio: true },
  { label: 'broker CPU µs per fan-out delivery', metric: 'cpuFan', show: fmt2, ratio: true },
  {
    label: `broker RSS per idle registered/subscribed connection at ${fmtInt(IDLE)} (bytes)`,
    metric: 'rss',
    show: fmtInt,
    ratio: true,
  },
  {
    label: `connection rate (connect + register/subscribe confirmed, per s, ${fmtInt(CONNS)} connections)`,
    metric: 'connRate',
    show: fmtInt,
    ratio: false,
  },
];

const esc = (s: string): string => s.replace(/\|/g, '\\|');

function summary(c: Cell, show: (n: number) => string): string {
  if (c.values.length === 0) return c.errors.length > 0 ? `error: ${esc(c.errors[0]!)}` : '—';
  let s = show(median(c.values));
  if (c.values.length > 1) s += ` (${show(Math.min(...c.values))}–${show(Math.max(...c.values))})`;
  if (c.capped > 0) s += ' ‡';
  if (c.errors.length > 0)
    s += `; ${c.errors.length} of ${c.values.length + c.errors.length} runs failed: ${esc(c.errors[0]!)}`;
  return s;
}

function rttSummary(mode: Mode, system: System): string {
  const [a, b, c] = (['rttP50', 'rttP99', 'rttP999'] as const).map((m) => cell(mode, m, system));
  if (b!.values.length === 0) return summary(b!, fmtInt);
  let s = `${fmtInt(median(a!.values))} / ${fmtInt(median(b!.values))} / ${fmtInt(median(c!.values))}`;
  if (b!.values.length > 1) s += ` (p99 ${fmtInt(Math.min(...b!.values))}–${fmtInt(Math.max(...b!.values))})`;
  if (b!.errors.length > 0) s += `; ${b!.errors.length} runs failed: ${esc(b!.errors[0]!)}`;
  return s;
}

function ratio(mode: Mode, row: Row, peer: System, skipped: Map<System, string>): string {
  if (!row.ratio) return '—';
  if (skipped.has(peer) || skipped.has('P2Pcluster')) return 'n/a';
  const m: Metric = row.metric === 'rtt' ? 'rttP99' : row.metric;
  const ours = cell(mode, m, 'P2Pcluster').values;
  const theirs = cell(mode, m, peer).values;
  if (ours.length === 0 || theirs.length === 0) return 'n/a';
  const r = median(ours) / median(theirs);
  return `${r >= 10 ? r.toFixed(0) : r.toFixed(2)}×${row.metric === 'rtt' ? ' (p99)' : ''}`;
}

function table(mode: Mode, systems: System[], skipped: Map<System, string>): string {
  const head = `| workload | ${systems.join(' | ')} | P2Pcluster / NATS | P2Pcluster / Aedes |`;
  const sep = `|---|${systems.map(() => '---').join('|')}|---|---|`;
  const lines = ROWS.map((row) => {
    const cols = systems.map((s) => {
      const skip = skipped.get(s);
      if (skip !== undefined) return skip;
      return row.metric === 'rtt' ? rttSummary(mode, s) : summary(cell(mode, row.metric, s), row.show);
    });
    return `| ${row.label} | ${cols.join(' | ')} | ${ratio(mode, row, 'NATS', skipped)} | ${ratio(mode, row, 'Aedes', skipped)} |`;
  });
  return [head, sep, ...lines].join('\n');
}

function machine(): string {
  let commit = 'unknown';
  let dirty = '';
  try {
    commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT }).toString().trim();
    const st = execFileSync('git', ['status', '--porcelain', '--', 'src', 'workers'], { cwd: ROOT }).toString();
    if (st.trim() !== '') dirty = ' (with uncommitted changes in src/ or workers/)';
  } catch {}
  return (
    `commit ${commit}${dirty}, Node ${process.version}, ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ` +
    new Date().toISOString()
  );
}

const loadAtStart = loadavg()[0]!;

function report(systems: System[], skipped: Map<System, string>, minutes: number, h: string): string {
  const workers =
    WORKERS === 0 ? `default (${shardCount(0, availableParallelism())}, one per core but one)` : String(WORKERS);
  const versions = systems.filter((s) => s !== 'P2Pcluster' && !skipped.has(s)).map(versionOf);
  const libs = [
    ...LIBRARIES.map((l) => `${l} ${packageVersion(l)}`),
    `@p2pcluster/client ${clientVersion()} (clients/ts)`,
  ].join(', ');
  const notes = [
    `${machine()}; the run took ${minutes.toFixed(1)} min, 1-minute load average ${loadAtStart.toFixed(1)} before ` +
      `it and ${loadavg()[0]!.toFixed(1)} at the end (other work on the box moves the numbers; the ratios from one ` +
      'run are the comparable part).',
    '',
    `Brokers: ${[...versions, `P2Pcluster with workers = ${workers}`].join(', ')}. Median of ${RUNS} run${RUNS > 1 ? 's' : ''} ` +
      '(min–max in brackets), systems interleaved, every broker freshly started for each run and mode, loader and ' +
      'broker on the same cores. Throughput runs stop sending after ' +
      `${CAP_MS / 1000} s and take the rate from what was delivered (‡); every run checks that every subscriber got ` +
      'every message sent, and a run with any loss is an error, not a number. Round trips are measured with every ' +
      `system's broker up at once, taking turns every ${fmtInt(RTT_CHUNK)} round trips after ${fmtInt(RTT_WARMUP)} ` +
      'unmeasured ones each, so that the bursts of load on this shared machine fall on all systems alike. ' +
      'Broker CPU is user + system time of the ' +
      'broker process (all threads) from /proc between the first send and the last delivery; RSS is VmRSS before and ' +
      `after opening ${fmtInt(IDLE)} idle connections. Ratios are P2Pcluster ÷ peer on medians: above 1 is better for ` +
      'throughput, below 1 for latency, CPU and memory.',
    '',
  ];
  const parts = [...notes];
  if (MODES.includes('raw')) {
    parts.push(
      `${h} Raw clients (headline)`,
      '',
      'Pre-encoded frames written in batches by a lean pipelined client per protocol (NATS text protocol, MQTT 3.1.1 ' +
        'QoS 0 by hand for Mosquitto and Aedes, Redis RESP, P2Pcluster TCP:ID/TCP:PUSH via bench/load.ts), ' +
        'subscribers counting bytes or lines, the publisher at most ' +
        'a credit window ahead of its slowest subscriber.',
      '',
      table('raw', systems, skipped),
      '',
    );
  }
  if (MODES.includes('library')) {
    parts.push(
      `${h} Official client libraries`,
      '',
      `The same workloads through ${libs} (mqtt for Mosquitto and Aedes) at their natural API: one publish() call ` +
        '(P2Pcluster: one push.rid() or push.friends() promise) per message under the same credit window, one ' +
        'callback (P2Pcluster: one `for await` iteration over messages()) per message received.',
      '',
      table('library', systems, skipped),
      '',
    );
  }
  return parts.join('\n');
}

/** Wraps prose paragraphs at 120 columns like the rest of the README; tables and headings stay as they are. */
function wrap(text: string): string {
  return text
    .split('\n')
    .map((line) => {
      if (line.length <= 120 || line.startsWith('|') || line.startsWith('#')) return line;
      const out: string[] = [];
      let cur = '';
      for (const word of line.split(' ')) {
        if (cur !== '' && cur.length + 1 + word.length > 120) {
          out.push(cur);
          cur = word;
        } else cur = cur === '' ? word : `${cur} ${word}`;
      }
      if (cur !== '') out.push(cur);
      return out.join('\n');
    })
    .join('\n');
}

function rewriteReadme(section: string): void {
  const path = join(ROOT, 'README.md');
  const text = readFileSync(path, 'utf8');
  let at = -1;
  if (text.startsWith(`${HEADING}\n`)) at = 0;
  else {
    const i = text.indexOf(`\n${HEADING}\n`);
    if (i >= 0) at = i + 1;
  }
  let out: string;
  if (at < 0) out = `${text.trimEnd()}\n\n${section.trimEnd()}\n`;
  else {
    const next = text.indexOf('\n## ', at + HEADING.length);
    const rest = next < 0 ? '' : text.slice(next + 1);
    out = `${text.slice(0, at)}${section.trimEnd()}\n${rest === '' ? '' : `\n${rest}`}`;
  }
  writeFileSync(path, out);
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const started = performance.now();
  const systems = SYSTEMS.filter((s) => WANTED.includes(s.toLowerCase()));
  const skipped = new Map<System, string>();
  const apt: string[] = [];
  for (const s of systems) {
    const m = missing(s);
    if (m !== null) {
      skipped.set(s, `not installed (\`${m}\`)`);
      if (m.startsWith('apt-get')) apt.push(m.replace('apt-get install -y ', ''));
      log(`${s}: not installed, skipped — install it with: ${m}`);
    }
  }
  if (apt.length > 0) log(`missing brokers, as root: apt-get update && apt-get install -y ${apt.join(' ')}`);
  const runnable = systems.filter((s) => !skipped.has(s));
  for (let run = 0; run < RUNS; run++) {
    for (const mode of MODES) {
      // Rotate the order each run, so no system always follows the same neighbour.
      const order = runnable.map((_, i) => runnable[(i + run) % runnable.length]!);
      for (const system of order) {
        const tag = `[run ${run + 1}/${RUNS}] ${mode} ${system}`;
        let b: Broker;
        try {
          b = await startBroker(system, WORKERS);
        } catch (e) {
          const msg = `failed to start: ${(e as Error).message}`;
          // (its round trips are tried again, side by side with the others)
          for (const r of ROWS) if (r.metric !== 'rtt') cell(mode, r.metric, system).errors.push(msg);
          log(`${tag}: ${msg}`);
          continue;
        }
        try {
          await suite(mode, b, driverOf(mode, b), tag);
        } finally {
          await b.stop();
        }
      }
      await roundTripsSideBySide(mode, order, run);
    }
  }
  const minutes = (performance.now() - started) / 60_000;
  const body = report(systems, skipped, minutes, '##');
  const file = wrap(`# P2Pcluster against NATS, Redis, Mosquitto and Aedes\n\n${body}`);
  process.stdout.write(`${file}\n`);
  mkdirSync(join(ROOT, 'bench/results'), { recursive: true });
  writeFileSync(join(ROOT, 'bench/results/peers-latest.md'), file);
  if (env.BENCH_PEERS_README !== '0') {
    const section = [
      HEADING,
      '',
      '`npm run bench:peers` runs the same workloads against P2Pcluster and, started on free loopback ports, ' +
        '`nats-server`, `redis-server`, `mosquitto` (Debian packages; it prints the `apt-get install` line for any that ' +
        'is missing) and Aedes; see [`bench/peers/README.md`](bench/peers/README.md). This section is rewritten by it; ' +
        'the full report is in [`bench/results/peers-latest.md`](bench/results/peers-latest.md). Latest run:',
      '',
      report(systems, skipped, minutes, '###'),
    ].join('\n');
    rewriteReadme(wrap(section));
  }
}

let stopping = false;
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    if (stopping) return;
    stopping = true;
    log(`\n${sig}: stopping every broker this run started`);
    void stopAll().finally(() => process.exit(130));
  });
}
process.on('unhandledRejection', (e) => log(`warning: unhandled rejection: ${(e as Error)?.message ?? e}`));
process.on('uncaughtException', (e) => {
  log(`fatal: ${e.stack ?? e.message}`);
  void stopAll().finally(() => process.exit(1));
});

try {
  await main();
} finally {
  await stopAll();
}
