import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { device } from './helpers/client.ts';
import { ADMIN_TOKEN, startTestServer, type TestServer } from './helpers/server.ts';

const run = promisify(execFile);
let srv: TestServer;
let email: string;
let key: string;

beforeAll(async () => {
  srv = await startTestServer();
  email = `cli-${process.pid}@test.example`;
  key = srv.newKey(email);
});
afterAll(async () => {
  await srv?.stop();
});

async function cli(...args: string[]): Promise<{ stdout: string; stderr: string; code: number }> {
  const all = ['src/cli.ts', ...args, '--url', `http://127.0.0.1:${srv.httpPort}`];
  try {
    const r = await run(process.execPath, all, { env: { ...process.env, P2PC_LOG_LEVEL: 'silent' } });
    return { ...r, code: 0 };
  } catch (err) {
    const e = err as { stdout: string; stderr: string; code: number };
    return { stdout: e.stdout, stderr: e.stderr, code: e.code };
  }
}

describe('CLI subcommands against a running server (issue 3)', () => {
  it('builds a tree, a router and an alias that live devices use at once', async () => {
    const admin = ['--token', ADMIN_TOKEN, '--account', email];
    expect((await cli('tree', 'add', 'hub', ...admin)).code).toBe(0);
    expect((await cli('tree', 'add', 'lamp', '--parent', 'hub', ...admin)).code).toBe(0);
    expect((await cli('router', 'add', 'garden', '--key', key)).code).toBe(0);
    expect((await cli('router', 'add-member', 'garden', 'hub', '--key', key)).stdout).toBe('added hub to garden\n');
    expect((await cli('router', 'add-member', 'garden', 'lamp', '--key', key)).code).toBe(0);
    expect((await cli('alias', 'set', 'my-lamp', 'lamp', '--key', key)).code).toBe(0);
    const tree = JSON.parse((await cli('tree', 'show', '--key', key)).stdout) as { roots: string[] };
    expect(tree.roots).toEqual(['HUB']);

    const hub = await device(srv.port, key, 'HUB');
    const lamp = await device(srv.port, key, 'LAMP');
    expect(await hub.request(`TCP:PUSH:${key}:CHILDS:on`)).toBe('[OK:ALL_1]');
    expect(await lamp.line()).toBe('PUSH:on');
    expect(await hub.request(`TCP:PUSH:${key}:RO:GARDEN:dim`)).toBe('[OK:ALL_1]');
    expect(await lamp.line()).toBe('PUSH:dim');
    expect(await hub.request(`TCP:PUSH:${key}:ALIAS:MY-LAMP:off`)).toBe('[OK:DATA_SENT]');
    expect(await lamp.line()).toBe('PUSH:off');

    expect((await cli('tree', 'move', 'lamp', '--root', '--key', key)).code).toBe(0);
    expect(await hub.request(`TCP:PUSH:${key}:CHILDS:on`)).toBe('[FAIL:NO_ID]');
    const devices = JSON.parse((await cli('devices', '--key', key)).stdout) as { devices: { id: string }[] };
    expect(devices.devices.map((d) => d.id)).toEqual(['HUB', 'LAMP']);
    hub.close();
    lamp.close();
  });

  it('reports API errors on stderr with a non-zero exit', async () => {
    const r = await cli('tree', 'move', 'nowhere', '--parent', 'hub', '--key', key);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe('p2pcluster: 404 NO_NODE: NOWHERE is not in the tree\n');
    const denied = await cli('account', 'list', '--key', key);
    expect(denied.code).toBe(1);
    expect(denied.stderr).toContain('403 FORBIDDEN');
  });

  it('resets a KEY through the admin token; the old KEY stops working for devices', async () => {
    const other = `cli2-${process.pid}@test.example`;
    const oldKey = srv.newKey(other);
    const d = await device(srv.port, oldKey, 'K1');
    const r = await cli('account', 'key-reset', other, '--token', ADMIN_TOKEN);
    expect(r.code).toBe(0);
    const newKey = r.stdout.trim().split('\n').pop()!;
    expect(newKey).toMatch(/^[0-9A-F]{32}$/);
    expect(await d.request(`TCP:GID:${oldKey}`)).toBe('[FAIL:INVALID_KEY]');
    expect(await d.request(`TCP:GID:${newKey}`)).toBe('[OK:K1]');
    d.close();
  });
});

describe('topology export and import (issue 10)', () => {
  it('exports tree, routers and aliases as JSON and imports them into another account, with progress', async () => {
    const admin = ['--token', ADMIN_TOKEN];
    const from = `exp-${process.pid}@test.example`;
    const to = `imp-${process.pid}@test.example`;
    srv.newKey(from);
    const toKey = srv.newKey(to);
    for (const args of [
      ['tree', 'add', 'top'],
      ['tree', 'add', 'mid', '--parent', 'top'],
      ['tree', 'add', 'leaf', '--parent', 'mid'],
      ['tree', 'add', 'other'],
      ['router', 'add', 'mesh'],
      ['router', 'add-member', 'mesh', 'leaf'],
      ['router', 'add-member', 'mesh', 'other'],
      ['alias', 'set', 'boss', 'top'],
    ]) {
      expect((await cli(...args, ...admin, '--account', from)).code, args.join(' ')).toBe(0);
    }
    const exported = await cli('topology', 'export', ...admin, '--account', from);
    expect(exported.code).toBe(0);
    const doc = JSON.parse(exported.stdout);
    expect(doc).toEqual({
      tree: [
        { id: 'OTHER', parent: null },
        { id: 'TOP', parent: null },
        { id: 'MID', parent: 'TOP' },
        { id: 'LEAF', parent: 'MID' },
      ],
      routers: [{ name: 'MESH', members: ['LEAF', 'OTHER'] }],
      aliases: [{ name: 'BOSS', targets: ['TOP'] }],
    });
    const file = `${srv.dataDir}/topology.json`;
    expect((await cli('topology', 'export', '--out', file, ...admin, '--account', from)).stdout).toBe(
      `written to ${file}\n`,
    );
    const imported = await cli('topology', 'import', file, '--key', toKey);
    expect(imported.code).toBe(0);
    expect(imported.stdout).toBe('imported 4 nodes, 1 routers, 1 aliases\n');
    expect(imported.stderr.trim().split('\n').pop()).toBe('imported 8/8');
    const again = await cli('topology', 'export', '--key', toKey);
    expect(JSON.parse(again.stdout)).toEqual(doc);
    // Devices of the importing account use it at once.
    const leaf = await device(srv.port, toKey, 'LEAF');
    const top = await device(srv.port, toKey, 'TOP');
    expect(await top.request(`TCP:PUSH:${toKey}:ALLCHILDS:hi`)).toBe('[OK:1/2]');
    expect(await leaf.line()).toBe('PUSH:hi');
    leaf.close();
    top.close();
  });
});
