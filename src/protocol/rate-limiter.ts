/**
 * Handshakes per IP address (docs/SECURITY.md, "Bounds"): a token bucket per address,
 * `perSecond` refill and `burst` capacity, for CONNECTs that passed the cookie check
 * (so the address is real: a spoofed flood never reaches this table). At most
 * `maxAddresses` buckets; beyond that the least recently used one is forgotten, which
 * only ever errs towards letting a handshake through.
 */
export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

  constructor(
    private readonly perSecond: number,
    private readonly burst: number,
    private readonly maxAddresses = 4096,
  ) {}

  /** True when `key` may do one more; takes a token if so. perSecond 0 disables the limit. */
  take(key: string, now: number): boolean {
    if (this.perSecond <= 0) return true;
    let b = this.buckets.get(key);
    if (b) {
      this.buckets.delete(key); // re-inserted below: Map order is least recently used first
      b.tokens = Math.min(this.burst, b.tokens + ((now - b.at) / 1000) * this.perSecond);
      b.at = now;
    } else {
      b = { tokens: this.burst, at: now };
      if (this.buckets.size >= this.maxAddresses) this.buckets.delete(this.buckets.keys().next().value!);
    }
    this.buckets.set(key, b);
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }

  get size(): number {
    return this.buckets.size;
  }
}

/**
 * The rate limit's key for an address: the address itself for IPv4, its /64 for IPv6
 * (one host usually has a whole /64 and could otherwise take a bucket per address).
 */
export function rateKey(address: string): string {
  if (!address.includes(':') || address.includes('.')) return address; // IPv4, or IPv4-mapped IPv6
  const [head = '', tail = ''] = address.split('::');
  const h = head ? head.split(':') : [];
  const t = address.includes('::') ? (tail ? tail.split(':') : []) : [];
  const groups = address.includes('::') ? [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t] : h;
  return `${groups
    .slice(0, 4)
    .map((g) => g.toLowerCase().replace(/^0+(?=.)/, ''))
    .join(':')}::/64`;
}
