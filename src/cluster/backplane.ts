// Cluster mode (issue 9): what the nodes of one cluster tell each other, through the Redis they share. No protocol
// of our own between nodes: Redis pub/sub carries small events (a topology change, an account change), and plain
// Redis keys carry the per-account topology version and the lock that orders topology changes cluster-wide.
//
// Topology changes: a node takes the account's lock (SET NX PX), checks the version against the one its model was
// built at (reloading from the store if another node moved it on), validates and stores the change, bumps the
// version and publishes the change with it, then releases the lock. A node that receives version v+1 while at v
// applies the change as it is; any other gap (a missed message, a Redis restart) reloads the account from the store.

import { hostname } from 'node:os';
import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { TopologyChange } from '../routing/changes.ts';

export type ClusterEvent =
  | { kind: 'topology'; node: string; account: number; version: number; changes: TopologyChange[] }
  | { kind: 'account'; node: string; account: number; email: string; key: string; level: number; deleted: boolean };

const LOCK_MS = 10_000;
const LOCK_WAIT_MS = 15_000;

/** Releases a lock only if it still holds our token. */
const UNLOCK = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`;

export class Backplane {
  readonly node: string;
  private readonly prefix: string;
  private readonly pub: Redis;
  private readonly sub: Redis;
  private readonly log: Logger;
  private closed = false;
  private lockSeq = 0;

  private constructor(node: string, prefix: string, pub: Redis, sub: Redis, log: Logger) {
    this.node = node;
    this.prefix = prefix;
    this.pub = pub;
    this.sub = sub;
    this.log = log;
  }

  /** Connects (one connection to publish and query, one to subscribe) and starts delivering events to `onEvent`. */
  static async open(
    url: string,
    opts: { prefix: string; node: string; devicePort: number; log: Logger },
    onEvent: (ev: ClusterEvent) => void,
    onResync: () => void,
  ): Promise<Backplane> {
    const node = opts.node || `${hostname()}:${opts.devicePort}`;
    const options = { lazyConnect: true, maxRetriesPerRequest: 2, connectTimeout: 2000, enableOfflineQueue: true };
    const pub = new Redis(url, { ...options, retryStrategy: (n: number) => Math.min(500, 50 * n) });
    const sub = new Redis(url, { ...options, retryStrategy: (n: number) => Math.min(500, 50 * n) });
    pub.on('error', () => {});
    sub.on('error', () => {});
    await Promise.all([pub.connect(), sub.connect()]);
    const bp = new Backplane(node, opts.prefix, pub, sub, opts.log);
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
    // After Redis comes back, events published meanwhile are lost: the owner of the callback reloads.
    let first = true;
    sub.on('ready', () => {
      if (first) {
        first = false;
        return;
      }
      opts.log.warn('cluster: Redis is back; resynchronising');
      onResync();
    });
    await sub.subscribe(channel);
    opts.log.info({ node }, 'cluster: joined');
    return bp;
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
      await this.pub.eval(UNLOCK, 1, key, token).catch((err: unknown) => {
        this.log.warn({ err }, 'cluster: releasing a lock failed (it expires by itself)');
      });
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.allSettled([this.sub.quit(), this.pub.quit()]);
  }
}
