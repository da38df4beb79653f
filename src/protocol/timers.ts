/**
 * A named table of deadlines (../shared/design.md: "Deadlines are data"). Each protocol
 * object keeps one; the driver arms a single real timer for the earliest deadline of
 * everything, and handleTimeout(now) asks the table which names are due.
 */
export class TimerTable<Name extends string> {
  private readonly at = new Map<Name, number>();

  set(name: Name, time: number): void {
    this.at.set(name, time);
  }

  clear(name: Name): void {
    this.at.delete(name);
  }

  get(name: Name): number {
    return this.at.get(name) ?? Infinity;
  }

  /** True when `name` is set and due at `now` (a timer fires at its deadline, not before). */
  due(name: Name, now: number): boolean {
    const t = this.at.get(name);
    return t !== undefined && t <= now;
  }

  next(): number {
    let min = Infinity;
    for (const t of this.at.values()) if (t < min) min = t;
    return min;
  }

  clearAll(): void {
    this.at.clear();
  }
}
