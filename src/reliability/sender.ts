import { MAX_RELIABLE_WHOLE, PART_SIZE } from '../wire/constants.js';
import { Deque, EMPTY_DEQUE } from './deque.js';
import { concat } from './reliable-assembler.js';
import { RECEIVE_WINDOW, RECEIVE_WINDOW_BYTES } from './receiver.js';

/**
 * A message that travels in parts, shared by its units: what is needed to send it again
 * whole if the session has to start over (takeAll). Whole messages need none: their one
 * unit is the message.
 */
export interface MessageRecord {
  readonly channel: number;
  /** The whole message: cut here from a staged message, or carried over with a part (Unit.message). */
  data: Uint8Array | undefined;
  /** For a message carried over in parts from another connection: the parts so far, if its first was among them. */
  parts: Uint8Array[] | undefined;
  /**
   * Carried over without its first part: its first unit here is not the message's
   * first, and it can never be sent again whole. Stays so on every later connection.
   */
  headless: boolean;
  /** Index of its first unit on this connection. */
  readonly first: number;
  /** Its final part was carried over too (so `parts` is complete). */
  complete: boolean;
}

/** A unit of the reliable stream (a whole message or a part) until acknowledged. */
export interface OutMessage {
  readonly channel: number;
  /** Position in the connection's stream; the wire carries (initialSeq + index) mod 2^16. */
  readonly index: number;
  readonly seq: number;
  /** Byte offset of this unit in the stream (for the byte window). */
  readonly start: number;
  readonly data: Uint8Array;
  /** Undefined for a whole message; for a part of a larger one, whether it is the final part. */
  readonly last: boolean | undefined;
  /** A whole message delivered on arrival, outside its channel's order. */
  readonly unordered: boolean;
  /** Units back to the previous unit of this channel's order on this connection (0: none). */
  readonly delta: number;
  /** The message this part belongs to; undefined for a whole message. */
  readonly message: MessageRecord | undefined;
  acked: boolean;
  /** Waiting in the fresh or retransmit queue. */
  queued: boolean;
  sendCount: number;
  /** Times the peer refused it for lack of memory (REFUSED): each doubles the wait before it goes again. */
  refusals: number;
}

/** A unit of the reliable stream as it must be sent again on another connection. */
export interface Unit {
  data: Uint8Array;
  last: boolean | undefined;
  channel: number;
  unordered: boolean;
  /** The first part of its message (false for a later part; whole messages: true). */
  first: boolean;
  /**
   * For a part, its whole message when known: a later connection that gets the message
   * without its first part can still send it again whole if the session starts over.
   */
  message?: Uint8Array | undefined;
}

/** A message to send again whole when the session starts over. */
export interface WholeMessage {
  data: Uint8Array;
  channel: number;
  unordered: boolean;
}

/**
 * Splits a reliable message into the units it travels as: itself if it fits one
 * packet, else consecutive parts of `partSize` bytes (views, not copies), the final one
 * marked. Parts always keep their channel's order (only a whole message is unordered).
 */
export function splitMessage(data: Uint8Array, maxWhole: number, partSize: number, channel = 0, unordered = false): Unit[] {
  if (data.length <= maxWhole) return [{ data, last: undefined, channel, unordered, first: true }];
  const units: Unit[] = [];
  for (let at = 0; at < data.length; at += partSize)
    units.push({ data: data.subarray(at, at + partSize), last: at + partSize >= data.length, channel, unordered: false, first: at === 0 });
  return units;
}

/** Frame bytes around a whole message and around a part, at most (8-byte delta, 4-byte length). */
const WHOLE_OVERHEAD = 16;
const PART_OVERHEAD = 17;
/** A message is not cut into a part smaller than this (unless that is all that is left). */
/** No part but a message's final one is smaller (ReliableAssembler counts on it). */
export const MIN_PART = 256;

/** Units a message of `n` bytes takes at the base datagram size: what length and backpressure count. */
function baseUnits(n: number): number {
  return n <= MAX_RELIABLE_WHOLE ? 1 : Math.ceil(n / PART_SIZE);
}

interface Staged {
  data: Uint8Array;
  at: number;
  units: number;
  record: MessageRecord | undefined;
  unordered: boolean;
}

/** A unit the peer refused, and when it may go again. */
interface Deferred {
  m: OutMessage;
  at: number;
}
// Shared by every sender until its first use, and frozen, so a write that skipped the
// swap throws: most connections never defer a unit nor stage a message, and an empty
// array costs 32 bytes.
const NONE_DEFERRED = Object.freeze([]) as readonly Deferred[] as Deferred[];
const NO_TURNS = Object.freeze([]) as readonly number[] as number[];

/**
 * The sending half of reliable delivery for every channel of a connection. All units
 * share one sequence space (for acknowledgement, the windows and sessions); each also
 * names the previous unit of its channel (`delta`), so the receiver keeps each channel
 * in its own order and a lost unit of one channel does not hold back another.
 *
 * Messages wait whole, per channel, until a packet is built; channels take turns, and
 * a message is cut there into units that fill the packet (whole when it fits, else a
 * part as large as the room allows), so a path with 64 KiB datagrams carries 64 KiB
 * parts. A unit, once cut, keeps its sequence number and size for good; it goes out
 * when both windows allow (RECEIVE_WINDOW units and RECEIVE_WINDOW_BYTES bytes past the
 * oldest unacknowledged unit), is queued again when a packet carrying it is lost, and
 * is forgotten once it and every unit before it are acknowledged.
 */
export class ReliableSender {
  private nextIndex = 0;
  /** Units from the oldest unacknowledged one on, in index order (acknowledged ones after a gap too). */
  // Each made on its first push (EMPTY_DEQUE until then): an idle connection sends none.
  private unacked: Deque<OutMessage> = EMPTY_DEQUE;
  private fresh: Deque<OutMessage> = EMPTY_DEQUE;
  private retransmit: Deque<OutMessage> = EMPTY_DEQUE;
  /** Units the peer refused for lack of memory, waiting until `at` to be sent again (queued meanwhile). */
  private deferred: Deferred[] = NONE_DEFERRED;
  /** When the first deferred unit is due (Infinity: none). */
  deferredUntil = Infinity;
  // The maps below are made on first use: most connections of a server are idle most of
  // the time, and an empty Map costs about 180 bytes.
  /** Messages not yet cut into units, per channel; `turns` lists channels that have some, in turn order. */
  private staged: Map<number, Deque<Staged>> | undefined;
  private turns: number[] = NO_TURNS;
  /** baseUnits of what is staged and not yet cut. */
  private stagedUnits = 0;
  private stagedMessages = 0;
  /** Byte offset in the stream after the last unit cut. */
  private streamPos = 0;
  /** Index of the last ordered unit cut on each channel (for delta). */
  private lastOrdered: Map<number, number> | undefined;
  /** The message each channel is in the middle of (parts carried over from another connection). */
  private openRecord: Map<number, MessageRecord> | undefined;
  /** Bytes held: unacknowledged units plus staged messages. */
  bytes = 0;
  retransmissions = 0;

  constructor(private readonly initialSeq = 0) {}

  /**
   * Units not yet acknowledged (queued or in flight), counting staged messages as the
   * units they would take at the base datagram size.
   */
  get length(): number {
    return this.unacked.length + this.stagedUnits;
  }

  /** Units and messages that never went out. */
  get unsent(): number {
    return this.fresh.length + this.stagedMessages;
  }

  private newRecord(channel: number, data: Uint8Array | undefined): MessageRecord {
    return { channel, data, parts: undefined, headless: false, first: this.nextIndex, complete: false };
  }

  /**
   * Queues a unit as it is (one carried over from an earlier connection of the
   * session). Parts of one message must come in order, as takeAll gave them.
   */
  enqueue(data: Uint8Array, last?: boolean, channel = 0, unordered = false, first = true, message?: Uint8Array): OutMessage {
    if (last === undefined) return this.add(data, last, channel, unordered, undefined);
    let record = first ? undefined : this.openRecord?.get(channel);
    if (!record) {
      record = this.newRecord(channel, message);
      // A message whose first part is here can be rebuilt whole; one cut off at its head cannot.
      if (first) record.parts = [];
      else record.headless = true;
      if (last === false) {
        this.openRecord ??= new Map();
        this.openRecord.set(channel, record);
      }
    }
    record.parts?.push(data);
    if (last === true) {
      record.complete = true;
      this.openRecord?.delete(channel);
    }
    return this.add(data, last, channel, false, record);
  }

  private add(
    data: Uint8Array,
    last: boolean | undefined,
    channel: number,
    unordered: boolean,
    record: MessageRecord | undefined,
  ): OutMessage {
    const index = this.nextIndex++;
    let delta = 0;
    if (!unordered) {
      this.lastOrdered ??= new Map();
      const lastOrdered = this.lastOrdered;
      const prev = lastOrdered.get(channel);
      if (prev !== undefined) delta = index - prev;
      lastOrdered.set(channel, index);
    }
    const m: OutMessage = {
      channel,
      index,
      seq: (this.initialSeq + index) & 0xffff,
      start: this.streamPos,
      data,
      last,
      unordered,
      delta,
      message: record,
      acked: false,
      queued: true,
      sendCount: 0,
      refusals: 0,
    };
    this.streamPos += data.length;
    this.bytes += data.length;
    if (this.unacked === EMPTY_DEQUE) this.unacked = new Deque();
    if (this.fresh === EMPTY_DEQUE) this.fresh = new Deque();
    this.unacked.push(m);
    this.fresh.push(m);
    return m;
  }

  /** Queues a message on a channel, to be cut into units when packets are built. */
  enqueueMessage(data: Uint8Array, channel = 0, unordered = false): void {
    this.staged ??= new Map();
    const staged = this.staged;
    let q = staged.get(channel);
    if (!q) {
      q = new Deque<Staged>();
      staged.set(channel, q);
    }
    if (q.length === 0) {
      if (this.turns === NO_TURNS) this.turns = [channel];
      else this.turns.push(channel);
    }
    const units = baseUnits(data.length);
    q.push({ data, at: 0, units, record: undefined, unordered });
    this.stagedUnits += units;
    this.stagedMessages++;
    this.bytes += data.length;
  }

  /** The staged queue of a channel listed in `turns` (which only lists channels that have one). */
  private stagedOn(channel: number): Deque<Staged> {
    return this.staged!.get(channel)!;
  }

  private skipAckedRetransmits(): OutMessage | undefined {
    let m = this.retransmit.peek();
    while (m?.acked) {
      this.retransmit.shift();
      m.queued = false;
      m = this.retransmit.peek();
    }
    return m;
  }

  /** Bytes the windows leave for new units (0 when a window is full). */
  private windowRoom(): number {
    const oldest = this.unacked.peek();
    if (!oldest) return RECEIVE_WINDOW_BYTES;
    if (this.nextIndex - oldest.index >= RECEIVE_WINDOW) return 0;
    return Math.max(0, oldest.start + RECEIVE_WINDOW_BYTES - this.streamPos);
  }

  private freshFits(f: OutMessage): boolean {
    const oldest = this.unacked.peek()!;
    return f === oldest || (f.index - oldest.index < RECEIVE_WINDOW && f.start + f.data.length - oldest.start <= RECEIVE_WINDOW_BYTES);
  }

  /** Whether peek() could give a unit to a packet with plenty of room. */
  ready(): boolean {
    if (this.skipAckedRetransmits()) return true;
    const f = this.fresh.peek();
    if (f) return this.freshFits(f);
    if (this.turns.length === 0) return false;
    const head = this.stagedOn(this.turns[0]!).peek()!;
    return this.unacked.length === 0 || this.windowRoom() >= Math.min(MIN_PART, head.data.length - head.at);
  }

  /**
   * The next unit to put in a packet with `room` bytes left for frames, retransmissions
   * first, then units carried over, then staged messages, channels taking turns;
   * undefined if none may go now (nothing queued, a window is full, or what is next is
   * a small message that wants a packet of its own). A retransmission or a carried-over
   * unit may be larger than `room`: the caller decides what to do.
   */
  peek(room = Infinity): OutMessage | undefined {
    const r = this.skipAckedRetransmits();
    if (r) return r;
    const f = this.fresh.peek();
    if (f) return this.freshFits(f) ? f : undefined;
    for (let i = 0; i < this.turns.length; i++) {
      const channel = this.turns[0]!;
      const m = this.cutFrom(channel, room);
      // Next time, the next channel goes first (round robin), whether or not this one could.
      this.turns.push(this.turns.shift()!);
      if (m) {
        if (this.stagedOn(channel).length === 0) this.turns = this.turns.filter((c) => c !== channel);
        return m;
      }
    }
    return undefined;
  }

  private cutFrom(channel: number, room: number): OutMessage | undefined {
    const q = this.stagedOn(channel);
    const m = q.peek()!;
    const remaining = m.data.length - m.at;
    const inFlight = this.unacked.length > 0;
    const window = inFlight ? this.windowRoom() : Infinity;
    if (m.at === 0 && (remaining <= MAX_RELIABLE_WHOLE || remaining <= room - WHOLE_OVERHEAD)) {
      // Whole: small messages are never cut, they wait for the next packet instead.
      if (remaining > room - WHOLE_OVERHEAD || remaining > window) return undefined;
      return this.cut(q, m, remaining, undefined, channel);
    }
    const n = Math.min(remaining, room - PART_OVERHEAD, window);
    if (n < Math.min(MIN_PART, remaining)) return undefined;
    return this.cut(q, m, n, m.at + n === m.data.length, channel);
  }

  private cut(q: Deque<Staged>, m: Staged, n: number, last: boolean | undefined, channel: number): OutMessage {
    const data = m.at === 0 && n === m.data.length ? m.data : m.data.subarray(m.at, m.at + n);
    // A message that does not fit one unit travels in ordered parts, even if sent unordered.
    const unordered = m.unordered && last === undefined;
    if (last !== undefined) m.record ??= this.newRecord(channel, m.data);
    m.at += n;
    const done = m.at === m.data.length;
    this.stagedUnits -= m.units;
    m.units = done ? 0 : Math.ceil((m.data.length - m.at) / PART_SIZE);
    this.stagedUnits += m.units;
    if (done) {
      q.shift();
      this.stagedMessages--;
    }
    this.bytes -= n; // add() counts it again as a unit
    return this.add(data, last, channel, unordered, m.record);
  }

  /** Marks the unit peek() returned as put into a packet. */
  take(m: OutMessage): void {
    if (this.retransmit.peek() === m) {
      this.retransmit.shift();
      this.retransmissions++;
    } else if (this.fresh.peek() === m) this.fresh.shift();
    else throw new Error('take() of a message that is not at the head of a queue');
    m.queued = false;
    m.sendCount++;
  }

  onAcked(m: OutMessage): void {
    if (m.acked) return;
    m.acked = true;
    // Forget the acknowledged prefix: everything before the oldest unacknowledged unit.
    for (let u = this.unacked.peek(); u?.acked; u = this.unacked.peek()) this.bytes -= this.unacked.shift()!.data.length;
  }

  /** A packet carrying m was lost: send it again unless already acknowledged or queued. */
  onLost(m: OutMessage): void {
    if (m.acked || m.queued) return;
    m.queued = true;
    this.requeue(m);
  }

  /**
   * The peer took a packet carrying m but could not take m itself (no memory): send it
   * again at `at`, not now (it would be refused again) and not as a loss. Meanwhile it
   * counts as queued, so a probe timeout does not send it early.
   */
  defer(m: OutMessage, at: number): void {
    if (m.acked || m.queued) return;
    m.queued = true;
    m.refusals++;
    if (this.deferred === NONE_DEFERRED) this.deferred = [{ m, at }];
    else this.deferred.push({ m, at });
    if (at < this.deferredUntil) this.deferredUntil = at;
  }

  /** Deferred units whose time has come go to the retransmit queue. */
  releaseDeferred(now: number): void {
    if (now < this.deferredUntil) return;
    const waiting: Deferred[] = [];
    this.deferredUntil = Infinity;
    for (const d of this.deferred) {
      if (d.at <= now) this.requeue(d.m);
      else {
        waiting.push(d);
        if (d.at < this.deferredUntil) this.deferredUntil = d.at;
      }
    }
    this.deferred = waiting.length > 0 ? waiting : NONE_DEFERRED;
  }

  /** Probe timeout: queue every message in flight again (oldest first). */
  requeueInFlight(): number {
    let n = 0;
    for (const m of this.unacked) {
      if (!m.acked && !m.queued && m.sendCount > 0) {
        this.onLost(m);
        n++;
      }
    }
    return n;
  }

  /**
   * For the next connection of the session, what this one still owes:
   * - `units`: every unit from the oldest unacknowledged one on, in order, and
   *   `firstIndex`, the index of the first. Acknowledged units after a gap are
   *   included: acknowledged is not delivered, and a receiver that resumes the
   *   session skips what it did deliver. Then staged messages, cut at the base size.
   * - `whole`: if the peer lost the session instead (it starts over), every message
   *   it may not have delivered, whole and in order, staged ones included.
   */
  takeAll(): { units: Unit[]; firstIndex: number; whole: WholeMessage[] } {
    const all = this.unacked.clear();
    this.fresh.clear();
    this.retransmit.clear();
    this.deferred = NONE_DEFERRED;
    this.deferredUntil = Infinity;
    const units: Unit[] = [];
    const whole: WholeMessage[] = [];
    // Every message with a unit from the oldest unacknowledged one on may be undelivered;
    // one wholly before it is delivered (its units and all before them were received).
    // Each message's whole data, once (undefined: it cannot be rebuilt).
    const seen = new Map<MessageRecord, Uint8Array | undefined>();
    const wholeOf = (r: MessageRecord): Uint8Array | undefined => {
      if (seen.has(r)) return seen.get(r);
      const data = r.data ?? (r.parts && r.complete && !r.headless ? concat(r.parts) : undefined);
      seen.set(r, data);
      if (data) whole.push({ data, channel: r.channel, unordered: false });
      return data;
    };
    for (const m of all) {
      const r = m.message;
      const message = r && wholeOf(r);
      const first = r === undefined || (r.first === m.index && !r.headless);
      units.push({ data: m.data, last: m.last, channel: m.channel, unordered: m.unordered, first, message });
      if (!r) whole.push({ data: m.data, channel: m.channel, unordered: m.unordered });
    }
    this.openRecord = undefined;
    // Staged messages, channel by channel in their turn order; a message already partly
    // cut goes on in parts (its record, above, has it whole).
    for (const channel of this.turns) {
      for (const m of this.stagedOn(channel).clear()) {
        if (m.at === 0) {
          units.push(...splitMessage(m.data, MAX_RELIABLE_WHOLE, PART_SIZE, channel, m.unordered));
          whole.push({ data: m.data, channel, unordered: m.unordered });
        } else {
          const message = m.record && wholeOf(m.record); // its cut parts may all be acknowledged already
          for (let at = m.at; at < m.data.length; at += PART_SIZE) {
            units.push({
              data: m.data.subarray(at, at + PART_SIZE),
              last: at + PART_SIZE >= m.data.length,
              channel,
              unordered: false,
              first: false,
              message,
            });
          }
        }
      }
    }
    this.turns = NO_TURNS;
    this.stagedUnits = 0;
    this.stagedMessages = 0;
    this.bytes = 0;
    return { units, firstIndex: all[0]?.index ?? this.nextIndex, whole };
  }

  private requeue(m: OutMessage): void {
    if (this.retransmit === EMPTY_DEQUE) this.retransmit = new Deque();
    this.retransmit.push(m);
  }
}
