// A batching, msgpackr-encoded, flow-controlled channel over one MessagePort.
//
// Producers append flat op fields to `ops` during an event-loop turn; `flush()` encodes them as one
// msgpackr buffer, transfers it (no second copy) and counts its bytes as in flight. The receiver
// returns CREDIT for what it processed; `congested` says the in-flight bytes passed the limit, so
// the caller stops reading sockets that feed this link until `onDecongest` fires. A MessagePort has
// no backpressure of its own: this is it.

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

/** The first arena of a link (see PortLink.keep), and the largest kept from one turn to the next. */
const ARENA_MIN = 65536;
const ARENA_KEEP = 1 << 20;

/** Batches between shards are written into buffers the peer hands back (powers of two), at most this many kept. */
const POOL_MAX = 16;
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
  /** Copies of bytes this turn's ops refer to (see keep): one buffer, reused from turn to turn. */
  private arena: Buffer | null = null;
  private arenaLen = 0;
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
   * buffers of our batches that the peer has processed and handed back, `returns` the peer's that we processed.
   * The receiving shard keeps nothing that points into a batch (delivered bytes are copied out).
   */
  private readonly recycle: boolean;
  private readonly pool: ArrayBuffer[] = [];
  private returns: ArrayBuffer[] = [];
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
      if (msg instanceof Uint8Array) this.receive(msg);
      else if (Array.isArray(msg)) {
        // [batch, ...buffers of our earlier batches, handed back]
        for (let i = 1; i < msg.length; i++) if (this.pool.length < POOL_MAX) this.pool.push(msg[i] as ArrayBuffer);
        this.receive(msg[0] as Uint8Array);
      } else if (onPort) onPort(msg as PortMessage, this);
    });
  }

  private receive(msg: Uint8Array): void {
    const ops = decodeBatch(msg);
    // Flow-control-only batches (they start with CREDIT or DIR_ACK) are not credited back.
    if (ops[0] !== OP.CREDIT && ops[0] !== OP.DIR_ACK) this.owed += msg.byteLength;
    this.onBatch(ops, this);
    if (this.recycle && this.returns.length < POOL_MAX) this.returns.push(msg.buffer as ArrayBuffer);
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
   * A copy of `bytes` for an op of this turn, for bytes that will change before the flush encodes them (a read buffer
   * the next read overwrites). The copies go into one buffer that is used again once the batch is encoded, instead of
   * new memory per op.
   */
  keep(bytes: Uint8Array): Uint8Array {
    const n = bytes.length;
    let a = this.arena;
    if (a === null || this.arenaLen + n > a.length) {
      // Full: a bigger one (the views handed out this turn keep the old one alive until the flush).
      let size = ARENA_MIN;
      while (size < 2 * (this.arenaLen + n)) size *= 2;
      a = Buffer.allocUnsafeSlow(size);
      this.arena = a;
      this.arenaLen = 0;
    }
    a.set(bytes, this.arenaLen);
    const view = a.subarray(this.arenaLen, this.arenaLen + n);
    this.arenaLen += n;
    return view;
  }

  /** Marks the link congested (the caller paused a producer). */
  noteCongested(): void {
    this.wasCongested = true;
  }

  /** Encodes and posts everything queued this turn, with CREDIT and DIR_ACK piggybacked. */
  flush(): void {
    if (this.closed) {
      this.ops.length = 0;
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
    if (this.ops.length > 0) {
      const bytes = this.recycle ? this.encode(this.ops) : encodeBatch(this.ops);
      this.ops = [];
      // Encoding copied what the arena held: it can be written from the start again (a big one is let go).
      this.arenaLen = 0;
      if (this.arena !== null && this.arena.length > ARENA_KEEP) this.arena = null;
      if (counted) this.inflight += bytes.byteLength;
      const returns = this.returns;
      if (returns.length === 0) this.port.postMessage(bytes, [bytes.buffer as ArrayBuffer]);
      else {
        this.returns = [];
        this.port.postMessage([bytes, ...returns], [bytes.buffer as ArrayBuffer, ...returns]);
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

  /** encodeBatch into a buffer from the pool (or a new one that will join it). */
  private encode(ops: unknown[]): Uint8Array {
    const pool = this.pool;
    const packed = packr.pack(ops);
    const n = packed.length;
    let buf: ArrayBuffer | undefined;
    for (let i = pool.length - 1; i >= 0; i--) {
      if (pool[i]!.byteLength >= n) {
        buf = pool[i];
        pool[i] = pool[pool.length - 1]!;
        pool.pop();
        break;
      }
    }
    if (buf === undefined) {
      let size = 256;
      while (size < n) size *= 2;
      buf = new ArrayBuffer(size);
    }
    const out = new Uint8Array(buf, 0, n);
    out.set(packed);
    packr.position = 0; // as in encodeBatch
    return out;
  }

  close(): void {
    this.closed = true;
    this.ops.length = 0;
    this.port.close();
  }
}
