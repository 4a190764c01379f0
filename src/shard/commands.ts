// Device command handlers (PROTOCOL.md §4, §5): one function per TCP sub-command and per PUSH target,
// behind one dispatch switch. They run on the shard that owns the connection.

import { FAIL_LINE } from '../protocol/codes.ts';
import { canonicalId, isValidId } from '../protocol/ids.ts';
import { CMD, PROTO, parseCommand, TARGET } from '../protocol/parser.ts';
import { failWith, groupReply, OK_DATA_SENT, OK_NODEREMOVED, ok } from '../protocol/replies.ts';
import type { Account } from '../routing/account.ts';
import { ALIVE, FULL, liveFlags, shardOf, slotOf } from '../routing/handle.ts';
import type { Connection } from './connection.ts';
import type { ShardActor } from './shard.ts';

/** Parses and executes one line. May block the connection (registration, KEY lookup). */
export function executeCommand(shard: ShardActor, conn: Connection, s: string, start: number, end: number): void {
  const cmd = shard.cmd;
  parseCommand(s, start, end, cmd);
  if (cmd.proto !== PROTO.TCP) {
    // STCP/DSTCP/HSTCP sessions arrive with issue 5; an HTTP request line mid-stream is not a command.
    shard.fail(conn, cmd.proto === PROTO.NONE ? 'UNKNOWN_COMMAND' : 'INVALID_CMD');
    return;
  }
  if (cmd.error === 'INVALID_CMD') return shard.fail(conn, 'INVALID_CMD');
  // §4: before ID, every SUB but ID answers NOID.
  if (conn.handle === 0 && cmd.cmd !== CMD.ID) return shard.fail(conn, 'NOID');
  if (cmd.error === 'INVALID_FORMAT') return shard.fail(conn, 'INVALID_FORMAT');
  const acct = shard.resolveKey(conn, s, start, end);
  if (acct === null) return; // KEY lookup under way; the line runs again when it completes
  if (typeof acct === 'string') return shard.fail(conn, acct);
  if (cmd.error !== null) return shard.fail(conn, cmd.error);
  switch (cmd.cmd) {
    case CMD.ID:
      return cmdId(shard, conn, acct, cmd.name);
    case CMD.GID:
      return shard.send(conn, ok(conn.id!));
    case CMD.REMID:
      shard.releaseRegistration(conn);
      conn.account = null;
      return shard.send(conn, OK_NODEREMOVED);
    case CMD.PUSH:
      return cmdPush(shard, conn, acct);
    case CMD.RETDATA:
      return cmdRetdata(shard, conn, cmd.name);
    case CMD.EMAIL:
      // No mail transport yet (issue 6): exactly what a server without SMTP configured answers.
      return shard.fail(conn, 'MAIL_DISABLED');
    case CMD.SMS:
      return shard.fail(conn, 'SMS_DISABLED');
    default:
      // TIME, STATUS, WATCH, UNWATCH, WILL come with their issues (6, 12).
      return shard.fail(conn, 'INVALID_CMD');
  }
}

/** TCP:ID:<KEY>:<ID> (§4). */
function cmdId(shard: ShardActor, conn: Connection, acct: Account, raw: string): void {
  if (!isValidId(raw, shard.config.NODE.MAX_ID)) return shard.fail(conn, 'INVALID_DATA');
  const id = canonicalId(raw);
  if (conn.id !== null) {
    shard.send(conn, conn.id === id ? ok(id) : failWith(conn.id));
    return;
  }
  shard.register(conn, acct, id);
}

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

/** TCP:PUSH:<KEY>:<TARGET>... (§5). */
function cmdPush(shard: ShardActor, conn: Connection, acct: Account): void {
  const cmd = shard.cmd;
  if (!rateAllows(shard, acct)) return shard.fail(conn, 'RATE_LIMIT');
  const data = cmd.data;
  switch (cmd.target) {
    case TARGET.RID:
      remember(shard, conn, data);
      return pushRid(shard, conn, acct, canonicalId(cmd.name), data);
    case TARGET.FRIENDS:
      remember(shard, conn, data);
      return pushFriends(shard, conn, acct, data);
    case TARGET.CHILDS:
    case TARGET.ALLCHILDS:
      // No tree yet (issue 3): every device is a root with no children.
      remember(shard, conn, data);
      return shard.send(conn, groupReply(0, 0));
    case TARGET.PARENT:
      remember(shard, conn, data);
      return shard.fail(conn, 'NO_PARENT');
    case TARGET.RO:
      remember(shard, conn, data);
      return shard.fail(conn, 'NO_ROUTER');
    case TARGET.ALIAS:
      remember(shard, conn, data);
      return shard.fail(conn, 'NO_ALIAS');
    default:
      // RAW channels arrive with issue 7.
      return shard.fail(conn, 'UNKNOWN_CMD');
  }
}

/** RID: one device, wherever it lives (§5). */
function pushRid(shard: ShardActor, conn: Connection, acct: Account, id: string, data: string): void {
  const handle = acct.devices.get(id);
  if (handle === undefined) return shard.fail(conn, 'REM_ID');
  const target = shardOf(handle);
  if (target === shard.index) {
    const peer = shard.conns[slotOf(handle)];
    if (peer === undefined || peer.handle !== handle || peer.closed) return shard.fail(conn, 'REM_ID');
    if (!shard.deliverLocal(peer, `PUSH:${data}\r\n`)) return shard.fail(conn, 'REM_LINK');
  } else {
    const flags = liveFlags(shard.status, handle);
    if (!(flags & ALIVE) || shard.links[target] === undefined) return shard.fail(conn, 'REM_ID');
    if (flags & FULL) return shard.fail(conn, 'REM_LINK');
    shard.deliverRemote(conn, target, handle, data);
  }
  shard.send(conn, OK_DATA_SENT);
}

/**
 * FRIENDS: siblings under one parent; without a tree every live ID of the account is a root, and all
 * roots are friends of each other (§5). The sender never receives its own group message.
 */
function pushFriends(shard: ShardActor, conn: Connection, acct: Account, data: string): void {
  const devices = acct.devices;
  if (devices.size - 1 > shard.config.NODE.MAX_FANOUT) return shard.fail(conn, 'FANOUT_LIMIT');
  const scratch = shard.scratch;
  const status = shard.status;
  const me = shard.index;
  const self = conn.handle;
  let line: string | null = null;
  let total = 0;
  let delivered = 0;
  for (const handle of devices.values()) {
    if (handle === self) continue;
    const target = shardOf(handle);
    if (target === me) {
      const peer = shard.conns[slotOf(handle)];
      if (peer === undefined || peer.handle !== handle || peer.closed) continue;
      total++;
      if (line === null) line = `PUSH:${data}\r\n`;
      if (shard.deliverLocal(peer, line)) delivered++;
    } else {
      const flags = liveFlags(status, handle);
      if (!(flags & ALIVE) || shard.links[target] === undefined) continue;
      total++;
      if (flags & FULL) continue;
      scratch[target]!.push(handle);
      delivered++;
    }
  }
  for (let p = 0; p < scratch.length; p++) {
    const list = scratch[p]!;
    if (list.length === 0) continue;
    shard.deliverRemoteMany(conn, p, list, data);
    list.length = 0;
  }
  shard.send(conn, groupReply(delivered, total));
}

/** TCP:RETDATA:<KEY>:<N> (§4): N-th oldest cached payload, or all of them for N ≤ 0. */
function cmdRetdata(shard: ShardActor, conn: Connection, arg: string): void {
  const text = arg.trim();
  if (!/^[+-]?\d{1,9}$/.test(text)) return shard.fail(conn, 'INVALID_DATA');
  const n = Number(text);
  const cache = conn.cache;
  const entries: string[] = [];
  if (cache !== null) {
    const size = cache.length;
    for (let k = 0; k < size; k++) {
      const v = cache[(conn.cacheNext + k) % size];
      if (v !== undefined) entries.push(v);
    }
  }
  if (n <= 0) {
    if (entries.length === 0) return shard.fail(conn, 'NO_DATA');
    shard.send(conn, `[OK:>${entries.join('>')}]\r\n`);
    return;
  }
  if (n > entries.length) {
    shard.send(conn, FAIL_LINE.NO_DATA);
    return;
  }
  shard.send(conn, ok(entries[n - 1]!));
}
