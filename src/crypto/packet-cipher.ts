import { createCipheriv, createDecipheriv, createHmac, createSecretKey, timingSafeEqual, type KeyObject } from 'node:crypto';
import { DATA_HEADER_SIZE, TAG_SIZE } from '../wire/constants.js';
import { hmacPrepared, PREPARED_WORDS, prepareHmacKey, SMALL_MAC_LIMIT, tagEquals, writeTag } from './hmac-sha256.js';

/**
 * Protects each DATA packet of a connection, with per-direction keys. Two kinds:
 * HmacPacketCipher (integrity and authenticity, frames readable on the path) and
 * AeadPacketCipher (`encrypt: true`: ChaCha20-Poly1305, frames secret too). Both put a
 * 16-byte tag after the frames, so packet sizes do not depend on the choice.
 */
export interface PacketCipher {
  /**
   * packet[0, len) is the header and the frames in clear; seals them in place (the
   * header stays readable) and writes the tag at packet[len, len + TAG_SIZE). pn is
   * the full packet number, never used twice with the same keys.
   */
  seal(packet: Uint8Array, len: number, pn: number): void;
  /**
   * The frames of an authentic packet (decrypted if need be), or undefined when the tag
   * does not check out. pn is the full packet number the header's low bits expand to.
   * The packet itself is left as it came.
   */
  open(packet: Uint8Array, pn: number): Uint8Array | undefined;
}

/** A key held by OpenSSL, outside the JavaScript heap and Node's shared Buffer pool. */
function secretKey(k: Uint8Array): KeyObject {
  return createSecretKey(Buffer.from(k.buffer, k.byteOffset, k.byteLength));
}

function checkPn(pn: number): void {
  if (!Number.isSafeInteger(pn) || pn < 0) throw new Error(`packet number ${pn} out of range`);
}

/** Scratch for the packet number a long packet's HMAC starts with (written and read within one call). */
const PN = Buffer.alloc(8);

/** The full packet number, 8 bytes big-endian, into `into`. */
function writePn(into: Buffer, at: number, pn: number): Buffer {
  checkPn(pn);
  into.writeUInt32BE(Math.floor(pn / 2 ** 32), at);
  into.writeUInt32BE(pn >>> 0, at + 4);
  return into;
}

/** Where HmacPacketCipher's store holds the keys as bytes, after both prepared states. */
const KEYS_AT = 2 * PREPARED_WORDS * 4;

export class HmacPacketCipher implements PacketCipher {
  /**
   * Both keys with their HMAC state prepared once, for short packets (hmac-sha256.ts):
   * send at word 0, receive at PREPARED_WORDS. The same ArrayBuffer holds the keys as
   * bytes after that (send, then receive), for node:crypto on long packets, which gets a
   * view of them per packet: bytes rather than KeyObjects, which cost about 1 kB each
   * while createHmac is as fast with either, and no Buffer kept per connection, since a
   * typed array object alone costs half of these 192 bytes.
   */
  private readonly prepared: Int32Array;

  constructor(sendKey: Uint8Array, receiveKey: Uint8Array) {
    if (sendKey.length !== 32 || receiveKey.length !== 32) throw new Error('HMAC-SHA256 packet keys are 32 bytes');
    const store = new ArrayBuffer(KEYS_AT + 64);
    this.prepared = new Int32Array(store, 0, 2 * PREPARED_WORDS);
    const keys = new Uint8Array(store, KEYS_AT, 64);
    keys.set(sendKey, 0);
    keys.set(receiveKey, 32);
    prepareHmacKey(sendKey, this.prepared, 0);
    prepareHmacKey(receiveKey, this.prepared, PREPARED_WORDS);
  }

  // The MAC covers the full 64-bit packet number, not only the 32 bits in the header:
  // otherwise a packet captured 2^31 packets ago would expand to a new number and pass
  // both its tag and the replay window.
  private tag(keyAt: number, pn: number, bytes: Uint8Array): Buffer {
    return createHmac('sha256', Buffer.from(this.prepared.buffer, keyAt, 32))
      .update(writePn(PN, 0, pn))
      .update(bytes)
      .digest()
      .subarray(0, TAG_SIZE);
  }

  seal(packet: Uint8Array, len: number, pn: number): void {
    if (len <= SMALL_MAC_LIMIT) {
      checkPn(pn);
      writeTag(hmacPrepared(this.prepared, 0, Math.floor(pn / 2 ** 32), pn | 0, packet, len), packet, len, TAG_SIZE);
    } else packet.set(this.tag(KEYS_AT, pn, packet.subarray(0, len)), len);
  }

  open(packet: Uint8Array, pn: number): Uint8Array | undefined {
    if (packet.length < DATA_HEADER_SIZE + TAG_SIZE) return undefined;
    const end = packet.length - TAG_SIZE;
    if (end <= SMALL_MAC_LIMIT) {
      checkPn(pn);
      const h = hmacPrepared(this.prepared, PREPARED_WORDS, Math.floor(pn / 2 ** 32), pn | 0, packet, end);
      if (!tagEquals(h, packet, end, TAG_SIZE)) return undefined;
    } else if (!timingSafeEqual(this.tag(KEYS_AT + 32, pn, packet.subarray(0, end)), packet.subarray(end))) return undefined;
    return packet.subarray(DATA_HEADER_SIZE, end);
  }
}

const AEAD_OPTIONS = { authTagLength: TAG_SIZE } as const;

/**
 * ChaCha20-Poly1305 (RFC 8439) per packet: the header is additional data, the frames are
 * encrypted, the nonce is four zero bytes and the 64-bit packet number (big-endian).
 * Keys are fresh for every connection (HKDF over an X25519 exchange) and packet numbers
 * never repeat within one, so no nonce is ever reused under a key.
 */
export class AeadPacketCipher implements PacketCipher {
  private readonly sendKey: KeyObject;
  private readonly receiveKey: KeyObject;
  private readonly nonce = Buffer.alloc(12);
  /** Reused: node:crypto's types want the plaintext length with the AAD (only CCM needs it). */
  private readonly aad = { plaintextLength: 0 };

  constructor(sendKey: Uint8Array, receiveKey: Uint8Array) {
    if (sendKey.length !== 32 || receiveKey.length !== 32) throw new Error('ChaCha20-Poly1305 keys are 32 bytes');
    this.sendKey = secretKey(sendKey);
    this.receiveKey = secretKey(receiveKey);
  }

  seal(packet: Uint8Array, len: number, pn: number): void {
    const c = createCipheriv('chacha20-poly1305', this.sendKey, writePn(this.nonce, 4, pn), AEAD_OPTIONS);
    this.aad.plaintextLength = len - DATA_HEADER_SIZE;
    c.setAAD(packet.subarray(0, DATA_HEADER_SIZE), this.aad);
    const body = c.update(packet.subarray(DATA_HEADER_SIZE, len));
    c.final();
    packet.set(body, DATA_HEADER_SIZE);
    packet.set(c.getAuthTag(), len);
  }

  open(packet: Uint8Array, pn: number): Uint8Array | undefined {
    if (packet.length < DATA_HEADER_SIZE + TAG_SIZE) return undefined;
    const end = packet.length - TAG_SIZE;
    const d = createDecipheriv('chacha20-poly1305', this.receiveKey, writePn(this.nonce, 4, pn), AEAD_OPTIONS);
    this.aad.plaintextLength = end - DATA_HEADER_SIZE;
    d.setAAD(packet.subarray(0, DATA_HEADER_SIZE), this.aad);
    d.setAuthTag(packet.subarray(end));
    const body = d.update(packet.subarray(DATA_HEADER_SIZE, end));
    try {
      d.final();
    } catch {
      return undefined; // forged, corrupted, or keyed for another connection
    }
    return body;
  }
}
