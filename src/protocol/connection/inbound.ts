import { type SessionBudget, UNIT_OVERHEAD_BYTES } from '../../reliability/budget.js';
import { type InUnit, newReceiveState, type ReceiveState, releaseReceiveState, type UnitSink } from '../../reliability/receiver.js';
import { ReliableAssembler } from '../../reliability/reliable-assembler.js';
import type { ConnectionCounters } from './stats.js';

/**
 * What a receiver keeps of a session's incoming reliable stream across connections:
 * which units are done, and each channel's half-built message. A connection that
 * resumes the session continues both (docs/PROTOCOL.md, "Sessions").
 */
export interface InboundSession {
  state: ReceiveState;
  /** Each channel's half-built message, oldest first; undefined while there is none. */
  assemblers: Map<number, ReliableAssembler> | undefined;
  /** What the session's stream holds, through which every charge for it goes (set by its first connection). */
  budget?: SessionBudget;
}

export function newInbound(delivered = 0): InboundSession {
  // Every field in the literal, budget too: one added later goes to a separate property array (48 bytes a connection).
  return { state: newReceiveState(delivered), assemblers: undefined, budget: undefined };
}

/** The session ends for good: its half-built messages and done-out-of-order units give their charges back to the budget. */
export function releaseInbound(s: InboundSession): void {
  for (const a of s.assemblers?.values() ?? []) a.reset();
  s.assemblers = undefined;
  releaseReceiveState(s.state);
}

/** Where whole reliable messages go (the connection, which raises them as events). */
export interface MessageSink {
  reliableMessage(data: Uint8Array, channel: number, unordered: boolean): void;
}

/**
 * Reliable units whose turn came (from the StreamReceiver), to the program: a whole
 * message at once, a part to its channel's half-built message. One session holds at
 * most maxMessageSize of half-built messages on its channels besides the oldest, which
 * may always grow, so one always finishes and a peer cannot take the endpoint's budget
 * with a half-built message per channel.
 */
export class ReliableDelivery implements UnitSink {
  constructor(
    private readonly inbound: InboundSession,
    private readonly budget: SessionBudget,
    private readonly maxMessageSize: number,
    private readonly counters: ConnectionCounters,
    private readonly out: MessageSink,
  ) {}

  /** Takes a unit; false when it is refused for lack of memory (it comes again). */
  take(u: InUnit, precharged: boolean): boolean {
    const inbound = this.inbound;
    let a = inbound.assemblers?.get(u.channel);
    if (u.last === undefined && (u.unordered || !a)) {
      if (precharged) this.budget.give(u.data.length + UNIT_OVERHEAD_BYTES);
      if (u.data.length > this.maxMessageSize) this.counters.oversized++;
      else this.out.reliableMessage(u.data, u.channel, u.unordered);
      return true;
    }
    inbound.assemblers ??= new Map();
    const assemblers = inbound.assemblers;
    if (!a) {
      a = new ReliableAssembler(this.maxMessageSize, this.budget);
      assemblers.set(u.channel, a);
    }
    const m = this.overSessionCap(u, a, precharged) ? 'refused' : a.add(u.data, u.last, precharged);
    // An assembler lives only while it holds a half-built message (Map order = age).
    if (!a.building) {
      this.counters.oversized += a.rejected;
      assemblers.delete(u.channel);
      if (assemblers.size === 0) inbound.assemblers = undefined;
    }
    if (m === 'refused') return false;
    if (m) this.out.reliableMessage(m.data, u.channel, false);
    return true;
  }

  /** The half-built message of a unit's channel, if the unit is a part. */
  builderOf(u: InUnit): ReliableAssembler | undefined {
    return u.last === undefined ? undefined : this.inbound.assemblers?.get(u.channel);
  }

  /** A unit from the reorder buffer is charged already and always taken. */
  private overSessionCap(u: InUnit, a: ReliableAssembler, precharged: boolean): boolean {
    const assemblers = this.inbound.assemblers!; // a's channel is in it
    const oldest = assemblers.values().next().value;
    if (precharged || u.last === undefined || a === oldest) return false;
    // The other channels share maxMessageSize among themselves; the oldest is not counted:
    // counting it, two messages of more than half of maxMessageSize each on two channels
    // blocked each other for good (the sender's window stops at the refused unit, and
    // the oldest cannot finish within it).
    let held = 0;
    for (const x of assemblers.values()) if (x !== oldest) held += x.size;
    return held + u.data.length > this.maxMessageSize;
  }
}
