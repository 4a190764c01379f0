// Process-level start-up: config, logger, store, demo account, supervisor and signals.

import type { Server } from 'node:http';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import { startHttp } from './api/http.ts';
import { OperatorApi } from './api/operator.ts';
import { advertisedAddress, Backplane } from './cluster/backplane.ts';
import { loadConfig } from './config/load.ts';
import { type Config, type ConfigOverrides, shardCount } from './config/schema.ts';
import { createLogger } from './log.ts';
import { tuneV8 } from './runtime/v8-tuning.ts';
import { Outbox } from './services/outbox.ts';
import { RedisStore } from './store/redis.ts';
import { SqliteStore } from './store/sqlite.ts';
import { embeddedStore, type Store, StoreError } from './store/store.ts';
import { Supervisor } from './supervisor/supervisor.ts';

export const DEFAULT_CONF = fileURLToPath(new URL('../config/Server.conf', import.meta.url));
export const DEMO_EMAIL = 'demo@p2pcluster.local';

export interface StartOptions {
  /** Explicit Server.conf (else config/Server.conf of the package, if present). */
  configFile?: string | undefined;
  env?: NodeJS.ProcessEnv | undefined;
  overrides?: ConfigOverrides | undefined;
  /** Print the first-start banner with the demo KEY (the CLI does; tests do not). */
  banner?: boolean;
}

export interface RunningServer {
  readonly config: Config;
  readonly port: number;
  /** The TLS device port (0 when TLS is off). */
  readonly tlsPort: number;
  /** The operator HTTP port. */
  readonly httpPort: number;
  readonly api: OperatorApi;
  readonly supervisor: Supervisor;
  readonly store: Store;
  /** The embedded store's synchronous handle (tests create accounts through it); null on another store. */
  readonly embedded: SqliteStore | null;
  readonly log: Logger;
  stop(): Promise<void>;
}

export function resolveConfig(opts: StartOptions): Config {
  return loadConfig({ file: opts.configFile, defaultFile: DEFAULT_CONF, env: opts.env, overrides: opts.overrides });
}

/** The configured store: Redis in cluster mode (CLUSTER.REDIS_URL), else the embedded SQLite one (and its handle). */
export async function openStore(config: Config): Promise<{ store: Store; embedded: SqliteStore | null }> {
  if (config.CLUSTER.REDIS_URL !== '') {
    const store = await RedisStore.open(config.CLUSTER.REDIS_URL, { prefix: config.CLUSTER.PREFIX });
    return { store, embedded: null };
  }
  const embedded = new SqliteStore(config.STORE.PATH);
  return { store: embeddedStore(embedded), embedded };
}

export async function startServer(opts: StartOptions = {}): Promise<RunningServer> {
  const config = resolveConfig(opts);
  const log = createLogger(config.LOG.LEVEL, { role: 'supervisor' });
  const { store, embedded } = await openStore(config);
  if ((await store.countAccounts()) === 0) {
    try {
      const demo = await store.createAccount(DEMO_EMAIL, null, config.USER.DEFAULT_LEVEL);
      log.info({ email: DEMO_EMAIL }, 'empty store: created the demo account');
      if (opts.banner) printBanner(demo.key, config);
    } catch (err) {
      // Another node of a cluster starting at the same moment created it first.
      if (!(err instanceof StoreError && err.code === 'EXISTS')) throw err;
    }
  }
  const reniced = tuneV8({
    parallelScavenge: config.PServer.PARALLEL_SCAVENGE === 1,
    backgroundNice: config.PServer.V8_THREADS_NICE,
  });
  if (reniced > 0 && config.PServer.PARALLEL_SCAVENGE === 1) {
    // A collection waits for the helpers it handed pages to; at a low priority they make it wait longer.
    log.warn(
      'PServer.V8_THREADS_NICE without PServer.PARALLEL_SCAVENGE=0: young-generation pauses wait for low-priority helpers',
    );
  }
  const workers = shardCount(config.PServer.WORKERS, availableParallelism());
  const supervisor = new Supervisor(config, store, log, workers);
  const outbox = new Outbox(store, config, log);
  supervisor.outbox = outbox;
  const api = new OperatorApi(supervisor, store, config, log);
  supervisor.httpHandler = (req) => api.handle(req);
  let http: { server: Server; port: number };
  let cluster: Backplane | null = null;
  try {
    await supervisor.start();
    if (config.CLUSTER.REDIS_URL !== '') {
      cluster = await Backplane.open(
        config.CLUSTER.REDIS_URL,
        {
          prefix: config.CLUSTER.PREFIX,
          node: config.CLUSTER.NODE_ID,
          devicePort: supervisor.port,
          advertise: advertisedAddress(config.CLUSTER.ADVERTISE, config.PServer.HOST, supervisor.port),
          log,
        },
        (ev) => supervisor.onClusterEvent(ev),
        () => supervisor.resyncCluster(),
        (batch) => supervisor.onRemoteDeliveries(batch),
      );
      supervisor.joinCluster(cluster);
    }
    outbox.start();
    http = await startHttp(
      (req) => api.handle(req),
      { port: config.HTTP.PORT, host: config.HTTP.HOST, maxBody: config.HTTP.MAX_BODY },
      log,
    );
  } catch (err) {
    await outbox.stop();
    await supervisor.stop();
    await cluster?.close();
    await store.close();
    throw err;
  }
  api.httpPort = http.port;
  log.info({ port: http.port }, 'operator HTTP API listening');
  let stopped: Promise<void> | null = null;
  return {
    config,
    port: supervisor.port,
    tlsPort: supervisor.tlsPort,
    httpPort: http.port,
    api,
    supervisor,
    store,
    embedded,
    log,
    stop() {
      stopped ??= (async () => {
        const closed = new Promise<void>((r) => http.server.close(() => r()));
        http.server.closeAllConnections();
        await closed;
        await supervisor.stop();
        await outbox.stop();
        await cluster?.close();
        await store.close();
      })();
      return stopped;
    },
  };
}

/** First start only: a human-readable hint on stdout (not a log line: logs never carry KEYs). */
function printBanner(key: string, config: Config): void {
  const port = config.PServer.ServerPort;
  process.stdout.write(
    [
      '',
      `P2Pcluster: created the demo account ${DEMO_EMAIL}`,
      `  KEY ${key}`,
      `Try it in two terminals:`,
      `  nc localhost ${port}     then type   TCP:ID:${key}:123`,
      `  nc localhost ${port}     then type   TCP:ID:${key}:1234`,
      `  and in the first one:                TCP:PUSH:${key}:RID:1234:Hello1234`,
      `Watch them in the console: http://localhost:${config.HTTP.PORT}/ (log in with the KEY)`,
      '',
    ].join('\n') + '\n',
  );
}
