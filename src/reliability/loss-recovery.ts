import { LAZY_ACK_DELAY_MS } from './ack-tracker.js';
import { SentPackets } from './sent-packets.js';
import type { PnRange } from '../wire/frames.js';
import { RttEstimator } from './rtt.js';
import type { OutMessage } from './sender.js';

export interface SentPacket {
  readonly pn: number;
  readonly sentAt: number;
  readonly size: number;
  readonly ackEliciting: boolean;
  readonly messages: OutMessage[];
  /** A path MTU probe (no data): its loss says the size is too big, not that the path is congested. */
  readonly probe?: boolean;
  /** Packet numbers of the peer's this packet reported in REFUSED frames (sent again if it is lost). */
  readonly refused?: number[];
  /**
   * Ack-eliciting with unreliable data alone: the peer may hold its ACK for a ride (up
   * to LAZY_ACK_DELAY_MS, ack-tracker.ts), so its probe timer allows for that wait, and
   * an ACK of it may take up to that much reported delay off its RTT sample.
   */
  readonly lazyAck?: boolean;
  /**
   * The bytes in flight with it were at least half the congestion window: its ACK may
   * grow the window (an application-limited sender's may not, RFC 9002 7.8; half, as
   * Linux allows in slow start, since a paced or ACK-clocked sender keeps some of the
   * window free).
   */
  readonly windowBound?: boolean;
}

/** RFC 9002 constants. */
const PACKET_THRESHOLD = 3;
const TIME_THRESHOLD = 9 / 8;
const GRANULARITY_MS = 1;

export interface LossCallbacks {
  acked(p: SentPacket): void;
  lost(p: SentPacket): void;
  /** RFC 9002 7.6: everything sent over a long stretch was lost; collapse the window. */
  persistentCongestion?(): void;
}

/** RFC 9002 7.6.1: persistent congestion spans this many probe timeout periods. */
const PERSISTENT_CONGESTION_THRESHOLD = 3;

/**
 * When each packet an ACK newly acknowledged was sent, for the persistent-congestion
 * check: filled and emptied within one onAck, which nothing re-enters, so one array
 * serves every connection (one each cost an idle connection 32 bytes).
 */
const ACKED_NOW: number[] = [];

/**
 * Packet-level loss detection in the manner of RFC 9002: every packet number is sent
 * once; acknowledgements name packets; a packet is lost when three later packets were
 * acknowledged or it is older than 9/8 RTT behind an acknowledged one; a probe timeout
 * fires when acknowledgements stop altogether.
 */
export class LossRecovery {
  readonly rtt: RttEstimator;
  /** In flight, in ascending packet number order. */
  private readonly sent = new SentPackets();
  largestAcked = -1;
  private largestSent = -1;
  bytesInFlight = 0;
  /** Packets in flight whose ACK is due within the peer's max ack delay (the others are lazyAck). */
  private promptInFlight = 0;
  private lastLazyAt = -Infinity;
  ptoCount = 0;
  lostPackets = 0;
  private lastAckElicitingAt = -Infinity;
  /** When the largest acknowledged packet was sent, before the ACK being processed. */
  private largestAckedSentAt = -Infinity;
  persistentCongestions = 0;
  private lossTime = Infinity;

  constructor(
    initialRttMs: number,
    private readonly peerMaxAckDelayMs: number,
    private readonly maxPtoMs: number,
  ) {
    this.rtt = new RttEstimator(initialRttMs);
  }

  get inFlightCount(): number {
    return this.sent.size;
  }

  onSent(p: SentPacket): void {
    if (p.pn > this.largestSent) this.largestSent = p.pn;
    if (!p.ackEliciting) return; // only ack-eliciting packets are tracked (RFC 9002 2)
    this.sent.push(p);
    this.bytesInFlight += p.size;
    if (p.lazyAck) {
      this.lastLazyAt = p.sentAt;
      return;
    }
    this.promptInFlight++;
    this.lastAckElicitingAt = p.sentAt;
  }

  /** `p` left flight: acknowledged, lost or refused. */
  private gone(p: SentPacket): void {
    this.bytesInFlight -= p.size;
    if (!p.lazyAck) this.promptInFlight--;
  }

  /**
   * Processes an ACK frame's ranges (descending). Returns false, changing nothing, for
   * an ACK of a packet never sent: believing it would declare everything lost.
   */
  onAck(ranges: PnRange[], ackDelayMs: number, now: number, cb: LossCallbacks): boolean {
    const largest = ranges[0]?.hi ?? -1;
    if (largest > this.largestSent) return false;
    let newlyAckedLargest: SentPacket | undefined;
    ACKED_NOW.length = 0;
    const sent = this.sent;
    for (let i = sent.start; i < sent.end; i++) {
      const p = sent.at(i);
      if (!p) continue;
      if (p.pn > largest) break;
      if (!inRanges(ranges, p.pn)) continue;
      sent.remove(i);
      this.gone(p);
      if (!newlyAckedLargest || p.pn > newlyAckedLargest.pn) newlyAckedLargest = p;
      ACKED_NOW.push(p.sentAt);
      cb.acked(p);
    }
    if (!newlyAckedLargest) return true;
    const priorLargestAckedSentAt = this.largestAckedSentAt;
    if (largest > this.largestAcked) {
      this.largestAcked = largest;
      if (newlyAckedLargest.pn === largest) this.largestAckedSentAt = newlyAckedLargest.sentAt;
    }
    // RFC 9002 5.3: the peer's reported delay counts for at most its max_ack_delay, so a
    // peer cannot talk a queue out of the smoothed RTT (which congestion control reads).
    // An ACK of unreliable data alone may have waited up to LAZY_ACK_DELAY_MS for a ride:
    // that much comes off (else the wait reads as queue), so on such a flow a lying peer
    // can hide at most that much queue (docs/SECURITY.md).
    const lazy = newlyAckedLargest.lazyAck === true;
    const maxDelay = lazy ? Math.max(this.peerMaxAckDelayMs, LAZY_ACK_DELAY_MS) : this.peerMaxAckDelayMs;
    if (newlyAckedLargest.pn === largest) this.rtt.update(now - newlyAckedLargest.sentAt, Math.min(ackDelayMs, maxDelay), lazy);
    this.ptoCount = 0;
    this.detectLosses(now, cb, priorLargestAckedSentAt);
    ACKED_NOW.length = 0;
    return true;
  }

  private lossDelay(): number {
    return Math.max(TIME_THRESHOLD * Math.max(this.rtt.smoothed, this.rtt.latest), GRANULARITY_MS);
  }

  /** Declares lost what the thresholds say is lost; sets the next time-threshold deadline. */
  detectLosses(now: number, cb: LossCallbacks, ackedBefore = this.largestAckedSentAt): void {
    this.lossTime = Infinity;
    const delay = this.lossDelay();
    let first: SentPacket | undefined;
    let last: SentPacket | undefined;
    const sent = this.sent;
    for (let i = sent.start; i < sent.end; i++) {
      const p = sent.at(i);
      if (!p) continue;
      if (p.pn > this.largestAcked) break;
      // One expression for both the test and the deadline: with `sentAt <= now - delay`
      // floating-point rounding could arm a deadline that never tests as due (livelock).
      const lossAt = p.sentAt + delay;
      if (this.largestAcked - p.pn >= PACKET_THRESHOLD || lossAt <= now) {
        sent.remove(i);
        this.gone(p);
        if (!p.probe) {
          this.lostPackets++;
          first ??= p;
          last = p;
        }
        cb.lost(p);
      } else {
        this.lossTime = Math.min(this.lossTime, lossAt);
      }
    }
    // Persistent congestion: two lost packets, sent longer apart than three probe
    // timeouts, with nothing sent between them acknowledged (all after the largest
    // acknowledged one), and an RTT sample to judge by.
    if (first && last && this.rtt.hasSample && first.sentAt > ackedBefore) {
      const duration = this.rtt.pto(GRANULARITY_MS, this.peerMaxAckDelayMs) * PERSISTENT_CONGESTION_THRESHOLD;
      const f = first.sentAt;
      const l = last.sentAt;
      if (l - f >= duration && !ACKED_NOW.some((t) => t > f && t < l)) {
        this.persistentCongestions++;
        cb.persistentCongestion?.();
      }
    }
  }

  /** When the newest packet acknowledged so far was sent (-Infinity: none yet). */
  get ackedSentAt(): number {
    return this.largestAckedSentAt;
  }

  /** When the next loss or probe timer is due (Infinity when nothing is in flight). */
  deadline(): number {
    if (this.lossTime !== Infinity) return this.lossTime;
    if (this.sent.size === 0) return Infinity;
    // Packets of unreliable data alone are timed with the longer wait their ACK may take:
    // they arm the timer too, or lost ones could fill the window with nothing to free it.
    let at = Infinity;
    // The peer's max ack delay counts only while one packet that wants a prompt ACK is
    // in flight: the peer acknowledges every second such packet at once (ack-tracker.ts),
    // so with two or more out, an ACK that is late is lost, or its packets are. On a fast
    // path the delay is most of the timeout (10 ms against an RTT of 0.1 ms between
    // network namespaces), and a burst of lost ACKs cost the sender that long each time.
    if (this.promptInFlight > 0) at = this.lastAckElicitingAt + this.ptoAfter(this.promptInFlight >= 2 ? 0 : this.peerMaxAckDelayMs);
    if (this.sent.size > this.promptInFlight)
      at = Math.min(at, this.lastLazyAt + this.ptoAfter(Math.max(this.peerMaxAckDelayMs, LAZY_ACK_DELAY_MS)));
    return at;
  }

  /** The probe timeout for an ACK delay of `ackDelayMs`, backed off, capped. */
  private ptoAfter(ackDelayMs: number): number {
    const base = this.rtt.pto(GRANULARITY_MS, ackDelayMs);
    return Math.min(base * 2 ** this.ptoCount, Math.max(this.maxPtoMs, base));
  }

  /**
   * The peer says packet `pn` arrived but it could not take all its reliable units (a
   * REFUSED frame): out of flight without a loss or an RTT sample, so the congestion
   * window is not cut for the receiver's lack of memory. Returns the packet, or
   * undefined when it is no longer in flight (acknowledged, or already declared lost).
   */
  onRefused(pn: number): SentPacket | undefined {
    const i = this.sent.indexOf(pn);
    if (i < 0) return undefined;
    const p = this.sent.at(i)!;
    this.sent.remove(i);
    this.gone(p);
    // It arrived, as surely as an acknowledged packet: packets well before it that are
    // still unacknowledged are lost (the next ACK's loss detection sees it), and losses
    // around it are no persistent congestion.
    if (pn > this.largestAcked) {
      this.largestAcked = pn;
      this.largestAckedSentAt = p.sentAt;
    }
    return p;
  }

  /**
   * Handles the loss/probe timer. Returns 'probe' when the caller should send probe data
   * (RFC 9002 6.2.4: one or two ack-eliciting packets, exceeding the window if need be).
   */
  onTimeout(now: number, cb: LossCallbacks): 'probe' | 'loss' | 'none' {
    if (this.lossTime !== Infinity && now >= this.lossTime) {
      this.detectLosses(now, cb);
      return 'loss';
    }
    if (this.sent.size > 0 && now >= this.deadline()) {
      this.ptoCount++;
      this.lastAckElicitingAt = now;
      this.lastLazyAt = now;
      return 'probe';
    }
    return 'none';
  }

  /** After a long silence the RTT history is stale: probe again soon. */
  resetBackoff(): void {
    this.ptoCount = 0;
  }

  /** Drops all tracking (connection ends); returns what was in flight. */
  clear(): SentPacket[] {
    const all = this.sent.clear();
    this.bytesInFlight = 0;
    this.promptInFlight = 0;
    this.lossTime = Infinity;
    return all;
  }
}

function inRanges(ranges: PnRange[], pn: number): boolean {
  for (const r of ranges) {
    if (pn > r.hi) return false;
    if (pn >= r.lo) return true;
  }
  return false;
}
