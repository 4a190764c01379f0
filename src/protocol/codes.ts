// The one registry of reply codes (PROTOCOL.md §4, §5). `[FAIL:<code>]` is what a device sees;
// errors cross threads as these codes (plain data), never as Error objects.

export const FAIL = {
  NOID: 'a command other than ID before the connection registered an ID',
  NOKEY: 'the KEY belongs to another account than the registered one',
  INVALID_KEY: 'unknown or malformed KEY',
  INVALID_CMD: 'unknown TCP sub-command',
  INVALID_FORMAT: 'a required field is missing',
  UNKNOWN_COMMAND: 'the line does not start with TCP:, STCP:, DSTCP:, HSTCP: or an HTTP method',
  UNKNOWN_CMD: 'unknown PUSH target',
  NODEEXIST: 'the ID is held by a live connection',
  INVALID_DATA: 'a field has a bad value (ID characters or length, RETDATA index)',
  QUOTA: "the account's plan allows no more registered devices",
  REM_ID: 'the target device is not connected',
  REM_LINK: "the target device's outbound buffer is full",
  NO_ID: 'no device of the group received the message',
  NO_PARENT: 'the device is a root of the tree',
  NO_ROUTER: 'no such router, or the sender is not a member',
  NO_ALIAS: 'no such alias',
  FANOUT_LIMIT: 'the group is larger than NODE.MAX_FANOUT',
  RATE_LIMIT: "the account's push rate was exceeded",
  NO_DATA: 'RETDATA index past the cached payloads',
  LINE_TOO_LONG: 'the line is longer than NODE.MAX_LINE',
  SERVER_FULL: 'PServer.MAXLOAD connections are open',
  MAIL_DISABLED: 'no SMTP server is configured, or the plan forbids mail',
  SMS_DISABLED: 'no SMS gateway is configured, or the plan forbids SMS',
  INVALID_ID: 'bad e-mail address or phone number',
  INVALID_USERID: 'unknown account in a secure-session command',
  UNAVAILABLE: 'the part of the server that decides this is restarting or unreachable (cluster: Redis); try again',
  SECURE_REQUIRED: "the account's plan requires TLS or an HSTCP session (USER.REQUIRE_SECURE)",
} as const;

export type FailCode = keyof typeof FAIL;

/** `[FAIL:<code>]\r\n`, precomputed for every code. */
export const FAIL_LINE: { readonly [K in FailCode]: string } = Object.freeze(
  Object.fromEntries(Object.keys(FAIL).map((k) => [k, `[FAIL:${k}]\r\n`])) as { [K in FailCode]: string },
);

export function isFailCode(s: string): s is FailCode {
  return Object.hasOwn(FAIL, s);
}
