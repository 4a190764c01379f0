// The Aedes broker for the peer benchmark, in its own Node process so its CPU and memory can be read from /proc:
// Aedes' defaults (in-memory persistence) on a plain net server bound to a free loopback port. Prints {"port":N}.
// Nagle is off, as in P2Pcluster's own device port.

import { createServer, type Socket } from 'node:net';

interface AedesBroker {
  handle: (stream: Socket) => unknown;
  close: (cb?: () => void) => void;
}

// A computed specifier keeps `tsc` clean on checkouts where bench/peers/node_modules is not installed.
const AEDES = 'aedes';
const { Aedes } = (await import(AEDES)) as { Aedes: { createBroker: () => Promise<AedesBroker> } };
const broker = await Aedes.createBroker();
const server = createServer({ noDelay: true }, (s) => {
  broker.handle(s);
});
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ port: (server.address() as { port: number }).port })}\n`);
});

const quit = (): void => {
  setTimeout(() => process.exit(0), 2000).unref();
  server.close();
  broker.close(() => process.exit(0));
};
process.once('SIGTERM', quit);
process.once('SIGINT', quit);
