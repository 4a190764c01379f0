// Command parsing (PROTOCOL.md §3, §4, §5). Pure: no I/O.
// Fields are split on ':' except the last, which is everything after its colon.
// The parser fills a caller-owned ParsedCommand so the hot path allocates only the fields it must
// (the target name and the payload); the KEY is left in place as [keyStart, keyEnd).

import type { FailCode } from './codes.ts';

export const PROTO = { NONE: 0, TCP: 1, STCP: 2, DSTCP: 3, HSTCP: 4, HTTP: 5 } as const;
export type Proto = (typeof PROTO)[keyof typeof PROTO];

export const CMD = {
  NONE: 0,
  ID: 1,
  GID: 2,
  REMID: 3,
  PUSH: 4,
  TIME: 5,
  EMAIL: 6,
  SMS: 7,
  RETDATA: 8,
  STATUS: 9,
  WATCH: 10,
  UNWATCH: 11,
  WILL: 12,
} as const;
export type Cmd = (typeof CMD)[keyof typeof CMD];

export const TARGET = {
  NONE: 0,
  RID: 1,
  FRIENDS: 2,
  CHILDS: 3,
  ALLCHILDS: 4,
  PARENT: 5,
  RO: 6,
  ALIAS: 7,
  RAW: 8,
} as const;
export type Target = (typeof TARGET)[keyof typeof TARGET];

export class ParsedCommand {
  proto: Proto = PROTO.NONE;
  cmd: Cmd = CMD.NONE;
  /** Set when the line cannot be executed as parsed; cmd may still be known (for NOID ordering). */
  error: FailCode | null = null;
  keyStart = 0;
  keyEnd = 0;
  target: Target = TARGET.NONE;
  /** ID (ID, RID, RAW, STATUS), router (RO), alias (ALIAS), index (RETDATA), offset (TIME), or the rest. */
  name = '';
  /** Payload: everything after the last structural colon. */
  data = '';

  reset(): void {
    this.proto = PROTO.NONE;
    this.cmd = CMD.NONE;
    this.error = null;
    this.keyStart = 0;
    this.keyEnd = 0;
    this.target = TARGET.NONE;
    this.name = '';
    this.data = '';
  }
}

const HTTP_METHODS = ['GET ', 'POST ', 'PUT ', 'DELETE ', 'HEAD ', 'OPTIONS ', 'PATCH '] as const;

/** True when s starts with an HTTP request method and a space (PROTOCOL.md §1). */
export function isHttpStart(s: string, start = 0, end = s.length): boolean {
  for (const m of HTTP_METHODS) if (start + m.length <= end && s.startsWith(m, start)) return true;
  return false;
}

/** True when s could still become an HTTP request line (a strict prefix of "METHOD "). */
export function isHttpPrefix(s: string): boolean {
  for (const m of HTTP_METHODS) if (s.length < m.length && m.startsWith(s)) return true;
  return false;
}

/** s.startsWith(prefix, start) within [start, end). */
function startsIn(s: string, prefix: string, start: number, end: number): boolean {
  return start + prefix.length <= end && s.startsWith(prefix, start);
}

/** Index of the next ':' in s[from, end), or -1. */
function colon(s: string, from: number, end: number): number {
  const i = s.indexOf(':', from);
  return i >= 0 && i < end ? i : -1;
}

function subCommand(s: string, p: number, len: number): Cmd {
  switch (len) {
    case 2:
      return s.startsWith('ID', p) ? CMD.ID : CMD.NONE;
    case 3:
      if (s.startsWith('GID', p)) return CMD.GID;
      if (s.startsWith('SMS', p)) return CMD.SMS;
      return CMD.NONE;
    case 4:
      if (s.startsWith('PUSH', p)) return CMD.PUSH;
      if (s.startsWith('TIME', p)) return CMD.TIME;
      if (s.startsWith('WILL', p)) return CMD.WILL;
      return CMD.NONE;
    case 5:
      if (s.startsWith('REMID', p)) return CMD.REMID;
      if (s.startsWith('EMAIL', p)) return CMD.EMAIL;
      if (s.startsWith('WATCH', p)) return CMD.WATCH;
      return CMD.NONE;
    case 6:
      return s.startsWith('STATUS', p) ? CMD.STATUS : CMD.NONE;
    case 7:
      if (s.startsWith('RETDATA', p)) return CMD.RETDATA;
      if (s.startsWith('UNWATCH', p)) return CMD.UNWATCH;
      return CMD.NONE;
    default:
      return CMD.NONE;
  }
}

function targetKind(s: string, p: number, len: number): Target {
  switch (len) {
    case 2:
      return s.startsWith('RO', p) ? TARGET.RO : TARGET.NONE;
    case 3:
      if (s.startsWith('RID', p)) return TARGET.RID;
      if (s.startsWith('RAW', p)) return TARGET.RAW;
      return TARGET.NONE;
    case 5:
      return s.startsWith('ALIAS', p) ? TARGET.ALIAS : TARGET.NONE;
    case 6:
      if (s.startsWith('PARENT', p)) return TARGET.PARENT;
      if (s.startsWith('CHILDS', p)) return TARGET.CHILDS;
      return TARGET.NONE;
    case 7:
      return s.startsWith('FRIENDS', p) ? TARGET.FRIENDS : TARGET.NONE;
    case 9:
      return s.startsWith('ALLCHILDS', p) ? TARGET.ALLCHILDS : TARGET.NONE;
    default:
      return TARGET.NONE;
  }
}

/**
 * Parses a PUSH target starting at `p` (just after `<KEY>:`) into out.target/name/data.
 * Used by PUSH itself and by commands that name a target (WILL, WATCH).
 * `needData` is false for WATCH/UNWATCH, whose targets carry no payload.
 */
export function parseTarget(s: string, p: number, end: number, out: ParsedCommand, needData: boolean): void {
  const isRid = s.startsWith('RID:', p) && p + 3 < end;
  const c = isRid ? p + 3 : colon(s, p, end);
  const kind = isRid ? TARGET.RID : targetKind(s, p, (c < 0 ? end : c) - p);
  out.target = kind;
  switch (kind) {
    case TARGET.NONE:
      out.error = 'UNKNOWN_CMD';
      return;
    case TARGET.FRIENDS:
    case TARGET.CHILDS:
    case TARGET.ALLCHILDS:
    case TARGET.PARENT:
      if (!needData) return;
      if (c < 0) out.error = 'INVALID_FORMAT';
      else out.data = s.slice(c + 1, end);
      return;
    case TARGET.RAW:
      if (c < 0) out.error = 'INVALID_FORMAT';
      else out.name = s.slice(c + 1, end);
      return;
    default: {
      // RID, RO, ALIAS: <NAME>:<DATA>
      if (c < 0) {
        out.error = 'INVALID_FORMAT';
        return;
      }
      if (!needData) {
        out.name = s.slice(c + 1, end);
        return;
      }
      const c2 = colon(s, c + 1, end);
      if (c2 < 0) {
        out.error = 'INVALID_FORMAT';
        return;
      }
      out.name = s.slice(c + 1, c2);
      out.data = s.slice(c2 + 1, end);
    }
  }
}

/** Parses the line s[start, end) into out. */
export function parseCommand(s: string, start: number, end: number, out: ParsedCommand): void {
  out.reset();
  let p: number;
  if (startsIn(s, 'TCP:', start, end)) {
    out.proto = PROTO.TCP;
    p = start + 4;
  } else {
    parseOther(s, start, end, out);
    return;
  }
  // Fast path for the hot command: `PUSH:` needs no scan for its colon.
  const isPush = s.startsWith('PUSH:', p) && p + 4 < end;
  const c1 = isPush ? p + 4 : colon(s, p, end);
  const cmd = isPush ? CMD.PUSH : subCommand(s, p, (c1 < 0 ? end : c1) - p);
  out.cmd = cmd;
  if (cmd === CMD.NONE) {
    out.error = 'INVALID_CMD';
    return;
  }
  if (c1 < 0) {
    out.error = 'INVALID_FORMAT';
    return;
  }
  const keyStart = c1 + 1;
  const c2 = colon(s, keyStart, end);
  out.keyStart = keyStart;
  out.keyEnd = c2 < 0 ? end : c2;
  const rest = c2 < 0 ? -1 : c2 + 1;
  switch (cmd) {
    case CMD.GID:
    case CMD.REMID:
      return;
    case CMD.PUSH:
      if (rest < 0) out.error = 'INVALID_FORMAT';
      else parseTarget(s, rest, end, out, true);
      return;
    case CMD.WATCH:
    case CMD.UNWATCH:
      if (rest < 0) out.error = 'INVALID_FORMAT';
      else parseTarget(s, rest, end, out, false);
      return;
    case CMD.WILL:
      if (rest < 0) out.error = 'INVALID_FORMAT';
      else if (end - rest === 5 && s.startsWith('CLEAR', rest)) out.name = 'CLEAR';
      else parseTarget(s, rest, end, out, true);
      return;
    default:
      // ID, TIME, EMAIL, SMS, RETDATA, STATUS: the rest of the line is the argument.
      if (rest < 0) out.error = 'INVALID_FORMAT';
      else out.name = s.slice(rest, end);
  }
}

function parseOther(s: string, start: number, end: number, out: ParsedCommand): void {
  if (startsIn(s, 'STCP:', start, end)) out.proto = PROTO.STCP;
  else if (startsIn(s, 'DSTCP:', start, end)) out.proto = PROTO.DSTCP;
  else if (startsIn(s, 'HSTCP:', start, end)) out.proto = PROTO.HSTCP;
  else if (isHttpStart(s, start, end)) {
    out.proto = PROTO.HTTP;
    return;
  } else {
    out.error = 'UNKNOWN_COMMAND';
    return;
  }
  out.name = s.slice(s.indexOf(':', start) + 1, end);
}
