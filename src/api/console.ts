// The operator console (issue 10): its static assets, and the live event stream it draws from.
//
// `GET /api/v1/accounts/{account}/events` is a server-sent-events stream (HTTP port only): a `topology` event
// when it opens and after every change of the account's tree, routers or aliases; a `state` event when it opens,
// shortly after any device of the account registers or leaves (coalesced over STATE_DEBOUNCE_MS), and every
// second: devices (online, last seen, message counters), held messages and the recent mail/SMS outbox.
// A browser that does not read is not written to (the socket's own buffer bounds what is queued).

import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, normalize, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AccountRecord } from '../store/store.ts';
import type { OperatorApi } from './operator.ts';
import { ApiError, type ApiResponse, type EventSink, text } from './types.ts';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
/** Hand-written page and style sheet, served as they are. */
const WEB_SRC = join(ROOT, 'src', 'console', 'web');
/** The console's TypeScript modules compiled for browsers by `npm ci` (the `prepare` script). */
const WEB_BUILD = join(ROOT, 'dist', 'console');

const STATE_DEBOUNCE_MS = 50;
const STATE_EVERY_MS = 1000;
const OUTBOX_SHOWN = 20;

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
};

/** Serves `/` and `/console/<file>`; null for other paths. Files are read once and kept. */
export class ConsoleAssets {
  private readonly cache = new Map<string, ApiResponse>();

  serve(path: string): ApiResponse | null {
    if (path === '/' || path === '/console' || path === '/console/') return this.file('index.html');
    if (!path.startsWith('/console/')) return null;
    return this.file(path.slice('/console/'.length));
  }

  private file(name: string): ApiResponse {
    const hit = this.cache.get(name);
    if (hit !== undefined) return hit;
    const ext = name.slice(name.lastIndexOf('.'));
    const type = TYPES[ext];
    const clean = normalize(name);
    if (type === undefined || clean.startsWith('..') || clean.includes(`${sep}..`) || clean.startsWith(sep)) {
      throw new ApiError(404, 'NOT_FOUND', `no such console file: ${name}`);
    }
    const dir = ext === '.js' ? WEB_BUILD : WEB_SRC;
    let body: string;
    try {
      body = readFileSync(join(dir, clean), 'utf8');
    } catch {
      if (ext === '.js' && !existsSync(WEB_BUILD)) {
        throw new ApiError(503, 'CONSOLE_NOT_BUILT', 'the console is not built: run `npm ci` (or `npm run build`)');
      }
      throw new ApiError(404, 'NOT_FOUND', `no such console file: ${name}`);
    }
    const res = text(200, body, type);
    res.headers['cache-control'] = 'no-cache';
    res.headers['x-content-type-options'] = 'nosniff';
    if (ext === '.html') {
      res.headers['content-security-policy'] =
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'";
    }
    this.cache.set(name, res);
    return res;
  }
}

/** Opens the live stream of one account for the console; at most HTTP.MAX_STREAMS at once. */
export class ConsoleStreams {
  private open = 0;
  private readonly api: OperatorApi;

  constructor(api: OperatorApi) {
    this.api = api;
  }

  get count(): number {
    return this.open;
  }

  stream(acct: AccountRecord): ApiResponse {
    const max = this.api.config.HTTP.MAX_STREAMS;
    if (this.open >= max) {
      throw new ApiError(503, 'TOO_MANY_STREAMS', `at most ${max} console streams at once (HTTP.MAX_STREAMS)`);
    }
    return {
      status: 200,
      headers: {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-cache',
        'x-accel-buffering': 'no',
      },
      body: '',
      stream: (sink) => this.run(acct, sink),
    };
  }

  private run(acct: AccountRecord, sink: EventSink): () => void {
    const api = this.api;
    const sup = api.supervisor;
    this.open++;
    let closed = false;
    let pending: NodeJS.Timeout | null = null;
    let busy = false;
    let again = false;

    const send = (event: string, data: unknown): void => {
      if (!closed) sink.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
    };
    const sendTopology = (): void => send('topology', topologyJson(api, acct.id));
    // One state query at a time; a request meanwhile runs once more after it.
    const sendState = async (): Promise<void> => {
      if (busy) {
        again = true;
        return;
      }
      busy = true;
      try {
        do {
          again = false;
          if (sink.congested()) continue; // the browser is behind: skip this picture, the next one is complete
          const data = await stateJson(api, acct.id);
          send('state', data);
        } while (again && !closed);
      } catch (err) {
        api.log.warn({ err }, 'console state failed');
      } finally {
        busy = false;
      }
    };
    const soon = (): void => {
      if (pending !== null || closed) return;
      pending = setTimeout(() => {
        pending = null;
        void sendState();
      }, STATE_DEBOUNCE_MS);
    };
    const unsubscribe = sup.onAccountEvent(acct.id, (kind) => {
      if (kind === 'topology') sendTopology();
      soon();
    });
    const timer = setInterval(() => void sendState(), STATE_EVERY_MS);
    sink.write(`retry: 2000\n\n`);
    sendTopology();
    void sendState();
    return () => {
      if (closed) return;
      closed = true;
      this.open--;
      unsubscribe();
      clearInterval(timer);
      if (pending !== null) clearTimeout(pending);
    };
  }
}

export function topologyJson(api: OperatorApi, accountId: number): unknown {
  const topo = api.supervisor.topologyOf(accountId);
  const nodes: { id: string; parent: string | null }[] = [];
  for (const root of [...topo.roots()].sort()) {
    const queue = [root];
    for (let i = 0; i < queue.length; i++) {
      const id = queue[i]!;
      nodes.push({ id, parent: topo.parentOf(id) });
      queue.push(...[...topo.childrenOf(id)].sort());
    }
  }
  const routers = [...topo.routers].map(([name, m]) => ({ name, members: [...m].sort() }));
  const aliases = [...topo.aliases].map(([name, targets]) => ({ name, targets: [...targets] }));
  return {
    nodes,
    routers: routers.sort((a, b) => (a.name < b.name ? -1 : 1)),
    aliases: aliases.sort((a, b) => (a.name < b.name ? -1 : 1)),
  };
}

/** Devices (every known one plus any live one), held messages and recent outbox of an account. */
export async function stateJson(api: OperatorApi, accountId: number): Promise<unknown> {
  const [online, stats] = await Promise.all([
    api.supervisor.devicesOnline(accountId),
    api.supervisor.accountStats(accountId),
  ]);
  const live = new Set(online.map((d) => d.id));
  const counters = new Map(stats.map((s) => [s.id, s]));
  const devices = new Map<
    string,
    { id: string; online: boolean; lastSeen: number | null; sent: number; received: number }
  >();
  const [known, held, recent] = await Promise.all([
    api.store.knownDevices(accountId),
    api.store.heldSummary(accountId),
    api.store.listOutbox(accountId, OUTBOX_SHOWN),
  ]);
  for (const d of known) {
    devices.set(d.id, { id: d.id, online: false, lastSeen: Math.floor(d.lastSeen / 1000), sent: 0, received: 0 });
  }
  for (const id of live) {
    const c = counters.get(id);
    const prev = devices.get(id);
    devices.set(id, {
      id,
      online: true,
      lastSeen: prev?.lastSeen ?? null,
      sent: c?.sent ?? 0,
      received: c?.received ?? 0,
    });
  }
  const outbox = recent.map((m) => ({
    id: m.id,
    kind: m.kind,
    to: m.recipient,
    state: m.state,
    attempts: m.attempts,
    lastError: m.lastError,
    updatedAt: m.updatedAt,
  }));
  return {
    t: Date.now(),
    devices: [...devices.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)),
    held,
    outbox,
  };
}
