// The shard actor: listens on the device port with reusePort, owns the sockets the kernel gives it,
// frames and executes their commands, owns ID decisions for the accounts it is owner of, and talks
// to the other shards and the supervisor only through batched, msgpackr-encoded PortLinks.
// Constructed with plain ports and shared tables, so tests can run it in-process over MessageChannels.

import { readFileSync } from 'node:fs';
import {
  createServer as createHttpServer,
  type Server as HttpServer,
  type IncomingMessage,
  type ServerResponse,
} from 'node:http';
import { createServer, type Server, type Socket } from 'node:net';
import { createServer as createTlsServer, DEFAULT_CIPHERS } from 'node:tls';
import type { Logger } from 'pino';
import { readRequest, writeResponse } from '../api/http.ts';
import type { ApiResponse } from '../api/types.ts';
import { NonceTable } from '../cluster/raw-header.ts';
import { type Config, planValue } from '../config/schema.ts';
import { FAIL_LINE, type FailCode } from '../protocol/codes.ts';
import { detach, flushPending, frameLines, type LineSink } from '../protocol/framer.ts';
import { isKeyShaped } from '../protocol/ids.ts';
import { isHttpPrefix, isHttpStart, ParsedCommand } from '../protocol/parser.ts';
import {
  groupReply,
  OK_DATA_HELD,
  OK_DATA_SENT,
  OK_MAIL_SENT,
  OK_SMS_SENT,
  ok,
  syncLine,
} from '../protocol/replies.ts';
import { dstcpField, dstcpKey, hexEquals, hstcpMac, MODE, stcpSessionKey, tlsPsk } from '../protocol/secure.ts';
import { type Account, AccountTable, ownerShard } from '../routing/account.ts';
import { applyChange, decodeChange } from '../routing/changes.ts';
import {
  beginRegistration,
  clearFlag,
  endRegistration,
  FULL,
  isLive,
  liveFlags,
  type StatusTables,
  setFlag,
  shardOf,
  slotOf,
} from '../routing/handle.ts';
import { AddressCounters } from '../runtime/address-table.ts';
import { PortLink } from '../runtime/link.ts';
import { collectionLog, IdleMemoryReducer } from '../runtime/memory-reducer.ts';
import {
  COUNTER_IN_MINUTE,
  COUNTER_MINUTE,
  COUNTER_OPEN,
  OP,
  type PortMessage,
  type ShardInit,
} from '../runtime/messages.ts';
import { executeCommand } from './commands.ts';
import { Connection, PAUSE, type Session } from './connection.ts';
import { ShardMetrics } from './metrics.ts';
import { type OwnerHost, Ownership } from './ownership.ts';
import { dropWatches, presenceEvent, statusReply } from './presence.ts';
import { cmdPush, pushRun } from './push.ts';
import { rawAck, rawChunk, rawClosed, rawEnd, rawLocated, rawOpenRequest, rawOpenResult, rawWrite } from './raw.ts';
import { READ_SIZE, useSharedReads } from './reads.ts';

interface PendingRegistration {
  conn: Connection;
  account: Account;
  id: string;
  handle: number;
  level: number;
  /** Reserved output places: the reply, and the held backlog (-1 when holding is off). */
  okToken: number;
  backlogToken: number;
}

export class ShardActor implements LineSink<Connection>, OwnerHost {
  readonly index: number;
  readonly shards: number;
  readonly config: Config;
  /** Cluster mode: IDs not registered on this node may be on another one (the supervisor routes to it). */
  readonly clustered: boolean;
  /** Cluster mode: the secret RAW streams across nodes are signed with (null until the node joined). */
  nodeSecret: Buffer | null = null;
  /** Cluster mode: nonces of the RAW stream headers this node accepted lately (a header is good once). */
  readonly nodeNonces: NonceTable;
  readonly log: Logger;
  readonly status: StatusTables;
  readonly table: Int32Array;
  readonly maxNode: readonly number[];
  readonly accounts = new AccountTable();
  readonly links: (PortLink | undefined)[];
  readonly ownership: Ownership;
  readonly metrics = new ShardMetrics();
  /** Gives the heap a burst left committed back once the shard is quiet again (PServer.IDLE_GC_MS). */
  private reducer: IdleMemoryReducer | null = null;
  /** Reusable parse result: one per shard, never per message. */
  readonly cmd = new ParsedCommand();

  private readonly devicePort: number;
  private readonly counters: Int32Array;
  private readonly control: PortLink;
  private server: Server | null = null;
  private tlsServer: Server | null = null;
  private readonly tlsPort: number;
  readonly conns: (Connection | undefined)[] = [];
  private readonly freeSlots: number[] = [];
  /**
   * Connections with output queued this turn: the first `dirtyLen` of `dirty`. Two lists take turns (a flush walks
   * one while new output joins the other) and keep their room: emptying a JS array would free it, and every turn
   * would allocate it again.
   */
  private dirty: (Connection | null)[] = [];
  private dirtyLen = 0;
  private dirtySpare: (Connection | null)[] = [];
  private flushScheduled = false;
  private readonly idle = new Set<Connection>();
  private idleTimer: NodeJS.Timeout | null = null;
  private sweepTimer: NodeJS.Timeout | null = null;
  /** The sweep visits the connections a slice at a time (see sweep): how many slices a pass has, and where it is. */
  private sweepSlices = 1;
  private sweepNext = 0;
  private reqSeq = 0;
  /** Cluster mode: group pushes waiting for the count of members other nodes took. */
  private readonly groups = new Map<
    number,
    { conn: Connection; token: number; delivered: number; total: number; target: number }
  >();
  /** Cluster mode: claims of IDs in the cluster directory, awaiting the supervisor's answer. */
  private readonly claims = new Map<number, (ok: boolean) => void>();
  private readonly pendingRegs = new Map<number, PendingRegistration>();
  /** Registrations waiting for their owner shard to come back. */
  private readonly parkedRegs: number[] = [];
  /** KEY or UID lookups under way: the waiting connection and, for UID lookups, the e-mail. */
  private readonly keyWaits = new Map<number, { conn: Connection; email: string | null }>();
  private readonly outboxWaits = new Map<number, { conn: Connection; kind: 'mail' | 'sms' }>();
  /** Answers the supervisor still owes (holds, held backlogs, STATUS): the connection and its reserved reply. */
  private readonly deferred = new Map<number, { conn: Connection; token: number }>();
  private readonly addrConns: AddressCounters;
  readonly addrFails: AddressCounters;
  /** Process RSS sampled by the sweep, for the memory guard. */
  private rss = 0;
  private readonly linkPaused = new Set<Connection>();
  private stopping = false;
  private httpServer: HttpServer | null = null;
  private readonly httpWaits = new Map<number, ServerResponse>();
  /** Scratch lists of handles per shard for group deliveries. */
  readonly scratch: number[][];
  /**
   * The read being framed and its latin1 text (same offsets): bulk deliveries (push.ts pushRun) build their output in
   * place in it. Set only while onData frames it.
   */
  input: Buffer | null = null;
  inputText = '';
  /**
   * Text framed other than the read itself, as bytes for bulk deliveries (push.ts joinedBytes): a line joined from two
   * reads (framer.ts frameLines: the tail of one read and the head of the next) or a backlog framed after a pause.
   * Grown on demand, to 64 KB at most.
   */
  joined: Buffer = Buffer.allocUnsafeSlow(0);
  /** Output buffers whose socket took everything at once, reused for the next turn's byte output. */
  private readonly outPool = new OutPool();

  readonly maxLine: number;
  readonly maxOut: number;
  private readonly tickMs: number;
  private readonly waitMs: number;
  private readonly idleMs: number;
  private readonly deadlineMs: number;

  constructor(init: ShardInit, log: Logger) {
    this.index = init.index;
    this.shards = init.shards;
    this.config = init.config;
    this.log = log;
    this.devicePort = init.port;
    this.tlsPort = init.tlsPort;
    this.status = init.status.map((b) => new Int32Array(b));
    this.table = this.status[this.index]!;
    this.counters = new Int32Array(init.counters);
    this.addrConns = new AddressCounters(new Int32Array(init.addressConnections), 60000);
    this.addrFails = new AddressCounters(new Int32Array(init.addressFailures), 60000);
    this.nodeNonces = new NonceTable(new Int32Array(init.nonces));
    this.rss = process.memoryUsage.rss();
    this.maxNode = init.config.USER['10MAXNODE'];
    const node = init.config.NODE;
    this.maxLine = node.MAX_LINE;
    this.maxOut = node.MAX_OUTBUF;
    this.tickMs = node.COM_CHK * 1000;
    this.clustered = init.config.CLUSTER.REDIS_URL !== '';
    if (init.nodeSecret !== '') this.nodeSecret = Buffer.from(init.nodeSecret, 'hex');
    this.waitMs = node.WAIT_FOR_CMD * 1000;
    this.idleMs = node.LINE_IDLE_MS;
    this.deadlineMs = node.WRITE_DEADLINE * 1000;
    this.scratch = Array.from({ length: this.shards }, () => []);
    this.links = new Array(this.shards).fill(undefined);
    this.ownership = new Ownership(this);
    for (let p = 0; p < this.shards; p++) {
      const port = init.peers[p];
      if (port !== undefined && p !== this.index) this.attachPeer(p, port);
    }
    for (const [id, email, key, level] of init.accounts)
      this.accounts.rememberEmail(email, this.accounts.setKey(id, key, level));
    this.onControl(init.topology);
    this.control = new PortLink(
      -1,
      init.control,
      Number.MAX_SAFE_INTEGER,
      (ops) => this.onControl(ops),
      (msg) => this.onPortMessage(msg),
    );
  }

  // ---------------------------------------------------------------- lifecycle

  async start(): Promise<void> {
    const opts = { noDelay: true, keepAlive: true, keepAliveInitialDelay: this.tickMs };
    const server = createServer(opts);
    this.server = server;
    server.on('connection', (socket) => this.onConnection(socket));
    await this.listen(server, this.devicePort);
    if (this.tlsPort !== 0) {
      // The same protocol over TLS: a TLSSocket is a net.Socket to everything downstream.
      const tls = this.config.TLS;
      const secure = createTlsServer({
        ...opts,
        // A handshake that never finishes (a partial record, then silence) is a connection that sends no command.
        handshakeTimeout: Math.max(1, Math.round(this.waitMs)),
        cert: readFileSync(tls.CERT),
        key: readFileSync(tls.KEY),
        ...(tls.PSK
          ? {
              // TLS-PSK (TLS 1.2): identity = account e-mail, key derived from the account KEY.
              ciphers: `${DEFAULT_CIPHERS.replace(':!PSK', '')}:PSK`,
              pskCallback: (_socket: unknown, identity: string) => {
                const acct = this.accounts.byEmailLookup(identity);
                return acct?.key ? tlsPsk(acct.key) : null;
              },
            }
          : {}),
      });
      secure.on('connection', (raw: Socket) => this.onTlsTcp(raw));
      secure.on('secureConnection', (socket) => this.onConnection(socket, true));
      // Node reports a failed or timed-out handshake here but leaves the socket open: it is closed here.
      secure.on('tlsClientError', (err, socket) => {
        this.log.debug({ err: err.message }, 'TLS handshake failed');
        socket.destroy();
      });
      this.tlsServer = secure;
      await this.listen(secure, this.tlsPort);
    }
    const sweepMs = Math.max(10, Math.min(1000, this.tickMs / 4, this.waitMs / 4, this.deadlineMs / 4));
    this.sweepSlices = Math.max(1, Math.min(SWEEP_SLICES, Math.floor(sweepMs / 10)));
    const pserver = this.config.PServer;
    if (pserver.IDLE_GC_MS > 0) {
      this.reducer = new IdleMemoryReducer({ quietMs: pserver.IDLE_GC_MS, growthBytes: pserver.IDLE_GC_MB * 1048576 });
      this.metrics.reducer = this.reducer;
    }
    this.sweepTimer = setInterval(() => this.sweep(), sweepMs / this.sweepSlices);
    this.control.ops.push(OP.READY, this.index);
    this.scheduleFlush();
    this.log.debug({ port: this.devicePort }, 'shard listening');
  }

  private listen(server: Server, port: number): Promise<void> {
    server.on('error', (err) => this.log.error({ err, port }, 'device listener error'));
    return new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      const host = this.config.PServer.HOST;
      server.listen({ port, host: host === '' ? undefined : host, reusePort: true, backlog: 4096 }, () => {
        server.off('error', reject);
        resolve();
      });
    });
  }

  /** Stops accepting, closes every connection after flushing, and resolves when done. */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    if (this.idleTimer) clearInterval(this.idleTimer);
    const closing = [this.server, this.tlsServer].map((srv) =>
      srv ? new Promise<void>((r) => srv.close(() => r())) : Promise.resolve(),
    );
    const closed = Promise.all(closing);
    this.flush();
    // Drain: each socket closes once its queued output reached the kernel; slow readers get PServer.DRAIN_S.
    for (const conn of this.conns) {
      if (conn === undefined) continue;
      const socket = conn.socket;
      socket.once('finish', () => socket.destroy());
      socket.end();
    }
    const grace = setTimeout(() => {
      for (const conn of this.conns) if (conn !== undefined) conn.socket.destroy();
    }, this.config.PServer.DRAIN_S * 1000);
    await closed;
    clearTimeout(grace);
    for (const link of this.links) link?.close();
  }

  // ---------------------------------------------------------------- connections

  /** The connection limits (MAXLOAD, MAX_RSS_MB, VELOCITY, IP_VELOCITY, AUTH_FAILS): the reply that refuses, or null. */
  private admit(socket: Socket): string | null {
    if (this.openConnections() >= this.config.PServer.MAXLOAD) return FAIL_LINE.SERVER_FULL;
    const maxRss = this.config.PServer.MAX_RSS_MB;
    if (maxRss > 0 && this.rss > maxRss * 1048576) return FAIL_LINE.SERVER_FULL;
    if (!this.velocityAllows() || !this.addressAllows(socket)) return FAIL_LINE.RATE_LIMIT;
    return null;
  }

  /**
   * A TCP connection to the TLS port, before its handshake: the connection limits apply here, so a handshake (which
   * costs the server more than a plain connection) is only made for a connection they admit. One they refuse is
   * closed without a word: a TLS client could not read a plain [FAIL:...] line.
   */
  private onTlsTcp(raw: Socket): void {
    if (!this.stopping && this.admit(raw) === null) return;
    raw.on('error', noop);
    raw.destroy();
  }

  private onConnection(socket: Socket, encrypted = false): void {
    if (this.stopping) {
      socket.destroy();
      return;
    }
    // A TLS connection passed the limits before its handshake (onTlsTcp).
    const refused = encrypted ? null : this.admit(socket);
    if (refused !== null) {
      socket.on('error', noop);
      socket.end(refused);
      return;
    }
    Atomics.add(this.counters, COUNTER_OPEN + this.index, 1);
    const slot = this.freeSlots.length > 0 ? this.freeSlots.pop()! : this.conns.length;
    const conn = new Connection(socket, slot, Date.now());
    conn.encrypted = encrypted;
    this.conns[slot] = conn;
    (socket as ConnSocket)[CONN] = conn;
    socket.on('data', this.onSocketData);
    socket.on('close', this.onSocketClose);
    socket.on('error', noop);
  }

  /** PServer.VELOCITY: new connections per minute across all shards (fixed one-minute windows). */
  private velocityAllows(): boolean {
    const limit = this.config.PServer.VELOCITY;
    if (limit === 0) return true;
    const minute = Math.floor(Date.now() / 60000) & 0x7fffffff;
    const c = this.counters;
    const seen = Atomics.load(c, COUNTER_MINUTE);
    if (seen !== minute && Atomics.compareExchange(c, COUNTER_MINUTE, seen, minute) === seen) {
      Atomics.store(c, COUNTER_IN_MINUTE, 0);
    }
    return Atomics.add(c, COUNTER_IN_MINUTE, 1) < limit;
  }

  /** PServer.IP_VELOCITY and the auth-failure throttle (NODE.AUTH_FAILS), per remote address. */
  private addressAllows(socket: Socket): boolean {
    const perIpOff = this.config.PServer.IP_VELOCITY === 0 && this.config.NODE.AUTH_FAILS === 0;
    if (perIpOff) return true;
    const addr = remoteAddress(socket);
    const now = Date.now();
    const perIp = this.config.PServer.IP_VELOCITY;
    if (perIp > 0 && this.addrConns.hit(addr, now) > perIp) return false;
    const fails = this.config.NODE.AUTH_FAILS;
    return fails === 0 || this.addrFails.count(addr, now) < fails;
  }

  /**
   * Counts an authentication failure of the connection's address. Past NODE.AUTH_FAILS in a minute the
   * reply becomes [FAIL:RATE_LIMIT] and the connection is closed; returns true in that case.
   */
  authFailed(conn: Connection): boolean {
    const limit = this.config.NODE.AUTH_FAILS;
    if (limit === 0) return false;
    if (this.addrFails.hit(remoteAddress(conn.socket), Date.now()) <= limit) return false;
    this.send(conn, FAIL_LINE.RATE_LIMIT);
    this.closeAfterFlush(conn);
    return true;
  }

  /** Writes what is queued, then ends the connection; it executes nothing more. */
  closeAfterFlush(conn: Connection): void {
    conn.blocked = true;
    this.pause(conn, PAUSE.BLOCKED);
    this.flushNow(conn);
    conn.socket.end();
    const timer = setTimeout(() => conn.socket.destroy(), 1000);
    conn.socket.once('close', () => clearTimeout(timer));
  }

  /** Open device connections across all shards (each shard counts its own). */
  private openConnections(): number {
    let n = 0;
    for (let i = 0; i < this.shards; i++) n += Atomics.load(this.counters, COUNTER_OPEN + i);
    return n;
  }

  /** One listener of each kind for every socket (not two closures per connection): `this` is the socket. */
  private readonly onSocketData = ((actor: ShardActor) =>
    function (this: ConnSocket, buf: Buffer): void {
      actor.onData(this[CONN]!, buf, buf.length);
    })(this);
  /** Reads of connections past their first command (see reads.ts): `this` is the socket, `buf` the shard's. */
  private readonly onSharedRead = ((actor: ShardActor) =>
    function (this: Socket, n: number, buf: Buffer): void {
      actor.onData((this as ConnSocket)[CONN]!, buf, n);
    })(this);
  /** The one buffer every connection of this shard reads into once it reads that way. */
  private readonly readBuf = Buffer.allocUnsafeSlow(READ_SIZE);
  private readonly onSocketClose = ((actor: ShardActor) =>
    function (this: ConnSocket): void {
      actor.onClose(this[CONN]!);
    })(this);

  /** `n` bytes from the start of `buf` arrived: a chunk of its own ('data') or the shard's read buffer. */
  private onData(conn: Connection, buf: Buffer, n: number): void {
    const now = Date.now();
    this.metrics.bytesIn += n;
    conn.lastRx = now;
    const raw = conn.raw;
    if (raw !== null && raw.out !== 0) {
      // §7: a linked writer's bytes are not parsed. They are kept until written (or moved to another thread), so
      // bytes in the shared read buffer are copied out first.
      rawWrite(this, conn, raw, buf === this.readBuf ? copyOut(buf, n) : buf);
      return;
    }
    const chunk = buf.toString('latin1', 0, n);
    if (!conn.commanded) {
      // §1: a connection whose first bytes are an HTTP request line goes to the HTTP API, however TCP
      // splits those bytes: hold a possible method prefix until it is decided.
      const head = conn.pending + chunk;
      if (isHttpStart(head)) {
        this.handToHttp(conn, head);
        return;
      }
      if (isHttpPrefix(head)) {
        conn.pending = head;
        return;
      }
    }
    if (conn.blocked) {
      conn.pending += chunk;
      return;
    }
    this.input = buf;
    this.inputText = chunk;
    frameLines(conn, chunk, this.maxLine, this);
    this.input = null;
    this.inputText = '';
    // RETDATA entries of a small read may keep it alive (about their own size): copied only out of big reads.
    if (n <= KEEP_READ) conn.cacheFresh = 0;
    this.afterInput(conn);
  }

  /**
   * §1: an HTTP request on the device port is served by the operator API. This shard parses HTTP with
   * node:http and relays each request to the supervisor, which runs the same handlers as the HTTP port.
   */
  private handToHttp(conn: Connection, head: string): void {
    const socket = conn.socket;
    conn.commanded = true;
    conn.http = true;
    conn.pending = '';
    socket.removeAllListeners('data');
    socket.pause();
    socket.unshift(Buffer.from(head, 'latin1'));
    if (this.httpServer === null) {
      const server = createHttpServer((req, res) => void this.relayHttp(req, res));
      server.headersTimeout = 10000;
      server.requestTimeout = 30000;
      this.httpServer = server;
    }
    this.httpServer.emit('connection', socket);
    socket.resume();
  }

  private async relayHttp(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const request = await readRequest(req, res, this.config.HTTP.MAX_BODY);
    if (request === null) return;
    const id = ++this.reqSeq;
    this.httpWaits.set(id, res);
    res.on('close', () => this.httpWaits.delete(id));
    this.control.ops.push(OP.HTTP_REQUEST, id, JSON.stringify(request));
    this.scheduleFlush();
  }

  /** Per-chunk bookkeeping after framing: RETDATA copies, idle-flush tracking, RAW hand-over. */
  private afterInput(conn: Connection): void {
    if (conn.cacheFresh > 0) this.detachCache(conn);
    const raw = conn.raw;
    if (raw !== null && raw.out !== 0 && conn.pending.length > 0 && !conn.blocked) {
      // The bytes after `RAW:<ID>` in the same read are already stream data.
      const rest = Buffer.from(conn.pending, 'latin1');
      conn.pending = '';
      rawWrite(this, conn, raw, rest);
    }
    const waiting = conn.pending.length > 0 && !conn.blocked && this.idleMs > 0;
    if (waiting && !conn.idleListed) {
      conn.idleListed = true;
      this.idle.add(conn);
      if (this.idleTimer === null) this.idleTimer = setInterval(() => this.idleSweep(), Math.max(5, this.idleMs / 4));
    } else if (!waiting && conn.idleListed) {
      conn.idleListed = false;
      this.idle.delete(conn);
    }
  }

  /** Cached payloads are slices of the input chunk: copy the fresh ones so the chunk can be freed. */
  private detachCache(conn: Connection): void {
    const cache = conn.cache!;
    const size = cache.length;
    let i = conn.cacheNext;
    for (let n = Math.min(conn.cacheFresh, size); n > 0; n--) {
      i = (i - 1 + size) % size;
      const v = cache[i];
      if (v !== undefined) cache[i] = detach(v);
    }
    conn.cacheFresh = 0;
  }

  private idleSweep(): void {
    const now = Date.now();
    for (const conn of this.idle) {
      // Silence the server caused (it paused reading) is not the device's silence (§1).
      if (conn.pauses !== 0 || now - conn.lastRx < this.idleMs) continue;
      this.idle.delete(conn);
      conn.idleListed = false;
      if (conn.closed || conn.blocked) continue;
      flushPending(conn, this);
      this.afterInput(conn);
    }
    if (this.idle.size === 0 && this.idleTimer !== null) {
      clearInterval(this.idleTimer);
      this.idleTimer = null;
    }
  }

  private onClose(conn: Connection): void {
    if (conn.closed) return;
    conn.closed = true;
    Atomics.sub(this.counters, COUNTER_OPEN + this.index, 1);
    if (conn.idleListed) this.idle.delete(conn);
    this.linkPaused.delete(conn);
    if (conn.pendingHandle !== 0) endRegistration(this.table, conn.slot);
    const will = conn.will;
    if (will !== null && conn.handle !== 0 && conn.account !== null && !this.stopping) {
      // §5a: an unexpected end: push the will as if the device had sent it as its last command.
      conn.will = null;
      this.metrics.willsFired++;
      cmdPush(this, conn, conn.account, will.target, will.name, will.data);
    }
    dropWatches(conn);
    this.releaseRegistration(conn);
    conn.out = '';
    conn.outBuf = null;
    conn.cache = null;
    this.conns[conn.slot] = undefined;
    this.freeSlots.push(conn.slot);
  }

  /**
   * Closes a connection the server gives up on (missed liveness, slow consumer, kicked, account deleted) with its
   * close handled first: its ID is free, and its will pushed, before the device can see the socket close. The
   * 'close' event that follows finds it closed already. (Left to that event, a device that saw the close and came
   * straight back could find its own dead registration still alive: [FAIL:NODEEXIST].)
   */
  private closeNow(conn: Connection): void {
    this.onClose(conn);
    conn.socket.destroy();
  }

  /** Ends the connection's registration (close or REMID) and tells the owner shard. */
  releaseRegistration(conn: Connection): void {
    const acct = conn.account;
    const id = conn.id;
    const handle = conn.handle;
    if (conn.raw !== null) rawEnd(this, conn, handle);
    if (id === null && handle !== 0) {
      // Another node's RAW stream (raw.ts rawFromNode): a handle without an ID.
      endRegistration(this.table, conn.slot);
      conn.handle = 0;
      return;
    }
    if (handle === 0 || acct === null || id === null) return;
    endRegistration(this.table, conn.slot);
    if (conn.backlogToken >= 0) {
      // The held backlog is still on its way: its place is settled empty (when it comes, the ID is not this
      // connection's any more and it is held again), so what the connection is told next is not stuck behind it.
      const token = conn.backlogToken;
      conn.backlogToken = -1;
      this.resolveReply(conn, token, '');
    }
    this.control.ops.push(OP.SEEN, acct.id, id, 0);
    if (conn.fullSince !== 0) conn.fullSince = 0;
    conn.handle = 0;
    conn.id = null;
    const owner = ownerShard(acct.id, this.shards);
    if (owner === this.index) this.ownership.unregister(acct, id, handle);
    else {
      const link = this.links[owner];
      if (link !== undefined) {
        link.ops.push(OP.UNREG, acct.id, id, handle);
        this.scheduleFlush();
      }
    }
  }

  // ---------------------------------------------------------------- lines and commands

  onLine(conn: Connection, s: string, start: number, end: number): boolean {
    if (end === start || conn.closed) return true;
    if (!conn.commanded) this.firstCommand(conn);
    executeCommand(this, conn, s, start, end);
    // A RAW link makes everything after this line stream data: stop framing.
    return !conn.blocked && (conn.raw === null || conn.raw.out === 0);
  }

  /**
   * A connection's first command: it is not HTTP (§1), the one use that needs the socket's own stream reads, so from
   * its next read on it reads into the shard's buffer (reads.ts).
   */
  private firstCommand(conn: Connection): void {
    conn.commanded = true;
    useSharedReads(conn.socket, this.readBuf, this.onSharedRead);
  }

  takeLines(conn: Connection, s: string, pos: number, _n: number): number {
    return pushRun(this, conn, s, pos);
  }

  onTooLong(conn: Connection): void {
    if (!conn.commanded) this.firstCommand(conn);
    this.send(conn, FAIL_LINE.LINE_TOO_LONG);
  }

  fail(conn: Connection, code: FailCode): void {
    this.metrics.fail(code);
    this.send(conn, FAIL_LINE[code]);
  }

  /**
   * Resolves the KEY field of the parsed command. Returns the account, a failure code, or null when
   * the KEY must be looked up by the supervisor (the connection is then blocked and the line retried).
   */
  resolveKey(conn: Connection, s: string, start: number, end: number): Account | FailCode | null {
    const cmd = this.cmd;
    const ks = cmd.keyStart;
    const ke = cmd.keyEnd;
    const own = conn.account;
    if (conn.session !== null) return this.sessionKey(conn, conn.session, s, start, end);
    if (own !== null && own.key !== null && ke - ks === 32 && s.startsWith(own.key, ks)) return own;
    if (!isKeyShaped(s, ks, ke)) return 'INVALID_KEY';
    const key = s.slice(ks, ke).toUpperCase();
    const acct = this.accounts.byKeyLookup(key);
    if (acct !== undefined) return own !== null && acct !== own ? 'NOKEY' : acct;
    if (conn.missedKey === key) {
      conn.missedKey = null;
      return 'INVALID_KEY';
    }
    conn.missedKey = key;
    this.lookup(conn, OP.KEY_LOOKUP, key, null, s, start, end);
    return null;
  }

  /** Asks the supervisor for an account by KEY or UID; the line runs again when the answer arrives. */
  lookup(
    conn: Connection,
    op: number,
    value: string,
    email: string | null,
    s: string,
    start: number,
    end: number,
  ): void {
    const req = ++this.reqSeq;
    this.keyWaits.set(req, { conn, email });
    conn.retryLine = detach(s.slice(start, end));
    this.block(conn);
    this.control.ops.push(op, req, value);
    this.scheduleFlush();
  }

  /** Stores an e-mail or SMS through the supervisor's outbox; the connection waits for the durable write. */
  submitOutbox(conn: Connection, acct: Account, kind: 'mail' | 'sms', to: string, subject: string, body: string): void {
    const req = ++this.reqSeq;
    this.outboxWaits.set(req, { conn, kind });
    this.block(conn);
    this.control.ops.push(OP.OUTBOX_SUBMIT, req, acct.id, kind, to, subject, body);
    this.scheduleFlush();
  }

  /**
   * The KEY field under an active secure session (§9): STCP's session key, DSTCP's per-command MD5, or
   * HSTCP's per-command HMAC over the line with the KEY field emptied (which also advances the sequence).
   */
  private sessionKey(conn: Connection, ses: Session, s: string, start: number, end: number): Account | FailCode {
    const key = ses.account.key;
    const ks = this.cmd.keyStart;
    const ke = this.cmd.keyEnd;
    const given = s.slice(ks, ke);
    let good = false;
    if (key !== null) {
      switch (ses.mode) {
        case MODE.STCP:
          if (ses.keyUsed !== key) {
            ses.skey = stcpSessionKey(key, ses.rnd);
            ses.keyUsed = key;
          }
          good = hexEquals(given, ses.skey);
          break;
        case MODE.DSTCP:
          good = hexEquals(given, dstcpKey(key, ses.rnd, dstcpField(s, ke, end, conn.handle !== 0)));
          break;
        case MODE.HSTCP:
          good = hexEquals(given, hstcpMac(key, ses.rnd, ses.seq, s.slice(start, ks) + s.slice(ke, end)));
          if (good) ses.seq++;
          break;
      }
    }
    if (!good) return 'INVALID_KEY';
    return conn.account !== null && conn.account !== ses.account ? 'NOKEY' : ses.account;
  }

  /** Starts a registration of `id` (already canonical and valid) for the connection. */
  register(conn: Connection, acct: Account, id: string): void {
    const handle = beginRegistration(this.table, conn.slot, this.index);
    conn.pendingHandle = handle;
    const req = ++this.reqSeq;
    // Pushes may reach the new handle before the owner's answer does (other shards learn it first): they wait
    // behind the place of [OK:<ID>] and, when holding is on, of the held backlog.
    const okToken = this.deferReply(conn);
    const backlogToken = this.holdAllowed(acct) ? this.deferReply(conn) : -1;
    conn.backlogToken = backlogToken;
    this.pendingRegs.set(req, { conn, account: acct, id, handle, level: acct.level, okToken, backlogToken });
    this.block(conn);
    this.sendRegistration(req);
  }

  private sendRegistration(req: number): void {
    const p = this.pendingRegs.get(req)!;
    const owner = ownerShard(p.account.id, this.shards);
    if (owner === this.index) {
      this.ownership.register(p.account, p.id, p.handle, this.index, req);
      return;
    }
    const link = this.links[owner];
    if (link === undefined) {
      this.parkedRegs.push(req);
      return;
    }
    link.ops.push(OP.REG, req, p.account.id, p.id, p.handle, p.level);
    this.scheduleFlush();
  }

  /** Owner hook (cluster mode): claim an ID in the cluster directory through the supervisor. */
  claim(acct: Account, id: string, done: (ok: boolean) => void): void {
    const req = ++this.reqSeq;
    this.claims.set(req, done);
    this.control.ops.push(OP.CLAIM, req, acct.id, id);
    this.scheduleFlush();
  }

  /** Owner hook (cluster mode): give a claim back. */
  unclaim(acct: Account, id: string): void {
    this.control.ops.push(OP.UNCLAIM, acct.id, id);
    this.scheduleFlush();
  }

  answerRegistration(from: number, req: number, result: FailCode | ''): void {
    if (from === this.index) this.completeRegistration(req, result);
    else {
      const link = this.links[from];
      if (link === undefined) return; // the requester died; its connections are gone
      link.ops.push(OP.REG_RESULT, req, result);
      this.scheduleFlush();
    }
  }

  private completeRegistration(req: number, result: FailCode | ''): void {
    const p = this.pendingRegs.get(req);
    if (p === undefined) return;
    this.pendingRegs.delete(req);
    const { conn, account, id, handle } = p;
    if (conn.closed || conn.pendingHandle !== handle) {
      // The connection went away while the owner decided: undo an accepted registration.
      if (result === '') {
        const owner = ownerShard(account.id, this.shards);
        if (owner === this.index) this.ownership.unregister(account, id, handle);
        else this.links[owner]?.ops.push(OP.UNREG, account.id, id, handle);
        this.scheduleFlush();
      }
      return;
    }
    conn.pendingHandle = 0;
    if (result === '') {
      conn.handle = handle;
      conn.id = id;
      conn.account = account;
      this.resolveReply(conn, p.okToken, ok(id));
      this.metrics.registrations++;
      // §5 Hold: the backlog (sent by the supervisor on the owner's word) fills its place after [OK:<ID>].
      this.control.ops.push(OP.SEEN, account.id, id, 1);
      this.scheduleFlush();
    } else {
      endRegistration(this.table, conn.slot);
      if (p.backlogToken >= 0) {
        conn.backlogToken = -1;
        this.resolveReply(conn, p.backlogToken, '');
      }
      this.metrics.fail(result);
      this.resolveReply(conn, p.okToken, FAIL_LINE[result]);
      if (result === 'NODEEXIST') {
        this.closeAfterFlush(conn); // the newcomer is closed (PROTOCOL.md §4)
        return;
      }
    }
    this.unblock(conn);
  }

  presence(acct: Account, id: string, online: boolean): void {
    presenceEvent(this, acct, id, online);
  }

  /** STATUS of an offline ID: its last-seen time comes from the store, in order with later replies. */
  queryStatus(conn: Connection, acct: Account, id: string): void {
    const req = ++this.reqSeq;
    this.deferred.set(req, { conn, token: this.deferReply(conn) });
    this.control.ops.push(OP.STATUS_QUERY, req, acct.id, id);
    this.scheduleFlush();
  }

  kick(handle: number): void {
    const shard = shardOf(handle);
    if (shard !== this.index) {
      const link = this.links[shard];
      if (link !== undefined) {
        link.ops.push(OP.KICK, handle);
        this.scheduleFlush();
      }
      return;
    }
    const conn = this.conns[slotOf(handle)];
    if (conn !== undefined && conn.handle === handle) {
      this.log.info({ id: conn.id }, 'device kicked by the operator');
      this.closeNow(conn);
    }
  }

  /** Executes nothing more from the connection until it is unblocked (it waits for another thread). */
  block(conn: Connection): void {
    conn.blocked = true;
    this.pause(conn, PAUSE.BLOCKED);
  }

  private unblock(conn: Connection): void {
    conn.blocked = false;
    const retry = conn.retryLine;
    if (retry !== null) {
      conn.retryLine = null;
      this.onLine(conn, retry, 0, retry.length);
    }
    if (!conn.blocked) {
      frameLines(conn, '', this.maxLine, this);
      this.afterInput(conn);
    }
    if (!conn.blocked) this.resume(conn, PAUSE.BLOCKED);
  }

  pause(conn: Connection, reason: number): void {
    if (conn.pauses === 0) conn.socket.pause();
    conn.pauses |= reason;
  }

  resume(conn: Connection, reason: number): void {
    if (conn.pauses === 0) return;
    conn.pauses &= ~reason;
    if (conn.pauses === 0 && !conn.closed) {
      conn.lastRx = Date.now(); // the idle clock restarts when reading does
      conn.socket.resume();
    }
  }

  // ---------------------------------------------------------------- output

  /** Queues text for the connection; written once per event-loop turn. */
  send(conn: Connection, text: string): void {
    if (conn.slots !== null) {
      conn.slots.push(text);
      return;
    }
    if (conn.outBuf !== null) {
      const ob = this.outRoom(conn, text.length);
      conn.outLen += ob.write(text, conn.outLen, 'latin1');
    } else {
      if (conn.okRun !== 0) this.endOkRun(conn);
      conn.out += text;
    }
    conn.outBytes += text.length;
    this.markDirty(conn);
  }

  /** Queues the bytes src[a, b) (copied) for the connection: the bulk deliveries' output. */
  sendBytes(conn: Connection, src: Uint8Array, a: number, b: number): void {
    if (conn.slots !== null) {
      conn.slots.push(Buffer.from(src.buffer, src.byteOffset + a, b - a).toString('latin1'));
      return;
    }
    const n = b - a;
    const ob = this.outRoom(conn, n);
    if (src instanceof Buffer) src.copy(ob, conn.outLen, a, b);
    else ob.set(src.subarray(a, b), conn.outLen);
    conn.outLen += n;
    conn.outBytes += n;
    this.markDirty(conn);
    // A busy turn can bring one receiver megabytes: written as it goes, so output buffers stay small and pooled.
    if (conn.outLen >= OUT_EARLY) this.flushNow(conn);
  }

  /**
   * The connection's output buffer with room for `n` more bytes after what is queued. The first call of a turn
   * switches the connection to byte output: its queued text and `[OK:DATA_SENT]` run move into the buffer.
   */
  private outRoom(conn: Connection, n: number): Buffer {
    let ob = conn.outBuf;
    const ok = conn.okRun;
    const need = conn.outLen + conn.out.length + ok * OK_DATA_SENT.length + n;
    if (ob === null || need > ob.length) {
      const bigger = this.outPool.take(need);
      if (ob !== null) {
        ob.copy(bigger, 0, 0, conn.outLen);
        this.outPool.give(ob);
      } else {
        conn.outLen = conn.out.length === 0 ? 0 : bigger.write(conn.out, 0, 'latin1');
        conn.out = '';
      }
      conn.outBuf = bigger;
      ob = bigger;
    }
    if (ok !== 0) {
      conn.okRun = 0;
      conn.outLen += fillOk(ob, conn.outLen, ok);
    }
    return ob;
  }

  /**
   * `[OK:DATA_SENT]`: a pipelining sender gets thousands in a row, so they are counted and written as one
   * repeated string instead of one rope node each.
   */
  sendDataSent(conn: Connection): void {
    if (conn.slots !== null) {
      conn.slots.push(OK_DATA_SENT);
      return;
    }
    conn.okRun++;
    conn.outBytes += OK_DATA_SENT.length;
    this.markDirty(conn);
  }

  /** `count` times sendDataSent (the sender's replies to a run of pushes). */
  sendDataSentRun(conn: Connection, count: number): void {
    if (conn.slots !== null) {
      for (let i = 0; i < count; i++) conn.slots.push(OK_DATA_SENT);
      return;
    }
    conn.okRun += count;
    conn.outBytes += OK_DATA_SENT.length * count;
    this.markDirty(conn);
  }

  /** Reserves the place of an answer another thread decides; later output waits behind it. */
  deferReply(conn: Connection): number {
    if (conn.slots === null) conn.slots = [];
    conn.slots.push(null);
    return conn.slotBase + conn.slots.length - 1;
  }

  /** Fills a reserved place and releases every output that was waiting only for it. */
  resolveReply(conn: Connection, token: number, text: string): void {
    const slots = conn.slots;
    if (slots === null || conn.closed) return;
    slots[token - conn.slotBase] = text;
    // Entries before `head` went out already; replies mostly come back in order, so this moves the head by one
    // (no shifting of thousands of entries per reply while a pipelining device waits for them).
    const head = conn.slotHead;
    let n = head;
    while (n < slots.length && slots[n] !== null) n++;
    if (n === head) return;
    let ready = '';
    for (let k = head; k < n; k++) ready += slots[k];
    if (n === slots.length) {
      // Nothing reserved is outstanding: numbering may start over (and the connection's rare fields go back to idle).
      conn.slots = null;
      conn.slotBase = 0;
      conn.slotHead = 0;
    } else if (n >= 1024 && 2 * n >= slots.length) {
      slots.splice(0, n); // drop what went out, now and then
      conn.slotBase += n;
      conn.slotHead = 0;
    } else conn.slotHead = n;
    const saved = conn.slots;
    conn.slots = null;
    this.send(conn, ready);
    conn.slots = saved;
  }

  /** Resolves the reply the supervisor owed for request `req`. */
  private settleDeferred(req: number, text: string): void {
    const wait = this.deferred.get(req);
    if (wait === undefined) return;
    this.deferred.delete(req);
    this.resolveReply(wait.conn, wait.token, text);
  }

  /** §5 Hold: allowed by the account's plan. */
  holdAllowed(acct: Account): boolean {
    const u = this.config.USER;
    return planValue(u['4HOLDPUSH'], acct.level) === 1 && planValue(u['5HOLDBUFFER'], acct.level) > 0;
  }

  /**
   * Holds a push for a device this shard sees offline; `conn` (if given) gets [OK:DATA_HELD], [FAIL:REM_ID], or
   * [OK:DATA_SENT] when the owner finds it registered meanwhile, in order. It goes through the account's owner
   * shard, which orders it with the device's registration (and so with the fetch of its backlog).
   */
  /**
   * Cluster mode: a group push's members not on this node go to the supervisor, which routes each to the node
   * holding it (or holds it, when the plan holds); the reply, in its place, counts the ones routed.
   */
  routeGroup(
    conn: Connection,
    acct: Account,
    data: string,
    ids: string[],
    delivered: number,
    total: number,
    target: number,
    friends: boolean,
  ): void {
    const req = ++this.reqSeq;
    this.groups.set(req, { conn, token: this.deferReply(conn), delivered, total, target });
    this.control.ops.push(OP.GROUP_ROUTE, req, acct.id, data, acct.level, friends ? 1 : 0, ids.length, ...ids);
    this.scheduleFlush();
  }

  hold(conn: Connection | null, acct: Account, id: string, data: string): void {
    let req = 0;
    if (conn !== null) {
      req = ++this.reqSeq;
      this.deferred.set(req, { conn, token: this.deferReply(conn) });
    }
    const owner = ownerShard(acct.id, this.shards);
    if (owner === this.index) this.routeHold(this.index, req, acct, id, data);
    else {
      const link = this.links[owner];
      // The owner is restarting: nothing can register this ID meanwhile, so store it directly.
      if (link === undefined) this.control.ops.push(OP.HOLD, req, acct.id, id, data, acct.level, this.index);
      else link.ops.push(OP.HOLD_ROUTE, req, acct.id, id, data, acct.level);
      this.scheduleFlush();
    }
  }

  /** On the owner shard: deliver when the ID is registered by now, else store it through the supervisor. */
  private routeHold(origin: number, req: number, acct: Account, id: string, data: string): void {
    const handle = acct.devices.get(id);
    if (handle !== undefined && isLive(this.status, handle)) {
      const target = shardOf(handle);
      if (target === this.index) {
        const conn = this.conns[slotOf(handle)];
        if (conn?.holds(handle) && !conn.closed) this.deliverLocal(conn, `PUSH:${data}\r\n`);
      } else this.links[target]?.ops.push(OP.DELIVER, handle, data);
      this.answerHold(origin, req, 'DATA_SENT');
      this.scheduleFlush();
      return;
    }
    this.metrics.heldPushes++;
    this.control.ops.push(OP.HOLD, req, acct.id, id, data, acct.level, origin);
    this.scheduleFlush();
  }

  private answerHold(origin: number, req: number, result: string): void {
    if (req === 0) return;
    if (origin === this.index) this.settleDeferred(req, holdReply(result));
    else this.links[origin]?.ops.push(OP.HOLD_RESULT, req, result);
  }

  /** Owner hook: a registration was accepted; the supervisor sends its held backlog to the device's shard. */
  registered(acct: Account, id: string, handle: number): void {
    if (!this.holdAllowed(acct)) return;
    this.control.ops.push(OP.HELD_FETCH, acct.id, id, handle, acct.level);
    this.scheduleFlush();
  }

  /** The held backlog of a registration: into its reserved place, or held again if the device left. */
  private heldBacklog(handle: number, accountId: number, id: string, level: number, data: string[]): void {
    const conn = this.conns[slotOf(handle)];
    if (conn?.holds(handle) && !conn.closed && conn.backlogToken >= 0) {
      const token = conn.backlogToken;
      conn.backlogToken = -1;
      let text = '';
      for (const d of data) text += `PUSH:${d}\r\n`;
      conn.received += data.length;
      this.resolveReply(conn, token, text);
      return;
    }
    const acct = this.accounts.get(accountId);
    acct.level = level;
    for (const d of data) this.hold(null, acct, id, d);
  }

  private endOkRun(conn: Connection): void {
    conn.out += conn.okRun === 1 ? OK_DATA_SENT : OK_DATA_SENT.repeat(conn.okRun);
    conn.okRun = 0;
  }

  /** True when the connection may take more output (below NODE.MAX_OUTBUF). */
  hasRoom(conn: Connection): boolean {
    return conn.outBytes + conn.socket.writableLength <= this.maxOut;
  }

  /** Delivers a message line to a local connection; false when its buffer is full. */
  deliverLocal(conn: Connection, line: string): boolean {
    // A device receiving a RAW stream takes no messages into it (§7: the channel is transparent).
    if (!this.hasRoom(conn) || (conn.raw !== null && conn.raw.in !== 0)) return false;
    this.metrics.deliveries++;
    conn.received++;
    this.send(conn, line);
    return true;
  }

  /**
   * A delivery promised by another shard (the FULL flag it read was clear): always queued. The overshoot
   * is bounded by the link's in-flight limit; the flush then sets FULL if the socket cannot take it.
   */
  acceptRemote(handle: number, line: string, messages: number): void {
    const conn = this.conns[slotOf(handle)];
    if (conn === undefined || !conn.holds(handle) || conn.closed) return;
    if (conn.raw !== null && conn.raw.in !== 0) return; // receiving a RAW stream: nothing is injected
    this.metrics.deliveries += messages;
    conn.received += messages;
    this.send(conn, line);
  }

  /** acceptRemote for a DELIVER_BYTES op: `messages` delivered lines, `side[a..b)` (copied out). */
  acceptRemoteBytes(handle: number, side: Buffer, a: number, b: number, messages: number): void {
    const conn = this.conns[slotOf(handle)];
    if (conn === undefined || !conn.holds(handle) || conn.closed) return;
    if (conn.raw !== null && conn.raw.in !== 0) return;
    this.metrics.deliveries += messages;
    conn.received += messages;
    this.sendBytes(conn, side, a, b);
  }

  private clearFull(conn: Connection): void {
    conn.fullSince = 0;
    if (conn.handle !== 0) clearFlag(this.table, conn.slot, FULL);
  }

  /** Queues one op for the supervisor (rare paths; sent with this turn's batches). */
  toSupervisor(...ops: unknown[]): void {
    for (const x of ops) this.control.ops.push(x);
    this.scheduleFlush();
  }

  scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(this.flushBound);
  }

  private readonly flushBound = (): void => this.flush();

  /** The reader's shard answered: stream the waiting bytes when linked, else parse them as commands. */
  unblockAfterRaw(conn: Connection, linked: boolean): void {
    if (!linked) return this.unblock(conn);
    conn.blocked = false;
    this.afterInput(conn);
    this.resume(conn, PAUSE.BLOCKED);
  }

  /** Writes the connection's queued text now (flush, RAW bytes that must follow it, closing). */
  flushNow(conn: Connection): void {
    if (conn.outBytes === 0) return;
    this.metrics.bytesOut += conn.outBytes;
    conn.outBytes = 0;
    const socket = conn.socket;
    if (conn.outBuf !== null) {
      const ob = conn.okRun === 0 ? conn.outBuf : this.outRoom(conn, 0);
      const len = conn.outLen;
      conn.outBuf = null;
      conn.outLen = 0;
      if (socket.destroyed) return;
      // Back to the pool once written (the callback runs when the socket is done with it).
      socket.write(ob.subarray(0, len), (ob as PooledBuffer)[RELEASE]);
      return;
    }
    if (conn.out.length === 0) {
      // Only a run of [OK:DATA_SENT] (a pipelining sender): slices of one constant buffer, nothing to build.
      let n = conn.okRun;
      conn.okRun = 0;
      if (socket.destroyed) return;
      if (n > 0 && n <= OK_VIEWS.length) socket.write(OK_VIEWS[n - 1]!);
      else {
        while (n > 0) {
          const k = Math.min(n, OK_LINES);
          socket.write(OK_RUN.subarray(0, k * OK_DATA_SENT.length));
          n -= k;
        }
      }
      return;
    }
    if (conn.okRun !== 0) this.endOkRun(conn);
    const text = conn.out;
    conn.out = '';
    if (!socket.destroyed) socket.write(text, 'latin1');
  }

  /** Queues the connection's output for this turn's flush (once per turn). */
  private markDirty(conn: Connection): void {
    if (conn.queued) return;
    conn.queued = true;
    this.dirty[this.dirtyLen++] = conn;
    this.scheduleFlush();
  }

  /** One write per socket per turn, then one batch per link. */
  flush(): void {
    this.flushScheduled = false;
    const n = this.dirtyLen;
    if (n > 0) {
      const dirty = this.dirty;
      this.dirty = this.dirtySpare;
      this.dirtySpare = dirty;
      this.dirtyLen = 0;
      for (let i = 0; i < n; i++) {
        const conn = dirty[i]!;
        dirty[i] = null; // no closed connection stays reachable from here
        conn.queued = false;
        if (conn.closed) {
          conn.out = '';
          conn.outBuf = null;
          conn.outLen = 0;
          conn.outBytes = 0;
          conn.okRun = 0;
          continue;
        }
        this.flushNow(conn);
        // FULL means what the socket could not take: over the bound after writing, until it drains.
        if (conn.socket.writableLength > this.maxOut) this.onBackedUp(conn);
      }
    }
    // The supervisor's batch first: a HOLD posted here must not trail the DIR_ACK that lets a registration finish.
    if (this.control.pending) this.control.flush();
    for (let p = 0; p < this.links.length; p++) {
      const link = this.links[p];
      if (link?.pending) {
        link.flush();
        this.metrics.batchesOut++;
      }
    }
  }

  /** The device is not reading: stop reading from it too, until its socket drains. */
  private onBackedUp(conn: Connection): void {
    if (conn.pauses & PAUSE.OUTPUT) return;
    conn.fullSince = Date.now();
    if (conn.handle !== 0) setFlag(this.table, conn.slot, FULL);
    this.pause(conn, PAUSE.OUTPUT);
    conn.socket.once('drain', () => {
      this.clearFull(conn);
      this.resume(conn, PAUSE.OUTPUT);
    });
  }

  /** Queues a delivery to a handle on another shard; pauses the producer when that link is congested. */
  deliverRemote(producer: Connection, shard: number, handle: number, data: string): void {
    const link = this.links[shard]!;
    const ops = link.ops;
    // Consecutive deliveries to one handle travel as one op: the receiver adds the first "PUSH:" and the
    // last CRLF, the lines in between are joined here.
    const d = link.lastData;
    if (link.lastHandle === handle && d === ops.length - 1) {
      const joined = `${ops[d] as string}\r\nPUSH:${data}`;
      if (link.lastRun === 1) {
        // [DELIVER, handle, data] becomes [DELIVER_N, handle, 2, joined]: the op is the last one, so it grows in place.
        ops[d - 2] = OP.DELIVER_N;
        ops[d] = 2;
        ops.push(joined);
        link.lastData = d + 1;
      } else {
        ops[d - 1] = link.lastRun + 1;
        ops[d] = joined;
      }
      link.lastRun++;
    } else {
      ops.push(OP.DELIVER, handle, data);
      link.lastHandle = handle;
      link.lastData = ops.length - 1;
      link.lastRun = 1;
    }
    this.scheduleFlush();
    if (link.congested) this.pauseForLink(producer, link);
  }

  /**
   * `count` consecutive deliveries to one handle on another shard, the delivered lines `src[a..b)` (copied into the
   * link's side buffer). A run that continues the last one queued to the same handle grows that op.
   */
  deliverRemoteBytes(
    producer: Connection,
    shard: number,
    handle: number,
    count: number,
    src: Buffer,
    a: number,
    b: number,
  ): void {
    const link = this.links[shard]!;
    const at = link.putSide(src, a, b);
    const end = at + b - a;
    const ops = link.ops;
    const side = link.sides.length - 1;
    const last = link.lastBytes;
    if (last === ops.length - 6 && ops[last + 1] === handle && ops[last + 3] === side && ops[last + 5] === at) {
      (ops[last + 2] as number) += count;
      ops[last + 5] = end;
    } else {
      link.lastBytes = ops.length;
      ops.push(OP.DELIVER_BYTES, handle, count, side, at, end);
    }
    this.scheduleFlush();
    if (link.congested) this.pauseForLink(producer, link);
  }

  /** DELIVER_BYTES for several handles on one other shard: the same `count` lines, `src[a..b)`, to each. */
  deliverRemoteBytesMany(
    producer: Connection,
    shard: number,
    handles: number[],
    count: number,
    src: Buffer,
    a: number,
    b: number,
  ): void {
    const link = this.links[shard]!;
    const at = link.putSide(src, a, b);
    const ops = link.ops;
    ops.push(OP.DELIVER_BYTES_MANY, count, link.sides.length - 1, at, at + b - a, handles.length);
    for (let i = 0; i < handles.length; i++) ops.push(handles[i]);
    this.scheduleFlush();
    if (link.congested) this.pauseForLink(producer, link);
  }

  /** Queues one payload for several handles on another shard. */
  deliverRemoteMany(producer: Connection, shard: number, handles: number[], data: string): void {
    const link = this.links[shard]!;
    const ops = link.ops;
    ops.push(OP.DELIVER_MANY, data, handles.length);
    for (let i = 0; i < handles.length; i++) ops.push(handles[i]);
    this.scheduleFlush();
    if (link.congested) this.pauseForLink(producer, link);
  }

  private pauseForLink(conn: Connection, link: PortLink): void {
    link.noteCongested();
    if ((conn.pauses & PAUSE.LINK) === 0) this.metrics.linkPauses++;
    this.pause(conn, PAUSE.LINK);
    this.linkPaused.add(conn);
  }

  /** Resumes the producers paused for link congestion once no link is congested any more. */
  private onDecongest(): void {
    if (this.links.some((l) => l?.congested)) return;
    for (const conn of this.linkPaused) this.resume(conn, PAUSE.LINK);
    this.linkPaused.clear();
  }

  // ---------------------------------------------------------------- liveness

  /**
   * Timeouts, liveness and slow consumers, one slice of the connections per call: a pass over all of them takes
   * sweepSlices calls, one sweep period. A whole pass at once held the event loop for about a millisecond per 15,000
   * connections, every second, and every message in flight meanwhile waited for it.
   */
  private sweep(): void {
    const now = Date.now();
    const reducer = this.reducer;
    if (reducer?.tick(now)) this.log.debug(collectionLog(reducer), 'idle heap collected');
    const tick = this.tickMs;
    const conns = this.conns;
    let from = this.sweepNext;
    if (from >= conns.length) from = 0;
    if (from === 0 && this.config.PServer.MAX_RSS_MB > 0) this.rss = process.memoryUsage.rss();
    const to = Math.min(conns.length, from + Math.ceil(conns.length / this.sweepSlices));
    this.sweepNext = to;
    for (let i = from; i < to; i++) {
      const conn = conns[i];
      if (conn === undefined || conn.closed || conn.http) continue;
      if (!conn.commanded && now - conn.connectedAt >= this.waitMs) {
        conn.socket.destroy();
        continue;
      }
      // §2 liveness: a connection silent for a tick gets [SYNC:...], again every tick while it stays silent. One
      // still without an ID at its second tick is closed; a registered one silent for two ticks (it let a SYNC go
      // unanswered for a whole tick) missed liveness: it is closed, which reports it OFFLINE and fires its will.
      // A connection the server stopped reading, or a RAW stream (§7: no SYNC ever goes into it), is exempt.
      if (conn.handle === 0 && conn.pendingHandle === 0 && now - conn.connectedAt >= 2 * tick) {
        conn.socket.destroy();
        continue;
      }
      if (conn.pauses === 0 && (conn.raw === null || (conn.raw.in === 0 && conn.raw.out === 0))) {
        const quiet = now - Math.max(conn.syncAt, conn.lastRx);
        if (quiet >= tick) {
          if (conn.handle !== 0 && now - conn.lastRx >= 2 * tick) {
            this.metrics.livenessClosed++;
            this.log.debug({ id: conn.id }, 'missed liveness: connection closed');
            this.closeNow(conn);
            continue;
          }
          conn.syncAt = now;
          this.send(conn, syncLine(new Date(now)));
        }
      }
      if (conn.fullSince !== 0 && now - conn.fullSince >= this.deadlineMs) {
        if (conn.outBytes + conn.socket.writableLength > this.maxOut) {
          this.log.info({ id: conn.id }, 'slow consumer disconnected');
          this.closeNow(conn);
        } else this.clearFull(conn);
      }
    }
  }

  // ---------------------------------------------------------------- cross-thread

  private attachPeer(peer: number, port: import('node:worker_threads').MessagePort): void {
    const link = new PortLink(
      peer,
      port,
      this.config.PServer.LINK_MAX_BYTES,
      (ops, from) => this.onPeerBatch(ops, from),
      (msg) => {
        if (msg.kind === 'raw') rawChunk(this, msg.to, msg.from, msg.data);
      },
    );
    link.onDecongest = () => this.onDecongest();
    this.links[peer] = link;
    // Tell the (possibly restarted) peer about every live registration here.
    const entries: (number | string)[] = [];
    for (const conn of this.conns) {
      if (conn === undefined || conn.handle === 0 || conn.account === null || conn.id === null) continue;
      entries.push(conn.account.id, conn.id, conn.handle, conn.account.level);
    }
    link.ops.push(OP.SNAPSHOT, entries.length / 4, ...entries);
    // Registrations parked while that peer was down go out now, after the snapshot.
    for (let i = this.parkedRegs.length - 1; i >= 0; i--) {
      const req = this.parkedRegs[i]!;
      const p = this.pendingRegs.get(req);
      if (p === undefined) this.parkedRegs.splice(i, 1);
      else if (ownerShard(p.account.id, this.shards) === peer) {
        this.parkedRegs.splice(i, 1);
        this.sendRegistration(req);
      }
    }
    this.scheduleFlush();
  }

  private onPortMessage(msg: PortMessage): void {
    if (msg.kind === 'peer-port') this.attachPeer(msg.peer, msg.port);
  }

  private onPeerBatch(ops: unknown[], link: PortLink): void {
    const n = ops.length;
    let i = 0;
    let dirOps = 0;
    while (i < n) {
      const op = ops[i++] as number;
      switch (op) {
        case OP.DELIVER: {
          const handle = ops[i++] as number;
          this.acceptRemote(handle, `PUSH:${ops[i++] as string}\r\n`, 1);
          break;
        }
        case OP.DELIVER_N: {
          const handle = ops[i++] as number;
          const count = ops[i++] as number;
          this.acceptRemote(handle, `PUSH:${ops[i++] as string}\r\n`, count);
          break;
        }
        case OP.DELIVER_BYTES: {
          const handle = ops[i++] as number;
          const count = ops[i++] as number;
          const side = link.received[ops[i++] as number]!;
          const a = ops[i++] as number;
          this.acceptRemoteBytes(handle, side, a, ops[i++] as number, count);
          break;
        }
        case OP.DELIVER_BYTES_MANY: {
          const count = ops[i++] as number;
          const side = link.received[ops[i++] as number]!;
          const a = ops[i++] as number;
          const b = ops[i++] as number;
          const n = ops[i++] as number;
          for (let k = 0; k < n; k++) this.acceptRemoteBytes(ops[i++] as number, side, a, b, count);
          break;
        }
        case OP.DELIVER_MANY: {
          const line = `PUSH:${ops[i++] as string}\r\n`;
          const count = ops[i++] as number;
          for (let k = 0; k < count; k++) this.acceptRemote(ops[i++] as number, line, 1);
          break;
        }
        case OP.REG: {
          const req = ops[i++] as number;
          const acct = this.accounts.get(ops[i++] as number);
          const id = ops[i++] as string;
          const handle = ops[i++] as number;
          acct.level = ops[i++] as number;
          this.ownership.register(acct, id, handle, link.peer, req);
          break;
        }
        case OP.REG_RESULT: {
          const req = ops[i++] as number;
          this.completeRegistration(req, ops[i++] as FailCode | '');
          break;
        }
        case OP.UNREG: {
          const acct = this.accounts.get(ops[i++] as number);
          const id = ops[i++] as string;
          this.ownership.unregister(acct, id, ops[i++] as number);
          break;
        }
        case OP.DIR_SET: {
          const acct = this.accounts.get(ops[i++] as number);
          const id = ops[i++] as string;
          const handle = ops[i++] as number;
          const prev = acct.devices.get(id);
          acct.devices.set(id, handle);
          if (prev !== undefined && prev !== handle) this.presence(acct, id, false);
          if (prev !== handle) this.presence(acct, id, true);
          dirOps++;
          break;
        }
        case OP.DIR_DEL: {
          const acct = this.accounts.get(ops[i++] as number);
          const id = ops[i++] as string;
          const handle = ops[i++] as number;
          if (acct.devices.get(id) === handle) {
            acct.devices.delete(id);
            this.presence(acct, id, false);
          }
          dirOps++;
          break;
        }
        case OP.DIR_ACK:
          link.dirAcked = ops[i++] as number;
          this.ownership.acknowledged();
          break;
        case OP.KICK:
          this.kick(ops[i++] as number);
          break;
        case OP.CREDIT:
          link.credit(ops[i++] as number);
          break;
        case OP.HOLD_ROUTE: {
          const req = ops[i++] as number;
          const acct = this.accounts.get(ops[i++] as number);
          const id = ops[i++] as string;
          const data = ops[i++] as string;
          acct.level = ops[i++] as number;
          this.routeHold(link.peer, req, acct, id, data);
          break;
        }
        case OP.HOLD_RESULT: {
          const req = ops[i++] as number;
          this.settleDeferred(req, holdReply(ops[i++] as string));
          break;
        }
        case OP.RAW_OPEN: {
          const reader = ops[i++] as number;
          rawOpenRequest(this, reader, ops[i++] as number);
          break;
        }
        case OP.RAW_OPEN_RESULT: {
          const writer = ops[i++] as number;
          const reader = ops[i++] as number;
          rawOpenResult(this, writer, reader, ops[i++] as string);
          break;
        }
        case OP.RAW_ACK: {
          const writer = ops[i++] as number;
          rawAck(this, writer, ops[i++] as number);
          break;
        }
        case OP.RAW_CLOSE: {
          const handle = ops[i++] as number;
          const other = ops[i++] as number;
          rawClosed(this, handle, other, ops[i++] as number);
          break;
        }
        case OP.SNAPSHOT: {
          const count = ops[i++] as number;
          for (let k = 0; k < count; k++) {
            const acct = this.accounts.get(ops[i++] as number);
            const id = ops[i++] as string;
            const handle = ops[i++] as number;
            const level = ops[i++] as number;
            if (ownerShard(acct.id, this.shards) === this.index) acct.level = level;
            acct.devices.set(id, handle);
          }
          break;
        }
        default:
          this.log.error({ op, peer: link.peer }, 'unknown op from peer; batch dropped');
          i = n;
      }
    }
    if (dirOps > 0) {
      link.dirApplied += dirOps;
      link.dirAckDue = true;
    }
    this.scheduleFlush();
  }

  private onControl(ops: unknown[]): void {
    const n = ops.length;
    let i = 0;
    while (i < n) {
      const op = ops[i++] as number;
      switch (op) {
        case OP.KEY_RESULT: {
          const req = ops[i++] as number;
          const accountId = ops[i++] as number;
          const key = ops[i++] as string;
          const level = ops[i++] as number;
          const wait = this.keyWaits.get(req);
          this.keyWaits.delete(req);
          if (accountId > 0) {
            const acct = this.accounts.setKey(accountId, key, level);
            if (wait?.email) this.accounts.rememberEmail(wait.email, acct);
          }
          if (wait !== undefined && !wait.conn.closed) this.unblock(wait.conn);
          break;
        }
        case OP.ACCOUNT_UPDATE: {
          const accountId = ops[i++] as number;
          const key = ops[i++] as string;
          const level = ops[i++] as number;
          const email = ops[i++] as string;
          const acct = this.accounts.setKey(accountId, key === '' ? null : key, level);
          if (key === '') this.dropAccount(accountId);
          else if (this.config.TLS.PSK) this.accounts.rememberEmail(email, acct);
          break;
        }
        case OP.CREDIT:
          i++;
          break;
        case OP.TOPOLOGY: {
          const acct = this.accounts.get(ops[i++] as number);
          const [change, next] = decodeChange(ops, i);
          i = next;
          try {
            applyChange(acct.topologyForWrite(), change);
          } catch (err) {
            this.log.error({ err, account: acct.id, change: change.op }, 'topology replica diverged');
          }
          break;
        }
        case OP.TOPOLOGY_RESET: {
          const acct = this.accounts.find(ops[i++] as number);
          if (acct) acct.topology = null;
          break;
        }
        case OP.HOLD_RESULT: {
          const req = ops[i++] as number;
          this.settleDeferred(req, holdReply(ops[i++] as string));
          break;
        }
        case OP.STATUS_RESULT: {
          const req = ops[i++] as number;
          this.settleDeferred(req, statusReply(ops[i++] as number));
          break;
        }
        case OP.HELD_DATA: {
          const handle = ops[i++] as number;
          const accountId = ops[i++] as number;
          const id = ops[i++] as string;
          const level = ops[i++] as number;
          const count = ops[i++] as number;
          const data = ops.slice(i, i + count) as string[];
          i += count;
          this.heldBacklog(handle, accountId, id, level, data);
          break;
        }
        case OP.OUTBOX_RESULT: {
          const req = ops[i++] as number;
          const result = ops[i++] as FailCode | '';
          const wait = this.outboxWaits.get(req);
          this.outboxWaits.delete(req);
          if (wait === undefined || wait.conn.closed) break;
          if (result === '') this.send(wait.conn, wait.kind === 'mail' ? OK_MAIL_SENT : OK_SMS_SENT);
          else this.fail(wait.conn, result);
          this.unblock(wait.conn);
          break;
        }
        case OP.HTTP_RESPONSE: {
          const id = ops[i++] as number;
          const response = JSON.parse(ops[i++] as string) as ApiResponse;
          const res = this.httpWaits.get(id);
          this.httpWaits.delete(id);
          if (res !== undefined) writeResponse(res, response);
          break;
        }
        case OP.SYNC:
          this.control.ops.push(OP.SYNC_ACK, ops[i++] as number);
          this.scheduleFlush();
          break;
        case OP.DEVICES_QUERY: {
          const req = ops[i++] as number;
          this.answerDevices(req, ops[i++] as number);
          break;
        }
        case OP.API_PUSH: {
          const req = ops[i++] as number;
          const accountId = ops[i++] as number;
          const data = ops[i++] as string;
          const count = ops[i++] as number;
          this.operatorPush(req, accountId, data, ops.slice(i, i + count) as string[]);
          i += count;
          break;
        }
        case OP.ACCOUNT_STATS: {
          const req = ops[i++] as number;
          this.answerAccountStats(req, ops[i++] as number);
          break;
        }
        case OP.NODE_SECRET: {
          const hex = ops[i++] as string;
          this.nodeSecret = hex === '' ? null : Buffer.from(hex, 'hex');
          break;
        }
        case OP.RAW_LOCATED: {
          const writer = ops[i++] as number;
          const id = ops[i++] as string;
          const host = ops[i++] as string;
          const port = ops[i++] as number;
          rawLocated(this, writer, id, host, port, ops[i++] as string);
          this.scheduleFlush();
          break;
        }
        case OP.PRESENCE_REMOTE: {
          // Cluster mode: a device of the account came or went on another node; tell this shard's watchers.
          const acct = this.accounts.find(ops[i++] as number);
          const id = ops[i++] as string;
          const online = ops[i++] === 1;
          if (acct !== undefined) presenceEvent(this, acct, id, online);
          this.scheduleFlush();
          break;
        }
        case OP.GROUP_RESULT: {
          const req = ops[i++] as number;
          const routed = ops[i++] as number;
          const more = ops[i++] as number;
          const g = this.groups.get(req);
          this.groups.delete(req);
          if (g === undefined) break;
          if (routed < 0) this.resolveReply(g.conn, g.token, FAIL_LINE.FANOUT_LIMIT);
          else {
            this.metrics.delivered[g.target]! += routed;
            this.resolveReply(g.conn, g.token, groupReply(g.delivered + routed, g.total + more));
          }
          break;
        }
        case OP.CLAIM_RESULT: {
          const req = ops[i++] as number;
          const ok = ops[i++] === 1;
          const done = this.claims.get(req);
          this.claims.delete(req);
          done?.(ok);
          break;
        }
        case OP.KICK_ID: {
          const req = ops[i++] as number;
          const handle = this.accounts.find(ops[i++] as number)?.devices.get(ops[i++] as string);
          const live = handle !== undefined && isLive(this.status, handle);
          if (live) this.kick(handle);
          this.control.ops.push(OP.KICK_RESULT, req, live ? 1 : 0);
          this.scheduleFlush();
          break;
        }
        case OP.METRICS_QUERY: {
          const pairs = this.metrics.snapshot(this.connectionCount);
          this.control.ops.push(OP.METRICS_RESULT, ops[i++] as number, pairs.length / 2, ...pairs);
          this.scheduleFlush();
          break;
        }
        case OP.PEER_DOWN:
          this.onPeerDown(ops[i++] as number);
          break;
        case OP.SHUTDOWN:
          void this.stop().then(() => {
            this.control.ops.push(OP.STOPPED);
            this.control.flush();
          });
          break;
        case OP.CRASH:
          setImmediate(() => {
            throw new Error('shard crash requested by the supervisor (test hook)');
          });
          break;
        default:
          this.log.error({ op }, 'unknown control op; batch dropped');
          i = n;
      }
    }
  }

  /** Live IDs of an account, from this shard's replica (the owner's is authoritative). */
  private answerDevices(req: number, accountId: number): void {
    const acct = this.accounts.find(accountId);
    const out: (string | number)[] = [];
    if (acct) {
      for (const [id, handle] of acct.devices) {
        if (isLive(this.status, handle)) out.push(id, shardOf(handle));
      }
    }
    this.control.ops.push(OP.DEVICES_RESULT, req, out.length / 2, ...out);
    this.scheduleFlush();
  }

  /**
   * On the owner shard: an operator's test push (console, API) to IDs: delivered to each live one, routed to
   * the hold for offline ones when the plan holds. Answers [delivered, count, ...IDs routed to the hold].
   */
  private operatorPush(req: number, accountId: number, data: string, ids: string[]): void {
    const acct = this.accounts.find(accountId);
    let delivered = 0;
    const held: string[] = [];
    if (acct !== undefined) {
      const holding = this.holdAllowed(acct) || this.clustered;
      for (const id of ids) {
        const handle = acct.devices.get(id);
        if (handle !== undefined && isLive(this.status, handle)) {
          const target = shardOf(handle);
          if (target === this.index) {
            const conn = this.conns[slotOf(handle)];
            if (conn?.holds(handle) && !conn.closed && this.deliverLocal(conn, `PUSH:${data}\r\n`)) delivered++;
          } else if (this.links[target] !== undefined && !(liveFlags(this.status, handle) & FULL)) {
            this.links[target].ops.push(OP.DELIVER, handle, data);
            delivered++;
          }
        } else if (holding) {
          this.routeHold(this.index, 0, acct, id, data);
          held.push(id);
        }
      }
    }
    // req 0: a push another node routed here; nobody waits for the count.
    if (req !== 0) this.control.ops.push(OP.API_PUSH_RESULT, req, delivered, held.length, ...held);
    this.scheduleFlush();
  }

  /** Per-device counters of an account's registered connections on this shard (operator console). */
  private answerAccountStats(req: number, accountId: number): void {
    const out: (string | number)[] = [];
    for (const conn of this.conns) {
      if (conn === undefined || conn.handle === 0 || conn.account?.id !== accountId || conn.id === null) continue;
      out.push(conn.id, conn.sent, conn.received, conn.connectedAt);
    }
    this.control.ops.push(OP.ACCOUNT_STATS_RESULT, req, out.length / 4, ...out);
    this.scheduleFlush();
  }

  /** A deleted account: close its connections on this shard. */
  private dropAccount(accountId: number): void {
    for (const conn of this.conns) {
      if (conn !== undefined && conn.account !== null && conn.account.id === accountId) this.closeNow(conn);
    }
  }

  private onPeerDown(peer: number): void {
    const link = this.links[peer];
    if (link !== undefined) {
      this.links[peer] = undefined;
      link.close();
    }
    for (const acct of this.accounts.values()) {
      for (const [id, handle] of acct.devices) {
        if (shardOf(handle) !== peer) continue;
        acct.devices.delete(id);
        this.presence(acct, id, false);
      }
    }
    this.ownership.acknowledged();
    for (const [req, p] of this.pendingRegs) {
      if (ownerShard(p.account.id, this.shards) === peer && !this.parkedRegs.includes(req)) this.parkedRegs.push(req);
    }
    this.onDecongest();
  }

  /** For tests and metrics: connections currently open on this shard. */
  get connectionCount(): number {
    let n = 0;
    for (const c of this.conns) if (c !== undefined) n++;
    return n;
  }
}

function noop(): void {}

/** Reads up to this many bytes may stay alive as long as RETDATA entries sliced from them (see detachCache): at most
 * NODE.DATA_CACHE of them per connection, a single line each in the usual case. */
const KEEP_READ = 256;

/** The first `n` bytes of `buf` in memory of their own (a whole ArrayBuffer: it can move to another thread). */
function copyOut(buf: Buffer, n: number): Buffer {
  const own = Buffer.allocUnsafeSlow(n);
  buf.copy(own, 0, 0, n);
  return own;
}

/** A device socket carries its connection, for the shared listeners. */
const CONN = Symbol('connection');
type ConnSocket = Socket & { [CONN]?: Connection };

/**
 * Output buffers: at least OUT_SIZE, powers of two. The pool keeps at most POOL_BYTES of them (so a burst leaves little
 * behind), enough for a group push's hundred receivers to each take one every turn: a buffer the pool cannot take
 * back is garbage in external memory, and a stream of those makes V8 run full collections.
 */
const OUT_SIZE = 16384;
const OUT_EARLY = 131072;
/** Slices of one sweep pass (at least 10 ms apart). */
const SWEEP_SLICES = 16;
const POOL_BYTES = 4 * 1024 * 1024;

/** A pooled output buffer carries the callback that gives it back (made once, not one closure per write). */
const RELEASE = Symbol('release');
interface PooledBuffer extends Buffer {
  [RELEASE]: () => void;
}

class OutPool {
  private readonly bufs: Buffer[] = [];
  private bytes = 0;

  take(min: number): Buffer {
    const pool = this.bufs;
    for (let i = pool.length - 1; i >= 0; i--) {
      const b = pool[i]!;
      if (b.length >= min) {
        pool[i] = pool[pool.length - 1]!;
        pool.pop();
        this.bytes -= b.length;
        return b;
      }
    }
    // Powers of two from OUT_SIZE, so that buffers grown for a big turn fit the next one.
    let size = OUT_SIZE;
    while (size < min) size *= 2;
    const b = Buffer.allocUnsafeSlow(size) as PooledBuffer;
    b[RELEASE] = () => this.give(b);
    return b;
  }

  give(b: Buffer): void {
    if (this.bytes + b.length > POOL_BYTES) return;
    this.bytes += b.length;
    this.bufs.push(b);
  }
}

/** [OK:DATA_SENT] lines, written as slices (never modified). */
const OK_LINES = 4096;
const OK_RUN = Buffer.from(OK_DATA_SENT.repeat(OK_LINES), 'latin1');
/** Slices of OK_RUN for the first few counts, made once: a device waiting for each reply gets one at a time. */
const OK_VIEWS = Array.from({ length: 16 }, (_, i) => OK_RUN.subarray(0, (i + 1) * OK_DATA_SENT.length));

/** Writes `n` [OK:DATA_SENT] lines into b at `at` (room checked by the caller); returns the bytes written. */
function fillOk(b: Buffer, at: number, n: number): number {
  let done = 0;
  while (n > 0) {
    const k = Math.min(n, OK_LINES);
    OK_RUN.copy(b, at + done, 0, k * OK_DATA_SENT.length);
    done += k * OK_DATA_SENT.length;
    n -= k;
  }
  return done;
}

/** The device's reply for a hold's outcome. */
function holdReply(result: string): string {
  if (result === 'DATA_HELD') return OK_DATA_HELD;
  if (result === 'DATA_SENT') return OK_DATA_SENT;
  return result === 'UNAVAILABLE' ? FAIL_LINE.UNAVAILABLE : FAIL_LINE.REM_ID;
}

/**
 * The peer's address without keeping it: Node caches a {address, family, port} object on every socket it is
 * asked for (~300 bytes per idle connection); the per-address counters need the string only now and then.
 */
function remoteAddress(socket: Socket): string {
  const addr = socket.remoteAddress ?? '';
  (socket as unknown as { _peername?: unknown })._peername = undefined;
  return addr;
}
