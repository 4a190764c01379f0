// Device command handlers (PROTOCOL.md §4, §5): one function per TCP sub-command and per PUSH target,
// behind one dispatch switch. They run on the shard that owns the connection.

import { randomBytes } from 'node:crypto';
import { NODE_RAW } from '../cluster/raw-header.ts';
import { planValue } from '../config/schema.ts';
import { FAIL_LINE } from '../protocol/codes.ts';
import { canonicalId, isValidId } from '../protocol/ids.ts';
import { CMD, PROTO, parseCommand, TARGET } from '../protocol/parser.ts';
import { failWith, OK_NODEREMOVED, ok } from '../protocol/replies.ts';
import {
  hexEquals,
  hstcpMac,
  hstcpProof,
  MODE,
  MODE_NAME,
  type Mode,
  md5Proof,
  parseSecure,
  stcpSessionKey,
} from '../protocol/secure.ts';
import type { Account } from '../routing/account.ts';
import { OP } from '../runtime/messages.ts';
import { formatTime, parseTimeArg } from '../services/time.ts';
import type { Connection } from './connection.ts';
import { cmdStatus, cmdWatch, cmdWill, dropWatches } from './presence.ts';
import { cmdPush, noteRoute } from './push.ts';
import { rawFromNode } from './raw.ts';
import type { ShardActor } from './shard.ts';

/** Parses and executes one line. May block the connection (registration, KEY lookup). */
export function executeCommand(shard: ShardActor, conn: Connection, s: string, start: number, end: number): void {
  const cmd = shard.cmd;
  parseCommand(s, start, end, cmd);
  if (cmd.proto !== PROTO.TCP) {
    const mode = SECURE_MODE[cmd.proto];
    if (mode !== undefined) return cmdSecure(shard, conn, mode, s, start, end);
    // Cluster mode: another node opening a RAW stream to a device here (unknown command otherwise).
    if (cmd.proto === PROTO.NONE && s.startsWith(NODE_RAW, start)) return rawFromNode(shard, conn, s.slice(start, end));
    // An HTTP request line in the middle of a device stream is not a command.
    shard.fail(conn, cmd.proto === PROTO.NONE ? 'UNKNOWN_COMMAND' : 'INVALID_CMD');
    return;
  }
  if (cmd.error === 'INVALID_CMD') return shard.fail(conn, 'INVALID_CMD');
  // §4: before ID, every SUB but ID answers NOID.
  if (conn.handle === 0 && cmd.cmd !== CMD.ID) return shard.fail(conn, 'NOID');
  if (cmd.error === 'INVALID_FORMAT') return shard.fail(conn, 'INVALID_FORMAT');
  const acct = shard.resolveKey(conn, s, start, end);
  if (acct === null) return; // KEY lookup under way; the line runs again when it completes
  if (typeof acct === 'string') {
    if (acct === 'INVALID_KEY' && shard.authFailed(conn)) return;
    return shard.fail(conn, acct);
  }
  if (cmd.error !== null) return shard.fail(conn, cmd.error);
  if (
    planValue(shard.config.USER.REQUIRE_SECURE, acct.level) === 1 &&
    !conn.encrypted &&
    conn.session?.mode !== MODE.HSTCP
  ) {
    return shard.fail(conn, 'SECURE_REQUIRED');
  }
  switch (cmd.cmd) {
    case CMD.ID:
      return cmdId(shard, conn, acct, cmd.name);
    case CMD.GID:
      return shard.send(conn, ok(conn.id!));
    case CMD.REMID:
      // §5a: a device that says goodbye leaves no will, and its watches go with its ID.
      conn.will = null;
      dropWatches(conn);
      shard.releaseRegistration(conn);
      conn.account = null;
      return shard.send(conn, OK_NODEREMOVED);
    case CMD.STATUS:
      return cmdStatus(shard, conn, acct, cmd.name);
    case CMD.WATCH:
    case CMD.UNWATCH:
      return cmdWatch(shard, conn, acct, cmd.cmd === CMD.WATCH, cmd.target, cmd.name);
    case CMD.WILL:
      return cmdWill(shard, conn, cmd.name === 'CLEAR' && cmd.target === TARGET.NONE, cmd.target, cmd.name, cmd.data);
    case CMD.PUSH:
      cmdPush(shard, conn, acct, cmd.target, cmd.name, cmd.data);
      // A delivered push: later lines with the same prefix (KEY, target, name) may be taken in bulk.
      noteRoute(conn, acct, s, start, end - cmd.data.length);
      return;
    case CMD.RETDATA:
      return cmdRetdata(shard, conn, cmd.name);
    case CMD.TIME: {
      const req = parseTimeArg(cmd.name);
      if (req === null) return shard.fail(conn, 'INVALID_DATA');
      return shard.send(conn, formatTime(req, Date.now()));
    }
    case CMD.EMAIL:
      return cmdEmail(shard, conn, acct, cmd.name);
    case CMD.SMS:
      return cmdSms(shard, conn, acct, cmd.name);
    default:
      return shard.fail(conn, 'INVALID_CMD');
  }
}

const SECURE_MODE: Partial<Record<number, Mode>> = {
  [PROTO.STCP]: MODE.STCP,
  [PROTO.DSTCP]: MODE.DSTCP,
  [PROTO.HSTCP]: MODE.HSTCP,
};

/** `STCP|DSTCP|HSTCP:<UID>:ACTIVATE|DEACTIVATE:...` (§9). */
function cmdSecure(shard: ShardActor, conn: Connection, mode: Mode, s: string, start: number, end: number): void {
  const parsed = parseSecure(mode, s.slice(start, end));
  if (typeof parsed === 'string') return shard.fail(conn, parsed);
  const uid = parsed.uid.toLowerCase();
  const acct = shard.accounts.byEmailLookup(uid);
  if (acct === undefined || acct.key === null) {
    if (conn.missedUid !== uid) {
      conn.missedUid = uid;
      shard.lookup(conn, OP.UID_LOOKUP, parsed.uid, uid, s, start, end);
      return;
    }
    conn.missedUid = null;
    if (shard.authFailed(conn)) return;
    return shard.fail(conn, 'INVALID_USERID');
  }
  const key = acct.key;
  const name = MODE_NAME[mode];
  if (parsed.verb === 'ACTIVATE') {
    const rnd = randomBytes(mode === MODE.HSTCP ? 8 : 4)
      .toString('hex')
      .toUpperCase();
    conn.session = {
      mode,
      account: acct,
      rnd,
      skey: mode === MODE.STCP ? stcpSessionKey(key, rnd) : '',
      keyUsed: key,
      seq: 1,
    };
    if (mode === MODE.HSTCP) return shard.send(conn, ok(`${rnd}:${hstcpProof(key, parsed.nonce, rnd)}`));
    return shard.send(conn, ok(parsed.nonce === '' ? rnd : `${rnd}:${md5Proof(key, parsed.nonce)}`));
  }
  const ses = conn.session;
  if (ses !== null && (ses.mode !== mode || ses.account !== acct)) {
    // Another mode's or another account's session is not ended by this command.
    if (shard.authFailed(conn)) return;
    return shard.fail(conn, 'INVALID_KEY');
  }
  if (mode === MODE.HSTCP) {
    // HSTCP's DEACTIVATE carries the MAC the next command would carry, over the line without it.
    if (ses === null || !hexEquals(parsed.mac, hstcpMac(key, ses.rnd, ses.seq, parsed.macLine))) {
      if (shard.authFailed(conn)) return;
      return shard.fail(conn, 'INVALID_KEY');
    }
  }
  conn.session = null;
  shard.send(conn, ok(`${name}_DEACTIVATED`));
}

/** TCP:EMAIL:<KEY>:<TO>:<SUBJECT>:<BODY> (§4): queued durably in the outbox, then [OK:MAIL_SENT]. */
function cmdEmail(shard: ShardActor, conn: Connection, acct: Account, rest: string): void {
  const i1 = rest.indexOf(':');
  const i2 = i1 < 0 ? -1 : rest.indexOf(':', i1 + 1);
  if (i2 < 0) return shard.fail(conn, 'INVALID_FORMAT');
  if (shard.config.EMAIL.mail_smtp_host === '' || planValue(shard.config.USER['6MAILPUSH'], acct.level) === 0) {
    return shard.fail(conn, 'MAIL_DISABLED');
  }
  shard.submitOutbox(conn, acct, 'mail', rest.slice(0, i1), rest.slice(i1 + 1, i2), rest.slice(i2 + 1));
}

/** TCP:SMS:<KEY>:<NUMBER>:<TEXT> (§4, extension): through the outbox to the configured gateway. */
function cmdSms(shard: ShardActor, conn: Connection, acct: Account, rest: string): void {
  const i1 = rest.indexOf(':');
  if (i1 < 0) return shard.fail(conn, 'INVALID_FORMAT');
  if (shard.config.SMS.URL === '' || planValue(shard.config.USER['7SMSPUSH'], acct.level) === 0) {
    return shard.fail(conn, 'SMS_DISABLED');
  }
  shard.submitOutbox(conn, acct, 'sms', rest.slice(0, i1), '', rest.slice(i1 + 1));
}

/** TCP:ID:<KEY>:<ID> (§4). */
function cmdId(shard: ShardActor, conn: Connection, acct: Account, raw: string): void {
  if (!isValidId(raw, shard.config.NODE.MAX_ID)) return shard.fail(conn, 'INVALID_DATA');
  const id = canonicalId(raw);
  if (conn.id !== null) {
    shard.send(conn, conn.id === id ? ok(id) : failWith(conn.id));
    return;
  }
  shard.register(conn, acct, id);
}

/** TCP:RETDATA:<KEY>:<N> (§4): N-th oldest cached payload, or all of them for N ≤ 0. */
function cmdRetdata(shard: ShardActor, conn: Connection, arg: string): void {
  const text = arg.trim();
  if (!/^[+-]?\d{1,9}$/.test(text)) return shard.fail(conn, 'INVALID_DATA');
  const n = Number(text);
  const cache = conn.cache;
  const entries: string[] = [];
  if (cache !== null) {
    const size = cache.length;
    for (let k = 0; k < size; k++) {
      const v = cache[(conn.cacheNext + k) % size];
      if (v !== undefined) entries.push(v);
    }
  }
  if (n <= 0) {
    if (entries.length === 0) return shard.fail(conn, 'NO_DATA');
    shard.send(conn, `[OK:>${entries.join('>')}]\r\n`);
    return;
  }
  if (n > entries.length) {
    shard.send(conn, FAIL_LINE.NO_DATA);
    return;
  }
  shard.send(conn, ok(entries[n - 1]!));
}
