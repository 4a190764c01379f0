// Command parsing (PROTOCOL.md §3, §4, §5) and device IDs (§3, §4).

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { FAIL } from '../src/protocol/codes.ts';
import { canonicalId, isKeyShaped, isValidId } from '../src/protocol/ids.ts';
import {
  CMD,
  type Cmd,
  isHttpStart,
  ParsedCommand,
  PROTO,
  type Proto,
  parseCommand,
  parseTarget,
  TARGET,
  type Target,
} from '../src/protocol/parser.ts';

const KEY = '0123456789ABCDEF0123456789ABCDEF';
const KEY_LC = '0123456789abcdef0123456789abcdef';

interface View {
  proto: Proto;
  cmd: Cmd;
  error: string | null;
  /** The KEY field text, s.slice(keyStart, keyEnd). */
  key: string;
  /** keyStart relative to the start of the parsed range. */
  keyAt: number;
  target: Target;
  name: string;
  data: string;
}

function view(out: ParsedCommand, s: string, start: number): View {
  return {
    proto: out.proto,
    cmd: out.cmd,
    error: out.error,
    key: s.slice(out.keyStart, out.keyEnd),
    keyAt: out.keyEnd === 0 && out.keyStart === 0 ? 0 : out.keyStart - start,
    target: out.target,
    name: out.name,
    data: out.data,
  };
}

function parse(line: string): View {
  const out = new ParsedCommand();
  parseCommand(line, 0, line.length, out);
  return view(out, line, 0);
}

/** Parses `line` embedded as s[start, end) of a bigger string. */
function parseIn(prefix: string, line: string, suffix: string): View {
  const s = prefix + line + suffix;
  const out = new ParsedCommand();
  parseCommand(s, prefix.length, prefix.length + line.length, out);
  return view(out, s, prefix.length);
}

const base: View = {
  proto: PROTO.TCP,
  cmd: CMD.NONE,
  error: null,
  key: '',
  keyAt: 0,
  target: TARGET.NONE,
  name: '',
  data: '',
};
/** A TCP command whose KEY field starts at offset `keyAt` (after `TCP:<SUB>:`). */
const tcp = (sub: string, cmd: Cmd, v: Partial<View> = {}): View => ({
  ...base,
  cmd,
  key: KEY,
  keyAt: 4 + sub.length + 1,
  ...v,
});

describe('parseCommand: every sub-command', () => {
  const cases: [string, View][] = [
    [`TCP:ID:${KEY}:abc`, tcp('ID', CMD.ID, { name: 'abc' })],
    [`TCP:ID:${KEY_LC}:dev-1.x@y_z`, tcp('ID', CMD.ID, { key: KEY_LC, name: 'dev-1.x@y_z' })],
    [`TCP:ID:${KEY}:`, tcp('ID', CMD.ID, { name: '' })],
    [`TCP:ID:${KEY}:a:b`, tcp('ID', CMD.ID, { name: 'a:b' })],
    [`TCP:ID:${KEY}`, tcp('ID', CMD.ID, { error: 'INVALID_FORMAT' })],
    [`TCP:GID:${KEY}`, tcp('GID', CMD.GID)],
    [`TCP:GID:${KEY}:extra`, tcp('GID', CMD.GID)],
    [`TCP:REMID:${KEY}`, tcp('REMID', CMD.REMID)],
    [`TCP:TIME:${KEY}:+05:30`, tcp('TIME', CMD.TIME, { name: '+05:30' })],
    [`TCP:TIME:${KEY}:+05:30:ISO`, tcp('TIME', CMD.TIME, { name: '+05:30:ISO' })],
    [`TCP:TIME:${KEY}:Asia/Kolkata`, tcp('TIME', CMD.TIME, { name: 'Asia/Kolkata' })],
    [`TCP:TIME:${KEY}`, tcp('TIME', CMD.TIME, { error: 'INVALID_FORMAT' })],
    [`TCP:EMAIL:${KEY}:a@b.c:Subj:Body: with colon`, tcp('EMAIL', CMD.EMAIL, { name: 'a@b.c:Subj:Body: with colon' })],
    [`TCP:EMAIL:${KEY}`, tcp('EMAIL', CMD.EMAIL, { error: 'INVALID_FORMAT' })],
    [`TCP:SMS:${KEY}:+4912345:hello:world`, tcp('SMS', CMD.SMS, { name: '+4912345:hello:world' })],
    [`TCP:SMS:${KEY}`, tcp('SMS', CMD.SMS, { error: 'INVALID_FORMAT' })],
    [`TCP:RETDATA:${KEY}:3`, tcp('RETDATA', CMD.RETDATA, { name: '3' })],
    [`TCP:RETDATA:${KEY}:-1`, tcp('RETDATA', CMD.RETDATA, { name: '-1' })],
    [`TCP:RETDATA:${KEY}`, tcp('RETDATA', CMD.RETDATA, { error: 'INVALID_FORMAT' })],
    [`TCP:STATUS:${KEY}:LAMP`, tcp('STATUS', CMD.STATUS, { name: 'LAMP' })],
    [`TCP:STATUS:${KEY}`, tcp('STATUS', CMD.STATUS, { error: 'INVALID_FORMAT' })],
    [`TCP:WATCH:${KEY}:RID:LAMP`, tcp('WATCH', CMD.WATCH, { target: TARGET.RID, name: 'LAMP' })],
    [`TCP:WATCH:${KEY}:FRIENDS`, tcp('WATCH', CMD.WATCH, { target: TARGET.FRIENDS })],
    [`TCP:WATCH:${KEY}:CHILDS`, tcp('WATCH', CMD.WATCH, { target: TARGET.CHILDS })],
    [`TCP:WATCH:${KEY}:ALLCHILDS`, tcp('WATCH', CMD.WATCH, { target: TARGET.ALLCHILDS })],
    [`TCP:WATCH:${KEY}:PARENT`, tcp('WATCH', CMD.WATCH, { target: TARGET.PARENT })],
    [`TCP:WATCH:${KEY}:RO:R1`, tcp('WATCH', CMD.WATCH, { target: TARGET.RO, name: 'R1' })],
    [`TCP:WATCH:${KEY}:ALIAS:HUB`, tcp('WATCH', CMD.WATCH, { target: TARGET.ALIAS, name: 'HUB' })],
    [`TCP:WATCH:${KEY}:RID`, tcp('WATCH', CMD.WATCH, { target: TARGET.RID, error: 'INVALID_FORMAT' })],
    [`TCP:WATCH:${KEY}:NOPE`, tcp('WATCH', CMD.WATCH, { error: 'UNKNOWN_CMD' })],
    [`TCP:WATCH:${KEY}`, tcp('WATCH', CMD.WATCH, { error: 'INVALID_FORMAT' })],
    [`TCP:UNWATCH:${KEY}:RID:LAMP`, tcp('UNWATCH', CMD.UNWATCH, { target: TARGET.RID, name: 'LAMP' })],
    [`TCP:UNWATCH:${KEY}:FRIENDS`, tcp('UNWATCH', CMD.UNWATCH, { target: TARGET.FRIENDS })],
    [`TCP:UNWATCH:${KEY}`, tcp('UNWATCH', CMD.UNWATCH, { error: 'INVALID_FORMAT' })],
    [
      `TCP:WILL:${KEY}:RID:HUB:pump died:x`,
      tcp('WILL', CMD.WILL, { target: TARGET.RID, name: 'HUB', data: 'pump died:x' }),
    ],
    [`TCP:WILL:${KEY}:FRIENDS:bye`, tcp('WILL', CMD.WILL, { target: TARGET.FRIENDS, data: 'bye' })],
    [`TCP:WILL:${KEY}:CLEAR`, tcp('WILL', CMD.WILL, { name: 'CLEAR' })],
    [`TCP:WILL:${KEY}:RID:HUB`, tcp('WILL', CMD.WILL, { target: TARGET.RID, error: 'INVALID_FORMAT' })],
    [`TCP:WILL:${KEY}:NOPE:x`, tcp('WILL', CMD.WILL, { error: 'UNKNOWN_CMD' })],
    [`TCP:WILL:${KEY}`, tcp('WILL', CMD.WILL, { error: 'INVALID_FORMAT' })],
  ];
  for (const [line, want] of cases) {
    it(JSON.stringify(line), () => {
      expect(parse(line)).toEqual(want);
    });
  }

  it('a sub-command without its KEY field is INVALID_FORMAT', () => {
    for (const sub of ['ID', 'GID', 'REMID', 'PUSH', 'TIME', 'EMAIL', 'SMS', 'RETDATA', 'STATUS', 'WATCH', 'UNWATCH']) {
      const v = parse(`TCP:${sub}`);
      expect(v.proto).toBe(PROTO.TCP);
      expect(v.cmd).not.toBe(CMD.NONE);
      expect(v.error).toBe('INVALID_FORMAT');
    }
    expect(parse('TCP:WILL')).toEqual({ ...base, cmd: CMD.WILL, error: 'INVALID_FORMAT' });
  });

  it('an unknown sub-command is INVALID_CMD', () => {
    for (const line of [
      `TCP:FOO:${KEY}:1`,
      'TCP:',
      'TCP::',
      `TCP:IDX:${KEY}:1`,
      `TCP:I:${KEY}`,
      'TCP:PUSHX',
      'TCP:RETDATAS',
    ]) {
      expect(parse(line)).toEqual({ ...base, error: 'INVALID_CMD' });
    }
  });

  it('every error code the parser produces is a registered FAIL code', () => {
    for (const code of ['INVALID_FORMAT', 'INVALID_CMD', 'UNKNOWN_CMD', 'UNKNOWN_COMMAND']) {
      expect(Object.hasOwn(FAIL, code)).toBe(true);
    }
  });
});

describe('parseCommand: PUSH targets', () => {
  const push = (v: Partial<View>): View => tcp('PUSH', CMD.PUSH, v);
  const cases: [string, View][] = [
    [`TCP:PUSH:${KEY}:RID:555:Hello`, push({ target: TARGET.RID, name: '555', data: 'Hello' })],
    [`TCP:PUSH:${KEY}:RID:555:a:b:c`, push({ target: TARGET.RID, name: '555', data: 'a:b:c' })],
    [`TCP:PUSH:${KEY}:RID:555:`, push({ target: TARGET.RID, name: '555', data: '' })],
    [`TCP:PUSH:${KEY}:RID:555::`, push({ target: TARGET.RID, name: '555', data: ':' })],
    [`TCP:PUSH:${KEY}:RID::x`, push({ target: TARGET.RID, name: '', data: 'x' })],
    [`TCP:PUSH:${KEY_LC}:RID:abc:x`, push({ key: KEY_LC, target: TARGET.RID, name: 'abc', data: 'x' })],
    [`TCP:PUSH:${KEY}:RID:555`, push({ target: TARGET.RID, error: 'INVALID_FORMAT' })],
    [`TCP:PUSH:${KEY}:RID`, push({ target: TARGET.RID, error: 'INVALID_FORMAT' })],
    [`TCP:PUSH:${KEY}:FRIENDS:Hello ALL`, push({ target: TARGET.FRIENDS, data: 'Hello ALL' })],
    [`TCP:PUSH:${KEY}:FRIENDS:a:b`, push({ target: TARGET.FRIENDS, data: 'a:b' })],
    [`TCP:PUSH:${KEY}:FRIENDS:`, push({ target: TARGET.FRIENDS, data: '' })],
    [`TCP:PUSH:${KEY}:FRIENDS`, push({ target: TARGET.FRIENDS, error: 'INVALID_FORMAT' })],
    [`TCP:PUSH:${KEY}:CHILDS:c:1`, push({ target: TARGET.CHILDS, data: 'c:1' })],
    [`TCP:PUSH:${KEY}:CHILDS`, push({ target: TARGET.CHILDS, error: 'INVALID_FORMAT' })],
    [`TCP:PUSH:${KEY}:ALLCHILDS:all`, push({ target: TARGET.ALLCHILDS, data: 'all' })],
    [`TCP:PUSH:${KEY}:ALLCHILDS`, push({ target: TARGET.ALLCHILDS, error: 'INVALID_FORMAT' })],
    [`TCP:PUSH:${KEY}:PARENT:up:1`, push({ target: TARGET.PARENT, data: 'up:1' })],
    [`TCP:PUSH:${KEY}:PARENT`, push({ target: TARGET.PARENT, error: 'INVALID_FORMAT' })],
    [`TCP:PUSH:${KEY}:RO:R1:mesh:x`, push({ target: TARGET.RO, name: 'R1', data: 'mesh:x' })],
    [`TCP:PUSH:${KEY}:RO:R1`, push({ target: TARGET.RO, error: 'INVALID_FORMAT' })],
    [`TCP:PUSH:${KEY}:RO`, push({ target: TARGET.RO, error: 'INVALID_FORMAT' })],
    [`TCP:PUSH:${KEY}:ALIAS:lamp:on:1`, push({ target: TARGET.ALIAS, name: 'lamp', data: 'on:1' })],
    [`TCP:PUSH:${KEY}:ALIAS:lamp`, push({ target: TARGET.ALIAS, error: 'INVALID_FORMAT' })],
    [`TCP:PUSH:${KEY}:ALIAS`, push({ target: TARGET.ALIAS, error: 'INVALID_FORMAT' })],
    [`TCP:PUSH:${KEY}:RAW:B`, push({ target: TARGET.RAW, name: 'B' })],
    [`TCP:PUSH:${KEY}:RAW:B:C`, push({ target: TARGET.RAW, name: 'B:C' })],
    [`TCP:PUSH:${KEY}:RAW`, push({ target: TARGET.RAW, error: 'INVALID_FORMAT' })],
    [`TCP:PUSH:${KEY}:FOO:x`, push({ error: 'UNKNOWN_CMD' })],
    [`TCP:PUSH:${KEY}:RIDX:1:x`, push({ error: 'UNKNOWN_CMD' })],
    [`TCP:PUSH:${KEY}:FRIEND:x`, push({ error: 'UNKNOWN_CMD' })],
    [`TCP:PUSH:${KEY}:HOLDPUSH:x`, push({ error: 'UNKNOWN_CMD' })],
    [`TCP:PUSH:${KEY}`, push({ error: 'INVALID_FORMAT' })],
  ];
  for (const [line, want] of cases) {
    it(JSON.stringify(line), () => {
      expect(parse(line)).toEqual(want);
    });
  }

  it('data keeps every byte after its colon (latin1, CR inside)', () => {
    const data = '\u0000\u00ff:\r:\u0080 x';
    expect(parse(`TCP:PUSH:${KEY}:RID:7:${data}`)).toEqual(push({ target: TARGET.RID, name: '7', data }));
  });
});

describe('parseTarget', () => {
  it('parses a target starting at p and stopping at end', () => {
    const s = `xxRID:5:hi:there:MORE`;
    const out = new ParsedCommand();
    parseTarget(s, 2, s.length - 5, out, true);
    expect([out.target, out.name, out.data, out.error]).toEqual([TARGET.RID, '5', 'hi:there', null]);
  });

  it('without data (WATCH): names only, group targets need nothing', () => {
    const out = new ParsedCommand();
    parseTarget('RO:R9:extra', 0, 11, out, false);
    expect([out.target, out.name, out.data, out.error]).toEqual([TARGET.RO, 'R9:extra', '', null]);
    out.reset();
    parseTarget('ALLCHILDS', 0, 9, out, false);
    expect([out.target, out.name, out.data, out.error]).toEqual([TARGET.ALLCHILDS, '', '', null]);
    out.reset();
    parseTarget('PARENT:x', 0, 8, out, false);
    expect([out.target, out.name, out.data, out.error]).toEqual([TARGET.PARENT, '', '', null]);
  });

  it('the target name ends at end even when a colon follows', () => {
    const out = new ParsedCommand();
    parseTarget('RID:5:x', 0, 3, out, true);
    expect([out.target, out.error]).toEqual([TARGET.RID, 'INVALID_FORMAT']);
    out.reset();
    parseTarget('FRIENDS:x', 0, 7, out, true);
    expect([out.target, out.error]).toEqual([TARGET.FRIENDS, 'INVALID_FORMAT']);
  });
});

describe('parseCommand: protocols', () => {
  const other = (proto: Proto, name = '', error: string | null = null): View => ({ ...base, proto, name, error });

  it('STCP, DSTCP and HSTCP keep everything after the first colon as name', () => {
    expect(parse('STCP:me@x.org:ACTIVATE:')).toEqual(other(PROTO.STCP, 'me@x.org:ACTIVATE:'));
    expect(parse('STCP:me@x.org:ACTIVATE:CLIRND01:')).toEqual(other(PROTO.STCP, 'me@x.org:ACTIVATE:CLIRND01:'));
    expect(parse('DSTCP:me@x.org:DEACTIVATE:')).toEqual(other(PROTO.DSTCP, 'me@x.org:DEACTIVATE:'));
    expect(parse('HSTCP:me@x.org:ACTIVATE:abcdefgh:')).toEqual(other(PROTO.HSTCP, 'me@x.org:ACTIVATE:abcdefgh:'));
    expect(parse('STCP:')).toEqual(other(PROTO.STCP, ''));
  });

  it('HTTP request lines are detected for every method', () => {
    for (const m of ['GET', 'POST', 'PUT', 'DELETE', 'HEAD', 'OPTIONS', 'PATCH']) {
      expect(parse(`${m} /USER?username=a HTTP/1.1`)).toEqual(other(PROTO.HTTP));
      expect(isHttpStart(`${m} /`)).toBe(true);
      expect(isHttpStart(`xx${m} /`, 2)).toBe(true);
      expect(isHttpStart(`${m}/`)).toBe(false);
      expect(isHttpStart(m)).toBe(false);
    }
    expect(isHttpStart('CONNECT x')).toBe(false);
    expect(isHttpStart('TCP:ID:K:1')).toBe(false);
    expect(isHttpStart('')).toBe(false);
  });

  it('anything else is UNKNOWN_COMMAND', () => {
    for (const line of [
      '',
      'TCP',
      'TCPX:ID',
      'TC',
      'UDP:ID:K:1',
      ' TCP:ID:K:1',
      'STCP',
      'DSTCP',
      'HSTCP',
      'GET',
      'PUSH:x',
    ]) {
      expect(parse(line)).toEqual(other(PROTO.NONE, '', 'UNKNOWN_COMMAND'));
    }
  });

  it('reuses a ParsedCommand: every field is reset', () => {
    const out = new ParsedCommand();
    const a = `TCP:PUSH:${KEY}:RID:5:hi`;
    parseCommand(a, 0, a.length, out);
    const b = 'nope';
    parseCommand(b, 0, b.length, out);
    expect(view(out, b, 0)).toEqual(other(PROTO.NONE, '', 'UNKNOWN_COMMAND'));
    expect([out.keyStart, out.keyEnd]).toEqual([0, 0]);
  });
});

describe('parseCommand on a sub-range [start, end) never reads outside it', () => {
  const garbage = 'TCP:PUSH:zz:';
  it('colons after end do not add fields', () => {
    expect(parseIn(garbage, `TCP:PUSH:${KEY}:RID:555`, ':data')).toEqual(
      tcp('PUSH', CMD.PUSH, { target: TARGET.RID, error: 'INVALID_FORMAT' }),
    );
    expect(parseIn(garbage, `TCP:PUSH:${KEY}:RID`, ':5:data')).toEqual(
      tcp('PUSH', CMD.PUSH, { target: TARGET.RID, error: 'INVALID_FORMAT' }),
    );
    expect(parseIn(garbage, `TCP:PUSH:${KEY}:FRIENDS`, ':x')).toEqual(
      tcp('PUSH', CMD.PUSH, { target: TARGET.FRIENDS, error: 'INVALID_FORMAT' }),
    );
    expect(parseIn(garbage, `TCP:PUSH:${KEY}`, ':RID:5:x')).toEqual(tcp('PUSH', CMD.PUSH, { error: 'INVALID_FORMAT' }));
    expect(parseIn(garbage, `TCP:ID:${KEY}`, ':abc')).toEqual(tcp('ID', CMD.ID, { error: 'INVALID_FORMAT' }));
    expect(parseIn(garbage, `TCP:ID`, `:${KEY}:abc`)).toEqual({ ...base, cmd: CMD.ID, error: 'INVALID_FORMAT' });
    expect(parseIn(garbage, `TCP:WILL:${KEY}:CLEAR`, ':x')).toEqual(tcp('WILL', CMD.WILL, { name: 'CLEAR' }));
    expect(parseIn(garbage, `TCP:WILL:${KEY}:CLEA`, 'R')).toEqual(tcp('WILL', CMD.WILL, { error: 'UNKNOWN_CMD' }));
  });

  it('the sub-command and target names end at end', () => {
    expect(parseIn('', 'TCP:PUSH', `:${KEY}:RID:5:x`)).toEqual({ ...base, cmd: CMD.PUSH, error: 'INVALID_FORMAT' });
    expect(parseIn('', 'TCP:PU', `SH:${KEY}:RID:5:x`)).toEqual({ ...base, error: 'INVALID_CMD' });
    expect(parseIn('', `TCP:PUSH:${KEY}:RI`, 'D:5:x')).toEqual(tcp('PUSH', CMD.PUSH, { error: 'UNKNOWN_CMD' }));
    expect(parseIn('', `TCP:PUSH:${KEY}:FRIENDS:ab`, 'cd')).toEqual(
      tcp('PUSH', CMD.PUSH, { target: TARGET.FRIENDS, data: 'ab' }),
    );
    expect(parseIn('', `TCP:PUSH:${KEY}:RID:5:hi`, 'there:x')).toEqual(
      tcp('PUSH', CMD.PUSH, { target: TARGET.RID, name: '5', data: 'hi' }),
    );
    expect(parseIn('', 'STCP:me:ACT', 'IVATE:')).toEqual({ ...base, proto: PROTO.STCP, name: 'me:ACT' });
  });

  // §1/§4: the range is the line; a protocol prefix cut by `end` is not that protocol.
  const unknown: View = { ...base, proto: PROTO.NONE, error: 'UNKNOWN_COMMAND' };
  const cut: [string, string][] = [
    ['TCP', `:ID:${KEY}:1`],
    ['TC', `P:ID:${KEY}:1`],
    ['STCP', ':me:ACTIVATE:'],
    ['DSTCP', ':me:ACTIVATE:'],
    ['HSTCP', ':me:ACTIVATE:'],
    ['GET', ' / HTTP/1.1'],
  ];
  for (const [line, after] of cut) {
    it(`${JSON.stringify(line)} followed by ${JSON.stringify(after)} outside the range is UNKNOWN_COMMAND`, () => {
      expect(parse(line)).toEqual(unknown);
      expect(parseIn('', line, after)).toEqual(unknown);
    });
  }
});

// ---------------------------------------------------------------------------------------------------
// Properties

const latin1 = fc.string({ unit: fc.integer({ min: 0, max: 255 }).map((c) => String.fromCharCode(c)), maxLength: 40 });
/** Strings built from protocol fragments, so the parser's branches are actually reached. */
const fragment = fc.oneof(
  fc.constantFrom('TCP:', 'STCP:', 'DSTCP:', 'HSTCP:', 'GET ', ':', '::', KEY, 'abc', ''),
  fc.constantFrom(
    'ID',
    'GID',
    'REMID',
    'PUSH',
    'TIME',
    'EMAIL',
    'SMS',
    'RETDATA',
    'STATUS',
    'WATCH',
    'UNWATCH',
    'WILL',
  ),
  fc.constantFrom('RID', 'FRIENDS', 'CHILDS', 'ALLCHILDS', 'PARENT', 'RO', 'ALIAS', 'RAW', 'CLEAR'),
  latin1,
);
const protoish = fc.array(fragment, { maxLength: 10 }).map((a) => a.join(''));
const idChar = fc.constantFrom(...'ABCXYZabcxyz0189_-.@');
const idArb = fc.string({ unit: idChar, minLength: 1, maxLength: 64 });
const hexKey = fc
  .array(fc.constantFrom(...'0123456789ABCDEFabcdef'), { minLength: 32, maxLength: 32 })
  .map((a) => a.join(''));
const payload = fc.string({
  unit: fc
    .integer({ min: 0, max: 255 })
    .filter((c) => c !== 10)
    .map((c) => String.fromCharCode(c)),
  maxLength: 60,
});

describe('parser properties', () => {
  it('arbitrary strings and ranges never throw, and field ranges stay inside the range', () => {
    fc.assert(
      fc.property(fc.oneof(latin1, protoish), fc.nat(), fc.nat(), (s, a, b) => {
        const start = a % (s.length + 1);
        const end = start + (b % (s.length - start + 1));
        const out = new ParsedCommand();
        parseCommand(s, start, end, out);
        if (out.proto === PROTO.TCP && out.error === null) {
          expect(out.cmd).not.toBe(CMD.NONE);
          expect(out.keyStart).toBeGreaterThanOrEqual(start);
          expect(out.keyEnd).toBeLessThanOrEqual(end);
          expect(out.keyStart).toBeLessThanOrEqual(out.keyEnd);
        }
        if (out.error !== null) expect(Object.hasOwn(FAIL, out.error)).toBe(true);
      }),
      { numRuns: 20_000 },
    );
  });

  it('a line parsed inside a bigger string equals the line parsed alone', () => {
    fc.assert(
      fc.property(protoish, protoish, protoish, (prefix, line, suffix) => {
        expect(parseIn(prefix, line, suffix)).toEqual(parse(line));
      }),
      { numRuns: 10_000 },
    );
  });

  it('TCP:PUSH:<32 hex>:RID:<id>:<data> round-trips (name, data, key range)', () => {
    fc.assert(
      fc.property(
        hexKey,
        idArb,
        payload,
        fc.string({ maxLength: 8 }),
        fc.string({ maxLength: 8 }),
        (k, id, data, pre, post) => {
          const line = `TCP:PUSH:${k}:RID:${id}:${data}`;
          const s = pre + line + post;
          const out = new ParsedCommand();
          parseCommand(s, pre.length, pre.length + line.length, out);
          expect(out.error).toBe(null);
          expect(out.proto).toBe(PROTO.TCP);
          expect(out.cmd).toBe(CMD.PUSH);
          expect(out.target).toBe(TARGET.RID);
          expect(out.name).toBe(id);
          expect(out.data).toBe(data);
          expect([out.keyStart, out.keyEnd]).toEqual([pre.length + 9, pre.length + 41]);
          expect(s.slice(out.keyStart, out.keyEnd)).toBe(k);
          expect(isKeyShaped(s, out.keyStart, out.keyEnd)).toBe(true);
        },
      ),
      { numRuns: 3000 },
    );
  });

  it('every target round-trips its name and data', () => {
    const named = fc.constantFrom('RID', 'RO', 'ALIAS');
    const group = fc.constantFrom('FRIENDS', 'CHILDS', 'ALLCHILDS', 'PARENT');
    fc.assert(
      fc.property(hexKey, fc.oneof(named, group, fc.constant('RAW')), idArb, payload, (k, t, id, data) => {
        const isNamed = t === 'RID' || t === 'RO' || t === 'ALIAS';
        const tail = t === 'RAW' ? id : isNamed ? `${id}:${data}` : data;
        const line = `TCP:PUSH:${k}:${t}:${tail}`;
        const v = parse(line);
        expect(v.error).toBe(null);
        expect(v.target).toBe(TARGET[t as keyof typeof TARGET]);
        if (t === 'RAW') expect([v.name, v.data]).toEqual([id, '']);
        else if (isNamed) expect([v.name, v.data]).toEqual([id, data]);
        else expect([v.name, v.data]).toEqual(['', data]);
        expect(v.key).toBe(k);
      }),
      { numRuns: 3000 },
    );
  });

  it('isKeyShaped matches /^[0-9A-Fa-f]{32}$/ on the range', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          hexKey,
          latin1,
          hexKey.map((k) => `:${k}:`),
        ),
        fc.nat(),
        fc.nat(),
        (s, a, b) => {
          const start = a % (s.length + 1);
          const end = start + (b % (s.length - start + 1));
          expect(isKeyShaped(s, start, end)).toBe(/^[0-9A-Fa-f]{32}$/.test(s.slice(start, end)));
          expect(isKeyShaped(s, 0, s.length)).toBe(/^[0-9A-Fa-f]{32}$/.test(s));
        },
      ),
      { numRuns: 5000 },
    );
  });
});

describe('device IDs (§3, §4)', () => {
  it('isValidId: A-Z a-z 0-9 _ - . @, length 1..maxLen', () => {
    expect(isValidId('ABC', 64)).toBe(true);
    expect(isValidId('abc', 64)).toBe(true);
    expect(isValidId('_-.@09azAZ', 64)).toBe(true);
    expect(isValidId('dev@home.example', 64)).toBe(true);
    expect(isValidId('', 64)).toBe(false);
    expect(isValidId('x'.repeat(64), 64)).toBe(true);
    expect(isValidId('x'.repeat(65), 64)).toBe(false);
    expect(isValidId('x', 1)).toBe(true);
    expect(isValidId('xy', 1)).toBe(false);
    for (const bad of [
      ' ',
      ':',
      '/',
      '+',
      '#',
      '!',
      '\r',
      '\n',
      '\u0000',
      '\u00e9',
      '\u00ff',
      '`',
      '[',
      '{',
      'ü',
      '€',
    ]) {
      expect(isValidId(`A${bad}B`, 64)).toBe(false);
    }
  });

  it('canonicalId upper-cases; returns the same string when already canonical', () => {
    expect(canonicalId('abc')).toBe('ABC');
    expect(canonicalId('a-b.c@d_e9')).toBe('A-B.C@D_E9');
    expect(canonicalId('ABC')).toBe('ABC');
    expect(canonicalId('')).toBe('');
    expect(canonicalId('123')).toBe('123');
  });

  it('isKeyShaped: exactly 32 hex digits of either case', () => {
    expect(isKeyShaped(KEY, 0, 32)).toBe(true);
    expect(isKeyShaped(KEY_LC, 0, 32)).toBe(true);
    expect(isKeyShaped(`${KEY}0`, 0, 33)).toBe(false);
    expect(isKeyShaped(KEY.slice(1), 0, 31)).toBe(false);
    expect(isKeyShaped(`${KEY.slice(1)}G`, 0, 32)).toBe(false);
    expect(isKeyShaped(`${KEY.slice(1)}g`, 0, 32)).toBe(false);
    expect(isKeyShaped(`TCP:ID:${KEY}:1`, 7, 39)).toBe(true);
    expect(isKeyShaped(`TCP:ID:${KEY}:1`, 6, 38)).toBe(false);
  });

  it('property: isValidId equals the §4 character class and length', () => {
    fc.assert(
      fc.property(fc.oneof(idArb, latin1), fc.integer({ min: 1, max: 70 }), (s, max) => {
        expect(isValidId(s, max)).toBe(/^[A-Za-z0-9_.@-]+$/.test(s) && s.length <= max);
      }),
      { numRuns: 5000 },
    );
  });

  it('property: canonicalId of a valid ID is its upper case, idempotent, and keeps validity', () => {
    fc.assert(
      fc.property(idArb, (id) => {
        const c = canonicalId(id);
        expect(c).toBe(id.toUpperCase());
        expect(canonicalId(c)).toBe(c);
        expect(isValidId(c, 64)).toBe(true);
        expect(c.length).toBe(id.length);
      }),
      { numRuns: 3000 },
    );
  });
});
