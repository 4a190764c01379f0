// The RAW transparent channel (PROTOCOL.md §7, issue 7). `TCP:PUSH:<KEY>:RAW:<B>` from A links A one way to B:
// A gets [OK:LINK_SYNC], B gets `PUSHRAW:`, and every byte A sends afterwards goes to B unparsed, in order.
// Same shard: socket to socket, the writer paused while the reader's socket is backed up. Across shards: the
// chunks travel as transferred ArrayBuffers after the link's batch, and the writer may have at most
// RAW_WINDOW bytes not yet accepted by the reader's socket (RAW_ACK returns them). Nothing is dropped and
// memory stays bounded. When either side goes away the other's link is cleared; a writer whose reader left
// gets [FAIL:REM_LINK] on its next write.

import { FAIL_LINE } from '../protocol/codes.ts';
import { ALIVE, liveFlags, shardOf, slotOf } from '../routing/handle.ts';
import { OP } from '../runtime/messages.ts';
import { type Connection, PAUSE, type RawLink } from './connection.ts';
import type { ShardActor } from './shard.ts';

/** Bytes a cross-shard writer may have in flight before it is paused. */
export const RAW_WINDOW = 1 << 20;

export const LINK_SYNC = '[OK:LINK_SYNC]\r\n';
export const PUSHRAW = 'PUSHRAW:\r\n';

function rawOf(conn: Connection): RawLink {
  conn.raw ??= { out: 0, outLocal: null, inflight: 0, broken: false, in: 0 };
  return conn.raw;
}

/** Handles `RAW:<ID>` for a registered connection; across shards the writer waits for the reader's shard. */
export function rawOpen(shard: ShardActor, conn: Connection, targetHandle: number | undefined): void {
  if (targetHandle === undefined || targetHandle === conn.handle) return shard.fail(conn, 'REM_ID');
  const target = shardOf(targetHandle);
  if (target === shard.index) {
    const peer = shard.conns[slotOf(targetHandle)];
    if (peer === undefined || peer.handle !== targetHandle || peer.closed) return shard.fail(conn, 'REM_ID');
    if (peer.raw !== null && peer.raw.in !== 0) return shard.fail(conn, 'REM_LINK'); // already receiving a stream
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
    return shard.fail(conn, 'REM_ID');
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
    shard.fail(conn, result === 'REM_LINK' ? 'REM_LINK' : 'REM_ID');
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
  } else if (conn.raw.out === other) {
    conn.raw.broken = true;
    conn.raw.outLocal = null;
    shard.resume(conn, PAUSE.RAW);
  }
}

/** The connection is going away (close or REMID): tear down its links and tell the other ends. */
export function rawEnd(shard: ShardActor, conn: Connection, handle: number): void {
  const raw = conn.raw;
  if (raw === null) return;
  conn.raw = null;
  if (raw.out !== 0 && !raw.broken) {
    if (raw.outLocal !== null) {
      if (raw.outLocal.raw?.in === handle) raw.outLocal.raw.in = 0;
    } else shard.links[shardOf(raw.out)]?.ops.push(OP.RAW_CLOSE, raw.out, handle, 1);
  }
  if (raw.in !== 0) {
    const writerShard = shardOf(raw.in);
    if (writerShard === shard.index) {
      const w = shard.conns[slotOf(raw.in)];
      if (w !== undefined && w.handle === raw.in && w.raw !== null && w.raw.out === handle) {
        w.raw.broken = true;
        w.raw.outLocal = null;
        shard.resume(w, PAUSE.RAW);
      }
    } else shard.links[writerShard]?.ops.push(OP.RAW_CLOSE, raw.in, handle, 0);
  }
  shard.scheduleFlush();
}
