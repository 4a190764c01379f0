// Starting, probing and stopping the brokers under test: nats-server, redis-server and mosquitto (Debian binaries),
// Aedes (a child Node process, aedes-server.ts) and P2Pcluster (bench/server.ts). Every broker listens on a free
// loopback port and is stopped at the end, also on errors and SIGINT (stopAll).

import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { accessSync, constants, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ADMIN, type Server, startServer, stopServer } from '../server.ts';

export const SYSTEMS = ['P2Pcluster', 'NATS', 'Redis', 'Mosquitto', 'Aedes'] as const;
export type System = (typeof SYSTEMS)[number];

const HERE = fileURLToPath(new URL('.', import.meta.url));

export interface Broker {
  system: System;
  pid: number;
  port: number;
  /** P2Pcluster only: the account KEY the server was seeded with, and a way to make fresh accounts. */
  key: string;
  newAccount: () => Promise<string>;
  stop: () => Promise<void>;
}

/** The Debian binary and package of each external broker. */
export const BINARIES: Partial<Record<System, { bin: string; pkg: string }>> = {
  NATS: { bin: 'nats-server', pkg: 'nats-server' },
  Redis: { bin: 'redis-server', pkg: 'redis-server' },
  Mosquitto: { bin: 'mosquitto', pkg: 'mosquitto' },
};

/** Finds an executable on PATH (plus the sbin folders Debian puts daemons in, which a non-root PATH may lack). */
export function which(bin: string): string | null {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/local/sbin', '/usr/sbin', '/sbin'];
  for (const d of dirs) {
    if (d === '') continue;
    const p = join(d, bin);
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {}
  }
  return null;
}

/** "name version" for the results header. */
export function versionOf(system: System): string {
  const run = (bin: string, args: string[]): string => {
    const p = which(bin);
    if (p === null) return `${bin} not installed`;
    const r = spawnSync(p, args, { encoding: 'utf8', timeout: 5000 });
    const v = /v?=?(\d+\.\d+\.\d+)/.exec(`${r.stdout ?? ''}${r.stderr ?? ''}`);
    return `${bin} ${v ? v[1] : 'unknown version'}`;
  };
  switch (system) {
    case 'NATS':
      return run('nats-server', ['--version']);
    case 'Redis':
      return run('redis-server', ['--version']);
    case 'Mosquitto':
      return run('mosquitto', ['-h']);
    case 'Aedes':
      return `aedes ${packageVersion('aedes')}`;
    case 'P2Pcluster':
      return 'P2Pcluster (this repository)';
  }
}

export function packageVersion(name: string): string {
  try {
    return (JSON.parse(readFileSync(join(HERE, 'node_modules', name, 'package.json'), 'utf8')) as { version: string })
      .version;
  } catch {
    return 'not installed';
  }
}

/** The install line printed for a missing system, or null when it can run. */
export function missing(system: System): string | null {
  const b = BINARIES[system];
  if (b !== undefined) return which(b.bin) === null ? `apt-get install -y ${b.pkg}` : null;
  if (system === 'Aedes') return packageVersion('aedes') === 'not installed' ? 'npm --prefix bench/peers ci' : null;
  return null;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Waits until something accepts TCP connections on the port (or the child dies, or 10 s pass). */
async function waitPort(port: number, child: ChildProcess, log: () => string): Promise<void> {
  const until = performance.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`exited with ${child.exitCode ?? child.signalCode}: ${log().slice(-500)}`);
    }
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect({ port, host: '127.0.0.1' });
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (performance.now() > until) throw new Error(`nothing listening on ${port} after 10 s: ${log().slice(-500)}`);
    await sleep(50);
  }
}

/** CPU time (user + system, all threads) a process has used so far, in microseconds (clock ticks of 10 ms). */
export function cpuMicros(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1e6) / 100;
}

const live = new Set<Broker>();

function exited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

/** SIGTERM, then SIGKILL after 5 s. */
async function killChild(child: ChildProcess): Promise<void> {
  if (exited(child)) return;
  const gone = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), 5000);
  await gone;
  clearTimeout(t);
}

function track(b: Broker): Broker {
  const stop = b.stop;
  let stopping: Promise<void> | null = null;
  b.stop = () => {
    stopping ??= stop().finally(() => live.delete(b));
    return stopping;
  };
  live.add(b);
  return b;
}

/** Stops every broker still running (used at the end, on errors and on signals). */
export async function stopAll(): Promise<void> {
  await Promise.allSettled([...live].map((b) => b.stop()));
}

const noAccounts = (): Promise<string> => Promise.reject(new Error('accounts are a P2Pcluster notion'));

async function spawnBroker(system: System, bin: string, args: string[], port: number, dir: string): Promise<Broker> {
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], cwd: dir });
  let log = '';
  const keep = (b: Buffer): void => {
    log = (log + b.toString()).slice(-4000);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const b = track({
    system,
    pid: child.pid!,
    port,
    key: '',
    newAccount: noAccounts,
    stop: async () => {
      await killChild(child);
      rmSync(dir, { recursive: true, force: true });
    },
  });
  try {
    await waitPort(port, child, () => log);
  } catch (e) {
    await b.stop();
    throw new Error(`${system}: ${(e as Error).message}`);
  }
  return b;
}

export async function startBroker(system: System, workers: number): Promise<Broker> {
  if (system === 'P2Pcluster') return startP2Pcluster(workers);
  if (system === 'Aedes') return startAedes();
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), `peers-${system.toLowerCase()}-`));
  const bin = which(BINARIES[system]!.bin)!;
  switch (system) {
    case 'NATS': {
      // No server PINGs during a run (the raw subscribers count bytes); the rest is nats-server's defaults.
      writeFileSync(join(dir, 'nats.conf'), `listen: "127.0.0.1:${port}"\nping_interval: "10m"\n`);
      return spawnBroker(system, bin, ['-c', join(dir, 'nats.conf')], port, dir);
    }
    case 'Redis':
      return spawnBroker(
        system,
        bin,
        [
          '--port',
          String(port),
          '--bind',
          '127.0.0.1',
          '--save',
          '',
          '--appendonly',
          'no',
          '--maxclients',
          '15000',
          '--dir',
          dir,
          '--loglevel',
          'warning',
        ],
        port,
        dir,
      );
    case 'Mosquitto': {
      // max_queued_messages: mosquitto drops QoS 0 messages to a client with more than this many packets queued
      // (default 1000); the harness bounds what is in flight by credit, so raise it above the largest window.
      // set_tcp_nodelay: Nagle off, as every other system here has it.
      const conf = [
        `listener ${port} 127.0.0.1`,
        'allow_anonymous true',
        'persistence false',
        'set_tcp_nodelay true',
        'max_queued_messages 100000',
        'connection_messages false',
        'log_dest stderr',
        'log_type error',
        'log_type warning',
        '',
      ].join('\n');
      writeFileSync(join(dir, 'mosquitto.conf'), conf);
      return spawnBroker(system, bin, ['-c', join(dir, 'mosquitto.conf')], port, dir);
    }
    default:
      throw new Error(`unknown system ${system}`);
  }
}

async function startAedes(): Promise<Broker> {
  const child = spawn(process.execPath, [join(HERE, 'aedes-server.ts')], { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (b: Buffer) => {
    err = (err + b.toString()).slice(-4000);
  });
  const b = track({
    system: 'Aedes',
    pid: child.pid!,
    port: 0,
    key: '',
    newAccount: noAccounts,
    stop: () => killChild(child),
  });
  try {
    b.port = await new Promise<number>((resolve, reject) => {
      let acc = '';
      const t = setTimeout(() => reject(new Error('no port after 10 s')), 10_000);
      child.stdout!.on('data', (d: Buffer) => {
        acc += d.toString();
        const m = /"port":(\d+)/.exec(acc);
        if (m) {
          clearTimeout(t);
          resolve(Number(m[1]));
        }
      });
      child.once('exit', (code) => {
        clearTimeout(t);
        reject(new Error(`exited with ${code}: ${err.slice(-500)}`));
      });
    });
    child.stdout!.resume();
  } catch (e) {
    await b.stop();
    throw new Error(`Aedes: ${(e as Error).message}`);
  }
  return b;
}

async function startP2Pcluster(workers: number): Promise<Broker> {
  const s: Server = await startServer(workers);
  let seq = 0;
  const newAccount = async (): Promise<string> => {
    const res = await fetch(`http://127.0.0.1:${s.httpPort}/api/v1/accounts`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ email: `peers${process.pid}x${++seq}@bench.example` }),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`create account: ${res.status} ${text}`);
    return (JSON.parse(text) as { key: string }).key;
  };
  return track({
    system: 'P2Pcluster',
    pid: s.child.pid!,
    port: s.port,
    key: s.key,
    newAccount,
    stop: async () => {
      if (exited(s.child)) {
        rmSync(s.dir, { recursive: true, force: true });
        return;
      }
      const t = setTimeout(() => s.child.kill('SIGKILL'), 10_000);
      await stopServer(s);
      clearTimeout(t);
    },
  });
}
