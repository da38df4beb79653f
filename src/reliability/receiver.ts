import { type Budget, UNIT_OVERHEAD_BYTES, unlimitedSessionBudget } from './budget.js';
import { keepable } from '../wire/bytes.js';
import { seqAdd, seqDiff } from './seq.js';

/**
 * How many units past the first one not done a receiver accepts. The sender never
 * sends a sequence number this far ahead of its oldest unacknowledged unit (sender.ts),
 * so nothing legitimate is refused, and a hostile peer can make us hold at most this
 * many.
 */
export const RECEIVE_WINDOW = 8192;
/**
 * The same window in bytes: a sender never has more than this much of the stream past
 * its oldest unacknowledged unit, so a receiver never buffers more out of order (plus
 * one unit of slack for a unit that was cut before the window shrank).
 */
export const RECEIVE_WINDOW_BYTES = 4 * 1024 * 1024;
/** What the reorder buffer may hold in payload bytes: the window, one unit of slack. */
const BUFFER_DATA_LIMIT = RECEIVE_WINDOW_BYTES + 65536;
/**
 * And in charged bytes: each of up to RECEIVE_WINDOW units is also charged twice
 * UNIT_OVERHEAD_BYTES (see StreamReceiver.receive), so a peer sending tiny units meets
 * this cap, and one sending within its window never does.
 */
export const BUFFER_LIMIT = BUFFER_DATA_LIMIT + 2 * RECEIVE_WINDOW * UNIT_OVERHEAD_BYTES;

/**
 * 'refused': not taken for lack of memory (the budget, or the consumer said no); the
 * packet that carried it must not be acknowledged, so that it is sent again.
 */
export type ReceiveResult = 'delivered' | 'buffered' | 'duplicate' | 'out-of-window' | 'refused';

/** A reliable unit as it arrived. */
export interface InUnit {
  data: Uint8Array;
  /** Undefined for a whole message; for a part, whether it is the final one. */
  last: boolean | undefined;
  channel: number;
  /** A whole message to deliver on arrival, outside its channel's order. */
  unordered: boolean;
  /** Units back to the previous unit of the channel's order (0: none on this connection). */
  delta: number;
}

/**
 * Where a receiver hands the units whose turn has come. An object with methods rather
 * than callbacks: a connection's sink is the connection's ReliableDelivery itself, so an
 * idle connection holds no closure for it.
 */
export interface UnitSink {
  /**
   * Takes a unit; false when it cannot now (nothing changed). precharged: the unit
   * waited in the reorder buffer and its budget charge passes on.
   */
  take(u: InUnit, precharged: boolean): boolean;
  /**
   * The half-built message a unit would join, if any: the charge for a unit done out
   * of order may pass the budget's limit when that is the endpoint's oldest (which
   * may always grow, so that one message always finishes). Absent: none ever.
   */
  builderOf?(u: InUnit): object | undefined;
}

/**
 * What a receiver knows of a session's incoming stream, kept across its connections
 * (docs/PROTOCOL.md, "Sessions"): how many units from the start are done (delivered, or
 * handed to a message being put together), and which units after those are done too
 * (by session index). A new connection starts at `delivered`, and a unit in `above`
 * that the sender sends again is recognised and skipped.
 */
export interface ReceiveState {
  delivered: number;
  /** Made on first use (most sessions never receive out of order). */
  above: Set<number> | undefined;
  /** Where each entry of `above` is charged UNIT_OVERHEAD_BYTES (set by the first receiver). */
  budget?: Budget;
}

/** The session ends for good: the charges for its `above` entries go back. */
export function releaseReceiveState(s: ReceiveState): void {
  s.budget?.give((s.above?.size ?? 0) * UNIT_OVERHEAD_BYTES);
  s.above = undefined;
}

export function newReceiveState(delivered = 0): ReceiveState {
  // budget in the literal too: a field added later goes to a separate property array (48 bytes a connection).
  return { delivered, above: undefined, budget: undefined };
}

/**
 * Reliable delivery for every channel of a connection. Units share one sequence space
 * (duplicates and the window are judged there), and each channel keeps its own order:
 * a unit is handed over once the previous unit of its channel (`delta` back) is done,
 * whatever other channels are waiting for, and an unordered one at once. Units that
 * must wait are held in a bounded buffer, charged to the endpoint's budget.
 */
export class StreamReceiver {
  /** Local index (0 = the first unit of this connection) of the first unit not done. */
  private next = 0;
  private nextSeq: number;
  private readonly base: number;
  // Both made on first use, together: most connections never hold a unit back.
  private held: Map<number, InUnit> | undefined;
  /** Unit waiting for each unit (by local index): the next of the same channel. */
  private waiting: Map<number, number> | undefined;
  /** Charged for the reorder buffer (payload and overheads), and its payload alone. */
  private bufferedBytes = 0;
  private bufferedData = 0;

  constructor(
    initialSeq = 0,
    private readonly budget: Budget = unlimitedSessionBudget(),
    private readonly state: ReceiveState = newReceiveState(),
  ) {
    this.nextSeq = initialSeq & 0xffff;
    this.base = state.delivered;
    state.budget ??= budget;
  }

  /** Returns what the reorder buffer holds to the budget (the connection ended). */
  release(): void {
    this.budget.give(this.bufferedBytes);
    this.held = this.waiting = undefined;
    this.bufferedBytes = 0;
    this.bufferedData = 0;
  }

  get buffered(): number {
    return this.held?.size ?? 0;
  }

  /** Offers a received unit; what it completes or unblocks goes to `sink`. */
  receive(seq: number, u: InUnit, sink: UnitSink): ReceiveResult {
    const d = seqDiff(this.nextSeq, seq);
    if (d < 0) return 'duplicate';
    if (d >= RECEIVE_WINDOW) return 'out-of-window';
    const idx = this.next + d;
    // Held already, done already, or delivered on an earlier connection of the session.
    const above = this.state.above;
    if (this.held?.has(idx) || above?.has(this.base + idx)) return 'duplicate';
    const pred = u.unordered || u.delta === 0 || u.delta > idx ? -1 : idx - u.delta;
    if (pred >= this.next && !above?.has(this.base + pred)) {
      // Its channel's previous unit is not done: wait for it.
      if (this.waiting?.has(pred)) return 'duplicate'; // two units claiming one place: a broken peer
      // Charged its bytes and twice the overhead: one passes on with the unit when its
      // turn comes (Deliver's precharged), the other pays for its entry in `above` if it
      // is done out of order then, and is given back if not. A part of the endpoint's
      // oldest half-built message may pass the budget's limit here too (within this
      // buffer's own caps): refused, it would hold up the one message promised to finish.
      const cost = u.data.length + 2 * UNIT_OVERHEAD_BYTES;
      const builder = u.last === undefined ? undefined : sink.builderOf?.(u);
      if (
        this.bufferedData + u.data.length > BUFFER_DATA_LIMIT ||
        this.bufferedBytes + cost > BUFFER_LIMIT ||
        !this.budget.take(cost, builder, false, u.last === undefined)
      )
        return 'refused';
      this.held ??= new Map();
      this.waiting ??= new Map();
      // The unit's bytes are a view of its datagram (wire/frames.ts): kept, they must not
      // keep a whole datagram alive while the caps count the unit alone.
      u.data = keepable(u.data);
      this.held.set(idx, u);
      this.waiting.set(pred, idx);
      this.bufferedBytes += cost;
      this.bufferedData += u.data.length;
      return 'buffered';
    }
    // Done out of order: its entry in `above` is charged first.
    const early = idx !== this.next;
    if (early && !this.budget.take(UNIT_OVERHEAD_BYTES, sink.builderOf?.(u), false, u.last === undefined)) return 'refused';
    if (!sink.take(u, false)) {
      if (early) this.budget.give(UNIT_OVERHEAD_BYTES);
      return 'refused';
    }
    // Done, and so may be the chain of units waiting behind it.
    for (let i: number | undefined = idx, charged = early; i !== undefined; charged = true) {
      this.markDone(i, charged);
      const s: number | undefined = this.waiting?.get(i);
      if (s === undefined) break;
      this.waiting!.delete(i);
      const w = this.held!.get(s)!;
      this.held!.delete(s);
      this.bufferedBytes -= w.data.length + 2 * UNIT_OVERHEAD_BYTES;
      this.bufferedData -= w.data.length;
      // Already charged: the consumer takes the charge (bytes + UNIT_OVERHEAD_BYTES) over
      // and cannot refuse it; the other overhead stays for markDone.
      sink.take(w, true);
      i = s;
    }
    return 'delivered';
  }

  /** charged: UNIT_OVERHEAD_BYTES is charged for the unit's entry in `above`, should it need one. */
  private markDone(idx: number, charged: boolean): void {
    const state = this.state;
    if (idx !== this.next) {
      state.above ??= new Set();
      state.above.add(this.base + idx);
      return;
    }
    if (charged) this.budget.give(UNIT_OVERHEAD_BYTES);
    for (;;) {
      this.next++;
      this.nextSeq = seqAdd(this.nextSeq, 1);
      if (!state.above?.delete(this.base + this.next)) break;
      this.budget.give(UNIT_OVERHEAD_BYTES);
    }
    if (state.above?.size === 0) state.above = undefined;
    this.state.delivered = this.base + this.next;
  }
}
