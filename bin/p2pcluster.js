#!/usr/bin/env node
// Runs the CLI on Node >= 24. On an older Node (the machine's own), re-runs it with the Node 24 that
// `npm ci` installed through the `node` devDependency.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const cli = fileURLToPath(new URL('../src/cli.ts', import.meta.url));
const major = Number(process.versions.node.split('.')[0]);
if (major >= 24) {
  await import(cli);
} else {
  const pinned = fileURLToPath(new URL('../node_modules/node/bin/node', import.meta.url));
  if (!existsSync(pinned)) {
    process.stderr.write(`p2pcluster needs Node >= 24 (this is ${process.version}); run \`npm ci\` first.\n`);
    process.exit(1);
  }
  const r = spawnSync(pinned, [cli, ...process.argv.slice(2)], { stdio: 'inherit' });
  process.exit(r.status ?? 1);
}
