/**
 * Which packet numbers a connection has already taken (docs/PROTOCOL.md, "Replay"):
 * the largest so far and a bitmap of the REPLAY_WINDOW numbers ending with it (largest
 * down to largest - REPLAY_WINDOW + 1). A number at or below largest - REPLAY_WINDOW is refused as too old, whether or not it was seen;
 * reliable data in such a packet comes again in a new one. Fixed memory (512 bytes),
 * whatever the peer sends. Checked before the packet's tag (cheap), recorded only after
 * it authenticated, so a forged packet cannot move the window.
 */
export const REPLAY_WINDOW = 4096;

export class ReplayWindow {
  private readonly bits = new Uint32Array(REPLAY_WINDOW / 32);
  /** Largest packet number recorded; -1 before the first. */
  largest = -1;

  /** True when pn must not be processed: seen already, or too old to tell. */
  rejects(pn: number): boolean {
    if (pn > this.largest) return false;
    if (pn <= this.largest - REPLAY_WINDOW) return true;
    const i = pn % REPLAY_WINDOW;
    return (this.bits[i >>> 5]! & (1 << (i & 31))) !== 0;
  }

  record(pn: number): void {
    if (pn > this.largest) {
      // Slots between the old largest and pn now stand for numbers never seen.
      if (pn - this.largest >= REPLAY_WINDOW) this.bits.fill(0);
      else for (let n = this.largest + 1; n < pn; n++) this.clear(n % REPLAY_WINDOW);
      this.largest = pn;
    }
    const i = pn % REPLAY_WINDOW;
    this.bits[i >>> 5]! |= 1 << (i & 31);
  }

  private clear(i: number): void {
    this.bits[i >>> 5]! &= ~(1 << (i & 31));
  }
}
