import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { device } from './helpers/client.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

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

function value(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  if (line === undefined) throw new Error(`no series ${series}`);
  return Number(line.slice(series.length + 1));
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
    const regs0 = value(before, 'p2pc_registrations_total');
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
    expect(value(after, 'p2pc_registrations_total') - regs0).toBe(8);
    expect(value(after, 'p2pc_pushes_total{target="RID"}')).toBeGreaterThanOrEqual(9);
    expect(value(after, 'p2pc_deliveries_total')).toBeGreaterThanOrEqual(8);
    expect(value(after, 'p2pc_failures_total{code="REM_ID"}')).toBeGreaterThanOrEqual(1);
    expect(value(after, 'p2pc_presence_events_total')).toBeGreaterThanOrEqual(1);
    expect(value(after, 'p2pc_wills_fired_total')).toBeGreaterThanOrEqual(1);
    expect(value(after, 'p2pc_connections{shard="0"}') + value(after, 'p2pc_connections{shard="1"}')).toBe(7);
    expect(value(after, 'p2pc_shards_ready')).toBe(2);
    expect(after).toMatch(/^p2pc_event_loop_lag_p99_seconds\{shard="1"\} /m);
    expect(after).toMatch(/^p2pc_process_resident_memory_bytes /m);
    for (const d of devs) d.close();
  });
});
