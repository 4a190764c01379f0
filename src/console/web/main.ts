// The operator console: log in with an account KEY or the admin token, then a live picture of the account
// (tree, routers, aliases, devices, held messages, outbox, message rate) drawn from its event stream, with
// edits and a test push through the operator API.

import { Api, ApiFailure, type State, type Topology } from './api.ts';
import { RateChart } from './chart.ts';
import { RouterView } from './routers.ts';
import { TreeView } from './tree.ts';

const $ = <T extends HTMLElement>(id: string): T => document.getElementById(id) as T;
const TOKEN_KEY = 'p2pc-console-token';

let api: Api | null = null;
let stop: AbortController | null = null;
let topology: Topology = { nodes: [], routers: [], aliases: [] };

const tree = new TreeView($<HTMLElement>('tree') as unknown as SVGSVGElement, $('unplaced'), {
  move: (id, parent) =>
    edit('tree-error', () => api!.call('PATCH', `/tree/nodes/${encodeURIComponent(id)}`, { parent })),
  place: (id, parent) => edit('tree-error', () => api!.call('POST', '/tree/nodes', { id, parent })),
});
const routers = new RouterView($<HTMLElement>('routers') as unknown as SVGSVGElement, (router, id) =>
  edit('router-error', () =>
    api!.call('DELETE', `/routers/${encodeURIComponent(router)}/members/${encodeURIComponent(id)}`),
  ),
);
const chart = new RateChart($<HTMLCanvasElement>('rate'));

/** Runs an edit; its error (if any) is shown in `errorId`. The live stream brings the result. */
async function edit(errorId: string, fn: () => Promise<unknown>): Promise<boolean> {
  const out = $(errorId);
  out.textContent = '';
  try {
    await fn();
    return true;
  } catch (err) {
    out.textContent = err instanceof ApiFailure ? `${err.code}: ${err.message}` : String(err);
    return false;
  }
}

function cell(row: HTMLTableRowElement, text: string | number, cls = ''): HTMLTableCellElement {
  const td = row.insertCell();
  td.textContent = String(text);
  if (cls !== '') td.className = cls;
  return td;
}

const when = (s: number | null): string => (s === null || s === 0 ? '—' : new Date(s * 1000).toLocaleString());

function renderState(s: State): void {
  tree.setDevices(s.devices);
  routers.setOnline(new Set(s.devices.filter((d) => d.online).map((d) => d.id)));
  chart.sample(s.t, s.devices);
  const devices = $<HTMLTableElement>('devices').tBodies[0]!;
  devices.replaceChildren();
  for (const d of s.devices) {
    const row = devices.insertRow();
    row.dataset.id = d.id;
    cell(row, d.id);
    cell(row, d.online ? 'online' : 'offline', `status ${d.online ? 'online' : 'offline'}`);
    cell(row, d.online ? 'now' : when(d.lastSeen));
    cell(row, d.sent, 'num');
    cell(row, d.received, 'num');
    const actions = row.insertCell();
    if (d.online) {
      const kick = document.createElement('button');
      kick.type = 'button';
      kick.textContent = 'Kick';
      kick.addEventListener('click', () => {
        if (confirm(`Disconnect ${d.id}? Its will fires.`)) {
          void api?.call('DELETE', `/devices/${encodeURIComponent(d.id)}`).catch(() => {});
        }
      });
      actions.appendChild(kick);
    }
  }
  const held = $<HTMLTableElement>('held').tBodies[0]!;
  held.replaceChildren();
  for (const h of s.held) {
    const row = held.insertRow();
    cell(row, h.id);
    cell(row, h.count, 'num');
    cell(row, when(Math.floor(h.oldest / 1000)));
    cell(row, h.dropped, 'num');
  }
  const outbox = $<HTMLTableElement>('outbox').tBodies[0]!;
  outbox.replaceChildren();
  for (const m of s.outbox) {
    const row = outbox.insertRow();
    cell(row, m.id, 'num');
    cell(row, m.kind);
    cell(row, m.to);
    cell(row, m.state);
    cell(row, m.attempts, 'num');
    cell(row, m.lastError ?? '');
  }
}

function renderTopology(t: Topology): void {
  topology = t;
  tree.setTopology(t.nodes);
  routers.setRouters(t.routers);
  const body = $<HTMLTableElement>('aliases').tBodies[0]!;
  body.replaceChildren();
  for (const a of t.aliases) {
    const row = body.insertRow();
    row.dataset.alias = a.name;
    cell(row, a.name);
    cell(row, a.targets.join(', '));
    const del = document.createElement('button');
    del.type = 'button';
    del.textContent = 'Delete';
    del.addEventListener(
      'click',
      () => void edit('alias-error', () => api!.call('DELETE', `/aliases/${encodeURIComponent(a.name)}`)),
    );
    row.insertCell().appendChild(del);
  }
}

/** The IDs a test push addresses, resolved from the topology the console shows (as the server would). */
function pushTargets(kind: string, target: string): string[] {
  const t = target.trim().toUpperCase();
  const kids = (id: string): string[] => topology.nodes.filter((n) => n.parent === id).map((n) => n.id);
  switch (kind) {
    case 'RID':
      return [t];
    case 'CHILDS':
      return kids(t);
    case 'ALLCHILDS': {
      const out: string[] = [];
      for (let q = kids(t); q.length > 0; ) {
        const id = q.shift()!;
        out.push(id);
        q = q.concat(kids(id));
      }
      return out;
    }
    case 'FRIENDS': {
      const me = topology.nodes.find((n) => n.id === t);
      const parent = me?.parent ?? null;
      return topology.nodes.filter((n) => n.parent === parent && n.id !== t).map((n) => n.id);
    }
    case 'RO':
      return topology.routers.find((r) => r.name === t)?.members ?? [];
    default:
      return [...(topology.aliases.find((a) => a.name === t)?.targets ?? [])];
  }
}

async function showAccount(): Promise<void> {
  stop?.abort();
  stop = new AbortController();
  const a = api!;
  void a.stream(
    (event, data) => {
      if (event === 'state') renderState(data as State);
      else if (event === 'topology') renderTopology(data as Topology);
    },
    (live) => {
      const el = $('live');
      el.textContent = live ? 'live' : 'offline';
      el.className = `live ${live ? 'on' : 'off'}`;
    },
    stop.signal,
  );
}

async function login(token: string): Promise<void> {
  const candidate = new Api(token);
  const select = $<HTMLSelectElement>('account-select');
  try {
    // The admin token lists accounts; an account KEY does not (403) but reads its own.
    const { accounts } = await candidate.call<{ accounts: { email: string }[] }>('GET', '/api/v1/accounts');
    select.replaceChildren(...accounts.map((a) => new Option(a.email, a.email)));
    select.hidden = false;
    candidate.account = accounts[0]?.email ?? 'me';
    $('who').textContent = 'admin';
  } catch (err) {
    if (!(err instanceof ApiFailure) || err.status !== 403) throw err;
    const me = await candidate.call<{ email: string }>('GET', '/api/v1/accounts/me');
    select.hidden = true;
    $('who').textContent = me.email;
  }
  api = candidate;
  sessionStorage.setItem(TOKEN_KEY, token);
  $('login-view').hidden = true;
  $('main-view').hidden = false;
  $('logout').hidden = false;
  await showAccount();
}

$<HTMLFormElement>('login-form').addEventListener('submit', (e) => {
  e.preventDefault();
  $('login-error').textContent = '';
  login($<HTMLInputElement>('token').value.trim()).catch((err: unknown) => {
    $('login-error').textContent =
      err instanceof ApiFailure && (err.status === 401 || err.status === 403)
        ? 'That KEY or token is not valid.'
        : String(err);
  });
});

$<HTMLSelectElement>('account-select').addEventListener('change', (e) => {
  if (api === null) return;
  api.account = (e.target as HTMLSelectElement).value;
  void showAccount();
});

$('logout').addEventListener('click', () => {
  stop?.abort();
  api = null;
  sessionStorage.removeItem(TOKEN_KEY);
  location.reload();
});

$<HTMLFormElement>('router-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const name = $<HTMLInputElement>('router-name').value.trim();
  const member = $<HTMLInputElement>('router-member').value.trim();
  void edit('router-error', async () => {
    if (!topology.routers.some((r) => r.name === name.toUpperCase())) await api!.call('POST', '/routers', { name });
    if (member !== '') {
      await api!.call('PUT', `/routers/${encodeURIComponent(name)}/members/${encodeURIComponent(member)}`);
    }
  }).then((ok) => {
    if (ok) $<HTMLInputElement>('router-member').value = '';
  });
});

$<HTMLFormElement>('alias-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const name = $<HTMLInputElement>('alias-name').value.trim();
  const targets = $<HTMLInputElement>('alias-targets')
    .value.split(/[\s,]+/)
    .filter((t) => t !== '');
  void edit('alias-error', () => api!.call('PUT', `/aliases/${encodeURIComponent(name)}`, { targets }));
});

$<HTMLFormElement>('push-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const out = $('push-result');
  const ids = pushTargets($<HTMLSelectElement>('push-kind').value, $<HTMLInputElement>('push-target').value);
  if (ids.length === 0) {
    out.textContent = 'No device in that group.';
    return;
  }
  const data = $<HTMLInputElement>('push-data').value;
  api!
    .call<{ total: number; delivered: number; held: number; offline: number }>('POST', '/push', { ids, data })
    .then((r) => {
      out.textContent = `Delivered ${r.delivered} of ${r.total}${r.held > 0 ? `, held ${r.held}` : ''}${r.offline > 0 ? `, ${r.offline} offline` : ''}.`;
    })
    .catch((err: unknown) => {
      out.textContent = err instanceof ApiFailure ? `${err.code}: ${err.message}` : String(err);
    });
});

const saved = sessionStorage.getItem(TOKEN_KEY);
if (saved !== null) void login(saved).catch(() => sessionStorage.removeItem(TOKEN_KEY));
