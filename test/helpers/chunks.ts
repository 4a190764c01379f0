// Reproducible chunking for the framing suites: a seeded PRNG and a splitter, so garbage and TCP-like splits are the
// same on every run.

/** Deterministic PRNG (mulberry32): numbers in [0, 1). */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Splits `s` at the given (sorted, distinct, in 1..len-1) indexes. */
export function splitAt(s: string, cuts: readonly number[]): string[] {
  const out: string[] = [];
  let prev = 0;
  for (const c of cuts) {
    out.push(s.slice(prev, c));
    prev = c;
  }
  out.push(s.slice(prev));
  return out;
}
