// The device connections of an e2e suite: every connection a test opens is kept in `opened`, so that the suite's
// afterEach (`closeAll`) closes them and waits until the server has seen every close; `openOn` places a
// connection on a chosen shard.

import { afterAll, afterEach, beforeAll, expect } from 'vitest';
import { TestClient } from './client.ts';
import { type Blocks, startTestServer, type TestServer } from './server.ts';
import { openPerShard, openTotal, waitFor } from './shards.ts';

export interface Devices {
  /** Every connection opened since the last `closeAll`. */
  readonly opened: TestClient[];
  /** Opens a connection to `s` (the suite's server by default). */
  open(s?: TestServer): Promise<TestClient>;
  /** Opens a connection and registers `id`; the reply must be exactly `[OK:<ID>]`. */
  dev(key: string, id: string, s?: TestServer): Promise<TestClient>;
  /** Opens connections until one lands on shard `shard`; misplaced ones stay open until the end of the test. */
  openOn(shard: number, s?: TestServer): Promise<TestClient>;
  /** `openOn`, then registers `id` as `dev` does. */
  devOn(shard: number, key: string, id: string, s?: TestServer): Promise<TestClient>;
  /** Waits until the server counts exactly the connections this test still has open. */
  settled(s?: TestServer, what?: string): Promise<void>;
  /** Closes every connection opened and waits until the server counts none (`what` names the wait). */
  closeAll(what: string, ms?: number): Promise<void>;
}

/** The connections of a suite whose server is `server()` (read when called: suites start it in beforeAll). */
export function devices(server: () => TestServer): Devices {
  const opened: TestClient[] = [];

  const open = async (s = server()): Promise<TestClient> => {
    const c = await TestClient.open(s.port);
    opened.push(c);
    return c;
  };

  const register = async (c: TestClient, key: string, id: string): Promise<TestClient> => {
    expect(await c.request(`TCP:ID:${key}:${id}`)).toBe(`[OK:${id.toUpperCase()}]`);
    return c;
  };

  // A socket destroyed here may still be counted by the server: settle until both sides agree.
  const mine = (s: TestServer): number =>
    opened.filter((c) => !c.closed && !c.socket.destroyed && c.socket.remotePort === s.port).length;

  const settled = async (s = server(), what = 'the server to count exactly the open connections'): Promise<void> => {
    await waitFor(() => openTotal(s) === mine(s), what);
  };

  const openOn = async (shard: number, s = server()): Promise<TestClient> => {
    for (let attempt = 0; attempt < 200; attempt++) {
      await settled(s, 'connection counts to settle');
      const before = openPerShard(s);
      const total = before.reduce((a, b) => a + b, 0);
      const c = await open(s);
      await waitFor(() => openTotal(s) === total + 1, 'the server to count the new connection');
      const landed = openPerShard(s).findIndex((v, i) => v !== before[i]);
      if (landed === shard) return c;
    }
    throw new Error(`no connection landed on shard ${shard}`);
  };

  return {
    opened,
    open,
    dev: async (key, id, s) => register(await open(s), key, id),
    openOn,
    devOn: async (shard, key, id, s) => register(await openOn(shard, s), key, id),
    settled,
    async closeAll(what, ms = 5000) {
      for (const c of opened.splice(0)) c.close();
      await waitFor(() => openTotal(server()) === 0, what, ms);
    },
  };
}

/**
 * The usual e2e suite: a two-shard test server with `overrides`, started before its tests (handed to `started`) and
 * stopped after them, and its device connections, all closed after each test (waiting up to `closeMs` until the
 * server has seen every close).
 */
export function suiteServer(started: (s: TestServer) => void, overrides: Blocks = {}, closeMs = 5000): Devices {
  let srv: TestServer | undefined;
  beforeAll(async () => {
    srv = await startTestServer(overrides);
    expect(srv.supervisor.shardCount).toBe(2);
    started(srv);
  });
  afterAll(async () => {
    await srv?.stop();
  });
  const connections = devices(() => srv!);
  afterEach(async () => {
    await connections.closeAll('the server to see every connection of the test closed', closeMs);
  });
  return connections;
}
