// Line framing (PROTOCOL.md §1). Pure: no I/O, no timers.
// Input is latin1 text (one char per byte). A line ends at LF; one CR before the LF is dropped.
// A line longer than maxLine is reported once and discarded up to the next LF.
// The sink may pause framing (return false); the unprocessed rest is kept in `pending`
// and framing resumes with the next call (an empty chunk resumes without new input).

export interface FramerState {
  /** Unprocessed input: an unterminated tail, or everything after the line at which the sink paused. */
  pending: string;
  /** Inside an overlong line, dropping bytes until the next LF. */
  discarding: boolean;
}

export interface LineSink<C> {
  /** A complete line is s[start, end). Return false to pause framing after this line. */
  onLine(ctx: C, s: string, start: number, end: number): boolean;
  /** An overlong line was found (reported once per line). */
  onTooLong(ctx: C): void;
  /**
   * Optional bulk path, offered each complete line before it is framed one by one: the sink may take the lines
   * starting at `pos` itself and return the position after the last one it took (`pos` when it took none). It takes
   * only whole lines, each ending in CRLF within `s` and no longer than maxLine, and must handle them exactly as
   * one onLine call each would have.
   */
  takeLines?(ctx: C, s: string, pos: number, n: number): number;
}

/** A copy of s that does not keep a larger parent string alive (V8 slices share their parent). */
export function detach(s: string): string {
  return s.length < 13 ? s : ` ${s}`.slice(1);
}

export function frameLines<C extends FramerState>(ctx: C, chunk: string, maxLine: number, sink: LineSink<C>): void {
  const pending = ctx.pending;
  if (pending.length === 0) {
    frameFrom(ctx, chunk, 0, maxLine, sink);
    return;
  }
  ctx.pending = '';
  const lf = chunk.indexOf('\n');
  if (lf < 0 || lf === chunk.length - 1) {
    frameFrom(ctx, pending + chunk, 0, maxLine, sink);
    return;
  }
  // The line that straddles the two reads first, then the chunk itself: framing pending + chunk as one string
  // would make it a rope, which every later character access would have to walk.
  if (!frameFrom(ctx, pending + chunk.slice(0, lf + 1), 0, maxLine, sink)) {
    ctx.pending = ctx.pending.length === 0 ? detach(chunk.slice(lf + 1)) : ctx.pending + chunk.slice(lf + 1);
    return;
  }
  frameFrom(ctx, chunk, lf + 1, maxLine, sink);
}

/** Frames s from `pos`; false when the sink paused (the rest of s is then in ctx.pending). */
function frameFrom<C extends FramerState>(ctx: C, s: string, pos: number, maxLine: number, sink: LineSink<C>): boolean {
  const n = s.length;
  while (pos < n) {
    if (sink.takeLines !== undefined && !ctx.discarding) {
      pos = sink.takeLines(ctx, s, pos, n);
      if (pos >= n) break;
    }
    const lf = s.indexOf('\n', pos);
    if (lf < 0) break;
    const start = pos;
    pos = lf + 1;
    if (ctx.discarding) {
      ctx.discarding = false;
      continue;
    }
    const end = lf > start && s.charCodeAt(lf - 1) === 13 ? lf - 1 : lf;
    if (end - start > maxLine) {
      sink.onTooLong(ctx);
      continue;
    }
    if (!sink.onLine(ctx, s, start, end)) {
      if (pos < n) ctx.pending = detach(s.slice(pos));
      return false;
    }
  }
  if (pos >= n || ctx.discarding) return true;
  const len = n - pos;
  // The tail is still unterminated; a CR at its very end may belong to the coming CRLF.
  if (len > maxLine && !(len === maxLine + 1 && s.charCodeAt(n - 1) === 13)) {
    ctx.discarding = true;
    sink.onTooLong(ctx);
    return true;
  }
  ctx.pending = pos === 0 ? s : detach(s.slice(pos));
  return true;
}

/**
 * Takes an unterminated tail as a complete line (the legacy idle flush of §1).
 * Only call when the connection has been silent and framing is not paused.
 */
export function flushPending<C extends FramerState>(ctx: C, sink: LineSink<C>): void {
  const s = ctx.pending;
  if (s.length === 0 || ctx.discarding) return;
  if (s.indexOf('\n') >= 0) return; // paused backlog, not a tail
  ctx.pending = '';
  const end = s.charCodeAt(s.length - 1) === 13 ? s.length - 1 : s.length;
  sink.onLine(ctx, s, 0, end);
}
