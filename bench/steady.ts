// Broker CPU under a steady light load, the case where polling instead of sleeping (PServer.SPIN_US) costs the most:
// `node bench/steady.ts [msgs/s] [devices] [seconds] [workers]` registers `devices` devices, then the devices in turn
// push to the next one at random moments, `msgs/s` in all; prints one JSON line with the broker's CPU in percent of
// one core and per message (µs), and how many deliveries arrived.

import type { Socket } from 'node:net';
import { PAYLOAD, register } from './load.ts';
import { cpuMicros, startServer, stopServer } from './server.ts';

const rate = Number(process.argv[2] ?? 10_000);
const devices = Number(process.argv[3] ?? 200);
const seconds = Number(process.argv[4] ?? 5);
const workers = Number(process.argv[5] ?? 1);

const s = await startServer(workers);
try {
  const socks: Socket[] = [];
  for (let i = 0; i < devices; i++) socks.push(await register(s.port, s.key, `S${i}`));
  let delivered = 0;
  for (const x of socks)
    x.on('data', (b: Buffer) => {
      for (let i = b.indexOf(0x50); i >= 0; i = b.indexOf(0x50, i + 1)) if (b[i + 4] === 0x3a) delivered++;
    });
  const lines = socks.map((_, i) => `TCP:PUSH:${s.key}:RID:S${(i + 1) % devices}:${PAYLOAD}\r\n`);
  await new Promise((r) => setTimeout(r, 500));
  const cpu0 = cpuMicros(s.child.pid!);
  const t0 = performance.now();
  let sent = 0;
  let next = 0;
  // Pushes at random moments (exponential gaps, as independent devices make them), each device in turn, one line per
  // write; the loader polls the clock instead of sleeping so the gaps are kept below a millisecond.
  let due = 0;
  await new Promise<void>((resolve) => {
    const step = (): void => {
      const now = (performance.now() - t0) / 1000;
      if (now >= seconds) return resolve();
      while (due <= now) {
        socks[next]!.write(lines[next]!);
        next = (next + 1) % devices;
        sent++;
        due += -Math.log(1 - Math.random()) / rate;
      }
      setImmediate(step);
    };
    step();
  });
  await new Promise((r) => setTimeout(r, 200));
  const wall = (performance.now() - t0) / 1000;
  const cpu = cpuMicros(s.child.pid!) - cpu0;
  process.stdout.write(
    `${JSON.stringify({
      rate,
      devices,
      workers,
      sent,
      delivered,
      cpuPercent: +((100 * cpu) / 1e6 / wall).toFixed(1),
      cpuPerMsg: +(cpu / sent).toFixed(2),
    })}\n`,
  );
  for (const x of socks) x.destroy();
} finally {
  await stopServer(s);
}
