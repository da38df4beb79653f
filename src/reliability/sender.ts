import { Deque } from './deque.js';
import { RECEIVE_WINDOW } from './receiver.js';

/** A reliable message from the moment it is queued until the peer acknowledges it. */
export interface OutMessage {
  readonly channel: number;
  /** Position in the channel's stream; the wire carries (initialSeq + index) mod 2^16. */
  readonly index: number;
  readonly seq: number;
  readonly data: Uint8Array;
  /** Undefined for a whole message; for a part of a larger one, whether it is the final part. */
  readonly last: boolean | undefined;
  acked: boolean;
  /** Waiting in the fresh or retransmit queue. */
  queued: boolean;
  sendCount: number;
}

/** A unit of the reliable stream as it must be sent again on another connection. */
export interface Unit {
  data: Uint8Array;
  last: boolean | undefined;
}

/**
 * Splits a reliable message into the units it travels as: itself if it fits one
 * packet, else consecutive parts of `partSize` bytes (views, not copies), the final one
 * marked.
 */
export function splitMessage(data: Uint8Array, maxWhole: number, partSize: number): Unit[] {
  if (data.length <= maxWhole) return [{ data, last: undefined }];
  const units: Unit[] = [];
  for (let at = 0; at < data.length; at += partSize) units.push({ data: data.subarray(at, at + partSize), last: at + partSize >= data.length });
  return units;
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
  /**
   * Every unit not yet acknowledged, in index order, sent or not; plus, at the front,
   * the acknowledged parts of a message whose other parts are not (a reconnect must
   * resend a message whole: the receiver's half-built message dies with its connection).
   */
  private readonly unacked = new Deque<OutMessage>();
  /** How many units at the front of `unacked` are acknowledged. */
  private ackedPrefix = 0;
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

  enqueue(data: Uint8Array, last?: boolean): OutMessage {
    const index = this.nextIndex++;
    const m: OutMessage = { channel: this.channel, index, seq: (this.initialSeq + index) & 0xffff, data, last, acked: false, queued: true, sendCount: 0 };
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
    const oldest = this.unacked.at(this.ackedPrefix);
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
    // Extend the acknowledged prefix; each time it reaches the end of a message, forget
    // everything up to there (acknowledged units go a whole message at a time).
    for (let u = this.unacked.at(this.ackedPrefix); u?.acked; u = this.unacked.at(this.ackedPrefix)) {
      this.ackedPrefix++;
      if (u.last === false) continue;
      for (; this.ackedPrefix > 0; this.ackedPrefix--) this.unacked.shift();
    }
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
  takeAll(): { units: Unit[]; firstIndex: number } {
    const all = this.unacked.clear();
    this.fresh.clear();
    this.retransmit.clear();
    this.ackedPrefix = 0;
    return { units: all.map((m) => ({ data: m.data, last: m.last })), firstIndex: all[0]?.index ?? this.nextIndex };
  }
}
