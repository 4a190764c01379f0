// The embedded store: node:sqlite in WAL mode, schema versioned by migrations.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import { generateKey, hashPassword, isValidEmail, verifyPassword } from './credentials.ts';
import { type AccountRecord, type Store, StoreError } from './store.ts';

const MIGRATIONS: readonly string[] = [
  `CREATE TABLE accounts (
     id INTEGER PRIMARY KEY AUTOINCREMENT,
     email TEXT NOT NULL UNIQUE COLLATE NOCASE,
     password TEXT,
     key TEXT NOT NULL UNIQUE,
     level INTEGER NOT NULL,
     created_at INTEGER NOT NULL
   )`,
];

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

export class SqliteStore implements Store {
  private readonly db: DatabaseSync;
  private readonly byKey: StatementSync;
  private readonly byEmail: StatementSync;
  private readonly byId: StatementSync;
  private readonly insert: StatementSync;

  /** Opens (creating) `<dir>/p2pcluster.db`; `:memory:` for a throwaway store. */
  constructor(dir: string) {
    let file = ':memory:';
    if (dir !== ':memory:') {
      mkdirSync(dir, { recursive: true });
      file = join(dir, 'p2pcluster.db');
    }
    this.db = new DatabaseSync(file);
    this.db.exec('PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;');
    this.migrate();
    const cols = 'id, email, key, level, created_at';
    this.byKey = this.db.prepare(`SELECT ${cols} FROM accounts WHERE key = ?`);
    this.byEmail = this.db.prepare(`SELECT ${cols} FROM accounts WHERE email = ?`);
    this.byId = this.db.prepare(`SELECT ${cols} FROM accounts WHERE id = ?`);
    this.insert = this.db.prepare(
      'INSERT INTO accounts (email, password, key, level, created_at) VALUES (?, ?, ?, ?, ?) RETURNING id',
    );
  }

  private migrate(): void {
    this.db.exec('CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)');
    const row = this.db.prepare('SELECT version FROM schema_version').get() as { version: number } | undefined;
    let version = row?.version ?? 0;
    if (row === undefined) this.db.prepare('INSERT INTO schema_version (version) VALUES (0)').run();
    while (version < MIGRATIONS.length) {
      this.db.exec('BEGIN IMMEDIATE');
      try {
        this.db.exec(MIGRATIONS[version]!);
        version++;
        this.db.prepare('UPDATE schema_version SET version = ?').run(version);
        this.db.exec('COMMIT');
      } catch (err) {
        this.db.exec('ROLLBACK');
        throw err;
      }
    }
  }

  createAccount(email: string, password: string | null, level: number): AccountRecord {
    if (!isValidEmail(email)) throw new StoreError('INVALID', `not an e-mail address: ${email}`);
    if (this.byEmail.get(email) !== undefined) throw new StoreError('EXISTS', `account exists: ${email}`);
    const key = generateKey();
    const now = Math.floor(Date.now() / 1000);
    const hash = password === null ? null : hashPassword(password);
    const row = this.insert.get(email, hash, key, level, now) as { id: number };
    return { id: row.id, email, key, level, createdAt: now };
  }

  accountByKey(key: string): AccountRecord | null {
    return toRecord(this.byKey.get(key.toUpperCase()) as Row | undefined);
  }

  accountByEmail(email: string): AccountRecord | null {
    return toRecord(this.byEmail.get(email) as Row | undefined);
  }

  accountById(id: number): AccountRecord | null {
    return toRecord(this.byId.get(id) as Row | undefined);
  }

  countAccounts(): number {
    return (this.db.prepare('SELECT count(*) AS n FROM accounts').get() as { n: number }).n;
  }

  checkPassword(email: string, password: string): boolean {
    const row = this.db.prepare('SELECT password FROM accounts WHERE email = ?').get(email) as
      | { password: string | null }
      | undefined;
    return row?.password != null && verifyPassword(password, row.password);
  }

  close(): void {
    this.db.close();
  }
}
