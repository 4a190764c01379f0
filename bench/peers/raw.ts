// Raw mode (the headline): a lean pipelined client per protocol. Publishers write pre-encoded frames in batches;
// subscribers count bytes (every delivery of one run has the same length) or, for P2Pcluster, lines (bench/load.ts).
// NATS text protocol PUB/SUB, MQTT 3.1.1 CONNECT/SUBSCRIBE/PUBLISH QoS 0 encoded by hand, Redis RESP
// PUBLISH/SUBSCRIBE, P2Pcluster TCP:ID / TCP:PUSH.

import type { Socket } from 'node:net';
import { READ_SIZE, useSharedReads } from '../../src/shard/reads.ts';
import { countLines, openSocket, PAYLOAD, register } from '../load.ts';
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

const HANDSHAKE_MS = 10_000;
const destroy = (s: Socket): void => void s.destroy();

/** Sockets keep a no-op error listener for life: a broker stopping under an idle socket must not crash the loader. */
function guard(s: Socket): Socket {
  s.on('error', () => {});
  return s;
}

/** Writes `out` and collects replies until `done(acc)` says the handshake is complete (it throws on a refusal). */
function handshake(s: Socket, out: Buffer | string, done: (acc: Buffer) => boolean, what: string): Promise<Socket> {
  const p = new Promise<Socket>((resolve, reject) => {
    let acc: Buffer = Buffer.alloc(0);
    const cleanup = (): void => {
      s.off('data', onData);
      s.off('close', onClose);
    };
    const onData = (b: Buffer): void => {
      acc = acc.length === 0 ? b : Buffer.concat([acc, b]);
      try {
        if (done(acc)) {
          cleanup();
          resolve(s);
        }
      } catch (e) {
        cleanup();
        reject(e);
      }
    };
    const onClose = (): void => {
      cleanup();
      reject(new Error(`${what}: connection closed (${acc.toString('latin1').slice(0, 200)})`));
    };
    s.on('data', onData);
    s.once('close', onClose);
    s.write(out);
  });
  return withTimeout(p, HANDSHAKE_MS, what).catch((e: unknown) => {
    s.destroy();
    throw e;
  });
}

/** Compares what arrived with the exact expected reply. */
function exactly(expected: Buffer, what: string): (acc: Buffer) => boolean {
  return (acc) => {
    const n = Math.min(acc.length, expected.length);
    if (acc.length > expected.length || acc.subarray(0, n).compare(expected.subarray(0, n)) !== 0) {
      throw new Error(`${what}: unexpected reply ${JSON.stringify(acc.toString('latin1').slice(0, 200))}`);
    }
    return acc.length === expected.length;
  };
}

interface PubSubProtocol {
  /** A connection, subscribed to `topic` when given, resolved once the broker confirmed. */
  connect(port: number, topic: string | null): Promise<Socket>;
  /** False when a subscribed connection cannot publish (Redis), so publishers get their own. */
  pubOnSub: boolean;
  publishFrame(topic: string): Buffer;
  /** Counts the deliveries of `topic` arriving on subscriber socket s. */
  counter(topic: string, s: Socket, onCount: (n: number) => void, onError: (e: string) => void): Counter;
  /** An error in what the broker sent a publisher, or null. */
  replyError(b: Buffer): string | null;
}

const payload = Buffer.from(PAYLOAD, 'latin1');

interface Counter {
  onData: (b: Buffer) => void;
  /** Bytes of an unfinished frame; 0 once every delivery was counted whole. */
  rest: () => number;
}

/** Counts fixed-length deliveries on a byte stream (MQTT PUBLISH, Redis pub/sub message). */
function byteCounter(length: number, onCount: (n: number) => void): Counter {
  let rest = 0;
  return {
    onData: (b) => {
      rest += b.length;
      if (rest >= length) {
        const n = Math.floor(rest / length);
        rest -= n * length;
        onCount(n);
      }
    },
    rest: () => rest,
  };
}

/**
 * Counts fixed-length NATS MSG frames, answering the server's PINGs in between (nats-server sends every client a first
 * PING about 2 s after it connects, to measure its RTT). Skips whole frames: one branch per message, no parsing.
 */
function natsCounter(length: number, s: Socket, onCount: (n: number) => void, onError: (e: string) => void): Counter {
  let need = 0;
  let inMsg = false;
  let line = '';
  return {
    onData: (b) => {
      let i = 0;
      let n = 0;
      while (i < b.length) {
        if (need > 0) {
          const take = Math.min(need, b.length - i);
          i += take;
          need -= take;
          if (need === 0 && inMsg) n++;
        } else if (line === '' && b[i] === 0x4d) {
          inMsg = true;
          need = length;
        } else {
          inMsg = false;
          const lf = b.indexOf(10, i);
          if (lf < 0) {
            line += b.toString('latin1', i);
            break;
          }
          line += b.toString('latin1', i, lf + 1);
          i = lf + 1;
          if (line.startsWith('PING')) s.write('PONG\r\n');
          else if (line.startsWith('-ERR')) onError(line.trim());
          line = '';
        }
      }
      if (n > 0) onCount(n);
    },
    rest: () => need + line.length,
  };
}

// NATS text protocol: CONNECT (no +OK acks, no echo), SUB, then PING; the PONG confirms both were processed.
const NATS: PubSubProtocol = {
  async connect(port, topic) {
    const s = guard(await openSocket(port));
    let out = 'CONNECT {"verbose":false,"pedantic":false,"echo":false,"protocol":1}\r\n';
    if (topic !== null) out += `SUB ${topic} 1\r\n`;
    out += 'PING\r\n';
    return handshake(
      s,
      out,
      (acc) => {
        const t = acc.toString('latin1');
        if (t.includes('-ERR')) throw new Error(`NATS: ${t.trim()}`);
        return t.endsWith('PONG\r\n');
      },
      'NATS connect',
    );
  },
  pubOnSub: true,
  publishFrame: (topic) => Buffer.from(`PUB ${topic} ${payload.length}\r\n${PAYLOAD}\r\n`, 'latin1'),
  counter: (topic, s, onCount, onError) =>
    natsCounter(Buffer.byteLength(`MSG ${topic} 1 ${payload.length}\r\n${PAYLOAD}\r\n`, 'latin1'), s, onCount, onError),
  replyError: (b) => (b.indexOf('-ERR') >= 0 ? b.toString('latin1') : null),
};

// MQTT 3.1.1 by hand.
function remainingLength(n: number): number[] {
  const out: number[] = [];
  do {
    let d = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) d |= 128;
    out.push(d);
  } while (n > 0);
  return out;
}
function mqttString(s: string): Buffer {
  const b = Buffer.alloc(2 + Buffer.byteLength(s, 'latin1'));
  b.writeUInt16BE(b.length - 2, 0);
  b.write(s, 2, 'latin1');
  return b;
}
function mqttPacket(first: number, ...body: Buffer[]): Buffer {
  const b = Buffer.concat(body);
  return Buffer.concat([Buffer.from([first, ...remainingLength(b.length)]), b]);
}
// Keepalive 600 s: mosquitto refuses 0 from 3.1.1 clients under its default max_keepalive, and no run lasts that long.
const mqttConnect = (clientId: string): Buffer =>
  mqttPacket(0x10, Buffer.from([0, 4, 0x4d, 0x51, 0x54, 0x54, 4, 0x02, 600 >> 8, 600 & 255]), mqttString(clientId));
const mqttSubscribe = (topic: string): Buffer =>
  mqttPacket(0x82, Buffer.from([0, 1]), mqttString(topic), Buffer.from([0]));
const mqttPublish = (topic: string): Buffer => mqttPacket(0x30, mqttString(topic), payload);
const CONNACK = Buffer.from([0x20, 2, 0, 0]);
const SUBACK = Buffer.from([0x90, 3, 0, 1, 0]);

const MQTT: PubSubProtocol = {
  async connect(port, topic) {
    const s = guard(await openSocket(port));
    // CONNECT and SUBSCRIBE in one write: a pipelined client does not wait for CONNACK.
    const out = topic === null ? mqttConnect(uniq('c')) : Buffer.concat([mqttConnect(uniq('c')), mqttSubscribe(topic)]);
    const expected = topic === null ? CONNACK : Buffer.concat([CONNACK, SUBACK]);
    return handshake(s, out, exactly(expected, 'MQTT connect'), 'MQTT connect');
  },
  pubOnSub: true,
  publishFrame: mqttPublish,
  counter: (topic, _s, onCount) => byteCounter(mqttPublish(topic).length, onCount),
  replyError: (b) => `unexpected bytes to an MQTT publisher: ${b.toString('hex').slice(0, 64)}`,
};

// Redis RESP2: a subscribed connection may only (un)subscribe, so publishers have their own connection.
const resp = (...args: string[]): string =>
  `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a, 'latin1')}\r\n${a}\r\n`).join('')}`;

const REDIS: PubSubProtocol = {
  async connect(port, topic) {
    const s = guard(await openSocket(port));
    if (topic === null) return handshake(s, resp('PING'), exactly(Buffer.from('+PONG\r\n'), 'Redis'), 'Redis PING');
    const expected = Buffer.from(`${resp('subscribe', topic).replace('*2', '*3')}:1\r\n`, 'latin1');
    return handshake(s, resp('SUBSCRIBE', topic), exactly(expected, 'Redis SUBSCRIBE'), 'Redis SUBSCRIBE');
  },
  pubOnSub: false,
  publishFrame: (topic) => Buffer.from(resp('PUBLISH', topic, PAYLOAD), 'latin1'),
  counter: (topic, _s, onCount) => byteCounter(Buffer.byteLength(resp('message', topic, PAYLOAD), 'latin1'), onCount),
  replyError: (b) => (b.indexOf('-') >= 0 ? b.toString('latin1') : null),
};

/** Runs a Flow: `send` writes pre-encoded batches on `pub`; `attach` wires each subscriber's counting. */
async function rawFlow(
  pub: Socket,
  subs: Socket[],
  frame: Buffer,
  messages: number,
  window: number,
  chunk: number,
  capMs: number,
  cpu: () => number,
  replyError: (b: Buffer) => string | null,
  attach: (flow: Flow, s: Socket, i: number) => () => number,
): Promise<FlowResult> {
  const batch = Buffer.concat(Array.from({ length: chunk }, () => frame));
  const flow = new Flow({
    subscribers: subs.length,
    messages,
    window,
    chunk,
    capMs,
    drainMs: DRAIN_MS,
    cpu,
    send: (n) => pub.write(n === chunk ? batch : batch.subarray(0, n * frame.length)),
  });
  pub.on('drain', () => flow.resume());
  pub.on('data', (b: Buffer) => {
    const e = replyError(b);
    if (e !== null) flow.fail(new Error(`publisher got: ${e.slice(0, 200)}`));
  });
  pub.once('close', () => flow.fail(new Error('the broker closed the publisher connection')));
  const leftovers = subs.map((s, i) => {
    s.once('close', () => flow.fail(new Error(`the broker closed subscriber ${i}`)));
    return attach(flow, s, i);
  });
  const r = await flow.run();
  const bad = leftovers.findIndex((rest) => rest() !== 0);
  if (bad >= 0) throw new Error(`subscriber ${bad} has ${leftovers[bad]!()} bytes left over after its last message`);
  return r;
}

/** Ping-pong over counted deliveries: A publishes to B (topic tb), B publishes the same payload back (topic ta). */
function countedPingPong(
  proto: Pick<PubSubProtocol, 'publishFrame' | 'counter' | 'replyError'>,
  aOut: Socket,
  aIn: Socket,
  bOut: Socket,
  bIn: Socket,
  ta: string,
  tb: string,
  rounds: number,
): Promise<number[]> {
  const toB = proto.publishFrame(tb);
  const toA = proto.publishFrame(ta);
  const r = new Rounds();
  const listeners: Array<[Socket, string, () => void]> = [];
  const on = (s: Socket, ev: string, fn: () => void): void => {
    s.on(ev, fn);
    listeners.push([s, ev, fn]);
  };
  const reading: Socket[] = [];
  const onBytes = (s: Socket, fn: (b: Buffer) => void): void => {
    readers.set(s, fn);
    reading.push(s);
  };
  const onError = (e: string): void => r.fail(new Error(e));
  const atB = proto.counter(
    tb,
    bIn,
    (n) => {
      for (let i = 0; i < n; i++) bOut.write(toA);
    },
    onError,
  );
  const atA = proto.counter(ta, aIn, () => r.back(), onError);
  onBytes(aIn, atA.onData);
  onBytes(bIn, atB.onData);
  for (const out of new Set([aOut, bOut])) {
    if (out !== aIn && out !== bIn) {
      onBytes(out, (b: Buffer) => {
        const e = proto.replyError(b);
        if (e !== null) r.fail(new Error(`publisher got: ${e.slice(0, 200)}`));
      });
    }
  }
  for (const s of new Set([aOut, aIn, bOut, bIn]))
    on(s, 'close', () => r.fail(new Error('the broker closed a socket')));
  return r
    .run(rounds, () => aOut.write(toB))
    .finally(() => {
      for (const [s, ev, fn] of listeners) s.off(ev, fn);
      for (const s of reading) readers.delete(s);
    });
}

/**
 * Round trips are one small read per message: the loader's own per-read cost (in Node's default mode a Buffer with
 * malloc'd memory, a Readable push and a nextTick each, and the collections they bring) would weigh on the systems
 * whose protocol has more reads per round trip (a reply to every publish). Their sockets read into this one buffer
 * instead (src/shard/reads.ts, as the server does) and hand each read's bytes to the handler in `readers`.
 */
const READ_BUFFER = Buffer.allocUnsafe(READ_SIZE);
const readers = new WeakMap<Socket, (b: Buffer) => void>();
function dispatchRead(this: Socket, n: number, buf: Buffer): void {
  readers.get(this)?.(buf.subarray(0, n));
}

/** Switches a connected socket to the loader's shared read buffer (or, where Node cannot, to 'data' events). */
function leanReads(s: Socket): Socket {
  if (!useSharedReads(s, READ_BUFFER, dispatchRead)) s.on('data', (b: Buffer) => readers.get(s)?.(b));
  return s;
}

class PubSubRaw implements Driver {
  private readonly proto: PubSubProtocol;
  private readonly port: number;

  constructor(proto: PubSubProtocol, port: number) {
    this.proto = proto;
    this.port = port;
  }

  private flow(
    pub: Socket,
    subs: Socket[],
    topic: string,
    messages: number,
    window: number,
    chunk: number,
    capMs: number,
    cpu: () => number,
  ): Promise<FlowResult> {
    return rawFlow(
      pub,
      subs,
      this.proto.publishFrame(topic),
      messages,
      window,
      chunk,
      capMs,
      cpu,
      this.proto.replyError,
      (flow, s, i) => {
        const c = this.proto.counter(
          topic,
          s,
          (n) => flow.deliver(i, n),
          (e) => flow.fail(new Error(`subscriber ${i} got: ${e}`)),
        );
        s.on('data', c.onData);
        return c.rest;
      },
    );
  }

  p2p(messages: number, capMs: number, cpu: () => number): Promise<FlowResult> {
    const topic = uniq('p2p');
    return withConnections(destroy, async (keep) => {
      const sub = keep.one(await this.proto.connect(this.port, topic));
      const pub = keep.one(await this.proto.connect(this.port, null));
      return this.flow(pub, [sub], topic, messages, P2P_WINDOW, P2P_CHUNK, capMs, cpu);
    });
  }

  fanout(messages: number, subscribers: number, capMs: number, cpu: () => number): Promise<FlowResult> {
    const topic = uniq('fan');
    return withConnections(destroy, async (keep) => {
      const subs = keep.all(await openMany(subscribers, 20, () => this.proto.connect(this.port, topic), destroy));
      const pub = keep.one(await this.proto.connect(this.port, null));
      return this.flow(pub, subs, topic, messages, FAN_WINDOW, FAN_CHUNK, capMs, cpu);
    });
  }

  async pingPong(): Promise<PingPong> {
    const ta = uniq('rtta');
    const tb = uniq('rttb');
    const [run, close] = await keepConnections(destroy, async (keep) => {
      const conn = async (topic: string | null): Promise<Socket> =>
        leanReads(keep.one(await this.proto.connect(this.port, topic)));
      const aIn = await conn(ta);
      const bIn = await conn(tb);
      const aOut = this.proto.pubOnSub ? aIn : await conn(null);
      const bOut = this.proto.pubOnSub ? bIn : await conn(null);
      return (n: number): Promise<number[]> => countedPingPong(this.proto, aOut, aIn, bOut, bIn, ta, tb, n);
    });
    return { run, close };
  }

  async open(): Promise<() => void> {
    const s = await this.proto.connect(this.port, uniq('idle'));
    return () => s.destroy();
  }
}

/** A P2Pcluster `[FAIL:...]` reply in what a device received (its first 200 characters), or null. */
function p2pFail(b: Buffer): string | null {
  return b.indexOf('[FAIL') >= 0 ? b.toString('latin1').slice(0, 200) : null;
}

/**
 * Counts the `PUSH:` lines of a P2Pcluster device's stream on the bytes (the replies, `[OK:DATA_SENT]`, start with
 * `[`): one branch per line start, no strings, as lean as the other systems' counters. Reports `[FAIL` replies.
 */
function pushCounter(onCount: (n: number) => void, onError: (e: string) => void): (b: Buffer) => void {
  let lineStart = true;
  return (b) => {
    const e = p2pFail(b);
    if (e !== null) onError(e);
    let n = 0;
    let i = 0;
    while (i < b.length) {
      if (lineStart && b[i] === 0x50) n++;
      const lf = b.indexOf(10, i);
      if (lf < 0) {
        lineStart = false;
        break;
      }
      i = lf + 1;
      lineStart = true;
    }
    if (n > 0) onCount(n);
  };
}

/** P2Pcluster as countedPingPong sees a protocol: frames push to an ID, deliveries are PUSH lines counted on the bytes. */
function p2pRoundTrips(key: string): Pick<PubSubProtocol, 'publishFrame' | 'counter' | 'replyError'> {
  return {
    publishFrame: (id) => Buffer.from(`TCP:PUSH:${key}:RID:${id}:${PAYLOAD}\r\n`, 'latin1'),
    counter: (_id, _s, onCount, onError) => ({ onData: pushCounter(onCount, onError), rest: () => 0 }),
    replyError: p2pFail,
  };
}

class P2PclusterRaw implements Driver {
  private readonly port: number;
  private readonly key: string;
  private readonly newAccount: () => Promise<string>;

  constructor(port: number, key: string, newAccount: () => Promise<string>) {
    this.port = port;
    this.key = key;
    this.newAccount = newAccount;
  }

  private async reg(key: string, id: string): Promise<Socket> {
    return guard(await withTimeout(register(this.port, key, id), HANDSHAKE_MS, `register ${id}`));
  }

  private flow(
    sender: Socket,
    receivers: Socket[],
    line: string,
    messages: number,
    window: number,
    chunk: number,
    capMs: number,
    cpu: () => number,
  ): Promise<FlowResult> {
    return rawFlow(
      sender,
      receivers,
      Buffer.from(line, 'latin1'),
      messages,
      window,
      chunk,
      capMs,
      cpu,
      p2pFail,
      (flow, s, i) => {
        s.on('data', (b: Buffer) => flow.deliver(i, countLines(b)));
        return () => 0;
      },
    );
  }

  p2p(messages: number, capMs: number, cpu: () => number): Promise<FlowResult> {
    const rid = uniq('R');
    return withConnections(destroy, async (keep) => {
      const receiver = keep.one(await this.reg(this.key, rid));
      const sender = keep.one(await this.reg(this.key, uniq('S')));
      const line = `TCP:PUSH:${this.key}:RID:${rid}:${PAYLOAD}\r\n`;
      return this.flow(sender, [receiver], line, messages, P2P_WINDOW, P2P_CHUNK, capMs, cpu);
    });
  }

  async fanout(messages: number, subscribers: number, capMs: number, cpu: () => number): Promise<FlowResult> {
    // A fresh account holding exactly the sender and its receivers, so FRIENDS is exactly the receivers.
    const key = await this.newAccount();
    return withConnections(destroy, async (keep) => {
      const receivers = keep.all(await openMany(subscribers, 20, (i) => this.reg(key, `F${i}`), destroy));
      const sender = keep.one(await this.reg(key, 'FS'));
      const line = `TCP:PUSH:${key}:FRIENDS:${PAYLOAD}\r\n`;
      return this.flow(sender, receivers, line, messages, FAN_WINDOW, FAN_CHUNK, capMs, cpu);
    });
  }

  async pingPong(): Promise<PingPong> {
    const ida = uniq('A');
    const idb = uniq('B');
    const [run, close] = await keepConnections(destroy, async (keep) => {
      const a = leanReads(keep.one(await this.reg(this.key, ida)));
      const b = leanReads(keep.one(await this.reg(this.key, idb)));
      // A device reads its deliveries and its replies on one socket: it is both the In and the Out side.
      return (n: number): Promise<number[]> => countedPingPong(p2pRoundTrips(this.key), a, a, b, b, ida, idb, n);
    });
    return { run, close };
  }

  async open(): Promise<() => void> {
    const s = await this.reg(this.key, uniq('I'));
    return () => s.destroy();
  }
}

const PEERS: Record<Exclude<System, 'P2Pcluster'>, PubSubProtocol> = {
  NATS,
  Redis: REDIS,
  Mosquitto: MQTT,
  Aedes: MQTT,
};

/** The raw-mode driver of a system. */
export function rawDriver(system: System, port: number, key: string, newAccount: () => Promise<string>): Driver {
  return system === 'P2Pcluster' ? new P2PclusterRaw(port, key, newAccount) : new PubSubRaw(PEERS[system], port);
}
