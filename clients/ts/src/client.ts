// P2PClient: one socket per client, pipelined commands matched to replies in order, pushes and presence events
// separated out of the same byte stream, automatic reconnect with re-registration, secure sessions, RAW as a Duplex.
//
// Wire model (PROTOCOL.md): every command is one line and gets exactly one reply line, in order; replies start with
// `[`. Interleaved with them the server sends `PUSH:<DATA>` (§5), `PRESENCE:<ID>:<ONLINE|OFFLINE>` (§5a),
// `[SYNC:dd.MM.yyyy_HH:mm:ss]` to idle connections (§2) and `PUSHRAW:` when a peer links a RAW stream to us (§7).

import { EventEmitter } from 'node:events';
import * as net from 'node:net';
import * as tls from 'node:tls';
import { P2PError, PERMANENT_CODES } from './errors.ts';
import { Channel, ChannelIterator, Deque } from './queue.ts';
import { RawStream } from './raw.ts';
import {
  expectOk,
  type GroupResult,
  type LegacyTime,
  okBody,
  type PushResult,
  parseAlias,
  parseGroup,
  parseLegacyTime,
  parsePush,
  parseRetdataAll,
  parseStatus,
  parseTimeAs,
  type Status,
  type TimeFormat,
} from './replies.ts';
import {
  activateLine,
  clientNonce,
  dstcpField,
  dstcpKey,
  hstcpMac,
  openSession,
  type Part,
  type SecureMode,
  type Session,
} from './secure.ts';

/** A payload: text (sent in the client's `encoding`) or bytes. CR and LF cannot be carried (they end a line). */
export type Payload = string | Uint8Array;

/** A group, as WATCH and WILL name it (§5a): `RID:<ID>`, `FRIENDS`, ..., `RO:<ROUTER>`, `ALIAS:<NAME>`. */
export type Target =
  | `RID:${string}`
  | 'FRIENDS'
  | 'CHILDS'
  | 'ALLCHILDS'
  | 'PARENT'
  | `RO:${string}`
  | `ALIAS:${string}`;

export interface PresenceEvent {
  id: string;
  online: boolean;
}

/** A received push (`PUSH:<DATA>`). */
export class Message {
  /** The payload bytes exactly as received. */
  readonly data: Buffer;
  private readonly enc: BufferEncoding;

  constructor(data: Buffer, enc: BufferEncoding) {
    this.data = data;
    this.enc = enc;
  }

  /** The payload decoded with the client's encoding. */
  get text(): string {
    return this.data.toString(this.enc);
  }
}

export interface ReconnectOptions {
  /** First delay after a lost connection (default 100 ms); doubles (`factor`) up to `maxDelayMs`. */
  initialDelayMs?: number;
  /** Default 5000 ms. */
  maxDelayMs?: number;
  /** Default 2. */
  factor?: number;
  /** Random ± fraction of each delay (default 0.2). */
  jitter?: number;
  /** Attempts in a row before giving up and closing the client (default: unlimited). */
  maxAttempts?: number;
}

export interface KeepaliveOptions {
  /** Send a `TCP:GID` when nothing was sent for this long (default 60000 ms; 0 = never). */
  intervalMs?: number;
  /** A connection that owes a reply and received nothing for this long is dropped (default 30000 ms). */
  timeoutMs?: number;
}

export interface ConnectOptions {
  host?: string;
  port: number;
  /** The account KEY (32 hex characters). */
  key: string;
  /** The device ID to register (re-registered after every reconnect). */
  id: string;
  /** Secure session (§9); needs `uid`. HSTCP is the one to use where TLS is not available. */
  secure?: SecureMode;
  /** The account e-mail (UID), for `secure` and TLS-PSK. */
  uid?: string;
  /** Connect over TLS with these options (`true`: defaults). See tlsPsk() for TLS-PSK. */
  tls?: tls.ConnectionOptions | true;
  /** Automatic reconnect (default on); `false` closes the client when the connection is lost. */
  reconnect?: ReconnectOptions | false;
  /** Encoding of string payloads and of Message.text (default 'utf8'; the server relays bytes). */
  encoding?: BufferEncoding;
  /** Connect plus handshake (activation, ID) deadline (default 10000 ms). */
  connectTimeoutMs?: number;
  keepalive?: KeepaliveOptions | false;
  /** Commands written and not yet answered (default 8192); more wait in the queue. */
  maxInFlight?: number;
  /** Commands waiting to be written (default 100000); past it a command fails with QUEUE_FULL. */
  maxQueued?: number;
  /** Received messages buffered for messages() before the socket stops being read (default 4096). */
  messageHighWater?: number;
  /**
   * Bytes of buffered messages past which reading stops even while replies are owed (default 16 MiB). Below it the
   * client keeps reading while it waits for replies, so awaiting a command inside a `for await` over messages()
   * cannot deadlock.
   */
  maxBufferedBytes?: number;
  /** Bytes each side of a RAW stream buffers (default 1 MiB). */
  rawHighWaterMark?: number;
}

export interface RawOptions {
  /**
   * Wait until the peer has linked back (`PUSHRAW:` arrived) before resolving: both directions are then up, and
   * nothing the peer sends can be mistaken for our own `[OK:LINK_SYNC]`. Both sides of a full-duplex channel should
   * use it (default false).
   */
  duplex?: boolean;
  /** With `duplex`: how long to wait for the peer (default 30000 ms). */
  timeoutMs?: number;
}

export interface ClientEvents {
  /** Registered and ready (after connect and after each reconnect). */
  connect: [{ reconnect: boolean; id: string | null }];
  /** The connection was lost; commands in flight were rejected with CONNECTION_LOST. */
  disconnect: [P2PError];
  reconnecting: [{ attempt: number; delayMs: number }];
  presence: [PresenceEvent];
  /** A `[SYNC:...]` line (server local time, `dd.MM.yyyy_HH:mm:ss`). */
  sync: [string];
  /** A peer linked a RAW stream to this connection. */
  rawIncoming: [RawStream];
  /** A line that answers nothing and is no push (e.g. `[FAIL:SERVER_FULL]` before the server closes). */
  unsolicited: [string];
  /** Problems that belong to no command (re-arming a watch failed, reconnecting gave up). Only if listened to. */
  error: [Error];
  close: [Error | undefined];
}

type State = 'connecting' | 'handshake' | 'ready' | 'reconnecting' | 'closed';

/** Nothing is written after a barrier until its reply came (ID, REMID, RAW change what later lines mean). */
const F_BARRIER = 1;
/** Sent by the client itself (pings, the goodbye REMID): allowed while closing. */
const F_INTERNAL = 2;
const F_RAW = 4;
const F_REG = 8;
const F_UNREG = 16;

/** Socket paused because the consumers of messages()/presence() lag, or the RAW reader lags. */
const P_BACKLOG = 1;
const P_RAW = 2;

/** FAIL codes the server answers before it checks the KEY field: an HSTCP sequence number was not used. */
const SEQ_UNUSED = new Set([
  'INVALID_KEY',
  'NOID',
  'INVALID_CMD',
  'INVALID_FORMAT',
  'LINE_TOO_LONG',
  'UNKNOWN_COMMAND',
]);

const ID_RE = /^[A-Za-z0-9_.@-]+$/;
const TARGET_RE = /^(?:(?:RID|RO|ALIAS):[A-Za-z0-9_.@-]+|FRIENDS|CHILDS|ALLCHILDS|PARENT)$/;
const KEY_RE = /^[0-9A-Fa-f]{32}$/;
const DATA_SENT = Buffer.from('[OK:DATA_SENT]', 'latin1');
/** Longest line the client buffers while looking for its end (a broken server must not grow memory). */
const MAX_PARTIAL = 16 << 20;

interface Cmd {
  /** TCP sub-command ('' for a literal line). */
  sub: string;
  /** What follows the KEY field (without its colon), or null when nothing does. */
  rest: string | null;
  /** Payload bytes after `rest`. */
  tail: Uint8Array | null;
  /** A literal line (secure-session activation), sent as is. */
  line: string | null;
  flags: number;
  parse: (line: string) => unknown;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  /** HSTCP: the sequence number this command used (0 = none) and the epoch it was computed in. */
  seq: number;
  epoch: number;
  /** When it was written. */
  at: number;
}

interface Waiter {
  resolve: (s: RawStream) => void;
  reject: (e: Error) => void;
  /** Survives reconnects (acceptRaw); otherwise rejected when the connection ends (raw duplex). */
  sticky: boolean;
}

const noop = (): void => {};
const parseId = (line: string): string => okBody(line, 'ID');

function badArgument(what: string): Promise<never> {
  return Promise.reject(new P2PError('BAD_ARGUMENT', what));
}

function hasLineBreak(data: Payload): boolean {
  if (typeof data === 'string') return data.indexOf('\n') >= 0 || data.indexOf('\r') >= 0;
  return data.indexOf(10) >= 0 || data.indexOf(13) >= 0;
}

export class P2PClient extends EventEmitter<ClientEvents> {
  // ---------------------------------------------------------------- configuration
  private readonly host: string;
  private readonly port: number;
  private readonly key: string;
  private readonly secure: SecureMode | null;
  private readonly uid: string;
  private readonly tlsOptions: tls.ConnectionOptions | null;
  private readonly reconnectOpts: Required<ReconnectOptions> | null;
  readonly encoding: BufferEncoding;
  private readonly utf8: boolean;
  /** The last ID/name that passed validation (pushes to one target check it once). */
  private validName = '';
  private readonly connectTimeoutMs: number;
  private readonly pingIntervalMs: number;
  private readonly replyTimeoutMs: number;
  private readonly maxInFlight: number;
  private readonly maxQueued: number;
  private readonly highWater: number;
  private readonly maxBufferedBytes: number;
  private readonly rawHighWaterMark: number;

  // ---------------------------------------------------------------- connection state
  private state: State = 'connecting';
  private socket: net.Socket | null = null;
  /** A socket still connecting (not attached yet). */
  private connecting: net.Socket | null = null;
  private session: Session | null = null;
  /** The ID to register (null after REMID). */
  private myId: string | null;
  /** The server holds our ID on this connection. */
  private registered = false;
  private readonly watches = new Set<Target>();
  private willState: { target: Target; data: Payload } | null = null;
  private everReady = false;
  private closing = false;
  private closingPromise: Promise<void> | null = null;
  private attempts = 0;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private watchdog: NodeJS.Timeout | null = null;
  private lastRx = 0;
  private lastTx = 0;

  // ---------------------------------------------------------------- commands
  /** Commands waiting to be written; the handshake's own commands go first through hsQueue. */
  private readonly queue = new Deque<Cmd>();
  private readonly hsQueue = new Deque<Cmd>();
  private readonly inflight = new Deque<Cmd>(64);
  private barrierOut = false;
  private writeBlocked = false;
  private flushScheduled = false;
  private readonly flushBound = (): void => this.flush();

  // ---------------------------------------------------------------- input
  private partial: Buffer | null = null;
  private pauses = 0;
  private readonly msgs: Channel<Message>;
  private readonly presenceChans = new Set<Channel<PresenceEvent>>();

  // ---------------------------------------------------------------- RAW
  private rawStream: RawStream | null = null;
  /** `[OK:LINK_SYNC]` came: our outgoing bytes are stream data. */
  private rawOut = false;
  /** `PUSHRAW:` came: incoming bytes are stream data (after the replies still owed). */
  private inRaw = false;
  private readonly rawWaiters: Waiter[] = [];

  /** The PUSH targets (§5). */
  readonly push: {
    /** One device: 'SENT', or 'HELD' when it is offline and the plan holds pushes. */
    rid(id: string, data: Payload): Promise<PushResult>;
    /** Siblings in the tree (all roots and untreed devices are friends of each other). */
    friends(data: Payload): Promise<GroupResult>;
    childs(data: Payload): Promise<GroupResult>;
    allChilds(data: Payload): Promise<GroupResult>;
    parent(data: Payload): Promise<PushResult>;
    /** Every member of mesh router `router` but this device. */
    ro(router: string, data: Payload): Promise<GroupResult>;
    /** As rid() when the alias points at one device, a group result when at several. */
    alias(name: string, data: Payload): Promise<PushResult | GroupResult>;
  };

  private constructor(o: ConnectOptions) {
    super();
    if (!Number.isInteger(o.port) || o.port <= 0 || o.port > 65535) throw new TypeError('port must be 1..65535');
    if (typeof o.key !== 'string' || !KEY_RE.test(o.key)) throw new TypeError('key must be 32 hex characters');
    if (typeof o.id !== 'string' || !ID_RE.test(o.id)) throw new TypeError('id must be characters of A-Z 0-9 _ - . @');
    if (o.secure !== undefined && !['STCP', 'DSTCP', 'HSTCP'].includes(o.secure)) {
      throw new TypeError('secure must be STCP, DSTCP or HSTCP');
    }
    if (o.secure !== undefined && (o.uid === undefined || o.uid === '' || /[:\r\n]/.test(o.uid))) {
      throw new TypeError('a secure session needs uid (the account e-mail)');
    }
    this.host = o.host ?? '127.0.0.1';
    this.port = o.port;
    this.key = o.key.toUpperCase();
    this.myId = o.id.toUpperCase();
    this.secure = o.secure ?? null;
    this.uid = o.uid ?? '';
    this.tlsOptions = o.tls === undefined ? null : o.tls === true ? {} : o.tls;
    this.reconnectOpts =
      o.reconnect === false
        ? null
        : {
            initialDelayMs: o.reconnect?.initialDelayMs ?? 100,
            maxDelayMs: o.reconnect?.maxDelayMs ?? 5000,
            factor: o.reconnect?.factor ?? 2,
            jitter: o.reconnect?.jitter ?? 0.2,
            maxAttempts: o.reconnect?.maxAttempts ?? Number.POSITIVE_INFINITY,
          };
    this.encoding = o.encoding ?? 'utf8';
    this.utf8 = this.encoding === 'utf8' || this.encoding === 'utf-8';
    this.connectTimeoutMs = o.connectTimeoutMs ?? 10_000;
    this.pingIntervalMs = o.keepalive === false ? 0 : (o.keepalive?.intervalMs ?? 60_000);
    this.replyTimeoutMs = o.keepalive === false ? 0 : (o.keepalive?.timeoutMs ?? 30_000);
    this.maxInFlight = Math.max(1, o.maxInFlight ?? 8192);
    this.maxQueued = Math.max(1, o.maxQueued ?? 100_000);
    this.highWater = Math.max(1, o.messageHighWater ?? 4096);
    this.maxBufferedBytes = Math.max(1024, o.maxBufferedBytes ?? 16 << 20);
    this.rawHighWaterMark = o.rawHighWaterMark ?? 1 << 20;
    this.msgs = new Channel<Message>(() => {
      if (this.pauses & P_BACKLOG) this.checkBacklog();
    });
    const to = <T>(prefix: string, data: Payload, parse: (l: string) => T): Promise<T> => {
      if (hasLineBreak(data)) return badArgument('a payload cannot contain CR or LF');
      return typeof data === 'string'
        ? this.send('PUSH', prefix + data, null, parse)
        : this.send('PUSH', prefix, data, parse);
    };
    const valid = (name: string): boolean => {
      if (name === this.validName) return true;
      if (!ID_RE.test(name)) return false;
      this.validName = name;
      return true;
    };
    this.push = {
      rid: (id, data) => (valid(id) ? to(`RID:${id}:`, data, parsePush) : badId(id)),
      friends: (data) => to('FRIENDS:', data, parseGroup),
      childs: (data) => to('CHILDS:', data, parseGroup),
      allChilds: (data) => to('ALLCHILDS:', data, parseGroup),
      parent: (data) => to('PARENT:', data, parsePush),
      ro: (router, data) => (valid(router) ? to(`RO:${router}:`, data, parseGroup) : badId(router)),
      alias: (name, data) => (valid(name) ? to(`ALIAS:${name}:`, data, parseAlias) : badId(name)),
    };
  }

  /** Connects, opens the secure session if asked, registers the ID; resolves once the server confirmed it. */
  static async connect(opts: ConnectOptions): Promise<P2PClient> {
    const c = new P2PClient(opts);
    try {
      await c.connectOnce();
    } catch (e) {
      c.finalize(e as Error);
      throw e;
    }
    c.everReady = true;
    c.startWatchdog();
    c.emit('connect', { reconnect: false, id: c.myId });
    return c;
  }

  // ---------------------------------------------------------------- public state

  /** The registered ID (canonical, upper case), or null after remid(). */
  get id(): string | null {
    return this.myId;
  }

  /** True while a connection is up and registered. */
  get connected(): boolean {
    return this.state === 'ready';
  }

  get closed(): boolean {
    return this.state === 'closed';
  }

  /** Counters for monitoring and tests. */
  stats(): { inFlight: number; queued: number; bufferedMessages: number; bufferedBytes: number; paused: boolean } {
    return {
      inFlight: this.inflight.length,
      queued: this.queue.length,
      bufferedMessages: this.msgs.length,
      bufferedBytes: this.msgs.bytes,
      paused: this.pauses !== 0,
    };
  }

  // ---------------------------------------------------------------- commands (§4, §5a, §6)

  /** `TCP:GID`: the ID this connection holds. */
  gid(): Promise<string> {
    return this.send('GID', null, null, parseId);
  }

  /** `TCP:ID`: registers an ID on this connection (after remid()); it is re-registered after reconnects. */
  async register(id: string): Promise<string> {
    if (!ID_RE.test(id)) return badId(id);
    return this.send('ID', id, null, parseId, F_BARRIER | F_REG);
  }

  /** `TCP:REMID`: gives the ID up (no will fires, watches end); the connection stays open. */
  async remid(): Promise<void> {
    await this.send('REMID', null, null, expectOk('NODEREMOVED'), F_BARRIER | F_UNREG);
  }

  /** `TCP:TIME`: the server's time at an offset (`+05:30`) or IANA zone; optional extension formats. */
  time(offset: string): Promise<LegacyTime>;
  time(offset: string, format: 'EPOCH' | 'EPOCHMS'): Promise<number>;
  time(offset: string, format: 'ISO' | 'RFC2822'): Promise<string>;
  time(offset: string, format?: TimeFormat): Promise<LegacyTime | string | number> {
    if (hasLineBreak(offset)) return badArgument('bad offset');
    if (format === undefined) return this.send('TIME', offset, null, parseLegacyTime);
    return this.send('TIME', `${offset}:${format}`, null, parseTimeAs(format));
  }

  /** `TCP:STATUS`: online, or offline with the last time seen; REM_ID for an ID never seen. */
  status(id: string): Promise<Status> {
    if (!ID_RE.test(id)) return badId(id);
    return this.send('STATUS', id, null, parseStatus);
  }

  /** `TCP:WATCH`: presence events of the group from now on (re-armed after reconnects). */
  async watch(target: Target): Promise<void> {
    if (!TARGET_RE.test(target)) return badArgument(`bad watch target ${target}`);
    await this.send('WATCH', target, null, expectOk('WATCHING'));
    this.watches.add(target);
  }

  async unwatch(target: Target): Promise<void> {
    if (!TARGET_RE.test(target)) return badArgument(`bad watch target ${target}`);
    await this.send('UNWATCH', target, null, expectOk('UNWATCHED'));
    this.watches.delete(target);
  }

  /** `TCP:WILL`: what the server pushes to `target` for us when this connection ends without REMID. */
  async will(target: Target, data: Payload): Promise<void> {
    if (!TARGET_RE.test(target)) return badArgument(`bad will target ${target}`);
    if (hasLineBreak(data)) return badArgument('a payload cannot contain CR or LF');
    await this.sendWill(target, data, false);
    this.willState = { target, data };
  }

  async clearWill(): Promise<void> {
    await this.send('WILL', 'CLEAR', null, expectOk('WILL_CLEARED'));
    this.willState = null;
  }

  /** `TCP:EMAIL`: resolves once the server queued the mail durably. */
  async email(to: string, subject: string, body: string): Promise<void> {
    if (/[:\r\n]/.test(to) || /[:\r\n]/.test(subject) || hasLineBreak(body)) {
      return badArgument('e-mail fields cannot contain CR or LF, nor ":" in the address and subject');
    }
    await this.send('EMAIL', `${to}:${subject}:${body}`, null, expectOk('MAIL_SENT'));
  }

  /** `TCP:SMS` (extension): resolves once queued for the gateway. */
  async sms(number: string, text: string): Promise<void> {
    if (/[:\r\n]/.test(number) || hasLineBreak(text)) return badArgument('bad SMS number or text');
    await this.send('SMS', `${number}:${text}`, null, expectOk('SMS_SENT'));
  }

  /** `TCP:RETDATA:<n>`: the n-th oldest (1-based) of the payloads this connection pushed recently. */
  async retdata(n: number): Promise<string> {
    if (!Number.isInteger(n) || n < 1) return badArgument('n must be a positive integer (retdataAll() for all)');
    const body = await this.send('RETDATA', String(n), null, (l) => okBody(l, 'RETDATA'));
    return this.decode(body);
  }

  /** `TCP:RETDATA:0`: all of them, oldest first. */
  async retdataAll(): Promise<string[]> {
    const all = await this.send('RETDATA', '0', null, parseRetdataAll);
    return all.map((s) => this.decode(s));
  }

  /** A GID round trip, in milliseconds. */
  async ping(): Promise<number> {
    const t0 = performance.now();
    await this.gid();
    return performance.now() - t0;
  }

  // ---------------------------------------------------------------- received data

  /**
   * Received pushes, in order. Messages are buffered from connect on (bounded: past `messageHighWater` the socket is
   * no longer read until they are consumed). Ends when the client closes. Several loops share one stream.
   */
  messages(): AsyncIterableIterator<Message> {
    return new ChannelIterator(this.msgs);
  }

  /** Presence events of the watched groups from now on (also the 'presence' event). */
  presence(): AsyncIterableIterator<PresenceEvent> {
    const ch: Channel<PresenceEvent> = new Channel<PresenceEvent>(() => {
      if (this.pauses & P_BACKLOG) this.checkBacklog();
    });
    if (this.state === 'closed') ch.end();
    else this.presenceChans.add(ch);
    return new ChannelIterator(ch, () => {
      this.presenceChans.delete(ch);
      ch.end();
      if (this.pauses & P_BACKLOG) this.checkBacklog();
    });
  }

  // ---------------------------------------------------------------- RAW (§7)

  /**
   * `TCP:PUSH:RAW:<id>`: links this connection to `id`; resolves with the Duplex after `[OK:LINK_SYNC]`. From then on
   * the connection carries the stream: commands fail with RAW_ACTIVE until the stream ends, which ends the
   * connection (the protocol ends a channel only by disconnecting); with reconnect on, the client then reconnects
   * and registers again. The readable side carries what a peer streams to us (after `PUSHRAW:`).
   */
  async raw(id: string, opts: RawOptions = {}): Promise<RawStream> {
    if (!ID_RE.test(id)) return badId(id);
    if (this.rawOut) throw new P2PError('RAW_ACTIVE', 'this connection already streams to a peer');
    await this.send('PUSH', `RAW:${id}`, null, expectOk('LINK_SYNC'), F_BARRIER | F_RAW);
    const rs = this.rawStream!;
    if (opts.duplex && !rs.incoming) {
      const ms = opts.timeoutMs ?? 30_000;
      await new Promise<RawStream>((resolve, reject) => {
        const t = setTimeout(() => {
          const i = this.rawWaiters.indexOf(w);
          if (i >= 0) this.rawWaiters.splice(i, 1);
          reject(new P2PError('TIMEOUT', `${id} did not link back within ${ms} ms`));
          rs.destroy();
        }, ms);
        const w: Waiter = {
          resolve: (s) => {
            clearTimeout(t);
            resolve(s);
          },
          reject: (e) => {
            clearTimeout(t);
            reject(e);
          },
          sticky: false,
        };
        this.rawWaiters.push(w);
      });
    }
    return rs;
  }

  /**
   * Resolves with the RAW stream once a peer links to this device (`PUSHRAW:`), at once if one already did. Its
   * readable side is the incoming stream; call raw(peer) to also write back.
   */
  acceptRaw(): Promise<RawStream> {
    if (this.rawStream?.incoming) return Promise.resolve(this.rawStream);
    if (this.state === 'closed') return Promise.reject(new P2PError('CLOSED', 'the client is closed'));
    return new Promise((resolve, reject) => this.rawWaiters.push({ resolve, reject, sticky: true }));
  }

  // ---------------------------------------------------------------- closing

  /**
   * Polite close: waits for the replies owed, sends `TCP:REMID` (so no will fires and the ID is free at once), ends
   * the connection. Received messages still buffered can be read; the iterators end after them.
   */
  close(): Promise<void> {
    if (this.state === 'closed') return Promise.resolve();
    if (this.closingPromise !== null) return this.closingPromise;
    this.closing = true;
    if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer);
    this.closingPromise = (async () => {
      if (this.state === 'ready' && this.socket !== null && !this.rawOut && !this.inRaw) {
        // The last reply comes after every earlier one: REMID when registered, else a GID if anything is owed.
        const last = this.registered
          ? this.send('REMID', null, null, expectOk('NODEREMOVED'), F_BARRIER | F_UNREG | F_INTERNAL)
          : this.queue.length + this.inflight.length > 0
            ? this.send('GID', null, null, parseId, F_INTERNAL)
            : null;
        if (last !== null) await Promise.race([last.catch(noop), sleep(5000)]);
      }
      const sock = this.socket;
      if (sock !== null) {
        const gone = new Promise<void>((r) => sock.once('close', () => r()));
        sock.end();
        const t = setTimeout(() => sock.destroy(), 2000);
        await gone;
        clearTimeout(t);
      }
      this.finalize(undefined);
    })();
    return this.closingPromise;
  }

  /** Abrupt close: the socket is destroyed (the server fires the will, if one is set). */
  destroy(err?: Error): void {
    if (this.state === 'closed') return;
    this.closing = true;
    if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer);
    const sock = this.socket;
    if (sock !== null) sock.destroy();
    this.finalize(err);
  }

  // ================================================================ internals: writing

  private send<T>(
    sub: string,
    rest: string | null,
    tail: Uint8Array | null,
    parse: (line: string) => T,
    flags = 0,
  ): Promise<T> {
    if (this.state === 'closed' || (this.closing && !(flags & F_INTERNAL))) {
      return Promise.reject(new P2PError('CLOSED', 'the client is closed'));
    }
    if (this.rawOut || (this.inRaw && !(flags & F_RAW))) {
      return Promise.reject(new P2PError('RAW_ACTIVE', 'a RAW stream owns this connection'));
    }
    if (this.queue.length >= this.maxQueued) {
      return Promise.reject(new P2PError('QUEUE_FULL', `more than ${this.maxQueued} commands are waiting`));
    }
    return new Promise<T>((resolve, reject) => {
      this.queue.push({
        sub,
        rest,
        tail,
        line: null,
        flags,
        parse,
        resolve: resolve as (v: unknown) => void,
        reject,
        seq: 0,
        epoch: 0,
        at: 0,
      });
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        setImmediate(this.flushBound);
      }
    });
  }

  /** A command of the handshake: written before anything queued by the user. */
  private hs<T>(sub: string, rest: string | null, tail: Uint8Array | null, parse: (l: string) => T, flags = 0) {
    return this.hsLine(null, sub, rest, tail, parse, flags);
  }

  private hsLine<T>(
    line: string | null,
    sub: string,
    rest: string | null,
    tail: Uint8Array | null,
    parse: (l: string) => T,
    flags = 0,
  ): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.hsQueue.push({
        sub,
        rest,
        tail,
        line,
        flags: flags | F_INTERNAL,
        parse,
        resolve: resolve as (v: unknown) => void,
        reject,
        seq: 0,
        epoch: 0,
        at: 0,
      });
      this.scheduleFlush();
    });
  }

  private sendWill(target: Target, data: Payload, handshake: boolean): Promise<unknown> {
    const parse = expectOk('WILL_SET');
    const text = typeof data === 'string';
    const rest = text ? `${target}:${data}` : `${target}:`;
    const tail = text ? null : data;
    return handshake ? this.hs('WILL', rest, tail, parse) : this.send('WILL', rest, tail, parse);
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(this.flushBound);
  }

  /** Writes what may be written now, as one socket write (pipelining: many commands, one syscall). */
  private flush(): void {
    this.flushScheduled = false;
    const sock = this.socket;
    if (sock === null || this.writeBlocked || this.rawOut) return;
    const q = this.state === 'ready' ? this.queue : this.state === 'handshake' ? this.hsQueue : null;
    if (q === null) return;
    const enc = this.encoding;
    const inflight = this.inflight;
    const max = this.maxInFlight;
    let str = '';
    let parts: (string | Uint8Array)[] | null = null;
    const now = Date.now();
    while (q.length > 0 && !this.barrierOut && inflight.length < max) {
      const cmd = q.peek()!;
      if (cmd.flags & F_BARRIER && inflight.length > 0) break;
      q.shift();
      if (this.inRaw && !(cmd.flags & F_RAW)) {
        cmd.reject(new P2PError('RAW_ACTIVE', 'a RAW stream owns this connection'));
        continue;
      }
      cmd.at = now;
      if (cmd.line !== null) str += `${cmd.line}\r\n`;
      else {
        const key = this.session === null ? this.key : this.keyField(cmd);
        str += cmd.rest === null ? `TCP:${cmd.sub}:${key}` : `TCP:${cmd.sub}:${key}:${cmd.rest}`;
        if (cmd.tail !== null) {
          parts ??= [];
          parts.push(str, cmd.tail);
          str = '';
        }
        str += '\r\n';
      }
      inflight.push(cmd);
      if (cmd.flags & F_BARRIER) this.barrierOut = true;
    }
    if (str === '' && parts === null) return;
    this.lastTx = now;
    let ok = true;
    // ASCII text (the usual case) is written as latin1: the same bytes, and a plain copy instead of a UTF-8 encode.
    if (parts === null)
      ok = sock.write(str, this.utf8 && Buffer.byteLength(str, 'utf8') === str.length ? 'latin1' : enc);
    else {
      parts.push(str);
      sock.cork();
      for (const p of parts) {
        if (typeof p === 'string') {
          if (p !== '') ok = sock.write(p, enc);
        } else ok = sock.write(p);
      }
      sock.uncork();
    }
    if (!ok) {
      this.writeBlocked = true;
      sock.once('drain', () => {
        this.writeBlocked = false;
        this.flush();
      });
    }
    if (this.pauses & P_BACKLOG) this.checkBacklog();
  }

  /** The KEY field under a secure session (§9). */
  private keyField(cmd: Cmd): string {
    const s = this.session!;
    const enc = this.encoding;
    switch (s.mode) {
      case 'STCP':
        return s.skey;
      case 'DSTCP': {
        let rest: Uint8Array | null = null;
        if (cmd.rest !== null) {
          const head = Buffer.from(cmd.rest, enc);
          rest = cmd.tail === null ? head : Buffer.concat([head, cmd.tail]);
        }
        return dstcpKey(this.key, s.rnd, dstcpField(rest, this.registered));
      }
      case 'HSTCP': {
        const line: Part[] = [`TCP:${cmd.sub}:`];
        if (cmd.rest !== null) line.push(`:${cmd.rest}`);
        if (cmd.tail !== null) line.push(cmd.tail);
        const n = s.seq;
        // The server checks the MAC (and advances) unless it answers NOID first: before ID, only ID is checked.
        if (this.registered || cmd.sub === 'ID') {
          cmd.seq = n;
          cmd.epoch = s.epoch;
          s.seq++;
        }
        return hstcpMac(this.key, s.rnd, n, line, enc);
      }
    }
  }

  // ================================================================ internals: reading

  private onData(sock: net.Socket, chunk: Buffer): void {
    if (sock !== this.socket) return;
    this.lastRx = Date.now();
    if (this.inRaw && this.inflight.length === 0) {
      this.rawIn(chunk);
      return;
    }
    let buf = chunk;
    if (this.partial !== null) {
      buf = Buffer.concat([this.partial, chunk]);
      this.partial = null;
    }
    const n = buf.length;
    let pos = 0;
    while (pos < n) {
      const lf = buf.indexOf(10, pos);
      if (lf < 0) break;
      const start = pos;
      const end = lf > start && buf[lf - 1] === 13 ? lf - 1 : lf;
      pos = lf + 1;
      if (end > start) this.onLine(buf, start, end);
      if (sock !== this.socket) return;
      if (this.inRaw && this.inflight.length === 0) {
        // §7: everything after PUSHRAW: (and after the replies still owed) is the peer's stream.
        if (pos < n) this.rawIn(buf.subarray(pos));
        return;
      }
    }
    if (pos < n) {
      if (n - pos > MAX_PARTIAL) {
        sock.destroy(new P2PError('PROTOCOL', 'the server sent an endless line'));
        return;
      }
      this.partial = Buffer.from(buf.subarray(pos));
    }
  }

  private onLine(buf: Buffer, s: number, e: number): void {
    const c = buf[s];
    // PUSH:<DATA> and PUSHRAW: by bytes (the hot path allocates only the payload copy).
    if (c === 0x50 && e - s >= 5 && buf[s + 1] === 0x55 && buf[s + 2] === 0x53 && buf[s + 3] === 0x48) {
      if (buf[s + 4] === 0x3a) {
        this.onMessage(Buffer.from(buf.subarray(s + 5, e)));
        return;
      }
      if (e - s === 8 && buf.toString('latin1', s, e) === 'PUSHRAW:') {
        this.onPushRaw();
        return;
      }
    }
    if (c === 0x5b && e - s === 14 && buf.compare(DATA_SENT, 0, 14, s, e) === 0) {
      this.onReply('[OK:DATA_SENT]'); // the hot reply, without decoding it
      return;
    }
    const line = buf.toString('latin1', s, e);
    if (c === 0x5b) {
      if (line.startsWith('[SYNC:')) this.onSync(line);
      else this.onReply(line);
      return;
    }
    if (line.startsWith('PRESENCE:')) {
      const i = line.lastIndexOf(':');
      const state = line.slice(i + 1);
      if (i > 9 && (state === 'ONLINE' || state === 'OFFLINE')) {
        this.onPresence({ id: line.slice(9, i), online: state === 'ONLINE' });
        return;
      }
    }
    this.emit('unsolicited', line);
  }

  private onMessage(data: Buffer): void {
    const msgs = this.msgs;
    msgs.put(new Message(data, this.encoding), data.length + 64);
    if (msgs.length >= this.highWater || msgs.bytes >= this.maxBufferedBytes) this.checkBacklog();
  }

  private onPresence(ev: PresenceEvent): void {
    this.emit('presence', ev);
    let over = false;
    for (const ch of this.presenceChans) {
      ch.put(ev, 0);
      if (ch.length >= this.highWater) over = true;
    }
    if (over) this.checkBacklog();
  }

  private onSync(line: string): void {
    this.emit('sync', line.slice(6, -1));
    // §2: a connection silent for two ticks counts as dead and its ID can be taken over: answer with a GID.
    if (this.pingIntervalMs > 0 && this.state === 'ready' && !this.rawOut && !this.inRaw && this.registered) {
      this.send('GID', null, null, parseId, F_INTERNAL).catch(noop);
    }
  }

  private onReply(line: string): void {
    const cmd = this.inflight.shift();
    if (cmd === undefined) {
      this.onUnsolicited(line);
      return;
    }
    if (cmd.flags & F_BARRIER) this.barrierOut = false;
    if (line.startsWith('[FAIL:')) {
      const code = line.endsWith(']') ? line.slice(6, -1) : line.slice(6);
      const s = this.session;
      if (s !== null && cmd.seq !== 0 && cmd.epoch === s.epoch && SEQ_UNUSED.has(code)) {
        // The server did not use this sequence number: the commands written after it carry wrong MACs and fail
        // too; the next ones start again from here.
        s.seq = cmd.seq;
        s.epoch++;
      }
      const what = describe(cmd);
      cmd.reject(new P2PError(code, `${what}: ${line}`, { server: true, command: what }));
    } else {
      let v: unknown;
      try {
        v = cmd.parse(line);
      } catch (e) {
        cmd.reject(e as Error);
        v = undefined;
        this.afterReply();
        return;
      }
      if (cmd.flags & F_REG) {
        this.registered = true;
        this.myId = v as string;
      } else if (cmd.flags & F_UNREG) {
        this.registered = false;
        this.myId = null;
        this.watches.clear();
        this.willState = null;
      } else if (cmd.flags & F_RAW) this.onLinked(cmd.rest!.slice(4));
      cmd.resolve(v);
    }
    this.afterReply();
  }

  private afterReply(): void {
    if (this.queue.length > 0 || this.hsQueue.length > 0) this.scheduleFlush();
    if (this.inflight.length === 0 && (this.msgs.length >= this.highWater || this.pauses & P_BACKLOG)) {
      this.checkBacklog();
    }
  }

  private onUnsolicited(line: string): void {
    if (this.rawOut && line === '[FAIL:REM_LINK]' && this.rawStream !== null) {
      // §7: the reader went away; the server dropped this write and parses what follows as commands.
      this.rawStream.destroy(new P2PError('REM_LINK', 'the RAW peer went away', { server: true }));
      return;
    }
    this.emit('unsolicited', line);
  }

  /**
   * Backpressure for messages()/presence(): stop reading while consumers lag — unless replies are owed (they may be
   * behind the buffered pushes, and a consumer may be awaiting one) and the buffered bytes are below the hard bound.
   */
  private checkBacklog(): void {
    let over = this.msgs.length >= this.highWater;
    let low = this.msgs.length <= this.highWater >> 1;
    for (const ch of this.presenceChans) {
      if (ch.length >= this.highWater) over = true;
      if (ch.length > this.highWater >> 1) low = false;
    }
    const hard = this.msgs.bytes >= this.maxBufferedBytes;
    const owed = this.inflight.length > 0 || this.state === 'handshake';
    if (!(this.pauses & P_BACKLOG)) {
      if ((over && !owed) || hard) this.pauseFor(P_BACKLOG);
    } else if ((low && this.msgs.bytes < this.maxBufferedBytes >> 1) || (owed && !hard)) {
      this.resumeFor(P_BACKLOG);
    }
  }

  private pauseFor(reason: number): void {
    if (this.pauses === 0) this.socket?.pause();
    this.pauses |= reason;
  }

  private resumeFor(reason: number): void {
    if (!(this.pauses & reason)) return;
    this.pauses &= ~reason;
    if (this.pauses === 0) {
      this.lastRx = Date.now();
      this.socket?.resume();
    }
  }

  // ================================================================ internals: RAW

  private ensureRaw(): RawStream {
    if (this.rawStream !== null) return this.rawStream;
    let rs: RawStream | null = null;
    const current = (): boolean => rs !== null && this.rawStream === rs;
    rs = new RawStream(
      {
        write: (chunk, cb) => {
          const sock = this.socket;
          if (!current() || sock === null) return cb(new P2PError('CONNECTION_LOST', 'the connection is gone'));
          if (!this.rawOut) return cb(new P2PError('RAW_NOT_LINKED', 'no outgoing RAW link: call raw(peer) first'));
          this.lastTx = Date.now();
          if (sock.write(chunk)) cb();
          else sock.once('drain', () => cb());
        },
        resumeIn: () => {
          if (current()) this.resumeFor(P_RAW);
        },
        final: (cb) => {
          const sock = this.socket;
          if (!current() || sock === null || !this.rawOut) return cb();
          const done = (): void => {
            cb();
            // Nothing comes in on this connection: the stream is over, and only a disconnect ends a link (§7).
            if (current() && !this.inRaw) this.endConnection(true);
          };
          if (sock.writableNeedDrain) sock.once('drain', done);
          else done();
        },
        destroyed: (_err, graceful) => {
          if (current()) this.endConnection(graceful);
        },
      },
      { highWaterMark: this.rawHighWaterMark },
    );
    this.rawStream = rs;
    return rs;
  }

  private onLinked(peer: string): void {
    this.rawOut = true;
    const rs = this.ensureRaw();
    rs.linked = true;
    rs.peer = peer.toUpperCase();
    for (const c of this.queue.drain()) c.reject(new P2PError('RAW_ACTIVE', 'a RAW stream owns this connection'));
  }

  private onPushRaw(): void {
    this.inRaw = true;
    const rs = this.ensureRaw();
    rs.incoming = true;
    for (const c of this.queue.drain()) {
      if (c.flags & F_RAW) this.queue.push(c);
      else c.reject(new P2PError('RAW_ACTIVE', 'a peer streams RAW data to this connection'));
    }
    const ws = this.rawWaiters.splice(0);
    for (const w of ws) w.resolve(rs);
    this.emit('rawIncoming', rs);
  }

  private rawIn(chunk: Buffer): void {
    const rs = this.rawStream;
    if (rs === null) return;
    if (!rs.deliver(chunk)) this.pauseFor(P_RAW);
  }

  /** Ends the current connection (after a RAW stream, or when it is broken); reconnects if configured. */
  private endConnection(graceful: boolean): void {
    const sock = this.socket;
    if (sock === null) return;
    if (graceful) {
      sock.end();
      const t = setTimeout(() => sock.destroy(), 2000);
      sock.once('close', () => clearTimeout(t));
    } else sock.destroy();
  }

  // ================================================================ internals: connecting

  /** Opens a socket and runs the handshake; resolves in state 'ready'. */
  private connectOnce(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.state = 'connecting';
      const opts = this.tlsOptions;
      const sock: net.Socket =
        opts === null
          ? net.connect({ host: this.host, port: this.port })
          : tls.connect({ host: this.host, port: this.port, ...opts });
      this.connecting = sock;
      let settled = false;
      const fail = (e: Error): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (this.connecting === sock) this.connecting = null;
        sock.destroy();
        reject(e);
      };
      const timer = setTimeout(
        () => fail(new P2PError('TIMEOUT', `no connection and registration within ${this.connectTimeoutMs} ms`)),
        this.connectTimeoutMs,
      );
      sock.on('error', (e: Error) => {
        if (this.socket !== sock) fail(new P2PError('CONNECTION_LOST', `connecting: ${e.message}`, { cause: e }));
      });
      sock.once('close', () => fail(new P2PError('CONNECTION_LOST', 'the connection closed during the handshake')));
      sock.once(opts === null ? 'connect' : 'secureConnect', () => {
        if (settled) return;
        if (this.closing) return fail(new P2PError('CLOSED', 'the client is closed'));
        this.connecting = null;
        this.attach(sock);
        this.handshake().then(() => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          resolve();
        }, fail);
      });
    });
  }

  private attach(sock: net.Socket): void {
    this.socket = sock;
    this.pauses = 0;
    this.partial = null;
    this.lastRx = Date.now();
    sock.setNoDelay(true);
    sock.setKeepAlive(true, 30_000);
    sock.on('data', (b: Buffer) => this.onData(sock, b));
    sock.on('close', () => this.onSocketClose(sock));
  }

  private async handshake(): Promise<void> {
    this.state = 'handshake';
    if (this.secure !== null) {
      const nonce = clientNonce();
      const body = await this.hsLine(activateLine(this.secure, this.uid, nonce), '', null, null, (l) =>
        okBody(l, `${this.secure} ACTIVATE`),
      );
      const ses = openSession(this.secure, this.key, nonce, body);
      if (ses === null) throw new P2PError('SERVER_PROOF', `the ${this.secure} activation proof did not verify`);
      this.session = ses;
    }
    if (this.myId !== null) await this.hs('ID', this.myId, null, parseId, F_BARRIER | F_REG);
    const rearm: Promise<unknown>[] = [];
    for (const t of this.watches) {
      rearm.push(this.hs('WATCH', t, null, expectOk('WATCHING')).catch((e: Error) => this.warn(e)));
    }
    const will = this.willState;
    if (will !== null) rearm.push(this.sendWill(will.target, will.data, true).catch((e: Error) => this.warn(e)));
    await Promise.all(rearm);
    if (this.socket === null) throw new P2PError('CONNECTION_LOST', 'the connection closed during the handshake');
    if (this.closing) throw new P2PError('CLOSED', 'the client is closed');
    this.state = 'ready';
    this.scheduleFlush();
    this.checkBacklog();
  }

  private warn(e: Error): void {
    if (this.listenerCount('error') > 0) this.emit('error', e);
  }

  private onSocketClose(sock: net.Socket): void {
    if (sock !== this.socket) return;
    this.socket = null;
    const lost = (what: string): P2PError => new P2PError('CONNECTION_LOST', what);
    for (const c of this.inflight.drain()) c.reject(lost(`the connection was lost before the reply to ${describe(c)}`));
    for (const c of this.hsQueue.drain()) c.reject(lost('the connection was lost during the handshake'));
    this.barrierOut = false;
    this.writeBlocked = false;
    this.partial = null;
    this.session = null;
    this.registered = false;
    this.pauses = 0;
    const rs = this.rawStream;
    this.rawStream = null;
    this.rawOut = false;
    this.inRaw = false;
    const err = lost('the connection was lost');
    rs?.connectionEnded(err);
    for (let i = this.rawWaiters.length - 1; i >= 0; i--) {
      const w = this.rawWaiters[i]!;
      if (!w.sticky) {
        this.rawWaiters.splice(i, 1);
        w.reject(err);
      }
    }
    const wasReady = this.state === 'ready';
    if (this.state === 'closed') return;
    if (this.closing) {
      if (this.closingPromise === null) this.finalize(undefined);
      return;
    }
    if (!wasReady) return; // a handshake under way: connectOnce() fails and its caller decides
    this.emit('disconnect', err);
    if (this.reconnectOpts !== null && this.everReady) this.scheduleReconnect();
    else this.finalize(err);
  }

  private scheduleReconnect(): void {
    const o = this.reconnectOpts!;
    if (this.attempts >= o.maxAttempts) {
      const e = new P2PError('CLOSED', `gave up reconnecting after ${this.attempts} attempts`);
      this.warn(e);
      this.finalize(e);
      return;
    }
    this.state = 'reconnecting';
    const base = Math.min(o.maxDelayMs, o.initialDelayMs * o.factor ** this.attempts);
    const delayMs = Math.max(0, Math.round(base * (1 + o.jitter * (2 * Math.random() - 1))));
    this.attempts++;
    this.emit('reconnecting', { attempt: this.attempts, delayMs });
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      void this.reconnectNow();
    }, delayMs);
  }

  private async reconnectNow(): Promise<void> {
    if (this.closing || this.state === 'closed') return;
    try {
      await this.connectOnce();
    } catch (e) {
      if (this.closing || this.closed) return;
      const code = e instanceof P2PError ? e.code : '';
      if (e instanceof P2PError && e.server && PERMANENT_CODES.has(code)) {
        this.warn(e);
        this.finalize(e);
        return;
      }
      this.scheduleReconnect();
      return;
    }
    if (this.closing) {
      this.socket?.destroy();
      return;
    }
    this.attempts = 0;
    this.emit('connect', { reconnect: true, id: this.myId });
  }

  private startWatchdog(): void {
    if (this.replyTimeoutMs <= 0 && this.pingIntervalMs <= 0) return;
    const every = Math.max(100, Math.min(5000, (this.replyTimeoutMs || this.pingIntervalMs) / 4));
    this.watchdog = setInterval(() => this.tick(), every);
    this.watchdog.unref();
  }

  private tick(): void {
    const sock = this.socket;
    if (this.state !== 'ready' || sock === null || this.rawOut || this.inRaw) return;
    const now = Date.now();
    const head = this.inflight.peek();
    if (head !== undefined) {
      if (this.replyTimeoutMs > 0 && this.pauses === 0 && now - Math.max(this.lastRx, head.at) > this.replyTimeoutMs) {
        sock.destroy(new P2PError('TIMEOUT', `no reply within ${this.replyTimeoutMs} ms`));
      }
      return;
    }
    if (this.pingIntervalMs > 0 && this.queue.length === 0 && now - this.lastTx >= this.pingIntervalMs) {
      this.send('GID', null, null, parseId, F_INTERNAL).catch(noop);
    }
  }

  /** The client is closed for good: everything waiting is rejected, iterators end after what is buffered. */
  private finalize(err: Error | undefined): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.closing = true;
    if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer);
    if (this.watchdog !== null) clearInterval(this.watchdog);
    this.socket?.destroy();
    this.connecting?.destroy();
    const closed = new P2PError('CLOSED', 'the client is closed', { cause: err });
    for (const c of this.hsQueue.drain()) c.reject(closed);
    for (const c of this.inflight.drain()) c.reject(closed);
    for (const c of this.queue.drain()) c.reject(closed);
    for (const w of this.rawWaiters.splice(0)) w.reject(closed);
    const rs = this.rawStream;
    this.rawStream = null;
    rs?.connectionEnded(closed);
    this.msgs.end();
    for (const ch of this.presenceChans) ch.end();
    this.presenceChans.clear();
    this.emit('close', err);
  }

  private decode(latin1: string): string {
    return this.encoding === 'latin1' || this.encoding === 'binary'
      ? latin1
      : Buffer.from(latin1, 'latin1').toString(this.encoding);
  }
}

function badId(id: string): Promise<never> {
  return badArgument(`bad ID or name ${JSON.stringify(id)}: 1+ characters of A-Z 0-9 _ - . @`);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}

/** The command for error messages, KEY field masked, payload shortened. */
function describe(c: Cmd): string {
  if (c.line !== null) return c.line.split(':').slice(0, 3).join(':');
  let s = `TCP:${c.sub}:<key>`;
  if (c.rest !== null) s += `:${c.rest}`;
  if (c.tail !== null) s += `<${c.tail.length} bytes>`;
  return s.length > 120 ? `${s.slice(0, 117)}...` : s;
}
