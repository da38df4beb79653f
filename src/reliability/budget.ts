/**
 * A memory budget shared by every connection of an endpoint, for bytes that a peer
 * makes us hold before a message can be delivered: out-of-order reliable units, parts
 * of reliable messages being put together, parts of unreliable messages. Per-connection
 * caps bound one peer; this bounds all of them together (a server with ten thousand
 * clients that each start a 16 MiB message).
 *
 * What happens at the limit depends on what asks: an out-of-order unit is not buffered
 * (its sender retransmits it later, nothing is lost), an unreliable part is dropped
 * (its message is lost, as unreliable messages may be). A reliable message being put
 * together is not advanced (its next part is retransmitted later), except the oldest
 * such message of the whole endpoint, which may always grow: so one message always
 * finishes and frees its bytes, and the endpoint never deadlocks with every budget
 * byte held by half-built messages. A per-connection cap (maxMessageSize) still bounds
 * that one.
 */
export class ReassemblyBudget {
  used = 0;
  /** Peak of `used`, for stats and tests. */
  peak = 0;
  /** Requests refused at the limit. */
  refused = 0;
  /** Half-built reliable messages, oldest first (a Set keeps insertion order). */
  private readonly builders = new Set<object>();

  constructor(readonly limit: number) {}

  /** Takes n bytes if they fit, or if `builder` is the oldest half-built reliable message. */
  take(n: number, builder?: object): boolean {
    if (this.used + n > this.limit && (builder === undefined || this.builders.values().next().value !== builder)) {
      this.refused++;
      return false;
    }
    this.used += n;
    if (this.used > this.peak) this.peak = this.used;
    return true;
  }

  give(n: number): void {
    this.used -= n;
  }

  /** A reliable message started (its first part arrived in order). */
  startBuilding(builder: object): void {
    this.builders.add(builder);
  }

  stopBuilding(builder: object): void {
    this.builders.delete(builder);
  }
}

/** For endpoints that do not share a budget: never refuses. */
export function unlimitedBudget(): ReassemblyBudget {
  return new ReassemblyBudget(Infinity);
}
