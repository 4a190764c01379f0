// The storage interface. Every method answers through a Promise (`Store`), so the server runs the same on the
// embedded SQLite store (node:sqlite, synchronous underneath: `SyncStore`, wrapped by `embeddedStore`) and on the
// Redis store of cluster mode (src/store/redis.ts). Both pass the contract suite in test/store.contract.ts.
//
// Order: an implementation carries out calls in the order they are made (SQLite at the call, Redis in command
// order on one connection), so callers may issue several calls without awaiting each and rely on their order.

import type { TopologyChange } from '../routing/changes.ts';

export interface AccountRecord {
  id: number;
  email: string;
  /** 32 upper-case hex characters. */
  key: string;
  level: number;
  createdAt: number;
}

/** The embedded store's synchronous form (SqliteStore). */
export interface SyncStore {
  /** Creates an account with a fresh random KEY. Throws StoreError 'EXISTS' for a taken e-mail. */
  createAccount(email: string, password: string | null, level: number): AccountRecord;
  accountByKey(key: string): AccountRecord | null;
  accountByEmail(email: string): AccountRecord | null;
  accountById(id: number): AccountRecord | null;
  countAccounts(): number;
  /** True when the password matches the account's stored scrypt hash. */
  checkPassword(email: string, password: string): boolean;
  listAccounts(): AccountRecord[];
  /** Deletes the account and everything it owns (topology, tokens). */
  deleteAccount(id: number): void;
  /** Gives the account a fresh KEY; the old one stops working. */
  resetKey(id: number): AccountRecord;
  setLevel(id: number, level: number): AccountRecord;
  setPassword(id: number, password: string): void;

  /** Pending self-service sign-ups: an expiring, single-use activation token. */
  createSignup(email: string, password: string, level: number, token: string, expiresAt: number): void;
  /**
   * Consumes a token: creates the account if the token is valid and unexpired, else null. Throws StoreError
   * 'EXISTS' (the token is consumed) when the e-mail got an account meanwhile.
   */
  activateSignup(token: string, now: number): AccountRecord | null;

  /** The saved topology of an account, as changes that rebuild it in order. */
  loadTopology(accountId: number): TopologyChange[];
  /** Persists one already-validated change atomically. */
  saveChange(accountId: number, change: TopologyChange): void;
  /** Persists already-validated changes in one transaction: all or none. */
  saveChanges(accountId: number, changes: readonly TopologyChange[]): void;
  /** Queues a message durably; returns its id. */
  enqueue(item: Pick<OutboxItem, 'accountId' | 'kind' | 'recipient' | 'subject' | 'body'>, now: number): number;
  /** Queued messages due at `now`, oldest first. */
  dueOutbox(now: number, limit: number): OutboxItem[];
  /** Records an attempt's outcome: sent, queued again for `nextAt`, or failed for good. */
  updateOutbox(id: number, state: OutboxItem['state'], attempts: number, nextAt: number, error: string | null): void;
  /** Recent messages of an account (null: system messages), newest first. */
  listOutbox(accountId: number | null, limit: number): OutboxItem[];
  /** Messages an account queued since `since` (epoch ms), for its hourly rate. */
  countOutboxSince(accountId: number, since: number): number;
  /** Stores held pushes in one transaction (the batch of a turn). */
  hold(items: readonly HoldRequest[], now: number): void;
  /** Takes (returns and deletes) a device's unexpired held messages, oldest first. */
  takeHeld(accountId: number, id: string, now: number): string[];
  /** Devices with held messages (and drop counts) of an account. */
  heldSummary(accountId: number): HeldSummary[];
  /** (account, ID) pairs that have held messages, to answer "nothing held" without a query. */
  heldKeys(): { accountId: number; id: string }[];
  /** Held messages in total (for /metrics). */
  heldCount(): number;
  /** Outbox messages by state (for /metrics). */
  outboxCounts(): Record<string, number>;
  /** Deletes expired held messages; returns how many. */
  purgeHeld(now: number): number;
  /** Records that devices registered or left (last seen); "known" devices may have pushes held. */
  markSeen(entries: readonly { accountId: number; id: string }[], now: number): void;
  /** Every device of the account ever registered, with when it was last seen (epoch ms). */
  knownDevices(accountId: number): { id: string; lastSeen: number }[];
  /** Held messages dropped by HOLDBUFFER, in total (for /metrics). */
  heldDropped(): number;
  /** Unix ms a device was last seen, or null for one never registered. */
  lastSeen(accountId: number, id: string): number | null;
  close(): void;
}

/** A message in the durable outbox (e-mail or SMS). */
export interface OutboxItem {
  id: number;
  accountId: number | null;
  kind: 'mail' | 'sms';
  recipient: string;
  subject: string;
  body: string;
  state: 'queued' | 'sent' | 'failed';
  attempts: number;
  /** Epoch ms of the next attempt (queued) or of the last change. */
  nextAt: number;
  lastError: string | null;
  createdAt: number;
  updatedAt: number;
}

/** A push to hold for an offline device (issue 8). */
export interface HoldRequest {
  accountId: number;
  id: string;
  data: string;
  /** Epoch ms after which it is dropped. */
  expiresAt: number;
  /** HOLDBUFFER of the account's plan: the oldest beyond it are dropped. */
  limit: number;
}

/** Held messages of one device, for the operator API. */
export interface HeldSummary {
  id: string;
  count: number;
  oldest: number | null;
  dropped: number;
}

/** The storage interface the server uses: every SyncStore method, answering through a Promise. */
export type Store = {
  [K in keyof SyncStore]: SyncStore[K] extends (...args: infer A) => infer R ? (...args: A) => Promise<R> : never;
};

/** The Store view of a synchronous store: each call runs at once (so calls keep their order) and settles a Promise. */
export function embeddedStore(sync: SyncStore): Store {
  const out: Record<string, unknown> = {};
  const proto = Object.getPrototypeOf(sync) as object;
  for (const name of Object.getOwnPropertyNames(proto)) {
    const fn = (sync as unknown as Record<string, unknown>)[name];
    if (name === 'constructor' || typeof fn !== 'function') continue;
    out[name] = (...args: unknown[]): Promise<unknown> => {
      try {
        return Promise.resolve((fn as (...a: unknown[]) => unknown).apply(sync, args));
      } catch (err) {
        return Promise.reject(err);
      }
    };
  }
  return out as Store;
}

export class StoreError extends Error {
  readonly code: 'EXISTS' | 'INVALID';
  constructor(code: 'EXISTS' | 'INVALID', message: string) {
    super(message);
    this.code = code;
  }
}
