// One measurement for interleaved A/B comparisons of two source trees: a fresh server, then one workload.
// `node bench/ab.ts p2p|across|fanout|idle [workers] [count]` prints one JSON line: rate, broker CPU (user + system,
// all threads) per delivery in µs and its user and system parts; for `idle`, RSS bytes per idle registered connection.
// Run the same script from each tree in turn (before, after, before, after) and compare within one session.

import { readFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { SqliteStore } from '../src/store/sqlite.ts';
import { PAYLOAD, pipeline, register } from './load.ts';
import { rssBytes, type Server, startServer, stopServer } from './server.ts';

const kind = process.argv[2] ?? 'p2p';
const workers = Number(process.argv[3] ?? (kind === 'across' ? 2 : 1));
const count = Number(process.argv[4] ?? (kind === 'idle' ? 10_000 : kind === 'fanout' ? 20_000 : 3_000_000));
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
let seq = 0;

/** User and system CPU (all threads) in µs. */
function cpu(pid: number): [number, number] {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return [(Number(f[11]) * 1e6) / 100, (Number(f[12]) * 1e6) / 100];
}

async function onShard(s: Server, prefix: string, shard: number): Promise<[Socket, string]> {
  if (workers === 1) {
    const id = `${prefix}${++seq}`;
    return [await register(s.port, s.key, id), id];
  }
  for (let attempt = 0; attempt < 64; attempt++) {
    const id = `${prefix}${++seq}`;
    const sock = await register(s.port, s.key, id);
    const r = (await (
      await fetch(`http://127.0.0.1:${s.httpPort}/api/v1/accounts/me/devices`, {
        headers: { authorization: `Bearer ${s.key}` },
      })
    ).json()) as { devices: { id: string; shard: number }[] };
    if (r.devices.find((d) => d.id === id)?.shard === shard) return [sock, id];
    sock.destroy();
  }
  throw new Error(`no connection landed on shard ${shard}`);
}

const s = await startServer(workers);
const pid = s.child.pid!;
try {
  if (kind === 'idle') {
    await sleep(1000);
    const before = rssBytes(pid);
    const socks: Socket[] = [];
    for (let i = 0; i < count; i += 250) {
      const n = Math.min(250, count - i);
      socks.push(...(await Promise.all(Array.from({ length: n }, () => register(s.port, s.key, `I${++seq}`)))));
    }
    await sleep(1000);
    const after = rssBytes(pid);
    process.stdout.write(`${JSON.stringify({ kind, workers, perConn: Math.round((after - before) / count) })}\n`);
    for (const x of socks) x.destroy();
  } else {
    let sender: Socket;
    let receivers: Socket[];
    let line: string;
    let per = 1;
    let window = 16384;
    if (kind === 'fanout') {
      const store = new SqliteStore(s.dir);
      const key = store.createAccount('fan@ab.example', null, 4).key;
      store.close();
      receivers = [];
      for (let i = 0; i < 100; i++) receivers.push(await register(s.port, key, `F${i}`));
      sender = await register(s.port, key, 'FS');
      line = `TCP:PUSH:${key}:FRIENDS:${PAYLOAD}\r\n`;
      per = 100;
      window = 256;
    } else {
      const [r, rid] = await onShard(s, 'R', kind === 'across' ? 1 : 0);
      [sender] = await onShard(s, 'S', 0);
      receivers = [r];
      line = `TCP:PUSH:${s.key}:RID:${rid}:${PAYLOAD}\r\n`;
    }
    // Warm-up (JIT), then the measured run.
    await pipeline(sender, receivers, line, Math.min(100_000, count), per, window);
    const [u0, s0] = cpu(pid);
    const r = await pipeline(sender, receivers, line, count, per, window);
    const [u1, s1] = cpu(pid);
    const d = r.deliveries;
    process.stdout.write(
      `${JSON.stringify({
        kind,
        workers,
        rate: Math.round(r.perSecond),
        cpu: +((u1 - u0 + s1 - s0) / d).toFixed(3),
        user: +((u1 - u0) / d).toFixed(3),
        sys: +((s1 - s0) / d).toFixed(3),
      })}\n`,
    );
  }
} finally {
  await stopServer(s);
}
