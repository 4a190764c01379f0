// The supervisor (main thread): owns topology and the store, spawns the shard workers with a full mesh
// of MessagePorts, answers KEY lookups, restarts a crashed shard, and shuts everything down.

import { createServer } from 'node:net';
import { MessageChannel, type MessagePort, Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import type { ApiRequest, ApiResponse } from '../api/types.ts';
import type { Backplane, ClusterEvent, RemoteDelivery } from '../cluster/backplane.ts';
import { NONCE_TABLE_INTS } from '../cluster/raw-header.ts';
import { type Config, MAX_SLOTS_PER_SHARD, planValue } from '../config/schema.ts';
import type { FailCode } from '../protocol/codes.ts';
import { applyChange, changesOf, encodeChange, type TopologyChange } from '../routing/changes.ts';
import { clearAllFlags, newStatusTable, shardOf } from '../routing/handle.ts';
import { Topology, TopologyFailure } from '../routing/topology.ts';
import { ADDRESS_TABLE_INTS } from '../runtime/address-table.ts';
import { PortLink } from '../runtime/link.ts';
import { collectionLog, IdleMemoryReducer } from '../runtime/memory-reducer.ts';
import { COUNTER_OPEN, OP, type PortMessage, type ShardInit } from '../runtime/messages.ts';
import type { Outbox } from '../services/outbox.ts';
import type { AccountRecord, HoldRequest, Store } from '../store/store.ts';

const SHARD_ENTRY = new URL('../../workers/shard.ts', import.meta.url);
/** Pushes one store call (one Redis script in cluster mode) takes at most. */
const HOLD_BATCH_MAX = 8192;
/** Group pushes one routing call takes at most. */
const GROUP_BATCH_MAX = 256;

interface HoldOp {
  req: number;
  accountId: number;
  id: string;
  data: string;
  level: number;
  /** The shard whose device pushed it (gets the answer). */
  origin: number;
}

/** Cluster mode: a group push's members not on the sending node (GROUP_ROUTE), answered with GROUP_RESULT. */
interface GroupRoute {
  req: number;
  accountId: number;
  data: string;
  level: number;
  friends: boolean;
  ids: string[];
  link: PortLink;
}

/** A batch of HOLD ops being gathered, and its routing call once made (cluster mode). */
interface OpenHolds {
  ops: HoldOp[];
  routed: Promise<(boolean | 'error')[]> | null;
}

interface ShardSlot {
  worker: Worker | null;
  control: PortLink | null;
  ready: boolean;
  crashes: number[];
}

/** Live counters of one registered connection (operator console). */
export interface DeviceStats {
  id: string;
  /** PUSH commands it executed. */
  sent: number;
  /** Messages delivered to it. */
  received: number;
  /** When its connection was accepted (epoch ms). */
  connectedAt: number;
}

export type AccountEvent = 'presence' | 'topology';

/** How often the supervisor's idle memory reducer looks at its thread (a window is PServer.IDLE_GC_MS). */
const IDLE_TICK_MS = 50;

export class Supervisor {
  readonly config: Config;
  readonly store: Store;
  readonly log: Logger;
  readonly shardCount: number;
  port = 0;
  tlsPort = 0;
  private readonly status: SharedArrayBuffer[];
  private readonly counters: SharedArrayBuffer;
  private readonly addressConnections: SharedArrayBuffer;
  private readonly addressFailures: SharedArrayBuffer;
  /** Cluster mode: nonces of the RAW stream headers this node accepted (src/cluster/raw-header.ts). */
  private readonly nonces = new SharedArrayBuffer(4 * NONCE_TABLE_INTS);
  private readonly shards: ShardSlot[];
  private stopping = false;
  private readyWaiters: (() => void)[] = [];
  private stoppedWaiters = new Map<number, () => void>();
  /** Serves HTTP requests relayed from the device port. */
  httpHandler: ((req: ApiRequest) => Promise<ApiResponse>) | null = null;
  /** The durable outbox for e-mail and SMS (null in tests that run without one). */
  outbox: Outbox | null = null;
  /** The authoritative topology of every account (persisted in the store, replicated to every shard). */
  private readonly topologies = new Map<number, Topology>();
  private syncSeq = 0;
  private syncWaits: { seq: number; pending: Set<number>; resolve: () => void }[] = [];
  private querySeq = 0;
  private readonly metricWaits = new Map<number, (shard: number, m: Map<string, number>) => void>();
  /** (account:ID) pairs with held messages, so a registration with nothing held costs no query. */
  private readonly heldKeys = new Set<string>();
  private purgeTimer: NodeJS.Timeout | null = null;
  /** The supervisor's own idle memory reducer (PServer.IDLE_GC_MS; each shard runs one too), and its timer. */
  reducer: IdleMemoryReducer | null = null;
  private reducerTimer: NodeJS.Timeout | null = null;
  /** Store work that must keep the shards' op order (see inOrder). */
  private storeQueue: Promise<void> = Promise.resolve();
  /** The batch of holds this event-loop turn, while later holds may join it (see queueHolds). */
  private openHolds: OpenHolds | null = null;
  /** The same for group pushes routed to other nodes (see queueGroup). */
  private openGroups: GroupRoute[] | null = null;
  /** Topology changes of an account, one unit after the other (validation, store, replication). */
  private readonly topologyLocks = new Map<number, Promise<void>>();
  /** Cluster mode: the other nodes, through Redis (null when this server runs alone). */
  cluster: Backplane | null = null;
  /**
   * Cluster mode: the IDs registered on this node ("account:ID" -> registrations, so a takeover's arrival before
   * the old holder's departure counts right), written to the cluster directory again after Redis comes back.
   */
  private readonly localIds = new Map<string, number>();
  /** Cluster mode: the topology version each account's model was built at (absent: unknown, reload first). */
  private readonly topologyVersions = new Map<number, number>();
  private readonly deviceQueries = new Map<number, (list: { id: string; shard: number }[]) => void>();
  private readonly kickQueries = new Map<number, (kicked: boolean) => void>();
  private readonly pushQueries = new Map<number, (delivered: number, held: string[]) => void>();
  private readonly statsWaits = new Map<number, (shard: number, list: DeviceStats[]) => void>();
  /** Listeners of account events (the operator console's live streams), by account. */
  private readonly accountListeners = new Map<number, Set<(kind: AccountEvent) => void>>();

  constructor(config: Config, store: Store, log: Logger, shardCount: number) {
    this.config = config;
    this.store = store;
    this.log = log;
    this.shardCount = shardCount;
    const slots = Math.min(MAX_SLOTS_PER_SHARD, config.PServer.MAXLOAD);
    this.status = Array.from({ length: shardCount }, () => newStatusTable(slots).buffer as SharedArrayBuffer);
    this.counters = new SharedArrayBuffer(4 * (COUNTER_OPEN + shardCount));
    this.addressConnections = new SharedArrayBuffer(4 * ADDRESS_TABLE_INTS);
    this.addressFailures = new SharedArrayBuffer(4 * ADDRESS_TABLE_INTS);
    this.shards = Array.from({ length: shardCount }, () => ({
      worker: null,
      control: null,
      ready: false,
      crashes: [],
    }));
  }

  /** Spawns every shard and resolves once all of them listen. */
  async start(): Promise<void> {
    for (const k of await this.store.heldKeys()) this.heldKeys.add(`${k.accountId}:${k.id}`);
    this.purgeTimer = setInterval(() => {
      this.store.purgeHeld(Date.now()).catch((err: unknown) => {
        this.log.error({ err }, 'purging expired held messages failed');
      });
    }, 60000);
    this.purgeTimer.unref();
    const pserver = this.config.PServer;
    if (pserver.IDLE_GC_MS > 0) {
      const reducer = new IdleMemoryReducer({ quietMs: pserver.IDLE_GC_MS, growthBytes: pserver.IDLE_GC_MB * 1048576 });
      this.reducer = reducer;
      this.reducerTimer = setInterval(() => {
        if (reducer.tick(Date.now())) this.log.debug(collectionLog(reducer), 'idle heap collected');
      }, IDLE_TICK_MS);
      this.reducerTimer.unref();
    }
    const accounts = await this.store.listAccounts();
    for (const acct of accounts) {
      const changes = await this.store.loadTopology(acct.id);
      if (changes.length === 0) continue;
      const t = new Topology();
      for (const c of changes) applyChange(t, c);
      this.topologies.set(acct.id, t);
    }
    this.port = this.config.PServer.ServerPort || (await freePort(this.config.PServer.HOST));
    const tls = this.config.TLS;
    if (tls.ENABLED) {
      if (tls.CERT === '' || tls.KEY === '') throw new Error('TLS.ENABLED needs TLS.CERT and TLS.KEY');
      this.tlsPort = tls.PORT || (await freePort(this.config.PServer.HOST));
    }
    const n = this.shardCount;
    // Full mesh: ports[i][j] is shard i's end of the channel to shard j.
    const ports: (MessagePort | undefined)[][] = Array.from({ length: n }, () => new Array(n).fill(undefined));
    for (let i = 0; i < n; i++) {
      for (let j = i + 1; j < n; j++) {
        const ch = new MessageChannel();
        ports[i]![j] = ch.port1;
        ports[j]![i] = ch.port2;
      }
    }
    const psk = await this.pskAccounts();
    for (let i = 0; i < n; i++) this.spawn(i, ports[i]!, psk);
    await this.allReady();
    this.log.info({ port: this.port, shards: n }, 'device port listening');
  }

  private allReady(): Promise<void> {
    if (this.shards.every((s) => s.ready)) return Promise.resolve();
    return new Promise((resolve) => this.readyWaiters.push(resolve));
  }

  /** Accounts a shard's TLS-PSK listener knows at start (later ones reach it as ACCOUNT_UPDATE). */
  private async pskAccounts(): Promise<[number, string, string, number][]> {
    if (!this.config.TLS.PSK) return [];
    return (await this.store.listAccounts()).map((a): [number, string, string, number] => [
      a.id,
      a.email,
      a.key,
      a.level,
    ]);
  }

  /**
   * Runs store work in the order the shards' ops asked for it (holds before a backlog fetch, last-seen updates
   * before a STATUS read), one task after the other; a failure is logged and does not stop the queue.
   */
  private inOrder(what: string, task: () => Promise<void>): void {
    // Holds and group pushes queued after this task must not run before it.
    this.openHolds = null;
    this.openGroups = null;
    this.storeQueue = this.storeQueue.then(task).catch((err: unknown) => this.log.error({ err }, what));
  }

  /**
   * Queues held or routed pushes (HOLD ops) in order. The batches shards send within one event-loop turn join one
   * batch (up to HOLD_BATCH_MAX). In cluster mode its routing call goes to Redis at the end of that turn, without
   * waiting for earlier store work (Redis runs the calls of one connection in the order they were sent, so pushes keep
   * their order and several batches are in flight at once); storing what is held and answering stay in order.
   */
  private queueHolds(batch: HoldOp[]): void {
    const open = this.openHolds;
    if (open !== null && open.ops.length + batch.length <= HOLD_BATCH_MAX) {
      for (const h of batch) open.ops.push(h);
      return;
    }
    const entry: OpenHolds = { ops: batch, routed: null };
    const route = (): Promise<(boolean | 'error')[]> => {
      if (this.openHolds === entry) this.openHolds = null;
      entry.routed ??= this.routeHolds(entry.ops);
      return entry.routed;
    };
    this.inOrder('holding messages failed', async () => this.holdBatch(entry.ops, await route()));
    this.openHolds = entry;
    if (this.cluster !== null) setImmediate(route);
  }

  /** Cluster mode: per push, true when a live other node took it ('error' when Redis could not be asked). */
  private async routeHolds(batch: HoldOp[]): Promise<(boolean | 'error')[]> {
    const cluster = this.cluster;
    if (cluster === null) return batch.map(() => false);
    try {
      return await cluster.routeMany(batch.map((h) => ({ account: h.accountId, id: h.id, data: h.data })));
    } catch (err) {
      this.log.warn({ err }, 'cluster: routing pushes failed');
      return batch.map(() => 'error');
    }
  }

  private spawn(index: number, peers: (MessagePort | undefined)[], psk: [number, string, string, number][]): void {
    const control = new MessageChannel();
    const init: ShardInit = {
      index,
      shards: this.shardCount,
      port: this.port,
      tlsPort: this.tlsPort,
      config: this.config,
      status: this.status,
      counters: this.counters,
      addressConnections: this.addressConnections,
      addressFailures: this.addressFailures,
      nonces: this.nonces,
      control: control.port2,
      peers,
      topology: this.topologySnapshot(),
      accounts: psk,
      nodeSecret: this.cluster?.secret ?? '',
    };
    const transfer = [control.port2, ...peers.filter((p): p is MessagePort => p !== undefined)];
    const young = this.config.PServer.SHARD_YOUNG_MB;
    const worker = new Worker(SHARD_ENTRY, {
      workerData: init,
      transferList: transfer,
      name: `shard-${index}`,
      // A registration burst grows V8's young generation to tens of MB per thread and it stays; capped, idle
      // memory per connection drops by about a third (docs/performance.md).
      ...(young > 0 ? { resourceLimits: { maxYoungGenerationSizeMb: young } } : {}),
    });
    const slot = this.shards[index]!;
    slot.worker = worker;
    slot.ready = false;
    slot.control = new PortLink(-1, control.port1, Number.MAX_SAFE_INTEGER, (ops) => this.onShardOps(index, ops));
    worker.on('error', (err) => this.log.error({ err, shard: index }, 'shard failed'));
    worker.on('exit', (code) => this.onExit(index, worker, code));
  }

  /** Queues a group push's members that are not on this node; consecutive ones join one batch (see queueHolds). */
  private queueGroup(g: GroupRoute): void {
    const open = this.openGroups;
    if (open !== null && open.length < GROUP_BATCH_MAX) {
      open.push(g);
      return;
    }
    const batch = [g];
    this.inOrder('cluster: routing a group push failed', () => {
      if (this.openGroups === batch) this.openGroups = null;
      return this.routeGroups(batch);
    });
    this.openGroups = batch;
  }

  /**
   * Cluster mode: group pushes' members not on this node go to the nodes that have them (one script for the batch);
   * the rest are held where the plan holds; each group's reply then counts what other nodes took.
   */
  private async routeGroups(batch: GroupRoute[]): Promise<void> {
    const cluster = this.cluster;
    const more = batch.map(() => 0);
    if (cluster !== null) {
      for (let k = 0; k < batch.length; k++) {
        const g = batch[k]!;
        if (!g.friends) continue;
        // §5 FRIENDS of a device outside the tree: every live ID outside the tree is a friend, on any node.
        const topo = this.topologies.get(g.accountId);
        const known = new Set(g.ids);
        const extra = await cluster.liveElsewhere(g.accountId).catch((err: unknown) => {
          this.log.warn({ err }, 'cluster: listing the devices on other nodes failed');
          return [] as string[];
        });
        for (const id of extra) {
          if (known.has(id) || (topo?.has(id) && topo.parentOf(id) !== null)) continue;
          known.add(id);
          g.ids.push(id);
          more[k]!++;
        }
      }
    }
    // Too many friends on the other nodes: refused whole (the sender's own node delivered its share).
    const refused = batch.map((g, k) => more[k]! > 0 && g.ids.length > this.config.NODE.MAX_FANOUT);
    const pushes: { account: number; id: string; data: string }[] = [];
    batch.forEach((g, k) => {
      if (!refused[k]) for (const id of g.ids) pushes.push({ account: g.accountId, id, data: g.data });
    });
    let results: (boolean | 'error')[] = pushes.map(() => false);
    if (cluster !== null && pushes.length > 0) {
      results = await cluster.routeMany(pushes).catch((err: unknown) => {
        this.log.warn({ err }, 'cluster: routing group pushes failed');
        return pushes.map(() => 'error' as const);
      });
    }
    const routed = batch.map(() => 0);
    const rest: HoldOp[] = [];
    const restRouting: (boolean | 'error')[] = [];
    let at = 0;
    batch.forEach((g, k) => {
      if (refused[k]) return;
      // The rest are offline everywhere: held where the plan holds (counted as not delivered). Their routing result
      // goes with them, so holding does not ask Redis again (and does not hold on a guess when Redis was away).
      const holding = planValue(this.config.USER['4HOLDPUSH'], g.level) !== 0;
      for (const id of g.ids) {
        const r = results[at++]!;
        if (r === true) routed[k]!++;
        else if (holding) {
          rest.push({ req: 0, accountId: g.accountId, id, data: g.data, level: g.level, origin: 0 });
          restRouting.push(r);
        }
      }
    });
    if (rest.length > 0) await this.holdBatch(rest, restRouting);
    const links = new Set<PortLink>();
    batch.forEach((g, k) => {
      g.link.ops.push(OP.GROUP_RESULT, g.req, refused[k] ? -1 : routed[k]!, more[k]!);
      links.add(g.link);
    });
    for (const link of links) link.flush();
  }

  /** Held pushes of one owner shard's batch: stored in one transaction, then answered to their origin shards. */
  private async holdBatch(batch: HoldOp[], routing?: (boolean | 'error')[]): Promise<void> {
    const now = Date.now();
    const ttl = this.config.NODE.HOLD_TTL * 1000;
    const keep: HoldRequest[] = [];
    const answers: [HoldOp, string][] = [];
    // Cluster mode: a push for an ID this node does not have goes to the node that has it (routed in order);
    // only what no live node holds is held here (when the plan holds) or refused.
    // Redis away: the push is refused with [FAIL:UNAVAILABLE] (never silently dropped, never held on a guess).
    const routed = routing ?? (await this.routeHolds(batch));
    const known: boolean[] = new Array(batch.length).fill(false);
    const asks: Promise<void>[] = [];
    batch.forEach((h, k) => {
      if (routed[k] !== false || planValue(this.config.USER['4HOLDPUSH'], h.level) === 0) return;
      asks.push(
        this.isKnownDevice(h.accountId, h.id).then(
          (yes) => {
            known[k] = yes;
          },
          () => undefined,
        ),
      );
    });
    if (asks.length > 0) await Promise.all(asks);
    batch.forEach((h, k) => {
      if (routed[k] !== false) {
        if (h.req !== 0) answers.push([h, routed[k] === true ? 'DATA_SENT' : 'UNAVAILABLE']);
        return;
      }
      if (known[k]) {
        keep.push({
          accountId: h.accountId,
          id: h.id,
          data: h.data,
          expiresAt: now + ttl,
          limit: planValue(this.config.USER['5HOLDBUFFER'], h.level),
        });
        this.heldKeys.add(`${h.accountId}:${h.id}`);
      }
      if (h.req !== 0) answers.push([h, known[k] ? 'DATA_HELD' : 'REM_ID']);
    });
    let stored = true;
    try {
      if (keep.length > 0) await this.store.hold(keep, now);
    } catch (err) {
      this.log.error({ err }, 'holding messages failed');
      stored = false;
    }
    for (const [h, result] of answers) {
      const c = this.shards[h.origin]?.control;
      c?.ops.push(OP.HOLD_RESULT, h.req, result === 'DATA_HELD' && !stored ? 'REM_ID' : result);
    }
    this.flushControls();
  }

  /** §5 Hold: a device in the tree, in a router, an alias target, or registered before. */
  private async isKnownDevice(accountId: number, id: string): Promise<boolean> {
    const t = this.topologies.get(accountId);
    if (t !== undefined) {
      if (t.has(id) || t.routersOf(id).size > 0) return true;
      for (const targets of t.aliases.values()) if (targets.includes(id)) return true;
    }
    return (await this.store.lastSeen(accountId, id)) !== null;
  }

  private onShardOps(index: number, ops: unknown[]): void {
    const slot = this.shards[index]!;
    const link = slot.control!;
    const holds: HoldOp[] = [];
    const seen: { accountId: number; id: string }[] = [];
    let i = 0;
    while (i < ops.length) {
      const op = ops[i++] as number;
      switch (op) {
        case OP.READY:
          i++;
          slot.ready = true;
          if (this.shards.every((s) => s.ready)) {
            const waiters = this.readyWaiters;
            this.readyWaiters = [];
            for (const w of waiters) w();
          }
          break;
        case OP.KEY_LOOKUP:
        case OP.UID_LOOKUP: {
          const req = ops[i++] as number;
          const value = ops[i++] as string;
          const lookup = op === OP.KEY_LOOKUP ? this.store.accountByKey(value) : this.store.accountByEmail(value);
          lookup
            .then((acct) => link.ops.push(OP.KEY_RESULT, req, acct?.id ?? 0, acct?.key ?? '', acct?.level ?? 0))
            .catch((err: unknown) => {
              // The shard retries nothing: an unanswered lookup would block its connection, so answer "unknown".
              this.log.error({ err }, 'KEY lookup failed');
              link.ops.push(OP.KEY_RESULT, req, 0, '', 0);
            })
            .finally(() => link.flush());
          break;
        }
        case OP.STOPPED:
          this.stoppedWaiters.get(index)?.();
          break;
        case OP.HOLD: {
          const req = ops[i++] as number;
          const accountId = ops[i++] as number;
          const id = ops[i++] as string;
          const data = ops[i++] as string;
          const level = ops[i++] as number;
          holds.push({ req, accountId, id, data, level, origin: ops[i++] as number });
          break;
        }
        case OP.HELD_FETCH: {
          // Holds earlier on this port (the owner's) are stored first, so the backlog includes them.
          if (holds.length > 0) {
            const batch = holds.splice(0);
            this.queueHolds(batch);
          }
          const accountId = ops[i++] as number;
          const id = ops[i++] as string;
          const handle = ops[i++] as number;
          const level = ops[i++] as number;
          const key = `${accountId}:${id}`;
          this.inOrder('fetching held messages failed', async () => {
            let data: string[] = [];
            if (this.heldKeys.has(key)) {
              this.heldKeys.delete(key);
              try {
                data = await this.store.takeHeld(accountId, id, Date.now());
              } catch (err) {
                this.heldKeys.add(key); // still there: fetched on its next registration
                this.log.error({ err }, 'fetching held messages failed');
              }
            }
            // Always answered: the device's output waits for this backlog's place. The answers of one turn go as
            // one batch per shard (a storm of registrations, one fetch each, would otherwise post one per fetch).
            const target = this.shards[shardOf(handle)]?.control;
            if (target) {
              target.ops.push(OP.HELD_DATA, handle, accountId, id, level, data.length, ...data);
              this.flushLater();
            }
          });
          break;
        }
        case OP.METRICS_RESULT: {
          const req = ops[i++] as number;
          const count = ops[i++] as number;
          const m = new Map<string, number>();
          for (let k = 0; k < count; k++) m.set(ops[i++] as string, ops[i++] as number);
          this.metricWaits.get(req)?.(index, m);
          break;
        }
        case OP.STATUS_QUERY: {
          const req = ops[i++] as number;
          const accountId = ops[i++] as number;
          const id = ops[i++] as string;
          // Pending last-seen updates of this batch first, so a device that just left reads as left.
          if (seen.length > 0) this.markSeen(seen.splice(0));
          this.inOrder('STATUS failed', async () => {
            let at = -1;
            try {
              // Cluster mode: online on another node reads as ONLINE (-2).
              if (this.cluster !== null && (await this.cluster.onlineElsewhere(accountId, id))) at = -2;
              else at = (await this.store.lastSeen(accountId, id)) ?? -1;
            } finally {
              link.ops.push(OP.STATUS_RESULT, req, at);
              link.flush();
            }
          });
          break;
        }
        case OP.SEEN: {
          const accountId = ops[i++] as number;
          const id = ops[i++] as string;
          const online = ops[i++] === 1;
          seen.push({ accountId, id });
          const cluster = this.cluster;
          if (cluster !== null) {
            const k = `${accountId}:${id}`;
            const n = (this.localIds.get(k) ?? 0) + (online ? 1 : -1);
            if (n > 0) this.localIds.set(k, n);
            else this.localIds.delete(k);
            if (online) cluster.online(accountId, id);
            else if (n <= 0) cluster.offline(accountId, id);
            cluster
              .publish({ kind: 'presence', node: cluster.node, account: accountId, id, online })
              .catch((err: unknown) => this.log.warn({ err }, 'cluster: publishing presence failed'));
          }
          this.notify(accountId, 'presence');
          break;
        }
        case OP.GROUP_ROUTE: {
          const req = ops[i++] as number;
          const accountId = ops[i++] as number;
          const data = ops[i++] as string;
          const level = ops[i++] as number;
          const friends = ops[i++] === 1;
          const n = ops[i++] as number;
          const ids = ops.slice(i, i + n) as string[];
          i += n;
          this.queueGroup({ req, accountId, data, level, friends, ids, link });
          break;
        }
        case OP.CLAIM: {
          const req = ops[i++] as number;
          const accountId = ops[i++] as number;
          const id = ops[i++] as string;
          const answer = (ok: boolean): void => {
            link.ops.push(OP.CLAIM_RESULT, req, ok ? 1 : 0);
            link.flush();
          };
          if (this.cluster === null) answer(true);
          else {
            this.cluster.claim(accountId, id).then(answer, (err: unknown) => {
              // Redis is away: this node decides alone (devices keep working locally); the directory catches up.
              this.log.warn({ err }, 'cluster: claiming an ID failed; decided on this node alone');
              answer(true);
            });
          }
          break;
        }
        case OP.RAW_LOCATE: {
          const writer = ops[i++] as number;
          const accountId = ops[i++] as number;
          const id = ops[i++] as string;
          const answer = (host: string, port: number, result: '' | FailCode): void => {
            link.ops.push(OP.RAW_LOCATED, writer, id, host, port, result);
            link.flush();
          };
          if (this.cluster === null) answer('', 0, 'REM_ID');
          else {
            this.cluster.locate(accountId, id).then(
              (at) => (at === null ? answer('', 0, 'REM_ID') : answer(at.host, at.port, '')),
              (err: unknown) => {
                this.log.warn({ err }, 'cluster: locating a RAW link target failed');
                answer('', 0, 'UNAVAILABLE');
              },
            );
          }
          break;
        }
        case OP.UNCLAIM: {
          const accountId = ops[i++] as number;
          this.cluster?.offline(accountId, ops[i++] as string);
          break;
        }
        case OP.API_PUSH_RESULT: {
          const req = ops[i++] as number;
          const delivered = ops[i++] as number;
          const count = ops[i++] as number;
          const held = ops.slice(i, i + count) as string[];
          i += count;
          this.pushQueries.get(req)?.(delivered, held);
          this.pushQueries.delete(req);
          break;
        }
        case OP.ACCOUNT_STATS_RESULT: {
          const req = ops[i++] as number;
          const count = ops[i++] as number;
          const list: DeviceStats[] = [];
          for (let k = 0; k < count; k++) {
            list.push({
              id: ops[i++] as string,
              sent: ops[i++] as number,
              received: ops[i++] as number,
              connectedAt: ops[i++] as number,
            });
          }
          this.statsWaits.get(req)?.(index, list);
          break;
        }
        case OP.OUTBOX_SUBMIT: {
          const req = ops[i++] as number;
          const account = ops[i++] as number;
          const kind = ops[i++] as 'mail' | 'sms';
          const to = ops[i++] as string;
          const subject = ops[i++] as string;
          const body = ops[i++] as string;
          const outbox = this.outbox;
          const answer = (result: string): void => {
            link.ops.push(OP.OUTBOX_RESULT, req, result);
            link.flush();
          };
          if (outbox === null) answer(kind === 'mail' ? 'MAIL_DISABLED' : 'SMS_DISABLED');
          else {
            // Durable before [OK:MAIL_SENT]: the answer waits for the store.
            outbox.submit(account, kind, to, subject, body).then(answer, (err: unknown) => {
              this.log.error({ err }, 'outbox write failed');
              answer('UNAVAILABLE');
            });
          }
          break;
        }
        case OP.HTTP_REQUEST: {
          const req = ops[i++] as number;
          const request = JSON.parse(ops[i++] as string) as ApiRequest;
          const handler = this.httpHandler;
          const reply = (r: ApiResponse): void => {
            const c = this.shards[index]!.control;
            if (!c) return;
            c.ops.push(OP.HTTP_RESPONSE, req, JSON.stringify(r));
            c.flush();
          };
          if (handler === null) reply({ status: 503, headers: {}, body: '' });
          else
            handler(request).then(reply, (err: unknown) => {
              this.log.error({ err }, 'relayed HTTP request failed');
              reply({ status: 500, headers: {}, body: '' });
            });
          break;
        }
        case OP.SYNC_ACK:
          this.synced(index, ops[i++] as number);
          break;
        case OP.DEVICES_RESULT: {
          const req = ops[i++] as number;
          const count = ops[i++] as number;
          const list: { id: string; shard: number }[] = [];
          for (let k = 0; k < count; k++) list.push({ id: ops[i++] as string, shard: ops[i++] as number });
          this.deviceQueries.get(req)?.(list);
          this.deviceQueries.delete(req);
          break;
        }
        case OP.KICK_RESULT: {
          const req = ops[i++] as number;
          this.kickQueries.get(req)?.(ops[i++] === 1);
          this.kickQueries.delete(req);
          break;
        }
        case OP.CREDIT:
          i++;
          break;
        default:
          this.log.error({ op, shard: index }, 'unknown op from shard; batch dropped');
          i = ops.length;
      }
    }
    if (holds.length > 0) this.queueHolds(holds);
    if (seen.length > 0) this.markSeen(seen);
    link.flush();
  }

  private onExit(index: number, worker: Worker, code: number): void {
    const slot = this.shards[index]!;
    if (slot.worker !== worker) return;
    slot.worker = null;
    slot.control?.close();
    slot.control = null;
    slot.ready = false;
    this.synced(index, Number.MAX_SAFE_INTEGER);
    if (this.stopping) return;
    this.log.error({ shard: index, code }, 'shard exited; restarting it');
    clearAllFlags(new Int32Array(this.status[index]!));
    Atomics.store(new Int32Array(this.counters), COUNTER_OPEN + index, 0);
    for (let j = 0; j < this.shardCount; j++) {
      if (j === index) continue;
      const other = this.shards[j]!.control;
      if (other) {
        other.ops.push(OP.PEER_DOWN, index);
        other.flush();
      }
    }
    const now = Date.now();
    slot.crashes = slot.crashes.filter((t) => now - t < 60000);
    slot.crashes.push(now);
    const delay = Math.min(5000, 50 * 2 ** (slot.crashes.length - 1));
    setTimeout(() => void this.respawn(index), delay).unref();
  }

  private async respawn(index: number): Promise<void> {
    if (this.stopping) return;
    let psk: [number, string, string, number][] = [];
    try {
      psk = await this.pskAccounts();
    } catch (err) {
      this.log.error({ err }, 'reading accounts for TLS-PSK failed; the shard starts without them');
    }
    if (this.stopping) return;
    const peers: (MessagePort | undefined)[] = new Array(this.shardCount).fill(undefined);
    for (let j = 0; j < this.shardCount; j++) {
      if (j === index) continue;
      const other = this.shards[j]!;
      const ch = new MessageChannel();
      peers[j] = ch.port1;
      const msg: PortMessage = { kind: 'peer-port', peer: index, port: ch.port2 };
      if (other.control) other.control.port.postMessage(msg, [ch.port2]);
    }
    // The PSK list is read before the channels above are made, so nothing awaits between making and spawning.
    this.spawn(index, peers, psk);
  }

  /** Posts what is queued on every shard's control link, one batch each. */
  private flushControls(): void {
    for (const s of this.shards) if (s.control?.ops.length) s.control.flush();
  }

  private flushScheduled = false;
  private readonly scheduledFlush = (): void => {
    this.flushScheduled = false;
    this.flushControls();
  };

  /** flushControls at the end of this turn (ops queued until then go in one batch each). */
  private flushLater(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(this.scheduledFlush);
  }

  private markSeen(entries: { accountId: number; id: string }[]): void {
    const now = Date.now();
    this.inOrder('recording last-seen failed', () => this.store.markSeen(entries, now));
  }

  /** Every account's topology as TOPOLOGY control ops, for a shard that starts. */
  private topologySnapshot(): unknown[] {
    const out: unknown[] = [];
    for (const [account, t] of this.topologies) {
      for (const c of changesOf(t)) out.push(OP.TOPOLOGY, account, ...encodeChange(c));
    }
    return out;
  }

  /** Sends control ops to every live shard. */
  private broadcast(ops: unknown[]): void {
    for (const s of this.shards) {
      if (!s.control) continue;
      for (const x of ops) s.control.ops.push(x);
      s.control.flush();
    }
  }

  /** Resolves when every live shard has applied everything sent to it before this call. */
  barrier(): Promise<void> {
    const seq = ++this.syncSeq;
    const pending = new Set<number>();
    this.shards.forEach((s, i) => {
      if (s.control) pending.add(i);
    });
    if (pending.size === 0) return Promise.resolve();
    this.broadcast([OP.SYNC, seq]);
    return new Promise((resolve) => this.syncWaits.push({ seq, pending, resolve }));
  }

  private synced(shard: number, seq: number): void {
    this.syncWaits = this.syncWaits.filter((w) => {
      if (w.seq <= seq) w.pending.delete(shard);
      if (w.pending.size > 0) return true;
      w.resolve();
      return false;
    });
  }

  /**
   * Tells every shard that an account's KEY or level changed, or that it was deleted; resolves once applied. In
   * cluster mode the other nodes are told too (`remote`: this call is applying another node's news).
   */
  async accountChanged(acct: AccountRecord, deleted = false, remote = false): Promise<void> {
    this.broadcast([OP.ACCOUNT_UPDATE, acct.id, deleted ? '' : acct.key, acct.level, acct.email]);
    if (deleted) {
      this.topologies.delete(acct.id);
      this.topologyVersions.delete(acct.id);
      this.broadcast([OP.TOPOLOGY_RESET, acct.id]);
    }
    if (this.cluster !== null && !remote) {
      await this.cluster.publish({
        kind: 'account',
        node: this.cluster.node,
        account: acct.id,
        email: acct.email,
        key: acct.key,
        level: acct.level,
        deleted,
      });
    }
    await this.barrier();
  }

  /** Cluster mode: another node's news. */
  onClusterEvent(ev: ClusterEvent): void {
    if (ev.kind === 'presence') {
      this.broadcast([OP.PRESENCE_REMOTE, ev.account, ev.id, ev.online ? 1 : 0]);
      return;
    }
    if (ev.kind === 'account') {
      const acct = { id: ev.account, email: ev.email, key: ev.key, level: ev.level, createdAt: 0 };
      void this.accountChanged(acct, ev.deleted, true);
      return;
    }
    // Topology: in this account's order (after any change this node is making).
    void this.serialTopology(ev.account, async () => {
      const at = this.topologyVersions.get(ev.account);
      if (at !== undefined && ev.version === at + 1) {
        const t = this.topologies.get(ev.account) ?? new Topology();
        try {
          for (const c of ev.changes) applyChange(t, c);
          this.topologies.set(ev.account, t);
          this.topologyVersions.set(ev.account, ev.version);
          const ops: unknown[] = [];
          for (const c of ev.changes) ops.push(OP.TOPOLOGY, ev.account, ...encodeChange(c));
          this.broadcast(ops);
          await this.barrier();
          this.notify(ev.account, 'topology');
          return;
        } catch (err) {
          this.log.warn({ err }, 'cluster: a topology change did not apply here; reloading the account');
        }
      }
      if (at === undefined || ev.version > at) await this.reloadTopology(ev.account, ev.version);
    }).catch((err: unknown) => this.log.error({ err }, 'cluster: applying a topology change failed'));
  }

  /** Cluster mode: this node joined the cluster; its shards learn the secret RAW streams across nodes carry. */
  joinCluster(cluster: Backplane): void {
    this.cluster = cluster;
    this.broadcast([OP.NODE_SECRET, cluster.secret]);
  }

  /** Cluster mode: pushes other nodes routed here, delivered (or held) by each account's owner shard, in order. */
  onRemoteDeliveries(batch: RemoteDelivery[]): void {
    const touched = new Set<PortLink>();
    for (const d of batch) {
      const link = this.shards[d.account % this.shardCount]?.control;
      if (!link) continue; // the owner shard is restarting: like a push to a device that just left
      if (d.ids !== undefined) link.ops.push(OP.API_PUSH, 0, d.account, d.data, d.ids.length, ...d.ids);
      else link.ops.push(OP.API_PUSH, 0, d.account, d.data, 1, d.id);
      touched.add(link);
    }
    for (const link of touched) link.flush();
  }

  /**
   * Cluster mode, after Redis came back: this node's IDs go into the directory again (a restarted Redis lost them),
   * and every account's topology may have moved on: reload them all.
   */
  resyncCluster(): void {
    const cluster = this.cluster;
    if (cluster === null) return;
    cluster.readSecret().then(
      (changed) => {
        if (changed) this.broadcast([OP.NODE_SECRET, cluster.secret]);
      },
      (err: unknown) => this.log.warn({ err }, 'cluster: reading the secret failed'),
    );
    for (const k of this.localIds.keys()) {
      const i = k.indexOf(':');
      const account = Number(k.slice(0, i));
      const id = k.slice(i + 1);
      // Claimed again, not just written: if another node gave the ID away while this one was cut off (a
      // partition), the other node's holder stays and this node's is disconnected (its will fires; it reconnects).
      cluster.claim(account, id).then(
        (ok) => {
          if (ok) return;
          this.log.warn({ account, id }, 'cluster: an ID was given to another node meanwhile; disconnecting it here');
          void this.kickDevice(account, id);
        },
        (err: unknown) => this.log.warn({ err }, 'cluster: reclaiming an ID failed'),
      );
    }
    this.resyncTopologies();
  }

  private resyncTopologies(): void {
    for (const account of [...this.topologies.keys()]) {
      void this.serialTopology(account, () => this.catchUpTopology(account)).catch((err: unknown) =>
        this.log.error({ err }, 'cluster: resynchronising a topology failed'),
      );
    }
    this.topologyVersions.clear(); // any account not loaded here reloads before its next change
  }

  /** Cluster mode: reloads an account's model if the stored topology is at another version than this node's. */
  private async catchUpTopology(account: number): Promise<void> {
    const version = (await this.cluster?.topologyVersion(account)) ?? 0;
    if (version !== this.topologyVersions.get(account)) await this.reloadTopology(account, version);
  }

  /** Replaces an account's model (and every shard's replica) with what the store holds. */
  private async reloadTopology(account: number, version: number): Promise<void> {
    const fresh = new Topology();
    for (const c of await this.store.loadTopology(account)) applyChange(fresh, c);
    this.topologies.set(account, fresh);
    this.topologyVersions.set(account, version);
    const ops: unknown[] = [OP.TOPOLOGY_RESET, account];
    for (const c of changesOf(fresh)) ops.push(OP.TOPOLOGY, account, ...encodeChange(c));
    this.broadcast(ops);
    await this.barrier();
    this.notify(account, 'topology');
  }

  /** An account's topology (read-only use; changes go through changeTopology). */
  topologyOf(accountId: number): Topology {
    return this.topologies.get(accountId) ?? new Topology();
  }

  /**
   * An account's topology with every change made so far on any node: in cluster mode an edit made on another node a
   * moment ago may not have reached this one yet. For checks made before a change (the operator API's answers name
   * the field at fault); the change itself validates again, under the account's lock.
   */
  async currentTopologyOf(accountId: number): Promise<Topology> {
    if (this.cluster !== null) await this.serialTopology(accountId, () => this.catchUpTopology(accountId));
    return this.topologyOf(accountId);
  }

  /**
   * Validates, applies, persists and replicates changes as one unit; resolves when every shard applied
   * them. Throws (TopologyFailure for an invalid change, or a store error) with nothing changed.
   */
  async changeTopology(acct: AccountRecord, changes: TopologyChange | readonly TopologyChange[]): Promise<void> {
    // One unit per account at a time: a later change validates against the state the earlier one left. In
    // cluster mode also one at a time across nodes (the account's lock), against the latest stored version.
    const cluster = this.cluster;
    if (cluster === null) {
      await this.serialTopology(acct.id, () => this.applyTopology(acct, changes));
      return;
    }
    await this.serialTopology(acct.id, () =>
      cluster.withLock(`topo:${acct.id}`, async () => {
        await this.catchUpTopology(acct.id);
        const list = await this.applyTopology(acct, changes);
        const next = await cluster.bumpTopologyVersion(acct.id);
        this.topologyVersions.set(acct.id, next);
        await cluster.publish({ kind: 'topology', node: cluster.node, account: acct.id, version: next, changes: list });
      }),
    );
  }

  /** Runs `fn` after every earlier topology unit of the account. */
  private serialTopology<T>(account: number, fn: () => Promise<T>): Promise<T> {
    const prev = this.topologyLocks.get(account) ?? Promise.resolve();
    const run = prev.then(fn);
    const tail = run.then(
      () => {},
      () => {},
    );
    this.topologyLocks.set(account, tail);
    void tail.then(() => {
      if (this.topologyLocks.get(account) === tail) this.topologyLocks.delete(account);
    });
    return run;
  }

  private async applyTopology(
    acct: AccountRecord,
    changes: TopologyChange | readonly TopologyChange[],
  ): Promise<TopologyChange[]> {
    const list = Array.isArray(changes) ? [...(changes as readonly TopologyChange[])] : [changes as TopologyChange];
    if (list.some((c) => c.op === 'node-add') && planValue(this.config.USER['1TREE'], acct.level) === 0) {
      throw new TopologyFailure('TREE_FORBIDDEN', "the account's plan does not allow a tree");
    }
    const t = this.topologies.get(acct.id) ?? new Topology();
    const limit = planValue(this.config.USER['2NODEPERTREE'], acct.level);
    try {
      for (const c of list) applyChange(t, c, limit);
      this.topologies.set(acct.id, t);
      await this.store.saveChanges(acct.id, list);
    } catch (err) {
      // Invalid or refused by the store: rebuild the in-memory model from what is persisted.
      const fresh = new Topology();
      for (const c of await this.store.loadTopology(acct.id)) applyChange(fresh, c);
      this.topologies.set(acct.id, fresh);
      throw err;
    }
    const ops: unknown[] = [];
    for (const c of list) ops.push(OP.TOPOLOGY, acct.id, ...encodeChange(c));
    this.broadcast(ops);
    await this.barrier();
    this.notify(acct.id, 'topology');
    return list;
  }

  /** Calls `fn` when a device of the account registers or leaves, or its topology changes. Returns the unsubscribe. */
  onAccountEvent(accountId: number, fn: (kind: AccountEvent) => void): () => void {
    let set = this.accountListeners.get(accountId);
    if (set === undefined) {
      set = new Set();
      this.accountListeners.set(accountId, set);
    }
    set.add(fn);
    return () => {
      set.delete(fn);
      if (set.size === 0) this.accountListeners.delete(accountId);
    };
  }

  private notify(accountId: number, kind: AccountEvent): void {
    const set = this.accountListeners.get(accountId);
    if (set === undefined) return;
    for (const fn of set) fn(kind);
  }

  /**
   * An operator's test push: PUSH:<data> to each ID, as the owner shard sees them. Offline IDs the account's
   * plan holds for (and that registered before) are held; the rest are counted offline.
   */
  operatorPush(accountId: number, ids: readonly string[], data: string): Promise<{ delivered: number; held: number }> {
    const owner = this.shards[accountId % this.shardCount]!;
    if (!owner.control) return Promise.resolve({ delivered: 0, held: 0 });
    const req = ++this.querySeq;
    const link = owner.control;
    return new Promise((resolve) => {
      this.pushQueries.set(req, (delivered, held) =>
        resolve({ delivered, held: held.filter((id) => this.isKnownDevice(accountId, id)).length }),
      );
      link.ops.push(OP.API_PUSH, req, accountId, data, ids.length, ...ids);
      link.flush();
    });
  }

  /** Per-device counters of an account's live connections, from every shard (one that does not answer in 1 s is left out). */
  accountStats(accountId: number): Promise<DeviceStats[]> {
    const req = ++this.querySeq;
    const out: DeviceStats[] = [];
    let pending = 0;
    for (const slot of this.shards) {
      if (!slot.control) continue;
      pending++;
      slot.control.ops.push(OP.ACCOUNT_STATS, req, accountId);
      slot.control.flush();
    }
    if (pending === 0) return Promise.resolve(out);
    return new Promise((resolve) => {
      const done = (): void => {
        this.statsWaits.delete(req);
        clearTimeout(timer);
        resolve(out);
      };
      const timer = setTimeout(done, 1000);
      this.statsWaits.set(req, (_shard, list) => {
        for (const d of list) out.push(d);
        if (--pending === 0) done();
      });
    });
  }

  /** Open device connections on each shard (the shared counters the shards keep). */
  openConnections(): number[] {
    const counters = new Int32Array(this.counters);
    return Array.from({ length: this.shardCount }, (_, i) => Atomics.load(counters, COUNTER_OPEN + i));
  }

  /** Shard workers up and listening. */
  readyShards(): number {
    return this.shards.filter((s) => s.ready).length;
  }

  /** Every live shard's counters (a shard that does not answer within a second is left out). */
  shardMetrics(): Promise<Map<string, number>[]> {
    const req = ++this.querySeq;
    const out: Map<string, number>[] = this.shards.map(() => new Map());
    let pending = 0;
    for (const s of this.shards) {
      if (!s.control) continue;
      pending++;
      s.control.ops.push(OP.METRICS_QUERY, req);
      s.control.flush();
    }
    if (pending === 0) return Promise.resolve(out);
    return new Promise((resolve) => {
      const done = (): void => {
        this.metricWaits.delete(req);
        clearTimeout(timer);
        resolve(out);
      };
      const timer = setTimeout(done, 1000);
      this.metricWaits.set(req, (shard, m) => {
        out[shard] = m;
        if (--pending === 0) done();
      });
    });
  }

  /** Live devices of an account, as the owner shard sees them. */
  devicesOnline(accountId: number): Promise<{ id: string; shard: number }[]> {
    const owner = this.shards[accountId % this.shardCount]!;
    if (!owner.control) return Promise.resolve([]);
    const req = ++this.querySeq;
    const link = owner.control;
    return new Promise((resolve) => {
      this.deviceQueries.set(req, resolve);
      link.ops.push(OP.DEVICES_QUERY, req, accountId);
      link.flush();
    });
  }

  /**
   * Disconnects the live holder of an ID (its will fires, watchers hear OFFLINE). False when the ID is not
   * online (or its owner shard is down).
   */
  kickDevice(accountId: number, id: string): Promise<boolean> {
    const owner = this.shards[accountId % this.shardCount]!;
    if (!owner.control) return Promise.resolve(false);
    const req = ++this.querySeq;
    const link = owner.control;
    return new Promise((resolve) => {
      this.kickQueries.set(req, resolve);
      link.ops.push(OP.KICK_ID, req, accountId, id);
      link.flush();
    });
  }

  /** Test hook: makes shard `index` throw, as a bug would. */
  crashShard(index: number): void {
    const slot = this.shards[index];
    const c = slot?.control;
    if (!slot || !c) return;
    slot.ready = false; // waitReady() now waits for the replacement
    c.ops.push(OP.CRASH);
    c.flush();
  }

  /** Resolves when shard `index` is up and listening again. */
  waitReady(): Promise<void> {
    return this.allReady();
  }

  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    if (this.purgeTimer) clearInterval(this.purgeTimer);
    if (this.reducerTimer) clearInterval(this.reducerTimer);
    await Promise.all(
      this.shards.map(async (slot, index) => {
        const worker = slot.worker;
        if (!worker) return;
        const stopped = new Promise<void>((resolve) => {
          this.stoppedWaiters.set(index, resolve);
          worker.once('exit', () => resolve());
        });
        if (slot.control) {
          slot.control.ops.push(OP.SHUTDOWN);
          slot.control.flush();
        }
        const timer = setTimeout(() => void worker.terminate(), 3000);
        await stopped;
        clearTimeout(timer);
        await worker.terminate();
      }),
    );
  }
}

/** A free TCP port on the host (the shards then all bind it with reusePort). */
function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen({ port: 0, host: host === '' ? undefined : host }, () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}
