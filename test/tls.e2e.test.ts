// End-to-end tests of the TLS device listener (issue 5; TLS.ENABLED/PORT/CERT/KEY): the same protocol as the
// plain port, byte for byte, with a certificate generated in this test run. Registration, pushes between TLS and
// plain devices both ways, HSTCP inside TLS, the operator API over TLS, and hostile handshakes that must not
// disturb the devices already connected.

import { randomBytes, X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { connect as netConnect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type TLSSocket, connect as tlsConnect } from 'node:tls';
import { generate } from 'selfsigned';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { hstcpMac, hstcpProof, stcpSessionKey } from '../src/protocol/secure.ts';
import { TestClient } from './helpers/client.ts';
import { devices } from './helpers/devices.ts';
import { type Blocks, startTestServer, type TestServer } from './helpers/server.ts';
import { sleep } from './helpers/shards.ts';

let srv: TestServer;
let certDir: string;
let cert: string;
const { opened, closeAll } = devices(() => srv);

beforeAll(async () => {
  const pems = await generate([{ name: 'commonName', value: 'localhost' }], {
    keySize: 2048,
    algorithm: 'sha256',
    extensions: [
      { name: 'basicConstraints', cA: false },
      { name: 'keyUsage', digitalSignature: true, keyEncipherment: true },
      { name: 'extKeyUsage', serverAuth: true },
      {
        name: 'subjectAltName',
        altNames: [
          { type: 2, value: 'localhost' },
          { type: 7, ip: '127.0.0.1' },
        ],
      },
    ],
  });
  cert = pems.cert;
  certDir = mkdtempSync(join(tmpdir(), 'p2pc-tls-'));
  writeFileSync(join(certDir, 'cert.pem'), pems.cert);
  writeFileSync(join(certDir, 'key.pem'), pems.private);
  srv = await startTestServer({
    TLS: { ENABLED: true, PORT: 0, CERT: join(certDir, 'cert.pem'), KEY: join(certDir, 'key.pem') },
  });
  expect(srv.supervisor.shardCount).toBe(2);
  expect(srv.tlsPort).toBeGreaterThan(0);
  expect(srv.tlsPort).not.toBe(srv.port);
}, 60000);
afterAll(async () => {
  await srv?.stop();
  if (certDir) rmSync(certDir, { recursive: true, force: true });
});
afterEach(async () => {
  await closeAll('the server to see every connection of the test closed');
});

// ------------------------------------------------------------------ helpers

/** A plain TCP connection to `port` (the device port unless another is given: bytes that are not TLS). */
async function plain(port = srv.port): Promise<TestClient> {
  const c = await TestClient.open(port);
  opened.push(c);
  return c;
}

/**
 * A TLS connection to the TLS port that trusts only the generated certificate. It runs over a TCP socket of
 * our own (`tcp`), so a test can reset that socket under the TLS session.
 */
async function secure(port = srv.tlsPort): Promise<TestClient & { tcp: Socket }> {
  const tcp = await new Promise<Socket>((resolve, reject) => {
    const s = netConnect({ port, host: '127.0.0.1' });
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
  return new Promise((resolve, reject) => {
    const s = tlsConnect({ socket: tcp, servername: 'localhost', ca: cert });
    s.once('secureConnect', () => {
      const w = Object.assign(TestClient.over(s), { tcp });
      opened.push(w);
      resolve(w);
    });
    s.once('error', reject);
  });
}

async function reg<W extends TestClient>(w: W, key: string, id: string): Promise<W> {
  expect(await w.request(`TCP:ID:${key}:${id}`)).toBe(`[OK:${id.toUpperCase()}]`);
  return w;
}

/** One HTTPS request to the TLS device port, trusting the generated certificate. */
function https(path: string, auth?: string): Promise<{ status: number; body: string; type: string | undefined }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      {
        host: '127.0.0.1',
        port: srv.tlsPort,
        servername: 'localhost',
        path,
        method: 'GET',
        ca: cert,
        agent: false,
        headers: auth === undefined ? {} : { authorization: `Bearer ${auth}` },
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => {
          body += d;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body, type: res.headers['content-type'] }));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

let ids = 0;
const uniq = (tag: string): string => `${tag}${++ids}`;

// ------------------------------------------------------------------ tests

describe('TLS listener', () => {
  it('presents the configured certificate and registers a device', async () => {
    const w = await secure();
    const tls = w.socket as TLSSocket;
    expect(tls.authorized).toBe(true);
    expect(tls.getPeerCertificate().fingerprint256).toBe(new X509Certificate(cert).fingerprint256);
    const id = uniq('T');
    await reg(w, srv.key, id);
    expect(await w.request(`TCP:GID:${srv.key}`)).toBe(`[OK:${id}]`);
    expect(await w.request(`TCP:ID:${srv.key}:${id}`)).toBe(`[OK:${id}]`);
    expect(await w.request(`TCP:ID:${srv.key}:OTHER`)).toBe(`[FAIL:${id}]`);
  });

  it('the same script gives the same bytes on the plain port and on the TLS port', async () => {
    const key = srv.newKey();
    const script = (id: string): string[] => [
      'HELLO',
      `TCP:GID:${key}`,
      `TCP:PUSH:${key}:RID:X:y`,
      `TCP:FOO:${key}`,
      `TCP:ID:${'0'.repeat(32)}:${id}`,
      `TCP:ID:nothex:${id}`,
      `TCP:ID:${key}:bad id!`,
      `TCP:ID:${key}:${id.toLowerCase()}`,
      `TCP:ID:${key}:SOMETHING-ELSE`,
      `TCP:PUSH:${key}:RID:NOBODY:x`,
      `TCP:PUSH:${key}:NOWHERE:x`,
      `TCP:PUSH:${key}:RID:NOBODY`,
      `TCP:PUSH:${key}:PARENT:x`,
      `TCP:PUSH:${key}:FRIENDS:hello`,
      `TCP:RETDATA:${key}:9`,
      `TCP:RETDATA:${key}:x`,
      `TCP:EMAIL:${key}:a@b.example:s:b`,
      `TCP:${'L'.repeat(5000)}`,
      `TCP:REMID:${key}`,
      `TCP:GID:${key}`,
    ];
    const expected = (id: string): string[] => [
      '[FAIL:UNKNOWN_COMMAND]',
      '[FAIL:NOID]',
      '[FAIL:NOID]',
      '[FAIL:INVALID_CMD]',
      '[FAIL:INVALID_KEY]',
      '[FAIL:INVALID_KEY]',
      '[FAIL:INVALID_DATA]',
      `[OK:${id}]`,
      `[FAIL:${id}]`,
      '[FAIL:REM_ID]',
      '[FAIL:UNKNOWN_CMD]',
      '[FAIL:INVALID_FORMAT]',
      '[FAIL:NO_PARENT]',
      '[FAIL:NO_ID]',
      '[FAIL:NO_DATA]',
      '[FAIL:INVALID_DATA]',
      '[FAIL:MAIL_DISABLED]',
      '[FAIL:LINE_TOO_LONG]',
      '[OK:NODEREMOVED]',
      '[FAIL:NOID]',
    ];
    // One command at a time, then the whole script in one write.
    for (const [name, open] of [
      ['plain', plain],
      ['tls', secure],
    ] as const) {
      const id = uniq(`SCRIPT-${name.toUpperCase()}-`);
      const w = await open();
      const got: string[] = [];
      for (const cmd of script(id)) got.push(await w.request(cmd));
      expect(got, name).toEqual(expected(id));
      const id2 = uniq(`PIPE-${name.toUpperCase()}-`);
      const w2 = await open();
      w2.write(
        script(id2)
          .map((c) => `${c}\r\n`)
          .join(''),
      );
      expect(await w2.lines(script(id2).length), name).toEqual(expected(id2));
      expect(await w2.silence(50)).toBe('');
    }
  });

  it('pushes go between a TLS device and a plain device both ways, singly, in groups and pipelined, bytes intact', async () => {
    const key = srv.newKey();
    const t = await reg(await secure(), key, 'TDEV');
    const p = await reg(await plain(), key, 'PDEV');
    expect(await t.request(`TCP:PUSH:${key}:RID:PDEV:from tls`)).toBe('[OK:DATA_SENT]');
    expect(await p.line()).toBe('PUSH:from tls');
    expect(await p.request(`TCP:PUSH:${key}:RID:tdev:from plain`)).toBe('[OK:DATA_SENT]');
    expect(await t.line()).toBe('PUSH:from plain');
    expect(await t.request(`TCP:PUSH:${key}:FRIENDS:group from tls`)).toBe('[OK:ALL_1]');
    expect(await p.line()).toBe('PUSH:group from tls');
    expect(await p.request(`TCP:PUSH:${key}:FRIENDS:group from plain`)).toBe('[OK:ALL_1]');
    expect(await t.line()).toBe('PUSH:group from plain');

    // Every byte value but CR and LF, both ways.
    let bytes = '';
    for (let b = 0; b < 256; b++) if (b !== 10 && b !== 13) bytes += String.fromCharCode(b);
    expect(await t.request(`TCP:PUSH:${key}:RID:PDEV:${bytes}`)).toBe('[OK:DATA_SENT]');
    expect(await p.line()).toBe(`PUSH:${bytes}`);
    expect(await p.request(`TCP:PUSH:${key}:RID:TDEV:${bytes}`)).toBe('[OK:DATA_SENT]');
    expect(await t.line()).toBe(`PUSH:${bytes}`);

    // 500 pipelined pushes each way at once, in order.
    const n = 500;
    let fromT = '';
    let fromP = '';
    for (let i = 0; i < n; i++) {
      fromT += `TCP:PUSH:${key}:RID:PDEV:t${i}\r\n`;
      fromP += `TCP:PUSH:${key}:RID:TDEV:p${i}\r\n`;
    }
    t.write(fromT);
    p.write(fromP);
    const [tGot, pGot] = await Promise.all([t.lines(2 * n), p.lines(2 * n)]);
    const split = (got: string[]): { replies: string[]; pushes: string[] } => ({
      replies: got.filter((l) => !l.startsWith('PUSH:')),
      pushes: got.filter((l) => l.startsWith('PUSH:')),
    });
    const ts = split(tGot);
    const ps = split(pGot);
    expect(ts.replies).toEqual(Array(n).fill('[OK:DATA_SENT]'));
    expect(ps.replies).toEqual(Array(n).fill('[OK:DATA_SENT]'));
    expect(ts.pushes).toEqual(Array.from({ length: n }, (_, i) => `PUSH:p${i}`));
    expect(ps.pushes).toEqual(Array.from({ length: n }, (_, i) => `PUSH:t${i}`));

    // A line written as several TLS records (one per write).
    const head = `TCP:PUSH:${key}:RID:PDEV:`;
    const long = bytes.repeat(15).slice(0, 4096 - head.length);
    t.write(head);
    for (let i = 0; i < long.length; i += 1000) t.write(long.slice(i, i + 1000));
    t.write('\r\n');
    expect(await t.line()).toBe('[OK:DATA_SENT]');
    expect(await p.line()).toBe(`PUSH:${long}`);
    expect(await t.silence(50)).toBe('');
    expect(p.buffer).toBe('');
  });

  it('HSTCP inside TLS: activation proof, MAC per command, replay refused, deactivation', async () => {
    const uid = `tls-hstcp-${process.pid}@tls.example`;
    const key = srv.newKey(uid);
    const p = await reg(await plain(), key, 'HPLAIN');
    const t = await secure();
    const cli = randomBytes(12).toString('hex');
    const r = await t.request(`HSTCP:${uid}:ACTIVATE:${cli}:`);
    const m = /^\[OK:([0-9A-F]{16}):([0-9A-F]{64})\]$/.exec(r);
    expect(m, r).not.toBeNull();
    const rnd = m![1]!;
    expect(m![2]).toBe(hstcpProof(key, cli, rnd));
    const mac = (n: number, l: string): string => hstcpMac(key, rnd, n, l);
    expect(await t.request(`TCP:ID:${mac(1, 'TCP:ID::htls')}:htls`)).toBe('[OK:HTLS]');
    expect(await t.request(`TCP:ID:${key}:htls`)).toBe('[FAIL:INVALID_KEY]');
    const push2 = `TCP:PUSH:${mac(2, 'TCP:PUSH::RID:HPLAIN:over tls')}:RID:HPLAIN:over tls`;
    expect(await t.request(push2)).toBe('[OK:DATA_SENT]');
    expect(await p.line()).toBe('PUSH:over tls');
    expect(await t.request(push2)).toBe('[FAIL:INVALID_KEY]');
    expect(await p.request(`TCP:PUSH:${key}:RID:HTLS:back`)).toBe('[OK:DATA_SENT]');
    expect(await t.line()).toBe('PUSH:back');
    const head = `HSTCP:${uid}:DEACTIVATE:`;
    expect(await t.request(head + mac(3, head))).toBe('[OK:HSTCP_DEACTIVATED]');
    expect(await t.request(`TCP:GID:${key}`)).toBe('[OK:HTLS]');
    // STCP inside TLS too.
    const r2 = await t.request(`STCP:${uid}:ACTIVATE:`);
    const rnd2 = /^\[OK:([0-9A-F]{8})\]$/.exec(r2)?.[1];
    expect(rnd2, r2).toBeDefined();
    expect(await t.request(`TCP:GID:${stcpSessionKey(key, rnd2!)}`)).toBe('[OK:HTLS]');
    expect(await p.silence(50)).toBe('');
  });

  it('an HTTP request over TLS is served by the operator API', async () => {
    const health = await https('/api/v1/health');
    expect(health.status).toBe(200);
    expect(health.type).toBe('application/json; charset=utf-8');
    expect(JSON.parse(health.body)).toEqual({ status: 'ok', shards: 2 });

    const email = `tls-api-${process.pid}@tls.example`;
    const key = srv.newKey(email);
    const me = await https('/api/v1/accounts/me', key);
    expect(me.status).toBe(200);
    expect(JSON.parse(me.body)).toEqual({ email, level: 4, createdAt: expect.any(Number) });
    const anon = await https('/api/v1/accounts/me');
    expect(anon.status).toBe(401);
    expect(JSON.parse(anon.body)).toEqual({ error: 'UNAUTHORIZED', message: expect.any(String) });
    const other = await https(`/api/v1/accounts/${encodeURIComponent(email)}`, srv.key);
    expect(other.status).toBe(403);

    // Raw: the request line written by hand on a TLS device connection.
    const w = await secure();
    w.write('GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n');
    await w.closedByServer();
    expect(w.buffer.startsWith('HTTP/1.1 200 OK\r\n')).toBe(true);
    expect(w.buffer.endsWith('{"status":"ok","shards":2}')).toBe(true);
  });

  it('a device registered over TLS holds its ID against a plain newcomer, and releases it when it goes', async () => {
    const key = srv.newKey();
    const t = await reg(await secure(), key, 'HOLDER');
    const p = await plain();
    expect(await p.request(`TCP:ID:${key}:HOLDER`)).toBe('[FAIL:NODEEXIST]');
    await p.closedByServer();
    const q = await reg(await plain(), key, 'Q');
    expect(await q.request(`TCP:PUSH:${key}:RID:HOLDER:still`)).toBe('[OK:DATA_SENT]');
    expect(await t.line()).toBe('PUSH:still');
    // A TCP reset under the TLS session: the ID becomes free.
    t.tcp.resetAndDestroy();
    let r = '';
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline) {
      r = await q.request(`TCP:PUSH:${key}:RID:HOLDER:gone?`);
      if (r === '[FAIL:REM_ID]') break;
      expect(r).toBe('[OK:DATA_SENT]');
      await sleep(20);
    }
    expect(r).toBe('[FAIL:REM_ID]');
    await reg(await secure(), key, 'HOLDER');
  });

  it('bad handshakes do not disturb other devices', async () => {
    const key = srv.newKey();
    const t = await reg(await secure(), key, 'BT');
    const p = await reg(await plain(), key, 'BP');

    // 1. Plain protocol bytes on the TLS port: no command runs, the connection is closed.
    const raw1 = await plain(srv.tlsPort);
    raw1.write(`TCP:ID:${key}:EVIL\r\n`);
    await raw1.closedByServer();
    expect(raw1.buffer).not.toContain('[OK');
    expect(raw1.buffer).not.toContain('[FAIL');
    // 2. Random garbage.
    const raw2 = await plain(srv.tlsPort);
    const junk2 = randomBytes(65536);
    junk2[0] = 0; // neither a TLS record type nor a 3.x version (see the fifty below)
    junk2[1] = 0;
    raw2.socket.write(junk2);
    await raw2.closedByServer();
    // 3. A client that does not trust the certificate aborts the handshake.
    const untrusting = await new Promise<string>((resolve) => {
      const s = tlsConnect({ port: srv.tlsPort, host: '127.0.0.1', servername: 'localhost' });
      s.once('secureConnect', () => {
        s.destroy();
        resolve('connected');
      });
      s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    });
    expect(untrusting).toBe('DEPTH_ZERO_SELF_SIGNED_CERT');
    // 4. A truncated ClientHello, then a reset; 5. a ClientHello, then silence, then a reset.
    const hello = await captureClientHello();
    const raw4 = await plain(srv.tlsPort);
    raw4.socket.write(hello.subarray(0, Math.floor(hello.length / 2)));
    await sleep(50);
    raw4.socket.resetAndDestroy();
    const raw5 = await plain(srv.tlsPort);
    raw5.socket.write(hello);
    await raw5.until((b) => b.length > 0, 5000, 'the ServerHello');
    raw5.socket.resetAndDestroy();
    // 6. Fifty garbage connections at once.
    const many = await Promise.all(Array.from({ length: 50 }, () => plain(srv.tlsPort)));
    for (const m of many) {
      // Garbage that cannot start a TLS record: a valid first byte, or a record version of 3.x (second byte 3, as 1
      // in 256 random ones are) with a length the bytes sent do not reach, makes the server wait for the rest of the
      // record until its handshake timeout.
      const junk = randomBytes(300);
      junk[0] = 0;
      junk[1] = 0;
      m.socket.write(junk);
    }
    // Closed, however busy the box is (the point is that they are, not how fast).
    await Promise.all(many.map((m) => m.closedByServer(15000)));
    // 7. A TLS handshake on the plain device port fails (that port speaks no TLS).
    const onPlain = await new Promise<string>((resolve) => {
      const s = tlsConnect({ port: srv.port, host: '127.0.0.1', servername: 'localhost', ca: cert });
      s.once('secureConnect', () => {
        s.destroy();
        resolve('connected');
      });
      s.once('error', () => {
        s.destroy();
        resolve('failed');
      });
    });
    expect(onPlain).toBe('failed');

    // The devices already connected never noticed.
    expect(t.buffer).toBe('');
    expect(p.buffer).toBe('');
    expect(t.closed || p.closed).toBe(false);
    expect(await t.request(`TCP:PUSH:${key}:RID:BP:after`)).toBe('[OK:DATA_SENT]');
    expect(await p.line()).toBe('PUSH:after');
    expect(await p.request(`TCP:PUSH:${key}:RID:BT:after too`)).toBe('[OK:DATA_SENT]');
    expect(await t.line()).toBe('PUSH:after too');
    // Nothing was registered by the garbage.
    expect(await p.request(`TCP:PUSH:${key}:RID:EVIL:x`)).toBe('[FAIL:REM_ID]');
    expect(await p.request(`TCP:PUSH:${key}:FRIENDS:all`)).toBe('[OK:ALL_1]');
    expect(await t.line()).toBe('PUSH:all');
    // And a new TLS device is served as before.
    const t2 = await reg(await secure(), key, 'BT2');
    expect(await t2.request(`TCP:PUSH:${key}:RID:BT:new`)).toBe('[OK:DATA_SENT]');
    expect(await t.line()).toBe('PUSH:new');
  });
});

/** Another server with the TLS listener on the generated certificate, for the suite it is called in. */
function tlsServer(overrides: Blocks): () => TestServer {
  let s: TestServer | undefined;
  beforeAll(async () => {
    s = await startTestServer({
      ...overrides,
      TLS: { ENABLED: true, PORT: 0, CERT: join(certDir, 'cert.pem'), KEY: join(certDir, 'key.pem') },
    });
  });
  afterAll(async () => {
    await s?.stop();
  });
  return () => s!;
}

describe('TLS handshake deadline (NODE.WAIT_FOR_CMD 0.5 s)', () => {
  const server = tlsServer({ NODE: { WAIT_FOR_CMD: 0.5 } });

  it('a handshake that never finishes is cut like a connection that sends no command', async () => {
    const quick = server();
    // A record header that promises 4 KB of handshake, then silence: the server waits for the rest of the record.
    const stalled = await plain(quick.tlsPort);
    stalled.socket.write(Buffer.from([0x16, 0x03, 0x01, 0x10, 0x00]));
    // A ClientHello, then silence: the server answered and waits for the client's next flight.
    const silent = await plain(quick.tlsPort);
    silent.socket.write(await captureClientHello());
    const t0 = Date.now();
    await stalled.closedByServer(10000);
    await silent.closedByServer(10000);
    expect(Date.now() - t0).toBeLessThan(10000);
    expect(stalled.buffer).toBe('');
    // A device that completes its handshake in time is served.
    const c = await secure(quick.tlsPort);
    expect(await c.request(`TCP:ID:${quick.key}:QUICK`)).toBe('[OK:QUICK]');
  });
});

describe('connection limits on the TLS port (PServer.IP_VELOCITY 2)', () => {
  const server = tlsServer({ PServer: { IP_VELOCITY: 2 } });

  it('apply before the handshake, once per connection: past them a connection is closed without a handshake', async () => {
    const limited = server();
    // The window is a fixed calendar minute: do not straddle its end.
    const intoMinute = Date.now() % 60_000;
    if (intoMinute > 50_000) await sleep(60_000 - intoMinute + 200);
    // Two TLS devices from 127.0.0.1: each counted once (counted again after its handshake, the second would fail).
    const a = await secure(limited.tlsPort);
    const b = await secure(limited.tlsPort);
    expect(await a.request(`TCP:ID:${limited.key}:LA`)).toBe('[OK:LA]');
    expect(await b.request(`TCP:ID:${limited.key}:LB`)).toBe('[OK:LB]');
    // The third is closed before any TLS byte: no ServerHello, nothing at all.
    const third = await plain(limited.tlsPort);
    third.socket.write(await captureClientHello());
    await third.closedByServer(5000);
    expect(third.buffer).toBe('');
    // The devices admitted keep working.
    expect(await a.request(`TCP:PUSH:${limited.key}:RID:LB:still`)).toBe('[OK:DATA_SENT]');
    expect(await b.line()).toBe('PUSH:still');
  });
});

/** The bytes of a real ClientHello, captured from node:tls against a throwaway local listener. */
async function captureClientHello(): Promise<Buffer> {
  const { createServer } = await import('node:net');
  return new Promise((resolve, reject) => {
    const server = createServer((sock) => {
      sock.once('data', (b: Buffer) => {
        sock.destroy();
        server.close();
        resolve(b);
      });
    });
    server.listen(0, '127.0.0.1', () => {
      const addr = server.address();
      if (addr === null || typeof addr === 'string') return reject(new Error('no address'));
      const c = tlsConnect({ port: addr.port, host: '127.0.0.1', servername: 'localhost', ca: cert });
      c.on('error', () => {});
    });
  });
}
