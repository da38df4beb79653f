/**
 * HMAC-SHA256 (RFC 2104, FIPS 180-4) with the key's state prepared once, for the short
 * packets that make up most of a connection's traffic (ACKs, PINGs, game inputs,
 * 32-byte messages). node:crypto builds an HMAC object per call, which costs about
 * 4-6 us whatever the size; here a short packet costs one or two compressions of the
 * inner hash and one of the outer, with no allocation: about 1-2 us (bench/mac.ts).
 * Past a few hundred bytes OpenSSL's compression is faster, so HmacPacketCipher uses
 * this one only below SMALL_MAC_LIMIT. Both give the same bytes (test/crypto.test.ts
 * checks the RFC 4231 vectors and a cross-check against node:crypto at every length).
 *
 * The message is always an 8-byte packet number followed by `len` bytes of a packet.
 */

const K = new Int32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be,
  0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa,
  0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85,
  0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3,
  0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f,
  0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);

const IV = new Int32Array([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]);

/**
 * Up to this many packet bytes the MAC is computed here; above, by node:crypto. Alone
 * (bench/mac.ts) the two cross near 250 bytes, but in a connection's work node:crypto's
 * object per call costs more than it does in a tight loop (allocation, GC): bench/core.ts's
 * game tick, its snapshot packets MACed either way, measured 5.2-5.4 against 5.9-6.3 us
 * per datagram at 290 bytes, even at about 370, and 6.4 against 5.7-5.9 at 480.
 */
export const SMALL_MAC_LIMIT = 352;

/** The message schedule, shared: every call fills and uses it before returning. */
const W = new Int32Array(64);

/** One SHA-256 compression of the block in W[0..16) into the state h. */
function compress(h: Int32Array): void {
  const w = W;
  for (let i = 16; i < 64; i++) {
    const a = w[i - 15]!;
    const b = w[i - 2]!;
    const s0 = ((a >>> 7) | (a << 25)) ^ ((a >>> 18) | (a << 14)) ^ (a >>> 3);
    const s1 = ((b >>> 17) | (b << 15)) ^ ((b >>> 19) | (b << 13)) ^ (b >>> 10);
    w[i] = (w[i - 16]! + s0 + w[i - 7]! + s1) | 0;
  }
  let a = h[0]!;
  let b = h[1]!;
  let c = h[2]!;
  let d = h[3]!;
  let e = h[4]!;
  let f = h[5]!;
  let g = h[6]!;
  let x = h[7]!;
  for (let i = 0; i < 64; i++) {
    const s1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
    const t1 = (x + s1 + ((e & f) ^ (~e & g)) + K[i]! + w[i]!) | 0;
    const s0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
    const t2 = (s0 + ((a & b) ^ (a & c) ^ (b & c))) | 0;
    x = g;
    g = f;
    f = e;
    e = (d + t1) | 0;
    d = c;
    c = b;
    b = a;
    a = (t1 + t2) | 0;
  }
  h[0] = (h[0]! + a) | 0;
  h[1] = (h[1]! + b) | 0;
  h[2] = (h[2]! + c) | 0;
  h[3] = (h[3]! + d) | 0;
  h[4] = (h[4]! + e) | 0;
  h[5] = (h[5]! + f) | 0;
  h[6] = (h[6]! + g) | 0;
  h[7] = (h[7]! + x) | 0;
}

/** The working state, shared: every mac() fills it and the caller reads it before the next. */
const H = new Int32Array(8);

/** The state after one block of key XOR pad (keys of at most 64 bytes, as ours are), into prepared[at, at + 8). */
function padded(key: Uint8Array, pad: number, prepared: Int32Array, at: number): void {
  if (key.length > 64) throw new Error('HMAC keys here are at most 64 bytes');
  for (let i = 0; i < 16; i++) {
    let v = 0;
    for (let j = 0; j < 4; j++) v = (v << 8) | ((key[i * 4 + j] ?? 0) ^ pad);
    W[i] = v;
  }
  H.set(IV);
  compress(H);
  prepared.set(H, at);
}

/** Words a prepared key takes: the inner hash after key ^ ipad, then the outer after key ^ opad. */
export const PREPARED_WORDS = 16;

/** Prepares `key` into prepared[at, at + PREPARED_WORDS), for hmacPrepared. */
export function prepareHmacKey(key: Uint8Array, prepared: Int32Array, at = 0): void {
  padded(key, 0x36, prepared, at);
  padded(key, 0x5c, prepared, at + 8);
}

/**
 * HMAC over the 8-byte big-endian packet number (pnHi, pnLo) then bytes[0, len), with
 * the key prepared at prepared[at]; returns the 32-byte result as eight words in a
 * shared array, valid until the next call.
 */
export function hmacPrepared(prepared: Int32Array, at: number, pnHi: number, pnLo: number, bytes: Uint8Array, len: number): Int32Array {
  const h = H;
  for (let i = 0; i < 8; i++) h[i] = prepared[at + i]!;
  const msgLen = 8 + len;
  // The message, 0x80, zeros, and its length in bits (64-bit), in whole blocks.
  const blocks = (msgLen + 9 + 63) >>> 6;
  const full = len >>> 2;
  for (let blk = 0; blk < blocks; blk++) {
    const first = blk << 4;
    for (let i = 0; i < 16; i++) {
      const m = first + i - 2; // word index into bytes (-2, -1: the packet number)
      if (m < 0) W[i] = m === -2 ? pnHi : pnLo;
      else if (m < full) {
        const p = m << 2;
        W[i] = (bytes[p]! << 24) | (bytes[p + 1]! << 16) | (bytes[p + 2]! << 8) | bytes[p + 3]!;
      } else {
        let v = 0;
        for (let p = m << 2, end = p + 4; p < end; p++) v = (v << 8) | (p < len ? bytes[p]! : p === len ? 0x80 : 0);
        W[i] = v;
      }
    }
    if (blk === blocks - 1) {
      const bits = (64 + msgLen) * 8; // the key block counts too
      W[14] = Math.floor(bits / 2 ** 32);
      W[15] = bits >>> 0;
    }
    compress(h);
  }
  for (let i = 0; i < 8; i++) W[i] = h[i]!;
  W[8] = 0x80000000 | 0;
  W.fill(0, 9, 15);
  W[15] = (64 + 32) * 8;
  for (let i = 0; i < 8; i++) h[i] = prepared[at + 8 + i]!;
  compress(h);
  return h;
}

/** One key, prepared once (tests and bench/mac.ts; HmacPacketCipher keeps both its keys in one array). */
export class PreparedHmacSha256 {
  private readonly prepared = new Int32Array(PREPARED_WORDS);

  constructor(key: Uint8Array) {
    prepareHmacKey(key, this.prepared);
  }

  /** hmacPrepared with this key. */
  mac(pnHi: number, pnLo: number, bytes: Uint8Array, len: number): Int32Array {
    return hmacPrepared(this.prepared, 0, pnHi, pnLo, bytes, len);
  }
}

/** Writes the first n bytes (a multiple of 4) of a mac() result at out[at]. */
export function writeTag(h: Int32Array, out: Uint8Array, at: number, n: number): void {
  for (let i = 0; i < n >>> 2; i++) {
    const v = h[i]!;
    const p = at + i * 4;
    out[p] = v >>> 24;
    out[p + 1] = v >>> 16;
    out[p + 2] = v >>> 8;
    out[p + 3] = v;
  }
}

/** Whether the first n bytes of a mac() result equal bytes[at, at + n), in time that does not depend on where they differ. */
export function tagEquals(h: Int32Array, bytes: Uint8Array, at: number, n: number): boolean {
  let diff = 0;
  for (let i = 0; i < n >>> 2; i++) {
    const p = at + i * 4;
    diff |= h[i]! ^ ((bytes[p]! << 24) | (bytes[p + 1]! << 16) | (bytes[p + 2]! << 8) | bytes[p + 3]!);
  }
  return diff === 0;
}
