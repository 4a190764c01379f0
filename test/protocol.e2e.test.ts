// End-to-end protocol tests (PROTOCOL.md §1–§5) against the real server: supervisor + 2 shard worker
// threads sharing one port with reusePort. Every assertion is on exact reply bytes; TestClient.line()
// additionally fails on any line not terminated by CRLF.

import { describe, expect, it } from 'vitest';
import type { TestClient } from './helpers/client.ts';
import { suiteServer } from './helpers/devices.ts';
import type { TestServer } from './helpers/server.ts';
import { openPerShard, sleep } from './helpers/shards.ts';

let srv: TestServer;
/** Every client a test opens; afterEach closes them and waits until the server has seen every close. */
const { open, dev, openOn, devOn } = suiteServer((s) => (srv = s));

// ------------------------------------------------------------------ helpers

/** Pushes RID probes until the server reports the target gone; before that, each probe must be delivered. */
async function untilGone(from: TestClient, key: string, id: string): Promise<void> {
  const deadline = Date.now() + 5000;
  for (;;) {
    const r = await from.request(`TCP:PUSH:${key}:RID:${id}:probe`);
    if (r === '[FAIL:REM_ID]') return;
    expect(r).toBe('[OK:DATA_SENT]');
    if (Date.now() > deadline) throw new Error(`${id} still reachable 5 s after it disconnected`);
    await sleep(10);
  }
}

/** A key of the right shape that belongs to no account. */
function unknownKey(): string {
  for (;;) {
    const k = Array.from({ length: 32 }, () => '0123456789ABCDEF'[Math.floor(Math.random() * 16)]).join('');
    if (srv.embedded!.accountByKey(k) === null) return k;
  }
}

/** Status line and body of a raw HTTP response. */
function httpParts(raw: string): { status: string; body: string } {
  const head = raw.indexOf('\r\n\r\n');
  return { status: raw.slice(0, raw.indexOf('\r\n')), body: head < 0 ? '' : raw.slice(head + 4) };
}

// ------------------------------------------------------------------ §1, §3: replies and IDs

describe('replies and IDs', () => {
  it('a reply is exactly [OK:<ID>] + CRLF, with the ID upper-cased', async () => {
    const c = await open();
    c.write(`TCP:ID:${srv.key}:abc\r\n`);
    await c.until((b) => b.includes('\n'), 5000, 'the ID reply');
    expect(c.buffer).toBe('[OK:ABC]\r\n');
  });

  it('accepts IDs of A-Z 0-9 _ - . @ up to NODE.MAX_ID and answers INVALID_DATA for others', async () => {
    const key = srv.newKey();
    const c = await open();
    const max = 'z'.repeat(64);
    for (const bad of ['', 'a b', 'a:b', 'a#b', 'caf\xe9', 'x'.repeat(65), 'a/b', 'a+b']) {
      expect(await c.request(`TCP:ID:${key}:${bad}`), JSON.stringify(bad)).toBe('[FAIL:INVALID_DATA]');
    }
    // None of the refusals registered anything.
    expect(await c.request(`TCP:GID:${key}`)).toBe('[FAIL:NOID]');
    expect(await c.request(`TCP:ID:${key}:${max}`)).toBe(`[OK:${max.toUpperCase()}]`);
    const d = await open();
    expect(await d.request(`TCP:ID:${key}:aZ09_-.@q`)).toBe('[OK:AZ09_-.@Q]');
    expect(await d.request(`TCP:GID:${key}`)).toBe('[OK:AZ09_-.@Q]');
  });

  it('TCP:ID again: the same ID (any case) → [OK:<ID>], another ID → [FAIL:<CURRENT_ID>]', async () => {
    const key = srv.newKey();
    const c = await dev(key, 'Same1');
    expect(await c.request(`TCP:ID:${key}:SAME1`)).toBe('[OK:SAME1]');
    expect(await c.request(`TCP:ID:${key}:same1`)).toBe('[OK:SAME1]');
    expect(await c.request(`TCP:ID:${key}:other`)).toBe('[FAIL:SAME1]');
    expect(await c.request(`TCP:GID:${key}`)).toBe('[OK:SAME1]');
    // The refused ID is still free for another connection.
    await dev(key, 'other');
  });

  it('TCP:GID returns the registered ID', async () => {
    const c = await dev(srv.key, 'gid-Dev');
    expect(await c.request(`TCP:GID:${srv.key}`)).toBe('[OK:GID-DEV]');
  });

  it('before registration every sub-command but ID answers [FAIL:NOID]; unknown ones [FAIL:INVALID_CMD]', async () => {
    const k = srv.key;
    const c = await open();
    const noid = [
      `TCP:GID:${k}`,
      `TCP:REMID:${k}`,
      `TCP:PUSH:${k}:RID:X:hi`,
      `TCP:PUSH:${k}:FRIENDS:hi`,
      `TCP:PUSH:${k}:NOSUCHTARGET:hi`,
      `TCP:RETDATA:${k}:1`,
      `TCP:EMAIL:${k}:a@b.example:s:b`,
      `TCP:SMS:${k}:+15550100:t`,
      `TCP:TIME:${k}:+05:30`,
      `TCP:STATUS:${k}:X`,
      `TCP:WATCH:${k}:FRIENDS`,
      `TCP:UNWATCH:${k}:FRIENDS`,
      `TCP:WILL:${k}:CLEAR`,
      // NOID comes before any KEY or format check.
      `TCP:GID:not-a-key`,
      `TCP:GID:${unknownKey()}`,
      `TCP:GID`,
      `TCP:PUSH:${k}`,
      `TCP:RETDATA`,
    ];
    for (const cmd of noid) expect(await c.request(cmd), cmd).toBe('[FAIL:NOID]');
    for (const cmd of [`TCP:FOO:${k}:x`, `TCP:IDX:${k}:x`, `TCP:PUSHX:${k}:RID:X:x`, 'TCP:', `TCP::${k}`]) {
      expect(await c.request(cmd), cmd).toBe('[FAIL:INVALID_CMD]');
    }
    // Still usable and unregistered.
    expect(await c.request(`TCP:ID:${k}:after-noid`)).toBe('[OK:AFTER-NOID]');
  });

  it('unknown sub-commands after registration answer [FAIL:INVALID_CMD]', async () => {
    const c = await dev(srv.key, 'inv-cmd');
    for (const cmd of [`TCP:FOO:${srv.key}:x`, `TCP:GIDS:${srv.key}`, 'TCP:']) {
      expect(await c.request(cmd), cmd).toBe('[FAIL:INVALID_CMD]');
    }
  });
});

// ------------------------------------------------------------------ §3, §4: KEYs and formats

describe('KEY handling', () => {
  it('unknown or malformed KEY → [FAIL:INVALID_KEY] before registration', async () => {
    const k = srv.key;
    const unknown = unknownKey();
    const c = await open();
    for (const bad of [unknown, unknown, k.slice(1), `${k}0`, `${k.slice(0, 31)}G`, '', 'KEY', ` ${k.slice(1)}`]) {
      expect(await c.request(`TCP:ID:${bad}:X1`), bad).toBe('[FAIL:INVALID_KEY]');
    }
    expect(await c.request(`TCP:ID:${k}:key-ok`)).toBe('[OK:KEY-OK]');
  });

  it('KEY is matched case-insensitively, before and after registration', async () => {
    const key = srv.newKey();
    const lower = key.toLowerCase();
    const mixed = [...key].map((ch, i) => (i % 2 ? ch.toLowerCase() : ch)).join('');
    expect(lower).not.toBe(key);
    const a = await open();
    expect(await a.request(`TCP:ID:${lower}:ci-a`)).toBe('[OK:CI-A]');
    const b = await open();
    expect(await b.request(`TCP:ID:${mixed}:ci-b`)).toBe('[OK:CI-B]');
    expect(await a.request(`TCP:GID:${key}`)).toBe('[OK:CI-A]');
    expect(await a.request(`TCP:GID:${mixed}`)).toBe('[OK:CI-A]');
    expect(await a.request(`TCP:PUSH:${lower}:RID:ci-b:hi`)).toBe('[OK:DATA_SENT]');
    expect(await b.line()).toBe('PUSH:hi');
    expect(await b.request(`TCP:PUSH:${key}:FRIENDS:all`)).toBe('[OK:ALL_1]');
    expect(await a.line()).toBe('PUSH:all');
  });

  it('a KEY of another existing account → [FAIL:NOKEY], and nothing is delivered there', async () => {
    const keyA = srv.newKey();
    const keyB = srv.newKey();
    const a = await dev(keyA, 'nk-a');
    const b = await dev(keyB, 'nk-b');
    for (const cmd of [
      `TCP:GID:${keyB}`,
      `TCP:GID:${keyB.toLowerCase()}`,
      `TCP:ID:${keyB}:nk-a`,
      `TCP:ID:${keyB}:nk-other`,
      `TCP:PUSH:${keyB}:RID:nk-b:leak`,
      `TCP:PUSH:${keyB}:FRIENDS:leak`,
      `TCP:RETDATA:${keyB}:0`,
      `TCP:REMID:${keyB}`,
      `TCP:EMAIL:${keyB}:a@b.example:s:b`,
    ]) {
      expect(await a.request(cmd), cmd).toBe('[FAIL:NOKEY]');
    }
    // Unknown and malformed KEYs after registration.
    expect(await a.request(`TCP:GID:${unknownKey()}`)).toBe('[FAIL:INVALID_KEY]');
    expect(await a.request(`TCP:GID:${keyA.slice(2)}`)).toBe('[FAIL:INVALID_KEY]');
    expect(await a.request(`TCP:PUSH:zz:RID:nk-b:leak`)).toBe('[FAIL:INVALID_KEY]');
    // The registration survived all of it and B received nothing.
    expect(await a.request(`TCP:GID:${keyA}`)).toBe('[OK:NK-A]');
    expect(await b.request(`TCP:GID:${keyB}`)).toBe('[OK:NK-B]');
    expect(b.buffer).toBe('');
  });

  it('missing fields → [FAIL:INVALID_FORMAT]', async () => {
    const k = srv.key;
    const c = await open();
    expect(await c.request(`TCP:ID:${k}`)).toBe('[FAIL:INVALID_FORMAT]');
    expect(await c.request('TCP:ID')).toBe('[FAIL:INVALID_FORMAT]');
    expect(await c.request(`TCP:ID:${k}:fmt`)).toBe('[OK:FMT]');
    for (const cmd of [
      `TCP:PUSH:${k}`,
      `TCP:PUSH:${k}:RID`,
      `TCP:PUSH:${k}:RID:FMT`,
      `TCP:PUSH:${k}:FRIENDS`,
      `TCP:PUSH:${k}:CHILDS`,
      `TCP:PUSH:${k}:ALLCHILDS`,
      `TCP:PUSH:${k}:PARENT`,
      `TCP:PUSH:${k}:RO:R1`,
      `TCP:PUSH:${k}:ALIAS:N1`,
      `TCP:RETDATA:${k}`,
      `TCP:EMAIL:${k}`,
      `TCP:SMS:${k}`,
      'TCP:PUSH',
      'TCP:RETDATA',
    ]) {
      expect(await c.request(cmd), cmd).toBe('[FAIL:INVALID_FORMAT]');
    }
    expect(await c.silence(50)).toBe('');
  });

  it('an unknown PUSH target → [FAIL:UNKNOWN_CMD]', async () => {
    const k = srv.key;
    const c = await dev(k, 'unk-target');
    for (const cmd of [
      `TCP:PUSH:${k}:FOO:x`,
      `TCP:PUSH:${k}:FRIEND:x`,
      `TCP:PUSH:${k}:RIDS:UNK-TARGET:x`,
      `TCP:PUSH:${k}::x`,
      `TCP:PUSH:${k}:`,
    ]) {
      expect(await c.request(cmd), cmd).toBe('[FAIL:UNKNOWN_CMD]');
    }
    expect(await c.silence(50)).toBe('');
  });

  it('lines not starting with TCP:/STCP:/DSTCP:/HSTCP: → [FAIL:UNKNOWN_COMMAND], before and after ID', async () => {
    const k = srv.key;
    const bad = ['HELLO', `tcp:ID:${k}:x`, ` TCP:ID:${k}:x`, 'TCP', 'TC', `xTCP:GID:${k}`, 'GET', '\x00\xff', '[OK:X]'];
    const c = await open();
    for (const line of bad) expect(await c.request(line), JSON.stringify(line)).toBe('[FAIL:UNKNOWN_COMMAND]');
    expect(await c.request(`TCP:ID:${k}:uc`)).toBe('[OK:UC]');
    for (const line of bad) expect(await c.request(line), JSON.stringify(line)).toBe('[FAIL:UNKNOWN_COMMAND]');
    expect(await c.request(`TCP:GID:${k}`)).toBe('[OK:UC]');
  });

  it('empty lines get no reply', async () => {
    const c = await open();
    c.write('\r\n\n\r\n');
    expect(await c.silence(100)).toBe('');
    expect(await c.request(`TCP:ID:${srv.key}:empty`)).toBe('[OK:EMPTY]');
    c.write('\n\r\n\r\n\n');
    expect(await c.request(`TCP:GID:${srv.key}`)).toBe('[OK:EMPTY]');
    expect(await c.silence(50)).toBe('');
  });

  it('EMAIL → [FAIL:MAIL_DISABLED], SMS → [FAIL:SMS_DISABLED]', async () => {
    const k = srv.key;
    const c = await dev(k, 'mailer');
    expect(await c.request(`TCP:EMAIL:${k}:someone@example.com:Subject:Body: with colon`)).toBe('[FAIL:MAIL_DISABLED]');
    expect(await c.request(`TCP:SMS:${k}:+15550100:text`)).toBe('[FAIL:SMS_DISABLED]');
  });

  it('a connection whose first bytes are an HTTP request is served by the operator API (§1, §8)', async () => {
    const cases: [string, string, string][] = [
      [
        'GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n',
        'HTTP/1.1 200 OK',
        '"status":"ok"',
      ],
      [
        'POST /api/v1/accounts HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}',
        'HTTP/1.1 401 Unauthorized',
        '"error":"UNAUTHORIZED"',
      ],
      [`GET /ADDNODE?KEY=${srv.key}&PNODE=httpnode HTTP/1.0\r\n\r\n`, 'HTTP/1.1 200 OK', 'OK:HTTPNODE'],
    ];
    for (const [req, status, body] of cases) {
      const c = await open();
      c.write(req);
      await c.closedByServer();
      const got = httpParts(c.buffer);
      expect(got.status, req).toBe(status);
      expect(got.body, req).toContain(body);
    }
  });
});

// ------------------------------------------------------------------ §4: RETDATA, REMID, duplicates

describe('RETDATA', () => {
  it('nothing cached → [FAIL:NO_DATA] for any N', async () => {
    const k = srv.key;
    const c = await dev(k, 'rd-empty');
    for (const n of ['1', '0', '-1', '5']) expect(await c.request(`TCP:RETDATA:${k}:${n}`), n).toBe('[FAIL:NO_DATA]');
  });

  it('N-th oldest of the last 5 payloads; N ≤ 0 all, oldest first; past the end NO_DATA; NaN INVALID_DATA', async () => {
    const k = srv.newKey();
    const c = await dev(k, 'rd');
    const sink = await dev(k, 'rd-sink');
    const payloads = ['p1', 'p:2', 'p3', '', 'p5', 'p6', 'p7'];
    // Two payloads: 1..2 answer, 3 is past the end.
    expect(await c.request(`TCP:PUSH:${k}:RID:rd-sink:${payloads[0]}`)).toBe('[OK:DATA_SENT]');
    expect(await c.request(`TCP:PUSH:${k}:FRIENDS:${payloads[1]}`)).toBe('[OK:ALL_1]');
    expect(await c.request(`TCP:RETDATA:${k}:1`)).toBe('[OK:p1]');
    expect(await c.request(`TCP:RETDATA:${k}:2`)).toBe('[OK:p:2]');
    expect(await c.request(`TCP:RETDATA:${k}:3`)).toBe('[FAIL:NO_DATA]');
    expect(await c.request(`TCP:RETDATA:${k}:0`)).toBe('[OK:>p1>p:2]');
    for (const p of payloads.slice(2)) {
      expect(await c.request(`TCP:PUSH:${k}:RID:RD-SINK:${p}`)).toBe('[OK:DATA_SENT]');
    }
    expect(await sink.lines(7)).toEqual(payloads.map((p) => `PUSH:${p}`));
    // Seven pushed: the last five are p3, '', p5, p6, p7.
    const last5 = payloads.slice(2);
    for (let n = 1; n <= 5; n++) expect(await c.request(`TCP:RETDATA:${k}:${n}`)).toBe(`[OK:${last5[n - 1]}]`);
    for (const n of ['6', '7', '100', '999999999']) {
      expect(await c.request(`TCP:RETDATA:${k}:${n}`), n).toBe('[FAIL:NO_DATA]');
    }
    for (const n of ['0', '-1', '-5', '-100']) {
      expect(await c.request(`TCP:RETDATA:${k}:${n}`), n).toBe('[OK:>p3>>p5>p6>p7]');
    }
    for (const n of ['x', 'one', '1x', '1.5', '0x1', '']) {
      expect(await c.request(`TCP:RETDATA:${k}:${n}`), JSON.stringify(n)).toBe('[FAIL:INVALID_DATA]');
    }
    // RETDATA itself is not a push: the cache is unchanged.
    expect(await c.request(`TCP:RETDATA:${k}:1`)).toBe('[OK:p3]');
    expect(sink.buffer).toBe('');
  });

  it('is per connection', async () => {
    const k = srv.newKey();
    const a = await dev(k, 'rd-a');
    const b = await dev(k, 'rd-b');
    expect(await a.request(`TCP:PUSH:${k}:RID:rd-b:from-a`)).toBe('[OK:DATA_SENT]');
    expect(await b.line()).toBe('PUSH:from-a');
    expect(await b.request(`TCP:RETDATA:${k}:0`)).toBe('[FAIL:NO_DATA]');
    expect(await a.request(`TCP:RETDATA:${k}:0`)).toBe('[OK:>from-a]');
  });
});

describe('REMID', () => {
  it('→ [OK:NODEREMOVED]; afterwards commands answer NOID, the ID is unreachable, and ID works again', async () => {
    const k = srv.newKey();
    const c = await dev(k, 'rem');
    const other = await dev(k, 'rem-other');
    expect(await c.request(`TCP:REMID:${k}`)).toBe('[OK:NODEREMOVED]');
    expect(await c.request(`TCP:GID:${k}`)).toBe('[FAIL:NOID]');
    expect(await c.request(`TCP:PUSH:${k}:RID:rem-other:x`)).toBe('[FAIL:NOID]');
    expect(await c.request(`TCP:PUSH:${k}:FRIENDS:x`)).toBe('[FAIL:NOID]');
    expect(await c.request(`TCP:RETDATA:${k}:0`)).toBe('[FAIL:NOID]');
    expect(await c.request(`TCP:REMID:${k}`)).toBe('[FAIL:NOID]');
    expect(await other.request(`TCP:PUSH:${k}:RID:rem:x`)).toBe('[FAIL:REM_ID]');
    expect(await other.request(`TCP:PUSH:${k}:FRIENDS:x`)).toBe('[FAIL:NO_ID]');
    expect(other.buffer).toBe('');
    // Re-register: the same ID, then another, then under another account.
    expect(await c.request(`TCP:ID:${k}:rem`)).toBe('[OK:REM]');
    expect(await other.request(`TCP:PUSH:${k}:RID:rem:back`)).toBe('[OK:DATA_SENT]');
    expect(await c.line()).toBe('PUSH:back');
    expect(await c.request(`TCP:REMID:${k}`)).toBe('[OK:NODEREMOVED]');
    expect(await c.request(`TCP:ID:${k}:rem2`)).toBe('[OK:REM2]');
    expect(await c.request(`TCP:GID:${k}`)).toBe('[OK:REM2]');
    const k2 = srv.newKey();
    expect(await c.request(`TCP:REMID:${k}`)).toBe('[OK:NODEREMOVED]');
    expect(await c.request(`TCP:ID:${k2}:rem`)).toBe('[OK:REM]');
    expect(await c.request(`TCP:GID:${k2}`)).toBe('[OK:REM]');
    expect(await c.request(`TCP:GID:${k}`)).toBe('[FAIL:NOKEY]');
    expect(await other.request(`TCP:PUSH:${k}:RID:rem:x`)).toBe('[FAIL:REM_ID]');
    expect(await c.silence(50)).toBe('');
  });

  it('frees the ID for another connection at once (same shard and other shard)', async () => {
    const k = srv.newKey();
    for (const [holderShard, nextShard] of [
      [0, 0],
      [0, 1],
      [1, 0],
      [1, 1],
    ] as const) {
      const id = `free-${holderShard}${nextShard}`;
      const holder = await devOn(holderShard, k, id);
      const next = await openOn(nextShard);
      expect(await holder.request(`TCP:REMID:${k}`)).toBe('[OK:NODEREMOVED]');
      expect(await next.request(`TCP:ID:${k}:${id}`)).toBe(`[OK:${id.toUpperCase()}]`);
      expect(await holder.request(`TCP:ID:${k}:${id}`)).toBe('[FAIL:NODEEXIST]');
      await holder.closedByServer();
    }
  });
});

describe('duplicate IDs', () => {
  it('a live duplicate gets [FAIL:NODEEXIST], is closed, and runs nothing it sent after', async () => {
    const k = srv.newKey();
    const probe = await dev(k, 'dup-probe');
    for (const [holderShard, dupShard] of [
      [0, 0],
      [0, 1],
      [1, 1],
      [1, 0],
    ] as const) {
      const id = `dup-${holderShard}${dupShard}`;
      const holder = await devOn(holderShard, k, id);
      const dup = await openOn(dupShard);
      // Pipelined: the commands after the refused ID must not run.
      dup.write(`TCP:ID:${k}:${id.toLowerCase()}\r\nTCP:GID:${k}\r\nTCP:PUSH:${k}:RID:${id}:from-dup\r\n`);
      await dup.closedByServer();
      expect(dup.buffer).toBe('[FAIL:NODEEXIST]\r\n');
      // The holder keeps its ID and stays reachable.
      expect(await holder.request(`TCP:GID:${k}`)).toBe(`[OK:${id.toUpperCase()}]`);
      expect(await probe.request(`TCP:PUSH:${k}:RID:${id}:still-yours`)).toBe('[OK:DATA_SENT]');
      expect(await holder.line()).toBe('PUSH:still-yours');
    }
  });

  it('after the holder disconnects the ID can be registered again', async () => {
    const k = srv.newKey();
    const probe = await dev(k, 'dup-probe');
    const holder = await dev(k, 'reuse');
    holder.close();
    await untilGone(probe, k, 'reuse');
    const again = await dev(k, 'reuse');
    expect(await probe.request(`TCP:PUSH:${k}:RID:reuse:hello`)).toBe('[OK:DATA_SENT]');
    expect(await again.line()).toBe('PUSH:hello');
  });
});

// ------------------------------------------------------------------ §5: PUSH

describe('PUSH RID', () => {
  it('delivers PUSH:<DATA> + CRLF; the target ID is case-insensitive', async () => {
    const k = srv.newKey();
    const a = await dev(k, 'rid-a');
    const b = await dev(k, 'rid-b');
    expect(await a.request(`TCP:PUSH:${k}:RID:RID-B:one`)).toBe('[OK:DATA_SENT]');
    expect(await a.request(`TCP:PUSH:${k}:RID:rid-b:two`)).toBe('[OK:DATA_SENT]');
    await b.until((buf) => buf.split('\n').length > 2, 5000, 'two pushes');
    expect(b.buffer).toBe('PUSH:one\r\nPUSH:two\r\n');
    expect(a.buffer).toBe('');
  });

  it('to an unknown ID → [FAIL:REM_ID]', async () => {
    const k = srv.newKey();
    const a = await dev(k, 'rid-lonely');
    expect(await a.request(`TCP:PUSH:${k}:RID:nobody:x`)).toBe('[FAIL:REM_ID]');
    expect(await a.request(`TCP:PUSH:${k}:RID::x`)).toBe('[FAIL:REM_ID]');
    expect(await a.silence(50)).toBe('');
  });

  it('to itself delivers to itself', async () => {
    const k = srv.newKey();
    const a = await dev(k, 'rid-self');
    a.write(`TCP:PUSH:${k}:RID:rid-self:me\r\n`);
    const got = await a.lines(2);
    expect([...got].sort()).toEqual(['PUSH:me', '[OK:DATA_SENT]']);
    expect(await a.silence(50)).toBe('');
  });

  it('after the target disconnected → [FAIL:REM_ID] (same shard and other shard)', async () => {
    const k = srv.newKey();
    const a0 = await devOn(0, k, 'gone-from0');
    const t0 = await devOn(0, k, 'gone-t0');
    const t1 = await devOn(1, k, 'gone-t1');
    expect(await a0.request(`TCP:PUSH:${k}:RID:gone-t0:x`)).toBe('[OK:DATA_SENT]');
    expect(await a0.request(`TCP:PUSH:${k}:RID:gone-t1:x`)).toBe('[OK:DATA_SENT]');
    t0.close();
    t1.close();
    await sleep(100);
    await untilGone(a0, k, 'gone-t0');
    await untilGone(a0, k, 'gone-t1');
    expect(await a0.request(`TCP:PUSH:${k}:RID:gone-t0:x`)).toBe('[FAIL:REM_ID]');
    expect(await a0.request(`TCP:PUSH:${k}:RID:gone-t1:x`)).toBe('[FAIL:REM_ID]');
    expect(await a0.request(`TCP:PUSH:${k}:FRIENDS:x`)).toBe('[FAIL:NO_ID]');
  });
});

describe('payload bytes', () => {
  // Every byte but CR and LF, as latin1 text.
  const allBytes = Array.from({ length: 256 }, (_, i) => i)
    .filter((b) => b !== 10 && b !== 13)
    .map((b) => String.fromCharCode(b))
    .join('');
  const cases: [string, string][] = [
    ['colons', 'a:b::c:'],
    ['leading colon', ':x'],
    ['only colons', ':::'],
    ['brackets and >', '[OK:fake]>x'],
    ['high latin1', '\xe9\xe8\xff\xa0\x80\xc3\xa9'],
    ['NUL and controls', '\x00\x01\x1b\x7f\x00'],
    ['spaces', '  padded  '],
    ['every byte but CR/LF', allBytes],
    ['empty', ''],
  ];

  it('pass through RID and FRIENDS unchanged, locally and across shards, and come back from RETDATA', async () => {
    const k = srv.newKey();
    const s = await devOn(0, k, 'pb-sender');
    const local = await devOn(0, k, 'pb-local');
    const remote = await devOn(1, k, 'pb-remote');
    for (const [name, data] of cases) {
      expect(await s.request(`TCP:PUSH:${k}:RID:pb-local:${data}`), name).toBe('[OK:DATA_SENT]');
      expect(await local.line(), name).toBe(`PUSH:${data}`);
      expect(await s.request(`TCP:PUSH:${k}:RID:pb-remote:${data}`), name).toBe('[OK:DATA_SENT]');
      expect(await remote.line(), name).toBe(`PUSH:${data}`);
      expect(await s.request(`TCP:PUSH:${k}:FRIENDS:${data}`), name).toBe('[OK:ALL_2]');
      expect(await local.line(), name).toBe(`PUSH:${data}`);
      expect(await remote.line(), name).toBe(`PUSH:${data}`);
      expect(await s.request(`TCP:RETDATA:${k}:3`), name).toBe(`[OK:${data}]`);
      // And from the other shard back.
      expect(await remote.request(`TCP:PUSH:${k}:RID:pb-sender:${data}`), name).toBe('[OK:DATA_SENT]');
      expect(await s.line(), name).toBe(`PUSH:${data}`);
    }
    expect(await s.request(`TCP:RETDATA:${k}:0`)).toBe(`[OK:>${allBytes}>${allBytes}>>>]`);
    for (const c of [s, local, remote]) expect(c.buffer).toBe('');
  });

  it('arrive as exact bytes on the wire (latin1, never UTF-8)', async () => {
    const k = srv.newKey();
    const a = await dev(k, 'wire-a');
    const b = await dev(k, 'wire-b');
    const raw = Buffer.from([0xe9, 0x3a, 0x00, 0xff, 0xc3, 0xa9, 0x80]);
    const chunks: Buffer[] = [];
    b.socket.on('data', (d: Buffer) => chunks.push(d));
    a.socket.write(Buffer.concat([Buffer.from(`TCP:PUSH:${k}:RID:wire-b:`), raw, Buffer.from('\r\n')]));
    expect(await a.line()).toBe('[OK:DATA_SENT]');
    await b.until((buf) => buf.includes('\n'), 5000, 'the push');
    expect(Buffer.concat(chunks)).toEqual(Buffer.concat([Buffer.from('PUSH:'), raw, Buffer.from('\r\n')]));
  });
});

describe('group and tree targets', () => {
  it('FRIENDS: every other live ID of the account gets it, reply [OK:ALL_<n>], alone [FAIL:NO_ID]', async () => {
    const k = srv.newKey();
    const a = await dev(k, 'fr-a');
    expect(await a.request(`TCP:PUSH:${k}:FRIENDS:nobody`)).toBe('[FAIL:NO_ID]');
    const b = await dev(k, 'fr-b');
    expect(await a.request(`TCP:PUSH:${k}:FRIENDS:one`)).toBe('[OK:ALL_1]');
    expect(await b.line()).toBe('PUSH:one');
    const c = await dev(k, 'fr-c');
    const unregistered = await open();
    expect(await b.request(`TCP:PUSH:${k}:FRIENDS:two`)).toBe('[OK:ALL_2]');
    expect(await a.line()).toBe('PUSH:two');
    expect(await c.line()).toBe('PUSH:two');
    // The sender never receives its own group message; unregistered connections receive nothing.
    expect(await b.silence(50)).toBe('');
    expect(unregistered.buffer).toBe('');
  });

  it('CHILDS/ALLCHILDS → [FAIL:NO_ID], PARENT → [FAIL:NO_PARENT], RO → [FAIL:NO_ROUTER], ALIAS → [FAIL:NO_ALIAS]', async () => {
    const k = srv.newKey();
    const a = await dev(k, 'tree-a');
    const b = await dev(k, 'tree-b');
    expect(await a.request(`TCP:PUSH:${k}:CHILDS:x`)).toBe('[FAIL:NO_ID]');
    expect(await a.request(`TCP:PUSH:${k}:ALLCHILDS:x`)).toBe('[FAIL:NO_ID]');
    expect(await a.request(`TCP:PUSH:${k}:PARENT:x`)).toBe('[FAIL:NO_PARENT]');
    expect(await a.request(`TCP:PUSH:${k}:RO:R1:x`)).toBe('[FAIL:NO_ROUTER]');
    expect(await a.request(`TCP:PUSH:${k}:RO:tree-b:x`)).toBe('[FAIL:NO_ROUTER]');
    expect(await a.request(`TCP:PUSH:${k}:ALIAS:lamp:x`)).toBe('[FAIL:NO_ALIAS]');
    expect(await a.request(`TCP:PUSH:${k}:ALIAS:TREE-B:x`)).toBe('[FAIL:NO_ALIAS]');
    expect(await b.silence(100)).toBe('');
  });

  it('FRIENDS counts devices on both shards, from either shard, and drops disconnected ones', async () => {
    const k = srv.newKey();
    const s0 = await devOn(0, k, 'sp-s0');
    const s1 = await devOn(1, k, 'sp-s1');
    const f = [
      await devOn(0, k, 'sp-f0a'),
      await devOn(0, k, 'sp-f0b'),
      await devOn(1, k, 'sp-f1a'),
      await devOn(1, k, 'sp-f1b'),
      await devOn(1, k, 'sp-f1c'),
    ];
    expect(await s0.request(`TCP:PUSH:${k}:FRIENDS:from-s0`)).toBe('[OK:ALL_6]');
    for (const d of [s1, ...f]) expect(await d.line()).toBe('PUSH:from-s0');
    expect(await s1.request(`TCP:PUSH:${k}:FRIENDS:from-s1`)).toBe('[OK:ALL_6]');
    for (const d of [s0, ...f]) expect(await d.line()).toBe('PUSH:from-s1');
    // One friend per shard leaves.
    f[0]!.close();
    f[2]!.close();
    await untilGone(s0, k, 'sp-f0a');
    await untilGone(s0, k, 'sp-f1a');
    await untilGone(s1, k, 'sp-f0a');
    await untilGone(s1, k, 'sp-f1a');
    for (const d of [s0, s1, f[1]!, f[3]!, f[4]!]) expect(d.buffer).toBe('');
    expect(await s0.request(`TCP:PUSH:${k}:FRIENDS:again0`)).toBe('[OK:ALL_4]');
    expect(await s1.line()).toBe('PUSH:again0');
    expect(await s1.request(`TCP:PUSH:${k}:FRIENDS:again1`)).toBe('[OK:ALL_4]');
    expect(await s0.line()).toBe('PUSH:again1');
    // Two senders on two shards: the arrival order between them is not specified.
    for (const d of [f[1]!, f[3]!, f[4]!]) expect((await d.lines(2)).sort()).toEqual(['PUSH:again0', 'PUSH:again1']);
    expect(await s0.silence(50)).toBe('');
    expect(s1.buffer).toBe('');
  });

  it('20 devices spread over both shards: RID ring and FRIENDS reach everyone exactly once', async () => {
    const k = srv.newKey();
    const before = openPerShard(srv);
    const n = 20;
    const ids = Array.from({ length: n }, (_, i) => `many-${i}`);
    const devs = await Promise.all(ids.map((id) => dev(k, id)));
    const perShard = openPerShard(srv).map((v, i) => v - before[i]!);
    expect(perShard.reduce((a, b) => a + b, 0)).toBe(n);
    expect(perShard.every((v) => v > 0)).toBe(true);
    // Everyone pushes at once to the device 7 places on; everyone is the target of exactly one push.
    for (let i = 0; i < n; i++) devs[i]!.write(`TCP:PUSH:${k}:RID:${ids[(i + 7) % n]}:ring-${i}\r\n`);
    for (let j = 0; j < n; j++) {
      const got = (await devs[j]!.lines(2)).sort();
      expect(got, ids[j]).toEqual([`PUSH:ring-${(j - 7 + n) % n}`, '[OK:DATA_SENT]']);
    }
    // FRIENDS from a device, then from another once the first has its reply.
    expect(await devs[0]!.request(`TCP:PUSH:${k}:FRIENDS:all-0`)).toBe(`[OK:ALL_${n - 1}]`);
    devs[13]!.write(`TCP:PUSH:${k}:FRIENDS:all-13\r\n`);
    expect((await devs[13]!.lines(2)).sort()).toEqual(['PUSH:all-0', `[OK:ALL_${n - 1}]`]);
    expect(await devs[0]!.line()).toBe('PUSH:all-13');
    for (let j = 1; j < n; j++) {
      if (j === 13) continue;
      expect((await devs[j]!.lines(2)).sort(), ids[j]).toEqual(['PUSH:all-0', 'PUSH:all-13']);
    }
    for (const d of devs) expect(d.buffer).toBe('');
  });
});

// ------------------------------------------------------------------ accounts

describe('account isolation', () => {
  it('the same ID lives in two accounts; pushes, FRIENDS and RID never cross', async () => {
    const kA = srv.newKey();
    const kB = srv.newKey();
    const a1 = await devOn(0, kA, 'same');
    const b1 = await devOn(1, kB, 'same');
    const a2 = await devOn(1, kA, 'a-only');
    const b2 = await devOn(0, kB, 'b-only');
    const b3 = await devOn(1, kB, 'b-third');
    expect(await a2.request(`TCP:PUSH:${kA}:RID:same:to-a`)).toBe('[OK:DATA_SENT]');
    expect(await a1.line()).toBe('PUSH:to-a');
    expect(await b2.request(`TCP:PUSH:${kB}:RID:same:to-b`)).toBe('[OK:DATA_SENT]');
    expect(await b1.line()).toBe('PUSH:to-b');
    expect(await a2.request(`TCP:PUSH:${kA}:RID:b-only:x`)).toBe('[FAIL:REM_ID]');
    expect(await b2.request(`TCP:PUSH:${kB}:RID:a-only:x`)).toBe('[FAIL:REM_ID]');
    expect(await a1.request(`TCP:PUSH:${kA}:FRIENDS:fa`)).toBe('[OK:ALL_1]');
    expect(await a2.line()).toBe('PUSH:fa');
    expect(await b1.request(`TCP:PUSH:${kB}:FRIENDS:fb`)).toBe('[OK:ALL_2]');
    expect(await b2.line()).toBe('PUSH:fb');
    expect(await b3.line()).toBe('PUSH:fb');
    // Using B's KEY from a device of A is refused, not routed.
    expect(await a1.request(`TCP:PUSH:${kB}:RID:b-only:x`)).toBe('[FAIL:NOKEY]');
    expect(await a1.request(`TCP:PUSH:${kB}:FRIENDS:x`)).toBe('[FAIL:NOKEY]');
    // A REMID in one account does not touch the same ID in the other.
    expect(await a1.request(`TCP:REMID:${kA}`)).toBe('[OK:NODEREMOVED]');
    expect(await b2.request(`TCP:PUSH:${kB}:RID:same:still`)).toBe('[OK:DATA_SENT]');
    expect(await b1.line()).toBe('PUSH:still');
    expect(await a2.request(`TCP:PUSH:${kA}:RID:same:x`)).toBe('[FAIL:REM_ID]');
    expect(await a2.silence(50)).toBe('');
    for (const c of [a1, b1, b2, b3]) expect(c.buffer).toBe('');
  });
});

// ------------------------------------------------------------------ §1 basics (framing.e2e covers more)

describe('line limits', () => {
  it('a line longer than NODE.MAX_LINE → [FAIL:LINE_TOO_LONG] once; the connection stays usable', async () => {
    const k = srv.key;
    const max = srv.config.NODE.MAX_LINE;
    const c = await dev(k, 'long');
    c.write(`TCP:PUSH:${k}:RID:long:${'x'.repeat(max)}\r\nTCP:GID:${k}\r\n`);
    expect(await c.lines(2)).toEqual(['[FAIL:LINE_TOO_LONG]', '[OK:LONG]']);
    expect(await c.silence(50)).toBe('');
  });
});
