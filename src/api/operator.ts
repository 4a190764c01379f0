// The operator API (PROTOCOL.md §8): JSON REST under /api/v1 and the legacy GET endpoints.
// Admin calls need `Authorization: Bearer <HTTP.ADMIN_TOKEN>`; account calls accept the account's KEY as the
// bearer and never reach another account. Every mutation is validated, persisted and applied to live
// connections on every shard before the response is sent.

import { timingSafeEqual } from 'node:crypto';
import type { Logger } from 'pino';
import type { Config } from '../config/schema.ts';
import { canonicalId, isValidId } from '../protocol/ids.ts';
import type { TopologyChange } from '../routing/changes.ts';
import { TopologyFailure } from '../routing/topology.ts';
import { bytesToText } from '../services/outbox.ts';
import type { AccountRecord, Store } from '../store/store.ts';
import { StoreError } from '../store/store.ts';
import type { Supervisor } from '../supervisor/supervisor.ts';
import { ConsoleAssets, ConsoleStreams, stateJson } from './console.ts';
import { handleLegacy, isLegacyPath } from './legacy.ts';
import { Metrics } from './metrics.ts';
import { OPENAPI } from './openapi.ts';
import { ApiError, type ApiRequest, type ApiResponse, json, noContent, text } from './types.ts';

type Params = Record<string, string>;
type Handler = (ctx: Context) => Promise<ApiResponse> | ApiResponse;

interface Route {
  method: string;
  pattern: RegExp;
  names: string[];
  handler: Handler;
}

export interface Context {
  req: ApiRequest;
  params: Params;
  query: URLSearchParams;
  admin: boolean;
  /** The account the KEY bearer belongs to, if any. */
  caller: AccountRecord | null;
  body(): Record<string, unknown>;
}

const TOPOLOGY_STATUS: Record<string, number> = {
  NO_NODE: 404,
  NO_PARENT_NODE: 422,
  NODE_EXISTS: 409,
  CYCLE: 422,
  NO_ROUTER: 404,
  ROUTER_EXISTS: 409,
  NOT_MEMBER: 404,
  NO_ALIAS: 404,
  TREE_FULL: 422,
  TREE_FORBIDDEN: 422,
};

export class OperatorApi {
  readonly supervisor: Supervisor;
  readonly store: Store;
  readonly config: Config;
  readonly log: Logger;
  private readonly routes: Route[] = [];
  readonly metrics: Metrics;
  private readonly assets = new ConsoleAssets();
  readonly streams: ConsoleStreams;
  /** The port the HTTP API really listens on (HTTP.PORT may be 0), for links in mails. */
  httpPort = 0;

  constructor(supervisor: Supervisor, store: Store, config: Config, log: Logger) {
    this.supervisor = supervisor;
    this.store = store;
    this.config = config;
    this.log = log;
    this.metrics = new Metrics(supervisor, store);
    this.streams = new ConsoleStreams(this);
    this.defineRoutes();
  }

  async handle(req: ApiRequest): Promise<ApiResponse> {
    try {
      const url = new URL(req.url, 'http://localhost');
      if (req.method === 'GET' && isLegacyPath(url.pathname)) return await handleLegacy(this, url);
      if (req.method === 'GET') {
        const asset = this.assets.serve(url.pathname);
        if (asset !== null) return asset;
      }
      for (const route of this.routes) {
        const m = route.pattern.exec(url.pathname);
        if (!m) continue;
        if (route.method !== req.method) continue;
        const params: Params = {};
        route.names.forEach((n, i) => {
          try {
            params[n] = decodeURIComponent(m[i + 1]!);
          } catch {
            throw new ApiError(400, 'INVALID_PATH', `bad percent-encoding in the path segment for {${n}}`, n);
          }
        });
        return await route.handler(await this.context(req, params, url.searchParams));
      }
      const known = this.routes.some((r) => r.pattern.test(url.pathname));
      if (known) throw new ApiError(405, 'METHOD_NOT_ALLOWED', `${req.method} is not supported on ${url.pathname}`);
      throw new ApiError(404, 'NOT_FOUND', `no such endpoint: ${url.pathname}`);
    } catch (err) {
      return errorResponse(err, this.log);
    }
  }

  private async context(req: ApiRequest, params: Params, query: URLSearchParams): Promise<Context> {
    const bearer = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '')?.[1] ?? '';
    const token = this.config.HTTP.ADMIN_TOKEN;
    const admin = token !== '' && bearer !== '' && safeEqual(bearer, token);
    const caller = !admin && /^[0-9a-fA-F]{32}$/.test(bearer) ? await this.store.accountByKey(bearer) : null;
    let parsed: Record<string, unknown> | null = null;
    return {
      req,
      params,
      query,
      admin,
      caller,
      body() {
        if (parsed !== null) return parsed;
        if (req.body.trim() === '') {
          parsed = {};
          return parsed;
        }
        let v: unknown;
        try {
          v = JSON.parse(req.body);
        } catch {
          throw new ApiError(400, 'INVALID_JSON', 'the request body is not valid JSON');
        }
        if (v === null || typeof v !== 'object' || Array.isArray(v)) {
          throw new ApiError(400, 'INVALID_JSON', 'the request body must be a JSON object');
        }
        parsed = v as Record<string, unknown>;
        return parsed;
      },
    };
  }

  private route(method: string, path: string, handler: Handler): void {
    const names: string[] = [];
    const pattern = new RegExp(
      `^${path.replace(/\{(\w+)\}/g, (_, n: string) => {
        names.push(n);
        return '([^/]+)';
      })}/?$`,
    );
    this.routes.push({ method, pattern, names, handler });
  }

  // ---------------------------------------------------------------- auth helpers

  requireAdmin(ctx: Context): void {
    if (ctx.admin) return;
    if (ctx.caller !== null)
      throw new ApiError(403, 'FORBIDDEN', 'this call needs the admin token, not an account KEY');
    if (this.config.HTTP.ADMIN_TOKEN === '') {
      throw new ApiError(403, 'ADMIN_DISABLED', 'admin calls are disabled: set HTTP.ADMIN_TOKEN');
    }
    throw new ApiError(401, 'UNAUTHORIZED', 'this call needs Authorization: Bearer <admin token>');
  }

  /** The account named in the path ({account} = e-mail or "me"), if the caller may act on it. */
  async account(ctx: Context): Promise<AccountRecord> {
    const name = ctx.params.account!;
    if (!ctx.admin && ctx.caller === null) {
      throw new ApiError(401, 'UNAUTHORIZED', 'this call needs Authorization: Bearer <account KEY or admin token>');
    }
    if (name === 'me') {
      if (ctx.caller === null) throw new ApiError(400, 'NO_ACCOUNT', '"me" needs an account KEY as the bearer');
      return ctx.caller;
    }
    if (!ctx.admin) {
      if (ctx.caller!.email.toLowerCase() !== name.toLowerCase()) {
        throw new ApiError(403, 'FORBIDDEN', 'a KEY gives access to its own account only');
      }
      return ctx.caller!;
    }
    const acct = await this.store.accountByEmail(name);
    if (acct === null) throw new ApiError(404, 'NO_ACCOUNT', `no account ${name}`);
    return acct;
  }

  // ---------------------------------------------------------------- shared operations (REST and legacy)

  async change(acct: AccountRecord, change: TopologyChange): Promise<void> {
    await this.supervisor.changeTopology(acct, change);
  }

  async resetKey(acct: AccountRecord): Promise<AccountRecord> {
    const updated = await this.store.resetKey(acct.id);
    await this.supervisor.accountChanged(updated);
    this.log.info({ email: acct.email }, 'account KEY reset');
    // The owner hears about it through the outbox (when mail is configured).
    await this.supervisor.outbox?.system(
      updated.email,
      'Your P2Pcluster KEY was reset',
      `The KEY of your account ${updated.email} was reset; the old KEY no longer works.\r\n` +
        `Your new KEY: ${updated.key}\r\n`,
    );
    return updated;
  }

  async deleteAccount(acct: AccountRecord): Promise<void> {
    await this.store.deleteAccount(acct.id);
    await this.supervisor.accountChanged(acct, true);
    this.log.info({ email: acct.email }, 'account deleted');
  }

  // ---------------------------------------------------------------- routes

  private defineRoutes(): void {
    const r = this.route.bind(this);
    r('GET', '/api/v1/openapi.json', () => json(200, OPENAPI));
    r('GET', '/api/v1/health', () => json(200, { status: 'ok', shards: this.supervisor.shardCount }));
    r('GET', '/healthz', () => text(200, 'ok\n'));
    r('GET', '/readyz', () => {
      const ready = this.supervisor.readyShards();
      const all = this.supervisor.shardCount;
      return text(ready === all ? 200 : 503, `${ready}/${all} shards ready\n`);
    });
    r('GET', '/metrics', async () => {
      const body = await this.metrics.render();
      return { status: 200, headers: { 'content-type': this.metrics.contentType }, body };
    });

    r('GET', '/api/v1/accounts', async (ctx) => {
      this.requireAdmin(ctx);
      return json(200, { accounts: (await this.store.listAccounts()).map(publicAccount) });
    });
    r('POST', '/api/v1/accounts', async (ctx) => {
      this.requireAdmin(ctx);
      const b = ctx.body();
      const email = str(b, 'email');
      const password = b.password === undefined ? null : str(b, 'password');
      const level = b.level === undefined ? this.config.USER.DEFAULT_LEVEL : int(b, 'level', 1, 4);
      try {
        const acct = await this.store.createAccount(email, password, level);
        this.log.info({ email }, 'account created');
        if (this.config.TLS.PSK) await this.supervisor.accountChanged(acct); // PSK lookups are synchronous
        return json(201, { email: acct.email, key: acct.key, level: acct.level });
      } catch (err) {
        if (err instanceof StoreError && err.code === 'EXISTS') {
          throw new ApiError(409, 'EXISTS', `account ${email} exists`, 'email');
        }
        if (err instanceof StoreError) throw new ApiError(400, 'INVALID_EMAIL', err.message, 'email');
        throw err;
      }
    });
    r('GET', '/api/v1/accounts/{account}', async (ctx) => {
      const acct = await this.account(ctx);
      return json(200, ctx.admin ? { ...publicAccount(acct), key: acct.key } : publicAccount(acct));
    });
    r('DELETE', '/api/v1/accounts/{account}', async (ctx) => {
      this.requireAdmin(ctx);
      await this.deleteAccount(await this.account(ctx));
      return noContent();
    });
    r('POST', '/api/v1/accounts/{account}/key', async (ctx) => {
      const acct = await this.resetKey(await this.account(ctx));
      return json(200, { email: acct.email, key: acct.key });
    });
    r('PUT', '/api/v1/accounts/{account}/level', async (ctx) => {
      this.requireAdmin(ctx);
      const acct = await this.account(ctx);
      const updated = await this.store.setLevel(acct.id, int(ctx.body(), 'level', 1, 4));
      await this.supervisor.accountChanged(updated);
      return json(200, publicAccount(updated));
    });
    r('GET', '/api/v1/accounts/{account}/devices', async (ctx) => {
      const acct = await this.account(ctx);
      const devices = await this.supervisor.devicesOnline(acct.id);
      devices.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
      if (ctx.query.get('all') === undefined || ctx.query.get('all') === null) return json(200, { devices });
      // ?all: every device ever registered, online or not, with its last-seen time (§5a).
      const online = new Map(devices.map((d) => [d.id, d.shard]));
      const known = (await this.store.knownDevices(acct.id)).map((d) => ({
        id: d.id,
        online: online.has(d.id),
        lastSeen: Math.floor(d.lastSeen / 1000),
      }));
      return json(200, { devices, known });
    });
    r('GET', '/api/v1/accounts/{account}/stats', async (ctx) =>
      json(200, await stateJson(this, (await this.account(ctx)).id)),
    );
    r('GET', '/api/v1/accounts/{account}/events', async (ctx) => {
      const acct = await this.account(ctx);
      if (ctx.req.streaming !== true) {
        throw new ApiError(400, 'STREAM_UNSUPPORTED', 'event streams are served on the HTTP port (HTTP.PORT) only');
      }
      return this.streams.stream(acct);
    });
    r('POST', '/api/v1/accounts/{account}/push', async (ctx) => {
      // An operator's test push: PUSH:<data> to each listed device, as the console's "test push" sends it.
      const acct = await this.account(ctx);
      const b = ctx.body();
      const data = str(b, 'data');
      if (/[\r\n]/.test(data) || data.length > this.config.NODE.MAX_LINE) {
        throw new ApiError(400, 'INVALID_FIELD', `"data" must be one line of at most NODE.MAX_LINE bytes`, 'data');
      }
      const list = b.ids;
      if (!Array.isArray(list) || list.length === 0 || list.length > this.config.NODE.MAX_FANOUT) {
        throw new ApiError(400, 'INVALID_FIELD', '"ids" must be a non-empty array of device IDs', 'ids');
      }
      const ids = [...new Set(list.map((v) => this.deviceId(v, 'ids')))];
      const { delivered, held } = await this.supervisor.operatorPush(acct.id, ids, data);
      return json(200, { total: ids.length, delivered, held, offline: ids.length - delivered - held });
    });
    r('DELETE', '/api/v1/accounts/{account}/devices/{id}', async (ctx) => {
      // A server-side kick: the connection is closed, its will fires and watchers hear OFFLINE (§5a).
      const acct = await this.account(ctx);
      const id = this.deviceId(ctx.params.id, 'id');
      if (!(await this.supervisor.kickDevice(acct.id, id))) {
        throw new ApiError(404, 'NOT_ONLINE', `device ${id} is not online`);
      }
      return noContent();
    });

    r('GET', '/api/v1/accounts/{account}/held', async (ctx) => {
      const acct = await this.account(ctx);
      return json(200, { devices: await this.store.heldSummary(acct.id) });
    });
    r('GET', '/api/v1/accounts/{account}/outbox', async (ctx) => {
      const acct = await this.account(ctx);
      const limit = Math.min(1000, Math.max(1, Number(ctx.query.get('limit') ?? 100) || 100));
      const messages = (await this.store.listOutbox(acct.id, limit)).map((m) => ({
        id: m.id,
        kind: m.kind,
        to: m.recipient,
        subject: bytesToText(m.subject),
        state: m.state,
        attempts: m.attempts,
        lastError: m.lastError,
        createdAt: m.createdAt,
        updatedAt: m.updatedAt,
      }));
      return json(200, { messages });
    });

    // tree
    r('GET', '/api/v1/accounts/{account}/tree', async (ctx) => json(200, treeJson(this, await this.account(ctx))));
    r('POST', '/api/v1/accounts/{account}/tree/nodes', async (ctx) => {
      const acct = await this.account(ctx);
      const b = ctx.body();
      const id = this.deviceId(b.id, 'id');
      const parent = b.parent === undefined || b.parent === null ? null : this.deviceId(b.parent, 'parent');
      await this.change(acct, { op: 'node-add', id, parent });
      return json(201, { id, parent });
    });
    r('PATCH', '/api/v1/accounts/{account}/tree/nodes/{id}', async (ctx) => {
      const acct = await this.account(ctx);
      const id = this.deviceId(ctx.params.id, 'id');
      const b = ctx.body();
      const hasParent = Object.hasOwn(b, 'parent');
      const rename = b.id === undefined ? null : this.deviceId(b.id, 'id');
      if (!hasParent && rename === null) {
        throw new ApiError(400, 'NOTHING_TO_DO', 'give "parent" (move; null = make it a root) and/or "id" (rename)');
      }
      const parent = b.parent === null || b.parent === undefined ? null : this.deviceId(b.parent, 'parent');
      const topo = await this.supervisor.currentTopologyOf(acct.id);
      if (!topo.has(id)) throw new ApiError(404, 'NO_NODE', `${id} is not in the tree`, 'id');
      // Validate both parts before applying either, so nothing is half-applied.
      if (rename !== null && rename !== id && topo.has(rename)) {
        throw new ApiError(409, 'NODE_EXISTS', `${rename} is already in the tree`, 'id');
      }
      const changes: TopologyChange[] = [];
      if (hasParent) changes.push({ op: 'node-move', id, parent });
      if (rename !== null && rename !== id) changes.push({ op: 'node-rename', from: id, to: rename });
      // One unit: validated, persisted and applied together, or not at all.
      if (changes.length > 0) await this.supervisor.changeTopology(acct, changes);
      const finalId = rename ?? id;
      return json(200, { id: finalId, parent: this.supervisor.topologyOf(acct.id).parentOf(finalId) });
    });
    r('DELETE', '/api/v1/accounts/{account}/tree/nodes/{id}', async (ctx) => {
      const acct = await this.account(ctx);
      const id = this.deviceId(ctx.params.id, 'id');
      const removed = [id];
      (await this.supervisor.currentTopologyOf(acct.id)).forEachDescendant(id, (d) => removed.push(d));
      await this.change(acct, { op: 'node-delete', id });
      return json(200, { removed });
    });

    // routers
    r('GET', '/api/v1/accounts/{account}/routers', async (ctx) => {
      const topo = this.supervisor.topologyOf((await this.account(ctx)).id);
      const routers = [...topo.routers].map(([name, m]) => ({ name, members: [...m].sort() }));
      return json(200, { routers: routers.sort((a, b) => (a.name < b.name ? -1 : 1)) });
    });
    r('POST', '/api/v1/accounts/{account}/routers', async (ctx) => {
      const acct = await this.account(ctx);
      const name = this.name(ctx.body().name, 'name');
      await this.change(acct, { op: 'router-add', name });
      return json(201, { name, members: [] });
    });
    r('GET', '/api/v1/accounts/{account}/routers/{name}', async (ctx) => {
      const acct = await this.account(ctx);
      const name = this.name(ctx.params.name, 'name');
      const members = this.supervisor.topologyOf(acct.id).routers.get(name);
      if (!members) throw new ApiError(404, 'NO_ROUTER', `no router ${name}`, 'name');
      return json(200, { name, members: [...members].sort() });
    });
    r('DELETE', '/api/v1/accounts/{account}/routers/{name}', async (ctx) => {
      const acct = await this.account(ctx);
      await this.change(acct, { op: 'router-delete', name: this.name(ctx.params.name, 'name') });
      return noContent();
    });
    r('PUT', '/api/v1/accounts/{account}/routers/{name}/members/{id}', async (ctx) => {
      const acct = await this.account(ctx);
      const router = this.name(ctx.params.name, 'name');
      await this.change(acct, { op: 'member-add', router, id: this.deviceId(ctx.params.id, 'id') });
      return noContent();
    });
    r('DELETE', '/api/v1/accounts/{account}/routers/{name}/members/{id}', async (ctx) => {
      const acct = await this.account(ctx);
      const router = this.name(ctx.params.name, 'name');
      await this.change(acct, { op: 'member-delete', router, id: this.deviceId(ctx.params.id, 'id') });
      return noContent();
    });

    // aliases
    r('GET', '/api/v1/accounts/{account}/aliases', async (ctx) => {
      const topo = this.supervisor.topologyOf((await this.account(ctx)).id);
      const aliases = [...topo.aliases].map(([name, targets]) => ({ name, targets }));
      return json(200, { aliases: aliases.sort((a, b) => (a.name < b.name ? -1 : 1)) });
    });
    r('PUT', '/api/v1/accounts/{account}/aliases/{name}', async (ctx) => {
      const acct = await this.account(ctx);
      const name = this.name(ctx.params.name, 'name');
      const b = ctx.body();
      const raw = b.targets ?? (b.target === undefined ? undefined : [b.target]);
      if (!Array.isArray(raw) || raw.length === 0) {
        throw new ApiError(400, 'INVALID_FIELD', '"targets" must be a non-empty array of device IDs', 'targets');
      }
      const targets = raw.map((t) => this.deviceId(t, 'targets'));
      await this.change(acct, { op: 'alias-set', name, targets });
      return json(200, { name, targets: [...new Set(targets)] });
    });
    r('DELETE', '/api/v1/accounts/{account}/aliases/{name}', async (ctx) => {
      const acct = await this.account(ctx);
      await this.change(acct, { op: 'alias-delete', name: this.name(ctx.params.name, 'name') });
      return noContent();
    });
  }

  /** A device ID from input: validated, canonical upper case. */
  deviceId(v: unknown, field: string): string {
    if (typeof v !== 'string' || !isValidId(v, this.config.NODE.MAX_ID)) {
      throw new ApiError(
        400,
        'INVALID_ID',
        `"${field}" must be 1..${this.config.NODE.MAX_ID} characters of A-Z 0-9 _ - . @`,
        field,
      );
    }
    return canonicalId(v);
  }

  /** A router or alias name: the same rules as IDs. */
  name(v: unknown, field: string): string {
    return this.deviceId(v, field);
  }
}

function publicAccount(a: AccountRecord): { email: string; level: number; createdAt: number } {
  return { email: a.email, level: a.level, createdAt: a.createdAt };
}

/** Each root's subtree breadth first, roots and siblings sorted, so the answer does not depend on the order of edits. */
function treeJson(api: OperatorApi, acct: AccountRecord): unknown {
  const topo = api.supervisor.topologyOf(acct.id);
  const roots = [...topo.roots()].sort();
  const nodes: { id: string; parent: string | null; children: string[] }[] = [];
  for (const root of roots) {
    const queue = [root];
    for (let i = 0; i < queue.length; i++) {
      const id = queue[i]!;
      const children = [...topo.childrenOf(id)].sort();
      nodes.push({ id, parent: topo.parentOf(id), children });
      queue.push(...children);
    }
  }
  return { roots, nodes };
}

function str(b: Record<string, unknown>, field: string): string {
  const v = b[field];
  if (typeof v !== 'string' || v === '') throw new ApiError(400, 'INVALID_FIELD', `"${field}" must be a string`, field);
  return v;
}

function int(b: Record<string, unknown>, field: string, min: number, max: number): number {
  const v = b[field];
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw new ApiError(400, 'INVALID_FIELD', `"${field}" must be a whole number from ${min} to ${max}`, field);
  }
  return v;
}

function safeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

export function errorResponse(err: unknown, log: Logger): ApiResponse {
  if (err instanceof ApiError) {
    return json(err.status, { error: err.code, message: err.message, ...(err.field ? { field: err.field } : {}) });
  }
  if (err instanceof TopologyFailure) {
    return json(TOPOLOGY_STATUS[err.code] ?? 400, { error: err.code, message: err.message });
  }
  log.error({ err }, 'operator API failure');
  return json(500, { error: 'INTERNAL', message: 'internal error' });
}
