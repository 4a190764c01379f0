// E-mail through the durable outbox (PROTOCOL.md §4, §10, issue 6), end to end against a real SMTP server started
// by the test (smtp-server on a free port): the mail arrives with the right envelope, headers and body, UTF-8 and
// latin1 device bytes, ':' in the body; a server that is down, silent, slow or rejecting leads to retries and
// the failed state, never to a lost mail or a blocked device; a restart resumes unsent mail exactly once; the
// plan flag, the address check and the hourly rate limit; the sign-up and key-reset mails of the operator API.

import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SMTPServer, type SMTPServerDataStream, type SMTPServerSession } from 'smtp-server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { device } from './helpers/client.ts';
import { closedAfterEach, email, outbox, utf8, waitForValue } from './helpers/outbox.ts';
import { ADMIN_TOKEN, startTestServer, type TestServer } from './helpers/server.ts';
import { sleep } from './helpers/shards.ts';

// ------------------------------------------------------------------ a real SMTP server

interface Mail {
  envelopeFrom: string;
  envelopeTo: string[];
  headers: Map<string, string>;
  subject: string;
  body: string;
}

/** Decodes RFC 2047 encoded words (UTF-8, B or Q), joining adjacent words before decoding the bytes. */
function decodeHeader(value: string): string {
  const joined = value.replace(/\?=\s+=\?/g, '?==?');
  const parts = joined.split(/(=\?[^?]+\?[BbQq]\?[^?]*\?=)/);
  const bytes: Buffer[] = [];
  for (const part of parts) {
    const m = /^=\?([^?]+)\?([BbQq])\?([^?]*)\?=$/.exec(part);
    if (m === null) bytes.push(Buffer.from(part, 'latin1'));
    else if (m[2]!.toUpperCase() === 'B') bytes.push(Buffer.from(m[3]!, 'base64'));
    else bytes.push(qpBytes(m[3]!.replace(/_/g, ' ')));
  }
  return Buffer.concat(bytes).toString('utf8');
}

function qpBytes(s: string): Buffer {
  const out: number[] = [];
  for (let i = 0; i < s.length; i++) {
    if (s[i] === '=' && /^[0-9A-Fa-f]{2}$/.test(s.slice(i + 1, i + 3))) {
      out.push(Number.parseInt(s.slice(i + 1, i + 3), 16));
      i += 2;
    } else out.push(s.charCodeAt(i) & 0xff);
  }
  return Buffer.from(out);
}

function parseMail(raw: Buffer, session: SMTPServerSession): Mail {
  const text = raw.toString('latin1');
  const sep = text.indexOf('\r\n\r\n');
  const head = text.slice(0, sep).replace(/\r\n(?=[ \t])/g, '');
  const headers = new Map<string, string>();
  for (const line of head.split('\r\n')) {
    const i = line.indexOf(':');
    const name = line.slice(0, i).toLowerCase();
    if (!headers.has(name)) headers.set(name, line.slice(i + 1).trim());
  }
  let body = text.slice(sep + 4);
  const cte = (headers.get('content-transfer-encoding') ?? '7bit').toLowerCase();
  let bytes: Buffer;
  if (cte === 'quoted-printable') bytes = qpBytes(body.replace(/=\r\n/g, ''));
  else if (cte === 'base64') bytes = Buffer.from(body.replace(/\s+/g, ''), 'base64');
  else bytes = Buffer.from(body, 'latin1');
  body = bytes.toString('utf8');
  if (body.endsWith('\r\n')) body = body.slice(0, -2);
  const from = session.envelope.mailFrom;
  return {
    envelopeFrom: from === false ? '' : from.address,
    envelopeTo: session.envelope.rcptTo.map((a) => a.address),
    headers,
    subject: decodeHeader(headers.get('subject') ?? ''),
    body,
  };
}

/**
 * Recipients starting with `reject` are refused with 550 at RCPT TO; for recipients starting with `slow`, the
 * answer to the first DATA comes `slowMs` later (past the client's timeout). Every DATA is counted; only the
 * mails the server acknowledged with 250 are in `mails`.
 */
class FakeSmtp {
  readonly mails: Mail[] = [];
  readonly dataCount = new Map<string, number>();
  port = 0;
  private readonly server: SMTPServer;
  private readonly slowMs: number;

  constructor(slowMs: number) {
    this.slowMs = slowMs;
    this.server = new SMTPServer({
      authOptional: true,
      disabledCommands: ['STARTTLS'],
      logger: false,
      closeTimeout: 100,
      onRcptTo: (address, _session, cb) => {
        if (address.address.startsWith('reject')) {
          const err = new Error('mailbox unavailable') as Error & { responseCode: number };
          err.responseCode = 550;
          cb(err);
          return;
        }
        cb();
      },
      onData: (stream: SMTPServerDataStream, session: SMTPServerSession, cb: (err?: Error | null) => void) => {
        const chunks: Buffer[] = [];
        stream.on('data', (b: Buffer) => chunks.push(b));
        stream.on('end', () => {
          const to = session.envelope.rcptTo[0]?.address ?? '';
          const n = (this.dataCount.get(to) ?? 0) + 1;
          this.dataCount.set(to, n);
          if (to.startsWith('slow') && n === 1) {
            // The client gives up before this answer; the mail is not acknowledged.
            setTimeout(() => {
              try {
                cb(new Error('too late'));
              } catch {}
            }, this.slowMs);
            return;
          }
          this.mails.push(parseMail(Buffer.concat(chunks), session));
          cb();
        });
      },
    });
  }

  async start(): Promise<this> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', () => resolve());
    });
    this.port = (this.server.server.address() as { port: number }).port;
    return this;
  }

  to(address: string): Mail[] {
    return this.mails.filter((m) => m.envelopeTo.includes(address));
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

/**
 * A TCP port that is either closed (connections refused) or a black hole (accepts and never says a word).
 * It keeps its port number across modes.
 */
class Endpoint {
  port = 0;
  readonly sockets = new Set<Socket>();
  private server: Server | null = null;

  async blackhole(): Promise<void> {
    if (this.server) return;
    const server = createServer((s) => {
      this.sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => this.sockets.delete(s));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => resolve());
    });
    this.port = (server.address() as { port: number }).port;
    this.server = server;
  }

  async closed(): Promise<void> {
    const server = this.server;
    this.server = null;
    for (const s of this.sockets) s.destroy();
    if (server) await new Promise<void>((r) => server.close(() => r()));
  }
}

/** A port nothing listens on (connections are refused). */
async function closedPort(): Promise<number> {
  const e = new Endpoint();
  await e.blackhole();
  await e.closed();
  return e.port;
}

// ------------------------------------------------------------------ helpers

async function legacy(srv: TestServer, path: string): Promise<string> {
  const r = await fetch(`http://127.0.0.1:${srv.httpPort}${path}`);
  expect(r.status).toBe(200);
  return r.text();
}

const { dev } = closedAfterEach();

const FROM = 'Relay Test <relay@test.example>';
const SLOW_MS = 4000;

let smtp: FakeSmtp;
beforeAll(async () => {
  smtp = await new FakeSmtp(SLOW_MS).start();
});
afterAll(async () => {
  await smtp?.close();
});

// ------------------------------------------------------------------ a working SMTP server

describe('with a working SMTP server', () => {
  let srv: TestServer;
  beforeAll(async () => {
    srv = await startTestServer({
      EMAIL: {
        mail_smtp_host: '127.0.0.1',
        mail_smtp_port: smtp.port,
        mail_smtp_auth: false,
        RETRY_BASE_S: 0.05,
        TIMEOUT_S: 2,
        MAX_TRIES: 3,
        FROM,
        RATE_PER_HOUR: 4,
      },
    });
  });
  afterAll(async () => {
    await srv?.stop();
  });

  it('TCP:EMAIL → [OK:MAIL_SENT]; the mail arrives with From, To, Subject and the body, ":" included', async () => {
    const owner = email('owner');
    const key = srv.newKey(owner);
    const to = email('plain');
    const c = await dev(srv, key, 'mailer');
    const body = 'temp: 21.5 C; at 12:30:05; see http://x.example:8080/a?b=c:d';
    expect(await c.request(`TCP:EMAIL:${key}:${to}:Sensor report:${body}`)).toBe('[OK:MAIL_SENT]');
    const [mail] = await waitForValue(() => smtp.to(to).length === 1 && smtp.to(to), `the mail to ${to}`);
    expect(mail!.envelopeFrom).toBe('relay@test.example');
    expect(mail!.envelopeTo).toEqual([to]);
    expect(mail!.headers.get('from')).toBe(FROM);
    expect(mail!.headers.get('to')).toBe(to);
    expect(mail!.subject).toBe('Sensor report');
    expect(mail!.body).toBe(body);
    const list = await waitForValue(async () => {
      const l = await outbox(srv, owner);
      return l[0]?.state === 'sent' && l;
    }, 'the outbox to show the mail sent');
    expect(
      list.map(({ kind, to, subject, state, attempts, lastError }) => ({
        kind,
        to,
        subject,
        state,
        attempts,
        lastError,
      })),
    ).toEqual([{ kind: 'mail', to, subject: 'Sensor report', state: 'sent', attempts: 1, lastError: null }]);
  });

  it('UTF-8 bytes from the device arrive as the same text (subject and body)', async () => {
    const key = srv.newKey(email('utf8'));
    const to = email('utf8-to');
    const c = await dev(srv, key, 'utf8-dev');
    const subject = 'Grüße aus Köln ✓';
    const body = 'Température: 21,5 °C — ok ✓ 日本語: fin';
    c.write(`${utf8(`TCP:EMAIL:${key}:${to}:${subject}:${body}`)}\r\n`);
    expect(await c.line()).toBe('[OK:MAIL_SENT]');
    const [mail] = await waitForValue(() => smtp.to(to).length === 1 && smtp.to(to), `the mail to ${to}`);
    expect(mail!.subject).toBe(subject);
    expect(mail!.body).toBe(body);
    expect(mail!.headers.get('content-type')?.toLowerCase()).toContain('charset=utf-8');
  });

  it('bytes that are not valid UTF-8 are read as latin1', async () => {
    const key = srv.newKey(email('latin1'));
    const to = email('latin1-to');
    const c = await dev(srv, key, 'latin1-dev');
    // 0xE9 = é, 0xFC = ü, 0xDF = ß, 0xB0 = ° in latin1; alone they are not valid UTF-8.
    expect(await c.request(`TCP:EMAIL:${key}:${to}:Gr\xfc\xdfe:caf\xe9 21\xb0C`)).toBe('[OK:MAIL_SENT]');
    const [mail] = await waitForValue(() => smtp.to(to).length === 1 && smtp.to(to), `the mail to ${to}`);
    expect(mail!.subject).toBe('Grüße');
    expect(mail!.body).toBe('café 21°C');
  });

  it('the outbox API shows a UTF-8 subject as the text that was mailed', async () => {
    const owner = email('api-subject');
    const key = srv.newKey(owner);
    const to = email('api-subject-to');
    const c = await dev(srv, key, 'api-subj');
    c.write(`${utf8(`TCP:EMAIL:${key}:${to}:Grüße ✓:x`)}\r\n`);
    expect(await c.line()).toBe('[OK:MAIL_SENT]');
    await waitForValue(() => smtp.to(to).length === 1, `the mail to ${to}`);
    expect(smtp.to(to)[0]!.subject).toBe('Grüße ✓');
    const list = await outbox(srv, owner);
    expect(list.map((m) => m.subject)).toEqual(['Grüße ✓']);
  });

  it('a recipient refused with 550 → failed at once (permanent), the SMTP answer kept', async () => {
    const owner = email('rejecting');
    const key = srv.newKey(owner);
    const to = `reject-${process.pid}@test.example`;
    const c = await dev(srv, key, 'rej-dev');
    expect(await c.request(`TCP:EMAIL:${key}:${to}:Never:delivered`)).toBe('[OK:MAIL_SENT]');
    const [m] = await waitForValue(async () => {
      const l = await outbox(srv, owner);
      return l[0]?.state === 'failed' && l;
    }, 'the mail to fail');
    expect({ state: m!.state, attempts: m!.attempts }).toEqual({ state: 'failed', attempts: 1 });
    expect(m!.lastError).toMatch(/^550\b.*mailbox unavailable/);
    expect(smtp.to(to)).toEqual([]);
  });

  it('a server that answers DATA later than TIMEOUT_S → the attempt is retried and the mail sent once', async () => {
    const owner = email('slow-owner');
    const key = srv.newKey(owner);
    const to = `slow-${process.pid}@test.example`;
    const c = await dev(srv, key, 'slow-dev');
    expect(await c.request(`TCP:EMAIL:${key}:${to}:Slow:retried`)).toBe('[OK:MAIL_SENT]');
    const [m] = await waitForValue(
      async () => {
        const l = await outbox(srv, owner);
        return l[0]?.state === 'sent' && l;
      },
      'the slow mail to be sent',
      20000,
    );
    expect({ state: m!.state, attempts: m!.attempts, lastError: m!.lastError }).toEqual({
      state: 'sent',
      attempts: 2,
      lastError: null,
    });
    expect(smtp.dataCount.get(to)).toBe(2);
    expect(smtp.to(to).map((x) => x.body)).toEqual(['retried']);
  });

  it('bad addresses → [FAIL:INVALID_ID]; missing fields → [FAIL:INVALID_FORMAT]; nothing is queued', async () => {
    const owner = email('bad');
    const key = srv.newKey(owner);
    const c = await dev(srv, key, 'bad-dev');
    for (const to of ['not-an-address', 'a@', '@b.example', 'a b@c.example', '']) {
      expect(await c.request(`TCP:EMAIL:${key}:${to}:s:b`), to).toBe('[FAIL:INVALID_ID]');
    }
    expect(await c.request(`TCP:EMAIL:${key}:x@test.example:subject only`)).toBe('[FAIL:INVALID_FORMAT]');
    expect(await c.request(`TCP:EMAIL:${key}:x@test.example`)).toBe('[FAIL:INVALID_FORMAT]');
    expect(await c.request(`TCP:EMAIL:${key}`)).toBe('[FAIL:INVALID_FORMAT]');
    expect(await outbox(srv, owner)).toEqual([]);
    // The connection is still usable.
    expect(await c.request(`TCP:GID:${key}`)).toBe('[OK:BAD-DEV]');
  });

  it("the plan's 6MAILPUSH: level 1 → [FAIL:MAIL_DISABLED], level 2 → [OK:MAIL_SENT]", async () => {
    const k1 = srv.newKey(email('level1'), 1);
    const k2 = srv.newKey(email('level2'), 2);
    const to1 = email('plan1-to');
    const to2 = email('plan2-to');
    const c1 = await dev(srv, k1, 'plan-1');
    const c2 = await dev(srv, k2, 'plan-2');
    expect(await c1.request(`TCP:EMAIL:${k1}:${to1}:s:b`)).toBe('[FAIL:MAIL_DISABLED]');
    expect(await c2.request(`TCP:EMAIL:${k2}:${to2}:s:b`)).toBe('[OK:MAIL_SENT]');
    await waitForValue(() => smtp.to(to2).length === 1, `the mail to ${to2}`);
    expect(smtp.to(to1)).toEqual([]);
  });

  it('EMAIL.RATE_PER_HOUR per account: the 5th mail in the hour → [FAIL:RATE_LIMIT]; other accounts unaffected', async () => {
    const owner = email('rate');
    const key = srv.newKey(owner);
    const c = await dev(srv, key, 'rate-dev');
    const to = email('rate-to');
    for (let i = 1; i <= 4; i++)
      expect(await c.request(`TCP:EMAIL:${key}:${to}:n${i}:b`), `mail ${i}`).toBe('[OK:MAIL_SENT]');
    expect(await c.request(`TCP:EMAIL:${key}:${to}:n5:b`)).toBe('[FAIL:RATE_LIMIT]');
    expect(await c.request(`TCP:EMAIL:${key}:${to}:n6:b`)).toBe('[FAIL:RATE_LIMIT]');
    // Another device of the same account shares the budget.
    const c2 = await dev(srv, key, 'rate-dev-2');
    expect(await c2.request(`TCP:EMAIL:${key}:${to}:n7:b`)).toBe('[FAIL:RATE_LIMIT]');
    const other = srv.newKey(email('rate-other'));
    const o = await dev(srv, other, 'rate-other');
    expect(await o.request(`TCP:EMAIL:${other}:${to}:other:b`)).toBe('[OK:MAIL_SENT]');
    await waitForValue(() => smtp.to(to).length === 5, 'five mails');
    expect(
      smtp
        .to(to)
        .map((m) => m.subject)
        .sort(),
    ).toEqual(['n1', 'n2', 'n3', 'n4', 'other']);
    expect((await outbox(srv, owner)).length).toBe(4);
  });

  it('sign-up: /USER mails an activation link; /USERAUTH answers OK:<email>:<KEY>: once; the KEY registers a device', async () => {
    const user = email('signup');
    expect(await legacy(srv, `/USER?username=${encodeURIComponent(user)}&password=s3cret`)).toBe(
      'OK:ACTIVATION_MAIL_SENT',
    );
    const [mail] = await waitForValue(() => smtp.to(user).length === 1 && smtp.to(user), 'the activation mail');
    expect(mail!.headers.get('from')).toBe(FROM);
    expect(mail!.headers.get('to')).toBe(user);
    expect(mail!.subject).toBe('Activate your P2Pcluster account');
    const token = /\/USERAUTH\?token=([0-9A-Za-z_-]+)/.exec(mail!.body)?.[1];
    expect(token).toBeDefined();
    const activated = await legacy(srv, `/USERAUTH?token=${token}`);
    const m = /^OK:([^:]+):([0-9A-F]{32}):$/.exec(activated);
    expect(m?.[1]).toBe(user);
    const key = m![2]!;
    const c = await dev(srv, key, 'signed-up');
    expect(await c.request(`TCP:GID:${key}`)).toBe('[OK:SIGNED-UP]');
    // Single use.
    expect(await legacy(srv, `/USERAUTH?token=${token}`)).toBe('FAIL:INVALID_TOKEN');
    // Self-service sign-ups get USER.SIGNUP_LEVEL (1), whose 6MAILPUSH is 0.
    expect(await c.request(`TCP:EMAIL:${key}:${email('x')}:s:b`)).toBe('[FAIL:MAIL_DISABLED]');
    // The mail is exactly one.
    await sleep(200);
    expect(smtp.to(user).length).toBe(1);
  });

  it('the activation link points at the port the operator HTTP API listens on', async () => {
    const user = email('link');
    expect(await legacy(srv, `/USER?username=${encodeURIComponent(user)}&password=pw`)).toBe('OK:ACTIVATION_MAIL_SENT');
    const [mail] = await waitForValue(() => smtp.to(user).length === 1 && smtp.to(user), 'the activation mail');
    const link = /http:\/\/\S+\/USERAUTH\?token=\S+/.exec(mail!.body)?.[0];
    const token = /token=([0-9A-Za-z_-]+)/.exec(link ?? '')?.[1];
    // HTTP.PORT is 0 here (a free port was picked); PServer.DNS is empty.
    expect(link).toBe(`http://localhost:${srv.httpPort}/USERAUTH?token=${token}`);
  });

  it('key reset through POST /api/v1/accounts/{a}/key mails the new KEY', async () => {
    const owner = email('reset');
    const oldKey = srv.newKey(owner);
    const r = await fetch(`http://127.0.0.1:${srv.httpPort}/api/v1/accounts/${encodeURIComponent(owner)}/key`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    });
    expect(r.status).toBe(200);
    const { email: e, key } = (await r.json()) as { email: string; key: string };
    expect(e).toBe(owner);
    expect(key).toMatch(/^[0-9A-F]{32}$/);
    expect(key).not.toBe(oldKey);
    const [mail] = await waitForValue(() => smtp.to(owner).length === 1 && smtp.to(owner), 'the key-reset mail');
    expect(mail!.headers.get('from')).toBe(FROM);
    expect(mail!.subject).toBe('Your P2Pcluster KEY was reset');
    expect(mail!.body).toContain(`Your new KEY: ${key}`);
    expect(mail!.body).not.toContain(oldKey);
    // The new KEY works, the old one does not.
    const c = await dev(srv, key, 'after-reset');
    expect(await c.request(`TCP:GID:${oldKey}`)).toBe('[FAIL:INVALID_KEY]');
  });
});

// ------------------------------------------------------------------ SMTP down, silent

describe('with an SMTP server that is down or silent', () => {
  let srv: TestServer;
  const endpoint = new Endpoint();
  beforeAll(async () => {
    endpoint.port = await closedPort();
    srv = await startTestServer({
      EMAIL: {
        mail_smtp_host: '127.0.0.1',
        mail_smtp_port: endpoint.port,
        mail_smtp_auth: false,
        RETRY_BASE_S: 0.5,
        TIMEOUT_S: 20,
        MAX_TRIES: 4,
      },
    });
  });
  afterAll(async () => {
    await endpoint.closed();
    await srv?.stop();
  });

  it('a silent server never blocks a device: replies at once, pushes keep flowing, mail stays queued', async () => {
    await endpoint.blackhole();
    const owner = email('silent');
    const key = srv.newKey(owner);
    const a = await dev(srv, key, 'silent-a');
    const b = await dev(srv, key, 'silent-b');
    expect(await a.request(`TCP:EMAIL:${key}:${email('to')}:first:b`)).toBe('[OK:MAIL_SENT]');
    // An attempt is under way and hangs (the server never greets).
    await waitForValue(() => endpoint.sockets.size >= 1, 'a connection to the silent SMTP server');
    for (let i = 0; i < 3; i++) {
      expect(await a.request(`TCP:EMAIL:${key}:${email('to')}:more${i}:b`)).toBe('[OK:MAIL_SENT]');
    }
    for (let i = 0; i < 5; i++) {
      expect(await a.request(`TCP:PUSH:${key}:RID:silent-b:v${i}`)).toBe('[OK:DATA_SENT]');
    }
    expect(await b.lines(5)).toEqual(['PUSH:v0', 'PUSH:v1', 'PUSH:v2', 'PUSH:v3', 'PUSH:v4']);
    expect(await b.request(`TCP:PUSH:${key}:RID:silent-a:back`)).toBe('[OK:DATA_SENT]');
    expect(await a.line()).toBe('PUSH:back');
    // All of this happened while the SMTP server held the attempts.
    expect(endpoint.sockets.size).toBeGreaterThanOrEqual(1);
    const list = await outbox(srv, owner);
    expect(list.map((m) => [m.subject, m.state, m.attempts])).toEqual([
      ['more2', 'queued', 0],
      ['more1', 'queued', 0],
      ['more0', 'queued', 0],
      ['first', 'queued', 0],
    ]);
    await endpoint.closed();
  });

  it('a server that is down → retries with the error kept, then failed after MAX_TRIES; nothing lost', async () => {
    await endpoint.closed();
    const owner = email('down');
    const key = srv.newKey(owner);
    const c = await dev(srv, key, 'down-dev');
    expect(await c.request(`TCP:EMAIL:${key}:${email('to')}:down:b`)).toBe('[OK:MAIL_SENT]');
    const seen: { state: string; attempts: number; lastError: string | null }[] = [];
    const final = await waitForValue(
      async () => {
        const [m] = await outbox(srv, owner);
        if (m === undefined) return false;
        const last = seen.at(-1);
        if (last === undefined || last.state !== m.state || last.attempts !== m.attempts) {
          seen.push({ state: m.state, attempts: m.attempts, lastError: m.lastError });
        }
        return m.state !== 'queued' && m;
      },
      'the mail to leave the queued state',
      20000,
    );
    expect({ state: final.state, attempts: final.attempts }).toEqual({ state: 'failed', attempts: 4 });
    expect(final.lastError).toContain('ECONNREFUSED');
    // Attempts grew one by one, each failure recorded while still queued.
    const queued = seen.filter((s) => s.state === 'queued' && s.attempts > 0);
    expect(queued.map((s) => s.attempts)).toEqual([1, 2, 3]);
    for (const s of queued) expect(s.lastError).toContain('ECONNREFUSED');
    // The device was never blocked.
    expect(await c.request(`TCP:GID:${key}`)).toBe('[OK:DOWN-DEV]');
  });
});

// ------------------------------------------------------------------ restart

describe('a restart resumes unsent mail', () => {
  const dirs: string[] = [];
  /** A store folder that survives the first server's stop. */
  const dataDir = (): string => {
    const d = mkdtempSync(join(tmpdir(), 'p2pc-mail-'));
    dirs.push(d);
    return d;
  };
  afterAll(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it('queued while the SMTP server is down, stopped, restarted with a working one → each mail arrives once', async () => {
    const down = await closedPort();
    const email0 = { mail_smtp_host: '127.0.0.1', mail_smtp_auth: false, RETRY_BASE_S: 0.05, MAX_TRIES: 50 };
    const first = await startTestServer({ EMAIL: { ...email0, mail_smtp_port: down } }, { keepData: dataDir() });
    const owner = email('restart');
    const key = first.newKey(owner);
    const tos = [email('r1'), email('r2'), email('r3')];
    try {
      const c = await device(first.port, key, 'restart-dev');
      for (const [i, to] of tos.entries()) {
        expect(await c.request(`TCP:EMAIL:${key}:${to}:resume ${i}:body:${i}`)).toBe('[OK:MAIL_SENT]');
      }
      c.close();
      await waitForValue(async () => {
        const l = await outbox(first, owner);
        return l.length === 3 && l.every((m) => m.state === 'queued' && m.attempts >= 2 && m.lastError !== null);
      }, 'every mail to have failed twice');
    } finally {
      await first.stop();
    }
    expect(tos.map((to) => smtp.to(to).length)).toEqual([0, 0, 0]);

    const second = await startTestServer(
      { EMAIL: { ...email0, mail_smtp_port: smtp.port, TIMEOUT_S: 5 } },
      { keepData: first.dataDir },
    );
    try {
      await waitForValue(
        async () => {
          const l = await outbox(second, owner);
          return l.length === 3 && l.every((m) => m.state === 'sent');
        },
        'every mail to be sent after the restart',
        15000,
      );
      await sleep(300);
      expect(tos.map((to) => smtp.to(to).length)).toEqual([1, 1, 1]);
      expect(tos.map((to) => [smtp.to(to)[0]!.subject, smtp.to(to)[0]!.body])).toEqual([
        ['resume 0', 'body:0'],
        ['resume 1', 'body:1'],
        ['resume 2', 'body:2'],
      ]);
      // Without EMAIL.FROM, the sender is noreply@<PServer.DNS or localhost>.
      expect(smtp.to(tos[0]!)[0]!.headers.get('from')).toBe('P2Pcluster <noreply@localhost>');
    } finally {
      await second.stop();
    }
  });

  it('a stop while an attempt hangs does not hold the mail back after the restart', async () => {
    const silent = new Endpoint();
    await silent.blackhole();
    const email0 = { mail_smtp_host: '127.0.0.1', mail_smtp_auth: false, RETRY_BASE_S: 0.05, MAX_TRIES: 50 };
    const first = await startTestServer(
      { EMAIL: { ...email0, mail_smtp_port: silent.port, TIMEOUT_S: 30 } },
      { keepData: dataDir() },
    );
    const owner = email('hung');
    const key = first.newKey(owner);
    const to = email('hung-to');
    try {
      const c = await device(first.port, key, 'hung-dev');
      expect(await c.request(`TCP:EMAIL:${key}:${to}:hung:b`)).toBe('[OK:MAIL_SENT]');
      c.close();
      await waitForValue(() => silent.sockets.size >= 1, 'the attempt to hang on the silent server');
    } finally {
      await first.stop();
      await silent.closed();
    }
    const second = await startTestServer(
      { EMAIL: { ...email0, mail_smtp_port: smtp.port, TIMEOUT_S: 5 } },
      { keepData: first.dataDir },
    );
    try {
      const acct = second.embedded!.accountByEmail(owner)!;
      await waitForValue(() => smtp.to(to).length === 1, 'the mail after the restart', 15000).catch((err: Error) => {
        const item = second.embedded!.listOutbox(acct.id, 10)[0];
        const due = item === undefined ? 'none' : `${Math.round((item.nextAt - Date.now()) / 1000)} s from now`;
        throw new Error(`${err.message}; stored: ${JSON.stringify(item)}; due ${due}`);
      });
      // The SMTP server has the mail a moment before the sender records it as sent.
      await waitForValue(
        async () => (await outbox(second, owner))[0]?.state === 'sent',
        'the outbox to record it as sent',
      );
      const [m] = await outbox(second, owner);
      expect(m?.state).toBe('sent');
    } finally {
      await second.stop();
    }
  });
});

// ------------------------------------------------------------------ no SMTP host

describe('without an SMTP host', () => {
  let srv: TestServer;
  beforeAll(async () => {
    srv = await startTestServer();
  });
  afterAll(async () => {
    await srv?.stop();
  });

  it('TCP:EMAIL → [FAIL:MAIL_DISABLED], /USER → FAIL:MAIL_DISABLED; nothing is queued', async () => {
    const owner = email('nohost');
    const key = srv.newKey(owner);
    const c = await dev(srv, key, 'nohost');
    expect(await c.request(`TCP:EMAIL:${key}:${email('to')}:s:b`)).toBe('[FAIL:MAIL_DISABLED]');
    expect(await legacy(srv, `/USER?username=${encodeURIComponent(email('su'))}&password=pw`)).toBe(
      'FAIL:MAIL_DISABLED',
    );
    expect(await outbox(srv, owner)).toEqual([]);
  });
});
