// Topology changes as data: validated and applied by the supervisor (then persisted), replayed by every
// shard on its replica, and carried across threads as flat fields. One definition for all three.

import type { Topology } from './topology.ts';

export type TopologyChange =
  | { op: 'node-add'; id: string; parent: string | null }
  | { op: 'node-move'; id: string; parent: string | null }
  | { op: 'node-delete'; id: string }
  | { op: 'node-rename'; from: string; to: string }
  | { op: 'router-add'; name: string }
  | { op: 'router-delete'; name: string }
  | { op: 'member-add'; router: string; id: string }
  | { op: 'member-delete'; router: string; id: string }
  | { op: 'alias-set'; name: string; targets: readonly string[] }
  | { op: 'alias-delete'; name: string };

/** Applies a change; throws TopologyFailure (and changes nothing) when it is invalid. */
export function applyChange(t: Topology, c: TopologyChange, nodeLimit = Number.POSITIVE_INFINITY): void {
  switch (c.op) {
    case 'node-add':
      return t.addNode(c.id, c.parent, nodeLimit);
    case 'node-move':
      return t.move(c.id, c.parent);
    case 'node-delete':
      t.deleteSubtree(c.id);
      return;
    case 'node-rename':
      return t.rename(c.from, c.to);
    case 'router-add':
      return t.addRouter(c.name);
    case 'router-delete':
      return t.deleteRouter(c.name);
    case 'member-add':
      return t.addMember(c.router, c.id);
    case 'member-delete':
      return t.removeMember(c.router, c.id);
    case 'alias-set':
      return t.setAlias(c.name, c.targets);
    case 'alias-delete':
      return t.deleteAlias(c.name);
  }
}

const CODES = [
  'node-add',
  'node-move',
  'node-delete',
  'node-rename',
  'router-add',
  'router-delete',
  'member-add',
  'member-delete',
  'alias-set',
  'alias-delete',
] as const;

/** Flat wire form: [code, a, b, ...targets]. */
export function encodeChange(c: TopologyChange): (string | number)[] {
  const code = CODES.indexOf(c.op);
  switch (c.op) {
    case 'node-add':
    case 'node-move':
      return [code, c.id, c.parent ?? ''];
    case 'node-delete':
      return [code, c.id, ''];
    case 'node-rename':
      return [code, c.from, c.to];
    case 'router-add':
    case 'router-delete':
    case 'alias-delete':
      return [code, c.name, ''];
    case 'member-add':
    case 'member-delete':
      return [code, c.router, c.id];
    case 'alias-set':
      return [code, c.name, c.targets.length, ...c.targets];
  }
}

/** Reads one change from flat fields at ops[i]; returns it and the next index. */
export function decodeChange(ops: unknown[], i: number): [TopologyChange, number] {
  const op = CODES[ops[i] as number]!;
  const a = ops[i + 1] as string;
  const b = ops[i + 2];
  switch (op) {
    case 'node-add':
    case 'node-move':
      return [{ op, id: a, parent: b === '' ? null : (b as string) }, i + 3];
    case 'node-delete':
      return [{ op, id: a }, i + 3];
    case 'node-rename':
      return [{ op, from: a, to: b as string }, i + 3];
    case 'router-add':
    case 'router-delete':
    case 'alias-delete':
      return [{ op, name: a }, i + 3];
    case 'member-add':
    case 'member-delete':
      return [{ op, router: a, id: b as string }, i + 3];
    case 'alias-set': {
      const n = b as number;
      return [{ op, name: a, targets: ops.slice(i + 3, i + 3 + n) as string[] }, i + 3 + n];
    }
  }
}

/** The changes that rebuild a topology from nothing (for snapshots to a shard). */
export function changesOf(t: Topology): TopologyChange[] {
  const out: TopologyChange[] = [];
  for (const [id, parent] of t.edges()) out.push({ op: 'node-add', id, parent });
  for (const [name, members] of t.routers) {
    out.push({ op: 'router-add', name });
    for (const id of members) out.push({ op: 'member-add', router: name, id });
  }
  for (const [name, targets] of t.aliases) out.push({ op: 'alias-set', name, targets });
  return out;
}
