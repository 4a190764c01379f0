// V8 settings for a server whose shard threads each carry a core's worth of work (docs/performance.md, "V8's worker
// threads below the shards"). Process-wide: they apply to the supervisor's isolate and every shard's.

import { readdirSync, readFileSync } from 'node:fs';
import { setPriority } from 'node:os';
import { setFlagsFromString } from 'node:v8';

export interface V8Tuning {
  /** Scavenges helped by V8's worker threads (true) or done by the collecting thread alone (false). */
  parallelScavenge: boolean;
  /** Nice value for V8's worker threads (JIT compiles, concurrent marking and sweeping); 0 leaves them as they are. */
  backgroundNice: number;
}

/**
 * Applies the settings; returns how many of V8's worker threads were given the nice value (0 where /proc or
 * setpriority is not available: Linux names them `V8Worker`).
 *
 * - Without parallel scavenges a shard collects its young generation (small: `PServer.SHARD_YOUNG_MB`) alone, so
 *   it never waits for a helper thread that must first win a core.
 * - V8's worker threads below the shards: TurboFan compiles a hot function in milliseconds on one of them, and at
 *   the priority of the shards it takes a core from a shard (or from the process whose messages the shard waits
 *   for); at a low one it runs when a core is free. Nothing waits on a compile. But concurrent marking and sweeping
 *   run there too, and a collection's final pause waits for them: where other processes keep every core busy, they
 *   starve and the pause grows (the hostile-client suite, run beside the other test files on two cores, missed its
 *   100 ms bound with nice 19). Hence off by default, for boxes the server has to itself.
 */
export function tuneV8(t: V8Tuning): number {
  // Only ever turned off (V8 reads it at each scavenge); the default is left untouched, flags included.
  if (!t.parallelScavenge) setFlagsFromString('--no-parallel-scavenge');
  if (t.backgroundNice === 0) return 0;
  let tasks: string[];
  try {
    tasks = readdirSync('/proc/self/task');
  } catch {
    return 0;
  }
  let n = 0;
  for (const tid of tasks) {
    try {
      if (readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim() !== 'V8Worker') continue;
      setPriority(Number(tid), t.backgroundNice);
      n++;
    } catch {
      // the thread ended meanwhile, or the system refuses: it keeps its priority
    }
  }
  return n;
}
