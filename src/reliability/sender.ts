import { Deque } from './deque.js';
import { RECEIVE_WINDOW } from './receiver.js';

/** A reliable message from the moment it is queued until the peer acknowledges it. */
export interface OutMessage {
  readonly channel: number;
  /** Position in the channel's stream; the wire carries (initialSeq + index) mod 2^16. */
  readonly index: number;
  readonly seq: number;
  readonly data: Uint8Array;
  acked: boolean;
  /** Waiting in the fresh or retransmit queue. */
  queued: boolean;
  sendCount: number;
}

/**
 * The sending half of reliable ordered delivery for one channel. Messages get their
 * sequence number when queued (so order is fixed by send()), go out when the window
 * allows, and are queued again when a packet carrying them is lost. A message is done
 * only when acknowledged; the same message may travel in several packets, and the
 * receiver's sequence check removes the copies.
 */
export class ReliableSender {
  private nextIndex = 0;
  /** Every message not yet acknowledged, in index order; sent or not. */
  private readonly unacked = new Deque<OutMessage>();
  private readonly fresh = new Deque<OutMessage>();
  private readonly retransmit = new Deque<OutMessage>();
  retransmissions = 0;

  constructor(
    readonly channel = 0,
    private readonly initialSeq = 0,
  ) {}

  /** Messages not yet acknowledged (queued or in flight). */
  get length(): number {
    return this.unacked.length;
  }

  get unsent(): number {
    return this.fresh.length;
  }

  enqueue(data: Uint8Array): OutMessage {
    const index = this.nextIndex++;
    const m: OutMessage = { channel: this.channel, index, seq: (this.initialSeq + index) & 0xffff, data, acked: false, queued: true, sendCount: 0 };
    this.unacked.push(m);
    this.fresh.push(m);
    return m;
  }

  /**
   * The next message to put in a packet, retransmissions first; undefined if none may
   * go now (nothing queued, or the receiver's window would be exceeded).
   */
  peek(): OutMessage | undefined {
    let m = this.retransmit.peek();
    while (m && m.acked) {
      this.retransmit.shift();
      m.queued = false;
      m = this.retransmit.peek();
    }
    if (m) return m;
    const f = this.fresh.peek();
    const oldest = this.unacked.peek();
    if (f && oldest && f.index - oldest.index < RECEIVE_WINDOW) return f;
    return undefined;
  }

  /** Marks the message peek() returned as put into a packet. */
  take(m: OutMessage): void {
    if (this.retransmit.peek() === m) {
      this.retransmit.shift();
      this.retransmissions++;
    } else if (this.fresh.peek() === m) this.fresh.shift();
    else throw new Error('take() of a message that is not at the head of a queue');
    m.queued = false;
    m.sendCount++;
  }

  onAcked(m: OutMessage): void {
    m.acked = true;
    while (this.unacked.peek()?.acked) this.unacked.shift();
  }

  /** A packet carrying m was lost: send it again unless already acknowledged or queued. */
  onLost(m: OutMessage): void {
    if (m.acked || m.queued) return;
    m.queued = true;
    this.retransmit.push(m);
  }

  /** Probe timeout: queue every message in flight again (oldest first). */
  requeueInFlight(): number {
    let n = 0;
    for (const m of this.unacked) {
      if (!m.acked && !m.queued && m.sendCount > 0) {
        this.onLost(m);
        n++;
      }
    }
    return n;
  }

  /**
   * For the next connection: every message from the oldest unacknowledged one on, in
   * order, and the index of the first. Acknowledged messages after a gap are included:
   * acknowledged is not delivered (the receiver may hold them waiting for the gap),
   * and a receiver that resumes the session skips what it did deliver.
   */
  takeAll(): { messages: Uint8Array[]; firstIndex: number } {
    const all = this.unacked.clear();
    this.fresh.clear();
    this.retransmit.clear();
    return { messages: all.map((m) => m.data), firstIndex: all[0]?.index ?? this.nextIndex };
  }
}
