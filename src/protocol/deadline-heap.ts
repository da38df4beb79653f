/**
 * Min-heap of items by deadline, indexed: each item has a slot holding its deadline and
 * its place in the heap, so moving a deadline sifts the one entry where it is. A server
 * moves a connection's deadline after nearly every datagram; this way that allocates
 * nothing and leaves no stale entries behind (the heap holds exactly one entry per item
 * with a deadline), and the next due of thousands of idle connections is found in
 * O(log n) instead of by scanning them all.
 *
 * Memory: 16 bytes per slot in typed arrays plus a Map entry per item, or none where
 * the owner keeps each item's slot in a record it has anyway (SlotStore: the server's
 * connections, where the Map took about 57 bytes each). The arrays grow by doubling
 * and keep their size (a server that once held 100,000 connections keeps 1.6 MB of them).
 */
export interface SlotStore<T> {
  get(item: T): number | undefined;
  set(item: T, slot: number): void;
  delete(item: T): void;
}

export class DeadlineHeap<T> {
  /** Heap order, by slot: heap[0] is due first. */
  private heap = new Int32Array(16);
  private count = 0;
  /** Per slot: the deadline, and where the slot is in `heap`. */
  private at = new Float64Array(16);
  private place = new Int32Array(16);
  /** Per slot: its item (undefined: the slot is free). */
  private readonly items: (T | undefined)[] = [];
  private readonly freeSlots: number[] = [];

  /** slotOf: where each item's slot is kept; it must answer for an item until the heap deletes it. */
  constructor(private readonly slotOf: SlotStore<T> = new Map<T, number>()) {}

  /** Sets (or moves) item's deadline; Infinity removes it. */
  set(item: T, at: number): void {
    const s = this.slotOf.get(item);
    if (at === Infinity) {
      if (s !== undefined) this.remove(s);
      return;
    }
    if (s === undefined) {
      const slot = this.claim(item);
      this.at[slot] = at;
      const i = this.count++;
      this.heap[i] = slot;
      this.place[slot] = i;
      this.up(i);
      return;
    }
    const prev = this.at[s]!;
    if (prev === at) return;
    this.at[s] = at;
    if (at < prev) this.up(this.place[s]!);
    else this.down(this.place[s]!);
  }

  /** Items with a deadline. */
  get size(): number {
    return this.count;
  }

  delete(item: T): void {
    const s = this.slotOf.get(item);
    if (s !== undefined) this.remove(s);
  }

  /** The earliest deadline (Infinity: none). */
  peek(): number {
    return this.count === 0 ? Infinity : this.at[this.heap[0]!]!;
  }

  /** Removes and returns every item due at `now`, earliest first. */
  popDue(now: number): T[] {
    const due: T[] = [];
    while (this.count > 0) {
      const s = this.heap[0]!;
      if (this.at[s]! > now) break;
      due.push(this.items[s] as T);
      this.remove(s);
    }
    return due;
  }

  private claim(item: T): number {
    let s = this.freeSlots.pop();
    if (s === undefined) {
      s = this.items.length;
      this.items.push(undefined);
      if (s >= this.at.length) this.grow();
    }
    this.items[s] = item;
    this.slotOf.set(item, s);
    return s;
  }

  private remove(s: number): void {
    const i = this.place[s]!;
    const last = this.heap[--this.count]!;
    if (i !== this.count) {
      this.heap[i] = last;
      this.place[last] = i;
      this.down(i);
      this.up(this.place[last]!);
    }
    this.slotOf.delete(this.items[s] as T);
    this.items[s] = undefined;
    this.freeSlots.push(s);
  }

  private grow(): void {
    const n = this.at.length * 2;
    const heap = new Int32Array(n);
    heap.set(this.heap);
    this.heap = heap;
    const at = new Float64Array(n);
    at.set(this.at);
    this.at = at;
    const place = new Int32Array(n);
    place.set(this.place);
    this.place = place;
  }

  private up(i: number): void {
    const h = this.heap;
    const s = h[i]!;
    const at = this.at[s]!;
    while (i > 0) {
      const p = (i - 1) >> 1;
      const ps = h[p]!;
      if (this.at[ps]! <= at) break;
      h[i] = ps;
      this.place[ps] = i;
      i = p;
    }
    h[i] = s;
    this.place[s] = i;
  }

  private down(i: number): void {
    const h = this.heap;
    const n = this.count;
    const s = h[i]!;
    const at = this.at[s]!;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      const c = r < n && this.at[h[r]!]! < this.at[h[l]!]! ? r : l;
      const cs = h[c]!;
      if (this.at[cs]! >= at) break;
      h[i] = cs;
      this.place[cs] = i;
      i = c;
    }
    h[i] = s;
    this.place[s] = i;
  }
}
