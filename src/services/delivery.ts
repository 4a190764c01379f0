// One delivery attempt of an outbox message, run in a piscina worker thread so SMTP and HTTP never touch the
// shard threads: e-mail through nodemailer, SMS through the configured HTTP gateway.

import { createTransport, type Transporter } from 'nodemailer';

export interface MailSettings {
  host: string;
  port: number;
  secure: boolean;
  auth: boolean;
  user: string;
  password: string;
  requireTls: boolean;
  verifyTls: boolean;
  from: string;
  timeoutMs: number;
}

export interface SmsSettings {
  url: string;
  method: string;
  headers: Record<string, string>;
  body: string;
  timeoutMs: number;
}

export type DeliveryTask =
  | { kind: 'mail'; settings: MailSettings; to: string; subject: string; body: string }
  | { kind: 'sms'; settings: SmsSettings; to: string; body: string };

export interface DeliveryResult {
  ok: boolean;
  /** The server's answer on failure (SMTP response or HTTP status). */
  error?: string;
  /** A failure that no retry will fix (e.g. SMTP 5xx for the recipient). */
  permanent?: boolean;
}

const transports = new Map<string, Transporter>();

function transportFor(s: MailSettings): Transporter {
  const id = JSON.stringify(s);
  let t = transports.get(id);
  if (t === undefined) {
    t = createTransport({
      host: s.host,
      port: s.port,
      secure: s.secure,
      requireTLS: s.requireTls,
      auth: s.auth && s.user !== '' ? { user: s.user, pass: s.password } : undefined,
      tls: { rejectUnauthorized: s.verifyTls },
      connectionTimeout: s.timeoutMs,
      greetingTimeout: s.timeoutMs,
      socketTimeout: s.timeoutMs,
    });
    transports.set(id, t);
  }
  return t;
}

/** Fills `{number}` and `{text}`: URL-encoded, or JSON-escaped when `json`. */
export function fillTemplate(template: string, values: Record<string, string>, json: boolean): string {
  return template.replace(/\{(\w+)\}/g, (whole, name: string) => {
    const v = values[name];
    if (v === undefined) return whole;
    return json ? JSON.stringify(v).slice(1, -1) : encodeURIComponent(v);
  });
}

export default async function deliver(task: DeliveryTask): Promise<DeliveryResult> {
  try {
    if (task.kind === 'mail') {
      await transportFor(task.settings).sendMail({
        from: task.settings.from,
        to: task.to,
        subject: task.subject,
        text: task.body,
      });
      return { ok: true };
    }
    const s = task.settings;
    const values = { number: task.to, text: task.body };
    const body = s.body.trimStart().startsWith('{')
      ? fillTemplate(s.body, values, true)
      : fillTemplate(s.body, values, false);
    const res = await fetch(fillTemplate(s.url, values, false), {
      method: s.method,
      headers: s.headers,
      body: s.method === 'GET' || s.method === 'HEAD' ? undefined : body,
      signal: AbortSignal.timeout(s.timeoutMs),
    });
    await res.arrayBuffer();
    if (res.ok) return { ok: true };
    return {
      ok: false,
      error: `HTTP ${res.status}`,
      permanent: res.status >= 400 && res.status < 500 && res.status !== 429,
    };
  } catch (err) {
    const e = err as { responseCode?: number; message?: string; response?: string };
    const permanent = typeof e.responseCode === 'number' && e.responseCode >= 500 && e.responseCode < 600;
    return { ok: false, error: e.response ?? e.message ?? String(err), permanent };
  }
}
