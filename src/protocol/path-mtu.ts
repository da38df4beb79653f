import {
  BASE_DATAGRAM_SIZE,
  ETHERNET_DATAGRAM_SIZE,
  ETHERNET_DATAGRAM_SIZE_V6,
  LOOPBACK_DATAGRAM_SIZE,
  MAX_UDP_PAYLOAD,
} from '../wire/constants.js';

/** Probes of one size lost in a row before that size is taken as too big (RFC 8899 MAX_PROBES). */
export const MAX_PROBES = 3;
/** The search stops when the confirmed size is within this many bytes of the smallest failure. */
const SEARCH_PRECISION = 16;
/** After a search ends (or a black hole), try to go higher again this much later (RFC 8899: PMTU_RAISE_TIMER). */
export const RAISE_INTERVAL_MS = 600_000;

/** Whether an address is on this host (127.0.0.0/8, ::1, or IPv4-mapped loopback). */
export function isLoopback(address: string): boolean {
  const a = address.toLowerCase();
  return a === '::1' || a.startsWith('127.') || a.startsWith('::ffff:127.');
}

/**
 * The largest datagram worth probing towards `address`: near 64 KiB on loopback, an
 * Ethernet frame elsewhere, unless the application set `configured` (a jumbo-frame LAN,
 * say). Node cannot set the don't-fragment bit, so on a real network a datagram larger
 * than the local interface's MTU would be fragmented by the kernel instead of failing;
 * this ceiling is what keeps probes from "succeeding" through IP fragmentation.
 */
export function datagramCeiling(address: string, configured: number | undefined): number {
  if (configured !== undefined) return Math.max(BASE_DATAGRAM_SIZE, Math.min(configured, MAX_UDP_PAYLOAD));
  if (isLoopback(address)) return LOOPBACK_DATAGRAM_SIZE;
  return address.includes(':') && !address.toLowerCase().startsWith('::ffff:') ? ETHERNET_DATAGRAM_SIZE_V6 : ETHERNET_DATAGRAM_SIZE;
}

export interface PmtuStats {
  /** Largest datagram in use now. */
  current: number;
  /** Largest the search will try. */
  ceiling: number;
  probesSent: number;
  probesLost: number;
}

/** Packets above the base size lost with none as large acknowledged since, that may mean a black hole (PathMtu.onLost). */
const LARGE_LOSSES = 3;

/**
 * Datagram packetization layer path MTU discovery (RFC 8899), sans-I/O. A connection
 * sends at `current` bytes at most; `current` starts at the base size, which every IPv6
 * path carries, and rises only when a probe of a larger size is acknowledged. Probes
 * carry no data, so losing one costs nothing but the probe, and their loss is not a
 * congestion signal. The search tries the ceiling first (on loopback it gets through
 * at once), then halves the interval between the largest size confirmed and the
 * smallest size that failed MAX_PROBES times.
 *
 * Black holes: the path may shrink under a connection (a route change, a tunnel), and
 * then packets above the base size are lost while smaller ones still get through. Two
 * signs, and the connection calls onBlackHole on either and goes back to the base size:
 * acknowledgements stop for several probe timeouts while we send above the base size,
 * or (onLost) packets above the base size keep being lost, none as large is
 * acknowledged for several probe timeouts, and a smaller packet sent after them is
 * (an ACK, a keep-alive): the first sign misses that case, since those smaller packets
 * reset the probe timer. An outage is neither: everything sent in it is lost, small
 * packets too.
 */
export class PathMtu {
  /** Largest datagram the connection may send now. */
  current = BASE_DATAGRAM_SIZE;
  private lo = BASE_DATAGRAM_SIZE;
  private hi: number;
  private inFlight: number | undefined;
  private failures = 0;
  private searchAt: number;
  probesSent = 0;
  probesLost = 0;
  /**
   * Since a packet at least as large as the smallest of them was last acknowledged (at
   * `largeAckedAt`): how many packets above the base size were declared lost, the
   * smallest of them, when the first of them was sent, and whether a smaller packet
   * sent after that got through.
   */
  private largeLost = 0;
  private lostFloor = Infinity;
  private firstLostSentAt = 0;
  private smallerPassed = false;
  private largeAckedAt: number;

  constructor(
    private ceiling: number,
    now: number,
  ) {
    this.hi = ceiling + 1;
    this.searchAt = now;
    this.largeAckedAt = now;
  }

  /** A packet (not a probe) of `size`, sent at `sentAt`, was acknowledged. */
  onAcked(size: number, sentAt: number, now: number): void {
    // A packet as large as the smallest loss (any above the base size while none is counted) got through.
    if (size > BASE_DATAGRAM_SIZE && (this.largeLost === 0 || size >= this.lostFloor)) this.forgetLosses(now);
    else if (this.largeLost > 0 && sentAt > this.firstLostSentAt) this.smallerPassed = true;
  }

  /**
   * A packet (not a probe) of `size`, sent at `sentAt`, was declared lost. True when
   * that makes a black hole: LARGE_LOSSES packets above the base size lost, none at
   * least as large as the smallest of them acknowledged for `window` ms (a few probe
   * timeouts), and a smaller one sent after the first of them acknowledged. Random loss,
   * in bursts too, does not: packets as large sent after a burst are acknowledged before
   * it is declared lost, and each such ACK starts the count again. Nor does an outage:
   * the small packets sent in it are lost too (LossRecovery reports an ACK's packets
   * before the losses it reveals, so an ACK that ends an outage counts no smaller packet).
   */
  onLost(size: number, sentAt: number, now: number, window: number): boolean {
    if (size <= BASE_DATAGRAM_SIZE || this.current === BASE_DATAGRAM_SIZE) return false;
    if (this.largeLost === 0) this.firstLostSentAt = sentAt;
    else if (sentAt < this.firstLostSentAt) this.firstLostSentAt = sentAt;
    if (size < this.lostFloor) this.lostFloor = size;
    return ++this.largeLost >= LARGE_LOSSES && this.smallerPassed && now - this.largeAckedAt >= window;
  }

  /** What onLost counted is forgotten: packets that large get through (or the size changed). */
  private forgetLosses(now: number): void {
    this.largeLost = 0;
    this.lostFloor = Infinity;
    this.smallerPassed = false;
    this.largeAckedAt = now;
  }

  /** The size to probe now, or undefined: one probe at a time, none once the search is done. */
  probeSize(now: number): number | undefined {
    if (this.inFlight !== undefined) return undefined;
    if (this.hi - this.lo <= SEARCH_PRECISION) {
      if (now < this.searchAt) return undefined;
      // Time to look again for a larger MTU.
      this.hi = this.ceiling + 1;
      if (this.hi - this.lo <= SEARCH_PRECISION) {
        this.searchAt = now + RAISE_INTERVAL_MS;
        return undefined;
      }
    }
    if (now < this.searchAt) return undefined;
    // The ceiling first; after it failed, bisect.
    return this.hi === this.ceiling + 1 ? this.ceiling : Math.floor((this.lo + this.hi) / 2);
  }

  onProbeSent(size: number): void {
    this.inFlight = size;
    this.probesSent++;
  }

  onProbeAcked(size: number, now: number): void {
    if (this.inFlight === size) this.inFlight = undefined;
    this.forgetLosses(now);
    this.failures = 0;
    if (size > this.lo) this.lo = size;
    if (this.hi <= this.lo) this.hi = this.lo + 1;
    this.current = this.lo;
    if (this.hi - this.lo <= SEARCH_PRECISION) this.searchAt = now + RAISE_INTERVAL_MS;
  }

  onProbeLost(size: number, now: number): void {
    if (this.inFlight === size) this.inFlight = undefined;
    this.probesLost++;
    if (size <= this.lo) return; // a stale probe from before a confirmation
    if (++this.failures < MAX_PROBES) return;
    this.failures = 0;
    this.hi = Math.min(this.hi, size);
    if (this.hi - this.lo <= SEARCH_PRECISION) this.searchAt = now + RAISE_INTERVAL_MS;
  }

  /** Packets above the base size stopped getting through: fall back, search again later. */
  onBlackHole(now: number): boolean {
    if (this.current === BASE_DATAGRAM_SIZE) return false;
    this.forgetLosses(now);
    this.current = this.lo = BASE_DATAGRAM_SIZE;
    this.hi = this.lo + 1; // search finished (at the base) until searchAt
    this.inFlight = undefined;
    this.failures = 0;
    this.searchAt = now + RAISE_INTERVAL_MS / 10;
    return true;
  }

  /** The peer moved to another address: what we knew of the old path says nothing of the new one. */
  reset(ceiling: number, now: number): void {
    this.ceiling = ceiling;
    this.forgetLosses(now);
    this.current = this.lo = BASE_DATAGRAM_SIZE;
    this.hi = ceiling + 1;
    this.inFlight = undefined;
    this.failures = 0;
    this.searchAt = now;
  }

  toJSON(): PmtuStats {
    return { current: this.current, ceiling: this.ceiling, probesSent: this.probesSent, probesLost: this.probesLost };
  }
}
