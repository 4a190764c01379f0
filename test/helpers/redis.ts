// A real redis-server for the Redis store tests (issue 9): Debian's package, used where it is and installed with
// apt-get when absent (CI runs as root on a clean Debian machine), on a free loopback port, with no persistence.

import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createConnection, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';

export const REDIS_SERVER = process.env.P2PC_REDIS_SERVER ?? '/usr/bin/redis-server';

export function ensureRedisServer(): string {
  if (existsSync(REDIS_SERVER)) return REDIS_SERVER;
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  execFileSync('apt-get', ['update', '-qq'], { stdio: 'ignore', env });
  execFileSync('apt-get', ['install', '-y', '-qq', 'redis-server'], { stdio: 'ignore', env });
  if (!existsSync(REDIS_SERVER)) throw new Error(`redis-server is not at ${REDIS_SERVER} after apt-get install`);
  return REDIS_SERVER;
}

export interface TestRedis {
  /** redis://127.0.0.1:<port> */
  url: string;
  port: number;
  /** Stops the server (start() brings it back, empty, on the same port). */
  stop(): Promise<void>;
  /** Starts it again after stop(). */
  start(): Promise<void>;
  /** stop() then start(). */
  restart(): Promise<void>;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A port nothing listens on now, on loopback. */
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

/** True once the server answers PING on the port. */
function pings(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = createConnection({ host: '127.0.0.1', port });
    let buf = '';
    const done = (ok: boolean): void => {
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(1000, () => done(false));
    sock.once('error', () => done(false));
    sock.once('connect', () => sock.write('PING\r\n'));
    sock.on('data', (d) => {
      buf += d.toString();
      if (buf.includes('\r\n')) done(buf.startsWith('+PONG'));
    });
  });
}

function exited(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => proc.once('exit', () => resolve()));
}

/** Spawns redis-server on the port and waits until it answers; rejects if it exits first (the port was taken). */
async function spawnOn(binary: string, port: number): Promise<ChildProcess> {
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'];
  args.push('--dir', tmpdir(), '--daemonize', 'no', '--loglevel', 'warning');
  const proc = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  proc.stdout?.on('data', (d) => {
    output += d.toString();
  });
  proc.stderr?.on('data', (d) => {
    output += d.toString();
  });
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null || proc.signalCode !== null) {
      throw new Error(`redis-server on port ${port} exited: ${output.trim()}`);
    }
    if (await pings(port)) return proc;
    await sleep(20);
  }
  proc.kill('SIGKILL');
  throw new Error(`redis-server on port ${port} did not answer within 10 s: ${output.trim()}`);
}

/** Starts a redis-server for a test file; stop() it after (it is killed anyway when the process exits). */
export async function startRedis(): Promise<TestRedis> {
  const binary = ensureRedisServer();
  let port = 0;
  let proc: ChildProcess | null = null;
  for (let attempt = 0; proc === null; attempt++) {
    port = await freePort();
    try {
      proc = await spawnOn(binary, port);
    } catch (err) {
      if (attempt >= 4) throw err;
    }
  }
  const killAtExit = (): void => {
    proc?.kill('SIGKILL');
  };
  process.once('exit', killAtExit);
  const stop = async (): Promise<void> => {
    const p = proc;
    if (p === null) return;
    proc = null;
    p.kill('SIGTERM');
    const timer = setTimeout(() => p.kill('SIGKILL'), 5000);
    await exited(p);
    clearTimeout(timer);
  };
  const start = async (): Promise<void> => {
    if (proc !== null) return;
    proc = await spawnOn(binary, port);
  };
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    stop,
    start,
    restart: async () => {
      await stop();
      await start();
    },
  };
}

/**
 * A TCP relay in front of Redis, for one client to go through: `cut()` drops its connections and refuses new ones
 * (a network partition, or a failure mid-call), `heal()` lets connections through again.
 */
export async function redisRelay(
  port: number,
): Promise<{ url: string; cut(): void; heal(): void; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  let blocked = false;
  const srv = createServer((client) => {
    if (blocked) {
      client.destroy();
      return;
    }
    const upstream = createConnection({ host: '127.0.0.1', port });
    for (const [a, b] of [
      [client, upstream],
      [upstream, client],
    ] as const) {
      sockets.add(a);
      a.on('error', () => b.destroy());
      a.on('close', () => {
        sockets.delete(a);
        b.destroy();
      });
      a.pipe(b);
    }
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { port: own } = srv.address() as { port: number };
  const dropAll = (): void => {
    for (const s of sockets) s.destroy();
  };
  return {
    url: `redis://127.0.0.1:${own}`,
    cut: () => {
      blocked = true;
      dropAll();
    },
    heal: () => {
      blocked = false;
    },
    close: () =>
      new Promise<void>((r) => {
        blocked = true;
        dropAll();
        srv.close(() => r());
      }),
  };
}
