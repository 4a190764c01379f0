// The embedded store: node:sqlite in WAL mode, schema versioned by migrations, every change in a transaction.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import type { TopologyChange } from '../routing/changes.ts';
import { generateKey, hashPassword, isValidEmail, verifyPassword } from './credentials.ts';
import {
  type AccountRecord,
  type HeldSummary,
  type HoldRequest,
  type OutboxItem,
  StoreError,
  type SyncStore,
} from './store.ts';

const MIGRATIONS: readonly string[] = [
  `CREATE TABLE accounts (
     id INTEGER PRIMARY KEY AUTOINCREMENT,
     email TEXT NOT NULL UNIQUE COLLATE NOCASE,
     password TEXT,
     key TEXT NOT NULL UNIQUE,
     level INTEGER NOT NULL,
     created_at INTEGER NOT NULL
   )`,
  `CREATE TABLE tree_nodes (
     account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
     id TEXT NOT NULL,
     parent TEXT,
     PRIMARY KEY (account_id, id)
   );
   CREATE INDEX tree_nodes_parent ON tree_nodes(account_id, parent);
   CREATE TABLE routers (
     account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
     name TEXT NOT NULL,
     PRIMARY KEY (account_id, name)
   );
   CREATE TABLE router_members (
     account_id INTEGER NOT NULL,
     router TEXT NOT NULL,
     id TEXT NOT NULL,
     PRIMARY KEY (account_id, router, id),
     FOREIGN KEY (account_id, router) REFERENCES routers(account_id, name) ON DELETE CASCADE
   );
   CREATE TABLE aliases (
     account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
     name TEXT NOT NULL,
     targets TEXT NOT NULL,
     PRIMARY KEY (account_id, name)
   );
   CREATE TABLE signups (
     token TEXT PRIMARY KEY,
     email TEXT NOT NULL,
     password TEXT NOT NULL,
     level INTEGER NOT NULL,
     expires_at INTEGER NOT NULL
   )`,
  `CREATE TABLE outbox (
     id INTEGER PRIMARY KEY AUTOINCREMENT,
     account_id INTEGER,
     kind TEXT NOT NULL,
     recipient TEXT NOT NULL,
     subject TEXT NOT NULL,
     body TEXT NOT NULL,
     state TEXT NOT NULL,
     attempts INTEGER NOT NULL DEFAULT 0,
     next_at INTEGER NOT NULL,
     last_error TEXT,
     created_at INTEGER NOT NULL,
     updated_at INTEGER NOT NULL
   );
   CREATE INDEX outbox_due ON outbox(state, next_at);
   CREATE INDEX outbox_account ON outbox(account_id, created_at)`,
  `CREATE TABLE known_devices (
     account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
     id TEXT NOT NULL,
     last_seen INTEGER NOT NULL,
     dropped INTEGER NOT NULL DEFAULT 0,
     PRIMARY KEY (account_id, id)
   );
   CREATE TABLE held (
     seq INTEGER PRIMARY KEY AUTOINCREMENT,
     account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
     id TEXT NOT NULL,
     data TEXT NOT NULL,
     created_at INTEGER NOT NULL,
     expires_at INTEGER NOT NULL
   );
   CREATE INDEX held_device ON held(account_id, id, seq);
   CREATE INDEX held_expiry ON held(expires_at)`,
];

/** The schema version a fully migrated store has. */
export const SCHEMA_VERSION = MIGRATIONS.length;

interface OutboxRow {
  id: number;
  account_id: number | null;
  kind: string;
  recipient: string;
  subject: string;
  body: string;
  state: string;
  attempts: number;
  next_at: number;
  last_error: string | null;
  created_at: number;
  updated_at: number;
}

function toItem(r: OutboxRow): OutboxItem {
  return {
    id: r.id,
    accountId: r.account_id,
    kind: r.kind as OutboxItem['kind'],
    recipient: r.recipient,
    subject: r.subject,
    body: r.body,
    state: r.state as OutboxItem['state'],
    attempts: r.attempts,
    nextAt: r.next_at,
    lastError: r.last_error,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  };
}

interface Row {
  id: number;
  email: string;
  key: string;
  level: number;
  created_at: number;
}

function toRecord(row: Row | undefined): AccountRecord | null {
  if (row === undefined) return null;
  return { id: row.id, email: row.email, key: row.key, level: row.level, createdAt: row.created_at };
}

const COLS = 'id, email, key, level, created_at';

export class SqliteStore implements SyncStore {
  private readonly db: DatabaseSync;
  private readonly stmts = new Map<string, StatementSync>();

  /** Opens (creating) `<dir>/p2pcluster.db`; `:memory:` for a throwaway store. */
  constructor(dir: string) {
    let file = ':memory:';
    if (dir !== ':memory:') {
      mkdirSync(dir, { recursive: true });
      file = join(dir, 'p2pcluster.db');
    }
    this.db = new DatabaseSync(file);
    this.db.exec(
      'PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;',
    );
    this.migrate();
  }

  /** A cached prepared statement. */
  private q(sql: string): StatementSync {
    let s = this.stmts.get(sql);
    if (s === undefined) {
      s = this.db.prepare(sql);
      this.stmts.set(sql, s);
    }
    return s;
  }

  private tx<T>(fn: () => T): T {
    this.db.exec('BEGIN IMMEDIATE');
    try {
      const out = fn();
      this.db.exec('COMMIT');
      return out;
    } catch (err) {
      this.db.exec('ROLLBACK');
      throw err;
    }
  }

  private migrate(): void {
    this.db.exec('CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)');
    const row = this.db.prepare('SELECT version FROM schema_version').get() as { version: number } | undefined;
    let version = row?.version ?? 0;
    if (row === undefined) this.db.prepare('INSERT INTO schema_version (version) VALUES (0)').run();
    while (version < MIGRATIONS.length) {
      const next = version + 1;
      this.tx(() => {
        this.db.exec(MIGRATIONS[version]!);
        this.db.prepare('UPDATE schema_version SET version = ?').run(next);
      });
      version = next;
    }
  }

  createAccount(email: string, password: string | null, level: number): AccountRecord {
    if (!isValidEmail(email)) throw new StoreError('INVALID', `not an e-mail address: ${email}`);
    return this.insertAccount(email, password === null ? null : hashPassword(password), level);
  }

  private insertAccount(email: string, hash: string | null, level: number): AccountRecord {
    if (this.q(`SELECT id FROM accounts WHERE email = ?`).get(email) !== undefined) {
      throw new StoreError('EXISTS', `account exists: ${email}`);
    }
    const key = generateKey();
    const now = Math.floor(Date.now() / 1000);
    const row = this.q(
      'INSERT INTO accounts (email, password, key, level, created_at) VALUES (?, ?, ?, ?, ?) RETURNING id',
    ).get(email, hash, key, level, now) as { id: number };
    return { id: row.id, email, key, level, createdAt: now };
  }

  accountByKey(key: string): AccountRecord | null {
    return toRecord(this.q(`SELECT ${COLS} FROM accounts WHERE key = ?`).get(key.toUpperCase()) as Row | undefined);
  }

  accountByEmail(email: string): AccountRecord | null {
    return toRecord(this.q(`SELECT ${COLS} FROM accounts WHERE email = ?`).get(email) as Row | undefined);
  }

  accountById(id: number): AccountRecord | null {
    return toRecord(this.q(`SELECT ${COLS} FROM accounts WHERE id = ?`).get(id) as Row | undefined);
  }

  countAccounts(): number {
    return (this.q('SELECT count(*) AS n FROM accounts').get() as { n: number }).n;
  }

  listAccounts(): AccountRecord[] {
    return (this.q(`SELECT ${COLS} FROM accounts ORDER BY id`).all() as unknown as Row[]).map((r) => toRecord(r)!);
  }

  checkPassword(email: string, password: string): boolean {
    const row = this.q('SELECT password FROM accounts WHERE email = ?').get(email) as
      | { password: string | null }
      | undefined;
    return row?.password != null && verifyPassword(password, row.password);
  }

  deleteAccount(id: number): void {
    this.tx(() => {
      this.q('DELETE FROM router_members WHERE account_id = ?').run(id);
      this.q('DELETE FROM outbox WHERE account_id = ?').run(id);
      this.q('DELETE FROM accounts WHERE id = ?').run(id);
    });
  }

  resetKey(id: number): AccountRecord {
    this.q('UPDATE accounts SET key = ? WHERE id = ?').run(generateKey(), id);
    const acct = this.accountById(id);
    if (acct === null) throw new StoreError('INVALID', `no account ${id}`);
    return acct;
  }

  setLevel(id: number, level: number): AccountRecord {
    this.q('UPDATE accounts SET level = ? WHERE id = ?').run(level, id);
    const acct = this.accountById(id);
    if (acct === null) throw new StoreError('INVALID', `no account ${id}`);
    return acct;
  }

  setPassword(id: number, password: string): void {
    this.q('UPDATE accounts SET password = ? WHERE id = ?').run(hashPassword(password), id);
  }

  createSignup(email: string, password: string, level: number, token: string, expiresAt: number): void {
    if (!isValidEmail(email)) throw new StoreError('INVALID', `not an e-mail address: ${email}`);
    this.q('DELETE FROM signups WHERE expires_at < ?').run(Math.floor(Date.now() / 1000));
    this.q('INSERT INTO signups (token, email, password, level, expires_at) VALUES (?, ?, ?, ?, ?)').run(
      token,
      email,
      hashPassword(password),
      level,
      expiresAt,
    );
  }

  activateSignup(token: string, now: number): AccountRecord | null {
    const result = this.tx((): AccountRecord | null | 'EXISTS' => {
      const row = this.q('SELECT email, password, level, expires_at FROM signups WHERE token = ?').get(token) as
        | { email: string; password: string; level: number; expires_at: number }
        | undefined;
      if (row === undefined) return null;
      this.q('DELETE FROM signups WHERE token = ?').run(token);
      if (row.expires_at < now) return null;
      if (this.q('SELECT id FROM accounts WHERE email = ?').get(row.email) !== undefined) return 'EXISTS';
      return this.insertAccount(row.email, row.password, row.level);
    });
    if (result === 'EXISTS') throw new StoreError('EXISTS', 'an account with that e-mail exists');
    return result;
  }

  loadTopology(accountId: number): TopologyChange[] {
    const out: TopologyChange[] = [];
    // Parents before children, so replaying the list rebuilds the tree.
    const nodes = this.q(
      `WITH RECURSIVE ordered(id, parent, depth) AS (
         SELECT id, parent, 0 FROM tree_nodes WHERE account_id = ?1 AND parent IS NULL
         UNION ALL
         SELECT t.id, t.parent, o.depth + 1 FROM tree_nodes t JOIN ordered o ON t.parent = o.id WHERE t.account_id = ?1)
       SELECT id, parent FROM ordered ORDER BY depth`,
    ).all(accountId) as { id: string; parent: string | null }[];
    for (const n of nodes) out.push({ op: 'node-add', id: n.id, parent: n.parent });
    const routers = this.q('SELECT name FROM routers WHERE account_id = ? ORDER BY name').all(accountId) as {
      name: string;
    }[];
    for (const r of routers) out.push({ op: 'router-add', name: r.name });
    const members = this.q('SELECT router, id FROM router_members WHERE account_id = ? ORDER BY router, id').all(
      accountId,
    ) as { router: string; id: string }[];
    for (const m of members) out.push({ op: 'member-add', router: m.router, id: m.id });
    const aliases = this.q('SELECT name, targets FROM aliases WHERE account_id = ? ORDER BY name').all(accountId) as {
      name: string;
      targets: string;
    }[];
    for (const a of aliases) out.push({ op: 'alias-set', name: a.name, targets: JSON.parse(a.targets) as string[] });
    return out;
  }

  saveChange(accountId: number, c: TopologyChange): void {
    this.saveChanges(accountId, [c]);
  }

  saveChanges(accountId: number, changes: readonly TopologyChange[]): void {
    this.tx(() => {
      for (const c of changes) this.writeChange(accountId, c);
    });
  }

  private writeChange(accountId: number, c: TopologyChange): void {
    {
      const a = accountId;
      switch (c.op) {
        case 'node-add':
          this.q('INSERT INTO tree_nodes (account_id, id, parent) VALUES (?, ?, ?)').run(a, c.id, c.parent);
          return;
        case 'node-move':
          this.q('UPDATE tree_nodes SET parent = ? WHERE account_id = ? AND id = ?').run(c.parent, a, c.id);
          return;
        case 'node-delete': {
          const ids = this.q(
            `WITH RECURSIVE sub(id) AS (SELECT ? UNION ALL
               SELECT t.id FROM tree_nodes t JOIN sub ON t.parent = sub.id WHERE t.account_id = ?)
             SELECT id FROM sub`,
          ).all(c.id, a) as { id: string }[];
          const del = this.q('DELETE FROM tree_nodes WHERE account_id = ? AND id = ?');
          for (const { id } of ids) del.run(a, id);
          return;
        }
        case 'node-rename':
          this.q('UPDATE tree_nodes SET id = ? WHERE account_id = ? AND id = ?').run(c.to, a, c.from);
          this.q('UPDATE tree_nodes SET parent = ? WHERE account_id = ? AND parent = ?').run(c.to, a, c.from);
          return;
        case 'router-add':
          this.q('INSERT INTO routers (account_id, name) VALUES (?, ?)').run(a, c.name);
          return;
        case 'router-delete':
          this.q('DELETE FROM router_members WHERE account_id = ? AND router = ?').run(a, c.name);
          this.q('DELETE FROM routers WHERE account_id = ? AND name = ?').run(a, c.name);
          return;
        case 'member-add':
          this.q('INSERT OR IGNORE INTO router_members (account_id, router, id) VALUES (?, ?, ?)').run(
            a,
            c.router,
            c.id,
          );
          return;
        case 'member-delete':
          this.q('DELETE FROM router_members WHERE account_id = ? AND router = ? AND id = ?').run(a, c.router, c.id);
          return;
        case 'alias-set':
          this.q('INSERT OR REPLACE INTO aliases (account_id, name, targets) VALUES (?, ?, ?)').run(
            a,
            c.name,
            JSON.stringify(c.targets),
          );
          return;
        case 'alias-delete':
          this.q('DELETE FROM aliases WHERE account_id = ? AND name = ?').run(a, c.name);
          return;
      }
    }
  }

  enqueue(item: Pick<OutboxItem, 'accountId' | 'kind' | 'recipient' | 'subject' | 'body'>, now: number): number {
    const row = this.q(
      `INSERT INTO outbox (account_id, kind, recipient, subject, body, state, attempts, next_at, created_at, updated_at)
       VALUES (?, ?, ?, ?, ?, 'queued', 0, ?, ?, ?) RETURNING id`,
    ).get(item.accountId, item.kind, item.recipient, item.subject, item.body, now, now, now) as { id: number };
    return row.id;
  }

  dueOutbox(now: number, limit: number): OutboxItem[] {
    const rows = this.q(
      `SELECT * FROM outbox WHERE state = 'queued' AND next_at <= ? ORDER BY next_at, id LIMIT ?`,
    ).all(now, limit) as unknown as OutboxRow[];
    return rows.map(toItem);
  }

  updateOutbox(id: number, state: OutboxItem['state'], attempts: number, nextAt: number, error: string | null): void {
    this.q('UPDATE outbox SET state = ?, attempts = ?, next_at = ?, last_error = ?, updated_at = ? WHERE id = ?').run(
      state,
      attempts,
      nextAt,
      error,
      Date.now(),
      id,
    );
  }

  listOutbox(accountId: number | null, limit: number): OutboxItem[] {
    const rows = (accountId === null
      ? this.q('SELECT * FROM outbox WHERE account_id IS NULL ORDER BY id DESC LIMIT ?').all(limit)
      : this.q('SELECT * FROM outbox WHERE account_id = ? ORDER BY id DESC LIMIT ?').all(
          accountId,
          limit,
        )) as unknown as OutboxRow[];
    return rows.map(toItem);
  }

  countOutboxSince(accountId: number, since: number): number {
    return (
      this.q('SELECT count(*) AS n FROM outbox WHERE account_id = ? AND created_at >= ?').get(accountId, since) as {
        n: number;
      }
    ).n;
  }

  hold(items: readonly HoldRequest[], now: number): void {
    if (items.length === 0) return;
    this.tx(() => {
      const insert = this.q('INSERT INTO held (account_id, id, data, created_at, expires_at) VALUES (?, ?, ?, ?, ?)');
      const touched = new Map<string, HoldRequest>();
      for (const h of items) {
        insert.run(h.accountId, h.id, h.data, now, h.expiresAt);
        touched.set(`${h.accountId}\u0000${h.id}`, h);
      }
      // HOLDBUFFER: keep the newest `limit`, drop the oldest, and count the drops.
      for (const h of touched.values()) {
        const n = (
          this.q('SELECT count(*) AS n FROM held WHERE account_id = ? AND id = ?').get(h.accountId, h.id) as {
            n: number;
          }
        ).n;
        if (n <= h.limit) continue;
        const excess = n - h.limit;
        this.q(
          'DELETE FROM held WHERE seq IN (SELECT seq FROM held WHERE account_id = ? AND id = ? ORDER BY seq LIMIT ?)',
        ).run(h.accountId, h.id, excess);
        this.q(
          `INSERT INTO known_devices (account_id, id, last_seen, dropped) VALUES (?, ?, 0, ?)
           ON CONFLICT(account_id, id) DO UPDATE SET dropped = dropped + excluded.dropped`,
        ).run(h.accountId, h.id, excess);
      }
    });
  }

  takeHeld(accountId: number, id: string, now: number): string[] {
    return this.tx(() => {
      const rows = this.q('SELECT data FROM held WHERE account_id = ? AND id = ? AND expires_at > ? ORDER BY seq').all(
        accountId,
        id,
        now,
      ) as { data: string }[];
      this.q('DELETE FROM held WHERE account_id = ? AND id = ?').run(accountId, id);
      return rows.map((r) => r.data);
    });
  }

  heldSummary(accountId: number): HeldSummary[] {
    return this.q(
      `SELECT ids.id AS id,
         (SELECT count(*) FROM held WHERE account_id = ?1 AND id = ids.id) AS count,
         (SELECT min(created_at) FROM held WHERE account_id = ?1 AND id = ids.id) AS oldest,
         coalesce((SELECT dropped FROM known_devices WHERE account_id = ?1 AND id = ids.id), 0) AS dropped
       FROM (SELECT id FROM held WHERE account_id = ?1
             UNION SELECT id FROM known_devices WHERE account_id = ?1 AND dropped > 0) ids
       ORDER BY ids.id`,
    ).all(accountId) as unknown as HeldSummary[];
  }

  heldKeys(): { accountId: number; id: string }[] {
    return (this.q('SELECT DISTINCT account_id, id FROM held').all() as { account_id: number; id: string }[]).map(
      (r) => ({ accountId: r.account_id, id: r.id }),
    );
  }

  heldCount(): number {
    return (this.q('SELECT count(*) AS n FROM held').get() as { n: number }).n;
  }

  outboxCounts(): Record<string, number> {
    const out: Record<string, number> = { queued: 0, sent: 0, failed: 0 };
    for (const r of this.q('SELECT state, count(*) AS n FROM outbox GROUP BY state').all() as {
      state: string;
      n: number;
    }[]) {
      out[r.state] = r.n;
    }
    return out;
  }

  purgeHeld(now: number): number {
    return Number(this.q('DELETE FROM held WHERE expires_at <= ?').run(now).changes);
  }

  markSeen(entries: readonly { accountId: number; id: string }[], now: number): void {
    if (entries.length === 0) return;
    this.tx(() => {
      const up = this.q(
        `INSERT INTO known_devices (account_id, id, last_seen) VALUES (?, ?, ?)
         ON CONFLICT(account_id, id) DO UPDATE SET last_seen = excluded.last_seen`,
      );
      // Entries of an account deleted meanwhile are skipped; each account is looked up once per call (a burst of
      // registrations is mostly one account's).
      const exists = new Map<number, boolean>();
      for (const e of entries) {
        let known = exists.get(e.accountId);
        if (known === undefined) {
          known = this.q('SELECT 1 FROM accounts WHERE id = ?').get(e.accountId) !== undefined;
          exists.set(e.accountId, known);
        }
        if (known) up.run(e.accountId, e.id, now);
      }
    });
  }

  knownDevices(accountId: number): { id: string; lastSeen: number }[] {
    return (
      this.q('SELECT id, last_seen FROM known_devices WHERE account_id = ? AND last_seen > 0 ORDER BY id').all(
        accountId,
      ) as { id: string; last_seen: number }[]
    ).map((r) => ({ id: r.id, lastSeen: r.last_seen }));
  }

  heldDropped(): number {
    return (this.q('SELECT coalesce(sum(dropped), 0) AS n FROM known_devices').get() as { n: number }).n;
  }

  lastSeen(accountId: number, id: string): number | null {
    const row = this.q('SELECT last_seen FROM known_devices WHERE account_id = ? AND id = ?').get(accountId, id) as
      | { last_seen: number }
      | undefined;
    return row === undefined || row.last_seen === 0 ? null : row.last_seen;
  }

  close(): void {
    this.db.close();
  }
}
