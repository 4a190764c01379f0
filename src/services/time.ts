// TIME (PROTOCOL.md §6): `TCP:TIME:<KEY>:<OFFSET>[:<FORMAT>]`. Pure: the caller passes the instant.
// Legacy reply: `[IST:(Thu)(26,11,2026)(02:13:39)(1795639419)]` — zone abbreviation, weekday, day (not
// padded), month (padded), year, 24-hour time, Unix seconds. Offsets are ±HH:MM; IANA zones are accepted and
// follow daylight saving; an unknown zone falls back to GMT. Extension formats: ISO, EPOCH, EPOCHMS, RFC2822.

const FORMATS = new Set(['ISO', 'EPOCH', 'EPOCHMS', 'RFC2822']);
const WEEKDAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** Usual abbreviations of fixed offsets (minutes east of UTC), for offsets given as ±HH:MM. */
const OFFSET_NAMES: Record<number, string> = {
  [-600]: 'HST',
  [-540]: 'AKST',
  [-480]: 'PST',
  [-420]: 'MST',
  [-360]: 'CST',
  [-300]: 'EST',
  [-240]: 'AST',
  [-210]: 'NST',
  [-180]: 'BRT',
  0: 'GMT',
  60: 'CET',
  120: 'EET',
  180: 'MSK',
  210: 'IRST',
  240: 'GST',
  270: 'AFT',
  300: 'PKT',
  330: 'IST',
  345: 'NPT',
  360: 'BST',
  390: 'MMT',
  420: 'ICT',
  480: 'CST',
  540: 'JST',
  570: 'ACST',
  600: 'AEST',
  720: 'NZST',
};

export interface TimeRequest {
  /** Minutes east of UTC (fixed offset), or null with `zone`. */
  offset: number | null;
  /** IANA zone name (null for a fixed offset or GMT). */
  zone: string | null;
  format: 'LEGACY' | 'ISO' | 'EPOCH' | 'EPOCHMS' | 'RFC2822';
}

const pad2 = (n: number): string => (n < 10 ? `0${n}` : String(n));

function offsetText(minutes: number, sep: string): string {
  const sign = minutes < 0 ? '-' : '+';
  const m = Math.abs(minutes);
  return `${sign}${pad2(Math.floor(m / 60))}${sep}${pad2(m % 60)}`;
}

function validZone(zone: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: zone });
    return true;
  } catch {
    return false;
  }
}

/**
 * Parses the argument after the KEY: `+05:30`, `-3:30:ISO`, `Asia/Kolkata`, `Europe/Berlin:RFC2822`.
 * Returns null when the format name or the offset is malformed. An unknown zone name falls back to GMT.
 */
export function parseTimeArg(arg: string): TimeRequest | null {
  let rest = arg.trim();
  let format: TimeRequest['format'] = 'LEGACY';
  const colon = rest.lastIndexOf(':');
  if (colon >= 0) {
    const tail = rest.slice(colon + 1).toUpperCase();
    if (FORMATS.has(tail)) {
      format = tail as TimeRequest['format'];
      rest = rest.slice(0, colon);
    } else if (!/^\d+$/.test(tail)) return null; // a non-numeric last field must be a format name
  }
  const m = /^([+-])(\d{1,2}):?(\d{2})$/.exec(rest);
  if (m) {
    const h = Number(m[2]);
    const min = Number(m[3]);
    if (h > 14 || min > 59) return null;
    return { offset: (m[1] === '-' ? -1 : 1) * (h * 60 + min), zone: null, format };
  }
  if (/^[+-]/.test(rest)) return null; // a signed value that is not ±HH:MM is a malformed offset
  if (rest === '' || /^(GMT|UTC|Z)$/i.test(rest)) return { offset: 0, zone: null, format };
  if (!/^[A-Za-z][A-Za-z0-9_+\-/]*$/.test(rest) || !validZone(rest)) return { offset: 0, zone: null, format };
  return { offset: null, zone: rest, format };
}

interface Local {
  year: number;
  month: number;
  day: number;
  hour: number;
  minute: number;
  second: number;
  weekday: number;
  /** Minutes east of UTC at that instant. */
  offset: number;
  abbreviation: string;
}

function localFixed(t: number, offset: number): Local {
  const d = new Date(t + offset * 60000);
  return {
    year: d.getUTCFullYear(),
    month: d.getUTCMonth() + 1,
    day: d.getUTCDate(),
    hour: d.getUTCHours(),
    minute: d.getUTCMinutes(),
    second: d.getUTCSeconds(),
    weekday: d.getUTCDay(),
    offset,
    abbreviation: OFFSET_NAMES[offset] ?? `GMT${offsetText(offset, ':')}`,
  };
}

function zoneAbbreviation(t: number, zone: string, offset: number): string {
  // ICU's short names depend on the locale: try a few, keep the first that is not "GMT+x".
  for (const locale of ['en-US', 'en-GB', 'en-IN', 'en-AU']) {
    const part = new Intl.DateTimeFormat(locale, { timeZone: zone, timeZoneName: 'short' })
      .formatToParts(t)
      .find((p) => p.type === 'timeZoneName')?.value;
    if (part && /^[A-Z]{2,5}$/.test(part) && part !== 'GMT' && part !== 'UTC') return part;
    if (part && (part === 'GMT' || part === 'UTC') && offset === 0) return part;
  }
  return OFFSET_NAMES[offset] ?? `GMT${offsetText(offset, ':')}`;
}

function localZone(t: number, zone: string): Local {
  const parts = new Intl.DateTimeFormat('en-US', {
    timeZone: zone,
    hourCycle: 'h23',
    year: 'numeric',
    month: 'numeric',
    day: 'numeric',
    hour: 'numeric',
    minute: 'numeric',
    second: 'numeric',
  }).formatToParts(t);
  const get = (type: string): number => Number(parts.find((p) => p.type === type)?.value ?? 0);
  const local = Date.UTC(get('year'), get('month') - 1, get('day'), get('hour'), get('minute'), get('second'));
  const offset = Math.round((local - Math.floor(t / 1000) * 1000) / 60000);
  const fixed = localFixed(t, offset);
  return { ...fixed, abbreviation: zoneAbbreviation(t, zone, offset) };
}

/** The reply line (with CRLF) for a parsed TIME request at instant t (ms). */
export function formatTime(req: TimeRequest, t: number): string {
  const l = req.zone === null ? localFixed(t, req.offset ?? 0) : localZone(t, req.zone);
  const seconds = Math.floor(t / 1000);
  const hms = `${pad2(l.hour)}:${pad2(l.minute)}:${pad2(l.second)}`;
  switch (req.format) {
    case 'LEGACY':
      return `[${l.abbreviation}:(${WEEKDAYS[l.weekday]})(${l.day},${pad2(l.month)},${l.year})(${hms})(${seconds})]\r\n`;
    case 'ISO':
      return `[OK:${l.year}-${pad2(l.month)}-${pad2(l.day)}T${hms}${offsetText(l.offset, ':')}]\r\n`;
    case 'EPOCH':
      return `[OK:${seconds}]\r\n`;
    case 'EPOCHMS':
      return `[OK:${t}]\r\n`;
    case 'RFC2822':
      return `[OK:${WEEKDAYS[l.weekday]}, ${pad2(l.day)} ${MONTHS[l.month - 1]} ${l.year} ${hms} ${offsetText(l.offset, '')}]\r\n`;
  }
}
