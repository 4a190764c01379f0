// An account's topology (PROTOCOL.md §5, §8): a forest of device IDs, mesh routers and aliases.
// Pure data structure; every mutation validates first and changes nothing on failure, so a failed
// operator call is never half-applied. Trees can never form cycles.

export type TopologyError =
  | 'NO_NODE' // the named node is not in the tree
  | 'NODE_EXISTS' // the node is already in the tree
  | 'NO_PARENT_NODE' // the named parent is not in the tree
  | 'CYCLE' // the move would put a node under its own subtree
  | 'NO_ROUTER'
  | 'ROUTER_EXISTS'
  | 'NOT_MEMBER'
  | 'NO_ALIAS'
  | 'TREE_FULL' // past the plan's nodes-per-tree
  | 'TREE_FORBIDDEN'; // the plan allows no tree

export class TopologyFailure extends Error {
  readonly code: TopologyError;
  constructor(code: TopologyError, message: string) {
    super(message);
    this.code = code;
  }
}

interface TreeNode {
  parent: string | null;
  children: Set<string> | null;
}

const EMPTY: ReadonlySet<string> = new Set();

export class Topology {
  private readonly nodes = new Map<string, TreeNode>();
  private readonly rootSet = new Set<string>();
  readonly routers = new Map<string, Set<string>>();
  /** Router memberships per device, for "the sender must be a member" and cleanup. */
  private readonly memberOf = new Map<string, Set<string>>();
  readonly aliases = new Map<string, readonly string[]>();

  get size(): number {
    return this.nodes.size;
  }

  has(id: string): boolean {
    return this.nodes.has(id);
  }

  parentOf(id: string): string | null {
    return this.nodes.get(id)?.parent ?? null;
  }

  childrenOf(id: string): ReadonlySet<string> {
    return this.nodes.get(id)?.children ?? EMPTY;
  }

  roots(): ReadonlySet<string> {
    return this.rootSet;
  }

  /** Depth of a node: roots are 1; 0 when not in the tree. */
  depthOf(id: string): number {
    let d = 0;
    for (let cur: string | null = this.nodes.has(id) ? id : null; cur !== null; cur = this.nodes.get(cur)!.parent) d++;
    return d;
  }

  /** Calls fn for every descendant of id (not id itself), iteratively, so depth is unbounded. */
  forEachDescendant(id: string, fn: (d: string) => void): void {
    const stack: string[] = [];
    const first = this.nodes.get(id)?.children;
    if (!first) return;
    for (const c of first) stack.push(c);
    while (stack.length > 0) {
      const cur = stack.pop()!;
      fn(cur);
      const ch = this.nodes.get(cur)!.children;
      if (ch) for (const c of ch) stack.push(c);
    }
  }

  /** Siblings of id (same parent), or the other roots for a root; empty when id is not in the tree. */
  siblingsOf(id: string): ReadonlySet<string> {
    const n = this.nodes.get(id);
    if (!n) return EMPTY;
    return n.parent === null ? this.rootSet : (this.nodes.get(n.parent)!.children ?? EMPTY);
  }

  /** Adds id under parent (null: a root). */
  addNode(id: string, parent: string | null, limit = Number.POSITIVE_INFINITY): void {
    if (this.nodes.has(id)) throw new TopologyFailure('NODE_EXISTS', `${id} is already in the tree`);
    if (parent !== null && !this.nodes.has(parent))
      throw new TopologyFailure('NO_PARENT_NODE', `parent ${parent} is not in the tree`);
    if (this.nodes.size >= limit) throw new TopologyFailure('TREE_FULL', `the plan allows ${limit} nodes`);
    this.nodes.set(id, { parent, children: null });
    this.link(id, parent);
  }

  private link(id: string, parent: string | null): void {
    if (parent === null) {
      this.rootSet.add(id);
      return;
    }
    const p = this.nodes.get(parent)!;
    if (p.children === null) p.children = new Set();
    p.children.add(id);
  }

  private unlink(id: string, parent: string | null): void {
    if (parent === null) {
      this.rootSet.delete(id);
      return;
    }
    const p = this.nodes.get(parent)!;
    p.children?.delete(id);
    if (p.children?.size === 0) p.children = null;
  }

  /** Moves id (with its subtree) under newParent (null: make it a root). */
  move(id: string, newParent: string | null): void {
    const n = this.nodes.get(id);
    if (!n) throw new TopologyFailure('NO_NODE', `${id} is not in the tree`);
    if (newParent !== null) {
      if (!this.nodes.has(newParent))
        throw new TopologyFailure('NO_PARENT_NODE', `parent ${newParent} is not in the tree`);
      for (let cur: string | null = newParent; cur !== null; cur = this.nodes.get(cur)!.parent) {
        if (cur === id) throw new TopologyFailure('CYCLE', `${newParent} is inside the subtree of ${id}`);
      }
    }
    this.unlink(id, n.parent);
    n.parent = newParent;
    this.link(id, newParent);
  }

  /** Removes id and its whole subtree; returns the removed IDs. */
  deleteSubtree(id: string): string[] {
    const n = this.nodes.get(id);
    if (!n) throw new TopologyFailure('NO_NODE', `${id} is not in the tree`);
    const removed = [id];
    this.forEachDescendant(id, (d) => removed.push(d));
    this.unlink(id, n.parent);
    for (const r of removed) this.nodes.delete(r);
    return removed;
  }

  /** Renames a tree node, keeping its place and children. */
  rename(from: string, to: string): void {
    const n = this.nodes.get(from);
    if (!n) throw new TopologyFailure('NO_NODE', `${from} is not in the tree`);
    if (from === to) return;
    if (this.nodes.has(to)) throw new TopologyFailure('NODE_EXISTS', `${to} is already in the tree`);
    // Keep the node's place among its siblings.
    const siblings = n.parent === null ? this.rootSet : this.nodes.get(n.parent)!.children!;
    const order = [...siblings];
    siblings.clear();
    for (const x of order) siblings.add(x === from ? to : x);
    this.nodes.delete(from);
    this.nodes.set(to, n);
    if (n.children) for (const c of n.children) this.nodes.get(c)!.parent = to;
  }

  // ------------------------------------------------------------------ routers

  addRouter(name: string): void {
    if (this.routers.has(name)) throw new TopologyFailure('ROUTER_EXISTS', `router ${name} exists`);
    this.routers.set(name, new Set());
  }

  deleteRouter(name: string): void {
    const members = this.routers.get(name);
    if (!members) throw new TopologyFailure('NO_ROUTER', `no router ${name}`);
    for (const m of members) this.memberOf.get(m)?.delete(name);
    this.routers.delete(name);
  }

  addMember(router: string, id: string): void {
    const members = this.routers.get(router);
    if (!members) throw new TopologyFailure('NO_ROUTER', `no router ${router}`);
    members.add(id);
    let of = this.memberOf.get(id);
    if (!of) {
      of = new Set();
      this.memberOf.set(id, of);
    }
    of.add(router);
  }

  removeMember(router: string, id: string): void {
    const members = this.routers.get(router);
    if (!members) throw new TopologyFailure('NO_ROUTER', `no router ${router}`);
    if (!members.delete(id)) throw new TopologyFailure('NOT_MEMBER', `${id} is not in router ${router}`);
    const of = this.memberOf.get(id);
    of?.delete(router);
    if (of?.size === 0) this.memberOf.delete(id);
  }

  routersOf(id: string): ReadonlySet<string> {
    return this.memberOf.get(id) ?? EMPTY;
  }

  // ------------------------------------------------------------------ aliases

  /** Creates or re-points an alias at one or more device IDs. */
  setAlias(name: string, targets: readonly string[]): void {
    this.aliases.set(name, Object.freeze([...new Set(targets)]));
  }

  deleteAlias(name: string): void {
    if (!this.aliases.delete(name)) throw new TopologyFailure('NO_ALIAS', `no alias ${name}`);
  }

  /** The tree as parent -> children lists, roots under null, for the API and persistence. */
  edges(): [string, string | null][] {
    const out: [string, string | null][] = [];
    // Parents before children, so replaying the list with addNode rebuilds the tree.
    const visit = (id: string, parent: string | null): void => {
      out.push([id, parent]);
      this.forEachDescendantBreadth(id, (c, p) => out.push([c, p]));
    };
    for (const r of this.rootSet) visit(r, null);
    return out;
  }

  private forEachDescendantBreadth(id: string, fn: (child: string, parent: string) => void): void {
    const queue: string[] = [id];
    for (let i = 0; i < queue.length; i++) {
      const cur = queue[i]!;
      const ch = this.nodes.get(cur)!.children;
      if (!ch) continue;
      for (const c of ch) {
        fn(c, cur);
        queue.push(c);
      }
    }
  }
}
