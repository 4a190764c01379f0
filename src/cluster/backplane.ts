// Cluster mode (issue 9): what the nodes of one cluster tell each other, through the Redis they share. No protocol
// of our own between nodes: Redis pub/sub carries small events (a topology change, an account change), and plain
// Redis keys carry the per-account topology version and the lock that orders topology changes cluster-wide.
//
// Deliveries: a node keeps, per account, which node instance holds each of its registered IDs (`dir:<account>`, a
// hash ID -> instance); each running instance refreshes its liveness key (`inst:<instance>`, a few seconds' TTL) and
// reads its inbox stream (`in:<instance>`, capped). Pushes to IDs not registered on this node are routed a batch at
// a time by one Lua script (look up, check the instance lives, XADD to its inbox), so a node's pushes keep their
// order; the instance that reads them delivers as its own owner shard would. An instance that dies stops refreshing its key, and
// within the TTL its IDs count as offline everywhere: no ID is held forever by a dead node.
//
// Topology changes: a node takes the account's lock (SET NX PX), checks the version against the one its model was
// built at (reloading from the store if another node moved it on), validates and stores the change, bumps the
// version and publishes the change with it, then releases the lock. A node that receives version v+1 while at v
// applies the change as it is; any other gap (a missed message, a Redis restart) reloads the account from the store.

import { randomBytes } from 'node:crypto';
import { hostname, networkInterfaces } from 'node:os';
import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { TopologyChange } from '../routing/changes.ts';

/** A push routed to this node by another one: to `id`, or to every one of `ids` (a group push). */
export interface RemoteDelivery {
  account: number;
  id: string;
  data: string;
  ids?: string[];
}

export type ClusterEvent =
  | { kind: 'topology'; node: string; account: number; version: number; changes: TopologyChange[] }
  | { kind: 'account'; node: string; account: number; email: string; key: string; level: number; deleted: boolean }
  | { kind: 'presence'; node: string; account: number; id: string; online: boolean };

const LOCK_MS = 10_000;
const LOCK_WAIT_MS = 15_000;
/** An instance's liveness key lives this long; it is refreshed three times as often. */
const INSTANCE_TTL_MS = 6000;
/** Entries (batches of pushes) an inbox keeps for a reader that lags (approximately; the oldest go first). */
const INBOX_MAX = 20_000;
/** An inbox nobody reads (all nodes gone) and the read mark expire after this long. */
const INBOX_TTL_MS = 3_600_000;

/**
 * ARGV: prefix, this instance, inbox cap, then records of four fields, in order:
 * - a run of pushes to one device: account, ID, count, and the payloads packed as `<length>:<bytes>` one after the
 *   other (see packRun); one result for the run;
 * - one payload to several devices (a group push): account, `*` + the IDs joined by commas, 1, the payload packed
 *   the same way; one result per ID.
 * For each device, the instance holding it (dir:<account>), if it is another one and alive (inst:<instance>, read
 * once per instance), takes it: result 1, else 0. Each instance gets all it takes of the batch in one inbox entry
 * (XADD in:<instance>) whose one field `p` holds the records as `<account>:<ID or *IDs>:<count>:<length>:<payloads>`
 * one after the other, in order: one stream entry and one blob to decode per batch, no work per push in the script.
 */
const ROUTE_MANY = `
local p, me, cap = ARGV[1], ARGV[2], ARGV[3]
local out, alive, packs = {}, {}, {}
local function take(inst)
  if not inst or inst == me then return nil end
  if alive[inst] == nil then alive[inst] = redis.call('EXISTS', p .. 'inst:' .. inst) == 1 end
  if not alive[inst] then return nil end
  local pk = packs[inst]
  if pk == nil then
    pk = {}
    packs[inst] = pk
  end
  return pk
end
for i = 4, #ARGV, 4 do
  local acct, who, body = ARGV[i], ARGV[i + 1], ARGV[i + 3]
  if string.byte(who, 1) == 42 then
    local per = {}
    for id in string.gmatch(string.sub(who, 2), '[^,]+') do
      local inst = redis.call('HGET', p .. 'dir:' .. acct, id)
      local ok = 0
      if take(inst) then
        local list = per[inst]
        if list == nil then
          list = {}
          per[inst] = list
        end
        list[#list + 1] = id
        ok = 1
      end
      out[#out + 1] = ok
    end
    for inst, list in pairs(per) do
      local pk = packs[inst]
      pk[#pk + 1] = acct .. ':*' .. table.concat(list, ',') .. ':1:' .. #body .. ':' .. body
    end
  else
    local pk = take(redis.call('HGET', p .. 'dir:' .. acct, who))
    if pk then
      pk[#pk + 1] = acct .. ':' .. who .. ':' .. ARGV[i + 2] .. ':' .. #body .. ':' .. body
      out[#out + 1] = 1
    else
      out[#out + 1] = 0
    end
  end
end
for inst, pk in pairs(packs) do
  redis.call('XADD', p .. 'in:' .. inst, 'MAXLEN', '~', cap, '*', 'p', table.concat(pk))
end
return out`;

/** ARGV: prefix, account, id, this instance. 1 (and the ID is this instance's) unless a live other instance holds it. */
const CLAIM = `
local k = ARGV[1] .. 'dir:' .. ARGV[2]
local cur = redis.call('HGET', k, ARGV[3])
if cur and cur ~= ARGV[4] and redis.call('EXISTS', ARGV[1] .. 'inst:' .. cur) == 1 then return 0 end
redis.call('HSET', k, ARGV[3], ARGV[4])
return 1`;

/** ARGV: prefix, account, id, this instance. Forgets the ID only if this instance still holds it. */
const FORGET = `
local k = ARGV[1] .. 'dir:' .. ARGV[2]
if redis.call('HGET', k, ARGV[3]) == ARGV[4] then return redis.call('HDEL', k, ARGV[3]) end
return 0`;

/**
 * ARGV: prefix, account, id, this instance. Where a live other instance holding the ID takes RAW streams: the
 * value of its liveness key ("<node>|<host:port>"), else nil.
 */
const LOCATE = `
local inst = redis.call('HGET', ARGV[1] .. 'dir:' .. ARGV[2], ARGV[3])
if not inst or inst == ARGV[4] then return false end
return redis.call('GET', ARGV[1] .. 'inst:' .. inst)`;

/** ARGV: prefix, account, this instance. The IDs of the account that live other instances hold. */
const LIVE_ELSEWHERE = `
local all = redis.call('HGETALL', ARGV[1] .. 'dir:' .. ARGV[2])
local out, alive = {}, {}
for i = 1, #all, 2 do
  local inst = all[i + 1]
  if inst ~= ARGV[3] then
    if alive[inst] == nil then alive[inst] = redis.call('EXISTS', ARGV[1] .. 'inst:' .. inst) == 1 end
    if alive[inst] then out[#out + 1] = all[i] end
  end
end
return out`;

/**
 * ARGV: prefix, this instance. Every instance that joined (the `insts` set) and whose liveness key is gone died
 * without leaving: it is taken out of the set, and its inbox, if any, is renamed to one of this instance's recovery
 * keys (only one node gets it). Returns (instance, last entry it read) per inbox taken.
 */
const REAP = `
local p, me = ARGV[1], ARGV[2]
local out = {}
for _, inst in ipairs(redis.call('SMEMBERS', p .. 'insts')) do
  if inst ~= me and redis.call('EXISTS', p .. 'inst:' .. inst) == 0 then
    redis.call('SREM', p .. 'insts', inst)
    local from = redis.call('GET', p .. 'read:' .. inst) or '0-0'
    redis.call('DEL', p .. 'read:' .. inst)
    if redis.call('EXISTS', p .. 'in:' .. inst) == 1 then
      redis.call('RENAME', p .. 'in:' .. inst, p .. 'rec:' .. me .. ':' .. inst)
      out[#out + 1] = inst
      out[#out + 1] = from
    end
  end
end
return out`;

/** Releases a lock only if it still holds our token. */
const UNLOCK = `if redis.call('GET', ARGV[1]) == ARGV[2] then return redis.call('DEL', ARGV[1]) end return 0`;

/** The scripts, sent once per connection and then called by their SHA (ioredis' defineCommand). */
const SCRIPTS = {
  p2pcRoute: ROUTE_MANY,
  p2pcClaim: CLAIM,
  p2pcForget: FORGET,
  p2pcLocate: LOCATE,
  p2pcLiveElsewhere: LIVE_ELSEWHERE,
  p2pcReap: REAP,
  p2pcUnlock: UNLOCK,
} as const;
type ScriptCalls = { [K in keyof typeof SCRIPTS]: (...args: (string | number | Buffer)[]) => Promise<unknown> };

/**
 * host:port at which the other nodes reach this node's device port: CLUSTER.ADVERTISE (its port defaults to the
 * device port), else the address the device port is bound to, else this machine's first non-loopback IPv4 address.
 */
export function advertisedAddress(advertise: string, bound: string, port: number): string {
  if (advertise !== '') return /:\d+$/.test(advertise) && !advertise.endsWith(']') ? advertise : `${advertise}:${port}`;
  if (bound !== '' && bound !== '0.0.0.0' && bound !== '::')
    return bound.includes(':') ? `[${bound}]:${port}` : `${bound}:${port}`;
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return `${a.address}:${port}`;
  }
  return `127.0.0.1:${port}`;
}

/** Appends the pushes of one inbox entry (see ROUTE_MANY: field `p`, runs of packed payloads) to `out`. */
export function unpackInbox(fields: Buffer[], out: RemoteDelivery[]): void {
  for (let f = 0; f + 1 < fields.length; f += 2) {
    if (fields[f]!.length !== 1 || fields[f]![0] !== 0x70) continue; // 'p'
    const b = fields[f + 1]!;
    for (let pos = 0; pos < b.length; ) {
      const c1 = b.indexOf(0x3a, pos);
      const c2 = c1 < 0 ? -1 : b.indexOf(0x3a, c1 + 1);
      const c3 = c2 < 0 ? -1 : b.indexOf(0x3a, c2 + 1);
      const c4 = c3 < 0 ? -1 : b.indexOf(0x3a, c3 + 1);
      if (c4 < 0) return;
      const account = Number(b.toString('latin1', pos, c1));
      const id = b.toString('latin1', c1 + 1, c2);
      const ids = id.charCodeAt(0) === 42 ? id.slice(1).split(',') : undefined; // '*': one payload, several IDs
      const count = Number(b.toString('latin1', c2 + 1, c3));
      const end = c4 + 1 + Number(b.toString('latin1', c3 + 1, c4));
      if (!(end <= b.length)) return;
      let at = c4 + 1;
      for (let k = 0; k < count && at < end; k++) {
        const colon = b.indexOf(0x3a, at);
        if (colon < 0 || colon >= end) return;
        const stop = colon + 1 + Number(b.toString('latin1', at, colon));
        if (!(stop <= end)) return;
        const data = b.toString('latin1', colon + 1, stop);
        out.push(ids === undefined ? { account, id, data } : { account, id: '', data, ids });
        at = stop;
      }
      pos = end;
    }
  }
}

/** The payloads of a run as the script takes them: `<length>:<data>` each, latin1 (one byte per character). */
function packRun(pushes: readonly { data: string }[], from: number, to: number): Buffer {
  let text = '';
  for (let k = from; k < to; k++) {
    const d = pushes[k]!.data;
    text += `${d.length}:${d}`;
  }
  return Buffer.from(text, 'latin1');
}

export class Backplane {
  readonly node: string;
  /** This run of the node: its IDs in the directory, its inbox and its liveness key are named after it. */
  readonly instance: string;
  private readonly reader: Redis;
  private heartbeat: NodeJS.Timeout | null = null;
  private readonly prefix: string;
  private readonly pub: Redis;
  private readonly scripts: ScriptCalls;
  private readonly sub: Redis;
  private readonly log: Logger;
  private closed = false;
  private lockSeq = 0;
  /** Where other nodes reach this one's device port (host:port), for RAW streams across nodes. */
  private readonly advertise: string;
  /** The cluster's shared secret (see raw-header.ts), as hex; read from Redis at start and after it comes back. */
  secret = '';

  private constructor(
    node: string,
    advertise: string,
    prefix: string,
    pub: Redis,
    sub: Redis,
    reader: Redis,
    log: Logger,
  ) {
    this.node = node;
    this.advertise = advertise;
    this.instance = `${node}#${randomBytes(6).toString('hex')}`;
    this.prefix = prefix;
    this.pub = pub;
    for (const [name, lua] of Object.entries(SCRIPTS)) pub.defineCommand(name, { numberOfKeys: 0, lua });
    this.scripts = pub as unknown as ScriptCalls;
    this.sub = sub;
    this.reader = reader;
    this.log = log;
  }

  /** Connects (one connection to publish and query, one to subscribe) and starts delivering events to `onEvent`. */
  static async open(
    url: string,
    opts: { prefix: string; node: string; devicePort: number; advertise: string; log: Logger },
    onEvent: (ev: ClusterEvent) => void,
    onResync: () => void,
    onDeliveries: (batch: RemoteDelivery[]) => void,
  ): Promise<Backplane> {
    const node = opts.node || `${hostname()}:${opts.devicePort}`;
    const options = { lazyConnect: true, maxRetriesPerRequest: 2, connectTimeout: 2000, enableOfflineQueue: true };
    const pub = new Redis(url, { ...options, retryStrategy: (n: number) => Math.min(500, 50 * n) });
    const sub = new Redis(url, { ...options, retryStrategy: (n: number) => Math.min(500, 50 * n) });
    // The inbox reader blocks in XREAD: its own connection, no retry limit (it loops until closed).
    const reader = new Redis(url, { lazyConnect: true, connectTimeout: 2000, maxRetriesPerRequest: null });
    for (const r of [pub, sub, reader]) r.on('error', () => {});
    await Promise.all([pub.connect(), sub.connect(), reader.connect()]);
    const bp = new Backplane(node, opts.advertise, opts.prefix, pub, sub, reader, opts.log);
    await bp.readSecret();
    await bp.beat();
    bp.heartbeat = setInterval(() => {
      bp.beat()
        .then(() => bp.reap(onDeliveries))
        .catch((err: unknown) => opts.log.warn({ err }, 'cluster: refreshing this node failed'));
    }, INSTANCE_TTL_MS / 3);
    bp.heartbeat.unref();
    void bp.readInbox(onDeliveries);
    const channel = `${opts.prefix}events`;
    sub.on('message', (ch: string, text: string) => {
      if (ch !== channel) return;
      let ev: ClusterEvent;
      try {
        ev = JSON.parse(text) as ClusterEvent;
      } catch {
        opts.log.warn('cluster: an event that is not JSON was ignored');
        return;
      }
      if (ev.node !== node) onEvent(ev);
    });
    // The connections are up: any later 'ready' is Redis coming back, and what was published meanwhile (or all of
    // the directory, if Redis restarted empty) is lost: the owner of the callback writes and reloads it again.
    sub.on('ready', () => {
      opts.log.warn('cluster: Redis is back; resynchronising');
      // This node is alive again at once for the others (a restarted Redis lost its liveness key), not at the next beat.
      bp.beat().catch((err: unknown) => opts.log.warn({ err }, 'cluster: refreshing this node failed'));
      onResync();
    });
    await sub.subscribe(channel);
    opts.log.info({ node }, 'cluster: joined');
    return bp;
  }

  private async beat(): Promise<void> {
    const p = this.prefix;
    await Promise.all([
      this.pub.set(`${p}inst:${this.instance}`, `${this.node}|${this.advertise}`, 'PX', INSTANCE_TTL_MS),
      // In the set every beat: a restarted Redis learns it again.
      this.pub.sadd(`${p}insts`, this.instance),
      this.pub.pexpire(`${p}in:${this.instance}`, INBOX_TTL_MS),
    ]);
  }

  /**
   * Pushes routed to a node in the seconds between its death and its liveness key expiring were accepted
   * (`[OK:DATA_SENT]`) and sit unread in its inbox. The first node to notice the death takes that inbox and hands
   * every entry after the last one the dead node read to `onDeliveries`, as if routed to this node: the owner shard
   * delivers it if the device is here by now, routes it to the node that has it, or holds it.
   */
  private async reap(onDeliveries: (batch: RemoteDelivery[]) => void): Promise<void> {
    const taken = (await this.scripts.p2pcReap(this.prefix, this.instance)) as string[];
    for (let k = 0; k + 1 < taken.length; k += 2) {
      const dead = taken[k]!;
      const key = `${this.prefix}rec:${this.instance}:${dead}`;
      let from = taken[k + 1]!;
      let recovered = 0;
      for (;;) {
        const entries = (await this.pub.xrangeBuffer(key, `(${from}`, '+', 'COUNT', 100)) as [Buffer, Buffer[]][];
        if (entries.length === 0) break;
        from = entries[entries.length - 1]![0].toString('latin1');
        const batch: RemoteDelivery[] = [];
        for (const [, fields] of entries) unpackInbox(fields, batch);
        recovered += batch.length;
        onDeliveries(batch);
      }
      await this.pub.del(key);
      this.log.warn(
        { dead, recovered },
        'cluster: a node died; the pushes routed to it and not yet read are re-routed',
      );
    }
  }

  /**
   * The cluster's secret: the first node to ask makes it (SET NX), every node reads the same one. Asked again after
   * Redis comes back (a restarted Redis lost it: the first node to ask makes a new one). True when it changed.
   */
  async readSecret(): Promise<boolean> {
    const key = `${this.prefix}secret`;
    await this.pub.set(key, randomBytes(32).toString('hex'), 'NX');
    const secret = (await this.pub.get(key)) ?? '';
    if (secret === this.secret) return false;
    this.secret = secret;
    return true;
  }

  /**
   * Where the live other node holding an ID takes RAW streams (host and port), or null when no live other node
   * holds it.
   */
  async locate(account: number, id: string): Promise<{ host: string; port: number } | null> {
    const v = (await this.scripts.p2pcLocate(this.prefix, account, id, this.instance)) as string | null;
    if (v === null) return null;
    const at = v.slice(v.lastIndexOf('|') + 1);
    const colon = at.lastIndexOf(':');
    const port = Number(at.slice(colon + 1));
    if (colon <= 0 || !Number.isInteger(port) || port <= 0) return null;
    return { host: at.slice(0, colon).replace(/^\[|\]$/g, ''), port };
  }

  /** Reads this instance's inbox until closed, handing each batch over in order. */
  private async readInbox(onDeliveries: (batch: RemoteDelivery[]) => void): Promise<void> {
    const key = `${this.prefix}in:${this.instance}`;
    let last = '0-0';
    while (!this.closed) {
      let res: [Buffer, [Buffer, Buffer[]][]][] | null;
      try {
        res = (await this.reader.xreadBuffer('COUNT', 100, 'BLOCK', 1000, 'STREAMS', key, last)) as
          | [Buffer, [Buffer, Buffer[]][]][]
          | null;
      } catch (err) {
        if (this.closed) return;
        this.log.warn({ err }, 'cluster: reading the inbox failed; retrying');
        await new Promise((r) => setTimeout(r, 250));
        continue;
      }
      if (res === null) continue;
      const batch: RemoteDelivery[] = [];
      for (const [, entries] of res) {
        for (const [entryId, fields] of entries) {
          last = entryId.toString('latin1');
          unpackInbox(fields, batch);
        }
      }
      if (batch.length === 0) continue;
      // Where a node that takes this inbox after a crash starts (see reap).
      this.pub.set(`${this.prefix}read:${this.instance}`, last, 'PX', INBOX_TTL_MS).catch(() => undefined);
      onDeliveries(batch);
    }
  }

  /** An ID registered on this node (calls keep their order on the one connection). */
  online(account: number, id: string): void {
    this.pub.hset(`${this.prefix}dir:${account}`, id, this.instance).catch((err: unknown) => {
      this.log.warn({ err }, 'cluster: recording a registration failed');
    });
  }

  /** An ID left this node (forgotten only if no other node took it meanwhile). */
  offline(account: number, id: string): void {
    this.scripts.p2pcForget(this.prefix, account, id, this.instance).catch((err: unknown) => {
      this.log.warn({ err }, 'cluster: recording a departure failed');
    });
  }

  /** Claims an ID for this node: false when a live other node holds it (§4 across nodes). */
  async claim(account: number, id: string): Promise<boolean> {
    return (await this.scripts.p2pcClaim(this.prefix, account, id, this.instance)) === 1;
  }

  /** True when a live other node holds the ID. */
  async onlineElsewhere(account: number, id: string): Promise<boolean> {
    const inst = await this.pub.hget(`${this.prefix}dir:${account}`, id);
    return inst !== null && inst !== this.instance && (await this.pub.exists(`${this.prefix}inst:${inst}`)) === 1;
  }

  /** The account's IDs registered on live other nodes. */
  async liveElsewhere(account: number): Promise<string[]> {
    return (await this.scripts.p2pcLiveElsewhere(this.prefix, account, this.instance)) as string[];
  }

  /** Routes pushes in order, in one call: per push, true when a live other node took it. */
  async routeMany(pushes: readonly { account: number; id: string; data: string }[]): Promise<boolean[]> {
    if (pushes.length === 0) return [];
    const args: (string | number | Buffer)[] = [this.prefix, this.instance, INBOX_MAX];
    // Per record: pushes it stands for, and whether the script answers once (a run) or per push (a group).
    const runs: number[] = [];
    for (let from = 0; from < pushes.length; ) {
      const first = pushes[from]!;
      let to = from + 1;
      while (to < pushes.length && pushes[to]!.id === first.id && pushes[to]!.account === first.account) to++;
      if (to - from === 1) {
        // One payload to several devices (the members of a group push share the very string).
        const ids = [first.id];
        while (to < pushes.length && pushes[to]!.data === first.data && pushes[to]!.account === first.account) {
          ids.push(pushes[to]!.id);
          to++;
        }
        if (ids.length > 1) {
          args.push(first.account, `*${ids.join(',')}`, 1, packRun(pushes, from, from + 1));
          runs.push(-ids.length);
          from = to;
          continue;
        }
      }
      args.push(first.account, first.id, to - from, packRun(pushes, from, to));
      runs.push(to - from);
      from = to;
    }
    const r = (await this.scripts.p2pcRoute(...args)) as number[];
    const out: boolean[] = [];
    let at = 0;
    for (const n of runs) {
      if (n < 0) for (let j = 0; j < -n; j++) out.push(r[at++] === 1);
      else {
        const ok = r[at++] === 1;
        for (let j = 0; j < n; j++) out.push(ok);
      }
    }
    return out;
  }

  publish(ev: ClusterEvent): Promise<number> {
    return this.pub.publish(`${this.prefix}events`, JSON.stringify(ev));
  }

  /** The account's topology version (0 before any change in cluster mode). */
  async topologyVersion(account: number): Promise<number> {
    return Number((await this.pub.get(`${this.prefix}topo:${account}:ver`)) ?? 0);
  }

  bumpTopologyVersion(account: number): Promise<number> {
    return this.pub.incr(`${this.prefix}topo:${account}:ver`);
  }

  /** Runs `fn` holding the cluster-wide lock `name` (waits for it up to LOCK_WAIT_MS; held at most LOCK_MS). */
  async withLock<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const key = `${this.prefix}lock:${name}`;
    const token = `${this.node}:${process.pid}:${++this.lockSeq}`;
    const deadline = Date.now() + LOCK_WAIT_MS;
    for (let delay = 2; ; delay = Math.min(100, delay * 2)) {
      if ((await this.pub.set(key, token, 'PX', LOCK_MS, 'NX')) === 'OK') break;
      if (Date.now() > deadline) throw new Error(`cluster: lock ${name} not acquired in ${LOCK_WAIT_MS} ms`);
      await new Promise((r) => setTimeout(r, delay));
    }
    try {
      return await fn();
    } finally {
      await this.scripts.p2pcUnlock(key, token).catch((err: unknown) => {
        this.log.warn({ err }, 'cluster: releasing a lock failed (it expires by itself)');
      });
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.heartbeat !== null) clearInterval(this.heartbeat);
    // Leaving on purpose: this instance's IDs are offline at once, not after the liveness TTL.
    const p = this.prefix;
    await Promise.all([
      this.pub.del(`${p}inst:${this.instance}`, `${p}in:${this.instance}`, `${p}read:${this.instance}`),
      this.pub.srem(`${p}insts`, this.instance),
    ]).catch(() => undefined);
    this.reader.disconnect();
    await Promise.allSettled([this.sub.quit(), this.pub.quit()]);
  }
}
