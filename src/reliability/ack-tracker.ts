import type { Frame, PnRange } from '../wire/frames.js';
import { RangeSet } from './range-set.js';

/** Acknowledge at once after this many ack-eliciting packets (RFC 9000 13.2.2 suggests 2). */
const ACK_EVERY = 2;
/** ACK frames name at most this many ranges (newest first). */
const MAX_ACK_RANGES_SENT = 32;
/**
 * How long the ACK of a packet of unreliable data alone may wait for a ride on a packet
 * of ours: a game loop's next tick at 10 Hz or faster. Nothing of such a packet is sent
 * again; its sender allows for this wait in its probe timer and RTT samples (loss-recovery.ts).
 */
export const LAZY_ACK_DELAY_MS = 100;

/**
 * What a packet asks of its ACK: none, within LAZY_ACK_DELAY_MS (it carried unreliable
 * data and nothing else that elicits one), within the max ack delay, or at once ('now':
 * it repeated only reliable units that had arrived, so the peer missed our ACK of them,
 * and waiting for a second packet would leave its probe timer to fire again; a TCP
 * receiver acknowledges a duplicate segment at once for the same reason, RFC 5681 4.2).
 */
export type AckUrgency = 'none' | 'lazy' | 'prompt' | 'now';

/**
 * The ACK frame peekFrame fills, reused by every tracker: a connection writes it into
 * its packet within the same pollTransmit (a frame and its ranges per packet were the
 * largest allocation of an idle connection's keep-alive; one per connection cost it
 * about 130 bytes). Room for one range, the usual case, from the start: an array grown
 * by push takes room for 17.
 */
const ACK_FRAME: { type: 'ack'; delayUs: number; ranges: PnRange[] } = { type: 'ack', delayUs: 0, ranges: [{ lo: 0, hi: 0 }] };

/**
 * The receiving side of acknowledgements: which packet numbers arrived (for ACK ranges;
 * duplicates are the replay window's business, replay-window.ts) and when an ACK is owed (RFC 9000 section 13.2): at once
 * after every second ack-eliciting packet or any out-of-order one, otherwise within the
 * max ack delay we promised the peer, or within LAZY_ACK_DELAY_MS when every packet
 * owed one carried only unreliable data. Until then it rides on whatever we send.
 */
export class AckTracker {
  private readonly received = new RangeSet(256);
  private elicitingUnacked = 0;
  private urgent = false;
  private largestAt = 0;
  /** When a delayed ACK falls due (Infinity: none owed). */
  deadline = Infinity;

  constructor(private readonly maxAckDelayMs: number) {}

  /**
   * Records an authenticated, well-formed packet. acknowledge false: never acknowledge
   * it, so its sender sends its reliable units again (the replay window still keeps a
   * copy from being processed twice).
   */
  onPacket(pn: number, urgency: AckUrgency, now: number, acknowledge = true): void {
    if (!acknowledge) return;
    const largestBefore = this.received.largest;
    this.received.add(pn);
    if (pn > largestBefore) this.largestAt = now;
    if (urgency === 'none') return;
    this.elicitingUnacked++;
    if (this.elicitingUnacked >= ACK_EVERY || pn !== largestBefore + 1 || urgency === 'now') this.urgent = true;
    else this.deadline = Math.min(this.deadline, now + (urgency === 'prompt' ? this.maxAckDelayMs : LAZY_ACK_DELAY_MS));
  }

  /**
   * A packet we did not acknowledge (we refused a unit in it) may be acknowledged now:
   * its sender has our REFUSED, and has stopped waiting for it. Without this every
   * refused packet would stay a gap in our ACK ranges for good.
   */
  markReceived(pn: number): void {
    this.received.add(pn);
  }

  onTimeout(now: number): void {
    if (this.deadline <= now) {
      this.deadline = Infinity;
      this.urgent = true;
    }
  }

  /** An ACK must go now, even alone. */
  get due(): boolean {
    return this.urgent;
  }

  /** Something is unacknowledged: an ACK may ride along with whatever goes next. */
  get pending(): boolean {
    return this.elicitingUnacked > 0 || this.urgent;
  }

  /**
   * The ACK frame that would go now, leaving what is owed as it is (see markSent). The
   * same object every time, for every tracker (ACK_FRAME), valid until the next call of
   * any tracker: write it into a packet before then.
   */
  peekFrame(now: number): Frame | undefined {
    const rs = this.received.ranges;
    if (rs.length === 0) return undefined;
    const f = ACK_FRAME;
    f.delayUs = Math.max(0, Math.round((now - this.largestAt) * 1000));
    const n = Math.min(rs.length, MAX_ACK_RANGES_SENT);
    for (let i = 0; i < n; i++) {
      const r = f.ranges[i];
      if (r) {
        r.lo = rs[i]!.lo;
        r.hi = rs[i]!.hi;
      } else f.ranges.push({ lo: rs[i]!.lo, hi: rs[i]!.hi });
    }
    f.ranges.length = n;
    return f;
  }

  /** The frame from peekFrame went out: nothing is owed any more. */
  markSent(): void {
    this.elicitingUnacked = 0;
    this.urgent = false;
    this.deadline = Infinity;
  }
}
