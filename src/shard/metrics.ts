// Counters one shard keeps for /metrics (issue 10): plain numbers bumped on the hot path, sent to the
// supervisor when it scrapes. Never per-message logging, never a per-message allocation.

import { monitorEventLoopDelay } from 'node:perf_hooks';
import { TARGET } from '../protocol/parser.ts';
import type { IdleMemoryReducer } from '../runtime/memory-reducer.ts';

export const TARGET_NAMES: readonly string[] = (() => {
  const names: string[] = [];
  for (const [k, v] of Object.entries(TARGET)) names[v] = k;
  return names;
})();

export class ShardMetrics {
  registrations = 0;
  /** Pushes by PUSH target (index = TARGET value). */
  readonly pushes: number[] = new Array(TARGET_NAMES.length).fill(0);
  deliveries = 0;
  /** Messages a push delivered (here, or promised to another shard), by its target kind. */
  readonly delivered: number[] = new Array(TARGET_NAMES.length).fill(0);
  readonly failures = new Map<string, number>();
  bytesIn = 0;
  bytesOut = 0;
  batchesOut = 0;
  /** Devices whose reading was paused because a link to another shard had LINK_MAX_BYTES in flight. */
  linkPauses = 0;
  presenceEvents = 0;
  willsFired = 0;
  /** Registered connections closed for missing liveness (silent two ticks). */
  livenessClosed = 0;
  heldPushes = 0;
  /** Cluster mode: RAW links opened to a device on another node, and accepted from another node. */
  rawNodeOut = 0;
  rawNodeIn = 0;
  /** The shard's idle memory reducer, whose collections are reported here (null: PServer.IDLE_GC_MS = 0). */
  reducer: IdleMemoryReducer | null = null;
  private readonly lag = monitorEventLoopDelay({ resolution: 20 });

  constructor() {
    this.lag.enable();
  }

  fail(code: string): void {
    this.failures.set(code, (this.failures.get(code) ?? 0) + 1);
  }

  /** Flat snapshot for the METRICS_RESULT op: [name, value, ...] with labelled names as `name|label`. */
  snapshot(connections: number): (string | number)[] {
    const reducer = this.reducer;
    const out: (string | number)[] = [
      'connections',
      connections,
      'registrations',
      this.registrations,
      'deliveries',
      this.deliveries,
      'bytes_in',
      this.bytesIn,
      'bytes_out',
      this.bytesOut,
      'batches_out',
      this.batchesOut,
      'link_pauses',
      this.linkPauses,
      'presence_events',
      this.presenceEvents,
      'wills_fired',
      this.willsFired,
      'liveness_closed',
      this.livenessClosed,
      'held_pushes',
      this.heldPushes,
      'raw_node_out',
      this.rawNodeOut,
      'raw_node_in',
      this.rawNodeIn,
      'idle_collections',
      reducer?.collections ?? 0,
      'idle_collect_seconds',
      (reducer?.collectMs ?? 0) / 1000,
      'idle_released_bytes',
      reducer?.releasedBytes ?? 0,
      'event_loop_lag_p99',
      this.lag.percentile(99) / 1e9,
    ];
    this.pushes.forEach((n, t) => {
      if (t > 0) out.push(`pushes|${TARGET_NAMES[t]}`, n);
    });
    this.delivered.forEach((n, t) => {
      if (t > 0) out.push(`delivered|${TARGET_NAMES[t]}`, n);
    });
    for (const [code, n] of this.failures) out.push(`failures|${code}`, n);
    this.lag.reset();
    return out;
  }
}
