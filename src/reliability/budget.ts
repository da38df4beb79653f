/**
 * A memory budget shared by every connection of an endpoint, for bytes that a peer
 * makes us hold before a message can be delivered (and UNIT_OVERHEAD_BYTES per unit held,
 * for the memory around it): out-of-order reliable units, parts
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
 * that one. Only a message that can grow is a candidate: the owner takes a builder out
 * (stopBuilding) while its connection is gone, and puts it back at the end if it returns.
 * And only one whose sender is still sending it: a message that has not asked to grow
 * for IDLE_BUILDER_MS loses its turn to the next one (it queues again at the back when it
 * asks again), so a holder that stops sending cannot keep everyone else's large messages
 * waiting. Past the limit, all this together never takes `used` over limit + maxOver.
 *
 * Before refusing, the budget asks its owner to `reclaim` room: a server forgets parked
 * sessions (whose half-built messages cannot grow until their client returns) to make
 * room for a connection that is there.
 */
/**
 * What each unit a peer makes us hold costs besides its payload, charged with it: a
 * held unit is a copy with its own ArrayBuffer, or a view pinning at most KEEP_SLACK
 * bytes more (wire/bytes.ts, keepable), plus the object and collection entries that
 * hold it. Measured with test/memory-bounds.test.ts on Node 20 (heapUsed +
 * arrayBuffers after gc, before this charge existed): a part held by ReliableAssembler
 * cost 192 bytes of heap (156 MiB for 850,000 empty parts), a unit in StreamReceiver's
 * reorder buffer 328 bytes (102.5 MiB for 327,640 one-byte units). A reorder-buffer unit
 * is charged twice this (its second charge also pays for its entry in
 * ReceiveState.above once done), so 256 covers both with some room.
 */
export const UNIT_OVERHEAD_BYTES = 256;

/** A half-built message that has not asked to grow for this long loses its turn to pass the limit. */
export const IDLE_BUILDER_MS = 1000;

export class ReassemblyBudget implements Budget {
  used = 0;
  /** Peak of `used`, for stats and tests. */
  peak = 0;
  /** Requests refused at the limit. */
  refused = 0;
  /** Half-built reliable messages that may pass the limit in turn, oldest first (a Set keeps insertion order). */
  private readonly builders = new Set<object>();
  /**
   * When each half-built message last asked to grow. One here but not in `builders` lost
   * its turn by not asking for IDLE_BUILDER_MS.
   */
  private readonly askedAt = new Map<object, number>();
  /** The endpoint's clock, set by its owner before each event (the budget keeps no timers). */
  now = 0;
  /**
   * Asked for at least `n` bytes when a request does not fit; gives back what it frees,
   * all of it only if it can (else nothing), and says whether it did.
   */
  reclaim: ((n: number) => boolean) | undefined;

  /**
   * @param sessionShare what one session may always hold, past the limit, for whole
   *   messages (their out-of-order bookkeeping and reorder buffering): so a session's
   *   small messages never wait for others' large ones to give memory back.
   */
  constructor(
    readonly limit: number,
    readonly sessionShare = 0,
    /** How far past the limit the oldest message's right to grow may take `used`. */
    readonly maxOver = Infinity,
  ) {}

  /**
   * Takes n bytes if they fit; or, for a whole message (`small`) of a session that holds
   * less than sessionShare; or once the owner reclaimed room (unless `lossy`: an
   * unreliable part, whose message may be lost, is not worth a session); or if `builder`
   * is the oldest half-built reliable message that may grow.
   */
  take(n: number, builder?: object, lossy = false, small = false, session?: SessionBudget): boolean {
    if (builder !== undefined) this.asked(builder);
    if (this.used + n > this.limit && !this.mayExceed(n, builder, lossy, small, session)) {
      this.refused++;
      return false;
    }
    this.used += n;
    if (this.used > this.peak) this.peak = this.used;
    return true;
  }

  /** A request that does not fit under the limit: the rules of take(), in order. */
  private mayExceed(n: number, builder: object | undefined, lossy: boolean, small: boolean, session: SessionBudget | undefined): boolean {
    const withinCap = this.used + n <= this.limit + this.maxOver;
    if (small && session !== undefined && session.held + n <= this.sessionShare && withinCap) return true;
    if (!lossy && this.reclaim?.(this.used + n - this.limit) && this.used + n <= this.limit) return true;
    return withinCap && this.mayPass(builder);
  }

  give(n: number): void {
    this.used -= n;
  }

  /** A reliable message started (its first part arrived in order). */
  startBuilding(builder: object): void {
    this.builders.add(builder);
    this.askedAt.set(builder, this.now);
  }

  stopBuilding(builder: object): void {
    this.builders.delete(builder);
    this.askedAt.delete(builder);
  }

  /** A half-built message asks to grow: it is active; one that had lost its turn queues again at the back. */
  private asked(builder: object): void {
    if (!this.askedAt.has(builder)) return;
    this.askedAt.set(builder, this.now);
    this.builders.add(builder); // a Set keeps the place of one already in it
  }

  /**
   * The first half-built message that is still asking may pass the limit. Older ones
   * that stopped asking lose their turn on the way (each once per idle spell, so this
   * costs amortised constant time).
   */
  private mayPass(builder: object | undefined): boolean {
    if (builder === undefined) return false;
    for (const b of this.builders) {
      if (b === builder) return true;
      if (this.now - this.askedAt.get(b)! < IDLE_BUILDER_MS) return false;
      this.builders.delete(b);
    }
    return false;
  }
}

/** What the reliable receiving side of a session charges its memory to. */
export interface Budget {
  take(n: number, builder?: object, lossy?: boolean, small?: boolean): boolean;
  give(n: number): void;
  startBuilding(builder: object): void;
  stopBuilding(builder: object): void;
}

/**
 * One session's view of the endpoint's budget: everything the session's reliable stream
 * holds goes through it, so the budget knows what each session holds (for its share).
 */
export class SessionBudget implements Budget {
  held = 0;

  constructor(private readonly shared: ReassemblyBudget) {}

  /** small: for a whole message, which may use the session's share. */
  take(n: number, builder?: object, lossy = false, small = false): boolean {
    if (!this.shared.take(n, builder, lossy, small, this)) return false;
    this.held += n;
    return true;
  }

  give(n: number): void {
    this.held -= n;
    this.shared.give(n);
  }

  startBuilding(builder: object): void {
    this.shared.startBuilding(builder);
  }

  stopBuilding(builder: object): void {
    this.shared.stopBuilding(builder);
  }
}

/** For endpoints that do not share a budget: never refuses. */
export function unlimitedBudget(): ReassemblyBudget {
  return new ReassemblyBudget(Infinity);
}

/** A session's view of a budget that never refuses. */
export function unlimitedSessionBudget(): SessionBudget {
  return new SessionBudget(unlimitedBudget());
}
