// An account as a shard sees it (PROTOCOL.md §3): its KEY, plan level, owning shard and the
// directory of its registered IDs (ID -> handle). Every shard keeps a replica of every directory;
// the owning shard's copy is the authority, changed only by registrations it decides.
// The topology (tree, routers, aliases) is a replica of the supervisor's, applied before operator calls return.

import { Topology } from './topology.ts';

/** A watching connection, as the routing layer sees it (the shard's Connection). */
export type WatcherLike = object;

export class Account {
  readonly id: number;
  /** Canonical (upper-case) KEY, or null while unknown on this shard. */
  key: string | null = null;
  level = 1;
  /** ID -> handle of the connection registered under it. */
  readonly devices = new Map<string, number>();
  /** Tree, routers and aliases; null until the account has any. */
  topology: Topology | null = null;
  /** Connections on this shard watching groups of this account (§5a). */
  watchers: Set<WatcherLike> | null = null;
  /** Token bucket for NODE.PUSH_RATE. */
  tokens = 0;
  tokensAt = 0;

  constructor(id: number) {
    this.id = id;
  }

  topologyForWrite(): Topology {
    this.topology ??= new Topology();
    return this.topology;
  }
}

/** The shard that decides ID ownership for an account. */
export function ownerShard(accountId: number, shards: number): number {
  return accountId % shards;
}

/** Accounts known to one shard, by id and by KEY. */
export class AccountTable {
  private readonly byId = new Map<number, Account>();
  private readonly byKey = new Map<string, Account>();
  /** Accounts found by UID (lower-case e-mail) for secure sessions. */
  private readonly byEmail = new Map<string, Account>();

  get(id: number): Account {
    let a = this.byId.get(id);
    if (a === undefined) {
      a = new Account(id);
      this.byId.set(id, a);
    }
    return a;
  }

  find(id: number): Account | undefined {
    return this.byId.get(id);
  }

  byKeyLookup(key: string): Account | undefined {
    return this.byKey.get(key);
  }

  byEmailLookup(email: string): Account | undefined {
    return this.byEmail.get(email.toLowerCase());
  }

  rememberEmail(email: string, acct: Account): void {
    this.byEmail.set(email.toLowerCase(), acct);
  }

  /** Records (or changes) an account's KEY and level; a null key forgets the account's key. */
  setKey(id: number, key: string | null, level: number): Account {
    const a = this.get(id);
    if (a.key !== null && a.key !== key) this.byKey.delete(a.key);
    a.key = key;
    a.level = level;
    if (key !== null) this.byKey.set(key, a);
    else for (const [email, x] of this.byEmail) if (x === a) this.byEmail.delete(email);
    return a;
  }

  values(): IterableIterator<Account> {
    return this.byId.values();
  }
}
