// Micro-benchmarks of the hot functions (tinybench): framing, parsing, routing lookups, batch codec.

import { Bench } from 'tinybench';
import { type FramerState, frameLines, type LineSink } from '../src/protocol/framer.ts';
import { ParsedCommand, parseCommand } from '../src/protocol/parser.ts';
import { groupReply } from '../src/protocol/replies.ts';
import { beginRegistration, liveFlags, newStatusTable } from '../src/routing/handle.ts';
import { decodeBatch, encodeBatch } from '../src/runtime/link.ts';
import { OP } from '../src/runtime/messages.ts';
import { PAYLOAD } from './load.ts';

const KEY = '0123456789ABCDEF0123456789ABCDEF';
const LINE = `TCP:PUSH:${KEY}:RID:RECEIVER42:${PAYLOAD}\r\n`;
const LINES_PER_CHUNK = Math.floor(65536 / LINE.length);
const CHUNK = LINE.repeat(LINES_PER_CHUNK);

interface Row {
  name: string;
  items: number;
}

export async function runMicro(): Promise<string> {
  const bench = new Bench({ time: 400, warmupTime: 100 });
  const rows: Row[] = [];
  const add = (name: string, items: number, fn: () => void): void => {
    rows.push({ name, items });
    bench.add(name, fn);
  };

  const ctx: FramerState = { pending: '', discarding: false };
  let count = 0;
  const counting: LineSink<FramerState> = {
    onLine() {
      count++;
      return true;
    },
    onTooLong() {},
  };
  add(`frameLines: 64 KiB chunk of ${LINES_PER_CHUNK} push lines (per line)`, LINES_PER_CHUNK, () => {
    frameLines(ctx, CHUNK, 4096, counting);
  });

  const cmd = new ParsedCommand();
  const parsing: LineSink<FramerState> = {
    onLine(_c, s, start, end) {
      parseCommand(s, start, end, cmd);
      return true;
    },
    onTooLong() {},
  };
  add('frameLines + parseCommand (per line)', LINES_PER_CHUNK, () => {
    frameLines(ctx, CHUNK, 4096, parsing);
  });

  const table = newStatusTable(1 << 17);
  const devices = new Map<string, number>();
  for (let i = 0; i < 10000; i++) devices.set(`DEV${i}`, beginRegistration(table, i, 0));
  const tables = [table];
  add('routing: ID lookup + live check (per lookup, 10k devices)', 1000, () => {
    let live = 0;
    for (let i = 0; i < 1000; i++) live += liveFlags(tables, devices.get(`DEV${(i * 7) % 10000}`)!);
    count += live;
  });
  add('routing: FRIENDS walk over 100 live devices (per device)', 100, () => {
    let n = 0;
    let k = 0;
    for (const h of devices.values()) {
      if (++k > 100) break;
      n += liveFlags(tables, h);
    }
    count += groupReply(n, 100).length;
  });

  const ops: unknown[] = [];
  for (let i = 0; i < 1000; i++) ops.push(OP.DELIVER, 123456789 + i, PAYLOAD);
  add('link batch: msgpackr encode + decode of 1,000 deliveries (per delivery)', 1000, () => {
    decodeBatch(encodeBatch(ops));
  });

  await bench.run();
  const lines = ['| function | ns per item | items/s |', '|---|---|---|'];
  for (const row of rows) {
    const task = bench.getTask(row.name);
    const r = task?.result;
    if (!r || !('period' in r)) continue;
    const ns = (r.period * 1e6) / row.items;
    lines.push(`| ${row.name} | ${ns.toFixed(1)} | ${Math.round(1e9 / ns).toLocaleString('en-US')} |`);
  }
  if (count < 0) lines.push(''); // keep results observable
  return lines.join('\n');
}
