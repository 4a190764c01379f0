// PortLink: batches, flow-control piggybacking, and the delivery-coalescing state across flushes.
import { MessageChannel } from 'node:worker_threads';
import { afterEach, describe, expect, it } from 'vitest';
import { decodeBatch, encodeBatch, PortLink } from '../src/runtime/link.ts';
import { OP } from '../src/runtime/messages.ts';
import { waitFor } from './helpers/shards.ts';

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

/** Messages cross threads (here: ports of one thread) after the turn; a loaded box may take a while. */
const until = (pred: () => boolean, what: string): Promise<void> => waitFor(pred, what, 10_000);

describe('PortLink', () => {
  it('carries bulk bytes beside the batch: copied once when put, unchanged across turns and several side buffers', async () => {
    const ch = new MessageChannel();
    const got: Buffer[] = [];
    const a = new PortLink(1, ch.port1, 1 << 24, () => {});
    const b = new PortLink(0, ch.port2, 1 << 24, (ops, l) => {
      for (let i = 0; i < ops.length; i += 6) {
        expect(ops[i]).toBe(OP.DELIVER_BYTES);
        const side = l.received[ops[i + 3] as number]!;
        got.push(Buffer.from(side.subarray(ops[i + 4] as number, ops[i + 5] as number)));
      }
    });
    open.push(a, b);
    const src = Buffer.alloc(50_000);
    const want: Buffer[] = [];
    for (let turn = 0; turn < 3; turn++) {
      // Five 50 KB runs in a turn: more than one side buffer holds, so the turn takes several.
      for (let k = 0; k < 5; k++) {
        src.fill(65 + turn * 5 + k);
        const at = a.putSide(src, 0, src.length);
        a.ops.push(OP.DELIVER_BYTES, 7, 1, a.sides.length - 1, at, at + src.length);
        want.push(Buffer.from(src));
        src.fill(0); // the read buffer is overwritten by the next read
      }
      a.flush();
      expect(a.sides).toEqual([]); // transferred with the batch
      expect(a.sideLen).toBe(0);
    }
    await until(() => got.length === want.length, 'every run to arrive');
    for (let i = 0; i < want.length; i++) expect(got[i]!.equals(want[i]!), `run ${i}`).toBe(true);
    expect(b.received).toEqual([]); // only while the handler runs
  });

  /** A link whose first side buffer (1,000 bytes of 66 taken) went to the peer and came back with its next batch. */
  async function sideHandedBack(): Promise<PortLink> {
    const ch = new MessageChannel();
    let atA = 0;
    let atB = 0;
    const a = new PortLink(1, ch.port1, 1 << 24, () => atA++);
    const b = new PortLink(0, ch.port2, 1 << 24, () => atB++);
    open.push(a, b);
    a.putSide(Buffer.alloc(1000, 66), 0, 1000);
    a.ops.push(OP.DELIVER_BYTES, 7, 1, 0, 0, 1000);
    a.flush();
    await until(() => atB === 1, "a's batch to arrive");
    b.ops.push(OP.KICK, 1);
    b.flush(); // carries a's batch buffer and side buffer back (pooled before a's handler runs)
    await until(() => atA === 1, "b's batch to arrive");
    return a;
  }

  it('hands side buffers back with the next batch, and uses them again', async () => {
    const a = await sideHandedBack();
    const room = a.sideRoom(1000);
    expect(room.length).toBe(65536);
    expect(room[0]).toBe(66); // the same memory as before: handed back, not new
  });

  it('takes pooled buffers by size class: a run larger than a pooled side gets a buffer of its own size', async () => {
    const a = await sideHandedBack();
    const big = a.sideRoom(100_000);
    expect(big.length).toBe(131072); // next power of two, not the pooled 64 KB side
    expect(big.buffer.byteLength).toBe(131072);
    a.sideLen = 100_000;
    const next = a.sideRoom(40_000); // does not fit after the big run: the pooled side
    expect(next.length).toBe(65536);
    expect(next[0]).toBe(66);
  });

  it('encodes a flat op list and decodes it unchanged', () => {
    const ops = [OP.DELIVER, 123456789, 'data:with:colons\u00ff', OP.DIR_SET, 7, 'ID', 42];
    expect(decodeBatch(encodeBatch(ops))).toEqual(ops);
  });

  it('between shards, credit waits for the next batch until a sixteenth of the limit is owed', async () => {
    const ch = new MessageChannel();
    const credited: number[] = [];
    const a = new PortLink(1, ch.port1, 16 * 4096, (ops, l) => {
      if (ops[0] !== OP.CREDIT) return;
      credited.push(ops[1] as number);
      l.credit(ops[1] as number);
    });
    let atB = 0;
    const b = new PortLink(0, ch.port2, 16 * 4096, () => atB++);
    open.push(a, b);
    a.ops.push(OP.KICK, 1);
    a.flush();
    await until(() => atB === 1, 'the first batch to arrive');
    expect(b.pending).toBe(false); // a few bytes owed: not worth a batch of its own
    a.putSide(Buffer.alloc(5000), 0, 5000);
    a.ops.push(OP.DELIVER_BYTES, 1, 1, 0, 0, 5000);
    a.flush();
    expect(a.inflight).toBeGreaterThan(5000); // side bytes count as in flight
    await until(() => atB === 2, 'the second batch to arrive');
    expect(b.pending).toBe(true);
    b.flush();
    await until(() => credited.length === 1, 'the credit to arrive');
    expect(a.inflight).toBe(0);
  });

  it('posts one batch per flush, in order', async () => {
    const [a, got] = pair();
    a.ops.push(OP.KICK, 1);
    a.flush();
    a.ops.push(OP.KICK, 2, OP.KICK, 3);
    a.flush();
    await until(() => got.length === 2, 'both batches to arrive');
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
    let atB = 0;
    const b = new PortLink(0, ch.port2, 1 << 20, () => atB++);
    open.push(a, b);
    a.ops.push(OP.KICK, 1);
    a.flush();
    expect(a.inflight).toBeGreaterThan(0);
    await until(() => atB === 1, 'the batch to arrive');
    b.flush(); // returns CREDIT
    await until(() => a.inflight === 0, 'the credit to arrive');
    expect(a.pending).toBe(false); // the credit-only batch is not credited back
    expect(b.pending).toBe(false);
  });
});
