// A lean pipelined raw-TCP load generator for P2Pcluster: pre-encoded frames written in batches,
// receivers counting lines, credit-based flow control so nothing is dropped, and a check that every
// message arrived.

import { connect, type Socket } from 'node:net';

const LF = 10;

/** Counts LF bytes in a buffer. */
export function countLines(buf: Buffer): number {
  let n = 0;
  let i = buf.indexOf(LF);
  while (i >= 0) {
    n++;
    i = buf.indexOf(LF, i + 1);
  }
  return n;
}

export function openSocket(port: number, host = '127.0.0.1'): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ port, host });
    s.setNoDelay(true);
    s.once('connect', () => {
      s.off('error', reject);
      resolve(s);
    });
    s.once('error', reject);
  });
}

/** Reads one CRLF line from a fresh socket (used for registration replies). */
export function readLine(s: Socket): Promise<string> {
  return new Promise((resolve, reject) => {
    let acc = '';
    const onData = (b: Buffer): void => {
      acc += b.toString('latin1');
      const i = acc.indexOf('\n');
      if (i >= 0) {
        s.off('data', onData);
        s.off('error', reject);
        if (i + 1 < acc.length) s.unshift(Buffer.from(acc.slice(i + 1), 'latin1'));
        resolve(acc.slice(0, i).replace(/\r$/, ''));
      }
    };
    s.on('data', onData);
    s.once('error', reject);
  });
}

export async function register(port: number, key: string, id: string): Promise<Socket> {
  const s = await openSocket(port);
  s.write(`TCP:ID:${key}:${id}\r\n`);
  const reply = await readLine(s);
  if (reply !== `[OK:${id}]`) throw new Error(`register ${id}: ${reply}`);
  return s;
}

/** 64 bytes of payload. */
export const PAYLOAD = 'x'.repeat(56) + '01234567';

export interface ThroughputResult {
  messages: number;
  deliveries: number;
  seconds: number;
  perSecond: number;
}

/**
 * One sender pipelines `messages` copies of `line`, `receivers` count the deliveries; resolves when every expected
 * delivery arrived. Fails on any [FAIL reply. At most `window` messages are outstanding: not yet replied to, and not
 * yet delivered (a reply can come before its delivery when the receiver is on another shard, so a window of replies
 * alone would let deliveries pile up at a receiver until it is over NODE.MAX_OUTBUF and pushes fail REM_LINK).
 */
export function pipeline(
  sender: Socket,
  receivers: Socket[],
  line: string,
  messages: number,
  deliveriesPerMessage: number,
  window: number,
): Promise<ThroughputResult> {
  return new Promise((resolve, reject) => {
    const batchSize = Math.max(1, Math.min(512, Math.floor(window / 4)));
    const batch = Buffer.from(line.repeat(batchSize), 'latin1');
    const expected = messages * deliveriesPerMessage;
    let sent = 0;
    let replies = 0;
    let delivered = 0;
    let start = 0;
    let done = false;
    const finish = (err?: Error): void => {
      if (done) return;
      done = true;
      for (const r of receivers) r.removeAllListeners('data');
      sender.removeAllListeners('data');
      if (err) reject(err);
      else {
        const seconds = (performance.now() - start) / 1000;
        resolve({ messages, deliveries: delivered, seconds, perSecond: delivered / seconds });
      }
    };
    let draining = false;
    const pump = (): void => {
      if (draining) return;
      while (
        sent < messages &&
        sent - replies < window &&
        sent * deliveriesPerMessage - delivered < window * deliveriesPerMessage
      ) {
        const n = Math.min(batchSize, messages - sent);
        const ok = n === batchSize ? sender.write(batch) : sender.write(line.repeat(n), 'latin1');
        sent += n;
        if (!ok) {
          draining = true;
          sender.once('drain', () => {
            draining = false;
            pump();
          });
          return;
        }
      }
    };
    sender.on('data', (b: Buffer) => {
      if (b.indexOf('FAIL') >= 0) finish(new Error(`sender got a failure: ${b.toString('latin1').slice(0, 200)}`));
      replies += countLines(b);
      pump();
    });
    for (const r of receivers) {
      r.on('data', (b: Buffer) => {
        delivered += countLines(b);
        if (delivered >= expected) finish();
        else pump();
      });
    }
    start = performance.now();
    pump();
  });
}

/** Ping-pong: A pushes to B, B pushes the same payload back; returns round-trip times in µs. */
export function pingPong(
  a: Socket,
  b: Socket,
  key: string,
  idA: string,
  idB: string,
  rounds: number,
): Promise<number[]> {
  return new Promise((resolve, reject) => {
    const times: number[] = [];
    let t0 = 0;
    const toB = Buffer.from(`TCP:PUSH:${key}:RID:${idB}:${PAYLOAD}\r\n`, 'latin1');
    const toA = Buffer.from(`TCP:PUSH:${key}:RID:${idA}:${PAYLOAD}\r\n`, 'latin1');
    const pushMarker = Buffer.from('PUSH:');
    let pending = '';
    let pendingB = '';
    const send = (): void => {
      t0 = performance.now();
      a.write(toB);
    };
    a.on('data', (buf: Buffer) => {
      if (buf.indexOf('FAIL') >= 0) return reject(new Error(buf.toString('latin1')));
      pending += buf.toString('latin1');
      let i = pending.indexOf('\n');
      while (i >= 0) {
        const l = pending.slice(0, i);
        pending = pending.slice(i + 1);
        if (l.startsWith('PUSH:')) {
          times.push((performance.now() - t0) * 1000);
          if (times.length >= rounds) {
            a.removeAllListeners('data');
            b.removeAllListeners('data');
            resolve(times);
            return;
          }
          send();
        }
        i = pending.indexOf('\n');
      }
    });
    b.on('data', (buf: Buffer) => {
      if (buf.indexOf(pushMarker) < 0 && pendingB === '') return;
      pendingB += buf.toString('latin1');
      let i = pendingB.indexOf('\n');
      while (i >= 0) {
        const l = pendingB.slice(0, i);
        pendingB = pendingB.slice(i + 1);
        if (l.startsWith('PUSH:')) b.write(toA);
        i = pendingB.indexOf('\n');
      }
    });
    send();
  });
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i]!;
}
