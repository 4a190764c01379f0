// The contract every Store implementation must pass (src/store/store.ts): accounts, KEYs, levels, passwords,
// sign-up tokens, topology persistence for every change kind, and atomicity. Run it with
// `storeContract(name, makeStore)` from an implementation's test file (SQLite now, Redis later).

import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { applyChange, type TopologyChange } from '../src/routing/changes.ts';
import { Topology, TopologyFailure } from '../src/routing/topology.ts';
import { type Store, StoreError } from '../src/store/store.ts';

const KEY_SHAPE = /^[0-9A-F]{32}$/;
const byStr = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);
const sorted = (it: Iterable<string>): string[] => [...it].sort(byStr);
const nowSeconds = (): number => Math.floor(Date.now() / 1000);

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

function storeErrorCode(fn: () => unknown): string | null {
  try {
    fn();
    return null;
  } catch (err) {
    if (err instanceof StoreError) return err.code;
    throw err;
  }
}

export function storeContract(name: string, makeStore: () => Store): void {
  describe(`Store contract: ${name}`, () => {
    const open: Store[] = [];
    const fresh = (): Store => {
      const s = makeStore();
      open.push(s);
      return s;
    };
    afterEach(() => {
      for (const s of open.splice(0)) s.close();
    });

    /** Saves each change and checks the saved topology rebuilds exactly the in-memory model after every step. */
    function saveAndCheck(store: Store, accountId: number, changes: readonly TopologyChange[]): Topology {
      const m = new Topology();
      for (const c of changes) {
        applyChange(m, c);
        store.saveChange(accountId, c);
        expect(topologyPicture(rebuild(store.loadTopology(accountId))), JSON.stringify(c)).toEqual(topologyPicture(m));
      }
      return m;
    }

    // ---------------------------------------------------------------- accounts

    describe('accounts', () => {
      it('createAccount returns the record with a fresh 32-hex upper-case KEY, and every lookup finds it', () => {
        const s = fresh();
        const before = nowSeconds();
        const a = s.createAccount('alice@example.com', null, 3);
        const after = nowSeconds();
        expect(a.email).toBe('alice@example.com');
        expect(a.level).toBe(3);
        expect(a.key).toMatch(KEY_SHAPE);
        expect(Number.isInteger(a.id)).toBe(true);
        expect(a.createdAt).toBeGreaterThanOrEqual(before);
        expect(a.createdAt).toBeLessThanOrEqual(after);
        expect(s.accountByKey(a.key)).toEqual(a);
        expect(s.accountByKey(a.key.toLowerCase())).toEqual(a);
        expect(s.accountByEmail('alice@example.com')).toEqual(a);
        expect(s.accountByEmail('ALICE@Example.COM')).toEqual(a);
        expect(s.accountById(a.id)).toEqual(a);
        expect(s.countAccounts()).toBe(1);
        expect(s.listAccounts()).toEqual([a]);
      });

      it('unknown lookups are null', () => {
        const s = fresh();
        s.createAccount('a@example.com', null, 1);
        expect(s.accountByKey('0'.repeat(32))).toBeNull();
        expect(s.accountByEmail('b@example.com')).toBeNull();
        expect(s.accountById(987654)).toBeNull();
      });

      it('KEYs and ids are distinct; listAccounts is in creation order', () => {
        const s = fresh();
        const made = Array.from({ length: 40 }, (_, i) => s.createAccount(`u${i}@example.com`, null, (i % 4) + 1));
        expect(new Set(made.map((a) => a.key)).size).toBe(40);
        expect(new Set(made.map((a) => a.id)).size).toBe(40);
        expect(s.countAccounts()).toBe(40);
        expect(s.listAccounts()).toEqual(made);
      });

      it('a taken e-mail (in any case) is refused with EXISTS and nothing changes', () => {
        const s = fresh();
        const a = s.createAccount('dup@example.com', 'pw1', 2);
        expect(storeErrorCode(() => s.createAccount('dup@example.com', 'pw2', 4))).toBe('EXISTS');
        expect(storeErrorCode(() => s.createAccount('DUP@EXAMPLE.COM', null, 4))).toBe('EXISTS');
        expect(s.countAccounts()).toBe(1);
        expect(s.accountByEmail('dup@example.com')).toEqual(a);
        expect(s.checkPassword('dup@example.com', 'pw1')).toBe(true);
        expect(s.checkPassword('dup@example.com', 'pw2')).toBe(false);
      });

      it('an invalid e-mail is refused with INVALID and nothing is created', () => {
        const s = fresh();
        for (const bad of ['', 'nobody', 'a@b', 'a b@c.de', 'a:b@c.de', '@c.de', 'a@', `${'x'.repeat(250)}@e.com`]) {
          expect(
            storeErrorCode(() => s.createAccount(bad, null, 1)),
            JSON.stringify(bad),
          ).toBe('INVALID');
        }
        expect(s.countAccounts()).toBe(0);
      });

      it('resetKey: a fresh KEY, the old one finds nothing, everything else kept', () => {
        const s = fresh();
        const a = s.createAccount('k@example.com', null, 2);
        const other = s.createAccount('other@example.com', null, 2);
        const b = s.resetKey(a.id);
        expect(b.key).toMatch(KEY_SHAPE);
        expect(b.key).not.toBe(a.key);
        expect(b).toEqual({ ...a, key: b.key });
        expect(s.accountByKey(a.key)).toBeNull();
        expect(s.accountByKey(b.key)).toEqual(b);
        expect(s.accountByEmail('k@example.com')).toEqual(b);
        expect(s.accountByKey(other.key)).toEqual(other);
        const c = s.resetKey(a.id);
        expect(c.key).not.toBe(b.key);
        expect(s.accountByKey(b.key)).toBeNull();
      });

      it('resetKey and setLevel of an unknown account throw', () => {
        const s = fresh();
        expect(() => s.resetKey(424242)).toThrow(StoreError);
        expect(() => s.setLevel(424242, 2)).toThrow(StoreError);
        expect(s.countAccounts()).toBe(0);
      });

      it('setLevel returns and persists the new level', () => {
        const s = fresh();
        const a = s.createAccount('lvl@example.com', null, 1);
        expect(s.setLevel(a.id, 4)).toEqual({ ...a, level: 4 });
        expect(s.accountById(a.id)).toEqual({ ...a, level: 4 });
        expect(s.accountByKey(a.key)!.level).toBe(4);
      });

      it('passwords: checked by e-mail in any case; setPassword replaces; no password never matches', () => {
        const s = fresh();
        s.createAccount('pw@example.com', 's3cret:with:colons', 1);
        const nopw = s.createAccount('nopw@example.com', null, 1);
        expect(s.checkPassword('pw@example.com', 's3cret:with:colons')).toBe(true);
        expect(s.checkPassword('PW@example.com', 's3cret:with:colons')).toBe(true);
        expect(s.checkPassword('pw@example.com', 's3cret:with:colon')).toBe(false);
        expect(s.checkPassword('pw@example.com', '')).toBe(false);
        expect(s.checkPassword('nobody@example.com', 's3cret:with:colons')).toBe(false);
        expect(s.checkPassword('nopw@example.com', '')).toBe(false);
        expect(s.checkPassword('nopw@example.com', 'anything')).toBe(false);
        s.setPassword(nopw.id, 'now-set');
        expect(s.checkPassword('nopw@example.com', 'now-set')).toBe(true);
        const pw = s.accountByEmail('pw@example.com')!;
        s.setPassword(pw.id, 'ünïcode pässword');
        expect(s.checkPassword('pw@example.com', 's3cret:with:colons')).toBe(false);
        expect(s.checkPassword('pw@example.com', 'ünïcode pässword')).toBe(true);
      });

      it('deleteAccount removes the account and its topology, and nothing of any other account', () => {
        const s = fresh();
        const a = s.createAccount('del@example.com', 'pw', 2);
        const b = s.createAccount('keep@example.com', null, 2);
        const changes: TopologyChange[] = [
          { op: 'node-add', id: 'R', parent: null },
          { op: 'node-add', id: 'C', parent: 'R' },
          { op: 'router-add', name: 'GARDEN' },
          { op: 'member-add', router: 'GARDEN', id: 'C' },
          { op: 'alias-set', name: 'LAMP', targets: ['C'] },
        ];
        for (const c of changes) {
          s.saveChange(a.id, c);
          s.saveChange(b.id, c);
        }
        s.deleteAccount(a.id);
        expect(s.accountById(a.id)).toBeNull();
        expect(s.accountByKey(a.key)).toBeNull();
        expect(s.accountByEmail('del@example.com')).toBeNull();
        expect(s.checkPassword('del@example.com', 'pw')).toBe(false);
        expect(s.countAccounts()).toBe(1);
        expect(s.listAccounts()).toEqual([b]);
        expect(s.loadTopology(a.id)).toEqual([]);
        expect(topologyPicture(rebuild(s.loadTopology(b.id)))).toEqual(topologyPicture(model(changes)));
        // The e-mail can be used again: a new account, a new KEY, nothing inherited.
        const again = s.createAccount('del@example.com', null, 1);
        expect(again.key).not.toBe(a.key);
        expect(s.loadTopology(again.id)).toEqual([]);
      });
    });

    // ---------------------------------------------------------------- sign-ups

    describe('sign-up tokens', () => {
      it('a valid token creates the account with its e-mail, level and password, exactly once', () => {
        const s = fresh();
        const now = nowSeconds();
        s.createSignup('new@example.com', 'pw-new', 1, 'tok-1', now + 3600);
        expect(s.countAccounts()).toBe(0);
        expect(s.accountByEmail('new@example.com')).toBeNull();
        const a = s.activateSignup('tok-1', now);
        expect(a).not.toBeNull();
        expect(a!.email).toBe('new@example.com');
        expect(a!.level).toBe(1);
        expect(a!.key).toMatch(KEY_SHAPE);
        expect(s.accountByKey(a!.key)).toEqual(a);
        expect(s.checkPassword('new@example.com', 'pw-new')).toBe(true);
        expect(s.activateSignup('tok-1', now)).toBeNull();
        expect(s.countAccounts()).toBe(1);
      });

      it('an expired token creates nothing and stays unusable', () => {
        const s = fresh();
        const now = nowSeconds();
        s.createSignup('late@example.com', 'pw', 2, 'tok-late', now + 60);
        expect(s.activateSignup('tok-late', now + 61)).toBeNull();
        expect(s.activateSignup('tok-late', now)).toBeNull();
        expect(s.accountByEmail('late@example.com')).toBeNull();
        expect(s.countAccounts()).toBe(0);
      });

      it('an unknown token is null; an invalid e-mail is refused with INVALID', () => {
        const s = fresh();
        expect(s.activateSignup('no-such-token', nowSeconds())).toBeNull();
        expect(storeErrorCode(() => s.createSignup('not-an-email', 'pw', 1, 'tok-x', nowSeconds() + 60))).toBe(
          'INVALID',
        );
        expect(s.activateSignup('tok-x', nowSeconds())).toBeNull();
        expect(s.countAccounts()).toBe(0);
      });

      it('two pending sign-ups are independent', () => {
        const s = fresh();
        const now = nowSeconds();
        s.createSignup('one@example.com', 'p1', 1, 'tok-one', now + 600);
        s.createSignup('two@example.com', 'p2', 3, 'tok-two', now + 600);
        const two = s.activateSignup('tok-two', now)!;
        expect(two.email).toBe('two@example.com');
        expect(two.level).toBe(3);
        const one = s.activateSignup('tok-one', now)!;
        expect(one.email).toBe('one@example.com');
        expect(s.checkPassword('one@example.com', 'p2')).toBe(false);
        expect(s.checkPassword('two@example.com', 'p2')).toBe(true);
      });
    });

    // ---------------------------------------------------------------- topology

    describe('topology persistence', () => {
      it('an account without topology loads as no changes', () => {
        const s = fresh();
        const a = s.createAccount('empty@example.com', null, 4);
        expect(s.loadTopology(a.id)).toEqual([]);
      });

      it('node-add: roots and children', () => {
        const s = fresh();
        const a = s.createAccount('t1@example.com', null, 4);
        saveAndCheck(s, a.id, [
          { op: 'node-add', id: '100', parent: null },
          { op: 'node-add', id: '200', parent: null },
          { op: 'node-add', id: '101', parent: '100' },
          { op: 'node-add', id: '102', parent: '101' },
        ]);
      });

      it('node-move: under another parent, to a root, and under a node added later (replay order still valid)', () => {
        const s = fresh();
        const a = s.createAccount('t2@example.com', null, 4);
        const m = saveAndCheck(s, a.id, [
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

      it('node-delete: the whole subtree, nothing else', () => {
        const s = fresh();
        const a = s.createAccount('t3@example.com', null, 4);
        saveAndCheck(s, a.id, [
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

      it('node-rename: a root with children, a leaf, and reusing the old name', () => {
        const s = fresh();
        const a = s.createAccount('t4@example.com', null, 4);
        saveAndCheck(s, a.id, [
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

      it('routers: add, members (adding twice is harmless), remove member, delete with members', () => {
        const s = fresh();
        const a = s.createAccount('t5@example.com', null, 4);
        saveAndCheck(s, a.id, [
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
        expect(rebuild(s.loadTopology(a.id)).routers.get('HALL')!.size).toBe(0);
      });

      it('aliases: set, re-point, several targets (de-duplicated), delete', () => {
        const s = fresh();
        const a = s.createAccount('t6@example.com', null, 4);
        saveAndCheck(s, a.id, [
          { op: 'alias-set', name: 'FRIEND', targets: ['A'] },
          { op: 'alias-set', name: 'ALL', targets: ['A', 'B', 'C'] },
          { op: 'alias-set', name: 'FRIEND', targets: ['B'] },
          { op: 'alias-set', name: 'ALL', targets: ['C', 'A', 'C'] },
          { op: 'alias-delete', name: 'FRIEND' },
        ]);
        const t = rebuild(s.loadTopology(a.id));
        expect([...t.aliases.get('ALL')!]).toEqual(['C', 'A']);
      });

      it('accounts are separate namespaces: the same IDs and names in two accounts never mix', () => {
        const s = fresh();
        const a = s.createAccount('ns-a@example.com', null, 4);
        const b = s.createAccount('ns-b@example.com', null, 4);
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
          s.saveChange(a.id, ca[i]!);
          s.saveChange(b.id, cb[i]!);
        }
        s.saveChange(a.id, { op: 'node-delete', id: 'X' });
        s.saveChange(a.id, { op: 'router-delete', name: 'R' });
        s.saveChange(a.id, { op: 'alias-delete', name: 'AL' });
        expect(s.loadTopology(a.id)).toEqual([]);
        expect(topologyPicture(rebuild(s.loadTopology(b.id)))).toEqual(topologyPicture(model(cb)));
      });

      it('property: any valid sequence of changes of every kind loads back as the same topology', () => {
        const s = fresh();
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
        fc.assert(
          fc.property(fc.array(change, { maxLength: 40 }), (changes) => {
            const acct = s.createAccount(`prop${++n}@example.com`, null, 4);
            const m = new Topology();
            for (const c of changes) {
              // Only validated changes reach a store (the supervisor validates first).
              try {
                applyChange(m, c);
              } catch (err) {
                if (err instanceof TopologyFailure) continue;
                throw err;
              }
              s.saveChange(acct.id, c);
            }
            expect(topologyPicture(rebuild(s.loadTopology(acct.id)))).toEqual(topologyPicture(m));
          }),
          { numRuns: 60 },
        );
      });
    });

    // ---------------------------------------------------------------- atomicity

    describe('atomicity', () => {
      /** A populated account and a snapshot of everything the store holds for it. */
      function populated(s: Store): { id: number; snapshot: () => unknown } {
        const a = s.createAccount('atom@example.com', null, 4);
        for (const c of [
          { op: 'node-add', id: 'A', parent: null },
          { op: 'node-add', id: 'B', parent: 'A' },
          { op: 'node-add', id: 'C', parent: 'B' },
          { op: 'router-add', name: 'R' },
          { op: 'member-add', router: 'R', id: 'B' },
          { op: 'alias-set', name: 'X', targets: ['C'] },
        ] satisfies TopologyChange[])
          s.saveChange(a.id, c);
        return {
          id: a.id,
          snapshot: () => ({
            raw: s.loadTopology(a.id),
            picture: topologyPicture(rebuild(s.loadTopology(a.id))),
            accounts: s.listAccounts(),
          }),
        };
      }

      it('a conflicting node-add throws and leaves the previous state', () => {
        const s = fresh();
        const { id, snapshot } = populated(s);
        const before = snapshot();
        expect(() => s.saveChange(id, { op: 'node-add', id: 'B', parent: null })).toThrow();
        expect(snapshot()).toEqual(before);
      });

      it('a rename onto an existing node throws and leaves the previous state', () => {
        const s = fresh();
        const { id, snapshot } = populated(s);
        const before = snapshot();
        expect(() => s.saveChange(id, { op: 'node-rename', from: 'B', to: 'A' })).toThrow();
        expect(snapshot()).toEqual(before);
      });

      it('a duplicate router-add throws and leaves the previous state (members kept)', () => {
        const s = fresh();
        const { id, snapshot } = populated(s);
        const before = snapshot();
        expect(() => s.saveChange(id, { op: 'router-add', name: 'R' })).toThrow();
        expect(snapshot()).toEqual(before);
      });

      it('a member-add to a router that does not exist throws and leaves the previous state', () => {
        const s = fresh();
        const { id, snapshot } = populated(s);
        const before = snapshot();
        expect(() => s.saveChange(id, { op: 'member-add', router: 'NOPE', id: 'A' })).toThrow();
        expect(snapshot()).toEqual(before);
      });

      it('after a failed change the store keeps working', () => {
        const s = fresh();
        const { id } = populated(s);
        expect(() => s.saveChange(id, { op: 'node-add', id: 'A', parent: null })).toThrow();
        s.saveChange(id, { op: 'node-add', id: 'D', parent: 'C' });
        const t = rebuild(s.loadTopology(id));
        expect(t.depthOf('D')).toBe(4);
        expect(s.createAccount('after@example.com', null, 1).email).toBe('after@example.com');
      });
    });
  });
}
