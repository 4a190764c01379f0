// Line framing (PROTOCOL.md §1): a line ends at LF, one CR before the LF is dropped, framing never
// depends on how TCP splits the bytes, lines longer than NODE.MAX_LINE are reported once and discarded
// up to the next LF, bytes are latin1 and pass through unchanged.

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { SCHEMA } from '../src/config/schema.ts';
import { detach, type FramerState, flushPending, frameLines, type LineSink } from '../src/protocol/framer.ts';

const MAX_LINE: number = SCHEMA.NODE.MAX_LINE.def; // 4096
const TOO_LONG = '!TOO_LONG';
const L = (s: string): string => `L:${s}`;

interface Ctx extends FramerState {
  events: string[];
  /** Decides, per delivered line (0-based count), whether the sink pauses after it. */
  pauseAt: (n: number) => boolean;
  lines: number;
  paused: boolean;
}

function newCtx(pauseAt: (n: number) => boolean = () => false): Ctx {
  return { pending: '', discarding: false, events: [], pauseAt, lines: 0, paused: false };
}

const sink: LineSink<Ctx> = {
  onLine(ctx, s, start, end) {
    expect(ctx.paused).toBe(false); // never called while paused
    ctx.events.push(L(s.slice(start, end)));
    const pause = ctx.pauseAt(ctx.lines++);
    if (pause) ctx.paused = true;
    return !pause;
  },
  onTooLong(ctx) {
    ctx.events.push(TOO_LONG);
  },
};

interface Outcome {
  events: string[];
  pending: string;
  discarding: boolean;
}

const outcome = (ctx: Ctx): Outcome => ({ events: ctx.events, pending: ctx.pending, discarding: ctx.discarding });

/** Resumes a paused framer with empty chunks until it no longer pauses. */
function drain(ctx: Ctx, maxLine: number): void {
  while (ctx.paused) {
    ctx.paused = false;
    frameLines(ctx, '', maxLine, sink);
  }
}

/** Feeds the chunks in order; a pause is resumed (with an empty chunk) before the next chunk arrives. */
function feed(chunks: readonly string[], maxLine: number, pauseAt?: (n: number) => boolean): Outcome {
  const ctx = newCtx(pauseAt);
  for (const c of chunks) {
    frameLines(ctx, c, maxLine, sink);
    drain(ctx, maxLine);
  }
  return outcome(ctx);
}

/** Like the shard while blocked: chunks arriving during a pause are appended to `pending` unframed. */
function feedBlocked(chunks: readonly string[], maxLine: number, pauseAt: (n: number) => boolean): Outcome {
  const ctx = newCtx(pauseAt);
  for (const c of chunks) {
    if (ctx.paused) {
      ctx.pending += c;
      ctx.paused = false;
      frameLines(ctx, '', maxLine, sink);
    } else {
      frameLines(ctx, c, maxLine, sink);
    }
  }
  drain(ctx, maxLine);
  return outcome(ctx);
}

/** Independent model of §1 for a whole input fed so far (tail: eager report once it can only be too long). */
function oracle(input: string, maxLine: number): Outcome {
  const parts = input.split('\n');
  const tail = parts.pop()!;
  const events = parts.map((p) => {
    const line = p.endsWith('\r') ? p.slice(0, -1) : p;
    return line.length > maxLine ? TOO_LONG : L(line);
  });
  if (tail.length > maxLine && !(tail.length === maxLine + 1 && tail.endsWith('\r'))) {
    events.push(TOO_LONG);
    return { events, pending: '', discarding: true };
  }
  return { events, pending: tail, discarding: false };
}

const bytes = (s: string): string[] => Array.from(s);
const splitAt = (s: string, i: number): string[] => [s.slice(0, i), s.slice(i)];

/** Every byte 0x00-0xFF except LF, as latin1. */
const ALL_BUT_LF = Array.from({ length: 256 }, (_, i) => String.fromCharCode(i))
  .filter((c) => c !== '\n')
  .join('');

interface Fixture {
  name: string;
  input: string;
  maxLine: number;
  events: string[];
  pending?: string;
  discarding?: boolean;
}

const x = (n: number): string => 'x'.repeat(n);

const FIXTURES: Fixture[] = [
  { name: 'empty input', input: '', maxLine: MAX_LINE, events: [] },
  {
    name: 'several commands in one chunk (LF)',
    input: 'TCP:ID:K:1\nTCP:GID:K\nTCP:PUSH:K:RID:2:hi\n',
    maxLine: MAX_LINE,
    events: [L('TCP:ID:K:1'), L('TCP:GID:K'), L('TCP:PUSH:K:RID:2:hi')],
  },
  {
    name: 'several commands in one chunk (CRLF)',
    input: 'TCP:ID:K:1\r\nTCP:GID:K\r\nTCP:PUSH:K:RID:2:a:b:c\r\n',
    maxLine: MAX_LINE,
    events: [L('TCP:ID:K:1'), L('TCP:GID:K'), L('TCP:PUSH:K:RID:2:a:b:c')],
  },
  { name: 'mixed LF and CRLF', input: 'A\nB\r\nC\n', maxLine: MAX_LINE, events: [L('A'), L('B'), L('C')] },
  { name: 'only one CR before LF is dropped', input: 'A\r\r\n', maxLine: MAX_LINE, events: [L('A\r')] },
  { name: 'a CR not before LF is payload', input: 'A\rB\n\rC\n', maxLine: MAX_LINE, events: [L('A\rB'), L('\rC')] },
  {
    name: 'a CR split from its LF stays pending',
    input: 'PING\r',
    maxLine: MAX_LINE,
    events: [],
    pending: 'PING\r',
  },
  { name: 'CR then LF', input: 'PING\r\nPONG\r', maxLine: MAX_LINE, events: [L('PING')], pending: 'PONG\r' },
  { name: 'empty lines', input: '\n\r\n\nA\n\n', maxLine: MAX_LINE, events: [L(''), L(''), L(''), L('A'), L('')] },
  { name: 'unterminated tail', input: 'A\nBC', maxLine: MAX_LINE, events: [L('A')], pending: 'BC' },
  {
    name: 'overlong line (MAX_LINE+1) then a good one',
    input: `${x(MAX_LINE + 1)}\nOK\n`,
    maxLine: MAX_LINE,
    events: [TOO_LONG, L('OK')],
  },
  {
    name: 'very long line with CRLF reported once',
    input: `${x(2 * MAX_LINE + 5)}\r\nNEXT\r\n`,
    maxLine: MAX_LINE,
    events: [TOO_LONG, L('NEXT')],
  },
  {
    name: 'two overlong lines in a row, each reported once',
    input: `${x(MAX_LINE + 7)}\n${'y'.repeat(MAX_LINE + 2)}\r\nZ\n`,
    maxLine: MAX_LINE,
    events: [TOO_LONG, TOO_LONG, L('Z')],
  },
  { name: 'a line exactly MAX_LINE long (LF)', input: `${x(MAX_LINE)}\n`, maxLine: MAX_LINE, events: [L(x(MAX_LINE))] },
  {
    name: 'a line exactly MAX_LINE long (CRLF)',
    input: `${x(MAX_LINE)}\r\nA\r\n`,
    maxLine: MAX_LINE,
    events: [L(x(MAX_LINE)), L('A')],
  },
  {
    name: 'unterminated tail exactly MAX_LINE long stays pending',
    input: `A\n${x(MAX_LINE)}`,
    maxLine: MAX_LINE,
    events: [L('A')],
    pending: x(MAX_LINE),
  },
  {
    name: 'exactly MAX_LINE+1 with a trailing CR is still pending',
    input: `${x(MAX_LINE)}\r`,
    maxLine: MAX_LINE,
    events: [],
    pending: `${x(MAX_LINE)}\r`,
  },
  {
    name: 'exactly MAX_LINE+1 without a trailing CR is already too long',
    input: `${x(MAX_LINE + 1)}`,
    maxLine: MAX_LINE,
    events: [TOO_LONG],
    discarding: true,
  },
  {
    name: 'MAX_LINE then CR then something else is too long',
    input: `${x(MAX_LINE)}\rA\nB\n`,
    maxLine: MAX_LINE,
    events: [TOO_LONG, L('B')],
  },
  {
    name: 'MAX_LINE then two CRs then LF is too long',
    input: `${x(MAX_LINE)}\r\r\nB\n`,
    maxLine: MAX_LINE,
    events: [TOO_LONG, L('B')],
  },
  {
    name: 'MAX_LINE+1 with CR, then the LF arrives',
    input: `${x(MAX_LINE)}\r\nB`,
    maxLine: MAX_LINE,
    events: [L(x(MAX_LINE))],
    pending: 'B',
  },
  {
    name: 'overlong then an unterminated tail',
    input: `${x(MAX_LINE + 3)}\nAB`,
    maxLine: MAX_LINE,
    events: [TOO_LONG],
    pending: 'AB',
  },
  {
    name: 'overlong unterminated line is discarded until LF',
    input: `${x(MAX_LINE + 10)}\r`,
    maxLine: MAX_LINE,
    events: [TOO_LONG],
    discarding: true,
  },
  {
    name: 'binary bytes 0x00-0xFF other than LF pass through (LF)',
    input: `${ALL_BUT_LF}\n`,
    maxLine: MAX_LINE,
    events: [L(ALL_BUT_LF)],
  },
  {
    name: 'binary bytes 0x00-0xFF other than LF pass through (CRLF, one CR dropped)',
    input: `${ALL_BUT_LF}\r\n${ALL_BUT_LF}`,
    maxLine: MAX_LINE,
    events: [L(ALL_BUT_LF)],
    pending: ALL_BUT_LF,
  },
  {
    name: 'binary payload in a PUSH',
    input: `TCP:PUSH:K:RID:1:\u0000\u00ff\u0080\r\u007f\r\nTCP:GID:K\n`,
    maxLine: MAX_LINE,
    events: [L('TCP:PUSH:K:RID:1:\u0000\u00ff\u0080\r\u007f'), L('TCP:GID:K')],
  },
  {
    name: 'small maxLine: boundaries around 4',
    input: 'abcd\nabcde\nabcd\r\nabcd\r\r\nab\r\n\n',
    maxLine: 4,
    events: [L('abcd'), TOO_LONG, L('abcd'), TOO_LONG, L('ab'), L('')],
  },
];

describe('frameLines fixtures: one chunk, byte by byte, split at every position', () => {
  for (const f of FIXTURES) {
    const expected: Outcome = { events: f.events, pending: f.pending ?? '', discarding: f.discarding ?? false };

    it(`${f.name}: the independent model agrees with the fixture`, () => {
      expect(oracle(f.input, f.maxLine)).toEqual(expected);
    });

    it(`${f.name}: one chunk`, () => {
      expect(feed([f.input], f.maxLine)).toEqual(expected);
    });

    it(`${f.name}: byte by byte`, () => {
      expect(feed(bytes(f.input), f.maxLine)).toEqual(expected);
    });

    it(`${f.name}: split at every position`, () => {
      for (let i = 0; i <= f.input.length; i++) {
        expect({ split: i, ...feed(splitAt(f.input, i), f.maxLine) }).toEqual({ split: i, ...expected });
      }
    });

    it(`${f.name}: pausing after every line gives the same events`, () => {
      expect(feed([f.input], f.maxLine, () => true)).toEqual(expected);
      expect(feed(bytes(f.input), f.maxLine, () => true)).toEqual(expected);
    });
  }
});

describe('frameLines details', () => {
  it('delivers s[start, end) without the terminator; a line that straddles reads comes from pending + its part', () => {
    const seen: [string, number, number][] = [];
    const ctx: FramerState = { pending: 'TCP:G', discarding: false };
    frameLines(ctx, 'ID:K\r\nX', 100, {
      onLine: (_c, s, start, end) => {
        seen.push([s, start, end]);
        return true;
      },
      onTooLong: () => {
        throw new Error('not too long');
      },
    });
    expect(seen).toEqual([['TCP:GID:K\r\n', 0, 9]]);
    expect(ctx.pending).toBe('X');
  });

  it('lines after the straddling one are delivered from the chunk itself (no rope of pending + chunk)', () => {
    const seen: [string, number, number][] = [];
    const ctx: FramerState = { pending: 'A', discarding: false };
    const chunk = 'B\nCD\r\nE';
    frameLines(ctx, chunk, 100, {
      onLine: (_c, s, start, end) => {
        seen.push([s, start, end]);
        return true;
      },
      onTooLong: () => {
        throw new Error('not too long');
      },
    });
    expect(seen).toEqual([
      ['AB\n', 0, 2],
      [chunk, 2, 4],
    ]);
    expect(ctx.pending).toBe('E');
  });

  it('an empty chunk with nothing pending does nothing', () => {
    const ctx = newCtx();
    frameLines(ctx, '', MAX_LINE, sink);
    expect(outcome(ctx)).toEqual({ events: [], pending: '', discarding: false });
  });

  it('while discarding, bytes without LF are dropped and the LF ends the discard', () => {
    const ctx = newCtx();
    frameLines(ctx, x(10), 4, sink);
    expect(outcome(ctx)).toEqual({ events: [TOO_LONG], pending: '', discarding: true });
    frameLines(ctx, 'yyyy\r', 4, sink);
    expect(outcome(ctx)).toEqual({ events: [TOO_LONG], pending: '', discarding: true });
    frameLines(ctx, '\nOK\n', 4, sink);
    expect(outcome(ctx)).toEqual({ events: [TOO_LONG, L('OK')], pending: '', discarding: false });
  });
});

describe('pausing', () => {
  it('a sink returning false keeps the rest in pending; an empty chunk resumes', () => {
    let allow = false;
    const events: string[] = [];
    const s2: LineSink<FramerState> = {
      onLine: (_c, s, a, b) => {
        events.push(s.slice(a, b));
        return allow;
      },
      onTooLong: () => events.push(TOO_LONG),
    };
    const ctx: FramerState = { pending: '', discarding: false };
    frameLines(ctx, 'A\nB\r\nC\nDE', MAX_LINE, s2);
    expect(events).toEqual(['A']);
    expect(ctx.pending).toBe('B\r\nC\nDE');
    expect(ctx.discarding).toBe(false);
    frameLines(ctx, '', MAX_LINE, s2);
    expect(events).toEqual(['A', 'B']);
    expect(ctx.pending).toBe('C\nDE');
    allow = true;
    frameLines(ctx, '', MAX_LINE, s2);
    expect(events).toEqual(['A', 'B', 'C']);
    expect(ctx.pending).toBe('DE');
    frameLines(ctx, '', MAX_LINE, s2);
    expect(events).toEqual(['A', 'B', 'C']);
    expect(ctx.pending).toBe('DE');
    frameLines(ctx, 'F\n', MAX_LINE, s2);
    expect(events).toEqual(['A', 'B', 'C', 'DEF']);
    expect(ctx.pending).toBe('');
  });

  it('a pause on the last complete line leaves pending empty', () => {
    const ctx = newCtx(() => true);
    frameLines(ctx, 'A\n', MAX_LINE, sink);
    expect(outcome(ctx)).toEqual({ events: [L('A')], pending: '', discarding: false });
  });

  it('a new chunk fed while paused is framed after the backlog, in order', () => {
    const ctx = newCtx((n) => n === 0);
    frameLines(ctx, 'A\nB\n', MAX_LINE, sink);
    expect(ctx.pending).toBe('B\n');
    ctx.paused = false;
    frameLines(ctx, 'C\n', MAX_LINE, sink);
    expect(outcome(ctx)).toEqual({ events: [L('A'), L('B'), L('C')], pending: '', discarding: false });
  });

  it('an overlong unterminated rest after a pause is reported on resume', () => {
    const ctx = newCtx((n) => n === 0);
    frameLines(ctx, `A\n${x(20)}`, 8, sink);
    expect(outcome(ctx)).toEqual({ events: [L('A')], pending: x(20), discarding: false });
    ctx.paused = false;
    frameLines(ctx, '', 8, sink);
    expect(outcome(ctx)).toEqual({ events: [L('A'), TOO_LONG], pending: '', discarding: true });
  });

  it('an overlong complete line after a pause is reported on resume', () => {
    const ctx = newCtx((n) => n === 0);
    frameLines(ctx, `A\n${x(20)}\r\nB\n`, 8, sink);
    expect(ctx.events).toEqual([L('A')]);
    drain(ctx, 8);
    expect(outcome(ctx)).toEqual({ events: [L('A'), TOO_LONG, L('B')], pending: '', discarding: false });
  });

  it('flushPending does nothing while the paused backlog holds a complete line', () => {
    const ctx = newCtx((n) => n === 0);
    frameLines(ctx, 'A\nB\nC', MAX_LINE, sink);
    expect(ctx.pending).toBe('B\nC');
    ctx.paused = false;
    flushPending(ctx, sink);
    expect(outcome(ctx)).toEqual({ events: [L('A')], pending: 'B\nC', discarding: false });
  });
});

describe('flushPending (the idle flush of an unterminated line)', () => {
  const flushOf = (input: string, maxLine = MAX_LINE): Outcome => {
    const ctx = newCtx();
    frameLines(ctx, input, maxLine, sink);
    flushPending(ctx, sink);
    return outcome(ctx);
  };

  it('takes the tail as a complete line', () => {
    expect(flushOf('TCP:ID:K:1')).toEqual({ events: [L('TCP:ID:K:1')], pending: '', discarding: false });
    expect(flushOf('A\nTCP:GID:K')).toEqual({ events: [L('A'), L('TCP:GID:K')], pending: '', discarding: false });
  });

  it('drops one trailing CR of the tail', () => {
    expect(flushOf('PING\r')).toEqual({ events: [L('PING')], pending: '', discarding: false });
    expect(flushOf('PING\r\r')).toEqual({ events: [L('PING\r')], pending: '', discarding: false });
  });

  it('a MAX_LINE+1 tail ending in CR flushes as a MAX_LINE line', () => {
    expect(flushOf(`${x(MAX_LINE)}\r`)).toEqual({ events: [L(x(MAX_LINE))], pending: '', discarding: false });
  });

  it('does nothing with nothing pending or while discarding', () => {
    expect(flushOf('')).toEqual({ events: [], pending: '', discarding: false });
    expect(flushOf('A\n')).toEqual({ events: [L('A')], pending: '', discarding: false });
    expect(flushOf(x(10), 4)).toEqual({ events: [TOO_LONG], pending: '', discarding: true });
  });

  it('framing continues normally after a flush', () => {
    const ctx = newCtx();
    frameLines(ctx, 'AB', MAX_LINE, sink);
    flushPending(ctx, sink);
    frameLines(ctx, 'CD\n', MAX_LINE, sink);
    expect(outcome(ctx)).toEqual({ events: [L('AB'), L('CD')], pending: '', discarding: false });
  });
});

describe('detach', () => {
  it('returns an equal string for every length', () => {
    const big = `${x(100)}${ALL_BUT_LF}${x(100)}`;
    for (let n = 0; n <= 40; n++) {
      const part = big.slice(90, 90 + n);
      expect(detach(part)).toBe(part);
      expect(detach(part).length).toBe(n);
    }
    expect(detach(big)).toBe(big);
  });
});

// ---------------------------------------------------------------------------------------------------
// Properties

const latin1Char = fc.integer({ min: 0, max: 255 }).map((c) => String.fromCharCode(c));
/** Bytes biased towards the interesting ones (LF, CR, a filler) with every latin1 byte possible. */
const byteChar = fc.oneof(
  { arbitrary: fc.constantFrom('\n', '\r', 'a'), weight: 3 },
  { arbitrary: latin1Char, weight: 1 },
);
const input = (maxLength: number) => fc.string({ unit: byteChar, maxLength });
const cutsArb = fc.array(fc.nat(), { maxLength: 12 });

function chunked(s: string, cuts: readonly number[]): string[] {
  const at = cuts.map((c) => c % (s.length + 1)).sort((a, b) => a - b);
  const out: string[] = [];
  let prev = 0;
  for (const c of at) {
    out.push(s.slice(prev, c)); // empty chunks included on purpose
    prev = c;
  }
  out.push(s.slice(prev));
  return out;
}

describe('frameLines properties', () => {
  it('arbitrary chunkings give the events of the single-chunk feed (and of the model)', () => {
    fc.assert(
      fc.property(input(60), cutsArb, fc.integer({ min: 1, max: 12 }), (s, cuts, maxLine) => {
        const single = feed([s], maxLine);
        expect(single).toEqual(oracle(s, maxLine));
        expect(feed(chunked(s, cuts), maxLine)).toEqual(single);
      }),
      { numRuns: 3000 },
    );
  });

  it('arbitrary chunkings and pauses give the same events', () => {
    fc.assert(
      fc.property(
        input(60),
        cutsArb,
        fc.integer({ min: 1, max: 12 }),
        fc.array(fc.boolean(), { minLength: 1, maxLength: 16 }),
        (s, cuts, maxLine, pauses) => {
          const pauseAt = (n: number) => pauses[n % pauses.length]!;
          const expected = oracle(s, maxLine);
          expect(feed(chunked(s, cuts), maxLine, pauseAt)).toEqual(expected);
          expect(feedBlocked(chunked(s, cuts), maxLine, pauseAt)).toEqual(expected);
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('a sink that takes lines in bulk (takeLines) sees the same lines, with chunkings and pauses', () => {
    // Takes every whole CRLF line that starts with 'a' and fits maxLine, as the shard's bulk push path does.
    let max = 0;
    const bulk: LineSink<Ctx> = {
      ...sink,
      takeLines(ctx, s, pos, n) {
        let p = pos;
        while (p < n && s.charCodeAt(p) === 97) {
          const lf = s.indexOf('\n', p);
          if (lf < 0 || s.charCodeAt(lf - 1) !== 13 || lf - 1 - p > max) break;
          ctx.events.push(L(s.slice(p, lf - 1)));
          ctx.lines++;
          p = lf + 1;
        }
        return p;
      },
    };
    fc.assert(
      fc.property(
        fc.string({ unit: fc.constantFrom('a', 'a', 'a', 'b', '\r', '\n'), maxLength: 60 }),
        cutsArb,
        fc.integer({ min: 1, max: 6 }),
        fc.array(fc.boolean(), { minLength: 1, maxLength: 16 }),
        (s, cuts, maxLine, pauses) => {
          const pauseAt = (n: number) => pauses[n % pauses.length]!;
          const ctx = newCtx(pauseAt);
          max = maxLine;
          for (const c of chunked(s, cuts)) {
            frameLines(ctx, c, maxLine, bulk);
            while (ctx.paused) {
              ctx.paused = false;
              frameLines(ctx, '', maxLine, bulk);
            }
          }
          expect(outcome(ctx)).toEqual(oracle(s, maxLine));
        },
      ),
      { numRuns: 5000 },
    );
  });

  it('lines never contain LF and never exceed maxLine, flushed tails included', () => {
    fc.assert(
      fc.property(input(80), cutsArb, fc.integer({ min: 1, max: 16 }), (s, cuts, maxLine) => {
        const ctx = newCtx();
        for (const c of chunked(s, cuts)) {
          frameLines(ctx, c, maxLine, sink);
          flushPending(ctx, sink);
        }
        for (const e of ctx.events) {
          if (e === TOO_LONG) continue;
          expect(e.startsWith('L:')).toBe(true);
          expect(e.includes('\n')).toBe(false);
          expect(e.length - 2).toBeLessThanOrEqual(maxLine);
        }
        // After a flush nothing unterminated is left, and nothing survives that a flush could deliver.
        expect(ctx.pending).toBe('');
      }),
      { numRuns: 3000 },
    );
  });

  it('bytes other than CR/LF pass through unchanged', () => {
    fc.assert(
      fc.property(fc.array(fc.string({ unit: latin1Char, maxLength: 30 }), { maxLength: 6 }), (raw) => {
        const lines = raw.map((l) => l.replaceAll('\n', '').replaceAll('\r', ''));
        const wire = lines.map((l, i) => (i % 2 === 0 ? `${l}\r\n` : `${l}\n`)).join('');
        expect(feed(bytes(wire), MAX_LINE).events).toEqual(lines.map(L));
      }),
      { numRuns: 1000 },
    );
  });

  it('about 100,000 random inputs never throw', () => {
    let lines = 0;
    let bad = 0;
    const quiet: LineSink<FramerState> = {
      onLine: (_c, s, a, b) => {
        lines++;
        if (a < 0 || b < a || b > s.length) bad++;
        return true;
      },
      onTooLong: () => {},
    };
    fc.assert(
      fc.property(input(24), cutsArb, fc.integer({ min: 1, max: 8 }), (s, cuts, maxLine) => {
        const ctx: FramerState = { pending: '', discarding: false };
        for (const c of chunked(s, cuts)) frameLines(ctx, c, maxLine, quiet);
        flushPending(ctx, quiet);
      }),
      { numRuns: 100_000 },
    );
    expect(bad).toBe(0);
    expect(lines).toBeGreaterThan(0);
  });
});
