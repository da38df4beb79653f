import { createCipheriv, createDecipheriv, createHmac, timingSafeEqual } from 'node:crypto';
import { DATA_HEADER_SIZE, TAG_SIZE } from '../wire/constants.js';

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

export class HmacPacketCipher implements PacketCipher {
  // Buffers, not plain Uint8Arrays: createHmac converts a Uint8Array key on every call,
  // which costs about as much as the MAC of a small packet.
  private readonly sendKey: Buffer;
  private readonly receiveKey: Buffer;

  constructor(sendKey: Uint8Array, receiveKey: Uint8Array) {
    this.sendKey = Buffer.from(sendKey);
    this.receiveKey = Buffer.from(receiveKey);
  }

  private tag(key: Buffer, bytes: Uint8Array): Buffer {
    return createHmac('sha256', key).update(bytes).digest().subarray(0, TAG_SIZE);
  }

  // The packet number is in the header (its low 32 bits) and so under the MAC; the
  // replay window keeps a packet from counting twice.
  seal(packet: Uint8Array, len: number, _pn: number): void {
    packet.set(this.tag(this.sendKey, packet.subarray(0, len)), len);
  }

  open(packet: Uint8Array, _pn: number): Uint8Array | undefined {
    if (packet.length < DATA_HEADER_SIZE + TAG_SIZE) return undefined;
    const end = packet.length - TAG_SIZE;
    if (!timingSafeEqual(this.tag(this.receiveKey, packet.subarray(0, end)), packet.subarray(end))) return undefined;
    return packet.subarray(DATA_HEADER_SIZE, end);
  }
}

/**
 * ChaCha20-Poly1305 (RFC 8439) per packet: the header is additional data, the frames are
 * encrypted, the nonce is four zero bytes and the 64-bit packet number (big-endian).
 * Keys are fresh for every connection (HKDF over an X25519 exchange) and packet numbers
 * never repeat within one, so no nonce is ever reused under a key.
 */
export class AeadPacketCipher implements PacketCipher {
  private readonly sendKey: Buffer;
  private readonly receiveKey: Buffer;
  private readonly nonce = Buffer.alloc(12);

  constructor(sendKey: Uint8Array, receiveKey: Uint8Array) {
    if (sendKey.length !== 32 || receiveKey.length !== 32) throw new Error('ChaCha20-Poly1305 keys are 32 bytes');
    this.sendKey = Buffer.from(sendKey);
    this.receiveKey = Buffer.from(receiveKey);
  }

  private setNonce(pn: number): Buffer {
    if (!Number.isSafeInteger(pn) || pn < 0) throw new Error(`packet number ${pn} out of range`);
    this.nonce.writeUInt32BE(Math.floor(pn / 2 ** 32), 4);
    this.nonce.writeUInt32BE(pn >>> 0, 8);
    return this.nonce;
  }

  seal(packet: Uint8Array, len: number, pn: number): void {
    const c = createCipheriv('chacha20-poly1305', this.sendKey, this.setNonce(pn), { authTagLength: TAG_SIZE });
    c.setAAD(packet.subarray(0, DATA_HEADER_SIZE), { plaintextLength: len - DATA_HEADER_SIZE });
    const body = c.update(packet.subarray(DATA_HEADER_SIZE, len));
    c.final();
    packet.set(body, DATA_HEADER_SIZE);
    packet.set(c.getAuthTag(), len);
  }

  open(packet: Uint8Array, pn: number): Uint8Array | undefined {
    if (packet.length < DATA_HEADER_SIZE + TAG_SIZE) return undefined;
    const end = packet.length - TAG_SIZE;
    const d = createDecipheriv('chacha20-poly1305', this.receiveKey, this.setNonce(pn), { authTagLength: TAG_SIZE });
    d.setAAD(packet.subarray(0, DATA_HEADER_SIZE), { plaintextLength: end - DATA_HEADER_SIZE });
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
