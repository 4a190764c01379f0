// End-to-end tests of presence and last will (PROTOCOL.md §5a; issue 12) over real TCP and real HTTP:
// STATUS in its three forms; WATCH/UNWATCH over every group target, evaluated when the event happens (FRIENDS,
// routers edited live, moves in the tree, aliases re-pointed); watchers and watched on different shards and
// owner shards; a takeover giving OFFLINE then ONLINE; wills on a reset, a takeover kick and a slow-consumer
// kick, never after REMID, WILL:CLEAR or a clean server stop, and held for an offline target; 1,000 devices
// flapping while 100 watchers listen.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { suiteApi } from './helpers/api.ts';
import { TestClient } from './helpers/client.ts';
import { suiteServer } from './helpers/devices.ts';
import { type Peer, peers } from './helpers/peer.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';
import { sleep } from './helpers/shards.ts';

/** Hold on for every level, so a will to an offline known target is held. */
const HOLD = { USER: { '4HOLDPUSH': [1, 1, 1, 1] } };

let srv: TestServer;
const connections = suiteServer((s) => (srv = s), HOLD, 10000);
const { opened, open, settled } = connections;
const { peer, dev, devOn, leave, nothingMore } = peers(connections, { sync: 'answer', presence: true });
const { call, must, addNodes, heldUntil } = suiteApi(() => srv);

// ------------------------------------------------------------------ helpers

/** A device that comes online and goes offline again (seen offline by `asker`). */
async function flap(key: string, id: string, asker: Peer, shard?: number, s: TestServer = srv): Promise<void> {
  const d = shard === undefined ? await dev(key, id, s) : await devOn(shard, key, id, s);
  await leave(d, asker, key);
}

let probes = 0;
/**
 * Registers `id` on a connection of shard `shard`, found by registering a probe ID, reading its shard from
 * the API and REMID-ing it (for servers whose liveness ticks close idle unregistered connections).
 */
async function devOnProbe(shard: number, key: string, id: string, s: TestServer): Promise<Peer> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const p = peer(await open(s), '?');
    const probe = `PROBE${++probes}`;
    expect(await p.req(`TCP:ID:${key}:${probe}`)).toBe(`[OK:${probe}]`);
    const list = (await call('GET', '/api/v1/accounts/me/devices', undefined, { auth: key, port: s.httpPort })).body;
    const at = (list.devices as { id: string; shard: number }[]).find((d) => d.id === probe)?.shard;
    expect(await p.req(`TCP:REMID:${key}`)).toBe('[OK:NODEREMOVED]');
    if (at === shard) {
      p.id = id.toUpperCase();
      expect(await p.req(`TCP:ID:${key}:${id}`)).toBe(`[OK:${p.id}]`);
      return p;
    }
    p.c.close();
  }
  throw new Error(`no connection landed on shard ${shard}`);
}

let mails = 0;
/** A fresh account; with `owner`, one whose owner shard (account id mod shards) is that shard. */
function account(s: TestServer = srv, owner?: number): { email: string; key: string; path: string } {
  for (;;) {
    const email = `presence-${++mails}-${process.pid}@presence.example`;
    const key = s.newKey(email);
    const id = s.embedded!.accountByKey(key)!.id;
    if (owner === undefined || id % s.supervisor.shardCount === owner) {
      return { email, key, path: `/api/v1/accounts/${email}` };
    }
  }
}

const on = (id: string): string => `PRESENCE:${id}:ONLINE`;
const off = (id: string): string => `PRESENCE:${id}:OFFLINE`;

// ------------------------------------------------------------------ STATUS

describe('TCP:STATUS', () => {
  it('[OK:ONLINE], [OK:OFFLINE:<unix seconds last seen>] and [FAIL:REM_ID], from either shard, in command order', async () => {
    const { key, path } = account();
    await addNodes(path, [['TREEONLY', null]]);
    const a = await devOn(0, key, 'A');
    const b = await devOn(1, key, 'B');
    const d = await devOn(0, key, 'dev1');
    for (const asker of [a, b]) {
      expect(await asker.req(`TCP:STATUS:${key}:DEV1`)).toBe('[OK:ONLINE]');
      expect(await asker.req(`TCP:STATUS:${key}:dev1`)).toBe('[OK:ONLINE]');
      expect(await asker.req(`TCP:STATUS:${key}:NEVER`)).toBe('[FAIL:REM_ID]');
      // In the tree but never connected: never seen.
      expect(await asker.req(`TCP:STATUS:${key}:TREEONLY`)).toBe('[FAIL:REM_ID]');
    }
    const before = Math.floor(Date.now() / 1000);
    await leave(d, b, key);
    const after = Math.ceil(Date.now() / 1000);
    for (const asker of [a, b]) {
      const r = await asker.req(`TCP:STATUS:${key}:DEV1`);
      const m = /^\[OK:OFFLINE:(\d+)\]$/.exec(r);
      expect(m, r).not.toBeNull();
      expect(Number(m![1])).toBeGreaterThanOrEqual(before);
      expect(Number(m![1])).toBeLessThanOrEqual(after);
    }
    // Offline answers come from the store, yet stay in command order with the replies around them.
    const seen = /^\[OK:OFFLINE:(\d+)\]$/.exec(await a.req(`TCP:STATUS:${key}:DEV1`))![1];
    expect(
      await a.pipeline([
        `TCP:STATUS:${key}:DEV1`,
        `TCP:GID:${key}`,
        `TCP:STATUS:${key}:NEVER`,
        `TCP:STATUS:${key}:B`,
        `TCP:PUSH:${key}:RID:B:x`,
        `TCP:STATUS:${key}:A`,
        `TCP:STATUS:${key}:DEV1`,
      ]),
    ).toEqual([
      `[OK:OFFLINE:${seen}]`,
      '[OK:A]',
      '[FAIL:REM_ID]',
      '[OK:ONLINE]',
      '[OK:DATA_SENT]',
      '[OK:ONLINE]',
      `[OK:OFFLINE:${seen}]`,
    ]);
    expect(await b.recv(1)).toEqual(['PUSH:x']);
    // Before ID, STATUS is refused like every SUB but ID.
    const anon = peer(await open(), '?');
    expect(await anon.req(`TCP:STATUS:${key}:A`)).toBe('[FAIL:NOID]');
  });
});

// ------------------------------------------------------------------ WATCH

describe('TCP:WATCH / TCP:UNWATCH', () => {
  it('replies, NODE.MAX_WATCH quota, and one line per event when several watches match', async () => {
    const { key, path } = account();
    await must(200, 'PUT', `${path}/aliases/ax`, { target: 'X' });
    const anon = peer(await open(), '?');
    expect(await anon.req(`TCP:WATCH:${key}:FRIENDS`)).toBe('[FAIL:NOID]');
    const w = await devOn(0, key, 'W');
    expect(await w.req(`TCP:WATCH:${key}:RID:x`)).toBe('[OK:WATCHING]');
    expect(await w.req(`TCP:WATCH:${key}:RID:X`)).toBe('[OK:WATCHING]');
    expect(await w.req(`TCP:WATCH:${key}:ALIAS:AX`)).toBe('[OK:WATCHING]');
    expect(await w.req(`TCP:WATCH:${key}:FRIENDS`)).toBe('[OK:WATCHING]');
    await flap(key, 'X', w, 1);
    expect(await w.presence(2)).toEqual([on('X'), off('X')]);

    // 3 watches so far; 13 more reach the default cap of 16.
    for (let i = 1; i <= 13; i++) expect(await w.req(`TCP:WATCH:${key}:RID:Q${i}`), `Q${i}`).toBe('[OK:WATCHING]');
    expect(await w.req(`TCP:WATCH:${key}:RID:Q14`)).toBe('[FAIL:QUOTA]');
    expect(await w.req(`TCP:WATCH:${key}:CHILDS`)).toBe('[FAIL:QUOTA]');
    // Watching again what is already watched is not a new watch.
    expect(await w.req(`TCP:WATCH:${key}:RID:Q1`)).toBe('[OK:WATCHING]');
    expect(await w.req(`TCP:UNWATCH:${key}:RID:Q1`)).toBe('[OK:UNWATCHED]');
    expect(await w.req(`TCP:WATCH:${key}:RID:Q14`)).toBe('[OK:WATCHING]');
    expect(await w.req(`TCP:WATCH:${key}:RID:Q15`)).toBe('[FAIL:QUOTA]');
    // Q15 was refused: its events are not sent (Q14 is the sentinel after it).
    expect(await w.req(`TCP:UNWATCH:${key}:FRIENDS`)).toBe('[OK:UNWATCHED]');
    await flap(key, 'Q15', w);
    await flap(key, 'Q14', w);
    expect(await w.presence(2)).toEqual([on('Q14'), off('Q14')]);
  });

  it('a watcher of FRIENDS sees a sibling come and go; cousins, its parent and itself produce nothing', async () => {
    const { key, path } = account();
    await addNodes(path, [
      ['HUB', null],
      ['W', 'HUB'],
      ['S1', 'HUB'],
      ['S2', 'HUB'],
      ['OTHER', null],
      ['O1', 'OTHER'],
    ]);
    const w = await devOn(0, key, 'W');
    expect(await w.req(`TCP:WATCH:${key}:FRIENDS`)).toBe('[OK:WATCHING]');
    await flap(key, 'S1', w, 1);
    expect(await w.presence(2)).toEqual([on('S1'), off('S1')]);
    await flap(key, 'O1', w, 1);
    await flap(key, 'HUB', w, 0);
    await flap(key, 'UNTREED', w, 1);
    await flap(key, 'S2', w, 0);
    expect(await w.presence(2)).toEqual([on('S2'), off('S2')]);

    // After UNWATCH nothing more; a RID watch set afterwards is the sentinel.
    expect(await w.req(`TCP:UNWATCH:${key}:FRIENDS`)).toBe('[OK:UNWATCHED]');
    await flap(key, 'S1', w, 1);
    expect(await w.req(`TCP:WATCH:${key}:RID:S2`)).toBe('[OK:WATCHING]');
    await flap(key, 'S2', w, 1);
    expect(await w.presence(2)).toEqual([on('S2'), off('S2')]);
  });

  it('without a tree every live ID is a FRIEND', async () => {
    const { key } = account();
    const w = await devOn(1, key, 'W');
    expect(await w.req(`TCP:WATCH:${key}:FRIENDS`)).toBe('[OK:WATCHING]');
    await flap(key, 'F1', w, 0);
    await flap(key, 'F2', w, 1);
    expect(await w.presence(4)).toEqual([on('F1'), off('F1'), on('F2'), off('F2')]);
  });

  it('a watcher of a router sees a member removed live through the API stop producing events, an added one start', async () => {
    const { key, path } = account();
    await must(201, 'POST', `${path}/routers`, { name: 'R' });
    for (const id of ['W', 'M1', 'M2']) await must(204, 'PUT', `${path}/routers/R/members/${id}`);
    const w = await devOn(0, key, 'W');
    expect(await w.req(`TCP:WATCH:${key}:RO:r`)).toBe('[OK:WATCHING]');
    const m1 = await devOn(1, key, 'M1');
    expect(await w.presence(1)).toEqual([on('M1')]);
    // M1 leaves the router while online: its going offline is no longer the router's business.
    await must(204, 'DELETE', `${path}/routers/R/members/M1`);
    await leave(m1, w, key);
    await flap(key, 'M1', w, 0);
    await must(204, 'PUT', `${path}/routers/R/members/M3`);
    await flap(key, 'M3', w, 1);
    await flap(key, 'M2', w, 0);
    expect(await w.presence(4)).toEqual([on('M3'), off('M3'), on('M2'), off('M2')]);
    // A deleted router tells nothing either.
    await must(204, 'DELETE', `${path}/routers/R`);
    await flap(key, 'M2', w, 1);
    expect(await w.req(`TCP:WATCH:${key}:RID:END`)).toBe('[OK:WATCHING]');
    await flap(key, 'END', w, 0);
    expect(await w.presence(2)).toEqual([on('END'), off('END')]);
  });

  it('moving a device in the tree changes who is told, at once', async () => {
    const { key, path } = account();
    await addNodes(path, [
      ['GP', null],
      ['P1', 'GP'],
      ['P2', 'GP'],
      ['W1', 'P1'],
      ['D', 'P1'],
      ['W2', 'P2'],
    ]);
    const w1 = await devOn(0, key, 'W1');
    const w2 = await devOn(1, key, 'W2');
    const p1 = await devOn(1, key, 'P1');
    const p2 = await devOn(0, key, 'P2');
    const gp = await devOn(1, key, 'GP');
    for (const w of [w1, w2]) expect(await w.req(`TCP:WATCH:${key}:FRIENDS`)).toBe('[OK:WATCHING]');
    for (const p of [p1, p2]) expect(await p.req(`TCP:WATCH:${key}:CHILDS`)).toBe('[OK:WATCHING]');
    expect(await gp.req(`TCP:WATCH:${key}:ALLCHILDS`)).toBe('[OK:WATCHING]');

    const d = await devOn(0, key, 'D');
    expect(await d.req(`TCP:WATCH:${key}:PARENT`)).toBe('[OK:WATCHING]');
    for (const p of [w1, p1, gp]) expect(await p.presence(1), p.id).toEqual([on('D')]);
    // Moved while online: its OFFLINE goes to its new family only.
    expect(await must(200, 'PATCH', `${path}/tree/nodes/D`, { parent: 'P2' })).toEqual({ id: 'D', parent: 'P2' });
    await leave(d, gp, key);
    for (const p of [w2, p2, gp]) expect(await p.presence(1), p.id).toEqual([off('D')]);
    // Sentinels: a child of each parent comes online; it must be the next event everywhere.
    await addNodes(path, [
      ['E1', 'P1'],
      ['E2', 'P2'],
    ]);
    await devOn(1, key, 'E1');
    await devOn(0, key, 'E2');
    expect(await w1.presence(1)).toEqual([on('E1')]);
    expect(await p1.presence(1)).toEqual([on('E1')]);
    expect(await w2.presence(1)).toEqual([on('E2')]);
    expect(await p2.presence(1)).toEqual([on('E2')]);
    expect(await gp.presence(2)).toEqual([on('E1'), on('E2')]);

    // PARENT: D, now under P2, hears P2 and not P1.
    const d2 = await devOn(1, key, 'D');
    expect(await d2.req(`TCP:WATCH:${key}:PARENT`)).toBe('[OK:WATCHING]');
    await leave(p1, d2, key);
    await leave(p2, d2, key);
    expect(await d2.presence(1)).toEqual([off('P2')]);
    await flap(key, 'P1', d2, 0);
    await flap(key, 'P2', d2, 1);
    expect(await d2.presence(2)).toEqual([on('P2'), off('P2')]);
  });

  it('CHILDS sees children only, ALLCHILDS every descendant, ALIAS follows re-pointing at once', async () => {
    const { key, path } = account();
    await addNodes(path, [
      ['G', null],
      ['P', 'G'],
      ['C', 'P'],
      ['GC', 'C'],
    ]);
    await must(200, 'PUT', `${path}/aliases/AL`, { targets: ['GC', 'Z'] });
    const g = await devOn(0, key, 'G');
    const y = await devOn(1, key, 'Y');
    expect(await g.req(`TCP:WATCH:${key}:CHILDS`)).toBe('[OK:WATCHING]');
    expect(await y.req(`TCP:WATCH:${key}:ALIAS:al`)).toBe('[OK:WATCHING]');
    for (const id of ['P', 'C', 'GC', 'Z', 'Q']) await flap(key, id, g);
    expect(await g.presence(2)).toEqual([on('P'), off('P')]);
    expect(await y.presence(4)).toEqual([on('GC'), off('GC'), on('Z'), off('Z')]);

    expect(await g.req(`TCP:UNWATCH:${key}:CHILDS`)).toBe('[OK:UNWATCHED]');
    expect(await g.req(`TCP:WATCH:${key}:ALLCHILDS`)).toBe('[OK:WATCHING]');
    await must(200, 'PUT', `${path}/aliases/AL`, { targets: ['Q'] });
    for (const id of ['P', 'C', 'GC', 'Z', 'Q']) await flap(key, id, g);
    expect(await g.presence(6)).toEqual([on('P'), off('P'), on('C'), off('C'), on('GC'), off('GC')]);
    expect(await y.presence(2)).toEqual([on('Q'), off('Q')]);
  });

  it.each([
    [0, 1, 0],
    [0, 1, 1],
    [1, 0, 0],
    [1, 0, 1],
  ])(
    'watcher on shard %i, watched on shard %i, owner shard %i: events, STATUS, REMID ends the watch',
    async (ws, xs, owner) => {
      const { key, path } = account(srv, owner);
      await must(200, 'PUT', `${path}/aliases/LAMP`, { target: 'X' });
      const w = await devOn(ws, key, 'W');
      expect(await w.req(`TCP:WATCH:${key}:RID:X`)).toBe('[OK:WATCHING]');
      expect(await w.req(`TCP:WATCH:${key}:ALIAS:LAMP`)).toBe('[OK:WATCHING]');
      const x = await devOn(xs, key, 'X');
      expect(await w.presence(1)).toEqual([on('X')]);
      expect(await w.req(`TCP:STATUS:${key}:X`)).toBe('[OK:ONLINE]');
      expect(await x.req(`TCP:STATUS:${key}:W`)).toBe('[OK:ONLINE]');
      await leave(x, w, key, true);
      expect(await w.presence(1)).toEqual([off('X')]);
      // REMID ends the connection's watches with its ID; an ID registered again starts with none.
      expect(await w.req(`TCP:REMID:${key}`)).toBe('[OK:NODEREMOVED]');
      expect(await w.req(`TCP:ID:${key}:W`)).toBe('[OK:W]');
      await flap(key, 'X', w, xs);
      expect(await w.req(`TCP:WATCH:${key}:RID:END`)).toBe('[OK:WATCHING]');
      await flap(key, 'END', w, xs);
      expect(await w.presence(2)).toEqual([on('END'), off('END')]);
    },
  );
});

// ------------------------------------------------------------------ last will

describe('TCP:WILL', () => {
  it.each([
    [0, 1],
    [1, 0],
    [0, 0],
  ])('parent on shard %i, child on shard %i: a reset delivers the latest will to the PARENT', async (ps, cs) => {
    const { key, path } = account();
    await addNodes(path, [
      ['P', null],
      ['C', 'P'],
    ]);
    const p = await devOn(ps, key, 'P');
    expect(await p.req(`TCP:WATCH:${key}:CHILDS`)).toBe('[OK:WATCHING]');
    const c = await devOn(cs, key, 'C');
    expect(await p.presence(1)).toEqual([on('C')]);
    expect(await c.req(`TCP:WILL:${key}:PARENT:first`)).toBe('[OK:WILL_SET]');
    // One will per connection: a new one replaces the old; the data keeps its colons.
    expect(await c.req(`TCP:WILL:${key}:PARENT:pump died: pressure 0`)).toBe('[OK:WILL_SET]');
    c.c.socket.resetAndDestroy();
    expect(await p.recv(1)).toEqual(['PUSH:pump died: pressure 0']);
    expect(await p.presence(1)).toEqual([off('C')]);
    const c2 = await devOn(cs, key, 'C');
    await nothingMore(c2, key, p);
  });

  it('no will after WILL:CLEAR, nor after TCP:REMID (even when the connection registers again and closes)', async () => {
    const { key } = account();
    const p = await devOn(0, key, 'P');
    const a = await devOn(1, key, 'A');
    expect(await a.req(`TCP:WILL:${key}:RID:P:a-will`)).toBe('[OK:WILL_SET]');
    expect(await a.req(`TCP:WILL:${key}:CLEAR`)).toBe('[OK:WILL_CLEARED]');
    await leave(a, p, key, true);

    const b = await devOn(1, key, 'B');
    expect(await b.req(`TCP:WILL:${key}:RID:P:b-will`)).toBe('[OK:WILL_SET]');
    expect(await b.req(`TCP:REMID:${key}`)).toBe('[OK:NODEREMOVED]');
    expect(await b.req(`TCP:ID:${key}:B2`)).toBe('[OK:B2]');
    b.id = 'B2';
    await leave(b, p, key, true);

    const d = await devOn(0, key, 'D');
    expect(await d.req(`TCP:WILL:${key}:RID:P:d-will`)).toBe('[OK:WILL_SET]');
    expect(await d.req(`TCP:REMID:${key}`)).toBe('[OK:NODEREMOVED]');
    d.c.socket.resetAndDestroy();
    await settled();
    const q = await devOn(1, key, 'Q');
    await nothingMore(q, key, p);
  });

  it('a will to an offline known target is held; a group will reaches live members and is held for offline ones', async () => {
    const { key, path } = account();
    const s = await devOn(0, key, 'S');
    await flap(key, 'HUB', s, 1);
    const d = await devOn(1, key, 'D');
    expect(await d.req(`TCP:WILL:${key}:RID:HUB:d-gone`)).toBe('[OK:WILL_SET]');
    await leave(d, s, key, true);
    const hub = await devOn(0, key, 'HUB');
    expect(await hub.recv(1)).toEqual(['PUSH:d-gone']);
    await nothingMore(s, key, hub);

    await addNodes(path, [
      ['P', null],
      ['G', 'P'],
      ['S1', 'P'],
      ['S2', 'P'],
    ]);
    const s1 = await devOn(0, key, 'S1');
    const g = await devOn(1, key, 'G');
    expect(await g.req(`TCP:WILL:${key}:FRIENDS:g-gone`)).toBe('[OK:WILL_SET]');
    await leave(g, s, key, true);
    expect(await s1.recv(1)).toEqual(['PUSH:g-gone']);
    const s2 = await devOn(1, key, 'S2');
    expect(await s2.recv(1)).toEqual(['PUSH:g-gone']);
    await nothingMore(s, key, s2);
    await nothingMore(s, key, s1);
  });

  it('a clean server stop fires no will, neither to a live target nor (held) to an offline one', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'p2pc-presence-stop-'));
    let a: TestServer | null = null;
    let b: TestServer | null = null;
    try {
      a = await startTestServer(HOLD, { keepData: dir });
      const { key, path } = account(a);
      const t = await devOn(1, key, 'T', a);
      await flap(key, 'H', t, 0, a);
      // The positive control: a reset's will to the offline H is held.
      const r = await devOn(0, key, 'R', a);
      expect(await r.req(`TCP:WILL:${key}:RID:H:control`)).toBe('[OK:WILL_SET]');
      await leave(r, t, key, true);
      const w1 = await devOn(0, key, 'W1', a);
      expect(await w1.req(`TCP:WILL:${key}:RID:T:to-live`)).toBe('[OK:WILL_SET]');
      const w2 = await devOn(1, key, 'W2', a);
      expect(await w2.req(`TCP:WILL:${key}:RID:H:to-held`)).toBe('[OK:WILL_SET]');
      const w3 = await devOn(0, key, 'W3', a);
      expect(await w3.req(`TCP:WILL:${key}:RID:H:to-held-2`)).toBe('[OK:WILL_SET]');
      expect(await heldUntil(path, (d) => d.length > 0, a.httpPort)).toMatchObject([{ id: 'H', count: 1 }]);

      await a.stop();
      a = null;
      await t.c.closedByServer();
      expect(t.c.buffer).not.toContain('to-live');
      expect(t.inbox).toEqual([]);

      b = await startTestServer(HOLD, { keepData: dir });
      // Nothing was added by the stop.
      expect((await must(200, 'GET', `${path}/held`, undefined, b.httpPort)).devices).toMatchObject([
        { id: 'H', count: 1 },
      ]);
      const h = await dev(key, 'H', b);
      expect(await h.recv(1)).toEqual(['PUSH:control']);
      const s = await dev(key, 'S', b);
      await nothingMore(s, key, h);
    } finally {
      for (const c of opened.splice(0)) c.close();
      await a?.stop();
      await b?.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// ------------------------------------------------------------------ liveness: takeover and slow consumers

describe('liveness (small NODE.COM_CHK and MAX_OUTBUF)', () => {
  let live: TestServer;
  beforeAll(async () => {
    live = await startTestServer({
      ...HOLD,
      NODE: { COM_CHK: 0.25, MAX_OUTBUF: 65536, WRITE_DEADLINE: 0.3 },
    });
  });
  afterAll(async () => {
    for (const c of opened.splice(0)) c.close();
    await live?.stop();
  });

  it('a silent (half-open) holder misses liveness: watchers on both shards hear OFFLINE within two ticks and its will; a newcomer then takes the ID', async () => {
    const key = live.key;
    const w0 = await devOnProbe(0, key, 'W0', live);
    const w1 = await devOnProbe(1, key, 'W1', live);
    for (const w of [w0, w1]) expect(await w.req(`TCP:WATCH:${key}:RID:X`)).toBe('[OK:WATCHING]');
    const holder = await dev(key, 'X', live);
    for (const w of [w0, w1]) expect(await w.presence(1), w.id).toEqual([on('X')]);
    expect(await holder.req(`TCP:WILL:${key}:RID:W1:holder-gone`)).toBe('[OK:WILL_SET]');
    // From here the holder sends nothing, as a device whose link died without a FIN.
    holder.c.answerSync = false;
    const lastByte = Date.now();
    // While it is within its liveness window, the ID is still its own.
    const early = peer(await open(live), 'X');
    expect(await early.req(`TCP:ID:${key}:X`)).toBe('[FAIL:NODEEXIST]');
    await early.c.closedByServer();
    for (const w of [w0, w1]) expect(await w.presence(1, 3000), w.id).toEqual([off('X')]);
    // COM_CHK 0.25 s: never before two ticks of silence, and within a sweep (and scheduling slack) after.
    const window = Date.now() - lastByte;
    expect(window).toBeGreaterThanOrEqual(2 * 250 - 20);
    expect(window).toBeLessThan(2 * 250 + 1000);
    await holder.c.closedByServer();
    expect(await w1.recv(1)).toEqual(['PUSH:holder-gone']);
    expect(await w0.req(`TCP:STATUS:${key}:X`)).toMatch(/^\[OK:OFFLINE:\d+\]$/);
    const taker = await dev(key, 'X', live);
    for (const w of [w0, w1]) expect(await w.presence(1), w.id).toEqual([on('X')]);
    expect(await w0.req(`TCP:STATUS:${key}:X`)).toBe('[OK:ONLINE]');
    taker.c.close();
    for (const w of [w0, w1]) expect(await w.presence(1), w.id).toEqual([off('X')]);
  });

  it('an operator kick (DELETE .../devices/{id}) closes the device: OFFLINE to watchers and its will fires; 404 when not online', async () => {
    const { key } = account(live);
    const w = await devOnProbe(0, key, 'KW', live);
    expect(await w.req(`TCP:WATCH:${key}:RID:KICKED`)).toBe('[OK:WATCHING]');
    const victim = await devOnProbe(1, key, 'KICKED', live);
    expect(await w.presence(1)).toEqual([on('KICKED')]);
    expect(await victim.req(`TCP:WILL:${key}:RID:KW:kicked-out`)).toBe('[OK:WILL_SET]');
    const url = `http://127.0.0.1:${live.httpPort}/api/v1/accounts/me/devices/kicked`;
    const res = await fetch(url, { method: 'DELETE', headers: { authorization: `Bearer ${key}` } });
    expect(res.status).toBe(204);
    await victim.c.closedByServer();
    expect(await w.presence(1)).toEqual([off('KICKED')]);
    expect(await w.recv(1)).toEqual(['PUSH:kicked-out']);
    const again = await fetch(url, { method: 'DELETE', headers: { authorization: `Bearer ${key}` } });
    expect(again.status).toBe(404);
    expect(((await again.json()) as { error: string }).error).toBe('NOT_ONLINE');
  });

  it('a slow consumer disconnected by the server leaves its will and goes OFFLINE', async () => {
    const { key } = account(live);
    const t = await devOnProbe(0, key, 'T', live);
    expect(await t.req(`TCP:WATCH:${key}:RID:SLOW`)).toBe('[OK:WATCHING]');
    const slow = await devOnProbe(1, key, 'SLOW', live);
    expect(await t.presence(1)).toEqual([on('SLOW')]);
    expect(await slow.req(`TCP:WILL:${key}:RID:T:slow-gone`)).toBe('[OK:WILL_SET]');
    slow.c.socket.pause();
    const sender = await devOnProbe(0, key, 'SENDER', live);
    const payload = 'x'.repeat(3000);
    let full = false;
    for (let round = 0; round < 200 && !full; round++) {
      const replies = await sender.pipeline(
        Array.from({ length: 100 }, () => `TCP:PUSH:${key}:RID:SLOW:${payload}`),
        10000,
      );
      full = replies.some((r) => r === '[FAIL:REM_LINK]' || r === '[OK:DATA_HELD]');
    }
    expect(full, 'pushes to the paused device never filled its buffer').toBe(true);
    expect(await t.recv(1, 10000)).toEqual(['PUSH:slow-gone']);
    expect(await t.presence(1)).toEqual([off('SLOW')]);
  });
});

// ------------------------------------------------------------------ shard crash

describe('a shard crash', () => {
  it('watchers on the surviving shard hear OFFLINE once per device of the crashed shard (owner on either shard); pushes to them are held', async () => {
    const c = await startTestServer(HOLD);
    try {
      const accounts = [account(c, 0), account(c, 1)];
      const watchers: Peer[] = [];
      const pushers: Peer[] = [];
      for (const { key } of accounts) {
        const w = await devOn(0, key, 'W', c);
        expect(await w.req(`TCP:WATCH:${key}:FRIENDS`)).toBe('[OK:WATCHING]');
        watchers.push(w);
        pushers.push(await devOn(0, key, 'E', c));
        for (const id of ['D1', 'D2', 'D3']) await devOn(1, key, id, c);
        expect(await w.presence(4)).toEqual([on('E'), on('D1'), on('D2'), on('D3')]);
      }
      c.supervisor.crashShard(1);
      for (const w of watchers) {
        const events = await w.presence(3);
        expect([...events].sort(), 'each device of the crashed shard once').toEqual([off('D1'), off('D2'), off('D3')]);
      }
      for (const [i, { key }] of accounts.entries()) {
        expect(await pushers[i]!.req(`TCP:STATUS:${key}:D1`)).toMatch(/^\[OK:OFFLINE:\d+\]$/);
        expect(await pushers[i]!.req(`TCP:PUSH:${key}:RID:D1:while-down`)).toBe('[OK:DATA_HELD]');
      }
      await c.supervisor.waitReady();
      for (const [i, { key }] of accounts.entries()) {
        const d1 = await dev(key, 'D1', c);
        expect(await d1.recv(1)).toEqual(['PUSH:while-down']);
        expect(await watchers[i]!.presence(1)).toEqual([on('D1')]);
        await nothingMore(pushers[i]!, key, d1);
      }
    } finally {
      for (const x of opened.splice(0)) x.close();
      await c.stop();
    }
  });
});

// ------------------------------------------------------------------ scale

describe('1,000 devices flapping while 100 watchers listen', () => {
  it('every event delivered to every watcher, in order per device, never duplicated, across both shards', async () => {
    const { key, path } = account();
    const WATCHERS = 100;
    const DEVICES = 1000;
    const ROUNDS = 3;
    const watchers: Peer[] = [];
    const lines: number[] = [];
    for (let i = 0; i < WATCHERS; i += 25) {
      watchers.push(
        ...(await Promise.all(Array.from({ length: 25 }, (_, k) => dev(key, `W${String(i + k).padStart(3, '0')}`)))),
      );
    }
    // Without a tree every ID is a friend: each watcher hears every device.
    for (const w of watchers) expect(await w.req(`TCP:WATCH:${key}:FRIENDS`)).toBe('[OK:WATCHING]');
    watchers.forEach((w, i) => {
      lines[i] = 0;
      w.c.socket.on('data', (b: Buffer) => {
        for (let k = b.indexOf(10); k !== -1; k = b.indexOf(10, k + 1)) lines[i]!++;
      });
    });
    const online = async (): Promise<{ id: string; shard: number }[]> =>
      (await must(200, 'GET', `${path}/devices`)).devices;
    const watcherShards = new Set((await online()).map((d) => d.shard));
    expect([...watcherShards].sort(), 'watchers on both shards').toEqual([0, 1]);

    const ids = Array.from({ length: DEVICES }, (_, i) => `D${String(i).padStart(4, '0')}`);
    const register = async (id: string): Promise<TestClient> => {
      for (;;) {
        const c = await TestClient.open(srv.port);
        const r = await c.request(`TCP:ID:${key}:${id}`);
        if (r === `[OK:${id}]`) return c;
        c.close();
        if (r !== '[FAIL:NODEEXIST]') throw new Error(`${id}: ${r}`);
        await sleep(20);
      }
    };
    for (let round = 0; round < ROUNDS; round++) {
      if (round === 0) {
        // First round: all online at once, to check they spread over both shards, then all gone.
        const conns: TestClient[] = [];
        for (let i = 0; i < DEVICES; i += 100) conns.push(...(await Promise.all(ids.slice(i, i + 100).map(register))));
        const list = await online();
        expect(list.length).toBe(WATCHERS + DEVICES);
        const perShard = [0, 1].map((s) => list.filter((d) => d.id.startsWith('D') && d.shard === s).length);
        expect(perShard[0]! > 0 && perShard[1]! > 0, `devices per shard ${perShard}`).toBe(true);
        for (const c of conns) c.close();
      } else {
        // Later rounds: each device connects, registers and closes at once, 100 at a time.
        for (let i = 0; i < DEVICES; i += 100) {
          await Promise.all(
            ids.slice(i, i + 100).map(async (id) => {
              (await register(id)).close();
            }),
          );
        }
      }
      const deadline = Date.now() + 15000;
      while ((await online()).length !== WATCHERS) {
        if (Date.now() > deadline) throw new Error(`round ${round}: devices still online`);
        await sleep(50);
      }
    }

    const expected = 2 * ROUNDS * DEVICES;
    const deadline = Date.now() + 30000;
    while (lines.some((n) => n < expected) && Date.now() < deadline) await sleep(50);
    const perDevice = Array.from({ length: ROUNDS }, () => ['ONLINE', 'OFFLINE']).flat();
    for (const w of watchers) {
      const got = w.c.buffer.split('\r\n');
      expect(got.pop(), `${w.id}: a partial line`).toBe('');
      const byId = new Map<string, string[]>();
      const other: string[] = [];
      for (const l of got) {
        const m = /^PRESENCE:(D\d{4}):(ONLINE|OFFLINE)$/.exec(l);
        if (m === null) other.push(l);
        else {
          const list = byId.get(m[1]!) ?? [];
          if (list.length === 0) byId.set(m[1]!, list);
          list.push(m[2]!);
        }
      }
      expect(other, `${w.id}: lines other than device events`).toEqual([]);
      expect(byId.size, `${w.id}: devices heard of`).toBe(DEVICES);
      for (const [id, seq] of byId) expect(seq, `${w.id} about ${id}`).toEqual(perDevice);
      expect(got.length, `${w.id}: events`).toBe(expected);
    }
  }, 90000);
});
