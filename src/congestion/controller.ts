/**
 * The small interface every congestion controller implements (../shared/design.md):
 * the connection reports sends, acknowledgements and losses, and asks how many bytes
 * may be in flight. Pacing is separate (pacer.ts) and reads only `window`.
 */
export interface CongestionController {
  /** Bytes that may be in flight now. */
  readonly window: number;
  onSent(bytes: number, now: number): void;
  /**
   * A packet sent at `sentAt` was acknowledged. `windowBound`: when it was sent, the bytes
   * in flight with it were at least half the window; an ACK of a packet sent with most
   * of the window unused (an application-limited sender) says nothing about what the
   * path could carry, and must not grow the window (RFC 9002 7.8).
   */
  onAck(bytes: number, sentAt: number, now: number, windowBound: boolean): void;
  /** A packet sent at `sentAt` was declared lost. */
  onLoss(bytes: number, sentAt: number, now: number): void;
  /** The path MTU changed: windows are counted in datagrams of this size from now on. */
  setMaxDatagram(bytes: number): void;
  /** Every packet across more than a PTO period was lost (RFC 9002 7.6): collapse the window. */
  onPersistentCongestion(): void;
  toJSON(): Record<string, number | string>;
}
