/**
 * Round-trip time estimator as in RFC 9002 section 5 (which refines RFC 6298): smoothed
 * RTT, variance, minimum, with the peer's reported acknowledgement delay subtracted when
 * that does not go below the minimum.
 */
export class RttEstimator {
  /** Before the first sample, RFC 9002 section 6.2.2 suggests 333 ms; we start lower for LANs and games. */
  smoothed: number;
  variance: number;
  min = Infinity;
  latest = 0;
  hasSample = false;

  constructor(readonly initialMs: number) {
    this.smoothed = initialMs;
    this.variance = initialMs / 2;
  }

  /**
   * A sample, with the ack delay to take off. `floorAtMin`: a delay that would take the
   * sample below the minimum takes it to the minimum, instead of not being taken off at
   * all (RFC 9002's rule, right for delays of a few ms; an ACK that waited 30 ms for a
   * ride, measured against a minimum from a quicker one, would count the whole wait).
   */
  update(sampleMs: number, ackDelayMs: number, floorAtMin = false): void {
    this.latest = sampleMs;
    if (sampleMs < this.min) this.min = sampleMs;
    if (!this.hasSample) {
      this.hasSample = true;
      this.smoothed = sampleMs;
      this.variance = sampleMs / 2;
      return;
    }
    const less = sampleMs - ackDelayMs;
    const adjusted = less >= this.min ? less : floorAtMin ? this.min : sampleMs;
    this.variance = 0.75 * this.variance + 0.25 * Math.abs(this.smoothed - adjusted);
    this.smoothed = 0.875 * this.smoothed + 0.125 * adjusted;
  }

  /** Probe timeout base (RFC 9002 6.2.1) without backoff: srtt + max(4*rttvar, granularity) + peer's max ack delay. */
  pto(granularityMs: number, maxAckDelayMs: number): number {
    return this.smoothed + Math.max(4 * this.variance, granularityMs) + maxAckDelayMs;
  }

  toJSON(): { smoothedMs: number; varianceMs: number; minMs: number; latestMs: number } {
    return {
      smoothedMs: round(this.smoothed),
      varianceMs: round(this.variance),
      minMs: this.hasSample ? round(this.min) : 0,
      latestMs: round(this.latest),
    };
  }
}

function round(x: number): number {
  return Math.round(x * 1000) / 1000;
}
