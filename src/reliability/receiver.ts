import { type ReassemblyBudget, unlimitedBudget } from './budget.js';
import { seqAdd, seqDiff } from './seq.js';

/**
 * How many messages past the next expected one a receiver buffers per channel. The
 * sender never sends a sequence number this far ahead of its oldest unacknowledged
 * message (sender.ts), so nothing legitimate is refused, and a hostile peer can make
 * us hold at most this many messages per channel.
 */
export const RECEIVE_WINDOW = 8192;
/**
 * The same window in bytes: a sender never has more than this much of the stream past
 * its oldest unacknowledged unit, so a receiver never buffers more out of order (plus
 * one unit of slack for a unit that was cut before the window shrank).
 */
export const RECEIVE_WINDOW_BYTES = 4 * 1024 * 1024;
const BUFFER_LIMIT = RECEIVE_WINDOW_BYTES + 65536;

/**
 * 'refused': not taken for lack of memory (the budget, or the consumer said no); the
 * packet that carried it must not be acknowledged, so that it is sent again.
 */
export type ReceiveResult = 'delivered' | 'buffered' | 'duplicate' | 'out-of-window' | 'refused';

/**
 * Takes the next unit in order; false when it cannot now (nothing changed). precharged:
 * the unit comes from the reorder buffer and its budget charge passes to the consumer.
 */
export type Deliver = (data: Uint8Array, last: boolean | undefined, precharged: boolean) => boolean;

/**
 * Reliable, ordered delivery for one channel: messages are released strictly in
 * sequence order, exactly once. Out-of-order arrivals wait in a bounded buffer.
 */
export class OrderedReceiver {
  private next: number;
  private readonly buffer = new Map<number, { data: Uint8Array; last: boolean | undefined }>();
  private bufferedBytes = 0;

  constructor(
    initialSeq = 0,
    private readonly budget: ReassemblyBudget = unlimitedBudget(),
  ) {
    this.next = initialSeq & 0xffff;
  }

  /** Returns what the reorder buffer holds to the budget (the connection ended). */
  release(): void {
    this.budget.give(this.bufferedBytes);
    this.buffer.clear();
    this.bufferedBytes = 0;
  }

  get buffered(): number {
    return this.buffer.size;
  }

  /** Offers a received message; in-order messages (and any they unblock) go to `deliver`. */
  receive(seq: number, data: Uint8Array, deliver: Deliver, last?: boolean): ReceiveResult {
    const d = seqDiff(this.next, seq);
    if (d < 0) return 'duplicate';
    if (d >= RECEIVE_WINDOW) return 'out-of-window';
    if (d > 0) {
      if (this.buffer.has(seq)) return 'duplicate';
      if (this.bufferedBytes + data.length > BUFFER_LIMIT || !this.budget.take(data.length)) return 'refused';
      this.buffer.set(seq, { data, last });
      this.bufferedBytes += data.length;
      return 'buffered';
    }
    if (!deliver(data, last, false)) return 'refused';
    this.next = seqAdd(this.next, 1);
    for (let m = this.buffer.get(this.next); m !== undefined; m = this.buffer.get(this.next)) {
      this.buffer.delete(this.next);
      this.bufferedBytes -= m.data.length;
      // Already charged: the consumer takes the charge over and cannot refuse it.
      deliver(m.data, m.last, true);
      this.next = seqAdd(this.next, 1);
    }
    return 'delivered';
  }
}
