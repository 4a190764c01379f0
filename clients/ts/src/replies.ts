// Reply parsers (PROTOCOL.md §4–§6). Each gets the reply line without CRLF that is not a `[FAIL:...]` (those are
// turned into P2PErrors before) and returns the typed value, or throws a PROTOCOL P2PError.

import { P2PError } from './errors.ts';

/** `[OK:ALL_<n>]` or `[OK:<delivered>/<total>]` (`[FAIL:NO_ID]`, nobody reached, rejects with code NO_ID). */
export interface GroupResult {
  delivered: number;
  total: number;
}

/** `[OK:DATA_SENT]` → 'SENT'; `[OK:DATA_HELD]` (stored for an offline device, §5 Hold) → 'HELD'. */
export type PushResult = 'SENT' | 'HELD';

export type Status = { online: true } | { online: false; lastSeen: Date };

/** The legacy TIME reply `[IST:(Thu)(26,11,2026)(02:13:39)(1795639419)]`, parsed. */
export interface LegacyTime {
  zone: string;
  weekday: string;
  day: number;
  month: number;
  year: number;
  /** `HH:mm:ss`, 24-hour. */
  time: string;
  /** Unix seconds. */
  unix: number;
  /** The reply as sent, without brackets. */
  raw: string;
}

export type TimeFormat = 'ISO' | 'EPOCH' | 'EPOCHMS' | 'RFC2822';

export function unexpected(line: string, what: string): P2PError {
  return new P2PError('PROTOCOL', `unexpected reply ${JSON.stringify(line)} to ${what}`);
}

/** The text between `[OK:` and `]`. */
export function okBody(line: string, what: string): string {
  if (!line.startsWith('[OK:') || !line.endsWith(']')) throw unexpected(line, what);
  return line.slice(4, -1);
}

/** A reply that must be exactly `[OK:<word>]`. */
export function expectOk(word: string): (line: string) => void {
  const want = `[OK:${word}]`;
  return (line) => {
    if (line !== want) throw unexpected(line, word);
  };
}

export function parsePush(line: string): PushResult {
  if (line === '[OK:DATA_SENT]') return 'SENT';
  if (line === '[OK:DATA_HELD]') return 'HELD';
  throw unexpected(line, 'PUSH');
}

const GROUP = /^\[OK:(?:ALL_(\d+)|(\d+)\/(\d+))\]$/;

export function parseGroup(line: string): GroupResult {
  const m = GROUP.exec(line);
  if (m === null) throw unexpected(line, 'a group PUSH');
  if (m[1] !== undefined) {
    const n = Number(m[1]);
    return { delivered: n, total: n };
  }
  return { delivered: Number(m[2]), total: Number(m[3]) };
}

/** ALIAS: one target answers as RID, several as a group. */
export function parseAlias(line: string): PushResult | GroupResult {
  if (line === '[OK:DATA_SENT]') return 'SENT';
  if (line === '[OK:DATA_HELD]') return 'HELD';
  return parseGroup(line);
}

export function parseStatus(line: string): Status {
  if (line === '[OK:ONLINE]') return { online: true };
  const m = /^\[OK:OFFLINE:(\d+)\]$/.exec(line);
  if (m === null) throw unexpected(line, 'STATUS');
  return { online: false, lastSeen: new Date(Number(m[1]) * 1000) };
}

const LEGACY_TIME = /^\[([^:\]]+):\(([A-Za-z]+)\)\((\d{1,2}),(\d{2}),(\d{4})\)\((\d{2}:\d{2}:\d{2})\)\((-?\d+)\)\]$/;

export function parseLegacyTime(line: string): LegacyTime {
  const m = LEGACY_TIME.exec(line);
  if (m === null) throw unexpected(line, 'TIME');
  return {
    zone: m[1]!,
    weekday: m[2]!,
    day: Number(m[3]),
    month: Number(m[4]),
    year: Number(m[5]),
    time: m[6]!,
    unix: Number(m[7]),
    raw: line.slice(1, -1),
  };
}

export function parseTimeAs(format: TimeFormat): (line: string) => string | number {
  return (line) => {
    const body = okBody(line, `TIME ${format}`);
    if (format === 'EPOCH' || format === 'EPOCHMS') {
      if (!/^\d+$/.test(body)) throw unexpected(line, `TIME ${format}`);
      return Number(body);
    }
    return body;
  };
}

/** RETDATA with N ≤ 0: `[OK:>a>b>c]` → ['a', 'b', 'c'] (a payload holding '>' cannot be told apart). */
export function parseRetdataAll(line: string): string[] {
  const body = okBody(line, 'RETDATA');
  if (!body.startsWith('>')) throw unexpected(line, 'RETDATA');
  return body.slice(1).split('>');
}
