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
 * HTTP, slow consumers, unterminated lines) and their initial values. They live in a Rare object allocated on first
 * use, so an idle connection carries one null instead; once every one is back at its initial value, the connection
 * drops the object again. Connection's accessors for them are generated (see its static block).
 */
const RARE_INITIAL = {
  retryLine: null as string | null,
  missedKey: null as string | null,
  missedUid: null as string | null,
  session: null as Session | null,
  raw: null as RawLink | null,
  watches: null as Watch[] | null,
  will: null as Will | null,
  slots: null as (string | null)[] | null,
  slotBase: 0,
  slotHead: 0,
  backlogToken: -1,
  encrypted: false,
  http: false,
  fullSince: 0,
  idleListed: false,
};
type RareName = keyof typeof RARE_INITIAL;
const RARE_NAMES = Object.keys(RARE_INITIAL) as RareName[];

class Rare {
  constructor() {
    Object.assign(this, RARE_INITIAL); // the same order every time: one hidden class
  }

  /** Every field back at its initial value: the connection can drop this object. */
  idle(): boolean {
    const self = this as unknown as Record<RareName, unknown>;
    for (const name of RARE_NAMES) if (self[name] !== RARE_INITIAL[name]) return false;
    return true;
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

  // The rare fields (RARE_INITIAL): declared here, stored in `rare`, through the accessors the static block defines.
  /** The line to run again once a KEY lookup completes, and the KEY that lookup missed. */
  declare retryLine: string | null;
  declare missedKey: string | null;
  /** The UID (e-mail) a lookup found no account for, so the retried line fails instead of asking again. */
  declare missedUid: string | null;
  declare session: Session | null;
  declare raw: RawLink | null;
  /** §5a: what this connection watches, and its last will. */
  declare watches: Watch[] | null;
  declare will: Will | null;
  /**
   * Output waiting behind a reply that another thread is still deciding (a held push's [OK:DATA_HELD], the
   * held backlog after [OK:<ID>]): entries in order, null where the answer is pending; `slotBase` is the
   * absolute index of slots[0]. Null when nothing waits.
   */
  declare slots: (string | null)[] | null;
  declare slotBase: number;
  /** Index in `slots` of the first entry not yet written (those before it went out and wait to be dropped). */
  declare slotHead: number;
  /** The reserved place of the held backlog of a registration under way (-1: none). */
  declare backlogToken: number;
  /** Arrived over TLS. */
  declare encrypted: boolean;
  /** Handed to the HTTP relay (PROTOCOL.md §1): no device protocol on this socket any more. */
  declare http: boolean;
  /** Since when the output has been over NODE.MAX_OUTBUF (0 = not over). */
  declare fullSince: number;
  /** On the shard's list of connections holding an unterminated line (the idle flush). */
  declare idleListed: boolean;

  static {
    for (const name of RARE_NAMES) {
      const initial = RARE_INITIAL[name];
      Object.defineProperty(Connection.prototype, name, {
        get(this: Connection): unknown {
          const r = this.rare as unknown as Record<RareName, unknown> | null;
          return r === null ? initial : r[name];
        },
        set(this: Connection, v: unknown): void {
          let r = this.rare;
          if (v !== initial) {
            if (r === null) {
              r = new Rare();
              this.rare = r;
            }
            (r as unknown as Record<RareName, unknown>)[name] = v;
          } else if (r !== null) {
            (r as unknown as Record<RareName, unknown>)[name] = v;
            if (r.idle()) this.rare = null;
          }
        },
      });
    }
  }
}
