// node:http adapters: the operator HTTP port, and a reader that turns an incoming request into an ApiRequest
// (shared with the device-port relay in the shards).

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { ApiRequest, ApiResponse } from './types.ts';

export type ApiHandler = (req: ApiRequest) => Promise<ApiResponse>;

/** Reads a request with a body bounded by maxBody; resolves null (after answering 413) when it is larger. */
export function readRequest(req: IncomingMessage, res: ServerResponse, maxBody: number): Promise<ApiRequest | null> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let over = false;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > maxBody) {
        if (!over) {
          over = true;
          writeResponse(res, {
            status: 413,
            headers: { 'content-type': 'application/json', connection: 'close' },
            body: JSON.stringify({
              error: 'BODY_TOO_LARGE',
              message: `request bodies are limited to ${maxBody} bytes`,
            }),
          });
          req.destroy();
          resolve(null);
        }
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => {
      if (over) return;
      const headers: Record<string, string | undefined> = {};
      for (const [k, v] of Object.entries(req.headers)) headers[k] = Array.isArray(v) ? v.join(', ') : v;
      resolve({
        method: req.method ?? 'GET',
        url: req.url ?? '/',
        headers,
        body: Buffer.concat(chunks).toString('utf8'),
      });
    });
    req.on('error', () => resolve(null));
  });
}

export function writeResponse(res: ServerResponse, r: ApiResponse): void {
  if (res.headersSent) return;
  if (r.stream !== undefined) {
    res.writeHead(r.status, r.headers);
    res.flushHeaders();
    const stop = r.stream({
      write: (t) => void res.write(t),
      congested: () => res.writableNeedDrain,
    });
    res.once('close', stop);
    return;
  }
  res.writeHead(r.status, { ...r.headers, 'content-length': Buffer.byteLength(r.body) });
  res.end(r.body);
}

/** Starts the operator HTTP server; resolves with its port. */
export function startHttp(
  handler: ApiHandler,
  opts: { port: number; host: string; maxBody: number },
  log: Logger,
): Promise<{ server: Server; port: number }> {
  const server = createServer(async (req, res) => {
    const r = await readRequest(req, res, opts.maxBody);
    if (r === null) return;
    r.streaming = true;
    try {
      writeResponse(res, await handler(r));
    } catch (err) {
      log.error({ err }, 'HTTP handler failed');
      writeResponse(res, {
        status: 500,
        headers: { 'content-type': 'application/json' },
        body: '{"error":"INTERNAL"}',
      });
    }
  });
  server.headersTimeout = 10000;
  server.requestTimeout = 30000;
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port: opts.port, host: opts.host === '' ? undefined : opts.host }, () => {
      server.off('error', reject);
      const addr = server.address();
      resolve({ server, port: typeof addr === 'object' && addr ? addr.port : opts.port });
    });
  });
}
