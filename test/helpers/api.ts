// The operator API from tests: one JSON call (admin token unless another bearer is given) and one that asserts the
// status, shared by the e2e suites that set up topology and read state over HTTP.

import { expect } from 'vitest';
import { ADMIN_TOKEN } from './server.ts';

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
