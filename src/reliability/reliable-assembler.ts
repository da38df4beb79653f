/** Joins parts into one new array. */
export function concat(parts: Uint8Array[], total: number): Uint8Array {
  const whole = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    whole.set(p, at);
    at += p.length;
  }
  return whole;
}

/** A finished reliable message, and how many sequence numbers (units) it took. */
export interface Assembled {
  data: Uint8Array;
  units: number;
}

/**
 * Turns in-order reliable units back into messages: a whole one at once, parts
 * gathered until the last. Memory grows only with parts that arrived, never from a
 * claimed size, and a message past maxMessageSize is dropped to its last part and
 * counted (a peer that sends one is broken or hostile); so is an unfinished message
 * interrupted by a whole one.
 */
export class ReliableAssembler {
  private parts: Uint8Array[] = [];
  private bytes = 0;
  private units = 0;
  private discarding = false;
  /** Messages dropped for breaking the rules. */
  rejected = 0;

  constructor(private readonly maxMessageSize: number) {}

  /** Offers the next unit in order; returns a message when this unit completes one. */
  add(data: Uint8Array, last: boolean | undefined): Assembled | undefined {
    if (last === undefined) {
      if (this.units > 0) {
        this.rejected++;
        this.reset();
      }
      if (data.length > this.maxMessageSize) {
        this.rejected++;
        return undefined;
      }
      return { data, units: 1 };
    }
    this.units++;
    if (!this.discarding) {
      this.bytes += data.length;
      if (this.bytes > this.maxMessageSize) {
        this.rejected++;
        this.discarding = true;
        this.parts = [];
      } else this.parts.push(data);
    }
    if (!last) return undefined;
    const done = this.discarding ? undefined : { data: concat(this.parts, this.bytes), units: this.units };
    this.reset();
    return done;
  }

  private reset(): void {
    this.parts = [];
    this.bytes = 0;
    this.units = 0;
    this.discarding = false;
  }
}
