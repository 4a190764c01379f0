// Shared-buffer reads (src/shard/reads.ts) on real sockets: every byte in order, pause and resume, EOF, TLS refused.

import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { type AddressInfo, connect, createServer, type Server, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { READ_SIZE, sharedReadsSupported, useSharedReads } from '../src/shard/reads.ts';

const servers: Server[] = [];
afterEach(() => {
  for (const s of servers.splice(0)) s.close();
});

/**
 * A server whose accepted sockets read into one shared buffer; `onRead` sees each read's bytes (copied). With `fresh`,
 * every read after the first lands in a new buffer, which `onRead` may keep (no copy).
 */
async function sharedServer(
  onRead: (socket: Socket, bytes: Buffer) => void,
  fresh = false,
): Promise<{ port: number; accepted: Socket[]; closed: Promise<unknown>[] }> {
  const shared = Buffer.alloc(READ_SIZE);
  const accepted: Socket[] = [];
  const closed: Promise<unknown>[] = [];
  const server = createServer((socket) => {
    accepted.push(socket);
    closed.push(once(socket, 'close'));
    socket.on('data', () => {
      throw new Error('a socket reading into the shared buffer emitted data');
    });
    let expected = shared;
    const next = (): Buffer => {
      if (fresh) expected = Buffer.alloc(READ_SIZE);
      return expected;
    };
    const callback = function (this: Socket, n: number, buf: Buffer): void {
      expect(buf).toBe(expected);
      onRead(this, fresh && buf !== shared ? buf.subarray(0, n) : Buffer.from(buf.subarray(0, n)));
    };
    expect(useSharedReads(socket, shared, callback, next)).toBe(true);
  });
  servers.push(server);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { port: (server.address() as AddressInfo).port, accepted, closed };
}

describe('shared-buffer reads', () => {
  it('are available on the pinned Node (otherwise the shards silently fall back to a Buffer per read)', () => {
    expect(sharedReadsSupported).toBe(true);
  });

  it('deliver every byte in order from several connections read in the same turns', async () => {
    const got = new Map<Socket, Buffer[]>();
    const { port } = await sharedServer((s, b) => {
      const list = got.get(s) ?? [];
      list.push(b);
      got.set(s, list);
    });
    const payloads = [randomBytes(3 << 20), randomBytes(1 << 20), randomBytes(777)];
    const clients = await Promise.all(
      payloads.map(async (p) => {
        const c = connect(port, '127.0.0.1');
        await once(c, 'connect');
        c.end(p);
        return c;
      }),
    );
    const total = payloads.reduce((a, p) => a + p.length, 0);
    while ([...got.values()].flat().reduce((a, b) => a + b.length, 0) < total)
      await new Promise((r) => setTimeout(r, 10));
    const digests = [...got.values()].map((l) => createHash('sha256').update(Buffer.concat(l)).digest('hex')).sort();
    expect(digests).toEqual(payloads.map((p) => createHash('sha256').update(p).digest('hex')).sort());
    for (const c of clients) c.destroy();
  });

  it('land in the buffer `next` returned after the read before, which the reader may keep', async () => {
    const kept: Buffer[] = [];
    const { port, closed } = await sharedServer((_s, b) => kept.push(b), true);
    const c = connect(port, '127.0.0.1');
    await once(c, 'connect');
    const payload = randomBytes(4 << 20);
    c.end(payload);
    while (closed.length === 0) await new Promise((r) => setTimeout(r, 5));
    await closed[0];
    expect(kept.length).toBeGreaterThan(1);
    expect(Buffer.concat(kept).equals(payload)).toBe(true);
  });

  it('stop while paused and resume without losing a byte; EOF still closes the socket', async () => {
    let received = 0;
    let whilePaused = 0;
    const { port, accepted } = await sharedServer((s, b) => {
      if (s.isPaused()) whilePaused += b.length;
      received += b.length;
      if (received >= 1 << 20 && received - b.length < 1 << 20) s.pause();
    });
    const c = connect(port, '127.0.0.1');
    await once(c, 'connect');
    const payload = randomBytes(8 << 20);
    c.end(payload);
    while (received < 1 << 20) await new Promise((r) => setTimeout(r, 10));
    await new Promise((r) => setTimeout(r, 200));
    const held = received;
    expect(held).toBeLessThan(payload.length);
    expect(whilePaused).toBeLessThanOrEqual(READ_SIZE); // at most the read already under way
    const server = accepted[0]!;
    const closed = once(server, 'close');
    server.resume();
    await closed;
    expect(received).toBe(payload.length);
  });

  it('are refused for a socket without a stream handle', () => {
    const s = connect({ port: 1, host: '127.0.0.1' });
    s.on('error', () => {});
    (s as unknown as { _handle: unknown })._handle = null;
    expect(
      useSharedReads(
        s,
        Buffer.alloc(16),
        () => true,
        () => Buffer.alloc(16),
      ),
    ).toBe(false);
    s.destroy();
  });
});
