// PUSH targets (PROTOCOL.md §5): one handler per target, one group-delivery path for all groups.
//
// Group accounting: members that are in the topology (tree, router, alias) count toward the total even while
// offline (they are not delivered, `[OK:<d>/<t>]`); devices outside the tree count only while live
// (FRIENDS of roots). The sender never receives its own group message.

import { canonicalId } from '../protocol/ids.ts';
import { TARGET, type Target } from '../protocol/parser.ts';
import { groupReply } from '../protocol/replies.ts';
import type { Account } from '../routing/account.ts';
import { ALIVE, FULL, liveFlags, shardOf, slotOf } from '../routing/handle.ts';
import type { Connection } from './connection.ts';
import { rawOpen } from './raw.ts';
import type { ShardActor } from './shard.ts';

/** Reusable list of group members: a handle, or 0 for a member that is offline; and their IDs. */
const members: number[] = [];
const memberIds: string[] = [];

/** Token bucket per account on this shard (NODE.PUSH_RATE, burst of one second). */
function rateAllows(shard: ShardActor, acct: Account): boolean {
  const rate = shard.config.NODE.PUSH_RATE;
  if (rate === 0) return true;
  const now = Date.now();
  const refill = ((now - acct.tokensAt) * rate) / 1000;
  acct.tokens = Math.min(rate, acct.tokens + refill);
  acct.tokensAt = now;
  if (acct.tokens < 1) return false;
  acct.tokens -= 1;
  return true;
}

/** Remembers a pushed payload for RETDATA (the shard copies fresh entries after the chunk). */
function remember(shard: ShardActor, conn: Connection, data: string): void {
  const size = shard.config.NODE.DATA_CACHE;
  if (size === 0) return;
  let cache = conn.cache;
  if (cache === null) {
    cache = new Array<string>(size);
    conn.cache = cache;
  }
  cache[conn.cacheNext] = data;
  conn.cacheNext = (conn.cacheNext + 1) % size;
  conn.cacheFresh++;
}

/** TCP:PUSH:<KEY>:<TARGET>... */
export function cmdPush(
  shard: ShardActor,
  conn: Connection,
  acct: Account,
  target: Target,
  name: string,
  data: string,
): void {
  if (target === TARGET.RAW) return rawOpen(shard, conn, acct.devices.get(canonicalId(name)));
  if (!rateAllows(shard, acct)) return shard.fail(conn, 'RATE_LIMIT');
  shard.metrics.pushes[target]!++;
  conn.sent++;
  remember(shard, conn, data);
  const me = conn.id!;
  const topo = acct.topology;
  switch (target) {
    case TARGET.RID:
      return pushAndReply(shard, conn, acct, canonicalId(name), data, target);
    case TARGET.PARENT: {
      const parent = topo?.parentOf(me) ?? null;
      if (parent === null) return shard.fail(conn, 'NO_PARENT');
      return pushAndReply(shard, conn, acct, parent, data, target);
    }
    case TARGET.FRIENDS:
      if (topo !== null && topo.parentOf(me) !== null) {
        for (const id of topo.siblingsOf(me)) if (id !== me) addMember(acct, id);
      } else {
        // §5: all roots, and every live ID that is not in the tree, are friends of each other.
        if (topo !== null) for (const id of topo.roots()) if (id !== me) addMember(acct, id);
        for (const [id, handle] of acct.devices) {
          if (handle !== conn.handle && (topo === null || !topo.has(id)) && isLive(shard, handle)) {
            members.push(handle);
            memberIds.push(id);
          }
        }
      }
      break;
    case TARGET.CHILDS:
      if (topo !== null) for (const id of topo.childrenOf(me)) addMember(acct, id);
      break;
    case TARGET.ALLCHILDS:
      topo?.forEachDescendant(me, (id) => addMember(acct, id));
      break;
    case TARGET.RO: {
      const router = topo?.routers.get(canonicalId(name));
      if (router === undefined || !router.has(me)) return shard.fail(conn, 'NO_ROUTER');
      for (const id of router) if (id !== me) addMember(acct, id);
      break;
    }
    case TARGET.ALIAS: {
      const targets = topo?.aliases.get(canonicalId(name));
      if (targets === undefined) return shard.fail(conn, 'NO_ALIAS');
      if (targets.length === 1) return pushAndReply(shard, conn, acct, targets[0]!, data, target);
      for (const id of targets) if (id !== me) addMember(acct, id);
      break;
    }
    default:
      return shard.fail(conn, 'UNKNOWN_CMD');
  }
  if (members.length > shard.config.NODE.MAX_FANOUT) {
    members.length = 0;
    memberIds.length = 0;
    return shard.fail(conn, 'FANOUT_LIMIT');
  }
  const reply = deliverGroup(shard, conn, acct, data, target);
  if (reply !== null) shard.send(conn, reply); // null: answered once other nodes were reached (cluster mode)
}

/** RID semantics with §5 Hold: an offline known device's push is held when the plan allows it. */
function pushAndReply(
  shard: ShardActor,
  conn: Connection,
  acct: Account,
  id: string,
  data: string,
  target: Target,
): void {
  const result = pushOne(shard, conn, acct, id, data);
  if (result === SENT) shard.metrics.delivered[target]!++;
  else if (result === REM_ID && (shard.holdAllowed(acct) || shard.clustered)) return shard.hold(conn, acct, id, data);
  replyOne(shard, conn, result);
}

/** True when the handle is a live registration (one memory read for a remote shard). */
function isLive(shard: ShardActor, handle: number): boolean {
  const target = shardOf(handle);
  if (target !== shard.index)
    return (liveFlags(shard.status, handle) & ALIVE) !== 0 && shard.links[target] !== undefined;
  const peer = shard.conns[slotOf(handle)];
  return peer?.holds(handle) === true && !peer.closed;
}

function addMember(acct: Account, id: string): void {
  members.push(acct.devices.get(id) ?? 0);
  memberIds.push(id);
}

const SENT = 0;
const REM_ID = 1;
const REM_LINK = 2;

function replyOne(shard: ShardActor, conn: Connection, result: number): void {
  if (result === SENT) shard.sendDataSent(conn);
  else shard.fail(conn, result === REM_ID ? 'REM_ID' : 'REM_LINK');
}

/** RID semantics: deliver to one device; SENT, REM_ID or REM_LINK. */
function pushOne(shard: ShardActor, conn: Connection, acct: Account, id: string, data: string): number {
  const handle = acct.devices.get(id);
  if (handle === undefined) return REM_ID;
  const target = shardOf(handle);
  if (target === shard.index) {
    const peer = shard.conns[slotOf(handle)];
    if (peer === undefined || !peer.holds(handle) || peer.closed) return REM_ID;
    if (!shard.deliverLocal(peer, `PUSH:${data}\r\n`)) return REM_LINK;
  } else {
    const flags = liveFlags(shard.status, handle);
    if (!(flags & ALIVE) || shard.links[target] === undefined) return REM_ID;
    if (flags & FULL) return REM_LINK;
    shard.deliverRemote(conn, target, handle, data);
  }
  return SENT;
}

/**
 * Delivers to every collected member: locally at once, one DELIVER_MANY per other shard. Offline members are
 * held when the plan allows it (§5 Hold; the reply still counts them as not delivered).
 */
/** Cluster mode: the members of the group being delivered that are not on this node. */
const awayIds: string[] = [];

function deliverGroup(shard: ShardActor, conn: Connection, acct: Account, data: string, target: Target): string | null {
  const scratch = shard.scratch;
  const status = shard.status;
  const me = shard.index;
  const total = members.length;
  const holding = shard.holdAllowed(acct);
  // Cluster mode: members not on this node may be on another one; they are routed (or held) by the supervisor
  // and the reply waits to count them.
  const away = shard.clustered ? awayIds : null;
  let line: string | null = null;
  let delivered = 0;
  for (let i = 0; i < total; i++) {
    const handle = members[i]!;
    if (handle === 0) {
      if (away !== null) away.push(memberIds[i]!);
      else if (holding) shard.hold(null, acct, memberIds[i]!, data);
      continue;
    }
    const target = shardOf(handle);
    if (target === me) {
      const peer = shard.conns[slotOf(handle)];
      if (peer === undefined || !peer.holds(handle) || peer.closed) {
        if (away !== null) away.push(memberIds[i]!);
        else if (holding) shard.hold(null, acct, memberIds[i]!, data);
        continue;
      }
      if (line === null) line = `PUSH:${data}\r\n`;
      if (shard.deliverLocal(peer, line)) delivered++;
    } else {
      const flags = liveFlags(status, handle);
      if (!(flags & ALIVE) || shard.links[target] === undefined) {
        if (away !== null) away.push(memberIds[i]!);
        else if (holding) shard.hold(null, acct, memberIds[i]!, data);
        continue;
      }
      if (flags & FULL) continue;
      scratch[target]!.push(handle);
      delivered++;
    }
  }
  memberIds.length = 0;
  for (let p = 0; p < scratch.length; p++) {
    const list = scratch[p]!;
    if (list.length === 0) continue;
    shard.deliverRemoteMany(conn, p, list, data);
    list.length = 0;
  }
  members.length = 0;
  shard.metrics.delivered[target]! += delivered;
  if (away !== null && away.length > 0) {
    shard.routeGroup(conn, acct, data, awayIds.splice(0), delivered, total, target);
    return null;
  }
  return groupReply(delivered, total);
}
