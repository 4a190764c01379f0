// /metrics in the Prometheus text format (prom-client): the shards' counters, collected on each scrape, plus
// store gauges and the process metrics of the supervisor's registry.

import { Counter, collectDefaultMetrics, Gauge, Registry } from 'prom-client';
import type { Store } from '../store/store.ts';
import type { Supervisor } from '../supervisor/supervisor.ts';

type Snapshot = Map<string, number>[];

export class Metrics {
  readonly registry = new Registry();
  private latest: Snapshot = [];

  constructor(supervisor: Supervisor, store: Store) {
    collectDefaultMetrics({ register: this.registry, prefix: 'p2pc_' });
    const sum = (name: string): number => this.latest.reduce((a, m) => a + (m.get(name) ?? 0), 0);
    const labelled = (prefix: string): Map<string, number> => {
      const out = new Map<string, number>();
      for (const m of this.latest) {
        for (const [k, v] of m) {
          if (!k.startsWith(`${prefix}|`)) continue;
          const label = k.slice(prefix.length + 1);
          out.set(label, (out.get(label) ?? 0) + v);
        }
      }
      return out;
    };
    const counter = (name: string, help: string, key: string, own: () => number = () => 0): void => {
      new Counter({
        name,
        help,
        registers: [this.registry],
        collect() {
          this.reset();
          this.inc(sum(key) + own());
        },
      });
    };
    const self = this;
    const perShard = (name: string, help: string, key: string): void => {
      new Gauge({
        name,
        help,
        labelNames: ['shard'],
        registers: [this.registry],
        collect() {
          this.reset();
          self.latest.forEach((m, i) => {
            this.set({ shard: String(i) }, m.get(key) ?? 0);
          });
        },
      });
    };
    perShard('p2pc_connections', 'open device connections, per shard', 'connections');
    perShard(
      'p2pc_event_loop_lag_p99_seconds',
      'event-loop delay p99 of each shard since the last scrape',
      'event_loop_lag_p99',
    );
    counter('p2pc_registrations_total', 'successful TCP:ID registrations', 'registrations');
    counter('p2pc_deliveries_total', 'PUSH lines queued to devices', 'deliveries');
    counter('p2pc_bytes_in_total', 'bytes read from devices', 'bytes_in');
    counter('p2pc_bytes_out_total', 'bytes written to devices', 'bytes_out');
    counter('p2pc_cross_thread_batches_total', 'msgpackr batches posted between threads', 'batches_out');
    counter(
      'p2pc_link_pauses_total',
      'devices whose reading paused because a link to another shard had PServer.LINK_MAX_BYTES in flight',
      'link_pauses',
    );
    counter('p2pc_presence_events_total', 'PRESENCE lines sent to watchers', 'presence_events');
    counter('p2pc_wills_fired_total', 'last wills pushed after an unexpected end', 'wills_fired');
    counter('p2pc_liveness_closed_total', 'registered connections closed for missing liveness', 'liveness_closed');
    counter('p2pc_held_pushes_total', 'pushes held for offline devices', 'held_pushes');
    const reducer = () => supervisor.reducer;
    counter(
      'p2pc_idle_collections_total',
      'memory-reducing collections the shards and the supervisor ran once quiet after their heap grew (PServer.IDLE_GC_MS)',
      'idle_collections',
      () => reducer()?.collections ?? 0,
    );
    counter(
      'p2pc_idle_collection_seconds_total',
      'time the threads spent in those collections',
      'idle_collect_seconds',
      () => (reducer()?.collectMs ?? 0) / 1000,
    );
    counter(
      'p2pc_idle_released_bytes_total',
      'committed heap those collections gave back',
      'idle_released_bytes',
      () => reducer()?.releasedBytes ?? 0,
    );
    counter(
      'p2pc_raw_node_streams_opened_total',
      'RAW links this node opened to a device on another node',
      'raw_node_out',
    );
    counter(
      'p2pc_raw_node_streams_accepted_total',
      'signed RAW stream headers from another node taken (a link asked for a device here)',
      'raw_node_in',
    );
    const byLabel = (name: string, help: string, label: string, prefix: string): void => {
      new Counter({
        name,
        help,
        labelNames: [label],
        registers: [this.registry],
        collect() {
          this.reset();
          for (const [v, n] of labelled(prefix)) this.inc({ [label]: v }, n);
        },
      });
    };
    byLabel('p2pc_pushes_total', 'PUSH commands by target kind', 'target', 'pushes');
    byLabel('p2pc_delivered_total', 'messages pushes delivered, by target kind of the push', 'target', 'delivered');
    byLabel('p2pc_failures_total', '[FAIL:<code>] replies by code', 'code', 'failures');
    new Gauge({
      name: 'p2pc_held_messages',
      help: 'messages held for offline devices',
      registers: [this.registry],
      async collect() {
        this.set(await store.heldCount());
      },
    });
    new Counter({
      name: 'p2pc_held_dropped_total',
      help: 'held messages dropped because a device reached its HOLDBUFFER',
      registers: [this.registry],
      async collect() {
        const n = await store.heldDropped();
        this.reset();
        this.inc(n);
      },
    });
    new Gauge({
      name: 'p2pc_outbox_messages',
      help: 'outbox messages (e-mail and SMS) by state',
      labelNames: ['state'],
      registers: [this.registry],
      async collect() {
        const counts = await store.outboxCounts();
        this.reset();
        for (const [state, n] of Object.entries(counts)) this.set({ state }, n);
      },
    });
    new Gauge({
      name: 'p2pc_shards_ready',
      help: 'shard workers up and listening',
      registers: [this.registry],
      collect() {
        this.set(supervisor.readyShards());
      },
    });
    this.supervisor = supervisor;
  }

  private readonly supervisor: Supervisor;

  /** Asks every shard for its counters, then renders the registry. */
  async render(): Promise<string> {
    this.latest = await this.supervisor.shardMetrics();
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
