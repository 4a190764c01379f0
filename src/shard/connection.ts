// One device connection, owned end to end by the shard that accepted its socket.
// Kept small: an idle registered connection must cost little more than its socket (issue 2: ≤ 6 KB).

import type { Socket } from 'node:net';
import type { FramerState } from '../protocol/framer.ts';
import type { Mode } from '../protocol/secure.ts';
import type { Account } from '../routing/account.ts';
import type { Watch, Will } from './presence.ts';
import type { Route } from './push.ts';

/** An active STCP/DSTCP/HSTCP session (PROTOCOL.md §9). */
export interface Session {
  mode: Mode;
  account: Account;
  /** The server nonce of this activation. */
  rnd: string;
  /** STCP: the session key computed at activation, and the KEY it was computed from. */
  skey: string;
  keyUsed: string;
  /** HSTCP: the sequence number the next command must carry (1, 2, 3 ...). */
  seq: number;
}

/** RAW channel state (PROTOCOL.md §7), allocated on first use. */
export interface RawLink {
  /** Handle of the device this connection streams to (0: none). */
  out: number;
  /** That device's connection when it is on this shard. */
  outLocal: Connection | null;
  /** Cross-shard bytes sent and not yet accepted by the reader's socket. */
  inflight: number;
  /** The reader went away: the next write gets [FAIL:REM_LINK]. */
  broken: boolean;
  /** Handle of the device streaming to this connection (0: none). */
  in: number;
  /** Cluster mode, writer side: the stream to the node holding the reader (out is NODE_OUT once it is linked). */
  node: Socket | null;
  /** Cluster mode, reader side: this connection is another node's stream for one of its devices. */
  viaNode: boolean;
}

/** Why a socket is paused; reading resumes when no reason is left. */
export const PAUSE = { BLOCKED: 1, LINK: 2, OUTPUT: 4, RAW: 8 } as const;

/**
 * The fields most connections never use (KEY lookups, secure sessions, RAW, presence, replies decided elsewhere, TLS,
 * HTTP, slow consumers, unterminated lines), allocated on first use: an idle connection carries one null instead.
 */
class Rare {
  retryLine: string | null = null;
  missedKey: string | null = null;
  missedUid: string | null = null;
  session: Session | null = null;
  raw: RawLink | null = null;
  watches: Watch[] | null = null;
  will: Will | null = null;
  slots: (string | null)[] | null = null;
  slotBase = 0;
  slotHead = 0;
  backlogToken = -1;
  encrypted = false;
  http = false;
  fullSince = 0;
  idleListed = false;

  /** Every field back at its initial value: the connection can drop this object. */
  idle(): boolean {
    return (
      this.retryLine === null &&
      this.missedKey === null &&
      this.missedUid === null &&
      this.session === null &&
      this.raw === null &&
      this.watches === null &&
      this.will === null &&
      this.slots === null &&
      this.slotBase === 0 &&
      this.slotHead === 0 &&
      this.backlogToken === -1 &&
      !this.encrypted &&
      !this.http &&
      this.fullSince === 0 &&
      !this.idleListed
    );
  }
}

export class Connection implements FramerState {
  pending = '';
  discarding = false;
  readonly socket: Socket;
  readonly slot: number;
  /** Handle of the current registration, 0 when the connection holds no ID. */
  handle = 0;
  /** Handle of a registration the owner shard is still deciding. */
  pendingHandle = 0;
  id: string | null = null;
  account: Account | null = null;
  /** Output queued this turn (latin1 text) and its length. */
  out = '';
  outBytes = 0;
  /**
   * Output queued as bytes (bulk deliveries, see ShardActor.sendBytes): once set, everything queued this turn goes
   * here in order (`out` is empty), `outLen` bytes of it; null between turns.
   */
  outBuf: Buffer | null = null;
  outLen = 0;
  /** `[OK:DATA_SENT]` replies queued after `out` (see ShardActor.sendDataSent). */
  okRun = 0;
  queued = false;
  /** Waiting for another thread (registration, KEY lookup): lines are not executed meanwhile. */
  blocked = false;
  pauses = 0;
  commanded = false;
  closed = false;
  readonly connectedAt: number;
  /** When bytes last arrived (or reading resumed): liveness and the idle flush count from here. */
  lastRx: number;
  /** When the last `[SYNC:...]` went out (0: none yet). */
  syncAt = 0;
  /** PUSH commands executed from this connection, and messages delivered to it (operator console). */
  sent = 0;
  received = 0;
  /** RETDATA ring (allocated on first push), next write index, entries added in the current chunk. */
  cache: string[] | null = null;
  cacheNext = 0;
  cacheFresh = 0;
  /** The last RID push that was delivered: lines with the same prefix may take the bulk path (push.ts). */
  route: Route | null = null;
  /** The rarely used fields below (accessors), null until one is set. */
  private rare: Rare | null = null;

  /** True when `handle` is this connection's registration, decided or still being decided. */
  holds(handle: number): boolean {
    return handle === this.handle || handle === this.pendingHandle;
  }

  constructor(socket: Socket, slot: number, now: number) {
    this.socket = socket;
    this.slot = slot;
    this.connectedAt = now;
    this.lastRx = now;
  }

  private get r(): Rare {
    this.rare ??= new Rare();
    return this.rare;
  }

  /** The line to run again once a KEY lookup completes, and the KEY that lookup missed. */
  get retryLine(): string | null {
    return this.rare === null ? null : this.rare.retryLine;
  }
  set retryLine(v: string | null) {
    if (v !== null) this.r.retryLine = v;
    else if (this.rare !== null) {
      this.rare.retryLine = v;
      if (this.rare.idle()) this.rare = null;
    }
  }
  get missedKey(): string | null {
    return this.rare === null ? null : this.rare.missedKey;
  }
  set missedKey(v: string | null) {
    if (v !== null) this.r.missedKey = v;
    else if (this.rare !== null) {
      this.rare.missedKey = v;
      if (this.rare.idle()) this.rare = null;
    }
  }
  /** The UID (e-mail) a lookup found no account for, so the retried line fails instead of asking again. */
  get missedUid(): string | null {
    return this.rare === null ? null : this.rare.missedUid;
  }
  set missedUid(v: string | null) {
    if (v !== null) this.r.missedUid = v;
    else if (this.rare !== null) {
      this.rare.missedUid = v;
      if (this.rare.idle()) this.rare = null;
    }
  }
  get session(): Session | null {
    return this.rare === null ? null : this.rare.session;
  }
  set session(v: Session | null) {
    if (v !== null) this.r.session = v;
    else if (this.rare !== null) {
      this.rare.session = v;
      if (this.rare.idle()) this.rare = null;
    }
  }
  get raw(): RawLink | null {
    return this.rare === null ? null : this.rare.raw;
  }
  set raw(v: RawLink | null) {
    if (v !== null) this.r.raw = v;
    else if (this.rare !== null) {
      this.rare.raw = v;
      if (this.rare.idle()) this.rare = null;
    }
  }
  /** §5a: what this connection watches, and its last will. */
  get watches(): Watch[] | null {
    return this.rare === null ? null : this.rare.watches;
  }
  set watches(v: Watch[] | null) {
    if (v !== null) this.r.watches = v;
    else if (this.rare !== null) {
      this.rare.watches = v;
      if (this.rare.idle()) this.rare = null;
    }
  }
  get will(): Will | null {
    return this.rare === null ? null : this.rare.will;
  }
  set will(v: Will | null) {
    if (v !== null) this.r.will = v;
    else if (this.rare !== null) {
      this.rare.will = v;
      if (this.rare.idle()) this.rare = null;
    }
  }
  /**
   * Output waiting behind a reply that another thread is still deciding (a held push's [OK:DATA_HELD], the
   * held backlog after [OK:<ID>]): entries in order, null where the answer is pending; `slotBase` is the
   * absolute index of slots[0]. Null when nothing waits.
   */
  get slots(): (string | null)[] | null {
    return this.rare === null ? null : this.rare.slots;
  }
  set slots(v: (string | null)[] | null) {
    if (v !== null) this.r.slots = v;
    else if (this.rare !== null) {
      this.rare.slots = v;
      if (this.rare.idle()) this.rare = null;
    }
  }
  get slotBase(): number {
    return this.rare === null ? 0 : this.rare.slotBase;
  }
  set slotBase(v: number) {
    if (v !== 0) this.r.slotBase = v;
    else if (this.rare !== null) {
      this.rare.slotBase = v;
      if (this.rare.idle()) this.rare = null;
    }
  }
  /** Index in `slots` of the first entry not yet written (those before it went out and wait to be dropped). */
  get slotHead(): number {
    return this.rare === null ? 0 : this.rare.slotHead;
  }
  set slotHead(v: number) {
    if (v !== 0) this.r.slotHead = v;
    else if (this.rare !== null) {
      this.rare.slotHead = v;
      if (this.rare.idle()) this.rare = null;
    }
  }
  /** The reserved place of the held backlog of a registration under way (-1: none). */
  get backlogToken(): number {
    return this.rare === null ? -1 : this.rare.backlogToken;
  }
  set backlogToken(v: number) {
    if (v !== -1) this.r.backlogToken = v;
    else if (this.rare !== null) {
      this.rare.backlogToken = v;
      if (this.rare.idle()) this.rare = null;
    }
  }
  /** Arrived over TLS. */
  get encrypted(): boolean {
    return this.rare === null ? false : this.rare.encrypted;
  }
  set encrypted(v: boolean) {
    if (v) this.r.encrypted = v;
    else if (this.rare !== null) {
      this.rare.encrypted = v;
      if (this.rare.idle()) this.rare = null;
    }
  }
  /** Handed to the HTTP relay (PROTOCOL.md §1): no device protocol on this socket any more. */
  get http(): boolean {
    return this.rare === null ? false : this.rare.http;
  }
  set http(v: boolean) {
    if (v) this.r.http = v;
    else if (this.rare !== null) {
      this.rare.http = v;
      if (this.rare.idle()) this.rare = null;
    }
  }
  /** Since when the output has been over NODE.MAX_OUTBUF (0 = not over). */
  get fullSince(): number {
    return this.rare === null ? 0 : this.rare.fullSince;
  }
  set fullSince(v: number) {
    if (v !== 0) this.r.fullSince = v;
    else if (this.rare !== null) {
      this.rare.fullSince = v;
      if (this.rare.idle()) this.rare = null;
    }
  }
  /** On the shard's list of connections holding an unterminated line (the idle flush). */
  get idleListed(): boolean {
    return this.rare === null ? false : this.rare.idleListed;
  }
  set idleListed(v: boolean) {
    if (v) this.r.idleListed = v;
    else if (this.rare !== null) {
      this.rare.idleListed = v;
      if (this.rare.idle()) this.rare = null;
    }
  }
}
