// Library mode: the official clients at their natural API, doing the raw mode's workloads — nats (NATS), mqtt
// (Mosquitto and Aedes), ioredis (Redis), and P2Pcluster's own TypeScript client (clients/ts, issue 11). Publishers
// call publish() (P2Pcluster: push.rid() / push.friends(), one promise per message) once per message under the same
// credit window as raw mode; subscribers count message callbacks (P2Pcluster: `for await` over messages()).
//
// The third-party clients are loaded with computed specifiers and typed here by the little this file uses, so `tsc`
// stays clean on checkouts where bench/peers/node_modules is not installed; P2Pcluster's client is part of this
// repository and imported by path.

import { readFileSync } from 'node:fs';
import { P2PClient } from '../../clients/ts/src/index.ts';
import { PAYLOAD } from '../load.ts';
import {
  DRAIN_MS,
  type Driver,
  FAN_CHUNK,
  FAN_WINDOW,
  Flow,
  type FlowResult,
  keepConnections,
  openMany,
  P2P_CHUNK,
  P2P_WINDOW,
  type PingPong,
  Rounds,
  uniq,
  withConnections,
  withTimeout,
} from './flow.ts';
import type { System } from './procs.ts';

const CONNECT_MS = 10_000;
const payload = Buffer.from(PAYLOAD, 'latin1');

type Listener = (...args: never[]) => void;

interface NatsConnection {
  subscribe(subject: string, opts: { callback: (err: Error | null, msg: unknown) => void }): unknown;
  publish(subject: string, data?: Uint8Array): void;
  flush(): Promise<void>;
  close(): Promise<void>;
}
interface MqttClient {
  on(event: string, listener: Listener): unknown;
  subscribeAsync(topic: string, opts: { qos: 0 }): Promise<unknown>;
  publish(topic: string, message: Buffer, opts: { qos: 0 }): unknown;
  end(force?: boolean): unknown;
}
interface RedisClient {
  on(event: string, listener: Listener): unknown;
  connect(): Promise<void>;
  subscribe(channel: string): Promise<unknown>;
  publish(channel: string, message: Buffer): Promise<number>;
  disconnect(): void;
}

const load = (name: string): Promise<unknown> => import(name);

/** One client connection: subscribed to a topic when asked, able to publish unless it is subscribed (Redis). */
interface Conn {
  publish(topic: string): void;
  close(): void;
}
const close = (c: Conn): void => c.close();
const destroy = (c: P2PClient): void => c.destroy();
interface LibProtocol {
  connect(port: number, topic: string | null, onMessage: () => void, onError: (e: Error) => void): Promise<Conn>;
  pubOnSub: boolean;
}

const NATS: LibProtocol = {
  async connect(port, topic, onMessage, onError) {
    const { connect } = (await load('nats')) as { connect(o: object): Promise<NatsConnection> };
    const nc = await connect({ servers: `127.0.0.1:${port}`, reconnect: false });
    if (topic !== null) {
      nc.subscribe(topic, { callback: (err) => (err ? onError(err) : onMessage()) });
      await nc.flush();
    }
    return {
      publish: (t) => nc.publish(t, payload),
      close: () => void nc.close().catch(() => {}),
    };
  },
  pubOnSub: true,
};

const MQTT: LibProtocol = {
  async connect(port, topic, onMessage, onError) {
    const { connectAsync } = (await load('mqtt')) as { connectAsync(url: string, o: object): Promise<MqttClient> };
    const c = await connectAsync(`mqtt://127.0.0.1:${port}`, {
      protocolVersion: 4,
      clean: true,
      reconnectPeriod: 0,
      clientId: uniq('c'),
    });
    c.on('error', onError);
    if (topic !== null) {
      c.on('message', onMessage);
      await c.subscribeAsync(topic, { qos: 0 });
    }
    return {
      publish: (t) => c.publish(t, payload, { qos: 0 }),
      close: () => c.end(true),
    };
  },
  pubOnSub: true,
};

const REDIS: LibProtocol = {
  async connect(port, topic, onMessage, onError) {
    const { Redis } = (await load('ioredis')) as { Redis: new (o: object) => RedisClient };
    const r = new Redis({ host: '127.0.0.1', port, lazyConnect: true, retryStrategy: () => null });
    r.on('error', onError);
    try {
      await r.connect();
      if (topic !== null) {
        r.on('messageBuffer', onMessage);
        await r.subscribe(topic);
      }
    } catch (e) {
      r.disconnect();
      throw e;
    }
    return {
      publish: (t) => void r.publish(t, payload).catch(onError),
      close: () => r.disconnect(),
    };
  },
  pubOnSub: false,
};

class LibDriver implements Driver {
  private readonly proto: LibProtocol;
  private readonly port: number;

  constructor(proto: LibProtocol, port: number) {
    this.proto = proto;
    this.port = port;
  }

  private conn(topic: string | null, onMessage: () => void, onError: (e: Error) => void): Promise<Conn> {
    return withTimeout(this.proto.connect(this.port, topic, onMessage, onError), CONNECT_MS, 'connect');
  }

  private async flow(
    subscribers: number,
    messages: number,
    window: number,
    chunk: number,
    capMs: number,
    cpu: () => number,
  ): Promise<FlowResult> {
    const topic = uniq('t');
    let pub: Conn | null = null;
    const flow = new Flow({
      subscribers,
      messages,
      window,
      chunk,
      capMs,
      drainMs: DRAIN_MS,
      cpu,
      send: (n) => {
        for (let i = 0; i < n; i++) pub!.publish(topic);
        return true;
      },
    });
    const fail = (e: Error): void => flow.fail(e);
    return withConnections(close, async (keep) => {
      keep.all(await openMany(subscribers, 20, (i) => this.conn(topic, () => flow.deliver(i, 1), fail), close));
      pub = keep.one(await this.conn(null, () => {}, fail));
      return flow.run();
    });
  }

  p2p(messages: number, capMs: number, cpu: () => number): Promise<FlowResult> {
    return this.flow(1, messages, P2P_WINDOW, P2P_CHUNK, capMs, cpu);
  }

  fanout(messages: number, subscribers: number, capMs: number, cpu: () => number): Promise<FlowResult> {
    return this.flow(subscribers, messages, FAN_WINDOW, FAN_CHUNK, capMs, cpu);
  }

  async pingPong(): Promise<PingPong> {
    const ta = uniq('rtta');
    const tb = uniq('rttb');
    const r = new Rounds();
    const [run, closeAll] = await keepConnections(close, async (keep) => {
      const conn = async (topic: string | null, onMessage: () => void): Promise<Conn> =>
        keep.one(await this.conn(topic, onMessage, (e) => r.fail(e)));
      // A measures; B answers every message with one to A.
      let bOut: Conn | null = null;
      const aIn = await conn(ta, () => r.back());
      const bIn = await conn(tb, () => bOut!.publish(ta));
      const aOut = this.proto.pubOnSub ? aIn : await conn(null, () => {});
      bOut = this.proto.pubOnSub ? bIn : await conn(null, () => {});
      const start = (): void => aOut.publish(tb);
      return (n: number): Promise<number[]> => r.run(n, start);
    });
    return { run, close: closeAll };
  }

  async open(): Promise<() => void> {
    const c = await this.conn(
      uniq('idle'),
      () => {},
      () => {},
    );
    return () => c.close();
  }
}

/**
 * P2Pcluster through @p2pcluster/client: devices register IDs instead of subscribing to topics. Point-to-point is
 * `push.rid()` to the receiver's ID, fan-out `push.friends()` in a fresh account holding exactly the sender and its
 * receivers (as in raw mode), round trips `push.rid()` both ways; every reply is awaited through its promise and a
 * failure (or a group reply short of its total) fails the run.
 */
class P2PclusterLib implements Driver {
  private readonly port: number;
  private readonly key: string;
  private readonly newAccount: () => Promise<string>;

  constructor(port: number, key: string, newAccount: () => Promise<string>) {
    this.port = port;
    this.key = key;
    this.newAccount = newAccount;
  }

  private conn(key: string, id: string): Promise<P2PClient> {
    return withTimeout(P2PClient.connect({ port: this.port, key, id, reconnect: false }), CONNECT_MS, `register ${id}`);
  }

  /** Counts the messages of `c` into `count` until the client closes. */
  private consume(c: P2PClient, count: () => void, fail: (e: Error) => void): void {
    void (async () => {
      for await (const _ of c.messages()) count();
    })().catch(fail);
  }

  private async flow(
    sender: P2PClient,
    receivers: P2PClient[],
    push: () => Promise<unknown>,
    messages: number,
    window: number,
    chunk: number,
    capMs: number,
    cpu: () => number,
  ): Promise<FlowResult> {
    const fail = (e: Error): void => flow.fail(e);
    const flow = new Flow({
      subscribers: receivers.length,
      messages,
      window,
      chunk,
      capMs,
      drainMs: DRAIN_MS,
      cpu,
      send: (n) => {
        for (let i = 0; i < n; i++) push().catch(fail);
        return true;
      },
    });
    for (let i = 0; i < receivers.length; i++) this.consume(receivers[i]!, () => flow.deliver(i, 1), fail);
    sender.on('close', () => fail(new Error('the sender lost its connection')));
    return flow.run();
  }

  p2p(messages: number, capMs: number, cpu: () => number): Promise<FlowResult> {
    const rid = uniq('R');
    return withConnections(destroy, async (keep) => {
      const receiver = keep.one(await this.conn(this.key, rid));
      const sender = keep.one(await this.conn(this.key, uniq('S')));
      const push = () => sender.push.rid(rid, PAYLOAD);
      return this.flow(sender, [receiver], push, messages, P2P_WINDOW, P2P_CHUNK, capMs, cpu);
    });
  }

  async fanout(messages: number, subscribers: number, capMs: number, cpu: () => number): Promise<FlowResult> {
    // A fresh account holding exactly the sender and its receivers, so FRIENDS is exactly the receivers.
    const key = await this.newAccount();
    return withConnections(destroy, async (keep) => {
      const receivers = keep.all(await openMany(subscribers, 20, (i) => this.conn(key, `F${i}`), destroy));
      const sender = keep.one(await this.conn(key, 'FS'));
      const push = async (): Promise<void> => {
        const r = await sender.push.friends(PAYLOAD);
        if (r.delivered !== r.total) throw new Error(`FRIENDS reached ${r.delivered} of ${r.total}`);
      };
      return this.flow(sender, receivers, push, messages, FAN_WINDOW, FAN_CHUNK, capMs, cpu);
    });
  }

  async pingPong(): Promise<PingPong> {
    const ida = uniq('A');
    const idb = uniq('B');
    const r = new Rounds();
    const [run, close] = await keepConnections(destroy, async (keep) => {
      const a = keep.one(await this.conn(this.key, ida));
      const b = keep.one(await this.conn(this.key, idb));
      const onError = (e: Error): void => r.fail(e);
      // A measures; B answers every message with one to A.
      this.consume(b, () => void b.push.rid(ida, PAYLOAD).catch(onError), onError);
      this.consume(a, () => r.back(), onError);
      const start = (): void => void a.push.rid(idb, PAYLOAD).catch(onError);
      return (n: number): Promise<number[]> => r.run(n, start);
    });
    return { run, close };
  }

  async open(): Promise<() => void> {
    const c = await this.conn(this.key, uniq('I'));
    return () => c.destroy();
  }
}

const PEERS: Record<Exclude<System, 'P2Pcluster'>, LibProtocol> = { NATS, Redis: REDIS, Mosquitto: MQTT, Aedes: MQTT };

/** The library-mode driver of a system. */
export function libDriver(system: System, port: number, key: string, newAccount: () => Promise<string>): Driver {
  return system === 'P2Pcluster' ? new P2PclusterLib(port, key, newAccount) : new LibDriver(PEERS[system], port);
}

/** Versions of the client libraries, for the results header. */
export const LIBRARIES = ['nats', 'mqtt', 'ioredis'] as const;

/** The version of P2Pcluster's own client (clients/ts/package.json). */
export function clientVersion(): string {
  const url = new URL('../../clients/ts/package.json', import.meta.url);
  return (JSON.parse(readFileSync(url, 'utf8')) as { version: string }).version;
}
