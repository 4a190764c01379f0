// Presence (§5a, issue 12): PRESENCE events per second delivered to 1,000 watchers. The watchers WATCH FRIENDS of an
// account with no tree, so every device of it that comes or goes is an event for each; then FLAPPERS devices register
// and leave (FIN) CYCLES times each, concurrently, and the clock runs until every watcher has every event.

import type { Socket } from 'node:net';
import { countLines, openSocket, readLine, register } from './load.ts';
import { cpuMicros, type Server } from './server.ts';

const env = process.env;
const WATCHERS = Number(env.BENCH_PRESENCE_WATCHERS ?? 1000);
const FLAPPERS = Number(env.BENCH_PRESENCE_FLAPPERS ?? 8);
const CYCLES = Number(env.BENCH_PRESENCE_CYCLES ?? 50);

/** Events/s delivered (all watchers together) and broker CPU per event (µs). */
export async function presenceBench(s: Server, key: string): Promise<{ perSecond: number; cpu: number }> {
  const watchers: Socket[] = [];
  for (let i = 0; i < WATCHERS; i += 250) {
    const n = Math.min(250, WATCHERS - i);
    watchers.push(...(await Promise.all(Array.from({ length: n }, (_, k) => register(s.port, key, `W${i + k}`)))));
  }
  await Promise.all(
    watchers.map(async (w) => {
      w.write(`TCP:WATCH:${key}:FRIENDS\r\n`);
      const r = await readLine(w);
      if (r !== '[OK:WATCHING]') throw new Error(`WATCH: ${r}`);
    }),
  );
  const expected = FLAPPERS * CYCLES * 2; // ONLINE and OFFLINE per cycle, per watcher
  let missing = WATCHERS;
  let allIn: () => void = () => {};
  const done = new Promise<void>((r) => {
    allIn = r;
  });
  for (const w of watchers) {
    let got = 0;
    w.on('data', (b: Buffer) => {
      got += countLines(b);
      if (got === expected && --missing === 0) allIn();
    });
  }
  const cpu0 = cpuMicros(s.child.pid!);
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: FLAPPERS }, async (_, f) => {
      for (let c = 0; c < CYCLES; c++) {
        let sock = await openSocket(s.port);
        sock.write(`TCP:ID:${key}:FLAP${f}\r\n`);
        let r = await readLine(sock);
        // Our last connection's close may not have reached the server yet: it still holds the ID (§4). Again.
        while (r === '[FAIL:NODEEXIST]') {
          sock.destroy();
          sock = await openSocket(s.port);
          sock.write(`TCP:ID:${key}:FLAP${f}\r\n`);
          r = await readLine(sock);
        }
        if (r !== `[OK:FLAP${f}]`) throw new Error(`flapper: ${r}`);
        await new Promise<void>((resolve) => {
          sock.once('close', () => resolve());
          sock.end();
        });
      }
    }),
  );
  await done;
  const seconds = (performance.now() - t0) / 1000;
  const events = expected * WATCHERS;
  const cpu = (cpuMicros(s.child.pid!) - cpu0) / events;
  for (const w of watchers) w.destroy();
  return { perSecond: events / seconds, cpu };
}
