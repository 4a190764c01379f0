// Shard worker thread entry: wires workerData to a ShardActor (src/shard/shard.ts).
import { workerData } from 'node:worker_threads';
import { createLogger } from '../src/log.ts';
import type { ShardInit } from '../src/runtime/messages.ts';
import { ShardActor } from '../src/shard/shard.ts';

const init = workerData as ShardInit;
const actor = new ShardActor(init, createLogger(init.config.LOG.LEVEL, { shard: init.index }));
await actor.start();
