// Device IDs (PROTOCOL.md §3, §4): case-insensitive, canonical in upper case, characters A-Z 0-9 _ - . @.

/** True when every character of s is one of A-Z a-z 0-9 _ - . @ and s is 1..maxLen long. */
export function isValidId(s: string, maxLen: number): boolean {
  const n = s.length;
  if (n === 0 || n > maxLen) return false;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if (
      (c >= 65 && c <= 90) || // A-Z
      (c >= 97 && c <= 122) || // a-z
      (c >= 48 && c <= 57) || // 0-9
      c === 95 || // _
      c === 45 || // -
      c === 46 || // .
      c === 64 // @
    )
      continue;
    return false;
  }
  return true;
}

/** Upper-cases an ASCII ID, returning s itself when it has no lower-case letter. */
export function canonicalId(s: string): string {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 97 && c <= 122) return s.toUpperCase();
  }
  return s;
}

/** A KEY is 32 hex characters (either case on the wire). */
export function isKeyShaped(s: string, start: number, end: number): boolean {
  if (end - start !== 32) return false;
  for (let i = start; i < end; i++) {
    const c = s.charCodeAt(i);
    if ((c >= 48 && c <= 57) || (c >= 65 && c <= 70) || (c >= 97 && c <= 102)) continue;
    return false;
  }
  return true;
}
