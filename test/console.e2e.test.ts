// The operator console (issue 10) in a real browser: Debian's Chromium driven by playwright-core against the
// real server with its workers. Logs in, watches a device come online, drags it in the tree and checks over
// TCP that a CHILDS push now reaches it, edits routers and aliases, sends a test push, saves a screenshot.
// Then the stream and API the console stands on, over plain HTTP.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { P2PClient } from '@p2pcluster/client';
import { type Browser, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CHROMIUM_ARGS, ensureChromium } from './helpers/chromium.ts';
import { device, TestClient } from './helpers/client.ts';
import { ADMIN_TOKEN, startTestServer, type TestServer } from './helpers/server.ts';

const SHOTS = join(import.meta.dirname, '..', 'test-results');

let srv: TestServer;
let browser: Browser;
const opened: TestClient[] = [];
const clients: P2PClient[] = [];

async function api(method: string, path: string, body?: unknown, token = srv.key): Promise<Response> {
  return fetch(`http://127.0.0.1:${srv.httpPort}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
}

async function dev(id: string, key = srv.key): Promise<TestClient> {
  const c = await device(srv.port, key, id);
  c.answerSync = true;
  opened.push(c);
  return c;
}

async function loggedIn(token: string): Promise<Page> {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1100 } });
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(`http://127.0.0.1:${srv.httpPort}/`);
  await page.fill('#token', token);
  await page.click('#login-form button[type=submit]');
  await page.waitForSelector('#main-view:not([hidden])');
  await page.waitForSelector('#live.on');
  expect(errors).toEqual([]);
  return page;
}

beforeAll(async () => {
  const executablePath = ensureChromium();
  srv = await startTestServer();
  browser = await chromium.launch({ executablePath, args: CHROMIUM_ARGS });
  mkdirSync(SHOTS, { recursive: true });
}, 300_000);

afterAll(async () => {
  for (const c of opened) c.close();
  for (const c of clients) c.destroy();
  await browser?.close();
  await srv?.stop();
});

describe('console in Chromium', () => {
  it('logs in with a KEY, shows a device online within a second of TCP:ID, and a drag in the tree re-routes CHILDS', async () => {
    for (const [id, parent] of [
      ['HUB', null],
      ['OLDPARENT', 'HUB'],
      ['NEWPARENT', 'HUB'],
      ['MOVER', 'OLDPARENT'],
    ] as const) {
      expect((await api('POST', '/api/v1/accounts/me/tree/nodes', { id, parent })).status).toBe(201);
    }
    const page = await loggedIn(srv.key);
    await page.waitForSelector('#tree .node[data-id="MOVER"].offline');

    const registered = Date.now();
    const mover = await dev('MOVER');
    await page.waitForSelector('#tree .node[data-id="MOVER"].online', { timeout: 1000 });
    expect(Date.now() - registered).toBeLessThan(1000);
    await page.waitForSelector('#devices tr[data-id="MOVER"] .status.online');

    const oldParent = await dev('OLDPARENT');
    const newParent = await dev('NEWPARENT');
    expect(await newParent.request(`TCP:PUSH:${srv.key}:CHILDS:before`)).toBe('[FAIL:NO_ID]');

    await page.locator('#tree .node[data-id="MOVER"]').dragTo(page.locator('#tree .node[data-id="NEWPARENT"]'));
    // The change reaches the page through the stream: MOVER is drawn under NEWPARENT.
    await expect
      .poll(async () => ((await (await api('GET', '/api/v1/accounts/me/tree')).json()) as TreeJson).nodes)
      .toContainEqual({ id: 'MOVER', parent: 'NEWPARENT', children: [] });
    expect(await newParent.request(`TCP:PUSH:${srv.key}:CHILDS:after the move`)).toBe('[OK:ALL_1]');
    expect(await mover.line()).toBe('PUSH:after the move');
    expect(await oldParent.request(`TCP:PUSH:${srv.key}:CHILDS:old`)).toBe('[FAIL:NO_ID]');

    // A device not in the tree, dragged from the tray onto a node, joins the tree there.
    await dev('LOOSE');
    await page.waitForSelector('#unplaced .chip[data-id="LOOSE"].online');
    await page.locator('#unplaced .chip[data-id="LOOSE"]').dragTo(page.locator('#tree .node[data-id="OLDPARENT"]'));
    await page.waitForSelector('#tree .node[data-id="LOOSE"].online');
    expect(await oldParent.request(`TCP:PUSH:${srv.key}:CHILDS:welcome`)).toBe('[OK:ALL_1]');

    // Going offline is drawn too.
    mover.close();
    await page.waitForSelector('#tree .node[data-id="MOVER"].offline', { timeout: 2000 });
    await page.screenshot({ path: join(SHOTS, 'console.png'), fullPage: true });
    await page.close();
  });

  it('adds a router member and re-points an alias from the forms; a test push reaches the device', async () => {
    const key = srv.newKey();
    // Devices through the project's own client (issue 11): the point here is the console, not the wire.
    const a = await P2PClient.connect({ port: srv.port, key, id: 'SWITCH' });
    const lamp = await P2PClient.connect({ port: srv.port, key, id: 'LAMP' });
    clients.push(a, lamp);
    const inbox = lamp.messages();
    const next = async (): Promise<string> => (await inbox.next()).value!.text;
    const page = await loggedIn(key);

    await page.fill('#router-name', 'garden');
    await page.fill('#router-member', 'switch');
    await page.click('#router-form button');
    await page.waitForSelector('#routers .member[data-router="GARDEN"][data-id="SWITCH"]');
    await page.fill('#router-member', 'LAMP');
    await page.click('#router-form button');
    await page.waitForSelector('#routers .member[data-router="GARDEN"][data-id="LAMP"].online');
    expect(await a.push.ro('GARDEN', 'on')).toEqual({ delivered: 1, total: 1 });
    expect(await next()).toBe('on');

    await page.fill('#alias-name', 'light');
    await page.fill('#alias-targets', 'lamp');
    await page.click('#alias-form button');
    await page.waitForSelector('#aliases tr[data-alias="LIGHT"]');
    expect(await a.push.alias('LIGHT', 'toggle')).toBe('SENT');
    expect(await next()).toBe('toggle');

    await page.selectOption('#push-kind', 'RID');
    await page.fill('#push-target', 'lamp');
    await page.fill('#push-data', 'hello from the console');
    await page.click('#push-form button');
    await expect.poll(() => page.textContent('#push-result')).toBe('Delivered 1 of 1.');
    expect(await next()).toBe('hello from the console');

    // Counters and the rate come from the live stream: LAMP received 3, SWITCH sent 2.
    const counters = async (id: string): Promise<string> =>
      (await page.locator(`#devices tr[data-id="${id}"] td.num`).allTextContents()).join();
    await expect.poll(() => counters('LAMP')).toBe('0,3');
    await expect.poll(() => counters('SWITCH')).toBe('2,0');
    await page.close();
  });

  it('the admin token picks accounts; a wrong token is refused with a message', async () => {
    const page = await browser.newPage();
    await page.goto(`http://127.0.0.1:${srv.httpPort}/`);
    await page.fill('#token', '0123456789ABCDEF0123456789ABCDEF');
    await page.click('#login-form button[type=submit]');
    await expect.poll(() => page.textContent('#login-error')).toBe('That KEY or token is not valid.');
    await page.close();

    const admin = await loggedIn(ADMIN_TOKEN);
    const options = await admin.locator('#account-select option').allTextContents();
    expect(options.length).toBeGreaterThanOrEqual(2);
    expect(await admin.textContent('#who')).toBe('admin');
    await admin.close();
  });
});

interface TreeJson {
  nodes: { id: string; parent: string | null; children: string[] }[];
}

// ------------------------------------------------------------------ the stream and API under the console

/** Reads server-sent events from the HTTP port until `until` says stop. */
async function events(
  path: string,
  until: (event: string, data: unknown) => boolean,
  ms = 5000,
): Promise<{ event: string; data: unknown }[]> {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), ms);
  const out: { event: string; data: unknown }[] = [];
  try {
    const res = await fetch(`http://127.0.0.1:${srv.httpPort}${path}`, {
      headers: { authorization: `Bearer ${srv.key}` },
      signal: ac.signal,
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/event-stream; charset=utf-8');
    const decoder = new TextDecoder();
    let buf = '';
    for await (const chunk of res.body!) {
      buf += decoder.decode(chunk as Uint8Array, { stream: true });
      let end = buf.indexOf('\n\n');
      while (end >= 0) {
        const block = buf.slice(0, end);
        buf = buf.slice(end + 2);
        const ev = /^event: (.*)$/m.exec(block)?.[1];
        const data = /^data: (.*)$/m.exec(block)?.[1];
        if (ev !== undefined && data !== undefined) {
          const parsed = JSON.parse(data) as unknown;
          out.push({ event: ev, data: parsed });
          if (until(ev, parsed)) return out;
        }
        end = buf.indexOf('\n\n');
      }
    }
  } finally {
    clearTimeout(timer);
    ac.abort();
  }
  return out;
}

interface StateJson {
  devices: { id: string; online: boolean; sent: number; received: number }[];
}

describe('the console stream and API', () => {
  it('opens with topology and state; a registration shows up as a state event well within a second', async () => {
    let t0 = 0;
    const got = await events('/api/v1/accounts/me/events', (event, data) => {
      if (event === 'state' && t0 === 0) {
        t0 = Date.now();
        void dev('STREAMED');
      }
      return event === 'state' && (data as StateJson).devices.some((d) => d.id === 'STREAMED' && d.online);
    });
    expect(got[0]!.event).toBe('topology');
    expect(got[1]!.event).toBe('state');
    expect(Date.now() - t0).toBeLessThan(1000);
  });

  it('counts exactly what each device sent and received, across shards, with pipelined pushes', async () => {
    const key = srv.newKey();
    const senders = await Promise.all([0, 1, 2, 3].map((i) => dev(`S${i}`, key)));
    const sink = await dev('SINK', key);
    const n = 2000;
    for (const s of senders) {
      let batch = '';
      for (let i = 0; i < n; i++) batch += `TCP:PUSH:${key}:RID:SINK:m${i}\r\n`;
      s.write(batch);
    }
    await sink.until((b) => b.split('\r\n').length > 4 * n, 10000, 'every push');
    for (const s of senders) await s.until((b) => b.split('\r\n').length > n, 10000, 'every reply');
    const res = await api('GET', '/api/v1/accounts/me/stats', undefined, key);
    const state = (await res.json()) as StateJson;
    expect(state.devices.find((d) => d.id === 'SINK')).toMatchObject({ online: true, sent: 0, received: 4 * n });
    for (let i = 0; i < 4; i++) expect(state.devices.find((d) => d.id === `S${i}`)).toMatchObject({ sent: n });
  });

  it('a test push answers total, delivered, held and offline; bad bodies get 400 naming the field', async () => {
    const a = await dev('PA');
    let r = await api('POST', '/api/v1/accounts/me/push', { ids: ['pa', 'NOBODY'], data: 'x:y' });
    expect(r.status).toBe(200);
    expect(await r.json()).toEqual({ total: 2, delivered: 1, held: 0, offline: 1 });
    expect(await a.line()).toBe('PUSH:x:y');
    for (const [body, field] of [
      [{ ids: [], data: 'x' }, 'ids'],
      [{ ids: ['A'], data: '' }, 'data'],
      [{ ids: ['A'], data: 'two\r\nlines' }, 'data'],
      [{ ids: ['bad id!'], data: 'x' }, 'ids'],
    ] as const) {
      r = await api('POST', '/api/v1/accounts/me/push', body);
      expect(r.status).toBe(400);
      expect(((await r.json()) as { field: string }).field).toBe(field);
    }
  });

  it('serves the page and its modules; an unknown console file is 404', async () => {
    const page = await fetch(`http://127.0.0.1:${srv.httpPort}/`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(await page.text()).toContain('<script type="module" src="/console/main.js">');
    const js = await fetch(`http://127.0.0.1:${srv.httpPort}/console/main.js`);
    expect(js.headers.get('content-type')).toBe('text/javascript; charset=utf-8');
    for (const p of ['/console/nope.js', '/console/..%2Fpackage.json', '/console/secret.txt']) {
      expect((await fetch(`http://127.0.0.1:${srv.httpPort}${p}`)).status, p).toBe(404);
    }
  });

  it('the device-port HTTP relay cannot stream: 400 STREAM_UNSUPPORTED', async () => {
    const c = await TestClient.open(srv.port);
    opened.push(c);
    c.write(`GET /api/v1/accounts/me/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${srv.key}\r\n\r\n`);
    await c.until((b) => b.includes('}'), 5000, 'the response');
    expect(c.buffer).toMatch(/^HTTP\/1\.1 400 /);
    expect(c.buffer).toContain('"error":"STREAM_UNSUPPORTED"');
  });
});

describe('HTTP.MAX_STREAMS', () => {
  it('refuses the stream past the limit with 503 and takes a new one once one closed', async () => {
    const small = await startTestServer({ HTTP: { MAX_STREAMS: 1 } });
    try {
      const open = (): Promise<Response> =>
        fetch(`http://127.0.0.1:${small.httpPort}/api/v1/accounts/me/events`, {
          headers: { authorization: `Bearer ${small.key}` },
          signal: ac.signal,
        });
      let ac = new AbortController();
      const first = await open();
      expect(first.status).toBe(200);
      const second = await fetch(`http://127.0.0.1:${small.httpPort}/api/v1/accounts/me/events`, {
        headers: { authorization: `Bearer ${small.key}` },
      });
      expect(second.status).toBe(503);
      expect(((await second.json()) as { error: string }).error).toBe('TOO_MANY_STREAMS');
      ac.abort();
      ac = new AbortController();
      await expect.poll(() => small.api.streams.count).toBe(0);
      const third = await open();
      expect(third.status).toBe(200);
      ac.abort();
    } finally {
      await small.stop();
    }
  });
});
