// The durable outbox (EMAIL and SMS) from the mail and sms suites: its entries read over the API, a wait for a value
// (an outbox entry in a given state, a mail that arrived), fresh account e-mails, UTF-8 device lines, and the
// devices a test registered, closed after each test.

import { afterEach, expect } from 'vitest';
import { device, type TestClient } from './client.ts';
import { ADMIN_TOKEN, type TestServer } from './server.ts';
import { sleep } from './shards.ts';

type Falsy = false | null | undefined | 0 | '';

/** Polls `probe` (every 20 ms, `ms` at the most) until it gives a truthy value, and returns that value. */
export async function waitForValue<T>(
  probe: () => T | Promise<T>,
  what: string,
  ms = 10000,
): Promise<Exclude<T, Falsy>> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v) return v as Exclude<T, Falsy>;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

let seq = 0;
/** A fresh address for an account of this run. */
export const email = (name: string): string => `${name}-${process.pid}-${++seq}@test.example`;

/** A device line as UTF-8 bytes (what current firmware sends), written as the latin1 string of those bytes. */
export const utf8 = (s: string): string => Buffer.from(s, 'utf8').toString('latin1');

export interface OutboxEntry {
  id: number;
  kind: string;
  to: string;
  subject: string;
  state: 'queued' | 'sent' | 'failed';
  attempts: number;
  lastError: string | null;
}

/** The outbox of `account` (its e-mail), read with the admin token. */
export async function outbox(srv: TestServer, account: string): Promise<OutboxEntry[]> {
  const r = await fetch(`http://127.0.0.1:${srv.httpPort}/api/v1/accounts/${encodeURIComponent(account)}/outbox`, {
    headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
  });
  expect(r.status).toBe(200);
  return ((await r.json()) as { messages: OutboxEntry[] }).messages;
}

/** Registers devices with `device()` and closes every one after each test (registers the afterEach). */
export function closedAfterEach(): { dev(srv: TestServer, key: string, id: string): Promise<TestClient> } {
  const opened: TestClient[] = [];
  afterEach(() => {
    for (const c of opened.splice(0)) c.close();
  });
  return {
    async dev(srv, key, id) {
      const c = await device(srv.port, key, id);
      opened.push(c);
      return c;
    },
  };
}
