// Waiting and shard placement for e2e tests: which shard accepted a connection is read from the
// supervisor's per-shard open-connection counts.

import type { TestServer } from './server.ts';

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function waitFor(pred: () => boolean, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

export function openPerShard(s: TestServer): number[] {
  return s.supervisor.openConnections();
}

export function openTotal(s: TestServer): number {
  return openPerShard(s).reduce((a, b) => a + b, 0);
}
