// Starts the real server (supervisor + shard worker threads) on a free port with a throwaway store.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ConfigOverrides } from '../../src/config/schema.ts';
import { type RunningServer, startServer } from '../../src/main.ts';

export interface TestServer extends RunningServer {
  /** KEY of a fresh account (level 4) created for the test. */
  key: string;
  dataDir: string;
  /** Creates another account and returns its KEY. */
  newKey(email?: string, level?: number): string;
}

let accounts = 0;

/** The admin bearer token of test servers. */
export const ADMIN_TOKEN = 'test-admin-token-0123456789abcdef';

export type Blocks = { [B in keyof ConfigOverrides]: ConfigOverrides[B] };

export async function startTestServer(overrides: Blocks = {}, opts: { keepData?: string } = {}): Promise<TestServer> {
  const dataDir = opts.keepData ?? mkdtempSync(join(tmpdir(), 'p2pc-test-'));
  const base: ConfigOverrides = {
    ...overrides,
    // Every test talks from 127.0.0.1: the per-address throttles are tested on their own, with small values.
    NODE: { AUTH_FAILS: 0, ...overrides.NODE },
    PServer: { ServerPort: 0, HOST: '127.0.0.1', WORKERS: 2, IP_VELOCITY: 0, ...overrides.PServer },
    STORE: { PATH: dataDir, ...overrides.STORE },
    HTTP: { PORT: 0, HOST: '127.0.0.1', ADMIN_TOKEN, ...overrides.HTTP },
    LOG: { LEVEL: process.env.P2PC_TEST_LOG ?? 'silent', ...overrides.LOG },
  };
  const server = await startServer({ overrides: base, env: {} });
  const embedded = server.embedded;
  const newKey = (email?: string, level = 4): string => {
    // Synchronous for the embedded store; on Redis (cluster mode) tests create accounts through the API.
    if (embedded === null) throw new Error('newKey() needs the embedded store: create accounts with the API');
    return embedded.createAccount(email ?? `t${++accounts}-${process.pid}@test.example`, null, level).key;
  };
  const key =
    embedded === null
      ? (await server.store.createAccount(`t${++accounts}-${process.pid}-${Date.now()}@test.example`, null, 4)).key
      : newKey();
  const stop = server.stop;
  return Object.assign(server, {
    key,
    dataDir,
    newKey,
    async stop() {
      await stop();
      if (opts.keepData === undefined) rmSync(dataDir, { recursive: true, force: true });
    },
  });
}
