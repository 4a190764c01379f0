// SMS through the durable outbox (PROTOCOL.md §4, §10, issue 6), end to end against a local HTTP gateway that records
// every request: the default JSON body template, a form template, a URL template with {number}/{text} URL-encoded,
// custom headers and the method; a gateway answering 500 (or 429) is retried until it recovers, 400 fails at once;
// SMS.URL empty or the plan's 7SMSPUSH = 0 → [FAIL:SMS_DISABLED]; a bad number → [FAIL:INVALID_ID].

import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closedAfterEach, email, type OutboxEntry, outbox, utf8, waitForValue } from './helpers/outbox.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';
import { sleep } from './helpers/shards.ts';

// ------------------------------------------------------------------ the fake gateway

interface Request {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: string;
}

/** Records every request; `status` decides the answer (200 unless told otherwise). */
class Gateway {
  readonly requests: Request[] = [];
  status: (r: Request) => number = () => 200;
  port = 0;
  private readonly server: Server;

  constructor() {
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (b: Buffer) => chunks.push(b));
      req.on('end', () => {
        const r: Request = {
          method: req.method ?? '',
          url: req.url ?? '',
          headers: req.headers,
          body: Buffer.concat(chunks).toString('utf8'),
        };
        this.requests.push(r);
        const status = this.status(r);
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(status < 300 ? '{"ok":true}' : '{"ok":false}');
      });
    });
  }

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', () => resolve()));
    this.port = (this.server.address() as { port: number }).port;
    return this;
  }

  /** The requests that carry `number` (in the URL or the body, raw or URL-encoded). */
  for(number: string): Request[] {
    const enc = encodeURIComponent(number);
    return this.requests.filter((r) => r.url.includes(enc) || r.body.includes(number) || r.body.includes(enc));
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

// ------------------------------------------------------------------ helpers

/** A distinct valid phone number per call (E.164, 12 digits). */
let numbers = 0;
const phone = (): string => `+4915${String(process.pid % 10000).padStart(4, '0')}${String(++numbers).padStart(4, '0')}`;

const pick = ({ kind, to, subject, state, attempts, lastError }: OutboxEntry): Partial<OutboxEntry> => ({
  kind,
  to,
  subject,
  state,
  attempts,
  lastError,
});

/** Waits until the only message of `account` leaves the queued state (or reaches `state`). */
async function settled(srv: TestServer, account: string, state?: OutboxEntry['state']): Promise<OutboxEntry> {
  return waitForValue(
    async () => {
      const [m] = await outbox(srv, account);
      return m !== undefined && (state === undefined ? m.state !== 'queued' : m.state === state) && m;
    },
    `the SMS of ${account} to settle`,
    15000,
  );
}

const { dev } = closedAfterEach();

const EMAIL = { RETRY_BASE_S: 0.05, TIMEOUT_S: 3, MAX_TRIES: 10 };

let gw: Gateway;
beforeAll(async () => {
  gw = await new Gateway().start();
});
afterAll(async () => {
  await gw?.close();
});

// ------------------------------------------------------------------ default JSON body, POST

describe('default JSON body template, POST, custom headers', () => {
  let srv: TestServer;
  beforeAll(async () => {
    srv = await startTestServer({
      EMAIL,
      SMS: {
        URL: `http://127.0.0.1:${gw.port}/json/send`,
        HEADERS: 'Authorization: Bearer tok-123; X-Api-Key: k:with:colons',
      },
    });
  });
  afterAll(async () => {
    await srv?.stop();
  });

  it('TCP:SMS → [OK:SMS_SENT]; the gateway gets the JSON body with the number and the text', async () => {
    const owner = email('json');
    const key = srv.newKey(owner);
    const number = phone();
    const c = await dev(srv, key, 'sms-json');
    const text = 'Alarm: "door" open \\ at 12:30 — Température 21°C ✓';
    c.write(`${utf8(`TCP:SMS:${key}:${number}:${text}`)}\r\n`);
    expect(await c.line()).toBe('[OK:SMS_SENT]');
    const m = await settled(srv, owner);
    expect(pick(m)).toEqual({ kind: 'sms', to: number, subject: '', state: 'sent', attempts: 1, lastError: null });
    const reqs = gw.for(number);
    expect(reqs.length).toBe(1);
    const r = reqs[0]!;
    expect(r.method).toBe('POST');
    expect(r.url).toBe('/json/send');
    expect(r.headers['content-type']).toBe('application/json');
    expect(r.headers.authorization).toBe('Bearer tok-123');
    expect(r.headers['x-api-key']).toBe('k:with:colons');
    expect(JSON.parse(r.body)).toEqual({ to: number, text });
    expect(r.body).toBe(`{"to":"${number}","text":${JSON.stringify(text)}}`);
  });

  it('latin1 bytes (not valid UTF-8) are read as latin1', async () => {
    const owner = email('latin1');
    const key = srv.newKey(owner);
    const number = phone();
    const c = await dev(srv, key, 'sms-latin1');
    expect(await c.request(`TCP:SMS:${key}:${number}:caf\xe9 21\xb0C`)).toBe('[OK:SMS_SENT]');
    await settled(srv, owner, 'sent');
    expect(gw.for(number).map((r) => JSON.parse(r.body))).toEqual([{ to: number, text: 'café 21°C' }]);
  });

  it('gateway 500 → retried with the error kept; sent once it recovers', async () => {
    const owner = email('g500');
    const key = srv.newKey(owner);
    const number = phone();
    let down = true;
    const prev = gw.status;
    gw.status = (r) => (down && r.body.includes(number) ? 500 : prev(r));
    try {
      const c = await dev(srv, key, 'sms-500');
      expect(await c.request(`TCP:SMS:${key}:${number}:retry me`)).toBe('[OK:SMS_SENT]');
      const queued = await waitForValue(async () => {
        const [m] = await outbox(srv, owner);
        return gw.for(number).length >= 2 && m?.state === 'queued' && m.attempts >= 2 && m;
      }, 'two failed attempts');
      expect(queued.lastError).toBe('HTTP 500');
      down = false;
      const m = await settled(srv, owner);
      expect(m.state).toBe('sent');
      expect(m.lastError).toBeNull();
      // Every attempt reached the gateway, each with the same request.
      const reqs = gw.for(number);
      expect(m.attempts).toBe(reqs.length);
      expect(reqs.length).toBeGreaterThanOrEqual(3);
      expect(new Set(reqs.map((r) => r.body))).toEqual(new Set([`{"to":"${number}","text":"retry me"}`]));
      // The device was never blocked.
      expect(await c.request(`TCP:GID:${key}`)).toBe('[OK:SMS-500]');
    } finally {
      gw.status = prev;
    }
  });

  it('gateway 429 → retried (not permanent)', async () => {
    const owner = email('g429');
    const key = srv.newKey(owner);
    const number = phone();
    const prev = gw.status;
    gw.status = (r) => (r.body.includes(number) && gw.for(number).length === 1 ? 429 : prev(r));
    try {
      const c = await dev(srv, key, 'sms-429');
      expect(await c.request(`TCP:SMS:${key}:${number}:slow down`)).toBe('[OK:SMS_SENT]');
      const m = await settled(srv, owner);
      expect(pick(m)).toEqual({ kind: 'sms', to: number, subject: '', state: 'sent', attempts: 2, lastError: null });
      expect(gw.for(number).length).toBe(2);
    } finally {
      gw.status = prev;
    }
  });

  it('gateway 400 → failed at once (permanent)', async () => {
    const owner = email('g400');
    const key = srv.newKey(owner);
    const number = phone();
    const prev = gw.status;
    gw.status = (r) => (r.body.includes(number) ? 400 : prev(r));
    try {
      const c = await dev(srv, key, 'sms-400');
      expect(await c.request(`TCP:SMS:${key}:${number}:bad request`)).toBe('[OK:SMS_SENT]');
      const m = await settled(srv, owner);
      expect(pick(m)).toEqual({
        kind: 'sms',
        to: number,
        subject: '',
        state: 'failed',
        attempts: 1,
        lastError: 'HTTP 400',
      });
      await sleep(300);
      expect(gw.for(number).length).toBe(1);
    } finally {
      gw.status = prev;
    }
  });

  it('bad numbers → [FAIL:INVALID_ID]; missing text → [FAIL:INVALID_FORMAT]; nothing is queued', async () => {
    const owner = email('badnum');
    const key = srv.newKey(owner);
    const c = await dev(srv, key, 'sms-bad');
    for (const n of ['abc', '12345', '+1234567890123456', '+49 151 1234567', '', '++4915112345']) {
      expect(await c.request(`TCP:SMS:${key}:${n}:hi`), n).toBe('[FAIL:INVALID_ID]');
    }
    expect(await c.request(`TCP:SMS:${key}:+4915112345678`)).toBe('[FAIL:INVALID_FORMAT]');
    expect(await c.request(`TCP:SMS:${key}`)).toBe('[FAIL:INVALID_FORMAT]');
    expect(await outbox(srv, owner)).toEqual([]);
    expect(await c.request(`TCP:GID:${key}`)).toBe('[OK:SMS-BAD]');
  });

  it("the plan's 7SMSPUSH: levels 1 and 2 → [FAIL:SMS_DISABLED], level 3 → [OK:SMS_SENT]", async () => {
    const results: string[] = [];
    const number = phone();
    for (const level of [1, 2, 3]) {
      const key = srv.newKey(email(`level${level}`), level);
      const c = await dev(srv, key, `sms-level-${level}`);
      results.push(await c.request(`TCP:SMS:${key}:${number}:level ${level}`));
    }
    expect(results).toEqual(['[FAIL:SMS_DISABLED]', '[FAIL:SMS_DISABLED]', '[OK:SMS_SENT]']);
    await waitForValue(() => gw.for(number).length === 1, 'the level-3 SMS');
    await sleep(200);
    expect(gw.for(number).map((r) => JSON.parse(r.body).text)).toEqual(['level 3']);
  });
});

// ------------------------------------------------------------------ form body, URL template, PUT

describe('form body template, URL template, PUT', () => {
  let srv: TestServer;
  beforeAll(async () => {
    srv = await startTestServer({
      EMAIL,
      SMS: {
        URL: `http://127.0.0.1:${gw.port}/form/{number}/send?text={text}&x=1`,
        METHOD: 'put',
        HEADERS: 'X-Custom: yes',
        BODY: 'phone={number}&msg={text}&sender=P2P',
      },
    });
  });
  afterAll(async () => {
    await srv?.stop();
  });

  it('the URL and the form body carry the number and the text URL-encoded', async () => {
    const owner = email('form');
    const key = srv.newKey(owner);
    const number = phone();
    const c = await dev(srv, key, 'sms-form');
    const text = 'a&b=c d/e?f#g:h+i %20 ✓ ü';
    c.write(`${utf8(`TCP:SMS:${key}:${number}:${text}`)}\r\n`);
    expect(await c.line()).toBe('[OK:SMS_SENT]');
    const m = await settled(srv, owner);
    expect(pick(m)).toEqual({ kind: 'sms', to: number, subject: '', state: 'sent', attempts: 1, lastError: null });
    const [r, ...more] = gw.for(number);
    expect(more).toEqual([]);
    expect(r!.method).toBe('PUT');
    expect(r!.url).toBe(`/form/${encodeURIComponent(number)}/send?text=${encodeURIComponent(text)}&x=1`);
    expect(r!.headers['content-type']).toBe('application/x-www-form-urlencoded');
    expect(r!.headers['x-custom']).toBe('yes');
    expect(r!.body).toBe(`phone=${encodeURIComponent(number)}&msg=${encodeURIComponent(text)}&sender=P2P`);
    // Decoded the way a gateway would:
    const form = new URLSearchParams(r!.body);
    expect([form.get('phone'), form.get('msg'), form.get('sender')]).toEqual([number, text, 'P2P']);
    const url = new URL(r!.url, 'http://gw');
    expect([url.searchParams.get('text'), url.searchParams.get('x')]).toEqual([text, '1']);
  });
});

// ------------------------------------------------------------------ GET, URL only

describe('GET with the text in the URL only', () => {
  let srv: TestServer;
  beforeAll(async () => {
    srv = await startTestServer({
      EMAIL: { ...EMAIL, RATE_PER_HOUR: 2 },
      SMS: { URL: `http://127.0.0.1:${gw.port}/get?to={number}&msg={text}`, METHOD: 'GET' },
    });
  });
  afterAll(async () => {
    await srv?.stop();
  });

  it('sends no body; the query carries the values', async () => {
    const owner = email('get');
    const key = srv.newKey(owner);
    const number = phone();
    const c = await dev(srv, key, 'sms-get');
    expect(await c.request(`TCP:SMS:${key}:${number}:hello: world & co`)).toBe('[OK:SMS_SENT]');
    await settled(srv, owner, 'sent');
    const [r, ...more] = gw.for(number);
    expect(more).toEqual([]);
    expect(r!.method).toBe('GET');
    expect(r!.url).toBe(`/get?to=${encodeURIComponent(number)}&msg=${encodeURIComponent('hello: world & co')}`);
    expect(r!.body).toBe('');
  });

  it('EMAIL.RATE_PER_HOUR (2 here) counts SMS per account: the 3rd → [FAIL:RATE_LIMIT]', async () => {
    const owner = email('rate');
    const key = srv.newKey(owner);
    const number = phone();
    const c = await dev(srv, key, 'sms-rate');
    const replies: string[] = [];
    for (let i = 1; i <= 3; i++) replies.push(await c.request(`TCP:SMS:${key}:${number}:n${i}`));
    expect(replies).toEqual(['[OK:SMS_SENT]', '[OK:SMS_SENT]', '[FAIL:RATE_LIMIT]']);
    const other = srv.newKey(email('rate-other'));
    const o = await dev(srv, other, 'sms-rate-other');
    expect(await o.request(`TCP:SMS:${other}:${number}:other`)).toBe('[OK:SMS_SENT]');
    await waitForValue(() => gw.for(number).length === 3, 'three SMS');
    await sleep(200);
    const texts = gw.for(number).map((r) => new URL(r.url, 'http://gw').searchParams.get('msg'));
    expect(texts.sort()).toEqual(['n1', 'n2', 'other']);
    expect((await outbox(srv, owner)).length).toBe(2);
  });
});

// ------------------------------------------------------------------ no gateway

describe('without SMS.URL', () => {
  let srv: TestServer;
  beforeAll(async () => {
    srv = await startTestServer();
  });
  afterAll(async () => {
    await srv?.stop();
  });

  it('TCP:SMS → [FAIL:SMS_DISABLED], even for a plan that allows SMS; nothing is queued', async () => {
    const owner = email('nogw');
    const key = srv.newKey(owner, 4);
    const c = await dev(srv, key, 'sms-off');
    expect(await c.request(`TCP:SMS:${key}:${phone()}:hi`)).toBe('[FAIL:SMS_DISABLED]');
    expect(await outbox(srv, owner)).toEqual([]);
  });
});
