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

/** A server whose accepted sockets read into one shared buffer; `onRead` sees each read's bytes (copied). */
async function sharedServer(
  onRead: (socket: Socket, bytes: Buffer) => void,
): Promise<{ port: number; accepted: Socket[] }> {
  const shared = Buffer.alloc(READ_SIZE);
  const accepted: Socket[] = [];
  const server = createServer((socket) => {
    accepted.push(socket);
    socket.on('data', () => {
      throw new Error('a socket reading into the shared buffer emitted data');
    });
    expect(
      useSharedReads(socket, shared, function (this: Socket, n, buf) {
        expect(buf).toBe(shared);
        onRead(this, Buffer.from(buf.subarray(0, n)));
      }),
    ).toBe(true);
  });
  servers.push(server);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { port: (server.address() as AddressInfo).port, accepted };
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
    expect(useSharedReads(s, Buffer.alloc(16), () => true)).toBe(false);
    s.destroy();
  });
});
