import { type Reason, reasonToCode } from '../../wire/constants.js';
import type { PacketBuilder } from './packet-builder.js';

/**
 * Where a connection is in closing (docs/PROTOCOL.md, "Closing"), one value instead of
 * a flag per step:
 * - `open`: not closing;
 * - `flushing`: close() was called; what is queued goes out and is acknowledged first;
 * - `closing`: CLOSE is owed or sent (again after `retryMs`, doubling), CLOSED awaited;
 * - `peer-closing`: the peer sent CLOSE while we had messages queued for it: they go
 *   out first, then CLOSED;
 * - `ended`: over. `answerOwed`: a CLOSED to send (the peer's CLOSE came, maybe again);
 *   `drainUntil`: how long a CLOSE is still answered (after the peer closed: its CLOSED
 *   may have been lost).
 * Every phase but `open` and `ended` ends at `deadline` whatever the peer does.
 */
export type ClosePhase =
  | { readonly kind: 'open' }
  | { readonly kind: 'flushing'; readonly reason: Reason; readonly deadline: number }
  | { readonly kind: 'closing'; readonly reason: Reason; readonly deadline: number; owed: boolean; retryAt: number; retryMs: number }
  | { readonly kind: 'peer-closing'; readonly reason: Reason; readonly deadline: number }
  | { readonly kind: 'ended'; readonly reason: Reason; readonly byPeer: boolean; answerOwed: boolean; drainUntil: number };

const OPEN: ClosePhase = { kind: 'open' };

/** Shortest wait before a CLOSE goes again. */
const MIN_CLOSE_RETRY_MS = 20;

export class CloseState {
  phase: ClosePhase = OPEN;

  get ended(): boolean {
    return this.phase.kind === 'ended';
  }

  /** Over, and nothing left to answer: the endpoint may forget the connection. */
  get finished(): boolean {
    const p = this.phase;
    return p.kind === 'ended' && p.drainUntil === Infinity && !p.answerOwed;
  }

  /** A local close(): flush first, give up at now + timeoutMs. */
  start(now: number, reason: Reason, timeoutMs: number): void {
    if (this.phase.kind === 'open') this.phase = { kind: 'flushing', reason, deadline: now + timeoutMs };
  }

  /**
   * The peer sent CLOSE with messages still queued for it: finish them first. A
   * repeated CLOSE changes nothing; the deadline of a close of our own stays.
   */
  peerClosing(now: number, reason: Reason, timeoutMs: number): boolean {
    const p = this.phase;
    if (p.kind === 'peer-closing' || p.kind === 'ended') return false;
    this.phase = { kind: 'peer-closing', reason, deadline: p.kind === 'open' ? now + timeoutMs : p.deadline };
    return true;
  }

  /** The connection ends; `answer`: a CLOSED is owed to the peer. */
  end(reason: Reason, byPeer: boolean, answer: boolean, drainUntil: number): void {
    this.phase = { kind: 'ended', reason, byPeer, answerOwed: answer, drainUntil };
  }

  /** A CLOSE came after the end: answer it again (our CLOSED was lost). */
  answerAgain(): void {
    if (this.phase.kind === 'ended') this.phase.answerOwed = true;
  }

  /** Everything queued is acknowledged: a local close may now send CLOSE. */
  flushed(ptoMs: number): void {
    const p = this.phase;
    if (p.kind !== 'flushing') return;
    this.phase = {
      kind: 'closing',
      reason: p.reason,
      deadline: p.deadline,
      owed: true,
      retryAt: Infinity,
      retryMs: Math.max(ptoMs, MIN_CLOSE_RETRY_MS),
    };
  }

  /** CLOSED came: our close is done (only once our CLOSE went out). */
  get awaitsClosed(): boolean {
    return this.phase.kind === 'closing';
  }

  get owesFrame(): boolean {
    const p = this.phase;
    return (p.kind === 'closing' && p.owed) || (p.kind === 'ended' && p.answerOwed);
  }

  /** CLOSED, when owed. */
  fillClosed(b: PacketBuilder): void {
    const p = this.phase;
    if (p.kind === 'ended' && p.answerOwed) {
      b.add({ type: 'closed' });
      p.answerOwed = false;
    }
  }

  /** CLOSE, when owed; the next goes after a wait that doubles each time. */
  fillClose(b: PacketBuilder, now: number): void {
    const p = this.phase;
    if (p.kind !== 'closing' || !p.owed || !b.add({ type: 'close', reason: reasonToCode(p.reason) })) return;
    p.owed = false;
    p.retryAt = now + p.retryMs;
    p.retryMs *= 2;
  }

  /** The close's deadline passed: how it ends (undefined: not yet). */
  timedOut(now: number): { reason: Reason; byPeer: boolean } | undefined {
    const p = this.phase;
    if (p.kind === 'open' || p.kind === 'ended' || p.deadline > now) return undefined;
    return { reason: p.reason, byPeer: p.kind === 'peer-closing' };
  }

  /** Retry and drain timers. */
  onTimeout(now: number): void {
    const p = this.phase;
    if (p.kind === 'closing' && p.retryAt <= now) {
      p.retryAt = Infinity;
      p.owed = true;
    } else if (p.kind === 'ended' && p.drainUntil <= now) {
      p.drainUntil = Infinity;
    }
  }

  deadline(): number {
    const p = this.phase;
    switch (p.kind) {
      case 'open':
        return Infinity;
      case 'closing':
        return Math.min(p.deadline, p.retryAt);
      case 'ended':
        return p.drainUntil;
      default:
        return p.deadline;
    }
  }
}
