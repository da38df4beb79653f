/**
 * Min-heap of (deadline, item) with lazy deletion: when an item's deadline changes we
 * push a new entry and let the stale one be skipped when it surfaces. Lets a server
 * with thousands of idle connections find the next due one in O(log n) instead of
 * scanning them all after every datagram.
 */
export class DeadlineHeap<T> {
  private readonly heap: { at: number; item: T }[] = [];
  private readonly current = new Map<T, number>();

  /** Sets (or moves) item's deadline; Infinity removes it. */
  set(item: T, at: number): void {
    const prev = this.current.get(item);
    if (prev === at) return;
    if (at === Infinity) {
      this.current.delete(item);
      return;
    }
    this.current.set(item, at);
    this.push({ at, item });
    // Stale entries are skipped lazily; rebuild if they come to dominate.
    if (this.heap.length > 64 && this.heap.length > 4 * this.current.size) this.rebuild();
  }

  /** Items with a deadline. */
  get size(): number {
    return this.current.size;
  }

  delete(item: T): void {
    this.current.delete(item);
  }

  peek(): number {
    this.dropStale();
    return this.heap[0]?.at ?? Infinity;
  }

  /** Removes and returns every item due at `now`. */
  popDue(now: number): T[] {
    const due: T[] = [];
    for (;;) {
      this.dropStale();
      const top = this.heap[0];
      if (!top || top.at > now) return due;
      this.pop();
      this.current.delete(top.item);
      due.push(top.item);
    }
  }

  private dropStale(): void {
    for (let top = this.heap[0]; top && this.current.get(top.item) !== top.at; top = this.heap[0]) this.pop();
  }

  private rebuild(): void {
    const entries = [...this.current].map(([item, at]) => ({ at, item }));
    this.heap.length = 0;
    for (const e of entries) this.push(e);
  }

  private push(e: { at: number; item: T }): void {
    const h = this.heap;
    h.push(e);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (h[p]!.at <= e.at) break;
      h[i] = h[p]!;
      i = p;
    }
    h[i] = e;
  }

  private pop(): void {
    const h = this.heap;
    const last = h.pop();
    if (!last || h.length === 0) return;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= h.length) break;
      const r = l + 1;
      const c = r < h.length && h[r]!.at < h[l]!.at ? r : l;
      if (h[c]!.at >= last.at) break;
      h[i] = h[c]!;
      i = c;
    }
    h[i] = last;
  }
}
