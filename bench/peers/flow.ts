// The credit-based flow shared by every system and both client modes: one sender may be at most `window` messages
// ahead of its slowest subscriber, so no broker has a reason to drop anything; the run stops sending at the time cap,
// waits for what is in flight, and fails unless every subscriber received every message sent exactly once.

/** Credit windows: messages the publisher may be ahead of its slowest subscriber, and messages per write. */
export const P2P_WINDOW = 16384;
export const P2P_CHUNK = 512;
export const FAN_WINDOW = 512;
export const FAN_CHUNK = 128;
/** Grace after sending stopped for in-flight messages; anything missing after it is a loss. */
export const DRAIN_MS = 10_000;
/**
 * Round trips before the measured ones, and how long a run of round trips may take. Enough for a JIT runtime to
 * finish compiling its hot path: a fresh P2Pcluster (or Aedes) compiles it with TurboFan during its first ~9,000
 * round trips, jobs of milliseconds on V8's worker threads that take a core from the loader or the broker and show up
 * as round trips over 1 ms (docs/performance.md, "Round trips side by side"). Servers run warm; so do the
 * measurements, the same for every system.
 */
export const RTT_WARMUP = 10_000;
export const RTT_MS = 120_000;

/** One system in one client mode: the workloads, identical for every system. */
export interface Driver {
  /** 1 → 1, 64-byte payloads. */
  p2p(messages: number, capMs: number, cpu: () => number): Promise<FlowResult>;
  /** 1 → `subscribers`, 64-byte payloads. */
  fanout(messages: number, subscribers: number, capMs: number, cpu: () => number): Promise<FlowResult>;
  /** Opens two clients that bounce one message between them (see interleavedRoundTrips). */
  pingPong(): Promise<PingPong>;
  /** One idle connection, registered or subscribed, resolved once the broker confirmed it; returns its closer. */
  open(): Promise<() => void>;
}

let seq = 0;
/** A name unique in this process (upper case: P2Pcluster IDs are canonical in upper case). */
export const uniq = (prefix: string): string => `${prefix}${process.pid}X${++seq}`;

export interface FlowResult {
  /** Messages published. */
  sent: number;
  /** Deliveries counted at the subscribers (sent × subscribers). */
  delivered: number;
  seconds: number;
  /** Deliveries per second. */
  rate: number;
  /** True when the time cap stopped the sender before all messages were sent. */
  capped: boolean;
  /** Broker CPU used between the first send and the last delivery, in µs (NaN without a probe). */
  cpuMicros: number;
}

export interface FlowOptions {
  subscribers: number;
  messages: number;
  /** Messages the sender may be ahead of the slowest subscriber. */
  window: number;
  /** Messages per send() call. */
  chunk: number;
  /** Stop sending after this long; the rate is computed from what was delivered. */
  capMs: number;
  /** How long to wait for in-flight messages after sending stopped before the run counts as lossy. */
  drainMs: number;
  /** Publishes n messages; false when the transport is full (call resume() once it drained). */
  send: (n: number) => boolean;
  /** Broker CPU time so far, µs. */
  cpu?: () => number;
}

export class Flow {
  private readonly o: FlowOptions;
  private readonly got: number[];
  private total = 0;
  private sent = 0;
  private minSeen = 0;
  private recheckAt = 0;
  private stopped = false;
  private blocked = false;
  private done = false;
  private capped = false;
  private t0 = 0;
  private cpu0 = Number.NaN;
  private capTimer: NodeJS.Timeout | undefined;
  private drainTimer: NodeJS.Timeout | undefined;
  private resolve: (r: FlowResult) => void = () => {};
  private reject: (e: Error) => void = () => {};

  constructor(o: FlowOptions) {
    this.o = o;
    this.got = new Array<number>(o.subscribers).fill(0);
  }

  run(): Promise<FlowResult> {
    return new Promise((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
      this.cpu0 = this.o.cpu ? this.o.cpu() : Number.NaN;
      this.t0 = performance.now();
      this.capTimer = setTimeout(() => this.stop(), this.o.capMs);
      this.pump();
    });
  }

  /** Subscriber i counted n more messages. */
  deliver(i: number, n: number): void {
    if (this.done || n === 0) return;
    this.got[i]! += n;
    this.total += n;
    const expected = this.sent * this.o.subscribers;
    if (this.total > expected) {
      this.fail(new Error(`subscriber ${i} counted more messages than were sent (${this.got[i]} > ${this.sent})`));
    } else if (this.stopped) {
      if (this.total === expected) this.finish();
    } else if (!this.blocked) this.pump();
  }

  /** The sender's transport drained. */
  resume(): void {
    this.blocked = false;
    this.pump();
  }

  fail(e: Error): void {
    if (this.done) return;
    this.done = true;
    clearTimeout(this.capTimer);
    clearTimeout(this.drainTimer);
    this.reject(e);
  }

  /** True when the slowest subscriber has counted at least `need` messages (cheap unless it might be). */
  private slowestHas(need: number): boolean {
    if (need <= this.minSeen) return true;
    const subs = this.o.subscribers;
    if (subs === 1) {
      this.minSeen = this.got[0]!;
      return this.minSeen >= need;
    }
    // The average bounds the minimum from above; recompute the minimum only when it can have moved enough.
    if (this.total < need * subs || this.total < this.recheckAt) return false;
    let min = this.got[0]!;
    for (let i = 1; i < subs; i++) if (this.got[i]! < min) min = this.got[i]!;
    this.minSeen = min;
    if (min >= need) return true;
    this.recheckAt = this.total + (need - min);
    return false;
  }

  private pump(): void {
    const { messages, window, chunk } = this.o;
    while (!this.stopped && !this.blocked) {
      if (this.sent >= messages) {
        this.stop();
        return;
      }
      const n = Math.min(chunk, messages - this.sent);
      if (!this.slowestHas(this.sent + n - window)) return;
      this.sent += n;
      if (!this.o.send(n)) this.blocked = true;
    }
  }

  private stop(): void {
    if (this.stopped || this.done) return;
    this.stopped = true;
    this.capped = this.sent < this.o.messages;
    clearTimeout(this.capTimer);
    this.drainTimer = setTimeout(() => {
      const expected = this.sent * this.o.subscribers;
      const short = this.got.filter((g) => g < this.sent).length;
      this.fail(
        new Error(
          `lost ${(expected - this.total).toLocaleString('en-US')} of ${expected.toLocaleString('en-US')} deliveries ` +
            `(${short} of ${this.o.subscribers} subscribers short, ${this.o.drainMs / 1000} s after sending stopped)`,
        ),
      );
    }, this.o.drainMs);
    if (this.total === this.sent * this.o.subscribers) this.finish();
  }

  private finish(): void {
    if (this.done) return;
    const seconds = (performance.now() - this.t0) / 1000;
    const cpu = this.o.cpu ? this.o.cpu() - this.cpu0 : Number.NaN;
    for (let i = 0; i < this.got.length; i++) {
      if (this.got[i] !== this.sent) {
        this.fail(new Error(`subscriber ${i} counted ${this.got[i]} of ${this.sent}`));
        return;
      }
    }
    this.done = true;
    clearTimeout(this.capTimer);
    clearTimeout(this.drainTimer);
    this.resolve({
      sent: this.sent,
      delivered: this.total,
      seconds,
      rate: this.total / seconds,
      capped: this.capped,
      cpuMicros: cpu,
    });
  }
}

/**
 * Opens `count` connections with at most `parallel` attempts in flight. Stops starting new ones after the first
 * failure, and on failure closes every connection that did open before rethrowing.
 */
export async function openMany<T>(
  count: number,
  parallel: number,
  open: (i: number) => Promise<T>,
  close: (t: T) => void,
): Promise<T[]> {
  const out: T[] = new Array<T>(count);
  const opened: T[] = [];
  let next = 0;
  let error: unknown = null;
  await Promise.all(
    Array.from({ length: Math.min(parallel, count) }, async () => {
      while (next < count && error === null) {
        const i = next++;
        try {
          const t = await open(i);
          out[i] = t;
          opened.push(t);
        } catch (e) {
          error ??= e;
        }
      }
    }),
  );
  if (error !== null) {
    for (const t of opened) close(t);
    throw error;
  }
  return out;
}

/** What a workload keeps of the connections it opens: each is closed when it ends (see withConnections). */
export interface Kept<C> {
  one(c: C): C;
  all(cs: C[]): C[];
}

/** Runs `work`, then closes every connection it kept, however it ended. */
export async function withConnections<C, R>(close: (c: C) => void, work: (keep: Kept<C>) => Promise<R>): Promise<R> {
  const [r, closeAll] = await keepConnections(close, work);
  closeAll();
  return r;
}

/**
 * Runs `open` and returns what it made with a closer of every connection it kept; if it fails, they are closed at
 * once.
 */
export async function keepConnections<C, R>(
  close: (c: C) => void,
  open: (keep: Kept<C>) => Promise<R>,
): Promise<[R, () => void]> {
  const opened: C[] = [];
  const keep: Kept<C> = {
    one: (c) => {
      opened.push(c);
      return c;
    },
    all: (cs) => {
      opened.push(...cs);
      return cs;
    },
  };
  const closeAll = (): void => {
    for (const c of opened.splice(0)) close(c);
  };
  try {
    return [await open(keep), closeAll];
  } catch (e) {
    closeAll();
    throw e;
  }
}

/** Two connected clients bouncing one message: `run(n)` times n round trips in µs; `close` closes the clients. */
export interface PingPong {
  run(rounds: number): Promise<number[]>;
  close(): void;
}

/**
 * `rounds` round trips on each ping-pong after RTT_WARMUP unmeasured ones, taken `chunk` at a time in turn (the order
 * rotating by one each pass), so that every system meets the same minutes of this machine: a burst of the host's load
 * lands on all of them, not on whichever ran then. Returns the times of each ping-pong in µs.
 */
export async function interleavedRoundTrips(pings: PingPong[], rounds: number, chunk: number): Promise<number[][]> {
  for (const p of pings) await p.run(RTT_WARMUP);
  const out = pings.map((): number[] => []);
  for (let pass = 0, done = 0; done < rounds; pass++, done += chunk) {
    const n = Math.min(chunk, rounds - done);
    for (let k = 0; k < pings.length; k++) {
      const i = (k + pass) % pings.length;
      for (const x of await pings[i]!.run(n)) out[i]!.push(x);
    }
  }
  return out;
}

/**
 * Round trips with one message in flight, timed in µs: `run` starts one with `start`; the driver's receiving side
 * calls `back` when it has returned (the next one starts at once) and `fail` to end the run with an error.
 */
export class Rounds {
  back: () => void = () => {};
  fail: (e: Error) => void = () => {};

  run(n: number, start: () => void): Promise<number[]> {
    const times: number[] = [];
    const p = new Promise<number[]>((resolve, reject) => {
      let t0 = 0;
      const send = (): void => {
        t0 = performance.now();
        start();
      };
      this.back = () => {
        times.push((performance.now() - t0) * 1000);
        if (times.length >= n) resolve(times);
        else send();
      };
      this.fail = reject;
      send();
    });
    return withTimeout(p, RTT_MS, 'round trips').finally(() => {
      this.back = () => {};
      this.fail = () => {};
    });
  }
}

/** Rejects with a labelled error if p takes longer than ms. */
export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    t = setTimeout(() => reject(new Error(`${what}: no answer after ${ms / 1000} s`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(t));
}
