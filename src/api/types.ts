// Transport-independent HTTP request/response, so the same handlers serve the HTTP port and HTTP requests
// that arrive on the device port (PROTOCOL.md §1, §8) and are relayed from a shard.

export interface ApiRequest {
  method: string;
  /** Path and query, as sent. */
  url: string;
  /** Lower-case header names. */
  headers: Record<string, string | undefined>;
  body: string;
  /** Set by the HTTP port's adapter: the response may be a stream (the device-port relay cannot carry one). */
  streaming?: boolean;
}

/** Where a streamed response writes. */
export interface EventSink {
  write(text: string): void;
  /** True while the client has not taken what was written (skip optional output). */
  congested(): boolean;
}

export interface ApiResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
  /** A streamed response (HTTP port only): started after the head; returns what to do when the client leaves. */
  stream?: (sink: EventSink) => () => void;
}

export function json(status: number, value: unknown): ApiResponse {
  return {
    status,
    headers: { 'content-type': 'application/json; charset=utf-8' },
    body: value === undefined ? '' : JSON.stringify(value),
  };
}

export function text(status: number, body: string, type = 'text/plain; charset=utf-8'): ApiResponse {
  return { status, headers: { 'content-type': type }, body };
}

export function noContent(): ApiResponse {
  return { status: 204, headers: {}, body: '' };
}

/** A client error with a stable code and, for validation errors, the field at fault. */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly field: string | undefined;
  constructor(status: number, code: string, message: string, field?: string) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
  }
}
