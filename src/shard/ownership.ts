// ID ownership (PROTOCOL.md §4 "Duplicate ID"). Each account has one owner shard; only it decides which
// connection holds an ID, so two connections racing for one ID on different shards never both win.
// The owner changes its directory, tells every other shard (DIR_SET/DIR_DEL) and answers a registration
// only after every live peer has applied the change: once a device reads [OK:<ID>], a push from any
// shard can reach it.

import { planValue } from '../config/schema.ts';
import type { FailCode } from '../protocol/codes.ts';
import type { Account } from '../routing/account.ts';
import { ALIVE, liveFlags, type StatusTables } from '../routing/handle.ts';
import type { PortLink } from '../runtime/link.ts';
import { OP } from '../runtime/messages.ts';

/** A registration decided by this owner, answered when every peer has applied its DIR_SET. */
interface AckWait {
  from: number;
  req: number;
  /** Per peer: the dirSent count that peer must acknowledge (0 = nothing to wait for). */
  need: number[];
}

export interface OwnerHost {
  readonly index: number;
  readonly status: StatusTables;
  readonly maxNode: readonly number[];
  /** Live links to peers, indexed by shard (undefined for self or a peer that is down). */
  readonly links: (PortLink | undefined)[];
  /** Answer a registration request (locally or through REG_RESULT). */
  answerRegistration(from: number, req: number, result: FailCode | ''): void;
  /** Cluster mode: an ID must also be claimed in the cluster directory before it is given. */
  readonly clustered: boolean;
  /** Cluster mode: claims `id` for this node; `done(false)` when a live other node holds it. */
  claim(acct: Account, id: string, done: (ok: boolean) => void): void;
  /** Cluster mode: gives a claim back (the registration it was for ended before it was decided). */
  unclaim(acct: Account, id: string): void;
  /** An ID came online or went offline (§5a). */
  presence(acct: Account, id: string, online: boolean): void;
  /** A registration was accepted (before it is answered): fetch its held backlog (§5 Hold). */
  registered(acct: Account, id: string, handle: number): void;
  scheduleFlush(): void;
}

export class Ownership {
  private readonly host: OwnerHost;
  private waits: AckWait[] = [];
  private waitHead = 0;
  /** Cluster mode: "account:ID" being claimed in the cluster directory; another registration meanwhile is refused. */
  private readonly claiming = new Set<string>();

  constructor(host: OwnerHost) {
    this.host = host;
  }

  /** Decides a registration of `id` by `handle` in an account this shard owns. */
  register(acct: Account, id: string, handle: number, from: number, req: number): void {
    const host = this.host;
    const cur = acct.devices.get(id);
    if (cur !== undefined && cur !== handle) {
      // §4: a live holder keeps its ID. One whose socket failed or that missed liveness is closed, so its
      // ALIVE flag is already clear: the newcomer takes the ID over.
      if (liveFlags(host.status, cur) & ALIVE) {
        host.answerRegistration(from, req, 'NODEEXIST');
        return;
      }
    } else if (cur === undefined && acct.devices.size >= planValue(host.maxNode, acct.level)) {
      host.answerRegistration(from, req, 'QUOTA');
      return;
    }
    if (host.clustered && cur !== handle) {
      // §4 across nodes: one place decides in the whole cluster too, the directory in Redis (a live other node's
      // holder keeps the ID). While the claim is out, the ID counts as held here.
      const key = `${acct.id}:${id}`;
      if (this.claiming.has(key)) {
        host.answerRegistration(from, req, 'NODEEXIST');
        return;
      }
      this.claiming.add(key);
      host.claim(acct, id, (ok) => {
        this.claiming.delete(key);
        if (!ok) {
          host.answerRegistration(from, req, 'NODEEXIST');
          return;
        }
        if (!(liveFlags(host.status, handle) & ALIVE)) {
          host.unclaim(acct, id); // the newcomer left while the cluster decided
          host.answerRegistration(from, req, 'NODEEXIST');
          return;
        }
        const now = acct.devices.get(id);
        if (now !== undefined && now !== handle && liveFlags(host.status, now) & ALIVE) {
          host.answerRegistration(from, req, 'NODEEXIST');
          return;
        }
        this.accept(acct, id, handle, now, from, req);
      });
      return;
    }
    this.accept(acct, id, handle, cur, from, req);
  }

  private accept(acct: Account, id: string, handle: number, cur: number | undefined, from: number, req: number): void {
    const host = this.host;
    acct.devices.set(id, handle);
    if (cur !== undefined && cur !== handle) host.presence(acct, id, false); // a takeover: OFFLINE, then ONLINE
    host.presence(acct, id, true);
    host.registered(acct, id, handle);
    const need = this.broadcast(OP.DIR_SET, acct.id, id, handle);
    if (need === null) host.answerRegistration(from, req, '');
    else this.waits.push({ from, req, need });
  }

  /** A registration ended; forget it if it still holds the ID. */
  unregister(acct: Account, id: string, handle: number): void {
    if (acct.devices.get(id) !== handle) return;
    acct.devices.delete(id);
    this.host.presence(acct, id, false);
    this.broadcast(OP.DIR_DEL, acct.id, id, handle);
  }

  /** Sends a DIR op to every live peer; returns what to wait for, or null when there is no peer. */
  private broadcast(op: number, account: number, id: string, handle: number): number[] | null {
    const { links } = this.host;
    let need: number[] | null = null;
    for (let p = 0; p < links.length; p++) {
      const link = links[p];
      if (link === undefined) continue;
      link.ops.push(op, account, id, handle);
      link.dirSent++;
      if (need === null) need = new Array<number>(links.length).fill(0);
      need[p] = link.dirSent;
    }
    if (need !== null) this.host.scheduleFlush();
    return need;
  }

  /** A peer acknowledged DIR ops (or died: pass Infinity); answer the registrations now complete. */
  acknowledged(): void {
    const { links } = this.host;
    while (this.waitHead < this.waits.length) {
      const w = this.waits[this.waitHead]!;
      let done = true;
      for (let p = 0; p < w.need.length; p++) {
        const n = w.need[p]!;
        if (n === 0) continue;
        const link = links[p];
        if (link !== undefined && link.dirAcked < n) {
          done = false;
          break;
        }
      }
      if (!done) break;
      this.waitHead++;
      this.host.answerRegistration(w.from, w.req, '');
    }
    if (this.waitHead > 1024 && this.waitHead * 2 > this.waits.length) {
      this.waits = this.waits.slice(this.waitHead);
      this.waitHead = 0;
    }
  }
}
