// End-to-end tests of the original server's GET endpoints (PROTOCOL.md §8) over real HTTP: every endpoint,
// replies byte for byte, URL-decoded query strings, parameters read by name in any order, changes applied to
// live connections, and the same endpoints served on the device port.

import { describe, expect, it } from 'vitest';
import { TestClient } from './helpers/client.ts';
import { suiteServer } from './helpers/devices.ts';
import type { TestServer } from './helpers/server.ts';

let srv: TestServer;
const { opened, dev } = suiteServer((s) => (srv = s));

// ------------------------------------------------------------------ helpers

const TEXT = 'text/plain; charset=utf-8';
const HTML = 'text/html; charset=utf-8';

/** A legacy GET; `path` is sent exactly as written (already URL-encoded where needed). */
async function get(path: string): Promise<{ status: number; type: string | null; text: string }> {
  const r = await fetch(`http://127.0.0.1:${srv.httpPort}${path}`);
  return { status: r.status, type: r.headers.get('content-type'), text: await r.text() };
}

/** The exact reply body of a legacy call, checking it is a 200 plain-text reply. */
async function reply(path: string): Promise<string> {
  const r = await get(path);
  expect([r.status, r.type], path).toEqual([200, TEXT]);
  return r.text;
}

async function tree(key: string, node?: string): Promise<string> {
  const r = await get(`/GETTREE?KEY=${key}${node === undefined ? '' : `&NODE=${node}`}`);
  expect(r.status).toBe(200);
  return r.text;
}

let mails = 0;
/** A fresh account; returns its e-mail and KEY. */
function account(password: string | null = null, level = 4): { email: string; key: string } {
  const email = `legacy-${++mails}-${process.pid}@legacy.example`;
  const a = srv.embedded!.createAccount(email, password, level);
  return { email, key: a.key };
}

const enc = encodeURIComponent;
const nowSeconds = (): number => Math.floor(Date.now() / 1000);

// ------------------------------------------------------------------ tree endpoints

describe('tree endpoints', () => {
  it('ADDNODE roots (PNODE only, or PNODE = the account e-mail) and children; GETTREE byte for byte', async () => {
    const { email, key } = account();
    expect(await reply(`/ADDNODE?KEY=${key}&PNODE=100`)).toBe('OK:100');
    expect(await reply(`/ADDNODE?KEY=${key}&PNODE=${enc(email)}&NODE=200`)).toBe('OK:200');
    expect(await reply(`/ADDNODE?KEY=${key}&PNODE=${enc(email.toUpperCase())}&NODE=300`)).toBe('OK:300');
    expect(await reply(`/DELNODE?KEY=${key}&NODE=300`)).toBe('OK:300');
    expect(await reply(`/ADDNODE?KEY=${key}&PNODE=100&NODE=101`)).toBe('OK:101');
    const r = await get(`/GETTREE?KEY=${key}`);
    expect([r.status, r.type]).toEqual([200, HTML]);
    expect(r.text).toBe(`{100|200|101}<br>${email}->100,200<br>100->101<br>`);
    expect(await tree(key, '100')).toBe('{100|101}<br>100->101<br>');
    expect(await tree(key, '101')).toBe('{101}<br>');
    expect(await tree(key, '200')).toBe('{200}<br>');
  });

  it('GETTREE of a deeper tree lists nodes breadth first and one line per parent', async () => {
    const { email, key } = account();
    for (const q of ['PNODE=100', 'PNODE=200', 'PNODE=100&NODE=101', 'PNODE=100&NODE=102', 'PNODE=101&NODE=103']) {
      expect(await reply(`/ADDNODE?KEY=${key}&${q}`)).toMatch(/^OK:\d+$/);
    }
    expect(await reply(`/ADDNODE?KEY=${key}&PNODE=103&NODE=abc`)).toBe('OK:ABC');
    expect(await tree(key)).toBe(
      `{100|200|101|102|103|ABC}<br>${email}->100,200<br>100->101,102<br>101->103<br>103->ABC<br>`,
    );
    expect(await tree(key, '101')).toBe('{101|103|ABC}<br>101->103<br>103->ABC<br>');
    expect(await tree(key, 'abc')).toBe('{ABC}<br>');
  });

  it('GETTREE of an empty tree, and of an unknown NODE', async () => {
    const { email, key } = account();
    expect(await tree(key)).toBe(`{}<br>${email}-><br>`);
    expect(await tree(key, 'NOPE')).toBe('FAIL:NO_NODE');
  });

  it('ADDNODE failures: exists, unknown parent, bad ID, bad or missing KEY, missing PNODE; nothing changes', async () => {
    const { email, key } = account();
    await reply(`/ADDNODE?KEY=${key}&PNODE=P`);
    await reply(`/ADDNODE?KEY=${key}&PNODE=P&NODE=C`);
    const before = await tree(key);
    expect(await reply(`/ADDNODE?KEY=${key}&PNODE=P`)).toBe('FAIL:NODE_EXISTS');
    expect(await reply(`/ADDNODE?KEY=${key}&PNODE=Q&NODE=c`)).toBe('FAIL:NODE_EXISTS');
    expect(await reply(`/ADDNODE?KEY=${key}&PNODE=NOPE&NODE=X`)).toBe('FAIL:NO_PARENT_NODE');
    expect(await reply(`/ADDNODE?KEY=${key}&PNODE=P&NODE=bad%20id`)).toBe('FAIL:INVALID_ID');
    expect(await reply(`/ADDNODE?KEY=${key}&PNODE=b:d`)).toBe('FAIL:INVALID_ID');
    expect(await reply(`/ADDNODE?KEY=${key}&PNODE=bad%20parent&NODE=X`)).toBe('FAIL:INVALID_ID');
    expect(await reply(`/ADDNODE?KEY=${key}`)).toBe('FAIL:INVALID_FORMAT');
    expect(await reply(`/ADDNODE?KEY=${key}&PNODE=`)).toBe('FAIL:INVALID_FORMAT');
    expect(await reply('/ADDNODE?PNODE=X')).toBe('FAIL:INVALID_FORMAT');
    expect(await reply('/ADDNODE?KEY=&PNODE=X')).toBe('FAIL:INVALID_FORMAT');
    expect(await reply('/ADDNODE?KEY=nothex&PNODE=X')).toBe('FAIL:INVALID_KEY');
    expect(await reply(`/ADDNODE?KEY=${'0'.repeat(32)}&PNODE=X`)).toBe('FAIL:INVALID_KEY');
    expect(await reply(`/ADDNODE?KEY=${key}X&PNODE=X`)).toBe('FAIL:INVALID_KEY');
    expect(await tree(key)).toBe(before);
    expect(before).toBe(`{P|C}<br>${email}->P<br>P->C<br>`);
  });

  it('ADDNODE past the plan limit (level 1: 10 nodes) → FAIL:TREE_FULL', async () => {
    const { key } = account(null, 1);
    for (let i = 0; i < 10; i++) expect(await reply(`/ADDNODE?KEY=${key}&PNODE=N${i}`)).toBe(`OK:N${i}`);
    expect(await reply(`/ADDNODE?KEY=${key}&PNODE=N10`)).toBe('FAIL:TREE_FULL');
  });

  it('DELNODE removes the subtree → OK:<node>; unknown → FAIL:NO_NODE', async () => {
    const { email, key } = account();
    for (const q of ['PNODE=A', 'PNODE=A&NODE=B', 'PNODE=B&NODE=C', 'PNODE=A&NODE=D', 'PNODE=E']) {
      await reply(`/ADDNODE?KEY=${key}&${q}`);
    }
    expect(await reply(`/DELNODE?KEY=${key}&NODE=b`)).toBe('OK:B');
    expect(await tree(key)).toBe(`{A|E|D}<br>${email}->A,E<br>A->D<br>`);
    expect(await reply(`/DELNODE?KEY=${key}&NODE=C`)).toBe('FAIL:NO_NODE');
    expect(await reply(`/DELNODE?KEY=${key}`)).toBe('FAIL:INVALID_FORMAT');
    expect(await reply(`/DELNODE?KEY=${key}&NODE=A`)).toBe('OK:A');
    expect(await tree(key)).toBe(`{E}<br>${email}->E<br>`);
  });

  it('UPDATENODE renames PNODE to NODE, keeping place and children', async () => {
    const { email, key } = account();
    for (const q of ['PNODE=100', 'PNODE=100&NODE=101', 'PNODE=101&NODE=102', 'PNODE=100&NODE=103']) {
      await reply(`/ADDNODE?KEY=${key}&${q}`);
    }
    expect(await reply(`/UPDATENODE?KEY=${key}&PNODE=101&NODE=lamp`)).toBe('OK:LAMP');
    expect(await tree(key)).toBe(`{100|103|LAMP|102}<br>${email}->100<br>100->103,LAMP<br>LAMP->102<br>`);
    expect(await reply(`/PARENT?KEY=${key}&NODE=102`)).toBe('OK:LAMP');
    const before = await tree(key);
    expect(await reply(`/UPDATENODE?KEY=${key}&PNODE=NOPE&NODE=X`)).toBe('FAIL:NO_NODE');
    expect(await reply(`/UPDATENODE?KEY=${key}&PNODE=LAMP&NODE=103`)).toBe('FAIL:NODE_EXISTS');
    expect(await reply(`/UPDATENODE?KEY=${key}&PNODE=LAMP`)).toBe('FAIL:INVALID_FORMAT');
    expect(await reply(`/UPDATENODE?KEY=${key}&NODE=X`)).toBe('FAIL:INVALID_FORMAT');
    expect(await tree(key)).toBe(before);
  });

  it('DEPTH, PARENT, CHILD', async () => {
    const { key } = account();
    for (const q of ['PNODE=100', 'PNODE=200', 'PNODE=100&NODE=101', 'PNODE=100&NODE=102', 'PNODE=101&NODE=103']) {
      await reply(`/ADDNODE?KEY=${key}&${q}`);
    }
    expect(await reply(`/DEPTH?KEY=${key}&NODE=100`)).toBe('OK:1');
    expect(await reply(`/DEPTH?KEY=${key}&NODE=200`)).toBe('OK:1');
    expect(await reply(`/DEPTH?KEY=${key}&NODE=101`)).toBe('OK:2');
    expect(await reply(`/DEPTH?KEY=${key}&NODE=103`)).toBe('OK:3');
    expect(await reply(`/DEPTH?KEY=${key}&NODE=999`)).toBe('FAIL:NO_NODE');
    expect(await reply(`/DEPTH?KEY=${key}`)).toBe('FAIL:INVALID_FORMAT');
    expect(await reply(`/PARENT?KEY=${key}&NODE=103`)).toBe('OK:101');
    expect(await reply(`/PARENT?KEY=${key}&NODE=101`)).toBe('OK:100');
    expect(await reply(`/PARENT?KEY=${key}&NODE=100`)).toBe('FAIL:NO_PARENT');
    expect(await reply(`/PARENT?KEY=${key}&NODE=999`)).toBe('FAIL:NO_NODE');
    expect(await reply(`/CHILD?KEY=${key}&NODE=100`)).toBe('OK:101,102');
    expect(await reply(`/CHILD?KEY=${key}&NODE=101`)).toBe('OK:103');
    expect(await reply(`/CHILD?KEY=${key}&NODE=103`)).toBe('OK:');
    expect(await reply(`/CHILD?KEY=${key}`)).toBe('OK:100,200');
    expect(await reply(`/CHILD?KEY=${key}&NODE=999`)).toBe('FAIL:NO_NODE');
    expect(await reply('/CHILD?KEY=BADKEY')).toBe('FAIL:INVALID_KEY');
  });

  it('a chain 1,000 deep: DEPTH of the leaf is OK:1000', async () => {
    const { key } = account();
    await reply(`/ADDNODE?KEY=${key}&PNODE=L0`);
    for (let i = 1; i < 1000; i++)
      expect(await reply(`/ADDNODE?KEY=${key}&PNODE=L${i - 1}&NODE=L${i}`)).toBe(`OK:L${i}`);
    expect(await reply(`/DEPTH?KEY=${key}&NODE=L999`)).toBe('OK:1000');
    expect(await reply(`/PARENT?KEY=${key}&NODE=L999`)).toBe('OK:L998');
    expect(await tree(key, 'L997')).toBe('{L997|L998|L999}<br>L997->L998<br>L998->L999<br>');
  });

  it('accounts are separate: one KEY never sees or edits the tree of another', async () => {
    const a = account();
    const b = account();
    await reply(`/ADDNODE?KEY=${b.key}&PNODE=SECRET`);
    expect(await tree(a.key)).toBe(`{}<br>${a.email}-><br>`);
    expect(await tree(a.key, 'SECRET')).toBe('FAIL:NO_NODE');
    expect(await reply(`/DELNODE?KEY=${a.key}&NODE=SECRET`)).toBe('FAIL:NO_NODE');
    expect(await reply(`/ADDNODE?KEY=${a.key}&PNODE=SECRET&NODE=SPY`)).toBe('FAIL:NO_PARENT_NODE');
    // Another account's e-mail as PNODE is just an unknown parent node, not that account's top.
    expect(await reply(`/ADDNODE?KEY=${a.key}&PNODE=${enc(b.email)}&NODE=SPY`)).toBe('FAIL:NO_PARENT_NODE');
    expect(await tree(b.key)).toBe(`{SECRET}<br>${b.email}->SECRET<br>`);
  });
});

// ------------------------------------------------------------------ routers

describe('router endpoints', () => {
  it('ADDINTROUTER, ADDNODEINTROUTER, GETINTROUTER, DELNODEINTROUTER, DELINTROUTER', async () => {
    const { key } = account();
    expect(await reply(`/GETINTROUTER?KEY=${key}`)).toBe('OK:');
    expect(await reply(`/ADDINTROUTER?KEY=${key}&ROID=garden`)).toBe('OK:GARDEN');
    expect(await reply(`/ADDINTROUTER?KEY=${key}&ROID=Attic`)).toBe('OK:ATTIC');
    expect(await reply(`/ADDINTROUTER?KEY=${key}&ROID=GARDEN`)).toBe('FAIL:ROUTER_EXISTS');
    expect(await reply(`/GETINTROUTER?KEY=${key}`)).toBe('OK:ATTIC,GARDEN');
    expect(await reply(`/GETINTROUTER?KEY=${key}&ROID=garden`)).toBe('OK:');
    expect(await reply(`/ADDNODEINTROUTER?KEY=${key}&ROID=garden&NOID=lamp2`)).toBe('OK:LAMP2');
    expect(await reply(`/ADDNODEINTROUTER?KEY=${key}&ROID=GARDEN&NOID=lamp1`)).toBe('OK:LAMP1');
    expect(await reply(`/ADDNODEINTROUTER?KEY=${key}&ROID=nope&NOID=lamp1`)).toBe('FAIL:NO_ROUTER');
    expect(await reply(`/ADDNODEINTROUTER?KEY=${key}&ROID=garden`)).toBe('FAIL:INVALID_FORMAT');
    expect(await reply(`/ADDNODEINTROUTER?KEY=${key}&ROID=garden&NOID=bad%20id`)).toBe('FAIL:INVALID_ID');
    expect(await reply(`/GETINTROUTER?KEY=${key}&ROID=Garden`)).toBe('OK:LAMP1,LAMP2');
    expect(await reply(`/GETINTROUTER?KEY=${key}&ROID=nope`)).toBe('FAIL:NO_ROUTER');
    expect(await reply(`/DELNODEINTROUTER?KEY=${key}&ROID=garden&NOID=lamp1`)).toBe('OK:LAMP1');
    expect(await reply(`/DELNODEINTROUTER?KEY=${key}&ROID=garden&NOID=lamp1`)).toBe('FAIL:NOT_MEMBER');
    expect(await reply(`/DELNODEINTROUTER?KEY=${key}&ROID=nope&NOID=lamp2`)).toBe('FAIL:NO_ROUTER');
    expect(await reply(`/GETINTROUTER?KEY=${key}&ROID=garden`)).toBe('OK:LAMP2');
    expect(await reply(`/DELINTROUTER?KEY=${key}&ROID=garden`)).toBe('OK:GARDEN');
    expect(await reply(`/DELINTROUTER?KEY=${key}&ROID=garden`)).toBe('FAIL:NO_ROUTER');
    expect(await reply(`/DELINTROUTER?KEY=${key}`)).toBe('FAIL:INVALID_FORMAT');
    expect(await reply(`/GETINTROUTER?KEY=${key}`)).toBe('OK:ATTIC');
    expect(await reply(`/GETINTROUTER?KEY=${'A'.repeat(32)}`)).toBe('FAIL:INVALID_KEY');
  });

  it('router changes apply to live connections before the reply', async () => {
    const { key } = account();
    await reply(`/ADDINTROUTER?KEY=${key}&ROID=R`);
    for (const id of ['S', 'A', 'B']) await reply(`/ADDNODEINTROUTER?KEY=${key}&ROID=R&NOID=${id}`);
    const s = await dev(key, 'S');
    const a = await dev(key, 'A');
    const b = await dev(key, 'B');
    expect(await s.request(`TCP:PUSH:${key}:RO:r:one`)).toBe('[OK:ALL_2]');
    expect(await a.line()).toBe('PUSH:one');
    expect(await b.line()).toBe('PUSH:one');
    expect(await reply(`/DELNODEINTROUTER?KEY=${key}&ROID=R&NOID=B`)).toBe('OK:B');
    expect(await s.request(`TCP:PUSH:${key}:RO:R:two`)).toBe('[OK:ALL_1]');
    expect(await a.line()).toBe('PUSH:two');
    expect(await s.request(`TCP:PUSH:${key}:RID:B:marker`)).toBe('[OK:DATA_SENT]');
    expect(await b.line()).toBe('PUSH:marker');
    expect(await reply(`/DELINTROUTER?KEY=${key}&ROID=R`)).toBe('OK:R');
    expect(await s.request(`TCP:PUSH:${key}:RO:R:three`)).toBe('[FAIL:NO_ROUTER]');
  });
});

// ------------------------------------------------------------------ users

describe('user endpoints', () => {
  it('USERAUTH with a valid token → OK:<email>:<KEY>:, single use; the KEY works at once', async () => {
    const email = `signup-${process.pid}@legacy.example`;
    srv.embedded!.createSignup(email, 'pw-signup', 1, 'token-valid-1', nowSeconds() + 3600);
    const text = await reply('/USERAUTH?token=token-valid-1');
    const acct = srv.embedded!.accountByEmail(email);
    expect(acct).not.toBeNull();
    expect(text).toBe(`OK:${email}:${acct!.key}:`);
    expect(acct!.level).toBe(1);
    expect(await reply('/USERAUTH?token=token-valid-1')).toBe('FAIL:INVALID_TOKEN');
    const d = await dev(acct!.key, 'fresh');
    expect(await d.request(`TCP:GID:${acct!.key}`)).toBe('[OK:FRESH]');
    expect(await reply(`/ADDNODE?KEY=${acct!.key}&PNODE=FRESH`)).toBe('OK:FRESH');
  });

  it('USERAUTH: expired, unknown or missing token', async () => {
    const email = `expired-${process.pid}@legacy.example`;
    srv.embedded!.createSignup(email, 'pw', 1, 'token-expired-1', nowSeconds() - 5);
    expect(await reply('/USERAUTH?token=token-expired-1')).toBe('FAIL:INVALID_TOKEN');
    expect(srv.embedded!.accountByEmail(email)).toBeNull();
    expect(await reply('/USERAUTH?token=never-issued')).toBe('FAIL:INVALID_TOKEN');
    expect(await reply('/USERAUTH')).toBe('FAIL:INVALID_FORMAT');
    expect(await reply('/USERAUTH?token=')).toBe('FAIL:INVALID_FORMAT');
  });

  it('USERAUTH for an e-mail that got an account meanwhile answers FAIL:<CODE>, not an HTTP error', async () => {
    const email = `raced-${process.pid}@legacy.example`;
    srv.embedded!.createSignup(email, 'pw', 1, 'token-raced-1', nowSeconds() + 3600);
    srv.embedded!.createAccount(email, null, 4);
    const r = await get('/USERAUTH?token=token-raced-1');
    expect({ status: r.status, type: r.type }).toEqual({ status: 200, type: TEXT });
    expect(r.text).toMatch(/^FAIL:[A-Z_]+$/);
  });

  it('USERKEYRESET → OK:<email>:<new KEY>:; the old KEY fails at once, live connections included', async () => {
    const { email, key } = account('pw-reset');
    const d = await dev(key, 'gadget');
    const text = await reply(`/USERKEYRESET?username=${enc(email)}&password=pw-reset`);
    const newKey = srv.embedded!.accountByEmail(email)!.key;
    expect(newKey).not.toBe(key);
    expect(text).toBe(`OK:${email}:${newKey}:`);
    expect(await d.request(`TCP:PUSH:${key}:FRIENDS:x`)).toBe('[FAIL:INVALID_KEY]');
    expect(await d.request(`TCP:GID:${newKey}`)).toBe('[OK:GADGET]');
    expect(await reply(`/GETTREE?KEY=${key}`)).toBe('FAIL:INVALID_KEY');
    expect(await tree(newKey)).toBe(`{}<br>${email}-><br>`);
    expect(await reply(`/USERKEYRESET?username=${enc(email)}&password=wrong`)).toBe('FAIL:INVALID_USERID');
    expect(await reply('/USERKEYRESET?username=nobody%40legacy.example&password=pw-reset')).toBe('FAIL:INVALID_USERID');
    expect(await reply(`/USERKEYRESET?username=${enc(email)}`)).toBe('FAIL:INVALID_FORMAT');
    expect(srv.embedded!.accountByEmail(email)!.key).toBe(newKey);
  });

  it('USERPASSRESET changes the password; the old one stops working', async () => {
    const { email } = account('old-pw');
    expect(await reply(`/USERPASSRESET?username=${enc(email)}&password=wrong&newpassword=x`)).toBe(
      'FAIL:INVALID_USERID',
    );
    expect(await reply(`/USERPASSRESET?username=${enc(email)}&password=old-pw`)).toBe('FAIL:INVALID_FORMAT');
    expect(srv.embedded!.checkPassword(email, 'old-pw')).toBe(true);
    expect(await reply(`/USERPASSRESET?username=${enc(email)}&password=old-pw&newpassword=new-pw`)).toBe(
      'OK:PASSWORD_CHANGED',
    );
    expect(srv.embedded!.checkPassword(email, 'old-pw')).toBe(false);
    expect(srv.embedded!.checkPassword(email, 'new-pw')).toBe(true);
    expect(await reply(`/USERKEYRESET?username=${enc(email)}&password=old-pw`)).toBe('FAIL:INVALID_USERID');
    expect(await reply(`/USERKEYRESET?username=${enc(email)}&password=new-pw`)).toMatch(/^OK:/);
  });

  it('USERDEL deletes the account and disconnects its devices', async () => {
    const { email, key } = account('pw-del');
    await reply(`/ADDNODE?KEY=${key}&PNODE=ROOT`);
    const d1 = await dev(key, 'one');
    const d2 = await dev(key, 'two');
    expect(await reply(`/USERDEL?username=${enc(email)}&password=bad`)).toBe('FAIL:INVALID_USERID');
    expect(srv.embedded!.accountByEmail(email)).not.toBeNull();
    expect(await reply(`/USERDEL?username=${enc(email)}&password=pw-del`)).toBe('OK:USERDELETED');
    await d1.closedByServer();
    await d2.closedByServer();
    expect(srv.embedded!.accountByEmail(email)).toBeNull();
    expect(await reply(`/GETTREE?KEY=${key}`)).toBe('FAIL:INVALID_KEY');
    expect(await reply(`/USERDEL?username=${enc(email)}&password=pw-del`)).toBe('FAIL:INVALID_USERID');
    const again = await TestClient.open(srv.port);
    opened.push(again);
    expect(await again.request(`TCP:ID:${key}:one`)).toBe('[FAIL:INVALID_KEY]');
  });

  it('USER answers FAIL:MAIL_DISABLED without a mail transport, FAIL:EXISTS for a taken e-mail', async () => {
    const email = `wants-${process.pid}@legacy.example`;
    expect(await reply(`/USER?username=${enc(email)}&password=pw`)).toBe('FAIL:MAIL_DISABLED');
    expect(srv.embedded!.accountByEmail(email)).toBeNull();
    const taken = account();
    expect(await reply(`/USER?username=${enc(taken.email)}&password=pw`)).toBe('FAIL:EXISTS');
    expect(await reply(`/USER?username=${enc(email)}`)).toBe('FAIL:INVALID_FORMAT');
    expect(await reply('/USER?password=pw')).toBe('FAIL:INVALID_FORMAT');
  });
});

// ------------------------------------------------------------------ decoding and parameter names

describe('query strings', () => {
  it('are URL-decoded: %41 → A, %40 in an e-mail, reserved characters in a password', async () => {
    const password = 'p&s=s w:%+x';
    const { email, key } = account(password);
    expect(await reply(`/ADDNODE?KEY=${key}&PNODE=%41%42`)).toBe('OK:AB');
    expect(await reply(`/ADDNODE?KEY=${key}&PNODE=%61b&NODE=%63%2D%31`)).toBe('OK:C-1');
    expect(await reply(`/ADDNODE?KEY=${key}&PNODE=${email.replace('@', '%40')}&NODE=R2`)).toBe('OK:R2');
    expect(await tree(key)).toBe(`{AB|R2|C-1}<br>${email}->AB,R2<br>AB->C-1<br>`);
    expect(await reply(`/DEPTH?KEY=${key}&NODE=%43-1`)).toBe('OK:2');
    // A malformed escape is not decoded, so the value is not a valid ID.
    expect(await reply(`/ADDNODE?KEY=${key}&PNODE=%ZZ`)).toBe('FAIL:INVALID_ID');
    // '+' in a query string is a space, so the password must be sent with %2B for its '+'.
    expect(await reply(`/USERKEYRESET?username=${enc(email)}&password=${enc(password)}`)).toMatch(
      new RegExp(`^OK:${email.replace(/[.+]/g, '\\$&')}:[0-9A-F]{32}:$`),
    );
    expect(await reply(`/USERKEYRESET?username=${enc(email)}&password=p%26s%3Ds+w%3A%25%2Bx`)).toMatch(/^OK:/);
    expect(await reply(`/USERKEYRESET?username=${enc(email)}&password=p%26s%3Ds+w%3A%25+x`)).toBe(
      'FAIL:INVALID_USERID',
    );
  });

  it('parameters are read by name, in any order and any case; unknown ones are ignored', async () => {
    const { email, key } = account();
    expect(await reply(`/ADDNODE?PNODE=P&KEY=${key}`)).toBe('OK:P');
    expect(await reply(`/ADDNODE?NODE=C&PNODE=P&KEY=${key}`)).toBe('OK:C');
    expect(await reply(`/ADDNODE?node=D&x=1&pnode=P&key=${key.toLowerCase()}`)).toBe('OK:D');
    expect(await tree(key)).toBe(`{P|C|D}<br>${email}->P<br>P->C,D<br>`);
    expect(await reply(`/UPDATENODE?NODE=E&KEY=${key}&PNODE=D`)).toBe('OK:E');
    expect(await reply(`/PARENT?NODE=E&KEY=${key}`)).toBe('OK:P');
    expect(await reply(`/ADDINTROUTER?roid=r&Key=${key}`)).toBe('OK:R');
    expect(await reply(`/ADDNODEINTROUTER?NOID=c&ROID=r&KEY=${key}`)).toBe('OK:C');
    expect(await reply(`/GETINTROUTER?ROID=R&KEY=${key}`)).toBe('OK:C');
    expect(await reply(`/DELNODE?NODE=E&KEY=${key}&PNODE=ignored`)).toBe('OK:E');
    expect(await reply(`/CHILD?NODE=P&KEY=${key}`)).toBe('OK:C');
  });
});

// ------------------------------------------------------------------ live effect and the device port

describe('live effect and the device port', () => {
  it('a node added with ADDNODE is a CHILDS recipient on the next push; DELNODE / UPDATENODE take it away', async () => {
    const { key } = account();
    await reply(`/ADDNODE?KEY=${key}&PNODE=HUB`);
    const hub = await dev(key, 'HUB');
    const x = await dev(key, 'X');
    expect(await hub.request(`TCP:PUSH:${key}:CHILDS:none`)).toBe('[FAIL:NO_ID]');
    expect(await reply(`/ADDNODE?KEY=${key}&PNODE=HUB&NODE=X`)).toBe('OK:X');
    expect(await hub.request(`TCP:PUSH:${key}:CHILDS:first`)).toBe('[OK:ALL_1]');
    expect(await x.line()).toBe('PUSH:first');
    expect(await x.request(`TCP:PUSH:${key}:PARENT:up`)).toBe('[OK:DATA_SENT]');
    expect(await hub.line()).toBe('PUSH:up');
    expect(await reply(`/UPDATENODE?KEY=${key}&PNODE=X&NODE=Y`)).toBe('OK:Y');
    expect(await hub.request(`TCP:PUSH:${key}:CHILDS:offline`)).toBe('[FAIL:NO_ID]');
    expect(await x.request(`TCP:PUSH:${key}:PARENT:up`)).toBe('[FAIL:NO_PARENT]');
    expect(await reply(`/DELNODE?KEY=${key}&NODE=Y`)).toBe('OK:Y');
    expect(await hub.request(`TCP:PUSH:${key}:CHILDS:gone`)).toBe('[FAIL:NO_ID]');
    expect(await hub.request(`TCP:PUSH:${key}:RID:X:marker`)).toBe('[OK:DATA_SENT]');
    expect(await x.line()).toBe('PUSH:marker');
  });

  it('the device port serves the same legacy endpoints, byte for byte', async () => {
    const { email, key } = account();
    const viaPort = async (path: string): Promise<string> => {
      const c = await TestClient.open(srv.port);
      opened.push(c);
      c.write(`GET ${path} HTTP/1.1\r\nHost: device-port\r\nConnection: close\r\n\r\n`);
      await c.closedByServer();
      const h = c.buffer.indexOf('\r\n\r\n');
      expect(c.buffer.slice(0, c.buffer.indexOf('\r\n'))).toBe('HTTP/1.1 200 OK');
      return c.buffer.slice(h + 4);
    };
    expect(await viaPort(`/ADDNODE?KEY=${key}&PNODE=%31%30%30`)).toBe('OK:100');
    expect(await viaPort(`/ADDNODE?NODE=101&PNODE=100&KEY=${key}`)).toBe('OK:101');
    expect(await viaPort(`/GETTREE?KEY=${key}`)).toBe(`{100|101}<br>${email}->100<br>100->101<br>`);
    expect(await viaPort(`/GETTREE?KEY=${key}`)).toBe(await tree(key));
    expect(await viaPort(`/DEPTH?KEY=${key}&NODE=101`)).toBe('OK:2');
    expect(await viaPort(`/PARENT?KEY=${key}&NODE=100`)).toBe('FAIL:NO_PARENT');
  });
});
