import type { PacketCipher } from '../../crypto/packet-cipher.js';
import { ByteWriter } from '../../wire/bytes.js';
import { DATA_HEADER_SIZE, TAG_SIZE } from '../../wire/constants.js';
import { type Frame, frameSize, isAckEliciting, wantsPromptAck, writeFrame } from '../../wire/frames.js';
import { writeDataHeader } from '../../wire/packet.js';

const NO_BYTES = new Uint8Array(0);

/** Bytes of a DATA packet that are not frames. */
export const PACKET_OVERHEAD = DATA_HEADER_SIZE + TAG_SIZE;

/**
 * The packet being built: frames go in while they fit the room left, then `seal` writes
 * the header and frames and protects the packet. One builder for all connections
 * (connection.ts), reused for every packet, so filling a packet makes no closure and no
 * array. reset() starts a packet afresh whatever the last one left.
 */
export class PacketBuilder {
  /**
   * The frames of the packet, frames[0, count): the array keeps its storage from packet
   * to packet (setting its length to 0 would free it, to be grown again for the next).
   * It starts with room for four (an idle PONG and its ACK take two), not the 17 a
   * first push would make.
   */
  private readonly frames: (Frame | undefined)[] = [undefined, undefined, undefined, undefined];
  private count = 0;
  private readonly writer = new ByteWriter(NO_BYTES);
  /** Frame bytes that still fit. */
  room = 0;
  /** Bytes of frames added. */
  private used = 0;
  /** A frame that obliges the peer to acknowledge the packet went in. */
  ackEliciting = false;
  /** A frame other than unreliable data went in: the peer acknowledges within its max ack delay. */
  promptAck = false;
  /** A message (reliable or unreliable) went in: the pacer counts the packet. */
  carriesData = false;

  /** Starts a packet with `room` bytes for frames. */
  reset(room: number): void {
    this.clear();
    this.room = room;
    this.used = 0;
    this.ackEliciting = false;
    this.promptAck = false;
    this.carriesData = false;
  }

  get empty(): boolean {
    return this.count === 0;
  }

  /** Adds `f` if it fits; false leaves the packet as it was. */
  add(f: Frame): boolean {
    const n = frameSize(f);
    if (n > this.room) return false;
    this.frames[this.count++] = f;
    this.room -= n;
    this.used += n;
    if (isAckEliciting(f)) this.ackEliciting = true;
    if (wantsPromptAck(f)) this.promptAck = true;
    if (f.type === 'reliable' || f.type === 'unreliable') this.carriesData = true;
    return true;
  }

  /** Adds `f` whatever its size: a unit cut for a larger path MTU than the path has now goes alone, oversized. */
  force(f: Frame): void {
    this.room = frameSize(f);
    this.add(f);
  }

  /**
   * The packet: header, frames, then the tag (or the encryption) of `cipher` for packet
   * number `pn`. Packets under 4 KiB are cut from Node's shared Buffer pool rather than
   * given an ArrayBuffer each (an allocation and a GC-tracked backing store per packet
   * otherwise); the pool's bytes are not zeroed, so every byte is written here, and a
   * frame that wrote other than its frameSize() is a bug caught before anything is sent.
   */
  seal(cipher: PacketCipher, remoteConnId: number, pn: number): Uint8Array {
    const size = PACKET_OVERHEAD + this.used;
    // A plain Uint8Array over the pooled bytes, not the Buffer: Buffer's slice() is a view, and
    // a caller that copies a packet with slice() (a test, a capture) must get a copy.
    const pooled = Buffer.allocUnsafe(size);
    const out = new Uint8Array(pooled.buffer, pooled.byteOffset, size);
    const w = this.writer.into(out);
    writeDataHeader(w, remoteConnId, pn);
    for (let i = 0; i < this.count; i++) writeFrame(w, this.frames[i]!);
    if (w.offset !== size - TAG_SIZE) throw new Error(`packet builder: frames wrote ${w.offset} bytes, sized ${size - TAG_SIZE}`);
    cipher.seal(out, w.offset, pn);
    w.into(NO_BYTES); // the writer must not keep the packet (and its 8 KiB pool slab) alive until the next one
    this.clear();
    return out;
  }

  /** Forgets the frames, without keeping what they carry alive. */
  private clear(): void {
    for (let i = 0; i < this.count; i++) this.frames[i] = undefined;
    this.count = 0;
  }
}
