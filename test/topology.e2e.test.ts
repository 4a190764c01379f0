// End-to-end tests of the topology (PROTOCOL.md §3, §5, §8; issue 3) over real TCP and real HTTP: every PUSH
// target and its exact reply with trees, routers and aliases built through the operator API; wide and deep trees;
// the fan-out cap; operator edits applied to live connections on both shards before the API call returns
// (moves, aliases, router members, KEY reset, account delete) while devices keep pushing; persistence across
// a server restart.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Json, suiteApi } from './helpers/api.ts';
import { TestClient } from './helpers/client.ts';
import { suiteServer } from './helpers/devices.ts';
import { type Peer, peers } from './helpers/peer.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';
import { sleep, waitFor } from './helpers/shards.ts';

let srv: TestServer;
const connections = suiteServer((s) => (srv = s), {}, 10000);
const { opened, open } = connections;
const { peer, dev, devOn, nothingMore } = peers(connections, {});
const { call, must, addNodes } = suiteApi(() => srv);

// ------------------------------------------------------------------ helpers

/** Registers many devices, `batch` at a time. */
async function devs(key: string, ids: string[], batch = 50): Promise<Peer[]> {
  const out: Peer[] = [];
  for (let i = 0; i < ids.length; i += batch) {
    out.push(...(await Promise.all(ids.slice(i, i + batch).map((id) => dev(key, id)))));
  }
  return out;
}

let seq = 0;
/**
 * `sender` pushes `TARGET[:name]:<data>`; the reply must be `reply`, every recipient gets exactly `PUSH:<data>`,
 * every other listed device (and the sender itself) gets nothing.
 */
async function group(
  key: string,
  sender: Peer,
  target: string,
  reply: string,
  recipients: Peer[],
  others: Peer[] = [],
): Promise<void> {
  const data = `${target.replace(/:/g, '-')}-${++seq}`;
  expect(await sender.req(`TCP:PUSH:${key}:${target}:${data}`), `${sender.id} ${target}`).toBe(reply);
  for (const r of recipients) expect(await r.recv(1), `${r.id} from ${sender.id} ${target}`).toEqual([`PUSH:${data}`]);
  for (const o of others) if (o !== sender) await nothingMore(sender, key, o);
  // The sender never receives its own message: its next reply is the next line it sees.
  expect(await sender.req(`TCP:GID:${key}`)).toBe(`[OK:${sender.id}]`);
  expect(sender.inbox).toEqual([]);
}

let mails = 0;
function account(s: TestServer = srv): { email: string; key: string; path: string } {
  const email = `topo-${++mails}-${process.pid}@topo.example`;
  const key = s.newKey(email);
  return { email, key, path: `/api/v1/accounts/${email}` };
}

// ------------------------------------------------------------------ every target

describe('every PUSH target and reply, with a tree built through the API', () => {
  it('FRIENDS, CHILDS, ALLCHILDS, PARENT with offline members counting toward the total', async () => {
    const { key, path } = account();
    // ROOT1 ─ P ─ A ─ A1          ROOT2 (offline) ─ D
    //           ├ B               E ─ E1 (offline), E2 (offline)
    //           └ C (offline)     U, V: online, not in the tree
    await addNodes(path, [
      ['ROOT1', null],
      ['ROOT2', null],
      ['P', 'ROOT1'],
      ['A', 'P'],
      ['B', 'P'],
      ['C', 'P'],
      ['A1', 'A'],
      ['D', 'ROOT2'],
      ['E', 'P'],
      ['E1', 'E'],
      ['E2', 'E'],
    ]);
    const [root1, p, a, b, a1, d, e, u, v] = await devs(key, ['root1', 'P', 'a', 'B', 'A1', 'D', 'E', 'u', 'V']);
    const all = [root1!, p!, a!, b!, a1!, d!, e!, u!, v!];
    const but = (...xs: Peer[]): Peer[] => all.filter((x) => !xs.includes(x));

    // FRIENDS of a child: its siblings (A's: B, C offline, E).
    await group(key, a!, 'FRIENDS', '[OK:2/3]', [b!, e!], but(b!, e!));
    await group(key, b!, 'FRIENDS', '[OK:2/3]', [a!, e!], but(a!, e!));
    // An only child has no friends.
    await group(key, a1!, 'FRIENDS', '[FAIL:NO_ID]', [], all);
    // FRIENDS of a root: the other roots (ROOT2 offline) and every live ID not in the tree.
    await group(key, root1!, 'FRIENDS', '[OK:2/3]', [u!, v!], but(u!, v!));
    // FRIENDS of an untreed device: all roots and the other live untreed IDs.
    await group(key, u!, 'FRIENDS', '[OK:2/3]', [root1!, v!], but(root1!, v!));

    await group(key, p!, 'CHILDS', '[OK:3/4]', [a!, b!, e!], but(a!, b!, e!));
    await group(key, root1!, 'CHILDS', '[OK:ALL_1]', [p!], but(p!));
    await group(key, e!, 'CHILDS', '[FAIL:NO_ID]', [], all);
    await group(key, b!, 'CHILDS', '[FAIL:NO_ID]', [], all);
    await group(key, u!, 'CHILDS', '[FAIL:NO_ID]', [], all);

    await group(key, root1!, 'ALLCHILDS', '[OK:5/8]', [p!, a!, b!, a1!, e!], but(p!, a!, b!, a1!, e!));
    await group(key, p!, 'ALLCHILDS', '[OK:4/7]', [a!, b!, a1!, e!], but(a!, b!, a1!, e!));
    await group(key, a!, 'ALLCHILDS', '[OK:ALL_1]', [a1!], but(a1!));
    await group(key, v!, 'ALLCHILDS', '[FAIL:NO_ID]', [], all);

    expect(await a1!.req(`TCP:PUSH:${key}:PARENT:to-a`)).toBe('[OK:DATA_SENT]');
    expect(await a!.recv(1)).toEqual(['PUSH:to-a']);
    expect(await p!.req(`TCP:PUSH:${key}:PARENT:to-root`)).toBe('[OK:DATA_SENT]');
    expect(await root1!.recv(1)).toEqual(['PUSH:to-root']);
    expect(await d!.req(`TCP:PUSH:${key}:PARENT:to-offline`)).toBe('[FAIL:REM_ID]');
    expect(await root1!.req(`TCP:PUSH:${key}:PARENT:x`)).toBe('[FAIL:NO_PARENT]');
    expect(await u!.req(`TCP:PUSH:${key}:PARENT:x`)).toBe('[FAIL:NO_PARENT]');
    for (const o of but(a!, root1!, a1!)) await nothingMore(a1!, key, o);
  });

  it('RO:<ROUTER>: members but the sender, offline members counted, names upper-cased; NO_ROUTER', async () => {
    const { key, path } = account();
    await must(201, 'POST', `${path}/routers`, { name: 'garden' });
    await must(201, 'POST', `${path}/routers`, { name: 'HALL' });
    await must(201, 'POST', `${path}/routers`, { name: 'empty' });
    for (const id of ['A', 'B', 'C', 'U']) await must(204, 'PUT', `${path}/routers/garden/members/${id}`);
    for (const id of ['A', 'B']) await must(204, 'PUT', `${path}/routers/hall/members/${id}`);
    await must(204, 'PUT', `${path}/routers/empty/members/A`);
    await must(204, 'PUT', `${path}/routers/empty/members/OFF`);
    const [a, b, u, v] = await devs(key, ['A', 'B', 'U', 'V']);
    const all = [a!, b!, u!, v!];
    await group(key, a!, 'RO:GARDEN', '[OK:2/3]', [b!, u!], [v!]);
    await group(key, u!, 'RO:garden', '[OK:2/3]', [a!, b!], [v!]);
    await group(key, a!, 'RO:Hall', '[OK:ALL_1]', [b!], [u!, v!]);
    await group(key, a!, 'RO:EMPTY', '[FAIL:NO_ID]', [], all);
    await group(key, v!, 'RO:GARDEN', '[FAIL:NO_ROUTER]', [], all);
    await group(key, a!, 'RO:NOPE', '[FAIL:NO_ROUTER]', [], all);
  });

  it('ALIAS:<NAME>: one target as RID, several as a group without the sender; NO_ALIAS', async () => {
    const { key, path } = account();
    await must(200, 'PUT', `${path}/aliases/lamp`, { target: 'B' });
    await must(200, 'PUT', `${path}/aliases/off`, { target: 'C' });
    await must(200, 'PUT', `${path}/aliases/many`, { targets: ['A', 'B', 'C', 'U'] });
    await must(200, 'PUT', `${path}/aliases/alloff`, { targets: ['C', 'Z'] });
    const [a, b, u, v] = await devs(key, ['A', 'B', 'U', 'V']);
    const all = [a!, b!, u!, v!];
    expect(await a!.req(`TCP:PUSH:${key}:ALIAS:LAMP:hello`)).toBe('[OK:DATA_SENT]');
    expect(await b!.recv(1)).toEqual(['PUSH:hello']);
    expect(await a!.req(`TCP:PUSH:${key}:ALIAS:lamp:again`)).toBe('[OK:DATA_SENT]');
    expect(await b!.recv(1)).toEqual(['PUSH:again']);
    expect(await a!.req(`TCP:PUSH:${key}:ALIAS:OFF:x`)).toBe('[FAIL:REM_ID]');
    await group(key, a!, 'ALIAS:MANY', '[OK:2/3]', [b!, u!], [v!]);
    await group(key, v!, 'ALIAS:many', '[OK:3/4]', [a!, b!, u!], []);
    await group(key, a!, 'ALIAS:ALLOFF', '[FAIL:NO_ID]', [], all);
    await group(key, a!, 'ALIAS:NOPE', '[FAIL:NO_ALIAS]', [], all);
  });
});

// ------------------------------------------------------------------ shape

describe('trees and routers of any shape', () => {
  it('a parent with 1,000 children, 300 online: CHILDS [OK:300/1000], each online child gets it once', async () => {
    const { key, path } = account();
    await addNodes(path, [['P', null]]);
    const children = Array.from({ length: 1000 }, (_, i) => `C${i}`);
    await addNodes(
      path,
      children.map((c) => [c, 'P']),
      25,
    );
    const p = await dev(key, 'P');
    const online = await devs(key, children.slice(0, 300));
    expect(await p.req(`TCP:PUSH:${key}:CHILDS:fan`)).toBe('[OK:300/1000]');
    for (const c of online) expect(await c.recv(1)).toEqual(['PUSH:fan']);
    expect(await p.req(`TCP:PUSH:${key}:ALLCHILDS:fan2`)).toBe('[OK:300/1000]');
    for (const c of online) expect(await c.recv(1)).toEqual(['PUSH:fan2']);
    // FRIENDS of one child: the 999 others, 299 of them online.
    expect(await online[0]!.req(`TCP:PUSH:${key}:FRIENDS:sib`)).toBe('[OK:299/999]');
    for (const c of online.slice(1)) expect(await c.recv(1)).toEqual(['PUSH:sib']);
    expect(await online[0]!.req(`TCP:GID:${key}`)).toBe('[OK:C0]');
    expect(online[0]!.inbox).toEqual([]);
    expect(await online[299]!.req(`TCP:PUSH:${key}:PARENT:up`)).toBe('[OK:DATA_SENT]');
    expect(await p.recv(1)).toEqual(['PUSH:up']);
  });

  it('a parent with 60 children all online: [OK:ALL_60]', async () => {
    const { key, path } = account();
    const ids = Array.from({ length: 60 }, (_, i) => `K${i}`);
    await addNodes(path, [['Q', null]]);
    await addNodes(
      path,
      ids.map((c) => [c, 'Q']),
      20,
    );
    const q = await dev(key, 'Q');
    const kids = await devs(key, ids);
    expect(await q.req(`TCP:PUSH:${key}:CHILDS:all`)).toBe('[OK:ALL_60]');
    for (const k of kids) expect(await k.recv(1)).toEqual(['PUSH:all']);
  });

  it('a chain 1,000 deep: ALLCHILDS counts every descendant; moves inside it apply at once', async () => {
    const { key, path } = account();
    const chain: [string, string | null][] = [['N0', null]];
    for (let i = 1; i < 1000; i++) chain.push([`N${i}`, `N${i - 1}`]);
    await addNodes(path, chain);
    const [n0, n1, n500, n998, n999] = await devs(key, ['N0', 'N1', 'N500', 'N998', 'N999']);
    const all = [n0!, n1!, n500!, n998!, n999!];
    await group(key, n0!, 'ALLCHILDS', '[OK:4/999]', [n1!, n500!, n998!, n999!]);
    await group(key, n1!, 'ALLCHILDS', '[OK:3/998]', [n500!, n998!, n999!], [n0!]);
    await group(key, n998!, 'ALLCHILDS', '[OK:ALL_1]', [n999!], [n0!, n1!, n500!]);
    await group(key, n999!, 'ALLCHILDS', '[FAIL:NO_ID]', [], all);
    await group(key, n0!, 'CHILDS', '[OK:ALL_1]', [n1!], [n500!, n998!, n999!]);
    await group(key, n500!, 'FRIENDS', '[FAIL:NO_ID]', [], all);
    expect(await n999!.req(`TCP:PUSH:${key}:PARENT:up`)).toBe('[OK:DATA_SENT]');
    expect(await n998!.recv(1)).toEqual(['PUSH:up']);
    // Move the lower half under the root: N0 now has children N1 and N500.
    expect(await must(200, 'PATCH', `${path}/tree/nodes/N500`, { parent: 'N0' })).toEqual({ id: 'N500', parent: 'N0' });
    await group(key, n0!, 'CHILDS', '[OK:ALL_2]', [n1!, n500!], [n998!, n999!]);
    await group(key, n0!, 'ALLCHILDS', '[OK:4/999]', [n1!, n500!, n998!, n999!]);
    await group(key, n1!, 'ALLCHILDS', '[FAIL:NO_ID]', [], all);
    await group(key, n1!, 'FRIENDS', '[OK:ALL_1]', [n500!], [n0!, n998!, n999!]);
    // A cycle is refused and changes nothing.
    expect((await call('PATCH', `${path}/tree/nodes/N0`, { parent: 'N999' })).status).toBe(422);
    await group(key, n0!, 'ALLCHILDS', '[OK:4/999]', [n1!, n500!, n998!, n999!]);
  });

  it('a device in 40 routers: RO to each reaches exactly that router, both ways', async () => {
    const { key, path } = account();
    for (let i = 0; i < 40; i++) {
      await must(201, 'POST', `${path}/routers`, { name: `R${i}` });
      await must(204, 'PUT', `${path}/routers/R${i}/members/HUB`);
      await must(204, 'PUT', `${path}/routers/R${i}/members/M${i}`);
    }
    await must(201, 'POST', `${path}/routers`, { name: 'EVERYONE' });
    for (let i = 0; i < 40; i++) await must(204, 'PUT', `${path}/routers/EVERYONE/members/M${i}`);
    await must(204, 'PUT', `${path}/routers/EVERYONE/members/HUB`);
    const hub = await dev(key, 'HUB');
    // Even-numbered members are online, odd ones offline.
    const members = await devs(
      key,
      Array.from({ length: 20 }, (_, i) => `M${2 * i}`),
    );
    for (let i = 0; i < 40; i++) {
      if (i % 2 === 0) {
        const m = members[i / 2]!;
        expect(await hub.req(`TCP:PUSH:${key}:RO:R${i}:to-${i}`)).toBe('[OK:ALL_1]');
        expect(await m.recv(1)).toEqual([`PUSH:to-${i}`]);
        expect(await m.req(`TCP:PUSH:${key}:RO:r${i}:from-${i}`)).toBe('[OK:ALL_1]');
        expect(await hub.recv(1)).toEqual([`PUSH:from-${i}`]);
      } else {
        expect(await hub.req(`TCP:PUSH:${key}:RO:R${i}:to-${i}`)).toBe('[FAIL:NO_ID]');
      }
    }
    expect(await members[0]!.req(`TCP:PUSH:${key}:RO:R2:not-a-member`)).toBe('[FAIL:NO_ROUTER]');
    expect(await hub.req(`TCP:PUSH:${key}:RO:EVERYONE:all`)).toBe('[OK:20/40]');
    for (const m of members) expect(await m.recv(1)).toEqual(['PUSH:all']);
    for (const m of members) await nothingMore(hub, key, m);
  });
});

// ------------------------------------------------------------------ fan-out cap

describe('NODE.MAX_FANOUT', () => {
  let small: TestServer;
  beforeAll(async () => {
    small = await startTestServer({ NODE: { MAX_FANOUT: 3 } });
  });
  afterAll(async () => {
    for (const c of opened.splice(0)) c.close();
    await small?.stop();
  });

  it('a group of exactly the cap is delivered; one larger is refused whole with [FAIL:FANOUT_LIMIT]', async () => {
    const { key, path } = account(small);
    const port = small.httpPort;
    await addNodes(
      path,
      [
        ['P', null],
        ['A', 'P'],
        ['B', 'P'],
        ['C', 'P'],
      ],
      1,
      port,
    );
    const [p, a, b, c] = await Promise.all(['P', 'A', 'B', 'C'].map((id) => dev(key, id, small)));
    const kids = [a!, b!, c!];
    await group(key, p!, 'CHILDS', '[OK:ALL_3]', kids);
    await group(key, p!, 'ALLCHILDS', '[OK:ALL_3]', kids);
    // A fourth child, offline, still counts: 4 > 3.
    await addNodes(path, [['D', 'P']], 1, port);
    await group(key, p!, 'CHILDS', '[FAIL:FANOUT_LIMIT]', [], kids);
    await group(key, p!, 'ALLCHILDS', '[FAIL:FANOUT_LIMIT]', [], kids);
    // FRIENDS of A: B, C, D = 3, at the cap.
    await group(key, a!, 'FRIENDS', '[OK:2/3]', [b!, c!], [p!]);
    await addNodes(path, [['E', 'P']], 1, port);
    await group(key, a!, 'FRIENDS', '[FAIL:FANOUT_LIMIT]', [], [p!, b!, c!]);
    // Routers and aliases.
    await must(201, 'POST', `${path}/routers`, { name: 'R' }, port);
    for (const id of ['A', 'B', 'C', 'P']) await must(204, 'PUT', `${path}/routers/R/members/${id}`, undefined, port);
    await group(key, a!, 'RO:R', '[OK:ALL_3]', [b!, c!, p!]);
    await must(204, 'PUT', `${path}/routers/R/members/X`, undefined, port);
    await group(key, a!, 'RO:R', '[FAIL:FANOUT_LIMIT]', [], [b!, c!, p!]);
    await must(200, 'PUT', `${path}/aliases/FOUR`, { targets: ['A', 'B', 'C', 'P'] }, port);
    await group(key, a!, 'ALIAS:FOUR', '[OK:ALL_3]', [b!, c!, p!]);
    await group(key, c!, 'ALIAS:FOUR', '[OK:ALL_3]', [a!, b!, p!]);
    await must(200, 'PUT', `${path}/aliases/FOUR`, { targets: ['B', 'C', 'P', 'X'] }, port);
    await group(key, a!, 'ALIAS:FOUR', '[FAIL:FANOUT_LIMIT]', [], [b!, c!, p!]);
    // One-device targets are not groups.
    expect(await a!.req(`TCP:PUSH:${key}:RID:B:one`)).toBe('[OK:DATA_SENT]');
    expect(await b!.recv(1)).toEqual(['PUSH:one']);
  });

  it('FRIENDS among untreed devices counts only live ones against the cap', async () => {
    const { key } = account(small);
    const ds = await Promise.all(['U1', 'U2', 'U3', 'U4'].map((id) => dev(key, id, small)));
    await group(key, ds[0]!, 'FRIENDS', '[OK:ALL_3]', ds.slice(1));
    const fifth = await dev(key, 'U5', small);
    await group(key, ds[0]!, 'FRIENDS', '[FAIL:FANOUT_LIMIT]', [], [...ds.slice(1), fifth]);
    fifth.c.close();
    for (let i = 0; ; i++) {
      const r = await ds[0]!.req(`TCP:PUSH:${key}:RID:U5:probe`);
      if (r === '[FAIL:REM_ID]') break;
      expect(i).toBeLessThan(500);
      await sleep(10);
    }
    await group(key, ds[0]!, 'FRIENDS', '[OK:ALL_3]', ds.slice(1));
  });
});

// ------------------------------------------------------------------ live edits

describe('operator edits apply to live connections before the API call returns', () => {
  it('topology edits while devices are pushing: nothing lost or misrouted for unaffected devices', async () => {
    const { key, path } = account();
    // Stable part: GP ─ G1..G4; S1 → T1 by RID. Churn part: XP, XQ ─ X1..X4 moved around, nodes added,
    // renamed and deleted, routers and aliases created and removed.
    await addNodes(path, [
      ['GP', null],
      ['G1', 'GP'],
      ['G2', 'GP'],
      ['G3', 'GP'],
      ['G4', 'GP'],
      ['XP', null],
      ['XQ', null],
      ['X1', 'XP'],
      ['X2', 'XP'],
      ['X3', 'XQ'],
      ['X4', 'XQ'],
    ]);
    const [gp, g1, g2, g3, g4, s1, t1, xp, xq, x1, x2, x3, x4] = await devs(key, [
      'GP',
      'G1',
      'G2',
      'G3',
      'G4',
      'S1',
      'T1',
      'XP',
      'XQ',
      'X1',
      'X2',
      'X3',
      'X4',
    ]);
    const gs = [g1!, g2!, g3!, g4!];
    const xs = [x1!, x2!, x3!, x4!];
    await must(201, 'POST', `${path}/routers`, { name: 'STABLE' });
    await must(204, 'PUT', `${path}/routers/STABLE/members/S1`);
    await must(204, 'PUT', `${path}/routers/STABLE/members/T1`);
    await must(200, 'PUT', `${path}/aliases/TGT`, { target: 'T1' });
    const N = 150;
    let done = false;
    let edits = 0;
    let xDelivered = 0;
    const pusher = (async () => {
      try {
        for (let i = 0; i < N; i++) {
          expect(await gp!.req(`TCP:PUSH:${key}:CHILDS:g-${i}`)).toBe('[OK:ALL_4]');
          expect(await s1!.req(`TCP:PUSH:${key}:RID:T1:r-${i}`)).toBe('[OK:DATA_SENT]');
          expect(await s1!.req(`TCP:PUSH:${key}:RO:STABLE:ro-${i}`)).toBe('[OK:ALL_1]');
          expect(await s1!.req(`TCP:PUSH:${key}:ALIAS:TGT:al-${i}`)).toBe('[OK:DATA_SENT]');
          expect(await g1!.req(`TCP:PUSH:${key}:PARENT:p-${i}`)).toBe('[OK:DATA_SENT]');
          for (const [sender, tag] of [
            [xp!, 'xp'],
            [xq!, 'xq'],
          ] as const) {
            const r = await sender.req(`TCP:PUSH:${key}:CHILDS:${tag}-${i}`);
            const m = /^\[OK:ALL_(\d+)\]$|^\[OK:(\d+)\/(\d+)\]$|^\[FAIL:NO_ID\]$/.exec(r);
            expect(m, r).not.toBeNull();
            xDelivered += Number(m![1] ?? m![2] ?? 0);
          }
        }
      } finally {
        done = true;
      }
    })();
    const operator = (async () => {
      for (let j = 0; !done; j++) {
        const x = `X${(j % 4) + 1}`;
        await must(200, 'PATCH', `${path}/tree/nodes/${x}`, { parent: j % 2 === 0 ? 'XQ' : 'XP' });
        await must(201, 'POST', `${path}/tree/nodes`, { id: `Y${j}`, parent: 'XQ' });
        await must(200, 'PATCH', `${path}/tree/nodes/Y${j}`, { id: `Z${j}` });
        await must(201, 'POST', `${path}/routers`, { name: `TMP${j}` });
        await must(204, 'PUT', `${path}/routers/TMP${j}/members/${x}`);
        await must(200, 'PUT', `${path}/aliases/CHURN`, { targets: [x, 'XP'] });
        await must(200, 'DELETE', `${path}/tree/nodes/Z${j}`);
        await must(204, 'DELETE', `${path}/routers/TMP${j}`);
        edits += 8;
      }
    })();
    await Promise.all([pusher, operator]);
    expect(edits).toBeGreaterThan(0);
    for (const g of gs) {
      expect(await g.recv(N)).toEqual(Array.from({ length: N }, (_, i) => `PUSH:g-${i}`));
    }
    expect(await t1!.recv(3 * N)).toEqual(
      Array.from({ length: N }, (_, i) => [`PUSH:r-${i}`, `PUSH:ro-${i}`, `PUSH:al-${i}`]).flat(),
    );
    expect(await gp!.recv(N)).toEqual(Array.from({ length: N }, (_, i) => `PUSH:p-${i}`));
    // The moved devices: every delivery XP and XQ reported reached an X, each message at most once per X,
    // nothing else reached them, and nothing more arrives after the reported count.
    const pending = (x: Peer): number => x.inbox.length + (x.c.buffer.match(/\n/g)?.length ?? 0);
    await waitFor(() => xs.reduce((n, x) => n + pending(x), 0) >= xDelivered, 'the reported X deliveries', 10000);
    let xReceived = 0;
    for (const x of xs) {
      const lines = await x.recv(pending(x));
      for (const l of lines) expect(l).toMatch(/^PUSH:x[pq]-\d+$/);
      expect(new Set(lines).size).toBe(lines.length);
      xReceived += lines.length;
    }
    expect(xReceived).toBe(xDelivered);
    for (const x of xs) {
      await nothingMore(xp!, key, x);
      await nothingMore(xq!, key, x);
    }
    for (const o of [...gs, t1!, s1!, xp!, xq!]) await nothingMore(gp!, key, o);
    // Final state: the stable group still routes exactly.
    await group(key, gp!, 'CHILDS', '[OK:ALL_4]', gs, [s1!, t1!, xp!, xq!, ...xs]);
  });

  it('moving a node changes who gets FRIENDS, CHILDS and PARENT at once, on both shards', async () => {
    const { key, path } = account();
    await addNodes(path, [
      ['P1', null],
      ['P2', null],
      ['A', 'P1'],
      ['B', 'P1'],
      ['C', 'P2'],
      ['D', 'P2'],
    ]);
    const p1 = await devOn(0, key, 'P1');
    const p2 = await devOn(1, key, 'P2');
    const a = await devOn(1, key, 'A');
    const b = await devOn(0, key, 'B');
    const c = await devOn(0, key, 'C');
    const d = await devOn(1, key, 'D');
    const everyone = [p1, p2, a, b, c, d];
    const not = (...xs: Peer[]): Peer[] => everyone.filter((x) => !xs.includes(x));
    for (let round = 0; round < 4; round++) {
      const underP2 = round % 2 === 0;
      expect(await must(200, 'PATCH', `${path}/tree/nodes/A`, { parent: underP2 ? 'P2' : 'P1' })).toEqual({
        id: 'A',
        parent: underP2 ? 'P2' : 'P1',
      });
      const [home, away] = underP2 ? [p2, p1] : [p1, p2];
      const homeKids = underP2 ? [c, d] : [b];
      const awayKids = underP2 ? [b] : [c, d];
      await group(key, home, 'CHILDS', `[OK:ALL_${homeKids.length + 1}]`, [a, ...homeKids], not(a, ...homeKids));
      await group(key, away, 'CHILDS', `[OK:ALL_${awayKids.length}]`, awayKids, not(...awayKids));
      await group(key, a, 'FRIENDS', `[OK:ALL_${homeKids.length}]`, homeKids, not(...homeKids));
      await group(
        key,
        homeKids[0]!,
        'FRIENDS',
        `[OK:ALL_${homeKids.length}]`,
        [a, ...homeKids.slice(1)],
        [...awayKids, home, away],
      );
      expect(await a.req(`TCP:PUSH:${key}:PARENT:hi-${round}`)).toBe('[OK:DATA_SENT]');
      expect(await home.recv(1)).toEqual([`PUSH:hi-${round}`]);
      await nothingMore(a, key, away);
    }
    // Make A a root: it is now a friend of the roots, and no parent's child.
    await must(200, 'PATCH', `${path}/tree/nodes/A`, { parent: null });
    await group(key, a, 'FRIENDS', '[OK:ALL_2]', [p1, p2], not(p1, p2));
    expect(await a.req(`TCP:PUSH:${key}:PARENT:x`)).toBe('[FAIL:NO_PARENT]');
    await group(key, p1, 'CHILDS', '[OK:ALL_1]', [b], not(b));
    // Delete P2's subtree: C and D leave the tree and become friends of the roots.
    await must(200, 'DELETE', `${path}/tree/nodes/P2`);
    await group(key, a, 'FRIENDS', '[OK:ALL_4]', [p1, p2, c, d], [b]);
    await group(key, c, 'FRIENDS', '[OK:ALL_4]', [p1, a, p2, d], [b]);
  });

  it('re-pointing an alias takes effect on the next push, no reconnect, across shards', async () => {
    const { key, path } = account();
    const s = await devOn(0, key, 'S');
    const a = await devOn(0, key, 'A');
    const b = await devOn(1, key, 'B');
    for (let round = 0; round < 6; round++) {
      const [to, other] = round % 2 === 0 ? [a, b] : [b, a];
      await must(200, 'PUT', `${path}/aliases/my-friend`, { target: to.id.toLowerCase() });
      expect(await s.req(`TCP:PUSH:${key}:ALIAS:MY-FRIEND:r${round}`)).toBe('[OK:DATA_SENT]');
      expect(await to.recv(1)).toEqual([`PUSH:r${round}`]);
      await nothingMore(s, key, other);
    }
    await must(200, 'PUT', `${path}/aliases/MY-FRIEND`, { targets: ['A', 'B'] });
    await group(key, s, 'ALIAS:MY-FRIEND', '[OK:ALL_2]', [a, b]);
    await must(200, 'PUT', `${path}/aliases/MY-FRIEND`, { targets: ['GONE'] });
    expect(await s.req(`TCP:PUSH:${key}:ALIAS:MY-FRIEND:x`)).toBe('[FAIL:REM_ID]');
    await must(204, 'DELETE', `${path}/aliases/MY-FRIEND`);
    expect(await s.req(`TCP:PUSH:${key}:ALIAS:MY-FRIEND:x`)).toBe('[FAIL:NO_ALIAS]');
    for (const o of [a, b]) await nothingMore(s, key, o);
  });

  it('removing a router member stops delivery to it at once; removing the sender or the router stops it all', async () => {
    const { key, path } = account();
    await must(201, 'POST', `${path}/routers`, { name: 'LIGHTS' });
    for (const id of ['S', 'A', 'B', 'C']) await must(204, 'PUT', `${path}/routers/LIGHTS/members/${id}`);
    const s = await devOn(0, key, 'S');
    const a = await devOn(1, key, 'A');
    const b = await devOn(0, key, 'B');
    const c = await devOn(1, key, 'C');
    await group(key, s, 'RO:LIGHTS', '[OK:ALL_3]', [a, b, c]);
    await must(204, 'DELETE', `${path}/routers/LIGHTS/members/A`);
    await group(key, s, 'RO:LIGHTS', '[OK:ALL_2]', [b, c], [a]);
    expect(await a.req(`TCP:PUSH:${key}:RO:LIGHTS:x`)).toBe('[FAIL:NO_ROUTER]');
    await must(204, 'DELETE', `${path}/routers/LIGHTS/members/c`);
    await group(key, s, 'RO:LIGHTS', '[OK:ALL_1]', [b], [a, c]);
    await must(204, 'PUT', `${path}/routers/LIGHTS/members/A`);
    await group(key, b, 'RO:LIGHTS', '[OK:ALL_2]', [s, a], [c]);
    await must(204, 'DELETE', `${path}/routers/LIGHTS/members/S`);
    expect(await s.req(`TCP:PUSH:${key}:RO:LIGHTS:x`)).toBe('[FAIL:NO_ROUTER]');
    await group(key, b, 'RO:LIGHTS', '[OK:ALL_1]', [a], [s, c]);
    await must(204, 'DELETE', `${path}/routers/LIGHTS`);
    expect(await b.req(`TCP:PUSH:${key}:RO:LIGHTS:x`)).toBe('[FAIL:NO_ROUTER]');
    for (const o of [s, a, c]) await nothingMore(b, key, o);
  });

  it('KEY reset: the old KEY fails at once on every shard ([FAIL:INVALID_KEY]); the new one works', async () => {
    const { key, path } = account();
    await addNodes(path, [
      ['HUB', null],
      ['K0', 'HUB'],
      ['K1', 'HUB'],
    ]);
    const hub = await devOn(0, key, 'HUB');
    const k0 = await devOn(0, key, 'K0');
    const k1 = await devOn(1, key, 'K1');
    await group(key, hub, 'CHILDS', '[OK:ALL_2]', [k0, k1]);
    const r = await call('POST', '/api/v1/accounts/me/key', undefined, { auth: key });
    expect(r.status).toBe(200);
    const fresh = r.body.key as string;
    expect(fresh).toMatch(/^[0-9A-F]{32}$/);
    expect(fresh).not.toBe(key);
    for (const d of [hub, k0, k1]) {
      expect(await d.req(`TCP:PUSH:${key}:FRIENDS:old`)).toBe('[FAIL:INVALID_KEY]');
      expect(await d.req(`TCP:GID:${key.toLowerCase()}`)).toBe('[FAIL:INVALID_KEY]');
    }
    await group(fresh, hub, 'CHILDS', '[OK:ALL_2]', [k0, k1]);
    await group(fresh.toLowerCase(), k1, 'FRIENDS', '[OK:ALL_1]', [k0], [hub]);
    const stranger = await open();
    expect(await stranger.request(`TCP:ID:${key}:NEWDEV`)).toBe('[FAIL:INVALID_KEY]');
    const newcomer = await dev(fresh, 'K2');
    await must(201, 'POST', `${path}/tree/nodes`, { id: 'K2', parent: 'HUB' });
    await group(fresh, hub, 'CHILDS', '[OK:ALL_3]', [k0, k1, newcomer]);
    expect((await call('GET', '/api/v1/accounts/me', undefined, { auth: key })).status).toBe(401);
  });

  it('deleting an account disconnects its devices on every shard; other accounts keep working', async () => {
    const doomed = account();
    const other = account();
    await addNodes(doomed.path, [['R', null]]);
    const d0 = await devOn(0, doomed.key, 'D0');
    const d1 = await devOn(1, doomed.key, 'D1');
    const o0 = await devOn(0, other.key, 'D0');
    const o1 = await devOn(1, other.key, 'D1');
    await must(204, 'DELETE', doomed.path);
    await d0.c.closedByServer();
    await d1.c.closedByServer();
    expect(await o0.req(`TCP:PUSH:${other.key}:RID:D1:alive`)).toBe('[OK:DATA_SENT]');
    expect(await o1.recv(1)).toEqual(['PUSH:alive']);
    const again = await open();
    expect(await again.request(`TCP:ID:${doomed.key}:D0`)).toBe('[FAIL:INVALID_KEY]');
    expect((await call('GET', `${doomed.path}/tree`)).status).toBe(404);
  });
});

// ------------------------------------------------------------------ restart

describe('persistence across a restart', () => {
  it('stop, start on the same store: same accounts, tree, routers and aliases, and pushes still route', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'p2pc-restart-'));
    let first: TestServer | null = null;
    let second: TestServer | null = null;
    const mine: TestClient[] = [];
    try {
      first = await startTestServer({}, { keepData: dir });
      const { email, key, path } = account(first);
      const port = first.httpPort;
      await addNodes(
        path,
        [
          ['HOME', null],
          ['HALL', 'HOME'],
          ['LAMP1', 'HALL'],
          ['LAMP2', 'HALL'],
          ['OLD', 'HOME'],
          ['TEMP', null],
          ['GONE', 'TEMP'],
        ],
        1,
        port,
      );
      await must(200, 'PATCH', `${path}/tree/nodes/LAMP2`, { parent: 'HOME' }, port);
      await must(200, 'PATCH', `${path}/tree/nodes/OLD`, { id: 'NEW' }, port);
      await must(200, 'DELETE', `${path}/tree/nodes/TEMP`, undefined, port);
      await must(201, 'POST', `${path}/routers`, { name: 'GARDEN' }, port);
      await must(201, 'POST', `${path}/routers`, { name: 'SCRAP' }, port);
      for (const id of ['LAMP1', 'LAMP2', 'NEW', 'X']) {
        await must(204, 'PUT', `${path}/routers/GARDEN/members/${id}`, undefined, port);
      }
      await must(204, 'DELETE', `${path}/routers/GARDEN/members/X`, undefined, port);
      await must(204, 'DELETE', `${path}/routers/SCRAP`, undefined, port);
      await must(200, 'PUT', `${path}/aliases/MY-LAMP`, { target: 'LAMP1' }, port);
      await must(200, 'PUT', `${path}/aliases/MY-LAMP`, { target: 'LAMP2' }, port);
      await must(200, 'PUT', `${path}/aliases/BOTH`, { targets: ['LAMP1', 'NEW'] }, port);
      // The same tree, routers and aliases (nodes compared as a set: sibling order is not part of the state).
      const view = async (p: number): Promise<Json> => ({
        tree: await must(200, 'GET', `${path}/tree`, undefined, p),
        routers: await must(200, 'GET', `${path}/routers`, undefined, p),
        aliases: await must(200, 'GET', `${path}/aliases`, undefined, p),
        account: await must(200, 'GET', path, undefined, p),
      });
      const before = await view(port);
      expect(before.tree).toEqual({
        roots: ['HOME'],
        nodes: [
          { id: 'HOME', parent: null, children: ['HALL', 'LAMP2', 'NEW'] },
          { id: 'HALL', parent: 'HOME', children: ['LAMP1'] },
          { id: 'LAMP2', parent: 'HOME', children: [] },
          { id: 'NEW', parent: 'HOME', children: [] },
          { id: 'LAMP1', parent: 'HALL', children: [] },
        ],
      });
      await first.stop();
      first = null;

      second = await startTestServer({}, { keepData: dir });
      const after = await view(second.httpPort);
      const bySorted = (v: Json): Json => ({
        ...v,
        tree: { ...v.tree, nodes: [...v.tree.nodes].sort((x: Json, y: Json) => (x.id < y.id ? -1 : 1)) },
      });
      expect(bySorted(after)).toEqual(bySorted(before));
      expect(second.embedded!.accountByEmail(email)!.key).toBe(key);
      const s = second;
      const connect = async (id: string): Promise<Peer> => {
        const c = await TestClient.open(s.port);
        mine.push(c);
        const p = peer(c, id);
        expect(await p.req(`TCP:ID:${key}:${id}`)).toBe(`[OK:${id}]`);
        return p;
      };
      const home = await connect('HOME');
      const hall = await connect('HALL');
      const lamp1 = await connect('LAMP1');
      const lamp2 = await connect('LAMP2');
      const fresh = await connect('NEW');
      await group(key, home, 'CHILDS', '[OK:ALL_3]', [hall, lamp2, fresh], [lamp1]);
      await group(key, home, 'ALLCHILDS', '[OK:ALL_4]', [hall, lamp2, fresh, lamp1]);
      await group(key, lamp1, 'RO:GARDEN', '[OK:ALL_2]', [lamp2, fresh], [home, hall]);
      expect(await home.req(`TCP:PUSH:${key}:ALIAS:MY-LAMP:on`)).toBe('[OK:DATA_SENT]');
      expect(await lamp2.recv(1)).toEqual(['PUSH:on']);
      await group(key, home, 'ALIAS:BOTH', '[OK:ALL_2]', [lamp1, fresh], [lamp2, hall]);
      expect(await lamp1.req(`TCP:PUSH:${key}:PARENT:up`)).toBe('[OK:DATA_SENT]');
      expect(await hall.recv(1)).toEqual(['PUSH:up']);
    } finally {
      for (const c of mine) c.close();
      await first?.stop();
      await second?.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('a shard that restarts', () => {
  it('gets the current topology and every later change', async () => {
    const s = await startTestServer();
    try {
      const { key, path } = account(s);
      const port = s.httpPort;
      await addNodes(
        path,
        [
          ['P', null],
          ['A', 'P'],
          ['B', 'P'],
          ['Q', null],
        ],
        1,
        port,
      );
      await must(201, 'POST', `${path}/routers`, { name: 'R' }, port);
      for (const id of ['A', 'B']) await must(204, 'PUT', `${path}/routers/R/members/${id}`, undefined, port);
      await must(200, 'PUT', `${path}/aliases/X`, { target: 'B' }, port);
      const oldWorker = s.supervisor['shards'][1]!.worker;
      s.supervisor.crashShard(1);
      await waitFor(() => s.supervisor['shards'][1]!.worker !== oldWorker, 'the supervisor to restart shard 1', 10000);
      await s.supervisor.waitReady();
      const p = await devOn(1, key, 'P', s);
      const a = await devOn(1, key, 'A', s);
      const b = await devOn(0, key, 'B', s);
      const q = await devOn(1, key, 'Q', s);
      await group(key, p, 'CHILDS', '[OK:ALL_2]', [a, b], [q]);
      await group(key, a, 'RO:R', '[OK:ALL_1]', [b], [p, q]);
      expect(await a.req(`TCP:PUSH:${key}:ALIAS:X:x`)).toBe('[OK:DATA_SENT]');
      expect(await b.recv(1)).toEqual(['PUSH:x']);
      await must(200, 'PATCH', `${path}/tree/nodes/A`, { parent: 'Q' }, port);
      await group(key, q, 'CHILDS', '[OK:ALL_1]', [a], [p, b]);
      await group(key, p, 'CHILDS', '[OK:ALL_1]', [b], [a, q]);
      await group(key, a, 'PARENT', '[OK:DATA_SENT]', [q], [p, b]);
    } finally {
      for (const c of opened.splice(0)) c.close();
      await s.stop();
    }
  });
});
