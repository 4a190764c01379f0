// Every cross-thread message type, in one place.
//
// Messages travel in batches: one msgpackr-encoded flat array per port per event-loop turn,
// [op, ...fields, op, ...fields, ...]. Flat arrays keep the hot path free of per-message objects;
// the tuple types below document each op's fields in order. Errors cross as FailCode strings.
// MessagePorts themselves (which msgpackr cannot carry) travel in PortMessage objects.

import type { MessagePort } from 'node:worker_threads';
import type { FailCode } from '../protocol/codes.ts';

export const OP = {
  // shard -> shard
  /** One delivery: the target handle and the payload. */
  DELIVER: 1,
  /** One payload to several handles on the receiving shard. */
  DELIVER_MANY: 2,
  /** Consecutive deliveries to one handle coalesced: [handle, count, lines joined by CRLF "PUSH:"]. */
  DELIVER_N: 16,
  /**
   * Consecutive deliveries to one handle as bytes: [handle, count, side, from, to], the delivered lines (CRLFs
   * included) at [from, to) of that side buffer posted with the batch.
   */
  DELIVER_BYTES: 120,
  /** The same delivered lines, as bytes, to several handles: [count per handle, side, from, to, n, ...handles]. */
  DELIVER_BYTES_MANY: 121,
  /** Registration request to the account's owner shard. */
  REG: 3,
  /** Owner's answer to REG: '' for success or a FailCode. */
  REG_RESULT: 4,
  /** A registration ended (close or REMID); sent to the owner shard. */
  UNREG: 5,
  /** Owner -> every shard: directory entry set. */
  DIR_SET: 6,
  /** Owner -> every shard: directory entry removed (if it still names that handle). */
  DIR_DEL: 7,
  /** Cumulative count of DIR_* messages applied from the receiving shard. */
  DIR_ACK: 8,
  /** Close the connection behind a handle (an operator kicked the device). */
  KICK: 9,
  /** Bytes of batches processed, returned to the sender for link flow control. */
  CREDIT: 10,
  /** Live registrations of the sending shard, sent to a restarted shard. */
  SNAPSHOT: 11,
  /** RAW channel: a writer asks the reader's shard to link: [reader, writer]. */
  RAW_OPEN: 12,
  /** The answer: [writer, reader, '' | FailCode]. */
  RAW_OPEN_RESULT: 13,
  /** Bytes of a writer's stream the reader's socket accepted: [writer, bytes]. */
  RAW_ACK: 14,
  /** One end of a RAW link went away: [handle told, the other end, role 1 = writer left / 0 = reader left]. */
  RAW_CLOSE: 15,

  // shard -> supervisor
  /** The shard listens and is ready. */
  READY: 20,
  /** Resolve a KEY to an account. */
  KEY_LOOKUP: 21,

  // supervisor -> shard
  /** Answer to KEY_LOOKUP: account id (0 = none), canonical key, plan level. */
  KEY_RESULT: 30,
  /** An account's KEY or level changed, or the account was deleted (key ''). */
  ACCOUNT_UPDATE: 31,
  /** A peer shard died: forget its connections. */
  PEER_DOWN: 32,
  /** Stop accepting, close connections, then report STOPPED. */
  SHUTDOWN: 33,
  /** Test hook: throw inside the shard's event loop. */
  CRASH: 34,
  /** Shard -> supervisor: shutdown finished. */
  STOPPED: 35,
  /** A topology change of an account (fields: see src/routing/changes.ts encodeChange). */
  TOPOLOGY: 36,
  /** Forget an account's topology (account deleted). */
  TOPOLOGY_RESET: 37,
  /** Barrier: answer SYNC_ACK once everything before it is applied. */
  SYNC: 38,
  /** Shard -> supervisor: everything up to this SYNC is applied. */
  SYNC_ACK: 39,
  /** Supervisor -> owner shard: list the live IDs of an account. */
  DEVICES_QUERY: 40,
  /** Owner shard -> supervisor: the answer, [req, count, (id, shard)...]. */
  DEVICES_RESULT: 41,
  /** Supervisor -> owner shard: disconnect the live holder of an ID: [req, account, id]. */
  KICK_ID: 57,
  /** Owner shard -> supervisor: [req, 1 when a live holder was kicked, else 0]. */
  KICK_RESULT: 58,
  /** Supervisor -> owner shard: an operator's test push to IDs: [req, account, data, count, ...ids]. */
  API_PUSH: 59,
  /** Owner shard -> supervisor: [req, delivered, count, ...IDs routed to the hold]. */
  API_PUSH_RESULT: 60,
  /** Supervisor -> every shard: per-device counters of an account's connections there: [req, account]. */
  ACCOUNT_STATS: 61,
  /** Shard -> supervisor: [req, count, (id, sent, received, connectedAt)...]. */
  ACCOUNT_STATS_RESULT: 62,
  /** Owner shard -> supervisor (cluster mode): claim an ID in the cluster directory: [req, account, id]. */
  CLAIM: 63,
  /** Supervisor -> owner shard: [req, 1 when this node may give the ID, 0 when a live other node holds it]. */
  CLAIM_RESULT: 64,
  /** Owner shard -> supervisor (cluster mode): give a claim back: [account, id]. */
  UNCLAIM: 65,
  /** Supervisor -> every shard (cluster mode): a device came (1) or went (0) on another node: [account, id, online]. */
  PRESENCE_REMOTE: 66,
  /**
   * Shard -> supervisor (cluster mode): a group push's members not on this node: [req, account, data, level, friends,
   * n, ...ids]; friends = 1: also every device outside the tree that is live on another node (FRIENDS of such a device).
   */
  GROUP_ROUTE: 67,
  /** Supervisor -> shard: how many of them another node took, and how many members it added: [req, routed, more]. */
  GROUP_RESULT: 68,
  /** Shard -> supervisor (cluster mode): where does the node holding this ID take RAW streams: [writer, account, id]. */
  RAW_LOCATE: 69,
  /** Supervisor -> shard: [writer, id, host, port, '' | FailCode] (host '' when no live other node holds the ID). */
  RAW_LOCATED: 70,
  /** Supervisor -> every shard (cluster mode): the cluster's secret for RAW streams across nodes: [hex]. */
  NODE_SECRET: 71,
  /** Shard -> supervisor: store an e-mail or SMS in the outbox: [req, account, kind, to, subject, body]. */
  OUTBOX_SUBMIT: 45,
  /** Supervisor -> shard: '' when durably queued, else a FailCode. */
  OUTBOX_RESULT: 46,
  /**
   * Owner shard -> supervisor: hold a push for an offline device: [req (0 = no answer), account, id, data, level,
   * origin shard]. Holds go through the account's owner so they are ordered with its registrations.
   */
  HOLD: 47,
  /** Supervisor or owner -> origin shard: [req, 'DATA_HELD' | 'REM_ID' | 'DATA_SENT']. */
  HOLD_RESULT: 48,
  /** Owner shard -> supervisor: a registration was accepted; send its backlog: [account, id, handle, level]. */
  HELD_FETCH: 49,
  /** Supervisor -> the device's shard: [handle, account, id, level, count, ...data] oldest first. */
  HELD_DATA: 50,
  /** Any shard -> the account's owner shard: [req, account, id, data, level] (peer op). */
  HOLD_ROUTE: 56,
  /** Shard -> supervisor: a device registered (1) or left (0) (last seen, cluster directory): [account, id, online]. */
  SEEN: 51,
  /** Shard -> supervisor: when was this ID last seen: [req, account, id]. */
  STATUS_QUERY: 52,
  /** Supervisor -> shard: [req, last seen epoch ms or -1 when never]. */
  STATUS_RESULT: 53,
  /** Supervisor -> shard: send your counters: [req]. */
  METRICS_QUERY: 54,
  /** Shard -> supervisor: [req, count, (name, value)...]. */
  METRICS_RESULT: 55,
  /** Resolve an account UID (e-mail) for a secure session; answered with KEY_RESULT. */
  UID_LOOKUP: 44,
  /** Shard -> supervisor: an HTTP request that arrived on the device port (JSON ApiRequest). */
  HTTP_REQUEST: 42,
  /** Supervisor -> shard: its answer (JSON ApiResponse). */
  HTTP_RESPONSE: 43,
} as const;

export type Op = (typeof OP)[keyof typeof OP];

/** Field layouts, in wire order (documentation and type checks for encoders). */
export type Message =
  | [op: typeof OP.DELIVER, handle: number, data: string]
  | [op: typeof OP.DELIVER_N, handle: number, count: number, data: string]
  | [op: typeof OP.DELIVER_BYTES, handle: number, count: number, side: number, from: number, to: number]
  | [op: typeof OP.DELIVER_MANY, data: string, count: number, ...handles: number[]]
  | [
      op: typeof OP.DELIVER_BYTES_MANY,
      messages: number,
      side: number,
      from: number,
      to: number,
      count: number,
      ...handles: number[],
    ]
  | [op: typeof OP.REG, req: number, account: number, id: string, handle: number]
  | [op: typeof OP.REG_RESULT, req: number, result: FailCode | '']
  | [op: typeof OP.UNREG, account: number, id: string, handle: number]
  | [op: typeof OP.DIR_SET, account: number, id: string, handle: number]
  | [op: typeof OP.DIR_DEL, account: number, id: string, handle: number]
  | [op: typeof OP.DIR_ACK, count: number]
  | [op: typeof OP.KICK, handle: number]
  | [op: typeof OP.CREDIT, bytes: number]
  | [op: typeof OP.SNAPSHOT, count: number, ...entries: (number | string)[]]
  | [op: typeof OP.RAW_OPEN, reader: number, writer: number]
  | [op: typeof OP.RAW_OPEN_RESULT, writer: number, reader: number, result: FailCode | '']
  | [op: typeof OP.RAW_ACK, writer: number, bytes: number]
  | [op: typeof OP.RAW_CLOSE, handle: number, other: number, role: number]
  | [op: typeof OP.READY, shard: number]
  | [op: typeof OP.KEY_LOOKUP, req: number, key: string]
  | [op: typeof OP.UID_LOOKUP, req: number, email: string]
  | [op: typeof OP.HOLD, req: number, account: number, id: string, data: string, level: number, origin: number]
  | [op: typeof OP.HOLD_RESULT, req: number, result: 'DATA_HELD' | 'REM_ID' | 'DATA_SENT']
  | [op: typeof OP.HELD_FETCH, account: number, id: string, handle: number, level: number]
  | [
      op: typeof OP.HELD_DATA,
      handle: number,
      account: number,
      id: string,
      level: number,
      count: number,
      ...data: string[],
    ]
  | [op: typeof OP.HOLD_ROUTE, req: number, account: number, id: string, data: string, level: number]
  | [op: typeof OP.SEEN, account: number, id: string, online: number]
  | [op: typeof OP.STATUS_QUERY, req: number, account: number, id: string]
  | [op: typeof OP.STATUS_RESULT, req: number, lastSeen: number]
  | [op: typeof OP.METRICS_QUERY, req: number]
  | [op: typeof OP.METRICS_RESULT, req: number, count: number, ...pairs: (string | number)[]]
  | [
      op: typeof OP.OUTBOX_SUBMIT,
      req: number,
      account: number,
      kind: 'mail' | 'sms',
      to: string,
      subject: string,
      body: string,
    ]
  | [op: typeof OP.OUTBOX_RESULT, req: number, result: FailCode | '']
  | [op: typeof OP.KEY_RESULT, req: number, account: number, key: string, level: number]
  | [op: typeof OP.ACCOUNT_UPDATE, account: number, key: string, level: number, email: string]
  | [op: typeof OP.PEER_DOWN, shard: number]
  | [op: typeof OP.SHUTDOWN]
  | [op: typeof OP.CRASH]
  | [op: typeof OP.STOPPED]
  | [op: typeof OP.TOPOLOGY, account: number, ...change: (string | number)[]]
  | [op: typeof OP.TOPOLOGY_RESET, account: number]
  | [op: typeof OP.SYNC, seq: number]
  | [op: typeof OP.SYNC_ACK, seq: number]
  | [op: typeof OP.DEVICES_QUERY, req: number, account: number]
  | [op: typeof OP.DEVICES_RESULT, req: number, count: number, ...entries: (string | number)[]]
  | [op: typeof OP.KICK_ID, req: number, account: number, id: string]
  | [op: typeof OP.KICK_RESULT, req: number, kicked: number]
  | [op: typeof OP.API_PUSH, req: number, account: number, data: string, count: number, ...ids: string[]]
  | [op: typeof OP.API_PUSH_RESULT, req: number, delivered: number, count: number, ...held: string[]]
  | [op: typeof OP.ACCOUNT_STATS, req: number, account: number]
  | [op: typeof OP.CLAIM, req: number, account: number, id: string]
  | [op: typeof OP.CLAIM_RESULT, req: number, ok: number]
  | [op: typeof OP.UNCLAIM, account: number, id: string]
  | [op: typeof OP.PRESENCE_REMOTE, account: number, id: string, online: number]
  | [
      op: typeof OP.GROUP_ROUTE,
      req: number,
      account: number,
      data: string,
      level: number,
      friends: number,
      n: number,
      ...ids: string[],
    ]
  | [op: typeof OP.GROUP_RESULT, req: number, routed: number, more: number]
  | [op: typeof OP.RAW_LOCATE, writer: number, account: number, id: string]
  | [op: typeof OP.RAW_LOCATED, writer: number, id: string, host: string, port: number, result: '' | FailCode]
  | [op: typeof OP.NODE_SECRET, secret: string]
  | [op: typeof OP.ACCOUNT_STATS_RESULT, req: number, count: number, ...entries: (string | number)[]]
  | [op: typeof OP.HTTP_REQUEST, req: number, request: string]
  | [op: typeof OP.HTTP_RESPONSE, req: number, response: string];

/** Messages sent as objects rather than msgpackr batches: ports, and RAW chunks as transferred buffers. */
export type PortMessage =
  | {
      kind: 'peer-port';
      /** Index of the shard at the other end of the port. */
      peer: number;
      port: MessagePort;
    }
  | { kind: 'raw'; to: number; from: number; data: ArrayBuffer };

/** What a shard worker receives as workerData. */
export interface ShardInit {
  index: number;
  shards: number;
  port: number;
  /** TLS device port (0 when TLS is off). */
  tlsPort: number;
  config: import('../config/schema.ts').Config;
  /** One status table per shard (SharedArrayBuffer-backed). */
  status: SharedArrayBuffer[];
  /** Global counters, see COUNTER_*. */
  counters: SharedArrayBuffer;
  /** Per-address connection counters and auth-failure counters (src/shard/address-table.ts). */
  addressConnections: SharedArrayBuffer;
  addressFailures: SharedArrayBuffer;
  /** Cluster mode: nonces of accepted RAW stream headers, shared by every shard (src/cluster/raw-header.ts). */
  nonces: SharedArrayBuffer;
  /** Port to the supervisor. */
  control: MessagePort;
  /** Ports to the other shards, index = peer shard (undefined for itself). */
  peers: (MessagePort | undefined)[];
  /** With TLS.PSK: every account as [id, email, key, level] (the PSK callback must answer synchronously). */
  accounts: [number, string, string, number][];
  /** Every account's topology as control ops (TOPOLOGY ...), applied before the shard listens. */
  topology: unknown[];
  /** Cluster mode: the cluster's secret for RAW streams across nodes (hex; '' until the node joined). */
  nodeSecret: string;
}

/** Int32 indexes into the shared counters: velocity minute, connections in it, then open connections per shard. */
export const COUNTER_MINUTE = 0;
export const COUNTER_IN_MINUTE = 1;
export const COUNTER_OPEN = 2;
