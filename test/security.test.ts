// The worked example of docs/security.md is a set of test vectors: every value in it must match the code.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  dstcpField,
  dstcpKey,
  hexEquals,
  hstcpMac,
  hstcpProof,
  MODE,
  md5Proof,
  parseSecure,
  stcpSessionKey,
} from '../src/protocol/secure.ts';

const doc = readFileSync(new URL('../docs/security.md', import.meta.url), 'utf8');
const block = /```vectors\n([\s\S]*?)```/.exec(doc)?.[1] ?? '';

/** `name = ... = HEX`, the value possibly on the next line. */
function vectors(): Map<string, string> {
  const out = new Map<string, string>();
  const lines = block.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const m = /^(\w+\.\w+)\s*=/.exec(lines[i]!);
    if (!m) continue;
    const own = /=\s*([0-9A-F]{32,64})\s*$/.exec(lines[i]!);
    const next = /^\s+=\s*([0-9A-F]{32,64})\s*$/.exec(lines[i + 1] ?? '');
    out.set(m[1]!, (own ?? next)![1]!);
  }
  return out;
}

const KEY = '0123456789ABCDEF0123456789ABCDEF';

describe('docs/security.md worked example', () => {
  const v = vectors();
  it('has every vector', () => {
    expect([...v.keys()].sort()).toEqual(
      [
        'dstcp.id',
        'dstcp.push',
        'hstcp.mac1',
        'hstcp.mac2',
        'hstcp.mac3',
        'hstcp.proof',
        'stcp.proof',
        'stcp.skey',
      ].sort(),
    );
    expect(block).toContain(`KEY = ${KEY}`);
  });
  it('STCP', () => {
    expect(md5Proof(KEY, 'CAFEBABE01')).toBe(v.get('stcp.proof'));
    expect(stcpSessionKey(KEY, '1A2B3C4D')).toBe(v.get('stcp.skey'));
  });
  it('DSTCP, with F taken from the line as §9 says', () => {
    const id = `TCP:ID:${v.get('dstcp.id')}:556`;
    expect(dstcpKey(KEY, '1A2B3C4D', dstcpField(id, 39, id.length, false))).toBe(v.get('dstcp.id'));
    const push = `TCP:PUSH:${v.get('dstcp.push')}:RID:555:hi`;
    expect(dstcpKey(KEY, '1A2B3C4D', dstcpField(push, 41, push.length, true))).toBe(v.get('dstcp.push'));
  });
  it('HSTCP', () => {
    expect(hstcpProof(KEY, '0011223344556677', '89ABCDEF01234567')).toBe(v.get('hstcp.proof'));
    expect(hstcpMac(KEY, '89ABCDEF01234567', 1, 'TCP:ID::556')).toBe(v.get('hstcp.mac1'));
    expect(hstcpMac(KEY, '89ABCDEF01234567', 2, 'TCP:PUSH::RID:555:hi')).toBe(v.get('hstcp.mac2'));
    expect(hstcpMac(KEY, '89ABCDEF01234567', 3, 'HSTCP:demo@example.com:DEACTIVATE:')).toBe(v.get('hstcp.mac3'));
  });
});

describe('secure-session parsing and comparison', () => {
  it('parses activation with and without a client nonce, and deactivation', () => {
    expect(parseSecure(MODE.STCP, 'STCP:a@b.co:ACTIVATE:')).toMatchObject({
      uid: 'a@b.co',
      verb: 'ACTIVATE',
      nonce: '',
    });
    expect(parseSecure(MODE.STCP, 'STCP:a@b.co:ACTIVATE:12345678:')).toMatchObject({ nonce: '12345678' });
    expect(parseSecure(MODE.STCP, 'STCP:a@b.co:DEACTIVATE:')).toMatchObject({ verb: 'DEACTIVATE' });
    const h = parseSecure(MODE.HSTCP, 'HSTCP:a@b.co:DEACTIVATE:ABCDEF');
    expect(h).toMatchObject({ mac: 'ABCDEF', macLine: 'HSTCP:a@b.co:DEACTIVATE:' });
  });
  it('refuses bad forms', () => {
    for (const line of [
      'STCP:',
      'STCP:a@b.co',
      'STCP:a@b.co:FOO:',
      'STCP:a@b.co:ACTIVATE:1234567:',
      'STCP:a@b.co:ACTIVATE:12345678:x',
      'STCP:a@b.co:DEACTIVATE:x',
      'HSTCP:a@b.co:ACTIVATE:',
      'HSTCP:a@b.co:ACTIVATE:1234567:',
      `HSTCP:a@b.co:ACTIVATE:${'x'.repeat(65)}:`,
      'HSTCP:a@b.co:DEACTIVATE:',
    ]) {
      const mode = line.startsWith('HSTCP') ? MODE.HSTCP : MODE.STCP;
      expect(parseSecure(mode, line), line).toBe('INVALID_FORMAT');
    }
  });
  it('compares hex case-insensitively and by length', () => {
    expect(hexEquals('abcdef', 'ABCDEF')).toBe(true);
    expect(hexEquals('ABCDEE', 'ABCDEF')).toBe(false);
    expect(hexEquals('ABCDE', 'ABCDEF')).toBe(false);
  });
});
