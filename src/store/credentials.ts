// KEYs and passwords (PROTOCOL.md §3, §8): KEYs are 128 random bits as 32 upper-case hex characters;
// passwords are stored as salted scrypt hashes, never reversibly.

import { randomBytes, scryptSync, timingSafeEqual } from 'node:crypto';

export function generateKey(): string {
  return randomBytes(16).toString('hex').toUpperCase();
}

const N = 16384;
const R = 8;
const P = 1;
const LEN = 32;

export function hashPassword(password: string): string {
  const salt = randomBytes(16);
  const hash = scryptSync(password, salt, LEN, { N, r: R, p: P });
  return `scrypt$${N}$${R}$${P}$${salt.toString('base64')}$${hash.toString('base64')}`;
}

export function verifyPassword(password: string, stored: string): boolean {
  const parts = stored.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return false;
  const [, n, r, p, salt, hash] = parts as [string, string, string, string, string, string];
  const expected = Buffer.from(hash, 'base64');
  const actual = scryptSync(password, Buffer.from(salt, 'base64'), expected.length, {
    N: Number(n),
    r: Number(r),
    p: Number(p),
  });
  return actual.length === expected.length && timingSafeEqual(actual, expected);
}

const EMAIL = /^[^\s@:<>]+@[^\s@:<>]+\.[^\s@:<>]+$/;

export function isValidEmail(s: string): boolean {
  return s.length <= 254 && EMAIL.test(s);
}
