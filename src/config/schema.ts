// Every configuration key of P2Pcluster, its type, default, bounds and meaning (PROTOCOL.md §10).
// `config/Server.conf` documents the same keys; a test keeps the two in step.

export type KeyType = 'int' | 'number' | 'bool' | 'string' | 'levels';

export interface KeyDef {
  readonly type: KeyType;
  readonly def: number | boolean | string | readonly number[];
  readonly min?: number;
  readonly max?: number;
  readonly doc: string;
}

const levels = (a: number, b: number, c: number, d: number): readonly number[] => Object.freeze([a, b, c, d]);

/** Connection slots per shard are addressed with 17 bits (see src/routing/handle.ts). */
export const MAX_SLOTS_PER_SHARD = 1 << 17;
/** Shard index is addressed with 6 bits. */
export const MAX_WORKERS = 64;

export const SCHEMA = {
  PServer: {
    ServerPort: { type: 'int', def: 8080, min: 0, max: 65535, doc: 'device TCP port (0 = pick a free port)' },
    HOST: { type: 'string', def: '', doc: 'address to bind the device port to (empty = all interfaces)' },
    MAXLOAD: {
      type: 'int',
      def: 100000,
      min: 1,
      max: MAX_SLOTS_PER_SHARD,
      doc: 'concurrent device connections; excess gets [FAIL:SERVER_FULL]',
    },
    VELOCITY: {
      type: 'int',
      def: 600000,
      min: 0,
      doc: 'new connections accepted per minute across all shards (0 = unlimited)',
    },
    PARALLEL_SCAVENGE: {
      type: 'int',
      def: 1,
      min: 0,
      max: 1,
      doc: "1 = V8's worker threads help every young-generation collection (V8's default); 0 = each thread collects its own young generation alone (to go with V8_THREADS_NICE)",
    },
    V8_THREADS_NICE: {
      type: 'int',
      def: 0,
      min: 0,
      max: 19,
      doc: "nice value for V8's worker threads (JIT compiles, concurrent marking and sweeping; Linux), so they run when a core is free instead of taking one from a shard: lowers the latency tail on a box the server has to itself; where other processes keep the cores busy they starve the collector (0 = leave them at the process's priority)",
    },
    IDLE_GC_MS: {
      type: 'int',
      def: 250,
      min: 0,
      max: 60000,
      doc: 'after a thread (a shard, the supervisor) has been quiet this long (under 5 % of a core) and its heap grew by IDLE_GC_MB since its last such collection, it runs one memory-reducing collection that gives the heap a burst left committed back to the system (a pause of tens of ms, only when quiet; 0 = never)',
    },
    IDLE_GC_MB: {
      type: 'int',
      def: 4,
      min: 1,
      max: 65536,
      doc: "growth of a thread's committed heap in MB since its last idle collection (or start), and by at least a quarter of the heap that collection left, that makes it collect once quiet (see IDLE_GC_MS)",
    },
    SHARD_YOUNG_MB: {
      type: 'int',
      def: 12,
      min: 0,
      max: 1024,
      doc: "young-generation heap of each shard thread in MB (0 = V8's default): smaller keeps idle memory low",
    },
    WORKERS: {
      type: 'int',
      def: 0,
      min: 0,
      max: MAX_WORKERS,
      doc: 'shard worker threads (0 = one per core but one, at least 1: a core stays free for the network stack and the supervisor)',
    },
    DNS: { type: 'string', def: '', doc: 'public host name of this server, used in links sent to users' },
    IP_VELOCITY: {
      type: 'int',
      def: 60000,
      min: 0,
      doc: 'new connections accepted per minute from one address (0 = unlimited)',
    },
    MAX_RSS_MB: {
      type: 'int',
      def: 8192,
      min: 0,
      doc: 'refuse new connections while the process uses more memory than this (MB; 0 = no guard)',
    },
    DRAIN_S: {
      type: 'number',
      def: 5,
      min: 0,
      doc: 'on SIGTERM: seconds to let queued output drain before connections are cut',
    },
    LINK_MAX_BYTES: {
      type: 'int',
      def: 16 * 1024 * 1024,
      min: 65536,
      doc: 'bytes in flight from one shard to another before senders are paused',
    },
  },
  NODE: {
    WAIT_FOR_CMD: {
      type: 'number',
      def: 60,
      min: 0.01,
      doc: 'seconds a new connection has to send its first command (on the TLS port, its handshake must finish within them too)',
    },
    COM_CHK: {
      type: 'number',
      def: 300,
      min: 0.01,
      doc: 'liveness tick in seconds: a connection silent for a tick gets [SYNC:...]; one without an ID is closed at its 2nd tick, a registered one silent for 2 ticks is closed (OFFLINE, will)',
    },
    DATA_CACHE: { type: 'int', def: 5, min: 0, max: 1000, doc: 'payloads remembered per connection for RETDATA' },
    LINE_IDLE_MS: {
      type: 'int',
      def: 150,
      min: 0,
      max: 60000,
      doc: 'an unterminated line is taken as a command after this much silence (0 = never)',
    },
    MAX_LINE: { type: 'int', def: 4096, min: 64, max: 16 * 1024 * 1024, doc: 'longest command line in bytes' },
    MAX_ID: { type: 'int', def: 64, min: 1, max: 1024, doc: 'longest device ID' },
    MAX_FANOUT: { type: 'int', def: 100000, min: 1, doc: 'largest group one push may address' },
    MAX_OUTBUF: {
      type: 'int',
      def: 8 * 1024 * 1024,
      min: 1024,
      doc: 'bytes queued towards one device before pushes to it fail with [FAIL:REM_LINK]',
    },
    WRITE_DEADLINE: {
      type: 'number',
      def: 10,
      min: 0.01,
      doc: 'seconds a device may stay over MAX_OUTBUF before it is disconnected as a slow consumer',
    },
    MAX_WATCH: { type: 'int', def: 16, min: 0, max: 1024, doc: 'WATCH targets per connection; past it [FAIL:QUOTA]' },
    HOLD_TTL: {
      type: 'number',
      def: 604800,
      min: 1,
      doc: 'seconds a held message waits for its offline device before it is dropped',
    },
    AUTH_FAILS: {
      type: 'int',
      def: 50,
      min: 0,
      doc: 'auth failures (bad KEY, session MAC or UID) per minute from one address before it is throttled (0 = off)',
    },
    PUSH_RATE: {
      type: 'int',
      def: 0,
      min: 0,
      doc: 'pushes per second per account on each shard (0 = unlimited); excess gets [FAIL:RATE_LIMIT]',
    },
  },
  USER: {
    '1TREE': { type: 'levels', def: levels(1, 1, 1, 1), doc: 'tree allowed (1) or not (0), per plan level 1..4' },
    '2NODEPERTREE': { type: 'levels', def: levels(10, 100, 10000, 1000000), doc: 'tree nodes per account' },
    '4HOLDPUSH': {
      type: 'levels',
      def: levels(0, 0, 0, 0),
      doc: 'pushes to known offline devices are held (1) or answered [FAIL:REM_ID] (0); off unless a plan enables it',
    },
    '5HOLDBUFFER': { type: 'levels', def: levels(0, 0, 100, 1000), doc: 'held messages per device' },
    '6MAILPUSH': { type: 'levels', def: levels(0, 1, 1, 1), doc: 'e-mail allowed (1) or not' },
    '7SMSPUSH': { type: 'levels', def: levels(0, 0, 1, 1), doc: 'SMS allowed (1) or not' },
    '10MAXNODE': {
      type: 'levels',
      def: levels(10, 100, 10000, 1000000),
      doc: 'devices registered at once per account; past it [FAIL:QUOTA]',
    },
    REQUIRE_SECURE: {
      type: 'levels',
      def: levels(0, 0, 0, 0),
      doc: 'devices must use TLS or an HSTCP session (1) or may use plain TCP (0); refused: [FAIL:SECURE_REQUIRED]',
    },
    DEFAULT_LEVEL: { type: 'int', def: 4, min: 1, max: 4, doc: 'plan level of accounts an operator creates' },
    SIGNUP_LEVEL: { type: 'int', def: 1, min: 1, max: 4, doc: 'plan level of self-service sign-ups' },
  },
  EMAIL: {
    mail_smtp_host: { type: 'string', def: '', doc: 'SMTP host (empty = mail disabled)' },
    mail_smtp_port: { type: 'int', def: 587, min: 1, max: 65535, doc: 'SMTP port' },
    mail_smtp_auth: { type: 'bool', def: true, doc: 'authenticate to the SMTP server' },
    mail_transport_protocol: {
      type: 'string',
      def: 'smtp',
      doc: 'smtp (STARTTLS when offered) or smtps (TLS from the first byte)',
    },
    USERNAME: { type: 'string', def: '', doc: 'SMTP user name' },
    PASSWORD: { type: 'string', def: '', doc: 'SMTP password' },
    REQUIRE_TLS: { type: 'bool', def: false, doc: 'refuse to send without STARTTLS' },
    TLS_VERIFY: { type: 'bool', def: true, doc: "verify the SMTP server's certificate" },
    FROM: { type: 'string', def: '', doc: 'sender address (empty = noreply@<PServer.DNS or localhost>)' },
    MAX_TRIES: { type: 'int', def: 8, min: 1, max: 100, doc: 'attempts before a message is marked failed' },
    RETRY_BASE_S: {
      type: 'number',
      def: 2,
      min: 0.01,
      doc: 'first retry delay in seconds; doubles with every attempt (capped at one hour)',
    },
    TIMEOUT_S: { type: 'number', def: 30, min: 0.1, doc: 'seconds one delivery attempt may take' },
    RATE_PER_HOUR: {
      type: 'int',
      def: 60,
      min: 0,
      doc: 'e-mails plus SMS one account may queue per hour (0 = unlimited); past it [FAIL:RATE_LIMIT]',
    },
    POOL: { type: 'int', def: 2, min: 1, max: 64, doc: 'worker threads sending mail and SMS' },
  },
  SMS: {
    URL: {
      type: 'string',
      def: '',
      doc: 'gateway URL template, {number} and {text} URL-encoded (empty = SMS disabled)',
    },
    METHOD: { type: 'string', def: 'POST', doc: 'HTTP method' },
    HEADERS: { type: 'string', def: '', doc: 'extra headers, "Name: value" pairs separated by ";"' },
    BODY: {
      type: 'string',
      def: '{"to":"{number}","text":"{text}"}',
      doc: 'body template; JSON-escaped values when it starts with {, else URL-encoded',
    },
  },
  HTTP: {
    PORT: { type: 'int', def: 8081, min: 0, max: 65535, doc: 'operator HTTP API port (0 = pick a free port)' },
    HOST: { type: 'string', def: '', doc: 'address to bind the HTTP port to (empty = all interfaces)' },
    ADMIN_TOKEN: {
      type: 'string',
      def: '',
      doc: 'bearer token for admin calls (empty = admin calls disabled; use 32+ random characters)',
    },
    MAX_BODY: { type: 'int', def: 1048576, min: 1024, doc: 'largest request body in bytes' },
    MAX_STREAMS: {
      type: 'int',
      def: 64,
      min: 0,
      max: 10000,
      doc: 'live console event streams open at once (more get 503)',
    },
    SIGNUP_TTL: {
      type: 'int',
      def: 86400,
      min: 60,
      doc: 'seconds an activation link of a self-service sign-up stays valid',
    },
  },
  TLS: {
    ENABLED: { type: 'bool', def: false, doc: 'also listen for devices over TLS (same protocol)' },
    PORT: { type: 'int', def: 8443, min: 0, max: 65535, doc: 'TLS device port (0 = pick a free port)' },
    CERT: { type: 'string', def: '', doc: 'PEM certificate chain file' },
    KEY: { type: 'string', def: '', doc: 'PEM private key file' },
    PSK: {
      type: 'bool',
      def: false,
      doc: 'also accept TLS-PSK (TLS 1.2): identity = account e-mail, key = HMAC-SHA256(KEY, "P2PC-TLS-PSK")',
    },
  },
  STORE: {
    PATH: { type: 'string', def: './data', doc: 'folder of the embedded store (SQLite)' },
  },
  CLUSTER: {
    REDIS_URL: {
      type: 'string',
      def: '',
      doc: 'redis:// URL of the shared store and backplane of a cluster (empty = this server alone, embedded store)',
    },
    NODE_ID: { type: 'string', def: '', doc: 'name of this node in the cluster (empty = host name and device port)' },
    PREFIX: { type: 'string', def: 'p2pc:', doc: 'prefix of every Redis key and channel of the cluster' },
    ADVERTISE: {
      type: 'string',
      def: '',
      doc: 'host[:port] at which other nodes reach the device port of this one, for RAW streams across nodes (empty = PServer.HOST if set, else the first non-loopback IPv4 address; port: the device port)',
    },
    RAW_CONNECT_MS: {
      type: 'int',
      def: 5000,
      min: 1,
      doc: 'a RAW link to a device on another node fails with [FAIL:UNAVAILABLE] when that node has not answered within this time',
    },
  },
  LOG: {
    LEVEL: { type: 'string', def: 'info', doc: 'fatal, error, warn, info, debug, trace or silent' },
  },
} as const satisfies Record<string, Record<string, KeyDef>>;

export type Schema = typeof SCHEMA;
export type BlockName = keyof Schema;

type ValueOf<D> = D extends { type: 'int' | 'number' }
  ? number
  : D extends { type: 'bool' }
    ? boolean
    : D extends { type: 'levels' }
      ? readonly number[]
      : string;

export type Config = {
  readonly [B in BlockName]: { readonly [K in keyof Schema[B]]: ValueOf<Schema[B][K]> };
};

/** A partial configuration, as tests and the CLI pass overrides. */
export type ConfigOverrides = {
  [B in BlockName]?: { [K in keyof Schema[B]]?: ValueOf<Schema[B][K]> };
};

/**
 * Shards to run: PServer.WORKERS, or for 0 one per core but one (at least one). The kernel's network stack, the
 * supervisor thread and the store need CPU too; on a small machine a second shard costs more in cross-thread
 * hand-offs (round-trip latency tails) than it gains (docs/performance.md).
 */
export function shardCount(workers: number, cores: number): number {
  return workers > 0 ? workers : Math.max(1, cores - 1);
}

/** Plan-level lookup: levels are 1..4. */
export function planValue(list: readonly number[], level: number): number {
  const i = Math.min(Math.max(level, 1), list.length) - 1;
  return list[i] ?? 0;
}
