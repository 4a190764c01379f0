// The idle memory reducer (PServer.IDLE_GC_MS, PServer.IDLE_GC_MB) in the real server: a burst of traffic grows the
// shard's heap; once the shard is quiet it collects and gives the memory back, and goes on serving; with
// IDLE_GC_MS = 0 it never does.

import { afterEach, describe, expect, it } from 'vitest';
import { device, type TestClient } from './helpers/client.ts';
import { metric } from './helpers/metrics.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';
import { sleep } from './helpers/shards.ts';

let srv: TestServer | null = null;
const clients: TestClient[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await srv?.stop();
  srv = null;
});

/**
 * 200,000 pushes from one device to another on the same shard, pipelined 2,000 at a time (the next ones go once these
 * are delivered, so a slow test box never makes the receiver a slow consumer), every one answered and delivered.
 */
async function burst(s: TestServer): Promise<void> {
  const a = await device(s.port, s.key, 'BURSTA');
  const b = await device(s.port, s.key, 'BURSTB');
  clients.push(a, b);
  const n = 200_000;
  const step = 2000;
  const payload = 'x'.repeat(100);
  const chunk = `TCP:PUSH:${s.key}:RID:BURSTB:${payload}\r\n`.repeat(step);
  const counted = (c: TestClient): { n: number } => {
    const seen = { n: 0 };
    c.socket.on('data', (d: Buffer) => {
      for (let i = d.indexOf(10); i >= 0; i = d.indexOf(10, i + 1)) seen.n++;
    });
    return seen;
  };
  const replies = counted(a);
  const delivered = counted(b);
  for (let sent = step; sent <= n; sent += step) {
    a.socket.write(chunk);
    while (delivered.n < sent || replies.n < sent) await sleep(1);
  }
  expect([replies.n, delivered.n]).toEqual([n, n]);
  expect(a.buffer).toBe('[OK:DATA_SENT]\r\n'.repeat(n));
  expect(b.buffer).toBe(`PUSH:${payload}\r\n`.repeat(n));
  a.buffer = '';
  b.buffer = '';
}

/** Waits up to `ms` for the metric to reach `min`; returns its last value. */
async function metricAtLeast(s: TestServer, series: string, min: number, ms: number): Promise<number> {
  const deadline = Date.now() + ms;
  let v = await metric(s, series);
  while (v < min && Date.now() < deadline) {
    await sleep(50);
    v = await metric(s, series);
  }
  return v;
}

describe('idle memory reducer (PServer.IDLE_GC_MS, PServer.IDLE_GC_MB)', () => {
  it('collects once the shard is quiet after a burst, gives committed heap back, and keeps serving', async () => {
    srv = await startTestServer({ PServer: { WORKERS: 1, IDLE_GC_MS: 100, IDLE_GC_MB: 1 } });
    await sleep(500);
    const n0 = await metric(srv, 'p2pc_idle_collections_total');
    const released0 = await metric(srv, 'p2pc_idle_released_bytes_total');
    const seconds0 = await metric(srv, 'p2pc_idle_collection_seconds_total');
    await burst(srv);
    expect(await metricAtLeast(srv, 'p2pc_idle_collections_total', n0 + 1, 10_000)).toBeGreaterThan(n0);
    expect((await metric(srv, 'p2pc_idle_released_bytes_total')) - released0).toBeGreaterThan(1_000_000);
    expect(await metric(srv, 'p2pc_idle_collection_seconds_total')).toBeGreaterThan(seconds0);
    const [a, b] = clients;
    expect(await a!.request(`TCP:PUSH:${srv.key}:RID:BURSTB:after`)).toBe('[OK:DATA_SENT]');
    expect(await b!.line()).toBe('PUSH:after');
    // Once the threads have settled (this process is the supervisor's thread: it collects too, after the test's own
    // burst), quiet and nothing growing: no more collections.
    await sleep(1000);
    const n = await metric(srv, 'p2pc_idle_collections_total');
    await sleep(600);
    expect(await metric(srv, 'p2pc_idle_collections_total')).toBe(n);
  });

  it('IDLE_GC_MS = 0: never', async () => {
    srv = await startTestServer({ PServer: { WORKERS: 1, IDLE_GC_MS: 0, IDLE_GC_MB: 1 } });
    expect(await metric(srv, 'p2pc_idle_collections_total')).toBe(0);
    await burst(srv);
    await sleep(1500);
    expect(await metric(srv, 'p2pc_idle_collections_total')).toBe(0);
  });
});
