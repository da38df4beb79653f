import { WireFormatError } from './errors.js';

/** Largest value a varint may carry here: JS numbers are exact up to 2^53 - 1. */
export const MAX_VARINT = Number.MAX_SAFE_INTEGER;

/**
 * Bounds-checked cursor over a byte array. Every read checks the remaining length first
 * and throws WireFormatError, so a truncated or lying datagram can never read past its
 * end or make us allocate from a length it claims.
 */
export class ByteReader {
  private pos: number;
  constructor(
    readonly bytes: Uint8Array,
    start = 0,
    private readonly end = bytes.length,
  ) {
    // A programming error, not bad input: the caller chose these bounds.
    if (!(start >= 0 && start <= end && end <= bytes.length))
      throw new RangeError(`ByteReader bounds ${start}..${end} outside 0..${bytes.length}`);
    this.pos = start;
  }

  get offset(): number {
    return this.pos;
  }

  get remaining(): number {
    return this.end - this.pos;
  }

  private need(n: number, what: string): void {
    if (this.end - this.pos < n) {
      throw new WireFormatError(`truncated: ${what} needs ${n} bytes, ${this.end - this.pos} left`);
    }
  }

  u8(what = 'u8'): number {
    this.need(1, what);
    return this.bytes[this.pos++]!;
  }

  u16(what = 'u16'): number {
    this.need(2, what);
    const b = this.bytes;
    const v = (b[this.pos]! << 8) | b[this.pos + 1]!;
    this.pos += 2;
    return v;
  }

  u32(what = 'u32'): number {
    this.need(4, what);
    const b = this.bytes;
    const p = this.pos;
    const v = ((b[p]! << 24) >>> 0) + ((b[p + 1]! << 16) | (b[p + 2]! << 8) | b[p + 3]!);
    this.pos += 4;
    return v;
  }

  /** Unsigned 64-bit big-endian; values above 2^53 - 1 are rejected (JS numbers). */
  u64(what = 'u64'): number {
    const hi = this.u32(what);
    const lo = this.u32(what);
    if (hi > 0x1fffff) throw new WireFormatError(`${what} exceeds 2^53`);
    return hi * 2 ** 32 + lo;
  }

  /**
   * QUIC variable-length integer (RFC 9000 section 16): the top two bits of the first
   * byte give the length (1, 2, 4 or 8 bytes). Values above 2^53 - 1 are rejected.
   */
  varint(what = 'varint'): number {
    this.need(1, what);
    const first = this.bytes[this.pos]!;
    const len = 1 << (first >> 6);
    this.need(len, what);
    let v = first & 0x3f;
    for (let i = 1; i < len; i++) v = v * 256 + this.bytes[this.pos + i]!;
    if (v > MAX_VARINT) throw new WireFormatError(`${what} exceeds 2^53`);
    this.pos += len;
    return v;
  }

  /** A view (no copy) of the next n bytes. */
  bytesView(n: number, what = 'bytes'): Uint8Array {
    if (!Number.isInteger(n) || n < 0) throw new WireFormatError(`${what}: bad length ${n}`);
    this.need(n, what);
    const v = this.bytes.subarray(this.pos, this.pos + n);
    this.pos += n;
    return v;
  }

  /**
   * A copy of the next n bytes, owned by the caller. (Not `bytesView(n).slice()`: on a
   * Buffer, as node:dgram delivers, slice() is a view, and a view keeps the whole
   * datagram alive.)
   */
  bytesCopy(n: number, what = 'bytes'): Uint8Array {
    return ownCopy(this.bytesView(n, what));
  }

  /** Fails unless every byte was consumed: trailing garbage makes a packet malformed. */
  expectEnd(what: string): void {
    if (this.pos !== this.end) throw new WireFormatError(`${what}: ${this.end - this.pos} trailing bytes`);
  }
}

/**
 * A copy of `b` in memory of its own, whatever `b` is: a Uint8Array's slice() copies, a
 * Buffer's is a view. For bytes kept past the call that received them, so that what is
 * kept pins no datagram and costs what the memory caps count.
 */
export function ownCopy(b: Uint8Array): Uint8Array {
  const c = new Uint8Array(b.length);
  c.set(b);
  return c;
}

/**
 * Bytes a view kept for later may pin beyond its own: far less than the 256 that
 * UNIT_OVERHEAD_BYTES charges every unit held (reliability/budget.ts), and more than a
 * DATA packet spends on its header, one frame's header and the tag.
 */
export const KEEP_SLACK = 64;

/**
 * `b` to keep past the call that received it: `b` itself when it is (nearly) all of its
 * buffer, as a message part that filled a datagram is, else a copy. Kept either way, it
 * pins at most KEEP_SLACK bytes besides its own, so the memory caps, which count its
 * length, stay true (a view of a few bytes would keep its whole datagram, up to 64 KiB,
 * alive).
 */
export function keepable(b: Uint8Array): Uint8Array {
  return b.buffer.byteLength - b.length <= KEEP_SLACK ? b : ownCopy(b);
}

/** Size in bytes of the varint encoding of v. */
export function varintSize(v: number): number {
  if (v < 0x40) return 1;
  if (v < 0x4000) return 2;
  if (v < 0x40000000) return 4;
  return 8;
}

/**
 * Writer into a caller-sized buffer. Encoders compute sizes up front, so running out of
 * room is a bug in this library, not bad input: it throws a plain Error.
 */
export class ByteWriter {
  private pos = 0;
  constructor(private bytes: Uint8Array) {}

  /** Starts over at the beginning of `bytes`: one writer serves packet after packet. */
  into(bytes: Uint8Array): this {
    this.bytes = bytes;
    this.pos = 0;
    return this;
  }

  get offset(): number {
    return this.pos;
  }

  private room(n: number): void {
    if (this.bytes.length - this.pos < n) throw new Error(`ByteWriter overflow: need ${n} at ${this.pos}/${this.bytes.length}`);
  }

  u8(v: number): this {
    this.room(1);
    this.bytes[this.pos++] = v & 0xff;
    return this;
  }

  u16(v: number): this {
    this.room(2);
    this.bytes[this.pos++] = (v >>> 8) & 0xff;
    this.bytes[this.pos++] = v & 0xff;
    return this;
  }

  u32(v: number): this {
    this.room(4);
    this.bytes[this.pos++] = (v >>> 24) & 0xff;
    this.bytes[this.pos++] = (v >>> 16) & 0xff;
    this.bytes[this.pos++] = (v >>> 8) & 0xff;
    this.bytes[this.pos++] = v & 0xff;
    return this;
  }

  u64(v: number): this {
    if (!Number.isInteger(v) || v < 0 || v > MAX_VARINT) throw new Error(`u64 out of range: ${v}`);
    return this.u32(Math.floor(v / 2 ** 32)).u32(v % 2 ** 32);
  }

  varint(v: number): this {
    if (!Number.isInteger(v) || v < 0 || v > MAX_VARINT) throw new Error(`varint out of range: ${v}`);
    const len = varintSize(v);
    this.room(len);
    let x = v;
    for (let i = len - 1; i >= 0; i--) {
      this.bytes[this.pos + i] = x % 256;
      x = Math.floor(x / 256);
    }
    this.bytes[this.pos] = this.bytes[this.pos]! | ([0, 0x40, 0, 0x80, 0, 0, 0, 0xc0][len - 1] ?? 0);
    this.pos += len;
    return this;
  }

  raw(b: Uint8Array): this {
    this.room(b.length);
    this.bytes.set(b, this.pos);
    this.pos += b.length;
    return this;
  }

  zeros(n: number): this {
    this.room(n);
    this.bytes.fill(0, this.pos, this.pos + n);
    this.pos += n;
    return this;
  }
}
