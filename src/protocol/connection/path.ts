import { equalBytes } from '../../crypto/handshake-keys.js';
import { PACKET_OVERHEAD, type PacketBuilder } from './packet-builder.js';

/** A packet with nothing but a PATH_CHALLENGE. */
const CHALLENGE_PACKET = PACKET_OVERHEAD + 9;
/** PATH_CHALLENGEs sent to a new address before going back. */
const PATH_TRIES = 3;
/** PATH_RESPONSEs owed at once. */
const RESPONSES_OWED = 4;
/** Below this much allowance nothing but a challenge is worth sending. */
const MIN_USEFUL_PACKET = PACKET_OVERHEAD + 16;

interface Check {
  readonly data: Uint8Array;
  /** Bytes we may send to the address on trial: three times what arrived from it. */
  limit: number;
  sent: number;
  /** Challenges that went out. */
  tries: number;
  toSend: boolean;
  /** Retry timer expiries, counted whether or not the challenge got out. */
  timeouts: number;
  retryAt: number;
}

/**
 * The path to the peer (RFC 9000 section 8.2): validation of an address the peer moved
 * to, with the anti-amplification allowance until the peer proves it receives there,
 * and the echoes we owe for the peer's own challenges.
 */
export class PathValidation {
  private check: Check | undefined;
  private responses: Uint8Array[] | undefined;

  /** Challenges the new address with `data`; `received`: bytes that arrived from it so far. */
  start(now: number, data: Uint8Array, received: number, retryMs: number): void {
    this.check = { data, limit: 3 * received, sent: 0, tries: 0, toSend: true, timeouts: 0, retryAt: now + retryMs };
  }

  get active(): boolean {
    return this.check !== undefined;
  }

  /** An authenticated packet arrived from the address on trial: three times its size more may go there. */
  credit(bytes: number): void {
    if (this.check) this.check.limit += 3 * bytes;
  }

  cancel(): void {
    this.check = undefined;
  }

  /** The peer challenged us: echo it (at most four owed). */
  onChallenge(data: Uint8Array): void {
    this.responses ??= [];
    if (this.responses.length < RESPONSES_OWED) this.responses.push(data);
  }

  /** The peer echoed a challenge; true if it was ours, and the address is now proven. */
  onResponse(data: Uint8Array): boolean {
    if (!this.check || !equalBytes(this.check.data, data)) return false;
    this.check = undefined;
    return true;
  }

  /**
   * The retry timer: true when validation failed (three challenges sent and
   * unanswered, or, should they not get out, twice the time).
   */
  onTimeout(now: number, retryMs: number): boolean {
    const c = this.check;
    if (!c || c.retryAt > now) return false;
    if (c.tries >= PATH_TRIES || ++c.timeouts >= 2 * PATH_TRIES) {
      this.check = undefined;
      return true;
    }
    // A try counts once its challenge went out; one still waiting to go keeps waiting.
    c.toSend = true;
    c.retryAt = now + retryMs * 2 ** c.tries;
    return false;
  }

  /**
   * Bytes the next packet may take towards an unproven address (Infinity when the
   * address is proven), or 0 when nothing may go until more arrives. Room for the next
   * challenge is kept (the allowance may not stretch to all three: then the timer gives
   * up by time).
   */
  allowance(): number {
    const c = this.check;
    if (!c) return Infinity;
    const allowance = c.limit - c.sent - (c.toSend ? 0 : CHALLENGE_PACKET);
    return allowance < (c.toSend ? CHALLENGE_PACKET : MIN_USEFUL_PACKET) ? 0 : allowance;
  }

  get owesFrame(): boolean {
    return this.check?.toSend === true || (this.responses !== undefined && this.responses.length > 0);
  }

  fillChallenge(b: PacketBuilder): void {
    const c = this.check;
    if (c?.toSend && b.add({ type: 'path-challenge', data: c.data })) {
      c.toSend = false;
      c.tries++;
    }
  }

  fillResponses(b: PacketBuilder): void {
    const r = this.responses;
    while (r !== undefined && r.length > 0 && b.add({ type: 'path-response', data: r[0]! })) r.shift();
  }

  /** A packet of `size` bytes went to the peer's address. */
  onSent(size: number): void {
    if (this.check) this.check.sent += size;
  }

  deadline(): number {
    return this.check?.retryAt ?? Infinity;
  }
}
