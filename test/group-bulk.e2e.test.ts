// Pipelined group pushes (issue 4): a sender's consecutive lines with one prefix (`TCP:PUSH:<KEY>:FRIENDS:`,
// `...:RO:<NAME>:`, `...:ALIAS:<NAME>:`, CHILDS, ALLCHILDS, PARENT) are taken in bulk by the shard. Over real TCP against
// the real server (2 shards, members on both): whatever the chunking (one write, byte by byte, every split of a short
// stream, random cuts of a long one), every reply and every delivery is byte for byte what one push at a time gives;
// a member that stops reading turns the replies from [OK:ALL_n] to [OK:n-1/n] exactly where it fills; a member
// receiving a RAW stream gets nothing injected; FANOUT_LIMIT, /metrics and the console's counters stay exact.

import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { apiMust } from './helpers/api.ts';
import { prng, splitAt } from './helpers/chunks.ts';
import { TestClient } from './helpers/client.ts';
import { scrapeMetrics } from './helpers/metrics.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';
import { openPerShard, openTotal, waitFor } from './helpers/shards.ts';

let srv: TestServer;
/** MAX_OUTBUF small enough for a reader that stops reading to fill it (and a deadline the tests never reach). */
let tight: TestServer;
const opened: TestClient[] = [];

beforeAll(async () => {
  // LINE_IDLE_MS high: a pause between two writes of a split stream never makes half a line a legacy command.
  [srv, tight] = await Promise.all([
    // Plan level 4 holds pushes for offline devices; the other tests' accounts (level 2) hold nothing.
    startTestServer({ NODE: { LINE_IDLE_MS: 5000 }, USER: { '4HOLDPUSH': [0, 0, 0, 1] } }),
    startTestServer({ NODE: { MAX_OUTBUF: 65536, WRITE_DEADLINE: 120 } }),
  ]);
  expect(srv.supervisor.shardCount).toBe(2);
  expect(tight.supervisor.shardCount).toBe(2);
});
afterAll(async () => {
  await Promise.all([srv?.stop(), tight?.stop()]);
});
afterEach(async () => {
  for (const c of opened.splice(0)) c.close();
  await waitFor(() => openTotal(srv) === 0 && openTotal(tight) === 0, 'every connection of the test to close', 10000);
});

// ------------------------------------------------------------------ helpers

/** Opens connections to `s` until one lands on `shard` (misplaced ones stay open, unregistered). */
async function openOn(shard: number, s: TestServer = srv): Promise<TestClient> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const mine = (): number => opened.filter((c) => !c.closed && c.socket.remotePort === s.port).length;
    await waitFor(() => openTotal(s) === mine(), 'connection counts to settle');
    const before = openPerShard(s);
    const total = before.reduce((a, b) => a + b, 0);
    const c = await TestClient.open(s.port);
    opened.push(c);
    await waitFor(() => openTotal(s) === total + 1, 'the server to count the new connection');
    if (openPerShard(s).findIndex((v, i) => v !== before[i]) === shard) return c;
  }
  throw new Error(`no connection landed on shard ${shard}`);
}

/** Registers `id` on `shard` of `s`. */
async function devOn(key: string, id: string, shard: number, s: TestServer = srv): Promise<TestClient> {
  const c = await openOn(shard, s);
  expect(await c.request(`TCP:ID:${key}:${id}`)).toBe(`[OK:${id.toUpperCase()}]`);
  return c;
}

let mails = 0;
/** A fresh account: plan level 2 holds nothing, so offline members only count (the run stays in bulk). */
function account(s: TestServer = srv): { key: string; path: string } {
  const email = `bulk-${++mails}-${process.pid}@bulk.example`;
  return { key: s.newKey(email, 2), path: `/api/v1/accounts/${email}` };
}

const must = (status: number, method: string, path: string, body?: unknown): Promise<unknown> =>
  apiMust(srv.httpPort, status, method, path, body);

interface Stream {
  bytes: string;
  /** The sender's replies, in order. */
  replies: string[];
  /** What each device receives, in order. */
  got: Map<string, string[]>;
}

/**
 * `n` group pushes through `via` (`FRIENDS`, `RO:mesh`, ...) answered `reply` and delivered to `members`, with lines
 * that must leave a run between them: LF only, the KEY in lower case, the prefix inside the payload, empty and CR-holding
 * payloads, an over-long line, a GID, a RID push to `side` (a member or not); RETDATA near the end and a last push
 * `END`, after which nothing more can arrive.
 */
function stream(key: string, via: string, reply: string, members: string[], side: string, n: number): Stream {
  const s: Stream = { bytes: '', replies: [], got: new Map() };
  for (const m of [...members, side]) s.got.set(m, []);
  const datas: string[] = [];
  const push = (k: string, data: string, eol = '\r\n'): void => {
    s.bytes += `TCP:PUSH:${k}:${via}:${data}${eol}`;
    s.replies.push(reply);
    for (const m of members) s.got.get(m)!.push(`PUSH:${data}`);
    datas.push(data);
  };
  for (let i = 0; i < n; i++) {
    const r = i % 89;
    if (r === 5) push(key, `lf-only-${i}`, '\n');
    else if (r === 13) push(key.toLowerCase(), `lower-key-${i}`);
    else if (r === 21) push(key, `TCP:PUSH:${key}:${via}:inner-${i}`);
    else if (r === 29) push(key, '');
    else if (r === 37) push(key, `cr\rinside-${i}\r`);
    else if (r === 45) {
      s.bytes += `TCP:PUSH:${key}:${via}:${'L'.repeat(4100)}\r\n`;
      s.replies.push('[FAIL:LINE_TOO_LONG]');
    } else if (r === 53) {
      s.bytes += `TCP:GID:${key}\r\n`;
      s.replies.push('[OK:S]');
    } else if (r === 61) {
      s.bytes += `TCP:PUSH:${key}:RID:${side}:side-${i}\r\n`;
      s.replies.push('[OK:DATA_SENT]');
      s.got.get(side)!.push(`PUSH:side-${i}`);
      datas.push(`side-${i}`);
    } else push(key, `${i}:${'x'.repeat(i % 150)}\xff`);
  }
  s.bytes += `TCP:RETDATA:${key}:0\r\n`;
  s.replies.push(`[OK:>${datas.slice(-5).join('>')}]`);
  push(key, 'END');
  return s;
}

/** Writes the parts, then checks the sender's replies and every device's deliveries, exactly. */
async function check(sender: TestClient, devices: Map<string, TestClient>, s: Stream, parts: string[]): Promise<void> {
  for (const p of parts) sender.write(p);
  expect(await sender.lines(s.replies.length, 20000)).toEqual(s.replies);
  for (const [id, want] of s.got) expect(await devices.get(id)!.lines(want.length, 20000), id).toEqual(want);
  // Nothing else arrived anywhere (anything extra would have come before the END each one read last).
  for (const c of [sender, ...devices.values()]) expect(c.buffer).toBe('');
}

/**
 * Takes over a client's socket to read `n` CRLF lines without keeping its whole stream in one string (a stopped
 * reader holds megabytes): `count` grows as they come, `done` resolves with them once there are n.
 */
function readLines(c: TestClient, n: number): { count: number; done: Promise<string[]> } {
  const lines: string[] = [];
  const state = { count: 0, done: Promise.resolve(lines) };
  let tail = c.buffer;
  c.buffer = '';
  c.socket.removeAllListeners('data');
  state.done = new Promise((resolve) => {
    const take = (): void => {
      let i = tail.indexOf('\r\n');
      let from = 0;
      while (i >= 0 && lines.length < n) {
        lines.push(tail.slice(from, i));
        from = i + 2;
        i = tail.indexOf('\r\n', from);
      }
      tail = tail.slice(from);
      state.count = lines.length;
      if (lines.length >= n) resolve(lines);
    };
    c.socket.on('data', (b: Buffer) => {
      tail += b.toString('latin1');
      take();
    });
    take();
  });
  return state;
}

// ------------------------------------------------------------------ every target, every chunking

describe('pipelined group pushes give the replies and deliveries of one push at a time', () => {
  /**
   * Tree: P ─ S (the sender), M1, M2, M3, OFF (never online); S ─ C1, C2; C1 ─ G1. Router mesh: S, M1, C2, OFF.
   * Aliases: lamp → M2; many → M1, M3, G1, S. NT is online outside the tree. Devices alternate between the shards.
   */
  async function world(): Promise<{ key: string; sender: TestClient; devices: Map<string, TestClient> }> {
    const { key, path } = account();
    const nodes: [string, string | null][] = [
      ['P', null],
      ['S', 'P'],
      ['M1', 'P'],
      ['M2', 'P'],
      ['M3', 'P'],
      ['OFF', 'P'],
      ['C1', 'S'],
      ['C2', 'S'],
      ['G1', 'C1'],
    ];
    for (const [id, parent] of nodes) await must(201, 'POST', `${path}/tree/nodes`, { id, parent });
    await must(201, 'POST', `${path}/routers`, { name: 'mesh' });
    for (const id of ['S', 'M1', 'C2', 'OFF']) await must(204, 'PUT', `${path}/routers/mesh/members/${id}`);
    await must(200, 'PUT', `${path}/aliases/lamp`, { target: 'M2' });
    await must(200, 'PUT', `${path}/aliases/many`, { targets: ['M1', 'M3', 'G1', 'S'] });
    const sender = await devOn(key, 'S', 0);
    const devices = new Map<string, TestClient>();
    const ids = ['P', 'M1', 'M2', 'M3', 'C1', 'C2', 'G1', 'NT'];
    for (let i = 0; i < ids.length; i++) devices.set(ids[i]!, await devOn(key, ids[i]!, i % 2 === 0 ? 1 : 0));
    return { key, sender, devices };
  }

  const cases: { via: string; reply: string; members: string[]; side: string }[] = [
    { via: 'FRIENDS', reply: '[OK:3/4]', members: ['M1', 'M2', 'M3'], side: 'NT' },
    { via: 'CHILDS', reply: '[OK:ALL_2]', members: ['C1', 'C2'], side: 'C1' },
    { via: 'ALLCHILDS', reply: '[OK:ALL_3]', members: ['C1', 'C2', 'G1'], side: 'P' },
    { via: 'PARENT', reply: '[OK:DATA_SENT]', members: ['P'], side: 'M1' },
    { via: 'RO:mesh', reply: '[OK:2/3]', members: ['M1', 'C2'], side: 'G1' },
    { via: 'ALIAS:lamp', reply: '[OK:DATA_SENT]', members: ['M2'], side: 'M3' },
    { via: 'ALIAS:many', reply: '[OK:ALL_3]', members: ['M1', 'M3', 'G1'], side: 'NT' },
  ];

  for (const c of cases) {
    it(`${c.via}: one write, random cuts, byte by byte`, async () => {
      const { key, sender, devices } = await world();
      const long = stream(key, c.via, c.reply, c.members, c.side, 700);
      await check(sender, devices, long, [long.bytes]);
      for (const seed of [1, 2]) {
        const rnd = prng(seed);
        const cuts = new Set<number>();
        while (cuts.size < 60) cuts.add(1 + Math.floor(rnd() * (long.bytes.length - 1)));
        await check(
          sender,
          devices,
          long,
          splitAt(
            long.bytes,
            [...cuts].sort((x, y) => x - y),
          ),
        );
      }
      const short = stream(key, c.via, c.reply, c.members, c.side, 12);
      await check(sender, devices, short, [...short.bytes]);
    }, 60000);
  }

  for (const c of [cases[0]!, cases[4]!]) {
    it(`${c.via}: every split of a short stream into two writes`, async () => {
      const { key, sender, devices } = await world();
      const pushes = (k: string): string =>
        `TCP:PUSH:${k}:${c.via}:a\r\nTCP:PUSH:${k}:${c.via}:b:c\r\nTCP:PUSH:${k}:${c.via}:\r\nTCP:PUSH:${k}:${c.via}:END\r\n`;
      const bytes = pushes(key);
      const s: Stream = { bytes, replies: Array(4).fill(c.reply), got: new Map() };
      for (const m of c.members) s.got.set(m, ['PUSH:a', 'PUSH:b:c', 'PUSH:', 'PUSH:END']);
      for (let cut = 1; cut < bytes.length; cut++)
        await check(sender, devices, s, [bytes.slice(0, cut), bytes.slice(cut)]);
    }, 120000);
  }
  it('pushes written with the registration wait behind it go out in bulk from the backlog (ALIAS:many)', async () => {
    // One write: TCP:ID of a new device X, then pushes to an alias of four online devices. The registration holds
    // the connection; the pushes are framed from the backlog afterwards, a window of it at a time.
    const { key, sender, devices } = await world();
    const x = await openOn(1);
    let bytes = `TCP:ID:${key}:X\r\n`;
    const replies = ['[OK:X]'];
    const got: string[] = [];
    for (let i = 0; i < 90; i++) {
      const lf = i % 13 === 4;
      const data = lf ? `lf-${i}` : `${i}:${'z'.repeat(i % 60)}`;
      bytes += `TCP:PUSH:${key}:ALIAS:many:${data}${lf ? '\n' : '\r\n'}`;
      replies.push('[OK:ALL_4]');
      got.push(`PUSH:${data}`);
    }
    x.write(bytes);
    expect(await x.lines(replies.length, 10000)).toEqual(replies);
    for (const id of ['M1', 'M3', 'G1']) expect(await devices.get(id)!.lines(got.length, 10000), id).toEqual(got);
    expect(await sender.lines(got.length, 10000)).toEqual(got);
    for (const d of [x, sender, ...devices.values()]) expect(d.buffer).toBe('');
  }, 60000);

  for (const c of [cases[0]!, cases[4]!, cases[6]!]) {
    it(`${c.via}: a line split across two reads, at every byte, after lines of its prefix`, async () => {
      // The first write's whole line is answered before the second write goes out, so the shard has read the first
      // part of the split line on its own: it joins it to the head of the next read (pushRun's joined bytes).
      const { key, sender, devices } = await world();
      const first = `TCP:PUSH:${key}:${c.via}:one\r\n`;
      const split = `TCP:PUSH:${key}:${c.via}:two:\xff\r\n`;
      const last = `TCP:PUSH:${key}:${c.via}:three\r\n`;
      for (let cut = 1; cut < split.length; cut++) {
        sender.write(first + split.slice(0, cut));
        expect(await sender.lines(1, 5000)).toEqual([c.reply]);
        sender.write(split.slice(cut) + last);
        expect(await sender.lines(2, 5000), `cut ${cut}`).toEqual([c.reply, c.reply]);
        for (const m of c.members) {
          expect(await devices.get(m)!.lines(3, 5000), `${m}, cut ${cut}`).toEqual([
            'PUSH:one',
            'PUSH:two:\xff',
            'PUSH:three',
          ]);
        }
      }
      for (const d of [sender, ...devices.values()]) expect(d.buffer).toBe('');
    }, 120000);
  }
});

// ------------------------------------------------------------------ members that cannot take a message

describe('pipelined FRIENDS pushes and members that cannot take them', () => {
  for (const [placement, shard] of [
    ['same shard', 0],
    ['other shard', 1],
  ] as const) {
    it(`a member that stops reading turns [OK:ALL_3] into [OK:2/3] where it fills, for good (${placement})`, async () => {
      const { key } = account(tight);
      const sender = await devOn(key, 'S', 0, tight);
      const slow = await devOn(key, 'SLOW', shard, tight);
      const a = await devOn(key, 'A', 0, tight);
      const b = await devOn(key, 'B', 1, tight);
      slow.socket.pause();
      // Writes of 16 pushes (32 KB to each member, under MAX_OUTBUF for members that read), each answered before the
      // next, until the reader that stopped has been full for 200 pushes (its kernel buffers hold a few MB first).
      const payload = 'p'.repeat(2000);
      const line = (i: number): string => `PUSH:${i}:${payload}`;
      const replies: string[] = [];
      let n = 0;
      while (n < 20000) {
        let bytes = '';
        for (let k = 0; k < 16; k++) bytes += `TCP:PUSH:${key}:FRIENDS:${n + k}:${payload}\r\n`;
        sender.write(bytes);
        replies.push(...(await sender.lines(16, 20000)));
        const want = Array.from({ length: 16 }, (_, k) => line(n + k));
        for (const c of [a, b]) expect(await c.lines(16, 20000)).toEqual(want);
        n += 16;
        const full = replies.indexOf('[OK:2/3]');
        if (full >= 0 && n - full >= 200) break;
      }
      const full = replies.indexOf('[OK:2/3]');
      expect(full, 'the reader fills up').toBeGreaterThan(0);
      expect(replies.slice(0, full)).toEqual(Array(full).fill('[OK:ALL_3]'));
      expect(replies.slice(full)).toEqual(Array(n - full).fill('[OK:2/3]'));
      // The reader got exactly the pushes answered [OK:ALL_3] and, once it reads again, what follows them.
      const got = readLines(slow, full + 1);
      slow.socket.resume();
      await waitFor(() => got.count >= full, 'the reader to catch up', 60000);
      expect(await sender.request(`TCP:PUSH:${key}:FRIENDS:after`)).toBe('[OK:ALL_3]');
      const lines = await got.done;
      expect(lines.length).toBe(full + 1);
      for (let i = 0; i < full; i++) if (lines[i] !== line(i)) expect(lines[i]).toBe(line(i));
      expect(lines[full]).toBe('PUSH:after');
      for (const c of [a, b]) expect(await c.line()).toBe('PUSH:after');
      for (const c of [sender, a, b]) expect(c.buffer).toBe('');
    }, 120000);
  }

  it('with holding on, an offline member keeps the pushes out of bulk: each is held, in order, and the reply counts it', async () => {
    const email = `bulk-hold-${process.pid}@bulk.example`;
    const key = srv.newKey(email, 4); // plan level 4 holds pushes for offline devices
    const path = `/api/v1/accounts/${email}`;
    for (const [id, parent] of [
      ['S', null],
      ['C1', 'S'],
      ['OFF', 'S'],
    ] as const) {
      await must(201, 'POST', `${path}/tree/nodes`, { id, parent });
    }
    const sender = await devOn(key, 'S', 0);
    const c1 = await devOn(key, 'C1', 1);
    // A clean run first (OFF online), then OFF leaves and the same prefix goes on.
    const off = await devOn(key, 'OFF', 0);
    let bytes = '';
    for (let i = 0; i < 200; i++) bytes += `TCP:PUSH:${key}:CHILDS:a${i}\r\n`;
    sender.write(bytes);
    expect(await sender.lines(200, 20000)).toEqual(Array(200).fill('[OK:ALL_2]'));
    const first = Array.from({ length: 200 }, (_, i) => `PUSH:a${i}`);
    for (const c of [c1, off]) expect(await c.lines(200, 20000)).toEqual(first);
    expect(await off.request(`TCP:REMID:${key}`)).toBe('[OK:NODEREMOVED]');
    off.close();
    bytes = '';
    for (let i = 0; i < 300; i++) bytes += `TCP:PUSH:${key}:CHILDS:b${i}\r\n`;
    sender.write(bytes);
    expect(await sender.lines(300, 20000)).toEqual(Array(300).fill('[OK:1/2]'));
    const second = Array.from({ length: 300 }, (_, i) => `PUSH:b${i}`);
    expect(await c1.lines(300, 20000)).toEqual(second);
    // OFF comes back: its backlog right after [OK:OFF], in order, once.
    const back = await openOn(1);
    back.write(`TCP:ID:${key}:OFF\r\n`);
    expect(await back.lines(301, 20000)).toEqual(['[OK:OFF]', ...second]);
    expect(await sender.request(`TCP:PUSH:${key}:CHILDS:after`)).toBe('[OK:ALL_2]');
    for (const c of [c1, back]) expect(await c.line()).toBe('PUSH:after');
    for (const c of [sender, c1, back]) expect(c.buffer).toBe('');
  }, 60000);

  it('a member receiving a RAW stream gets nothing injected; the others get every push', async () => {
    const { key } = account();
    const sender = await devOn(key, 'S', 0);
    const reader = await devOn(key, 'R', 0);
    const writer = await devOn(key, 'W', 1);
    const other = await devOn(key, 'O', 1);
    expect(await writer.request(`TCP:PUSH:${key}:RAW:R`)).toBe('[OK:LINK_SYNC]');
    expect(await reader.line()).toBe('PUSHRAW:');
    let bytes = '';
    for (let i = 0; i < 500; i++) bytes += `TCP:PUSH:${key}:FRIENDS:m${i}\r\n`;
    sender.write(bytes);
    // FRIENDS of S: R (streaming: not delivered), W (the RAW writer: its commands are stream data, but it still takes
    // deliveries) and O.
    expect(await sender.lines(500, 20000)).toEqual(Array(500).fill('[OK:2/3]'));
    const want = Array.from({ length: 500 }, (_, i) => `PUSH:m${i}`);
    expect(await other.lines(500, 20000)).toEqual(want);
    expect(await writer.lines(500, 20000)).toEqual(want);
    writer.write('raw bytes only');
    await reader.until((buf) => buf.length >= 14, 5000, 'the stream');
    expect(reader.buffer).toBe('raw bytes only');
  }, 60000);
});

// ------------------------------------------------------------------ limits and counters

describe('pipelined group pushes: FANOUT_LIMIT and exact counters', () => {
  it('a group over NODE.MAX_FANOUT is refused line by line, in bulk or not', async () => {
    const small = await startTestServer({ NODE: { MAX_FANOUT: 2 } });
    try {
      const key = small.newKey();
      const devs = await Promise.all([0, 1, 2, 3].map(() => TestClient.open(small.port)));
      for (const [i, id] of ['S', 'A', 'B', 'C'].entries()) {
        expect(await devs[i]!.request(`TCP:ID:${key}:${id}`)).toBe(`[OK:${id}]`);
      }
      let bytes = '';
      for (let i = 0; i < 300; i++) bytes += `TCP:PUSH:${key}:FRIENDS:m${i}\r\n`;
      devs[0]!.write(bytes);
      expect(await devs[0]!.lines(300, 20000)).toEqual(Array(300).fill('[FAIL:FANOUT_LIMIT]'));
      // Nothing was delivered: the next thing each member reads is a RID push.
      for (const id of ['A', 'B', 'C']) {
        expect(await devs[0]!.request(`TCP:PUSH:${key}:RID:${id}:probe`)).toBe('[OK:DATA_SENT]');
        expect(await devs[['S', 'A', 'B', 'C'].indexOf(id)]!.line()).toBe('PUSH:probe');
      }
      for (const d of devs) d.close();
    } finally {
      await small.stop();
    }
  }, 60000);

  it('/metrics and the per-device counters count every pipelined group delivery, across shards', async () => {
    const { key } = account();
    const sender = await devOn(key, 'S', 0);
    const members = [await devOn(key, 'A', 0), await devOn(key, 'B', 1), await devOn(key, 'C', 1)];
    const before = await scrapeMetrics(srv);
    const n = 3000;
    let bytes = '';
    for (let i = 0; i < n; i++) bytes += `TCP:PUSH:${key}:FRIENDS:n${i}\r\n`;
    sender.write(bytes);
    expect(await sender.lines(n, 20000)).toEqual(Array(n).fill('[OK:ALL_3]'));
    for (const c of members) await c.lines(n, 20000);
    const after = await scrapeMetrics(srv);
    const delta = (series: string): number => after.get(series)! - (before.get(series) ?? 0);
    expect(delta('p2pc_deliveries_total')).toBe(3 * n);
    expect(delta('p2pc_delivered_total{target="FRIENDS"}')).toBe(3 * n);
    expect(delta('p2pc_pushes_total{target="FRIENDS"}')).toBe(n);
    const res = await fetch(`http://127.0.0.1:${srv.httpPort}/api/v1/accounts/me/stats`, {
      headers: { authorization: `Bearer ${key}` },
    });
    const state = (await res.json()) as { devices: { id: string; sent: number; received: number }[] };
    expect(state.devices.find((d) => d.id === 'S')).toMatchObject({ sent: n, received: 0 });
    for (const id of ['A', 'B', 'C'])
      expect(state.devices.find((d) => d.id === id)).toMatchObject({ sent: 0, received: n });
  }, 60000);
});
