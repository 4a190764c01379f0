// End-to-end tests of ID ownership (PROTOCOL.md §4 "Duplicate ID"): races for one ID across both shards,
// takeover from a holder that missed liveness, a shard crash and restart, and 1,000 devices at once.

import type { Worker } from 'node:worker_threads';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ask, device, reply, SYNC_RE, TestClient } from './helpers/client.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';
import { openPerShard, sleep } from './helpers/shards.ts';

/** Waits until `pred` holds, with a deadline. */
async function until(pred: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** The shard that decides IDs of the account with this KEY (src/routing/account.ts: id mod shards). */
function ownerOf(srv: TestServer, key: string): number {
  return srv.embedded!.accountByKey(key)!.id % srv.supervisor.shardCount;
}

/** Two account KEYs: [owned by shard 0, owned by shard 1]. */
function keysOnBothOwners(srv: TestServer): [string, string] {
  const found: (string | undefined)[] = [undefined, undefined];
  for (let i = 0; i < 10 && (found[0] === undefined || found[1] === undefined); i++) {
    const k = srv.newKey();
    found[ownerOf(srv, k)] ??= k;
  }
  return [found[0]!, found[1]!];
}

describe('duplicate IDs on a default server (2 shards)', () => {
  let srv: TestServer;
  beforeAll(async () => {
    srv = await startTestServer();
  });
  afterAll(async () => {
    await srv?.stop();
  });

  it('a live holder keeps its ID: the newcomer gets [FAIL:NODEEXIST] and is closed', async () => {
    const { port, key } = srv;
    const holder = await device(port, key, 'HELD');
    for (let i = 0; i < 6; i++) {
      const c = await TestClient.open(port);
      expect(await c.request(`TCP:ID:${key}:${i % 2 === 0 ? 'held' : 'HELD'}`)).toBe('[FAIL:NODEEXIST]');
      await c.closedByServer();
      expect(c.buffer).toBe('');
    }
    const pusher = await device(port, key, 'HPUSH');
    expect(await pusher.request(`TCP:PUSH:${key}:RID:HELD:still yours`)).toBe('[OK:DATA_SENT]');
    expect(await holder.line()).toBe('PUSH:still yours');
    expect(holder.closed).toBe(false);
    holder.close();
    pusher.close();
  });

  it('the same ID in two accounts is two devices', async () => {
    const { port } = srv;
    const k1 = srv.key;
    const k2 = srv.newKey();
    const a1 = await device(port, k1, 'TWIN');
    const a2 = await device(port, k2, 'TWIN');
    const p1 = await device(port, k1, 'TWINP');
    expect(await p1.request(`TCP:PUSH:${k1}:RID:TWIN:for account 1`)).toBe('[OK:DATA_SENT]');
    expect(await a1.line()).toBe('PUSH:for account 1');
    expect(await a2.silence(100)).toBe('');
    expect(await a2.request(`TCP:PUSH:${k2}:FRIENDS:alone`)).toBe('[FAIL:NO_ID]');
    for (const c of [a1, a2, p1]) c.close();
  });

  it('many connections racing for one ID on both shards: exactly one wins, the others are refused and closed', async () => {
    const { port } = srv;
    // Both owner shards decide some of the races.
    const keys = keysOnBothOwners(srv);
    expect(keys.map((k) => ownerOf(srv, k))).toEqual([0, 1]);
    const N = 16;
    // Connections closed by the previous test leave the counters asynchronously.
    await until(() => openPerShard(srv).every((n) => n === 0), 5000, 'earlier connections to close');
    for (const key of keys) {
      for (let round = 0; round < 4; round++) {
        const id = `RACE${round}`;
        const base = openPerShard(srv);
        const conns = await Promise.all(Array.from({ length: N }, () => TestClient.open(port)));
        // Every connection has been accepted (and counted by its shard) once it answers.
        for (const c of conns) expect(await c.request('HELLO')).toBe('[FAIL:UNKNOWN_COMMAND]');
        const now = openPerShard(srv);
        const perShard = now.map((n, i) => n - base[i]!);
        expect(perShard.reduce((a, b) => a + b, 0)).toBe(N);
        expect(perShard[0], 'connections on shard 0').toBeGreaterThan(0);
        expect(perShard[1], 'connections on shard 1').toBeGreaterThan(0);

        // Fire all registrations in the same tick (half of them lower-case: the same canonical ID).
        for (const [i, c] of conns.entries()) c.write(`TCP:ID:${key}:${i % 2 === 0 ? id : id.toLowerCase()}\r\n`);
        const replies = await Promise.all(conns.map((c) => c.line()));
        const winners = conns.filter((_, i) => replies[i] === `[OK:${id}]`);
        expect(winners.length, `replies: ${replies.join(' ')}`).toBe(1);
        expect(replies.filter((r) => r === '[FAIL:NODEEXIST]').length).toBe(N - 1);
        const winner = winners[0]!;
        const losers = conns.filter((c) => c !== winner);
        await Promise.all(losers.map((c) => c.closedByServer()));
        for (const c of losers) expect(c.buffer).toBe('');
        expect(winner.closed).toBe(false);

        // The directory on every shard names the winner.
        const pusher = await device(port, key, `P${round}`);
        expect(await pusher.request(`TCP:PUSH:${key}:RID:${id}:to the winner`)).toBe('[OK:DATA_SENT]');
        expect(await winner.line()).toBe('PUSH:to the winner');
        expect(await winner.request(`TCP:GID:${key}`)).toBe(`[OK:${id}]`);
        const late = await TestClient.open(port);
        expect(await late.request(`TCP:ID:${key}:${id}`)).toBe('[FAIL:NODEEXIST]');
        await late.closedByServer();
        winner.close();
        pusher.close();
        // Let the counters settle before the next round measures again.
        await until(() => openPerShard(srv).every((n, i) => n === base[i]), 5000, 'connections to close');
      }
    }
  });

  it('1,000 devices register at once, and one FRIENDS push reaches all 999 others', async () => {
    const { port } = srv;
    const key = srv.newKey();
    const n = 1000;
    await until(() => openPerShard(srv).every((v) => v === 0), 5000, 'earlier connections to close');
    const base = openPerShard(srv);
    const devs = await Promise.all(Array.from({ length: n }, (_, i) => device(port, key, `D${i}`)));
    const perShard = openPerShard(srv).map((v, i) => v - base[i]!);
    expect(perShard.reduce((a, b) => a + b, 0)).toBe(n);
    expect(perShard.every((v) => v > 0)).toBe(true);
    expect(await devs[0]!.request(`TCP:PUSH:${key}:FRIENDS:hello all`)).toBe('[OK:ALL_999]');
    const got = await Promise.all(devs.slice(1).map((d) => d.line(10000)));
    expect(got.every((l) => l === 'PUSH:hello all')).toBe(true);
    expect(got.length).toBe(999);
    // A push from the last one reaches the first one too, and nobody got anything twice.
    expect(await devs[n - 1]!.request(`TCP:PUSH:${key}:RID:D0:back`)).toBe('[OK:DATA_SENT]');
    expect(await devs[0]!.line()).toBe('PUSH:back');
    await sleep(100);
    expect(devs.filter((d) => d.buffer !== '').length).toBe(0);
    for (const d of devs) d.close();
    await until(() => openPerShard(srv).every((v, i) => v === base[i]), 10000, 'connections to close');
  }, 60000);
});

describe('takeover from a holder that missed liveness (COM_CHK 0.5 s)', () => {
  let srv: TestServer;
  beforeAll(async () => {
    srv = await startTestServer({ NODE: { COM_CHK: 0.5 } });
  });
  afterAll(async () => {
    await srv?.stop();
  });

  it('a newcomer that asks for the ID the moment the dead holder is seen closed takes it over', async () => {
    const { port } = srv;
    const keys = keysOnBothOwners(srv);
    const ids = ['R0', 'R1', 'R2', 'R3', 'R4', 'R5'];
    const pairs = keys.flatMap((k) => ids.map((id) => ({ k, id })));
    const holders = await Promise.all(pairs.map(({ k, id }) => device(port, k, id)));
    // After the holders' first silent tick (their SYNC), so the newcomers' own deadline without an ID (two ticks)
    // comes well after the holders' close. Connected already, on either shard: between the close and the request
    // there is only the loopback.
    for (const h of holders) expect(await h.line(5000)).toMatch(SYNC_RE);
    const newcomers = await Promise.all(pairs.map(() => TestClient.open(port)));
    pairs.forEach(({ k, id }, i) => {
      holders[i]!.socket.once('close', () => newcomers[i]!.write(`TCP:ID:${k}:${id}\r\n`));
    });
    // The holders answer no SYNC: at their second silent tick the server closes them (missed liveness).
    await Promise.all(holders.map((h) => h.closedByServer(5000)));
    const answers = await Promise.all(newcomers.map((c) => reply(c)));
    expect(answers).toEqual(pairs.map(({ id }) => `[OK:${id}]`));
    for (const c of newcomers) c.close();
  });

  it('holders silent for two ticks are closed after one SYNC; a newcomer then takes each ID', async () => {
    const { port } = srv;
    const keys = keysOnBothOwners(srv);
    expect(keys.map((k) => ownerOf(srv, k))).toEqual([0, 1]);
    const ids = ['T0', 'T1', 'T2', 'T3', 'T4', 'T5'];
    const holders = await Promise.all(keys.flatMap((k) => ids.map((id) => device(port, k, id))));
    // A tick of silence brings one SYNC; the second silent tick closes the holder (missed liveness).
    for (const h of holders) expect(await h.line(5000)).toMatch(SYNC_RE);
    await Promise.all(holders.map((h) => h.closedByServer(5000)));
    const newcomers = await Promise.all(
      keys.flatMap((k) =>
        ids.map(async (id) => {
          const c = await TestClient.open(port);
          expect(await ask(c, `TCP:ID:${k}:${id.toLowerCase()}`)).toBe(`[OK:${id}]`);
          return c;
        }),
      ),
    );
    for (const h of holders) expect(h.buffer).toBe('');
    for (const [ki, k] of keys.entries()) {
      const pusher = await device(port, k, 'TPUSH');
      for (const [i, id] of ids.entries()) {
        expect(await ask(pusher, `TCP:PUSH:${k}:RID:${id}:new owner ${id}`)).toBe('[OK:DATA_SENT]');
        expect(await reply(newcomers[ki * ids.length + i]!)).toBe(`PUSH:new owner ${id}`);
      }
      expect(await ask(pusher, `TCP:PUSH:${k}:FRIENDS:all`)).toBe(`[OK:ALL_${ids.length}]`);
      for (let i = 0; i < ids.length; i++) expect(await reply(newcomers[ki * ids.length + i]!)).toBe('PUSH:all');
      pusher.close();
    }
    for (const c of newcomers) c.close();
  });

  it('a holder that answers its SYNC lines stays alive past two ticks: the newcomer is refused', async () => {
    const { port, key } = srv;
    const holder = await device(port, key, 'BACK');
    for (let n = 0; n < 3; n++) {
      expect(await holder.line(5000)).toMatch(SYNC_RE);
      holder.write('\r\n');
    }
    expect(await ask(holder, `TCP:GID:${key}`)).toBe('[OK:BACK]');
    const c = await TestClient.open(port);
    expect(await c.request(`TCP:ID:${key}:BACK`)).toBe('[FAIL:NODEEXIST]');
    await c.closedByServer();
    expect(holder.closed).toBe(false);
    expect(await ask(holder, `TCP:GID:${key}`)).toBe('[OK:BACK]');
    holder.close();
  });
});

describe('shard crash and restart (WORKERS=2)', () => {
  let srv: TestServer;
  beforeAll(async () => {
    srv = await startTestServer({ PServer: { WORKERS: 2 } });
  });
  afterAll(async () => {
    await srv?.stop();
  });

  it('devices on the surviving shard keep working; the crashed shard comes back and its devices re-register', async () => {
    const { port } = srv;
    // One account is owned by the crashing shard, the other by the survivor.
    const keys = keysOnBothOwners(srv);
    expect(keys.map((k) => ownerOf(srv, k))).toEqual([0, 1]);
    const per = 20;
    const ids = (ki: number): string[] => Array.from({ length: per }, (_, i) => `${ki === 0 ? 'A' : 'B'}${i}`);
    const devs = new Map<string, TestClient>();
    await Promise.all(
      keys.flatMap((k, ki) =>
        ids(ki).map(async (id) => {
          devs.set(`${ki}:${id}`, await device(port, k, id));
        }),
      ),
    );
    const before = openPerShard(srv);
    expect(before.reduce((a, b) => a + b, 0)).toBe(2 * per);
    expect(before[0], 'devices on shard 0').toBeGreaterThan(0);
    expect(before[1], 'devices on shard 1').toBeGreaterThan(0);

    const oldWorker: Worker | null = srv.supervisor['shards'][0]!.worker;
    srv.supervisor.crashShard(0);
    // Exactly the devices of shard 0 lose their connection.
    await until(() => [...devs.values()].filter((d) => d.closed).length >= before[0]!, 10000, 'shard 0 sockets');
    await sleep(200);
    const lost = [...devs.entries()].filter(([, d]) => d.closed).map(([name]) => name);
    const kept = [...devs.entries()].filter(([, d]) => !d.closed).map(([name]) => name);
    expect(lost.length).toBe(before[0]);
    expect(kept.length).toBe(before[1]);
    for (const name of lost) expect(devs.get(name)!.buffer).toBe('');

    // Survivors push among themselves, in both accounts (also the one whose owner shard is down).
    for (const ki of [0, 1]) {
      const mine = kept.filter((n) => n.startsWith(`${ki}:`));
      for (let i = 0; i + 1 < mine.length; i++) {
        const from = devs.get(mine[i]!)!;
        const toName = mine[i + 1]!;
        const to = devs.get(toName)!;
        expect(await from.request(`TCP:PUSH:${keys[ki]}:RID:${toName.slice(2)}:during outage`)).toBe('[OK:DATA_SENT]');
        expect(await to.line()).toBe('PUSH:during outage');
      }
    }

    // The supervisor restarts the shard (the test hook's waitReady resolves once every shard listens).
    await until(() => srv.supervisor['shards'][0]!.worker !== oldWorker, 10000, 'the supervisor to notice the crash');
    await srv.supervisor.waitReady();

    // The lost devices reconnect and register the same IDs again; they now land on both shards.
    const base = openPerShard(srv);
    await Promise.all(
      lost.map(async (name) => {
        const ki = Number(name[0]);
        devs.set(name, await device(port, keys[ki]!, name.slice(2)));
      }),
    );
    const after = openPerShard(srv);
    expect(after.reduce((a, b) => a + b, 0)).toBe(2 * per);
    const landed = after.map((v, i) => v - base[i]!);
    expect(landed.reduce((a, b) => a + b, 0)).toBe(lost.length);
    expect(landed[0], 'reconnections accepted by the restarted shard').toBeGreaterThan(0);

    // The restarted shard knows every live ID (survivors and re-registered ones): duplicates are refused.
    for (const [ki, k] of keys.entries()) {
      for (const id of [kept.find((n) => n.startsWith(`${ki}:`)), lost.find((n) => n.startsWith(`${ki}:`))]) {
        if (id === undefined) continue;
        const c = await TestClient.open(port);
        expect(await c.request(`TCP:ID:${k}:${id.slice(2)}`)).toBe('[FAIL:NODEEXIST]');
        await c.closedByServer();
      }
    }

    // Pushes work across both shards again: FRIENDS from every device of one account reaches all others.
    for (const [ki, k] of keys.entries()) {
      const names = ids(ki).map((id) => `${ki}:${id}`);
      for (const from of [names[0]!, names[per - 1]!]) {
        expect(await devs.get(from)!.request(`TCP:PUSH:${k}:FRIENDS:back from ${from}`)).toBe(`[OK:ALL_${per - 1}]`);
        for (const n of names) if (n !== from) expect(await devs.get(n)!.line()).toBe(`PUSH:back from ${from}`);
      }
      // And RID both ways between every lost device and a survivor.
      const survivor = names.find((n) => kept.includes(n));
      if (survivor === undefined) continue;
      for (const n of names.filter((x) => lost.includes(x))) {
        expect(await devs.get(n)!.request(`TCP:PUSH:${k}:RID:${survivor.slice(2)}:from ${n}`)).toBe('[OK:DATA_SENT]');
        expect(await devs.get(survivor)!.line()).toBe(`PUSH:from ${n}`);
        expect(await devs.get(survivor)!.request(`TCP:PUSH:${k}:RID:${n.slice(2)}:to ${n}`)).toBe('[OK:DATA_SENT]');
        expect(await devs.get(n)!.line()).toBe(`PUSH:to ${n}`);
      }
    }
    for (const d of devs.values()) d.close();
  }, 60000);

  it('a registration for an account owned by a crashed shard waits for the restart and then succeeds', async () => {
    const { port } = srv;
    const [key0, key1] = keysOnBothOwners(srv);
    const oldWorker: Worker | null = srv.supervisor['shards'][0]!.worker;
    srv.supervisor.crashShard(0);
    await until(() => srv.supervisor['shards'][0]!.worker !== oldWorker, 10000, 'the supervisor to notice the crash');
    // While shard 0 is down or restarting, new connections are served by whichever shard listens.
    const a = await TestClient.open(port);
    const b = await TestClient.open(port);
    a.write(`TCP:ID:${key0}:OUT0\r\n`);
    b.write(`TCP:ID:${key1}:OUT1\r\n`);
    expect(await a.line(10000)).toBe('[OK:OUT0]');
    expect(await b.line(10000)).toBe('[OK:OUT1]');
    await srv.supervisor.waitReady();
    const c = await device(port, key0, 'OUT0B');
    expect(await c.request(`TCP:PUSH:${key0}:RID:OUT0:hi`)).toBe('[OK:DATA_SENT]');
    expect(await a.line()).toBe('PUSH:hi');
    expect(await a.request(`TCP:PUSH:${key0}:FRIENDS:all`)).toBe('[OK:ALL_1]');
    expect(await c.line()).toBe('PUSH:all');
    for (const x of [a, b, c]) x.close();
  }, 30000);
});
