import { createHmac, timingSafeEqual } from 'node:crypto';
import { TAG_SIZE } from '../wire/constants.js';

/**
 * Protects each DATA packet of a connection. v1 gives integrity and authenticity
 * (HMAC-SHA256 truncated to 16 bytes over header and frames) with per-direction keys;
 * the security issue adds an AEAD implementation behind this same interface.
 */
export interface PacketCipher {
  /** Writes the tag into packet[len, len + TAG_SIZE) over packet[0, len). */
  seal(packet: Uint8Array, len: number): void;
  /** True when packet's last TAG_SIZE bytes are a valid tag over the rest. */
  open(packet: Uint8Array): boolean;
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

  seal(packet: Uint8Array, len: number): void {
    packet.set(this.tag(this.sendKey, packet.subarray(0, len)), len);
  }

  open(packet: Uint8Array): boolean {
    if (packet.length < TAG_SIZE) return false;
    const end = packet.length - TAG_SIZE;
    return timingSafeEqual(this.tag(this.receiveKey, packet.subarray(0, end)), packet.subarray(end));
  }
}
