import { seqAdd, seqDiff } from './seq.js';

/**
 * How many messages past the next expected one a receiver buffers per channel. The
 * sender never sends a sequence number this far ahead of its oldest unacknowledged
 * message (sender.ts), so nothing legitimate is refused, and a hostile peer can make
 * us hold at most this many messages per channel.
 */
export const RECEIVE_WINDOW = 1024;

export type ReceiveResult = 'delivered' | 'buffered' | 'duplicate' | 'out-of-window';

/**
 * Reliable, ordered delivery for one channel: messages are released strictly in
 * sequence order, exactly once. Out-of-order arrivals wait in a bounded buffer.
 */
export class OrderedReceiver {
  private next: number;
  private readonly buffer = new Map<number, { data: Uint8Array; last: boolean | undefined }>();

  constructor(initialSeq = 0) {
    this.next = initialSeq & 0xffff;
  }

  get buffered(): number {
    return this.buffer.size;
  }

  /** Offers a received message; in-order messages (and any they unblock) go to `deliver`. */
  receive(seq: number, data: Uint8Array, deliver: (data: Uint8Array, last: boolean | undefined) => void, last?: boolean): ReceiveResult {
    const d = seqDiff(this.next, seq);
    if (d < 0) return 'duplicate';
    if (d >= RECEIVE_WINDOW) return 'out-of-window';
    if (d > 0) {
      if (this.buffer.has(seq)) return 'duplicate';
      this.buffer.set(seq, { data, last });
      return 'buffered';
    }
    deliver(data, last);
    this.next = seqAdd(this.next, 1);
    for (let m = this.buffer.get(this.next); m !== undefined; m = this.buffer.get(this.next)) {
      this.buffer.delete(this.next);
      deliver(m.data, m.last);
      this.next = seqAdd(this.next, 1);
    }
    return 'delivered';
  }
}
