// The RAW transparent channel (PROTOCOL.md §7, issue 7). `TCP:PUSH:<KEY>:RAW:<B>` from A links A one way to B:
// A gets [OK:LINK_SYNC], B gets `PUSHRAW:`, and every byte A sends afterwards goes to B unparsed, in order.
// Same shard: socket to socket, the writer paused while the reader's socket is backed up. Across shards: the
// chunks travel as transferred ArrayBuffers after the link's batch, and the writer may have at most
// RAW_WINDOW bytes not yet accepted by the reader's socket (RAW_ACK returns them). Nothing is dropped and
// memory stays bounded. When either side goes away the other's link is cleared; a writer whose reader left
// gets [FAIL:REM_LINK] on its next write.
//
// Across nodes (cluster mode, issue 9): the writer's shard asks its supervisor where the node holding the reader
// takes streams (Redis directory) and opens a direct TCP connection to that node's device port, sending one
// `NODE:RAW:` header (src/cluster/raw-header.ts, signed with the cluster's secret). Whichever shard of the other node
// accepts it treats that connection as a writer of its own (`viaNode`) and answers as to a device: `[OK:LINK_SYNC]`
// or `[FAIL:...]`; the writer's device gets the same answer. Then the bytes go device -> socket -> socket -> device
// with TCP's own backpressure end to end (each socket side paused while the next is backed up), no Redis, no
// supervisor in the path. Either end leaving closes the node stream, which clears the other end as above.

import { randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import { checkRawHeader, RAW_HEADER_MAX, rawHeader } from '../cluster/raw-header.ts';
import { FAIL_LINE, type FailCode } from '../protocol/codes.ts';
import type { Account } from '../routing/account.ts';
import { ALIVE, beginRegistration, liveFlags, shardOf, slotOf } from '../routing/handle.ts';
import { OP } from '../runtime/messages.ts';
import { type Connection, PAUSE, type RawLink } from './connection.ts';
import type { ShardActor } from './shard.ts';

/** Bytes a cross-shard writer may have in flight before it is paused. */
export const RAW_WINDOW = 1 << 20;

export const LINK_SYNC = '[OK:LINK_SYNC]\r\n';
export const PUSHRAW = 'PUSHRAW:\r\n';

/** `RawLink.out` of a writer whose reader is on another node (its bytes go to `RawLink.node`). */
const NODE_OUT = -1;

function rawOf(conn: Connection): RawLink {
  conn.raw ??= { out: 0, outLocal: null, inflight: 0, broken: false, in: 0, node: null, viaNode: false };
  return conn.raw;
}

/** A link is refused: the writer hears why; another node's stream is closed after hearing it. */
function refuse(shard: ShardActor, conn: Connection, code: FailCode): void {
  shard.fail(conn, code);
  if (conn.raw?.viaNode) shard.closeAfterFlush(conn);
}

/** Handles `RAW:<ID>` for a registered connection; across shards (or nodes) the writer waits for the answer. */
export function rawOpen(shard: ShardActor, conn: Connection, acct: Account, id: string): void {
  const targetHandle = acct.devices.get(id);
  if (targetHandle === undefined) {
    // Not on this node. In a cluster it may be on another one: ask the supervisor where (not for a stream that
    // another node already sent here: the reader is on this node or nowhere).
    if (shard.nodeSecret !== null && conn.raw?.viaNode !== true) {
      shard.block(conn);
      shard.toSupervisor(OP.RAW_LOCATE, conn.handle, acct.id, id);
      return;
    }
    return refuse(shard, conn, 'REM_ID');
  }
  if (targetHandle === conn.handle) return refuse(shard, conn, 'REM_ID');
  const target = shardOf(targetHandle);
  if (target === shard.index) {
    const peer = shard.conns[slotOf(targetHandle)];
    if (peer === undefined || peer.handle !== targetHandle || peer.closed) return refuse(shard, conn, 'REM_ID');
    if (peer.raw !== null && peer.raw.in !== 0) return refuse(shard, conn, 'REM_LINK'); // already receiving a stream
    rawOf(peer).in = conn.handle;
    const raw = rawOf(conn);
    raw.out = targetHandle;
    raw.outLocal = peer;
    raw.broken = false;
    shard.send(peer, PUSHRAW);
    shard.send(conn, LINK_SYNC);
    return; // framing stops after this line (ShardActor.onLine); the rest of the input is stream data
  }
  if (!(liveFlags(shard.status, targetHandle) & ALIVE) || shard.links[target] === undefined) {
    return refuse(shard, conn, 'REM_ID');
  }
  // Ask the reader's shard; the writer waits (its next bytes may already be stream data).
  shard.block(conn);
  shard.links[target]!.ops.push(OP.RAW_OPEN, targetHandle, conn.handle);
  shard.scheduleFlush();
}

/** On the reader's shard: accept or refuse a link from a writer on another shard. */
export function rawOpenRequest(shard: ShardActor, readerHandle: number, writerHandle: number): void {
  const peer = shard.conns[slotOf(readerHandle)];
  let result = '';
  if (peer === undefined || peer.handle !== readerHandle || peer.closed) result = 'REM_ID';
  else if (peer.raw !== null && peer.raw.in !== 0) result = 'REM_LINK';
  else {
    rawOf(peer).in = writerHandle;
    shard.send(peer, PUSHRAW);
  }
  const link = shard.links[shardOf(writerHandle)];
  link?.ops.push(OP.RAW_OPEN_RESULT, writerHandle, readerHandle, result);
  shard.scheduleFlush();
}

/** On the writer's shard: the reader's answer. */
export function rawOpenResult(shard: ShardActor, writerHandle: number, readerHandle: number, result: string): void {
  const conn = shard.conns[slotOf(writerHandle)];
  if (conn === undefined || conn.handle !== writerHandle || conn.closed) {
    // The writer left meanwhile: release the reader.
    if (result === '') shard.links[shardOf(readerHandle)]?.ops.push(OP.RAW_CLOSE, readerHandle, writerHandle, 0);
    return;
  }
  if (result !== '') {
    refuse(shard, conn, result === 'REM_LINK' ? 'REM_LINK' : 'REM_ID');
    shard.unblockAfterRaw(conn, false);
    return;
  }
  const raw = rawOf(conn);
  raw.out = readerHandle;
  raw.outLocal = null;
  raw.broken = false;
  raw.inflight = 0;
  shard.send(conn, LINK_SYNC);
  shard.unblockAfterRaw(conn, true);
}

/** Bytes from a linked writer. */
export function rawWrite(shard: ShardActor, conn: Connection, raw: RawLink, buf: Buffer): void {
  if (raw.broken) {
    // §7: the reader went away; this write is answered and dropped, and the connection speaks commands again.
    raw.broken = false;
    raw.out = 0;
    raw.outLocal = null;
    shard.send(conn, FAIL_LINE.REM_LINK);
    return;
  }
  const node = raw.node;
  if (node !== null) {
    // Another node's device: TCP carries the backpressure (the writer pauses while this socket is backed up).
    if (!node.write(buf)) shard.pause(conn, PAUSE.RAW);
    return;
  }
  const peer = raw.outLocal;
  if (peer !== null) {
    if (peer.closed) return;
    if (peer.slots !== null) {
      // The reader is owed a reply another thread decides (and PUSHRAW: waits behind it): the stream waits too.
      shard.send(peer, buf.toString('latin1'));
      return;
    }
    shard.flushNow(peer); // queued text (PUSHRAW:) goes first
    if (!peer.socket.write(buf)) {
      shard.pause(conn, PAUSE.RAW);
      peer.socket.once('drain', () => shard.resume(conn, PAUSE.RAW));
    }
    return;
  }
  const link = shard.links[shardOf(raw.out)];
  if (link === undefined) {
    raw.broken = true;
    return rawWrite(shard, conn, raw, buf);
  }
  link.raw.push(raw.out, conn.handle, buf);
  raw.inflight += buf.length;
  shard.scheduleFlush();
  if (raw.inflight > RAW_WINDOW) shard.pause(conn, PAUSE.RAW);
}

/** On the reader's shard: a chunk from a writer on another shard; acknowledged once the socket took it. */
export function rawChunk(shard: ShardActor, readerHandle: number, writerHandle: number, data: ArrayBuffer): void {
  const bytes = data.byteLength;
  const ack = (): void => {
    shard.links[shardOf(writerHandle)]?.ops.push(OP.RAW_ACK, writerHandle, bytes);
    shard.scheduleFlush();
  };
  const peer = shard.conns[slotOf(readerHandle)];
  if (peer === undefined || peer.handle !== readerHandle || peer.closed || peer.raw?.in !== writerHandle) {
    ack(); // the reader is gone: the writer learns through RAW_CLOSE; keep its window moving
    return;
  }
  if (peer.slots !== null) {
    // Behind a reply another thread decides, like PUSHRAW: itself (§7 order); bounded by the writer's window.
    shard.send(peer, Buffer.from(data).toString('latin1'));
    ack();
    return;
  }
  shard.flushNow(peer);
  peer.socket.write(Buffer.from(data), ack);
}

/** On the writer's shard: bytes the reader's socket accepted. */
export function rawAck(shard: ShardActor, writerHandle: number, bytes: number): void {
  const conn = shard.conns[slotOf(writerHandle)];
  if (conn === undefined || conn.handle !== writerHandle || conn.raw === null) return;
  conn.raw.inflight -= bytes;
  if (conn.raw.inflight <= RAW_WINDOW / 2) shard.resume(conn, PAUSE.RAW);
}

/**
 * A RAW_CLOSE: `role` 1 = the writer of `handle` left (clear its incoming link), 0 = the reader `handle`
 * writes to left (its next write gets [FAIL:REM_LINK]).
 */
export function rawClosed(shard: ShardActor, handle: number, other: number, role: number): void {
  const conn = shard.conns[slotOf(handle)];
  if (conn === undefined || conn.handle !== handle || conn.raw === null) return;
  if (role === 1) {
    if (conn.raw.in === other) conn.raw.in = 0;
  } else if (conn.raw.out === other) readerLeft(shard, conn);
}

/** The reader a writer streams to went away: its next write gets [FAIL:REM_LINK]; another node's stream ends. */
function readerLeft(shard: ShardActor, w: Connection): void {
  const raw = w.raw!;
  raw.broken = true;
  raw.outLocal = null;
  if (raw.viaNode) {
    w.socket.destroy(); // the writer's node sees its stream close: its device's link is cleared there
    return;
  }
  shard.resume(w, PAUSE.RAW);
}

/** The connection is going away (close or REMID): tear down its links and tell the other ends. */
export function rawEnd(shard: ShardActor, conn: Connection, handle: number): void {
  const raw = conn.raw;
  if (raw === null) return;
  conn.raw = null;
  if (raw.node !== null) {
    // Linked: what was written still reaches the other node before the end; still connecting: abandoned.
    if (raw.out === NODE_OUT) raw.node.end();
    else raw.node.destroy();
  } else if (raw.out !== 0 && !raw.broken) {
    if (raw.outLocal !== null) {
      if (raw.outLocal.raw?.in === handle) raw.outLocal.raw.in = 0;
    } else shard.links[shardOf(raw.out)]?.ops.push(OP.RAW_CLOSE, raw.out, handle, 1);
  }
  if (raw.in !== 0) {
    const writerShard = shardOf(raw.in);
    if (writerShard === shard.index) {
      const w = shard.conns[slotOf(raw.in)];
      if (w !== undefined && w.handle === raw.in && w.raw !== null && w.raw.out === handle) readerLeft(shard, w);
    } else shard.links[writerShard]?.ops.push(OP.RAW_CLOSE, raw.in, handle, 0);
  }
  shard.scheduleFlush();
}

// ---------------------------------------------------------------- across nodes (cluster mode)

/** The writer's supervisor answered where the reader's node takes streams: connect to it and send the header. */
export function rawLocated(
  shard: ShardActor,
  writer: number,
  id: string,
  host: string,
  port: number,
  result: string,
): void {
  const conn = shard.conns[slotOf(writer)];
  if (conn === undefined || conn.handle !== writer || conn.closed || conn.account === null) return;
  const secret = shard.nodeSecret;
  if (result !== '' || host === '' || secret === null) {
    shard.fail(conn, result === 'UNAVAILABLE' ? 'UNAVAILABLE' : 'REM_ID');
    shard.unblockAfterRaw(conn, false);
    return;
  }
  const header = rawHeader(secret, conn.account.id, id, Date.now(), randomBytes(12).toString('hex'));
  // Keep-alive: a node that vanishes without a FIN (a partition) is noticed, and the device's link cleared.
  const socket = connect({ host, port, noDelay: true, keepAlive: true, keepAliveInitialDelay: NODE_KEEPALIVE_MS });
  const raw = rawOf(conn);
  raw.node = socket;
  raw.out = 0;
  let answer: string | null = null;
  let head = '';
  const timer = setTimeout(() => socket.destroy(), shard.config.CLUSTER.RAW_CONNECT_MS);
  const settle = (reply: string): void => {
    answer = reply;
    clearTimeout(timer);
    if (conn.closed || conn.raw?.node !== socket) {
      socket.destroy();
      return;
    }
    if (reply === LINK_SYNC_LINE) {
      shard.metrics.rawNodeOut++;
      raw.out = NODE_OUT;
      raw.broken = false;
      shard.send(conn, LINK_SYNC);
      shard.unblockAfterRaw(conn, true);
      return;
    }
    raw.node = null;
    socket.destroy();
    const m = /^\[FAIL:(REM_ID|REM_LINK)\]$/.exec(reply);
    shard.fail(conn, m !== null ? (m[1] as FailCode) : reply === '' ? 'UNAVAILABLE' : 'REM_ID');
    shard.unblockAfterRaw(conn, false);
  };
  socket.on('connect', () => socket.write(`${header}\n`));
  socket.on('data', (b: Buffer) => {
    if (answer !== null) return; // nothing is expected after the answer
    head += b.toString('latin1');
    const nl = head.indexOf('\n');
    if (nl >= 0) settle(head.slice(0, head[nl - 1] === '\r' ? nl - 1 : nl));
    else if (head.length > RAW_HEADER_MAX) socket.destroy();
  });
  socket.on('drain', () => {
    if (conn.raw?.node === socket) shard.resume(conn, PAUSE.RAW);
  });
  socket.on('error', noop);
  socket.on('close', () => {
    if (answer === null) return settle(''); // refused, unreachable or silent: the other node is unavailable
    if (conn.closed || conn.raw?.node !== socket) return;
    // The reader (or its node) went away: the device's next write gets [FAIL:REM_LINK].
    raw.node = null;
    raw.broken = true;
    shard.resume(conn, PAUSE.RAW);
  });
}

/**
 * On the reader's node: a connection whose first command is a `NODE:RAW:` header. A valid one makes the connection
 * a writer of this node for the header's device (linked as a device's `RAW:<ID>` would be); anything else is an
 * unknown command, as it is on a server outside a cluster.
 */
export function rawFromNode(shard: ShardActor, conn: Connection, line: string): void {
  const secret = shard.nodeSecret;
  const now = Date.now();
  const fresh = conn.handle === 0 && conn.pendingHandle === 0 && conn.account === null;
  const h = secret !== null && fresh ? checkRawHeader(line, secret, now) : null;
  if (h === null || !shard.nodeNonces.accept(h.nonce, now)) {
    if (secret !== null && fresh && shard.authFailed(conn)) return;
    return shard.fail(conn, 'UNKNOWN_COMMAND');
  }
  const acct = shard.accounts.find(h.account);
  if (acct === undefined || !acct.devices.has(h.id)) {
    shard.fail(conn, 'REM_ID');
    shard.closeAfterFlush(conn);
    return;
  }
  conn.account = acct;
  shard.metrics.rawNodeIn++;
  conn.socket.setKeepAlive(true, NODE_KEEPALIVE_MS);
  // A handle of its own (no ID): the reader's shard addresses acknowledgements and closes to it like to a device.
  conn.handle = beginRegistration(shard.table, conn.slot, shard.index);
  rawOf(conn).viaNode = true;
  rawOpen(shard, conn, acct, h.id);
}

const LINK_SYNC_LINE = '[OK:LINK_SYNC]';
/** TCP keep-alive on streams between nodes starts after this much silence. */
const NODE_KEEPALIVE_MS = 10_000;

function noop(): void {}
