// SqliteStore against the Store contract (through embeddedStore, in a temp directory and in memory), plus what
// only a file-backed store can show, on the synchronous SqliteStore: persistence across reopen, WAL and schema
// version, hashed secrets at rest, and a failure in the middle of a multi-statement change rolling back the whole
// change.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { TopologyChange } from '../src/routing/changes.ts';
import { SCHEMA_VERSION, SqliteStore } from '../src/store/sqlite.ts';
import { embeddedStore } from '../src/store/store.ts';
import { rebuild, storeContract, topologyPicture } from './store.contract.ts';

const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'p2pc-store-'));
  dirs.push(d);
  return d;
}
afterAll(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

storeContract('SqliteStore in a temp directory', () => embeddedStore(new SqliteStore(tempDir())));
storeContract('SqliteStore :memory:', () => embeddedStore(new SqliteStore(':memory:')));

describe('SqliteStore on disk', () => {
  const open: { close(): void }[] = [];
  afterEach(() => {
    for (const s of open.splice(0).reverse()) s.close();
  });
  const store = (dir: string): SqliteStore => {
    const s = new SqliteStore(dir);
    open.push(s);
    return s;
  };
  /** A second, raw connection to the same database file. */
  const raw = (dir: string): DatabaseSync => {
    const db = new DatabaseSync(join(dir, 'p2pcluster.db'));
    open.push(db);
    return db;
  };

  const TOPOLOGY: TopologyChange[] = [
    { op: 'node-add', id: '100', parent: null },
    { op: 'node-add', id: '200', parent: null },
    { op: 'node-add', id: '101', parent: '100' },
    { op: 'node-add', id: '102', parent: '101' },
    { op: 'node-move', id: '101', parent: '200' },
    { op: 'node-add', id: 'GONE', parent: '100' },
    { op: 'node-delete', id: 'GONE' },
    { op: 'node-rename', from: '102', to: 'LEAF' },
    { op: 'router-add', name: 'GARDEN' },
    { op: 'router-add', name: 'OLD' },
    { op: 'member-add', router: 'GARDEN', id: '100' },
    { op: 'member-add', router: 'GARDEN', id: 'LEAF' },
    { op: 'member-add', router: 'GARDEN', id: 'OFFTREE' },
    { op: 'member-delete', router: 'GARDEN', id: '100' },
    { op: 'router-delete', name: 'OLD' },
    { op: 'alias-set', name: 'FRIEND', targets: ['100'] },
    { op: 'alias-set', name: 'FRIEND', targets: ['LEAF', '200'] },
    { op: 'alias-set', name: 'TMP', targets: ['X'] },
    { op: 'alias-delete', name: 'TMP' },
  ];

  it('everything survives close and reopen of the same directory', () => {
    const dir = tempDir();
    const s1 = new SqliteStore(dir);
    const a = s1.createAccount('keep@example.com', 'pw-keep', 3);
    const b = s1.createAccount('other@example.com', null, 1);
    const a2 = s1.resetKey(a.id);
    const b2 = s1.setLevel(b.id, 2);
    s1.setPassword(b.id, 'pw-b');
    for (const c of TOPOLOGY) s1.saveChange(a2.id, c);
    const now = Math.floor(Date.now() / 1000);
    s1.createSignup('pending@example.com', 'pw-p', 1, 'tok-pending', now + 3600);
    const picture = topologyPicture(rebuild(s1.loadTopology(a2.id)));
    s1.close();

    const s2 = store(dir);
    expect(s2.listAccounts()).toEqual([a2, b2]);
    expect(s2.accountByKey(a.key)).toBeNull();
    expect(s2.accountByKey(a2.key)).toEqual(a2);
    expect(s2.checkPassword('keep@example.com', 'pw-keep')).toBe(true);
    expect(s2.checkPassword('other@example.com', 'pw-b')).toBe(true);
    expect(topologyPicture(rebuild(s2.loadTopology(a2.id)))).toEqual(picture);
    expect(s2.loadTopology(b2.id)).toEqual([]);
    const t = rebuild(s2.loadTopology(a2.id));
    expect([...t.roots()].sort()).toEqual(['100', '200']);
    expect(t.parentOf('LEAF')).toBe('101');
    expect(t.parentOf('101')).toBe('200');
    expect([...t.routers.keys()]).toEqual(['GARDEN']);
    expect([...t.routers.get('GARDEN')!].sort()).toEqual(['LEAF', 'OFFTREE']);
    expect([...t.aliases]).toEqual([['FRIEND', ['LEAF', '200']]]);
    // The pending sign-up survived too, and is still single-use.
    const p = s2.activateSignup('tok-pending', now);
    expect(p!.email).toBe('pending@example.com');
    expect(s2.activateSignup('tok-pending', now)).toBeNull();
    // New ids never reuse old ones after reopen.
    const c = s2.createAccount('third@example.com', null, 1);
    expect([a.id, b.id, p!.id]).not.toContain(c.id);
  });

  it('WAL journal, the latest schema version, and reopening does not migrate twice', () => {
    const dir = tempDir();
    const s1 = new SqliteStore(dir);
    const a = s1.createAccount('wal@example.com', null, 1);
    s1.saveChange(a.id, { op: 'node-add', id: 'A', parent: null });
    s1.close();
    store(dir).close();
    open.pop();
    const s3 = store(dir);
    expect(s3.loadTopology(a.id)).toEqual([{ op: 'node-add', id: 'A', parent: null }]);
    const db = raw(dir);
    expect((db.prepare('PRAGMA journal_mode').get() as { journal_mode: string }).journal_mode).toBe('wal');
    const versions = db.prepare('SELECT version FROM schema_version').all() as { version: number }[];
    expect(versions).toEqual([{ version: SCHEMA_VERSION }]);
    expect(SCHEMA_VERSION).toBeGreaterThanOrEqual(3);
  });

  it('passwords of accounts and sign-ups are stored as scrypt hashes, never in clear', () => {
    const dir = tempDir();
    const s = store(dir);
    s.createAccount('hash@example.com', 'clear-text-pw', 1);
    s.createSignup('hash2@example.com', 'other-clear-pw', 1, 'tok-h', Math.floor(Date.now() / 1000) + 600);
    const db = raw(dir);
    const acct = db.prepare('SELECT password FROM accounts').get() as { password: string };
    const signup = db.prepare('SELECT password FROM signups').get() as { password: string };
    for (const [stored, clear] of [
      [acct.password, 'clear-text-pw'],
      [signup.password, 'other-clear-pw'],
    ] as const) {
      expect(stored.startsWith('scrypt$')).toBe(true);
      expect(stored).not.toContain(clear);
    }
    // Two accounts with the same password get different salts.
    s.createAccount('hash3@example.com', 'clear-text-pw', 1);
    const all = db.prepare('SELECT password FROM accounts ORDER BY id').all() as { password: string }[];
    expect(all[0]!.password).not.toBe(all[1]!.password);
  });

  it('a rename that fails at its second statement rolls back its first (old state, never half)', () => {
    const dir = tempDir();
    const s = store(dir);
    const a = s.createAccount('half@example.com', null, 4);
    for (const c of [
      { op: 'node-add', id: 'P', parent: null },
      { op: 'node-add', id: 'C1', parent: 'P' },
      { op: 'node-add', id: 'C2', parent: 'P' },
    ] satisfies TopologyChange[])
      s.saveChange(a.id, c);
    const before = s.loadTopology(a.id);
    // Only the re-parenting statement of a rename to BOOM is refused.
    raw(dir).exec(
      `CREATE TRIGGER boom BEFORE UPDATE OF parent ON tree_nodes WHEN NEW.parent = 'BOOM'
       BEGIN SELECT RAISE(ABORT, 'injected failure'); END`,
    );
    expect(() => s.saveChange(a.id, { op: 'node-rename', from: 'P', to: 'BOOM' })).toThrow(/injected failure/);
    expect(s.loadTopology(a.id)).toEqual(before);
    // The store is usable afterwards and a rename without the trap works.
    s.saveChange(a.id, { op: 'node-rename', from: 'P', to: 'Q' });
    const t = rebuild(s.loadTopology(a.id));
    expect([...t.childrenOf('Q')].sort()).toEqual(['C1', 'C2']);
  });

  it('a router-delete that fails after dropping the members keeps the members', () => {
    const dir = tempDir();
    const s = store(dir);
    const a = s.createAccount('half2@example.com', null, 4);
    for (const c of [
      { op: 'router-add', name: 'R' },
      { op: 'member-add', router: 'R', id: 'A' },
      { op: 'member-add', router: 'R', id: 'B' },
    ] satisfies TopologyChange[])
      s.saveChange(a.id, c);
    const before = s.loadTopology(a.id);
    raw(dir).exec(`CREATE TRIGGER boom BEFORE DELETE ON routers BEGIN SELECT RAISE(ABORT, 'injected failure'); END`);
    expect(() => s.saveChange(a.id, { op: 'router-delete', name: 'R' })).toThrow(/injected failure/);
    expect(s.loadTopology(a.id)).toEqual(before);
  });

  it('a subtree delete that fails half-way keeps the whole subtree', () => {
    const dir = tempDir();
    const s = store(dir);
    const a = s.createAccount('half3@example.com', null, 4);
    for (const c of [
      { op: 'node-add', id: 'A', parent: null },
      { op: 'node-add', id: 'B', parent: 'A' },
      { op: 'node-add', id: 'C', parent: 'B' },
      { op: 'node-add', id: 'D', parent: 'C' },
    ] satisfies TopologyChange[])
      s.saveChange(a.id, c);
    const before = s.loadTopology(a.id);
    raw(dir).exec(
      `CREATE TRIGGER boom BEFORE DELETE ON tree_nodes WHEN OLD.id = 'D'
       BEGIN SELECT RAISE(ABORT, 'injected failure'); END`,
    );
    expect(() => s.saveChange(a.id, { op: 'node-delete', id: 'A' })).toThrow(/injected failure/);
    expect(s.loadTopology(a.id)).toEqual(before);
  });

  it('an account delete that fails keeps the account and its routers', () => {
    const dir = tempDir();
    const s = store(dir);
    const a = s.createAccount('half4@example.com', null, 4);
    s.saveChange(a.id, { op: 'router-add', name: 'R' });
    s.saveChange(a.id, { op: 'member-add', router: 'R', id: 'M' });
    const before = s.loadTopology(a.id);
    raw(dir).exec(`CREATE TRIGGER boom BEFORE DELETE ON accounts BEGIN SELECT RAISE(ABORT, 'injected failure'); END`);
    expect(() => s.deleteAccount(a.id)).toThrow(/injected failure/);
    expect(s.accountById(a.id)).toEqual(a);
    expect(s.loadTopology(a.id)).toEqual(before);
  });
});
