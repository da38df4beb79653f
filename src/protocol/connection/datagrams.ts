import type { ReassemblyBudget } from '../../reliability/budget.js';
import { Deque, EMPTY_DEQUE } from '../../reliability/deque.js';
import { seqLess } from '../../reliability/seq.js';
import { UnreliableAssembler } from '../../reliability/unreliable-assembler.js';
import { MAX_MESSAGE_SIZE, PART_SIZE } from '../../wire/constants.js';
import type { Frame } from '../../wire/frames.js';
import type { PacketBuilder } from './packet-builder.js';
import type { ConnectionCounters } from './stats.js';

/** An unreliable message waiting to go. */
export interface UnreliableOut {
  data: Uint8Array;
  channel: number;
  /** Unreliable-sequenced: the receiver keeps only the newest of its channel. */
  sequenced: boolean;
  /** A newer sequenced message of the same channel was queued: this one is not sent. */
  superseded?: boolean;
}

type UnreliableFrame = Extract<Frame, { type: 'unreliable' }>;

/**
 * Unreliable messages, both ways: the queue of those waiting to go (a sequenced one
 * supersedes its channel's older one still queued; one too large for a packet goes part
 * by part, in order, possibly across packets), and on arrival the sequenced channels'
 * newest numbers and the reassembly of parts. The maps are made on first use: most
 * connections never send a sequenced message.
 */
export class Datagrams {
  /** Made on the first push (EMPTY_DEQUE until then): most connections never send unreliable messages. */
  private queue: Deque<UnreliableOut> = EMPTY_DEQUE;
  /** Bytes queued. */
  bytes = 0;
  /** The newest queued sequenced message of each channel: a newer one supersedes it. */
  private latestQueued: Map<number, UnreliableOut> | undefined;
  /** Next sequence number of each channel's sequenced messages, sent... */
  private nextSeqOut: Map<number, number> | undefined;
  /** ...and the newest received. */
  private newestIn: Map<number, number> | undefined;
  /** The message being sent in parts, and the next part to go. */
  private cursor: { id: number; next: number } | undefined;
  private nextId = 0;
  private assembler: UnreliableAssembler | undefined;

  constructor(
    private readonly maxMessageSize: number,
    private readonly budget: ReassemblyBudget,
    private readonly counters: ConnectionCounters,
  ) {}

  get length(): number {
    return this.queue.length;
  }

  push(m: UnreliableOut): void {
    if (m.sequenced) {
      this.latestQueued ??= new Map();
      const older = this.latestQueued.get(m.channel);
      if (older) older.superseded = true;
      this.latestQueued.set(m.channel, m);
    }
    if (this.queue === EMPTY_DEQUE) this.queue = new Deque();
    this.queue.push(m);
    this.bytes += m.data.length;
  }

  /** Queued messages into the packet being built, as far as they fit. */
  fill(b: PacketBuilder): void {
    const c = this.counters;
    for (let m = this.queue.peek(); m; m = this.queue.peek()) {
      const u = m.data;
      if (m.superseded) {
        c.superseded++;
      } else if (m.sequenced) {
        this.nextSeqOut ??= new Map();
        const seq = this.nextSeqOut.get(m.channel) ?? 0;
        if (!b.add({ type: 'unreliable', channel: m.channel, data: u, seq })) return;
        this.nextSeqOut.set(m.channel, (seq + 1) & 0xffff);
        c.messagesSent++;
      } else if (u.length <= MAX_MESSAGE_SIZE) {
        if (!b.add({ type: 'unreliable', channel: m.channel, data: u })) return;
        c.messagesSent++;
      } else {
        const count = Math.ceil(u.length / PART_SIZE);
        this.cursor ??= { id: this.nextId++, next: 0 };
        const cur = this.cursor;
        for (; cur.next < count; cur.next++) {
          const data = u.subarray(cur.next * PART_SIZE, (cur.next + 1) * PART_SIZE);
          if (!b.add({ type: 'unreliable', channel: m.channel, data, part: { id: cur.id, index: cur.next, count } })) return;
        }
        this.cursor = undefined;
        c.messagesSent++;
      }
      this.queue.shift();
      this.bytes -= u.length;
      if (this.latestQueued?.get(m.channel) === m) this.latestQueued.delete(m.channel);
    }
  }

  /** An arriving unreliable frame: the whole message to deliver, or undefined (stale, or a part of one not yet whole). */
  receive(f: UnreliableFrame, now: number): Uint8Array | undefined {
    if (f.seq !== undefined) {
      // Sequenced: only what is newer than the newest delivered on its channel.
      this.newestIn ??= new Map();
      const newest = this.newestIn.get(f.channel);
      if (newest !== undefined && !seqLess(newest, f.seq)) {
        this.counters.stale++;
        return undefined;
      }
      this.newestIn.set(f.channel, f.seq);
    }
    if (!f.part) return f.data;
    // Parts of unfinished messages: one maximum message's worth per connection.
    this.assembler ??= new UnreliableAssembler(this.maxMessageSize, this.maxMessageSize, this.budget);
    return this.assembler.add(f.part.id, f.part.index, f.part.count, f.data, now);
  }

  /** Gives up parts too old to be completed. */
  expire(now: number): void {
    this.assembler?.expire(now);
  }

  /** The connection ended: parts held go back to the budget. */
  release(): void {
    this.assembler?.clear();
  }

  /** Everything never sent, for the session's next connection; a message cut off mid-parts goes again whole (the peer drops the parts it got). */
  takeUnsent(): UnreliableOut[] {
    this.cursor = undefined;
    this.bytes = 0;
    this.latestQueued?.clear();
    return this.queue.clear().filter((m) => !m.superseded);
  }

  /** Incoming messages that lost a part and were given up whole. */
  get dropped(): number {
    return this.assembler?.dropped ?? 0;
  }

  /** Incoming parts that broke the rules. */
  get rejected(): number {
    return this.assembler?.rejected ?? 0;
  }
}
