import { type Budget, UNIT_OVERHEAD_BYTES, unlimitedSessionBudget } from './budget.js';
import { keepable } from '../wire/bytes.js';
import { MIN_PART } from './sender.js';

/** Joins parts into one new array. */
export function concat(parts: Uint8Array[], total = parts.reduce((n, p) => n + p.length, 0)): Uint8Array {
  const whole = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    whole.set(p, at);
    at += p.length;
  }
  return whole;
}

/** A finished reliable message. */
export interface Assembled {
  data: Uint8Array;
}

/**
 * Turns in-order reliable units back into messages: a whole one at once, parts
 * gathered until the last. Memory grows only with parts that arrived, never from a
 * claimed size, and a message past maxMessageSize is dropped to its last part and
 * counted (a peer that sends one is broken or hostile); so is an unfinished message
 * interrupted by a whole one, and so is one of more parts than a message of
 * maxMessageSize needs (non-final parts are at least MIN_PART bytes), so that a message
 * of tiny parts cannot hold much more heap than its bytes. Parts are charged to the
 * endpoint's ReassemblyBudget, their bytes and UNIT_OVERHEAD_BYTES each;
 * when it is spent, add() answers 'refused' and the unit must be offered again later.
 */
export class ReliableAssembler {
  private parts: Uint8Array[] = [];
  private bytes = 0;
  /** What the held parts are charged: bytes + UNIT_OVERHEAD_BYTES each. */
  private charged = 0;
  private units = 0;
  private readonly maxParts: number;
  private discarding = false;
  /** Messages dropped for breaking the rules. */
  rejected = 0;

  constructor(
    private readonly maxMessageSize: number,
    private readonly budget: Budget = unlimitedSessionBudget(),
  ) {
    this.maxParts = Math.ceil(maxMessageSize / MIN_PART) + 1;
  }

  /**
   * Offers the next unit in order; returns a message when this unit completes one,
   * undefined when it was taken, 'refused' when the budget has no room for it (nothing
   * changed). `precharged`: the unit's bytes and UNIT_OVERHEAD_BYTES are already
   * charged to the budget (it waited in the reorder buffer) and the charge passes to us.
   */
  add(data: Uint8Array, last: boolean | undefined, precharged = false): Assembled | undefined | 'refused' {
    const cost = data.length + UNIT_OVERHEAD_BYTES;
    if (last === undefined) {
      if (precharged) this.budget.give(cost);
      if (this.units > 0) {
        this.rejected++;
        this.reset();
      }
      if (data.length > this.maxMessageSize) {
        this.rejected++;
        return undefined;
      }
      return { data };
    }
    if (this.units === 0 && !this.discarding) this.budget.startBuilding(this);
    if (!this.discarding && (this.bytes + data.length > this.maxMessageSize || this.parts.length >= this.maxParts)) {
      if (precharged) this.budget.give(cost);
      this.rejected++;
      this.discarding = true;
      this.budget.give(this.charged);
      this.budget.stopBuilding(this);
      this.parts = [];
      this.bytes = 0;
      this.charged = 0;
    } else if (this.discarding) {
      if (precharged) this.budget.give(cost);
    } else {
      if (!precharged && !this.budget.take(cost, this)) {
        if (this.units === 0) this.budget.stopBuilding(this);
        return 'refused';
      }
      this.bytes += data.length;
      this.charged += cost;
      // Kept until the last part: not as a view of a larger datagram (wire/bytes.ts,
      // keepable). The last part is copied into the message at once.
      this.parts.push(last ? data : keepable(data));
    }
    this.units++;
    if (!last) return undefined;
    const done = this.discarding ? undefined : { data: concat(this.parts, this.bytes) };
    this.reset();
    return done;
  }

  /** Bytes of the half-built message held. */
  get size(): number {
    return this.bytes;
  }

  /** What the half-built message is charged to the budget. */
  get held(): number {
    return this.charged;
  }

  /** A message is half built (or being discarded to its last part). */
  get building(): boolean {
    return this.units > 0;
  }

  /** Forgets the message being built and returns its bytes to the budget (also when the connection ends). */
  reset(): void {
    this.budget.give(this.charged);
    this.budget.stopBuilding(this);
    this.parts = [];
    this.bytes = 0;
    this.charged = 0;
    this.units = 0;
    this.discarding = false;
  }
}
