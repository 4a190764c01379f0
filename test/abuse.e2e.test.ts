// End-to-end tests of the abuse limits of issue 5 (docs/security.md "Limits against hostile clients") against the
// real server: the auth-failure throttle (NODE.AUTH_FAILS) and the connection rate (PServer.IP_VELOCITY) per
// remote address, the memory guard (PServer.MAX_RSS_MB), the pre-registration restriction (PROTOCOL.md §4), and
// the operator API's credentials check on every route of its OpenAPI document (and the legacy endpoints), with a
// scan of every response for KEYs that are not the caller's own.
//
// The per-address limits are tested from distinct loopback addresses (127.0.0.x, all of which reach the server on
// 127.0.0.1), so each scenario starts from a clean count and "another address" is a real other address.

import { randomBytes } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { hstcpMac } from '../src/protocol/secure.ts';
import { TestClient } from './helpers/client.ts';
import { ADMIN_TOKEN, startTestServer, type TestServer } from './helpers/server.ts';
import { openTotal, sleep, waitFor } from './helpers/shards.ts';

const opened: TestClient[] = [];

async function openFrom(port: number, localAddress = '127.0.0.1'): Promise<TestClient> {
  const c = await TestClient.open(port, '127.0.0.1', localAddress);
  opened.push(c);
  return c;
}

async function closeAll(srv: TestServer): Promise<void> {
  for (const c of opened.splice(0)) c.close();
  await waitFor(() => openTotal(srv) === 0, 'the server to see every connection of the test closed');
}

// Loopback source addresses, never reused within this file (the address table hashes them to distinct buckets).
let lastAddr = 9;
const nextAddr = (): string => {
  if (lastAddr >= 40) throw new Error('out of test addresses');
  return `127.0.0.${++lastAddr}`;
};

/**
 * Runs a per-minute scenario with fresh source addresses. The counters use fixed one-minute windows: if the
 * scenario fails and the window changed while it ran, it is run once more, with new addresses.
 */
async function inOneWindow(scenario: (addr: string, other: string) => Promise<void>): Promise<void> {
  const minute = Math.floor(Date.now() / 60000);
  try {
    await scenario(nextAddr(), nextAddr());
  } catch (err) {
    if (Math.floor(Date.now() / 60000) === minute) throw err;
    for (const c of opened.splice(0)) c.close();
    await scenario(nextAddr(), nextAddr());
  }
}

// ------------------------------------------------------------------ NODE.AUTH_FAILS

describe('NODE.AUTH_FAILS (5 a minute per address)', () => {
  let srv: TestServer;
  let uid: string;
  let key: string;
  beforeAll(async () => {
    srv = await startTestServer({ NODE: { AUTH_FAILS: 5 } });
    uid = `authfails-${process.pid}@abuse.example`;
    key = srv.newKey(uid);
  });
  afterAll(async () => {
    await srv?.stop();
  });
  afterEach(async () => {
    await closeAll(srv);
  });

  it('counts INVALID_KEY and INVALID_USERID across connections; the 6th is [FAIL:RATE_LIMIT] and closes; the address is refused, others are not', async () => {
    await inOneWindow(async (addr, other) => {
      const port = srv.port;
      const a = await openFrom(port, addr);
      expect(await a.request(`TCP:ID:${'0'.repeat(32)}:X`)).toBe('[FAIL:INVALID_KEY]'); // 1
      expect(await a.request(`STCP:nobody-${process.pid}@abuse.example:ACTIVATE:`)).toBe('[FAIL:INVALID_USERID]'); // 2
      a.close();
      const b = await openFrom(port, addr);
      expect(await b.request('TCP:ID:not-a-key:X')).toBe('[FAIL:INVALID_KEY]'); // 3
      // A session MAC that does not verify counts too.
      const act = await b.request(`HSTCP:${uid}:ACTIVATE:12345678:`);
      const rnd = /^\[OK:([0-9A-F]{16}):[0-9A-F]{64}\]$/.exec(act)?.[1];
      expect(rnd, act).toBeDefined();
      expect(await b.request(`TCP:ID:${hstcpMac(key, rnd!, 2, 'TCP:ID::B')}:B`)).toBe('[FAIL:INVALID_KEY]'); // 4
      expect(await b.request(`TCP:ID:${hstcpMac(key, rnd!, 1, 'TCP:ID::B')}:B`)).toBe('[OK:B]');
      const c = await openFrom(port, addr);
      expect(await c.request(`HSTCP:nobody-${process.pid}@abuse.example:ACTIVATE:12345678:`)).toBe(
        '[FAIL:INVALID_USERID]',
      ); // 5
      // The 6th: RATE_LIMIT, the connection is closed, and what followed in the same write never runs.
      c.write(`TCP:ID:${'1'.repeat(32)}:X\r\nTCP:ID:${key}:NEVER\r\n`);
      expect(await c.line()).toBe('[FAIL:RATE_LIMIT]');
      await c.closedByServer();
      expect(c.buffer).toBe('');

      // New connections from the address: refused.
      for (let i = 0; i < 3; i++) {
        const d = await openFrom(port, addr);
        await d.closedByServer();
        expect(d.buffer).toBe('[FAIL:RATE_LIMIT]\r\n');
      }
      // Another address is served, and NEVER was not registered.
      const e = await openFrom(port, other);
      expect(await e.request(`TCP:ID:${key}:E`)).toBe('[OK:E]');
      expect(await e.request(`TCP:PUSH:${key}:RID:NEVER:x`)).toBe('[FAIL:REM_ID]');
      // The connection that was open before the limit keeps working; a further failure on it closes it.
      expect(b.closed).toBe(false);
      expect(await b.request(`TCP:PUSH:${hstcpMac(key, rnd!, 2, 'TCP:PUSH::RID:E:hi')}:RID:E:hi`)).toBe(
        '[OK:DATA_SENT]',
      );
      expect(await e.line()).toBe('PUSH:hi');
      expect(await b.request(`TCP:GID:${key}`)).toBe('[FAIL:RATE_LIMIT]');
      await b.closedByServer();
      // Its ID is released (the close reaches the ID's owner shard asynchronously).
      let r = '';
      const deadline = Date.now() + 5000;
      while (Date.now() < deadline) {
        r = await e.request(`TCP:PUSH:${key}:RID:B:x`);
        if (r !== '[OK:DATA_SENT]') break;
        await sleep(20);
      }
      expect(r).toBe('[FAIL:REM_ID]');
    });
  });

  it('other failures (NOID, NOKEY, formats, unknown commands, long lines) are never counted', async () => {
    await inOneWindow(async (addr) => {
      const port = srv.port;
      const other = srv.newKey();
      const c = await openFrom(port, addr);
      let burst = '';
      const want: string[] = [];
      for (let i = 0; i < 20; i++) {
        burst += `TCP:GID:${'0'.repeat(32)}\r\nTCP:PUSH:garbage:RID:X:y\r\nHELLO\r\nTCP:FOO:bar\r\n`;
        burst += `STCP:${uid}:ACTIVATE:1234567:\r\nHSTCP:${uid}:ACTIVATE:\r\nTCP:ID\r\n${'z'.repeat(5000)}\r\n`;
        want.push(
          '[FAIL:NOID]',
          '[FAIL:NOID]',
          '[FAIL:UNKNOWN_COMMAND]',
          '[FAIL:INVALID_CMD]',
          '[FAIL:INVALID_FORMAT]',
          '[FAIL:INVALID_FORMAT]',
          '[FAIL:INVALID_FORMAT]',
          '[FAIL:LINE_TOO_LONG]',
        );
      }
      c.write(burst);
      expect(await c.lines(want.length)).toEqual(want);
      expect(await c.request(`TCP:ID:${key}:NOKEY1`)).toBe('[OK:NOKEY1]');
      for (let i = 0; i < 20; i++) expect(await c.request(`TCP:GID:${other}`)).toBe('[FAIL:NOKEY]');
      // Still a clean slate: exactly five auth failures are answered as such, the sixth is throttled.
      for (let i = 0; i < 5; i++) expect(await c.request(`TCP:GID:${'0'.repeat(32)}`)).toBe('[FAIL:INVALID_KEY]');
      expect(await c.request(`TCP:GID:${key}`)).toBe('[OK:NOKEY1]');
      expect(await c.request(`TCP:GID:${'0'.repeat(32)}`)).toBe('[FAIL:RATE_LIMIT]');
      await c.closedByServer();
    });
  });
});

// ------------------------------------------------------------------ PServer.IP_VELOCITY

describe('PServer.IP_VELOCITY (5 new connections a minute per address)', () => {
  let srv: TestServer;
  beforeAll(async () => {
    srv = await startTestServer({ PServer: { IP_VELOCITY: 5 } });
  });
  afterAll(async () => {
    await srv?.stop();
  });
  afterEach(async () => {
    await closeAll(srv);
  });

  it('admits five connections from an address, then answers [FAIL:RATE_LIMIT] and closes; other addresses are admitted', async () => {
    await inOneWindow(async (addr, other) => {
      const { port, key } = srv;
      const devs: TestClient[] = [];
      for (let i = 0; i < 5; i++) {
        const d = await openFrom(port, addr);
        expect(await d.request(`TCP:ID:${key}:IPV${i}`)).toBe(`[OK:IPV${i}]`);
        devs.push(d);
      }
      for (let i = 0; i < 3; i++) {
        const x = await openFrom(port, addr);
        await x.closedByServer();
        expect(x.buffer).toBe('[FAIL:RATE_LIMIT]\r\n');
      }
      // A rate, not a concurrency limit: closing one admits nobody new this minute.
      devs[4]!.close();
      await waitFor(() => openTotal(srv) === 4, 'the close to reach the server');
      const y = await openFrom(port, addr);
      await y.closedByServer();
      expect(y.buffer).toBe('[FAIL:RATE_LIMIT]\r\n');
      // The admitted connections are unaffected.
      expect(await devs[0]!.request(`TCP:PUSH:${key}:FRIENDS:still`)).toBe('[OK:ALL_3]');
      for (const i of [1, 2, 3]) expect(await devs[i]!.line()).toBe('PUSH:still');
      // Another address has its own budget.
      for (let i = 0; i < 5; i++) {
        const d = await openFrom(port, other);
        expect(await d.request(`TCP:ID:${key}:OTH${i}`)).toBe(`[OK:OTH${i}]`);
      }
      const z = await openFrom(port, other);
      await z.closedByServer();
      expect(z.buffer).toBe('[FAIL:RATE_LIMIT]\r\n');
    });
  });
});

// ------------------------------------------------------------------ PServer.MAX_RSS_MB

describe('PServer.MAX_RSS_MB', () => {
  it('1 MB (always exceeded): new connections get [FAIL:SERVER_FULL] and are closed; the operator API still answers', async () => {
    const srv = await startTestServer({ PServer: { MAX_RSS_MB: 1 } });
    try {
      await sleep(1500); // the shards' sweep refreshes the RSS sample at most every second
      for (let i = 0; i < 3; i++) {
        const c = await openFrom(srv.port);
        await c.closedByServer();
        expect(c.buffer).toBe('[FAIL:SERVER_FULL]\r\n');
      }
      const r = await fetch(`http://127.0.0.1:${srv.httpPort}/api/v1/health`);
      expect(r.status).toBe(200);
      expect(await r.json()).toEqual({ status: 'ok', shards: 2 });
    } finally {
      for (const c of opened.splice(0)) c.close();
      await srv.stop();
    }
  });

  it('a threshold well above the process RSS admits connections', async () => {
    const mb = Math.ceil(process.memoryUsage.rss() / 1048576) + 4096;
    const srv = await startTestServer({ PServer: { MAX_RSS_MB: mb } });
    try {
      await sleep(1500);
      const a = await openFrom(srv.port);
      const b = await openFrom(srv.port);
      expect(await a.request(`TCP:ID:${srv.key}:RSSA`)).toBe('[OK:RSSA]');
      expect(await b.request(`TCP:ID:${srv.key}:RSSB`)).toBe('[OK:RSSB]');
      expect(await a.request(`TCP:PUSH:${srv.key}:RID:RSSB:ok`)).toBe('[OK:DATA_SENT]');
      expect(await b.line()).toBe('PUSH:ok');
    } finally {
      for (const c of opened.splice(0)) c.close();
      await srv.stop();
    }
  });
});

// ------------------------------------------------------------------ pre-registration and the operator API

describe('default limits', () => {
  let srv: TestServer;
  beforeAll(async () => {
    srv = await startTestServer();
  });
  afterAll(async () => {
    await srv?.stop();
  });
  afterEach(async () => {
    await closeAll(srv);
  });

  it('before TCP:ID every sub-command but ID answers [FAIL:NOID], whatever its KEY, and has no effect', async () => {
    const { port, key } = srv;
    const target = await openFrom(port);
    expect(await target.request(`TCP:ID:${key}:PRETARGET`)).toBe('[OK:PRETARGET]');
    const rests = [
      'GID',
      'REMID',
      'PUSH:{K}:RID:PRETARGET:x',
      'PUSH:{K}:FRIENDS:x',
      'PUSH:{K}:CHILDS:x',
      'PUSH:{K}:ALLCHILDS:x',
      'PUSH:{K}:PARENT:x',
      'PUSH:{K}:RO:R:x',
      'PUSH:{K}:ALIAS:A:x',
      'PUSH:{K}:RAW:PRETARGET',
      'PUSH:{K}:NOSUCHTARGET:x',
      'PUSH:{K}',
      'TIME:{K}:+05:30',
      'TIME:{K}:+05:30:ISO',
      'EMAIL:{K}:to@x.example:subject:body',
      'SMS:{K}:+15550100:text',
      'RETDATA:{K}:1',
      'RETDATA:{K}:0',
      'RETDATA:{K}',
      'STATUS:{K}:PRETARGET',
      'WATCH:{K}:RID:PRETARGET',
      'UNWATCH:{K}:RID:PRETARGET',
      'WILL:{K}:RID:PRETARGET:bye',
      'WILL:{K}:CLEAR',
    ];
    const keys = [key, key.toLowerCase(), '0'.repeat(32), 'garbage', ''];
    const lines: string[] = [];
    for (const k of keys) {
      for (const r of rests) lines.push(`TCP:${r.includes('{K}') ? r.replace('{K}', k) : `${r}:${k}`}`);
    }
    lines.push('TCP:GID', 'TCP:REMID', 'TCP:PUSH', 'TCP:RETDATA');
    const c = await openFrom(port);
    c.write(lines.map((l) => `${l}\r\n`).join(''));
    expect(await c.lines(lines.length)).toEqual(Array(lines.length).fill('[FAIL:NOID]'));
    // ID itself is checked (KEY, then data); an unknown sub-command is INVALID_CMD.
    expect(await c.request(`TCP:ID:${'0'.repeat(32)}:PRE`)).toBe('[FAIL:INVALID_KEY]');
    expect(await c.request(`TCP:ID:${key}:bad id`)).toBe('[FAIL:INVALID_DATA]');
    expect(await c.request(`TCP:NOPE:${key}`)).toBe('[FAIL:INVALID_CMD]');
    // The secure-session commands are accepted before registration.
    expect(await c.request(`STCP:${srv.embedded!.accountByKey(key)!.email}:ACTIVATE:`)).toMatch(/^\[OK:[0-9A-F]{8}\]$/);
    expect(await c.request(`STCP:${srv.embedded!.accountByKey(key)!.email}:DEACTIVATE:`)).toBe('[OK:STCP_DEACTIVATED]');
    expect(await c.request(`DSTCP:${srv.embedded!.accountByKey(key)!.email}:ACTIVATE:`)).toMatch(
      /^\[OK:[0-9A-F]{8}\]$/,
    );
    expect(await c.request(`DSTCP:${srv.embedded!.accountByKey(key)!.email}:DEACTIVATE:`)).toBe(
      '[OK:DSTCP_DEACTIVATED]',
    );
    expect(await c.request(`HSTCP:${srv.embedded!.accountByKey(key)!.email}:ACTIVATE:12345678:`)).toMatch(
      /^\[OK:[0-9A-F]{16}:[0-9A-F]{64}\]$/,
    );
    // Nothing reached the target (no push, no will when the unregistered connection goes).
    c.close();
    expect(await target.silence(200)).toBe('');
    // And a registration works on a connection that was refused all of that.
    const d = await openFrom(port);
    d.write(
      lines
        .slice(0, rests.length)
        .map((l) => `${l}\r\n`)
        .join(''),
    );
    expect(await d.lines(rests.length)).toEqual(Array(rests.length).fill('[FAIL:NOID]'));
    expect(await d.request(`TCP:ID:${key}:PRE`)).toBe('[OK:PRE]');
    expect(await d.request(`TCP:GID:${key}`)).toBe('[OK:PRE]');
    expect(await d.request(`TCP:PUSH:${key}:RID:PRETARGET:now`)).toBe('[OK:DATA_SENT]');
    expect(await target.line()).toBe('PUSH:now');
    // HTTP is accepted on a fresh connection.
    const h = await openFrom(port);
    h.write('GET /api/v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    await h.closedByServer();
    expect(h.buffer.startsWith('HTTP/1.1 200 OK\r\n')).toBe(true);
    expect(h.buffer.endsWith('{"status":"ok","shards":2}')).toBe(true);
  });

  it('every operator API route refuses calls without the right credentials, and no response leaks a KEY', async () => {
    const store = srv.embedded!;
    const victim = `victim-${process.pid}@abuse.example`;
    const victimKey = srv.newKey(victim, 3);
    const attackerKey = srv.newKey(`attacker-${process.pid}@abuse.example`);
    const admin = (method: string, path: string, body?: unknown): Promise<Res> =>
      call(srv.httpPort, method, path, `Bearer ${ADMIN_TOKEN}`, body);
    const acctPath = `/api/v1/accounts/${encodeURIComponent(victim)}`;
    expect((await admin('POST', `${acctPath}/tree/nodes`, { id: 'N1' })).status).toBe(201);
    expect((await admin('POST', `${acctPath}/tree/nodes`, { id: 'N2', parent: 'N1' })).status).toBe(201);
    expect((await admin('POST', `${acctPath}/routers`, { name: 'RT' })).status).toBe(201);
    expect((await admin('PUT', `${acctPath}/routers/RT/members/N1`)).status).toBe(204);
    expect((await admin('PUT', `${acctPath}/aliases/AL`, { targets: ['N1'] })).status).toBe(200);
    const dev = await openFrom(srv.port);
    expect(await dev.request(`TCP:ID:${victimKey}:N1`)).toBe('[OK:N1]');

    const spec = await call(srv.httpPort, 'GET', '/api/v1/openapi.json', null);
    expect(spec.status).toBe(200);
    const paths = spec.body.paths as Record<string, Record<string, { security?: unknown[] }>>;
    const routes: { method: string; path: string; template: string; public: boolean }[] = [];
    for (const [template, item] of Object.entries(paths)) {
      for (const method of ['get', 'post', 'put', 'patch', 'delete']) {
        const op = item[method];
        if (op === undefined) continue;
        const name = template.includes('/aliases/') ? 'AL' : 'RT';
        const path = template
          .replace('{account}', encodeURIComponent(victim))
          .replace('{id}', 'N1')
          .replace('{name}', name);
        expect(path, template).not.toContain('{');
        routes.push({ method: method.toUpperCase(), path, template, public: Array.isArray(op.security) });
      }
    }
    // Public: what the document declares with `security: []`; health and the document itself at least.
    const publicRoutes = routes.filter((r) => r.public).map((r) => `${r.method} ${r.template}`);
    expect(publicRoutes).toContain('GET /api/v1/health');
    expect(publicRoutes).toContain('GET /api/v1/openapi.json');
    expect(publicRoutes.every((r) => r.startsWith('GET '))).toBe(true);
    expect(routes.filter((r) => r.template.startsWith('/api/v1/accounts') && r.public)).toEqual([]);
    expect(routes.length).toBeGreaterThanOrEqual(20);
    // Bodies that would succeed if the call were allowed.
    const bodyOf = (method: string, template: string): unknown => {
      if (method === 'POST' && template === '/api/v1/accounts') return { email: `evil-${process.pid}@abuse.example` };
      if (template.endsWith('/level')) return { level: 1 };
      if (template.endsWith('/tree/nodes')) return { id: 'EVIL1', parent: 'N1' };
      if (method === 'PATCH') return { id: 'EVIL2' };
      if (method === 'POST' && template.endsWith('/routers')) return { name: 'EVILR' };
      if (template.includes('/aliases/')) return { targets: ['N2'] };
      return undefined;
    };

    const allKeys = (): string[] => store.listAccounts().map((a) => a.key);
    const leaks = (text: string, own: string[]): string[] =>
      (text.match(/[0-9A-Fa-f]{32}/g) ?? []).filter((h) => !own.includes(h.toUpperCase()));
    const accountsBefore = store.countAccounts();
    const treeBefore = (await admin('GET', `${acctPath}/tree`)).text;

    const bad: [string, string | null, number][] = [
      ['no Authorization', null, 401],
      ['an empty bearer', 'Bearer ', 401],
      ['garbage', 'Bearer garbage', 401],
      ['a KEY-shaped unknown bearer', `Bearer ${randomBytes(16).toString('hex').toUpperCase()}`, 401],
      ['the admin token plus one character', `Bearer ${ADMIN_TOKEN}x`, 401],
      ['the admin token under another scheme', `Basic ${ADMIN_TOKEN}`, 401],
      ['the admin token without a scheme', ADMIN_TOKEN, 401],
      ["another account's KEY", `Bearer ${attackerKey}`, 403],
      ["another account's KEY in lower case", `Bearer ${attackerKey.toLowerCase()}`, 403],
    ];
    for (const port of [srv.httpPort, srv.port]) {
      for (const r of routes) {
        if (r.public) continue;
        for (const [what, auth, status] of bad) {
          const res = await call(port, r.method, r.path, auth, bodyOf(r.method, r.template));
          const where = `${r.method} ${r.path} with ${what} (port ${port === srv.port ? 'device' : 'http'})`;
          expect({ status: res.status, error: res.body?.error }, where).toEqual({
            status,
            error: status === 401 ? 'UNAUTHORIZED' : 'FORBIDDEN',
          });
          expect(leaks(res.text, []), where).toEqual([]);
        }
      }
    }
    // The public routes carry no KEY.
    for (const r of routes.filter((x) => x.public)) {
      const res = await call(srv.httpPort, r.method, r.path, null);
      expect(res.status).toBe(200);
      expect(leaks(res.text, []), r.path).toEqual([]);
    }
    // Nothing changed.
    expect(store.countAccounts()).toBe(accountsBefore);
    expect(store.accountByKey(victimKey)?.email).toBe(victim);
    expect(store.accountByKey(victimKey)?.level).toBe(3);
    expect((await admin('GET', `${acctPath}/tree`)).text).toBe(treeBefore);
    expect((await admin('GET', `${acctPath}/routers`)).body).toEqual({ routers: [{ name: 'RT', members: ['N1'] }] });
    expect((await admin('GET', `${acctPath}/aliases`)).body).toEqual({ aliases: [{ name: 'AL', targets: ['N1'] }] });
    expect(await dev.request(`TCP:GID:${victimKey}`)).toBe('[OK:N1]');

    // The victim's own KEY, route by route in an order that keeps every call meaningful: admin-only routes are
    // 403, its own routes answer, and no body holds a KEY other than its own (the reset returns the new one).
    const own = [victimKey];
    const ownPass: [string, string, Record<string, string>, unknown, number][] = [
      ['GET', '/api/v1/accounts', {}, undefined, 403],
      ['POST', '/api/v1/accounts', {}, { email: `own-${process.pid}@abuse.example` }, 403],
      ['GET', '/api/v1/accounts/{account}', {}, undefined, 200],
      ['GET', '/api/v1/accounts/{account}/devices', {}, undefined, 200],
      ['GET', '/api/v1/accounts/{account}/tree', {}, undefined, 200],
      ['GET', '/api/v1/accounts/{account}/routers', {}, undefined, 200],
      ['GET', '/api/v1/accounts/{account}/routers/{name}', { name: 'RT' }, undefined, 200],
      ['GET', '/api/v1/accounts/{account}/aliases', {}, undefined, 200],
      ['POST', '/api/v1/accounts/{account}/tree/nodes', {}, { id: 'OWN1', parent: 'N1' }, 201],
      ['PATCH', '/api/v1/accounts/{account}/tree/nodes/{id}', { id: 'OWN1' }, { id: 'OWN2' }, 200],
      ['DELETE', '/api/v1/accounts/{account}/tree/nodes/{id}', { id: 'OWN2' }, undefined, 200],
      ['POST', '/api/v1/accounts/{account}/routers', {}, { name: 'OWNR' }, 201],
      ['PUT', '/api/v1/accounts/{account}/routers/{name}/members/{id}', { name: 'OWNR', id: 'N1' }, undefined, 204],
      ['DELETE', '/api/v1/accounts/{account}/routers/{name}/members/{id}', { name: 'OWNR', id: 'N1' }, undefined, 204],
      ['DELETE', '/api/v1/accounts/{account}/routers/{name}', { name: 'OWNR' }, undefined, 204],
      ['PUT', '/api/v1/accounts/{account}/aliases/{name}', { name: 'OWNA' }, { targets: ['N1'] }, 200],
      ['DELETE', '/api/v1/accounts/{account}/aliases/{name}', { name: 'OWNA' }, undefined, 204],
      ['PUT', '/api/v1/accounts/{account}/level', {}, { level: 1 }, 403],
      ['DELETE', '/api/v1/accounts/{account}', {}, undefined, 403],
      ['POST', '/api/v1/accounts/{account}/key', {}, undefined, 200],
      ['GET', '/api/v1/accounts/{account}', {}, undefined, 200],
    ];
    // Routes added to the API after this list was written: GETs must answer 200, the rest are only scanned.
    const listed = new Set(ownPass.map(([m, t]) => `${m} ${t}`));
    const extra = routes.filter((r) => !r.public && !listed.has(`${r.method} ${r.template}`));
    for (const r of extra) {
      ownPass.splice(ownPass.length - 2, 0, [
        r.method,
        r.template,
        { id: 'N1', name: 'RT' },
        bodyOf(r.method, r.template),
        0,
      ]);
    }
    for (const [method, template, params, body, status] of ownPass) {
      const path = template
        .replace('{account}', encodeURIComponent(victim))
        .replace('{id}', params.id ?? '')
        .replace('{name}', params.name ?? '');
      const res = await call(srv.httpPort, method, path, `Bearer ${own.at(-1)}`, body);
      const where = `${method} ${path} with the account's own KEY`;
      if (status !== 0) expect(res.status, `${where}: ${res.text}`).toBe(status);
      else if (method === 'GET') expect(res.status, `${where}: ${res.text}`).toBe(200);
      if (template.endsWith('/key')) {
        const next = res.body.key as string;
        expect(next).toMatch(/^[0-9A-F]{32}$/);
        expect(next).not.toBe(victimKey);
        own.push(next);
      }
      expect(leaks(res.text, own), where).toEqual([]);
    }
    expect(own.length).toBe(2);
    // The old KEY is dead; admin responses are the only ones that carry a KEY the caller did not send.
    expect((await call(srv.httpPort, 'GET', acctPath, `Bearer ${victimKey}`)).status).toBe(401);
    const viaAdmin = await admin('GET', acctPath);
    expect(viaAdmin.body.key).toBe(own[1]);
    expect(allKeys()).toContain(own[1]);
  });

  it('the legacy endpoints refuse calls without a valid KEY, password or token, and leak no KEY', async () => {
    const victim = `legacy-victim-${process.pid}@abuse.example`;
    const victimKey = srv.newKey(victim);
    const garbage = randomBytes(16).toString('hex');
    const cases: [string, string][] = [
      [`/USERAUTH?token=${garbage}`, 'FAIL:INVALID_TOKEN'],
      [`/USERAUTH`, 'FAIL:INVALID_FORMAT'],
      [`/USERKEYRESET?username=${victim}&password=wrong`, 'FAIL:INVALID_USERID'],
      [`/USERKEYRESET?username=${victim}`, 'FAIL:INVALID_FORMAT'],
      [`/USERPASSRESET?username=${victim}&password=wrong&newpassword=x`, 'FAIL:INVALID_USERID'],
      [`/USERDEL?username=${victim}&password=wrong`, 'FAIL:INVALID_USERID'],
    ];
    for (const p of ['/ADDNODE', '/GETTREE', '/DELNODE', '/UPDATENODE', '/DEPTH', '/PARENT', '/CHILD']) {
      cases.push([`${p}?KEY=${garbage}&PNODE=N1&NODE=N2`, 'FAIL:INVALID_KEY']);
      cases.push([`${p}?PNODE=N1&NODE=N2`, 'FAIL:INVALID_FORMAT']);
    }
    for (const p of ['/ADDINTROUTER', '/ADDNODEINTROUTER', '/DELNODEINTROUTER', '/DELINTROUTER', '/GETINTROUTER']) {
      cases.push([`${p}?KEY=garbage&ROID=R&NOID=N1`, 'FAIL:INVALID_KEY']);
    }
    for (const port of [srv.httpPort, srv.port]) {
      for (const [path, want] of cases) {
        const res = await call(port, 'GET', path, null);
        expect({ status: res.status, text: res.text }, path).toEqual({ status: 200, text: want });
      }
    }
    expect(srv.embedded!.accountByKey(victimKey)?.email).toBe(victim);
  });
});

interface Res {
  status: number;
  // biome-ignore lint/suspicious/noExplicitAny: JSON bodies are checked field by field
  body: any;
  text: string;
}

/** One HTTP call on its own connection (closed after the response, so the device port's counters settle). */
function call(port: number, method: string, path: string, auth: string | null, body?: unknown): Promise<Res> {
  const payload = body === undefined ? undefined : JSON.stringify(body);
  const headers: Record<string, string> = {};
  if (auth !== null) headers.authorization = auth;
  if (payload !== undefined) {
    headers['content-type'] = 'application/json';
    headers['content-length'] = String(Buffer.byteLength(payload));
  }
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, method, path, headers, agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      // An event stream never ends: its first events (the console's topology and state) are what is checked.
      const stream = (res.headers['content-type'] ?? '').startsWith('text/event-stream');
      res.on('data', (d: string) => {
        text += d;
        if (stream && text.includes('event: state')) {
          resolve({ status: res.statusCode ?? 0, body: undefined, text });
          req.destroy();
        }
      });
      res.on('end', () => {
        let parsed: unknown;
        try {
          parsed = text === '' ? undefined : JSON.parse(text);
        } catch {
          parsed = undefined;
        }
        resolve({ status: res.statusCode ?? 0, body: parsed, text });
      });
    });
    req.on('error', reject);
    req.end(payload);
  });
}
