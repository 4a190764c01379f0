// Starts and stops a real P2Pcluster server as a child process for benchmarks (fresh temp store, free ports).

import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SqliteStore } from '../src/store/sqlite.ts';
import { register } from './load.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const env = process.env;

export interface Server {
  child: ChildProcess;
  port: number;
  httpPort: number;
  key: string;
  dir: string;
}

export const ADMIN = 'bench-admin-token-000000000000000';

/** Starts the server as a child process; `extra` adds environment overrides (e.g. cluster mode). */
export async function startServer(workers: number, extra: Record<string, string> = {}): Promise<Server> {
  const dir = mkdtempSync(join(tmpdir(), 'p2pc-bench-'));
  const store = new SqliteStore(dir);
  const key = store.createAccount('bench@bench.example', null, 4).key;
  store.close();
  // BENCH_NODE_ARGS (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof") goes to the server's node.
  const nodeArgs = (env.BENCH_NODE_ARGS ?? '').split(' ').filter((a) => a !== '');
  const child = spawn(process.execPath, [...nodeArgs, join(ROOT, 'src/cli.ts'), 'start'], {
    cwd: ROOT,
    env: {
      ...env,
      P2PC_PSERVER_SERVERPORT: '0',
      P2PC_PSERVER_HOST: '127.0.0.1',
      P2PC_PSERVER_WORKERS: String(workers),
      P2PC_STORE_PATH: dir,
      P2PC_LOG_LEVEL: 'info',
      P2PC_HTTP_PORT: '0',
      P2PC_HTTP_HOST: '127.0.0.1',
      P2PC_HTTP_ADMIN_TOKEN: ADMIN,
      // Holding enabled (off by default) with room for the 10,000-message backlog benchmark.
      P2PC_USER_4HOLDPUSH: '1,1,1,1',
      P2PC_USER_5HOLDBUFFER: '100,1000,10000,20000',
      ...extra,
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const [port, httpPort] = await new Promise<[number, number]>((resolve, reject) => {
    let acc = '';
    child.stdout!.on('data', (b: Buffer) => {
      acc += b.toString();
      const m = /"port":(\d+),"shards":\d+,"msg":"device port listening"/.exec(acc);
      const h = /"port":(\d+),"msg":"operator HTTP API listening"/.exec(acc);
      if (m && h) resolve([Number(m[1]), Number(h[1])]);
    });
    child.once('exit', (code) => reject(new Error(`server exited with ${code}`)));
  });
  // BENCH_SERVER_LOG=<file> keeps the server's stdout (its logs, --trace-gc lines) in that file.
  if (env.BENCH_SERVER_LOG) child.stdout!.pipe(createWriteStream(env.BENCH_SERVER_LOG));
  else child.stdout!.resume();
  return { child, port, httpPort, key, dir };
}

export async function stopServer(s: Server): Promise<void> {
  const exited = new Promise((r) => s.child.once('exit', r));
  s.child.kill('SIGTERM');
  await exited;
  rmSync(s.dir, { recursive: true, force: true });
}

/** Resident memory of a process (all its threads), in bytes. */
export function rssBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /VmRSS:\s+(\d+) kB/.exec(status);
  return m ? Number(m[1]) * 1024 : Number.NaN;
}

const SCHEDSTAT = existsSync('/proc/self/schedstat');

/**
 * CPU time a process has used so far, in microseconds: the sum over its threads of the scheduler's own count of time
 * on a CPU (/proc/<pid>/task/<tid>/schedstat, nanoseconds), where the kernel keeps one; else user + system from
 * /proc/<pid>/stat, in clock ticks of 10 ms (a run of half a second is then ±2 % per thread).
 */
export function cpuMicros(pid: number): number {
  if (!SCHEDSTAT) return tickMicros(`/proc/${pid}/stat`);
  let t = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) t += taskMicros(pid, tid);
  return t;
}

/** One thread's CPU µs (0 once it has ended). */
function taskMicros(pid: number, tid: string): number {
  try {
    if (!SCHEDSTAT) return tickMicros(`/proc/${pid}/task/${tid}/stat`);
    const line = readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8');
    return Number(line.slice(0, line.indexOf(' '))) / 1000;
  } catch {
    return 0; // the thread ended
  }
}

function tickMicros(statPath: string): number {
  const stat = readFileSync(statPath, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1e6) / 100;
}

/**
 * CPU µs of each thread of a process (as cpuMicros), keyed by thread name (`byTid`: name/tid, one entry a thread;
 * else threads of one name summed, e.g. V8's workers).
 */
export function threadCpuMicros(pid: number, byTid = false): Map<string, number> {
  const m = new Map<string, number>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const name = readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim();
      const k = byTid ? `${name}/${tid}` : name;
      m.set(k, (m.get(k) ?? 0) + taskMicros(pid, tid));
    } catch {
      // the thread ended
    }
  }
  return m;
}

/** One operator API call with the admin token; the parsed JSON body (null when empty); throws on a non-2xx status. */
export async function adminApi(s: Server, method: string, path: string, body?: unknown): Promise<unknown> {
  const res = await fetch(`http://127.0.0.1:${s.httpPort}${path}`, {
    method,
    headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return text === '' ? null : JSON.parse(text);
}

/** CPU µs of all threads between two threadCpuMicros readings. */
export function cpuTotal(th0: Map<string, number>, th1: Map<string, number>): number {
  let t = 0;
  for (const [k, v] of th1) t += v - (th0.get(k) ?? 0);
  return t;
}

/**
 * CPU µs per `units` of each thread between two threadCpuMicros readings, rounded to `digits`: the threads that used
 * any, as [name, µs] pairs.
 */
export function cpuPerThread(
  th0: Map<string, number>,
  th1: Map<string, number>,
  units: number,
  digits: number,
): [string, number][] {
  return [...th1]
    .map(([k, v]) => [k, +((v - (th0.get(k) ?? 0)) / units).toFixed(digits)] as [string, number])
    .filter(([, v]) => v > 0);
}

/** The shard each registered ID of the server's account landed on (the devices API). */
export async function shardsOf(s: Server): Promise<Map<string, number>> {
  const r = (await (
    await fetch(`http://127.0.0.1:${s.httpPort}/api/v1/accounts/me/devices`, {
      headers: { authorization: `Bearer ${s.key}` },
    })
  ).json()) as { devices: { id: string; shard: number }[] };
  return new Map(r.devices.map((d) => [d.id, d.shard]));
}

/** The shard a registered ID of the server's account landed on (-1: not registered). */
export async function shardOf(s: Server, id: string): Promise<number> {
  return (await shardsOf(s)).get(id) ?? -1;
}

let onShardSeq = 0;

/** A device of the server's account registered on `shard` (IDs `prefix` + a number, tried until one lands there). */
export async function onShard(s: Server, workers: number, prefix: string, shard: number): Promise<[Socket, string]> {
  for (let attempt = 0; attempt < 64; attempt++) {
    const id = `${prefix}${++onShardSeq}`;
    const sock = await register(s.port, s.key, id);
    if (workers === 1 || (await shardOf(s, id)) === shard) return [sock, id];
    sock.destroy();
  }
  throw new Error(`no connection landed on shard ${shard}`);
}
