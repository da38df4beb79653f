import type { RttEstimator } from '../reliability/rtt.js';
import type { CongestionController } from './controller.js';

/**
 * Queueing delay (smoothed RTT above the path's minimum) at or under which a loss is
 * taken for noise rather than congestion: a quarter of the minimum RTT while losses are
 * rare, less as they grow (none at HEAVY_LOSS), and never less than this, since timers
 * and the event loop jitter by about a millisecond. The sliding scale is for shallow
 * buffers: a router that holds less than a quarter of the RTT shows a short queue and
 * many losses.
 */
const QUEUE_FLOOR_MS = 1;
const QUEUE_FRACTION = 0.25;
/**
 * A loss rate (bytes lost among bytes resolved, smoothed over about four windows) above
 * which losses are congestion however short the queue: a policer or an overloaded link
 * that drops without queueing. Random loss of up to about a quarter stays below it.
 */
const HEAVY_LOSS = 0.4;
/** The loss rate's smoothing spans this many windows, and a window of at least this many datagrams. */
const LOSS_SPAN_WINDOWS = 4;
const LOSS_SPAN_MIN_DATAGRAMS = 16;

/**
 * NewReno (RFC 9002 section 7: slow start, congestion avoidance, one reduction per round
 * trip of losses) that does not take every loss for congestion. A loss is congestion
 * when the path shows a queue (the smoothed RTT stands above the minimum by more than
 * a quarter of it, less as losses grow, and at least 1 ms) or when losses are heavy
 * (over 40% of the bytes lately);
 * then the window halves as in NewReno. Otherwise (random loss on a path without a
 * queue: radio, a lossy link, a faulty middlebox) the loss starts a round like a
 * reduction would, so one decision is made per round trip, but the window and slow
 * start go on: the growth ends only when a queue builds, which is what congestion is.
 * Persistent congestion (RFC 9002 7.6) always collapses the window.
 *
 * Why not BBR: this keeps NewReno's proven response to queues and needs only the RTT
 * estimator the loss detector already has; docs/ARCHITECTURE.md has the trade-off.
 */
export class Reno implements CongestionController {
  window: number;
  private ssthresh = Infinity;
  private recoveryStart = -Infinity;
  private minWindow: number;
  /** Smoothed fraction of bytes lost among those acknowledged or lost. */
  private lossRate = 0;
  private congestionEvents = 0;
  private randomLossEvents = 0;

  constructor(
    private maxDatagram: number,
    private readonly rtt: RttEstimator,
  ) {
    // RFC 9002 7.2: initial window min(10 * max_datagram, max(14720, 2 * max_datagram)).
    this.window = Math.min(10 * maxDatagram, Math.max(14720, 2 * maxDatagram));
    this.minWindow = 2 * maxDatagram;
  }

  onSent(): void {}

  setMaxDatagram(bytes: number): void {
    this.maxDatagram = bytes;
    this.minWindow = 2 * bytes;
    if (this.window < this.minWindow) this.window = this.minWindow;
  }

  onAck(bytes: number, sentAt: number, _now: number, windowBound: boolean): void {
    this.lossRate -= this.lossRate * this.weight(bytes);
    if (sentAt <= this.recoveryStart || !windowBound) return;
    if (this.window < this.ssthresh) this.window += bytes;
    else this.window += (this.maxDatagram * bytes) / this.window;
  }

  onLoss(bytes: number, sentAt: number, now: number): void {
    this.lossRate += (1 - this.lossRate) * this.weight(bytes);
    if (sentAt <= this.recoveryStart) return;
    this.recoveryStart = now;
    if (!this.isCongestion()) {
      this.randomLossEvents++;
      return;
    }
    this.congestionEvents++;
    this.ssthresh = Math.max(this.window / 2, this.minWindow);
    this.window = this.ssthresh;
  }

  onPersistentCongestion(): void {
    // The losses may have been taken for noise (a blackhole shows no queue): slow start
    // must still end where the old window's half was, as after any congestion.
    this.ssthresh = Math.max(Math.min(this.ssthresh, this.window / 2), this.minWindow);
    this.window = this.minWindow;
  }

  /** Whether a loss now says the path is congested (see the class comment). */
  private isCongestion(): boolean {
    if (this.lossRate > HEAVY_LOSS || !this.rtt.hasSample) return true;
    const queue = this.rtt.smoothed - this.rtt.min;
    const allowed = QUEUE_FRACTION * this.rtt.min * (1 - this.lossRate / HEAVY_LOSS);
    return queue > Math.max(QUEUE_FLOOR_MS, allowed);
  }

  private weight(bytes: number): number {
    return Math.min(1, bytes / (LOSS_SPAN_WINDOWS * Math.max(this.window, LOSS_SPAN_MIN_DATAGRAMS * this.maxDatagram)));
  }

  toJSON(): Record<string, number | string> {
    return {
      algorithm: 'reno-loss-tolerant',
      windowBytes: Math.round(this.window),
      ssthresh: this.ssthresh === Infinity ? -1 : Math.round(this.ssthresh),
      congestionEvents: this.congestionEvents,
      randomLossEvents: this.randomLossEvents,
      lossRate: Math.round(this.lossRate * 1000) / 1000,
    };
  }
}
