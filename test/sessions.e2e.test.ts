// End-to-end tests of the secure sessions (PROTOCOL.md §9, docs/security.md, issue 5) over real TCP against the
// real server (supervisor + 2 shard workers): STCP, DSTCP and HSTCP activation, every reply byte, the session key
// of every sub-command before and after TCP:ID, deactivation, and HSTCP's refusal of replayed, reordered,
// altered and truncated commands (with a fast-check property over random tampering).
// Expected values come from src/protocol/secure.ts, whose functions test/security.test.ts checks against the
// worked example of docs/security.md.

import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { dstcpKey, hmacHex, hstcpMac, hstcpProof, md5Proof, stcpSessionKey } from '../src/protocol/secure.ts';
import type { TestClient } from './helpers/client.ts';
import { suiteServer } from './helpers/devices.ts';
import { ADMIN_TOKEN, type TestServer } from './helpers/server.ts';

let srv: TestServer;
const { open, dev } = suiteServer((s) => (srv = s));

// ------------------------------------------------------------------ helpers

let accounts = 0;
/** A fresh account: its UID (e-mail, as stored) and KEY. */
function account(tag: string, email?: string): { uid: string; key: string } {
  const uid = email ?? `${tag}-${++accounts}-${process.pid}@sessions.example`;
  return { uid, key: srv.newKey(uid) };
}

type Mode = 'STCP' | 'DSTCP' | 'HSTCP';

/** `TCP:<sub>:<k>[:<rest>]`. */
function lineOf(sub: string, k: string, rest: string | undefined): string {
  return rest === undefined ? `TCP:${sub}:${k}` : `TCP:${sub}:${k}:${rest}`;
}

/** The client side of a session, computing every KEY field the way §9 specifies it. */
class Session {
  readonly mode: Mode;
  readonly uid: string;
  readonly key: string;
  readonly rnd: string;
  /** HSTCP: the sequence number of the next command. */
  n = 1;

  constructor(mode: Mode, uid: string, key: string, rnd: string) {
    this.mode = mode;
    this.uid = uid;
    this.key = key;
    this.rnd = rnd;
  }

  /** The KEY field of `TCP:<sub>:<field>[:<rest>]` (HSTCP: as command number n). */
  field(sub: string, rest: string | undefined, registered: boolean, n = this.n): string {
    switch (this.mode) {
      case 'STCP':
        return stcpSessionKey(this.key, this.rnd);
      case 'DSTCP': {
        // F: before registration the first field after the KEY, after it the second ('' if none); split on ':'.
        const fields = rest === undefined ? [] : rest.split(':');
        return dstcpKey(this.key, this.rnd, fields[registered ? 1 : 0] ?? '');
      }
      case 'HSTCP':
        return hstcpMac(this.key, this.rnd, n, lineOf(sub, '', rest));
    }
  }

  /** A command line the server is expected to accept (HSTCP: consumes the sequence number). */
  cmd(sub: string, rest: string | undefined, registered: boolean): string {
    const line = lineOf(sub, this.field(sub, rest, registered), rest);
    if (this.mode === 'HSTCP') this.n++;
    return line;
  }

  /** A correctly keyed command line that does not consume the sequence number (one refused before the KEY check). */
  peek(sub: string, rest: string | undefined, registered: boolean): string {
    return lineOf(sub, this.field(sub, rest, registered), rest);
  }

  /** The DEACTIVATE line (HSTCP: with the MAC of the next command over `HSTCP:<UID>:DEACTIVATE:`). */
  deactivate(uidAsSent = this.uid): string {
    const head = `${this.mode}:${uidAsSent}:DEACTIVATE:`;
    if (this.mode !== 'HSTCP') return head;
    const mac = hstcpMac(this.key, this.rnd, this.n, head);
    this.n++;
    return head + mac;
  }
}

const RND8 = /^\[OK:([0-9A-F]{8})\]$/;
const RND8_PROOF = /^\[OK:([0-9A-F]{8}):([0-9A-F]{32})\]$/;
const HSTCP_OK = /^\[OK:([0-9A-F]{16}):([0-9A-F]{64})\]$/;

/**
 * Activates a session and checks the reply exactly: the RND's shape and the proof computed from the KEY.
 * STCP/DSTCP without a nonce when `nonce` is undefined; HSTCP always carries one.
 */
async function activate(
  c: TestClient,
  mode: Mode,
  uid: string,
  key: string,
  nonce?: string,
  uidAsSent = uid,
): Promise<Session> {
  if (mode === 'HSTCP') {
    const cli = nonce ?? randomBytes(8).toString('hex');
    const r = await c.request(`HSTCP:${uidAsSent}:ACTIVATE:${cli}:`);
    const m = HSTCP_OK.exec(r);
    expect(m, `HSTCP activation reply ${JSON.stringify(r)}`).not.toBeNull();
    expect(m![2]).toBe(hstcpProof(key, cli, m![1]!));
    return new Session(mode, uid, key, m![1]!);
  }
  if (nonce === undefined) {
    const r = await c.request(`${mode}:${uidAsSent}:ACTIVATE:`);
    const m = RND8.exec(r);
    expect(m, `${mode} activation reply ${JSON.stringify(r)}`).not.toBeNull();
    return new Session(mode, uid, key, m![1]!);
  }
  const r = await c.request(`${mode}:${uidAsSent}:ACTIVATE:${nonce}:`);
  const m = RND8_PROOF.exec(r);
  expect(m, `${mode} activation reply ${JSON.stringify(r)}`).not.toBeNull();
  expect(m![2]).toBe(md5Proof(key, nonce));
  return new Session(mode, uid, key, m![1]!);
}

/** Admin call to the operator API. */
async function admin(method: string, path: string, body?: unknown): Promise<number> {
  const r = await fetch(`http://127.0.0.1:${srv.httpPort}${path}`, {
    method,
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  await r.text();
  return r.status;
}

/** Tree P → C1 → G1, router R1 {P, C1}, alias AL → C1. */
async function topology(uid: string): Promise<void> {
  const a = `/api/v1/accounts/${encodeURIComponent(uid)}`;
  expect(await admin('POST', `${a}/tree/nodes`, { id: 'P' })).toBe(201);
  expect(await admin('POST', `${a}/tree/nodes`, { id: 'C1', parent: 'P' })).toBe(201);
  expect(await admin('POST', `${a}/tree/nodes`, { id: 'G1', parent: 'C1' })).toBe(201);
  expect(await admin('POST', `${a}/routers`, { name: 'R1' })).toBe(201);
  expect(await admin('PUT', `${a}/routers/R1/members/P`)).toBe(204);
  expect(await admin('PUT', `${a}/routers/R1/members/C1`)).toBe(204);
  expect(await admin('PUT', `${a}/aliases/AL`, { targets: ['C1'] })).toBe(200);
}

// ------------------------------------------------------------------ every mode, every sub-command

describe('every sub-command under a session, before and after TCP:ID', () => {
  for (const mode of ['STCP', 'DSTCP', 'HSTCP'] as const) {
    it(`${mode}: ID, GID, every PUSH target, RETDATA, EMAIL, REMID and ID again; the plain KEY is refused`, async () => {
      const { uid, key } = account(mode.toLowerCase());
      await topology(uid);
      const c1 = await dev(key, 'C1');
      const g1 = await dev(key, 'G1');
      const x = await dev(key, 'X');
      const s = await open();
      const ses = await activate(s, mode, uid, key, mode === 'HSTCP' ? undefined : 'abcdef0123');

      // Before ID: only ID (the pre-registration rule comes first; HSTCP's sequence is not consumed).
      expect(await s.request(ses.peek('GID', undefined, false))).toBe('[FAIL:NOID]');
      expect(await s.request(`TCP:ID:${key}:P`)).toBe('[FAIL:INVALID_KEY]');
      expect(await s.request(ses.cmd('ID', 'p', false))).toBe('[OK:P]');
      expect(await s.request(ses.cmd('GID', undefined, true))).toBe('[OK:P]');
      expect(await s.request(`TCP:GID:${key}`)).toBe('[FAIL:INVALID_KEY]');
      expect(await s.request(`TCP:GID:${key.toLowerCase()}`)).toBe('[FAIL:INVALID_KEY]');

      expect(await s.request(ses.cmd('PUSH', 'PARENT:p', true))).toBe('[FAIL:NO_PARENT]');
      expect(await s.request(ses.cmd('PUSH', 'RID:C1:r', true))).toBe('[OK:DATA_SENT]');
      expect(await c1.line()).toBe('PUSH:r');
      expect(await s.request(ses.cmd('PUSH', 'FRIENDS:f', true))).toBe('[OK:ALL_1]');
      expect(await x.line()).toBe('PUSH:f');
      expect(await s.request(ses.cmd('PUSH', 'CHILDS:c', true))).toBe('[OK:ALL_1]');
      expect(await c1.line()).toBe('PUSH:c');
      expect(await s.request(ses.cmd('PUSH', 'ALLCHILDS:a', true))).toBe('[OK:ALL_2]');
      expect(await c1.line()).toBe('PUSH:a');
      expect(await g1.line()).toBe('PUSH:a');
      expect(await s.request(ses.cmd('PUSH', 'RO:R1:ro', true))).toBe('[OK:ALL_1]');
      expect(await c1.line()).toBe('PUSH:ro');
      expect(await s.request(ses.cmd('PUSH', 'ALIAS:AL:al', true))).toBe('[OK:DATA_SENT]');
      expect(await c1.line()).toBe('PUSH:al');
      expect(await s.request(ses.cmd('RETDATA', '1', true))).toBe('[OK:f]');
      expect(await s.request(ses.cmd('RETDATA', '0', true))).toBe('[OK:>f>c>a>ro>al]');
      expect(await s.request(ses.cmd('RETDATA', '9', true))).toBe('[FAIL:NO_DATA]');
      expect(await s.request(ses.cmd('EMAIL', 'to@x.example:subject:body', true))).toBe('[FAIL:MAIL_DISABLED]');
      expect(await s.request(ses.cmd('REMID', undefined, true))).toBe('[OK:NODEREMOVED]');

      // Unregistered again: NOID for the rest, and ID's checked field is the first one again (DSTCP).
      expect(await s.request(ses.peek('GID', undefined, false))).toBe('[FAIL:NOID]');
      expect(await s.request(ses.cmd('ID', 'p', false))).toBe('[OK:P]');
      expect(await s.request(ses.cmd('PUSH', 'RID:X:back', true))).toBe('[OK:DATA_SENT]');
      expect(await x.line()).toBe('PUSH:back');

      expect(await s.request(ses.deactivate())).toBe(`[OK:${mode}_DEACTIVATED]`);
      expect(await s.request(`TCP:GID:${key}`)).toBe('[OK:P]');
      for (const c of [s, c1, g1, x]) expect(await c.silence(0)).toBe('');
    });
  }
});

// ------------------------------------------------------------------ STCP

describe('STCP', () => {
  it('ACTIVATE without a client nonce → [OK:<RND>]; MD5HEX(KEY+RND) is the session key in either case', async () => {
    const { uid, key } = account('stcp');
    const peer = await dev(key, 'S2');
    const c = await open();
    const r = await c.request(`STCP:${uid}:ACTIVATE:`);
    const rnd = RND8.exec(r)?.[1];
    expect(rnd, r).toBeDefined();
    const skey = stcpSessionKey(key, rnd!);
    expect(await c.request(`TCP:ID:${skey}:s1`)).toBe('[OK:S1]');
    expect(await c.request(`TCP:PUSH:${skey}:RID:S2:hello`)).toBe('[OK:DATA_SENT]');
    expect(await peer.line()).toBe('PUSH:hello');
    expect(await c.request(`TCP:GID:${skey.toLowerCase()}`)).toBe('[OK:S1]');
    expect(await c.request(`TCP:GID:${key}`)).toBe('[FAIL:INVALID_KEY]');
    // MD5HEX(KEY+RND) of another RND, and a DSTCP-style key, are not the session key.
    expect(await c.request(`TCP:GID:${stcpSessionKey(key, '00000000')}`)).toBe('[FAIL:INVALID_KEY]');
    expect(await c.request(`TCP:PUSH:${dstcpKey(key, rnd!, 'S2')}:RID:S2:x`)).toBe('[FAIL:INVALID_KEY]');
    // No replay protection within an STCP session (documented): the same line works again.
    expect(await c.request(`TCP:PUSH:${skey}:RID:S2:hello`)).toBe('[OK:DATA_SENT]');
    expect(await peer.line()).toBe('PUSH:hello');

    expect(await c.request(`STCP:${uid}:DEACTIVATE:`)).toBe('[OK:STCP_DEACTIVATED]');
    expect(await c.request(`TCP:GID:${skey}`)).toBe('[FAIL:INVALID_KEY]');
    expect(await c.request(`TCP:GID:${key}`)).toBe('[OK:S1]');
    expect(await c.request(`TCP:PUSH:${key}:RID:S2:plain`)).toBe('[OK:DATA_SENT]');
    expect(await peer.line()).toBe('PUSH:plain');
    expect(await peer.silence(50)).toBe('');
  });

  it('ACTIVATE with a client nonce (8 characters or more) → [OK:<RND>:<MD5HEX(KEY+CLIRND)>]', async () => {
    const { uid, key } = account('stcp');
    const c = await open();
    for (const nonce of [
      'CAFEBABE01',
      '12345678',
      'deadbeefcafe',
      'n0nce-with.punct!~',
      'Z'.repeat(64),
      'y'.repeat(200),
    ]) {
      const r = await c.request(`STCP:${uid}:ACTIVATE:${nonce}:`);
      const m = RND8_PROOF.exec(r);
      expect(m, `${nonce}: ${r}`).not.toBeNull();
      expect(r).toBe(`[OK:${m![1]}:${md5Proof(key, nonce)}]`);
      // The session of this activation is the one in force.
      expect(await c.request(`TCP:ID:${stcpSessionKey(key, m![1]!)}:N1`)).toBe('[OK:N1]');
    }
  });

  it('every activation has a fresh RND; re-activating replaces the session key', async () => {
    const { uid, key } = account('stcp');
    const c = await open();
    expect(await c.request(`TCP:ID:${key}:FRESH`)).toBe('[OK:FRESH]');
    const seen = new Set<string>();
    let prev: string | null = null;
    for (let i = 0; i < 16; i++) {
      const ses = await activate(c, 'STCP', uid, key, i % 2 === 0 ? undefined : `nonce-${i}-xyz`);
      seen.add(ses.rnd);
      const skey = stcpSessionKey(key, ses.rnd);
      if (prev !== null) expect(await c.request(`TCP:GID:${prev}`)).toBe('[FAIL:INVALID_KEY]');
      expect(await c.request(`TCP:GID:${skey}`)).toBe('[OK:FRESH]');
      prev = skey;
    }
    expect(seen.size).toBe(16);
    // And across connections.
    const d = await open();
    const other = await activate(d, 'STCP', uid, key);
    expect(seen.has(other.rnd)).toBe(false);
  });

  it('the UID is matched case-insensitively; an unknown UID → [FAIL:INVALID_USERID] (and the connection stays usable)', async () => {
    const { uid, key } = account('stcp', `Mixed.Case-${process.pid}@Sessions.Example`);
    const c = await open();
    for (const variant of [uid, uid.toLowerCase(), uid.toUpperCase()]) {
      const ses = await activate(c, 'STCP', uid, key, 'abcdefgh', variant);
      expect(await c.request(`TCP:ID:${stcpSessionKey(key, ses.rnd)}:case1`)).toBe('[OK:CASE1]');
    }
    const d = await open();
    for (let i = 0; i < 3; i++) {
      expect(await d.request(`STCP:nobody-${process.pid}@nowhere.example:ACTIVATE:`)).toBe('[FAIL:INVALID_USERID]');
      expect(await d.request(`DSTCP:nobody-${process.pid}@nowhere.example:ACTIVATE:12345678:`)).toBe(
        '[FAIL:INVALID_USERID]',
      );
      expect(await d.request(`HSTCP:nobody-${process.pid}@nowhere.example:ACTIVATE:12345678:`)).toBe(
        '[FAIL:INVALID_USERID]',
      );
      expect(await d.request(`STCP:${uid}x:ACTIVATE:`)).toBe('[FAIL:INVALID_USERID]');
    }
    // No session was started: the plain KEY works.
    expect(await d.request(`TCP:ID:${key}:case2`)).toBe('[OK:CASE2]');
    expect(d.closed).toBe(false);
  });

  for (const mode of ['STCP', 'DSTCP'] as const) {
    it(`${mode}: malformed commands → [FAIL:INVALID_FORMAT] and start no session`, async () => {
      const { uid, key } = account(mode.toLowerCase());
      const c = await open();
      for (const bad of [
        `${mode}:${uid}:ACTIVATE:1234567:`,
        `${mode}:${uid}:ACTIVATE:a:`,
        `${mode}:${uid}:ACTIVATE:12345678:extra`,
        `${mode}:${uid}:ACTIVATE:12345678:extra:`,
        `${mode}:${uid}:ACTIVATE::12345678:`,
        `${mode}:${uid}:START:`,
        `${mode}:${uid}:ACTIVATED:`,
        `${mode}:${uid}:DEACTIVATE:x`,
        `${mode}:${uid}:DEACTIVATE:12345678:`,
        `${mode}:${uid}`,
        `${mode}:${uid}:`,
        `${mode}::ACTIVATE:`,
        `${mode}:`,
      ]) {
        expect(await c.request(bad), bad).toBe('[FAIL:INVALID_FORMAT]');
      }
      expect(await c.request(`TCP:ID:${key}:fmt`)).toBe('[OK:FMT]');
      expect(await c.request(`TCP:GID:${key}`)).toBe('[OK:FMT]');
    });
  }

  it('a DEACTIVATE of another mode does not end the session → [FAIL:INVALID_KEY]', async () => {
    const { uid, key } = account('stcp');
    const c = await open();
    const ses = await activate(c, 'STCP', uid, key);
    const skey = stcpSessionKey(key, ses.rnd);
    expect(await c.request(`TCP:ID:${skey}:mix`)).toBe('[OK:MIX]');
    expect(await c.request(`DSTCP:${uid}:DEACTIVATE:`)).toBe('[FAIL:INVALID_KEY]');
    const hmac = hstcpMac(key, ses.rnd, 1, `HSTCP:${uid}:DEACTIVATE:`);
    expect(await c.request(`HSTCP:${uid}:DEACTIVATE:${hmac}`)).toBe('[FAIL:INVALID_KEY]');
    expect(await c.request(`TCP:GID:${skey}`)).toBe('[OK:MIX]');
    expect(await c.request(`TCP:GID:${key}`)).toBe('[FAIL:INVALID_KEY]');
    // Another account's DEACTIVATE does not end it either.
    const other = account('stcp');
    expect(await c.request(`STCP:${other.uid}:DEACTIVATE:`)).toBe('[FAIL:INVALID_KEY]');
    expect(await c.request(`TCP:GID:${skey}`)).toBe('[OK:MIX]');
    expect(await c.request(`STCP:${uid.toUpperCase()}:DEACTIVATE:`)).toBe('[OK:STCP_DEACTIVATED]');
    expect(await c.request(`TCP:GID:${key}`)).toBe('[OK:MIX]');
  });

  it('the session key of another account than the registered one → [FAIL:NOKEY]', async () => {
    const a = account('stcp');
    const b = account('stcp');
    const peer = await dev(b.key, 'BPEER');
    const c = await dev(a.key, 'AOWN');
    const ses = await activate(c, 'STCP', b.uid, b.key);
    const skeyB = stcpSessionKey(b.key, ses.rnd);
    expect(await c.request(`TCP:GID:${skeyB}`)).toBe('[FAIL:NOKEY]');
    expect(await c.request(`TCP:PUSH:${skeyB}:RID:BPEER:x`)).toBe('[FAIL:NOKEY]');
    expect(await peer.silence(50)).toBe('');
    expect(await c.request(`STCP:${b.uid}:DEACTIVATE:`)).toBe('[OK:STCP_DEACTIVATED]');
    expect(await c.request(`TCP:GID:${a.key}`)).toBe('[OK:AOWN]');
  });
});

// ------------------------------------------------------------------ DSTCP

describe('DSTCP', () => {
  it('activation replies like STCP; the KEY field is MD5HEX(KEY+RND+F) with F chosen by the registration state', async () => {
    const { uid, key } = account('dstcp');
    const c = await open();
    const peer = await dev(key, '555');
    const buddy = await dev(key, 'BUDDY');
    // Without a nonce, then with one (the second activation is the one in force).
    await activate(c, 'DSTCP', uid, key);
    const ses = await activate(c, 'DSTCP', uid, key, 'CAFEBABE01');
    const k = (f: string): string => dstcpKey(key, ses.rnd, f);

    // Before registration F is the first field after the KEY.
    expect(await c.request(`TCP:ID:${k('555')}:556`)).toBe('[FAIL:INVALID_KEY]');
    expect(await c.request(`TCP:ID:${k('')}:556`)).toBe('[FAIL:INVALID_KEY]');
    expect(await c.request(`TCP:ID:${stcpSessionKey(key, ses.rnd + 'x')}:556`)).toBe('[FAIL:INVALID_KEY]');
    expect(await c.request(`TCP:ID:${k('556').toLowerCase()}:556`)).toBe('[OK:556]');

    // After it, the second field after the KEY.
    expect(await c.request(`TCP:PUSH:${k('555')}:RID:555:hi`)).toBe('[OK:DATA_SENT]');
    expect(await peer.line()).toBe('PUSH:hi');
    expect(await c.request(`TCP:PUSH:${k('RID')}:RID:555:hi`)).toBe('[FAIL:INVALID_KEY]');
    expect(await c.request(`TCP:PUSH:${k('hi')}:RID:555:hi`)).toBe('[FAIL:INVALID_KEY]');
    // The key field of one target does not fit another target.
    expect(await c.request(`TCP:PUSH:${k('555')}:RID:BUDDY:hi`)).toBe('[FAIL:INVALID_KEY]');
    // Fields other than F are not covered (documented): same F, other data.
    expect(await c.request(`TCP:PUSH:${k('555')}:RID:555:other data`)).toBe('[OK:DATA_SENT]');
    expect(await peer.line()).toBe('PUSH:other data');
    // FRIENDS: F is the data (split on ':').
    expect(await c.request(`TCP:PUSH:${k('hello')}:FRIENDS:hello`)).toBe('[OK:ALL_2]');
    expect(await peer.line()).toBe('PUSH:hello');
    expect(await buddy.line()).toBe('PUSH:hello');
    expect(await c.request(`TCP:PUSH:${k('a')}:FRIENDS:a:b:c`)).toBe('[OK:ALL_2]');
    expect(await peer.line()).toBe('PUSH:a:b:c');
    expect(await buddy.line()).toBe('PUSH:a:b:c');
    expect(await c.request(`TCP:PUSH:${k('a:b:c')}:FRIENDS:a:b:c`)).toBe('[FAIL:INVALID_KEY]');
    // No second field: F = "".
    expect(await c.request(`TCP:GID:${k('')}`)).toBe('[OK:556]');
    expect(await c.request(`TCP:GID:${k('556')}`)).toBe('[FAIL:INVALID_KEY]');
    expect(await c.request(`TCP:RETDATA:${k('')}:1`)).toBe('[OK:hi]');
    expect(await c.request(`TCP:GID:${key}`)).toBe('[FAIL:INVALID_KEY]');

    // STCP's DEACTIVATE does not end a DSTCP session; DSTCP's does.
    expect(await c.request(`STCP:${uid}:DEACTIVATE:`)).toBe('[FAIL:INVALID_KEY]');
    expect(await c.request(`TCP:GID:${k('')}`)).toBe('[OK:556]');
    expect(await c.request(`DSTCP:${uid}:DEACTIVATE:`)).toBe('[OK:DSTCP_DEACTIVATED]');
    expect(await c.request(`TCP:GID:${k('')}`)).toBe('[FAIL:INVALID_KEY]');
    expect(await c.request(`TCP:GID:${key}`)).toBe('[OK:556]');
    expect(await peer.silence(50)).toBe('');
    expect(await buddy.silence(0)).toBe('');
  });

  it('a fresh RND per activation; the previous key fields stop working', async () => {
    const { uid, key } = account('dstcp');
    const c = await open();
    const seen = new Set<string>();
    let prev: Session | null = null;
    for (let i = 0; i < 8; i++) {
      const ses = await activate(c, 'DSTCP', uid, key);
      seen.add(ses.rnd);
      if (prev !== null) expect(await c.request(prev.peek('ID', 'DFRESH', false))).toBe('[FAIL:INVALID_KEY]');
      expect(await c.request(ses.cmd('ID', 'DFRESH', false))).toBe('[OK:DFRESH]');
      expect(await c.request(ses.cmd('REMID', undefined, true))).toBe('[OK:NODEREMOVED]');
      prev = ses;
    }
    expect(seen.size).toBe(8);
  });
});

// ------------------------------------------------------------------ HSTCP

describe('HSTCP', () => {
  it('ACTIVATE:<CLIRND>: → [OK:<RND 16 hex>:<HMAC_SHA256_HEX(KEY, "S:"+CLIRND+":"+RND)>], fresh RND each time', async () => {
    const { uid, key } = account('hstcp');
    const c = await open();
    const seen = new Set<string>();
    for (const nonce of ['0011223344556677', '12345678', 'x'.repeat(64), 'Mixed-Case.nonce_1', 'abcdefgh']) {
      const r = await c.request(`HSTCP:${uid}:ACTIVATE:${nonce}:`);
      const m = HSTCP_OK.exec(r);
      expect(m, `${nonce}: ${r}`).not.toBeNull();
      expect(r).toBe(`[OK:${m![1]}:${hstcpProof(key, nonce, m![1]!)}]`);
      seen.add(m![1]!);
    }
    for (let i = 0; i < 11; i++) seen.add((await activate(c, 'HSTCP', uid, key)).rnd);
    expect(seen.size).toBe(16);
    // The UID case-insensitively.
    const ses = await activate(c, 'HSTCP', uid, key, 'casecase', uid.toUpperCase());
    expect(await c.request(ses.cmd('ID', 'hcase', false))).toBe('[OK:HCASE]');
  });

  it('malformed HSTCP commands → [FAIL:INVALID_FORMAT]; unknown UID → [FAIL:INVALID_USERID]', async () => {
    const { uid, key } = account('hstcp');
    const c = await open();
    for (const bad of [
      `HSTCP:${uid}:ACTIVATE:`,
      `HSTCP:${uid}:ACTIVATE:1234567:`,
      `HSTCP:${uid}:ACTIVATE:${'x'.repeat(65)}:`,
      `HSTCP:${uid}:ACTIVATE:12345678:extra`,
      `HSTCP:${uid}:ACTIVATE:12345678:extra:`,
      `HSTCP:${uid}:START:12345678:`,
      `HSTCP:${uid}`,
      `HSTCP::ACTIVATE:12345678:`,
    ]) {
      expect(await c.request(bad), bad).toBe('[FAIL:INVALID_FORMAT]');
    }
    expect(await c.request(`HSTCP:unknown-${process.pid}@nowhere.example:ACTIVATE:12345678:`)).toBe(
      '[FAIL:INVALID_USERID]',
    );
    expect(await c.request(`TCP:ID:${key}:hfmt`)).toBe('[OK:HFMT]');
  });

  it('the n-th command carries HMAC(KEY, "C:"+RND+":"+n+":"+L)[0:32]; replayed, reordered, altered and truncated commands are refused without advancing n', async () => {
    const { uid, key } = account('hstcp');
    const peer = await dev(key, 'S2');
    const c = await open();
    const ses = await activate(c, 'HSTCP', uid, key);
    const at = (n: number, sub: string, rest?: string): string => lineOf(sub, ses.field(sub, rest, true, n), rest);

    expect(await c.request(ses.cmd('ID', 's1', false))).toBe('[OK:S1]'); // n = 1
    const push2 = at(2, 'PUSH', 'RID:S2:hello');
    expect(await c.request(push2)).toBe('[OK:DATA_SENT]');
    expect(await peer.line()).toBe('PUSH:hello');
    ses.n = 3;

    const push3 = at(3, 'PUSH', 'RID:S2:third');
    const refused = [
      push2, // replay
      at(1, 'PUSH', 'RID:S2:third'), // an old sequence number
      at(4, 'PUSH', 'RID:S2:third'), // reordered: the command after the next one
      at(2, 'PUSH', 'RID:S2:third'),
      push3.replace('third', 'thirD'), // altered data
      push3.replace(':S2:', ':s2:'), // altered target (same canonical ID, different bytes)
      push3.replace('RID:S2:', 'RID:S3:'),
      push3.slice(0, -1), // truncated data
      push3.slice(0, -5),
      `${push3}x`, // extended data
      push3.replace('PUSH:', 'PUSH:0'), // MAC one character too long
      lineOf('PUSH', ses.field('PUSH', 'RID:S2:third', true, 3).slice(0, 31), 'RID:S2:third'), // MAC truncated
      // The last hex digit changed (to one of two digits that differ from the real one).
      ...['0', '1', '2']
        .filter((d) => d !== ses.field('PUSH', 'RID:S2:third', true, 3).slice(31))
        .slice(0, 2)
        .map((d) => lineOf('PUSH', ses.field('PUSH', 'RID:S2:third', true, 3).slice(0, 31) + d, 'RID:S2:third')),
      lineOf('PUSH', ses.field('PUSH', 'FRIENDS:third', true, 3), 'RID:S2:third'), // MAC of another line
      lineOf('PUSH', hstcpMac(key, ses.rnd, 3, 'TCP:PUSH:RID:S2:third'), 'RID:S2:third'), // L without the empty field
      lineOf('PUSH', hstcpMac(key, ses.rnd, 3, push3), 'RID:S2:third'),
      lineOf('PUSH', hmacFull(key, ses.rnd, 3, 'TCP:PUSH::RID:S2:third'), 'RID:S2:third'), // all 64 hex
      lineOf('PUSH', key, 'RID:S2:third'), // the plain KEY
      lineOf('PUSH', stcpSessionKey(key, ses.rnd), 'RID:S2:third'),
      at(3, 'GID').replace('GID', 'PUSH') + ':RID:S2:third', // MAC of GID on a push
    ];
    for (const line of refused) expect(await c.request(line), line).toBe('[FAIL:INVALID_KEY]');
    expect(await peer.silence(50)).toBe('');

    // n is still 3: the correct command is accepted, in lower-case hex too.
    expect(await c.request(push3.replace(/:([0-9A-F]{32}):/, (_m, mac: string) => `:${mac.toLowerCase()}:`))).toBe(
      '[OK:DATA_SENT]',
    );
    expect(await peer.line()).toBe('PUSH:third');
    // ... and only once.
    expect(await c.request(push3)).toBe('[FAIL:INVALID_KEY]');
    expect(await c.request(at(4, 'GID'))).toBe('[OK:S1]');
    expect(await c.request(at(5, 'PUSH', 'FRIENDS:to all'))).toBe('[OK:ALL_1]');
    expect(await peer.line()).toBe('PUSH:to all');
    expect(await c.request(at(6, 'RETDATA', '0'))).toBe('[OK:>hello>third>to all]');
    expect(await peer.silence(50)).toBe('');
  });

  it('DEACTIVATE carries the next MAC over `HSTCP:<UID>:DEACTIVATE:`; a wrong one is refused and does not advance n', async () => {
    const { uid, key } = account('hstcp');
    const c = await open();
    const ses = await activate(c, 'HSTCP', uid, key);
    expect(await c.request(ses.cmd('ID', 'hdeact', false))).toBe('[OK:HDEACT]'); // n = 1
    const head = `HSTCP:${uid}:DEACTIVATE:`;
    for (const bad of [
      head + hstcpMac(key, ses.rnd, 1, head), // the MAC of an earlier n
      head + hstcpMac(key, ses.rnd, 3, head), // of a later n
      head + hstcpMac(key, ses.rnd, 2, `HSTCP:${uid}:DEACTIVATE`), // L without the last colon
      head + hstcpMac(key, ses.rnd, 2, 'TCP:GID:'), // the MAC of another command
      head + hstcpMac(key, ses.rnd, 2, head).slice(0, 31),
      head + key,
    ]) {
      expect(await c.request(bad), bad).toBe('[FAIL:INVALID_KEY]');
    }
    // A DEACTIVATE of another mode neither ends the session nor consumes n.
    expect(await c.request(`STCP:${uid}:DEACTIVATE:`)).toBe('[FAIL:INVALID_KEY]');
    expect(await c.request(`DSTCP:${uid}:DEACTIVATE:`)).toBe('[FAIL:INVALID_KEY]');
    // Without a MAC it ends nothing.
    expect(['[FAIL:INVALID_FORMAT]', '[FAIL:INVALID_KEY]']).toContain(await c.request(head));
    expect(await c.request(`TCP:GID:${key}`)).toBe('[FAIL:INVALID_KEY]');
    expect(await c.request(ses.cmd('GID', undefined, true))).toBe('[OK:HDEACT]'); // n = 2
    // L is the line as sent: here with the UID in upper case.
    const upper = `HSTCP:${uid.toUpperCase()}:DEACTIVATE:`;
    expect(await c.request(upper + hstcpMac(key, ses.rnd, 3, head))).toBe('[FAIL:INVALID_KEY]');
    expect(await c.request(ses.deactivate(uid.toUpperCase()))).toBe('[OK:HSTCP_DEACTIVATED]');
    expect(await c.request(`TCP:GID:${key}`)).toBe('[OK:HDEACT]');
    // No session any more: an HSTCP DEACTIVATE has nothing to end.
    expect(await c.request(head + hstcpMac(key, ses.rnd, 4, head))).toBe('[FAIL:INVALID_KEY]');
    expect(await c.request(`TCP:GID:${key}`)).toBe('[OK:HDEACT]');
  });

  it('re-activation starts again at n = 1 with the new RND; the old session’s MACs are refused', async () => {
    const { uid, key } = account('hstcp');
    const c = await open();
    const first = await activate(c, 'HSTCP', uid, key);
    expect(await c.request(first.cmd('ID', 'hre', false))).toBe('[OK:HRE]');
    expect(await c.request(first.cmd('GID', undefined, true))).toBe('[OK:HRE]');
    const second = await activate(c, 'HSTCP', uid, key);
    expect(second.rnd).not.toBe(first.rnd);
    expect(await c.request(first.peek('GID', undefined, true))).toBe('[FAIL:INVALID_KEY]');
    expect(await c.request(lineOf('GID', first.field('GID', undefined, true, 1), undefined))).toBe(
      '[FAIL:INVALID_KEY]',
    );
    expect(await c.request(second.cmd('GID', undefined, true))).toBe('[OK:HRE]');
    // An STCP activation replaces the HSTCP session.
    const st = await activate(c, 'STCP', uid, key);
    expect(await c.request(second.peek('GID', undefined, true))).toBe('[FAIL:INVALID_KEY]');
    expect(await c.request(`TCP:GID:${stcpSessionKey(key, st.rnd)}`)).toBe('[OK:HRE]');
  });

  it('property: with random tampering (replay, reorder, swap, flipped byte, truncation) exactly the untampered commands are accepted, in order', async () => {
    const { uid, key } = account('hprop');
    const sink = await dev(key, 'SINK');
    const sender = await dev(key, 'SENDER');
    let run = 0;

    const cmdArb = fc.record({
      kind: fc.constantFrom('RID', 'FRIENDS', 'GID'),
      // Latin1 payload bytes, any but CR and LF.
      data: fc
        .array(
          fc.integer({ min: 0, max: 255 }).filter((b) => b !== 10 && b !== 13),
          { minLength: 1, maxLength: 16 },
        )
        .map((bs) => String.fromCharCode(...bs)),
    });
    type Op =
      | { op: 'next' }
      | { op: 'replay'; pick: number }
      | { op: 'ahead'; pick: number }
      | { op: 'swap' }
      | { op: 'flip'; pick: number; byte: number }
      | { op: 'truncate'; pick: number };
    const opArb: fc.Arbitrary<Op> = fc.oneof(
      fc.constant({ op: 'next' as const }),
      fc.record({ op: fc.constant('replay' as const), pick: fc.nat() }),
      fc.record({ op: fc.constant('ahead' as const), pick: fc.nat() }),
      fc.constant({ op: 'swap' as const }),
      fc.record({ op: fc.constant('flip' as const), pick: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) }),
      fc.record({ op: fc.constant('truncate' as const), pick: fc.nat() }),
    );

    await fc.assert(
      fc.asyncProperty(
        fc.array(cmdArb, { minLength: 1, maxLength: 8 }),
        fc.array(opArb, { maxLength: 20 }),
        async (cmds, ops) => {
          run++;
          const ses = await activate(sender, 'HSTCP', uid, key);
          // The intended session: command j carries n = j + 1.
          const rests = cmds.map((c) =>
            c.kind === 'RID' ? `RID:SINK:${c.data}` : c.kind === 'FRIENDS' ? `FRIENDS:${c.data}` : undefined,
          );
          const subs = cmds.map((c) => (c.kind === 'GID' ? 'GID' : 'PUSH'));
          const lines = cmds.map((_, j) => lineOf(subs[j]!, ses.field(subs[j]!, rests[j], true, j + 1), rests[j]));
          const okReply = cmds.map((c) =>
            c.kind === 'RID' ? '[OK:DATA_SENT]' : c.kind === 'FRIENDS' ? '[OK:ALL_1]' : '[OK:SENDER]',
          );
          const sent: string[] = [];
          const want: string[] = [];
          const delivered: string[] = [];
          let i = 0;
          const accept = (): void => {
            sent.push(lines[i]!);
            want.push(okReply[i]!);
            if (cmds[i]!.kind !== 'GID') delivered.push(`PUSH:${cmds[i]!.data}`);
            i++;
          };
          const refuse = (line: string): void => {
            sent.push(line);
            want.push('[FAIL:INVALID_KEY]');
          };
          for (const o of ops) {
            if (i >= lines.length) break;
            const line = lines[i]!;
            const macStart = line.indexOf(':', 4) + 1;
            const macEnd = macStart + 32;
            switch (o.op) {
              case 'next':
                accept();
                break;
              case 'replay':
                if (i === 0) accept();
                else refuse(lines[o.pick % i]!);
                break;
              case 'ahead':
                if (i + 1 >= lines.length) accept();
                else refuse(lines[i + 1 + (o.pick % (lines.length - i - 1))]!);
                break;
              case 'swap':
                // The next two commands in the wrong order: the later one is refused, the earlier accepted.
                if (i + 1 >= lines.length) accept();
                else {
                  refuse(lines[i + 1]!);
                  accept();
                }
                break;
              case 'flip': {
                // One byte of the MAC (to another hex value) or of anything after it but its colons.
                const positions: number[] = [];
                for (let p = macStart; p < line.length; p++) if (line[p] !== ':') positions.push(p);
                const p = positions[o.pick % positions.length]!;
                let b: number;
                if (p < macEnd) {
                  const hex = '0123456789ABCDEF';
                  const cur = hex.indexOf(line[p]!.toUpperCase());
                  b = hex.charCodeAt((cur + 1 + (o.byte % 15)) % 16);
                } else {
                  b = o.byte;
                  if (b === 10 || b === 13 || b === 58 || b === line.charCodeAt(p)) b = line.charCodeAt(p) ^ 0x40;
                  if (b === 10 || b === 13 || b === 58) b = 0x21;
                }
                refuse(line.slice(0, p) + String.fromCharCode(b) + line.slice(p + 1));
                break;
              }
              case 'truncate': {
                if (cmds[i]!.kind === 'GID') {
                  refuse(line.slice(0, macEnd - 1 - (o.pick % 31))); // a shortened MAC
                } else {
                  const dataLen = cmds[i]!.data.length;
                  refuse(line.slice(0, line.length - 1 - (o.pick % dataLen))); // shortened data
                }
                break;
              }
            }
          }
          while (i < lines.length) accept();
          // One more command and the deactivation prove where the sequence stands.
          const n = lines.length + 1;
          const end = `TCP:PUSH:${hstcpMac(key, ses.rnd, n, `TCP:PUSH::RID:SINK:END${run}`)}:RID:SINK:END${run}`;
          ses.n = n + 1;
          sent.push(end, ses.deactivate());
          want.push('[OK:DATA_SENT]', '[OK:HSTCP_DEACTIVATED]');
          delivered.push(`PUSH:END${run}`);

          sender.write(sent.map((l) => `${l}\r\n`).join(''));
          expect(await sender.lines(want.length)).toEqual(want);
          expect(await sink.lines(delivered.length)).toEqual(delivered);
          expect(await sender.silence(0)).toBe('');
          expect(sink.buffer).toBe('');
        },
      ),
      { numRuns: 60, seed: 0x5e55, endOnFailure: true },
    );
    expect(await sink.silence(50)).toBe('');
  });
});

/** All 64 hex characters of the command HMAC (the wire carries only the first 32). */
function hmacFull(key: string, rnd: string, n: number, l: string): string {
  return hmacHex(key, `C:${rnd}:${n}:${l}`);
}
