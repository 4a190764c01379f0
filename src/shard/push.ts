// PUSH targets (PROTOCOL.md §5): one handler per target, one group-delivery path for all groups.
//
// Group accounting: members that are in the topology (tree, router, alias) count toward the total even while
// offline (they are not delivered, `[OK:<d>/<t>]`); devices outside the tree count only while live
// (FRIENDS of roots). The sender never receives its own group message.

import { planValue } from '../config/schema.ts';
import type { FailCode } from '../protocol/codes.ts';
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

/** The connection's RETDATA ring, allocated on its first push. */
function cacheOf(conn: Connection, size: number): string[] {
  let cache = conn.cache;
  if (cache === null) {
    cache = new Array<string>(size);
    conn.cache = cache;
  }
  return cache;
}

/** Remembers a pushed payload for RETDATA (the shard copies fresh entries after the chunk). */
function remember(shard: ShardActor, conn: Connection, data: string): void {
  const size = shard.config.NODE.DATA_CACHE;
  if (size === 0) return;
  const cache = cacheOf(conn, size);
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
  routedTarget = TARGET.NONE;
  routedName = '';
  if (target === TARGET.RAW) return rawOpen(shard, conn, acct, canonicalId(name));
  if (!rateAllows(shard, acct)) return shard.fail(conn, 'RATE_LIMIT');
  shard.metrics.pushes[target]!++;
  conn.sent++;
  remember(shard, conn, data);
  if (target === TARGET.RID) return pushAndReply(shard, conn, acct, canonicalId(name), data, target);
  routedName = target === TARGET.RO || target === TARGET.ALIAS ? canonicalId(name) : '';
  const kind = collect(shard, conn, acct, target, name);
  if (kind === FAILED) return shard.fail(conn, failCode);
  if (kind === SINGLE) return pushAndReply(shard, conn, acct, singleId, data, target);
  if (members.length > shard.config.NODE.MAX_FANOUT) {
    members.length = 0;
    memberIds.length = 0;
    friendsElsewhere = false;
    return shard.fail(conn, 'FANOUT_LIMIT');
  }
  const reply = deliverGroup(shard, conn, acct, data, target);
  if (reply === null) return; // answered once other nodes were reached (cluster mode)
  shard.send(conn, reply);
  // Delivered, and no member held: the following lines with this prefix may be taken in bulk.
  if (groupHeld === 0 && groupDelivered > 0) routedTarget = target;
}

const GROUP = 0;
const SINGLE = 1;
const FAILED = 2;
/** What collect() found besides members: the one ID of a PARENT or single-target ALIAS push, or the failure. */
let singleId = '';
let failCode: FailCode = 'UNKNOWN_CMD';

/**
 * The members of a push to `target` other than RID and RAW (§5), into members/memberIds (GROUP); or SINGLE when it
 * goes to one device with RID semantics (PARENT, an alias of one ID: singleId); or FAILED (failCode). The general
 * path and the bulk path (groupRun) both collect through here, so they address the same devices.
 */
function collect(shard: ShardActor, conn: Connection, acct: Account, target: Target, name: string): number {
  const me = conn.id!;
  const topo = acct.topology;
  switch (target) {
    case TARGET.PARENT: {
      const parent = topo?.parentOf(me) ?? null;
      if (parent === null) {
        failCode = 'NO_PARENT';
        return FAILED;
      }
      singleId = parent;
      return SINGLE;
    }
    case TARGET.FRIENDS:
      if (topo !== null && topo.parentOf(me) !== null) {
        for (const id of topo.siblingsOf(me)) if (id !== me) addMember(acct, id);
      } else {
        // §5: all roots, and every live ID that is not in the tree, are friends of each other (in a cluster, on
        // every node: the supervisor adds those of the other nodes).
        friendsElsewhere = shard.clustered;
        if (topo !== null) for (const id of topo.roots()) if (id !== me) addMember(acct, id);
        for (const [id, handle] of acct.devices) {
          if (handle !== conn.handle && (topo === null || !topo.has(id)) && isLive(shard, handle)) {
            members.push(handle);
            memberIds.push(id);
          }
        }
      }
      return GROUP;
    case TARGET.CHILDS:
      if (topo !== null) for (const id of topo.childrenOf(me)) addMember(acct, id);
      return GROUP;
    case TARGET.ALLCHILDS:
      topo?.forEachDescendant(me, (id) => addMember(acct, id));
      return GROUP;
    case TARGET.RO: {
      const router = topo?.routers.get(canonicalId(name));
      if (router === undefined || !router.has(me)) {
        failCode = 'NO_ROUTER';
        return FAILED;
      }
      for (const id of router) if (id !== me) addMember(acct, id);
      return GROUP;
    }
    case TARGET.ALIAS: {
      const targets = topo?.aliases.get(canonicalId(name));
      if (targets === undefined) {
        failCode = 'NO_ALIAS';
        return FAILED;
      }
      if (targets.length === 1) {
        singleId = targets[0]!;
        return SINGLE;
      }
      for (const id of targets) if (id !== me) addMember(acct, id);
      return GROUP;
    }
    default:
      failCode = 'UNKNOWN_CMD';
      return FAILED;
  }
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
  if (result === SENT) {
    shard.metrics.delivered[target]!++;
    routedTarget = target;
    routedId = id;
  } else if (result === REM_ID && (shard.holdAllowed(acct) || shard.clustered)) return shard.hold(conn, acct, id, data);
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
  routedHandle = handle;
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
/** Cluster mode: the group being delivered also has every live device outside the tree on other nodes (FRIENDS). */
let friendsElsewhere = false;
/**
 * Members the last deliverGroup held or routed to other nodes, and delivered: a push that held some or delivered none
 * does not make its prefix a bulk route.
 */
let groupHeld = 0;
let groupDelivered = 0;

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
  let held = 0;
  for (let i = 0; i < total; i++) {
    const handle = members[i]!;
    if (handle === 0) {
      if (away !== null) away.push(memberIds[i]!);
      else if (holding) shard.hold(null, acct, memberIds[i]!, data);
      held++;
      continue;
    }
    const target = shardOf(handle);
    if (target === me) {
      const peer = shard.conns[slotOf(handle)];
      if (peer === undefined || !peer.holds(handle) || peer.closed) {
        if (away !== null) away.push(memberIds[i]!);
        else if (holding) shard.hold(null, acct, memberIds[i]!, data);
        held++;
        continue;
      }
      if (line === null) line = `PUSH:${data}\r\n`;
      if (shard.deliverLocal(peer, line)) delivered++;
    } else {
      const flags = liveFlags(status, handle);
      if (!(flags & ALIVE) || shard.links[target] === undefined) {
        if (away !== null) away.push(memberIds[i]!);
        else if (holding) shard.hold(null, acct, memberIds[i]!, data);
        held++;
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
  groupHeld = away !== null || holding ? held : 0;
  groupDelivered = delivered;
  shard.metrics.delivered[target]! += delivered;
  const friends = friendsElsewhere;
  friendsElsewhere = false;
  if (away !== null && (away.length > 0 || friends)) {
    shard.routeGroup(conn, acct, data, awayIds.splice(0), delivered, total, target, friends);
    return null;
  }
  return groupReply(delivered, total);
}

// ---------------------------------------------------------------- bulk RID pushes

/**
 * A pipelining sender's delivered push: its literal prefix up to the payload (`TCP:PUSH:<KEY>:RID:<ID>:`,
 * `TCP:PUSH:<KEY>:FRIENDS:`, `TCP:PUSH:<KEY>:RO:<NAME>:` ...), the account and KEY it was checked against, its target
 * and, for RID, the canonical ID and handle it went to. While all of that holds, the sender's following lines with the
 * same prefix are taken in bulk (pushRun).
 */
export interface Route {
  /** Flat copy of the prefix, and a sticky regexp matching it (both compare natively). */
  prefix: string;
  re: RegExp;
  acct: Account;
  key: string;
  target: Target;
  /** RID: the canonical ID and its handle. */
  id: string;
  handle: number;
  /** RO, ALIAS: the canonical router or alias name. */
  name: string;
}

/** Set by a push that was delivered (RID, PARENT, ALIAS) or answered without holds (groups), read by noteRoute. */
let routedTarget: Target = TARGET.NONE;
let routedId = '';
let routedHandle = 0;
let routedName = '';

/** A delivered push that is not its connection's route yet (see candidates). */
interface Candidate {
  conn: Connection | null;
  /** A slice of the line's string: each candidate keeps at most one input chunk alive. */
  prefix: string;
  acct: Account | null;
  key: string;
  target: Target;
  id: string;
  handle: number;
  name: string;
}

/**
 * The last delivered pushes of the last few connections that are not their connection's route yet. One becomes the
 * route when its connection's next line has the same prefix, so a device alternating between targets never pays for
 * building one, and devices taking turns (a ping-pong, request and answer) each keep theirs. Few, per thread: at most
 * that many input chunks are kept alive by their slices.
 */
const CANDIDATES = 4;
const candidates: Candidate[] = Array.from({ length: CANDIDATES }, () => ({
  conn: null,
  prefix: '',
  acct: null,
  key: '',
  target: TARGET.NONE,
  id: '',
  handle: 0,
  name: '',
}));
/** The candidate the next connection without one replaces (round robin). */
let nextCandidate = 0;

function candidateOf(conn: Connection): Candidate | null {
  for (let i = 0; i < CANDIDATES; i++) if (candidates[i]!.conn === conn) return candidates[i]!;
  return null;
}

/** After a push from the line s[start, end) whose payload starts at dataStart: note its route if it qualifies. */
export function noteRoute(conn: Connection, acct: Account, s: string, start: number, dataStart: number): void {
  const target = routedTarget;
  if (target === TARGET.NONE) return;
  routedTarget = TARGET.NONE;
  const key = acct.key;
  if (key === null) return;
  const prefix = s.slice(start, dataStart);
  const route = conn.route;
  if (route !== null && route.prefix === prefix) {
    route.acct = acct;
    route.key = key;
    route.target = target;
    route.id = routedId;
    route.handle = routedHandle;
    route.name = routedName;
    return;
  }
  let c = candidateOf(conn);
  if (c === null) {
    c = candidates[nextCandidate]!;
    nextCandidate = (nextCandidate + 1) % CANDIDATES;
  }
  c.conn = conn;
  c.prefix = prefix;
  c.acct = acct;
  c.key = key;
  c.target = target;
  c.id = routedId;
  c.handle = routedHandle;
  c.name = routedName;
}

/** The route whose prefix starts s at pos: the connection's, or its candidate, which then becomes its route. */
function routeAt(conn: Connection, s: string, pos: number): Route | null {
  const route = conn.route;
  if (route !== null) {
    const re = route.re;
    re.lastIndex = pos;
    if (re.test(s)) return route;
  }
  const c = candidateOf(conn);
  if (c === null) return null;
  const prefix = c.prefix;
  if (!s.startsWith(prefix, pos)) return null;
  c.conn = null;
  c.prefix = '';
  // A flat copy (a slice would keep the chunk alive), and its regexp (every character escaped that may need it).
  const flat = Buffer.from(prefix, 'latin1').toString('latin1');
  const re = new RegExp(flat.replace(/[\\^$.*+?()[\]{}|/-]/g, '\\$&'), 'y');
  const next: Route = {
    prefix: flat,
    re,
    acct: c.acct!,
    key: c.key,
    target: c.target,
    id: c.id,
    handle: c.handle,
    name: c.name,
  };
  c.acct = null;
  conn.route = next;
  return next;
}

/**
 * Takes the complete lines from `pos` that start with the connection's route prefix, end in CRLF and fit
 * NODE.MAX_LINE, as that many pushes: for RID one append to the receiver (or one coalesced op to its shard) and one
 * run of `[OK:DATA_SENT]`; for the other targets see groupRun. Everything a single push checks is checked once first;
 * nothing in between can change it (receivers' room is counted per line). Returns the position after the lines
 * taken, or `pos` when the route does not apply, and the line takes the general path.
 */
export function pushRun(shard: ShardActor, conn: Connection, s: string, pos: number): number {
  // The read itself is rewritten in place; other text (a line joined from two reads, a backlog framed after a pause)
  // is first copied into shard.joined, when it is short enough.
  const joined = s !== shard.inputText;
  if (joined && s.length > JOINED_MAX) return pos;
  const route = routeAt(conn, s, pos);
  if (route === null) return pos;
  const acct = route.acct;
  if (
    conn.account !== acct ||
    conn.handle === 0 ||
    conn.closed ||
    conn.blocked ||
    conn.session !== null ||
    conn.raw !== null ||
    conn.slots !== null ||
    acct.key !== route.key ||
    shard.config.NODE.PUSH_RATE !== 0 ||
    (!conn.encrypted && planValue(shard.config.USER.REQUIRE_SECURE, acct.level) === 1)
  ) {
    return pos;
  }
  if (route.target !== TARGET.RID) return groupRun(shard, conn, route, s, pos, joined);
  const plen = route.prefix.length;
  const re = route.re;
  const handle = route.handle;
  if (acct.devices.get(route.id) !== handle) return pos;
  const target = shardOf(handle);
  let peer: Connection | null = null;
  let room = 0;
  if (target === shard.index) {
    const c = shard.conns[slotOf(handle)];
    if (c === undefined || !c.holds(handle) || c.closed || c === conn || (c.raw !== null && c.raw.in !== 0)) return pos;
    peer = c;
    room = shard.maxOut - c.outBytes - c.socket.writableLength;
  } else {
    const flags = liveFlags(shard.status, handle);
    if (!(flags & ALIVE) || (flags & FULL) !== 0 || shard.links[target] === undefined) return pos;
  }
  const count = rewriteRun(shard, s, pos, joined, plen, re, peer !== null ? room : NO_BOUND);
  const p = runEnd;
  const w = runOut;
  const buf = runBytes;
  if (count === 0) return pos;
  const metrics = shard.metrics;
  metrics.pushes[TARGET.RID]! += count;
  metrics.delivered[TARGET.RID]! += count;
  conn.sent += count;
  rememberRun(shard, conn, s, plen, p, count);
  if (peer !== null) {
    metrics.deliveries += count;
    peer.received += count;
    shard.sendBytes(peer, buf, pos, w);
  } else shard.deliverRemoteBytes(conn, target, handle, count, buf, pos, w);
  shard.sendDataSentRun(conn, count);
  return p;
}

const NO_BOUND = Number.MAX_SAFE_INTEGER;

/**
 * Longest text other than the read itself that bulk deliveries copy into bytes to take (see joinedBytes): a line that
 * straddles two reads is at most NODE.MAX_LINE + 2 long; longer text (a long backlog) takes the general path.
 */
const JOINED_MAX = 65536;

/**
 * How much of such text is copied per call: lines ending past it are left to the next call (or, when longer, to the
 * general path), so a backlog whose lines keep leaving the bulk path is not copied again in full for each of them.
 */
const JOINED_WINDOW = 2048;

/**
 * s (not the read being framed: a line joined from the end of one read and the start of the next, or a backlog
 * framed after a pause) as bytes at the same offsets, from `pos` up to the end it returns, in shard.joined: the lines
 * taken are rewritten there as they would be in the read. Every read that ends inside a line starts with such a line,
 * which would otherwise take the general path (a parse, a lookup and a reply of its own) once per read.
 */
function joinedBytes(shard: ShardActor, s: string, pos: number): number {
  const end = Math.min(s.length, pos + JOINED_WINDOW);
  let buf = shard.joined;
  if (buf.length < end) {
    let size = 256;
    while (size < end) size *= 2;
    buf = Buffer.allocUnsafeSlow(size);
    shard.joined = buf;
  }
  buf.write(s.slice(pos, end), pos, 'latin1');
  return end;
}
/**
 * Set by rewriteRun: the position in s after the last line taken, the bytes it wrote the delivered lines into (the
 * read, or shard.joined for other text), and the position after them there.
 */
let runEnd = 0;
let runBytes: Buffer = Buffer.alloc(0);
let runOut = 0;

/**
 * Rewrites the lines from `pos` that start with the route's prefix (`plen` characters, matched by `re`), end in CRLF
 * and fit NODE.MAX_LINE into the delivered lines (`PUSH:<DATA>` CRLF), over the read's own bytes from `pos` on: each
 * is shorter than the line it comes from, so nothing is overwritten before it has been copied. `room` is the least
 * any local receiver can still take (NO_BOUND for none): a line that would find one full ends the run, and the
 * general path answers it. Text other than the read (`joined`) is rewritten in shard.joined (see joinedBytes), as far
 * as it was copied there. Returns the lines taken (runEnd, runBytes and runOut say where they are).
 */
function rewriteRun(
  shard: ShardActor,
  s: string,
  pos: number,
  joined: boolean,
  plen: number,
  re: RegExp,
  room: number,
): number {
  const maxLine = shard.maxLine;
  // joinedBytes first: it may give shard.joined a bigger buffer.
  const limit = joined ? joinedBytes(shard, s, pos) : s.length;
  const buf = joined ? shard.joined : shard.input!;
  let w = pos;
  let count = 0;
  let p = pos;
  do {
    const lf = s.indexOf('\n', p + plen);
    if (lf < 0 || lf >= limit) break;
    const end = lf - 1;
    if (s.charCodeAt(end) !== 13 || end - p > maxLine || room < 0) break;
    const size = lf + 6 - p - plen;
    room -= size;
    buf[w] = 80; // P
    buf[w + 1] = 85; // U
    buf[w + 2] = 83; // S
    buf[w + 3] = 72; // H
    buf[w + 4] = 58; // :
    buf.copyWithin(w + 5, p + plen, lf + 1);
    w += size;
    count++;
    p = lf + 1;
    re.lastIndex = p;
  } while (re.test(s));
  runEnd = p;
  runBytes = buf;
  runOut = w;
  return count;
}

/** Local receivers of the group run being taken. */
const runPeers: Connection[] = [];

/**
 * pushRun for a route to a group (FRIENDS, CHILDS, ALLCHILDS, RO, ALIAS) or to one device by name (PARENT, an alias
 * of one ID): the members are collected once for the run, exactly as the general path collects them for each line,
 * and every line of the run gets the same answer. The run is left to the general path when any member would be held
 * or routed to another node (plan holding, cluster mode), when nobody is delivered, when a single target is not
 * delivered, or past NODE.MAX_FANOUT. A local member over NODE.MAX_OUTBUF stays undelivered for the whole run (its
 * room only shrinks within it); the run ends before the line that would fill one that still has room. Each local
 * member gets one copy of the rewritten lines, each other shard one DELIVER_BYTES_MANY op.
 */
function groupRun(shard: ShardActor, conn: Connection, route: Route, s: string, pos: number, joined: boolean): number {
  const acct = route.acct;
  const target = route.target;
  const kind = collect(shard, conn, acct, target, route.name);
  if (kind === FAILED) return pos;
  if (friendsElsewhere) {
    // Cluster mode, FRIENDS outside the tree: other nodes' devices are friends too; the general path asks for them
    // (and its reply waits for them, so the prefix is no bulk route).
    friendsElsewhere = false;
    members.length = 0;
    memberIds.length = 0;
    conn.route = null;
    return pos;
  }
  if (kind === SINGLE) addMember(acct, singleId);
  const total = members.length;
  const scratch = shard.scratch;
  const holding = shard.clustered || shard.holdAllowed(acct);
  const me = shard.index;
  const maxOut = shard.maxOut;
  let room = NO_BOUND;
  let delivered = 0;
  let ok = total <= shard.config.NODE.MAX_FANOUT;
  for (let i = 0; ok && i < total; i++) {
    const handle = members[i]!;
    if (handle === 0) {
      ok = !holding;
      continue;
    }
    const at = shardOf(handle);
    if (at === me) {
      const peer = shard.conns[slotOf(handle)];
      if (peer === undefined || !peer.holds(handle) || peer.closed) {
        ok = !holding;
        continue;
      }
      if (peer === conn) ok = false; // an alias of the sender itself: the general path
      if (peer.raw !== null && peer.raw.in !== 0) continue; // receiving a RAW stream: not delivered
      const r = maxOut - peer.outBytes - peer.socket.writableLength;
      if (r < 0) continue; // full for the whole run: not delivered
      if (r < room) room = r;
      runPeers.push(peer);
    } else {
      const flags = liveFlags(shard.status, handle);
      if (!(flags & ALIVE) || shard.links[at] === undefined) {
        ok = !holding;
        continue;
      }
      if (flags & FULL) continue;
      scratch[at]!.push(handle);
    }
    delivered++;
  }
  members.length = 0;
  memberIds.length = 0;
  const taken = ok && delivered > 0 && (kind === GROUP || delivered === 1);
  const count = taken ? rewriteRun(shard, s, pos, joined, route.prefix.length, route.re, room) : 0;
  if (count === 0) {
    runPeers.length = 0;
    for (let p = 0; p < scratch.length; p++) scratch[p]!.length = 0;
    // The group's state, not the line, keeps this run out of bulk: stop collecting it for every line that follows
    // (a clean push through the general path makes the prefix a route again).
    if (!taken) conn.route = null;
    return pos;
  }
  const p = runEnd;
  const w = runOut;
  const buf = runBytes;
  const metrics = shard.metrics;
  metrics.pushes[target]! += count;
  metrics.delivered[target]! += delivered * count;
  metrics.deliveries += runPeers.length * count;
  conn.sent += count;
  rememberRun(shard, conn, s, route.prefix.length, p, count);
  for (let i = 0; i < runPeers.length; i++) {
    const peer = runPeers[i]!;
    peer.received += count;
    shard.sendBytes(peer, buf, pos, w);
  }
  runPeers.length = 0;
  for (let at = 0; at < scratch.length; at++) {
    const list = scratch[at]!;
    if (list.length === 0) continue;
    shard.deliverRemoteBytesMany(conn, at, list, count, buf, pos, w);
    list.length = 0;
  }
  if (kind === SINGLE) shard.sendDataSentRun(conn, count);
  else {
    const reply = groupReply(delivered, total);
    shard.send(conn, count === 1 ? reply : reply.repeat(count));
  }
  return p;
}

/** remember() for a run of `count` lines ending at `p`: only the last DATA_CACHE payloads stay. */
function rememberRun(shard: ShardActor, conn: Connection, s: string, plen: number, p: number, count: number): void {
  const size = shard.config.NODE.DATA_CACHE;
  if (size === 0) return;
  const cache = cacheOf(conn, size);
  let next = (conn.cacheNext + count) % size;
  conn.cacheNext = next;
  conn.cacheFresh += count;
  let lf = p - 1;
  for (let k = Math.min(count, size); k > 0; k--) {
    const start = s.lastIndexOf('\n', lf - 1) + 1;
    next = next === 0 ? size - 1 : next - 1;
    cache[next] = s.slice(start + plen, lf - 1);
    lf = start - 1;
  }
}
