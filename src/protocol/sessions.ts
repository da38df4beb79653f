import { type ReassemblyBudget, UNIT_OVERHEAD_BYTES } from '../reliability/budget.js';
import type { Unit } from '../reliability/sender.js';
import type { InboundSession } from './connection/connection.js';
import { DeadlineHeap } from './deadline-heap.js';

/** What the server keeps of a session whose connection ended, until the client comes back. */
export interface ParkedSession {
  /** The session's resumption secret: only its client can continue it (docs/PROTOCOL.md, section 10). As server.ts keeps it: latin1. */
  resumeSecret: string;
  /** The client's reliable stream: units done (its `delivered` goes in ACCEPT), half-built messages. */
  inbound: InboundSession;
  /** Reliable units (messages or parts) to the client not known delivered, in order... */
  outbound: Unit[];
  /** ...and the session index of the first of them. */
  outboundBase: number;
  /** A send() to this client returned false and its 'drain' had not come: the next connection owes it. */
  owesDrain: boolean;
}

/**
 * Sessions outlive connections (docs/PROTOCOL.md, "Sessions"). When a connection ends
 * for any reason but the client's own close, the server parks what the next
 * connection needs to continue exactly where this one stopped; a client that
 * reconnects with the same session id picks it up. Bounded: at most `maxParked`
 * sessions (the oldest goes first) for at most `lingerMs` each.
 *
 * A parked session's half-built messages cannot grow until its client returns, so with
 * a shared budget (share()) they give way: they are not the budget's oldest builders
 * meanwhile, and when a connection that is there needs room the budget does not have,
 * parked sessions are forgotten for it, the one holding most first (as if expired: the
 * client starts a new session and resends whole what it cannot know delivered).
 */
export class SessionStore {
  private readonly live = new Map<string, number>();
  private readonly parked = new Map<string, ParkedSession>();
  private readonly expiry = new DeadlineHeap<string>();
  /** Parked sessions holding reassembly bytes (fixed while parked), and their sum. */
  private readonly holding = new Map<string, number>();
  private held = 0;
  private budget: ReassemblyBudget | undefined;
  /** Parked sessions forgotten to make room in the budget. */
  evicted = 0;

  constructor(
    private readonly maxParked: () => number,
    private readonly lingerMs: () => number,
    /** Called for a parked session forgotten without being taken (expired or evicted). */
    private readonly onDrop: (s: ParkedSession) => void = () => {},
  ) {}

  /** Parked sessions give way to live connections in this budget (the one their half-built messages are charged to). */
  share(budget: ReassemblyBudget): void {
    this.budget = budget;
    budget.reclaim = (n) => this.reclaim(n);
  }

  get parkedCount(): number {
    return this.parked.size;
  }

  liveConnection(key: string): number | undefined {
    return this.live.get(key);
  }

  bind(key: string, connId: number): void {
    this.live.set(key, connId);
  }

  unbind(key: string, connId: number): void {
    if (this.live.get(key) === connId) this.live.delete(key);
  }

  park(key: string, s: ParkedSession, now: number): void {
    const old = this.parked.get(key);
    if (old && old !== s) this.onDrop(old);
    this.forget(key);
    this.parked.set(key, s);
    this.expiry.set(key, now + this.lingerMs());
    let bytes = (s.inbound.state.above?.size ?? 0) * UNIT_OVERHEAD_BYTES;
    for (const a of s.inbound.assemblers?.values() ?? []) {
      this.budget?.stopBuilding(a);
      bytes += a.held;
    }
    if (bytes > 0) {
      this.holding.set(key, bytes);
      this.held += bytes;
    }
    while (this.parked.size > this.maxParked()) this.drop(this.parked.keys().next().value!);
  }

  /** A parked session, left where it is. */
  peek(key: string): ParkedSession | undefined {
    return this.parked.get(key);
  }

  /** Removes and returns a parked session; its half-built messages may grow again (the newest builders now). */
  take(key: string): ParkedSession | undefined {
    const s = this.parked.get(key);
    if (s) {
      this.forget(key);
      for (const a of s.inbound.assemblers?.values() ?? []) if (a.building) this.budget?.startBuilding(a);
    }
    return s;
  }

  handleTimeout(now: number): void {
    for (const key of this.expiry.popDue(now)) this.drop(key);
  }

  /**
   * Forgets parked sessions, the one holding most first (the fewest clients start
   * over), until n bytes are free; none if all of them together hold less.
   */
  private reclaim(n: number): boolean {
    if (this.held < n) return false;
    for (let freed = 0; freed < n; ) {
      let key: string | undefined;
      let most = 0;
      for (const [k, b] of this.holding) {
        if (b > most) {
          key = k;
          most = b;
        }
      }
      if (key === undefined) return false;
      this.drop(key);
      this.evicted++;
      freed += most;
    }
    return true;
  }

  private drop(key: string): void {
    const s = this.parked.get(key);
    this.forget(key);
    if (s) this.onDrop(s);
  }

  private forget(key: string): void {
    this.parked.delete(key);
    this.expiry.delete(key);
    this.held -= this.holding.get(key) ?? 0;
    this.holding.delete(key);
  }

  nextDeadline(): number {
    return this.expiry.peek();
  }
}
