// @p2pcluster/client: a typed Node.js client for the P2Pcluster raw-TCP IoT relay (see ../README.md).

export {
  type ClientEvents,
  type ConnectOptions,
  type KeepaliveOptions,
  Message,
  P2PClient,
  type Payload,
  type PresenceEvent,
  type RawOptions,
  type ReconnectOptions,
  type Target,
} from './client.ts';
export { CLIENT_CODES, type ClientCode, P2PError } from './errors.ts';
export { RawStream } from './raw.ts';
export type { GroupResult, LegacyTime, PushResult, Status, TimeFormat } from './replies.ts';
export {
  dstcpKey,
  hstcpMac,
  hstcpProof,
  md5Proof,
  type SecureMode,
  stcpSessionKey,
  tlsPsk,
  tlsPskKey,
} from './secure.ts';
