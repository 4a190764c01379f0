// Command line: `p2pcluster start`, `account add` (on the store), `config`, and the subcommands of
// src/cli-remote.ts that act on a running server through its operator API.

import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { CliError, REMOTE_USAGE, runRemote } from './cli-remote.ts';
import { ConfigError, renderConfigDoc, renderDefaultConf } from './config/load.ts';
import { openStore, type RunningServer, resolveConfig, startServer } from './main.ts';
import { StoreError } from './store/store.ts';

const USAGE = `usage:
  p2pcluster start [--config <Server.conf>]
  p2pcluster account add <email> [--password <pw>] [--level <1..4>] [--config <Server.conf>]
  p2pcluster config [--out <file>] [--markdown]   print (or write) a Server.conf with every key and its default
                                                   (--markdown: the reference table of docs/configuration.md)
${REMOTE_USAGE}`;

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      config: { type: 'string' },
      password: { type: 'string' },
      level: { type: 'string' },
      out: { type: 'string' },
      markdown: { type: 'boolean' },
      url: { type: 'string' },
      token: { type: 'string' },
      key: { type: 'string' },
      account: { type: 'string' },
      parent: { type: 'string' },
      root: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const [command, sub, arg] = positionals;
  if (values.help || command === undefined) {
    process.stdout.write(`${USAGE}\n`);
    return command === undefined && !values.help ? 2 : 0;
  }
  const opts = { configFile: values.config, env: process.env };
  switch (command) {
    case 'start': {
      // Signals are handled from the first moment: one that arrives while the server starts stops it once up.
      let server: RunningServer | null = null;
      let signalled: string | null = null;
      const shutdown = (signal: string): void => {
        if (signalled !== null) return;
        signalled = signal;
        if (server === null) return; // stopped right after start
        server.log.info({ signal }, 'shutting down');
        server.stop().then(
          () => process.exit(0),
          (err) => {
            server?.log.error({ err }, 'shutdown failed');
            process.exit(1);
          },
        );
      };
      process.on('SIGTERM', () => shutdown('SIGTERM'));
      process.on('SIGINT', () => shutdown('SIGINT'));
      server = await startServer({ ...opts, banner: true });
      if (signalled !== null) {
        const signal = signalled;
        signalled = null;
        shutdown(signal);
      }
      return -1; // keep running
    }
    case 'account': {
      if (sub !== 'add') return remote(opts, values, command, positionals.slice(1));
      if (arg === undefined) break;
      const config = resolveConfig(opts);
      const level = values.level === undefined ? config.USER.DEFAULT_LEVEL : Number(values.level);
      if (!Number.isInteger(level) || level < 1 || level > 4) {
        process.stderr.write('--level must be 1, 2, 3 or 4\n');
        return 2;
      }
      const { store } = await openStore(config);
      try {
        const acct = await store.createAccount(arg, values.password ?? null, level);
        process.stdout.write(`account ${acct.email} created (level ${acct.level}); its KEY:\n${acct.key}\n`);
        return 0;
      } finally {
        await store.close();
      }
    }
    case 'tree':
    case 'router':
    case 'alias':
    case 'topology':
    case 'devices':
      return remote(opts, values, command, positionals.slice(1));
    case 'config': {
      const text = values.markdown ? renderConfigDoc() : renderDefaultConf();
      if (values.out) writeFileSync(values.out, text);
      else process.stdout.write(text);
      return 0;
    }
  }
  process.stderr.write(`${USAGE}\n`);
  return 2;
}

async function remote(
  opts: { configFile: string | undefined; env: NodeJS.ProcessEnv },
  values: Record<string, string | boolean | undefined>,
  command: string,
  args: string[],
): Promise<number> {
  const config = resolveConfig(opts);
  const s = (k: string): string | undefined => values[k] as string | undefined;
  const out = await runRemote(
    config,
    { url: s('url'), token: s('token'), key: s('key'), account: s('account') },
    command,
    args,
    { parent: s('parent'), root: values.root as boolean | undefined },
  );
  const file = s('out');
  if (file !== undefined && command === 'topology') {
    writeFileSync(file, `${out}\n`);
    process.stdout.write(`written to ${file}\n`);
  } else process.stdout.write(`${out}\n`);
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exitCode = code;
  },
  (err: unknown) => {
    if (err instanceof ConfigError || err instanceof StoreError || err instanceof CliError) {
      process.stderr.write(`p2pcluster: ${err.message}\n`);
    } else process.stderr.write(`p2pcluster: ${(err as Error)?.stack ?? String(err)}\n`);
    process.exitCode = 1;
  },
);
