// The durable outbox (issue 6): e-mail and SMS are stored before the device hears [OK:MAIL_SENT], then sent
// off the shard threads by a piscina pool, retried with exponential backoff, and marked failed after
// EMAIL.MAX_TRIES. A restart resumes whatever was not sent. Delivery is at least once: a crash between a
// send and its record sends that message again.

import type { Logger } from 'pino';
import { Piscina } from 'piscina';
import type { Config } from '../config/schema.ts';
import type { FailCode } from '../protocol/codes.ts';
import { isValidEmail } from '../store/credentials.ts';
import type { OutboxItem, Store } from '../store/store.ts';
import type { DeliveryResult, DeliveryTask, MailSettings, SmsSettings } from './delivery.ts';

const WORKER = new URL('../../workers/delivery.ts', import.meta.url).href;
/** How long a message handed to the pool stays leased before it is due again (crash safety). */
const LEASE_MS = 10 * 60 * 1000;
const MAX_BACKOFF_MS = 60 * 60 * 1000;

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Device payloads arrive as bytes (latin1 strings). For a mail or SMS text they are read as UTF-8 when they
 * are valid UTF-8 (what current firmware sends), else as latin1 (what old firmware sends).
 */
export function bytesToText(s: string): string {
  if (!/[\u0080-\u00ff]/.test(s)) return s;
  try {
    return utf8.decode(Buffer.from(s, 'latin1'));
  } catch {
    return s;
  }
}

export function isValidPhone(s: string): boolean {
  return /^\+?[0-9]{6,15}$/.test(s);
}

export class Outbox {
  private readonly store: Store;
  private readonly config: Config;
  private readonly log: Logger;
  private pool: Piscina | null = null;
  private timer: NodeJS.Timeout | null = null;
  private readonly inFlight = new Map<number, OutboxItem>();
  private running: Promise<unknown>[] = [];
  private stopped = false;
  /** The pass handing due messages to the pool, while one runs; another was asked for meanwhile. */
  private pumping: Promise<void> | null = null;
  private pumpAgain = false;

  constructor(store: Store, config: Config, log: Logger) {
    this.store = store;
    this.config = config;
    this.log = log;
  }

  get mailEnabled(): boolean {
    return this.config.EMAIL.mail_smtp_host !== '';
  }

  get smsEnabled(): boolean {
    return this.config.SMS.URL !== '';
  }

  start(): void {
    this.timer = setInterval(() => this.pump(), 250);
    this.timer.unref();
    this.pump();
  }

  /**
   * A device's message: validated, rate-limited and stored; '' on success. The plan flags are checked by the
   * shard; here the transport and the account's hourly budget.
   */
  async submit(
    accountId: number,
    kind: 'mail' | 'sms',
    to: string,
    subject: string,
    body: string,
  ): Promise<FailCode | ''> {
    if (kind === 'mail' && !this.mailEnabled) return 'MAIL_DISABLED';
    if (kind === 'sms' && !this.smsEnabled) return 'SMS_DISABLED';
    if (kind === 'mail' ? !isValidEmail(to) : !isValidPhone(to)) return 'INVALID_ID';
    const rate = this.config.EMAIL.RATE_PER_HOUR;
    const now = Date.now();
    if (rate > 0 && (await this.store.countOutboxSince(accountId, now - 3600_000)) >= rate) return 'RATE_LIMIT';
    await this.store.enqueue({ accountId, kind, recipient: to, subject, body }, now);
    this.pump();
    return '';
  }

  /** A system e-mail (sign-up, key reset); false when mail is not configured. */
  async system(to: string, subject: string, body: string): Promise<boolean> {
    if (!this.mailEnabled) return false;
    await this.store.enqueue({ accountId: null, kind: 'mail', recipient: to, subject, body }, Date.now());
    this.pump();
    return true;
  }

  private settings(item: OutboxItem): DeliveryTask {
    const e = this.config.EMAIL;
    const timeoutMs = e.TIMEOUT_S * 1000;
    if (item.kind === 'mail') {
      const mail: MailSettings = {
        host: e.mail_smtp_host,
        port: e.mail_smtp_port,
        secure: e.mail_transport_protocol.toLowerCase() === 'smtps',
        auth: e.mail_smtp_auth,
        user: e.USERNAME,
        password: e.PASSWORD,
        requireTls: e.REQUIRE_TLS,
        verifyTls: e.TLS_VERIFY,
        from: e.FROM || `P2Pcluster <noreply@${this.config.PServer.DNS || 'localhost'}>`,
        timeoutMs,
      };
      const subject = bytesToText(item.subject);
      return { kind: 'mail', settings: mail, to: item.recipient, subject, body: bytesToText(item.body) };
    }
    const s = this.config.SMS;
    const headers: Record<string, string> = {};
    for (const pair of s.HEADERS.split(';')) {
      const i = pair.indexOf(':');
      if (i > 0) headers[pair.slice(0, i).trim()] = pair.slice(i + 1).trim();
    }
    if (!Object.keys(headers).some((h) => h.toLowerCase() === 'content-type')) {
      headers['content-type'] = s.BODY.trimStart().startsWith('{')
        ? 'application/json'
        : 'application/x-www-form-urlencoded';
    }
    const sms: SmsSettings = { url: s.URL, method: s.METHOD.toUpperCase(), headers, body: s.BODY, timeoutMs };
    return { kind: 'sms', settings: sms, to: item.recipient, body: bytesToText(item.body) };
  }

  /** Hands due messages to the pool, up to its size (one pass at a time; a request meanwhile runs once more). */
  private pump(): void {
    if (this.pumping !== null) {
      this.pumpAgain = true;
      return;
    }
    this.pumping = this.pumpOnce()
      .catch((err: unknown) => this.log.error({ err }, 'outbox pass failed'))
      .finally(() => {
        this.pumping = null;
        if (this.pumpAgain && !this.stopped) {
          this.pumpAgain = false;
          this.pump();
        }
      });
  }

  private async pumpOnce(): Promise<void> {
    if (this.stopped || (!this.mailEnabled && !this.smsEnabled)) return;
    const free = this.config.EMAIL.POOL * 2 - this.inFlight.size;
    if (free <= 0) return;
    const now = Date.now();
    for (const item of await this.store.dueOutbox(now, free)) {
      if (this.inFlight.has(item.id) || this.stopped) continue;
      this.inFlight.set(item.id, item);
      // Lease: if the process dies mid-send, the message is due again after LEASE_MS.
      await this.store.updateOutbox(item.id, 'queued', item.attempts, now + LEASE_MS, item.lastError);
      this.pool ??= new Piscina({ filename: WORKER, maxThreads: this.config.EMAIL.POOL, minThreads: 1 });
      const p = this.pool
        .run(this.settings(item))
        .then(
          (r: DeliveryResult) => this.settle(item, r),
          (err: unknown) => this.settle(item, { ok: false, error: String(err) }),
        )
        .finally(() => {
          this.inFlight.delete(item.id);
          this.running = this.running.filter((x) => x !== p);
        });
      this.running.push(p);
    }
  }

  private async settle(item: OutboxItem, r: DeliveryResult): Promise<void> {
    if (this.stopped) return;
    const attempts = item.attempts + 1;
    const now = Date.now();
    try {
      if (r.ok) {
        await this.store.updateOutbox(item.id, 'sent', attempts, now, null);
        return;
      }
      const error = (r.error ?? 'unknown error').slice(0, 500);
      if (r.permanent || attempts >= this.config.EMAIL.MAX_TRIES) {
        await this.store.updateOutbox(item.id, 'failed', attempts, now, error);
        this.log.warn({ id: item.id, kind: item.kind, attempts, error }, 'outbox message failed');
        return;
      }
      const delay = Math.min(MAX_BACKOFF_MS, this.config.EMAIL.RETRY_BASE_S * 1000 * 2 ** (attempts - 1));
      await this.store.updateOutbox(item.id, 'queued', attempts, now + delay, error);
    } catch (err) {
      // The lease expires and the message is tried again: at least once, never lost.
      this.log.error({ err, id: item.id }, 'recording an outbox attempt failed');
    }
  }

  /** Stops taking work; attempts under way get a few seconds to finish (the rest stay queued). */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.pumpAgain = false;
    await this.pumping;
    await Promise.race([Promise.allSettled(this.running), new Promise((r) => setTimeout(r, 3000).unref())]);
    this.stopped = true;
    // Attempts still hanging: release their leases so the next start sends them at once.
    const now = Date.now();
    for (const item of this.inFlight.values()) {
      try {
        await this.store.updateOutbox(item.id, 'queued', item.attempts, now, item.lastError);
      } catch {
        // the store may already be closing; the lease then expires by itself
      }
    }
    await this.pool?.destroy();
  }
}
