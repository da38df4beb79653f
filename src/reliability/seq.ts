/**
 * Sequence-number arithmetic, all of it in one place (../shared/design.md rule 4).
 *
 * Two kinds of numbers travel on the wire:
 * - packet numbers: 32 low bits on the wire, expanded here to a full, never-reused
 *   number (RFC 9000 appendix A.3), exact in a JS number up to 2^53;
 * - message sequence numbers: 16 bits per channel, compared with serial-number
 *   arithmetic (RFC 1982). The sender never has more than SEQ_WINDOW messages between
 *   the oldest unacknowledged one and the newest, so comparisons are unambiguous.
 */

export const PN_BITS = 32;
const PN_WIN = 2 ** PN_BITS;
const PN_HWIN = PN_WIN / 2;

/**
 * Recovers the full packet number from its low 32 bits, choosing the candidate closest
 * to the next expected number (largest received + 1).
 */
export function expandPacketNumber(largestReceived: number, low: number): number {
  const expected = largestReceived + 1;
  const candidate = expected - (expected % PN_WIN) + low;
  if (candidate <= expected - PN_HWIN && candidate + PN_WIN <= Number.MAX_SAFE_INTEGER) return candidate + PN_WIN;
  if (candidate > expected + PN_HWIN && candidate >= PN_WIN) return candidate - PN_WIN;
  // Computed in floating point, a number is stored boxed even when small, and one boxed
  // store makes V8 box that field in every object of its shape (the receive state, ACK
  // ranges, loss recovery: 16 bytes each, per connection). Below 2^31, as nearly
  // all packet numbers are, `| 0` hands on a small integer instead.
  return candidate < PN_HWIN ? candidate | 0 : candidate;
}

export const SEQ_MOD = 0x10000;
/** Half the 16-bit space: the most messages a channel may have between oldest unacked and newest. */
export const SEQ_WINDOW = 0x8000;

export function seqAdd(a: number, n: number): number {
  return (a + n) & 0xffff;
}

/** Signed distance from a to b in 16-bit serial arithmetic: positive when b is after a. */
export function seqDiff(a: number, b: number): number {
  const d = (b - a) & 0xffff;
  return d >= SEQ_WINDOW ? d - SEQ_MOD : d;
}

/** True when a comes before b. */
export function seqLess(a: number, b: number): boolean {
  return seqDiff(a, b) > 0;
}
