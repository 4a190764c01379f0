// A raw TCP test client: writes exact bytes, reads exact bytes, waits for lines with a deadline.

import { connect, type Socket } from 'node:net';
import { Wakeup } from './wakeup.ts';

export class TestClient {
  readonly socket: Socket;
  /** Everything received and not yet consumed, as latin1 text. */
  buffer = '';
  closed = false;
  /** When set, every chunk holding a `[SYNC:` line is answered with an empty line, as a live device would. */
  answerSync = false;
  private readonly arrivals = new Wakeup();

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.setNoDelay(true);
    socket.on('data', (b: Buffer) => {
      const text = b.toString('latin1');
      this.buffer += text;
      if (this.answerSync && text.includes('[SYNC:')) socket.write('\r\n');
      this.arrivals.wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.arrivals.wake();
    });
    socket.on('error', () => {});
  }

  /** Connects to `host:port`, from `localAddress` when given (the per-address limits are tested from 127.0.0.x). */
  static open(port: number, host = '127.0.0.1', localAddress?: string): Promise<TestClient> {
    return new Promise((resolve, reject) => {
      const s = connect(localAddress === undefined ? { port, host } : { port, host, localAddress });
      s.once('connect', () => resolve(new TestClient(s)));
      s.once('error', reject);
    });
  }

  /** A client over a socket that is already connected (a TLS session, say). */
  static over(socket: Socket): TestClient {
    return new TestClient(socket);
  }

  write(text: string): void {
    this.socket.write(text, 'latin1');
  }

  /** Waits until `pred(buffer)` holds or the deadline passes. */
  until(pred: (buf: string) => boolean, ms = 5000, what = 'condition'): Promise<void> {
    return this.arrivals.until(
      () => pred(this.buffer),
      ms,
      () => `timed out waiting for ${what}; received ${JSON.stringify(this.buffer)}`,
    );
  }

  /** Next CRLF-terminated line, without its CRLF; fails if a line ends with a bare LF. */
  async line(ms = 5000): Promise<string> {
    await this.until((b) => b.includes('\n'), ms, 'a line');
    const i = this.buffer.indexOf('\n');
    const raw = this.buffer.slice(0, i + 1);
    this.buffer = this.buffer.slice(i + 1);
    if (!raw.endsWith('\r\n')) throw new Error(`line not terminated by CRLF: ${JSON.stringify(raw)}`);
    return raw.slice(0, -2);
  }

  /** Reads exactly n lines. */
  async lines(n: number, ms = 5000): Promise<string[]> {
    const out: string[] = [];
    for (let i = 0; i < n; i++) out.push(await this.line(ms));
    return out;
  }

  /** Sends one command line (CRLF added) and returns the reply line. */
  async request(cmd: string, ms = 5000): Promise<string> {
    this.write(`${cmd}\r\n`);
    return this.line(ms);
  }

  /** Waits for the server to close the connection. */
  async closedByServer(ms = 5000): Promise<void> {
    await this.until(() => this.closed, ms, 'the server to close the connection');
  }

  /** Asserts nothing arrives within ms. */
  async silence(ms: number): Promise<string> {
    await new Promise((r) => setTimeout(r, ms));
    return this.buffer;
  }

  close(): void {
    this.socket.destroy();
  }
}

/** Opens a client and registers `id` under `key`, checking the exact reply. */
export async function device(port: number, key: string, id: string): Promise<TestClient> {
  const c = await TestClient.open(port);
  const reply = await c.request(`TCP:ID:${key}:${id}`);
  if (reply !== `[OK:${id.toUpperCase()}]`) throw new Error(`registering ${id}: ${reply}`);
  return c;
}

/** A `[SYNC:dd.MM.yyyy_HH:mm:ss]` liveness line (PROTOCOL.md §2), its six fields as groups. */
export const SYNC_RE = /^\[SYNC:(\d{2})\.(\d{2})\.(\d{4})_(\d{2}):(\d{2}):(\d{2})\]$/;

/** Reads lines until one that is not a SYNC line (servers with a short COM_CHK interleave them). */
export async function reply(c: TestClient, ms = 5000): Promise<string> {
  for (;;) {
    const l = await c.line(ms);
    if (!SYNC_RE.test(l)) return l;
  }
}

/** Sends a command and returns its reply, skipping SYNC lines. */
export async function ask(c: TestClient, cmd: string): Promise<string> {
  c.write(`${cmd}\r\n`);
  return reply(c);
}
