// A binary-safe device client for RAW streams (PROTOCOL.md §7) and the stream generator the RAW suites share:
// streams are generated chunk by chunk and checked with SHA-256 on both ends.

import { createHash, randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { Wakeup } from './wakeup.ts';

export const MiB = 1 << 20;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const EMPTY: Buffer = Buffer.alloc(0);

/** A binary-safe device client: reads lines and exact bytes, or hashes a stream of a known length. */
export class Peer {
  /** Every peer opened (tests close them after each test). */
  static readonly opened: Peer[] = [];
  readonly sock: Socket;
  id = '';
  /** Bytes received in total. */
  rx = 0;
  /** Bytes of our writes the kernel has taken (write callbacks). */
  flushed = 0;
  closed = false;
  private buf = EMPTY;
  private sink: ((b: Buffer) => void) | null = null;
  private onClosed: (() => void) | null = null;
  private readonly arrivals = new Wakeup();

  constructor(sock: Socket) {
    this.sock = sock;
    sock.setNoDelay(true);
    sock.on('data', (b: Buffer) => {
      this.rx += b.length;
      if (this.sink !== null) this.sink(b);
      else this.keep(b);
    });
    sock.on('close', () => {
      this.closed = true;
      this.onClosed?.();
      this.arrivals.wake();
    });
    sock.on('error', () => {});
  }

  static open(port: number): Promise<Peer> {
    return new Promise((resolve, reject) => {
      const s = connect({ port, host: '127.0.0.1' });
      s.once('connect', () => {
        s.off('error', reject);
        const p = new Peer(s);
        Peer.opened.push(p);
        resolve(p);
      });
      s.once('error', reject);
    });
  }

  private keep(b: Buffer): void {
    this.buf = this.buf.length === 0 ? b : Buffer.concat([this.buf, b]);
    this.arrivals.wake();
  }

  /** What was received and not consumed, as latin1. */
  get text(): string {
    return this.buf.toString('latin1');
  }

  until(pred: () => boolean, ms: number, what: string): Promise<void> {
    return this.arrivals.until(
      pred,
      ms,
      () => `${this.id}: timed out waiting for ${what}; have ${JSON.stringify(this.text)}`,
    );
  }

  /** The next CRLF-terminated line, without its CRLF. */
  async line(ms = 5000): Promise<string> {
    await this.until(() => this.buf.includes(10), ms, 'a line');
    const i = this.buf.indexOf(10);
    const raw = this.buf.subarray(0, i + 1).toString('latin1');
    this.buf = this.buf.subarray(i + 1);
    if (!raw.endsWith('\r\n')) throw new Error(`line not terminated by CRLF: ${JSON.stringify(raw)}`);
    return raw.slice(0, -2);
  }

  /** Exactly n bytes. */
  async take(n: number, ms = 5000): Promise<Buffer> {
    await this.until(() => this.buf.length >= n, ms, `${n} bytes`);
    const out = Buffer.from(this.buf.subarray(0, n));
    this.buf = this.buf.subarray(n);
    return out;
  }

  /** Everything that arrives within ms (consumed). */
  async drainFor(ms: number): Promise<string> {
    await sleep(ms);
    const t = this.text;
    this.buf = EMPTY;
    return t;
  }

  write(data: string | Buffer): void {
    if (typeof data === 'string') this.sock.write(data, 'latin1');
    else this.sock.write(data);
  }

  async request(cmd: string, ms = 5000): Promise<string> {
    this.write(`${cmd}\r\n`);
    return this.line(ms);
  }

  /** Hashes exactly n incoming bytes (what was already buffered first); resolves with the hex digest. */
  receive(n: number, ms: number): Promise<string> {
    const r = this.startReceive(n);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        const s = r.stop();
        reject(new Error(`${this.id}: timed out after ${s.got} of ${n} stream bytes`));
      }, ms);
      r.done.then(
        (h) => {
          clearTimeout(t);
          resolve(h);
        },
        (e: unknown) => {
          clearTimeout(t);
          reject(e);
        },
      );
    });
  }

  /** Starts hashing up to n incoming bytes; `stop()` ends early and tells how many were hashed. */
  startReceive(n: number): { done: Promise<string>; got: () => number; stop: () => { got: number; hash: string } } {
    const h = createHash('sha256');
    let got = 0;
    let finished = false;
    let resolve!: (hash: string) => void;
    let reject!: (e: Error) => void;
    const done = new Promise<string>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    done.catch(() => {});
    const finish = (): string => {
      finished = true;
      this.sink = null;
      this.onClosed = null;
      return h.digest('hex');
    };
    const eat = (b: Buffer): void => {
      const take = Math.min(b.length, n - got);
      h.update(take === b.length ? b : b.subarray(0, take));
      got += take;
      if (got === n) resolve(finish());
      if (take < b.length) this.keep(b.subarray(take));
    };
    this.sink = eat;
    this.onClosed = () => {
      if (!finished) {
        finish();
        reject(new Error(`${this.id}: connection closed after ${got} of ${n} stream bytes`));
      }
    };
    if (this.buf.length > 0) {
      const b = this.buf;
      this.buf = EMPTY;
      eat(b);
    }
    if (n === 0 && !finished) resolve(finish());
    return {
      done,
      got: () => got,
      stop: () => {
        if (finished) return { got, hash: '' };
        return { got, hash: finish() };
      },
    };
  }

  /** Resolves on 'drain', rejects if the socket closes first. */
  drained(): Promise<void> {
    return new Promise((resolve, reject) => {
      const onDrain = (): void => {
        this.sock.off('close', onClose);
        resolve();
      };
      const onClose = (): void => {
        this.sock.off('drain', onDrain);
        reject(new Error(`${this.id}: closed while writing`));
      };
      this.sock.once('drain', onDrain);
      this.sock.once('close', onClose);
    });
  }

  close(): void {
    this.sock.destroy();
  }
}

/**
 * The stream generator: chunk i of stream `seed` is a window of a 2 MiB random block stamped with (i, seed).
 * The block also holds command lines, SYNC lines, CR, LF, NUL and every byte value, so a relay that parses,
 * strips or injects anything changes the hash.
 */
let base = EMPTY;
const BASE = 2 * MiB;
export function makeBase(key: string): void {
  base = randomBytes(BASE);
  const nasty = [
    `TCP:PUSH:${key}:RID:RAWB:injected\r\n`,
    `TCP:ID:${key}:X\r\n`,
    `TCP:PUSH:${key}:RAW:RAWA\r\n`,
    `TCP:REMID:${key}\n`,
    '[SYNC:01.01.2026_00:00:00]\r\n',
    'PUSHRAW:\r\n',
    'GET / HTTP/1.1\r\nHost: x\r\n\r\n',
    '\r\n\r\n\n\n\r\r\0\0\0',
    Buffer.from(Array.from({ length: 256 }, (_, i) => i)).toString('latin1'),
  ];
  let off = 0;
  for (let k = 0; off < BASE - 4096; k++) {
    const s = nasty[k % nasty.length]!;
    base.write(s, off, 'latin1');
    off += s.length + 1000 + (k % 7) * 3001;
  }
}

export function chunkOf(seed: number, i: number, len: number): Buffer {
  const c = Buffer.allocUnsafe(len);
  const off = (i * 104729 + seed * 7919) % (BASE - len + 1);
  base.copy(c, 0, off, off + len);
  if (len >= 8) {
    c.writeUInt32LE(i, 0);
    c.writeUInt32LE(seed, 4);
  }
  return c;
}

/** SHA-256 of the first n bytes of stream `seed` written in chunks of `chunk`. */
export function hashPrefix(seed: number, n: number, chunk: number): string {
  const h = createHash('sha256');
  for (let i = 0, done = 0; done < n; i++) {
    const len = Math.min(chunk, n - done);
    h.update(chunkOf(seed, i, chunk).subarray(0, len));
    done += len;
  }
  return h.digest('hex');
}

export interface SendOpts {
  chunk?: number;
  /** Stop writing when this returns true (checked before each chunk). */
  stop?: () => boolean;
}

/** Writes `total` bytes of stream `seed` with backpressure; resolves with the SHA-256 of what was written. */
export async function sendStream(p: Peer, total: number, seed: number, opts: SendOpts = {}): Promise<string> {
  const chunk = opts.chunk ?? MiB;
  const h = createHash('sha256');
  let last: Promise<void> = Promise.resolve();
  for (let i = 0, sent = 0; sent < total; i++) {
    if (opts.stop?.() || p.closed) break;
    const len = Math.min(chunk, total - sent);
    const c = chunkOf(seed, i, chunk).subarray(0, len);
    h.update(c);
    sent += len;
    let wrote = true;
    last = new Promise((resolve) => {
      wrote = p.sock.write(c, (err) => {
        if (!err) p.flushed += len;
        resolve();
      });
    });
    if (!wrote) await p.drained();
  }
  if (!p.closed) await last;
  return h.digest('hex');
}

/** Every byte value, command lines and line ends: what a relay that parses anything would mangle. */
export function nastyBytes(key: string, to: string): Buffer {
  return Buffer.concat([
    Buffer.from(`TCP:GID:${key}\r\nTCP:PUSH:${key}:RID:${to}:x\r\n\r\n\n\r`, 'latin1'),
    Buffer.from(Array.from({ length: 256 }, (_, i) => i)),
    Buffer.from(`\0TCP:PUSH:${key}:RAW:${to}\r\n[SYNC:01.01.2026_00:00:00]\r\nGET / HTTP/1.1\r\n\r\n`, 'latin1'),
    Buffer.from('\r'),
  ]);
}
