// The RAW transparent channel as a Duplex (PROTOCOL.md §7). The writable side is this connection's outgoing link
// (after `[OK:LINK_SYNC]` every byte written goes to the peer unparsed); the readable side is the incoming link
// (every byte after `PUSHRAW:`). Both directions have backpressure: writes wait for the socket to drain, and the
// socket stops reading while the readable side is not consumed.

import { Duplex } from 'node:stream';

/** What the client gives its RAW stream. */
export interface RawHost {
  /** Writes stream bytes to the socket; calls `cb` once more may be written. */
  write(chunk: Buffer, cb: (err?: Error | null) => void): void;
  /** The readable side wants more: resume reading the socket. */
  resumeIn(): void;
  /** The writable side ended: flush, then `cb`. */
  final(cb: (err?: Error | null) => void): void;
  /** The stream is gone: end the connection (gracefully when the writable side had finished). */
  destroyed(err: Error | null, graceful: boolean): void;
}

export interface RawStreamOptions {
  /** Bytes buffered on each side before backpressure applies (default 1 MiB). */
  highWaterMark?: number;
}

export class RawStream extends Duplex {
  private readonly host: RawHost;
  /** The peer this connection streams to ('' while there is no outgoing link). */
  peer = '';
  /** True once `[OK:LINK_SYNC]` arrived: writes go to the peer. */
  linked = false;
  /** True once `PUSHRAW:` arrived: a peer streams to this connection. */
  incoming = false;
  private finished = false;

  constructor(host: RawHost, opts: RawStreamOptions = {}) {
    const hwm = opts.highWaterMark ?? 1 << 20;
    super({ allowHalfOpen: true, readableHighWaterMark: hwm, writableHighWaterMark: hwm });
    this.host = host;
  }

  override _read(): void {
    this.host.resumeIn();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.host.write(chunk, cb);
  }

  override _writev(chunks: { chunk: Buffer }[], cb: (err?: Error | null) => void): void {
    this.host.write(chunks.length === 1 ? chunks[0]!.chunk : Buffer.concat(chunks.map((c) => c.chunk)), cb);
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.finished = true;
    this.host.final(cb);
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.host.destroyed(err, this.finished && err === null);
    cb(err);
  }

  /** Stream bytes from the socket; false when the reader lags (the client pauses the socket). */
  deliver(chunk: Buffer): boolean {
    if (this.destroyed || this.readableEnded) return true;
    return this.push(chunk);
  }

  /** The connection ended. */
  connectionEnded(err: Error): void {
    if (this.destroyed) return;
    this.push(null);
    if (this.writableFinished || !this.linked) {
      // Nothing of ours is lost: end the readable side and let the stream finish normally.
      if (!this.writableEnded) this.end();
      return;
    }
    this.destroy(err);
  }
}
