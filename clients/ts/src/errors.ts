// Typed errors. A `[FAIL:<CODE>]` reply rejects its command with a P2PError whose `code` is CODE exactly as the
// server sent it (`REM_ID`, `NO_ROUTER`, ...; PROTOCOL.md §4, §5) and `server` true. Failures found by the client
// itself use the codes of CLIENT_CODES and `server` false.

/** Codes of failures the client detects itself (never sent by the server). */
export const CLIENT_CODES = {
  /** The connection ended before the reply to this command arrived (it may or may not have been executed). */
  CONNECTION_LOST: 'CONNECTION_LOST',
  /** The client was closed (close() or destroy(), or reconnecting gave up). */
  CLOSED: 'CLOSED',
  /** More than `maxQueued` commands were waiting to be written. */
  QUEUE_FULL: 'QUEUE_FULL',
  /** Connecting, the handshake, or the server's answer took longer than allowed. */
  TIMEOUT: 'TIMEOUT',
  /** A RAW channel owns this connection: its bytes are stream data, commands cannot be sent on it. */
  RAW_ACTIVE: 'RAW_ACTIVE',
  /** A RAW stream was written to without an outgoing link (it was only accepted, see acceptRaw()). */
  RAW_NOT_LINKED: 'RAW_NOT_LINKED',
  /** An argument cannot be sent (a line break in a payload, a ':' in an ID, ...). */
  BAD_ARGUMENT: 'BAD_ARGUMENT',
  /** The server answered something this command cannot have as a reply. */
  PROTOCOL: 'PROTOCOL',
  /** The secure-session activation proof from the server did not verify: it does not know the KEY. */
  SERVER_PROOF: 'SERVER_PROOF',
} as const;

export type ClientCode = keyof typeof CLIENT_CODES;

export class P2PError extends Error {
  /** The server's FAIL code (e.g. `REM_ID`), or one of CLIENT_CODES. */
  readonly code: string;
  /** True when the code comes from a `[FAIL:...]` reply of the server. */
  readonly server: boolean;
  /** The command line the reply belongs to, with the KEY field masked (when known). */
  readonly command: string | undefined;

  constructor(code: string, message: string, opts: { server?: boolean; command?: string; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'P2PError';
    this.code = code;
    this.server = opts.server ?? false;
    this.command = opts.command;
  }
}

/** Server codes after which retrying the same registration cannot succeed (reconnecting gives up on them). */
export const PERMANENT_CODES: ReadonlySet<string> = new Set([
  'INVALID_KEY',
  'NOKEY',
  'INVALID_USERID',
  'INVALID_DATA',
  'INVALID_FORMAT',
  'SECURE_REQUIRED',
  'SERVER_PROOF',
]);
