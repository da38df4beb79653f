/**
 * Which packet numbers a connection has already taken (docs/PROTOCOL.md, "Replay"):
 * the largest so far and a bitmap of the `size` numbers ending with it (largest down to
 * largest - size + 1). A number at or below largest - size is refused as too old,
 * whether or not it was seen; reliable data in such a packet comes again in a new one.
 * Checked before the packet's tag (cheap), recorded only after it authenticated, so a
 * forged packet cannot move the window.
 *
 * The window starts at SMALL_REPLAY_WINDOW numbers (32 bytes) and grows once, to
 * REPLAY_WINDOW (512 bytes), when a packet arrives older than the small window but
 * within the large one: most connections never see reordering that deep and so keep
 * the small one (an idle server holds thousands). The packet that shows the need is
 * still refused, and so is every number the small window had already forgotten (all
 * are marked taken in the new one), so growing never lets a replay through.
 *
 * The bitmap is a plain array of 32-bit words, not a Uint32Array: int32 values are small
 * integers to V8 on 64-bit, so the array holds them unboxed, and it costs an idle
 * connection about 110 bytes where a typed array with its ArrayBuffer cost about 250.
 */
export const REPLAY_WINDOW = 4096;
export const SMALL_REPLAY_WINDOW = 256;

/** A bitmap of `bits` bits, all clear. */
function words(bits: number): number[] {
  return new Array<number>(bits / 32).fill(0);
}

export class ReplayWindow {
  private bits: number[] = words(SMALL_REPLAY_WINDOW);
  /** Numbers the bitmap covers: SMALL_REPLAY_WINDOW, then REPLAY_WINDOW. */
  private size = SMALL_REPLAY_WINDOW;
  /** Largest packet number recorded; -1 before the first. */
  largest = -1;

  get windowSize(): number {
    return this.size;
  }

  /** True when pn must not be processed: seen already, or too old to tell. */
  rejects(pn: number): boolean {
    if (pn > this.largest) return false;
    if (pn <= this.largest - this.size) {
      if (this.size < REPLAY_WINDOW && pn > this.largest - REPLAY_WINDOW) this.grow();
      return true;
    }
    const i = pn % this.size;
    return (this.bits[i >>> 5]! & (1 << (i & 31))) !== 0;
  }

  record(pn: number): void {
    if (pn > this.largest) {
      // Slots between the old largest and pn now stand for numbers never seen.
      if (pn - this.largest >= this.size) this.bits.fill(0);
      else for (let n = this.largest + 1; n < pn; n++) this.set(n % this.size, false);
      this.largest = pn;
    }
    this.set(pn % this.size, true);
  }

  private grow(): void {
    const old = this.bits;
    const oldSize = this.size;
    this.bits = words(REPLAY_WINDOW);
    this.size = REPLAY_WINDOW;
    for (let n = Math.max(0, this.largest - REPLAY_WINDOW + 1); n <= this.largest; n++) {
      const forgotten = n <= this.largest - oldSize;
      const j = n % oldSize;
      this.set(n % REPLAY_WINDOW, forgotten || (old[j >>> 5]! & (1 << (j & 31))) !== 0);
    }
  }

  private set(i: number, taken: boolean): void {
    if (taken) this.bits[i >>> 5]! |= 1 << (i & 31);
    else this.bits[i >>> 5]! &= ~(1 << (i & 31));
  }
}
