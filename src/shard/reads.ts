// Reads into one buffer per shard instead of a new Buffer per read.
//
// A net.Socket in the default mode reads every chunk into a fresh Buffer (its memory malloc'd, registered with the
// heap, swept and freed on V8's worker threads after the next scavenge) and pushes it through the Readable machinery
// (a 'data' emit and a nextTick per read). With the `onread` option of new net.Socket, Node reads into one buffer the
// caller owns and calls back with the byte count: no allocation per read. Sockets a server accepts cannot be given the
// option, so useSharedReads sets the same fields on them; their keys are found once, on a probe socket that is never
// connected. On a Node whose sockets lack them, nothing changes (the sockets keep their 'data' events).
//
// The buffer is overwritten by the next read: the callback must copy whatever it keeps past its return.

import { Socket } from 'node:net';

/** Bytes read per call at most: Node's own read size. */
export const READ_SIZE = 65536;

const PROBE_BUFFER = Buffer.alloc(1);
const probeCallback = (): boolean => true;
const probe = new Socket({ onread: { buffer: PROBE_BUFFER, callback: probeCallback } });
const fields = Object.getOwnPropertySymbols(probe);
const kBuffer = fields.find((k) => (probe as unknown as Record<symbol, unknown>)[k] === PROBE_BUFFER);
const kBufferCb = fields.find((k) => (probe as unknown as Record<symbol, unknown>)[k] === probeCallback);
probe.destroy();

/** Called with the socket as `this`, the bytes read and the shared buffer they are in (from offset 0). */
export type SharedReadCallback = (this: Socket, nread: number, buffer: Buffer) => unknown;

interface StreamHandle {
  useUserBuffer?: (buf: Uint8Array) => void;
}

/** True when this Node lets accepted sockets read into a caller's buffer. */
export const sharedReadsSupported = kBuffer !== undefined && kBufferCb !== undefined;

/**
 * From now on the socket's reads land in `buffer` and call `callback` (no more 'data' events for new bytes; chunks
 * the Readable already holds still come as 'data', in order, before any new read). False when the socket cannot
 * (TLS, no handle, another Node), which keeps its 'data' events.
 */
export function useSharedReads(socket: Socket, buffer: Buffer, callback: SharedReadCallback): boolean {
  if (!sharedReadsSupported || (socket as { encrypted?: boolean }).encrypted === true) return false;
  const handle = (socket as unknown as { _handle: StreamHandle | null })._handle;
  if (handle === null || typeof handle.useUserBuffer !== 'function') return false;
  const s = socket as unknown as Record<symbol, unknown>;
  s[kBuffer!] = buffer;
  s[kBufferCb!] = callback;
  handle.useUserBuffer(buffer);
  return true;
}
