import type { Unit } from '../reliability/sender.js';
import type { InboundSession } from './connection.js';
import { DeadlineHeap } from './deadline-heap.js';

/** Who may continue a session (docs/PROTOCOL.md, section 10). */
export interface SessionAuth {
  /** The resumption secret, from the X25519 exchange of the session's first connection. */
  readonly secret: Uint8Array;
}

/** What the server keeps of a session whose connection ended, until the client comes back. */
export interface ParkedSession {
  auth: SessionAuth;
  /** The client's reliable stream: units done (its `delivered` goes in ACCEPT), half-built messages. */
  inbound: InboundSession;
  /** Reliable units (messages or parts) to the client not known delivered, in order... */
  outbound: Unit[];
  /** ...and the session index of the first of them. */
  outboundBase: number;
}

/**
 * Sessions outlive connections (docs/PROTOCOL.md, "Sessions"). When a connection ends
 * for any reason but the client's own close, the server parks what the next
 * connection needs to continue exactly where this one stopped; a client that
 * reconnects with the same session id picks it up. Bounded: at most `maxParked`
 * sessions (the oldest goes first) for at most `lingerMs` each.
 */
export class SessionStore {
  private readonly live = new Map<string, number>();
  private readonly parked = new Map<string, ParkedSession>();
  private readonly expiry = new DeadlineHeap<string>();

  constructor(
    private readonly maxParked: () => number,
    private readonly lingerMs: () => number,
    /** Called for a parked session forgotten without being taken (expired or evicted). */
    private readonly onDrop: (s: ParkedSession) => void = () => {},
  ) {}

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
    this.parked.delete(key);
    this.parked.set(key, s);
    this.expiry.set(key, now + this.lingerMs());
    while (this.parked.size > this.maxParked()) {
      const oldest = this.parked.keys().next().value!;
      this.onDrop(this.parked.get(oldest)!);
      this.parked.delete(oldest);
      this.expiry.delete(oldest);
    }
  }

  /** A parked session, left where it is. */
  peek(key: string): ParkedSession | undefined {
    return this.parked.get(key);
  }

  /** Removes and returns a parked session. */
  take(key: string): ParkedSession | undefined {
    const s = this.parked.get(key);
    if (s) {
      this.parked.delete(key);
      this.expiry.delete(key);
    }
    return s;
  }

  handleTimeout(now: number): void {
    for (const key of this.expiry.popDue(now)) {
      const s = this.parked.get(key);
      if (s) this.onDrop(s);
      this.parked.delete(key);
    }
  }

  nextDeadline(): number {
    return this.expiry.peek();
  }
}
