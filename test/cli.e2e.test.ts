// End-to-end tests of the command line (src/cli.ts), run as child processes with the Node 24 running
// the tests: `account add` against the store of a running server, `start` with its banner and SIGTERM,
// and start-up refused for a bad config file.

import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestClient } from './helpers/client.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const KEY_RE = /^[0-9A-F]{32}$/;

/** The parent's environment without P2PC_ variables (they would configure the child), plus `extra`. */
function childEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.toUpperCase().startsWith('P2PC_')) env[k] = v;
  return { ...env, P2PC_LOG_LEVEL: 'silent', ...extra };
}

/** The nice values of a process's threads named `name` (/proc/<pid>/task/<tid>/stat, field 19). */
function threadNices(pid: number, name: string): number[] {
  const out: number[] = [];
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
    if (stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')) !== name) continue;
    out.push(Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]));
  }
  return out;
}

interface Run {
  child: ChildProcess;
  stdout: string;
  stderr: string;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function runCli(args: string[], env: Record<string, string>): Run {
  const child = spawn(process.execPath, ['src/cli.ts', ...args], {
    cwd: ROOT,
    env: childEnv(env),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const run: Run = {
    child,
    stdout: '',
    stderr: '',
    exit: new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal }))),
  };
  child.stdout!.setEncoding('utf8').on('data', (s: string) => {
    run.stdout += s;
  });
  child.stderr!.setEncoding('utf8').on('data', (s: string) => {
    run.stderr += s;
  });
  return run;
}

/** Waits for the child to exit (killing it past the deadline) and for its output to be complete. */
async function finished(run: Run, ms = 20000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  const timer = setTimeout(() => run.child.kill('SIGKILL'), ms);
  try {
    const r = await run.exit;
    await Promise.all([
      new Promise((res) => (run.child.stdout!.readableEnded ? res(null) : run.child.stdout!.once('close', res))),
      new Promise((res) => (run.child.stderr!.readableEnded ? res(null) : run.child.stderr!.once('close', res))),
    ]);
    return r;
  } finally {
    clearTimeout(timer);
  }
}

async function waitFor(pred: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen({ port: 0, host: '127.0.0.1' }, () => {
      const addr = s.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      s.close(() => resolve(port));
    });
  });
}

/** Connects, retrying while the port is not listening yet. */
async function connectWhenUp(port: number, ms: number): Promise<TestClient> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await TestClient.open(port);
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

describe('p2pcluster account add (against a running server)', () => {
  let srv: TestServer;
  beforeAll(async () => {
    srv = await startTestServer();
  });
  afterAll(async () => {
    await srv?.stop();
  });

  it('prints the new KEY as the last line, and the running server accepts it at once', async () => {
    const run = runCli(['account', 'add', 'someone@example.com', '--password', 'pw'], {
      P2PC_STORE_PATH: srv.dataDir,
    });
    const { code } = await finished(run);
    expect(run.stderr).toBe('');
    expect(code).toBe(0);
    const lines = run.stdout.split('\n');
    expect(lines.pop()).toBe(''); // the output ends with a newline
    const key = lines.at(-1)!;
    expect(key).toMatch(KEY_RE);
    expect(key).not.toBe(srv.key);
    expect(srv.embedded!.accountByEmail('someone@example.com')?.key).toBe(key);

    const a = await TestClient.open(srv.port);
    expect(await a.request(`TCP:ID:${key}:X`)).toBe('[OK:X]');
    // The KEY is matched case-insensitively, and it is a separate account from the server's own.
    const b = await TestClient.open(srv.port);
    expect(await b.request(`TCP:ID:${key.toLowerCase()}:y`)).toBe('[OK:Y]');
    expect(await a.request(`TCP:PUSH:${key}:RID:Y:from the cli account`)).toBe('[OK:DATA_SENT]');
    expect(await b.line()).toBe('PUSH:from the cli account');
    expect(await a.request(`TCP:PUSH:${srv.key}:RID:Y:wrong account`)).toBe('[FAIL:NOKEY]');
    a.close();
    b.close();
  });

  it('refuses a second account with the same e-mail, exiting non-zero', async () => {
    const run = runCli(['account', 'add', 'twice@example.com', '--password', 'pw'], { P2PC_STORE_PATH: srv.dataDir });
    expect((await finished(run)).code).toBe(0);
    const again = runCli(['account', 'add', 'twice@example.com', '--password', 'pw'], {
      P2PC_STORE_PATH: srv.dataDir,
    });
    const { code } = await finished(again);
    expect(code).not.toBe(0);
    expect(again.stderr).toContain('twice@example.com');
    expect(again.stdout).not.toMatch(/[0-9A-F]{32}/);
  });

  it('exits non-zero with a message for a bad e-mail address, printing no KEY', async () => {
    const run = runCli(['account', 'add', 'not-an-email', '--password', 'pw'], { P2PC_STORE_PATH: srv.dataDir });
    const { code } = await finished(run);
    expect(code).not.toBe(0);
    expect(code).not.toBe(null);
    expect(run.stderr).toContain('not-an-email');
    expect(run.stdout).not.toMatch(/[0-9A-F]{32}/);
    expect(srv.embedded!.accountByEmail('not-an-email')).toBeNull();
  });
});

describe('p2pcluster start', () => {
  const dirs: string[] = [];
  const children: ChildProcess[] = [];
  afterAll(() => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  /**
   * A free device port on 127.0.0.1, an HTTP port the system picks (not the default 8081: a server started with
   * `npm start` beside the tests has it) and a fresh store (removed after the suite), as a child server's environment.
   */
  async function serverEnv(): Promise<{ port: number; env: Record<string, string> }> {
    const port = await freePort();
    const dir = mkdtempSync(join(tmpdir(), 'p2pc-cli-'));
    dirs.push(dir);
    return {
      port,
      env: {
        P2PC_PSERVER_SERVERPORT: String(port),
        P2PC_PSERVER_HOST: '127.0.0.1',
        P2PC_HTTP_PORT: '0',
        P2PC_HTTP_HOST: '127.0.0.1',
        P2PC_STORE_PATH: dir,
      },
    };
  }

  it('prints the demo-account banner with a KEY that works over TCP, and exits 0 on SIGTERM', async () => {
    const { port, env } = await serverEnv();
    const run = runCli(['start'], { ...env, P2PC_PSERVER_WORKERS: '2' });
    children.push(run.child);
    await waitFor(() => /KEY [0-9A-F]{32}\n/.test(run.stdout) || run.child.exitCode !== null, 20000, 'the banner');
    expect(run.child.exitCode).toBe(null);
    expect(run.stdout).toContain('P2Pcluster: created the demo account demo@p2pcluster.local');
    const key = /^ {2}KEY ([0-9A-F]{32})$/m.exec(run.stdout)![1]!;
    expect(run.stdout).toContain(`nc localhost ${port}     then type   TCP:ID:${key}:123`);

    const a = await connectWhenUp(port, 20000);
    expect(await a.request(`TCP:ID:${key}:123`)).toBe('[OK:123]');
    const b = await TestClient.open(port);
    expect(await b.request(`TCP:ID:${key}:1234`)).toBe('[OK:1234]');
    expect(await a.request(`TCP:PUSH:${key}:RID:1234:Hello1234`)).toBe('[OK:DATA_SENT]');
    expect(await b.line()).toBe('PUSH:Hello1234');

    run.child.kill('SIGTERM');
    const { code, signal } = await finished(run);
    expect(signal).toBe(null);
    expect(code).toBe(0);
    expect(run.stderr).toBe('');
    // Shutting down closes the device connections.
    await a.closedByServer();
    await b.closedByServer();
  });

  it("runs V8's worker threads at PServer.V8_THREADS_NICE (0 by default: the process's priority)", async () => {
    for (const [setting, want] of [
      [null, 0],
      ['19', 19],
    ] as const) {
      const { port, env } = await serverEnv();
      const run = runCli(['start'], {
        ...env,
        ...(setting === null ? {} : { P2PC_PSERVER_V8_THREADS_NICE: setting, P2PC_PSERVER_PARALLEL_SCAVENGE: '0' }),
      });
      children.push(run.child);
      (await connectWhenUp(port, 20000)).close();
      const nices = threadNices(run.child.pid!, 'V8Worker');
      expect(nices.length).toBeGreaterThan(0);
      expect(new Set(nices)).toEqual(new Set([want]));
      // The shard and supervisor threads keep the process's priority.
      expect(threadNices(run.child.pid!, 'shard-0')).toEqual([0]);
      run.child.kill('SIGTERM');
      expect((await finished(run)).code).toBe(0);
    }
  });

  it('prints no banner on a store that already has accounts', async () => {
    const fresh = await serverEnv();
    const port = fresh.port;
    const env = { ...fresh.env, P2PC_PSERVER_WORKERS: '2' };
    const add = runCli(['account', 'add', 'first@example.com'], env);
    expect((await finished(add)).code).toBe(0);
    const key = add.stdout.trimEnd().split('\n').at(-1)!;
    expect(key).toMatch(KEY_RE);
    const run = runCli(['start'], env);
    children.push(run.child);
    const a = await connectWhenUp(port, 20000);
    expect(await a.request(`TCP:ID:${key}:ONE`)).toBe('[OK:ONE]');
    run.child.kill('SIGTERM');
    expect((await finished(run)).code).toBe(0);
    expect(run.stdout).not.toContain('demo account');
    expect(run.stdout).not.toMatch(/[0-9A-F]{32}/);
    a.close();
  });

  for (const [what, line, text] of [
    ['an unknown key', 'BOGUS_KEY=1', 'BOGUS_KEY'],
    ['a bad value', 'COM_CHK=soon', 'COM_CHK'],
  ] as const) {
    it(`refuses to start with ${what} in --config, naming the file and line`, async () => {
      const port = await freePort();
      const dir = mkdtempSync(join(tmpdir(), 'p2pc-cli-'));
      dirs.push(dir);
      const conf = join(dir, 'Server.conf');
      writeFileSync(
        conf,
        ['// test config', 'PServer={', '  MAXLOAD=10', '}', 'NODE={', `  ${line}`, '}', ''].join('\n'),
      );
      const run = runCli(['start', '--config', conf], {
        P2PC_PSERVER_SERVERPORT: String(port),
        P2PC_HTTP_PORT: '0',
        P2PC_STORE_PATH: join(dir, 'store'),
      });
      children.push(run.child);
      const { code } = await finished(run);
      expect(code).not.toBe(0);
      expect(code).not.toBe(null);
      expect(run.stderr).toContain(`${conf}:6`);
      expect(run.stderr).toContain(text);
      expect(run.stdout).not.toContain('demo account');
      // Nothing listens on the port.
      await expect(TestClient.open(port)).rejects.toThrow();
    });
  }
});
