import { ByteReader, type ByteWriter, varintSize } from './bytes.js';
import { FrameType } from './constants.js';
import { WireFormatError } from './errors.js';

/**
 * Frames inside a DATA packet (docs/PROTOCOL.md, "Frames"). Many frames share one
 * packet: acknowledgements, keep-alives and small messages travel together.
 */

/** An inclusive range of packet numbers, lo <= hi. */
export interface PnRange {
  lo: number;
  hi: number;
}

export type Frame =
  | { type: 'padding'; length: number }
  | { type: 'ping'; id: number }
  | { type: 'pong'; id: number }
  /** ranges: disjoint, descending; ranges[0].hi is the largest acknowledged. */
  | { type: 'ack'; delayUs: number; ranges: PnRange[] }
  /**
   * A reliable message, or with `last` set, one part of a message too large for one
   * packet (RELIABLE_PART), the final one with last = true. `delta`: how many sequence
   * numbers back the previous unit of the same channel's order is (0: none on this
   * connection), so each channel is delivered in its own order. `unordered`: a whole
   * message delivered on arrival (RELIABLE_UNORDERED, no delta).
   */
  | { type: 'reliable'; channel: number; seq: number; data: Uint8Array; last?: boolean; delta: number; unordered?: boolean }
  /**
   * An unreliable message, or with `part` set, one part of one too large for a packet
   * (UNRELIABLE_PART): message id, index of this part, number of parts.
   */
  | { type: 'unreliable'; channel: number; data: Uint8Array; part?: { id: number; index: number; count: number }; seq?: number }
  | { type: 'close'; reason: number }
  /** MTU_PROBE: ack-eliciting and empty; the packet around it is padded to the size probed. */
  | { type: 'mtu-probe' }
  | { type: 'closed' }
  /** PATH_CHALLENGE: 8 unpredictable bytes a peer at a new address must echo (RFC 9000 section 8.2). */
  | { type: 'path-challenge'; data: Uint8Array }
  /** PATH_RESPONSE: the echo of a PATH_CHALLENGE. */
  | { type: 'path-response'; data: Uint8Array }
  /**
   * REFUSED: packet `pn` arrived and was authenticated, but a reliable unit in it was not
   * taken for lack of reassembly memory, so it goes unacknowledged. Its sender sends the
   * units again later without treating the packet as lost (no congestion response).
   */
  | { type: 'refused'; pn: number };

/**
 * Whether a frame obliges the receiver to acknowledge its packet. ACK, PADDING, PONG
 * and CLOSED do not: each answers something, and answering the answer would echo
 * forever (PONG's packet carries the ACK that times the PING).
 */
export function isAckEliciting(f: Frame): boolean {
  return f.type !== 'ack' && f.type !== 'padding' && f.type !== 'pong' && f.type !== 'closed';
}

/**
 * Whether a frame wants its packet acknowledged within the max ack delay. Unreliable
 * data does not: nothing of it is sent again, so its ACK may wait for a ride on the
 * receiver's next packet (docs/PROTOCOL.md section 6, "When to acknowledge").
 */
export function wantsPromptAck(f: Frame): boolean {
  return f.type !== 'unreliable' && isAckEliciting(f);
}

export function frameSize(f: Frame): number {
  switch (f.type) {
    case 'padding':
      return f.length;
    case 'ping':
    case 'pong':
      return 5;
    case 'ack': {
      const first = f.ranges[0]!;
      let n = 1 + varintSize(first.hi) + varintSize(f.delayUs) + varintSize(f.ranges.length - 1) + varintSize(first.hi - first.lo);
      for (let i = 1; i < f.ranges.length; i++) {
        const prev = f.ranges[i - 1]!;
        const r = f.ranges[i]!;
        n += varintSize(prev.lo - r.hi - 2) + varintSize(r.hi - r.lo);
      }
      return n;
    }
    case 'reliable':
      if (f.unordered) return 4 + varintSize(f.data.length) + f.data.length;
      return (f.last === undefined ? 4 : 5) + varintSize(f.delta) + varintSize(f.data.length) + f.data.length;
    case 'unreliable': {
      const head = f.part ? varintSize(f.part.id) + varintSize(f.part.index) + varintSize(f.part.count) : f.seq !== undefined ? 2 : 0;
      return 2 + head + varintSize(f.data.length) + f.data.length;
    }
    case 'close':
      return 2;
    case 'closed':
    case 'mtu-probe':
      return 1;
    case 'path-challenge':
    case 'path-response':
      return 1 + PATH_DATA_SIZE;
    case 'refused':
      return 1 + varintSize(f.pn);
  }
}

/** Bytes of a PATH_CHALLENGE or PATH_RESPONSE. */
export const PATH_DATA_SIZE = 8;

function pathData(d: Uint8Array): Uint8Array {
  if (d.length !== PATH_DATA_SIZE) throw new Error(`path challenge data must be ${PATH_DATA_SIZE} bytes, got ${d.length}`);
  return d;
}

export function writeFrame(w: ByteWriter, f: Frame): void {
  switch (f.type) {
    case 'padding':
      w.zeros(f.length);
      return;
    case 'ping':
      w.u8(FrameType.Ping).u32(f.id);
      return;
    case 'pong':
      w.u8(FrameType.Pong).u32(f.id);
      return;
    case 'ack': {
      // Same shape as QUIC's ACK frame (RFC 9000 section 19.3): largest, delay, range
      // count, first range length, then (gap, length) pairs going down.
      const first = f.ranges[0];
      if (!first) throw new Error('ack frame needs at least one range');
      w.u8(FrameType.Ack)
        .varint(first.hi)
        .varint(f.delayUs)
        .varint(f.ranges.length - 1)
        .varint(first.hi - first.lo);
      for (let i = 1; i < f.ranges.length; i++) {
        const prev = f.ranges[i - 1]!;
        const r = f.ranges[i]!;
        w.varint(prev.lo - r.hi - 2).varint(r.hi - r.lo);
      }
      return;
    }
    case 'reliable':
      if (f.unordered) w.u8(FrameType.ReliableUnordered).u8(f.channel).u16(f.seq);
      else if (f.last === undefined) w.u8(FrameType.Reliable).u8(f.channel).u16(f.seq).varint(f.delta);
      else
        w.u8(FrameType.ReliablePart)
          .u8(f.channel)
          .u16(f.seq)
          .u8(f.last ? 1 : 0)
          .varint(f.delta);
      w.varint(f.data.length).raw(f.data);
      return;
    case 'unreliable':
      if (f.part) w.u8(FrameType.UnreliablePart).u8(f.channel).varint(f.part.id).varint(f.part.index).varint(f.part.count);
      else if (f.seq !== undefined) w.u8(FrameType.UnreliableSequenced).u8(f.channel).u16(f.seq);
      else w.u8(FrameType.Unreliable).u8(f.channel);
      w.varint(f.data.length).raw(f.data);
      return;
    case 'close':
      w.u8(FrameType.Close).u8(f.reason);
      return;
    case 'closed':
      w.u8(FrameType.Closed);
      return;
    case 'mtu-probe':
      w.u8(FrameType.MtuProbe);
      return;
    case 'path-challenge':
      w.u8(FrameType.PathChallenge).raw(pathData(f.data));
      return;
    case 'path-response':
      w.u8(FrameType.PathResponse).raw(pathData(f.data));
      return;
    case 'refused':
      w.u8(FrameType.Refused).varint(f.pn);
      return;
  }
}

/** Upper bound on ack ranges we accept in one frame; more is hostile or broken. */
export const MAX_ACK_RANGES = 256;

function readFrame(r: ByteReader): Frame {
  const t = r.u8('frame type');
  switch (t) {
    case FrameType.Padding: {
      // Padding runs to the end of the packet and must be all zeros.
      const rest = r.bytesView(r.remaining, 'padding');
      // A plain loop: probes carry up to 64 KiB of padding, and a callback per byte shows in profiles.
      for (let i = 0; i < rest.length; i++) if (rest[i] !== 0) throw new WireFormatError('padding: non-zero byte');
      return { type: 'padding', length: rest.length + 1 };
    }
    case FrameType.Ping:
      return { type: 'ping', id: r.u32('ping id') };
    case FrameType.Pong:
      return { type: 'pong', id: r.u32('pong id') };
    case FrameType.Ack: {
      const largest = r.varint('ack largest');
      const delayUs = r.varint('ack delay');
      const extra = r.varint('ack range count');
      if (extra >= MAX_ACK_RANGES) throw new WireFormatError(`ack: ${extra + 1} ranges, at most ${MAX_ACK_RANGES}`);
      const firstLen = r.varint('ack first range');
      if (firstLen > largest) throw new WireFormatError('ack: first range below zero');
      const ranges: PnRange[] = [{ lo: largest - firstLen, hi: largest }];
      for (let i = 0; i < extra; i++) {
        const gap = r.varint('ack gap');
        const len = r.varint('ack range length');
        const prevLo = ranges[ranges.length - 1]!.lo;
        const hi = prevLo - gap - 2;
        const lo = hi - len;
        if (lo < 0) throw new WireFormatError('ack: range below zero');
        ranges.push({ lo, hi });
      }
      return { type: 'ack', delayUs, ranges };
    }
    case FrameType.Reliable: {
      const channel = r.u8('channel');
      const seq = r.u16('sequence');
      const delta = r.varint('delta');
      const len = r.varint('message length');
      return { type: 'reliable', channel, seq, delta, data: r.bytesView(len, 'message') };
    }
    case FrameType.ReliableUnordered: {
      const channel = r.u8('channel');
      const seq = r.u16('sequence');
      const len = r.varint('message length');
      return { type: 'reliable', channel, seq, delta: 0, unordered: true, data: r.bytesView(len, 'message') };
    }
    case FrameType.ReliablePart: {
      const channel = r.u8('channel');
      const seq = r.u16('sequence');
      const flags = r.u8('part flags');
      if (flags > 1) throw new WireFormatError(`part flags 0x${flags.toString(16)}`);
      const delta = r.varint('delta');
      const len = r.varint('part length');
      // An empty part that is not the final one carries nothing yet costs the receiver a unit.
      if (len === 0 && flags === 0) throw new WireFormatError('empty reliable part that is not the final one');
      return { type: 'reliable', channel, seq, delta, data: r.bytesView(len, 'part'), last: flags === 1 };
    }
    case FrameType.Unreliable: {
      const channel = r.u8('channel');
      const len = r.varint('message length');
      return { type: 'unreliable', channel, data: r.bytesView(len, 'message') };
    }
    case FrameType.UnreliablePart: {
      const channel = r.u8('channel');
      const id = r.varint('message id');
      const index = r.varint('part index');
      const count = r.varint('part count');
      if (count < 2 || index >= count) throw new WireFormatError(`unreliable part ${index} of ${count}`);
      const len = r.varint('part length');
      if (len === 0) throw new WireFormatError('empty unreliable part');
      return { type: 'unreliable', channel, data: r.bytesView(len, 'part'), part: { id, index, count } };
    }
    case FrameType.Close:
      return { type: 'close', reason: r.u8('close reason') };
    case FrameType.Closed:
      return { type: 'closed' };
    case FrameType.MtuProbe:
      return { type: 'mtu-probe' };
    case FrameType.PathChallenge:
      return { type: 'path-challenge', data: r.bytesCopy(PATH_DATA_SIZE, 'path challenge') };
    case FrameType.PathResponse:
      return { type: 'path-response', data: r.bytesCopy(PATH_DATA_SIZE, 'path response') };
    case FrameType.Refused:
      return { type: 'refused', pn: r.varint('refused packet number') };
    case FrameType.UnreliableSequenced: {
      const channel = r.u8('channel');
      const seq = r.u16('sequence');
      const len = r.varint('message length');
      return { type: 'unreliable', channel, data: r.bytesView(len, 'message'), seq };
    }
    default:
      throw new WireFormatError(`unknown frame type 0x${t.toString(16)}`);
  }
}

/**
 * Decodes all frames in bytes[start, end). A packet with no frame is malformed. The
 * data of message frames are views into `bytes`, not copies: a message delivered at once
 * costs no copy, and whatever keeps one for later (the reorder buffer, the assemblers)
 * passes it through keepable (bytes.ts), so that it pins no datagram and costs what the
 * caps count.
 */
export function decodeFrames(bytes: Uint8Array, start: number, end: number): Frame[] {
  const r = new ByteReader(bytes, start, end);
  const frames: Frame[] = [];
  while (r.remaining > 0) frames.push(readFrame(r));
  if (frames.length === 0) throw new WireFormatError('data packet without frames');
  return frames;
}

export function describeFrame(f: Frame): string {
  switch (f.type) {
    case 'padding':
      return `PADDING ${f.length}B`;
    case 'ping':
      return `PING #${f.id}`;
    case 'pong':
      return `PONG #${f.id}`;
    case 'ack':
      return `ACK ${f.ranges.map((r) => (r.lo === r.hi ? `${r.lo}` : `${r.lo}-${r.hi}`)).join(',')} delay=${f.delayUs}us`;
    case 'reliable':
      return `${f.unordered ? 'UNORDERED' : f.last === undefined ? 'MSG' : f.last ? 'PART(last)' : 'PART'} ch${f.channel} #${f.seq}${f.delta ? ` after -${f.delta}` : ''} ${f.data.length}B`;
    case 'unreliable':
      if (f.part) return `UPART ch${f.channel} msg=${f.part.id} ${f.part.index + 1}/${f.part.count} ${f.data.length}B`;
      return f.seq !== undefined ? `USEQ ch${f.channel} #${f.seq} ${f.data.length}B` : `UMSG ch${f.channel} ${f.data.length}B`;
    case 'close':
      return `CLOSE reason=${f.reason}`;
    case 'closed':
      return 'CLOSED';
    case 'mtu-probe':
      return 'MTU_PROBE';
    case 'path-challenge':
      return 'PATH_CHALLENGE';
    case 'path-response':
      return 'PATH_RESPONSE';
    case 'refused':
      return `REFUSED pn=${f.pn}`;
  }
}
