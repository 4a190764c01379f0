// Structured logs with pino. Never log a KEY; nothing per message at info.

import { type Logger, pino } from 'pino';

export function createLogger(level: string, bindings: Record<string, unknown> = {}): Logger {
  return pino({ level, base: { pid: process.pid, ...bindings } }, pino.destination({ dest: 1, sync: false }));
}
