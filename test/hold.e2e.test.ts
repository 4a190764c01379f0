// End-to-end tests of held messages (PROTOCOL.md §5 Hold, §10 USER plan levels; issue 8) over real TCP and
// real HTTP: RID, PARENT and single-target ALIAS pushes to known offline devices answered [OK:DATA_HELD] in
// command order; group pushes holding their offline members; delivery right after [OK:<ID>], in order, before
// any newer message, exactly once; HOLDBUFFER dropping the oldest; HOLD_TTL; racing registrations; plan
// levels set through the operator API; a server restart and a kill -9 of a server run as a child process.

import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { SqliteStore } from '../src/store/sqlite.ts';
import { suiteApi } from './helpers/api.ts';
import { TestClient } from './helpers/client.ts';
import { suiteServer } from './helpers/devices.ts';
import { type Peer, peers } from './helpers/peer.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';
import { sleep, waitFor } from './helpers/shards.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

/** Hold on for levels 2..4; level 1 has no hold at all. Level 3 holds at most 5 per device. */
const HOLD_CONFIG = { USER: { '4HOLDPUSH': [0, 1, 1, 1], '5HOLDBUFFER': [0, 50, 5, 1000] } };

let srv: TestServer;
const connections = suiteServer((s) => (srv = s), HOLD_CONFIG, 10000);
const { opened, openOn } = connections;
const { peer, dev, devOn, leave, nothingMore } = peers(connections, { sync: 'skip' });
const { call, must, addNodes, heldUntil } = suiteApi(() => srv);

// ------------------------------------------------------------------ helpers

let mails = 0;
function account(level = 4, s: TestServer = srv): { email: string; key: string; path: string } {
  const email = `hold-${++mails}-${process.pid}@hold.example`;
  const key = s.newKey(email, level);
  return { email, key, path: `/api/v1/accounts/${email}` };
}

const range = (prefix: string, from: number, to: number): string[] =>
  Array.from({ length: to - from + 1 }, (_, i) => `${prefix}${from + i}`);

// ------------------------------------------------------------------ single-target pushes

describe('pushes to a known offline device are held and answered [OK:DATA_HELD]', () => {
  it.each([
    [0, 1],
    [1, 0],
    [0, 0],
  ])(
    'sender on shard %i, held device on shard %i: replies in command order, backlog once, in order',
    async (ss, xs) => {
      const { key } = account();
      const sender = await devOn(ss, key, 'SENDER');
      const live = await devOn(xs, key, 'LIVE');
      // X has been registered before, so it is known.
      const x0 = await devOn(xs, key, 'x');
      await leave(x0, sender, key);

      const replies = await sender.pipeline([
        `TCP:PUSH:${key}:RID:X:h1`,
        `TCP:PUSH:${key}:RID:LIVE:live1`,
        `TCP:PUSH:${key}:RID:NEVER:n1`,
        `TCP:PUSH:${key}:RID:x:h2`,
        `TCP:GID:${key}`,
        `TCP:PUSH:${key}:RID:X:h:3:with:colons`,
        `TCP:PUSH:${key}:RID:NEVER:n2`,
        `TCP:PUSH:${key}:RID:LIVE:live2`,
      ]);
      expect(replies).toEqual([
        '[OK:DATA_HELD]',
        '[OK:DATA_SENT]',
        '[FAIL:REM_ID]',
        '[OK:DATA_HELD]',
        '[OK:SENDER]',
        '[OK:DATA_HELD]',
        '[FAIL:REM_ID]',
        '[OK:DATA_SENT]',
      ]);
      expect(await live.recv(2)).toEqual(['PUSH:live1', 'PUSH:live2']);

      // The backlog comes right after [OK:X], in order; a newer push comes after it.
      const x = await devOn(xs, key, 'X');
      expect(await x.recv(3)).toEqual(['PUSH:h1', 'PUSH:h2', 'PUSH:h:3:with:colons']);
      await nothingMore(sender, key, x);

      // Exactly once: the next registration of X finds nothing held.
      await leave(x, sender, key);
      const again = await devOn(xs, key, 'X');
      await nothingMore(sender, key, again);

      // An unknown ID was never held: registering it now delivers nothing.
      const never = await dev(key, 'NEVER');
      await nothingMore(sender, key, never);
    },
  );

  it('tree nodes, router members and alias targets that never connected are known: RID, PARENT, ALIAS hold', async () => {
    const { key, path } = account();
    await addNodes(path, [
      ['PAR', null],
      ['KID', 'PAR'],
      ['TREEONLY', null],
    ]);
    await must(201, 'POST', `${path}/routers`, { name: 'R' });
    await must(204, 'PUT', `${path}/routers/R/members/KID`);
    await must(204, 'PUT', `${path}/routers/R/members/ROUTERONLY`);
    await must(200, 'PUT', `${path}/aliases/lamp`, { target: 'ALIASONLY' });

    const kid = await dev(key, 'KID');
    expect(
      await kid.pipeline([
        `TCP:PUSH:${key}:PARENT:to-parent`,
        `TCP:PUSH:${key}:RID:TREEONLY:to-tree`,
        `TCP:PUSH:${key}:RID:ROUTERONLY:to-router`,
        `TCP:PUSH:${key}:ALIAS:lamp:to-alias`,
        `TCP:PUSH:${key}:ALIAS:LAMP:to-alias-2`,
        `TCP:PUSH:${key}:RID:STRANGER:to-nobody`,
        `TCP:PUSH:${key}:ALIAS:nolamp:x`,
      ]),
    ).toEqual([
      '[OK:DATA_HELD]',
      '[OK:DATA_HELD]',
      '[OK:DATA_HELD]',
      '[OK:DATA_HELD]',
      '[OK:DATA_HELD]',
      '[FAIL:REM_ID]',
      '[FAIL:NO_ALIAS]',
    ]);
    expect(await heldUntil(path, (d) => d.length === 4), 'the API lists each held device').toMatchObject([
      { id: 'ALIASONLY', count: 2, dropped: 0 },
      { id: 'PAR', count: 1, dropped: 0 },
      { id: 'ROUTERONLY', count: 1, dropped: 0 },
      { id: 'TREEONLY', count: 1, dropped: 0 },
    ]);

    const par = await dev(key, 'par');
    expect(await par.recv(1)).toEqual(['PUSH:to-parent']);
    await nothingMore(kid, key, par);
    const tree = await dev(key, 'TREEONLY');
    expect(await tree.recv(1)).toEqual(['PUSH:to-tree']);
    await nothingMore(kid, key, tree);
    const ro = await dev(key, 'ROUTERONLY');
    expect(await ro.recv(1)).toEqual(['PUSH:to-router']);
    await nothingMore(kid, key, ro);
    const al = await dev(key, 'ALIASONLY');
    expect(await al.recv(2)).toEqual(['PUSH:to-alias', 'PUSH:to-alias-2']);
    await nothingMore(kid, key, al);
    const stranger = await dev(key, 'STRANGER');
    await nothingMore(kid, key, stranger);
    // Delivered means removed.
    for (const e of (await must(200, 'GET', `${path}/held`)).devices) expect(e.count, e.id).toBe(0);
  });
});

// ------------------------------------------------------------------ group pushes

describe('group pushes hold their offline members', () => {
  it('CHILDS, ALLCHILDS, FRIENDS, RO and multi-target ALIAS: held counted as not delivered, backlog per member', async () => {
    const { key, path } = account();
    await addNodes(path, [
      ['P', null],
      ['C1', 'P'],
      ['C2', 'P'],
      ['C3', 'P'],
    ]);
    await must(201, 'POST', `${path}/routers`, { name: 'R' });
    for (const id of ['P', 'C1', 'M2']) await must(204, 'PUT', `${path}/routers/R/members/${id}`);
    await must(200, 'PUT', `${path}/aliases/AL`, { targets: ['C2', 'C3'] });

    const p = await devOn(0, key, 'P');
    const c1 = await devOn(1, key, 'C1');
    const t0 = Date.now();
    expect(await p.req(`TCP:PUSH:${key}:CHILDS:g1`)).toBe('[OK:1/3]');
    expect(await c1.recv(1)).toEqual(['PUSH:g1']);
    expect(await c1.req(`TCP:PUSH:${key}:FRIENDS:f1`)).toBe('[FAIL:NO_ID]');
    expect(await p.req(`TCP:PUSH:${key}:RO:R:r1`)).toBe('[OK:1/2]');
    expect(await c1.recv(1)).toEqual(['PUSH:r1']);
    await leave(c1, p, key);
    expect(await p.req(`TCP:PUSH:${key}:ALLCHILDS:g2`)).toBe('[FAIL:NO_ID]');
    expect(await p.req(`TCP:PUSH:${key}:ALIAS:AL:a1`)).toBe('[FAIL:NO_ID]');
    expect(await p.req(`TCP:PUSH:${key}:RO:R:r2`)).toBe('[FAIL:NO_ID]');
    expect(p.inbox).toEqual([]);

    const expected: Record<string, string[]> = {
      C1: ['g2', 'r2'],
      C2: ['g1', 'f1', 'g2', 'a1'],
      C3: ['g1', 'f1', 'g2', 'a1'],
      M2: ['r1', 'r2'],
    };
    const held = await heldUntil(path, (d) => d.length === 4 && d.every((e) => e.count === expected[e.id]?.length));
    // A group reply does not wait for its held copies to be stored: they are stamped when stored, between the first
    // push and the moment the API lists them.
    const t1 = Date.now();
    expect(held.map((e) => ({ id: e.id, count: e.count, dropped: e.dropped }))).toEqual(
      Object.entries(expected).map(([id, m]) => ({ id, count: m.length, dropped: 0 })),
    );
    for (const e of held) {
      expect(e.oldest, e.id).toBeGreaterThanOrEqual(t0);
      expect(e.oldest, e.id).toBeLessThanOrEqual(t1);
    }

    let shard = 0;
    for (const [id, msgs] of Object.entries(expected)) {
      const d = await devOn(shard++ % 2, key, id);
      expect(await d.recv(msgs.length), id).toEqual(msgs.map((m) => `PUSH:${m}`));
      await nothingMore(p, key, d);
    }
  });
});

// ------------------------------------------------------------------ ordering against live pushes

/**
 * One race: pushers PA (shard 0) and PB (shard 1) stream pipelined RID pushes to `id` (known, offline) while
 * it registers on `shard`; they stop once each saw 20 [OK:DATA_SENT]. Returns what each push was answered,
 * the messages answered held and sent, and everything the device received.
 */
async function raceRegistration(
  key: string,
  pushers: Peer[],
  id: string,
  shard: number,
): Promise<{ heldOf: string[]; liveOf: string[]; got: string[]; x: Peer }> {
  const replies: string[][] = [[], []];
  let stop = false;
  const run = async (k: number): Promise<void> => {
    const p = pushers[k]!;
    let n = 0;
    while (!stop) {
      const batch = Array.from({ length: 4 }, () => `TCP:PUSH:${key}:RID:${id}:${p.id}-${++n}`);
      replies[k]!.push(...(await p.pipeline(batch)));
    }
  };
  const loops = [run(0), run(1)];
  await waitFor(() => replies[0]!.length >= 20 && replies[1]!.length >= 20, 'pushes held before the registration');
  const x = await devOn(shard, key, id);
  const sent = (k: number): number => replies[k]!.filter((r) => r === '[OK:DATA_SENT]').length;
  try {
    await waitFor(() => sent(0) >= 20 && sent(1) >= 20, 'live pushes after the registration', 10000);
  } finally {
    stop = true;
    await Promise.all(loops);
  }
  const heldOf: string[] = [];
  const liveOf: string[] = [];
  for (let k = 0; k < 2; k++) {
    const r = replies[k]!;
    // Once a pusher saw the device live it stays live: held replies, then sent replies, nothing else.
    const firstSent = r.indexOf('[OK:DATA_SENT]');
    expect(
      r.slice(0, firstSent).every((v) => v === '[OK:DATA_HELD]'),
      `${id} pusher ${k}: held prefix`,
    ).toBe(true);
    expect(
      r.slice(firstSent).every((v) => v === '[OK:DATA_SENT]'),
      `${id} pusher ${k}: sent suffix`,
    ).toBe(true);
    r.forEach((v, i) => {
      (v === '[OK:DATA_HELD]' ? heldOf : liveOf).push(`PUSH:${pushers[k]!.id}-${i + 1}`);
    });
  }
  let got: string[];
  try {
    got = await x.recv(heldOf.length + liveOf.length, 1500);
  } catch {
    got = x.inbox.splice(0); // the caller names the exact messages that are missing
  }
  return { heldOf, liveOf, got, x };
}

describe('held messages come before any newer message, while pushers race the registration', () => {
  it('every message answered [OK:DATA_HELD] is delivered at that registration, first, in order (20 races)', async () => {
    const { key, path } = account();
    const rounds = 20;
    await addNodes(
      path,
      Array.from({ length: rounds }, (_, i): [string, string | null] => [`RACE${i}`, null]),
    );
    const pushers = [await devOn(0, key, 'PA'), await devOn(1, key, 'PB')];
    for (let round = 0; round < rounds; round++) {
      const id = `RACE${round}`;
      const { heldOf, got, x } = await raceRegistration(key, pushers, id, round % 2);
      expect(
        heldOf.filter((m) => !got.includes(m)),
        `${id}: answered [OK:DATA_HELD] but not delivered at the registration (left in the store)`,
      ).toEqual([]);
      // The backlog is the first thing delivered, each pusher's part in push order, and only once.
      const first = got.slice(0, heldOf.length);
      expect([...first].sort(), `${id}: backlog first`).toEqual([...heldOf].sort());
      for (const who of pushers) {
        const mine = (list: string[]): string[] => list.filter((m) => m.startsWith(`PUSH:${who.id}-`));
        expect(mine(first), `${id}: backlog order from ${who.id}`).toEqual(mine(heldOf));
      }
      expect(got.filter((m) => heldOf.includes(m)).length, `${id}: backlog once`).toBe(heldOf.length);
      x.c.close();
    }
  });

  it('every message answered [OK:DATA_SENT] to the registering ID arrives, after the backlog, in order, once (20 races)', async () => {
    const { key, path } = account();
    const rounds = 20;
    await addNodes(
      path,
      Array.from({ length: rounds }, (_, i): [string, string | null] => [`LIVE${i}`, null]),
    );
    const pushers = [await devOn(0, key, 'PA'), await devOn(1, key, 'PB')];
    for (let round = 0; round < rounds; round++) {
      const id = `LIVE${round}`;
      const { heldOf, liveOf, got, x } = await raceRegistration(key, pushers, id, round % 2);
      expect(
        liveOf.filter((m) => !got.includes(m)),
        `${id}: answered [OK:DATA_SENT] but never delivered`,
      ).toEqual([]);
      const live = got.filter((m) => liveOf.includes(m));
      expect(live.length, `${id}: sent messages once`).toBe(liveOf.length);
      expect(
        got.findIndex((m) => liveOf.includes(m)),
        `${id}: no sent message before a held one`,
      ).toBeGreaterThanOrEqual(got.filter((m) => heldOf.includes(m)).length);
      for (const who of pushers) {
        const mine = live.filter((m) => m.startsWith(`PUSH:${who.id}-`));
        expect(mine, `${id}: order from ${who.id}`).toEqual(liveOf.filter((m) => m.startsWith(`PUSH:${who.id}-`)));
      }
      await nothingMore(pushers[0]!, key, x);
      x.c.close();
    }
  });
});

// ------------------------------------------------------------------ bounds

describe('bounds: HOLDBUFFER and HOLD_TTL', () => {
  it('a full HOLDBUFFER (5 at level 3) drops the oldest first; the API shows count, oldest and dropped', async () => {
    const { key, path } = account(3);
    const sender = await dev(key, 'S');
    await leave(await dev(key, 'X'), sender, key);
    const t0 = Date.now();
    const replies = await sender.pipeline(range(`TCP:PUSH:${key}:RID:X:m`, 1, 8));
    const t1 = Date.now();
    expect(replies).toEqual(new Array(8).fill('[OK:DATA_HELD]'));
    const held = await must(200, 'GET', `${path}/held`);
    expect(held).toEqual({ devices: [{ id: 'X', count: 5, oldest: expect.any(Number), dropped: 3 }] });
    expect(held.devices[0].oldest).toBeGreaterThanOrEqual(t0);
    expect(held.devices[0].oldest).toBeLessThanOrEqual(t1);

    // Three more: now m1..m6 are gone, m7..m11 remain.
    expect(await sender.pipeline(range(`TCP:PUSH:${key}:RID:X:m`, 9, 11))).toEqual(new Array(3).fill('[OK:DATA_HELD]'));
    expect((await must(200, 'GET', `${path}/held`)).devices).toMatchObject([{ id: 'X', count: 5, dropped: 6 }]);

    const x = await dev(key, 'X');
    expect(await x.recv(5)).toEqual(range('PUSH:m', 7, 11));
    await nothingMore(sender, key, x);
    expect((await must(200, 'GET', `${path}/held`)).devices).toMatchObject([{ id: 'X', count: 0, dropped: 6 }]);
  });

  it('a held message older than NODE.HOLD_TTL is dropped; a younger one is delivered', async () => {
    const ttl = await startTestServer({ ...HOLD_CONFIG, NODE: { HOLD_TTL: 1 } });
    try {
      const key = ttl.key;
      const sender = await dev(key, 'S', ttl);
      await leave(await dev(key, 'X', ttl), sender, key);
      expect(await sender.req(`TCP:PUSH:${key}:RID:X:old-1`)).toBe('[OK:DATA_HELD]');
      expect(await sender.req(`TCP:PUSH:${key}:RID:X:old-2`)).toBe('[OK:DATA_HELD]');
      await sleep(1500);
      expect(await sender.req(`TCP:PUSH:${key}:RID:X:young`)).toBe('[OK:DATA_HELD]');
      const x = await dev(key, 'X', ttl);
      expect(await x.recv(1)).toEqual(['PUSH:young']);
      await nothingMore(sender, key, x);
      // Neither are the expired ones kept for a later registration.
      await leave(x, sender, key);
      const again = await dev(key, 'X', ttl);
      await nothingMore(sender, key, again);
    } finally {
      for (const c of opened.splice(0)) c.close();
      await ttl.stop();
    }
  });
});

// ------------------------------------------------------------------ racing registrations

describe('two connections racing to register a held ID', () => {
  it('receive the backlog once in total, in order (10 races, one connection per shard)', async () => {
    const { key, path } = account();
    const races = 10;
    const sender = await dev(key, 'S');
    await addNodes(
      path,
      Array.from({ length: races }, (_, i): [string, string | null] => [`DUP${i}`, null]),
    );
    for (let i = 0; i < races; i++) {
      const replies = await sender.pipeline(range(`TCP:PUSH:${key}:RID:DUP${i}:b`, 1, 20));
      expect(replies, `DUP${i}`).toEqual(new Array(20).fill('[OK:DATA_HELD]'));
    }
    for (let i = 0; i < races; i++) {
      const id = `DUP${i}`;
      const a = await openOn(0);
      const b = await openOn(1);
      a.write(`TCP:ID:${key}:${id}\r\n`);
      b.write(`TCP:ID:${key}:${id}\r\n`);
      await Promise.all([
        a.until((s) => s.startsWith('[FAIL:') || s.split('\r\n').length > 21, 5000, `${id} on shard 0`),
        b.until((s) => s.startsWith('[FAIL:') || s.split('\r\n').length > 21, 5000, `${id} on shard 1`),
      ]);
      const [winner, loser] = a.buffer.startsWith('[OK:') ? [a, b] : [b, a];
      expect(loser.buffer, `${id}: the loser`).toBe('[FAIL:NODEEXIST]\r\n');
      await loser.closedByServer();
      expect(loser.buffer, `${id}: the loser got nothing after its refusal`).toBe('[FAIL:NODEEXIST]\r\n');
      const w = peer(winner, id);
      expect(await w.reply()).toBe(`[OK:${id}]`);
      expect(await w.recv(20), id).toEqual(range('PUSH:b', 1, 20));
      await nothingMore(sender, key, w);
      winner.close();
    }
  });
});

describe('giving the ID up while its held backlog is on its way', () => {
  it('REMID right after [OK:<ID>] is answered at once (the reserved place of the backlog does not hold it up)', async () => {
    const { key } = account();
    // Every registration of a plan that holds asks for its backlog (empty here), and [OK:<ID>] goes out before the
    // answer: a REMID sent on reading it usually arrives while the answer is on its way.
    for (let i = 0; i < 40; i++) {
      const c = await openOn(i % 2);
      expect(await c.request(`TCP:ID:${key}:R${i}`)).toBe(`[OK:R${i}]`);
      c.write(`TCP:REMID:${key}\r\nTCP:GID:${key}\r\n`);
      expect(await c.lines(2), `round ${i}`).toEqual(['[OK:NODEREMOVED]', '[FAIL:NOID]']);
      c.close();
    }
  });

  it('a held backlog is delivered exactly once: to the connection that gave the ID up, or to the next one', async () => {
    const { key, path } = account();
    const sender = await dev(key, 'S');
    await addNodes(path, [['GONE', null]]);
    for (const shard of [0, 1, 0, 1]) {
      expect(await sender.pipeline(range(`TCP:PUSH:${key}:RID:GONE:g`, 1, 3))).toEqual(
        new Array(3).fill('[OK:DATA_HELD]'),
      );
      const c = await openOn(shard);
      c.write(`TCP:ID:${key}:GONE\r\nTCP:REMID:${key}\r\nTCP:GID:${key}\r\n`);
      await c.until((b) => b.endsWith('[FAIL:NOID]\r\n'), 5000, `the replies on shard ${shard}`);
      const first = await c.silence(100);
      c.close();
      const pushes = range('PUSH:g', 1, 3)
        .map((l) => `${l}\r\n`)
        .join('');
      const got = first === `[OK:GONE]\r\n${pushes}[OK:NODEREMOVED]\r\n[FAIL:NOID]\r\n`;
      if (!got) expect(first, `shard ${shard}`).toBe('[OK:GONE]\r\n[OK:NODEREMOVED]\r\n[FAIL:NOID]\r\n');
      const w = peer(await openOn(1 - shard), 'GONE');
      expect(await w.req(`TCP:ID:${key}:GONE`)).toBe('[OK:GONE]');
      if (!got) expect(await w.recv(3)).toEqual(range('PUSH:g', 1, 3));
      await nothingMore(sender, key, w);
      await leave(w, sender, key);
    }
  });
});

// ------------------------------------------------------------------ plan levels

describe('plan levels (USER.4HOLDPUSH / 5HOLDBUFFER)', () => {
  it('level 1 does not hold; the level set through PUT /accounts/{a}/level takes effect at once', async () => {
    const { key, path } = account(1);
    await addNodes(path, [
      ['HUB', null],
      ['K1', 'HUB'],
      ['K2', 'HUB'],
    ]);
    const hub = await dev(key, 'HUB');
    expect(await hub.req(`TCP:PUSH:${key}:RID:K1:lvl1`)).toBe('[FAIL:REM_ID]');
    expect(await hub.req(`TCP:PUSH:${key}:CHILDS:lvl1-group`)).toBe('[FAIL:NO_ID]');

    // Only the admin sets levels.
    expect((await call('PUT', `${path}/level`, { level: 2 }, { auth: key })).status).toBe(403);
    expect(await must(200, 'PUT', `${path}/level`, { level: 2 })).toMatchObject({ level: 2 });
    expect(await hub.req(`TCP:PUSH:${key}:RID:K1:lvl2`)).toBe('[OK:DATA_HELD]');
    expect(await hub.req(`TCP:PUSH:${key}:CHILDS:lvl2-group`)).toBe('[FAIL:NO_ID]');
    const k1 = await dev(key, 'K1');
    expect(await k1.recv(2)).toEqual(['PUSH:lvl2', 'PUSH:lvl2-group']);
    await nothingMore(hub, key, k1);
    await leave(k1, hub, key);

    expect(await must(200, 'PUT', `${path}/level`, { level: 1 })).toMatchObject({ level: 1 });
    expect(await hub.req(`TCP:PUSH:${key}:RID:K1:lvl1-again`)).toBe('[FAIL:REM_ID]');
    // K2's group message of level 2 is still held (count 1); nothing was added at level 1.
    expect((await must(200, 'GET', `${path}/held`)).devices).toMatchObject([{ id: 'K2', count: 1, dropped: 0 }]);

    // A connection that registered before the change follows it too: raise the level again.
    expect(await must(200, 'PUT', `${path}/level`, { level: 4 })).toMatchObject({ level: 4 });
    expect(await hub.req(`TCP:PUSH:${key}:RID:K1:lvl4`)).toBe('[OK:DATA_HELD]');
    const k1b = await dev(key, 'K1');
    expect(await k1b.recv(1)).toEqual(['PUSH:lvl4']);
    await nothingMore(hub, key, k1b);
    const k2 = await dev(key, 'K2');
    expect(await k2.recv(1)).toEqual(['PUSH:lvl2-group']);
    await nothingMore(hub, key, k2);
  });
});

// ------------------------------------------------------------------ durability

describe('durability', () => {
  it('a device offline across a server restart receives everything held for it, in order', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'p2pc-hold-restart-'));
    let a: TestServer | null = null;
    let b: TestServer | null = null;
    try {
      a = await startTestServer(HOLD_CONFIG, { keepData: dir });
      const key = a.key;
      const sender = await dev(key, 'S', a);
      await leave(await dev(key, 'X', a), sender, key);
      expect(await sender.pipeline(range(`TCP:PUSH:${key}:RID:X:before-`, 1, 30))).toEqual(
        new Array(30).fill('[OK:DATA_HELD]'),
      );
      for (const c of opened.splice(0)) c.close();
      await a.stop();
      a = null;

      b = await startTestServer(HOLD_CONFIG, { keepData: dir });
      const sender2 = await dev(key, 'S', b);
      // Still known after the restart (last seen is durable), and the backlog keeps growing after it.
      expect(await sender2.pipeline(range(`TCP:PUSH:${key}:RID:X:after-`, 1, 10))).toEqual(
        new Array(10).fill('[OK:DATA_HELD]'),
      );
      const x = await dev(key, 'X', b);
      expect(await x.recv(40)).toEqual([...range('PUSH:before-', 1, 30), ...range('PUSH:after-', 1, 10)]);
      await nothingMore(sender2, key, x);
    } finally {
      for (const c of opened.splice(0)) c.close();
      await a?.stop();
      await b?.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('kill -9 of the server between [OK:DATA_HELD] and the reconnect loses nothing', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'p2pc-hold-kill-'));
    const store = new SqliteStore(dir);
    const key = store.createAccount(`kill-${process.pid}@hold.example`, null, 4).key;
    store.close();
    let child: Child | null = null;
    try {
      child = await startChild(dir);
      const port1 = child.port;
      let s = peer(await connectWhenUp(port1), 'S');
      expect(await s.req(`TCP:ID:${key}:S`)).toBe('[OK:S]');
      const x0 = peer(await connectWhenUp(port1), 'X');
      expect(await x0.req(`TCP:ID:${key}:X`)).toBe('[OK:X]');
      x0.c.close();
      const deadline = Date.now() + 5000;
      while (!(await s.req(`TCP:STATUS:${key}:X`)).startsWith('[OK:OFFLINE:')) {
        if (Date.now() > deadline) throw new Error('X never went offline');
        await sleep(10);
      }
      const n = 300;
      const replies = await s.pipeline(range(`TCP:PUSH:${key}:RID:X:k`, 1, n), 10000);
      expect(replies).toEqual(new Array(n).fill('[OK:DATA_HELD]'));
      // Right after the last [OK:DATA_HELD]: no clean shutdown, no flush.
      child.proc.kill('SIGKILL');
      await child.exited;
      s.c.close();

      child = await startChild(dir);
      s = peer(await connectWhenUp(child.port), 'S');
      expect(await s.req(`TCP:ID:${key}:S`)).toBe('[OK:S]');
      const x = peer(await connectWhenUp(child.port), 'X');
      expect(await x.req(`TCP:ID:${key}:X`)).toBe('[OK:X]');
      expect(await x.recv(n)).toEqual(range('PUSH:k', 1, n));
      await nothingMore(s, key, x);
      s.c.close();
      x.c.close();
    } finally {
      if (child !== null && child.proc.exitCode === null && child.proc.signalCode === null) {
        child.proc.kill('SIGKILL');
        await child.exited;
      }
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// ------------------------------------------------------------------ child-process server

interface Child {
  proc: ChildProcess;
  port: number;
  exited: Promise<void>;
  output: () => string;
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

async function startChild(dir: string): Promise<Child> {
  const port = await freePort();
  const httpPort = await freePort();
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.toUpperCase().startsWith('P2PC_')) env[k] = v;
  Object.assign(env, {
    P2PC_PSERVER_SERVERPORT: String(port),
    P2PC_PSERVER_HOST: '127.0.0.1',
    P2PC_PSERVER_WORKERS: '2',
    P2PC_HTTP_PORT: String(httpPort),
    P2PC_HTTP_HOST: '127.0.0.1',
    P2PC_STORE_PATH: dir,
    P2PC_USER_4HOLDPUSH: '1,1,1,1',
    P2PC_LOG_LEVEL: 'silent',
  });
  const proc = spawn(process.execPath, ['src/cli.ts', 'start'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.setEncoding('utf8').on('data', (s: string) => {
    out += s;
  });
  proc.stderr!.setEncoding('utf8').on('data', (s: string) => {
    out += s;
  });
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  return { proc, port, exited, output: () => out };
}

/** Connects, retrying while the child is not listening yet. */
async function connectWhenUp(port: number, ms = 20000): Promise<TestClient> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await TestClient.open(port);
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await sleep(50);
    }
  }
}
