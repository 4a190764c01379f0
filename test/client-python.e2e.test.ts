// The Python device client (clients/python/p2pcluster.py) against the real server: its unittest suite runs with
// the machine's python3, standard library only, and gets the server through env vars (P2PC_HOST, P2PC_PORT,
// P2PC_HTTP_PORT, P2PC_KEY, P2PC_ADMIN_TOKEN, P2PC_TLS_PORT, P2PC_TLS_CA). The server runs with a short
// NODE.COM_CHK so [SYNC:...] lines interleave with replies, holding on for every plan, and a TLS listener with a
// certificate made for this run.

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generate } from 'selfsigned';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_TOKEN, startTestServer, type TestServer } from './helpers/server.ts';

const CLIENT_DIR = join(import.meta.dirname, '..', 'clients', 'python');

let srv: TestServer;
let certDir: string;

beforeAll(async () => {
  const pems = await generate([{ name: 'commonName', value: 'localhost' }], {
    keySize: 2048,
    algorithm: 'sha256',
    extensions: [
      { name: 'basicConstraints', cA: false },
      { name: 'keyUsage', digitalSignature: true, keyEncipherment: true },
      { name: 'extKeyUsage', serverAuth: true },
      { name: 'subjectAltName', altNames: [{ type: 2, value: 'localhost' }] },
    ],
  });
  certDir = mkdtempSync(join(tmpdir(), 'p2pc-pytls-'));
  writeFileSync(join(certDir, 'cert.pem'), pems.cert);
  writeFileSync(join(certDir, 'key.pem'), pems.private);
  srv = await startTestServer({
    NODE: { COM_CHK: 0.5 },
    USER: { '4HOLDPUSH': [1, 1, 1, 1] },
    TLS: { ENABLED: true, PORT: 0, CERT: join(certDir, 'cert.pem'), KEY: join(certDir, 'key.pem') },
  });
  expect(srv.supervisor.shardCount).toBe(2);
  expect(srv.tlsPort).toBeGreaterThan(0);
}, 60000);

afterAll(async () => {
  await srv?.stop();
  if (certDir) rmSync(certDir, { recursive: true, force: true });
});

interface Run {
  code: number | null;
  out: string;
}

function python(args: string[], env: Record<string, string>, ms: number): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn('python3', args, {
      cwd: CLIENT_DIR,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', PYTHONDONTWRITEBYTECODE: '1', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (b: Buffer) => {
      out += b.toString();
    });
    child.stderr.on('data', (b: Buffer) => {
      out += b.toString();
    });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`python3 ${args.join(' ')} still running after ${ms} ms:\n${out}`));
    }, ms);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

describe('Python client (clients/python)', () => {
  it('passes its unittest suite against the real server, every live test included', async () => {
    const run = await python(
      ['-m', 'unittest', '-v', 'test_p2pcluster'],
      {
        P2PC_HOST: '127.0.0.1',
        P2PC_PORT: String(srv.port),
        P2PC_HTTP_PORT: String(srv.httpPort),
        P2PC_KEY: srv.key,
        P2PC_ADMIN_TOKEN: ADMIN_TOKEN,
        P2PC_TLS_PORT: String(srv.tlsPort),
        P2PC_TLS_CA: join(certDir, 'cert.pem'),
      },
      45000,
    );
    if (run.code !== 0) throw new Error(`python3 -m unittest failed (exit ${run.code}):\n${run.out}`);
    const ran = Number(/^Ran (\d+) tests? in /m.exec(run.out)?.[1] ?? '0');
    expect(ran).toBeGreaterThanOrEqual(30);
    expect(run.out).toMatch(/^OK$/m); // "OK (skipped=n)" would mean a live test did not run
    // Every test by name, each reported ok.
    const results = [...run.out.matchAll(/^(test_\w+) \(test_p2pcluster\.(\w+)\.\w+\)(?:\n.*?)? \.\.\. (\w+)$/gm)];
    expect(results.length).toBe(ran);
    expect(results.filter((m) => m[3] !== 'ok').map((m) => `${m[2]}.${m[1]}: ${m[3]}`)).toEqual([]);
    expect(new Set(results.map((m) => m[2]))).toEqual(
      new Set(['SecureVectors', 'Replies', 'AgainstFakeServer', 'Live']),
    );
  }, 60000);

  it('passes its offline tests without a server (docs/security.md vectors, reply parsing)', async () => {
    const run = await python(['-m', 'unittest', 'test_p2pcluster.SecureVectors', 'test_p2pcluster.Replies'], {}, 20000);
    if (run.code !== 0) throw new Error(run.out);
    expect(run.out).toMatch(/^OK$/m);
  }, 30000);
});
