/** RFC 9002 7.7: pace at N times the window per RTT, N > 1 so pacing never limits the window. */
const PACING_GAIN = 1.25;
/**
 * The bucket holds this much time's worth of sending, at least: timers of the runtime
 * fire about a millisecond late, so a smaller bucket would make the timer, not the
 * rate, the limit.
 */
const BURST_MS = 2;
/** And at least this many full datagrams (the initial window goes out at once). */
const MIN_BURST_DATAGRAMS = 10;

/**
 * A token bucket that spreads a congestion window over a round trip instead of sending
 * it in one burst: bursts overflow router queues and, on loopback, the receiver's
 * socket buffer. Only packets carrying data are paced; acknowledgements are not.
 * Sans-I/O: the caller passes `now` and the current window and RTT.
 */
export class Pacer {
  private tokens: number;
  private last: number;

  constructor(
    private maxDatagram: number,
    now: number,
  ) {
    this.tokens = MIN_BURST_DATAGRAMS * maxDatagram;
    this.last = now;
  }

  setMaxDatagram(n: number): void {
    this.maxDatagram = n;
  }

  /** Bytes per millisecond for a window and a smoothed RTT. */
  static rate(window: number, srttMs: number): number {
    return (PACING_GAIN * window) / Math.max(srttMs, 0.001);
  }

  private capacity(window: number, rate: number): number {
    return Math.max(MIN_BURST_DATAGRAMS * this.maxDatagram, Math.min(window, rate * BURST_MS));
  }

  private refill(now: number, window: number, srttMs: number): number {
    const rate = Pacer.rate(window, srttMs);
    if (now > this.last) {
      this.tokens = Math.min(this.capacity(window, rate), this.tokens + (now - this.last) * rate);
      this.last = now;
    }
    return rate;
  }

  /**
   * When the next data packet may go: `now` means at once. A packet goes whenever the
   * bucket is not empty and may take it below zero by up to its own size; the next one
   * then waits until the bucket refills past zero. So the rate holds over time, bursts
   * stay within the bucket's capacity plus one packet, and a small message is never
   * held back as if it were a full datagram. The deadline aims at one byte of tokens
   * while the test accepts any positive amount, so floating-point rounding can never
   * produce a deadline that does not test as due when it comes.
   */
  sendTime(window: number, srttMs: number, now: number): number {
    const rate = this.refill(now, window, srttMs);
    return this.tokens > 0 ? now : now + (1 - this.tokens) / rate;
  }

  onSent(size: number): void {
    this.tokens -= size;
  }

  toJSON(): Record<string, number> {
    return { tokens: Math.round(this.tokens) };
  }
}
