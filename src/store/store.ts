// The storage interface. The embedded implementation is SQLite (node:sqlite); a Redis one comes with
// cluster mode, and both must pass test/store.contract.ts.

export interface AccountRecord {
  id: number;
  email: string;
  /** 32 upper-case hex characters. */
  key: string;
  level: number;
  createdAt: number;
}

export interface Store {
  /** Creates an account with a fresh random KEY. Throws StoreError 'EXISTS' for a taken e-mail. */
  createAccount(email: string, password: string | null, level: number): AccountRecord;
  accountByKey(key: string): AccountRecord | null;
  accountByEmail(email: string): AccountRecord | null;
  accountById(id: number): AccountRecord | null;
  countAccounts(): number;
  /** True when the password matches the account's stored scrypt hash. */
  checkPassword(email: string, password: string): boolean;
  close(): void;
}

export class StoreError extends Error {
  readonly code: 'EXISTS' | 'INVALID';
  constructor(code: 'EXISTS' | 'INVALID', message: string) {
    super(message);
    this.code = code;
  }
}
