// Reply and delivery lines (PROTOCOL.md §1, §4, §5). Every line ends with CRLF.

export const CRLF = '\r\n';

export const OK_DATA_SENT = '[OK:DATA_SENT]\r\n';
export const OK_NODEREMOVED = '[OK:NODEREMOVED]\r\n';
export const OK_MAIL_SENT = '[OK:MAIL_SENT]\r\n';
export const OK_DATA_HELD = '[OK:DATA_HELD]\r\n';
export const OK_SMS_SENT = '[OK:SMS_SENT]\r\n';

export function ok(value: string): string {
  return `[OK:${value}]\r\n`;
}

/** `[FAIL:<text>]` for a text that is not a registry code (the current ID of `TCP:ID`). */
export function failWith(text: string): string {
  return `[FAIL:${text}]\r\n`;
}

/** Group reply: all `[OK:ALL_<n>]`, some `[OK:<d>/<t>]`, none `[FAIL:NO_ID]`. */
export function groupReply(delivered: number, total: number): string {
  if (delivered === 0) return '[FAIL:NO_ID]\r\n';
  if (delivered === total) return `[OK:ALL_${total}]\r\n`;
  return `[OK:${delivered}/${total}]\r\n`;
}

/** A delivered message: `PUSH:<DATA>` + CRLF. */
export function pushLine(data: string): string {
  return `PUSH:${data}\r\n`;
}

const pad2 = (n: number): string => (n < 10 ? `0${n}` : String(n));

/** `[SYNC:dd.MM.yyyy_HH:mm:ss]` in server local time (PROTOCOL.md §2). */
export function syncLine(d: Date): string {
  return (
    `[SYNC:${pad2(d.getDate())}.${pad2(d.getMonth() + 1)}.${d.getFullYear()}_` +
    `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}]\r\n`
  );
}
