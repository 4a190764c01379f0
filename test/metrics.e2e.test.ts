import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { device } from './helpers/client.ts';
import { metricOf } from './helpers/metrics.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';
import { openTotal, waitFor } from './helpers/shards.ts';

let srv: TestServer;
beforeAll(async () => {
  srv = await startTestServer();
});
afterAll(async () => {
  await srv?.stop();
});

async function scrape(): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${srv.httpPort}/metrics`);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toContain('text/plain');
  return res.text();
}

describe('operations endpoints (issue 10)', () => {
  it('/healthz and /readyz', async () => {
    const h = await fetch(`http://127.0.0.1:${srv.httpPort}/healthz`);
    expect([h.status, await h.text()]).toEqual([200, 'ok\n']);
    const r = await fetch(`http://127.0.0.1:${srv.httpPort}/readyz`);
    expect([r.status, await r.text()]).toEqual([200, '2/2 shards ready\n']);
  });

  it('/metrics counts registrations, pushes by target, deliveries, failures, presence and wills across shards', async () => {
    const before = await scrape();
    const regs0 = metricOf(before, 'p2pc_registrations_total');
    const devs = await Promise.all(Array.from({ length: 8 }, (_, i) => device(srv.port, srv.key, `MET${i}`)));
    const w = devs[0]!;
    expect(await w.request(`TCP:WATCH:${srv.key}:RID:MET7`)).toBe('[OK:WATCHING]');
    for (let i = 1; i < 8; i++) {
      expect(await devs[i]!.request(`TCP:PUSH:${srv.key}:RID:MET0:m${i}`)).toBe('[OK:DATA_SENT]');
      expect(await w.line()).toBe(`PUSH:m${i}`);
    }
    expect(await w.request(`TCP:PUSH:${srv.key}:RID:NOBODY:x`)).toBe('[FAIL:REM_ID]');
    expect(await devs[7]!.request(`TCP:WILL:${srv.key}:RID:MET1:gone`)).toBe('[OK:WILL_SET]');
    devs[7]!.socket.resetAndDestroy();
    expect(await w.line()).toBe('PRESENCE:MET7:OFFLINE');
    expect(await devs[1]!.line()).toBe('PUSH:gone');
    const after = await scrape();
    expect(metricOf(after, 'p2pc_registrations_total') - regs0).toBe(8);
    expect(metricOf(after, 'p2pc_pushes_total{target="RID"}')).toBeGreaterThanOrEqual(9);
    expect(metricOf(after, 'p2pc_deliveries_total')).toBeGreaterThanOrEqual(8);
    expect(metricOf(after, 'p2pc_failures_total{code="REM_ID"}')).toBeGreaterThanOrEqual(1);
    expect(metricOf(after, 'p2pc_presence_events_total')).toBeGreaterThanOrEqual(1);
    expect(metricOf(after, 'p2pc_wills_fired_total')).toBeGreaterThanOrEqual(1);
    expect(metricOf(after, 'p2pc_connections{shard="0"}') + metricOf(after, 'p2pc_connections{shard="1"}')).toBe(7);
    expect(metricOf(after, 'p2pc_shards_ready')).toBe(2);
    expect(after).toMatch(/^p2pc_event_loop_lag_p99_seconds\{shard="1"\} /m);
    expect(after).toMatch(/^p2pc_process_resident_memory_bytes /m);
    for (const d of devs) d.close();
  });

  it('delivery counters are exact after a known workload: 1,000 pipelined RID pushes across shards and a FRIENDS push', async () => {
    const key = srv.newKey();
    // Six devices with at least one on each shard (the kernel spreads connections: one that would leave a shard
    // empty is replaced by another under a fresh ID until both have one).
    const devs: Awaited<ReturnType<typeof device>>[] = [];
    const ids: string[] = [];
    const shards: number[] = [];
    for (let n = 0; devs.length < 6; n++) {
      if (n > 60) throw new Error('no connection landed on one of the shards');
      const id = `EX${n}`;
      const d = await device(srv.port, key, id);
      const list = (await (
        await fetch(`http://127.0.0.1:${srv.httpPort}/api/v1/accounts/me/devices`, {
          headers: { authorization: `Bearer ${key}` },
        })
      ).json()) as { devices: { id: string; shard: number }[] };
      const shard = list.devices.find((x) => x.id === id)!.shard;
      if (devs.length === 5 && shards.every((x) => x === shard)) {
        d.close();
        continue;
      }
      devs.push(d);
      ids.push(id);
      shards.push(shard);
    }
    // Wait until a replaced device's close is seen: FRIENDS below counts live devices.
    await waitFor(() => openTotal(srv) === devs.length, 'the server to see the replaced devices closed');
    const from = shards.indexOf(0);
    const to = shards.indexOf(1);
    expect(from, 'a device on shard 0').toBeGreaterThanOrEqual(0);
    expect(to, 'a device on shard 1').toBeGreaterThanOrEqual(0);
    const before = await scrape();
    let batch = '';
    for (let i = 0; i < 1000; i++) batch += `TCP:PUSH:${key}:RID:${ids[to]}:n${i}\r\n`;
    devs[from]!.write(batch);
    await devs[to]!.until((b) => b.split('\r\n').length > 1000, 10000, '1,000 pushes');
    await devs[from]!.until((b) => b.split('\r\n').length > 1000, 10000, '1,000 replies');
    devs[from]!.buffer = '';
    devs[to]!.buffer = '';
    expect(await devs[0]!.request(`TCP:PUSH:${key}:FRIENDS:all`)).toBe('[OK:ALL_5]');
    for (let i = 1; i < 6; i++) expect(await devs[i]!.line()).toBe('PUSH:all');
    const after = await scrape();
    const delta = (series: string): number => metricOf(after, series) - metricOf(before, series);
    expect(delta('p2pc_deliveries_total')).toBe(1005);
    expect(delta('p2pc_delivered_total{target="RID"}')).toBe(1000);
    expect(delta('p2pc_delivered_total{target="FRIENDS"}')).toBe(5);
    expect(delta('p2pc_pushes_total{target="RID"}')).toBe(1000);
    expect(delta('p2pc_pushes_total{target="FRIENDS"}')).toBe(1);
    for (const d of devs) d.close();
  });
});
