// RAW transparent channel (PROTOCOL.md §7, issue 7) end to end against the real server (supervisor + 2 shard
// threads in this process). Streams are generated chunk by chunk and checked with SHA-256 on both ends; devices
// are placed on a chosen shard with the devices API (reconnecting with fresh IDs until one lands there).

import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { COUNTER_OPEN } from '../src/runtime/messages.ts';
import { hashPrefix, MiB, makeBase, nastyBytes, Peer, sendStream } from './helpers/raw-peer.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

let srv: TestServer;
/** Every peer a test opens; afterEach closes them and waits until the server has seen every close. */
const opened = Peer.opened;

beforeAll(async () => {
  srv = await startTestServer();
  expect(srv.supervisor.shardCount).toBe(2);
  makeBase(srv.key);
});
afterAll(async () => {
  await srv?.stop();
});
afterEach(async () => {
  for (const p of opened.splice(0)) p.close();
  await waitFor(() => openTotal(srv) === 0, 'the server to see every connection of the test closed');
});

// ------------------------------------------------------------------ helpers

async function waitFor(pred: () => boolean, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

function openTotal(s: TestServer): number {
  const counters = new Int32Array(s.supervisor['counters']);
  let n = 0;
  for (let i = 0; i < s.supervisor.shardCount; i++) n += Atomics.load(counters, COUNTER_OPEN + i);
  return n;
}

let idSeq = 0;
const fresh = (prefix: string): string => `${prefix}${++idSeq}`;

async function shardOf(key: string, id: string): Promise<number | undefined> {
  const r = await fetch(`http://127.0.0.1:${srv.httpPort}/api/v1/accounts/me/devices`, {
    headers: { authorization: `Bearer ${key}` },
  });
  const body = (await r.json()) as { devices: { id: string; shard: number }[] };
  return body.devices.find((d) => d.id === id)?.shard;
}

/** Registers `id` (exact reply checked). */
async function device(key: string, id: string, port = srv.port): Promise<Peer> {
  const p = await Peer.open(port);
  p.id = id;
  expect(await p.request(`TCP:ID:${key}:${id}`)).toBe(`[OK:${id}]`);
  return p;
}

/** Registers a device with a fresh ID that landed on `shard` (others are closed and retried). */
async function deviceOn(key: string, prefix: string, shard: number): Promise<Peer> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const p = await device(key, fresh(prefix));
    if ((await shardOf(key, p.id)) === shard) return p;
    p.close();
  }
  throw new Error(`no connection landed on shard ${shard}`);
}

/** A links to B: exact replies on both ends. */
async function link(a: Peer, b: Peer, key: string): Promise<void> {
  expect(await a.request(`TCP:PUSH:${key}:RAW:${b.id}`)).toBe('[OK:LINK_SYNC]');
  expect(await b.line()).toBe('PUSHRAW:');
}

/** A pair linked both ways (full duplex); both buffers empty afterwards. */
async function duplex(a: Peer, b: Peer, key: string): Promise<void> {
  await link(a, b, key);
  await link(b, a, key);
}

/** Waits until the server has seen `p` closed (the open-connection count drops). */
async function closeAndSettle(p: Peer, s: TestServer = srv): Promise<void> {
  const before = openTotal(s);
  p.close();
  await waitFor(() => openTotal(s) < before, 'the server to see the close');
  await sleep(50); // RAW_CLOSE / UNREG cross the shard links
}

const PLACEMENTS = [
  { name: 'same shard', a: 0, b: 0, c: 0 },
  { name: 'across shards', a: 0, b: 1, c: 0 },
] as const;

// ------------------------------------------------------------------ basics, per placement

for (const place of PLACEMENTS) {
  describe(`RAW basics, ${place.name}`, () => {
    const pair = async (key: string): Promise<[Peer, Peer]> => [
      await deviceOn(key, 'RA', place.a),
      await deviceOn(key, 'RB', place.b),
    ];

    it('A gets [OK:LINK_SYNC], B gets PUSHRAW:, then A’s bytes reach B unparsed and in order; B linking back gives full duplex', async () => {
      const key = srv.newKey();
      const [a, b] = await pair(key);
      a.write(`TCP:PUSH:${key}:RAW:${b.id}\r\n`);
      await a.until(() => a.text.length >= 16, 5000, 'the reply');
      expect(await a.drainFor(0)).toBe('[OK:LINK_SYNC]\r\n');
      await b.until(() => b.text.length >= 10, 5000, 'PUSHRAW');
      expect(b.text).toBe('PUSHRAW:\r\n');
      await b.drainFor(0);

      // Many small writes, split anywhere, including in the middle of what looks like a CRLF or a command.
      const payload = Buffer.concat([nastyBytes(key, a.id), nastyBytes(key, b.id), Buffer.from('\ntail')]);
      for (let i = 0; i < payload.length; i += 37) {
        a.write(payload.subarray(i, i + 37));
        if (i % 111 === 0) await sleep(1);
      }
      expect((await b.take(payload.length)).equals(payload)).toBe(true);
      // Nothing was executed: no replies to A, nothing more to B.
      expect(await a.drainFor(200)).toBe('');
      expect(await b.drainFor(0)).toBe('');

      // B links back: full duplex, both directions at once.
      await link(b, a, key);
      const fromA = Buffer.concat([payload, Buffer.from('A-side')]);
      const fromB = Buffer.concat([Buffer.from('B-side'), payload]);
      a.write(fromA);
      b.write(fromB);
      const [atB, atA] = await Promise.all([b.take(fromA.length), a.take(fromB.length)]);
      expect(atB.equals(fromA)).toBe(true);
      expect(atA.equals(fromB)).toBe(true);
      expect(await a.drainFor(200)).toBe('');
      expect(await b.drainFor(0)).toBe('');
    });

    it('bytes that follow the RAW command in the same write are stream data', async () => {
      const key = srv.newKey();
      const [a, b] = await pair(key);
      const rest = Buffer.concat([Buffer.from(`TCP:GID:${key}\r\nhello\0\r\n`, 'latin1'), nastyBytes(key, b.id)]);
      a.write(Buffer.concat([Buffer.from(`TCP:GID:${key}\r\nTCP:PUSH:${key}:RAW:${b.id}\r\n`, 'latin1'), rest]));
      await b.until(() => b.text.length >= 10 + rest.length, 5000, 'the stream');
      expect(await a.drainFor(200)).toBe(`[OK:${a.id}]\r\n[OK:LINK_SYNC]\r\n`);
      expect((await b.take(10)).toString('latin1')).toBe('PUSHRAW:\r\n');
      expect((await b.take(rest.length)).equals(rest)).toBe(true);
      expect(await b.drainFor(100)).toBe('');

      // A bare LF ends the RAW line as well; the very next byte is data.
      const [c, d] = await pair(key);
      c.write(`TCP:PUSH:${key}:RAW:${d.id}\nTCP:GID:${key}\r\n`);
      expect(await c.line()).toBe('[OK:LINK_SYNC]');
      expect(await d.line()).toBe('PUSHRAW:');
      expect((await d.take(`TCP:GID:${key}\r\n`.length)).toString('latin1')).toBe(`TCP:GID:${key}\r\n`);

      // The command and the data written back to back, before any reply (across shards: while the link opens).
      const [e, f] = await pair(key);
      e.write(`TCP:PUSH:${key}:RAW:${f.id}\r\n`);
      const burst = Buffer.concat(Array.from({ length: 64 }, (_, i) => nastyBytes(key, `${i}`)));
      e.write(burst);
      expect(await e.line()).toBe('[OK:LINK_SYNC]');
      expect(await f.line()).toBe('PUSHRAW:');
      expect((await f.take(burst.length)).equals(burst)).toBe(true);
      expect(await e.drainFor(100)).toBe('');

      // Legacy firmware: the RAW command with no terminator is taken after NODE.LINE_IDLE_MS of silence.
      const [g, k] = await pair(key);
      g.write(`TCP:PUSH:${key}:RAW:${k.id}`);
      expect(await g.line(2000)).toBe('[OK:LINK_SYNC]');
      expect(await k.line()).toBe('PUSHRAW:');
      g.write(`\r\nTCP:GID:${key}\r\n`);
      expect((await k.take(2 + `TCP:GID:${key}\r\n`.length)).toString('latin1')).toBe(`\r\nTCP:GID:${key}\r\n`);
      expect(await g.drainFor(100)).toBe('');
    });

    it('refusals: unknown or offline B and RAW to itself → [FAIL:REM_ID]; B already receiving → [FAIL:REM_LINK]', async () => {
      const key = srv.newKey();
      const [a, b] = await pair(key);
      const c = await deviceOn(key, 'RC', place.c);
      expect(await a.request(`TCP:PUSH:${key}:RAW:NOSUCH`)).toBe('[FAIL:REM_ID]');
      expect(await a.request(`TCP:PUSH:${key}:RAW:${a.id}`)).toBe('[FAIL:REM_ID]');
      expect(await a.request(`TCP:PUSH:${key}:RAW:${a.id.toLowerCase()}`)).toBe('[FAIL:REM_ID]');
      // Offline: registered once, gone now (placed on B's shard).
      const gone = await deviceOn(key, 'RG', place.b);
      await closeAndSettle(gone);
      expect(await a.request(`TCP:PUSH:${key}:RAW:${gone.id}`)).toBe('[FAIL:REM_ID]');
      // Another account's device is unknown here.
      const other = srv.newKey();
      const x = await deviceOn(other, 'RX', place.b);
      expect(await a.request(`TCP:PUSH:${key}:RAW:${x.id}`)).toBe('[FAIL:REM_ID]');
      // A refused connection still speaks commands; nothing reached anyone.
      expect(await a.request(`TCP:GID:${key}`)).toBe(`[OK:${a.id}]`);

      await link(a, b, key);
      expect(await c.request(`TCP:PUSH:${key}:RAW:${b.id}`)).toBe('[FAIL:REM_LINK]');
      expect(await c.request(`TCP:GID:${key}`)).toBe(`[OK:${c.id}]`);
      // B still gets only A's bytes.
      a.write('only-from-a');
      expect((await b.take(11)).toString('latin1')).toBe('only-from-a');
      expect(await b.drainFor(150)).toBe('');
      expect(await x.drainFor(0)).toBe('');
      expect(await c.drainFor(0)).toBe('');
      // Not registered / wrong KEY.
      const anon = await Peer.open(srv.port);
      expect(await anon.request(`TCP:PUSH:${key}:RAW:${b.id}`)).toBe('[FAIL:NOID]');
      expect(await x.request(`TCP:PUSH:${key}:RAW:${b.id}`)).toBe('[FAIL:NOKEY]');
    });

    it('when B disconnects, A’s next write gets [FAIL:REM_LINK] (dropped) and A speaks commands again', async () => {
      const key = srv.newKey();
      const [a, b] = await pair(key);
      await link(a, b, key);
      a.write('before');
      expect((await b.take(6)).toString('latin1')).toBe('before');
      await closeAndSettle(b);
      a.write(`dropped TCP:GID:${key}\r\n`);
      expect(await a.line()).toBe('[FAIL:REM_LINK]');
      expect(await a.drainFor(150)).toBe('');
      expect(await a.request(`TCP:GID:${key}`)).toBe(`[OK:${a.id}]`);
      // B comes back (a new connection with the same ID): A links again.
      const b2 = await device(key, b.id);
      await link(a, b2, key);
      a.write('after');
      expect((await b2.take(5)).toString('latin1')).toBe('after');
      expect(await b2.drainFor(100)).toBe('');
    });

    it('when A disconnects, B’s incoming link is cleared: another device links to B, and B to it', async () => {
      const key = srv.newKey();
      const [a, b] = await pair(key);
      const c = await deviceOn(key, 'RC', place.c);
      await duplex(a, b, key);
      expect(await c.request(`TCP:PUSH:${key}:RAW:${b.id}`)).toBe('[FAIL:REM_LINK]');
      await closeAndSettle(a);
      // B was a writer too: its next write is answered and dropped.
      b.write('to-nobody');
      expect(await b.line()).toBe('[FAIL:REM_LINK]');
      await link(c, b, key);
      await link(b, c, key);
      c.write('c->b');
      b.write('b->c');
      expect((await b.take(4)).toString('latin1')).toBe('c->b');
      expect((await c.take(4)).toString('latin1')).toBe('b->c');
      // A comes back with its ID; B is taken by C now.
      const a2 = await device(key, a.id);
      expect(await a2.request(`TCP:PUSH:${key}:RAW:${b.id}`)).toBe('[FAIL:REM_LINK]');
      expect(await b.drainFor(100)).toBe('');
    });
  });
}

// ------------------------------------------------------------------ volume

describe('RAW volume', () => {
  it('256 MiB each way through a full-duplex channel across shards, SHA-256 equal on both ends', async () => {
    const key = srv.newKey();
    const a = await deviceOn(key, 'BA', 0);
    const b = await deviceOn(key, 'BB', 1);
    await duplex(a, b, key);
    const N = 256 * MiB;
    const t0 = performance.now();
    const [sentA, sentB, gotB, gotA] = await Promise.all([
      sendStream(a, N, 1),
      sendStream(b, N, 2),
      b.receive(N, 55000),
      a.receive(N, 55000),
    ]);
    const s = (performance.now() - t0) / 1000;
    console.log(
      `256 MiB each way across shards: ${s.toFixed(1)} s, ${((2 * N) / MiB / s).toFixed(0)} MiB/s both ways together`,
    );
    expect(gotB).toBe(sentA);
    expect(gotA).toBe(sentB);
    expect(await a.drainFor(100)).toBe('');
    expect(await b.drainFor(0)).toBe('');
  }, 60000);

  it('50 concurrent RAW pairs, each 2 MiB each way with hash checks, on and across shards', async () => {
    const key = srv.newKey();
    const pairs: [Peer, Peer][] = [];
    for (let i = 0; i < 50; i++) pairs.push([await device(key, `PA${i}`), await device(key, `PB${i}`)]);
    const r = await fetch(`http://127.0.0.1:${srv.httpPort}/api/v1/accounts/me/devices`, {
      headers: { authorization: `Bearer ${key}` },
    });
    const where = new Map(
      ((await r.json()) as { devices: { id: string; shard: number }[] }).devices.map((d) => [d.id, d.shard]),
    );
    const across = pairs.filter(([a, b]) => where.get(a.id) !== where.get(b.id)).length;
    expect(across).toBeGreaterThan(0);
    expect(across).toBeLessThan(50);
    await Promise.all(pairs.map(([a, b]) => duplex(a, b, key)));
    const N = 2 * MiB;
    await Promise.all(
      pairs.map(async ([a, b], i) => {
        const [sa, sb, gb, ga] = await Promise.all([
          sendStream(a, N, 100 + i, { chunk: 64 * 1024 }),
          sendStream(b, N, 200 + i, { chunk: 48 * 1024 + 7 }),
          b.receive(N, 25000),
          a.receive(N, 25000),
        ]);
        expect(gb, `pair ${i} A→B`).toBe(sa);
        expect(ga, `pair ${i} B→A`).toBe(sb);
      }),
    );
    for (const [a, b] of pairs) {
      expect(a.text).toBe('');
      expect(b.text).toBe('');
    }
  }, 30000);
});

// ------------------------------------------------------------------ backpressure

for (const place of PLACEMENTS) {
  it(`backpressure, ${place.name}: a reader that stops for 5 s pauses the writer, memory stays bounded, nothing is lost`, async () => {
    const key = srv.newKey();
    const a = await deviceOn(key, 'SA', place.a);
    const b = await deviceOn(key, 'SB', place.b);
    await link(a, b, key);
    const N = 128 * MiB;
    b.sock.pause();
    const recv = b.startReceive(N);
    const rss0 = process.memoryUsage.rss();
    const sent = sendStream(a, N, 7);
    let rssMax = rss0;
    const samples: { t: number; flushed: number }[] = [];
    const t0 = Date.now();
    while (Date.now() - t0 < 5000) {
      await sleep(100);
      rssMax = Math.max(rssMax, process.memoryUsage.rss());
      samples.push({ t: Date.now() - t0, flushed: a.flushed });
    }
    const at = (ms: number): number => samples.find((s) => s.t >= ms)?.flushed ?? 0;
    const written = a.flushed;
    const growth = rssMax - rss0;
    console.log(
      `${place.name}: writer took ${(written / MiB).toFixed(1)} MiB in 5 s (${(at(2000) / MiB).toFixed(1)} at 2 s), ` +
        `server+test RSS grew ${(growth / MiB).toFixed(1)} MiB, reader got ${(recv.got() / MiB).toFixed(1)} MiB`,
    );
    // Paused: the writer's socket stopped draining (kernel buffers on both legs plus the window, then nothing).
    expect(written).toBeLessThan(N / 2);
    expect(written - at(2000)).toBeLessThan(MiB);
    expect(recv.got()).toBe(0);
    // Bounded: the relay did not keep what the writer wrote (it would show as RSS growth of the same size).
    expect(growth).toBeLessThan(Math.max(24 * MiB, written / 2));
    // Resume: everything arrives intact.
    b.sock.resume();
    const [hs, hr] = await Promise.all([sent, recv.done]);
    expect(hr).toBe(hs);
    expect(b.text).toBe('');
    expect(await a.drainFor(50)).toBe('');
  }, 40000);
}

// ------------------------------------------------------------------ disconnect in the middle

for (const place of PLACEMENTS) {
  describe(`disconnect mid-stream, ${place.name}`, () => {
    it('the writer leaves: B keeps a prefix of the stream, B’s own link breaks cleanly, A re-registers and both link again', async () => {
      const key = srv.newKey();
      const a = await deviceOn(key, 'WA', place.a);
      const b = await deviceOn(key, 'WB', place.b);
      await duplex(a, b, key);
      const N = 512 * MiB;
      const recv = b.startReceive(N);
      let stop = false;
      const sending = sendStream(a, N, 11, { stop: () => stop }).catch(() => '');
      await waitFor(() => recv.got() >= 8 * MiB, 'B to receive 8 MiB', 15000);
      stop = true;
      await closeAndSettle(a);
      await sending;
      // Whatever B got is a prefix of what A wrote, in order.
      for (let last = -1; recv.got() !== last; ) {
        last = recv.got();
        await sleep(150);
      }
      const { got, hash } = recv.stop();
      expect(got).toBeGreaterThanOrEqual(8 * MiB);
      expect(got).toBeLessThan(N);
      expect(hash).toBe(hashPrefix(11, got, MiB));
      // B was linked to A: its next write fails once, then it speaks commands.
      b.write('probe');
      expect(await b.line()).toBe('[FAIL:REM_LINK]');
      expect(await b.request(`TCP:GID:${key}`)).toBe(`[OK:${b.id}]`);
      // A's ID is free again; both link again, both ways.
      const a2 = await device(key, a.id);
      await duplex(a2, b, key);
      const M = 4 * MiB;
      const [s1, s2, r1, r2] = await Promise.all([
        sendStream(a2, M, 12),
        sendStream(b, M, 13),
        b.receive(M, 15000),
        a2.receive(M, 15000),
      ]);
      expect(r1).toBe(s1);
      expect(r2).toBe(s2);
    }, 40000);

    it('the reader leaves: A gets [FAIL:REM_LINK] once, its leftover bytes are parsed as commands, and it links to B again', async () => {
      const key = srv.newKey();
      const a = await deviceOn(key, 'LA', place.a);
      const b = await deviceOn(key, 'LB', place.b);
      await link(a, b, key);
      // Lines that are harmless once parsed as commands ([FAIL:UNKNOWN_COMMAND] each).
      const line = Buffer.from(`${'x'.repeat(3999)}\n`, 'latin1');
      const block = Buffer.concat(Array.from({ length: 64 }, () => line)); // 250 KiB
      let stop = false;
      let wrote = 0;
      const writing = (async () => {
        while (!stop && !a.closed) {
          wrote += block.length;
          if (!a.sock.write(block)) await a.drained().catch(() => {});
        }
      })();
      const sink = b.startReceive(Number.MAX_SAFE_INTEGER);
      await waitFor(() => sink.got() >= 8 * MiB, 'B to receive 8 MiB', 15000);
      // The reader stops reading, so bytes are in flight when it leaves.
      b.sock.pause();
      await sleep(200);
      stop = true;
      await closeAndSettle(b);
      await writing;
      await sleep(300);
      a.write(`${'y'.repeat(10)}\n`);
      await sleep(200);
      a.write(`TCP:GID:${key}\r\n`);
      await a.until(() => a.text.includes(`[OK:${a.id}]\r\n`), 15000, 'the GID reply');
      const lines = a.text.split('\r\n');
      expect(lines.pop()).toBe('');
      expect(lines[0]).toBe('[FAIL:REM_LINK]');
      expect(lines.at(-1)).toBe(`[OK:${a.id}]`);
      const others = new Set(lines.slice(1, -1));
      others.delete('[FAIL:UNKNOWN_COMMAND]');
      expect([...others]).toEqual([]);
      console.log(`${place.name}: A wrote ${(wrote / MiB).toFixed(1)} MiB, ${lines.length - 2} leftover lines parsed`);
      await a.drainFor(0);
      // B back with its ID: A links again and streams.
      const b2 = await device(key, b.id);
      await link(a, b2, key);
      const M = 4 * MiB;
      const [s, r] = await Promise.all([sendStream(a, M, 21), b2.receive(M, 15000)]);
      expect(r).toBe(s);
      // And the other way.
      await link(b2, a, key);
      const [s2, r2] = await Promise.all([sendStream(b2, M, 22), a.receive(M, 15000)]);
      expect(r2).toBe(s2);
    }, 40000);

    it('a writer that sends and then closes gracefully: every byte reaches B', async () => {
      const key = srv.newKey();
      const a = await deviceOn(key, 'EA', place.a);
      const b = await deviceOn(key, 'EB', place.b);
      await link(a, b, key);
      const N = 16 * MiB;
      const recv = b.receive(N, 20000);
      const sent = await sendStream(a, N, 31);
      a.sock.end();
      expect(await recv).toBe(sent);
    }, 30000);
  });
}

// ------------------------------------------------------------------ liveness (SYNC) with a short COM_CHK

describe('no SYNC in a RAW stream (NODE.COM_CHK = 0.3 s)', () => {
  let quick: TestServer;
  beforeAll(async () => {
    quick = await startTestServer({ NODE: { COM_CHK: 0.3 } });
  });
  afterAll(async () => {
    await quick?.stop();
  });
  afterEach(async () => {
    for (const p of opened.splice(0)) p.close();
    await waitFor(() => openTotal(quick) === 0, 'the server to see every connection of the test closed');
  });

  it('an idle full-duplex stream and an idle one-way stream get no SYNC and stay open, while a plain device misses liveness', async () => {
    const key = quick.newKey();
    const a = await device(key, 'QA', quick.port);
    const b = await device(key, 'QB', quick.port);
    const c = await device(key, 'QC', quick.port);
    const d = await device(key, 'QD', quick.port);
    const plain = await device(key, 'QP', quick.port);
    await duplex(a, b, key);
    await link(c, d, key);
    a.write('abc');
    b.write('xyz');
    c.write('123');
    await sleep(1500); // five ticks with nothing sent on any stream
    a.write('def');
    b.write('uvw');
    c.write('456');
    await sleep(300);
    expect(await b.drainFor(0)).toBe('abcdef');
    expect(await a.drainFor(0)).toBe('xyzuvw');
    expect(await d.drainFor(0)).toBe('123456');
    // The plain device got one SYNC, stayed silent and was closed (missed liveness); the streams live on.
    expect(await plain.drainFor(0)).toMatch(/^\[SYNC:\d\d\.\d\d\.\d{4}_\d\d:\d\d:\d\d\]\r\n$/);
    expect(plain.closed).toBe(true);
    expect([a, b, c, d].map((p) => p.closed)).toEqual([false, false, false, false]);
  }, 15000);

  it('after the writer leaves, the device that only received gets SYNC again (§2 applies once no stream flows)', async () => {
    const key = quick.newKey();
    const a = await device(key, 'LA', quick.port);
    const b = await device(key, 'LB', quick.port);
    await link(a, b, key);
    await closeAndSettle(a, quick);
    await b.drainFor(0);
    await sleep(1200);
    expect(await b.drainFor(0)).toMatch(/\[SYNC:/);
  }, 15000);

  it('a device left behind by a channel still misses liveness: it is closed and a newcomer takes its ID, as for a plain device', async () => {
    const key = quick.newKey();
    const plain = await device(key, 'TP', quick.port);
    const a = await device(key, 'TA', quick.port);
    const b = await device(key, 'TB', quick.port);
    await link(a, b, key);
    await closeAndSettle(a, quick);
    await sleep(1500); // five ticks; neither TP nor TB sends anything
    expect([plain.closed, b.closed]).toEqual([true, true]);
    const p2 = await Peer.open(quick.port);
    expect(await p2.request(`TCP:ID:${key}:TP`)).toBe('[OK:TP]');
    const b2 = await Peer.open(quick.port);
    expect(await b2.request(`TCP:ID:${key}:TB`)).toBe('[OK:TB]');
  }, 15000);

  it('after the reader leaves and the writer got [FAIL:REM_LINK], the writer gets SYNC again', async () => {
    const key = quick.newKey();
    const c = await device(key, 'LC', quick.port);
    const d = await device(key, 'LD', quick.port);
    await link(c, d, key);
    await closeAndSettle(d, quick);
    expect(await c.request('probe')).toBe('[FAIL:REM_LINK]');
    await sleep(1200);
    expect(await c.drainFor(0)).toMatch(/\[SYNC:/);
  }, 15000);
});

// ------------------------------------------------------------------ order against replies decided elsewhere

describe('stream bytes never overtake what the reader is owed', () => {
  it('a reader waiting for a STATUS reply from the supervisor gets that reply and PUSHRAW: before any stream byte', async () => {
    const key = srv.newKey();
    const ghost = await device(key, 'GHOST');
    await closeAndSettle(ghost, srv);
    let replyFirst = 0;
    for (let i = 0; i < 30; i++) {
      const a = await device(key, `OA${i}`);
      const b = await device(key, `OB${i}`);
      // STATUS of an offline ID is answered by the supervisor (a reply decided on another thread); the RAW
      // open and its first bytes race it.
      b.write(`TCP:STATUS:${key}:GHOST\r\n`);
      a.write(`TCP:PUSH:${key}:RAW:OB${i}\r\nRAWDATA`);
      await b.until(
        () => ['RAWDATA', '[OK:OFFLINE:', 'PUSHRAW:'].every((x) => b.text.includes(x)),
        5000,
        'the reply, PUSHRAW: and the stream',
      );
      const got = await b.drainFor(20);
      // Two orders when the server read B's STATUS first (B waits for its reply: nothing may overtake it). The two
      // lines were written at once on two sockets, so the server may also read A's RAW first: then the stream has
      // started before B asked, and the reply legitimately follows the stream bytes, whole.
      const waited = /^(\[OK:OFFLINE:\d+\]\r\nPUSHRAW:\r\n|PUSHRAW:\r\n\[OK:OFFLINE:\d+\]\r\n)RAWDATA$/.test(got);
      if (waited) replyFirst++;
      else expect(got).toMatch(/^PUSHRAW:\r\nRAWDATA\[OK:OFFLINE:\d+\]\r\n$/);
      a.close();
      b.close();
    }
    // Reading B first is by far the usual order (its line was written first): most rounds test the waiting reader.
    expect(replyFirst).toBeGreaterThanOrEqual(20);
  });
});
