// Unit and property tests of the pure Topology (src/routing/topology.ts) and of topology changes as data
// (src/routing/changes.ts): no cycles ever, parent/children/roots always consistent, a failed operation
// changes nothing, unbounded depth and width, the flat wire form round-trips, changesOf rebuilds.

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { applyChange, changesOf, decodeChange, encodeChange, type TopologyChange } from '../src/routing/changes.ts';
import { Topology, type TopologyError, TopologyFailure } from '../src/routing/topology.ts';

// ------------------------------------------------------------------ helpers

const byStr = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);
const sorted = (it: Iterable<string>): string[] => [...it].sort(byStr);

/** A canonical, order-independent picture of everything a Topology holds, through its public API only. */
function canon(t: Topology): unknown {
  const edges = t.edges();
  const nodes = edges
    .map(([id, parent]) => ({ id, parent, children: sorted(t.childrenOf(id)) }))
    .sort((a, b) => byStr(a.id, b.id));
  const routers = [...t.routers]
    .map(([name, members]) => ({ name, members: sorted(members) }))
    .sort((a, b) => byStr(a.name, b.name));
  const memberIds = new Set<string>();
  for (const members of t.routers.values()) for (const m of members) memberIds.add(m);
  const routersOf = sorted(memberIds).map((m) => [m, sorted(t.routersOf(m))]);
  const aliases = [...t.aliases]
    .map(([name, targets]) => [name, [...targets]])
    .sort((a, b) => byStr(a[0] as string, b[0] as string));
  return { size: t.size, roots: sorted(t.roots()), nodes, routers, routersOf, aliases };
}

/** Applies a change, returning the failure code, or null on success. Any other exception fails the test. */
function tryApply(t: Topology, c: TopologyChange, limit = Number.POSITIVE_INFINITY): TopologyError | null {
  try {
    applyChange(t, c, limit);
    return null;
  } catch (err) {
    if (!(err instanceof TopologyFailure)) throw err;
    return err.code;
  }
}

function failureOf(fn: () => unknown): TopologyError | null {
  try {
    fn();
    return null;
  } catch (err) {
    if (!(err instanceof TopologyFailure)) throw err;
    return err.code;
  }
}

/**
 * An independent reference model: a plain parent map plus routers and aliases. `apply` computes the expected
 * outcome of a change from first principles and mutates only on success.
 */
class Model {
  readonly parent = new Map<string, string | null>();
  readonly routers = new Map<string, Set<string>>();
  readonly aliases = new Map<string, string[]>();

  private inSubtree(node: string, top: string): boolean {
    for (let cur: string | null = node; cur !== null; cur = this.parent.get(cur) ?? null) if (cur === top) return true;
    return false;
  }

  subtree(top: string): string[] {
    return [...this.parent.keys()].filter((n) => this.inSubtree(n, top));
  }

  children(id: string): string[] {
    return [...this.parent].filter(([, p]) => p === id).map(([n]) => n);
  }

  depth(id: string): number {
    if (!this.parent.has(id)) return 0;
    let d = 0;
    for (let cur: string | null = id; cur !== null; cur = this.parent.get(cur)!) d++;
    return d;
  }

  apply(c: TopologyChange, limit: number): TopologyError | null {
    switch (c.op) {
      case 'node-add':
        if (this.parent.has(c.id)) return 'NODE_EXISTS';
        if (c.parent !== null && !this.parent.has(c.parent)) return 'NO_PARENT_NODE';
        if (this.parent.size >= limit) return 'TREE_FULL';
        this.parent.set(c.id, c.parent);
        return null;
      case 'node-move':
        if (!this.parent.has(c.id)) return 'NO_NODE';
        if (c.parent !== null && !this.parent.has(c.parent)) return 'NO_PARENT_NODE';
        if (c.parent !== null && this.inSubtree(c.parent, c.id)) return 'CYCLE';
        this.parent.set(c.id, c.parent);
        return null;
      case 'node-delete':
        if (!this.parent.has(c.id)) return 'NO_NODE';
        for (const n of this.subtree(c.id)) this.parent.delete(n);
        return null;
      case 'node-rename': {
        if (!this.parent.has(c.from)) return 'NO_NODE';
        if (c.from === c.to) return null;
        if (this.parent.has(c.to)) return 'NODE_EXISTS';
        const p = this.parent.get(c.from)!;
        this.parent.delete(c.from);
        this.parent.set(c.to, p);
        for (const [n, q] of this.parent) if (q === c.from) this.parent.set(n, c.to);
        return null;
      }
      case 'router-add':
        if (this.routers.has(c.name)) return 'ROUTER_EXISTS';
        this.routers.set(c.name, new Set());
        return null;
      case 'router-delete':
        if (!this.routers.delete(c.name)) return 'NO_ROUTER';
        return null;
      case 'member-add': {
        const r = this.routers.get(c.router);
        if (!r) return 'NO_ROUTER';
        r.add(c.id);
        return null;
      }
      case 'member-delete': {
        const r = this.routers.get(c.router);
        if (!r) return 'NO_ROUTER';
        if (!r.delete(c.id)) return 'NOT_MEMBER';
        return null;
      }
      case 'alias-set':
        this.aliases.set(c.name, [...new Set(c.targets)]);
        return null;
      case 'alias-delete':
        if (!this.aliases.delete(c.name)) return 'NO_ALIAS';
        return null;
    }
  }
}

const IDS = ['A', 'B', 'C', 'D', 'E', 'F', 'G', 'H'] as const;
const ROUTERS = ['R1', 'R2', 'R3'] as const;
const ALIASES = ['X', 'Y'] as const;

/** Checks the Topology against the model and its own internal consistency (a forest, no cycles). */
function checkAgainst(t: Topology, m: Model): void {
  expect(t.size).toBe(m.parent.size);
  for (const id of IDS) {
    const inTree = m.parent.has(id);
    expect(t.has(id), id).toBe(inTree);
    expect(t.parentOf(id), `parent of ${id}`).toBe(inTree ? m.parent.get(id) : null);
    expect(sorted(t.childrenOf(id)), `children of ${id}`).toEqual(sorted(m.children(id)));
    expect(t.depthOf(id), `depth of ${id}`).toBe(m.depth(id));
    const desc: string[] = [];
    t.forEachDescendant(id, (d) => desc.push(d));
    expect(desc.length, `no descendant twice under ${id}`).toBe(new Set(desc).size);
    expect(sorted(desc), `descendants of ${id}`).toEqual(inTree ? sorted(m.subtree(id).filter((n) => n !== id)) : []);
    // Forest: every parent chain ends at a root within size steps, so there is no cycle.
    if (inTree) {
      let steps = 0;
      let cur: string | null = id;
      while (cur !== null && steps <= t.size) {
        cur = t.parentOf(cur);
        steps++;
      }
      expect(cur, `chain from ${id} reaches a root`).toBeNull();
      const p = t.parentOf(id);
      if (p !== null) expect(t.childrenOf(p).has(id)).toBe(true);
      for (const c of t.childrenOf(id)) expect(t.parentOf(c)).toBe(id);
    }
  }
  expect(sorted(t.roots())).toEqual(sorted([...m.parent].filter(([, p]) => p === null).map(([n]) => n)));
  for (const r of t.roots()) expect(t.parentOf(r)).toBeNull();
  // edges(): every node exactly once, each parent before its children.
  const edges = t.edges();
  expect(edges.length).toBe(m.parent.size);
  const seen = new Set<string>();
  for (const [id, parent] of edges) {
    expect(seen.has(id)).toBe(false);
    if (parent !== null) expect(seen.has(parent), `${parent} listed before ${id}`).toBe(true);
    expect(parent).toBe(m.parent.get(id));
    seen.add(id);
  }
  // Routers and memberships.
  expect(sorted(t.routers.keys())).toEqual(sorted(m.routers.keys()));
  for (const [name, members] of m.routers) expect(sorted(t.routers.get(name)!)).toEqual(sorted(members));
  for (const id of IDS) {
    const expected = [...m.routers].filter(([, members]) => members.has(id)).map(([n]) => n);
    expect(sorted(t.routersOf(id)), `routers of ${id}`).toEqual(sorted(expected));
  }
  // Aliases.
  expect(sorted(t.aliases.keys())).toEqual(sorted(m.aliases.keys()));
  for (const [name, targets] of m.aliases) expect([...t.aliases.get(name)!]).toEqual(targets);
}

const idArb = fc.constantFrom(...IDS);
const parentArb = fc.option(idArb, { nil: null, freq: 4 });
const routerArb = fc.constantFrom(...ROUTERS);
const aliasArb = fc.constantFrom(...ALIASES);

/** Changes over a small alphabet so that collisions, cycles and unknown names are frequent. */
const changeArb: fc.Arbitrary<TopologyChange> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ op: fc.constant('node-add' as const), id: idArb, parent: parentArb }) },
  { weight: 5, arbitrary: fc.record({ op: fc.constant('node-move' as const), id: idArb, parent: parentArb }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('node-delete' as const), id: idArb }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('node-rename' as const), from: idArb, to: idArb }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('router-add' as const), name: routerArb }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('router-delete' as const), name: routerArb }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('member-add' as const), router: routerArb, id: idArb }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('member-delete' as const), router: routerArb, id: idArb }) },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant('alias-set' as const),
      name: aliasArb,
      targets: fc.array(idArb, { minLength: 1, maxLength: 4 }),
    }),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('alias-delete' as const), name: aliasArb }) },
);

const limitArb = fc.oneof(fc.constant(Number.POSITIVE_INFINITY), fc.integer({ min: 0, max: 8 }));

// ------------------------------------------------------------------ properties

describe('Topology properties (random sequences of every operation)', () => {
  it('matches the reference model after every step: a forest, consistent parent/children/roots, no cycles', () => {
    fc.assert(
      fc.property(fc.array(changeArb, { maxLength: 80 }), limitArb, (changes, limit) => {
        const t = new Topology();
        const m = new Model();
        for (const c of changes) {
          const expected = m.apply(c, limit);
          expect(tryApply(t, c, limit), JSON.stringify(c)).toBe(expected);
          checkAgainst(t, m);
        }
      }),
      { numRuns: 300 },
    );
  });

  it('a failed operation changes nothing', () => {
    fc.assert(
      fc.property(fc.array(changeArb, { maxLength: 60 }), limitArb, (changes, limit) => {
        const t = new Topology();
        for (const c of changes) {
          const before = canon(t);
          const code = tryApply(t, c, limit);
          if (code !== null) expect(canon(t), `${code} after ${JSON.stringify(c)}`).toEqual(before);
        }
      }),
      { numRuns: 300 },
    );
  });

  it('a move into its own subtree is always refused with CYCLE', () => {
    fc.assert(
      fc.property(fc.array(changeArb, { maxLength: 60 }), (changes) => {
        const t = new Topology();
        for (const c of changes) tryApply(t, c);
        for (const [id] of t.edges()) {
          const inside: string[] = [id];
          t.forEachDescendant(id, (d) => inside.push(d));
          for (const target of inside) {
            const before = canon(t);
            expect(failureOf(() => t.move(id, target))).toBe('CYCLE');
            expect(canon(t)).toEqual(before);
          }
        }
      }),
      { numRuns: 150 },
    );
  });

  it('changesOf rebuilds an equal topology, directly and through the flat wire form', () => {
    fc.assert(
      fc.property(fc.array(changeArb, { maxLength: 80 }), (changes) => {
        const t = new Topology();
        for (const c of changes) tryApply(t, c);
        const rebuilt = new Topology();
        for (const c of changesOf(t)) applyChange(rebuilt, c);
        expect(canon(rebuilt)).toEqual(canon(t));
        // As a starting shard receives it: flat ops, cloned across a thread boundary.
        const flat = structuredClone(changesOf(t).flatMap((c) => encodeChange(c)));
        const viaWire = new Topology();
        for (let i = 0; i < flat.length; ) {
          const [c, next] = decodeChange(flat, i);
          applyChange(viaWire, c);
          i = next;
        }
        expect(canon(viaWire)).toEqual(canon(t));
      }),
      { numRuns: 300 },
    );
  });

  it('replaying edges() with addNode rebuilds the same tree', () => {
    fc.assert(
      fc.property(fc.array(changeArb, { maxLength: 80 }), (changes) => {
        const t = new Topology();
        for (const c of changes) tryApply(t, c);
        const u = new Topology();
        for (const [id, parent] of t.edges()) u.addNode(id, parent);
        expect(u.edges().map(([id, p]) => `${id}<${p}`)).toEqual(t.edges().map(([id, p]) => `${id}<${p}`));
      }),
      { numRuns: 200 },
    );
  });
});

// ------------------------------------------------------------------ wire form

/** Any valid ID / name: 1..12 characters of A-Z 0-9 _ - . @. */
const wideId = fc.stringMatching(/^[A-Z0-9_.@-]{1,12}$/);
const anyChange: fc.Arbitrary<TopologyChange> = fc.oneof(
  fc.record({ op: fc.constant('node-add' as const), id: wideId, parent: fc.option(wideId, { nil: null }) }),
  fc.record({ op: fc.constant('node-move' as const), id: wideId, parent: fc.option(wideId, { nil: null }) }),
  fc.record({ op: fc.constant('node-delete' as const), id: wideId }),
  fc.record({ op: fc.constant('node-rename' as const), from: wideId, to: wideId }),
  fc.record({ op: fc.constant('router-add' as const), name: wideId }),
  fc.record({ op: fc.constant('router-delete' as const), name: wideId }),
  fc.record({ op: fc.constant('member-add' as const), router: wideId, id: wideId }),
  fc.record({ op: fc.constant('member-delete' as const), router: wideId, id: wideId }),
  fc.record({ op: fc.constant('alias-set' as const), name: wideId, targets: fc.array(wideId, { maxLength: 6 }) }),
  fc.record({ op: fc.constant('alias-delete' as const), name: wideId }),
);

describe('encodeChange / decodeChange', () => {
  it('round-trips every kind, one at a time and concatenated at any offset', () => {
    fc.assert(
      fc.property(fc.array(anyChange, { minLength: 1, maxLength: 12 }), fc.array(fc.integer()), (changes, prefix) => {
        for (const c of changes) {
          const flat = encodeChange(c);
          const [back, next] = decodeChange(flat, 0);
          expect(back).toEqual(c);
          expect(next).toBe(flat.length);
        }
        const flat: unknown[] = [...prefix];
        for (const c of changes) flat.push(...encodeChange(c));
        const cloned = structuredClone(flat);
        const out: TopologyChange[] = [];
        let i = prefix.length;
        while (i < cloned.length) {
          const [c, next] = decodeChange(cloned, i);
          expect(next).toBeGreaterThan(i);
          out.push(c);
          i = next;
        }
        expect(i).toBe(cloned.length);
        expect(out).toEqual(changes);
      }),
      { numRuns: 500 },
    );
  });

  it('exact flat forms (a root parent travels as the empty string)', () => {
    expect(encodeChange({ op: 'node-add', id: 'A', parent: null })).toEqual([0, 'A', '']);
    expect(encodeChange({ op: 'node-add', id: 'B', parent: 'A' })).toEqual([0, 'B', 'A']);
    expect(encodeChange({ op: 'node-move', id: 'B', parent: null })).toEqual([1, 'B', '']);
    expect(encodeChange({ op: 'node-delete', id: 'B' })).toEqual([2, 'B', '']);
    expect(encodeChange({ op: 'node-rename', from: 'A', to: 'Z' })).toEqual([3, 'A', 'Z']);
    expect(encodeChange({ op: 'router-add', name: 'R' })).toEqual([4, 'R', '']);
    expect(encodeChange({ op: 'router-delete', name: 'R' })).toEqual([5, 'R', '']);
    expect(encodeChange({ op: 'member-add', router: 'R', id: 'A' })).toEqual([6, 'R', 'A']);
    expect(encodeChange({ op: 'member-delete', router: 'R', id: 'A' })).toEqual([7, 'R', 'A']);
    expect(encodeChange({ op: 'alias-set', name: 'X', targets: ['A', 'B'] })).toEqual([8, 'X', 2, 'A', 'B']);
    expect(encodeChange({ op: 'alias-set', name: 'X', targets: [] })).toEqual([8, 'X', 0]);
    expect(encodeChange({ op: 'alias-delete', name: 'X' })).toEqual([9, 'X', '']);
    expect(decodeChange([8, 'X', 0, 1, 'A', ''], 0)).toEqual([{ op: 'alias-set', name: 'X', targets: [] }, 3]);
    expect(decodeChange([8, 'X', 0, 1, 'A', ''], 3)).toEqual([{ op: 'node-move', id: 'A', parent: null }, 6]);
  });
});

// ------------------------------------------------------------------ exact behaviour

describe('Topology operations', () => {
  it('add, parent/children/roots/siblings/depth, exact failure codes', () => {
    const t = new Topology();
    t.addNode('100', null);
    t.addNode('200', null);
    t.addNode('101', '100');
    t.addNode('102', '100');
    t.addNode('103', '101');
    expect(t.size).toBe(5);
    expect([...t.roots()]).toEqual(['100', '200']);
    expect(t.parentOf('103')).toBe('101');
    expect(t.parentOf('100')).toBeNull();
    expect(t.parentOf('NOPE')).toBeNull();
    expect([...t.childrenOf('100')]).toEqual(['101', '102']);
    expect([...t.childrenOf('103')]).toEqual([]);
    expect([...t.childrenOf('NOPE')]).toEqual([]);
    expect(sorted(t.siblingsOf('101'))).toEqual(['101', '102']);
    expect(sorted(t.siblingsOf('200'))).toEqual(['100', '200']);
    expect([...t.siblingsOf('NOPE')]).toEqual([]);
    expect([t.depthOf('100'), t.depthOf('101'), t.depthOf('103'), t.depthOf('NOPE')]).toEqual([1, 2, 3, 0]);
    expect(t.edges()).toEqual([
      ['100', null],
      ['101', '100'],
      ['102', '100'],
      ['103', '101'],
      ['200', null],
    ]);
    expect(failureOf(() => t.addNode('101', null))).toBe('NODE_EXISTS');
    expect(failureOf(() => t.addNode('300', 'NOPE'))).toBe('NO_PARENT_NODE');
    expect(failureOf(() => t.addNode('300', null, 5))).toBe('TREE_FULL');
    expect(failureOf(() => t.addNode('300', null, 6))).toBeNull();
    expect(failureOf(() => t.move('NOPE', null))).toBe('NO_NODE');
    expect(failureOf(() => t.move('100', 'NOPE'))).toBe('NO_PARENT_NODE');
    expect(failureOf(() => t.move('100', '103'))).toBe('CYCLE');
    expect(failureOf(() => t.move('100', '100'))).toBe('CYCLE');
    expect(failureOf(() => t.deleteSubtree('NOPE'))).toBe('NO_NODE');
    expect(failureOf(() => t.rename('NOPE', 'X'))).toBe('NO_NODE');
    expect(failureOf(() => t.rename('101', '200'))).toBe('NODE_EXISTS');
    expect(failureOf(() => t.addRouter('R'))).toBeNull();
    expect(failureOf(() => t.addRouter('R'))).toBe('ROUTER_EXISTS');
    expect(failureOf(() => t.deleteRouter('Q'))).toBe('NO_ROUTER');
    expect(failureOf(() => t.addMember('Q', '100'))).toBe('NO_ROUTER');
    expect(failureOf(() => t.removeMember('Q', '100'))).toBe('NO_ROUTER');
    expect(failureOf(() => t.removeMember('R', '100'))).toBe('NOT_MEMBER');
    expect(failureOf(() => t.deleteAlias('X'))).toBe('NO_ALIAS');
  });

  it('move re-links the subtree; a root can become a child and back', () => {
    const t = new Topology();
    for (const [id, p] of [
      ['A', null],
      ['B', null],
      ['C', 'A'],
      ['D', 'C'],
    ] as const)
      t.addNode(id, p);
    t.move('C', 'B');
    expect([...t.childrenOf('A')]).toEqual([]);
    expect([...t.childrenOf('B')]).toEqual(['C']);
    expect(t.depthOf('D')).toBe(3);
    t.move('B', 'A');
    expect([...t.roots()]).toEqual(['A']);
    expect(t.depthOf('D')).toBe(4);
    t.move('C', null);
    expect(sorted(t.roots())).toEqual(['A', 'C']);
    expect(t.depthOf('D')).toBe(2);
    // Moving to the current parent is a no-op that succeeds.
    t.move('D', 'C');
    expect(t.parentOf('D')).toBe('C');
  });

  it('deleteSubtree returns every removed ID once and leaves the rest', () => {
    const t = new Topology();
    for (const [id, p] of [
      ['A', null],
      ['B', 'A'],
      ['C', 'A'],
      ['D', 'B'],
      ['E', null],
    ] as const)
      t.addNode(id, p);
    expect(sorted(t.deleteSubtree('A'))).toEqual(['A', 'B', 'C', 'D']);
    expect(t.size).toBe(1);
    expect([...t.roots()]).toEqual(['E']);
    for (const id of ['A', 'B', 'C', 'D']) expect(t.has(id)).toBe(false);
    // A deleted ID can be added again, anywhere.
    t.addNode('A', 'E');
    expect(t.parentOf('A')).toBe('E');
  });

  it('rename keeps the place and the children; renaming to itself is a no-op', () => {
    const t = new Topology();
    for (const [id, p] of [
      ['P', null],
      ['A', 'P'],
      ['B', 'P'],
      ['C', 'A'],
      ['D', 'A'],
    ] as const)
      t.addNode(id, p);
    t.rename('A', 'Z');
    expect(t.has('A')).toBe(false);
    expect(t.parentOf('Z')).toBe('P');
    expect(sorted(t.childrenOf('P'))).toEqual(['B', 'Z']);
    expect(sorted(t.childrenOf('Z'))).toEqual(['C', 'D']);
    expect(t.parentOf('C')).toBe('Z');
    t.rename('P', 'Q');
    expect([...t.roots()]).toEqual(['Q']);
    expect(t.parentOf('Z')).toBe('Q');
    const before = canon(t);
    t.rename('Q', 'Q');
    expect(canon(t)).toEqual(before);
  });

  it('routers: members, memberships of a device in many routers, delete cleans memberships', () => {
    const t = new Topology();
    for (let i = 0; i < 50; i++) {
      t.addRouter(`R${i}`);
      t.addMember(`R${i}`, 'DEV');
      t.addMember(`R${i}`, `M${i}`);
    }
    expect(t.routersOf('DEV').size).toBe(50);
    t.addMember('R0', 'DEV'); // idempotent
    expect(sorted(t.routers.get('R0')!)).toEqual(['DEV', 'M0']);
    t.removeMember('R1', 'DEV');
    expect(t.routersOf('DEV').has('R1')).toBe(false);
    t.deleteRouter('R2');
    expect(t.routersOf('DEV').has('R2')).toBe(false);
    expect(t.routersOf('M2').size).toBe(0);
    expect(t.routersOf('DEV').size).toBe(48);
    expect(t.routersOf('NOBODY').size).toBe(0);
  });

  it('aliases: set, re-point, de-duplicate, delete', () => {
    const t = new Topology();
    t.setAlias('X', ['A']);
    expect(t.aliases.get('X')).toEqual(['A']);
    t.setAlias('X', ['B', 'C', 'B']);
    expect(t.aliases.get('X')).toEqual(['B', 'C']);
    t.deleteAlias('X');
    expect(t.aliases.has('X')).toBe(false);
  });
});

describe('depth and width', () => {
  for (const n of [1000, 10000]) {
    it(`a chain ${n} deep: depth, descendants, cycle refusal, delete, rename, rebuild`, () => {
      const t = new Topology();
      t.addNode('N0', null);
      for (let i = 1; i < n; i++) t.addNode(`N${i}`, `N${i - 1}`);
      const leaf = `N${n - 1}`;
      expect(t.size).toBe(n);
      expect(t.depthOf(leaf)).toBe(n);
      let count = 0;
      t.forEachDescendant('N0', () => count++);
      expect(count).toBe(n - 1);
      // Moving the root under its deepest descendant walks the whole chain and is refused.
      const before = canon(t);
      expect(failureOf(() => t.move('N0', leaf))).toBe('CYCLE');
      expect(canon(t)).toEqual(before);
      // The flat snapshot rebuilds it.
      const rebuilt = new Topology();
      for (const c of changesOf(t)) applyChange(rebuilt, c);
      expect(rebuilt.depthOf(leaf)).toBe(n);
      expect(canon(rebuilt)).toEqual(before);
      // Rename in the middle keeps the chain.
      const mid = `N${n / 2}`;
      t.rename(mid, 'MID');
      expect(t.parentOf(`N${n / 2 + 1}`)).toBe('MID');
      expect(t.depthOf(leaf)).toBe(n);
      // Move the bottom half to a root.
      t.move('MID', null);
      expect(t.depthOf(leaf)).toBe(n / 2);
      expect(sorted(t.roots())).toEqual(['MID', 'N0']);
      // Delete the top half at once.
      expect(t.deleteSubtree('N0').length).toBe(n / 2);
      expect(t.size).toBe(n / 2);
      expect(t.depthOf(leaf)).toBe(n / 2);
    });
  }

  it('a parent with 10,000 children', () => {
    const t = new Topology();
    t.addNode('P', null);
    for (let i = 0; i < 10000; i++) t.addNode(`C${i}`, 'P');
    expect(t.childrenOf('P').size).toBe(10000);
    expect(t.siblingsOf('C5').size).toBe(10000);
    expect(t.depthOf('C9999')).toBe(2);
    t.move('C0', 'C1');
    expect(t.childrenOf('P').size).toBe(9999);
    expect(t.depthOf('C0')).toBe(3);
    const rebuilt = new Topology();
    for (const c of changesOf(t)) applyChange(rebuilt, c);
    expect(canon(rebuilt)).toEqual(canon(t));
    expect(t.deleteSubtree('P').length).toBe(10001);
    expect(t.size).toBe(0);
    expect(t.roots().size).toBe(0);
  });
});
