import type { PnRange } from '../wire/frames.js';

/**
 * The set of packet numbers received, as disjoint ranges sorted descending (newest
 * first), which is also the order ACK frames want. Bounded: only the newest
 * `maxRanges` ranges are kept, and anything at or below `floor` counts as seen, so a
 * very old or replayed packet number is treated as a duplicate.
 */
export class RangeSet {
  /** Replaced by a one-element literal on the first add: an array grown by splice or push takes room for 17 ranges. */
  ranges: PnRange[] = [];
  /** Every number <= floor is considered present (forgotten but seen). */
  floor = -1;

  constructor(private readonly maxRanges = 64) {}

  has(n: number): boolean {
    if (n <= this.floor) return true;
    for (const r of this.ranges) {
      if (n > r.hi) return false;
      if (n >= r.lo) return true;
    }
    return false;
  }

  get largest(): number {
    return this.ranges[0]?.hi ?? this.floor;
  }

  /** Adds n; returns false if it was already present (a duplicate). */
  add(n: number): boolean {
    if (this.has(n)) return false;
    const rs = this.ranges;
    if (rs.length === 0) {
      this.ranges = [{ lo: n, hi: n }];
      return true;
    }
    let i = 0;
    while (i < rs.length && rs[i]!.lo > n) i++;
    // rs[i] is the first range with lo <= n (so n > its hi, since n is absent); rs[i-1] is above n.
    const above = i > 0 ? rs[i - 1]! : undefined;
    const below = i < rs.length ? rs[i]! : undefined;
    const joinAbove = above !== undefined && above.lo === n + 1;
    const joinBelow = below !== undefined && below.hi === n - 1;
    if (joinAbove && joinBelow) {
      above.lo = below.lo;
      rs.splice(i, 1);
    } else if (joinAbove) {
      above.lo = n;
    } else if (joinBelow) {
      below.hi = n;
    } else {
      rs.splice(i, 0, { lo: n, hi: n });
    }
    if (rs.length > this.maxRanges) {
      const dropped = rs.pop()!;
      this.floor = Math.max(this.floor, dropped.hi);
    }
    return true;
  }
}
