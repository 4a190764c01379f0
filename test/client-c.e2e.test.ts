// End-to-end tests of the portable C client (clients/c): it builds with -Wall -Wextra -Werror -std=c99 -pedantic,
// its unit tests pass (hash vectors, the docs/security.md worked example, the framer split at every byte), and its
// example CLI works against the real server: RID pushes with exact bytes, every group target with its exact reply,
// TIME, STCP/DSTCP/HSTCP sessions whose every KEY field is checked against the server's own arithmetic, error
// replies surfaced as error codes, presence events, SYNC answered so the ID stays held, and reconnection with
// re-registration after the server restarts on the same port.

import { type ChildProcessWithoutNullStreams, execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { dstcpField, dstcpKey, hstcpMac, hstcpProof, md5Proof, stcpSessionKey } from '../src/protocol/secure.ts';
import { TestClient } from './helpers/client.ts';
import { ADMIN_TOKEN, startTestServer, type TestServer } from './helpers/server.ts';
import { sleep, waitFor } from './helpers/shards.ts';

const C_DIR = fileURLToPath(new URL('../clients/c/', import.meta.url));
const BIN = join(C_DIR, 'build', 'p2pc');
const exec = promisify(execFile);

let srv: TestServer;
const procs: Proc[] = [];
let mails = 0;

/** A fresh account on `s`: its e-mail (the UID of secure sessions), KEY and operator API path. */
function account(s: TestServer = srv): { email: string; key: string; path: string } {
  const email = `cclient-${++mails}-${process.pid}@c.example`;
  return { email, key: s.newKey(email), path: `/api/v1/accounts/${email}` };
}

interface Run {
  code: number | null;
  stdout: Buffer;
  stderr: string;
}

/** Runs the CLI to completion. */
function run(args: string[], ms = 10000): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(BIN, args);
    const out: Buffer[] = [];
    let err = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`p2pc ${args.join(' ')} did not finish; stderr: ${err}`));
    }, ms);
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => {
      err += b.toString('latin1');
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: Buffer.concat(out), stderr: err });
    });
  });
}

/** A long-running CLI (listen or shell): its stdout lines, read in order. */
class Proc {
  readonly child: ChildProcessWithoutNullStreams;
  out = Buffer.alloc(0);
  err = '';
  private cursor = 0;
  exitCode: number | null = null;
  exited = false;

  constructor(args: string[]) {
    this.child = spawn(BIN, args);
    this.child.stdout.on('data', (b: Buffer) => {
      this.out = Buffer.concat([this.out, b]);
    });
    this.child.stderr.on('data', (b: Buffer) => {
      this.err += b.toString('latin1');
    });
    this.child.on('exit', (code) => {
      this.exited = true;
      this.exitCode = code;
    });
    procs.push(this);
  }

  /** Complete stdout lines (latin1: one char per byte). */
  lines(): string[] {
    const text = this.out.toString('latin1');
    return text
      .slice(0, text.lastIndexOf('\n') + 1)
      .split('\n')
      .slice(0, -1);
  }

  /** Lines other than SYNC ticks. */
  events(): string[] {
    return this.lines().filter((l) => !l.startsWith('SYNC:'));
  }

  /** The next unread line that is not a SYNC tick. */
  async next(ms = 5000): Promise<string> {
    const deadline = Date.now() + ms;
    for (;;) {
      const lines = this.lines();
      while (this.cursor < lines.length) {
        const l = lines[this.cursor++]!;
        if (!l.startsWith('SYNC:')) return l;
      }
      if (this.exited) throw new Error(`p2pc exited (${this.exitCode}); stderr: ${this.err}`);
      if (Date.now() > deadline) throw new Error(`no line within ${ms} ms; stdout: ${JSON.stringify(lines)}`);
      await sleep(5);
    }
  }

  /** Lines not read yet (SYNC ticks left out). */
  unread(): string[] {
    return this.lines()
      .slice(this.cursor)
      .filter((l) => !l.startsWith('SYNC:'));
  }

  send(line: string): void {
    this.child.stdin.write(`${line}\n`);
  }

  stop(): void {
    if (!this.exited) this.child.kill('SIGTERM');
  }
}

function dev(key: string, id: string, s: TestServer = srv): string[] {
  return ['--port', String(s.port), '--key', key, '--id', id];
}

// biome-ignore lint/suspicious/noExplicitAny: JSON bodies
async function api(method: string, path: string, body?: unknown): Promise<any> {
  const r = await fetch(`http://127.0.0.1:${srv.httpPort}${path}`, {
    method,
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  expect(r.status, `${method} ${path} → ${text}`).toBeLessThan(300);
  return text === '' ? undefined : JSON.parse(text);
}

beforeAll(async () => {
  // The build CI runs: -Wall -Wextra -Werror -std=c99 -pedantic (see clients/c/Makefile), every file rebuilt.
  await exec('make', ['-B', '-s', '-C', C_DIR, 'all']);
  srv = await startTestServer();
}, 60000);
afterAll(async () => {
  await srv?.stop();
});
afterEach(async () => {
  for (const p of procs.splice(0)) p.stop();
});

describe('build and unit tests', () => {
  it('make test: MD5/SHA-256/HMAC vectors, docs/security.md example, framer, scripted sessions', async () => {
    const { stdout } = await exec('make', ['-s', '-C', C_DIR, 'test']);
    const m = /p2pc unit tests: (\d+) passed, (\d+) failed/.exec(stdout);
    expect(m, stdout).not.toBeNull();
    expect(Number(m![2])).toBe(0);
    expect(Number(m![1])).toBeGreaterThan(300);
  });
});

describe('plain TCP', () => {
  it('RID push: the receiver prints exactly the bytes sent (colons, spaces, tabs, UTF-8, NUL, 0xFF)', async () => {
    const { key } = account();
    const b = new Proc([...dev(key, 'b'), 'listen']);
    expect(await b.next()).toBe('CONNECTED:B');
    const r = await run([
      ...dev(key, 'A'),
      '--escape',
      'push',
      'RID:b:hello',
      'push',
      'RID:B:a:b:c',
      'push',
      'RID:B:  two  spaces\ttab ',
      'push',
      'RID:B:h\u00e9llo \u2603',
      'push',
      'RID:B:\\x00\\x01\\xff\\\\x',
      'push',
      'RID:B:',
      'cmd',
      'RETDATA:0',
    ]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    // RETDATA: the last five payloads this connection pushed, oldest first, as bytes.
    expect(r.stdout).toEqual(
      Buffer.concat([
        Buffer.from(`${'[OK:DATA_SENT]\n'.repeat(6)}[OK:>a:b:c>  two  spaces\ttab >`, 'latin1'),
        Buffer.from('h\u00e9llo \u2603', 'utf8'),
        Buffer.from('>\x00\x01\xff\\x>]\n', 'latin1'),
      ]),
    );
    const want = Buffer.concat([
      Buffer.from('CONNECTED:B\nPUSH:hello\nPUSH:a:b:c\nPUSH:  two  spaces\ttab \n', 'latin1'),
      Buffer.from('PUSH:h\u00e9llo \u2603\n', 'utf8'),
      Buffer.from('PUSH:\x00\x01\xff\\x\nPUSH:\n', 'latin1'),
    ]);
    await waitFor(() => b.out.length >= want.length, 'the six deliveries');
    expect(b.out).toEqual(want);
  });

  it('server refusals surface as P2PC_FAIL_* codes; local failures as P2PC_ERR_*', async () => {
    const { key } = account();
    let r = await run([...dev(key, 'A'), 'push', 'RID:NOBODY:x']);
    expect([r.code, r.stdout.toString(), r.stderr]).toEqual([
      1,
      '[FAIL:REM_ID]\n',
      'p2pc: push: P2PC_FAIL_REM_ID ([FAIL:REM_ID])\n',
    ]);
    r = await run([...dev('0123456789ABCDEF0123456789ABCDEF', 'A'), 'cmd', 'GID']);
    expect([r.code, r.stdout.toString(), r.stderr]).toEqual([
      1,
      '[FAIL:INVALID_KEY]\n',
      'p2pc: register: P2PC_FAIL_INVALID_KEY ([FAIL:INVALID_KEY])\n',
    ]);
    r = await run([...dev(key, 'A'), 'time', '+99:99']);
    expect([r.code, r.stdout.toString(), r.stderr]).toEqual([
      1,
      '[FAIL:INVALID_DATA]\n',
      'p2pc: time: P2PC_FAIL_INVALID_DATA ([FAIL:INVALID_DATA])\n',
    ]);
    r = await run([...dev(key, 'A'), 'cmd', 'RETDATA:1']);
    expect([r.code, r.stdout.toString()]).toEqual([1, '[FAIL:NO_DATA]\n']);
    // The ID held by a live device.
    const b = new Proc([...dev(key, 'B'), 'listen']);
    expect(await b.next()).toBe('CONNECTED:B');
    r = await run([...dev(key, 'b'), 'cmd', 'GID']);
    expect([r.code, r.stdout.toString(), r.stderr]).toEqual([
      1,
      '[FAIL:NODEEXIST]\n',
      'p2pc: register: P2PC_FAIL_NODEEXIST ([FAIL:NODEEXIST])\n',
    ]);
    // Refused before anything is sent.
    r = await run([...dev(key, 'A'), 'listen', '--for', '10']);
    expect([r.code, r.stdout.toString()]).toEqual([2, '']);
    expect(r.stderr).toMatch(/^p2pc: unknown action --for \(options go before the actions\)\nusage: /);
    r = await run([...dev(key, 'bad id'), 'cmd', 'GID']);
    expect([r.code, r.stdout.toString(), r.stderr]).toEqual([3, '', 'p2pc: register: P2PC_ERR_ARG\n']);
    // Nothing listening.
    const free = await new Promise<number>((resolve) => {
      const s = createServer().listen(0, '127.0.0.1', () => {
        const port = (s.address() as { port: number }).port;
        s.close(() => resolve(port));
      });
    });
    r = await run(['--port', String(free), '--key', key, '--id', 'A', 'cmd', 'GID']);
    expect([r.code, r.stdout.toString(), r.stderr]).toEqual([3, '', 'p2pc: register: P2PC_ERR_IO\n']);
  });

  it('TIME: legacy reply exact for its own instant; ISO, EPOCH and RFC2822 formats', async () => {
    const { key } = account();
    const before = Math.floor(Date.now() / 1000);
    const r = await run([
      ...dev(key, 'T'),
      'time',
      '+05:30',
      'time',
      '+05:30:ISO',
      'time',
      'Asia/Kolkata:EPOCH',
      'time',
      '-03:30:RFC2822',
    ]);
    const after = Math.ceil(Date.now() / 1000);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const [legacy, iso, epoch, rfc] = r.stdout.toString().split('\n');
    const u = Number(/\((\d+)\)\]$/.exec(legacy!)?.[1]);
    expect(u).toBeGreaterThanOrEqual(before);
    expect(u).toBeLessThanOrEqual(after);
    const d = new Date((u + 330 * 60) * 1000);
    const p2 = (n: number): string => String(n).padStart(2, '0');
    const wd = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'][d.getUTCDay()];
    expect(legacy).toBe(
      `[IST:(${wd})(${d.getUTCDate()},${p2(d.getUTCMonth() + 1)},${d.getUTCFullYear()})` +
        `(${p2(d.getUTCHours())}:${p2(d.getUTCMinutes())}:${p2(d.getUTCSeconds())})(${u})]`,
    );
    expect(iso).toMatch(/^\[OK:\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\+05:30\]$/);
    const e = Number(/^\[OK:(\d+)\]$/.exec(epoch!)?.[1]);
    expect(e).toBeGreaterThanOrEqual(before);
    expect(e).toBeLessThanOrEqual(after);
    expect(rfc).toMatch(/^\[OK:(Sun|Mon|Tue|Wed|Thu|Fri|Sat), \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} -0330\]$/);
  });

  it('presence: a watcher sees a device come online and go offline', async () => {
    const { key } = account();
    const w = new Proc([...dev(key, 'W'), 'watch', 'RID:pa', 'listen']);
    expect(await w.next()).toBe('CONNECTED:W');
    const r = await run([...dev(key, 'pa'), 'cmd', 'GID']);
    expect(r.stdout.toString()).toBe('[OK:PA]\n');
    expect(await w.next()).toBe('PRESENCE:PA:ONLINE');
    expect(await w.next()).toBe('PRESENCE:PA:OFFLINE');
  });
});

describe('every group target, with a tree, a router and aliases built through the operator API', () => {
  it('FRIENDS, CHILDS, ALLCHILDS, PARENT, RO, ALIAS: exact replies and deliveries, never to the sender', async () => {
    const { key, path } = account();
    //  ROOT ─ P ─ A, B, C (C offline)     router HALL: A, B, P     alias LAMP → B, MANY → A, B, C
    for (const [id, parent] of [
      ['ROOT', null],
      ['P', 'ROOT'],
      ['A', 'P'],
      ['B', 'P'],
      ['C', 'P'],
    ]) {
      await api('POST', `${path}/tree/nodes`, { id, parent });
    }
    await api('POST', `${path}/routers`, { name: 'hall' });
    for (const id of ['A', 'B', 'P']) await api('PUT', `${path}/routers/hall/members/${id}`);
    await api('PUT', `${path}/aliases/lamp`, { target: 'B' });
    await api('PUT', `${path}/aliases/many`, { targets: ['A', 'B', 'C'] });

    const sh: Record<string, Proc> = {};
    for (const id of ['ROOT', 'P', 'A', 'B']) sh[id] = new Proc([...dev(key, id), 'shell']);
    for (const id of ['ROOT', 'P', 'A', 'B']) expect(await sh[id]!.next()).toBe(`CONNECTED:${id}`);

    let n = 0;
    const step = async (from: string, target: string, reply: string, to: string[]): Promise<void> => {
      const data = `m${++n}`;
      sh[from]!.send(`push ${target}:${data}`);
      expect(await sh[from]!.next(), `${from} ${target}`).toBe(reply);
      for (const id of to) expect(await sh[id]!.next(), `${id} from ${from} ${target}`).toBe(`PUSH:${data}`);
    };
    await step('A', 'FRIENDS', '[OK:1/2]', ['B']);
    await step('B', 'FRIENDS', '[OK:1/2]', ['A']);
    await step('P', 'CHILDS', '[OK:2/3]', ['A', 'B']);
    await step('ROOT', 'CHILDS', '[OK:ALL_1]', ['P']);
    await step('ROOT', 'ALLCHILDS', '[OK:3/4]', ['P', 'A', 'B']);
    await step('P', 'ALLCHILDS', '[OK:2/3]', ['A', 'B']);
    await step('B', 'CHILDS', '[FAIL:NO_ID]', []);
    await step('A', 'PARENT', '[OK:DATA_SENT]', ['P']);
    await step('P', 'PARENT', '[OK:DATA_SENT]', ['ROOT']);
    await step('ROOT', 'PARENT', '[FAIL:NO_PARENT]', []);
    await step('A', 'RO:hall', '[OK:ALL_2]', ['B', 'P']);
    await step('P', 'RO:HALL', '[OK:ALL_2]', ['A', 'B']);
    await step('ROOT', 'RO:HALL', '[FAIL:NO_ROUTER]', []);
    await step('A', 'ALIAS:lamp', '[OK:DATA_SENT]', ['B']);
    await step('A', 'ALIAS:MANY', '[OK:1/2]', ['B']);
    await step('P', 'ALIAS:many', '[OK:2/3]', ['A', 'B']);
    await step('A', 'ALIAS:nope', '[FAIL:NO_ALIAS]', []);
    await step('A', 'RID:root', '[OK:DATA_SENT]', ['ROOT']);
    // Nobody got anything else (in particular no sender its own group message).
    await sleep(150);
    for (const id of ['ROOT', 'P', 'A', 'B']) expect(sh[id]!.unread(), id).toEqual([]);
    // The refusals were reported as error codes on stderr.
    expect(sh['B']!.err).toBe('p2pc: push: P2PC_FAIL_NO_ID ([FAIL:NO_ID])\n');
    expect(sh['ROOT']!.err).toBe(
      'p2pc: push: P2PC_FAIL_NO_PARENT ([FAIL:NO_PARENT])\np2pc: push: P2PC_FAIL_NO_ROUTER ([FAIL:NO_ROUTER])\n',
    );
    expect(sh['A']!.err).toBe('p2pc: push: P2PC_FAIL_NO_ALIAS ([FAIL:NO_ALIAS])\n');
  });
});

// ------------------------------------------------------------------ secure sessions

interface Wire {
  sent: string[];
  received: string[];
}

/** The --trace lines: `> ` sent, `< ` received. */
function wire(stderr: string): Wire {
  const lines = stderr.split('\n');
  return {
    sent: lines.filter((l) => l.startsWith('> ')).map((l) => l.slice(2)),
    received: lines.filter((l) => l.startsWith('< ')).map((l) => l.slice(2)),
  };
}

/**
 * Recomputes, with the server's own functions, every line the client must have sent in a session of `mode`
 * (activation, the commands of `commands` with the KEY field left empty, deactivation, then a plain-KEY
 * command), given the nonces that went over the wire.
 */
function expectedLines(mode: string, key: string, email: string, w: Wire, commands: [string, string][]): string[] {
  const act = new RegExp(`^${mode}:${email.replace(/[.]/g, '\\.')}:ACTIVATE:([0-9A-F]{16}):$`).exec(w.sent[0]!);
  expect(act, w.sent[0]).not.toBeNull();
  const nonce = act![1]!;
  const ok = /^\[OK:([0-9A-F]+):([0-9A-F]+)\]$/.exec(w.received[0]!);
  expect(ok, w.received[0]).not.toBeNull();
  const rnd = ok![1]!;
  expect(rnd).toHaveLength(mode === 'HSTCP' ? 16 : 8);
  expect(ok![2]).toBe(mode === 'HSTCP' ? hstcpProof(key, nonce, rnd) : md5Proof(key, nonce));
  const out = [w.sent[0]!];
  let registered = false;
  let n = 1;
  for (const [pre, post] of commands) {
    let field: string;
    if (mode === 'STCP') field = stcpSessionKey(key, rnd);
    else if (mode === 'DSTCP') {
      const line = `${pre}${post}`;
      field = dstcpKey(key, rnd, dstcpField(line, pre.length, line.length, registered));
    } else field = hstcpMac(key, rnd, n++, `${pre}${post}`);
    out.push(`${pre}${field}${post}`);
    registered = true; // the first command is the ID, answered [OK:<ID>]
  }
  out.push(
    mode === 'HSTCP'
      ? `HSTCP:${email}:DEACTIVATE:${hstcpMac(key, rnd, n, `HSTCP:${email}:DEACTIVATE:`)}`
      : `${mode}:${email}:DEACTIVATE:`,
  );
  return out;
}

describe('secure sessions against the real server', () => {
  for (const mode of ['STCP', 'DSTCP', 'HSTCP']) {
    it(`${mode}: register, push, TIME, deactivate; every KEY field as the server computes it`, async () => {
      const { key, email } = account();
      const flags = ['--secure', mode.toLowerCase(), '--uid', email];
      const l = new Proc([...dev(key, 'L'), ...flags, 'listen']);
      expect(await l.next()).toBe('CONNECTED:L');
      const r = await run([
        ...dev(key, 's'),
        ...flags,
        '--trace',
        'push',
        `RID:l:secret ${mode}`,
        'push',
        'FRIENDS:to friends',
        'time',
        '+00:00:EPOCH',
        'cmd',
        'GID',
        'deactivate',
        'cmd',
        'GID',
      ]);
      const w = wire(r.stderr);
      expect(r.code, r.stderr).toBe(0);
      const out = r.stdout.toString().split('\n');
      expect(out[0]).toBe('[OK:DATA_SENT]');
      expect(out[1]).toBe('[OK:ALL_1]');
      expect(out[2]).toMatch(/^\[OK:\d{10}\]$/);
      expect(out.slice(3)).toEqual(['[OK:S]', `[OK:${mode}_DEACTIVATED]`, '[OK:S]', '']);
      expect(await l.next()).toBe(`PUSH:secret ${mode}`);
      expect(await l.next()).toBe('PUSH:to friends');
      // The exact wire: every KEY field recomputed with src/protocol/secure.ts, then the plain KEY.
      const want = expectedLines(mode, key, email, w, [
        ['TCP:ID:', ':s'],
        ['TCP:PUSH:', `:RID:l:secret ${mode}`],
        ['TCP:PUSH:', ':FRIENDS:to friends'],
        ['TCP:TIME:', ':+00:00:EPOCH'],
        ['TCP:GID:', ''],
      ]);
      expect(w.sent).toEqual([...want, `TCP:GID:${key}`]);
      expect(w.received.slice(1)).toEqual([
        '[OK:S]',
        '[OK:DATA_SENT]',
        '[OK:ALL_1]',
        out[2],
        '[OK:S]',
        `[OK:${mode}_DEACTIVATED]`,
        '[OK:S]',
      ]);
    });
  }

  it('HSTCP with the wrong account e-mail: P2PC_FAIL_INVALID_USERID', async () => {
    const { key } = account();
    const r = await run([...dev(key, 'X'), '--secure', 'hstcp', '--uid', 'nobody@c.example', 'cmd', 'GID']);
    expect([r.code, r.stdout.toString(), r.stderr]).toEqual([
      1,
      '[FAIL:INVALID_USERID]\n',
      'p2pc: register: P2PC_FAIL_INVALID_USERID ([FAIL:INVALID_USERID])\n',
    ]);
  });
});

// ------------------------------------------------------------------ liveness and reconnection

describe('SYNC and reconnection', () => {
  const dir = mkdtempSync(join(tmpdir(), 'p2pc-cclient-'));
  let live: TestServer | undefined;
  afterAll(async () => {
    await live?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('answers SYNC so its ID stays held; re-opens HSTCP and re-registers after a server restart', async () => {
    const node = { COM_CHK: 0.25 };
    live = await startTestServer({ NODE: node }, { keepData: dir });
    const port = live.port;
    const { key, email } = account(live);
    const b = new Proc([...dev(key, 'B', live), '--secure', 'hstcp', '--uid', email, '--backoff', '50:200', 'listen']);
    expect(await b.next()).toBe('CONNECTED:B');

    // A raw connection that never answers misses liveness after two silent ticks and its ID goes to a newcomer;
    // the C client, which answers each [SYNC:...] with an empty line, stays connected and keeps its own.
    const silent = await TestClient.open(port);
    expect(await silent.request(`TCP:ID:${key}:SILENT`)).toBe('[OK:SILENT]');
    await waitFor(() => b.lines().filter((l) => l.startsWith('SYNC:')).length >= 3, 'three SYNC lines', 5000);
    for (const l of b.lines().filter((x) => x.startsWith('SYNC:'))) {
      expect(l).toMatch(/^SYNC:\d{2}\.\d{2}\.\d{4}_\d{2}:\d{2}:\d{2}$/);
    }
    let r = await run([...dev(key, 'silent', live), 'cmd', 'GID']);
    expect(r.stdout.toString()).toBe('[OK:SILENT]\n');
    r = await run([...dev(key, 'b', live), 'cmd', 'GID']);
    expect([r.code, r.stdout.toString()]).toEqual([1, '[FAIL:NODEEXIST]\n']);
    silent.close();

    r = await run([...dev(key, 'A', live), 'push', 'RID:B:before']);
    expect(r.stdout.toString()).toBe('[OK:DATA_SENT]\n');
    expect(await b.next()).toBe('PUSH:before');

    await live.stop();
    live = undefined;
    expect(await b.next()).toBe('DISCONNECTED:P2PC_ERR_CLOSED');
    live = await startTestServer({ NODE: node, PServer: { ServerPort: port } }, { keepData: dir });
    expect(live.port).toBe(port);
    expect(await b.next(10000)).toBe('CONNECTED:B');
    r = await run([...dev(key, 'A', live), 'push', 'RID:B:after']);
    expect(r.stdout.toString()).toBe('[OK:DATA_SENT]\n');
    expect(await b.next()).toBe('PUSH:after');
    expect(b.events()).toEqual([
      'CONNECTED:B',
      'PUSH:before',
      'DISCONNECTED:P2PC_ERR_CLOSED',
      'CONNECTED:B',
      'PUSH:after',
    ]);
    expect(b.err).toBe('');
  });
});
