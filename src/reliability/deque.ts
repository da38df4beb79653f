/** Every deque's items until its first push: frozen, so a write that skipped the swap throws. */
const NONE = Object.freeze([]) as readonly never[] as never[];

/**
 * FIFO with O(1) amortised push and shift (Array#shift is O(n) on large arrays). A deque
 * that was never pushed to holds no array of its own: an idle connection has several.
 */
export class Deque<T> {
  private items: (T | undefined)[] = NONE;
  private head = 0;

  get length(): number {
    return this.items.length - this.head;
  }

  push(x: T): void {
    if (this.items === NONE) this.items = [x];
    else this.items.push(x);
  }

  peek(): T | undefined {
    return this.items[this.head];
  }

  at(i: number): T | undefined {
    return this.items[this.head + i];
  }

  shift(): T | undefined {
    if (this.head >= this.items.length) return undefined;
    const x = this.items[this.head];
    this.items[this.head++] = undefined;
    if (this.head === this.items.length) {
      // Empty: length 0 gives the backing store back (an idle connection's queues hold none).
      this.items.length = 0;
      this.head = 0;
    } else if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return x;
  }

  *[Symbol.iterator](): IterableIterator<T> {
    for (let i = this.head; i < this.items.length; i++) yield this.items[i] as T;
  }

  clear(): T[] {
    const all = [...this];
    this.items = NONE;
    this.head = 0;
    return all;
  }
}

/** The shared EMPTY_DEQUE: anything it is asked to hold would be every owner's. */
class NoDeque extends Deque<never> {
  override push(): void {
    throw new Error('EMPTY_DEQUE is shared and holds nothing: give the owner a Deque of its own before pushing');
  }
}

/**
 * The starting value of a deque field most owners never use (an idle connection's
 * queues): empty for good, so it reads as an empty deque, and shared. The owner puts a
 * `new Deque()` in the field before its first push (40 bytes an owner otherwise).
 */
export const EMPTY_DEQUE: Deque<never> = new NoDeque();
