// Presence, watches and last will (PROTOCOL.md §5a, issue 12).
//
// Every shard sees every registration change of every account (the owner's decisions, or DIR_SET/DIR_DEL from
// it), in the owner's order. So each shard tells its own watchers, evaluating group membership at the moment
// of the event against its replica of the topology: no extra messages, no duplicates, order kept.

import { FAIL_LINE } from '../protocol/codes.ts';
import { canonicalId } from '../protocol/ids.ts';
import { TARGET, type Target } from '../protocol/parser.ts';
import { ok } from '../protocol/replies.ts';
import type { Account } from '../routing/account.ts';
import { isLive } from '../routing/handle.ts';
import { OP } from '../runtime/messages.ts';
import type { Connection } from './connection.ts';
import type { ShardActor } from './shard.ts';

export interface Watch {
  kind: Target;
  /** ID, router or alias name (canonical); '' for the tree groups. */
  name: string;
}

export interface Will {
  target: Target;
  name: string;
  data: string;
}

const WATCHABLE = new Set<Target>([
  TARGET.RID,
  TARGET.FRIENDS,
  TARGET.CHILDS,
  TARGET.ALLCHILDS,
  TARGET.PARENT,
  TARGET.RO,
  TARGET.ALIAS,
]);

/** Is `id` in the group `w` of watcher `me` right now? */
function inGroup(acct: Account, me: string, w: Watch, id: string): boolean {
  if (id === me) return false;
  const topo = acct.topology;
  switch (w.kind) {
    case TARGET.RID:
      return id === w.name;
    case TARGET.FRIENDS: {
      if (topo === null) return true; // no tree: every live ID of the account is a friend
      const myParent = topo.parentOf(me);
      if (myParent !== null) return topo.parentOf(id) === myParent;
      // A root or an untreed watcher: roots and untreed IDs are its friends.
      return !topo.has(id) || topo.parentOf(id) === null;
    }
    case TARGET.CHILDS:
      return topo !== null && topo.parentOf(id) === me;
    case TARGET.ALLCHILDS: {
      if (topo === null) return false;
      for (let p = topo.parentOf(id); p !== null; p = topo.parentOf(p)) if (p === me) return true;
      return false;
    }
    case TARGET.PARENT:
      return topo !== null && topo.parentOf(me) === id;
    case TARGET.RO:
      return topo?.routers.get(w.name)?.has(id) === true;
    case TARGET.ALIAS:
      return topo?.aliases.get(w.name)?.includes(id) === true;
    default:
      return false;
  }
}

/** An ID of the account came online or went offline: tell this shard's watchers of groups holding it. */
export function presenceEvent(shard: ShardActor, acct: Account, id: string, online: boolean): void {
  const watchers = acct.watchers;
  if (watchers === null) return;
  const line = `PRESENCE:${id}:${online ? 'ONLINE' : 'OFFLINE'}\r\n`;
  // The routing layer keeps watchers opaque; on a shard they are its connections.
  for (const conn of watchers as Set<Connection>) {
    const me = conn.id;
    if (conn.closed || me === null || conn.watches === null) continue;
    for (const w of conn.watches) {
      if (inGroup(acct, me, w, id)) {
        shard.metrics.presenceEvents++;
        shard.send(conn, line);
        break;
      }
    }
  }
}

/** TCP:WATCH / TCP:UNWATCH. */
export function cmdWatch(
  shard: ShardActor,
  conn: Connection,
  acct: Account,
  add: boolean,
  kind: Target,
  raw: string,
): void {
  if (!WATCHABLE.has(kind)) return shard.fail(conn, 'UNKNOWN_CMD');
  const name = kind === TARGET.RID || kind === TARGET.RO || kind === TARGET.ALIAS ? canonicalId(raw) : '';
  const list = conn.watches;
  const at = list === null ? -1 : list.findIndex((w) => w.kind === kind && w.name === name);
  if (!add) {
    if (at >= 0) list!.splice(at, 1);
    if (list !== null && list.length === 0) {
      conn.watches = null;
      acct.watchers?.delete(conn);
    }
    return shard.send(conn, ok('UNWATCHED'));
  }
  if (at < 0) {
    if ((list?.length ?? 0) >= shard.config.NODE.MAX_WATCH) return shard.fail(conn, 'QUOTA');
    conn.watches ??= [];
    conn.watches.push({ kind, name });
    acct.watchers ??= new Set();
    acct.watchers.add(conn);
  }
  shard.send(conn, ok('WATCHING'));
}

/** A connection leaves (or REMIDs): it watches nothing any more. */
export function dropWatches(conn: Connection): void {
  if (conn.watches === null) return;
  conn.watches = null;
  conn.account?.watchers?.delete(conn);
}

/** TCP:WILL:<KEY>:<TARGET>:<DATA> and TCP:WILL:<KEY>:CLEAR. */
export function cmdWill(
  shard: ShardActor,
  conn: Connection,
  clear: boolean,
  target: Target,
  name: string,
  data: string,
): void {
  if (clear) {
    conn.will = null;
    return shard.send(conn, ok('WILL_CLEARED'));
  }
  if (target === TARGET.RAW || !WATCHABLE.has(target)) return shard.fail(conn, 'UNKNOWN_CMD');
  conn.will = { target, name, data };
  shard.send(conn, ok('WILL_SET'));
}

/** TCP:STATUS:<KEY>:<ID>: online from the directory; offline with its last-seen time from the store. */
export function cmdStatus(shard: ShardActor, conn: Connection, acct: Account, raw: string): void {
  const id = canonicalId(raw);
  const handle = acct.devices.get(id);
  if (handle !== undefined && isLive(shard.status, handle)) return shard.send(conn, ok('ONLINE'));
  shard.queryStatus(conn, acct, id);
}

/** The supervisor's answer to a status query: last seen in ms, -1 for an ID never seen, -2 online on another node. */
export function statusReply(lastSeenMs: number): string {
  if (lastSeenMs === -2) return ok('ONLINE');
  return lastSeenMs < 0 ? FAIL_LINE.REM_ID : ok(`OFFLINE:${Math.floor(lastSeenMs / 1000)}`);
}

export const STATUS_OPS = { QUERY: OP.STATUS_QUERY, RESULT: OP.STATUS_RESULT } as const;
