// The operator API from tests: one JSON call (admin token unless another bearer is given) and one that asserts the
// status, shared by the e2e suites that set up topology and read state over HTTP.

import { expect } from 'vitest';
import { ADMIN_TOKEN, type TestServer } from './server.ts';
import { sleep } from './shards.ts';

// biome-ignore lint/suspicious/noExplicitAny: JSON bodies
export type Json = any;

export async function apiCall(
  port: number,
  method: string,
  path: string,
  body?: unknown,
  auth = ADMIN_TOKEN,
): Promise<{ status: number; body: Json }> {
  const headers: Record<string, string> = { authorization: `Bearer ${auth}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const r = await fetch(`http://127.0.0.1:${port}${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  return { status: r.status, body: text === '' ? undefined : JSON.parse(text) };
}

/** Calls the API and asserts the status; returns the body. */
export async function apiMust(
  port: number,
  status: number,
  method: string,
  path: string,
  body?: unknown,
): Promise<Json> {
  const r = await apiCall(port, method, path, body);
  expect(r.status, `${method} ${path} ${JSON.stringify(body)} → ${JSON.stringify(r.body)}`).toBe(status);
  return r.body;
}

/** The API helpers of a suite whose server is `server()`; each call may name the HTTP port of another server. */
export interface SuiteApi {
  /** One call (admin token unless `opts.auth`). */
  call(
    method: string,
    path: string,
    body?: unknown,
    opts?: { auth?: string; port?: number },
  ): Promise<{ status: number; body: Json }>;
  /** Calls the API and asserts the status; returns the body. */
  must(status: number, method: string, path: string, body?: unknown, port?: number): Promise<Json>;
  /** Adds tree nodes `[id, parent]` in order (`parallel` at a time), each answered 201. */
  addNodes(path: string, nodes: [string, string | null][], parallel?: number, port?: number): Promise<void>;
  /** The held summary of the account at `path`, polled (5 s at most) until `pred` holds (holds are written late). */
  heldUntil(path: string, pred: (devices: Json[]) => boolean, port?: number): Promise<Json[]>;
}

export function suiteApi(server: () => TestServer): SuiteApi {
  const call: SuiteApi['call'] = (method, path, body, opts = {}) =>
    apiCall(opts.port ?? server().httpPort, method, path, body, opts.auth);
  const must: SuiteApi['must'] = (status, method, path, body, port) =>
    apiMust(port ?? server().httpPort, status, method, path, body);
  return {
    call,
    must,
    async addNodes(path, nodes, parallel = 1, port) {
      for (let i = 0; i < nodes.length; i += parallel) {
        await Promise.all(
          nodes
            .slice(i, i + parallel)
            .map(([id, parent]) => must(201, 'POST', `${path}/tree/nodes`, { id, parent }, port)),
        );
      }
    },
    async heldUntil(path, pred, port) {
      const deadline = Date.now() + 5000;
      for (;;) {
        const body = await must(200, 'GET', `${path}/held`, undefined, port);
        if (pred(body.devices) || Date.now() > deadline) return body.devices;
        await sleep(20);
      }
    },
  };
}
