// The typed Node client (clients/ts, issue 11) end to end against the real server (supervisor + 2 shard threads):
// every command and its parsed reply, every PUSH target with trees, routers and aliases built over the REST API,
// FAIL replies as P2PError codes, 10,000 pipelined pushes in order through the async iterator and its backpressure,
// every secure mode (STCP, DSTCP, HSTCP, TLS, TLS-PSK), presence and wills, RAW as a Duplex both ways with SHA-256
// over 32 MiB, and reconnects (the server restarted on the same port and data directory; pending commands rejected).

import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generate } from 'selfsigned';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  type ConnectOptions,
  dstcpKey,
  hstcpMac,
  hstcpProof,
  type Message,
  md5Proof,
  P2PClient,
  P2PError,
  type PresenceEvent,
  type RawStream,
  stcpSessionKey,
  tlsPsk,
} from '../clients/ts/src/index.ts';
import { apiCall, type Json } from './helpers/api.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';
import { openTotal, sleep, waitFor } from './helpers/shards.ts';

const MiB = 1 << 20;
let srv: TestServer;
let certDir: string;
const opened: P2PClient[] = [];

beforeAll(async () => {
  const pems = await generate([{ name: 'commonName', value: 'localhost' }], { keySize: 2048 });
  certDir = mkdtempSync(join(tmpdir(), 'p2pc-client-ts-'));
  writeFileSync(join(certDir, 'cert.pem'), pems.cert);
  writeFileSync(join(certDir, 'key.pem'), pems.private);
  srv = await startTestServer({
    USER: { '4HOLDPUSH': [1, 1, 1, 1], '5HOLDBUFFER': [10, 10, 10, 10] },
    // Mail and SMS are queued durably and answered at once; delivery (to nothing) is not what is tested here.
    EMAIL: { mail_smtp_host: '127.0.0.1', mail_smtp_port: 9, mail_smtp_auth: false, MAX_TRIES: 1 },
    SMS: { URL: 'http://127.0.0.1:9/sms/{number}' },
    TLS: { ENABLED: true, PORT: 0, CERT: join(certDir, 'cert.pem'), KEY: join(certDir, 'key.pem'), PSK: true },
  });
}, 60000);
afterAll(async () => {
  await srv?.stop();
  if (certDir) rmSync(certDir, { recursive: true, force: true });
});
afterEach(async () => {
  for (const c of opened.splice(0)) c.destroy();
  await waitFor(() => openTotal(srv) === 0, 'the server to see every connection of the test closed', 10000);
});

// ------------------------------------------------------------------ helpers

let seq = 0;
/** A fresh account (e-mail, KEY and its REST path). */
function account(s: TestServer = srv): { email: string; key: string; path: string } {
  const email = `cts-${process.pid}-${++seq}@client.example`;
  const key = s.newKey(email);
  return { email, key, path: `/api/v1/accounts/${email}` };
}

async function connect(o: Partial<ConnectOptions> & { id: string; key: string }, s = srv): Promise<P2PClient> {
  const c = await P2PClient.connect({ port: s.port, reconnect: false, ...o });
  opened.push(c);
  return c;
}

/** An operator API call that must succeed (any 2xx); its body. */
async function api(method: string, path: string, body?: unknown, s = srv): Promise<Json> {
  const r = await apiCall(s.httpPort, method, path, body);
  if (r.status < 200 || r.status > 299) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

/** One iterator per client, so a timed-out wait does not leave a second reader behind. */
const iterators = new WeakMap<P2PClient, AsyncIterator<Message>>();

/** The next n messages' texts of c. */
async function recv(c: P2PClient, n = 1, ms = 5000): Promise<string[]> {
  let it = iterators.get(c);
  if (it === undefined) {
    it = c.messages();
    iterators.set(c, it);
  }
  const out: string[] = [];
  const deadline = Date.now() + ms;
  while (out.length < n) {
    const r = await Promise.race([it.next(), sleep(Math.max(1, deadline - Date.now())).then(() => null)]);
    if (r === null) throw new Error(`${c.id}: timed out after ${out.length} of ${n} messages (${out.slice(-3)})`);
    if (r.done) throw new Error(`${c.id}: message stream ended after ${out.length} of ${n}`);
    out.push(r.value.text);
  }
  return out;
}

/** Rejects with a P2PError of this code (from the server unless `server` is false). */
async function fails(p: Promise<unknown>, code: string, server = true): Promise<P2PError> {
  const e = await p.then(
    (v) => {
      throw new Error(`expected [FAIL:${code}], got ${JSON.stringify(v)}`);
    },
    (e: unknown) => e,
  );
  expect(e).toBeInstanceOf(P2PError);
  expect((e as P2PError).code).toBe(code);
  expect((e as P2PError).server).toBe(server);
  return e as P2PError;
}

/** Waits for the next event of `name` on c. */
function next<T>(c: P2PClient, name: 'presence' | 'connect' | 'sync' | 'disconnect', ms = 5000): Promise<T> {
  return Promise.race([
    once(c, name).then((a) => a[0] as T),
    sleep(ms).then(() => {
      throw new Error(`${c.id}: no ${name} event within ${ms} ms`);
    }),
  ]);
}

// ------------------------------------------------------------------ secure constructions

describe('secure constructions (docs/security.md test vectors)', () => {
  it('STCP, DSTCP and HSTCP values match the documented vectors', () => {
    const KEY = '0123456789ABCDEF0123456789ABCDEF';
    expect(md5Proof(KEY, 'CAFEBABE01')).toBe('D795E6868A367DC5E18E6D233D6A90B8');
    expect(stcpSessionKey(KEY, '1A2B3C4D')).toBe('ECBE6C737531EE9CBDD2FE1E06A69752');
    expect(dstcpKey(KEY, '1A2B3C4D', '556')).toBe('6CDC931E5CAB9327EFDB96A9E3A7330F');
    expect(dstcpKey(KEY, '1A2B3C4D', '555')).toBe('D7509FDF32A25AB1A885CA5D4D1756FD');
    expect(hstcpProof(KEY, '0011223344556677', '89ABCDEF01234567')).toBe(
      'C827ED6CACBE5F2D99C0005F983202DF6A81EC76F5FD316853C383A691A53E2E',
    );
    const rnd = '89ABCDEF01234567';
    expect(hstcpMac(KEY, rnd, 1, ['TCP:ID::556'])).toBe('1AFEB52A384CBF0F8813242E81411A30');
    expect(hstcpMac(KEY, rnd, 2, ['TCP:PUSH::RID:555:hi'])).toBe('578A1C316215946DD956937B00AA403A');
    expect(hstcpMac(KEY, rnd, 3, ['HSTCP:demo@example.com:DEACTIVATE:'])).toBe('07941887F8BD678742DC9D9F2AEEE9F1');
  });
});

// ------------------------------------------------------------------ commands

describe('commands and their parsed replies', () => {
  it('ID, GID, TIME in every format, STATUS, RETDATA, EMAIL, SMS, REMID and register', async () => {
    const { key } = account();
    const a = await connect({ key, id: 'dev-a' });
    expect(a.id).toBe('DEV-A');
    expect(await a.gid()).toBe('DEV-A');

    const legacy = await a.time('+05:30');
    expect(legacy.zone).toBe('IST');
    expect(legacy.raw).toMatch(/^IST:\(\w{3}\)\(\d{1,2},\d{2},\d{4}\)\(\d{2}:\d{2}:\d{2}\)\(\d+\)$/);
    expect(Math.abs(legacy.unix - Date.now() / 1000)).toBeLessThan(5);
    expect(await a.time('+05:30', 'ISO')).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\+05:30$/);
    expect(Math.abs((await a.time('+00:00', 'EPOCH')) - Date.now() / 1000)).toBeLessThan(5);
    expect(Math.abs((await a.time('Europe/Berlin', 'EPOCHMS')) - Date.now())).toBeLessThan(5000);
    expect(await a.time('-03:00', 'RFC2822')).toMatch(/^\w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} -0300$/);
    await fails(a.time('+99:00'), 'INVALID_DATA');

    expect(await a.status('dev-a')).toEqual({ online: true });
    await fails(a.status('never-seen'), 'REM_ID');
    const b = await connect({ key, id: 'dev-b' });
    b.destroy();
    await waitFor(() => openTotal(srv) === 1, 'dev-b to be gone');
    const st = await a.status('DEV-B');
    expect(st.online).toBe(false);
    if (!st.online) expect(Math.abs(st.lastSeen.getTime() - Date.now())).toBeLessThan(5000);

    // RETDATA: the last pushed payloads (pushes to an offline known device are held, and still cached).
    await fails(a.retdata(1), 'NO_DATA');
    for (const d of ['one', 'two: with colons', 'três']) expect(await a.push.rid('dev-b', d)).toBe('HELD');
    expect(await a.retdata(1)).toBe('one');
    expect(await a.retdata(3)).toBe('três');
    await fails(a.retdata(4), 'NO_DATA');
    expect(await a.retdataAll()).toEqual(['one', 'two: with colons', 'três']);
    await expect(a.retdata(0)).rejects.toMatchObject({ code: 'BAD_ARGUMENT', server: false });

    await a.email('someone@example.com', 'Report', 'body: with colons');
    await fails(a.email('not-an-address', 'x', 'y'), 'INVALID_ID');
    await a.sms('+4915112345678', 'hello');
    await fails(a.sms('12', 'hello'), 'INVALID_ID');

    await a.remid();
    expect(a.id).toBe(null);
    await fails(a.gid(), 'NOID');
    expect(await a.register('dev-a2')).toBe('DEV-A2');
    expect(a.id).toBe('DEV-A2');
    await fails(a.register('other'), 'DEV-A2'); // [FAIL:<CURRENT_ID>]
    expect(await a.ping()).toBeGreaterThan(0);
  });

  it('failures are P2PErrors: server codes, and the client’s own checks', async () => {
    const { key } = account();
    await fails(connect({ key: 'F'.repeat(32), id: 'x' }), 'INVALID_KEY');
    const a = await connect({ key, id: 'solo' });
    await fails(connect({ key, id: 'solo' }), 'NODEEXIST');
    await fails(a.push.rid('nobody', 'x'), 'REM_ID');
    await fails(a.push.friends('x'), 'NO_ID');
    await fails(a.push.parent('x'), 'NO_PARENT');
    await fails(a.push.ro('nowhere', 'x'), 'NO_ROUTER');
    await fails(a.push.alias('nothing', 'x'), 'NO_ALIAS');
    await fails(a.raw('nobody'), 'REM_ID');
    const e = await fails(a.push.rid('nobody', 'x'), 'REM_ID');
    expect(e.message).toContain('TCP:PUSH:<key>:RID:nobody:x');
    expect(e.message).not.toContain(key);
    // Client-side checks: nothing is sent.
    await fails(a.push.rid('bad:id', 'x'), 'BAD_ARGUMENT', false);
    await fails(a.push.rid('b', 'two\nlines'), 'BAD_ARGUMENT', false);
    await fails(a.push.friends(Buffer.from('cr\r')), 'BAD_ARGUMENT', false);
    await fails(a.watch('RAW:x' as 'FRIENDS'), 'BAD_ARGUMENT', false);
    await expect(P2PClient.connect({ port: srv.port, key: 'short', id: 'x' })).rejects.toThrow(TypeError);
    // The connection is still in step after all that.
    expect(await a.gid()).toBe('SOLO');
    // QUEUE_FULL past maxQueued; the others go through.
    const q = await connect({ key, id: 'queue', maxQueued: 10, maxInFlight: 2 });
    const r = await Promise.allSettled(Array.from({ length: 15 }, () => q.gid()));
    expect(r.filter((x) => x.status === 'fulfilled').length).toBe(10);
    for (const x of r.slice(10)) expect((x as PromiseRejectedResult).reason).toMatchObject({ code: 'QUEUE_FULL' });
    // After close(), commands fail with CLOSED; the iterators end.
    await q.close();
    await fails(q.gid(), 'CLOSED', false);
    expect(await q.messages().next()).toEqual({ value: undefined, done: true });
  });
});

// ------------------------------------------------------------------ PUSH targets

describe('every PUSH target, with a tree, a router and aliases built over the REST API', () => {
  it('RID, FRIENDS, CHILDS, ALLCHILDS, PARENT, RO and ALIAS: parsed replies and deliveries', async () => {
    const { key, path } = account();
    // P ─ A ─ A1
    //   ├ B
    //   └ C (offline)
    for (const [id, parent] of [
      ['P', null],
      ['A', 'P'],
      ['B', 'P'],
      ['C', 'P'],
      ['A1', 'A'],
    ] as const) {
      await api('POST', `${path}/tree/nodes`, { id, parent });
    }
    await api('POST', `${path}/routers`, { name: 'mesh' });
    for (const id of ['A', 'B', 'A1']) await api('PUT', `${path}/routers/MESH/members/${id}`);
    await api('PUT', `${path}/aliases/lamp`, { target: 'B' });
    await api('PUT', `${path}/aliases/pair`, { targets: ['B', 'A1'] });
    const [p, a, b, a1] = await Promise.all(['P', 'A', 'B', 'A1'].map((id) => connect({ key, id })));

    expect(await a!.push.rid('b', 'direct')).toBe('SENT');
    expect(await recv(b!)).toEqual(['direct']);
    expect(await a!.push.friends('to-friends')).toEqual({ delivered: 1, total: 2 }); // B; C is offline
    expect(await recv(b!)).toEqual(['to-friends']);
    expect(await p!.push.childs('to-childs')).toEqual({ delivered: 2, total: 3 });
    expect([...(await recv(a!)), ...(await recv(b!))]).toEqual(['to-childs', 'to-childs']);
    expect(await p!.push.allChilds('to-all')).toEqual({ delivered: 3, total: 4 });
    expect([...(await recv(a!)), ...(await recv(b!)), ...(await recv(a1!))]).toEqual(['to-all', 'to-all', 'to-all']);
    expect(await a1!.push.parent('up')).toBe('SENT');
    expect(await recv(a!)).toEqual(['up']);
    await fails(p!.push.parent('x'), 'NO_PARENT');
    expect(await a!.push.ro('mesh', 'to-router')).toEqual({ delivered: 2, total: 2 });
    expect([...(await recv(b!)), ...(await recv(a1!))]).toEqual(['to-router', 'to-router']);
    await fails(p!.push.ro('mesh', 'not a member'), 'NO_ROUTER');
    expect(await p!.push.alias('lamp', 'to-lamp')).toBe('SENT');
    expect(await recv(b!)).toEqual(['to-lamp']);
    expect(await p!.push.alias('pair', 'to-pair')).toEqual({ delivered: 2, total: 2 });
    expect([...(await recv(b!)), ...(await recv(a1!))]).toEqual(['to-pair', 'to-pair']);
    // Re-pointing an alias applies to the next push; bytes payloads pass unchanged.
    await api('PUT', `${path}/aliases/lamp`, { target: 'A1' });
    const bytes = Buffer.from([0, 1, 2, 0x3a, 0x7f, 0x80, 0xff]);
    expect(await p!.push.alias('lamp', bytes)).toBe('SENT');
    const [m] = await Promise.all([a1!.messages().next()]);
    expect((m.value as Message).data.equals(bytes)).toBe(true);
    // A held push is delivered when the device registers; the sender never gets its own group message.
    expect(await p!.push.rid('C', 'held for C')).toBe('HELD');
    // C, offline but in the tree, had the group pushes held too (§5 Hold), in order before the direct one.
    const c = await connect({ key, id: 'C' });
    expect(await recv(c, 4)).toEqual(['to-friends', 'to-childs', 'to-all', 'held for C']);
    expect(p!.stats().bufferedMessages).toBe(0);
  });

  it('10,000 pipelined pushes arrive in order; a lagging consumer pauses the socket instead of buffering them all', async () => {
    const { key } = account();
    const tx = await connect({ key, id: 'tx' });
    const rx = await connect({ key, id: 'rx', messageHighWater: 200 });
    const N = 10_000;
    const pad = 'p'.repeat(200);
    const t0 = performance.now();
    const replies = await Promise.all(Array.from({ length: N }, (_, i) => tx.push.rid('rx', `${i}:${pad}`)));
    const ms = performance.now() - t0;
    expect(replies.every((r) => r === 'SENT')).toBe(true);
    // Nothing consumed yet: the receiver stopped reading near its high-water mark (one socket read past it).
    await waitFor(() => rx.stats().paused, 'the receiver to stop reading', 10000);
    await sleep(100);
    const s = rx.stats();
    expect(s.paused).toBe(true);
    expect(s.bufferedMessages).toBeGreaterThanOrEqual(200);
    expect(s.bufferedMessages).toBeLessThan(2000);
    const got = await recv(rx, N, 15000);
    for (let i = 0; i < N; i++) expect(got[i]).toBe(`${i}:${pad}`);
    expect(rx.stats().paused).toBe(false);
    console.log(`10,000 pipelined pushes answered in ${ms.toFixed(0)} ms`);
  });
});

// ------------------------------------------------------------------ secure modes

describe('secure sessions and TLS', () => {
  for (const secure of ['STCP', 'DSTCP', 'HSTCP'] as const) {
    it(`${secure}: registration, pipelined pushes, group replies and errors`, async () => {
      const { key, email } = account();
      const a = await connect({ key, id: 'a', secure, uid: email });
      const b = await connect({ key, id: 'b', secure, uid: email.toUpperCase() });
      const N = 200;
      const r = await Promise.all(Array.from({ length: N }, (_, i) => a.push.rid('b', `${secure}-${i}`)));
      expect(r.every((x) => x === 'SENT')).toBe(true);
      expect(await recv(b, N)).toEqual(Array.from({ length: N }, (_, i) => `${secure}-${i}`));
      // DSTCP's checked field is in the payload here (FRIENDS:<F>:...), in UTF-8; and a payload given as bytes.
      expect(await b.push.friends('ü:1')).toEqual({ delivered: 1, total: 1 });
      expect(await recv(a)).toEqual(['ü:1']);
      const bytes = Buffer.from([0x3a, 0xff, 0x00, 0x41, 0x3a, 0x80]);
      expect(await b.push.rid('a', bytes)).toBe('SENT');
      expect(await b.push.friends(bytes)).toEqual({ delivered: 1, total: 1 });
      const got = [(await a.messages().next()).value as Message, (await a.messages().next()).value as Message];
      expect(got.every((m) => m.data.equals(bytes))).toBe(true);
      await fails(a.push.rid('nobody', 'x'), 'REM_ID');
      expect((await a.time('+01:00')).zone).toBeTruthy();
      await a.watch('RID:B');
      await a.will('RID:B', 'bye');
      expect(await a.retdata(1)).toBe(`${secure}-196`); // the last 5 (NODE.DATA_CACHE), failed pushes included
      expect(await a.retdata(5)).toBe('x');
      // Commands the server answers before checking the KEY field (NOID after REMID) do not use an HSTCP sequence
      // number; the client stays in step.
      await a.remid();
      await fails(a.gid(), 'NOID');
      expect(await a.register('a')).toBe('A');
      expect(await a.gid()).toBe('A');
      if (secure === 'HSTCP') {
        // A line too long fails before its MAC is checked: the commands pipelined behind it carry MACs for later
        // sequence numbers and fail; the client rewinds and the next commands verify.
        const behind = [a.push.rid('b', 'x'.repeat(5000)), a.gid(), a.gid()];
        const settled = await Promise.allSettled(behind);
        expect((settled[0] as PromiseRejectedResult).reason).toMatchObject({ code: 'LINE_TOO_LONG' });
        expect(await a.gid()).toBe('A');
        expect(await a.push.rid('b', 'after')).toBe('SENT');
        expect(await recv(b)).toEqual(['after']);
      }
    });
  }

  it('a server that cannot prove it knows the KEY is refused (SERVER_PROOF); lost replies reject CONNECTION_LOST', async () => {
    const fake = await fakeServer((sock, line) => {
      if (line.startsWith('HSTCP:')) sock.write(`[OK:0123456789ABCDEF:${'0'.repeat(64)}]\r\n`);
      else if (line.startsWith('TCP:ID:')) sock.write(`[OK:${line.split(':')[3]}]\r\n`);
      else if (line.startsWith('TCP:GID:')) sock.destroy(); // swallows the command and goes away
    });
    try {
      const key = 'A'.repeat(32);
      await fails(
        P2PClient.connect({ port: fake.port, key, id: 'x', secure: 'HSTCP', uid: 'u@example.com' }),
        'SERVER_PROOF',
        false,
      );
      const c = await P2PClient.connect({ port: fake.port, key, id: 'x', reconnect: false });
      const [lost, closed] = await Promise.allSettled([c.gid(), once(c, 'close')]);
      expect((lost as PromiseRejectedResult).reason).toMatchObject({ code: 'CONNECTION_LOST', server: false });
      expect(closed.status).toBe('fulfilled');
      await fails(c.gid(), 'CLOSED', false);
    } finally {
      await fake.close();
    }
  });

  it('TLS with a certificate, and TLS-PSK with an HSTCP session inside', async () => {
    // Created over the API: the TLS-PSK lookup knows accounts the running server created.
    const email = `cts-psk-${process.pid}@client.example`;
    const { key } = (await api('POST', '/api/v1/accounts', { email })) as { key: string };
    const ca = { ca: [readFileSync(join(certDir, 'cert.pem'), 'utf8')], servername: 'localhost' };
    const a = await connect({ key, id: 'tls-a', tls: ca, port: srv.tlsPort });
    const b = await connect({
      key,
      id: 'psk-b',
      tls: tlsPsk(email, key),
      port: srv.tlsPort,
      secure: 'HSTCP',
      uid: email,
    });
    expect(await a.push.rid('psk-b', 'over tls')).toBe('SENT');
    expect(await recv(b)).toEqual(['over tls']);
    expect(await b.push.rid('tls-a', 'over psk')).toBe('SENT');
    expect(await recv(a)).toEqual(['over psk']);
    await fails(
      connect({ key, id: 'x', tls: tlsPsk(email, 'B'.repeat(32)), port: srv.tlsPort }),
      'CONNECTION_LOST',
      false,
    );
  });
});

/** A scripted line server for failure cases the real server never produces. */
async function fakeServer(
  onLine: (sock: Socket, line: string) => void,
): Promise<{ port: number; close: () => Promise<void> }> {
  const socks = new Set<Socket>();
  const server: Server = createServer((sock) => {
    socks.add(sock);
    sock.on('close', () => socks.delete(sock));
    sock.on('error', () => {});
    let buf = '';
    sock.on('data', (b: Buffer) => {
      buf += b.toString('latin1');
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        const line = buf.slice(0, i).replace(/\r$/, '');
        buf = buf.slice(i + 1);
        onLine(sock, line);
      }
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as { port: number }).port,
    close: async () => {
      for (const s of socks) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

// ------------------------------------------------------------------ presence and will

describe('presence and last will', () => {
  it('presence events through the iterator and the event; a will fires on destroy(), not after close()', async () => {
    const { key } = account();
    const hub = await connect({ key, id: 'hub' });
    await hub.watch('RID:PUMP');
    await hub.watch('FRIENDS');
    const events = hub.presence();
    const seen: PresenceEvent[] = [];
    hub.on('presence', (e) => seen.push(e));
    const pump = await connect({ key, id: 'pump' });
    await pump.will('RID:HUB', 'pump died');
    expect((await events.next()).value).toEqual({ id: 'PUMP', online: true });
    pump.destroy();
    expect((await events.next()).value).toEqual({ id: 'PUMP', online: false });
    expect(await recv(hub)).toEqual(['pump died']);
    expect(seen).toEqual([
      { id: 'PUMP', online: true },
      { id: 'PUMP', online: false },
    ]);
    // A polite close sends REMID: the event comes, the will does not.
    const valve = await connect({ key, id: 'valve' });
    await valve.will('RID:HUB', 'valve died');
    expect((await events.next()).value).toEqual({ id: 'VALVE', online: true });
    await valve.close();
    expect((await events.next()).value).toEqual({ id: 'VALVE', online: false });
    await sleep(100);
    expect(hub.stats().bufferedMessages).toBe(0);
    // clearWill and unwatch.
    const fan = await connect({ key, id: 'fan' });
    expect((await events.next()).value).toEqual({ id: 'FAN', online: true });
    await fan.will('FRIENDS', 'fan died');
    await fan.clearWill();
    await hub.unwatch('FRIENDS');
    fan.destroy();
    await waitFor(() => openTotal(srv) === 1, 'fan to be gone');
    await sleep(100);
    expect(hub.stats().bufferedMessages).toBe(0);
    await events.return?.();
    expect(seen.length).toBe(5); // pump on/off, valve on/off, fan on (FRIENDS was unwatched before it left)
  });
});

// ------------------------------------------------------------------ RAW

/** Writes n bytes (1 MiB blocks, each numbered) with backpressure; resolves with their SHA-256. */
async function writeStream(rs: RawStream, n: number, seed: Buffer, progress: { n: number; blocked: number }) {
  const h = createHash('sha256');
  for (let i = 0; i * MiB < n; i++) {
    const block = Buffer.from(seed.subarray(0, Math.min(MiB, n - i * MiB)));
    block.writeUInt32BE(i, 0);
    h.update(block);
    progress.n += block.length;
    if (!rs.write(block)) {
      progress.blocked++;
      await once(rs, 'drain');
    }
  }
  return h.digest('hex');
}

/** Hashes exactly n incoming bytes. */
function readStream(rs: RawStream, n: number, progress: { n: number }): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    const onData = (b: Buffer): void => {
      progress.n += b.length;
      if (progress.n > n) reject(new Error(`more than ${n} bytes`));
      h.update(b);
      if (progress.n === n) {
        rs.off('data', onData);
        resolve(h.digest('hex'));
      }
    };
    rs.on('data', onData);
    rs.once('error', reject);
  });
}

describe('RAW channel as a Duplex', () => {
  it('32 MiB each way at once, SHA-256 equal on both ends, a paused reader pauses the socket; both reconnect after', async () => {
    const { key } = account();
    const opts = { key, reconnect: { initialDelayMs: 20, maxDelayMs: 200 }, rawHighWaterMark: 256 * 1024 };
    const a = await connect({ ...opts, id: 'ra' });
    const b = await connect({ ...opts, id: 'rb' });
    const [sa, sb] = await Promise.all([a.raw('rb', { duplex: true }), b.raw('ra', { duplex: true })]);
    expect(sa.linked && sa.incoming && sb.linked && sb.incoming).toBe(true);
    await fails(a.gid(), 'RAW_ACTIVE', false);
    const N = 32 * MiB;
    const seedA = randomBytes(MiB);
    const seedB = randomBytes(MiB);
    const wa = { n: 0, blocked: 0 };
    const wb = { n: 0, blocked: 0 };
    const ra = { n: 0 };
    const rb = { n: 0 };
    const t0 = performance.now();
    const readB = readStream(sb, N, rb);
    const readA = readStream(sa, N, ra);
    const [hashA, hashB] = await Promise.all([
      writeStream(sa, N, seedA, wa),
      writeStream(sb, N, seedB, wb),
      (async () => {
        // B's consumer stops for a while: its socket is paused and its buffer stays bounded.
        await waitFor(() => rb.n >= 4 * MiB, 'B to read 4 MiB', 15000);
        sb.pause();
        await waitFor(() => b.stats().paused, 'B to stop reading its socket', 10000);
        await sleep(300);
        expect(b.stats().paused).toBe(true);
        expect(sb.readableLength).toBeLessThanOrEqual(256 * 1024 + 128 * 1024);
        sb.resume();
      })(),
    ]);
    expect(await readB).toBe(hashA);
    expect(await readA).toBe(hashB);
    expect(wa.blocked).toBeGreaterThan(0);
    const s = (performance.now() - t0) / 1000;
    console.log(`RAW: 32 MiB each way in ${s.toFixed(2)} s (${((2 * N) / MiB / s).toFixed(0)} MiB/s both ways)`);
    // Only a disconnect ends a channel: both ends reconnect and register again, and speak commands.
    const back = Promise.all([next(a, 'connect'), next(b, 'connect')]);
    sa.end();
    sb.end();
    sa.destroy();
    sb.destroy();
    await back;
    expect(await a.push.rid('rb', 'commands again')).toBe('SENT');
    expect(await recv(b)).toEqual(['commands again']);
  }, 30000);

  it('one way: acceptRaw() on the reader; end() ends the link; the writer gets REM_LINK when the reader leaves', async () => {
    const { key } = account();
    const opts = { key, reconnect: { initialDelayMs: 20, maxDelayMs: 200 } };
    const w = await connect({ ...opts, id: 'writer' });
    const r = await connect({ ...opts, id: 'reader' });
    const incoming = r.acceptRaw();
    const out = await w.raw('reader');
    const sr = await incoming;
    expect(sr.incoming).toBe(true);
    expect(sr.linked).toBe(false);
    const N = 3 * MiB + 17;
    const got = readStream(sr, N, { n: 0 });
    const sent = await writeStream(out, N, randomBytes(MiB), { n: 0, blocked: 0 });
    const wBack = next(w, 'connect');
    out.end();
    expect(await got).toBe(sent);
    await wBack; // the writer's link ended with its connection; it is registered again
    const rBack = next(r, 'connect');
    sr.destroy();
    await rBack;
    expect(await w.push.rid('reader', 'hello again')).toBe('SENT');
    expect(await recv(r)).toEqual(['hello again']);

    // The reader goes away for good: the writer's next write is answered [FAIL:REM_LINK] and ends its stream.
    const out2 = await w.raw('reader');
    r.destroy();
    await waitFor(() => openTotal(srv) === 1, 'the reader to be gone');
    await sleep(50);
    const failed = once(out2, 'error');
    out2.write('into the void');
    const [err] = await failed;
    expect(err).toMatchObject({ code: 'REM_LINK', server: true });
    await next(w, 'connect');
    expect(await w.gid()).toBe('WRITER');
  }, 20000);
});

// ------------------------------------------------------------------ reconnect

describe('reconnect', () => {
  it('the server restarts on the same port and data: re-registration, watches and the will re-armed, queued commands sent', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'p2pc-client-ts-re-'));
    let one: TestServer | null = null;
    let two: TestServer | null = null;
    try {
      one = await startTestServer({ NODE: { COM_CHK: 0.4 } }, { keepData: dir });
      const port = one.port;
      const { key, email } = account(one);
      const opts = { key, port, reconnect: { initialDelayMs: 30, maxDelayMs: 150 } };
      const a = await connect({ ...opts, id: 'a', secure: 'HSTCP', uid: email }, one);
      const b = await connect({ ...opts, id: 'b' }, one);
      // §2: an idle connection gets SYNC lines; the client answers them so it keeps its ID.
      expect(await next<string>(a, 'sync', 3000)).toMatch(/^\d{2}\.\d{2}\.\d{4}_\d{2}:\d{2}:\d{2}$/);
      await a.watch('RID:B');
      await b.will('RID:A', 'b is gone');
      const events: PresenceEvent[] = [];
      a.on('presence', (e) => events.push(e));

      const lost = [next<P2PError>(a, 'disconnect'), next<P2PError>(b, 'disconnect')];
      await one.stop();
      one = null;
      expect((await lost[0])!.code).toBe('CONNECTION_LOST');
      await lost[1];
      expect(a.connected).toBe(false);
      const queued = a.gid(); // written once the client is registered again
      const back = [next(a, 'connect', 10000), next(b, 'connect', 10000)];
      two = await startTestServer({ PServer: { ServerPort: port }, NODE: { COM_CHK: 0.4 } }, { keepData: dir });
      expect(two.port).toBe(port);
      await Promise.all(back);
      expect(await queued).toBe('A');
      expect(await a.push.rid('b', 'after the restart')).toBe('SENT');
      expect(await recv(b)).toEqual(['after the restart']);
      expect(await b.push.rid('a', 'and back')).toBe('SENT');
      expect(await recv(a)).toEqual(['and back']);
      // The watch and the will were re-armed on the new connection.
      b.destroy();
      await waitFor(() => events.some((e) => e.id === 'B' && !e.online), 'PRESENCE:B:OFFLINE', 5000);
      expect(await recv(a)).toEqual(['b is gone']);
    } finally {
      for (const c of opened.splice(0)) c.destroy();
      await one?.stop();
      await two?.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 30000);
});
