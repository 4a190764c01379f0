// One device connection, owned end to end by the shard that accepted its socket.
// Kept small: an idle registered connection must cost little more than its socket (issue 2: ≤ 6 KB).

import type { Socket } from 'node:net';
import type { FramerState } from '../protocol/framer.ts';
import type { Mode } from '../protocol/secure.ts';
import type { Account } from '../routing/account.ts';
import type { Watch, Will } from './presence.ts';

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
}

/** Why a socket is paused; reading resumes when no reason is left. */
export const PAUSE = { BLOCKED: 1, LINK: 2, OUTPUT: 4, RAW: 8 } as const;

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
  /** `[OK:DATA_SENT]` replies queued after `out` (see ShardActor.sendDataSent). */
  okRun = 0;
  queued = false;
  /** Waiting for another thread (registration, KEY lookup): lines are not executed meanwhile. */
  blocked = false;
  /** The line to run again once a KEY lookup completes, and the KEY that lookup missed. */
  retryLine: string | null = null;
  missedKey: string | null = null;
  /** The UID (e-mail) a lookup found no account for, so the retried line fails instead of asking again. */
  missedUid: string | null = null;
  session: Session | null = null;
  raw: RawLink | null = null;
  /** §5a: what this connection watches, and its last will. */
  watches: Watch[] | null = null;
  will: Will | null = null;
  /**
   * Output waiting behind a reply that another thread is still deciding (a held push's [OK:DATA_HELD], the
   * held backlog after [OK:<ID>]): entries in order, null where the answer is pending; `slotBase` is the
   * absolute index of slots[0]. Null when nothing waits.
   */
  slots: (string | null)[] | null = null;
  slotBase = 0;
  /** The reserved place of the held backlog of a registration under way (-1: none). */
  backlogToken = -1;
  pauses = 0;
  commanded = false;
  /** Arrived over TLS. */
  encrypted = false;
  /** Handed to the HTTP relay (PROTOCOL.md §1): no device protocol on this socket any more. */
  http = false;
  closed = false;
  readonly connectedAt: number;
  /** When bytes last arrived (or reading resumed): liveness and the idle flush count from here. */
  lastRx: number;
  /** When the last `[SYNC:...]` went out (0: none yet). */
  syncAt = 0;
  /** PUSH commands executed from this connection, and messages delivered to it (operator console). */
  sent = 0;
  received = 0;
  /** Since when the output has been over NODE.MAX_OUTBUF (0 = not over). */
  fullSince = 0;
  idleListed = false;
  /** RETDATA ring (allocated on first push), next write index, entries added in the current chunk. */
  cache: string[] | null = null;
  cacheNext = 0;
  cacheFresh = 0;

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
}
