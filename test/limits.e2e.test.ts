// End-to-end tests of the configurable limits (PROTOCOL.md §1, §2, §4, §5, §10) against the real server:
// supervisor + two shard worker threads on one reusePort port, exact reply bytes over TCP.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ask, device, reply, SYNC_RE, TestClient } from './helpers/client.ts';
import { devices } from './helpers/devices.ts';
import { metric } from './helpers/metrics.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';
import { openPerShard, sleep } from './helpers/shards.ts';

/** `dd.MM.yyyy` of a date in local time. */
function localDay(d: Date): string {
  const p = (n: number): string => String(n).padStart(2, '0');
  return `${p(d.getDate())}.${p(d.getMonth() + 1)}.${d.getFullYear()}`;
}

/** Checks a SYNC line: exact shape, today's local date, a local time close to now. */
function expectSyncNow(line: string, before: Date): void {
  const m = SYNC_RE.exec(line);
  expect(m, `not a SYNC line: ${JSON.stringify(line)}`).not.toBeNull();
  const [, dd, mm, yyyy, hh, mi, ss] = m!.map(Number) as number[];
  const after = new Date();
  // A midnight between the start of the test and now may make either day the right one.
  expect([localDay(before), localDay(after)]).toContain(`${m![1]}.${m![2]}.${m![3]}`);
  expect(hh).toBeLessThan(24);
  expect(mi).toBeLessThan(60);
  expect(ss).toBeLessThan(60);
  // Server local time (not UTC): the stamp, read as local time, is within a minute of now.
  const stamp = new Date(yyyy!, mm! - 1, dd!, hh, mi, ss).getTime();
  expect(Math.abs(stamp - after.getTime())).toBeLessThan(60_000);
}

/** Waits (with a deadline) until `probe` returns `want`; returns the last value seen. */
async function poll<T>(probe: () => Promise<T>, want: T, ms = 5000, every = 50): Promise<T> {
  const deadline = Date.now() + ms;
  let last = await probe();
  while (last !== want && Date.now() < deadline) {
    await sleep(every);
    last = await probe();
  }
  return last;
}

describe('PServer.MAXLOAD', () => {
  let srv: TestServer;
  beforeAll(async () => {
    srv = await startTestServer({ PServer: { MAXLOAD: 5 } });
  });
  afterAll(async () => {
    await srv?.stop();
  });

  it('answers the connection past the limit [FAIL:SERVER_FULL] and closes it; a freed slot is usable again', async () => {
    const { port, key } = srv;
    // Registering proves the server has accepted (and counted) each of the five.
    const devs: TestClient[] = [];
    for (let i = 0; i < 5; i++) devs.push(await device(port, key, `M${i}`));

    for (let n = 0; n < 3; n++) {
      const extra = await TestClient.open(port);
      await extra.closedByServer();
      expect(extra.buffer).toBe('[FAIL:SERVER_FULL]\r\n');
    }

    // The five admitted connections are unaffected.
    expect(await devs[0]!.request(`TCP:PUSH:${key}:RID:M4:still here`)).toBe('[OK:DATA_SENT]');
    expect(await devs[4]!.line()).toBe('PUSH:still here');

    // Freeing one slot admits one more connection (the close reaches the server asynchronously).
    devs[0]!.close();
    let admitted: TestClient | null = null;
    const deadline = Date.now() + 5000;
    while (admitted === null && Date.now() < deadline) {
      const c = await TestClient.open(port);
      const r = await c.request(`TCP:ID:${key}:M0`);
      if (r === '[OK:M0]') admitted = c;
      else {
        expect(r).toBe('[FAIL:SERVER_FULL]');
        await c.closedByServer();
        await sleep(50);
      }
    }
    expect(admitted, 'a connection is admitted once a slot is free').not.toBeNull();
    const again = await TestClient.open(port);
    await again.closedByServer();
    expect(again.buffer).toBe('[FAIL:SERVER_FULL]\r\n');
    admitted!.close();
    for (const d of devs) d.close();
  });
});

describe('PServer.VELOCITY', () => {
  let srv: TestServer;
  beforeAll(async () => {
    srv = await startTestServer({ PServer: { VELOCITY: 5 } });
  });
  afterAll(async () => {
    await srv?.stop();
  });

  it('refuses connections past the per-minute rate with [FAIL:RATE_LIMIT] and closes them', async () => {
    const { port, key } = srv;
    // The window is a fixed calendar minute: do not straddle its end.
    const intoMinute = Date.now() % 60_000;
    if (intoMinute > 45_000) await sleep(60_000 - intoMinute + 200);
    const devs: TestClient[] = [];
    for (let i = 0; i < 5; i++) devs.push(await device(port, key, `V${i}`));
    for (let n = 0; n < 3; n++) {
      const extra = await TestClient.open(port);
      await extra.closedByServer();
      expect(extra.buffer).toBe('[FAIL:RATE_LIMIT]\r\n');
    }
    // Admitted connections keep working.
    expect(await devs[1]!.request(`TCP:PUSH:${key}:FRIENDS:v`)).toBe('[OK:ALL_4]');
    for (const i of [0, 2, 3, 4]) expect(await devs[i]!.line()).toBe('PUSH:v');
    for (const d of devs) d.close();
  });
});

describe('NODE.WAIT_FOR_CMD 0.3 s (every other key at its default)', () => {
  let srv: TestServer;
  beforeAll(async () => {
    srv = await startTestServer({ NODE: { WAIT_FOR_CMD: 0.3 } });
  });
  afterAll(async () => {
    await srv?.stop();
  });

  it('closes a connection that sends no command, without a word', async () => {
    const c = await TestClient.open(srv.port);
    await c.closedByServer(5000);
    expect(c.buffer).toBe('');
  });

  it('keeps connections that did send a command (registered or not)', async () => {
    const { port, key } = srv;
    const reg = await device(port, key, 'W1');
    const unreg = await TestClient.open(port);
    expect(await unreg.request('HELLO')).toBe('[FAIL:UNKNOWN_COMMAND]');
    expect(await reg.silence(1000)).toBe('');
    expect(unreg.buffer).toBe('');
    expect(reg.closed).toBe(false);
    expect(unreg.closed).toBe(false);
    expect(await reg.request(`TCP:GID:${key}`)).toBe('[OK:W1]');
    expect(await unreg.request(`TCP:GID:${key}`)).toBe('[FAIL:NOID]');
    reg.close();
    unreg.close();
  });

  it('default USER.10MAXNODE: a level-1 account registers 10 devices, the 11th gets [FAIL:QUOTA]', async () => {
    const { port } = srv;
    const key = srv.newKey(undefined, 1);
    const devs: TestClient[] = [];
    for (let i = 0; i < 10; i++) devs.push(await device(port, key, `Q${i}`));
    const c = await TestClient.open(port);
    expect(await c.request(`TCP:ID:${key}:Q10`)).toBe('[FAIL:QUOTA]');
    expect(await devs[0]!.request(`TCP:PUSH:${key}:FRIENDS:ten`)).toBe('[OK:ALL_9]');
    for (const d of devs.slice(1)) expect(await d.line()).toBe('PUSH:ten');
    for (const d of [...devs, c]) d.close();
  });

  it('default NODE.MAX_ID: 64 characters register, 65 are [FAIL:INVALID_DATA]', async () => {
    const { port, key } = srv;
    const c = await TestClient.open(port);
    expect(await c.request(`TCP:ID:${key}:${'i'.repeat(65)}`)).toBe('[FAIL:INVALID_DATA]');
    expect(await c.request(`TCP:ID:${key}:${'i'.repeat(64)}`)).toBe(`[OK:${'I'.repeat(64)}]`);
    c.close();
  });

  it('takes an unterminated line as a command after the default LINE_IDLE_MS', async () => {
    const c = await TestClient.open(srv.port);
    c.write(`TCP:ID:${srv.key}:IDLE1`);
    expect(await c.line(3000)).toBe('[OK:IDLE1]');
    c.close();
  });
});

describe('NODE.COM_CHK (0.3 s)', () => {
  let srv: TestServer;
  beforeAll(async () => {
    srv = await startTestServer({ NODE: { COM_CHK: 0.3 } });
  });
  afterAll(async () => {
    await srv?.stop();
  });

  it('sends a silent unregistered connection one [SYNC:...] and closes it at the second tick', async () => {
    const before = new Date();
    const c = await TestClient.open(srv.port);
    const first = await c.line(5000);
    expectSyncNow(first, before);
    await c.closedByServer(5000);
    expect(c.buffer).toBe('');
  });

  it('sweeps many connections a slice at a time: each of 300 silent ones gets one SYNC and is closed at its second tick', async () => {
    const opened: { c: TestClient; at: number }[] = [];
    for (let i = 0; i < 300; i++) opened.push({ c: await TestClient.open(srv.port), at: Date.now() });
    const closedAfter = await Promise.all(
      opened.map(async ({ c, at }) => {
        await c.closedByServer(10000);
        return Date.now() - at;
      }),
    );
    for (const { c } of opened) {
      const lines = c.buffer.split('\r\n');
      expect(lines.pop()).toBe('');
      expect(lines.length).toBe(1);
      expect(lines[0]).toMatch(/^\[SYNC:/);
    }
    // Not before two ticks (the margin is the client's own delay in seeing its connection, under a loaded CI box);
    // within a sweep period (75 ms here, in 7 slices) of it, and this box's scheduling.
    expect(Math.min(...closedAfter)).toBeGreaterThanOrEqual(2 * 300 - 100);
    expect(Math.max(...closedAfter)).toBeLessThan(2 * 300 + 1500);
  }, 30000);

  it('closes an unregistered connection at the second tick even when it talks (no SYNC then)', async () => {
    const c = await TestClient.open(srv.port);
    const timer = setInterval(() => c.write(`TCP:GID:${srv.key}\r\n`), 50);
    try {
      await c.closedByServer(5000);
    } finally {
      clearInterval(timer);
    }
    const lines = c.buffer.split('\r\n');
    expect(lines.pop()).toBe('');
    expect(lines.length).toBeGreaterThan(0);
    for (const l of lines) expect(l).toBe('[FAIL:NOID]');
  });

  it('keeps a registered connection that answers each SYNC (an empty line): SYNC every silent tick, still reachable', async () => {
    const { port, key } = srv;
    const before = new Date();
    const quiet = await device(port, key, 'QUIET');
    for (let n = 0; n < 4; n++) {
      expectSyncNow(await quiet.line(5000), before);
      quiet.write('\r\n'); // any byte is a sign of life; an empty line has no reply
    }
    expect(quiet.closed).toBe(false);
    const talker = await device(port, key, 'TALKER');
    expect(await ask(talker, `TCP:PUSH:${key}:RID:QUIET:are you there`)).toBe('[OK:DATA_SENT]');
    expect(await reply(quiet)).toBe('PUSH:are you there');
    expect(await ask(quiet, `TCP:GID:${key}`)).toBe('[OK:QUIET]');
    expect(quiet.closed).toBe(false);
    quiet.close();
    talker.close();
  });

  it('closes a registered connection silent for two ticks (missed liveness) after one SYNC, and frees its ID', async () => {
    const { port, key } = srv;
    const silent = await device(port, key, 'SILENT');
    const lastByte = Date.now();
    await silent.closedByServer(5000);
    const after = Date.now() - lastByte;
    // One tick of silence brings a SYNC, the second closes: never before 2 ticks, and within a sweep of it.
    expect(after).toBeGreaterThanOrEqual(2 * 300 - 20);
    expect(after).toBeLessThan(2 * 300 + 1000);
    const lines = silent.buffer.split('\r\n');
    expect(lines.pop()).toBe('');
    expect(lines.length).toBe(1);
    expect(lines[0]).toMatch(/^\[SYNC:/);
    const again = await device(port, key, 'SILENT');
    expect(await ask(again, `TCP:GID:${key}`)).toBe('[OK:SILENT]');
    again.close();
  });
});

describe('NODE.MAX_OUTBUF and NODE.WRITE_DEADLINE', () => {
  let srv: TestServer;
  beforeAll(async () => {
    srv = await startTestServer({ NODE: { MAX_OUTBUF: 1024, WRITE_DEADLINE: 2 } });
  });
  afterAll(async () => {
    await srv?.stop();
  });

  /**
   * Registers `id` on a connection accepted by shard `shard` (the kernel picks the shard; connections
   * that land elsewhere are kept open until the end, so the counters stay readable, then closed).
   */
  async function deviceOnShard(key: string, id: string, shard: number): Promise<TestClient> {
    const spare: TestClient[] = [];
    try {
      for (let tries = 0; tries < 200; tries++) {
        const before = openPerShard(srv);
        const c = await TestClient.open(srv.port);
        // Any reply proves the shard has accepted and counted the connection.
        expect(await c.request(`TCP:GID:${key}`)).toBe('[FAIL:NOID]');
        const after = openPerShard(srv);
        const grew = [0, 1].filter((i) => after[i]! > before[i]!);
        if (grew.length === 1 && grew[0] === shard) {
          expect(await c.request(`TCP:ID:${key}:${id}`)).toBe(`[OK:${id}]`);
          return c;
        }
        spare.push(c);
      }
      throw new Error(`no connection landed on shard ${shard}`);
    } finally {
      for (const c of spare) c.close();
    }
  }

  for (const placement of ['same shard', 'other shard'] as const) {
    it(`refuses pushes to a reader that never reads (${placement}), reports it undelivered, then drops it as a slow consumer`, async () => {
      const { port } = srv;
      const key = srv.newKey();
      const sender = await deviceOnShard(key, 'SND', 0);
      const slow = await deviceOnShard(key, 'SLOW', placement === 'same shard' ? 0 : 1);
      const other = await device(port, key, 'OTHER');
      slow.socket.pause();

      // Messages smaller than MAX_OUTBUF, one at a time: the bound is reached only once the
      // kernel's socket buffers are full too.
      const payload = 'x'.repeat(1000);
      let sent = 0;
      let r = '';
      const deadline = Date.now() + 30000;
      for (;;) {
        r = await sender.request(`TCP:PUSH:${key}:RID:SLOW:${payload}`);
        if (r !== '[OK:DATA_SENT]' || Date.now() > deadline) break;
        sent++;
      }
      expect(r).toBe('[FAIL:REM_LINK]');
      expect(sent).toBeGreaterThan(0);
      // Still full: refused again.
      expect(await sender.request(`TCP:PUSH:${key}:RID:SLOW:more`)).toBe('[FAIL:REM_LINK]');

      // FRIENDS counts the full device but does not deliver to it.
      expect(await sender.request(`TCP:PUSH:${key}:FRIENDS:group`)).toBe('[OK:1/2]');
      expect(await other.line()).toBe('PUSH:group');
      expect(await other.request(`TCP:REMID:${key}`)).toBe('[OK:NODEREMOVED]');
      expect(await sender.request(`TCP:PUSH:${key}:FRIENDS:group2`)).toBe('[FAIL:NO_ID]');

      // Past WRITE_DEADLINE while still full, the slow consumer is disconnected: its ID is gone.
      const last = await poll(() => sender.request(`TCP:PUSH:${key}:RID:SLOW:x`), '[FAIL:REM_ID]', 15000, 100);
      expect(last).toBe('[FAIL:REM_ID]');
      expect(await sender.request(`TCP:PUSH:${key}:FRIENDS:group3`)).toBe('[FAIL:NO_ID]');
      // Once it reads again it finds its connection closed; it got PUSH lines only (the last one may be cut).
      slow.socket.resume();
      await slow.closedByServer(15000);
      const got = slow.buffer.split('\r\n');
      const tail = got.pop()!;
      expect(`PUSH:${payload}`.startsWith(tail)).toBe(true);
      for (const l of got) expect(l).toBe(`PUSH:${payload}`);
      expect(got.length).toBeLessThanOrEqual(sent);
      // A new connection may take the ID again.
      const back = await device(port, key, 'SLOW');
      expect(await sender.request(`TCP:PUSH:${key}:RID:SLOW:welcome`)).toBe('[OK:DATA_SENT]');
      expect(await back.line()).toBe('PUSH:welcome');
      for (const c of [sender, other, back]) c.close();
    }, 60000);

    it(`does not report a reader that keeps up as full after one message larger than MAX_OUTBUF (${placement})`, async () => {
      const key = srv.newKey();
      const sender = await deviceOnShard(key, 'BIGA', 0);
      const reader = await deviceOnShard(key, 'BIGB', placement === 'same shard' ? 0 : 1);
      const big = 'b'.repeat(2000);
      expect(await sender.request(`TCP:PUSH:${key}:RID:BIGB:${big}`)).toBe('[OK:DATA_SENT]');
      expect(await reader.line()).toBe(`PUSH:${big}`);
      // The reader has read everything: nothing is queued towards it, so its buffer is not full (§5).
      expect(await sender.request(`TCP:PUSH:${key}:RID:BIGB:next`)).toBe('[OK:DATA_SENT]');
      expect(await reader.line()).toBe('PUSH:next');
      expect(await sender.request(`TCP:PUSH:${key}:FRIENDS:all`)).toBe('[OK:ALL_1]');
      expect(await reader.line()).toBe('PUSH:all');
      sender.close();
      reader.close();
    });
  }
});

describe('NODE.PUSH_RATE (5 per second)', () => {
  let srv: TestServer;
  beforeAll(async () => {
    srv = await startTestServer({ NODE: { PUSH_RATE: 5 } });
  });
  afterAll(async () => {
    await srv?.stop();
  });

  it('answers a burst past the rate [FAIL:RATE_LIMIT], per account, and refills', async () => {
    const { port, key } = srv;
    const a = await device(port, key, 'RA');
    const b = await device(port, key, 'RB');
    // One segment: 10 RID pushes and a group push (group pushes count too).
    let burst = '';
    for (let i = 0; i < 10; i++) burst += `TCP:PUSH:${key}:RID:RB:p${i}\r\n`;
    burst += `TCP:PUSH:${key}:FRIENDS:f\r\n`;
    a.write(burst);
    const replies = await a.lines(11);
    expect(replies).toEqual([...Array(5).fill('[OK:DATA_SENT]'), ...Array(6).fill('[FAIL:RATE_LIMIT]')]);
    expect(await b.lines(5)).toEqual(['PUSH:p0', 'PUSH:p1', 'PUSH:p2', 'PUSH:p3', 'PUSH:p4']);
    expect(await b.silence(200)).toBe('');

    // Another account has its own budget.
    const key2 = srv.newKey();
    const c = await device(port, key2, 'RC');
    const d = await device(port, key2, 'RD');
    expect(await c.request(`TCP:PUSH:${key2}:RID:RD:other account`)).toBe('[OK:DATA_SENT]');
    expect(await d.line()).toBe('PUSH:other account');

    // After a second the budget is back.
    await sleep(1100);
    expect(await a.request(`TCP:PUSH:${key}:RID:RB:later`)).toBe('[OK:DATA_SENT]');
    expect(await b.line()).toBe('PUSH:later');
    for (const x of [a, b, c, d]) x.close();
  });
});

describe('small limits: MAX_FANOUT 3, 10MAXNODE 2/3, MAX_ID 8, DATA_CACHE 3, MAX_LINE 64, LINE_IDLE_MS 0', () => {
  let srv: TestServer;
  beforeAll(async () => {
    srv = await startTestServer({
      NODE: { MAX_FANOUT: 3, MAX_ID: 8, DATA_CACHE: 3, MAX_LINE: 64, LINE_IDLE_MS: 0 },
      USER: { '10MAXNODE': [2, 3, 10000, 1000000] },
    });
  });
  afterAll(async () => {
    await srv?.stop();
  });

  it('MAX_FANOUT: a FRIENDS group larger than the limit is refused whole', async () => {
    const { port } = srv;
    const key = srv.newKey();
    const devs = [];
    for (let i = 1; i <= 4; i++) devs.push(await device(port, key, `F${i}`));
    const [f1, ...rest] = devs as [TestClient, ...TestClient[]];
    expect(await f1.request(`TCP:PUSH:${key}:FRIENDS:three`)).toBe('[OK:ALL_3]');
    for (const d of rest) expect(await d.line()).toBe('PUSH:three');
    const f5 = await device(port, key, 'F5');
    expect(await f1.request(`TCP:PUSH:${key}:FRIENDS:four`)).toBe('[FAIL:FANOUT_LIMIT]');
    expect(await f5.request(`TCP:PUSH:${key}:FRIENDS:four`)).toBe('[FAIL:FANOUT_LIMIT]');
    await sleep(200);
    for (const d of [...devs, f5]) expect(d.buffer).toBe('');
    // A single target is not a group.
    expect(await f1.request(`TCP:PUSH:${key}:RID:F5:one`)).toBe('[OK:DATA_SENT]');
    expect(await f5.line()).toBe('PUSH:one');
    for (const d of [...devs, f5]) d.close();
  });

  it('USER.10MAXNODE: registering past the plan level quota answers [FAIL:QUOTA]', async () => {
    const { port } = srv;
    const k1 = srv.newKey(undefined, 1);
    const a = await device(port, k1, 'Q1');
    const b = await device(port, k1, 'Q2');
    const c = await TestClient.open(port);
    expect(await c.request(`TCP:ID:${k1}:Q3`)).toBe('[FAIL:QUOTA]');
    expect(c.closed).toBe(false);
    expect(await c.request(`TCP:GID:${k1}`)).toBe('[FAIL:NOID]');
    // Re-registering a held ID on its own connection is not a new device.
    expect(await a.request(`TCP:ID:${k1}:Q1`)).toBe('[OK:Q1]');
    // A freed device makes room (the release reaches the owner shard asynchronously).
    a.close();
    const r = await poll(() => c.request(`TCP:ID:${k1}:Q3`), '[OK:Q3]');
    expect(r).toBe('[OK:Q3]');
    expect(await c.request(`TCP:PUSH:${k1}:RID:Q2:hi`)).toBe('[OK:DATA_SENT]');
    expect(await b.line()).toBe('PUSH:hi');

    const k2 = srv.newKey(undefined, 2);
    const l2 = [];
    for (let i = 0; i < 3; i++) l2.push(await device(port, k2, `L${i}`));
    const extra = await TestClient.open(port);
    expect(await extra.request(`TCP:ID:${k2}:L3`)).toBe('[FAIL:QUOTA]');

    const k3 = srv.newKey(undefined, 3);
    const l3 = [];
    for (let i = 0; i < 4; i++) l3.push(await device(port, k3, `L${i}`));
    for (const x of [b, c, extra, ...l2, ...l3]) x.close();
  });

  it('NODE.MAX_ID: a longer ID is [FAIL:INVALID_DATA] and the connection stays usable', async () => {
    const { port } = srv;
    const key = srv.newKey();
    const c = await TestClient.open(port);
    expect(await c.request(`TCP:ID:${key}:ABCDEFGHI`)).toBe('[FAIL:INVALID_DATA]');
    expect(await c.request(`TCP:ID:${key}:abcdefgh`)).toBe('[OK:ABCDEFGH]');
    c.close();
  });

  it('NODE.DATA_CACHE: RETDATA keeps only the last 3 payloads', async () => {
    const { port } = srv;
    const key = srv.newKey();
    const a = await device(port, key, 'C1');
    const b = await device(port, key, 'C2');
    for (let i = 1; i <= 5; i++) expect(await a.request(`TCP:PUSH:${key}:RID:C2:d${i}`)).toBe('[OK:DATA_SENT]');
    expect(await b.lines(5)).toEqual(['PUSH:d1', 'PUSH:d2', 'PUSH:d3', 'PUSH:d4', 'PUSH:d5']);
    expect(await a.request(`TCP:RETDATA:${key}:1`)).toBe('[OK:d3]');
    expect(await a.request(`TCP:RETDATA:${key}:3`)).toBe('[OK:d5]');
    expect(await a.request(`TCP:RETDATA:${key}:4`)).toBe('[FAIL:NO_DATA]');
    expect(await a.request(`TCP:RETDATA:${key}:0`)).toBe('[OK:>d3>d4>d5]');
    a.close();
    b.close();
  });

  it('NODE.MAX_LINE: a line of 64 bytes runs, one of 65 is [FAIL:LINE_TOO_LONG] and the connection stays usable', async () => {
    const { port } = srv;
    const key = srv.newKey();
    const a = await device(port, key, 'LA');
    const b = await device(port, key, 'LB');
    const head = `TCP:PUSH:${key}:RID:LB:`;
    const fits = head + 'y'.repeat(64 - head.length);
    expect(fits.length).toBe(64);
    expect(await a.request(fits)).toBe('[OK:DATA_SENT]');
    expect(await b.line()).toBe(`PUSH:${'y'.repeat(64 - head.length)}`);
    expect(await a.request(`${fits}z`)).toBe('[FAIL:LINE_TOO_LONG]');
    // A much longer line, split over writes, followed by a good one in the same segment.
    a.write('q'.repeat(100));
    a.write(`${'q'.repeat(300)}\r\nTCP:PUSH:${key}:RID:LB:after\r\n`);
    expect(await a.lines(2)).toEqual(['[FAIL:LINE_TOO_LONG]', '[OK:DATA_SENT]']);
    expect(await b.line()).toBe('PUSH:after');
    expect(await b.silence(100)).toBe('');
    expect(await a.silence(100)).toBe('');
    a.close();
    b.close();
  });

  it('NODE.LINE_IDLE_MS=0: an unterminated line waits for its LF', async () => {
    const { port } = srv;
    const key = srv.newKey();
    const c = await TestClient.open(port);
    c.write(`TCP:ID:${key}:IDLE0`);
    expect(await c.silence(600)).toBe('');
    c.write('\r\n');
    expect(await c.line()).toBe('[OK:IDLE0]');
    c.close();
  });
});

describe('PServer.SHARD_YOUNG_MB', () => {
  it('caps each shard thread’s young generation (default 12 MB); 0 leaves V8’s default', async () => {
    const capped = await startTestServer({ PServer: { SHARD_YOUNG_MB: 12 } });
    const free = await startTestServer({ PServer: { SHARD_YOUNG_MB: 0 } });
    try {
      const young = (s: TestServer): number[] =>
        (s.supervisor['shards'] as { worker: { resourceLimits?: { maxYoungGenerationSizeMb?: number } } | null }[]).map(
          (x) => x.worker?.resourceLimits?.maxYoungGenerationSizeMb ?? -1,
        );
      expect(young(capped)).toEqual([12, 12]);
      for (const v of young(free)) expect(v).not.toBe(12);
      // Both still serve.
      for (const s of [capped, free]) {
        const d = await device(s.port, s.key, 'YOUNG');
        expect(await ask(d, `TCP:GID:${s.key}`)).toBe('[OK:YOUNG]');
        d.close();
      }
    } finally {
      await capped.stop();
      await free.stop();
    }
  });
});

describe('PServer.LINK_MAX_BYTES 64 KB, its minimum (every other key at its default)', () => {
  let srv: TestServer;
  const { devOn, closeAll } = devices(() => srv);
  beforeAll(async () => {
    srv = await startTestServer({ PServer: { LINK_MAX_BYTES: 65536 } });
  });
  afterAll(async () => {
    await srv?.stop();
  });

  const linkPauses = (): Promise<number> => metric(srv, 'p2pc_link_pauses_total');

  it('a pipelined flood across shards waits for the window and arrives whole: every push once, in order', async () => {
    const key = srv.newKey();
    const a = await devOn(0, key, 'LA');
    const b = await devOn(1, key, 'LB');
    const before = await linkPauses();
    // About 2 MB for the other shard, written at once: the sender must stop reading while 64 KB are in flight.
    const n = 30_000;
    const pad = 'x'.repeat(40);
    let text = '';
    for (let i = 0; i < n; i++) text += `TCP:PUSH:${key}:RID:LB:${i}:${pad}\r\n`;
    a.write(text);
    const got = await b.lines(n, 60_000);
    expect(got.length).toBe(n);
    for (let i = 0; i < n; i++)
      if (got[i] !== `PUSH:${i}:${pad}`) expect(got[i], `delivery ${i}`).toBe(`PUSH:${i}:${pad}`);
    const replies = await a.lines(n, 60_000);
    expect(replies.every((r) => r === '[OK:DATA_SENT]')).toBe(true);
    expect(await linkPauses()).toBeGreaterThan(before);
    await closeAll('the server to see every connection of the test closed');
  }, 120_000);
});

describe('PServer.DRAIN_S 1 s (NODE.MAX_OUTBUF 8 MB, the default)', () => {
  it('on stop, a device that does not read its queued output is cut after DRAIN_S, not waited for', async () => {
    // 8 MB queued in the server when pushes start failing: more than the kernel can still take from a reader that
    // does not read (its send buffer grows to net.ipv4.tcp_wmem's 4 MB, the paused reader's receive buffer stays
    // near 128 KB). With 64 KB, and now and then with 1 MB, loopback TCP took it all before the stop, which then
    // had nothing to wait for.
    const srv = await startTestServer({ PServer: { DRAIN_S: 1 } });
    const { port, key } = srv;
    const sender = await device(port, key, 'DSND');
    const reader = await device(port, key, 'DREAD');
    const stuck = await device(port, key, 'DSTUCK');
    stuck.socket.pause();
    // Fill the stuck device's output past what the kernel takes: the server holds the rest.
    const payload = 'y'.repeat(1000);
    let r = '';
    for (let i = 0; i < 20_000; i++) {
      r = await sender.request(`TCP:PUSH:${key}:RID:DSTUCK:${payload}`);
      if (r !== '[OK:DATA_SENT]') break;
    }
    expect(r).toBe('[FAIL:REM_LINK]');
    // The others are served up to the stop.
    expect(await sender.request(`TCP:PUSH:${key}:RID:DREAD:last words`)).toBe('[OK:DATA_SENT]');
    expect(await reader.line()).toBe('PUSH:last words');
    const t0 = Date.now();
    await srv.stop();
    const took = Date.now() - t0;
    await reader.closedByServer(5000);
    stuck.socket.resume(); // a paused socket never sees the close
    await stuck.closedByServer(5000);
    // The stop waited for the stuck device's output for DRAIN_S (not for ever).
    expect(took).toBeGreaterThanOrEqual(900);
    expect(took).toBeLessThan(10_000);
  }, 60_000);
});
