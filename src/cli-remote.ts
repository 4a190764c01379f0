// CLI subcommands that act on a running server through its operator HTTP API, so every change is
// persisted and applied to live connections exactly as an API call would be.

import { readFileSync } from 'node:fs';
import type { Config } from './config/schema.ts';

export interface RemoteOptions {
  url?: string | undefined;
  token?: string | undefined;
  key?: string | undefined;
  account?: string | undefined;
}

export class CliError extends Error {}

/** The JSON of `topology export` / `topology import`. */
export interface TopologyFile {
  tree: { id: string; parent: string | null }[];
  routers: { name: string; members: string[] }[];
  aliases: { name: string; targets: string[] }[];
}

function parseTopologyFile(text: string): TopologyFile {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new CliError('the topology file is not valid JSON');
  }
  const d = v as Partial<TopologyFile>;
  if (!Array.isArray(d.tree) || !Array.isArray(d.routers) || !Array.isArray(d.aliases)) {
    throw new CliError('the topology file needs "tree", "routers" and "aliases" arrays');
  }
  return d as TopologyFile;
}

/** Progress of long work goes to stderr, so stdout stays the result. */
function progress(line: string): void {
  process.stderr.write(`${line}\n`);
}

export const REMOTE_USAGE = `  p2pcluster account list|delete <email>|key-reset <email>|level <email> <1..4>
  p2pcluster tree show|add <id> [--parent <id>]|move <id> (--parent <id> | --root)|rename <id> <new>|delete <id>
  p2pcluster router list|add <name>|delete <name>|add-member <name> <id>|remove-member <name> <id>
  p2pcluster alias list|set <name> <id>[,<id>...]|delete <name>
  p2pcluster devices
  p2pcluster topology export [--out <file>] | import <file>     tree, routers and aliases as JSON
    these talk to the running server: --url <http://host:port> (default: HTTP.PORT on 127.0.0.1),
    --token <admin token> (default: HTTP.ADMIN_TOKEN) with --account <email>, or --key <account KEY>`;

export async function runRemote(
  config: Config,
  o: RemoteOptions,
  command: string,
  args: string[],
  flags: { parent?: string | undefined; root?: boolean | undefined },
): Promise<string> {
  const base = o.url ?? `http://127.0.0.1:${config.HTTP.PORT}`;
  const bearer = o.key ?? o.token ?? config.HTTP.ADMIN_TOKEN;
  if (bearer === '') throw new CliError('give --key <account KEY> or --token <admin token> (or set HTTP.ADMIN_TOKEN)');
  const call = async (method: string, path: string, body?: unknown): Promise<unknown> => {
    let res: Response;
    try {
      res = await fetch(`${base}${path}`, {
        method,
        headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (err) {
      throw new CliError(`cannot reach the server at ${base}: ${(err as Error).message}`);
    }
    const text = await res.text();
    const value = text === '' ? null : (JSON.parse(text) as unknown);
    if (!res.ok) {
      const e = value as { error?: string; message?: string } | null;
      throw new CliError(`${res.status} ${e?.error ?? ''}: ${e?.message ?? text}`);
    }
    return value;
  };
  const acct = (): string => {
    if (o.key !== undefined) return 'me';
    if (o.account === undefined) throw new CliError('give --account <email> (with an admin token) or --key <KEY>');
    return encodeURIComponent(o.account);
  };
  const arg = (i: number, what: string): string => {
    const v = args[i];
    if (v === undefined) throw new CliError(`missing ${what}`);
    return v;
  };
  const enc = encodeURIComponent;
  const show = (v: unknown): string => JSON.stringify(v, null, 2);
  const [sub] = args;
  const a = `/api/v1/accounts`;
  switch (`${command} ${sub ?? ''}`.trim()) {
    case 'account list':
      return show(await call('GET', a));
    case 'account delete':
      await call('DELETE', `${a}/${enc(arg(1, '<email>'))}`);
      return `deleted ${args[1]}`;
    case 'account key-reset': {
      const r = (await call('POST', `${a}/${enc(arg(1, '<email>'))}/key`)) as { key: string };
      return `new KEY of ${args[1]}:\n${r.key}`;
    }
    case 'account level':
      return show(await call('PUT', `${a}/${enc(arg(1, '<email>'))}/level`, { level: Number(arg(2, '<level>')) }));
    case 'devices':
      return show(await call('GET', `${a}/${acct()}/devices`));
    case 'tree show':
      return show(await call('GET', `${a}/${acct()}/tree`));
    case 'tree add':
      return show(
        await call('POST', `${a}/${acct()}/tree/nodes`, { id: arg(1, '<id>'), parent: flags.parent ?? null }),
      );
    case 'tree move': {
      if (!flags.root && flags.parent === undefined) throw new CliError('give --parent <id> or --root');
      const parent = flags.root ? null : flags.parent;
      return show(await call('PATCH', `${a}/${acct()}/tree/nodes/${enc(arg(1, '<id>'))}`, { parent }));
    }
    case 'tree rename':
      return show(await call('PATCH', `${a}/${acct()}/tree/nodes/${enc(arg(1, '<id>'))}`, { id: arg(2, '<new id>') }));
    case 'tree delete':
      return show(await call('DELETE', `${a}/${acct()}/tree/nodes/${enc(arg(1, '<id>'))}`));
    case 'router list':
      return show(await call('GET', `${a}/${acct()}/routers`));
    case 'router add':
      return show(await call('POST', `${a}/${acct()}/routers`, { name: arg(1, '<name>') }));
    case 'router delete':
      await call('DELETE', `${a}/${acct()}/routers/${enc(arg(1, '<name>'))}`);
      return `deleted router ${args[1]}`;
    case 'router add-member':
      await call('PUT', `${a}/${acct()}/routers/${enc(arg(1, '<name>'))}/members/${enc(arg(2, '<id>'))}`);
      return `added ${args[2]} to ${args[1]}`;
    case 'router remove-member':
      await call('DELETE', `${a}/${acct()}/routers/${enc(arg(1, '<name>'))}/members/${enc(arg(2, '<id>'))}`);
      return `removed ${args[2]} from ${args[1]}`;
    case 'alias list':
      return show(await call('GET', `${a}/${acct()}/aliases`));
    case 'alias set':
      return show(
        await call('PUT', `${a}/${acct()}/aliases/${enc(arg(1, '<name>'))}`, { targets: arg(2, '<ids>').split(',') }),
      );
    case 'alias delete':
      await call('DELETE', `${a}/${acct()}/aliases/${enc(arg(1, '<name>'))}`);
      return `deleted alias ${args[1]}`;
    case 'topology export': {
      const base = `${a}/${acct()}`;
      const tree = (await call('GET', `${base}/tree`)) as { nodes: { id: string; parent: string | null }[] };
      const routers = (await call('GET', `${base}/routers`)) as { routers: { name: string; members: string[] }[] };
      const aliases = (await call('GET', `${base}/aliases`)) as { aliases: { name: string; targets: string[] }[] };
      const doc: TopologyFile = {
        tree: tree.nodes.map((n) => ({ id: n.id, parent: n.parent })),
        routers: routers.routers,
        aliases: aliases.aliases,
      };
      return JSON.stringify(doc, null, 2);
    }
    case 'topology import': {
      const doc = parseTopologyFile(readFileSync(arg(1, '<file>'), 'utf8'));
      const base = `${a}/${acct()}`;
      const steps: [string, string, unknown?][] = [
        // Parents before children: the export lists each root's subtree breadth first.
        ...doc.tree.map((n): [string, string, unknown] => [
          'POST',
          `${base}/tree/nodes`,
          { id: n.id, parent: n.parent },
        ]),
        ...doc.routers.map((r): [string, string, unknown] => ['POST', `${base}/routers`, { name: r.name }]),
        ...doc.routers.flatMap((r) =>
          r.members.map((m): [string, string] => ['PUT', `${base}/routers/${enc(r.name)}/members/${enc(m)}`]),
        ),
        ...doc.aliases.map((x): [string, string, unknown] => [
          'PUT',
          `${base}/aliases/${enc(x.name)}`,
          { targets: x.targets },
        ]),
      ];
      const every = Math.max(1, Math.floor(steps.length / 20));
      for (let i = 0; i < steps.length; i++) {
        const [method, path, body] = steps[i]!;
        await call(method, path, body);
        if ((i + 1) % every === 0 || i + 1 === steps.length) progress(`imported ${i + 1}/${steps.length}`);
      }
      return `imported ${doc.tree.length} nodes, ${doc.routers.length} routers, ${doc.aliases.length} aliases`;
    }
  }
  throw new CliError(`unknown command: ${command} ${sub ?? ''}`);
}
