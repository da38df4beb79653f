import type { ConnectionConfig } from '../config.js';
import type { PacketBuilder } from './packet-builder.js';

/** Outstanding pings remembered for RTT on PONG. */
const PINGS_REMEMBERED = 8;
/** PONGs owed at once; more PINGs in one go are not answered one by one. */
const PONGS_OWED = 4;
/** Intervals of silence after which a side that leaves the asking to its peer (the server: KeepAlive's `answerer`) asks itself. */
const ANSWERER_QUIET = 2;

/**
 * Keep-alive, the seed's PING/PONG and its two silences: no packet for
 * `stallTimeoutMs` makes the connection stalled, none for `timeoutMs` ends it. The
 * client asks: it pings after `pingIntervalMs` without a packet. The server is an
 * `answerer`: it answers every PING, and asks only after ANSWERER_QUIET intervals
 * without a packet (its client gone quiet, or its PINGs lost). So an idle connection
 * makes one exchange per interval, always started by the client, and the server's
 * timers stay quiet.
 *
 * Why the roles are fixed: when both sides asked after one interval their PINGs
 * crossed (two exchanges per interval), and when the side that had answered waited
 * 1.5 intervals instead, a client whose timers ran late (a busy process with thousands
 * of connections) let the server's 1.5 intervals run out first, and the server then
 * did the asking for good: 80% of 10,000 idle connections, each costing the server a
 * timer, a PING to track and an ACK to process, where answering costs it one datagram
 * in and one out. Now a client late by less than an interval keeps the asking, and one
 * that had to be asked answers and asks again an interval later, before the server.
 */
export class KeepAlive {
  pingAt: number;
  private lastReceivedAt: number;
  // The two silences' deadlines follow from lastReceivedAt and the config, so they are
  // not stored (a stored time is a boxed double, 16 bytes more per idle connection);
  // these say which of them is off: the stall once it fired, both after stop().
  private stallOff = false;
  private idleOff = false;
  /** The id of the PING to put in the next packet. */
  private pingOwed: number | undefined;
  private nextPingId = 1;
  /** Ring of the last pings sent: id, time sent (id -1: free). */
  private sent: number[] | undefined;
  private sentCount = 0;
  private pongs: number[] | undefined;

  constructor(
    private readonly cfg: ConnectionConfig,
    now: number,
    /** Leaves the asking to the peer while it hears from it (see the class comment). */
    private readonly answerer = false,
  ) {
    this.lastReceivedAt = now;
    this.pingAt = now + cfg.pingIntervalMs;
  }

  /** When the connection counts as stalled (Infinity: it is, or keep-alive stopped). */
  get stallAt(): number {
    return this.stallOff ? Infinity : this.lastReceivedAt + this.cfg.stallTimeoutMs;
  }

  /** When the silence ends the connection (Infinity: keep-alive stopped). */
  get idleAt(): number {
    return this.idleOff ? Infinity : this.lastReceivedAt + this.cfg.timeoutMs;
  }

  /**
   * A packet arrived: both silences start again, and no PING is needed for an interval
   * (an answerer: ANSWERER_QUIET intervals). Only ever put off, never brought nearer.
   */
  heard(now: number): void {
    this.lastReceivedAt = now;
    this.stallOff = this.idleOff = false;
    this.pingAt = Math.max(this.pingAt, now + (this.answerer ? ANSWERER_QUIET : 1) * this.cfg.pingIntervalMs);
  }

  /** The shared config changed (setTimeout): deadlines again from the last packet. */
  retime(now: number): void {
    // The silences' deadlines follow the config by themselves.
    this.pingAt = Math.min(this.pingAt, now + this.cfg.pingIntervalMs);
  }

  /** Back from a stall: ping within an interval at the latest. */
  unstalled(now: number): void {
    this.pingAt = Math.min(this.pingAt, now + this.cfg.pingIntervalMs);
  }

  /** The stall deadline passed: true once (the caller marks the connection stalled). */
  takeStall(now: number): boolean {
    if (this.stallAt > now) return false;
    this.stallOff = true;
    return true;
  }

  /** The ping deadline passed: a PING is owed and the next one is an interval away. */
  onTimeout(now: number): void {
    if (this.pingAt > now) return;
    this.pingAt = now + this.cfg.pingIntervalMs;
    this.request();
  }

  /** A PING goes in the next packet (the seed's ping()). */
  request(): void {
    this.pingOwed = this.nextPingId++ >>> 0;
  }

  /** The peer pinged: a PONG is owed (heard() already put the next PING off). */
  onPing(id: number): void {
    // A literal of one: an array grown by push takes room for 17 (152 bytes), kept for good.
    if (this.pongs === undefined) this.pongs = [id];
    else if (this.pongs.length < PONGS_OWED) this.pongs.push(id);
  }

  /** The peer answered: the round trip in ms, or undefined for a PONG we did not ask for (or asked too long ago). */
  onPong(id: number, now: number): number | undefined {
    const s = this.sent;
    if (!s) return undefined;
    for (let i = 0; i < s.length; i += 2) {
      if (s[i] !== id) continue;
      s[i] = -1;
      return now - s[i + 1]!;
    }
    return undefined;
  }

  get owesFrame(): boolean {
    return this.pingOwed !== undefined || (this.pongs !== undefined && this.pongs.length > 0);
  }

  /** PONGs owed, then the PING owed, as far as they fit. */
  fill(b: PacketBuilder, now: number): void {
    const pongs = this.pongs;
    while (pongs !== undefined && pongs.length > 0 && b.add({ type: 'pong', id: pongs[0]! })) pongs.shift();
    if (pongs?.length === 0) this.pongs = undefined;
    if (this.pingOwed === undefined || !b.add({ type: 'ping', id: this.pingOwed })) return;
    // A plain array (its numbers unboxed, as doubles): a Float64Array with its ArrayBuffer cost twice as much.
    this.sent ??= new Array<number>(2 * PINGS_REMEMBERED).fill(-1);
    const at = 2 * (this.sentCount++ % PINGS_REMEMBERED);
    this.sent[at] = this.pingOwed;
    this.sent[at + 1] = now;
    this.pingOwed = undefined;
  }

  deadline(): number {
    return Math.min(this.pingAt, this.stallAt, this.idleAt);
  }

  /** The connection ended: no more deadlines. */
  stop(): void {
    this.pingAt = Infinity;
    this.stallOff = this.idleOff = true;
  }
}
