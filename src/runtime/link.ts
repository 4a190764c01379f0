// A batching, msgpackr-encoded, flow-controlled channel over one MessagePort.
//
// Producers append flat op fields to `ops` during an event-loop turn; `flush()` encodes them as one msgpackr buffer,
// transfers it (no second copy) and counts its bytes as in flight. Bulk bytes (delivered lines) are not encoded: ops
// name them by place in the link's side buffers, which travel beside the batch, transferred. The receiver returns
// CREDIT for what it processed; `congested` says the in-flight bytes passed the limit, so the caller stops reading
// sockets that feed this link until `onDecongest` fires. A MessagePort has no backpressure of its own: this is it.

import type { MessagePort } from 'node:worker_threads';
import { Packr, Unpackr } from 'msgpackr';
import { OP, type PortMessage } from './messages.ts';

const packr = new Packr({ useRecords: false, mapsAsObjects: true });
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true });

export function encodeBatch(ops: unknown[]): Uint8Array {
  const packed = packr.pack(ops);
  const out = new Uint8Array(packed.length);
  out.set(packed);
  // Copied out: msgpackr may write the next batch from the start of its buffer again (no new buffer every few).
  packr.position = 0;
  return out;
}

export function decodeBatch(bytes: Uint8Array): unknown[] {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return unpackr.unpack(buf) as unknown[];
}

export type BatchHandler = (ops: unknown[], from: PortLink) => void;

/** The size of a side buffer (see PortLink.sideRoom), unless one run needs more. */
const SIDE_SIZE = 65536;

/**
 * Batches and side buffers between shards are written into buffers the peer hands back (powers of two), at most this
 * many bytes of them kept by each end (one run of credit, LINK_MAX_BYTES / 16, is 1 MB by default).
 */
const POOL_BYTES = 2 << 20;
export type PortHandler = (msg: PortMessage, from: PortLink) => void;

export class PortLink {
  /** Index of the thread at the other end (-1 = supervisor). */
  readonly peer: number;
  readonly port: MessagePort;
  /** Fields of ops to send this turn. */
  ops: unknown[] = [];
  /** Bytes sent and not yet credited by the receiver. */
  inflight = 0;
  /** Bytes received and processed, not yet credited back. */
  private owed = 0;
  private readonly limit: number;
  private closed = false;
  /** Called when in-flight bytes fall back under half the limit after congestion. */
  onDecongest: (() => void) | null = null;
  private wasCongested = false;
  /** DIR_* messages sent to the peer, and how many it has applied (see shard ownership). */
  dirSent = 0;
  dirAcked = 0;
  /** DIR_* messages received from the peer and applied. */
  dirApplied = 0;
  dirAckDue = false;
  /**
   * Bytes this turn's ops refer to by place (DELIVER_BYTES: side index, from, to): `sideLen` bytes of the last side
   * are taken, the others are done. Posted beside the batch and transferred, so bulk bytes are copied once, into
   * here, instead of into the batch by the encoder.
   */
  sides: Buffer[] = [];
  sideLen = 0;
  /** Side bytes taken in the sides before the last. */
  private sideDone = 0;
  /** The received batch's side buffers, while the handler runs (empty otherwise). */
  readonly received: Buffer[] = [];
  /** Where the last DELIVER_BYTES op queued starts in `ops` (-1: none this batch), for runs that continue it. */
  lastBytes = -1;
  /** RAW chunks to send after this turn's batch: [to, from, Buffer] triples. */
  raw: unknown[] = [];
  /**
   * Delivery coalescing: the handle of the last DELIVER queued, the index of its data in `ops`, and how many
   * messages that op carries (1: a DELIVER; more: it became a DELIVER_N).
   */
  lastHandle = 0;
  lastData = -1;
  lastRun = 0;
  /**
   * Between shards, batch buffers go back and forth instead of being allocated for every batch (each one would be
   * external memory to the receiver's heap, and a stream of them makes it collect all the time): `pool` holds
   * buffers of our batches and side buffers that the peer has processed and handed back, `returns` the peer's that
   * we processed. The receiving shard keeps nothing that points into them (delivered bytes are copied out).
   */
  private readonly recycle: boolean;
  /** Pooled buffers by size class: pool[k] holds buffers of 2^k bytes (all are powers of two, see take). */
  private readonly pool: ArrayBuffer[][] = [];
  private poolBytes = 0;
  private returns: ArrayBuffer[] = [];
  private returnBytes = 0;
  private readonly onBatch: BatchHandler;
  /**
   * Credit owed is sent with the next batch, or on its own once it reaches this much: between shards a sixteenth of
   * the limit, so a one-way stream does not cost a CREDIT batch back for every batch (the sender only waits for credit
   * past the limit, by which time far more than this is owed).
   */
  private readonly creditAt: number;

  constructor(peer: number, port: MessagePort, limit: number, onBatch: BatchHandler, onPort?: PortHandler) {
    this.peer = peer;
    this.port = port;
    this.limit = limit;
    this.onBatch = onBatch;
    this.recycle = peer >= 0;
    this.creditAt = peer >= 0 ? Math.max(1, Math.floor(limit / 16)) : 1;
    port.on('message', (msg: unknown) => {
      if (msg instanceof Uint8Array) this.receive(msg, 0, 0);
      else if (Array.isArray(msg)) {
        // [batch, side buffers or 0, side bytes taken, ...buffers of ours, handed back]
        for (let i = 3; i < msg.length; i++) this.toPool(msg[i] as ArrayBuffer);
        this.receive(msg[0] as Uint8Array, msg[1] as ArrayBuffer[] | 0, msg[2] as number);
      } else if (onPort) onPort(msg as PortMessage, this);
    });
  }

  private receive(msg: Uint8Array, sides: ArrayBuffer[] | 0, sideBytes: number): void {
    const ops = decodeBatch(msg);
    // Flow-control-only batches (they start with CREDIT or DIR_ACK) are not credited back.
    if (ops[0] !== OP.CREDIT && ops[0] !== OP.DIR_ACK) this.owed += msg.byteLength + sideBytes;
    const received = this.received;
    if (sides !== 0) for (let i = 0; i < sides.length; i++) received.push(Buffer.from(sides[i]!));
    try {
      this.onBatch(ops, this);
    } finally {
      received.length = 0;
    }
    if (!this.recycle) return;
    this.toReturn(msg.buffer as ArrayBuffer);
    if (sides !== 0) for (let i = 0; i < sides.length; i++) this.toReturn(sides[i]!);
  }

  /** A buffer of ours the peer handed back: pooled while the pool has room. */
  private toPool(buf: ArrayBuffer): void {
    const size = buf.byteLength;
    if (this.poolBytes + size > POOL_BYTES) return;
    const k = 31 - Math.clz32(size);
    if (size !== 1 << k) return; // not one of ours
    const bucket = this.pool[k];
    if (bucket === undefined) this.pool[k] = [buf];
    else bucket.push(buf);
    this.poolBytes += size;
  }

  /** A buffer of the peer's we are done with: handed back with our next batch (while the budget has room). */
  private toReturn(buf: ArrayBuffer): void {
    if (this.returnBytes + buf.byteLength > POOL_BYTES) return;
    this.returns.push(buf);
    this.returnBytes += buf.byteLength;
  }

  get congested(): boolean {
    return this.inflight > this.limit;
  }

  get pending(): boolean {
    return this.ops.length > 0 || this.owed >= this.creditAt || this.dirAckDue || this.raw.length > 0;
  }

  /** Receiver side: the peer credited `bytes`. */
  credit(bytes: number): void {
    this.inflight -= bytes;
    if (this.inflight < 0) this.inflight = 0;
    if (this.wasCongested && this.inflight <= this.limit / 2) {
      this.wasCongested = false;
      this.onDecongest?.();
    }
  }

  /**
   * The last side buffer, with room for `n` more bytes from `sideLen` on (a new one when it has not): the caller
   * writes there, adds what it wrote to `sideLen`, and names the bytes by `sides.length - 1` and their offsets.
   */
  sideRoom(n: number): Buffer {
    const sides = this.sides;
    const last = sides.length - 1;
    if (last >= 0 && this.sideLen + n <= sides[last]!.length) return sides[last]!;
    const side = Buffer.from(this.take(Math.max(n, SIDE_SIZE)));
    this.sideDone += this.sideLen;
    this.sideLen = 0;
    sides.push(side);
    return side;
  }

  /** Copies `src[a..b)` into the last side buffer (see sideRoom); returns its offset there. */
  putSide(src: Buffer, a: number, b: number): number {
    const side = this.sideRoom(b - a);
    const at = this.sideLen;
    src.copy(side, at, a, b);
    this.sideLen = at + b - a;
    return at;
  }

  /** Marks the link congested (the caller paused a producer). */
  noteCongested(): void {
    this.wasCongested = true;
  }

  /** Encodes and posts everything queued this turn, with CREDIT and DIR_ACK piggybacked. */
  flush(): void {
    if (this.closed) {
      this.ops.length = 0;
      this.dropSides();
      return;
    }
    const counted = this.ops.length > 0;
    if (this.owed > 0) {
      this.ops.push(OP.CREDIT, this.owed);
      this.owed = 0;
    }
    if (this.dirAckDue) {
      this.ops.push(OP.DIR_ACK, this.dirApplied);
      this.dirAckDue = false;
    }
    // A new batch: the last DELIVER (coalescing target) belongs to the batch being sent.
    this.lastHandle = 0;
    this.lastData = -1;
    this.lastRun = 0;
    this.lastBytes = -1;
    if (this.ops.length > 0) {
      const bytes = this.recycle ? this.encode(this.ops) : encodeBatch(this.ops);
      this.ops = [];
      const sides = this.sides;
      const sideBytes = this.sideDone + this.sideLen;
      if (counted) this.inflight += bytes.byteLength + sideBytes;
      const returns = this.returns;
      if (returns.length === 0 && sides.length === 0) this.port.postMessage(bytes, [bytes.buffer as ArrayBuffer]);
      else {
        const moved = [bytes.buffer as ArrayBuffer, ...returns];
        let sent: ArrayBuffer[] | 0 = 0;
        if (sides.length > 0) {
          sent = sides.map((b) => b.buffer as ArrayBuffer);
          for (const b of sent) moved.push(b);
          this.dropSides();
        }
        this.port.postMessage([bytes, sent, sideBytes, ...returns], moved);
        this.returns = [];
        this.returnBytes = 0;
      }
    }
    // RAW chunks follow the batch (which may hold their RAW_OPEN), moved, not copied, when they own their memory.
    const raw = this.raw;
    if (raw.length === 0) return;
    this.raw = [];
    for (let i = 0; i < raw.length; i += 3) {
      const buf = raw[i + 2] as Buffer;
      const whole =
        buf.byteOffset === 0 && buf.byteLength === buf.buffer.byteLength && !(buf.buffer instanceof SharedArrayBuffer);
      const data = whole
        ? (buf.buffer as ArrayBuffer)
        : buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength);
      const msg: PortMessage = {
        kind: 'raw',
        to: raw[i] as number,
        from: raw[i + 1] as number,
        data: data as ArrayBuffer,
      };
      this.port.postMessage(msg, [msg.data]);
    }
  }

  private dropSides(): void {
    this.sides = [];
    this.sideLen = 0;
    this.sideDone = 0;
  }

  /**
   * A pooled buffer of the smallest size class that holds `n` bytes (between shards, handed back by the peer), or a
   * new one of the next power of two from 256 on (it joins the pool once the peer is done with it). Not zero-filled:
   * every byte read from it was written first.
   */
  private take(n: number): ArrayBuffer {
    const k0 = n <= 256 ? 8 : 32 - Math.clz32(n - 1);
    const pool = this.pool;
    for (let k = k0; k < pool.length; k++) {
      const bucket = pool[k];
      if (bucket !== undefined && bucket.length > 0) {
        const buf = bucket.pop()!;
        this.poolBytes -= buf.byteLength;
        return buf;
      }
    }
    return Buffer.allocUnsafeSlow(2 ** k0).buffer as ArrayBuffer;
  }

  /** encodeBatch into a buffer from the pool (or a new one that will join it). */
  private encode(ops: unknown[]): Uint8Array {
    const packed = packr.pack(ops);
    const n = packed.length;
    const out = new Uint8Array(this.take(n), 0, n);
    out.set(packed);
    packr.position = 0; // as in encodeBatch
    return out;
  }

  close(): void {
    this.closed = true;
    this.ops.length = 0;
    this.dropSides();
    this.port.close();
  }
}
