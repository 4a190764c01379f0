// The hostile-client suite of issue 5 against the real server with two shard workers: random bytes split at random
// boundaries, 1 MB lines, NUL and high bytes, half-open and reset sockets, slowloris, 5,000 connections that never
// register, a reader that never reads while others push to it, pushes to itself, and a flood of registrations of one
// ID. After each scenario a healthy device on a fresh connection gets `[OK:<ID>]` and a pushed message within
// 100 ms (the one timing bound, asked for by the issue), and the process RSS returns near its start once the
// scenario's sockets are closed (the server runs in this process: supervisor on the main thread, shards in workers).

import { performance } from 'node:perf_hooks';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { prng } from './helpers/chunks.ts';
import { TestClient } from './helpers/client.ts';
import { devices } from './helpers/devices.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';
import { openTotal, sleep, waitFor } from './helpers/shards.ts';

/** A full GC of this thread's heap (the shard workers collect on their own). */
const gc: () => void = (() => {
  try {
    setFlagsFromString('--expose-gc');
    return runInNewContext('gc') as () => void;
  } catch {
    return () => {};
  }
})();

const MB = 1048576;
/** How far above its start the RSS may stay once a scenario's sockets are closed. */
const RSS_SLACK = 64 * MB;
/** How far above its start the RSS may go while a scenario runs (nothing may grow without bound). */
const RSS_PEAK = 256 * MB;

let srv: TestServer;
const { opened, open, dev, closeAll } = devices(() => srv);

beforeAll(async () => {
  srv = await startTestServer();
  expect(srv.supervisor.shardCount).toBe(2);
  // Both shards learn the KEY before any timed check (untimed: the box may be busy while the suite starts).
  for (let i = 0; i < 8; i++) {
    const c = await TestClient.open(srv.port);
    c.write(`TCP:ID:${srv.key}:WARM${i}\r\n`);
    expect(await c.line(10000)).toBe(`[OK:WARM${i}]`);
    c.close();
  }
});
afterAll(async () => {
  await srv?.stop();
});
afterEach(async () => {
  await closeAll('the server to see every connection of the scenario closed', 15000);
});

// ------------------------------------------------------------------ helpers

let checks = 0;

/**
 * The health check: two devices on fresh connections each get `[OK:<ID>]` within 100 ms of asking, and a push
 * from one reaches the other (and is acknowledged) within 100 ms. The machine is shared: a check that misses the
 * bound is repeated once on fresh connections (a wrong reply fails at once).
 */
async function health(tag = `H${++checks}`): Promise<void> {
  try {
    await healthOnce(tag);
  } catch (err) {
    if (!(err instanceof Error && err.message.startsWith('timed out'))) throw err;
    await healthOnce(`${tag}R`);
  }
}

async function healthOnce(tag: string): Promise<void> {
  const a = await TestClient.open(srv.port);
  const b = await TestClient.open(srv.port);
  try {
    a.write(`TCP:ID:${srv.key}:${tag}A\r\n`);
    expect(await a.line(100)).toBe(`[OK:${tag}A]`);
    b.write(`TCP:ID:${srv.key}:${tag}B\r\n`);
    expect(await b.line(100)).toBe(`[OK:${tag}B]`);
    const t0 = performance.now();
    b.write(`TCP:PUSH:${srv.key}:RID:${tag}A:ping ${tag}\r\n`);
    expect(await a.line(100)).toBe(`PUSH:ping ${tag}`);
    expect(await b.line(Math.max(1, 100 - (performance.now() - t0)))).toBe('[OK:DATA_SENT]');
  } finally {
    a.close();
    b.close();
  }
}

/**
 * Replaces the client's buffering with a running tally of its lines by `classify` (CRLF required), for streams too
 * large to keep.
 */
function tallyLines(c: TestClient, classify: (line: string) => string): Record<string, number> {
  const tally: Record<string, number> = {};
  let carry = '';
  c.socket.removeAllListeners('data');
  c.socket.on('data', (b: Buffer) => {
    const text = carry + b.toString('latin1');
    let start = 0;
    for (let i = text.indexOf('\n'); i >= 0; i = text.indexOf('\n', start)) {
      const k = text.charCodeAt(i - 1) === 13 ? classify(text.slice(start, i - 1)) : '<line without CRLF>';
      tally[k] = (tally[k] ?? 0) + 1;
      start = i + 1;
    }
    carry = text.slice(start);
  });
  return tally;
}

/** Runs a scenario between an RSS sample and the checks that must hold after it. */
async function scenario(run: (peak: () => void) => Promise<void>, slack = RSS_SLACK): Promise<void> {
  gc();
  const start = process.memoryUsage.rss();
  let max = start;
  const peak = (): void => {
    max = Math.max(max, process.memoryUsage.rss());
  };
  await run(peak);
  peak();
  expect(max - start, `RSS grew by ${((max - start) / MB).toFixed(1)} MB during the scenario`).toBeLessThan(RSS_PEAK);
  await closeAll('the server to see every connection of the scenario closed', 15000);
  gc();
  await health();
  // RSS returns near its start (allocators give memory back lazily: poll for a while).
  let now = process.memoryUsage.rss();
  const deadline = Date.now() + 10000;
  while (now - start > slack && Date.now() < deadline) {
    await sleep(200);
    gc();
    now = process.memoryUsage.rss();
  }
  expect(now - start, `RSS is ${((now - start) / MB).toFixed(1)} MB above its start`).toBeLessThan(slack);
}

/** Bytes that never start a line with a protocol word or an HTTP method (so every line is UNKNOWN_COMMAND). */
function randomLines(rnd: () => number, size: number): Buffer {
  const b = Buffer.alloc(size);
  for (let i = 0; i < size; i++) b[i] = Math.floor(rnd() * 256);
  const starts = new Set([...'TSDHGPO'].map((c) => c.charCodeAt(0)));
  for (let i = 0; i < size; i++) {
    if ((i === 0 || b[i - 1] === 10) && starts.has(b[i]!)) b[i] = 0x78;
  }
  return b;
}

/** The replies the server owes for a stream of complete lines (PROTOCOL.md §1), given a reply per valid line. */
function expectedReplies(stream: Buffer, valid: Map<string, string>): string[] {
  const out: string[] = [];
  const text = stream.toString('latin1');
  const lines = text.split('\n');
  lines.pop(); // the stream ends with LF
  for (let line of lines) {
    if (line.endsWith('\r')) line = line.slice(0, -1);
    if (line.length === 0) continue;
    const v = valid.get(line);
    if (v !== undefined) out.push(v);
    else out.push(line.length > 4096 ? '[FAIL:LINE_TOO_LONG]' : '[FAIL:UNKNOWN_COMMAND]');
  }
  return out;
}

/**
 * Writes a buffer in chunks of random sizes, one write (one segment, no Nagle) each, all in one turn: a pause of
 * the writer inside a line longer than NODE.LINE_IDLE_MS would legitimately make its first part a command (§1).
 */
function writeSplit(c: TestClient, data: Buffer, rnd: () => number, maxChunk: number): void {
  let i = 0;
  while (i < data.length) {
    const n = 1 + Math.floor(rnd() * maxChunk);
    c.socket.write(data.subarray(i, i + n));
    i += n;
  }
}

// ------------------------------------------------------------------ scenarios

describe('hostile clients (2 shard workers); after each: healthy within 100 ms, RSS back near its start', () => {
  it('random bytes (seeded), split at random boundaries, with valid commands among them', async () => {
    await scenario(async (peak) => {
      const key = srv.newKey();
      const sink = await dev(key, 'SINK');
      const rnd = prng(0xb17e5);
      const senders = 16;
      const perSender = 20;
      const work: Promise<void>[] = [];
      const wantAtSink: string[] = [];
      for (let s = 0; s < senders; s++) {
        const c = await dev(key, `RB${s}`);
        const parts: Buffer[] = [];
        const valid = new Map<string, string>();
        for (let k = 0; k < perSender; k++) {
          parts.push(randomLines(rnd, 1 + Math.floor(rnd() * 3000)), Buffer.from('\n'));
          const cmd = `TCP:PUSH:${key}:RID:SINK:R${s}-${k}`;
          valid.set(cmd, '[OK:DATA_SENT]');
          wantAtSink.push(`PUSH:R${s}-${k}`);
          parts.push(Buffer.from(`${cmd}${rnd() < 0.5 ? '\r\n' : '\n'}`, 'latin1'));
        }
        parts.push(randomLines(rnd, 2000), Buffer.from('\r\n'));
        const stream = Buffer.concat(parts);
        const want = expectedReplies(stream, valid);
        work.push(
          (async () => {
            writeSplit(c, stream, rnd, 2048);
            expect(await c.lines(want.length)).toEqual(want);
            expect(c.closed).toBe(false);
          })(),
        );
      }
      // Entirely unsanitised random bytes on other connections: whatever they mean, the server survives them.
      for (let s = 0; s < 8; s++) {
        const c = await open();
        const junk = Buffer.alloc(65536);
        for (let i = 0; i < junk.length; i++) junk[i] = Math.floor(rnd() * 256);
        writeSplit(c, junk, rnd, 4096);
      }
      await Promise.all(work);
      peak();
      const got = await sink.lines(wantAtSink.length);
      expect([...got].sort()).toEqual([...wantAtSink].sort());
      // Per sender, in the order sent.
      for (let s = 0; s < senders; s++) {
        const mine = got.filter((l) => l.startsWith(`PUSH:R${s}-`));
        expect(mine).toEqual(Array.from({ length: perSender }, (_, k) => `PUSH:R${s}-${k}`));
      }
      await health();
      expect(await sink.silence(50)).toBe('');
    });
  });

  it('1 MB lines: answered [FAIL:LINE_TOO_LONG] once each, discarded, the connection stays usable', async () => {
    await scenario(async (peak) => {
      const key = srv.newKey();
      const sink = await dev(key, 'SINK');
      const mb = 1024 * 1024;
      const rnd = prng(0x1b);
      const noisy = Buffer.alloc(mb);
      for (let i = 0; i < mb; i++) {
        const v = Math.floor(rnd() * 256);
        noisy[i] = v === 10 ? 0 : v;
      }
      const work: Promise<void>[] = [];
      for (let n = 0; n < 6; n++) {
        const c = await dev(key, `BIG${n}`);
        work.push(
          (async () => {
            // One write of 1 MB of 'A' with CRLF, a good command in the same write.
            c.write(`${'A'.repeat(mb)}\r\nTCP:PUSH:${key}:RID:SINK:after-${n}\r\n`);
            expect(await c.lines(2, 15000)).toEqual(['[FAIL:LINE_TOO_LONG]', '[OK:DATA_SENT]']);
            // 1 MB of NUL and high bytes in 64 KB writes, then a command.
            for (let i = 0; i < mb; i += 65536) c.socket.write(noisy.subarray(i, i + 65536));
            c.write(`\nTCP:GID:${key}\r\n`);
            expect(await c.lines(2, 15000)).toEqual(['[FAIL:LINE_TOO_LONG]', `[OK:BIG${n}]`]);
            // An unterminated 1 MB line and silence: reported once, never executed by the idle flush.
            c.write(`TCP:PUSH:${key}:RID:SINK:${'u'.repeat(mb)}`);
            expect(await c.line(15000)).toBe('[FAIL:LINE_TOO_LONG]');
            expect(await c.silence(400)).toBe('');
            c.write(`tail\r\nTCP:PUSH:${key}:RID:SINK:end-${n}\r\n`);
            expect(await c.line()).toBe('[OK:DATA_SENT]');
          })(),
        );
      }
      // And before registration.
      const u = await open();
      work.push(
        (async () => {
          u.write(`${'B'.repeat(mb)}\n`);
          expect(await u.line(15000)).toBe('[FAIL:LINE_TOO_LONG]');
          expect(await u.request(`TCP:ID:${key}:BIGU`)).toBe('[OK:BIGU]');
        })(),
      );
      await Promise.all(work);
      peak();
      const got = await sink.lines(12);
      expect([...got].sort()).toEqual(
        Array.from({ length: 6 }, (_, n) => [`PUSH:after-${n}`, `PUSH:end-${n}`])
          .flat()
          .sort(),
      );
      expect(await sink.silence(50)).toBe('');
    });
  });

  it('NUL and high bytes: exact replies, payload bytes delivered unchanged', async () => {
    await scenario(async () => {
      const key = srv.newKey();
      const c = await open();
      const pre: [string, string][] = [
        ['\x00', '[FAIL:UNKNOWN_COMMAND]'],
        ['\x00\x00\x00\xff\xfe', '[FAIL:UNKNOWN_COMMAND]'],
        [`\x00TCP:ID:${key}:N`, '[FAIL:UNKNOWN_COMMAND]'],
        [`\xffTCP:ID:${key}:N`, '[FAIL:UNKNOWN_COMMAND]'],
        [`TCP:\x00ID:${key}:N`, '[FAIL:INVALID_CMD]'],
        [`TCP:ID\xff:${key}:N`, '[FAIL:INVALID_CMD]'],
        [`TCP:ID:${key.slice(0, 31)}\x00:N`, '[FAIL:INVALID_KEY]'],
        [`TCP:ID:${key.slice(0, 31)}\xe9:N`, '[FAIL:INVALID_KEY]'],
        [`TCP:ID:\x00${key}:N`, '[FAIL:INVALID_KEY]'],
        [`TCP:ID:${key}:\x00N`, '[FAIL:INVALID_DATA]'],
        [`TCP:ID:${key}:N\x00`, '[FAIL:INVALID_DATA]'],
        [`TCP:ID:${key}:N\xff`, '[FAIL:INVALID_DATA]'],
        [`TCP:ID:${key}:\xc3\x84`, '[FAIL:INVALID_DATA]'],
        [`TCP:GID:${key}\x00`, '[FAIL:NOID]'],
        [`STCP:\x00:ACTIVATE:`, '[FAIL:INVALID_USERID]'],
        [`HSTCP:x@y.example:ACTIVATE:\x00\x01\x02\x03\x04\x05\x06\x07:`, '[FAIL:INVALID_FORMAT]'],
      ];
      c.write(pre.map(([l]) => `${l}\r\n`).join(''));
      expect(await c.lines(pre.length)).toEqual(pre.map(([, r]) => r));
      expect(await c.request(`TCP:ID:${key}:NUL1`)).toBe('[OK:NUL1]');
      const d = await dev(key, 'NUL2');
      let all = '';
      for (let b = 0; b < 256; b++) if (b !== 10 && b !== 13) all += String.fromCharCode(b);
      const post: [string, string][] = [
        [`TCP:PUSH:${key}:RID:NUL2:${all}`, '[OK:DATA_SENT]'],
        [`TCP:PUSH:${key}:RID:NUL2:\x00`, '[OK:DATA_SENT]'],
        [`TCP:PUSH:${key}:RID:NUL2:\xff\xfe\x00:\x80`, '[OK:DATA_SENT]'],
        [`TCP:RETDATA:${key}:\x00`, '[FAIL:INVALID_DATA]'],
        [`TCP:RETDATA:${key}:2`, '[OK:\x00]'],
        [`TCP:PUSH:${key}:RID:NU\x00L2:x`, '[FAIL:REM_ID]'],
        [`TCP:PUSH:${key}:RID:NUL2\xff:x`, '[FAIL:REM_ID]'],
        [`TCP:PUSH:${key}:\x00FRIENDS:x`, '[FAIL:UNKNOWN_CMD]'],
        [`TCP:PUSH:${key}:FRIENDS:\x00\xff`, '[OK:ALL_1]'],
        [`TCP:GID:${key}`, '[OK:NUL1]'],
      ];
      c.write(post.map(([l]) => `${l}\r\n`).join(''));
      expect(await c.lines(post.length)).toEqual(post.map(([, r]) => r));
      expect(await d.lines(4)).toEqual([`PUSH:${all}`, 'PUSH:\x00', 'PUSH:\xff\xfe\x00:\x80', 'PUSH:\x00\xff']);
      expect(await d.silence(50)).toBe('');
    });
  });

  it('half-open sockets: resets (RST) mid-line and mid-flow, a FIN, and a socket that never reads its replies', async () => {
    await scenario(async (peak) => {
      const key = srv.newKey();
      const sender = await dev(key, 'HSENDER');
      // 1. 200 connections reset: half registered, half not; half of each with a partial command just written.
      const resets: TestClient[] = [];
      for (let i = 0; i < 200; i++) {
        const c = await open();
        if (i % 2 === 0) expect(await c.request(`TCP:ID:${key}:RST${i}`)).toBe(`[OK:RST${i}]`);
        resets.push(c);
      }
      for (let i = 0; i < 200; i++) if (i % 4 < 2) resets[i]!.write(`TCP:PUSH:${key}:RID:HSENDER:partial`);
      for (const c of resets) c.socket.resetAndDestroy();
      await waitFor(() => openTotal(srv) === 1, 'the server to see the resets');
      for (let i = 0; i < 200; i += 2) {
        expect(await sender.request(`TCP:PUSH:${key}:RID:RST${i}:x`)).toBe('[FAIL:REM_ID]');
      }
      // No partial line was executed.
      expect(await sender.silence(300)).toBe('');

      // 2. A reset while receiving a stream of pushes.
      const target = await dev(key, 'HTARGET');
      const stream = (async (): Promise<string> => {
        for (let i = 0; i < 5000; i++) {
          const r = await sender.request(`TCP:PUSH:${key}:RID:HTARGET:${'s'.repeat(1000)}`);
          if (r !== '[OK:DATA_SENT]') return r;
        }
        return 'never refused';
      })();
      await target.until((b) => b.length > 100000, 5000, 'the stream to flow');
      target.socket.resetAndDestroy();
      expect(await stream).toBe('[FAIL:REM_ID]');

      // 3. A FIN (the client ends its side): the server closes, the ID is released.
      const fin = await dev(key, 'HFIN');
      fin.socket.end();
      await fin.closedByServer();
      await waitFor(() => openTotal(srv) === 1, 'the server to close the FIN connection');
      expect(await sender.request(`TCP:PUSH:${key}:RID:HFIN:x`)).toBe('[FAIL:REM_ID]');

      // 4. A socket that never reads its replies: RETDATA:0 (20 KB of reply each) alternating with 4 KB pushes to a
      // healthy reader. The server stops reading from it once its replies back up; every push it did read reaches
      // the reader whole (an unterminated tail left unread by the server is not a command: the device was not
      // silent, the server stopped reading).
      const deaf = await dev(key, 'HDEAF');
      deaf.socket.pause();
      const pay = (i: number): string => `${i}:`.padEnd(3990, 'd');
      let deafBytes = '';
      for (let i = 0; i < 3000; i++) deafBytes += `TCP:RETDATA:${key}:0\r\nTCP:PUSH:${key}:RID:HSENDER:${pay(i)}\r\n`;
      deaf.write(deafBytes);
      await sleep(1000);
      peak();
      const got = sender.buffer.split('\r\n');
      sender.buffer = '';
      expect(got.pop(), 'the reader got whole lines only').toBe('');
      expect(got.length).toBeGreaterThan(0);
      expect(got.length).toBeLessThan(3000);
      for (let i = 0; i < got.length; i++) {
        const want = `PUSH:${pay(i)}`;
        if (got[i] !== want) {
          expect.fail(
            `push ${i} of the deaf sender arrived as ${JSON.stringify(got[i]!.slice(0, 40))}… (${got[i]!.length} bytes, want ${want.length})`,
          );
        }
      }
      await health();
      expect(await sender.request(`TCP:PUSH:${key}:RID:HDEAF:x`)).toBe('[FAIL:REM_LINK]');
      expect(await sender.request(`TCP:PUSH:${key}:FRIENDS:x`)).toBe('[FAIL:NO_ID]');
      deaf.socket.resetAndDestroy();
      await waitFor(() => openTotal(srv) === 1, 'the server to see the reset of the deaf socket');
      expect(await sender.request(`TCP:PUSH:${key}:RID:HDEAF:x`)).toBe('[FAIL:REM_ID]');
    });
  });

  it('slowloris: one byte every ~200 ms on 40 connections for 3 s; others are served meanwhile', async () => {
    await scenario(async () => {
      const key = srv.newKey();
      const drips: TestClient[] = [];
      for (let i = 0; i < 30; i++) drips.push(await open());
      const https: TestClient[] = [];
      for (let i = 0; i < 10; i++) {
        const c = await open();
        c.write('GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-Slow: ');
        https.push(c);
      }
      const ticks = 15;
      for (let t = 0; t < ticks; t++) {
        for (const c of drips) c.write('x');
        for (const c of https) c.write('y');
        if (t % 5 === 2) await health();
        await sleep(200);
      }
      // Each byte the device connections dribbled was taken as a command after NODE.LINE_IDLE_MS of silence.
      for (const c of drips) {
        expect(c.closed).toBe(false);
        const lines = c.buffer.split('\r\n');
        expect(lines.pop()).toBe('');
        expect(lines.length).toBeGreaterThan(0);
        expect(lines.length).toBeLessThanOrEqual(ticks);
        for (const l of lines) expect(l).toBe('[FAIL:UNKNOWN_COMMAND]');
      }
      // The slow HTTP requests are served once they complete.
      for (const c of https) {
        expect(c.buffer).toBe('');
        c.write('\r\nConnection: close\r\n\r\n');
      }
      for (const c of https) {
        await c.closedByServer();
        expect(c.buffer.startsWith('HTTP/1.1 200 OK\r\n')).toBe(true);
        expect(c.buffer.endsWith('{"status":"ok","shards":2}')).toBe(true);
      }
      // A device that registers one byte at a time is served too, once the line is complete in one go.
      const late = await open();
      expect(await late.request(`TCP:ID:${key}:SLOWDONE`)).toBe('[OK:SLOWDONE]');
    });
  });

  it('5,000 connections that never register: all accepted, others served while they are open', async () => {
    await scenario(async (peak) => {
      const n = 5000;
      const batch = 250;
      for (let i = 0; i < n; i += batch) {
        const cs = await Promise.all(Array.from({ length: Math.min(batch, n - i) }, () => open()));
        // Every tenth says something that does not register.
        for (let k = 0; k < cs.length; k += 10) cs[k]!.write(`TCP:GID:${srv.key}\r\n`);
      }
      await waitFor(() => openTotal(srv) === n, 'the server to accept all 5,000', 20000);
      peak();
      await health();
      await health();
      for (let k = 0; k < n; k += 10) await opened[k]!.until((b) => b.length > 0, 5000, 'the NOID reply');
      for (let k = 0; k < n; k++) {
        expect(opened[k]!.closed).toBe(false);
        expect(opened[k]!.buffer).toBe((k % batch) % 10 === 0 ? '[FAIL:NOID]\r\n' : '');
      }
      expect(openTotal(srv)).toBe(n);
    });
  });

  it('a reader that never reads while others push to it: refused with [FAIL:REM_LINK], the others unaffected', async () => {
    await scenario(async (peak) => {
      const key = srv.newKey();
      const reader = await dev(key, 'NOREAD');
      reader.socket.pause();
      const pushers: TestClient[] = [];
      for (let i = 0; i < 3; i++) pushers.push(await dev(key, `PUSHER${i}`));
      const payload = 'p'.repeat(4000); // a line of 4,037 bytes: under NODE.MAX_LINE
      const results = await Promise.all(
        pushers.map(async (p) => {
          for (let i = 0; i < 4000; i++) {
            const r = await p.request(`TCP:PUSH:${key}:RID:NOREAD:${payload}`);
            if (r !== '[OK:DATA_SENT]') return r;
          }
          return 'never refused';
        }),
      );
      expect(results).toEqual(['[FAIL:REM_LINK]', '[FAIL:REM_LINK]', '[FAIL:REM_LINK]']);
      peak();
      // The pushers still talk to each other, and a group push counts the full reader as not delivered.
      expect(await pushers[0]!.request(`TCP:PUSH:${key}:RID:PUSHER1:hi`)).toBe('[OK:DATA_SENT]');
      expect(await pushers[1]!.line()).toBe('PUSH:hi');
      expect(await pushers[2]!.request(`TCP:PUSH:${key}:FRIENDS:group`)).toBe('[OK:2/3]');
      expect(await pushers[0]!.line()).toBe('PUSH:group');
      expect(await pushers[1]!.line()).toBe('PUSH:group');
      await health();
      expect(await pushers[1]!.request(`TCP:PUSH:${key}:RID:NOREAD:more`)).toBe('[FAIL:REM_LINK]');
      peak();
      reader.socket.resetAndDestroy();
      await waitFor(() => openTotal(srv) === 3, 'the server to see the reset reader');
      expect(await pushers[0]!.request(`TCP:PUSH:${key}:RID:NOREAD:gone`)).toBe('[FAIL:REM_ID]');
    });
  });

  it('pushes to itself: 5,000 pipelined, then 20,000 of 1 KB while not reading', async () => {
    await scenario(async (peak) => {
      const key = srv.newKey();
      const me = await dev(key, 'SELF');
      const n = 5000;
      let burst = '';
      for (let i = 0; i < n; i++) burst += `TCP:PUSH:${key}:RID:SELF:${i}\r\n`;
      me.write(burst);
      const got = await me.lines(2 * n, 15000);
      expect(got.filter((l) => l === '[OK:DATA_SENT]').length).toBe(n);
      expect(got.filter((l) => l.startsWith('PUSH:'))).toEqual(Array.from({ length: n }, (_, i) => `PUSH:${i}`));
      // The sender never receives its own group message.
      expect(await me.request(`TCP:PUSH:${key}:FRIENDS:me?`)).toBe('[FAIL:NO_ID]');

      // Not reading while pushing to itself: its own queue fills, it is refused and its input paused, nothing is lost.
      // (Lines are tallied as they stream in, so the test itself holds no 20 MB of text.)
      const m = 20000;
      const body = 'q'.repeat(1000);
      const tally = tallyLines(me, (l) =>
        l.startsWith('PUSH:') ? (l === `PUSH:${body}` ? 'PUSH:<whole>' : `PUSH:<${l.length - 5} bytes>`) : l,
      );
      me.socket.pause();
      me.write(`TCP:PUSH:${key}:RID:SELF:${body}\r\n`.repeat(m));
      await sleep(1000);
      peak();
      await health();
      me.socket.resume();
      const replies = (): number => Object.entries(tally).reduce((n, [k, v]) => (k.startsWith('PUSH:') ? n : n + v), 0);
      await waitFor(() => replies() >= m, 'a reply to every push', 20000);
      // Mark the end: everything before the GID's reply belongs to the pushes.
      me.write(`TCP:GID:${key}\r\n`);
      await waitFor(() => tally['[OK:SELF]'] === 1, 'the GID reply', 20000);
      delete tally['[OK:SELF]'];
      const ok = tally['[OK:DATA_SENT]'] ?? 0;
      // One reply per command, each DATA_SENT or REM_LINK; one whole PUSH per DATA_SENT; nothing else.
      expect(tally).toEqual({
        '[OK:DATA_SENT]': ok,
        ...(m - ok > 0 ? { '[FAIL:REM_LINK]': m - ok } : {}),
        ...(ok > 0 ? { 'PUSH:<whole>': ok } : {}),
      });
      expect(me.closed).toBe(false);
      // 40 MB of strings went through one shard (20 MB in, 20 MB out): its V8 heap keeps that garbage until its next
      // major GC, which an idle worker does not run (a heap snapshot of the worker, which collects, shows its heap
      // back at its start). Hence a wider margin here.
    }, 96 * MB);
  });

  it('floods of registrations of one ID: 200 connections at once, exactly one [OK:<ID>]', async () => {
    await scenario(async () => {
      for (let round = 0; round < 3; round++) {
        const key = srv.newKey();
        const id = `FLOOD${round}`;
        const cs = await Promise.all(Array.from({ length: 200 }, () => open()));
        for (const c of cs) c.write(`TCP:ID:${key}:${id.toLowerCase()}\r\n`);
        const replies = await Promise.all(cs.map((c) => c.line(10000)));
        const winners = cs.filter((_, i) => replies[i] === `[OK:${id}]`);
        expect(winners.length).toBe(1);
        expect(replies.filter((r) => r === '[FAIL:NODEEXIST]').length).toBe(199);
        const losers = cs.filter((c) => c !== winners[0]);
        await Promise.all(losers.map((c) => c.closedByServer()));
        for (const c of losers) expect(c.buffer).toBe('');
        const winner = winners[0]!;
        expect(winner.closed).toBe(false);
        const other = await dev(key, 'WITNESS');
        expect(await other.request(`TCP:PUSH:${key}:RID:${id}:you won`)).toBe('[OK:DATA_SENT]');
        expect(await winner.line()).toBe('PUSH:you won');
        // The winner re-registering its own ID, 1,000 times in one write.
        winner.write(`TCP:ID:${key}:${id}\r\n`.repeat(1000));
        expect(await winner.lines(1000)).toEqual(Array(1000).fill(`[OK:${id}]`));
        for (const c of cs) c.close();
        other.close();
      }
    });
  });
});
