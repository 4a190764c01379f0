// Cluster mode on Redis (issue 9), first part: several server processes' worth of nodes (two servers in this
// process, each with its own shards, device port and HTTP port) on one real redis-server. Accounts, KEYs and the
// topology live in Redis; a topology or account change made on any node applies on every node before or right after
// its API call returns; concurrent conflicting edits from two nodes leave one consistent topology.

import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TopologyChange } from '../src/routing/changes.ts';
import { RedisStore } from '../src/store/redis.ts';
import { device, TestClient } from './helpers/client.ts';
import { freePort, redisRelay, startRedis, type TestRedis } from './helpers/redis.ts';
import { ADMIN_TOKEN, startTestServer, type TestServer } from './helpers/server.ts';
import { sleep } from './helpers/shards.ts';

/** Polls an async condition until it holds (or fails the test after `ms`). */
async function waitFor(pred: () => Promise<boolean>, what = 'the cluster to agree', ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await pred())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

let redis: TestRedis;
let a: TestServer;
let b: TestServer;
const prefix = `c${process.pid}:`;
const opened: TestClient[] = [];

const node = (id: string, url: string): Parameters<typeof startTestServer>[0] => ({
  CLUSTER: { REDIS_URL: url, PREFIX: prefix, NODE_ID: id },
});

async function api(
  s: TestServer,
  method: string,
  path: string,
  body?: unknown,
  token = ADMIN_TOKEN,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const r = await fetch(`http://127.0.0.1:${s.httpPort}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  return { status: r.status, body: text === '' ? {} : (JSON.parse(text) as Record<string, unknown>) };
}

let accounts = 0;
async function account(s: TestServer): Promise<{ email: string; key: string; path: string }> {
  const email = `cl${++accounts}-${process.pid}@cluster.example`;
  const r = await api(s, 'POST', '/api/v1/accounts', { email });
  expect(r.status).toBe(201);
  return { email, key: r.body.key as string, path: `/api/v1/accounts/${encodeURIComponent(email)}` };
}

async function dev(s: TestServer, key: string, id: string): Promise<TestClient> {
  const c = await device(s.port, key, id);
  c.answerSync = true;
  opened.push(c);
  return c;
}

interface TreeJson {
  nodes: { id: string; parent: string | null; children: string[] }[];
}
const tree = async (s: TestServer, path: string): Promise<TreeJson> =>
  (await api(s, 'GET', `${path}/tree`)).body as unknown as TreeJson;

beforeAll(async () => {
  redis = await startRedis();
  a = await startTestServer(node('A', redis.url));
  b = await startTestServer(node('B', redis.url));
}, 120_000);

afterAll(async () => {
  for (const c of opened) c.close();
  await a?.stop();
  await b?.stop();
  await redis?.stop();
});

describe('cluster mode: shared store and topology (two nodes, one Redis)', () => {
  it('runs on the Redis store: no embedded store, accounts made on one node work on the other', async () => {
    expect(a.embedded).toBeNull();
    const acct = await account(a);
    const c = await dev(b, acct.key, 'ON-B');
    expect(await c.request(`TCP:GID:${acct.key}`)).toBe('[OK:ON-B]');
    expect((await api(b, 'GET', acct.path)).body.email).toBe(acct.email);
  });

  it('a tree edit on node A applies on node B before the call returns; an edit on B shows on A', async () => {
    const acct = await account(a);
    for (const [id, parent] of [
      ['P', null],
      ['Q', null],
      ['C', 'P'],
    ] as const) {
      expect((await api(a, 'POST', `${acct.path}/tree/nodes`, { id, parent })).status).toBe(201);
    }
    const p = await dev(b, acct.key, 'P');
    const q = await dev(b, acct.key, 'Q');
    const c = await dev(b, acct.key, 'C');
    // Node A's edits were published before A answered; node B applies them in order. Wait for the last.
    await waitFor(async () => (await tree(b, acct.path)).nodes.some((n) => n.id === 'C' && n.parent === 'P'));
    expect(await p.request(`TCP:PUSH:${acct.key}:CHILDS:to children of P`)).toBe('[OK:ALL_1]');
    expect(await c.line()).toBe('PUSH:to children of P');

    // The move is made on B; B's devices see it at once, A's model too.
    expect((await api(b, 'PATCH', `${acct.path}/tree/nodes/C`, { parent: 'Q' })).status).toBe(200);
    expect(await q.request(`TCP:PUSH:${acct.key}:CHILDS:to children of Q`)).toBe('[OK:ALL_1]');
    expect(await c.line()).toBe('PUSH:to children of Q');
    expect(await p.request(`TCP:PUSH:${acct.key}:CHILDS:none`)).toBe('[FAIL:NO_ID]');
    await waitFor(async () => (await tree(a, acct.path)).nodes.some((n) => n.id === 'C' && n.parent === 'Q'));

    // Routers and aliases made on A reach B's devices.
    expect((await api(a, 'POST', `${acct.path}/routers`, { name: 'R' })).status).toBe(201);
    for (const id of ['P', 'C']) expect((await api(a, 'PUT', `${acct.path}/routers/R/members/${id}`)).status).toBe(204);
    expect((await api(a, 'PUT', `${acct.path}/aliases/LAMP`, { targets: ['C'] })).status).toBe(200);
    await waitFor(async () => {
      const r = await api(b, 'GET', `${acct.path}/aliases`);
      return JSON.stringify(r.body).includes('LAMP');
    });
    expect(await p.request(`TCP:PUSH:${acct.key}:RO:R:mesh`)).toBe('[OK:ALL_1]');
    expect(await c.line()).toBe('PUSH:mesh');
    expect(await q.request(`TCP:PUSH:${acct.key}:ALIAS:LAMP:toggle`)).toBe('[OK:DATA_SENT]');
    expect(await c.line()).toBe('PUSH:toggle');
  });

  it('conflicting edits from both nodes at once (X under Y, Y under X): one wins, one is a CYCLE, both nodes agree', async () => {
    for (let round = 0; round < 5; round++) {
      const acct = await account(a);
      expect((await api(a, 'POST', `${acct.path}/tree/nodes`, { id: 'X', parent: null })).status).toBe(201);
      expect((await api(a, 'POST', `${acct.path}/tree/nodes`, { id: 'Y', parent: null })).status).toBe(201);
      const [ra, rb] = await Promise.all([
        api(a, 'PATCH', `${acct.path}/tree/nodes/X`, { parent: 'Y' }),
        api(b, 'PATCH', `${acct.path}/tree/nodes/Y`, { parent: 'X' }),
      ]);
      expect([ra.status, rb.status].sort()).toEqual([200, 422]);
      expect((ra.status === 422 ? ra : rb).body.error).toBe('CYCLE');
      const picture = (t: TreeJson): string =>
        t.nodes
          .map((n) => `${n.id}<${n.parent ?? ''}`)
          .sort()
          .join(' ');
      await waitFor(async () => picture(await tree(a, acct.path)) === picture(await tree(b, acct.path)));
      const want = ra.status === 200 ? 'X<Y Y<' : 'X< Y<X';
      expect(picture(await tree(a, acct.path))).toBe(want);
    }
  });

  it('node B checks a move or delete against the shared tree, not its own copy, which may trail another node', async () => {
    // Another node's edit, stored and versioned but not yet announced to B (as when B's event is still in flight).
    const store = await RedisStore.open(redis.url, { prefix });
    const raw = new Redis(redis.url);
    try {
      const acct = await account(a);
      const id = (await store.accountByEmail(acct.email))!.id;
      const edit = async (changes: TopologyChange[]): Promise<void> => {
        await store.saveChanges(id, changes);
        await raw.incr(`${prefix}topo:${id}:ver`);
      };
      await edit([
        { op: 'node-add', id: 'P', parent: null },
        { op: 'node-add', id: 'K', parent: 'P' },
      ]);
      const moved = await api(b, 'PATCH', `${acct.path}/tree/nodes/K`, { parent: null });
      expect([moved.status, moved.body]).toEqual([200, { id: 'K', parent: null }]);
      await edit([{ op: 'node-add', id: 'G', parent: 'K' }]);
      const deleted = await api(b, 'DELETE', `${acct.path}/tree/nodes/K`);
      expect([deleted.status, deleted.body]).toEqual([200, { removed: ['K', 'G'] }]);
      await waitFor(async () => (await tree(a, acct.path)).nodes.map((n) => n.id).join() === 'P');
    } finally {
      raw.disconnect();
      await store.close();
    }
  });

  it('a KEY reset on node A: node B refuses the old KEY and accepts the new one', async () => {
    const acct = await account(a);
    const before = await dev(b, acct.key, 'K1');
    const r = await api(a, 'POST', `${acct.path}/key`);
    expect(r.status).toBe(200);
    const fresh = r.body.key as string;
    await waitFor(async () => {
      const c = await TestClient.open(b.port);
      const reply = await c.request(`TCP:ID:${acct.key}:K2`);
      c.close();
      return reply === '[FAIL:INVALID_KEY]';
    });
    expect(await before.request(`TCP:GID:${fresh}`)).toBe('[OK:K1]');
    await dev(b, fresh, 'K3');
  });

  it('a node restarted on the same Redis finds accounts and topology there', async () => {
    const acct = await account(a);
    expect((await api(a, 'POST', `${acct.path}/tree/nodes`, { id: 'KEEP', parent: null })).status).toBe(201);
    await a.stop();
    a = await startTestServer(node('A', redis.url));
    expect((await tree(a, acct.path)).nodes).toEqual([{ id: 'KEEP', parent: null, children: [] }]);
    await dev(a, acct.key, 'KEEP');
  });
});

describe('cluster mode: pushes between nodes', () => {
  it('RID, PARENT and a one-target ALIAS from a device on node A reach a device on node B, and back', async () => {
    const acct = await account(a);
    expect((await api(a, 'POST', `${acct.path}/tree/nodes`, { id: 'HUB', parent: null })).status).toBe(201);
    expect((await api(a, 'POST', `${acct.path}/tree/nodes`, { id: 'LEAF', parent: 'HUB' })).status).toBe(201);
    expect((await api(a, 'PUT', `${acct.path}/aliases/THEHUB`, { targets: ['HUB'] })).status).toBe(200);
    const hub = await dev(b, acct.key, 'HUB');
    const leaf = await dev(a, acct.key, 'LEAF');
    expect(await leaf.request(`TCP:PUSH:${acct.key}:RID:hub:across nodes`)).toBe('[OK:DATA_SENT]');
    expect(await hub.line()).toBe('PUSH:across nodes');
    expect(await leaf.request(`TCP:PUSH:${acct.key}:PARENT:to my parent`)).toBe('[OK:DATA_SENT]');
    expect(await hub.line()).toBe('PUSH:to my parent');
    expect(await leaf.request(`TCP:PUSH:${acct.key}:ALIAS:THEHUB:by alias`)).toBe('[OK:DATA_SENT]');
    expect(await hub.line()).toBe('PUSH:by alias');
    expect(await hub.request(`TCP:PUSH:${acct.key}:RID:LEAF:and back`)).toBe('[OK:DATA_SENT]');
    expect(await leaf.line()).toBe('PUSH:and back');
  });

  it('2,000 pipelined pushes from node A to node B arrive complete and in order', async () => {
    const acct = await account(a);
    const rx = await dev(b, acct.key, 'RX');
    const tx = await dev(a, acct.key, 'TX');
    let batch = '';
    for (let i = 0; i < 2000; i++) batch += `TCP:PUSH:${acct.key}:RID:RX:m${i}\r\n`;
    tx.write(batch);
    const replies = await tx.lines(2000, 10000);
    expect(new Set(replies)).toEqual(new Set(['[OK:DATA_SENT]']));
    const got = await rx.lines(2000, 10000);
    expect(got).toEqual(Array.from({ length: 2000 }, (_, i) => `PUSH:m${i}`));
  });

  it('payload bytes cross nodes unchanged: colons, digits that look like lengths, every byte but CR and LF', async () => {
    const acct = await account(a);
    const rx = await dev(b, acct.key, 'BYTES-RX');
    const tx = await dev(a, acct.key, 'BYTES-TX');
    const all = Array.from({ length: 255 }, (_, i) => String.fromCharCode(i + 1))
      .filter((c) => c !== '\r' && c !== '\n')
      .join('');
    const payloads = ['', ':', '3:abc', `12:${all}`, all, '1:2:3:4:', 'x'.repeat(3000)];
    tx.write(payloads.map((d) => `TCP:PUSH:${acct.key}:RID:BYTES-RX:${d}\r\n`).join(''));
    expect(await tx.lines(payloads.length)).toEqual(payloads.map(() => '[OK:DATA_SENT]'));
    expect(await rx.lines(payloads.length)).toEqual(payloads.map((d) => `PUSH:${d}`));
  });

  it('an ID offline everywhere is REM_ID; one that left node B is REM_ID from node A at once', async () => {
    const acct = await account(a);
    const tx = await dev(a, acct.key, 'TX');
    expect(await tx.request(`TCP:PUSH:${acct.key}:RID:NOBODY:x`)).toBe('[FAIL:REM_ID]');
    const gone = await dev(b, acct.key, 'GONE');
    expect(await tx.request(`TCP:PUSH:${acct.key}:RID:GONE:here`)).toBe('[OK:DATA_SENT]');
    expect(await gone.line()).toBe('PUSH:here');
    gone.close();
    await waitFor(async () => (await tx.request(`TCP:PUSH:${acct.key}:RID:GONE:x`)) === '[FAIL:REM_ID]');
    // It comes back on node A: delivered locally.
    const back = await dev(a, acct.key, 'GONE');
    expect(await tx.request(`TCP:PUSH:${acct.key}:RID:GONE:welcome back`)).toBe('[OK:DATA_SENT]');
    expect(await back.line()).toBe('PUSH:welcome back');
  });

  it('group members on the other node receive CHILDS and RO pushes, and the reply counts them', async () => {
    const acct = await account(a);
    expect((await api(a, 'POST', `${acct.path}/tree/nodes`, { id: 'P', parent: null })).status).toBe(201);
    for (const id of ['C1', 'C2']) {
      expect((await api(a, 'POST', `${acct.path}/tree/nodes`, { id, parent: 'P' })).status).toBe(201);
    }
    const p = await dev(a, acct.key, 'P');
    const c1 = await dev(a, acct.key, 'C1');
    const c2 = await dev(b, acct.key, 'C2');
    // The reply counts the member on node B too, once node B's inbox has it.
    expect(await p.request(`TCP:PUSH:${acct.key}:CHILDS:to all children`)).toBe('[OK:ALL_2]');
    expect(await c1.line()).toBe('PUSH:to all children');
    expect(await c2.line()).toBe('PUSH:to all children');
    let batch = '';
    for (let i = 0; i < 50; i++) batch += `TCP:PUSH:${acct.key}:CHILDS:c${i}\r\n`;
    p.write(batch);
    expect(await p.lines(50)).toEqual(Array.from({ length: 50 }, () => '[OK:ALL_2]'));
    for (const c of [c1, c2]) expect(await c.lines(50)).toEqual(Array.from({ length: 50 }, (_, i) => `PUSH:c${i}`));
    expect((await api(a, 'POST', `${acct.path}/routers`, { name: 'MESH' })).status).toBe(201);
    for (const id of ['P', 'C2', 'GHOST']) {
      expect((await api(a, 'PUT', `${acct.path}/routers/MESH/members/${id}`)).status).toBe(204);
    }
    await waitFor(async () => JSON.stringify((await api(a, 'GET', `${acct.path}/routers`)).body).includes('GHOST'));
    expect(await p.request(`TCP:PUSH:${acct.key}:RO:MESH:mesh-wide`)).toBe('[OK:1/2]');
    expect(await c2.line()).toBe('PUSH:mesh-wide');

    // ALLCHILDS reaches a grandchild on node B; an alias pointed at devices on both nodes reaches both.
    expect((await api(b, 'POST', `${acct.path}/tree/nodes`, { id: 'G1', parent: 'C1' })).status).toBe(201);
    const g1 = await dev(b, acct.key, 'G1');
    await waitFor(async () => (await tree(a, acct.path)).nodes.some((n) => n.id === 'G1'));
    expect(await p.request(`TCP:PUSH:${acct.key}:ALLCHILDS:to every descendant`)).toBe('[OK:ALL_3]');
    for (const c of [c1, c2, g1]) expect(await c.line()).toBe('PUSH:to every descendant');
    expect((await api(b, 'PUT', `${acct.path}/aliases/LAMPS`, { targets: ['C1', 'G1', 'C2'] })).status).toBe(200);
    await waitFor(async () => JSON.stringify((await api(a, 'GET', `${acct.path}/aliases`)).body).includes('LAMPS'));
    expect(await p.request(`TCP:PUSH:${acct.key}:ALIAS:LAMPS:lamps on`)).toBe('[OK:ALL_3]');
    for (const c of [c1, c2, g1]) expect(await c.line()).toBe('PUSH:lamps on');
  });

  it('FRIENDS outside the tree reach every live untreed device and root on both nodes, counted exactly; tree members are not friends', async () => {
    const acct = await account(a);
    for (const [id, parent] of [
      ['ROOT-A', null],
      ['ROOT-B', null],
      ['KID-B', 'ROOT-B'],
    ] as const) {
      expect((await api(a, 'POST', `${acct.path}/tree/nodes`, { id, parent })).status).toBe(201);
    }
    const u1 = await dev(a, acct.key, 'U1');
    const u2 = await dev(a, acct.key, 'U2');
    const u3 = await dev(b, acct.key, 'U3');
    const u4 = await dev(b, acct.key, 'U4');
    const rootA = await dev(a, acct.key, 'ROOT-A');
    const rootB = await dev(b, acct.key, 'ROOT-B');
    const kidB = await dev(b, acct.key, 'KID-B');
    for (const id of ['U3', 'U4', 'ROOT-B', 'KID-B']) {
      await waitFor(async () => (await u1.request(`TCP:STATUS:${acct.key}:${id}`)) === '[OK:ONLINE]');
    }
    await waitFor(async () => (await tree(b, acct.path)).nodes.some((n) => n.id === 'KID-B'));
    // From an untreed device on node A: U2 (A), U3, U4 (B), ROOT-A (A), ROOT-B (B). Not KID-B, not itself.
    expect(await u1.request(`TCP:PUSH:${acct.key}:FRIENDS:hello friends`)).toBe('[OK:ALL_5]');
    for (const c of [u2, u3, u4, rootA, rootB]) expect(await c.line()).toBe('PUSH:hello friends');
    // From a root on node B: the other root and every untreed device, on both nodes.
    expect(await rootB.request(`TCP:PUSH:${acct.key}:FRIENDS:from a root`)).toBe('[OK:ALL_5]');
    for (const c of [u1, u2, u3, u4, rootA]) expect(await c.line()).toBe('PUSH:from a root');
    // A tree member's friends are its siblings only (none here).
    expect(await kidB.request(`TCP:PUSH:${acct.key}:FRIENDS:siblings`)).toBe('[FAIL:NO_ID]');
    expect(await u1.silence(100)).toBe('');
    expect(await u3.silence(0)).toBe('');
    // Pipelined (the shard takes runs of one prefix in bulk when it can): every push still reaches the other node.
    let batch = '';
    for (let i = 0; i < 50; i++) batch += `TCP:PUSH:${acct.key}:FRIENDS:p${i}\r\n`;
    u1.write(batch);
    expect(await u1.lines(50)).toEqual(Array.from({ length: 50 }, () => '[OK:ALL_5]'));
    const want = Array.from({ length: 50 }, (_, i) => `PUSH:p${i}`);
    for (const c of [u2, u3, u4, rootA, rootB]) expect(await c.lines(50)).toEqual(want);
    batch = '';
    for (let i = 0; i < 50; i++) batch += `TCP:PUSH:${acct.key}:CHILDS:k${i}\r\n`;
    rootB.write(batch);
    expect(await rootB.lines(50)).toEqual(Array.from({ length: 50 }, () => '[OK:ALL_1]'));
    expect(await kidB.lines(50)).toEqual(Array.from({ length: 50 }, (_, i) => `PUSH:k${i}`));
    // One leaves node B: no longer counted.
    u4.close();
    await waitFor(async () => (await u1.request(`TCP:STATUS:${acct.key}:U4`)).startsWith('[OK:OFFLINE'));
    expect(await u3.request(`TCP:PUSH:${acct.key}:FRIENDS:fewer`)).toBe('[OK:ALL_4]');
    for (const c of [u1, u2, rootA, rootB]) expect(await c.line()).toBe('PUSH:fewer');
  });

  it('one ID, two nodes: a live holder on node B keeps it against node A; racing registrations have one winner', async () => {
    const acct = await account(a);
    const holder = await dev(b, acct.key, 'ONLY');
    const c = await TestClient.open(a.port);
    opened.push(c);
    expect(await c.request(`TCP:ID:${acct.key}:ONLY`)).toBe('[FAIL:NODEEXIST]');
    await c.closedByServer();
    holder.close();
    await waitFor(async () => {
      const n = await TestClient.open(a.port);
      opened.push(n);
      return (await n.request(`TCP:ID:${acct.key}:ONLY`)) === '[OK:ONLY]';
    });
    for (let round = 0; round < 10; round++) {
      const id = `RACE${round}`;
      const [x, y] = await Promise.all([TestClient.open(a.port), TestClient.open(b.port)]);
      opened.push(x, y);
      const replies = await Promise.all([x.request(`TCP:ID:${acct.key}:${id}`), y.request(`TCP:ID:${acct.key}:${id}`)]);
      expect(replies.sort(), `round ${round}`).toEqual(['[FAIL:NODEEXIST]', `[OK:${id}]`]);
    }
  });

  it('presence across nodes: a watcher on node A hears a device come and go on node B; STATUS says ONLINE there', async () => {
    const acct = await account(a);
    const w = await dev(a, acct.key, 'WATCHER');
    expect(await w.request(`TCP:WATCH:${acct.key}:RID:FAR`)).toBe('[OK:WATCHING]');
    const far = await dev(b, acct.key, 'FAR');
    expect(await w.line()).toBe('PRESENCE:FAR:ONLINE');
    expect(await w.request(`TCP:STATUS:${acct.key}:FAR`)).toBe('[OK:ONLINE]');
    far.close();
    expect(await w.line()).toBe('PRESENCE:FAR:OFFLINE');
    expect(await w.request(`TCP:STATUS:${acct.key}:FAR`)).toMatch(/^\[OK:OFFLINE:\d+\]$/);
  });
});

/** A node in its own process (so it can be killed with SIGKILL), on the cluster's Redis. */
async function nodeProcess(id: string, extra: Record<string, string>): Promise<{ child: ChildProcess; port: number }> {
  const [port, httpPort] = [await freePort(), await freePort()];
  const dir = mkdtempSync(join(tmpdir(), 'p2pc-node-'));
  const child = spawn(process.execPath, [join(import.meta.dirname, '..', 'src', 'cli.ts'), 'start'], {
    env: {
      ...process.env,
      P2PC_PSERVER_SERVERPORT: String(port),
      P2PC_PSERVER_HOST: '127.0.0.1',
      P2PC_PSERVER_WORKERS: '2',
      P2PC_PSERVER_IP_VELOCITY: '0',
      P2PC_NODE_AUTH_FAILS: '0',
      P2PC_HTTP_PORT: String(httpPort),
      P2PC_HTTP_HOST: '127.0.0.1',
      P2PC_HTTP_ADMIN_TOKEN: ADMIN_TOKEN,
      P2PC_STORE_PATH: dir,
      P2PC_LOG_LEVEL: 'silent',
      P2PC_CLUSTER_REDIS_URL: redis.url,
      P2PC_CLUSTER_PREFIX: prefix,
      P2PC_CLUSTER_NODE_ID: id,
      ...extra,
    },
    stdio: 'ignore',
  });
  child.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  await waitFor(
    async () => {
      try {
        return (await fetch(`http://127.0.0.1:${httpPort}/readyz`)).status === 200;
      } catch {
        return false;
      }
    },
    `node ${id} to start`,
    20000,
  );
  return { child, port };
}

describe('cluster mode: a node killed with -9', () => {
  it('its devices reconnect to another node and resume; pushes accepted for them meanwhile are all delivered, once', async () => {
    // A cluster of its own (another key prefix): node C in a process of its own and node A2, both holding (plan
    // level 4), so whichever of them notices the death first handles C's inbox the same way.
    const own = `${prefix}k9:`;
    const hold = { P2PC_USER_4HOLDPUSH: '1,1,1,1', P2PC_CLUSTER_PREFIX: own };
    const c = await nodeProcess('C', hold);
    const holdA = await startTestServer({
      CLUSTER: { REDIS_URL: redis.url, PREFIX: own, NODE_ID: 'A2' },
      USER: { '4HOLDPUSH': [1, 1, 1, 1] },
    });
    try {
      const acct = await account(holdA);
      const victim = await device(c.port, acct.key, 'VICTIM');
      const tx = await dev(holdA, acct.key, 'TX');
      expect(await tx.request(`TCP:PUSH:${acct.key}:RID:VICTIM:before`)).toBe('[OK:DATA_SENT]');
      expect(await victim.line()).toBe('PUSH:before');
      c.child.kill('SIGKILL');
      await victim.closedByServer(5000).catch(() => undefined); // the kernel resets it
      // Until node C's liveness key expires, pushes to VICTIM are routed to C's inbox and accepted ([OK:DATA_SENT]);
      // afterwards they are held. Every one of them must reach the device when it is back.
      const accepted: string[] = [];
      let sentIntoTheDeadNode = 0;
      for (let n = 0; ; n++) {
        const reply = await tx.request(`TCP:PUSH:${acct.key}:RID:VICTIM:m${n}`);
        expect(['[OK:DATA_SENT]', '[OK:DATA_HELD]']).toContain(reply);
        accepted.push(`PUSH:m${n}`);
        if (reply === '[OK:DATA_HELD]') break;
        sentIntoTheDeadNode++;
        await sleep(50);
      }
      expect(sentIntoTheDeadNode).toBeGreaterThan(0);
      // The device reconnects to a live node: it may take its ID (the old holder is dead), and gets everything.
      const back = await TestClient.open(holdA.port);
      opened.push(back);
      expect(await back.request(`TCP:ID:${acct.key}:VICTIM`)).toBe('[OK:VICTIM]');
      const got = await back.lines(accepted.length, 15000);
      expect([...got].sort()).toEqual([...accepted].sort());
      expect(await back.silence(300)).toBe('');
      expect(await tx.request(`TCP:PUSH:${acct.key}:RID:VICTIM:resumed`)).toBe('[OK:DATA_SENT]');
      expect(await back.line()).toBe('PUSH:resumed');
    } finally {
      c.child.kill('SIGKILL');
      await holdA.stop();
    }
  }, 60_000);
});

describe('cluster mode: RAW streams across nodes when a node dies', () => {
  it('the reader’s node killed with -9: the writer’s next write gets [FAIL:REM_LINK]; the writer’s node killed: the reader gets pushes again', async () => {
    const c = await nodeProcess('RAWC', {});
    try {
      const acct = await account(a);
      const far = await device(c.port, acct.key, 'FAR-R');
      const farW = await device(c.port, acct.key, 'FAR-W');
      far.answerSync = true;
      const w = await dev(a, acct.key, 'NEAR-W');
      const r = await dev(a, acct.key, 'NEAR-R');
      const other = await dev(a, acct.key, 'NEAR-O');
      await waitFor(async () => (await w.request(`TCP:STATUS:${acct.key}:FAR-R`)) === '[OK:ONLINE]');
      await waitFor(async () => (await farW.request(`TCP:STATUS:${acct.key}:NEAR-R`)) === '[OK:ONLINE]');
      // Near -> far and far -> near.
      expect(await w.request(`TCP:PUSH:${acct.key}:RAW:FAR-R`)).toBe('[OK:LINK_SYNC]');
      expect(await far.line()).toBe('PUSHRAW:');
      expect(await farW.request(`TCP:PUSH:${acct.key}:RAW:NEAR-R`)).toBe('[OK:LINK_SYNC]');
      expect(await r.line()).toBe('PUSHRAW:');
      w.write('to the far node');
      await far.until((t) => t === 'to the far node', 5000, 'the stream bytes');
      farW.write('to the near node');
      await r.until((t) => t === 'to the near node', 5000, 'the stream bytes');
      r.buffer = '';

      c.child.kill('SIGKILL');
      await sleep(300); // the kernel closes the dead process's sockets: both node streams end
      w.write('after the death');
      expect(await w.line()).toBe('[FAIL:REM_LINK]');
      expect(await w.request(`TCP:GID:${acct.key}`)).toBe('[OK:NEAR-W]');
      // The reader whose writer was on the dead node: its link is cleared, pushes reach it as lines again.
      expect(await other.request(`TCP:PUSH:${acct.key}:RID:NEAR-R:hello`)).toBe('[OK:DATA_SENT]');
      expect(await r.line()).toBe('PUSH:hello');
    } finally {
      c.child.kill('SIGKILL');
    }
  }, 60_000);
});

describe('cluster mode: a partition of one node', () => {
  it('the cut-off node keeps its local traffic, its IDs may move to other nodes, and after healing one holder remains', async () => {
    const relay = await redisRelay(redis.port);
    const p = await startTestServer({ CLUSTER: { REDIS_URL: relay.url, PREFIX: prefix, NODE_ID: 'P' } });
    try {
      const acct = await account(a);
      const x = await dev(p, acct.key, 'X');
      const local = await dev(p, acct.key, 'LOCAL');
      const far = await dev(a, acct.key, 'FAR');
      expect(await far.request(`TCP:PUSH:${acct.key}:RID:X:before`)).toBe('[OK:DATA_SENT]');
      expect(await x.line()).toBe('PUSH:before');

      relay.cut();
      // Cut off: local pushes work, pushes to other nodes fail clearly.
      expect(await local.request(`TCP:PUSH:${acct.key}:RID:X:local`)).toBe('[OK:DATA_SENT]');
      expect(await x.line()).toBe('PUSH:local');
      expect(await local.request(`TCP:PUSH:${acct.key}:RID:FAR:out`, 10000)).toBe('[FAIL:UNAVAILABLE]');
      // The rest of the cluster stops seeing node P within its liveness TTL; X may then register on node A.
      let moved: TestClient | null = null;
      await waitFor(
        async () => {
          const c = await TestClient.open(a.port);
          opened.push(c);
          if ((await c.request(`TCP:ID:${acct.key}:X`)) !== '[OK:X]') return false;
          c.answerSync = true;
          moved = c;
          return true;
        },
        "node P's IDs to be free",
        15000,
      );
      relay.heal();
      // Back in touch, node P finds X given away and disconnects its own holder: one X in the cluster.
      await x.closedByServer(15000);
      expect(await far.request(`TCP:PUSH:${acct.key}:RID:X:after`)).toBe('[OK:DATA_SENT]');
      expect(await moved!.line()).toBe('PUSH:after');
    } finally {
      await p.stop();
      await relay.close();
    }
  }, 60_000);
});

describe('cluster mode: Redis restarted', () => {
  it('devices keep talking on their node while Redis is away, cross-node pushes fail clearly, and work again after', async () => {
    const acct = await account(a);
    const x = await dev(a, acct.key, 'X');
    const x2 = await dev(a, acct.key, 'X2');
    const y = await dev(b, acct.key, 'Y');
    const w = await dev(a, acct.key, 'W');
    const r = await dev(b, acct.key, 'R');
    expect(await x.request(`TCP:PUSH:${acct.key}:RID:Y:before`)).toBe('[OK:DATA_SENT]');
    expect(await y.line()).toBe('PUSH:before');
    await waitFor(async () => (await w.request(`TCP:STATUS:${acct.key}:R`)) === '[OK:ONLINE]');
    expect(await w.request(`TCP:PUSH:${acct.key}:RAW:R`)).toBe('[OK:LINK_SYNC]');
    expect(await r.line()).toBe('PUSHRAW:');
    await redis.stop();
    try {
      expect(await x.request(`TCP:PUSH:${acct.key}:RID:X2:local`)).toBe('[OK:DATA_SENT]');
      expect(await x2.line()).toBe('PUSH:local');
      expect(await x.request(`TCP:PUSH:${acct.key}:RID:Y:while away`, 10000)).toBe('[FAIL:UNAVAILABLE]');
      // A RAW stream between the nodes does not go through Redis: it keeps flowing.
      w.write('stream bytes while Redis is away');
      await r.until((t) => t === 'stream bytes while Redis is away', 5000, 'the stream bytes');
    } finally {
      await redis.start();
    }
    // The nodes reconnect and write their IDs into the (empty) directory again.
    await waitFor(
      async () => (await x.request(`TCP:PUSH:${acct.key}:RID:Y:after`, 10000)) === '[OK:DATA_SENT]',
      'cross-node pushes to work again',
      15000,
    );
    expect(await y.line()).toBe('PUSH:after');
    // The restarted Redis lost the cluster's secret: the nodes agreed on a new one, and new streams open. (It lost
    // the account too: only devices registered before can still talk, through their shard's copy of the account.)
    expect(await x2.request(`TCP:PUSH:${acct.key}:RAW:Y`, 10000)).toBe('[OK:LINK_SYNC]');
    expect(await y.line()).toBe('PUSHRAW:');
    x2.write('a new stream');
    await y.until((t) => t === 'a new stream', 5000, 'the stream bytes');
  }, 60_000);
});
