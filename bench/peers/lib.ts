// Library mode: the official clients at their natural API, doing the raw mode's workloads — nats (NATS), mqtt
// (Mosquitto and Aedes), ioredis (Redis). Publishers call publish() once per message under the same credit
// window as raw mode; subscribers count message callbacks. P2Pcluster's own TypeScript client does not exist yet
// (issue 11), so it has no library-mode driver.
//
// The clients are loaded with computed specifiers and typed here by the little this file uses, so `tsc` stays clean
// on checkouts where bench/peers/node_modules is not installed.

import { PAYLOAD } from '../load.ts';
import {
  DRAIN_MS,
  type Driver,
  FAN_CHUNK,
  FAN_WINDOW,
  Flow,
  type FlowResult,
  openMany,
  P2P_CHUNK,
  P2P_WINDOW,
  RTT_WARMUP,
  uniq,
  withTimeout,
} from './flow.ts';

const CONNECT_MS = 10_000;
const RTT_MS = 120_000;
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
    const subs = await openMany(
      subscribers,
      20,
      (i) => this.conn(topic, () => flow.deliver(i, 1), fail),
      (c) => c.close(),
    );
    try {
      pub = await this.conn(null, () => {}, fail);
      return await flow.run();
    } finally {
      pub?.close();
      for (const c of subs) c.close();
    }
  }

  p2p(messages: number, capMs: number, cpu: () => number): Promise<FlowResult> {
    return this.flow(1, messages, P2P_WINDOW, P2P_CHUNK, capMs, cpu);
  }

  fanout(messages: number, subscribers: number, capMs: number, cpu: () => number): Promise<FlowResult> {
    return this.flow(subscribers, messages, FAN_WINDOW, FAN_CHUNK, capMs, cpu);
  }

  async rtt(rounds: number): Promise<number[]> {
    const ta = uniq('rtta');
    const tb = uniq('rttb');
    const conns: Conn[] = [];
    // The handlers are bound to the current run of round trips.
    let atA: () => void = () => {};
    let atB: () => void = () => {};
    let failed: (e: Error) => void = () => {};
    const conn = async (topic: string | null, onMessage: () => void): Promise<Conn> => {
      const c = await this.conn(topic, onMessage, (e) => failed(e));
      conns.push(c);
      return c;
    };
    try {
      const aIn = await conn(ta, () => atA());
      const bIn = await conn(tb, () => atB());
      const aOut = this.proto.pubOnSub ? aIn : await conn(null, () => {});
      const bOut = this.proto.pubOnSub ? bIn : await conn(null, () => {});
      const go = (n: number): Promise<number[]> => {
        const times: number[] = [];
        const p = new Promise<number[]>((resolve, reject) => {
          let t0 = 0;
          const send = (): void => {
            t0 = performance.now();
            aOut.publish(tb);
          };
          atB = () => bOut.publish(ta);
          atA = () => {
            times.push((performance.now() - t0) * 1000);
            if (times.length >= n) resolve(times);
            else send();
          };
          failed = reject;
          send();
        });
        return withTimeout(p, RTT_MS, 'round trips');
      };
      await go(RTT_WARMUP);
      return await go(rounds);
    } finally {
      atA = () => {};
      atB = () => {};
      for (const c of conns) c.close();
    }
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

/** The library-mode driver of a system, or null where there is no client library to measure (P2Pcluster, issue 11). */
export function libDriver(
  system: 'P2Pcluster' | 'NATS' | 'Redis' | 'Mosquitto' | 'Aedes',
  port: number,
): Driver | null {
  switch (system) {
    case 'P2Pcluster':
      return null;
    case 'NATS':
      return new LibDriver(NATS, port);
    case 'Redis':
      return new LibDriver(REDIS, port);
    case 'Mosquitto':
    case 'Aedes':
      return new LibDriver(MQTT, port);
  }
}

/** Versions of the client libraries, for the results header. */
export const LIBRARIES = ['nats', 'mqtt', 'ioredis'] as const;
