// PortLink: batches, flow-control piggybacking, and the delivery-coalescing state across flushes.
import { MessageChannel } from 'node:worker_threads';
import { afterEach, describe, expect, it } from 'vitest';
import { decodeBatch, encodeBatch, PortLink } from '../src/runtime/link.ts';
import { OP } from '../src/runtime/messages.ts';

const open: PortLink[] = [];
afterEach(() => {
  for (const l of open.splice(0)) l.close();
});

function pair(): [PortLink, unknown[][]] {
  const ch = new MessageChannel();
  const got: unknown[][] = [];
  const a = new PortLink(1, ch.port1, 1 << 20, () => {});
  const b = new PortLink(0, ch.port2, 1 << 20, (ops) => got.push(ops));
  open.push(a, b);
  return [a, got];
}

const tick = (): Promise<void> => new Promise((r) => setTimeout(r, 20));

describe('PortLink', () => {
  it('keeps copies of bytes that change before the flush, across several turns and a growing arena', async () => {
    const [a, got] = pair();
    const src = Buffer.alloc(50_000);
    const want: Buffer[] = [];
    for (let turn = 0; turn < 3; turn++) {
      // Five 50 KB runs in a turn: more than the first arena holds, so it grows within the turn.
      for (let k = 0; k < 5; k++) {
        src.fill(65 + turn * 5 + k);
        a.ops.push(OP.DELIVER_BYTES, 7, 1, a.keep(src));
        want.push(Buffer.from(src));
        src.fill(0); // the read buffer is overwritten by the next read
      }
      a.flush();
    }
    await tick();
    const bytes = got.flat().filter((x) => x instanceof Uint8Array);
    expect(bytes.length).toBe(want.length);
    for (let i = 0; i < want.length; i++) {
      expect(Buffer.from(bytes[i] as Uint8Array).equals(want[i]!), `run ${i}`).toBe(true);
    }
  });

  it('encodes a flat op list and decodes it unchanged', () => {
    const ops = [OP.DELIVER, 123456789, 'data:with:colons\u00ff', OP.DIR_SET, 7, 'ID', 42];
    expect(decodeBatch(encodeBatch(ops))).toEqual(ops);
  });

  it('carries bytes (DELIVER_BYTES) unchanged', () => {
    const lines = Buffer.from('PUSH:a\r\nPUSH:\u00ff\x00b\r\n', 'latin1');
    const ops = decodeBatch(encodeBatch([OP.DELIVER_BYTES, 7, 2, lines, OP.KICK, 1]));
    expect(ops.length).toBe(6);
    expect(Buffer.from(ops[3] as Uint8Array).equals(lines)).toBe(true);
    expect([ops[0], ops[1], ops[2], ops[4], ops[5]]).toEqual([OP.DELIVER_BYTES, 7, 2, OP.KICK, 1]);
  });

  it('carries one run of bytes to several handles (DELIVER_BYTES_MANY) unchanged', () => {
    const lines = Buffer.from('PUSH:x\r\nPUSH:\u00ff:y\r\n', 'latin1');
    const ops = decodeBatch(encodeBatch([OP.DELIVER_BYTES_MANY, 2, lines, 3, 11, 22, 33, OP.KICK, 1]));
    expect(ops.length).toBe(9);
    expect(Buffer.from(ops[2] as Uint8Array).equals(lines)).toBe(true);
    expect([ops[0], ops[1], ops[3], ops[4], ops[5], ops[6], ops[7], ops[8]]).toEqual([
      OP.DELIVER_BYTES_MANY,
      2,
      3,
      11,
      22,
      33,
      OP.KICK,
      1,
    ]);
  });

  it('between shards, credit waits for the next batch until a sixteenth of the limit is owed', async () => {
    const ch = new MessageChannel();
    const credited: number[] = [];
    const a = new PortLink(1, ch.port1, 16 * 4096, (ops, l) => {
      if (ops[0] !== OP.CREDIT) return;
      credited.push(ops[1] as number);
      l.credit(ops[1] as number);
    });
    const b = new PortLink(0, ch.port2, 16 * 4096, () => {});
    open.push(a, b);
    a.ops.push(OP.KICK, 1);
    a.flush();
    await tick();
    expect(b.pending).toBe(false); // a few bytes owed: not worth a batch of its own
    a.ops.push(OP.DELIVER_BYTES, 1, 1, Buffer.alloc(5000));
    a.flush();
    await tick();
    expect(b.pending).toBe(true);
    b.flush();
    await tick();
    expect(credited.length).toBe(1);
    expect(a.inflight).toBe(0);
  });

  it('posts one batch per flush, in order', async () => {
    const [a, got] = pair();
    a.ops.push(OP.KICK, 1);
    a.flush();
    a.ops.push(OP.KICK, 2, OP.KICK, 3);
    a.flush();
    await tick();
    expect(got).toEqual([
      [OP.KICK, 1],
      [OP.KICK, 2, OP.KICK, 3],
    ]);
  });

  // Regression: a coalescing target left over from a flushed batch made a later delivery append itself to
  // whatever op of the next batch sat at the same index (seen as a REG_RESULT carrying "PUSH:" lines).
  it('forgets the last DELIVER when its batch is flushed', () => {
    const [a] = pair();
    a.ops.push(OP.DELIVER, 99, 'x');
    a.lastHandle = 99;
    a.lastData = 2;
    a.lastRun = 1;
    a.flush();
    expect([a.lastHandle, a.lastData, a.lastRun]).toEqual([0, -1, 0]);
    a.ops.push(OP.REG_RESULT, 5, '');
    // What ShardActor.deliverRemote checks before joining a delivery onto the previous one:
    expect(a.lastHandle === 99 && a.lastData === a.ops.length - 1).toBe(false);
  });

  it('counts in-flight bytes until the receiver credits them; credit-only batches are not credited back', async () => {
    const ch = new MessageChannel();
    const a = new PortLink(1, ch.port1, 1 << 20, (ops, l) => {
      if (ops[0] === OP.CREDIT) l.credit(ops[1] as number);
    });
    const b = new PortLink(0, ch.port2, 1 << 20, () => {});
    open.push(a, b);
    a.ops.push(OP.KICK, 1);
    a.flush();
    expect(a.inflight).toBeGreaterThan(0);
    await tick();
    b.flush(); // returns CREDIT
    await tick();
    expect(a.inflight).toBe(0);
    expect(b.pending).toBe(false);
  });
});
