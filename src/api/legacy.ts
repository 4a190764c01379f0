// The original server's GET endpoints (PROTOCOL.md §8), same names, plain-text replies `OK:...`/`FAIL:<CODE>`.
// Query strings are URL-decoded and parameters read by name (case-insensitively). They share every
// operation with the REST API, so a legacy call is validated, persisted and applied live the same way.

import { randomBytes } from 'node:crypto';
import { canonicalId, isValidId } from '../protocol/ids.ts';
import type { TopologyChange } from '../routing/changes.ts';
import { TopologyFailure } from '../routing/topology.ts';
import { type AccountRecord, StoreError } from '../store/store.ts';
import type { OperatorApi } from './operator.ts';
import { type ApiResponse, text } from './types.ts';

const PATHS = new Set([
  '/USER',
  '/USERAUTH',
  '/USERDEL',
  '/USERPASSRESET',
  '/USERKEYRESET',
  '/ADDNODE',
  '/GETTREE',
  '/DELNODE',
  '/UPDATENODE',
  '/DEPTH',
  '/PARENT',
  '/CHILD',
  '/ADDINTROUTER',
  '/ADDNODEINTROUTER',
  '/DELNODEINTROUTER',
  '/DELINTROUTER',
  '/GETINTROUTER',
]);

export function isLegacyPath(path: string): boolean {
  return PATHS.has(path);
}

class LegacyFail extends Error {
  readonly code: string;
  constructor(code: string) {
    super(code);
    this.code = code;
  }
}

const ok = (v: string): ApiResponse => text(200, `OK:${v}`);

export async function handleLegacy(api: OperatorApi, url: URL): Promise<ApiResponse> {
  const params = new Map<string, string>();
  for (const [k, v] of url.searchParams) if (!params.has(k.toUpperCase())) params.set(k.toUpperCase(), v);
  const get = (name: string): string | undefined => params.get(name);
  const need = (name: string): string => {
    const v = get(name);
    if (v === undefined || v === '') throw new LegacyFail('INVALID_FORMAT');
    return v;
  };
  const id = (name: string): string => {
    const v = need(name);
    if (!isValidId(v, api.config.NODE.MAX_ID)) throw new LegacyFail('INVALID_ID');
    return canonicalId(v);
  };
  const byKey = async (): Promise<AccountRecord> => {
    const key = need('KEY');
    const acct = /^[0-9a-fA-F]{32}$/.test(key) ? await api.store.accountByKey(key) : null;
    if (acct === null) throw new LegacyFail('INVALID_KEY');
    return acct;
  };
  const byPassword = async (): Promise<AccountRecord> => {
    const email = need('USERNAME');
    const acct = await api.store.accountByEmail(email);
    if (acct === null || !(await api.store.checkPassword(email, need('PASSWORD')))) {
      throw new LegacyFail('INVALID_USERID');
    }
    return acct;
  };
  const change = async (acct: AccountRecord, c: TopologyChange): Promise<void> => {
    try {
      await api.change(acct, c);
    } catch (err) {
      if (err instanceof TopologyFailure) throw new LegacyFail(err.code);
      throw err;
    }
  };

  try {
    switch (url.pathname) {
      case '/USER': {
        const email = need('USERNAME');
        const password = need('PASSWORD');
        if ((await api.store.accountByEmail(email)) !== null) throw new LegacyFail('EXISTS');
        const outbox = api.supervisor.outbox;
        if (outbox === null || !outbox.mailEnabled) throw new LegacyFail('MAIL_DISABLED');
        const token = randomBytes(24).toString('hex');
        const ttl = api.config.HTTP.SIGNUP_TTL;
        try {
          await api.store.createSignup(email, password, api.config.USER.SIGNUP_LEVEL, token, nowSeconds() + ttl);
        } catch {
          throw new LegacyFail('INVALID_ID');
        }
        const host = api.config.PServer.DNS || `localhost:${api.httpPort || api.config.HTTP.PORT}`;
        await outbox.system(
          email,
          'Activate your P2Pcluster account',
          `Open this link within ${Math.max(1, Math.round(ttl / 3600))} hour(s) to activate your account:\r\n` +
            `http://${host}/USERAUTH?token=${token}\r\n`,
        );
        return ok('ACTIVATION_MAIL_SENT');
      }
      case '/USERAUTH': {
        let acct: AccountRecord | null;
        try {
          acct = await api.store.activateSignup(need('TOKEN'), nowSeconds());
        } catch (err) {
          if (err instanceof StoreError) throw new LegacyFail(err.code);
          throw err;
        }
        if (acct === null) throw new LegacyFail('INVALID_TOKEN');
        return ok(`${acct.email}:${acct.key}:`);
      }
      case '/USERDEL':
        await api.deleteAccount(await byPassword());
        return ok('USERDELETED');
      case '/USERPASSRESET': {
        const acct = await byPassword();
        const next = need('NEWPASSWORD');
        await api.store.setPassword(acct.id, next);
        return ok('PASSWORD_CHANGED');
      }
      case '/USERKEYRESET': {
        const acct = await api.resetKey(await byPassword());
        return ok(`${acct.email}:${acct.key}:`);
      }
      case '/ADDNODE': {
        const acct = await byKey();
        const node = get('NODE');
        if (node === undefined || node === '') {
          const root = id('PNODE');
          await change(acct, { op: 'node-add', id: root, parent: null });
          return ok(root);
        }
        const pnode = get('PNODE');
        const parent =
          pnode === undefined || pnode === '' || pnode.toLowerCase() === acct.email.toLowerCase() ? null : id('PNODE');
        const child = id('NODE');
        await change(acct, { op: 'node-add', id: child, parent });
        return ok(child);
      }
      case '/GETTREE': {
        const acct = await byKey();
        const node = get('NODE');
        return text(200, legacyTree(api, acct, node ? id('NODE') : null), 'text/html; charset=utf-8');
      }
      case '/DELNODE': {
        const acct = await byKey();
        const node = id('NODE');
        await change(acct, { op: 'node-delete', id: node });
        return ok(node);
      }
      case '/UPDATENODE': {
        const acct = await byKey();
        const to = id('NODE');
        await change(acct, { op: 'node-rename', from: id('PNODE'), to });
        return ok(to);
      }
      case '/DEPTH': {
        const acct = await byKey();
        const depth = api.supervisor.topologyOf(acct.id).depthOf(id('NODE'));
        if (depth === 0) throw new LegacyFail('NO_NODE');
        return ok(String(depth));
      }
      case '/PARENT': {
        const acct = await byKey();
        const topo = api.supervisor.topologyOf(acct.id);
        const node = id('NODE');
        if (!topo.has(node)) throw new LegacyFail('NO_NODE');
        const parent = topo.parentOf(node);
        if (parent === null) throw new LegacyFail('NO_PARENT');
        return ok(parent);
      }
      case '/CHILD': {
        const acct = await byKey();
        const topo = api.supervisor.topologyOf(acct.id);
        const node = get('NODE');
        if (node === undefined || node === '') return ok([...topo.roots()].sort().join(','));
        const n = id('NODE');
        if (!topo.has(n)) throw new LegacyFail('NO_NODE');
        return ok([...topo.childrenOf(n)].sort().join(','));
      }
      case '/ADDINTROUTER': {
        const acct = await byKey();
        const r = id('ROID');
        await change(acct, { op: 'router-add', name: r });
        return ok(r);
      }
      case '/DELINTROUTER': {
        const acct = await byKey();
        const r = id('ROID');
        await change(acct, { op: 'router-delete', name: r });
        return ok(r);
      }
      case '/ADDNODEINTROUTER': {
        const acct = await byKey();
        const n = id('NOID');
        await change(acct, { op: 'member-add', router: id('ROID'), id: n });
        return ok(n);
      }
      case '/DELNODEINTROUTER': {
        const acct = await byKey();
        const n = id('NOID');
        await change(acct, { op: 'member-delete', router: id('ROID'), id: n });
        return ok(n);
      }
      case '/GETINTROUTER': {
        const acct = await byKey();
        const topo = api.supervisor.topologyOf(acct.id);
        const r = get('ROID');
        if (r === undefined || r === '') return ok([...topo.routers.keys()].sort().join(','));
        const members = topo.routers.get(id('ROID'));
        if (!members) throw new LegacyFail('NO_ROUTER');
        return ok([...members].sort().join(','));
      }
    }
    return text(404, 'FAIL:UNKNOWN_COMMAND');
  } catch (err) {
    if (err instanceof LegacyFail) return text(200, `FAIL:${err.code}`);
    throw err;
  }
}

function nowSeconds(): number {
  return Math.floor(Date.now() / 1000);
}

/**
 * `{100|200|101}<br>UID->100,200<br>100->101<br>`: every node breadth first, then one line per node with
 * children, the account (its e-mail) standing for the top. With a NODE, the subtree under it. Siblings are
 * listed in sorted order, so the answer does not depend on the order of edits.
 */
export function legacyTree(api: OperatorApi, acct: AccountRecord, node: string | null): string {
  const topo = api.supervisor.topologyOf(acct.id);
  if (node !== null && !topo.has(node)) return 'FAIL:NO_NODE';
  const order: string[] = [];
  const lines: string[] = [];
  const top = node === null ? [...topo.roots()].sort() : [node];
  if (node === null) lines.push(`${acct.email}->${top.join(',')}`);
  const queue = [...top];
  for (let i = 0; i < queue.length; i++) {
    const cur = queue[i]!;
    order.push(cur);
    const children = [...topo.childrenOf(cur)].sort();
    if (children.length > 0) {
      lines.push(`${cur}->${children.join(',')}`);
      queue.push(...children);
    }
  }
  return `{${order.join('|')}}<br>${lines.map((l) => `${l}<br>`).join('')}`;
}
