// End-to-end tests of the operator REST API (PROTOCOL.md §8, issue 3) over real HTTP against the real server:
// exact status codes and JSON bodies, validation errors naming the field, account isolation, malformed and
// oversized requests, unknown routes and methods, the OpenAPI document, and the same API on the device port.

import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestClient } from './helpers/client.ts';
import { suiteServer } from './helpers/devices.ts';
import { ADMIN_TOKEN, startTestServer, type TestServer } from './helpers/server.ts';
import { openTotal, sleep, waitFor } from './helpers/shards.ts';

const MAX_BODY = 4096;
let srv: TestServer;
const { opened, dev, devOn } = suiteServer((s) => (srv = s), { HTTP: { MAX_BODY } });

// ------------------------------------------------------------------ helpers

interface Res {
  status: number;
  // biome-ignore lint/suspicious/noExplicitAny: JSON bodies are checked with toEqual
  body: any;
  text: string;
  type: string | null;
}

/** One HTTP call; auth defaults to the admin token, null sends no Authorization header. */
async function call(
  method: string,
  path: string,
  opts: { auth?: string | null; body?: unknown; raw?: string; port?: number; headers?: Record<string, string> } = {},
): Promise<Res> {
  const headers: Record<string, string> = { ...opts.headers };
  const auth = opts.auth === undefined ? ADMIN_TOKEN : opts.auth;
  if (auth !== null) headers.authorization = `Bearer ${auth}`;
  const body = opts.raw ?? (opts.body === undefined ? undefined : JSON.stringify(opts.body));
  if (body !== undefined) headers['content-type'] = 'application/json';
  const r = await fetch(`http://127.0.0.1:${opts.port ?? srv.httpPort}${path}`, { method, headers, body });
  const text = await r.text();
  let parsed: unknown;
  try {
    parsed = text === '' ? undefined : JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  return { status: r.status, body: parsed, text, type: r.headers.get('content-type') };
}

function expectError(r: Res, status: number, error: string, field?: string): void {
  expect({ status: r.status, body: r.body }).toEqual({
    status,
    body: { error, message: expect.any(String), ...(field === undefined ? {} : { field }) },
  });
  expect(r.type).toBe('application/json; charset=utf-8');
}

let mails = 0;
const mail = (tag: string): string => `${tag}-${++mails}-${process.pid}@api.example`;

/** Creates an account through the API and returns its e-mail and KEY. */
async function account(level?: number): Promise<{ email: string; key: string; path: string }> {
  const email = mail('acct');
  const r = await call('POST', '/api/v1/accounts', { body: level === undefined ? { email } : { email, level } });
  expect(r.status).toBe(201);
  return { email, key: r.body.key as string, path: `/api/v1/accounts/${encodeURIComponent(email)}` };
}

/** Everything visible of an account's topology, read as admin. */
async function snapshot(path: string): Promise<unknown> {
  const [tree, routers, aliases, acct] = await Promise.all([
    call('GET', `${path}/tree`),
    call('GET', `${path}/routers`),
    call('GET', `${path}/aliases`),
    call('GET', path),
  ]);
  return { tree: tree.body, routers: routers.body, aliases: aliases.body, account: acct.body };
}

/** A raw HTTP/1.1 exchange over TCP (for the device port), parsed by content-length. */
async function rawHttp(port: number, request: string): Promise<{ status: number; type: string; body: string }> {
  const c = await TestClient.open(port);
  opened.push(c);
  c.write(request);
  const complete = (b: string): boolean => {
    const h = b.indexOf('\r\n\r\n');
    if (h < 0) return false;
    const len = /\r\ncontent-length:\s*(\d+)/i.exec(b.slice(0, h));
    return len !== null && Buffer.byteLength(b.slice(h + 4), 'latin1') >= Number(len[1]);
  };
  await c.until(complete, 5000, 'a complete HTTP response');
  const h = c.buffer.indexOf('\r\n\r\n');
  const head = c.buffer.slice(0, h);
  const status = Number(/^HTTP\/1\.1 (\d{3}) /.exec(head)?.[1]);
  const type = /\r\ncontent-type:\s*([^\r\n]*)/i.exec(head)?.[1] ?? '';
  const body = Buffer.from(c.buffer.slice(h + 4), 'latin1').toString('utf8');
  return { status, type, body };
}

// ------------------------------------------------------------------ accounts

describe('accounts', () => {
  it('POST /api/v1/accounts (admin) → 201 {email,key,level}; default level is USER.DEFAULT_LEVEL (4)', async () => {
    const email = mail('create');
    const r = await call('POST', '/api/v1/accounts', { body: { email, password: 'pw' } });
    expect(r.status).toBe(201);
    expect(r.type).toBe('application/json; charset=utf-8');
    expect(r.body).toEqual({ email, key: expect.stringMatching(/^[0-9A-F]{32}$/), level: 4 });
    expect(srv.embedded!.accountByKey(r.body.key)!.email).toBe(email);
    expect(srv.embedded!.checkPassword(email, 'pw')).toBe(true);
    const e2 = mail('create');
    const r2 = await call('POST', '/api/v1/accounts', { body: { email: e2, level: 2 } });
    expect(r2.status).toBe(201);
    expect(r2.body).toEqual({ email: e2, key: expect.stringMatching(/^[0-9A-F]{32}$/), level: 2 });
    expect(r2.body.key).not.toBe(r.body.key);
  });

  it('a taken e-mail (any case) → 409 EXISTS naming "email"; nothing changes', async () => {
    const a = await account();
    const count = srv.embedded!.countAccounts();
    expectError(await call('POST', '/api/v1/accounts', { body: { email: a.email } }), 409, 'EXISTS', 'email');
    expectError(
      await call('POST', '/api/v1/accounts', { body: { email: a.email.toUpperCase() } }),
      409,
      'EXISTS',
      'email',
    );
    expect(srv.embedded!.countAccounts()).toBe(count);
    expect(srv.embedded!.accountByEmail(a.email)!.key).toBe(a.key);
  });

  it('validation errors are 400 and name the field; nothing is created', async () => {
    const count = srv.embedded!.countAccounts();
    const post = (body: unknown): Promise<Res> => call('POST', '/api/v1/accounts', { body });
    expectError(await post({}), 400, 'INVALID_FIELD', 'email');
    expectError(await post({ email: '' }), 400, 'INVALID_FIELD', 'email');
    expectError(await post({ email: 42 }), 400, 'INVALID_FIELD', 'email');
    expectError(await post({ email: 'not-an-address' }), 400, 'INVALID_EMAIL', 'email');
    expectError(await post({ email: 'a b@example.com' }), 400, 'INVALID_EMAIL', 'email');
    expectError(await post({ email: mail('v'), password: 7 }), 400, 'INVALID_FIELD', 'password');
    expectError(await post({ email: mail('v'), password: '' }), 400, 'INVALID_FIELD', 'password');
    for (const level of [0, 5, 2.5, '3', null]) {
      expectError(await post({ email: mail('v'), level }), 400, 'INVALID_FIELD', 'level');
    }
    expect(srv.embedded!.countAccounts()).toBe(count);
  });

  it('GET /api/v1/accounts (admin) lists email, level, createdAt and never a KEY', async () => {
    const a = await account(3);
    const r = await call('GET', '/api/v1/accounts');
    expect(r.status).toBe(200);
    const all = srv.embedded!.listAccounts();
    expect(r.body).toEqual({
      accounts: all.map((x) => ({ email: x.email, level: x.level, createdAt: x.createdAt })),
    });
    expect(r.body.accounts).toContainEqual({ email: a.email, level: 3, createdAt: expect.any(Number) });
    for (const x of all) expect(r.text).not.toContain(x.key);
  });

  it('GET /api/v1/accounts/{email|me}: the KEY only for the admin', async () => {
    const a = await account(2);
    const rec = srv.embedded!.accountByEmail(a.email)!;
    const pub = { email: a.email, level: 2, createdAt: rec.createdAt };
    const asAdmin = await call('GET', a.path);
    expect(asAdmin.status).toBe(200);
    expect(asAdmin.body).toEqual({ ...pub, key: a.key });
    const own = await call('GET', a.path, { auth: a.key });
    expect(own.status).toBe(200);
    expect(own.body).toEqual(pub);
    const me = await call('GET', '/api/v1/accounts/me', { auth: a.key });
    expect(me.status).toBe(200);
    expect(me.body).toEqual(pub);
    // The KEY is accepted in lower case; the e-mail in the path in any case.
    expect((await call('GET', '/api/v1/accounts/me', { auth: a.key.toLowerCase() })).body).toEqual(pub);
    expect((await call('GET', `/api/v1/accounts/${a.email.toUpperCase()}`, { auth: a.key })).body).toEqual(pub);
    expectError(await call('GET', `/api/v1/accounts/${mail('nobody')}`), 404, 'NO_ACCOUNT');
    expectError(await call('GET', '/api/v1/accounts/me'), 400, 'NO_ACCOUNT');
  });

  it('DELETE /api/v1/accounts/{email} (admin) → 204, then 404; the KEY stops working', async () => {
    const a = await account();
    const r = await call('DELETE', a.path);
    expect(r.status).toBe(204);
    expect(r.text).toBe('');
    expectError(await call('GET', a.path), 404, 'NO_ACCOUNT');
    expectError(await call('DELETE', a.path), 404, 'NO_ACCOUNT');
    expectError(await call('GET', '/api/v1/accounts/me', { auth: a.key }), 401, 'UNAUTHORIZED');
    expect(srv.embedded!.accountByEmail(a.email)).toBeNull();
  });

  it('POST /api/v1/accounts/{a}/key resets the KEY: old bearer 401, new one works', async () => {
    const a = await account();
    const r = await call('POST', '/api/v1/accounts/me/key', { auth: a.key });
    expect(r.status).toBe(200);
    expect(r.body).toEqual({ email: a.email, key: expect.stringMatching(/^[0-9A-F]{32}$/) });
    expect(r.body.key).not.toBe(a.key);
    expectError(await call('GET', '/api/v1/accounts/me', { auth: a.key }), 401, 'UNAUTHORIZED');
    expect((await call('GET', '/api/v1/accounts/me', { auth: r.body.key })).status).toBe(200);
    // The admin can reset it too.
    const r2 = await call('POST', `${a.path}/key`);
    expect(r2.status).toBe(200);
    expect(r2.body.key).not.toBe(r.body.key);
    expect(srv.embedded!.accountByEmail(a.email)!.key).toBe(r2.body.key);
  });

  it('PUT /api/v1/accounts/{a}/level (admin) → 200; a bad level → 400 naming "level", unchanged', async () => {
    const a = await account(1);
    const rec = srv.embedded!.accountByEmail(a.email)!;
    const r = await call('PUT', `${a.path}/level`, { body: { level: 3 } });
    expect(r.status).toBe(200);
    expect(r.body).toEqual({ email: a.email, level: 3, createdAt: rec.createdAt });
    for (const level of [0, 9, 'high', undefined]) {
      expectError(await call('PUT', `${a.path}/level`, { body: { level } }), 400, 'INVALID_FIELD', 'level');
    }
    expect(srv.embedded!.accountByEmail(a.email)!.level).toBe(3);
  });

  it('GET /api/v1/accounts/{a}/devices lists live IDs with their shard, sorted; offline ones disappear', async () => {
    const a = await account();
    expect((await call('GET', `${a.path}/devices`)).body).toEqual({ devices: [] });
    const z = await devOn(0, a.key, 'zed');
    await devOn(1, a.key, 'alpha');
    await devOn(0, a.key, 'mid');
    const r = await call('GET', `${a.path}/devices`, { auth: a.key });
    expect(r.status).toBe(200);
    expect(r.body).toEqual({
      devices: [
        { id: 'ALPHA', shard: 1 },
        { id: 'MID', shard: 0 },
        { id: 'ZED', shard: 0 },
      ],
    });
    z.close();
    await waitFor(() => openTotal(srv) === opened.filter((c) => !c.closed).length, 'the close to be seen');
    for (let i = 0; ; i++) {
      const again = await call('GET', '/api/v1/accounts/me/devices', { auth: a.key });
      if (again.body.devices.length === 2) {
        expect(again.body).toEqual({
          devices: [
            { id: 'ALPHA', shard: 1 },
            { id: 'MID', shard: 0 },
          ],
        });
        break;
      }
      expect(i).toBeLessThan(500);
      await sleep(10);
    }
  });

  it('plan limit: a level-1 account gets 10 tree nodes, the 11th → 422 TREE_FULL; a higher level lifts it', async () => {
    const a = await account(1);
    for (let i = 0; i < 10; i++) {
      expect((await call('POST', `${a.path}/tree/nodes`, { body: { id: `N${i}` }, auth: a.key })).status).toBe(201);
    }
    const before = await snapshot(a.path);
    expectError(await call('POST', `${a.path}/tree/nodes`, { body: { id: 'N10' }, auth: a.key }), 422, 'TREE_FULL');
    expect(await snapshot(a.path)).toEqual(before);
    expect((await call('PUT', `${a.path}/level`, { body: { level: 2 } })).status).toBe(200);
    expect((await call('POST', `${a.path}/tree/nodes`, { body: { id: 'N10' }, auth: a.key })).status).toBe(201);
  });
});

// ------------------------------------------------------------------ tree

describe('tree', () => {
  it('POST nodes → 201 {id,parent} upper-cased; GET tree → {roots, nodes:[{id,parent,children}]}', async () => {
    const a = await account();
    const post = (body: unknown): Promise<Res> => call('POST', `${a.path}/tree/nodes`, { body, auth: a.key });
    const r1 = await post({ id: '100' });
    expect([r1.status, r1.body]).toEqual([201, { id: '100', parent: null }]);
    expect((await post({ id: '200', parent: null })).body).toEqual({ id: '200', parent: null });
    const r3 = await post({ id: 'kid-a', parent: '100' });
    expect([r3.status, r3.body]).toEqual([201, { id: 'KID-A', parent: '100' }]);
    expect((await post({ id: 'kid.b', parent: '100' })).body).toEqual({ id: 'KID.B', parent: '100' });
    expect((await post({ id: 'g@1', parent: 'Kid-A' })).body).toEqual({ id: 'G@1', parent: 'KID-A' });
    const tree = await call('GET', `${a.path}/tree`, { auth: a.key });
    expect(tree.status).toBe(200);
    expect(tree.body).toEqual({
      roots: ['100', '200'],
      nodes: [
        { id: '100', parent: null, children: ['KID-A', 'KID.B'] },
        { id: 'KID-A', parent: '100', children: ['G@1'] },
        { id: 'KID.B', parent: '100', children: [] },
        { id: 'G@1', parent: 'KID-A', children: [] },
        { id: '200', parent: null, children: [] },
      ],
    });
    expect((await call('GET', '/api/v1/accounts/me/tree', { auth: a.key })).body).toEqual(tree.body);
  });

  it('POST nodes: duplicate → 409, unknown parent → 422, bad id/parent → 400 naming the field; unchanged', async () => {
    const a = await account();
    const post = (body: unknown): Promise<Res> => call('POST', `${a.path}/tree/nodes`, { body, auth: a.key });
    await post({ id: 'P' });
    const before = await snapshot(a.path);
    expectError(await post({ id: 'p' }), 409, 'NODE_EXISTS');
    expectError(await post({ id: 'Q', parent: 'NOPE' }), 422, 'NO_PARENT_NODE');
    expectError(await post({}), 400, 'INVALID_ID', 'id');
    expectError(await post({ id: '' }), 400, 'INVALID_ID', 'id');
    expectError(await post({ id: 'has space' }), 400, 'INVALID_ID', 'id');
    expectError(await post({ id: 'a:b' }), 400, 'INVALID_ID', 'id');
    expectError(await post({ id: 'x'.repeat(65) }), 400, 'INVALID_ID', 'id');
    expectError(await post({ id: 7 }), 400, 'INVALID_ID', 'id');
    expectError(await post({ id: 'OK', parent: 'bad parent' }), 400, 'INVALID_ID', 'parent');
    expectError(await post({ id: 'OK', parent: 12 }), 400, 'INVALID_ID', 'parent');
    expect(await snapshot(a.path)).toEqual(before);
    expect((await post({ id: 'x'.repeat(64) })).status).toBe(201);
  });

  it('PATCH moves, renames, or both; null parent makes a root', async () => {
    const a = await account();
    const post = (body: unknown): Promise<Res> => call('POST', `${a.path}/tree/nodes`, { body, auth: a.key });
    for (const body of [{ id: 'A' }, { id: 'B' }, { id: 'C', parent: 'A' }, { id: 'D', parent: 'C' }]) await post(body);
    const patch = (id: string, body: unknown): Promise<Res> =>
      call('PATCH', `${a.path}/tree/nodes/${id}`, { body, auth: a.key });
    const m = await patch('c', { parent: 'b' });
    expect([m.status, m.body]).toEqual([200, { id: 'C', parent: 'B' }]);
    const rn = await patch('C', { id: 'see' });
    expect([rn.status, rn.body]).toEqual([200, { id: 'SEE', parent: 'B' }]);
    const both = await patch('SEE', { id: 'CC', parent: null });
    expect([both.status, both.body]).toEqual([200, { id: 'CC', parent: null }]);
    expect((await call('GET', `${a.path}/tree`)).body).toEqual({
      roots: ['A', 'B', 'CC'],
      nodes: [
        { id: 'A', parent: null, children: [] },
        { id: 'B', parent: null, children: [] },
        { id: 'CC', parent: null, children: ['D'] },
        { id: 'D', parent: 'CC', children: [] },
      ],
    });
  });

  it('PATCH failures: 400 nothing to do / bad field, 404 unknown, 409 name taken, 422 cycle or unknown parent — nothing half-applied', async () => {
    const a = await account();
    const post = (body: unknown): Promise<Res> => call('POST', `${a.path}/tree/nodes`, { body, auth: a.key });
    for (const body of [{ id: 'A' }, { id: 'B', parent: 'A' }, { id: 'C', parent: 'B' }, { id: 'Z' }]) await post(body);
    const patch = (id: string, body: unknown): Promise<Res> =>
      call('PATCH', `${a.path}/tree/nodes/${id}`, { body, auth: a.key });
    const before = await snapshot(a.path);
    expectError(await patch('B', {}), 400, 'NOTHING_TO_DO');
    expectError(await patch('B', { id: 'bad id' }), 400, 'INVALID_ID', 'id');
    expectError(await patch('B', { parent: 'bad parent' }), 400, 'INVALID_ID', 'parent');
    expectError(await patch('B', { parent: 5 }), 400, 'INVALID_ID', 'parent');
    expectError(await patch('NOPE', { parent: 'A' }), 404, 'NO_NODE', 'id');
    expectError(await patch('B', { id: 'Z' }), 409, 'NODE_EXISTS', 'id');
    // The move part is valid but the rename is not: neither happens.
    expectError(await patch('B', { parent: 'Z', id: 'A' }), 409, 'NODE_EXISTS', 'id');
    expectError(await patch('A', { parent: 'C' }), 422, 'CYCLE');
    expectError(await patch('A', { parent: 'A' }), 422, 'CYCLE');
    // The rename part is valid but the move is not: neither happens.
    expectError(await patch('A', { parent: 'C', id: 'NEWA' }), 422, 'CYCLE');
    expectError(await patch('B', { parent: 'NOPE', id: 'NEWB' }), 422, 'NO_PARENT_NODE');
    expect(await snapshot(a.path)).toEqual(before);
  });

  it('DELETE a node removes its subtree → 200 {removed}; unknown → 404', async () => {
    const a = await account();
    const post = (body: unknown): Promise<Res> => call('POST', `${a.path}/tree/nodes`, { body, auth: a.key });
    for (const body of [
      { id: 'A' },
      { id: 'B', parent: 'A' },
      { id: 'C', parent: 'B' },
      { id: 'D', parent: 'A' },
      { id: 'E' },
    ])
      await post(body);
    const r = await call('DELETE', `${a.path}/tree/nodes/b`, { auth: a.key });
    expect(r.status).toBe(200);
    expect(Object.keys(r.body)).toEqual(['removed']);
    expect([...r.body.removed].sort()).toEqual(['B', 'C']);
    expect(r.body.removed.length).toBe(2);
    const r2 = await call('DELETE', `${a.path}/tree/nodes/A`, { auth: a.key });
    expect([...r2.body.removed].sort()).toEqual(['A', 'D']);
    expectError(await call('DELETE', `${a.path}/tree/nodes/A`, { auth: a.key }), 404, 'NO_NODE');
    expectError(await call('DELETE', `${a.path}/tree/nodes/bad%20id`, { auth: a.key }), 400, 'INVALID_ID', 'id');
    expect((await call('GET', `${a.path}/tree`)).body).toEqual({
      roots: ['E'],
      nodes: [{ id: 'E', parent: null, children: [] }],
    });
  });

  it('PATCH move+rename is atomic even when another call races it (never moved without the rename)', async () => {
    const a = await account();
    const post = (body: unknown): Promise<Res> => call('POST', `${a.path}/tree/nodes`, { body, auth: a.key });
    for (let round = 0; round < 15; round++) {
      const [p, q, n, target] = [`P${round}`, `Q${round}`, `N${round}`, `T${round}`];
      await post({ id: p });
      await post({ id: q });
      await post({ id: n, parent: p });
      // Both calls are in flight at once: the PATCH renames N to T, the POST creates T.
      const [patched, created] = await Promise.all([
        call('PATCH', `${a.path}/tree/nodes/${n}`, { body: { parent: q, id: target }, auth: a.key }),
        post({ id: target }),
      ]);
      const tree = (await call('GET', `${a.path}/tree`)).body as { nodes: { id: string; parent: string | null }[] };
      const parentOf = (id: string): string | null | undefined => tree.nodes.find((x) => x.id === id)?.parent;
      if (patched.status === 200) {
        // The PATCH won: N is now T under Q, and the POST found T taken.
        expect(patched.body).toEqual({ id: target, parent: q });
        expectError(created, 409, 'NODE_EXISTS');
        expect(parentOf(n)).toBeUndefined();
        expect(parentOf(target)).toBe(q);
      } else {
        // The POST won: the PATCH must be refused whole, so N is still under P.
        expect([patched.status, patched.body?.error]).toEqual([409, 'NODE_EXISTS']);
        expect(created.status).toBe(201);
        expect(parentOf(target)).toBeNull();
        expect(parentOf(n), `round ${round}: a PATCH answered 409 but moved ${n} anyway`).toBe(p);
      }
    }
  });
});

// ------------------------------------------------------------------ routers and aliases

describe('routers', () => {
  it('create, get, list, add/remove members, delete — exact codes and bodies', async () => {
    const a = await account();
    const base = `${a.path}/routers`;
    expect((await call('GET', base, { auth: a.key })).body).toEqual({ routers: [] });
    const c = await call('POST', base, { body: { name: 'garden' }, auth: a.key });
    expect([c.status, c.body]).toEqual([201, { name: 'GARDEN', members: [] }]);
    expect((await call('POST', base, { body: { name: 'Hall' }, auth: a.key })).status).toBe(201);
    expectError(await call('POST', base, { body: { name: 'GARDEN' }, auth: a.key }), 409, 'ROUTER_EXISTS');
    for (const name of [undefined, '', 'bad name', 3]) {
      expectError(await call('POST', base, { body: { name }, auth: a.key }), 400, 'INVALID_ID', 'name');
    }
    for (const id of ['lamp2', 'LAMP1', 'lamp1']) {
      const put = await call('PUT', `${base}/garden/members/${id}`, { auth: a.key });
      expect([put.status, put.text]).toEqual([204, '']);
    }
    expect((await call('PUT', `${base}/hall/members/lamp1`, { auth: a.key })).status).toBe(204);
    const one = await call('GET', `${base}/Garden`, { auth: a.key });
    expect([one.status, one.body]).toEqual([200, { name: 'GARDEN', members: ['LAMP1', 'LAMP2'] }]);
    expect((await call('GET', base, { auth: a.key })).body).toEqual({
      routers: [
        { name: 'GARDEN', members: ['LAMP1', 'LAMP2'] },
        { name: 'HALL', members: ['LAMP1'] },
      ],
    });
    expectError(await call('GET', `${base}/nope`, { auth: a.key }), 404, 'NO_ROUTER', 'name');
    expectError(await call('PUT', `${base}/nope/members/x`, { auth: a.key }), 404, 'NO_ROUTER');
    expectError(await call('PUT', `${base}/garden/members/bad%20id`, { auth: a.key }), 400, 'INVALID_ID', 'id');
    expectError(await call('DELETE', `${base}/garden/members/stranger`, { auth: a.key }), 404, 'NOT_MEMBER');
    expectError(await call('DELETE', `${base}/nope/members/lamp1`, { auth: a.key }), 404, 'NO_ROUTER');
    const del = await call('DELETE', `${base}/garden/members/LAMP2`, { auth: a.key });
    expect([del.status, del.text]).toEqual([204, '']);
    expect((await call('GET', `${base}/garden`, { auth: a.key })).body).toEqual({ name: 'GARDEN', members: ['LAMP1'] });
    const rd = await call('DELETE', `${base}/hall`, { auth: a.key });
    expect([rd.status, rd.text]).toEqual([204, '']);
    expectError(await call('DELETE', `${base}/hall`, { auth: a.key }), 404, 'NO_ROUTER');
    expect((await call('GET', base, { auth: a.key })).body).toEqual({
      routers: [{ name: 'GARDEN', members: ['LAMP1'] }],
    });
  });
});

describe('aliases', () => {
  it('PUT {targets} / {target}, re-point, list, delete — exact codes and bodies', async () => {
    const a = await account();
    const base = `${a.path}/aliases`;
    expect((await call('GET', base, { auth: a.key })).body).toEqual({ aliases: [] });
    const p = await call('PUT', `${base}/my-friend`, { body: { target: 'lamp' }, auth: a.key });
    expect([p.status, p.body]).toEqual([200, { name: 'MY-FRIEND', targets: ['LAMP'] }]);
    const many = await call('PUT', `${base}/ALL`, { body: { targets: ['b', 'a', 'B'] }, auth: a.key });
    expect([many.status, many.body]).toEqual([200, { name: 'ALL', targets: ['B', 'A'] }]);
    const re = await call('PUT', `${base}/My-Friend`, { body: { targets: ['other'] }, auth: a.key });
    expect(re.body).toEqual({ name: 'MY-FRIEND', targets: ['OTHER'] });
    expect((await call('GET', base, { auth: a.key })).body).toEqual({
      aliases: [
        { name: 'ALL', targets: ['B', 'A'] },
        { name: 'MY-FRIEND', targets: ['OTHER'] },
      ],
    });
    const before = await snapshot(a.path);
    for (const body of [{}, { targets: [] }, { targets: 'x' }, { targets: ['ok', 'bad id'] }, { target: 5 }]) {
      expectError(await call('PUT', `${base}/ALL`, { body, auth: a.key }), 400, expect.any(String) as never, 'targets');
    }
    expectError(
      await call('PUT', `${base}/bad%20name`, { body: { target: 'x' }, auth: a.key }),
      400,
      'INVALID_ID',
      'name',
    );
    expect(await snapshot(a.path)).toEqual(before);
    const d = await call('DELETE', `${base}/all`, { auth: a.key });
    expect([d.status, d.text]).toEqual([204, '']);
    expectError(await call('DELETE', `${base}/all`, { auth: a.key }), 404, 'NO_ALIAS');
    expect((await call('GET', base, { auth: a.key })).body).toEqual({
      aliases: [{ name: 'MY-FRIEND', targets: ['OTHER'] }],
    });
  });
});

// ------------------------------------------------------------------ authentication and isolation

describe('authentication and account isolation', () => {
  /** Every account-scoped call, for account path `p`. */
  const scoped = (p: string): [string, string, unknown?][] => [
    ['GET', p],
    ['GET', `${p}/devices`],
    ['GET', `${p}/tree`],
    ['POST', `${p}/tree/nodes`, { id: 'INTRUDER' }],
    ['PATCH', `${p}/tree/nodes/ROOT`, { parent: null, id: 'HIJACKED' }],
    ['DELETE', `${p}/tree/nodes/ROOT`],
    ['GET', `${p}/routers`],
    ['POST', `${p}/routers`, { name: 'EVIL' }],
    ['GET', `${p}/routers/R`],
    ['DELETE', `${p}/routers/R`],
    ['PUT', `${p}/routers/R/members/INTRUDER`],
    ['DELETE', `${p}/routers/R/members/M`],
    ['GET', `${p}/aliases`],
    ['PUT', `${p}/aliases/AL`, { target: 'INTRUDER' }],
    ['DELETE', `${p}/aliases/AL`],
    ['POST', `${p}/key`],
  ];

  async function victim(): Promise<{ email: string; key: string; path: string }> {
    const b = await account();
    await call('POST', `${b.path}/tree/nodes`, { body: { id: 'ROOT' } });
    await call('POST', `${b.path}/tree/nodes`, { body: { id: 'CHILD', parent: 'ROOT' } });
    await call('POST', `${b.path}/routers`, { body: { name: 'R' } });
    await call('PUT', `${b.path}/routers/R/members/M`);
    await call('PUT', `${b.path}/aliases/AL`, { body: { target: 'CHILD' } });
    return b;
  }

  it("account A's KEY cannot read, list or edit account B: 403 on every call, B unchanged, B's KEY never shown", async () => {
    const a = await account();
    const b = await victim();
    const before = await snapshot(b.path);
    for (const [method, path, body] of scoped(b.path)) {
      const r = await call(method, path, { auth: a.key, body });
      expectError(r, 403, 'FORBIDDEN');
      expect(r.text).not.toContain(b.key);
    }
    // In upper case, lower case, and with the e-mail spelled differently.
    expectError(await call('GET', `/api/v1/accounts/${b.email.toUpperCase()}/tree`, { auth: a.key }), 403, 'FORBIDDEN');
    expectError(await call('GET', `${b.path}/tree`, { auth: a.key.toLowerCase() }), 403, 'FORBIDDEN');
    expect(await snapshot(b.path)).toEqual(before);
    expect(srv.embedded!.accountByEmail(b.email)!.key).toBe(b.key);
    // "me" is always the caller's own account.
    const mine = await call('GET', '/api/v1/accounts/me/tree', { auth: a.key });
    expect(mine.body).toEqual({ roots: [], nodes: [] });
  });

  it("account A's KEY cannot list accounts or use admin calls: 403, nothing changes", async () => {
    const a = await account(2);
    const count = srv.embedded!.countAccounts();
    const list = await call('GET', '/api/v1/accounts', { auth: a.key });
    expect(list.status).toBe(403);
    for (const x of srv.embedded!.listAccounts()) expect(list.text).not.toContain(x.key);
    expect((await call('POST', '/api/v1/accounts', { auth: a.key, body: { email: mail('sneaky') } })).status).toBe(403);
    expect((await call('PUT', '/api/v1/accounts/me/level', { auth: a.key, body: { level: 4 } })).status).toBe(403);
    expect((await call('DELETE', '/api/v1/accounts/me', { auth: a.key })).status).toBe(403);
    expect(srv.embedded!.countAccounts()).toBe(count);
    expect(srv.embedded!.accountByEmail(a.email)!.level).toBe(2);
  });

  it('no credentials, an unknown KEY, a wrong admin token or another scheme → 401 on every call', async () => {
    const b = await victim();
    const before = await snapshot(b.path);
    const unknownKey = 'F'.repeat(32);
    expect(srv.embedded!.accountByKey(unknownKey)).toBeNull();
    const variants: { auth: string | null; headers?: Record<string, string> }[] = [
      { auth: null },
      { auth: unknownKey },
      { auth: `${ADMIN_TOKEN}x` },
      { auth: null, headers: { authorization: `Basic ${Buffer.from(`admin:${ADMIN_TOKEN}`).toString('base64')}` } },
      { auth: null, headers: { authorization: b.key } },
    ];
    for (const v of variants) {
      for (const [method, path, body] of [
        ...scoped(b.path),
        ['GET', '/api/v1/accounts'] as [string, string],
        ['POST', '/api/v1/accounts', { email: mail('anon') }] as [string, string, unknown],
      ]) {
        const r = await call(method, path, { ...v, body });
        expectError(r, 401, 'UNAUTHORIZED');
        expect(r.text).not.toContain(b.key);
      }
    }
    expect(await snapshot(b.path)).toEqual(before);
  });

  it('with the account KEY, no response body contains the KEY (only the reset call returns the new one)', async () => {
    const b = await victim();
    for (const [method, path] of scoped(b.path).filter(([m]) => m === 'GET')) {
      const r = await call(method, path, { auth: b.key });
      expect(r.status).toBe(200);
      expect(r.text).not.toContain(b.key);
    }
  });
});

// ------------------------------------------------------------------ malformed requests and routing

describe('malformed requests and routing', () => {
  it('malformed JSON, or JSON that is not an object → 400 INVALID_JSON, nothing created', async () => {
    const count = srv.embedded!.countAccounts();
    for (const raw of ['{"email":', '{email: "x@y.z"}', '[{"email":"x@y.z"}]', '"x@y.z"', '42', 'null', '\u0000']) {
      expectError(await call('POST', '/api/v1/accounts', { raw }), 400, 'INVALID_JSON');
    }
    const a = await account();
    expectError(await call('POST', `${a.path}/tree/nodes`, { raw: '{"id":"A",}', auth: a.key }), 400, 'INVALID_JSON');
    expectError(await call('PATCH', `${a.path}/tree/nodes/A`, { raw: '{', auth: a.key }), 400, 'INVALID_JSON');
    expect(srv.embedded!.countAccounts()).toBe(count + 1);
    expect((await call('GET', `${a.path}/tree`)).body).toEqual({ roots: [], nodes: [] });
  });

  it(`a body over HTTP.MAX_BODY (${MAX_BODY}) → 413 BODY_TOO_LARGE, nothing created; exactly MAX_BODY is fine`, async () => {
    const count = srv.embedded!.countAccounts();
    const email = mail('big');
    const json = JSON.stringify({ email });
    const over = json.slice(0, -1) + ' '.repeat(MAX_BODY + 1 - json.length) + '}';
    expect(over.length).toBe(MAX_BODY + 1);
    const r = await call('POST', '/api/v1/accounts', { raw: over });
    expect(r.status).toBe(413);
    expect(r.body).toEqual({ error: 'BODY_TOO_LARGE', message: expect.any(String) });
    expect(srv.embedded!.countAccounts()).toBe(count);
    expect(srv.embedded!.accountByEmail(email)).toBeNull();
    const exact = json.slice(0, -1) + ' '.repeat(MAX_BODY - json.length) + '}';
    expect(exact.length).toBe(MAX_BODY);
    const ok = await call('POST', '/api/v1/accounts', { raw: exact });
    expect(ok.status).toBe(201);
    expect(ok.body.email).toBe(email);
  });

  it('unknown routes → 404 NOT_FOUND; a known route with a wrong method → 405 METHOD_NOT_ALLOWED', async () => {
    const a = await account();
    for (const path of ['/api', '/api/v1', '/api/v2/accounts', '/api/v1/nope', `${a.path}/tree/extra/deep`]) {
      expectError(await call('GET', path), 404, 'NOT_FOUND');
    }
    expectError(await call('POST', '/NOT_LEGACY?KEY=x'), 404, 'NOT_FOUND');
    for (const [method, path] of [
      ['PUT', '/api/v1/accounts'],
      ['DELETE', '/api/v1/accounts'],
      ['POST', '/api/v1/openapi.json'],
      ['PATCH', a.path],
      ['GET', `${a.path}/key`],
      ['POST', `${a.path}/tree`],
      ['GET', `${a.path}/tree/nodes`],
      ['GET', `${a.path}/tree/nodes/A`],
      ['PATCH', `${a.path}/routers`],
      ['POST', `${a.path}/routers/R/members/M`],
      ['POST', `${a.path}/aliases`],
      ['GET', `${a.path}/aliases/X`],
    ]) {
      expectError(await call(method!, path!, { auth: a.key }), 405, 'METHOD_NOT_ALLOWED');
    }
  });

  it('a malformed percent-encoding in a path parameter → 400, not a server error', async () => {
    const a = await account();
    for (const [method, path] of [
      ['GET', '/api/v1/accounts/%ZZ'],
      ['GET', '/api/v1/accounts/%E0%A4%A/tree'],
      ['DELETE', `${a.path}/tree/nodes/%ZZ`],
    ] as const) {
      const r = await call(method, path);
      expect(r.status, path).toBe(400);
      expect(r.body, path).toMatchObject({ error: 'INVALID_PATH', message: expect.any(String) });
    }
    const del = await call('DELETE', `${a.path}/routers/%G0`, { auth: a.key });
    expect(del.status).toBe(400);
  });

  it('a store failure in the middle of a change → 500, and the tree (API and live) is the old one', async () => {
    const a = await account();
    for (const body of [{ id: 'P' }, { id: 'C1', parent: 'P' }, { id: 'C2', parent: 'P' }, { id: 'Q' }]) {
      await call('POST', `${a.path}/tree/nodes`, { body, auth: a.key });
    }
    const p = await dev(a.key, 'P');
    const c1 = await dev(a.key, 'C1');
    const c2 = await dev(a.key, 'C2');
    const before = await snapshot(a.path);
    const db = new DatabaseSync(join(srv.dataDir, 'p2pcluster.db'));
    try {
      db.exec(
        `CREATE TRIGGER boom BEFORE UPDATE OF parent ON tree_nodes WHEN NEW.parent = 'BOOM'
         BEGIN SELECT RAISE(ABORT, 'injected failure'); END`,
      );
      const r = await call('PATCH', `${a.path}/tree/nodes/P`, { body: { id: 'BOOM' }, auth: a.key });
      expect(r.status).toBe(500);
      expect(await snapshot(a.path)).toEqual(before);
      expect(await p.request(`TCP:PUSH:${a.key}:CHILDS:still`)).toBe('[OK:ALL_2]');
      expect(await c1.line()).toBe('PUSH:still');
      expect(await c2.line()).toBe('PUSH:still');
      expect(await c1.request(`TCP:PUSH:${a.key}:PARENT:up`)).toBe('[OK:DATA_SENT]');
      expect(await p.line()).toBe('PUSH:up');
      // A call that moves and renames, where the rename fails in the store, is refused whole.
      const r2 = await call('PATCH', `${a.path}/tree/nodes/P`, { body: { parent: 'Q', id: 'BOOM' }, auth: a.key });
      expect(r2.status).toBe(500);
      expect(await snapshot(a.path), 'PATCH move+rename half-applied after a store failure').toEqual(before);
    } finally {
      db.exec('DROP TRIGGER IF EXISTS boom');
      db.close();
    }
    const ok = await call('PATCH', `${a.path}/tree/nodes/P`, { body: { id: 'BOOM' }, auth: a.key });
    expect(ok.status).toBe(200);
  });
});

describe('plan level: USER.1TREE', () => {
  let plan: TestServer;
  beforeAll(async () => {
    plan = await startTestServer({ USER: { '1TREE': [0, 1, 1, 1] } });
  });
  afterAll(async () => {
    await plan?.stop();
  });

  it('a level whose plan has no tree cannot add tree nodes (422), a level with one can', async () => {
    const noTree = plan.newKey(mail('notree'), 1);
    const withTree = plan.newKey(mail('tree'), 2);
    const post = (key: string): Promise<Res> =>
      call('POST', '/api/v1/accounts/me/tree/nodes', { auth: key, body: { id: 'A' }, port: plan.httpPort });
    expect((await post(withTree)).status).toBe(201);
    const r = await post(noTree);
    expect(r.status).toBe(422);
    expect(r.body).toEqual({ error: expect.any(String), message: expect.any(String) });
    const t = await call('GET', '/api/v1/accounts/me/tree', { auth: noTree, port: plan.httpPort });
    expect(t.body).toEqual({ roots: [], nodes: [] });
  });
});

// ------------------------------------------------------------------ OpenAPI and the device port

describe('OpenAPI document', () => {
  it('is served as JSON and lists every route with its method', async () => {
    const r = await call('GET', '/api/v1/openapi.json', { auth: null });
    expect(r.status).toBe(200);
    expect(r.type).toBe('application/json; charset=utf-8');
    const doc = r.body as { openapi: string; paths: Record<string, Record<string, unknown>> };
    expect(doc.openapi).toMatch(/^3\./);
    const expected: [string, string][] = [
      ['post', '/api/v1/accounts'],
      ['get', '/api/v1/accounts'],
      ['get', '/api/v1/accounts/{account}'],
      ['delete', '/api/v1/accounts/{account}'],
      ['post', '/api/v1/accounts/{account}/key'],
      ['put', '/api/v1/accounts/{account}/level'],
      ['get', '/api/v1/accounts/{account}/devices'],
      ['get', '/api/v1/accounts/{account}/tree'],
      ['post', '/api/v1/accounts/{account}/tree/nodes'],
      ['patch', '/api/v1/accounts/{account}/tree/nodes/{id}'],
      ['delete', '/api/v1/accounts/{account}/tree/nodes/{id}'],
      ['get', '/api/v1/accounts/{account}/routers'],
      ['post', '/api/v1/accounts/{account}/routers'],
      ['get', '/api/v1/accounts/{account}/routers/{name}'],
      ['delete', '/api/v1/accounts/{account}/routers/{name}'],
      ['put', '/api/v1/accounts/{account}/routers/{name}/members/{id}'],
      ['delete', '/api/v1/accounts/{account}/routers/{name}/members/{id}'],
      ['get', '/api/v1/accounts/{account}/aliases'],
      ['put', '/api/v1/accounts/{account}/aliases/{name}'],
      ['delete', '/api/v1/accounts/{account}/aliases/{name}'],
    ];
    for (const [method, path] of expected) expect(doc.paths[path]?.[method], `${method} ${path}`).toBeDefined();
    // Every route the server answers (other than the document itself) is described, and nothing more.
    const served = (srv.api['routes'] as { method: string; pattern: RegExp }[])
      .map((x) => {
        const path = x.pattern.source
          .replace(/^\^/, '')
          .replace(/\\\/\?\$$/, '')
          .replace(/\/\?\$$/, '')
          .replace(/\\\//g, '/');
        return `${x.method.toLowerCase()} ${path}`;
      })
      .filter((s) => s !== 'get /api/v1/openapi.json');
    const names = ['account', 'id', 'name'];
    const documented = Object.entries(doc.paths).flatMap(([path, ops]) =>
      Object.keys(ops)
        .filter((m) => m !== 'parameters')
        .map((m) => `${m} ${path}`)
        .filter((x) => x !== 'get /api/v1/openapi.json'),
    );
    const normalize = (s: string): string => s.replace(/\{(\w+)\}/g, '([^/]+)');
    expect(documented.map(normalize).sort()).toEqual(served.sort());
    expect(names.every((n) => r.text.includes(`{${n}}`))).toBe(true);
  });
});

describe('HTTP on the device port', () => {
  it('the same handlers answer: OpenAPI, an authenticated mutation, errors', async () => {
    const a = await account();
    const doc = await rawHttp(srv.port, 'GET /api/v1/openapi.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    expect(doc.status).toBe(200);
    expect(doc.type).toBe('application/json; charset=utf-8');
    expect(JSON.parse(doc.body)).toEqual((await call('GET', '/api/v1/openapi.json')).body);
    const body = JSON.stringify({ id: 'viaport' });
    const made = await rawHttp(
      srv.port,
      `POST /api/v1/accounts/me/tree/nodes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${a.key}\r\n` +
        `Content-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`,
    );
    expect(made.status).toBe(201);
    expect(JSON.parse(made.body)).toEqual({ id: 'VIAPORT', parent: null });
    expect((await call('GET', `${a.path}/tree`)).body).toEqual({
      roots: ['VIAPORT'],
      nodes: [{ id: 'VIAPORT', parent: null, children: [] }],
    });
    const anon = await rawHttp(srv.port, 'GET /api/v1/accounts HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    expect(anon.status).toBe(401);
    expect(JSON.parse(anon.body)).toEqual({ error: 'UNAUTHORIZED', message: expect.any(String) });
    const bad = await rawHttp(
      srv.port,
      `POST /api/v1/accounts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${ADMIN_TOKEN}\r\n` +
        'Content-Type: application/json\r\nContent-Length: 1\r\nConnection: close\r\n\r\n{',
    );
    expect(bad.status).toBe(400);
    expect(JSON.parse(bad.body)).toEqual({ error: 'INVALID_JSON', message: expect.any(String) });
    const missing = await rawHttp(srv.port, 'GET /api/v1/nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    expect(missing.status).toBe(404);
  });

  it('a body over HTTP.MAX_BODY on the device port → 413 as well', async () => {
    const count = srv.embedded!.countAccounts();
    const body = JSON.stringify({ email: mail('bigport'), pad: 'x'.repeat(MAX_BODY) });
    const r = await rawHttp(
      srv.port,
      `POST /api/v1/accounts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${ADMIN_TOKEN}\r\n` +
        `Content-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`,
    );
    expect(r.status).toBe(413);
    expect(JSON.parse(r.body)).toEqual({ error: 'BODY_TOO_LARGE', message: expect.any(String) });
    expect(srv.embedded!.countAccounts()).toBe(count);
  });
});
