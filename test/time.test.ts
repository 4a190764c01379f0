// TIME (PROTOCOL.md §6, issue 6): parseTimeArg/formatTime are pure (the caller passes the instant), so every
// reply is checked as an exact string at pinned instants: the legacy bracket format, ±HH:MM offsets including
// +05:45 and -03:30, IANA zones just before and just after a daylight-saving switch, every extension format,
// malformed arguments; a fast-check property ties the legacy reply's Unix seconds to its local fields and to
// the ISO reply's offset. A short wire check runs the command through a real server.

import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatTime, parseTimeArg, type TimeRequest } from '../src/services/time.ts';
import { device, type TestClient } from './helpers/client.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

/** The PROTOCOL.md §6 example instant: 2026-11-25T20:43:39Z. */
const T = 1795639419_000;

function req(arg: string): TimeRequest {
  const r = parseTimeArg(arg);
  if (r === null) throw new Error(`parseTimeArg(${JSON.stringify(arg)}) returned null`);
  return r;
}

/** The reply line for `arg` at instant t (ms), CRLF included. */
const at = (arg: string, t: number): string => formatTime(req(arg), t);

const utc = (y: number, mo: number, d: number, h: number, mi: number, s: number, ms = 0): number =>
  Date.UTC(y, mo - 1, d, h, mi, s, ms);

describe('parseTimeArg', () => {
  it('reads ±HH:MM offsets (with or without the colon, one-digit hours) in minutes east of UTC', () => {
    expect(parseTimeArg('+05:30')).toEqual({ offset: 330, zone: null, format: 'LEGACY' });
    expect(parseTimeArg('+05:45')).toEqual({ offset: 345, zone: null, format: 'LEGACY' });
    expect(parseTimeArg('-03:30')).toEqual({ offset: -210, zone: null, format: 'LEGACY' });
    expect(parseTimeArg('-3:30')).toEqual({ offset: -210, zone: null, format: 'LEGACY' });
    expect(parseTimeArg('+0530')).toEqual({ offset: 330, zone: null, format: 'LEGACY' });
    expect(parseTimeArg('+00:00')).toEqual({ offset: 0, zone: null, format: 'LEGACY' });
    expect(parseTimeArg('-00:00')?.offset === 0).toBe(true); // -0 or +0, both GMT
    expect(at('-00:00:ISO', T)).toBe('[OK:2026-11-25T20:43:39+00:00]\r\n');
    expect(parseTimeArg('+14:00')).toEqual({ offset: 840, zone: null, format: 'LEGACY' });
    expect(parseTimeArg('-12:00')).toEqual({ offset: -720, zone: null, format: 'LEGACY' });
  });

  it('takes an optional format as the last field, case-insensitively', () => {
    expect(parseTimeArg('+05:30:ISO')).toEqual({ offset: 330, zone: null, format: 'ISO' });
    expect(parseTimeArg('+05:30:EPOCH')).toEqual({ offset: 330, zone: null, format: 'EPOCH' });
    expect(parseTimeArg('+05:30:EPOCHMS')).toEqual({ offset: 330, zone: null, format: 'EPOCHMS' });
    expect(parseTimeArg('+05:30:RFC2822')).toEqual({ offset: 330, zone: null, format: 'RFC2822' });
    expect(parseTimeArg('-03:30:iso')).toEqual({ offset: -210, zone: null, format: 'ISO' });
    expect(parseTimeArg('America/New_York:rfc2822')).toEqual({
      offset: null,
      zone: 'America/New_York',
      format: 'RFC2822',
    });
  });

  it('accepts IANA zones; GMT/UTC/Z/empty and unknown zones are GMT', () => {
    expect(parseTimeArg('Asia/Kolkata')).toEqual({ offset: null, zone: 'Asia/Kolkata', format: 'LEGACY' });
    expect(parseTimeArg('Europe/London:ISO')).toEqual({ offset: null, zone: 'Europe/London', format: 'ISO' });
    for (const gmt of ['', 'GMT', 'UTC', 'Z', 'utc', 'Mars/Olympus', 'No_Such/Zone', 'Foo Bar']) {
      expect(parseTimeArg(gmt), gmt).toEqual({ offset: 0, zone: null, format: 'LEGACY' });
    }
    expect(parseTimeArg('Mars/Olympus:EPOCH')).toEqual({ offset: 0, zone: null, format: 'EPOCH' });
  });

  it('returns null for a malformed offset or format', () => {
    for (const bad of [
      '+25:00', // hour out of range
      '+15:00',
      '+05:60', // minutes out of range
      '+05:30:XYZ', // unknown format name
      '+05:30x',
      '+05:30:', // empty last field
      '+ab:cd',
      'Asia/Kolkata:NOPE',
    ]) {
      expect(parseTimeArg(bad), bad).toBeNull();
    }
  });

  it('a signed number that is not ±HH:MM is a malformed offset, not an unknown zone (no GMT fallback)', () => {
    // §6: offsets are ±HH:MM; only an unknown zone *name* falls back to GMT.
    const results = Object.fromEntries(
      ['+05:3', '+5', '-1:2', '+05:30:ISO:ISO'].map((bad) => [bad, parseTimeArg(bad)]),
    );
    expect(results).toEqual({ '+05:3': null, '+5': null, '-1:2': null, '+05:30:ISO:ISO': null });
  });
});

describe('formatTime: fixed offsets at a pinned instant', () => {
  it('reproduces the PROTOCOL.md §6 example exactly', () => {
    expect(at('+05:30', T)).toBe('[IST:(Thu)(26,11,2026)(02:13:39)(1795639419)]\r\n');
    expect(at('+05:30:ISO', T)).toBe('[OK:2026-11-26T02:13:39+05:30]\r\n');
  });

  it('+05:45 and -03:30 (quarter and half hours, crossing the date line backwards)', () => {
    expect(at('+05:45', T)).toBe('[NPT:(Thu)(26,11,2026)(02:28:39)(1795639419)]\r\n');
    expect(at('-03:30', T)).toBe('[NST:(Wed)(25,11,2026)(17:13:39)(1795639419)]\r\n');
    expect(at('+05:45:ISO', T)).toBe('[OK:2026-11-26T02:28:39+05:45]\r\n');
    expect(at('-03:30:ISO', T)).toBe('[OK:2026-11-25T17:13:39-03:30]\r\n');
    expect(at('+05:45:RFC2822', T)).toBe('[OK:Thu, 26 Nov 2026 02:28:39 +0545]\r\n');
    expect(at('-03:30:RFC2822', T)).toBe('[OK:Wed, 25 Nov 2026 17:13:39 -0330]\r\n');
  });

  it('GMT and the unknown-zone fallback', () => {
    expect(at('+00:00', T)).toBe('[GMT:(Wed)(25,11,2026)(20:43:39)(1795639419)]\r\n');
    expect(at('Mars/Olympus', T)).toBe('[GMT:(Wed)(25,11,2026)(20:43:39)(1795639419)]\r\n');
    expect(at('Mars/Olympus:ISO', T)).toBe('[OK:2026-11-25T20:43:39+00:00]\r\n');
    expect(at('', T)).toBe('[GMT:(Wed)(25,11,2026)(20:43:39)(1795639419)]\r\n');
  });

  it('every format at one instant with milliseconds (seconds truncate, EPOCHMS keeps them)', () => {
    const t = T + 987;
    expect(at('+05:30', t)).toBe('[IST:(Thu)(26,11,2026)(02:13:39)(1795639419)]\r\n');
    expect(at('+05:30:ISO', t)).toBe('[OK:2026-11-26T02:13:39+05:30]\r\n');
    expect(at('+05:30:EPOCH', t)).toBe('[OK:1795639419]\r\n');
    expect(at('+05:30:EPOCHMS', t)).toBe('[OK:1795639419987]\r\n');
    expect(at('+05:30:RFC2822', t)).toBe('[OK:Thu, 26 Nov 2026 02:13:39 +0530]\r\n');
    // EPOCH and EPOCHMS do not depend on the offset.
    expect(at('-03:30:EPOCH', t)).toBe('[OK:1795639419]\r\n');
    expect(at('Asia/Kolkata:EPOCHMS', t)).toBe('[OK:1795639419987]\r\n');
  });

  it('the day is not padded, the month is; single-digit days in RFC 2822 are padded', () => {
    const t = utc(2027, 1, 4, 3, 4, 5); // Mon 4 Jan 2027 03:04:05Z
    expect(at('+00:00', t)).toBe(`[GMT:(Mon)(4,01,2027)(03:04:05)(${t / 1000})]\r\n`);
    expect(at('+00:00:RFC2822', t)).toBe('[OK:Mon, 04 Jan 2027 03:04:05 +0000]\r\n');
    expect(at('+00:00:ISO', t)).toBe('[OK:2027-01-04T03:04:05+00:00]\r\n');
    // -03:30 moves it back to Sunday 3 January, 23:34:05.
    expect(at('-03:30', t)).toBe(`[NST:(Sun)(3,01,2027)(23:34:05)(${t / 1000})]\r\n`);
  });

  it('an offset crosses a year boundary', () => {
    const t = utc(2026, 12, 31, 20, 0, 0); // Thu 31 Dec 2026 20:00:00Z
    expect(at('+05:45', t)).toBe(`[NPT:(Fri)(1,01,2027)(01:45:00)(${t / 1000})]\r\n`);
    expect(at('+05:45:ISO', t)).toBe('[OK:2027-01-01T01:45:00+05:45]\r\n');
    expect(at('+05:45:RFC2822', t)).toBe('[OK:Fri, 01 Jan 2027 01:45:00 +0545]\r\n');
  });
});

describe('formatTime: IANA zones across a daylight-saving change', () => {
  it('Asia/Kolkata equals +05:30 at the §6 instant', () => {
    expect(at('Asia/Kolkata', T)).toBe('[IST:(Thu)(26,11,2026)(02:13:39)(1795639419)]\r\n');
    expect(at('Asia/Kolkata:ISO', T)).toBe('[OK:2026-11-26T02:13:39+05:30]\r\n');
  });

  it('America/New_York, spring forward (Sun 8 Mar 2026, 02:00 EST → 03:00 EDT)', () => {
    const before = utc(2026, 3, 8, 6, 59, 59);
    const after = utc(2026, 3, 8, 7, 0, 0);
    expect(at('America/New_York', before)).toBe(`[EST:(Sun)(8,03,2026)(01:59:59)(${before / 1000})]\r\n`);
    expect(at('America/New_York', after)).toBe(`[EDT:(Sun)(8,03,2026)(03:00:00)(${after / 1000})]\r\n`);
    expect(at('America/New_York:ISO', before)).toBe('[OK:2026-03-08T01:59:59-05:00]\r\n');
    expect(at('America/New_York:ISO', after)).toBe('[OK:2026-03-08T03:00:00-04:00]\r\n');
    expect(at('America/New_York:RFC2822', before)).toBe('[OK:Sun, 08 Mar 2026 01:59:59 -0500]\r\n');
    expect(at('America/New_York:RFC2822', after)).toBe('[OK:Sun, 08 Mar 2026 03:00:00 -0400]\r\n');
  });

  it('America/New_York, fall back (Sun 1 Nov 2026, 02:00 EDT → 01:00 EST): 01:30 happens twice', () => {
    const before = utc(2026, 11, 1, 5, 59, 59);
    const after = utc(2026, 11, 1, 6, 0, 0);
    expect(at('America/New_York', before)).toBe(`[EDT:(Sun)(1,11,2026)(01:59:59)(${before / 1000})]\r\n`);
    expect(at('America/New_York', after)).toBe(`[EST:(Sun)(1,11,2026)(01:00:00)(${after / 1000})]\r\n`);
    const first = utc(2026, 11, 1, 5, 30, 0);
    const second = utc(2026, 11, 1, 6, 30, 0);
    expect(at('America/New_York:ISO', first)).toBe('[OK:2026-11-01T01:30:00-04:00]\r\n');
    expect(at('America/New_York:ISO', second)).toBe('[OK:2026-11-01T01:30:00-05:00]\r\n');
  });

  it('Europe/London, spring forward (Sun 29 Mar 2026, 01:00 GMT → 02:00 BST)', () => {
    const before = utc(2026, 3, 29, 0, 59, 59);
    const after = utc(2026, 3, 29, 1, 0, 0);
    expect(at('Europe/London', before)).toBe(`[GMT:(Sun)(29,03,2026)(00:59:59)(${before / 1000})]\r\n`);
    expect(at('Europe/London', after)).toBe(`[BST:(Sun)(29,03,2026)(02:00:00)(${after / 1000})]\r\n`);
    expect(at('Europe/London:ISO', before)).toBe('[OK:2026-03-29T00:59:59+00:00]\r\n');
    expect(at('Europe/London:ISO', after)).toBe('[OK:2026-03-29T02:00:00+01:00]\r\n');
    expect(at('Europe/London:RFC2822', after)).toBe('[OK:Sun, 29 Mar 2026 02:00:00 +0100]\r\n');
  });

  it('Europe/London, fall back (Sun 25 Oct 2026, 02:00 BST → 01:00 GMT)', () => {
    const before = utc(2026, 10, 25, 0, 59, 59);
    const after = utc(2026, 10, 25, 1, 0, 0);
    expect(at('Europe/London', before)).toBe(`[BST:(Sun)(25,10,2026)(01:59:59)(${before / 1000})]\r\n`);
    expect(at('Europe/London', after)).toBe(`[GMT:(Sun)(25,10,2026)(01:00:00)(${after / 1000})]\r\n`);
    expect(at('Europe/London:ISO', before)).toBe('[OK:2026-10-25T01:59:59+01:00]\r\n');
    expect(at('Europe/London:ISO', after)).toBe('[OK:2026-10-25T01:00:00+00:00]\r\n');
  });

  it('Europe/Berlin, CET → CEST and back at the same UTC instants as London', () => {
    const springBefore = utc(2026, 3, 29, 0, 59, 59);
    const springAfter = utc(2026, 3, 29, 1, 0, 0);
    const fallBefore = utc(2026, 10, 25, 0, 59, 59);
    const fallAfter = utc(2026, 10, 25, 1, 0, 0);
    expect(at('Europe/Berlin', springBefore)).toBe(`[CET:(Sun)(29,03,2026)(01:59:59)(${springBefore / 1000})]\r\n`);
    expect(at('Europe/Berlin', springAfter)).toBe(`[CEST:(Sun)(29,03,2026)(03:00:00)(${springAfter / 1000})]\r\n`);
    expect(at('Europe/Berlin', fallBefore)).toBe(`[CEST:(Sun)(25,10,2026)(02:59:59)(${fallBefore / 1000})]\r\n`);
    expect(at('Europe/Berlin', fallAfter)).toBe(`[CET:(Sun)(25,10,2026)(02:00:00)(${fallAfter / 1000})]\r\n`);
    expect(at('Europe/Berlin:RFC2822', springAfter)).toBe('[OK:Sun, 29 Mar 2026 03:00:00 +0200]\r\n');
  });

  it('the same zone in summer and in winter at the §6 instant and six months earlier', () => {
    const summer = utc(2026, 5, 25, 20, 43, 39); // Mon 25 May 2026
    expect(at('America/New_York', summer)).toBe(`[EDT:(Mon)(25,05,2026)(16:43:39)(${summer / 1000})]\r\n`);
    expect(at('America/New_York', T)).toBe('[EST:(Wed)(25,11,2026)(15:43:39)(1795639419)]\r\n');
    expect(at('Europe/London', summer)).toBe(`[BST:(Mon)(25,05,2026)(21:43:39)(${summer / 1000})]\r\n`);
    expect(at('Europe/London', T)).toBe('[GMT:(Wed)(25,11,2026)(20:43:39)(1795639419)]\r\n');
  });
});

// ------------------------------------------------------------------ property

const LEGACY =
  /^\[([A-Z]{2,5}|GMT[+-]\d\d:\d\d):\((Sun|Mon|Tue|Wed|Thu|Fri|Sat)\)\((\d{1,2}),(\d\d),(\d{4})\)\((\d\d):(\d\d):(\d\d)\)\((\d+)\)\]\r\n$/;
const ISO = /^\[OK:(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)([+-])(\d\d):(\d\d)\]\r\n$/;
const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];

function offsetArg(minutes: number): string {
  const m = Math.abs(minutes);
  const two = (n: number): string => String(n).padStart(2, '0');
  return `${minutes < 0 ? '-' : '+'}${two(Math.floor(m / 60))}:${two(m % 60)}`;
}

/** Checks the legacy and ISO replies of one request at t against each other and against t; returns the offset. */
function checkConsistent(arg: string, t: number): number {
  const legacy = LEGACY.exec(at(arg, t));
  const iso = ISO.exec(at(`${arg}:ISO`, t));
  if (legacy === null || iso === null) throw new Error(`unexpected reply for ${arg} at ${t}`);
  const seconds = Number(legacy[9]);
  expect(seconds).toBe(Math.floor(t / 1000));
  const isoOffset = (iso[7] === '-' ? -1 : 1) * (Number(iso[8]) * 60 + Number(iso[9]));
  // The legacy local fields minus the ISO offset give back the Unix seconds.
  const [day, month, year, hh, mm, ss] = [3, 4, 5, 6, 7, 8].map((i) => Number(legacy[i]));
  expect(Date.UTC(year!, month! - 1, day!, hh!, mm!, ss!) / 1000 - isoOffset * 60).toBe(seconds);
  // The weekday is the weekday of that local date.
  expect(legacy[2]).toBe(DAYS[new Date(Date.UTC(year!, month! - 1, day!)).getUTCDay()]);
  // The ISO text is the same instant, and names the same local time as the legacy reply.
  expect(Date.parse(at(`${arg}:ISO`, t).slice(4, -3))).toBe(seconds * 1000);
  expect([Number(iso[1]), Number(iso[2]), Number(iso[3]), Number(iso[4]), Number(iso[5]), Number(iso[6])]).toEqual([
    year,
    month,
    day,
    hh,
    mm,
    ss,
  ]);
  return isoOffset;
}

describe('property: the legacy reply and the ISO reply agree', () => {
  // 1970 .. 2100, millisecond resolution.
  const instant = fc.integer({ min: 0, max: 4102444800_000 });

  it('for random instants and random ±HH:MM offsets, the ISO offset is the requested one', () => {
    fc.assert(
      fc.property(instant, fc.integer({ min: -12 * 60, max: 14 * 60 }), (t, offset) => {
        expect(checkConsistent(offsetArg(offset), t)).toBe(offset);
      }),
      { numRuns: 500 },
    );
  });

  it('for random instants in IANA zones (the offset is the zone offset at that instant)', () => {
    const zones = ['America/New_York', 'Europe/London', 'Europe/Berlin', 'Asia/Kolkata', 'Asia/Kathmandu'];
    fc.assert(
      fc.property(instant, fc.constantFrom(...zones), (t, zone) => {
        checkConsistent(zone, t);
      }),
      { numRuns: 300 },
    );
  });
});

// ------------------------------------------------------------------ on the wire

describe('TCP:TIME through a real server', () => {
  let srv: TestServer;
  let c: TestClient;
  beforeAll(async () => {
    srv = await startTestServer();
    c = await device(srv.port, srv.key, 'clock');
  });
  afterAll(async () => {
    c?.close();
    await srv?.stop();
  });

  it('answers every format for the current instant; malformed arguments fail', async () => {
    const k = srv.key;
    const before = Date.now();
    const epochMs = await c.request(`TCP:TIME:${k}:+05:30:EPOCHMS`);
    const legacy = await c.request(`TCP:TIME:${k}:+05:30`);
    const iso = await c.request(`TCP:TIME:${k}:Asia/Kolkata:ISO`);
    const epoch = await c.request(`TCP:TIME:${k}:-03:30:EPOCH`);
    const rfc = await c.request(`TCP:TIME:${k}:+05:45:RFC2822`);
    const after = Date.now();
    const ms = Number(/^\[OK:(\d+)\]$/.exec(epochMs)?.[1]);
    expect(ms).toBeGreaterThanOrEqual(before);
    expect(ms).toBeLessThanOrEqual(after);
    const m = /^\[IST:\((\w{3})\)\((\d{1,2}),(\d\d),(\d{4})\)\((\d\d):(\d\d):(\d\d)\)\((\d+)\)\]$/.exec(legacy);
    expect(m).not.toBeNull();
    const secs = Number(m![8]);
    expect(secs).toBeGreaterThanOrEqual(Math.floor(before / 1000));
    expect(secs).toBeLessThanOrEqual(Math.floor(after / 1000));
    expect(`${legacy}\r\n`).toBe(formatTime(req('+05:30'), secs * 1000));
    expect(iso).toMatch(/^\[OK:\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+05:30\]$/);
    const isoMs = Date.parse(iso.slice(4, -1));
    expect(isoMs).toBeGreaterThanOrEqual(Math.floor(before / 1000) * 1000);
    expect(isoMs).toBeLessThanOrEqual(after);
    const e = Number(/^\[OK:(\d+)\]$/.exec(epoch)?.[1]);
    expect(e).toBeGreaterThanOrEqual(Math.floor(before / 1000));
    expect(e).toBeLessThanOrEqual(Math.floor(after / 1000));
    expect(rfc).toMatch(/^\[OK:(Sun|Mon|Tue|Wed|Thu|Fri|Sat), \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d \+0545\]$/);

    for (const bad of ['+25:00', '+05:60', '+05:30:XYZ', '+05:30x']) {
      expect(await c.request(`TCP:TIME:${k}:${bad}`), bad).toBe('[FAIL:INVALID_DATA]');
    }
    expect(await c.request(`TCP:TIME:${k}`)).toBe('[FAIL:INVALID_FORMAT]');
    // An unknown zone is GMT, not a failure.
    expect(await c.request(`TCP:TIME:${k}:Mars/Olympus:ISO`)).toMatch(/^\[OK:\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00\]$/);
    // The connection is still usable.
    expect(await c.request(`TCP:GID:${k}`)).toBe('[OK:CLOCK]');
  });
});
