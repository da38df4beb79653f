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

  update(sampleMs: number, ackDelayMs: number): void {
    this.latest = sampleMs;
    if (sampleMs < this.min) this.min = sampleMs;
    if (!this.hasSample) {
      this.hasSample = true;
      this.smoothed = sampleMs;
      this.variance = sampleMs / 2;
      return;
    }
    const adjusted = sampleMs - ackDelayMs >= this.min ? sampleMs - ackDelayMs : sampleMs;
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
