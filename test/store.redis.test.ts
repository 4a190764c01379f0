// RedisStore against the Store contract (a real redis-server, a fresh key prefix per store), plus what only a
// shared Redis can show: two stores (two cluster nodes) seeing each other's writes, concurrent takeHeld never
// handing a message out twice, a script failing half-way leaving every key as it was, every key under the prefix
// with no KEYS/SCAN, and calls while Redis is away failing clearly and quickly, then working again once it is back.

import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { TopologyChange } from '../src/routing/changes.ts';
import { RedisStore } from '../src/store/redis.ts';
import { StoreError } from '../src/store/store.ts';
import { redisRelay, startRedis, type TestRedis } from './helpers/redis.ts';
import { rebuild, storeContract, topologyPicture } from './store.contract.ts';

let server: TestRedis;
let raw: Redis;
beforeAll(async () => {
  server = await startRedis();
  raw = new Redis(server.url);
}, 120_000);
afterAll(async () => {
  raw?.disconnect();
  await server?.stop();
});

let prefixes = 0;
const freshPrefix = (): string => `p2pc-test-${process.pid}-${++prefixes}:`;

storeContract('RedisStore', () => RedisStore.open(server.url, { prefix: freshPrefix() }));

/** Every key under a prefix with its type and content, for before/after comparisons (tests only: uses KEYS). */
async function dump(prefix: string): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  for (const key of (await raw.keys(`${prefix}*`)).sort()) {
    const type = await raw.type(key);
    let value: unknown;
    if (type === 'string') value = await raw.get(key);
    else if (type === 'hash') value = await raw.hgetall(key);
    else if (type === 'set') value = (await raw.smembers(key)).sort();
    else if (type === 'list') value = await raw.lrange(key, 0, -1);
    else if (type === 'zset') value = await raw.zrange(key, '0', '-1', 'WITHSCORES');
    out[key] = [type, value];
  }
  return out;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Keeps the Redis server busy (every client waits) for about `ms`. */
const BUSY = `local t = redis.call('TIME')
local start = t[1] * 1000000 + t[2]
repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] - start > tonumber(ARGV[1]) * 1000
return 1`;

describe('RedisStore on a shared Redis', () => {
  const open: RedisStore[] = [];
  const store = async (prefix: string): Promise<RedisStore> => {
    const s = await RedisStore.open(server.url, { prefix });
    open.push(s);
    return s;
  };
  afterEach(async () => {
    await Promise.all(open.splice(0).map((s) => s.close()));
  });

  it('two stores (two nodes) on one Redis see each other’s writes at once', async () => {
    const prefix = freshPrefix();
    const n1 = await store(prefix);
    const n2 = await store(prefix);
    const a = await n1.createAccount('shared@example.com', 'pw', 2);
    expect(await n2.accountByKey(a.key)).toEqual(a);
    expect(await n2.checkPassword('SHARED@example.com', 'pw')).toBe(true);
    const changes: TopologyChange[] = [
      { op: 'node-add', id: 'R', parent: null },
      { op: 'node-add', id: 'C', parent: 'R' },
      { op: 'router-add', name: 'G' },
      { op: 'member-add', router: 'G', id: 'C' },
    ];
    await n2.saveChanges(a.id, changes);
    await n1.saveChange(a.id, { op: 'alias-set', name: 'L', targets: ['C'] });
    const picture = topologyPicture(rebuild(await n1.loadTopology(a.id)));
    expect(topologyPicture(rebuild(await n2.loadTopology(a.id)))).toEqual(picture);
    const now = Date.now();
    await n1.hold([{ accountId: a.id, id: 'C', data: 'for C', expiresAt: now + 60_000, limit: 10 }], now);
    expect(await n2.heldCount()).toBe(1);
    expect(await n2.takeHeld(a.id, 'C', now)).toEqual(['for C']);
    expect(await n1.takeHeld(a.id, 'C', now)).toEqual([]);
    await n2.markSeen([{ accountId: a.id, id: 'C' }], now);
    expect(await n1.lastSeen(a.id, 'C')).toBe(now);
    const m = await n1.enqueue(
      { accountId: a.id, kind: 'mail', recipient: 'x@example.com', subject: 's', body: 'b' },
      now,
    );
    expect((await n2.dueOutbox(now, 10)).map((x) => x.id)).toEqual([m]);
    const b = await n2.resetKey(a.id);
    expect(await n1.accountByKey(a.key)).toBeNull();
    expect(await n1.accountByKey(b.key)).toEqual(b);
    // Both nodes creating the same account at once: one wins, the other is told it exists.
    const race = await Promise.allSettled([
      n1.createAccount('race@example.com', null, 1),
      n2.createAccount('RACE@example.com', null, 1),
    ]);
    expect(race.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    const lost = race.find((r) => r.status === 'rejected') as PromiseRejectedResult;
    expect(lost.reason).toBeInstanceOf(StoreError);
    expect((lost.reason as StoreError).code).toBe('EXISTS');
    await n2.deleteAccount(a.id);
    expect(await n1.accountById(a.id)).toBeNull();
    expect(await n1.countAccounts()).toBe(1);
  });

  it('two nodes taking held messages at once never both get one', async () => {
    const prefix = freshPrefix();
    const n1 = await store(prefix);
    const n2 = await store(prefix);
    const a = await n1.createAccount('take@example.com', null, 4);
    const now = Date.now();
    const devices = Array.from({ length: 20 }, (_, i) => `D${i}`);
    for (let round = 0; round < 5; round++) {
      const sent: string[] = [];
      const batch = [];
      for (const id of devices) {
        for (let k = 0; k < 10; k++) {
          const data = `${round}/${id}/${k}`;
          sent.push(data);
          batch.push({ accountId: a.id, id, data, expiresAt: now + 60_000, limit: 100 });
        }
      }
      await n1.hold(batch, now);
      // Both nodes ask for every device, interleaved, without waiting for each other.
      const takes = devices.flatMap((id) => [n1.takeHeld(a.id, id, now), n2.takeHeld(a.id, id, now)]);
      const got = (await Promise.all(takes)).flat();
      expect(got.length).toBe(sent.length);
      expect(new Set(got).size).toBe(sent.length);
      expect(new Set(got)).toEqual(new Set(sent));
      expect(await n1.heldCount()).toBe(0);
    }
  });

  it('every key is under the prefix, stores with other prefixes never meet, and no KEYS or SCAN is sent', async () => {
    const p1 = freshPrefix();
    const p2 = freshPrefix();
    const s1 = await store(p1);
    const s2 = await store(p2);
    await raw.config('RESETSTAT');
    const now = Date.now();
    for (const s of [s1, s2]) {
      const a = await s.createAccount('same@example.com', 'pw', 3);
      await s.saveChanges(a.id, [
        { op: 'node-add', id: 'A', parent: null },
        { op: 'node-add', id: 'B', parent: 'A' },
        { op: 'node-rename', from: 'A', to: 'Z' },
        { op: 'router-add', name: 'R' },
        { op: 'member-add', router: 'R', id: 'B' },
        { op: 'alias-set', name: 'L', targets: ['B'] },
      ]);
      await s.loadTopology(a.id);
      await s.hold([{ accountId: a.id, id: 'B', data: 'x', expiresAt: now + 10, limit: 5 }], now);
      await s.heldSummary(a.id);
      await s.heldKeys();
      await s.purgeHeld(now + 20);
      await s.markSeen([{ accountId: a.id, id: 'B' }], now);
      await s.knownDevices(a.id);
      const m = await s.enqueue({ accountId: a.id, kind: 'sms', recipient: '+491', subject: '', body: 'b' }, now);
      await s.updateOutbox(m, 'sent', 1, now, null);
      await s.listOutbox(a.id, 10);
      await s.dueOutbox(now, 10);
      await s.countOutboxSince(a.id, 0);
      await s.outboxCounts();
      await s.heldCount();
      await s.heldDropped();
      await s.createSignup('later@example.com', 'pw', 1, 'tok', Math.floor(now / 1000) + 60);
      await s.listAccounts();
      await s.countAccounts();
    }
    const stats = String(await raw.info('commandstats'));
    expect(stats).not.toMatch(/cmdstat_(keys|scan):/);
    const all = await raw.keys('*');
    const mine = all.filter((k) => k.startsWith(p1) || k.startsWith(p2));
    expect(mine.length).toBeGreaterThan(10);
    expect(await s1.countAccounts()).toBe(1);
    expect(await s2.countAccounts()).toBe(1);
    const a1 = (await s1.listAccounts())[0]!;
    const a2 = (await s2.listAccounts())[0]!;
    expect(await s1.accountByKey(a2.key)).toBeNull();
    await s2.deleteAccount(a2.id);
    expect(await s1.accountById(a1.id)).toEqual(a1);
    // Deleting the account left only what is not an account's: counters, the sign-up, the system-wide indexes.
    const left = Object.keys(await dump(p2)).map((k) => k.slice(p2.length));
    expect(
      left.every((k) => /^(acct:seq|outbox:seq|held:count|held:dropped|signup:tok)$/.test(k)),
      left.join(),
    ).toBe(true);
  });

  it('calls in flight when the connection drops are rejected at once and never written twice', async () => {
    const prefix = freshPrefix();
    const r = await redisRelay(server.port);
    try {
      const s = await store(prefix);
      const viaRelay = await RedisStore.open(r.url, { prefix });
      open.push(viaRelay);
      const a = await s.createAccount('drop@example.com', null, 4);
      const busy = raw.eval(BUSY, 0, 600);
      await sleep(50);
      const now = Date.now();
      const calls = Array.from({ length: 20 }, (_, i) =>
        viaRelay.hold([{ accountId: a.id, id: `D${i}`, data: `m${i}`, expiresAt: now + 60_000, limit: 100 }], now).then(
          () => 'resolved',
          (e: Error) => e.message,
        ),
      );
      await sleep(50);
      r.cut();
      r.heal(); // the connections drop, as on a network failure; new ones get through again
      const t0 = Date.now();
      const results = await Promise.all(calls);
      expect(Date.now() - t0).toBeLessThan(300);
      for (const m of results) {
        expect(m).toMatch(/^Redis store at 127\.0\.0\.1:\d+ is unavailable: connection to Redis at .* lost/);
      }
      await busy;
      // The store reconnects through the relay by itself; whatever Redis ran of those calls, it ran once.
      const deadline = Date.now() + 5000;
      while (Date.now() < deadline) {
        try {
          await viaRelay.heldCount();
          break;
        } catch {
          await sleep(50);
        }
      }
      await sleep(200);
      let held = 0;
      for (let i = 0; i < 20; i++) {
        const got = await viaRelay.takeHeld(a.id, `D${i}`, now);
        expect(got.length, `D${i}`).toBeLessThanOrEqual(1);
        held += got.length;
      }
      expect(await s.heldCount()).toBe(0);
      expect(held).toBeLessThanOrEqual(20);
    } finally {
      await r.close();
    }
  });

  describe('a script failing half-way leaves every key as it was', () => {
    async function setup(): Promise<{ s: RedisStore; prefix: string; id: number }> {
      const prefix = freshPrefix();
      const s = await store(prefix);
      const a = await s.createAccount('half@example.com', null, 4);
      await s.saveChanges(a.id, [
        { op: 'node-add', id: 'P', parent: null },
        { op: 'node-add', id: 'C1', parent: 'P' },
        { op: 'node-add', id: 'C2', parent: 'P' },
        { op: 'node-add', id: 'D', parent: 'C2' },
        { op: 'router-add', name: 'R' },
        { op: 'member-add', router: 'R', id: 'C1' },
        { op: 'alias-set', name: 'X', targets: ['D'] },
      ]);
      const now = Date.now();
      await s.hold([{ accountId: a.id, id: 'C1', data: 'held', expiresAt: now + 60_000, limit: 10 }], now);
      await s.markSeen([{ accountId: a.id, id: 'C1' }], now);
      await s.enqueue({ accountId: a.id, kind: 'mail', recipient: 'x@example.com', subject: 's', body: 'b' }, now);
      return { s, prefix, id: a.id };
    }

    it('a rename whose re-parenting meets a key of the wrong type', async () => {
      const { s, prefix, id } = await setup();
      await raw.set(`${prefix}topo:${id}:kids:BOOM`, 'not a set');
      const before = await dump(prefix);
      await expect(s.saveChange(id, { op: 'node-rename', from: 'P', to: 'BOOM' })).rejects.toThrow(/WRONGTYPE/);
      expect(await dump(prefix)).toEqual(before);
      await raw.del(`${prefix}topo:${id}:kids:BOOM`);
      await s.saveChange(id, { op: 'node-rename', from: 'P', to: 'BOOM' });
      expect([...rebuild(await s.loadTopology(id)).childrenOf('BOOM')].sort()).toEqual(['C1', 'C2']);
    });

    it('a subtree delete that fails at its deepest node', async () => {
      const { s, prefix, id } = await setup();
      await raw.set(`${prefix}topo:${id}:kids:D`, 'not a set');
      const before = await dump(prefix);
      const topo = await s.loadTopology(id);
      await expect(s.saveChange(id, { op: 'node-delete', id: 'P' })).rejects.toThrow(/WRONGTYPE/);
      expect(await dump(prefix)).toEqual(before);
      expect(await s.loadTopology(id)).toEqual(topo);
    });

    it('a batch whose later change fails after earlier ones were written', async () => {
      const { s, prefix, id } = await setup();
      await raw.set(`${prefix}topo:${id}:members:R2`, 'not a set');
      const before = await dump(prefix);
      await expect(
        s.saveChanges(id, [
          { op: 'node-add', id: 'N', parent: 'D' },
          { op: 'node-move', id: 'C1', parent: 'D' },
          { op: 'router-delete', name: 'R' },
          { op: 'alias-delete', name: 'X' },
          { op: 'router-add', name: 'R2' },
          { op: 'member-add', router: 'R2', id: 'N' },
        ]),
      ).rejects.toThrow(/WRONGTYPE/);
      expect(await dump(prefix)).toEqual(before);
    });

    it('an account delete and a hold that meet a key of the wrong type change nothing', async () => {
      const { s, prefix, id } = await setup();
      await raw.set(`${prefix}heldq:${id}:BAD`, 'not a list');
      const before = await dump(prefix);
      const now = Date.now();
      await expect(
        s.hold(
          [
            { accountId: id, id: 'C1', data: 'one', expiresAt: now + 60_000, limit: 10 },
            { accountId: id, id: 'BAD', data: 'two', expiresAt: now + 60_000, limit: 10 },
          ],
          now,
        ),
      ).rejects.toThrow(/WRONGTYPE/);
      expect(await dump(prefix)).toEqual(before);
      await raw.del(`${prefix}heldq:${id}:BAD`);
      await raw.set(`${prefix}heldids:${id}`, 'not a set');
      const before2 = await dump(prefix);
      await expect(s.deleteAccount(id)).rejects.toThrow(/WRONGTYPE/);
      expect(await dump(prefix)).toEqual(before2);
      expect((await s.accountById(id))?.email).toBe('half@example.com');
    });
  });
});

describe('RedisStore while Redis is away', () => {
  let own: TestRedis;
  beforeAll(async () => {
    own = await startRedis();
  }, 120_000);
  afterAll(async () => {
    await own?.stop();
  });

  it('refuses to open when Redis cannot be reached, with a clear error', async () => {
    const { port } = own;
    await own.stop();
    const t0 = Date.now();
    await expect(RedisStore.open(`redis://127.0.0.1:${port}`)).rejects.toThrow(
      new RegExp(`cannot open the Redis store at 127\\.0\\.0\\.1:${port}`),
    );
    expect(Date.now() - t0).toBeLessThan(5000);
    await own.start();
  });

  it('calls reject with a clear error within a bounded time, and work again after Redis restarts', async () => {
    const s = await RedisStore.open(own.url, { prefix: freshPrefix() });
    try {
      const a = await s.createAccount('away@example.com', null, 4);
      await own.stop();
      const now = Date.now();
      const calls: [string, () => Promise<unknown>][] = [
        ['accountById', () => s.accountById(a.id)],
        ['saveChange', () => s.saveChange(a.id, { op: 'node-add', id: 'A', parent: null })],
        ['hold', () => s.hold([{ accountId: a.id, id: 'A', data: 'x', expiresAt: now + 60_000, limit: 5 }], now)],
        ['takeHeld', () => s.takeHeld(a.id, 'A', now)],
        ['heldCount', () => s.heldCount()],
        ['markSeen', () => s.markSeen([{ accountId: a.id, id: 'A' }], now)],
      ];
      for (const [name, call] of calls) {
        const t0 = Date.now();
        const err = await call().then(
          () => null,
          (e: unknown) => e,
        );
        expect(err, name).toBeInstanceOf(Error);
        expect((err as Error).message, name).toMatch(/^Redis store at 127\.0\.0\.1:\d+ is unavailable: /);
        expect(Date.now() - t0, name).toBeLessThan(5000);
      }
      // Several at once, in order: all fail, none hangs.
      const many = await Promise.allSettled(calls.map(([, call]) => call()));
      expect(many.every((r) => r.status === 'rejected')).toBe(true);

      await own.start();
      // Redis came back empty (no persistence): the store reconnects by itself and works again.
      const deadline = Date.now() + 10_000;
      let b = null;
      while (b === null) {
        try {
          b = await s.createAccount('back@example.com', null, 1);
        } catch (err) {
          if (Date.now() > deadline) throw err;
          await new Promise((r) => setTimeout(r, 50));
        }
      }
      expect(await s.accountByKey(b.key)).toEqual(b);
      await s.saveChange(b.id, { op: 'node-add', id: 'A', parent: null });
      expect(await s.loadTopology(b.id)).toEqual([{ op: 'node-add', id: 'A', parent: null }]);
    } finally {
      await s.close();
    }
  });

  it('a call in flight when Redis goes away settles (never hangs); calls after close() say the store is closed', async () => {
    const s = await RedisStore.open(own.url, { prefix: freshPrefix() });
    const a = await s.createAccount('flight@example.com', null, 4);
    const now = Date.now();
    const inFlight = Array.from({ length: 50 }, (_, i) =>
      s.hold([{ accountId: a.id, id: `D${i}`, data: 'x', expiresAt: now + 60_000, limit: 5 }], now),
    );
    const stopping = own.stop();
    const t0 = Date.now();
    const settled = await Promise.allSettled(inFlight);
    expect(Date.now() - t0).toBeLessThan(5000);
    for (const r of settled) {
      if (r.status === 'rejected') expect(String(r.reason)).toMatch(/Redis store at 127\.0\.0\.1:\d+ is unavailable/);
    }
    await stopping;
    await own.start();
    await s.close();
    await expect(s.countAccounts()).rejects.toThrow(/the Redis store is closed/);
  });
});
