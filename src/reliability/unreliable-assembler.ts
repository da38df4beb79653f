import { type ReassemblyBudget, UNIT_OVERHEAD_BYTES, unlimitedBudget } from './budget.js';
import { keepable } from '../wire/bytes.js';
import { concat } from './reliable-assembler.js';

/**
 * Puts unreliable messages back together from their parts. An unreliable message is
 * delivered whole or not at all: one lost part and the others are dropped, by age or
 * when room is needed. Memory is bounded whatever the peer sends: at most
 * MAX_PENDING unfinished messages and `maxPendingBytes` of parts (the oldest go first),
 * each message at most `maxMessageSize`, allocation only for parts that arrived.
 */
const MAX_PENDING = 32;
/** An unfinished message older than this is given up. */
const MAX_AGE_MS = 3000;

interface Pending {
  count: number;
  parts: Map<number, Uint8Array>;
  bytes: number;
  /** Charged to the budget: bytes + UNIT_OVERHEAD_BYTES per part. */
  charged: number;
  firstAt: number;
}

export class UnreliableAssembler {
  private readonly pending = new Map<number, Pending>();
  private bytes = 0;
  /** Unfinished messages given up (a part lost, too old, or no room). */
  dropped = 0;
  /** Parts that broke the rules (count changed, too large): a broken or hostile peer. */
  rejected = 0;

  constructor(
    private readonly maxMessageSize: number,
    private readonly maxPendingBytes: number,
    private readonly budget: ReassemblyBudget = unlimitedBudget(),
  ) {}

  /** Adds a part; returns the whole message when this part completes one. */
  add(id: number, index: number, count: number, data: Uint8Array, now: number): Uint8Array | undefined {
    this.expire(now);
    let m = this.pending.get(id);
    if (!m) {
      if (this.pending.size >= MAX_PENDING) this.evictOldest();
      m = { count, parts: new Map(), bytes: 0, charged: 0, firstAt: now };
      this.pending.set(id, m);
    }
    if (m.count === count && m.parts.has(index)) return undefined; // a duplicate part
    if (m.count !== count || m.bytes + data.length > this.maxMessageSize) {
      this.rejected++;
      this.remove(id, m);
      return undefined;
    }
    const cost = data.length + UNIT_OVERHEAD_BYTES;
    if (!this.budget.take(cost, undefined, true)) {
      // No memory left on the endpoint: the message cannot be completed.
      this.dropped++;
      this.remove(id, m);
      return undefined;
    }
    m.parts.set(index, keepable(data)); // not as a view of a larger datagram (wire/bytes.ts)
    m.bytes += data.length;
    m.charged += cost;
    this.bytes += data.length;
    while (this.bytes > this.maxPendingBytes && this.pending.size > 0) this.evictOldest();
    if (!this.pending.has(id) || m.parts.size < m.count) return undefined;
    this.remove(id, m);
    return concat(
      Array.from({ length: m.count }, (_, i) => m.parts.get(i)!),
      m.bytes,
    );
  }

  /** Gives up unfinished messages older than MAX_AGE_MS (also called on the connection's timer ticks). */
  expire(now: number): void {
    // Map order is arrival order, so the oldest come first.
    for (const [id, m] of this.pending) {
      if (m.firstAt + MAX_AGE_MS > now) return;
      this.dropped++;
      this.remove(id, m);
    }
  }

  private evictOldest(): void {
    const [id, m] = this.pending.entries().next().value!;
    this.dropped++;
    this.remove(id, m);
  }

  private remove(id: number, m: Pending): void {
    this.pending.delete(id);
    this.bytes -= m.bytes;
    this.budget.give(m.charged);
  }

  /** Drops everything unfinished (the connection ended). */
  clear(): void {
    for (const [id, m] of this.pending) this.remove(id, m);
  }
}
