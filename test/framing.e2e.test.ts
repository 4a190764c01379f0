// End-to-end framing tests (PROTOCOL.md §1) over real TCP against the real server (supervisor + 2 shard
// worker threads on one reusePort port): however the bytes of a command script are split into segments,
// the replies are the same; idle flush of unterminated commands; overlong lines; binary garbage.
//
// Two servers: `srv` runs the default configuration (NODE.LINE_IDLE_MS = 150 ms). `chunky` raises
// LINE_IDLE_MS to 5 s so that a scheduling hiccup between two writes of a split script on this shared
// 2-core machine can never make the server take half a line as a complete legacy command.

import fc from 'fast-check';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { prng, splitAt } from './helpers/chunks.ts';
import { TestClient } from './helpers/client.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';
import { openPerShard, openTotal, sleep, waitFor } from './helpers/shards.ts';

let srv: TestServer;
let chunky: TestServer;
const opened: TestClient[] = [];

beforeAll(async () => {
  [srv, chunky] = await Promise.all([startTestServer(), startTestServer({ NODE: { LINE_IDLE_MS: 5000 } })]);
  expect(srv.config.NODE.LINE_IDLE_MS).toBe(150);
  expect(srv.config.NODE.MAX_LINE).toBe(4096);
  expect(chunky.config.NODE.MAX_LINE).toBe(4096);
  expect(srv.supervisor.shardCount).toBe(2);
});
afterAll(async () => {
  await Promise.all([srv?.stop(), chunky?.stop()]);
});
afterEach(async () => {
  for (const c of opened.splice(0)) c.close();
  await waitFor(() => openTotal(srv) === 0 && openTotal(chunky) === 0, 'every connection of the test to close');
});

// ------------------------------------------------------------------ helpers

async function open(s: TestServer): Promise<TestClient> {
  const c = await TestClient.open(s.port);
  opened.push(c);
  return c;
}

async function dev(s: TestServer, key: string, id: string): Promise<TestClient> {
  const c = await open(s);
  expect(await c.request(`TCP:ID:${key}:${id}`)).toBe(`[OK:${id.toUpperCase()}]`);
  return c;
}

/**
 * Opens connections to `s` until one lands on `shard`. Misplaced ones are closed at once: left open without a
 * command, the server would close them after NODE.WAIT_FOR_CMD, in the middle of a later count.
 */
async function openOn(s: TestServer, shard: number): Promise<TestClient> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const mine = (): number => opened.filter((c) => !c.closed && c.socket.remotePort === s.port).length;
    await waitFor(() => openTotal(s) === mine(), 'connection counts to settle');
    const before = openPerShard(s);
    const c = await open(s);
    // The shard whose count went up took it (a count elsewhere may go down meanwhile: a connection of an earlier
    // test the server closes for never sending a command).
    const landed = (): number => openPerShard(s).findIndex((v, i) => v > before[i]!);
    // Rarely (under load) a connection is not seen by any shard within seconds: leave it and take another one.
    const seen = await waitFor(() => landed() >= 0, 'the server to count the new connection', 2000).then(
      () => true,
      () => false,
    );
    if (!seen) {
      c.close();
      await waitFor(() => c.closed, 'the unseen connection to close');
      continue;
    }
    const k = landed();
    if (k === shard) return c;
    c.close();
    // Counted gone before the next attempt, so its close cannot hide the next connection's arrival.
    await waitFor(() => openPerShard(s)[k]! <= before[k]!, 'the server to see the misplaced connection closed');
  }
  throw new Error(`no connection landed on shard ${shard}`);
}

// ------------------------------------------------------------------ the representative script

interface Script {
  bytes: string;
  /** Replies the sender A must get, in order. */
  replies: string[];
  /** Lines the recipient B must get, in order. */
  pushes: string[];
}

/**
 * One connection registers twice (ID, REMID, ID), pushes RID and FRIENDS, sends empty lines and a
 * non-command, reads RETDATA and GID, and ends with a push B waits for. B is registered before.
 */
function script(
  key: string,
  tmp: string,
  a: string,
  b: string,
  eol: (i: number) => string = (i) => (i % 3 === 1 ? '\n' : '\r\n'),
): Script {
  const bin = '\xe9\xff\x00z';
  const steps: [string, string | null, string | null][] = [
    [`TCP:ID:${key.toLowerCase()}:${tmp}`, `[OK:${tmp.toUpperCase()}]`, null],
    [`TCP:REMID:${key}`, '[OK:NODEREMOVED]', null],
    [`TCP:ID:${key}:${a}`, `[OK:${a.toUpperCase()}]`, null],
    [`TCP:PUSH:${key}:RID:${b}:x:y`, '[OK:DATA_SENT]', 'PUSH:x:y'],
    ['', null, null],
    ['HELLO', '[FAIL:UNKNOWN_COMMAND]', null],
    [`TCP:PUSH:${key}:FRIENDS:${bin}`, '[OK:ALL_1]', `PUSH:${bin}`],
    ['', null, null],
    [`TCP:RETDATA:${key}:0`, `[OK:>x:y>${bin}]`, null],
    [`TCP:GID:${key}`, `[OK:${a.toUpperCase()}]`, null],
    [`TCP:PUSH:${key}:RID:${b.toLowerCase()}:END`, '[OK:DATA_SENT]', 'PUSH:END'],
  ];
  const s: Script = { bytes: '', replies: [], pushes: [] };
  steps.forEach(([cmd, reply, push], i) => {
    s.bytes += cmd + eol(i);
    if (reply !== null) s.replies.push(reply);
    if (push !== null) s.pushes.push(push);
  });
  return s;
}

let seq = 0;

/**
 * Runs the script over a fresh account and a fresh pair of devices on `chunky`, writing the parts
 * returned by `split`, awaiting `gap()` between writes. Returns what A and B received.
 */
async function runScript(
  split: (bytes: string) => string[],
  gap: () => Promise<void> = () => sleep(2),
  eol?: (i: number) => string,
): Promise<{ replies: string[]; pushes: string[]; expected: Script }> {
  const key = chunky.newKey();
  const n = String(++seq).padStart(5, '0');
  const b = await dev(chunky, key, `fb${n}`);
  const a = await open(chunky);
  const sc = script(key, `ft${n}`, `fa${n}`, `fb${n}`, eol);
  const parts = split(sc.bytes);
  expect(parts.join('')).toBe(sc.bytes);
  for (let i = 0; i < parts.length; i++) {
    if (i > 0) await gap();
    a.write(parts[i]!);
  }
  const replies = await a.lines(sc.replies.length);
  const pushes = await b.lines(sc.pushes.length);
  // Nothing beyond the expected lines (the last ones are sentinels: GID and the END push).
  expect(a.buffer).toBe('');
  expect(b.buffer).toBe('');
  a.close();
  b.close();
  return { replies, pushes, expected: sc };
}

// ------------------------------------------------------------------ segmentation

describe('segmentation never changes the replies', () => {
  it('the whole script in one write (several commands, two registrations, in one segment)', async () => {
    const r = await runScript((s) => [s]);
    expect(r.replies).toEqual(r.expected.replies);
    expect(r.pushes).toEqual(r.expected.pushes);
  });

  it('CRLF only and LF only give the same replies (always CRLF-terminated)', async () => {
    for (const eol of [() => '\r\n', () => '\n']) {
      const r = await runScript((s) => [s], undefined, eol);
      expect(r.replies).toEqual(r.expected.replies);
      expect(r.pushes).toEqual(r.expected.pushes);
    }
  });

  it('one byte per write, each a separate segment', async () => {
    const r = await runScript(
      (s) => [...s],
      () => sleep(1),
    );
    expect(r.replies).toEqual(r.expected.replies);
    expect(r.pushes).toEqual(r.expected.pushes);
  });

  it('split into two writes at every byte boundary', async () => {
    const len = script(chunky.key, 'ft00000', 'fa00000', 'fb00000').bytes.length;
    const bad: { at: number; replies: string[]; pushes: string[] }[] = [];
    for (let at = 1; at < len; at++) {
      const r = await runScript((s) => {
        expect(s.length).toBe(len);
        return splitAt(s, [at]);
      });
      const ok =
        JSON.stringify(r.replies) === JSON.stringify(r.expected.replies) &&
        JSON.stringify(r.pushes) === JSON.stringify(r.expected.pushes);
      if (!ok) bad.push({ at, replies: r.replies, pushes: r.pushes });
    }
    expect(bad).toEqual([]);
  }, 60000);

  it('property: random chunkings of the script always yield the same replies', async () => {
    const len = script(chunky.key, 'ft00000', 'fa00000', 'fb00000').bytes.length;
    await fc.assert(
      fc.asyncProperty(
        fc.uniqueArray(fc.integer({ min: 1, max: len - 1 }), { maxLength: 24 }),
        fc.constantFrom(0, 1, 2),
        async (cuts, gapMs) => {
          const sorted = [...cuts].sort((x, y) => x - y);
          const r = await runScript(
            (s) => {
              expect(s.length).toBe(len);
              return splitAt(s, sorted);
            },
            () => (gapMs === 0 ? new Promise((res) => setImmediate(res)) : sleep(gapMs)),
          );
          expect(r.replies).toEqual(r.expected.replies);
          expect(r.pushes).toEqual(r.expected.pushes);
        },
      ),
      { numRuns: 30 },
    );
  }, 60000);

  it('an HTTP request is recognised however its first bytes are split', async () => {
    const bad: { request: string; at: number[]; got: string; closed: boolean }[] = [];
    const requests: [string, string][] = [
      ['GET /api/v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', 'HTTP/1.1 200 OK'],
      ['POST /api/v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', 'HTTP/1.1 405 Method Not Allowed'],
    ];
    for (const [request, status] of requests) {
      const splits: number[][] = [[]];
      for (let at = 1; at <= 8; at++) splits.push([at]);
      splits.push(Array.from({ length: 7 }, (_, i) => i + 1)); // the first 8 bytes one by one
      for (const at of splits) {
        const c = await open(chunky);
        const parts = splitAt(request, at);
        for (let i = 0; i < parts.length; i++) {
          if (i > 0) await sleep(2);
          c.write(parts[i]!);
        }
        try {
          await c.closedByServer(2000);
        } catch {
          // Not closed: recorded below.
        }
        if (!c.buffer.startsWith(`${status}\r\n`) || !c.closed)
          bad.push({ request, at, got: c.buffer, closed: c.closed });
      }
    }
    expect(bad).toEqual([]);
  }, 60000);
});

// ------------------------------------------------------------------ legacy idle flush

describe('unterminated commands (NODE.LINE_IDLE_MS)', () => {
  it('an unterminated command is executed after the idle time', async () => {
    const k = srv.newKey();
    const b = await dev(srv, k, 'idle-b');
    const a = await open(srv);
    a.write(`TCP:ID:${k}:idle-a`);
    expect(await a.line()).toBe('[OK:IDLE-A]');
    a.write(`TCP:PUSH:${k}:RID:idle-b:no terminator`);
    expect(await a.line()).toBe('[OK:DATA_SENT]');
    expect(await b.line()).toBe('PUSH:no terminator');
    // A CR at the end of the unterminated command is dropped like the CR of a CRLF.
    a.write(`TCP:PUSH:${k}:FRIENDS:with cr\r`);
    expect(await a.line()).toBe('[OK:ALL_1]');
    expect(await b.line()).toBe('PUSH:with cr');
    // The terminator arriving late is an empty line: no second execution, no reply.
    a.write('\n');
    expect(await a.request(`TCP:RETDATA:${k}:0`)).toBe('[OK:>no terminator>with cr]');
    // Complete commands then an unterminated tail in one write: all run, in order.
    a.write(`TCP:GID:${k}\r\nTCP:PUSH:${k}:RID:idle-b:one\nTCP:PUSH:${k}:RID:idle-b:tail`);
    expect(await a.lines(3)).toEqual(['[OK:IDLE-A]', '[OK:DATA_SENT]', '[OK:DATA_SENT]']);
    expect(await b.lines(2)).toEqual(['PUSH:one', 'PUSH:tail']);
    expect(await a.request(`TCP:GID:${k}`)).toBe('[OK:IDLE-A]');
    expect(a.buffer).toBe('');
    expect(b.buffer).toBe('');
  });
});

// ------------------------------------------------------------------ overlong lines

describe('overlong lines (NODE.MAX_LINE)', () => {
  const MAX = 4096;
  /** A PUSH line to `to` of exactly `len` bytes (without terminator), and its payload. */
  function pushOfLength(key: string, to: string, len: number): { line: string; data: string } {
    const head = `TCP:PUSH:${key}:RID:${to}:`;
    const data = 'd'.repeat(len - head.length);
    return { line: head + data, data };
  }

  it('one overlong line then a valid command in the same write', async () => {
    const k = srv.newKey();
    const a = await dev(srv, k, 'ol-a');
    a.write(`${'A'.repeat(5000)}\r\nTCP:GID:${k}\r\n`);
    expect(await a.lines(2)).toEqual(['[FAIL:LINE_TOO_LONG]', '[OK:OL-A]']);
    // Before registration too.
    const u = await open(srv);
    u.write(`TCP:ID:${k}:${'x'.repeat(MAX)}\nTCP:ID:${k}:ol-u\n`);
    expect(await u.lines(2)).toEqual(['[FAIL:LINE_TOO_LONG]', '[OK:OL-U]']);
  });

  it('exactly MAX_LINE bytes is a command; MAX_LINE + 1 is too long (with LF, CRLF, and a CR split off)', async () => {
    const k = chunky.newKey();
    const a = await dev(chunky, k, 'edge-a');
    const b = await dev(chunky, k, 'edge-b');
    const fit = pushOfLength(k, 'edge-b', MAX);
    const over = pushOfLength(k, 'edge-b', MAX + 1);
    expect(fit.line.length).toBe(MAX);
    for (const [bytes, reply] of [
      [`${fit.line}\n`, '[OK:DATA_SENT]'],
      [`${fit.line}\r\n`, '[OK:DATA_SENT]'],
      [`${over.line}\n`, '[FAIL:LINE_TOO_LONG]'],
      [`${over.line}\r\n`, '[FAIL:LINE_TOO_LONG]'],
    ] as const) {
      a.write(bytes);
      expect(await a.line(), `${bytes.length} bytes`).toBe(reply);
      if (reply === '[OK:DATA_SENT]') expect(await b.line()).toBe(`PUSH:${fit.data}`);
    }
    // MAX_LINE bytes and the CR in one segment, the LF in the next: not too long.
    a.write(`${fit.line}\r`);
    await sleep(20);
    a.write('\n');
    expect(await a.line()).toBe('[OK:DATA_SENT]');
    expect(await b.line()).toBe(`PUSH:${fit.data}`);
    // MAX_LINE + 1 bytes unterminated: too long already, and only once when the LF comes.
    a.write(over.line);
    await sleep(20);
    a.write(`\r\nTCP:GID:${k}\r\n`);
    expect(await a.lines(2)).toEqual(['[FAIL:LINE_TOO_LONG]', '[OK:EDGE-A]']);
    expect(b.buffer).toBe('');
  });

  it('an overlong line spread over many writes is reported once and discarded up to the next LF', async () => {
    const k = chunky.newKey();
    const a = await dev(chunky, k, 'spread-a');
    const b = await dev(chunky, k, 'spread-b');
    // Looks like a valid push, but 20 000 bytes long: B must never see any of it.
    a.write(`TCP:PUSH:${k}:RID:spread-b:`);
    for (let i = 0; i < 10; i++) {
      await sleep(5);
      a.write('p'.repeat(2000));
    }
    await sleep(5);
    a.write(`tail\r\nTCP:PUSH:${k}:RID:spread-b:after\r\n`);
    expect(await a.lines(2)).toEqual(['[FAIL:LINE_TOO_LONG]', '[OK:DATA_SENT]']);
    expect(await b.line()).toBe('PUSH:after');
    expect(a.buffer).toBe('');
    expect(b.buffer).toBe('');
  });

  it('an unterminated overlong line is not executed by the idle flush', async () => {
    const k = srv.newKey();
    const a = await dev(srv, k, 'olidle-a');
    const b = await dev(srv, k, 'olidle-b');
    a.write(`TCP:PUSH:${k}:RID:olidle-b:${'q'.repeat(MAX)}`);
    expect(await a.line()).toBe('[FAIL:LINE_TOO_LONG]');
    // Well past LINE_IDLE_MS: still discarding, nothing ran.
    expect(await a.silence(500)).toBe('');
    a.write(`more of the same line\nTCP:GID:${k}\n`);
    expect(await a.line()).toBe('[OK:OLIDLE-A]');
    expect(b.buffer).toBe('');
  });
});

// ------------------------------------------------------------------ garbage

describe('binary garbage', () => {
  it('random bytes (incl. 0x00 and 0xFF) and protocol-shaped junk never crash the server', async () => {
    const rnd = prng(0xc0ffee);
    const k = srv.newKey();
    // Witnesses on both shards: a shard that crashed would drop them.
    const w0 = await openOn(srv, 0);
    expect(await w0.request(`TCP:ID:${k}:wit0`)).toBe('[OK:WIT0]');
    const w1 = await openOn(srv, 1);
    expect(await w1.request(`TCP:ID:${k}:wit1`)).toBe('[OK:WIT1]');

    const randomBytes = (n: number): Buffer => {
      const b = Buffer.alloc(n);
      for (let i = 0; i < n; i++) b[i] = Math.floor(rnd() * 256);
      return b;
    };
    const tokens = [
      'TCP:',
      'STCP:',
      'DSTCP:',
      'HSTCP:',
      'ID:',
      'GID:',
      'REMID:',
      'PUSH:',
      'RID:',
      'FRIENDS:',
      'CHILDS:',
      'RO:',
      'ALIAS:',
      'RAW:',
      'RETDATA:',
      'TIME:',
      'EMAIL:',
      'WILL:',
      'WATCH:',
      `${k}:`,
      `${k.toLowerCase()}:`,
      'wit0:',
      'WIT1:',
      ':',
      '::',
      '\r',
      '\n',
      '\r\n',
      '-1',
      '0',
      '99999999999',
      'GET ',
      '\x00',
      '\xff',
      '>',
    ];
    const junk = (n: number): Buffer => {
      const parts: Buffer[] = [];
      for (let i = 0; i < n; i++) {
        const r = rnd();
        if (r < 0.7) parts.push(Buffer.from(tokens[Math.floor(rnd() * tokens.length)]!, 'latin1'));
        else parts.push(randomBytes(1 + Math.floor(rnd() * 8)));
      }
      return Buffer.concat(parts);
    };
    // Command-shaped lines: mostly well-formed, some corrupted, with random payload bytes and random or
    // missing terminators. Many are real commands: pushes to the witnesses, RETDATA, ID, REMID, ...
    const ids = ['wit0', 'WIT1', 'garbage-x', 'nobody', '', 'x'.repeat(70), 'bad id'];
    const keys = [k, k, k, k.toLowerCase(), k.slice(1), srv.key, '0'.repeat(32), ''];
    const pick = <T>(a: readonly T[]): T => a[Math.floor(rnd() * a.length)]!;
    const data = (): string => randomBytes(Math.floor(rnd() * 40)).toString('latin1');
    const commandLine = (): string => {
      const key = pick(keys);
      const r = rnd();
      if (r < 0.5) {
        const t = pick(['RID', 'RID', 'RID', 'FRIENDS', 'CHILDS', 'ALLCHILDS', 'PARENT', 'RO', 'ALIAS', 'RAW', 'NOPE']);
        const named = t === 'RID' || t === 'RO' || t === 'ALIAS' || t === 'RAW';
        return `TCP:PUSH:${key}:${t}:${named ? `${pick(ids)}:` : ''}${data()}`;
      }
      if (r < 0.6) return `TCP:ID:${key}:${pick(ids)}`;
      if (r < 0.7) return `TCP:RETDATA:${key}:${pick(['-3', '0', '1', '2', '5', '6', '99999999999', 'x', ''])}`;
      if (r < 0.75) return `TCP:GID:${key}`;
      if (r < 0.77) return `TCP:REMID:${key}`;
      if (r < 0.85) return `TCP:${pick(['EMAIL', 'SMS', 'TIME', 'WILL', 'WATCH', 'STATUS', 'XX'])}:${key}:${data()}`;
      return `${pick(['STCP:', 'DSTCP:', 'HSTCP:', 'tcp:', 'GET ', ''])}${data()}`;
    };
    const commandish = (n: number): Buffer => {
      const parts: Buffer[] = [];
      for (let i = 0; i < n; i++) {
        const bytes = Buffer.from(commandLine(), 'latin1');
        if (rnd() < 0.15 && bytes.length > 0) bytes[Math.floor(rnd() * bytes.length)] = Math.floor(rnd() * 256);
        parts.push(bytes, Buffer.from(pick(['\r\n', '\r\n', '\n', '\n', '', '\r', '\n\n']), 'latin1'));
      }
      return Buffer.concat(parts);
    };
    const payloads: Buffer[] = [
      commandish(400),
      randomBytes(16384),
      Buffer.concat([randomBytes(3000).map((x) => (x === 10 ? 11 : x)), randomBytes(9000), Buffer.from([0, 255])]),
      Buffer.from(randomBytes(20000).map((x) => (x === 10 ? 0 : x))), // no LF at all: one huge line
      junk(3000),
      commandish(400),
      Buffer.concat([Buffer.from([0xff, 0x00, 0xff, 0xfe, 0x0a]), randomBytes(4000)]),
    ];
    const garbage: TestClient[] = [];
    for (let i = 0; i < payloads.length * 2; i++) {
      const g = await open(srv);
      if (i % 2 === 1) expect(await g.request(`TCP:ID:${k}:garbage-${i}`)).toBe(`[OK:GARBAGE-${i}]`);
      garbage.push(g);
    }
    await Promise.all(
      garbage.map(async (g, i) => {
        const data = payloads[Math.floor(i / 2)]!;
        let pos = 0;
        while (pos < data.length && !g.closed) {
          const n = 1 + Math.floor(rnd() * 1500);
          g.socket.write(data.subarray(pos, pos + n));
          pos += n;
          if (rnd() < 0.3) await sleep(1);
        }
      }),
    );
    // Let the server chew through it (long enough for idle flushes of any tails).
    await sleep(400);
    // No shard died or restarted, and the witnesses are still connected and reachable.
    const slots = srv.supervisor['shards'];
    expect(slots.map((s) => s.crashes.length)).toEqual([0, 0]);
    expect([w0.closed, w1.closed]).toEqual([false, false]);
    const fresh = await open(srv);
    expect(await fresh.request(`TCP:ID:${k}:fresh`)).toBe('[OK:FRESH]');
    for (const [w, id] of [
      [w0, 'wit0'],
      [w1, 'wit1'],
    ] as const) {
      const marker = `alive-${id}-\xfe:\x00`;
      expect(await fresh.request(`TCP:PUSH:${k}:RID:${id}:${marker}`)).toBe('[OK:DATA_SENT]');
      await w.until((buf) => buf.includes(`PUSH:${marker}\r\n`), 5000, `${id} to receive the marker`);
      // And the witness can still talk: its GID is answered (junk pushes may precede the reply).
      w.buffer = '';
      w.write(`TCP:GID:${k}\r\n`);
      await w.until((buf) => buf.includes(`[OK:${id.toUpperCase()}]\r\n`), 5000, `${id} GID`);
      w.buffer = '';
      w.write(`TCP:PUSH:${k}:RID:fresh:from-${id}\r\n`);
      expect(await fresh.line()).toBe(`PUSH:from-${id}`);
    }
    // A brand-new pair on a new account works exactly.
    const k2 = srv.newKey();
    const p = await dev(srv, k2, 'after-1');
    const q = await dev(srv, k2, 'after-2');
    expect(await p.request(`TCP:PUSH:${k2}:RID:after-2:ok`)).toBe('[OK:DATA_SENT]');
    expect(await q.line()).toBe('PUSH:ok');
    expect(await q.request(`TCP:PUSH:${k2}:FRIENDS:ok2`)).toBe('[OK:ALL_1]');
    expect(await p.line()).toBe('PUSH:ok2');
    expect(slots.map((s) => s.crashes.length)).toEqual([0, 0]);
  }, 30000);
});

// ------------------------------------------------------------------ pipelined pushes

/** Closes the clients and waits until the chunky server has seen them go. */
async function closeAll(...clients: TestClient[]): Promise<void> {
  for (const c of clients) c.close();
  await waitFor(
    () => openTotal(chunky) === opened.filter((x) => !x.closed).length,
    'the server to see the connections closed',
  );
}

describe('pipelined RID pushes (consecutive lines with one prefix are taken in bulk)', () => {
  /**
   * A's pipelined stream: long runs to B with some lines that must leave the run (LF only, a push to C, the KEY
   * in lower case, payloads holding the prefix itself, CR inside, empty), a GID in between, RETDATA at the end.
   */
  function stream(
    key: string,
    b: string,
    c: string,
  ): { bytes: string; replies: string[]; toB: string[]; toC: string[] } {
    const out = { bytes: '', replies: [] as string[], toB: [] as string[], toC: [] as string[] };
    const datas: string[] = [];
    const push = (k: string, id: string, data: string, eol = '\r\n'): void => {
      out.bytes += `TCP:PUSH:${k}:RID:${id}:${data}${eol}`;
      out.replies.push('[OK:DATA_SENT]');
      (id.toUpperCase() === b.toUpperCase() ? out.toB : out.toC).push(`PUSH:${data}`);
      datas.push(data);
    };
    for (let i = 0; i < 3000; i++) {
      const r = i % 97;
      if (r === 5) push(key, b, `lf-only-${i}`, '\n');
      else if (r === 17) push(key, c, `to-c-${i}`);
      else if (r === 29) push(key.toLowerCase(), b, `lower-key-${i}`);
      else if (r === 41) push(key, b, `TCP:PUSH:${key}:RID:${b}:inner-${i}`);
      else if (r === 53) push(key, b, '');
      else if (r === 61) push(key, b, `cr\rinside-${i}\r`);
      else if (r === 73) {
        out.bytes += `TCP:GID:${key}\r\n`;
        out.replies.push('[OK:PA]');
      } else push(key, b, `${i}:${'x'.repeat(i % 200)}\xff`);
    }
    out.bytes += `TCP:RETDATA:${key}:0\r\n`;
    out.replies.push(`[OK:>${datas.slice(-5).join('>')}]`);
    return out;
  }

  for (const [name, shardB] of [
    ['receiver on the same shard', 0],
    ['receiver on the other shard', 1],
  ] as const) {
    it(`${name}: any chunking gives the replies and deliveries of one push at a time`, async () => {
      for (const seed of [1, 2, 3]) {
        const key = chunky.newKey();
        const a = await openOn(chunky, 0);
        expect(await a.request(`TCP:ID:${key}:pa`)).toBe('[OK:PA]');
        const bc = await openOn(chunky, shardB);
        expect(await bc.request(`TCP:ID:${key}:pb`)).toBe('[OK:PB]');
        const cc = await dev(chunky, key, 'pc');
        const s = stream(key, 'pb', 'pc');
        const rnd = prng(seed);
        const cuts = new Set<number>();
        while (cuts.size < 40) cuts.add(1 + Math.floor(rnd() * (s.bytes.length - 1)));
        for (const part of splitAt(
          s.bytes,
          [...cuts].sort((x, y) => x - y),
        ))
          a.write(part);
        expect(await a.lines(s.replies.length, 20000)).toEqual(s.replies);
        expect(await bc.lines(s.toB.length, 20000)).toEqual(s.toB);
        expect(await cc.lines(s.toC.length, 20000)).toEqual(s.toC);
        expect([a.buffer, bc.buffer, cc.buffer]).toEqual(['', '', '']);
        await closeAll(a, bc, cc);
      }
    }, 60000);

    it(`${name}: property: any payloads, cut into reads anywhere, are delivered byte for byte`, async () => {
      // Each part is written once the server has answered every line of the parts before it, so every cut falls
      // between two reads: lines joined across reads take the bulk path as well as whole ones.
      const key = chunky.newKey();
      const a = await openOn(chunky, 0);
      expect(await a.request(`TCP:ID:${key}:qa`)).toBe('[OK:QA]');
      const b = await openOn(chunky, shardB);
      expect(await b.request(`TCP:ID:${key}:qb`)).toBe('[OK:QB]');
      // Latin-1 payloads without LF; CR only inside (a CR last would end up as the line's own CR).
      const payload = fc
        .string({ unit: fc.integer({ min: 0, max: 255 }).map((c) => String.fromCharCode(c)), maxLength: 90 })
        .map((p) => p.replaceAll('\n', '.'))
        .filter((p) => !p.endsWith('\r'));
      await fc.assert(
        fc.asyncProperty(
          fc.array(payload, { minLength: 1, maxLength: 12 }),
          fc.uniqueArray(fc.integer({ min: 1, max: 2000 }), { maxLength: 6 }),
          async (datas, rawCuts) => {
            const lines = datas.map((d) => `TCP:PUSH:${key}:RID:qb:${d}\r\n`);
            const bytes = lines.join('');
            const cuts = rawCuts.filter((c) => c < bytes.length).sort((x, y) => x - y);
            let answered = 0;
            let sent = 0;
            for (const part of splitAt(bytes, cuts)) {
              a.write(part);
              sent += part.length;
              const done = (bytes.slice(0, sent).match(/\n/g) ?? []).length;
              if (done > answered) {
                expect(await a.lines(done - answered, 5000)).toEqual(Array(done - answered).fill('[OK:DATA_SENT]'));
                answered = done;
              }
            }
            expect(await b.lines(datas.length, 5000)).toEqual(datas.map((d) => `PUSH:${d}`));
            expect([a.buffer, b.buffer]).toEqual(['', '']);
          },
        ),
        { numRuns: 40 },
      );
      await closeAll(a, b);
    }, 60000);

    it(`${name}: pushes written with the registration wait behind it, then go out in bulk from the backlog`, async () => {
      // One write: TCP:ID, then pushes. The registration holds the connection until its owner answers; the pushes
      // wait as a backlog and are framed from it afterwards (pushRun copies that text into bytes a window at a time).
      const key = chunky.newKey();
      const b = await openOn(chunky, shardB);
      expect(await b.request(`TCP:ID:${key}:bb`)).toBe('[OK:BB]');
      const a = await openOn(chunky, 0);
      let bytes = `TCP:ID:${key}:ba\r\n`;
      const replies = ['[OK:BA]'];
      const got: string[] = [];
      for (let i = 0; i < 120; i++) {
        // An LF-only line now and then, and one longer than the window of backlog copied at a time (2 KB).
        const data = i % 17 === 9 ? `lf-only-${i}` : `${i}:${'y'.repeat(i === 50 ? 3000 : i % 70)}\xfe`;
        bytes += `TCP:PUSH:${key}:RID:bb:${data}${i % 17 === 9 ? '\n' : '\r\n'}`;
        replies.push('[OK:DATA_SENT]');
        got.push(`PUSH:${data}`);
      }
      a.write(bytes);
      expect(await a.lines(replies.length, 10000)).toEqual(replies);
      expect(await b.lines(got.length, 10000)).toEqual(got);
      expect([a.buffer, b.buffer]).toEqual(['', '']);
      await closeAll(a, b);
    }, 60000);

    it(`${name}: a line split across two reads, at every byte, is delivered and answered as in one read`, async () => {
      // The first write's whole line is answered before the second write goes out, so the shard has read the first
      // part of the split line on its own and joins it to the head of the next read (pushRun's joined bytes).
      const key = chunky.newKey();
      const a = await openOn(chunky, 0);
      expect(await a.request(`TCP:ID:${key}:sa`)).toBe('[OK:SA]');
      const b = await openOn(chunky, shardB);
      expect(await b.request(`TCP:ID:${key}:sb`)).toBe('[OK:SB]');
      const first = `TCP:PUSH:${key}:RID:sb:one\r\n`;
      const split = `TCP:PUSH:${key}:RID:sb:two:\xff\r\n`;
      const last = `TCP:PUSH:${key}:RID:sb:three\r\n`;
      for (let cut = 1; cut < split.length; cut++) {
        a.write(first + split.slice(0, cut));
        expect(await a.lines(1, 5000)).toEqual(['[OK:DATA_SENT]']);
        a.write(split.slice(cut) + last);
        expect(await a.lines(2, 5000), `cut ${cut}`).toEqual(['[OK:DATA_SENT]', '[OK:DATA_SENT]']);
        expect(await b.lines(3, 5000), `cut ${cut}`).toEqual(['PUSH:one', 'PUSH:two:\xff', 'PUSH:three']);
      }
      expect(await a.request(`TCP:RETDATA:${key}:0`)).toBe('[OK:>two:\xff>three>one>two:\xff>three]');
      expect([a.buffer, b.buffer]).toEqual(['', '']);
      await closeAll(a, b);
    }, 60000);
  }
});
