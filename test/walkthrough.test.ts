import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { device, TestClient } from './helpers/client.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

let srv: TestServer;
beforeAll(async () => {
  srv = await startTestServer();
});
afterAll(async () => {
  await srv?.stop();
});

describe('the README walkthrough (issue 2)', () => {
  it('registers, pushes RID and FRIENDS with exact bytes', async () => {
    const { port, key } = srv;
    const a = await TestClient.open(port);
    expect(await a.request(`TCP:ID:${key}:123`)).toBe('[OK:123]');
    const b = await TestClient.open(port);
    expect(await b.request(`TCP:ID:${key}:1234`)).toBe('[OK:1234]');
    expect(await a.request(`TCP:PUSH:${key}:RID:1234:Hello1234`)).toBe('[OK:DATA_SENT]');
    expect(await b.line()).toBe('PUSH:Hello1234');
    const c = await TestClient.open(port);
    expect(await c.request(`TCP:ID:${key}:12345`)).toBe('[OK:12345]');
    expect(await a.request(`TCP:PUSH:${key}:FRIENDS:Hello ALL`)).toBe('[OK:ALL_2]');
    expect(await b.line()).toBe('PUSH:Hello ALL');
    expect(await c.line()).toBe('PUSH:Hello ALL');
    expect(await a.silence(100)).toBe('');
    for (const x of [a, b, c]) x.close();
  });

  it('delivers across shards both ways (many pairs land on both shards)', async () => {
    const { port, key } = srv;
    const devs = await Promise.all(Array.from({ length: 16 }, (_, i) => device(port, key, `X${i}`)));
    for (let i = 0; i < devs.length; i++) {
      const from = devs[i]!;
      const to = devs[(i + 5) % devs.length]!;
      expect(await from.request(`TCP:PUSH:${key}:RID:X${(i + 5) % devs.length}:m${i}`)).toBe('[OK:DATA_SENT]');
      expect(await to.line()).toBe(`PUSH:m${i}`);
    }
    for (const d of devs) d.close();
  });
});
