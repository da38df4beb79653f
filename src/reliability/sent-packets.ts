import type { SentPacket } from './loss-recovery.js';

/**
 * The packets in flight, in the order sent (ascending packet number), for loss
 * recovery. An array with holes rather than a Map: sending appends, an ACK or a loss
 * takes packets out where they are, and the front is trimmed as it empties. Nothing is
 * hashed or allocated per packet, an empty list holds no storage (an idle connection's
 * usual state: a Map keeps its table, about 350 bytes), and a packet is found by number
 * with a binary search, so a peer naming many packets (REFUSED frames) costs O(log n)
 * each.
 *
 * Indices from `start` to `end` stay valid while packets are removed; only `push` moves
 * them (when it re-bases the array).
 */
export class SentPackets {
  private packets: (SentPacket | undefined)[] = [];
  /** The packet number of every slot, kept when the slot empties: sorted, for the binary search. */
  private pns: number[] = [];
  private head = 0;
  private live = 0;

  get size(): number {
    return this.live;
  }

  get start(): number {
    return this.head;
  }

  get end(): number {
    return this.packets.length;
  }

  at(i: number): SentPacket | undefined {
    return this.packets[i];
  }

  /** Appends a packet; its number must be larger than every number pushed before. */
  push(p: SentPacket): void {
    if (this.head > 1024 && this.head * 2 > this.packets.length) {
      this.packets = this.packets.slice(this.head);
      this.pns = this.pns.slice(this.head);
      this.head = 0;
    }
    this.packets.push(p);
    this.pns.push(p.pn);
    this.live++;
  }

  /** Takes the packet at index i out (it must be there). */
  remove(i: number): void {
    this.packets[i] = undefined;
    this.live--;
    if (this.live === 0) {
      // Empty: length 0 gives the storage back.
      this.packets.length = 0;
      this.pns.length = 0;
      this.head = 0;
      return;
    }
    if (i === this.head) while (this.packets[this.head] === undefined) this.head++;
  }

  /** Index of the packet numbered pn, or -1 when it is not in flight. */
  indexOf(pn: number): number {
    let lo = this.head;
    let hi = this.pns.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const v = this.pns[mid]!;
      if (v === pn) return this.packets[mid] === undefined ? -1 : mid;
      if (v < pn) lo = mid + 1;
      else hi = mid - 1;
    }
    return -1;
  }

  /** Takes every packet out, in order. */
  clear(): SentPacket[] {
    const all: SentPacket[] = [];
    for (let i = this.head; i < this.packets.length; i++) {
      const p = this.packets[i];
      if (p) all.push(p);
    }
    this.packets.length = 0;
    this.pns.length = 0;
    this.head = 0;
    this.live = 0;
    return all;
  }
}
