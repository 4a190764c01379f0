// The console's side of the operator API: bearer-authenticated JSON calls and the live event stream
// (read with fetch, since EventSource cannot send an Authorization header).

export interface Device {
  id: string;
  online: boolean;
  lastSeen: number | null;
  sent: number;
  received: number;
}
export interface State {
  t: number;
  devices: Device[];
  held: { id: string; count: number; oldest: number; dropped: number }[];
  outbox: {
    id: number;
    kind: string;
    to: string;
    state: string;
    attempts: number;
    lastError: string | null;
    updatedAt: number;
  }[];
}
export interface Topology {
  nodes: { id: string; parent: string | null }[];
  routers: { name: string; members: string[] }[];
  aliases: { name: string; targets: string[] }[];
}

export class ApiFailure extends Error {
  readonly status: number;
  readonly code: string;
  constructor(status: number, code: string, message: string) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export class Api {
  readonly token: string;
  /** Path segment of the account: "me" for a KEY, the e-mail for the admin. */
  account = 'me';

  constructor(token: string) {
    this.token = token;
  }

  private base(): string {
    return `/api/v1/accounts/${encodeURIComponent(this.account)}`;
  }

  async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await fetch(path.startsWith('/api/') ? path : `${this.base()}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${this.token}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    const value: unknown = text === '' ? null : JSON.parse(text);
    if (!res.ok) {
      const e = (value ?? {}) as { error?: string; message?: string };
      throw new ApiFailure(res.status, e.error ?? String(res.status), e.message ?? res.statusText);
    }
    return value as T;
  }

  /** Reads the account's event stream until `signal` aborts; reconnects after a pause when it drops. */
  async stream(
    onEvent: (event: string, data: unknown) => void,
    onLive: (live: boolean) => void,
    signal: AbortSignal,
  ): Promise<void> {
    while (!signal.aborted) {
      try {
        const res = await fetch(`${this.base()}/events`, {
          headers: { authorization: `Bearer ${this.token}` },
          signal,
        });
        if (!res.ok || res.body === null) throw new Error(`stream: HTTP ${res.status}`);
        onLive(true);
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value;
          let end = buf.indexOf('\n\n');
          while (end >= 0) {
            const block = buf.slice(0, end);
            buf = buf.slice(end + 2);
            let event = 'message';
            let data = '';
            for (const line of block.split('\n')) {
              if (line.startsWith('event: ')) event = line.slice(7);
              else if (line.startsWith('data: ')) data += line.slice(6);
            }
            if (data !== '') onEvent(event, JSON.parse(data));
            end = buf.indexOf('\n\n');
          }
        }
      } catch {
        if (signal.aborted) return;
      }
      onLive(false);
      await new Promise((r) => setTimeout(r, 2000));
    }
  }
}
