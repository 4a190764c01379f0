// TLS-PSK (identity = account e-mail, key = HMAC-SHA256(KEY, "P2PC-TLS-PSK")) and USER.REQUIRE_SECURE (issue 5).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type TLSSocket } from 'node:tls';
import { generate } from 'selfsigned';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hstcpMac, tlsPsk } from '../src/protocol/secure.ts';
import { TestClient } from './helpers/client.ts';
import { ADMIN_TOKEN, startTestServer, type TestServer } from './helpers/server.ts';

let srv: TestServer;
let key: string;
let dir = '';
const email = 'psk-device@example.com';

beforeAll(async () => {
  const pems = await generate([{ name: 'commonName', value: 'localhost' }], { keySize: 2048 });
  dir = mkdtempSync(join(tmpdir(), 'p2pc-psk-'));
  writeFileSync(join(dir, 'cert.pem'), pems.cert);
  writeFileSync(join(dir, 'key.pem'), pems.private);
  srv = await startTestServer({
    TLS: { ENABLED: true, PORT: 0, CERT: join(dir, 'cert.pem'), KEY: join(dir, 'key.pem'), PSK: true },
    USER: { REQUIRE_SECURE: [1, 1, 1, 1] },
  });
  // Created through the API while the server runs: the PSK lookup must know it at once.
  const r = await fetch(`http://127.0.0.1:${srv.httpPort}/api/v1/accounts`, {
    method: 'POST',
    headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    body: JSON.stringify({ email }),
  });
  key = ((await r.json()) as { key: string }).key;
});
afterAll(async () => {
  await srv?.stop();
  if (dir !== '') rmSync(dir, { recursive: true, force: true });
});

function pskConnect(identity: string, psk: Buffer): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const s = connect({
      port: srv.tlsPort,
      host: '127.0.0.1',
      maxVersion: 'TLSv1.2',
      ciphers: 'PSK-AES256-GCM-SHA384',
      pskCallback: () => ({ identity, psk }),
      checkServerIdentity: () => undefined,
    });
    s.once('secureConnect', () => resolve(s));
    s.once('error', reject);
  });
}

function request(s: TLSSocket, line: string): Promise<string> {
  return new Promise((resolve) => {
    s.once('data', (b: Buffer) => resolve(b.toString('latin1')));
    s.write(`${line}\r\n`);
  });
}

describe('TLS-PSK and the per-plan secure requirement', () => {
  it('a device without a certificate registers over TLS-PSK with its e-mail and derived key', async () => {
    const s = await pskConnect(email, tlsPsk(key));
    expect(await request(s, `TCP:ID:${key}:PSK1`)).toBe('[OK:PSK1]\r\n');
    s.destroy();
  });

  it('a wrong key or an unknown identity fails the handshake', async () => {
    await expect(pskConnect(email, tlsPsk('0'.repeat(32)))).rejects.toThrow();
    await expect(pskConnect('nobody@example.com', tlsPsk(key))).rejects.toThrow();
  });

  it('REQUIRE_SECURE: plain TCP is refused, an HSTCP session on plain TCP is accepted', async () => {
    const plain = await TestClient.open(srv.port);
    expect(await plain.request(`TCP:ID:${key}:P2`)).toBe('[FAIL:SECURE_REQUIRED]');
    const reply = await plain.request(`HSTCP:${email}:ACTIVATE:NONCE1234:`);
    const rnd = reply.slice(4, -1).split(':')[0]!;
    const mac = hstcpMac(key, rnd, 1, 'TCP:ID::P2');
    expect(await plain.request(`TCP:ID:${mac}:P2`)).toBe('[OK:P2]');
    plain.close();
  });
});
