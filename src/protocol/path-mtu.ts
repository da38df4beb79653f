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

/** Packets above the base size lost in a row, none acknowledged, that may mean a black hole (with PathMtu.onLargeLost's time). */
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
 * or (onLargeLost) packets above the base size keep being lost with none acknowledged
 * for several probe timeouts while smaller ones are (ACKs, keep-alives), which the
 * first sign misses since those reset the probe timer.
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
  /** Packets above the base size declared lost since one was last acknowledged, and when that was. */
  private largeLost = 0;
  private largeAckedAt: number;

  constructor(
    private ceiling: number,
    now: number,
  ) {
    this.hi = ceiling + 1;
    this.searchAt = now;
    this.largeAckedAt = now;
  }

  /** A packet (not a probe) above the base size was acknowledged: the path carries them. */
  onLargeAcked(now: number): void {
    this.largeLost = 0;
    this.largeAckedAt = now;
  }

  /**
   * A packet (not a probe) of `size` was declared lost. True when that makes a black
   * hole: LARGE_LOSSES of them lost and none acknowledged for `window` ms (a few probe
   * timeouts). A burst of random loss does not: packets sent after it are acknowledged
   * before it is declared lost, and each such ACK starts the count again.
   */
  onLargeLost(size: number, now: number, window: number): boolean {
    if (size <= BASE_DATAGRAM_SIZE || this.current === BASE_DATAGRAM_SIZE) return false;
    return ++this.largeLost >= LARGE_LOSSES && now - this.largeAckedAt >= window;
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
    this.largeLost = 0;
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
    this.largeLost = 0;
    this.largeAckedAt = now;
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
