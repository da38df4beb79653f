import { MAX_MESSAGE_SIZE, PART_SIZE } from '../wire/constants.js';
import { Deque } from './deque.js';
import { RECEIVE_WINDOW, RECEIVE_WINDOW_BYTES } from './receiver.js';

/** A reliable message from the moment it is queued until the peer acknowledges it. */
export interface OutMessage {
  readonly channel: number;
  /** Position in the channel's stream; the wire carries (initialSeq + index) mod 2^16. */
  readonly index: number;
  readonly seq: number;
  /** Byte offset of this unit in the channel's stream (for the byte window). */
  readonly start: number;
  readonly data: Uint8Array;
  /** Undefined for a whole message; for a part of a larger one, whether it is the final part. */
  readonly last: boolean | undefined;
  acked: boolean;
  /** Waiting in the fresh or retransmit queue. */
  queued: boolean;
  sendCount: number;
}

/** A unit of the reliable stream as it must be sent again on another connection. */
export interface Unit {
  data: Uint8Array;
  last: boolean | undefined;
}

/**
 * Splits a reliable message into the units it travels as: itself if it fits one
 * packet, else consecutive parts of `partSize` bytes (views, not copies), the final one
 * marked.
 */
export function splitMessage(data: Uint8Array, maxWhole: number, partSize: number): Unit[] {
  if (data.length <= maxWhole) return [{ data, last: undefined }];
  const units: Unit[] = [];
  for (let at = 0; at < data.length; at += partSize) units.push({ data: data.subarray(at, at + partSize), last: at + partSize >= data.length });
  return units;
}

/** Frame bytes around a whole message and around a part, at most (4-byte length varint). */
const WHOLE_OVERHEAD = 8;
const PART_OVERHEAD = 9;
/** A message is not cut into a part smaller than this (unless that is all that is left). */
const MIN_PART = 256;

/** Units a message of `n` bytes takes at the base datagram size: what length and backpressure count. */
function baseUnits(n: number): number {
  return n <= MAX_MESSAGE_SIZE ? 1 : Math.ceil(n / PART_SIZE);
}

/**
 * The sending half of reliable ordered delivery for one channel. Messages wait whole
 * in `staged` until the packet being built has room; there they are cut into units
 * that fill the packet (a whole message when it fits, else a part as large as the room
 * allows), so a path with 64 KiB datagrams carries 64 KiB parts, not fifty-odd small
 * ones. A unit, once cut, keeps its sequence number and size for good; it goes out
 * when both windows allow (RECEIVE_WINDOW units and RECEIVE_WINDOW_BYTES bytes past the
 * oldest unacknowledged unit), is queued again when a packet carrying it is lost, and
 * is done only when acknowledged; the receiver's sequence check removes copies.
 */
export class ReliableSender {
  private nextIndex = 0;
  /**
   * Every unit not yet acknowledged, in index order, sent or not; plus, at the front,
   * the acknowledged parts of a message whose other parts are not (a reconnect must
   * resend a message whole: the receiver's half-built message dies with its connection).
   */
  private readonly unacked = new Deque<OutMessage>();
  /** How many units at the front of `unacked` are acknowledged. */
  private ackedPrefix = 0;
  private readonly fresh = new Deque<OutMessage>();
  private readonly retransmit = new Deque<OutMessage>();
  /** Messages not yet cut into units; `at` is how much of the head was cut already. */
  private readonly staged = new Deque<{ data: Uint8Array; at: number; units: number }>();
  /** baseUnits of what is staged and not yet cut. */
  private stagedUnits = 0;
  /** Byte offset in the stream after the last unit cut. */
  private streamPos = 0;
  /** Bytes held: unacknowledged units plus staged messages. */
  bytes = 0;
  retransmissions = 0;

  constructor(
    readonly channel = 0,
    private readonly initialSeq = 0,
  ) {}

  /**
   * Units not yet acknowledged (queued or in flight), counting staged messages as the
   * units they would take at the base datagram size.
   */
  get length(): number {
    return this.unacked.length + this.stagedUnits;
  }

  /** Units and messages that never went out. */
  get unsent(): number {
    return this.fresh.length + this.staged.length;
  }

  /** Queues a unit as it is (a unit carried over from an earlier connection of the session). */
  enqueue(data: Uint8Array, last?: boolean): OutMessage {
    const index = this.nextIndex++;
    const m: OutMessage = { channel: this.channel, index, seq: (this.initialSeq + index) & 0xffff, start: this.streamPos, data, last, acked: false, queued: true, sendCount: 0 };
    this.streamPos += data.length;
    this.bytes += data.length;
    this.unacked.push(m);
    this.fresh.push(m);
    return m;
  }

  /** Queues a message, to be cut into units when packets are built. */
  enqueueMessage(data: Uint8Array): void {
    const units = baseUnits(data.length);
    this.staged.push({ data, at: 0, units });
    this.stagedUnits += units;
    this.bytes += data.length;
  }

  private skipAckedRetransmits(): OutMessage | undefined {
    let m = this.retransmit.peek();
    while (m && m.acked) {
      this.retransmit.shift();
      m.queued = false;
      m = this.retransmit.peek();
    }
    return m;
  }

  /** Bytes the windows leave for new units (0 when a window is full). */
  private windowRoom(): number {
    const oldest = this.unacked.at(this.ackedPrefix);
    if (!oldest) return RECEIVE_WINDOW_BYTES;
    if (this.nextIndex - oldest.index >= RECEIVE_WINDOW) return 0;
    return Math.max(0, oldest.start + RECEIVE_WINDOW_BYTES - this.streamPos);
  }

  private freshFits(f: OutMessage): boolean {
    const oldest = this.unacked.at(this.ackedPrefix)!;
    return f === oldest || (f.index - oldest.index < RECEIVE_WINDOW && f.start + f.data.length - oldest.start <= RECEIVE_WINDOW_BYTES);
  }

  /** Whether peek() could give a unit to a packet with plenty of room. */
  ready(): boolean {
    if (this.skipAckedRetransmits()) return true;
    const f = this.fresh.peek();
    if (f) return this.freshFits(f);
    return this.staged.length > 0 && this.windowRoom() >= Math.min(MIN_PART, this.staged.peek()!.data.length);
  }

  /**
   * The next unit to put in a packet with `room` bytes left for frames, retransmissions
   * first; undefined if none may go now (nothing queued, a window is full, or what is
   * next is a small message that wants a packet of its own). A retransmission or a
   * carried-over unit may be larger than `room`: the caller decides what to do.
   */
  peek(room = Infinity): OutMessage | undefined {
    const r = this.skipAckedRetransmits();
    if (r) return r;
    const f = this.fresh.peek();
    if (f) return this.freshFits(f) ? f : undefined;
    const m = this.staged.peek();
    if (!m) return undefined;
    const remaining = m.data.length - m.at;
    const window = this.windowRoom();
    if (m.at === 0 && (remaining <= MAX_MESSAGE_SIZE || remaining <= room - WHOLE_OVERHEAD)) {
      // Whole: small messages are never cut, they wait for the next packet instead.
      if (remaining > room - WHOLE_OVERHEAD || (remaining > window && this.unacked.length > this.ackedPrefix)) return undefined;
      return this.cut(m, remaining, undefined);
    }
    const n = Math.min(remaining, room - PART_OVERHEAD, this.unacked.length > this.ackedPrefix ? window : Infinity);
    if (n < Math.min(MIN_PART, remaining)) return undefined;
    return this.cut(m, n, m.at + n === m.data.length);
  }

  private cut(m: { data: Uint8Array; at: number; units: number }, n: number, last: boolean | undefined): OutMessage {
    const data = m.at === 0 && n === m.data.length ? m.data : m.data.subarray(m.at, m.at + n);
    m.at += n;
    const done = m.at === m.data.length;
    this.stagedUnits -= m.units;
    m.units = done ? 0 : Math.ceil((m.data.length - m.at) / PART_SIZE);
    this.stagedUnits += m.units;
    if (done) this.staged.shift();
    this.bytes -= n; // enqueue counts it again as a unit
    return this.enqueue(data, last);
  }

  /** Marks the message peek() returned as put into a packet. */
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
    m.acked = true;
    // Extend the acknowledged prefix; each time it reaches the end of a message, forget
    // everything up to there (acknowledged units go a whole message at a time).
    for (let u = this.unacked.at(this.ackedPrefix); u?.acked; u = this.unacked.at(this.ackedPrefix)) {
      this.ackedPrefix++;
      if (u.last === false) continue;
      for (; this.ackedPrefix > 0; this.ackedPrefix--) this.bytes -= this.unacked.shift()!.data.length;
    }
  }

  /** A packet carrying m was lost: send it again unless already acknowledged or queued. */
  onLost(m: OutMessage): void {
    if (m.acked || m.queued) return;
    m.queued = true;
    this.retransmit.push(m);
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
   * For the next connection: every message from the oldest unacknowledged one on, in
   * order, and the index of the first. Acknowledged messages after a gap are included:
   * acknowledged is not delivered (the receiver may hold them waiting for the gap),
   * and a receiver that resumes the session skips what it did deliver.
   */
  takeAll(): { units: Unit[]; firstIndex: number } {
    const all = this.unacked.clear();
    this.fresh.clear();
    this.retransmit.clear();
    this.ackedPrefix = 0;
    const units: Unit[] = all.map((m) => ({ data: m.data, last: m.last }));
    // Staged messages become base-size units; a message already partly cut goes on in parts.
    for (const m of this.staged.clear()) {
      if (m.at === 0) units.push(...splitMessage(m.data, MAX_MESSAGE_SIZE, PART_SIZE));
      else for (let at = m.at; at < m.data.length; at += PART_SIZE) units.push({ data: m.data.subarray(at, at + PART_SIZE), last: at + PART_SIZE >= m.data.length });
    }
    this.stagedUnits = 0;
    this.bytes = 0;
    return { units, firstIndex: all[0]?.index ?? this.nextIndex };
  }
}
