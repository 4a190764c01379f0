// A registered device whose replies and deliveries share one socket, for the suites that push between devices
// (hold, presence, topology): lines are sorted, so `req` returns the reply to a command while deliveries
// (`PUSH:...`) that arrive meanwhile wait in `inbox`, in order.

import { expect } from 'vitest';
import type { TestClient } from './client.ts';
import type { Devices } from './devices.ts';
import type { TestServer } from './server.ts';
import { sleep } from './shards.ts';

export interface PeerOptions {
  /**
   * `[SYNC:...]` liveness lines: `keep` (a line like any reply: a test fails on one), `skip`, or `answer` (skipped,
   * and answered as a live device does (§2), so servers with a short COM_CHK keep the device). Default `keep`.
   */
  sync?: 'keep' | 'skip' | 'answer';
  /** Presence events (`PRESENCE:...`) are filed in `events` (else they are replies like any other line). */
  presence?: boolean;
}

export class Peer {
  readonly c: TestClient;
  id: string;
  readonly inbox: string[] = [];
  readonly events: string[] = [];
  private readonly opts: PeerOptions;
  private readonly skipSync: boolean;
  constructor(c: TestClient, id: string, opts: PeerOptions = {}) {
    this.c = c;
    this.id = id;
    this.opts = opts;
    this.skipSync = opts.sync === 'skip' || opts.sync === 'answer';
    if (opts.sync === 'answer') c.answerSync = true;
  }

  /** Reads one line; returns it if it is a reply, else files it (or skips a SYNC) and returns null. */
  private async read(ms: number): Promise<string | null> {
    const l = await this.c.line(ms);
    if (l.startsWith('PUSH:')) this.inbox.push(l);
    else if (this.opts.presence && l.startsWith('PRESENCE:')) this.events.push(l);
    else if (!(this.skipSync && l.startsWith('[SYNC:'))) return l;
    return null;
  }

  /** The next reply line. */
  async reply(ms = 5000): Promise<string> {
    for (;;) {
      const l = await this.read(ms);
      if (l !== null) return l;
    }
  }

  async req(cmd: string, ms = 5000): Promise<string> {
    this.c.write(`${cmd}\r\n`);
    return this.reply(ms);
  }

  /** Writes every command in one segment and returns their n replies in order. */
  async pipeline(cmds: string[], ms = 5000): Promise<string[]> {
    this.c.write(cmds.map((x) => `${x}\r\n`).join(''));
    const out: string[] = [];
    for (let i = 0; i < cmds.length; i++) out.push(await this.reply(ms));
    return out;
  }

  /** The next n deliveries, in order; a reply in between is an error. */
  async recv(n: number, ms = 5000): Promise<string[]> {
    while (this.inbox.length < n) {
      const l = await this.read(ms);
      if (l !== null) throw new Error(`${this.id}: unexpected reply ${l} while waiting for deliveries`);
    }
    return this.inbox.splice(0, n);
  }

  /** Waits until `n` presence events have arrived (in total, since the last take) and takes them all. */
  async presence(n: number, ms = 5000): Promise<string[]> {
    try {
      while (this.events.length < n) {
        const l = await this.read(ms);
        if (l !== null) throw new Error(`${this.id}: unexpected reply ${l} while waiting for presence events`);
      }
    } catch (err) {
      throw new Error(`${this.id}: ${(err as Error).message}; events so far ${JSON.stringify(this.events)}`);
    }
    return this.events.splice(0);
  }
}

export interface Peers {
  /** A Peer of this suite's kind over `c`. */
  peer(c: TestClient, id: string): Peer;
  /** Registers `id` on a new connection; the reply must be exactly `[OK:<ID>]` (held messages stay unread). */
  dev(key: string, id: string, s?: TestServer): Promise<Peer>;
  /** `dev` on a connection of shard `shard`. */
  devOn(shard: number, key: string, id: string, s?: TestServer): Promise<Peer>;
  /** Closes a device (FIN, or RST with `reset`) and waits until `asker` sees it offline (STATUS). */
  leave(p: Peer, asker: Peer, key: string, reset?: boolean): Promise<void>;
  /** `to` has nothing more queued from `from`: a fresh RID marker from `from` must be its very next delivery. */
  nothingMore(from: Peer, key: string, to: Peer): Promise<void>;
}

/** Peers over the connections of `conns`, every one sorting its lines as `opts` says. */
export function peers(conns: Devices, opts: PeerOptions = {}): Peers {
  const peer = (c: TestClient, id: string): Peer => new Peer(c, id, opts);
  const register = async (c: TestClient, key: string, id: string): Promise<Peer> => {
    const p = peer(c, id.toUpperCase());
    expect(await p.req(`TCP:ID:${key}:${id}`)).toBe(`[OK:${id.toUpperCase()}]`);
    return p;
  };
  let marks = 0;
  return {
    peer,
    dev: async (key, id, s) => register(await conns.open(s), key, id),
    devOn: async (shard, key, id, s) => register(await conns.openOn(shard, s), key, id),
    async leave(p, asker, key, reset = false) {
      if (reset) p.c.socket.resetAndDestroy();
      else p.c.close();
      const deadline = Date.now() + 5000;
      for (;;) {
        const r = await asker.req(`TCP:STATUS:${key}:${p.id}`);
        if (r.startsWith('[OK:OFFLINE:')) return;
        if (Date.now() > deadline) throw new Error(`${p.id} still ${r}`);
        await sleep(10);
      }
    },
    async nothingMore(from, key, to) {
      const mark = `mark-${++marks}`;
      expect(await from.req(`TCP:PUSH:${key}:RID:${to.id}:${mark}`)).toBe('[OK:DATA_SENT]');
      expect(await to.recv(1), `${to.id} received something unexpected from ${from.id}`).toEqual([`PUSH:${mark}`]);
    },
  };
}
