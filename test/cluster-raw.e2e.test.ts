// RAW channels across nodes (issue 9, PROTOCOL.md §7): the writer on one node, the reader on another, both on one
// real redis-server. The writer's node opens a direct TCP stream to the reader's node (src/shard/raw.ts), signed with
// the cluster's secret: byte-exact relay, backpressure end to end, either end leaving, refusals, forged and replayed
// stream headers, an unreachable or silent node.

import { createServer, type Server, type Socket } from 'node:net';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { NODE_RAW, rawHeader } from '../src/cluster/raw-header.ts';
import { apiMust } from './helpers/api.ts';
import { metric } from './helpers/metrics.ts';
import { hashPrefix, MiB, makeBase, nastyBytes, Peer, sendStream } from './helpers/raw-peer.ts';
import { freePort, startRedis, type TestRedis } from './helpers/redis.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';
import { sleep } from './helpers/shards.ts';

let redis: TestRedis;
let a: TestServer;
let b: TestServer;
/** A node whose advertised address is a test server of ours (silent, then closed): the reader's node unreachable. */
let c: TestServer;
let silent: Server;
const silentSockets: Socket[] = [];
let silentPort = 0;
const prefix = `r${process.pid}:`;
const opened = Peer.opened;

beforeAll(async () => {
  redis = await startRedis();
  silentPort = await freePort();
  silent = createServer((s) => {
    silentSockets.push(s);
    s.on('error', () => {});
  });
  await new Promise<void>((r) => silent.listen(silentPort, '127.0.0.1', r));
  const cluster = (id: string, extra: Record<string, unknown> = {}) => ({
    CLUSTER: { REDIS_URL: redis.url, PREFIX: prefix, NODE_ID: id, ...extra },
  });
  // RAW_CONNECT_MS is the writer's node's limit: short here so the silent-node case answers within a test's wait.
  a = await startTestServer(cluster('RA', { RAW_CONNECT_MS: 1500 }));
  b = await startTestServer(cluster('RB'));
  c = await startTestServer(cluster('RC', { ADVERTISE: `127.0.0.1:${silentPort}` }));
  makeBase('0123456789ABCDEF0123456789ABCDEF');
}, 120_000);

afterAll(async () => {
  for (const p of opened.splice(0)) p.close();
  for (const s of silentSockets) s.destroy();
  silent?.close();
  await a?.stop();
  await b?.stop();
  await c?.stop();
  await redis?.stop();
});

afterEach(() => {
  for (const p of opened.splice(0)) p.close();
});

let accounts = 0;
async function account(): Promise<string> {
  const body = await apiMust(a.httpPort, 201, 'POST', '/api/v1/accounts', {
    email: `raw${++accounts}-${process.pid}@cluster.example`,
  });
  return body.key as string;
}

async function dev(s: TestServer, key: string, id: string): Promise<Peer> {
  const p = await Peer.open(s.port);
  p.id = id;
  expect(await p.request(`TCP:ID:${key}:${id}`)).toBe(`[OK:${id}]`);
  return p;
}

/** Until the other nodes see `id` in the cluster directory (its registration is written there asynchronously). */
async function known(key: string, id: string, via: Peer): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if ((await via.request(`TCP:STATUS:${key}:${id}`)) === '[OK:ONLINE]') return;
    await sleep(10);
  }
  throw new Error(`${id} never showed online elsewhere`);
}

async function link(w: Peer, r: Peer, key: string): Promise<void> {
  expect(await w.request(`TCP:PUSH:${key}:RAW:${r.id}`)).toBe('[OK:LINK_SYNC]');
  expect(await r.line()).toBe('PUSHRAW:');
}

describe('RAW across nodes', () => {
  it('A on node 1 links to B on node 2: exact replies, every byte value unparsed and in order, then full duplex', async () => {
    const key = await account();
    const wa = await dev(a, key, 'WA');
    const rb = await dev(b, key, 'RB');
    await known(key, 'RB', wa);
    await known(key, 'WA', rb);
    const opened0 = await metric(a, 'p2pc_raw_node_streams_opened_total');
    const taken0 = await metric(b, 'p2pc_raw_node_streams_accepted_total');
    // The bytes right after the command, in the same segment, are already stream data.
    const head = Buffer.from(`TCP:PUSH:${key}:RAW:RB\r\nfirst bytes\r\nTCP:GID:${key}\r\n`, 'latin1');
    wa.write(head);
    expect(await wa.line()).toBe('[OK:LINK_SYNC]');
    expect(await rb.line()).toBe('PUSHRAW:');
    expect((await rb.take(head.length - `TCP:PUSH:${key}:RAW:RB\r\n`.length)).toString('latin1')).toBe(
      `first bytes\r\nTCP:GID:${key}\r\n`,
    );
    const payload = Buffer.concat([nastyBytes(key, 'WA'), nastyBytes(key, 'RB'), Buffer.from('\ntail')]);
    for (let i = 0; i < payload.length; i += 41) wa.write(payload.subarray(i, i + 41));
    expect((await rb.take(payload.length)).equals(payload)).toBe(true);
    expect(await metric(a, 'p2pc_raw_node_streams_opened_total')).toBe(opened0 + 1);
    expect(await metric(b, 'p2pc_raw_node_streams_accepted_total')).toBe(taken0 + 1);
    // B links back: both directions at once, 8 MiB each, hashed.
    await link(rb, wa, key);
    const n = 8 * MiB;
    const [sa, sb, ra, rbh] = await Promise.all([
      sendStream(wa, n, 1, { chunk: 65536 }),
      sendStream(rb, n, 2, { chunk: 65536 }),
      wa.receive(n, 20000),
      rb.receive(n, 20000),
    ]);
    expect(rbh).toBe(sa);
    expect(ra).toBe(sb);
    expect(sa).toBe(hashPrefix(1, n, 65536));
    expect(await wa.drainFor(50)).toBe('');
    expect(await rb.drainFor(0)).toBe('');
  }, 40000);

  it('four writers to four readers on a two-shard node: every stream intact, whichever shard takes the node stream', async () => {
    const key = await account();
    const ws: Peer[] = [];
    const rs: Peer[] = [];
    for (let i = 0; i < 4; i++) {
      ws.push(await dev(a, key, `W${i}`));
      rs.push(await dev(b, key, `R${i}`));
    }
    for (const r of rs) await known(key, r.id, ws[0]!);
    for (let i = 0; i < 4; i++) await link(ws[i]!, rs[i]!, key);
    const n = 4 * MiB;
    const results = await Promise.all(
      ws.map(async (w, i) => {
        const [sent, got] = await Promise.all([sendStream(w, n, 10 + i, { chunk: 32768 }), rs[i]!.receive(n, 20000)]);
        return sent === got;
      }),
    );
    expect(results).toEqual([true, true, true, true]);
  }, 40000);

  it('backpressure: a reader that stops pauses the writer on the other node, nothing is lost', async () => {
    const key = await account();
    const w = await dev(a, key, 'SW');
    const r = await dev(b, key, 'SR');
    await known(key, 'SR', w);
    await link(w, r, key);
    const N = 256 * MiB;
    r.sock.pause();
    const recv = r.startReceive(N);
    const sent = sendStream(w, N, 7);
    const samples: { t: number; flushed: number }[] = [];
    const t0 = Date.now();
    while (Date.now() - t0 < 5000) {
      await sleep(100);
      samples.push({ t: Date.now() - t0, flushed: w.flushed });
    }
    const at = (ms: number): number => samples.find((s) => s.t >= ms)?.flushed ?? 0;
    const written = w.flushed;
    console.log(
      `across nodes: writer took ${(written / MiB).toFixed(1)} MiB in 5 s (${(at(3000) / MiB).toFixed(1)} at 3 s)`,
    );
    // Paused end to end: the kernel buffers of three legs, then nothing more.
    expect(written).toBeLessThan(N / 2);
    expect(written - at(3000)).toBeLessThan(MiB);
    expect(recv.got()).toBe(0);
    r.sock.resume();
    const [hs, hr] = await Promise.all([sent, recv.done]);
    expect(hr).toBe(hs);
    expect(await w.drainFor(50)).toBe('');
  }, 60000);

  it('the reader leaves: the writer’s next write gets [FAIL:REM_LINK] and it speaks commands again', async () => {
    const key = await account();
    const w = await dev(a, key, 'LW');
    const r = await dev(b, key, 'LR');
    await known(key, 'LR', w);
    await link(w, r, key);
    w.write('some stream bytes');
    expect((await r.take(17)).toString()).toBe('some stream bytes');
    r.close();
    await sleep(300); // the reader's node closes the node stream; the writer's node clears the link
    w.write('more');
    expect(await w.line()).toBe('[FAIL:REM_LINK]');
    expect(await w.request(`TCP:GID:${key}`)).toBe('[OK:LW]');
  });

  it('the writer leaves: the reader’s link is cleared and it receives pushes again', async () => {
    const key = await account();
    const w = await dev(a, key, 'XW');
    const r = await dev(b, key, 'XR');
    const other = await dev(a, key, 'XO');
    await known(key, 'XR', w);
    await link(w, r, key);
    w.write('last words');
    w.sock.end();
    expect((await r.take(10)).toString()).toBe('last words');
    let reply = '';
    for (let i = 0; i < 100 && reply !== '[OK:DATA_SENT]'; i++) {
      reply = await other.request(`TCP:PUSH:${key}:RID:XR:hello`);
      if (reply !== '[OK:DATA_SENT]') await sleep(20);
    }
    expect(reply).toBe('[OK:DATA_SENT]');
    // While a RAW stream was coming in nothing was injected; now the push arrives as a line.
    expect(await r.line()).toBe('PUSH:hello');
  });

  it('refusals cross nodes exactly: an ID on no node, a reader already receiving a stream', async () => {
    const key = await account();
    const w = await dev(a, key, 'FW');
    const r = await dev(b, key, 'FR');
    const local = await dev(b, key, 'FL');
    await known(key, 'FR', w);
    expect(await w.request(`TCP:PUSH:${key}:RAW:NOBODY`)).toBe('[FAIL:REM_ID]');
    await link(local, r, key);
    expect(await w.request(`TCP:PUSH:${key}:RAW:FR`)).toBe('[FAIL:REM_LINK]');
    // Still a command connection afterwards.
    expect(await w.request(`TCP:GID:${key}`)).toBe('[OK:FW]');
  });

  it('a node that does not answer within CLUSTER.RAW_CONNECT_MS, or refuses the connection: [FAIL:UNAVAILABLE]', async () => {
    const key = await account();
    const w = await dev(a, key, 'UW');
    const far = await dev(c, key, 'UR'); // node C advertises our silent server as its address
    await known(key, 'UR', w);
    const t0 = Date.now();
    expect(await w.request(`TCP:PUSH:${key}:RAW:UR`)).toBe('[FAIL:UNAVAILABLE]');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1400);
    // The silent server got our signed header, which names the account and the ID.
    await sleep(50);
    expect(silentSockets.length).toBeGreaterThan(0);
    for (const s of silentSockets) s.destroy();
    await new Promise<void>((res) => silent.close(() => res()));
    expect(await w.request(`TCP:PUSH:${key}:RAW:UR`)).toBe('[FAIL:UNAVAILABLE]');
    expect(await w.request(`TCP:GID:${key}`)).toBe('[OK:UW]');
    far.close();
  });

  it('stream headers: forged, replayed, stale or sent outside a cluster are unknown commands', async () => {
    const key = await account();
    const r = await dev(b, key, 'HR');
    const client = new Redis(redis.url);
    const secret = Buffer.from((await client.get(`${prefix}secret`)) ?? '', 'hex');
    await client.quit();
    expect(secret.length).toBe(32);
    const accountId = await accountIdOf(key);
    const good = rawHeader(secret, accountId, 'HR', Date.now(), 'n1');
    // The right secret: the stream is linked like a device's RAW:<ID>.
    const s1 = await Peer.open(b.port);
    expect(await s1.request(good)).toBe('[OK:LINK_SYNC]');
    expect(await r.line()).toBe('PUSHRAW:');
    s1.write('via a node');
    expect((await r.take(10)).toString()).toBe('via a node');
    s1.close();
    await sleep(100);
    // Replayed (same nonce), forged (another secret), stale, malformed: unknown commands, nothing linked.
    const cases = [
      good,
      rawHeader(Buffer.alloc(32, 7), accountId, 'HR', Date.now(), 'n2'),
      rawHeader(secret, accountId, 'HR', Date.now() - 60_000, 'n3'),
      `${NODE_RAW}${accountId}:HR:${Date.now()}:n4:00`,
      `${NODE_RAW}x`,
    ];
    for (const line of cases) {
      const s = await Peer.open(b.port);
      expect(await s.request(line)).toBe('[FAIL:UNKNOWN_COMMAND]');
      s.close();
    }
    // Another ID on no node: refused and closed.
    const s2 = await Peer.open(b.port);
    expect(await s2.request(rawHeader(secret, accountId, 'NOBODY', Date.now(), 'n5'))).toBe('[FAIL:REM_ID]');
    await s2.until(() => s2.closed, 2000, 'the close');
    // Not as a later command of a device connection either.
    expect(await r.request(rawHeader(secret, accountId, 'HR', Date.now(), 'n6'))).toBe('[FAIL:UNKNOWN_COMMAND]');
    expect(await r.drainFor(100)).toBe('');
  });
});

/** The account's numeric id, as the nodes know it (from the cluster's store). */
async function accountIdOf(key: string): Promise<number> {
  const rec = await a.store.accountByKey(key);
  if (rec === null) throw new Error('no such account');
  return rec.id;
}
