// The contract every Store implementation must pass (src/store/store.ts): accounts, KEYs, levels, passwords,
// sign-up tokens, topology persistence for every change kind, atomicity, held messages (expiry, HOLDBUFFER),
// known devices, the outbox, and call order. Run it with `storeContract(name, makeStore)` from an implementation's
// test file (SQLite through embeddedStore, and Redis).

import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { applyChange, type TopologyChange } from '../src/routing/changes.ts';
import { Topology, TopologyFailure } from '../src/routing/topology.ts';
import { type AccountRecord, type Store, StoreError } from '../src/store/store.ts';

const KEY_SHAPE = /^[0-9A-F]{32}$/;
const byStr = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);
const sorted = (it: Iterable<string>): string[] => [...it].sort(byStr);
const nowSeconds = (): number => Math.floor(Date.now() / 1000);
/** Held-message keys as sortable strings. */
const keys = (list: { accountId: number; id: string }[]): string[] =>
  list.map((k) => `${k.accountId}/${k.id}`).sort(byStr);

/** An order-independent picture of a topology: parents, roots, routers with members, aliases with targets. */
export function topologyPicture(t: Topology): unknown {
  return {
    nodes: t
      .edges()
      .map(([id, parent]) => `${id}<${parent ?? ''}`)
      .sort(byStr),
    children: t
      .edges()
      .map(([id]) => `${id}:${sorted(t.childrenOf(id)).join(',')}`)
      .sort(byStr),
    roots: sorted(t.roots()),
    routers: [...t.routers].map(([n, m]) => `${n}:${sorted(m).join(',')}`).sort(byStr),
    aliases: [...t.aliases].map(([n, targets]) => `${n}:${targets.join(',')}`).sort(byStr),
  };
}

/** Replays a store's saved changes in order; throws if they do not rebuild a valid topology. */
export function rebuild(changes: readonly TopologyChange[]): Topology {
  const t = new Topology();
  for (const c of changes) applyChange(t, c);
  return t;
}

/** Applies changes to a fresh in-memory model, asserting each one is valid. */
function model(changes: readonly TopologyChange[]): Topology {
  const t = new Topology();
  for (const c of changes) applyChange(t, c);
  return t;
}

/** The StoreError code a call rejects with, null when it resolves; any other error fails the test. */
async function storeErrorCode(call: Promise<unknown>): Promise<string | null> {
  try {
    await call;
    return null;
  } catch (err) {
    if (err instanceof StoreError) return err.code;
    throw err;
  }
}

export function storeContract(name: string, makeStore: () => Store | Promise<Store>): void {
  describe(`Store contract: ${name}`, () => {
    const open: Store[] = [];
    const fresh = async (): Promise<Store> => {
      const s = await makeStore();
      open.push(s);
      return s;
    };
    afterEach(async () => {
      await Promise.all(open.splice(0).map((s) => s.close()));
    });

    /** Saves each change and checks the saved topology rebuilds exactly the in-memory model after every step. */
    async function saveAndCheck(
      store: Store,
      accountId: number,
      changes: readonly TopologyChange[],
    ): Promise<Topology> {
      const m = new Topology();
      for (const c of changes) {
        applyChange(m, c);
        await store.saveChange(accountId, c);
        expect(topologyPicture(rebuild(await store.loadTopology(accountId))), JSON.stringify(c)).toEqual(
          topologyPicture(m),
        );
      }
      return m;
    }

    // ---------------------------------------------------------------- accounts

    describe('accounts', () => {
      it('createAccount returns the record with a fresh 32-hex upper-case KEY, and every lookup finds it', async () => {
        const s = await fresh();
        const before = nowSeconds();
        const a = await s.createAccount('alice@example.com', null, 3);
        const after = nowSeconds();
        expect(a.email).toBe('alice@example.com');
        expect(a.level).toBe(3);
        expect(a.key).toMatch(KEY_SHAPE);
        expect(Number.isInteger(a.id)).toBe(true);
        expect(a.createdAt).toBeGreaterThanOrEqual(before);
        expect(a.createdAt).toBeLessThanOrEqual(after);
        expect(await s.accountByKey(a.key)).toEqual(a);
        expect(await s.accountByKey(a.key.toLowerCase())).toEqual(a);
        expect(await s.accountByEmail('alice@example.com')).toEqual(a);
        expect(await s.accountByEmail('ALICE@Example.COM')).toEqual(a);
        expect(await s.accountById(a.id)).toEqual(a);
        expect(await s.countAccounts()).toBe(1);
        expect(await s.listAccounts()).toEqual([a]);
      });

      it('unknown lookups are null', async () => {
        const s = await fresh();
        await s.createAccount('a@example.com', null, 1);
        expect(await s.accountByKey('0'.repeat(32))).toBeNull();
        expect(await s.accountByEmail('b@example.com')).toBeNull();
        expect(await s.accountById(987654)).toBeNull();
      });

      it('KEYs and ids are distinct; listAccounts is in creation order', async () => {
        const s = await fresh();
        const made: AccountRecord[] = [];
        for (let i = 0; i < 40; i++) made.push(await s.createAccount(`u${i}@example.com`, null, (i % 4) + 1));
        expect(new Set(made.map((a) => a.key)).size).toBe(40);
        expect(new Set(made.map((a) => a.id)).size).toBe(40);
        expect(await s.countAccounts()).toBe(40);
        expect(await s.listAccounts()).toEqual(made);
      });

      it('a taken e-mail (in any case) is refused with EXISTS and nothing changes', async () => {
        const s = await fresh();
        const a = await s.createAccount('dup@example.com', 'pw1', 2);
        expect(await storeErrorCode(s.createAccount('dup@example.com', 'pw2', 4))).toBe('EXISTS');
        expect(await storeErrorCode(s.createAccount('DUP@EXAMPLE.COM', null, 4))).toBe('EXISTS');
        expect(await s.countAccounts()).toBe(1);
        expect(await s.accountByEmail('dup@example.com')).toEqual(a);
        expect(await s.checkPassword('dup@example.com', 'pw1')).toBe(true);
        expect(await s.checkPassword('dup@example.com', 'pw2')).toBe(false);
      });

      it('an invalid e-mail is refused with INVALID and nothing is created', async () => {
        const s = await fresh();
        for (const bad of ['', 'nobody', 'a@b', 'a b@c.de', 'a:b@c.de', '@c.de', 'a@', `${'x'.repeat(250)}@e.com`]) {
          expect(await storeErrorCode(s.createAccount(bad, null, 1)), JSON.stringify(bad)).toBe('INVALID');
        }
        expect(await s.countAccounts()).toBe(0);
      });

      it('resetKey: a fresh KEY, the old one finds nothing, everything else kept', async () => {
        const s = await fresh();
        const a = await s.createAccount('k@example.com', null, 2);
        const other = await s.createAccount('other@example.com', null, 2);
        const b = await s.resetKey(a.id);
        expect(b.key).toMatch(KEY_SHAPE);
        expect(b.key).not.toBe(a.key);
        expect(b).toEqual({ ...a, key: b.key });
        expect(await s.accountByKey(a.key)).toBeNull();
        expect(await s.accountByKey(b.key)).toEqual(b);
        expect(await s.accountByEmail('k@example.com')).toEqual(b);
        expect(await s.accountByKey(other.key)).toEqual(other);
        const c = await s.resetKey(a.id);
        expect(c.key).not.toBe(b.key);
        expect(await s.accountByKey(b.key)).toBeNull();
      });

      it('resetKey and setLevel of an unknown account throw', async () => {
        const s = await fresh();
        await expect(s.resetKey(424242)).rejects.toThrow(StoreError);
        await expect(s.setLevel(424242, 2)).rejects.toThrow(StoreError);
        expect(await s.countAccounts()).toBe(0);
      });

      it('setLevel returns and persists the new level', async () => {
        const s = await fresh();
        const a = await s.createAccount('lvl@example.com', null, 1);
        expect(await s.setLevel(a.id, 4)).toEqual({ ...a, level: 4 });
        expect(await s.accountById(a.id)).toEqual({ ...a, level: 4 });
        expect((await s.accountByKey(a.key))!.level).toBe(4);
      });

      it('passwords: checked by e-mail in any case; setPassword replaces; no password never matches', async () => {
        const s = await fresh();
        await s.createAccount('pw@example.com', 's3cret:with:colons', 1);
        const nopw = await s.createAccount('nopw@example.com', null, 1);
        expect(await s.checkPassword('pw@example.com', 's3cret:with:colons')).toBe(true);
        expect(await s.checkPassword('PW@example.com', 's3cret:with:colons')).toBe(true);
        expect(await s.checkPassword('pw@example.com', 's3cret:with:colon')).toBe(false);
        expect(await s.checkPassword('pw@example.com', '')).toBe(false);
        expect(await s.checkPassword('nobody@example.com', 's3cret:with:colons')).toBe(false);
        expect(await s.checkPassword('nopw@example.com', '')).toBe(false);
        expect(await s.checkPassword('nopw@example.com', 'anything')).toBe(false);
        await s.setPassword(nopw.id, 'now-set');
        expect(await s.checkPassword('nopw@example.com', 'now-set')).toBe(true);
        const pw = (await s.accountByEmail('pw@example.com'))!;
        await s.setPassword(pw.id, 'ünïcode pässword');
        expect(await s.checkPassword('pw@example.com', 's3cret:with:colons')).toBe(false);
        expect(await s.checkPassword('pw@example.com', 'ünïcode pässword')).toBe(true);
      });

      it('deleteAccount removes the account and its topology, and nothing of any other account', async () => {
        const s = await fresh();
        const a = await s.createAccount('del@example.com', 'pw', 2);
        const b = await s.createAccount('keep@example.com', null, 2);
        const changes: TopologyChange[] = [
          { op: 'node-add', id: 'R', parent: null },
          { op: 'node-add', id: 'C', parent: 'R' },
          { op: 'router-add', name: 'GARDEN' },
          { op: 'member-add', router: 'GARDEN', id: 'C' },
          { op: 'alias-set', name: 'LAMP', targets: ['C'] },
        ];
        for (const c of changes) {
          await s.saveChange(a.id, c);
          await s.saveChange(b.id, c);
        }
        await s.deleteAccount(a.id);
        expect(await s.accountById(a.id)).toBeNull();
        expect(await s.accountByKey(a.key)).toBeNull();
        expect(await s.accountByEmail('del@example.com')).toBeNull();
        expect(await s.checkPassword('del@example.com', 'pw')).toBe(false);
        expect(await s.countAccounts()).toBe(1);
        expect(await s.listAccounts()).toEqual([b]);
        expect(await s.loadTopology(a.id)).toEqual([]);
        expect(topologyPicture(rebuild(await s.loadTopology(b.id)))).toEqual(topologyPicture(model(changes)));
        // The e-mail can be used again: a new account, a new KEY, nothing inherited.
        const again = await s.createAccount('del@example.com', null, 1);
        expect(again.key).not.toBe(a.key);
        expect(await s.loadTopology(again.id)).toEqual([]);
      });
    });

    // ---------------------------------------------------------------- sign-ups

    describe('sign-up tokens', () => {
      it('a valid token creates the account with its e-mail, level and password, exactly once', async () => {
        const s = await fresh();
        const now = nowSeconds();
        await s.createSignup('new@example.com', 'pw-new', 1, 'tok-1', now + 3600);
        expect(await s.countAccounts()).toBe(0);
        expect(await s.accountByEmail('new@example.com')).toBeNull();
        const a = await s.activateSignup('tok-1', now);
        expect(a).not.toBeNull();
        expect(a!.email).toBe('new@example.com');
        expect(a!.level).toBe(1);
        expect(a!.key).toMatch(KEY_SHAPE);
        expect(await s.accountByKey(a!.key)).toEqual(a);
        expect(await s.checkPassword('new@example.com', 'pw-new')).toBe(true);
        expect(await s.activateSignup('tok-1', now)).toBeNull();
        expect(await s.countAccounts()).toBe(1);
      });

      it('an expired token creates nothing and stays unusable', async () => {
        const s = await fresh();
        const now = nowSeconds();
        await s.createSignup('late@example.com', 'pw', 2, 'tok-late', now + 60);
        expect(await s.activateSignup('tok-late', now + 61)).toBeNull();
        expect(await s.activateSignup('tok-late', now)).toBeNull();
        expect(await s.accountByEmail('late@example.com')).toBeNull();
        expect(await s.countAccounts()).toBe(0);
      });

      it('an unknown token is null; an invalid e-mail is refused with INVALID', async () => {
        const s = await fresh();
        expect(await s.activateSignup('no-such-token', nowSeconds())).toBeNull();
        expect(await storeErrorCode(s.createSignup('not-an-email', 'pw', 1, 'tok-x', nowSeconds() + 60))).toBe(
          'INVALID',
        );
        expect(await s.activateSignup('tok-x', nowSeconds())).toBeNull();
        expect(await s.countAccounts()).toBe(0);
      });

      it('two pending sign-ups are independent', async () => {
        const s = await fresh();
        const now = nowSeconds();
        await s.createSignup('one@example.com', 'p1', 1, 'tok-one', now + 600);
        await s.createSignup('two@example.com', 'p2', 3, 'tok-two', now + 600);
        const two = (await s.activateSignup('tok-two', now))!;
        expect(two.email).toBe('two@example.com');
        expect(two.level).toBe(3);
        const one = (await s.activateSignup('tok-one', now))!;
        expect(one.email).toBe('one@example.com');
        expect(await s.checkPassword('one@example.com', 'p2')).toBe(false);
        expect(await s.checkPassword('two@example.com', 'p2')).toBe(true);
      });
    });

    // ---------------------------------------------------------------- topology

    describe('topology persistence', () => {
      it('an account without topology loads as no changes', async () => {
        const s = await fresh();
        const a = await s.createAccount('empty@example.com', null, 4);
        expect(await s.loadTopology(a.id)).toEqual([]);
      });

      it('node-add: roots and children', async () => {
        const s = await fresh();
        const a = await s.createAccount('t1@example.com', null, 4);
        await saveAndCheck(s, a.id, [
          { op: 'node-add', id: '100', parent: null },
          { op: 'node-add', id: '200', parent: null },
          { op: 'node-add', id: '101', parent: '100' },
          { op: 'node-add', id: '102', parent: '101' },
        ]);
      });

      it('node-move: under another parent, to a root, and under a node added later (replay order still valid)', async () => {
        const s = await fresh();
        const a = await s.createAccount('t2@example.com', null, 4);
        const m = await saveAndCheck(s, a.id, [
          { op: 'node-add', id: 'A', parent: null },
          { op: 'node-add', id: 'A1', parent: 'A' },
          { op: 'node-add', id: 'B', parent: null },
          { op: 'node-add', id: 'C', parent: 'B' },
          { op: 'node-move', id: 'A', parent: 'C' },
          { op: 'node-move', id: 'C', parent: null },
          { op: 'node-move', id: 'B', parent: 'A1' },
        ]);
        expect(m.depthOf('B')).toBe(4);
      });

      it('node-delete: the whole subtree, nothing else', async () => {
        const s = await fresh();
        const a = await s.createAccount('t3@example.com', null, 4);
        await saveAndCheck(s, a.id, [
          { op: 'node-add', id: 'A', parent: null },
          { op: 'node-add', id: 'B', parent: 'A' },
          { op: 'node-add', id: 'C', parent: 'B' },
          { op: 'node-add', id: 'D', parent: 'A' },
          { op: 'node-add', id: 'E', parent: null },
          { op: 'node-delete', id: 'B' },
          { op: 'node-add', id: 'C', parent: 'E' },
          { op: 'node-delete', id: 'A' },
        ]);
      });

      it('node-rename: a root with children, a leaf, and reusing the old name', async () => {
        const s = await fresh();
        const a = await s.createAccount('t4@example.com', null, 4);
        await saveAndCheck(s, a.id, [
          { op: 'node-add', id: 'P', parent: null },
          { op: 'node-add', id: 'C1', parent: 'P' },
          { op: 'node-add', id: 'C2', parent: 'P' },
          { op: 'node-add', id: 'G', parent: 'C1' },
          { op: 'node-rename', from: 'P', to: 'Q' },
          { op: 'node-rename', from: 'G', to: 'H' },
          { op: 'node-rename', from: 'C1', to: 'K' },
          { op: 'node-add', id: 'P', parent: 'H' },
        ]);
      });

      it('routers: add, members (adding twice is harmless), remove member, delete with members', async () => {
        const s = await fresh();
        const a = await s.createAccount('t5@example.com', null, 4);
        await saveAndCheck(s, a.id, [
          { op: 'router-add', name: 'GARDEN' },
          { op: 'router-add', name: 'HALL' },
          { op: 'member-add', router: 'GARDEN', id: 'L1' },
          { op: 'member-add', router: 'GARDEN', id: 'L2' },
          { op: 'member-add', router: 'GARDEN', id: 'L2' },
          { op: 'member-add', router: 'HALL', id: 'L1' },
          { op: 'member-delete', router: 'GARDEN', id: 'L1' },
          { op: 'router-delete', name: 'HALL' },
          { op: 'router-add', name: 'HALL' },
        ]);
        // HALL came back empty: its old members are gone for good.
        expect(rebuild(await s.loadTopology(a.id)).routers.get('HALL')!.size).toBe(0);
      });

      it('aliases: set, re-point, several targets (de-duplicated), delete', async () => {
        const s = await fresh();
        const a = await s.createAccount('t6@example.com', null, 4);
        await saveAndCheck(s, a.id, [
          { op: 'alias-set', name: 'FRIEND', targets: ['A'] },
          { op: 'alias-set', name: 'ALL', targets: ['A', 'B', 'C'] },
          { op: 'alias-set', name: 'FRIEND', targets: ['B'] },
          { op: 'alias-set', name: 'ALL', targets: ['C', 'A', 'C'] },
          { op: 'alias-delete', name: 'FRIEND' },
        ]);
        const t = rebuild(await s.loadTopology(a.id));
        expect([...t.aliases.get('ALL')!]).toEqual(['C', 'A']);
      });

      it('accounts are separate namespaces: the same IDs and names in two accounts never mix', async () => {
        const s = await fresh();
        const a = await s.createAccount('ns-a@example.com', null, 4);
        const b = await s.createAccount('ns-b@example.com', null, 4);
        const ca: TopologyChange[] = [
          { op: 'node-add', id: 'X', parent: null },
          { op: 'node-add', id: 'Y', parent: 'X' },
          { op: 'router-add', name: 'R' },
          { op: 'member-add', router: 'R', id: 'Y' },
          { op: 'alias-set', name: 'AL', targets: ['Y'] },
        ];
        const cb: TopologyChange[] = [
          { op: 'node-add', id: 'Y', parent: null },
          { op: 'node-add', id: 'X', parent: 'Y' },
          { op: 'router-add', name: 'R' },
          { op: 'member-add', router: 'R', id: 'X' },
          { op: 'alias-set', name: 'AL', targets: ['X'] },
        ];
        for (let i = 0; i < ca.length; i++) {
          await s.saveChange(a.id, ca[i]!);
          await s.saveChange(b.id, cb[i]!);
        }
        await s.saveChange(a.id, { op: 'node-delete', id: 'X' });
        await s.saveChange(a.id, { op: 'router-delete', name: 'R' });
        await s.saveChange(a.id, { op: 'alias-delete', name: 'AL' });
        expect(await s.loadTopology(a.id)).toEqual([]);
        expect(topologyPicture(rebuild(await s.loadTopology(b.id)))).toEqual(topologyPicture(model(cb)));
      });

      it('property: any valid sequence of changes of every kind loads back as the same topology', async () => {
        const s = await fresh();
        let n = 0;
        const ids = fc.constantFrom('A', 'B', 'C', 'D', 'E', 'F');
        const names = fc.constantFrom('R1', 'R2');
        const change: fc.Arbitrary<TopologyChange> = fc.oneof(
          {
            weight: 5,
            arbitrary: fc.record({ op: fc.constant('node-add' as const), id: ids, parent: fc.option(ids) }),
          },
          {
            weight: 4,
            arbitrary: fc.record({ op: fc.constant('node-move' as const), id: ids, parent: fc.option(ids) }),
          },
          { weight: 1, arbitrary: fc.record({ op: fc.constant('node-delete' as const), id: ids }) },
          { weight: 2, arbitrary: fc.record({ op: fc.constant('node-rename' as const), from: ids, to: ids }) },
          { weight: 1, arbitrary: fc.record({ op: fc.constant('router-add' as const), name: names }) },
          { weight: 1, arbitrary: fc.record({ op: fc.constant('router-delete' as const), name: names }) },
          { weight: 2, arbitrary: fc.record({ op: fc.constant('member-add' as const), router: names, id: ids }) },
          { weight: 1, arbitrary: fc.record({ op: fc.constant('member-delete' as const), router: names, id: ids }) },
          {
            weight: 1,
            arbitrary: fc.record({
              op: fc.constant('alias-set' as const),
              name: names,
              targets: fc.array(ids, { minLength: 1, maxLength: 3 }),
            }),
          },
          { weight: 1, arbitrary: fc.record({ op: fc.constant('alias-delete' as const), name: names }) },
        );
        await fc.assert(
          fc.asyncProperty(fc.array(change, { maxLength: 40 }), async (changes) => {
            const acct = await s.createAccount(`prop${++n}@example.com`, null, 4);
            const m = new Topology();
            for (const c of changes) {
              // Only validated changes reach a store (the supervisor validates first).
              try {
                applyChange(m, c);
              } catch (err) {
                if (err instanceof TopologyFailure) continue;
                throw err;
              }
              await s.saveChange(acct.id, c);
            }
            expect(topologyPicture(rebuild(await s.loadTopology(acct.id)))).toEqual(topologyPicture(m));
          }),
          { numRuns: 60 },
        );
      });
    });

    // ---------------------------------------------------------------- atomicity

    describe('atomicity', () => {
      /** A populated account and a snapshot of everything the store holds for it. */
      async function populated(s: Store): Promise<{ id: number; snapshot: () => Promise<unknown> }> {
        const a = await s.createAccount('atom@example.com', null, 4);
        for (const c of [
          { op: 'node-add', id: 'A', parent: null },
          { op: 'node-add', id: 'B', parent: 'A' },
          { op: 'node-add', id: 'C', parent: 'B' },
          { op: 'router-add', name: 'R' },
          { op: 'member-add', router: 'R', id: 'B' },
          { op: 'alias-set', name: 'X', targets: ['C'] },
        ] satisfies TopologyChange[])
          await s.saveChange(a.id, c);
        return {
          id: a.id,
          snapshot: async () => ({
            raw: await s.loadTopology(a.id),
            picture: topologyPicture(rebuild(await s.loadTopology(a.id))),
            accounts: await s.listAccounts(),
          }),
        };
      }

      it('a conflicting node-add throws and leaves the previous state', async () => {
        const s = await fresh();
        const { id, snapshot } = await populated(s);
        const before = await snapshot();
        await expect(s.saveChange(id, { op: 'node-add', id: 'B', parent: null })).rejects.toThrow();
        expect(await snapshot()).toEqual(before);
      });

      it('a rename onto an existing node throws and leaves the previous state', async () => {
        const s = await fresh();
        const { id, snapshot } = await populated(s);
        const before = await snapshot();
        await expect(s.saveChange(id, { op: 'node-rename', from: 'B', to: 'A' })).rejects.toThrow();
        expect(await snapshot()).toEqual(before);
      });

      it('a duplicate router-add throws and leaves the previous state (members kept)', async () => {
        const s = await fresh();
        const { id, snapshot } = await populated(s);
        const before = await snapshot();
        await expect(s.saveChange(id, { op: 'router-add', name: 'R' })).rejects.toThrow();
        expect(await snapshot()).toEqual(before);
      });

      it('a member-add to a router that does not exist throws and leaves the previous state', async () => {
        const s = await fresh();
        const { id, snapshot } = await populated(s);
        const before = await snapshot();
        await expect(s.saveChange(id, { op: 'member-add', router: 'NOPE', id: 'A' })).rejects.toThrow();
        expect(await snapshot()).toEqual(before);
      });

      it('after a failed change the store keeps working', async () => {
        const s = await fresh();
        const { id } = await populated(s);
        await expect(s.saveChange(id, { op: 'node-add', id: 'A', parent: null })).rejects.toThrow();
        await s.saveChange(id, { op: 'node-add', id: 'D', parent: 'C' });
        const t = rebuild(await s.loadTopology(id));
        expect(t.depthOf('D')).toBe(4);
        expect((await s.createAccount('after@example.com', null, 1)).email).toBe('after@example.com');
      });

      it('saveChanges is all or none: a batch whose last change is refused leaves nothing of the others', async () => {
        const s = await fresh();
        const { id, snapshot } = await populated(s);
        const before = await snapshot();
        await expect(
          s.saveChanges(id, [
            { op: 'node-add', id: 'D', parent: 'C' },
            { op: 'node-rename', from: 'A', to: 'Z' },
            { op: 'node-delete', id: 'B' },
            { op: 'router-delete', name: 'R' },
            { op: 'alias-set', name: 'X', targets: ['D'] },
            { op: 'router-add', name: 'R2' },
            { op: 'router-add', name: 'R2' },
          ]),
        ).rejects.toThrow();
        expect(await snapshot()).toEqual(before);
        const batch: TopologyChange[] = [
          { op: 'node-add', id: 'D', parent: 'C' },
          { op: 'node-rename', from: 'A', to: 'Z' },
          { op: 'router-add', name: 'R2' },
          { op: 'member-add', router: 'R2', id: 'D' },
          { op: 'alias-delete', name: 'X' },
        ];
        await s.saveChanges(id, batch);
        const m = rebuild((before as { raw: TopologyChange[] }).raw);
        for (const c of batch) applyChange(m, c);
        expect(topologyPicture(rebuild(await s.loadTopology(id)))).toEqual(topologyPicture(m));
        await s.saveChanges(id, []);
        expect(topologyPicture(rebuild(await s.loadTopology(id)))).toEqual(topologyPicture(m));
      });

      it('additions for an account that does not exist are refused and leave nothing', async () => {
        const s = await fresh();
        for (const c of [
          { op: 'node-add', id: 'A', parent: null },
          { op: 'router-add', name: 'R' },
          { op: 'member-add', router: 'R', id: 'A' },
          { op: 'alias-set', name: 'X', targets: ['A'] },
        ] satisfies TopologyChange[]) {
          await expect(s.saveChange(777777, c), c.op).rejects.toThrow();
        }
        expect(await s.loadTopology(777777)).toEqual([]);
      });
    });

    // ---------------------------------------------------------------- held messages

    describe('held messages', () => {
      const T0 = 1_700_000_000_000;
      const hold = (accountId: number, id: string, data: string, expiresAt = T0 + 3_600_000, limit = 100) => ({
        accountId,
        id,
        data,
        expiresAt,
        limit,
      });

      it('hold and takeHeld: oldest first, taken once, per device and per account', async () => {
        const s = await fresh();
        const a = await s.createAccount('held-a@example.com', null, 4);
        const b = await s.createAccount('held-b@example.com', null, 4);
        expect(await s.heldCount()).toBe(0);
        expect(await s.heldKeys()).toEqual([]);
        const odd = ['with:colons:1:2', '', 'ünïcode ✓ 😀', 'tab\tand\\backslash', '{"json":[1,2]}'];
        await s.hold(
          [
            hold(a.id, 'D1', 'm1'),
            hold(a.id, 'D2', 'x1'),
            hold(a.id, 'D1', 'm2'),
            hold(b.id, 'D1', 'other'),
            ...odd.map((d) => hold(a.id, 'D:3', d)),
          ],
          T0,
        );
        await s.hold([hold(a.id, 'D1', 'm3')], T0 + 1);
        expect(await s.heldCount()).toBe(5 + odd.length);
        expect(keys(await s.heldKeys())).toEqual(
          keys([
            { accountId: a.id, id: 'D1' },
            { accountId: a.id, id: 'D2' },
            { accountId: a.id, id: 'D:3' },
            { accountId: b.id, id: 'D1' },
          ]),
        );
        expect(await s.takeHeld(a.id, 'D1', T0 + 2)).toEqual(['m1', 'm2', 'm3']);
        expect(await s.takeHeld(a.id, 'D1', T0 + 2)).toEqual([]);
        expect(await s.takeHeld(a.id, 'D:3', T0 + 2)).toEqual(odd);
        expect(await s.takeHeld(a.id, 'NOBODY', T0 + 2)).toEqual([]);
        expect(await s.heldCount()).toBe(2);
        expect(keys(await s.heldKeys())).toEqual(
          keys([
            { accountId: a.id, id: 'D2' },
            { accountId: b.id, id: 'D1' },
          ]),
        );
        expect(await s.takeHeld(b.id, 'D1', T0 + 2)).toEqual(['other']);
        expect(await s.takeHeld(a.id, 'D2', T0 + 2)).toEqual(['x1']);
        expect(await s.heldCount()).toBe(0);
        expect(await s.heldKeys()).toEqual([]);
        // Holding nothing changes nothing.
        await s.hold([], T0);
        expect(await s.heldCount()).toBe(0);
      });

      it('expired messages are never taken, and purgeHeld deletes exactly those (any order of expiry)', async () => {
        const s = await fresh();
        const a = await s.createAccount('exp@example.com', null, 4);
        await s.hold([hold(a.id, 'D', 'late', T0 + 100), hold(a.id, 'D', 'soon', T0 + 10)], T0);
        await s.hold([hold(a.id, 'D', 'later', T0 + 200), hold(a.id, 'E', 'e', T0 + 10)], T0 + 1);
        // expiresAt is the first instant a message is gone.
        expect(await s.purgeHeld(T0 + 9)).toBe(0);
        expect(await s.purgeHeld(T0 + 10)).toBe(2);
        expect(await s.heldCount()).toBe(2);
        expect(keys(await s.heldKeys())).toEqual(keys([{ accountId: a.id, id: 'D' }]));
        expect(await s.purgeHeld(T0 + 50)).toBe(0);
        expect((await s.heldSummary(a.id)).map((h) => [h.id, h.count])).toEqual([['D', 2]]);
        // takeHeld skips the expired ones but deletes them all.
        expect(await s.takeHeld(a.id, 'D', T0 + 100)).toEqual(['later']);
        expect(await s.heldCount()).toBe(0);
        expect(await s.purgeHeld(T0 + 1_000_000)).toBe(0);
        await s.hold([hold(a.id, 'F', 'f1', T0 + 10), hold(a.id, 'F', 'f2', T0 + 20)], T0);
        expect(await s.takeHeld(a.id, 'F', T0 + 30)).toEqual([]);
        expect(await s.heldCount()).toBe(0);
        expect(await s.heldKeys()).toEqual([]);
      });

      it('HOLDBUFFER keeps the newest, drops the oldest and counts the drops', async () => {
        const s = await fresh();
        const a = await s.createAccount('buf@example.com', null, 4);
        const b = await s.createAccount('buf2@example.com', null, 4);
        await s.hold(
          ['m1', 'm2', 'm3', 'm4', 'm5'].map((d) => hold(a.id, 'D', d, undefined, 3)),
          T0,
        );
        expect(await s.heldCount()).toBe(3);
        expect(await s.heldDropped()).toBe(2);
        await s.hold([hold(a.id, 'D', 'm6', undefined, 3)], T0 + 1);
        expect(await s.heldDropped()).toBe(3);
        expect(await s.takeHeld(a.id, 'D', T0 + 2)).toEqual(['m4', 'm5', 'm6']);
        // Drops stay counted after the messages are taken.
        expect(await s.heldSummary(a.id)).toEqual([{ id: 'D', count: 0, oldest: null, dropped: 3 }]);
        // Within one batch the last request's limit applies; other devices are untouched.
        await s.hold(
          [
            hold(a.id, 'E', 'e1', undefined, 5),
            hold(a.id, 'E', 'e2', undefined, 5),
            hold(b.id, 'E', 'b1', undefined, 1),
            hold(a.id, 'E', 'e3', undefined, 1),
          ],
          T0 + 3,
        );
        expect(await s.takeHeld(a.id, 'E', T0 + 4)).toEqual(['e3']);
        expect(await s.takeHeld(b.id, 'E', T0 + 4)).toEqual(['b1']);
        expect(await s.heldDropped()).toBe(5);
        // A limit of 0 holds nothing and counts every message dropped.
        await s.hold([hold(b.id, 'Z', 'z1', undefined, 0), hold(b.id, 'Z', 'z2', undefined, 0)], T0 + 5);
        expect(await s.takeHeld(b.id, 'Z', T0 + 6)).toEqual([]);
        expect(await s.heldDropped()).toBe(7);
        expect(await s.heldCount()).toBe(0);
        expect(await s.heldKeys()).toEqual([]);
        expect(await s.heldSummary(b.id)).toEqual([{ id: 'Z', count: 0, oldest: null, dropped: 2 }]);
      });

      it('heldSummary: per device count, oldest and drops, sorted by ID; nothing of other accounts', async () => {
        const s = await fresh();
        const a = await s.createAccount('sum@example.com', null, 4);
        const b = await s.createAccount('sum2@example.com', null, 4);
        expect(await s.heldSummary(a.id)).toEqual([]);
        await s.hold([hold(a.id, 'D2', 'x')], T0 + 1000);
        await s.hold([hold(a.id, 'D2', 'y'), hold(a.id, 'D1', 'z'), hold(b.id, 'D0', 'w')], T0 + 2000);
        await s.hold([hold(a.id, 'D3', 'q1', undefined, 0)], T0 + 3000);
        expect(await s.heldSummary(a.id)).toEqual([
          { id: 'D1', count: 1, oldest: T0 + 2000, dropped: 0 },
          { id: 'D2', count: 2, oldest: T0 + 1000, dropped: 0 },
          { id: 'D3', count: 0, oldest: null, dropped: 1 },
        ]);
        expect(await s.heldSummary(b.id)).toEqual([{ id: 'D0', count: 1, oldest: T0 + 2000, dropped: 0 }]);
        expect(await s.heldSummary(987654)).toEqual([]);
      });

      it('a batch with a message for an account that does not exist is refused whole', async () => {
        const s = await fresh();
        const a = await s.createAccount('fk@example.com', null, 4);
        await expect(s.hold([hold(a.id, 'D', 'kept?'), hold(987654, 'D', 'orphan')], T0)).rejects.toThrow();
        expect(await s.heldCount()).toBe(0);
        expect(await s.takeHeld(a.id, 'D', T0)).toEqual([]);
        expect(await s.heldKeys()).toEqual([]);
      });
    });

    // ---------------------------------------------------------------- known devices

    describe('known devices', () => {
      it('markSeen records last seen per device; knownDevices lists them by ID; unknown accounts are ignored', async () => {
        const s = await fresh();
        const a = await s.createAccount('seen@example.com', null, 4);
        const b = await s.createAccount('seen2@example.com', null, 4);
        expect(await s.lastSeen(a.id, 'D1')).toBeNull();
        expect(await s.knownDevices(a.id)).toEqual([]);
        await s.markSeen(
          [
            { accountId: a.id, id: 'D2' },
            { accountId: a.id, id: 'D1' },
            { accountId: b.id, id: 'D1' },
          ],
          1000,
        );
        await s.markSeen([{ accountId: a.id, id: 'D1' }], 2000);
        await s.markSeen([], 9999);
        expect(await s.lastSeen(a.id, 'D1')).toBe(2000);
        expect(await s.lastSeen(a.id, 'D2')).toBe(1000);
        expect(await s.lastSeen(b.id, 'D1')).toBe(1000);
        expect(await s.lastSeen(b.id, 'D2')).toBeNull();
        expect(await s.knownDevices(a.id)).toEqual([
          { id: 'D1', lastSeen: 2000 },
          { id: 'D2', lastSeen: 1000 },
        ]);
        await s.markSeen(
          [
            { accountId: 987654, id: 'X' },
            { accountId: a.id, id: 'D:3' },
          ],
          3000,
        );
        expect(await s.lastSeen(987654, 'X')).toBeNull();
        expect(await s.knownDevices(987654)).toEqual([]);
        expect(await s.lastSeen(a.id, 'D:3')).toBe(3000);
      });

      it('a device that only had messages dropped is not seen; seeing it keeps the drop count', async () => {
        const s = await fresh();
        const a = await s.createAccount('drop-seen@example.com', null, 4);
        await s.hold([{ accountId: a.id, id: 'D', data: 'x', expiresAt: 5000, limit: 0 }], 1000);
        expect(await s.lastSeen(a.id, 'D')).toBeNull();
        expect(await s.knownDevices(a.id)).toEqual([]);
        await s.markSeen([{ accountId: a.id, id: 'D' }], 2000);
        expect(await s.lastSeen(a.id, 'D')).toBe(2000);
        expect(await s.knownDevices(a.id)).toEqual([{ id: 'D', lastSeen: 2000 }]);
        expect(await s.heldSummary(a.id)).toEqual([{ id: 'D', count: 0, oldest: null, dropped: 1 }]);
        expect(await s.heldDropped()).toBe(1);
      });
    });

    // ---------------------------------------------------------------- outbox

    describe('outbox', () => {
      const msg = (accountId: number | null, n: number, kind: 'mail' | 'sms' = 'mail') => ({
        accountId,
        kind,
        recipient: kind === 'mail' ? `to${n}@example.com` : `+4930${n}`,
        subject: `subject ${n}`,
        body: `body ${n}: ünïcode\nline two`,
      });

      it('enqueue returns fresh ids and queues the message with every field', async () => {
        const s = await fresh();
        const a = await s.createAccount('out@example.com', null, 4);
        const id1 = await s.enqueue(msg(a.id, 1), 5000);
        const id2 = await s.enqueue(msg(null, 2, 'sms'), 5001);
        expect(Number.isInteger(id1)).toBe(true);
        expect(id2).toBeGreaterThan(id1);
        expect(await s.listOutbox(a.id, 10)).toEqual([
          {
            id: id1,
            ...msg(a.id, 1),
            state: 'queued',
            attempts: 0,
            nextAt: 5000,
            lastError: null,
            createdAt: 5000,
            updatedAt: 5000,
          },
        ]);
        expect(await s.listOutbox(null, 10)).toEqual([
          {
            id: id2,
            ...msg(null, 2, 'sms'),
            state: 'queued',
            attempts: 0,
            nextAt: 5001,
            lastError: null,
            createdAt: 5001,
            updatedAt: 5001,
          },
        ]);
        expect(await s.outboxCounts()).toEqual({ queued: 2, sent: 0, failed: 0 });
      });

      it('dueOutbox: queued and due, by nextAt then id, up to the limit; updateOutbox moves messages', async () => {
        const s = await fresh();
        const a = await s.createAccount('due@example.com', null, 4);
        const ids: number[] = [];
        for (let i = 0; i < 12; i++) ids.push(await s.enqueue(msg(a.id, i), 1000));
        const due = async (now: number, limit = 100): Promise<number[]> =>
          (await s.dueOutbox(now, limit)).map((m) => m.id);
        expect(await due(999)).toEqual([]);
        expect(await due(1000)).toEqual(ids);
        expect(await due(1000, 3)).toEqual(ids.slice(0, 3));
        expect(await due(1000, 0)).toEqual([]);
        // Leased into the future, retried earlier, sent, failed.
        const before = Date.now();
        await s.updateOutbox(ids[0]!, 'queued', 0, 5000, null);
        await s.updateOutbox(ids[11]!, 'queued', 2, 500, 'timeout');
        await s.updateOutbox(ids[1]!, 'sent', 1, 1500, null);
        await s.updateOutbox(ids[2]!, 'failed', 3, 1600, 'mailbox unavailable');
        await s.updateOutbox(987654, 'sent', 1, 1, null);
        const after = Date.now();
        expect(await due(1000)).toEqual([ids[11]!, ...ids.slice(3, 11)]);
        expect(await due(5000)).toEqual([ids[11]!, ...ids.slice(3, 11), ids[0]!]);
        const [retried] = await s.dueOutbox(1000, 1);
        expect(retried).toMatchObject({ id: ids[11], state: 'queued', attempts: 2, nextAt: 500, lastError: 'timeout' });
        expect(retried!.createdAt).toBe(1000);
        expect(retried!.updatedAt).toBeGreaterThanOrEqual(before);
        expect(retried!.updatedAt).toBeLessThanOrEqual(after);
        const list = await s.listOutbox(a.id, 100);
        expect(list.find((m) => m.id === ids[1])).toMatchObject({ state: 'sent', attempts: 1, lastError: null });
        expect(list.find((m) => m.id === ids[2])).toMatchObject({
          state: 'failed',
          attempts: 3,
          lastError: 'mailbox unavailable',
        });
        expect(await s.outboxCounts()).toEqual({ queued: 10, sent: 1, failed: 1 });
        // A failed message queued again is due again, and its error can be cleared.
        await s.updateOutbox(ids[2]!, 'queued', 3, 400, null);
        expect((await s.dueOutbox(1000, 1))[0]).toMatchObject({ id: ids[2], lastError: null });
        expect(await s.outboxCounts()).toEqual({ queued: 11, sent: 1, failed: 0 });
      });

      it('listOutbox is newest first per account (null: system messages), with a limit', async () => {
        const s = await fresh();
        const a = await s.createAccount('list@example.com', null, 4);
        const b = await s.createAccount('list2@example.com', null, 4);
        const mine: number[] = [];
        const sys: number[] = [];
        for (let i = 0; i < 12; i++) {
          mine.push(await s.enqueue(msg(a.id, i), 1000 + i));
          await s.enqueue(msg(b.id, i), 1000 + i);
          if (i % 4 === 0) sys.push(await s.enqueue(msg(null, i), 1000 + i));
        }
        expect((await s.listOutbox(a.id, 100)).map((m) => m.id)).toEqual([...mine].reverse());
        expect((await s.listOutbox(a.id, 5)).map((m) => m.id)).toEqual([...mine].reverse().slice(0, 5));
        expect(await s.listOutbox(a.id, 0)).toEqual([]);
        expect((await s.listOutbox(null, 100)).map((m) => m.id)).toEqual([...sys].reverse());
        expect(await s.listOutbox(987654, 10)).toEqual([]);
        expect((await s.listOutbox(b.id, 100)).every((m) => m.accountId === b.id)).toBe(true);
      });

      it('countOutboxSince counts an account’s messages created at or after a time', async () => {
        const s = await fresh();
        const a = await s.createAccount('rate@example.com', null, 4);
        const b = await s.createAccount('rate2@example.com', null, 4);
        for (const t of [1000, 2000, 2000, 3000]) await s.enqueue(msg(a.id, t), t);
        await s.enqueue(msg(b.id, 1), 5000);
        await s.enqueue(msg(null, 1), 5000);
        expect(await s.countOutboxSince(a.id, 0)).toBe(4);
        expect(await s.countOutboxSince(a.id, 2000)).toBe(3);
        expect(await s.countOutboxSince(a.id, 2001)).toBe(1);
        expect(await s.countOutboxSince(a.id, 3001)).toBe(0);
        expect(await s.countOutboxSince(b.id, 0)).toBe(1);
        // Sent or failed messages still count toward the hour.
        const [first] = await s.dueOutbox(1000, 1);
        await s.updateOutbox(first!.id, 'failed', 1, 1000, 'x');
        expect(await s.countOutboxSince(a.id, 0)).toBe(4);
      });
    });

    // ---------------------------------------------------------------- deleting an account

    describe('deleting an account', () => {
      it('removes its held messages, drop counts, known devices and outbox, and nothing of others', async () => {
        const s = await fresh();
        const a = await s.createAccount('gone@example.com', null, 4);
        const b = await s.createAccount('stays@example.com', null, 4);
        for (const acct of [a, b]) {
          await s.hold(
            [
              { accountId: acct.id, id: 'D', data: 'd1', expiresAt: 9000, limit: 1 },
              { accountId: acct.id, id: 'D', data: 'd2', expiresAt: 9000, limit: 1 },
              { accountId: acct.id, id: 'E', data: 'e1', expiresAt: 9000, limit: 5 },
            ],
            1000,
          );
          await s.markSeen([{ accountId: acct.id, id: 'D' }], 1500);
          const m = await s.enqueue(
            { accountId: acct.id, kind: 'mail', recipient: 'x@example.com', subject: 's', body: 'b' },
            1000,
          );
          await s.updateOutbox(m, 'sent', 1, 1000, null);
          await s.enqueue({ accountId: acct.id, kind: 'sms', recipient: '+491', subject: '', body: 'b' }, 1000);
        }
        await s.enqueue({ accountId: null, kind: 'mail', recipient: 'sys@example.com', subject: 's', body: 'b' }, 1000);
        expect(await s.heldCount()).toBe(4);
        expect(await s.heldDropped()).toBe(2);
        expect(await s.outboxCounts()).toEqual({ queued: 3, sent: 2, failed: 0 });

        await s.deleteAccount(a.id);
        expect(await s.heldCount()).toBe(2);
        expect(await s.heldDropped()).toBe(1);
        expect(keys(await s.heldKeys())).toEqual(
          keys([
            { accountId: b.id, id: 'D' },
            { accountId: b.id, id: 'E' },
          ]),
        );
        expect(await s.heldSummary(a.id)).toEqual([]);
        expect(await s.takeHeld(a.id, 'E', 2000)).toEqual([]);
        expect(await s.knownDevices(a.id)).toEqual([]);
        expect(await s.lastSeen(a.id, 'D')).toBeNull();
        expect(await s.listOutbox(a.id, 10)).toEqual([]);
        expect(await s.countOutboxSince(a.id, 0)).toBe(0);
        expect(await s.outboxCounts()).toEqual({ queued: 2, sent: 1, failed: 0 });
        expect((await s.dueOutbox(2000, 10)).every((m) => m.accountId !== a.id)).toBe(true);
        expect(await s.dueOutbox(2000, 10)).toHaveLength(2);
        // The other account keeps everything.
        expect(await s.heldSummary(b.id)).toEqual([
          { id: 'D', count: 1, oldest: 1000, dropped: 1 },
          { id: 'E', count: 1, oldest: 1000, dropped: 0 },
        ]);
        expect(await s.lastSeen(b.id, 'D')).toBe(1500);
        expect(await s.listOutbox(b.id, 10)).toHaveLength(2);
        expect(await s.takeHeld(b.id, 'D', 2000)).toEqual(['d2']);
      });
    });

    // ---------------------------------------------------------------- call order

    describe('call order', () => {
      it('calls made without awaiting each are carried out in the order they were made', async () => {
        const s = await fresh();
        const a = await s.createAccount('order@example.com', 'pw-1', 1);
        const now = 1_700_000_000_000;
        const results = await Promise.allSettled([
          s.saveChange(a.id, { op: 'node-add', id: 'A', parent: null }),
          s.loadTopology(a.id),
          s.saveChange(a.id, { op: 'node-add', id: 'A', parent: null }),
          s.saveChange(a.id, { op: 'node-add', id: 'B', parent: 'A' }),
          s.loadTopology(a.id),
          s.hold([{ accountId: a.id, id: 'D', data: 'first', expiresAt: now + 60_000, limit: 10 }], now),
          s.takeHeld(a.id, 'D', now),
          s.takeHeld(a.id, 'D', now),
          s.hold([{ accountId: a.id, id: 'D', data: 'second', expiresAt: now + 60_000, limit: 10 }], now),
          s.heldCount(),
          s.setLevel(a.id, 3),
          s.accountById(a.id),
          s.checkPassword('order@example.com', 'pw-1'),
          s.setPassword(a.id, 'pw-2'),
          s.checkPassword('order@example.com', 'pw-1'),
          s.markSeen([{ accountId: a.id, id: 'D' }], now),
          s.lastSeen(a.id, 'D'),
          s.deleteAccount(a.id),
          s.accountById(a.id),
          s.heldCount(),
        ]);
        const value = (i: number): unknown => {
          const r = results[i]!;
          if (r.status === 'rejected') throw new Error(`call ${i} failed: ${String(r.reason)}`);
          return r.value;
        };
        expect(value(1)).toEqual([{ op: 'node-add', id: 'A', parent: null }]);
        expect(results[2]!.status).toBe('rejected');
        expect(value(4)).toEqual([
          { op: 'node-add', id: 'A', parent: null },
          { op: 'node-add', id: 'B', parent: 'A' },
        ]);
        expect(value(6)).toEqual(['first']);
        expect(value(7)).toEqual([]);
        expect(value(9)).toBe(1);
        expect(value(11)).toEqual({ ...a, level: 3 });
        expect(value(12)).toBe(true);
        expect(value(14)).toBe(false);
        expect(value(16)).toBe(now);
        expect(value(18)).toBeNull();
        expect(value(19)).toBe(0);
      });
    });
  });
}
