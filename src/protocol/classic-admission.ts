import { deriveTokenKey, equalBytes } from '../crypto/handshake-keys.js';
import type { ReservedRoom } from './admission.js';
import { RateLimiter } from './rate-limiter.js';

/** Classic clients that said HELLO but not yet CONNECT, at most (each holds a socket). */
export const MAX_CLASSIC_PENDING = 64;

/** The settings the classic rules read, on every use (the server's options). */
export interface ClassicAdmissionConfig {
  readonly maxClients: number;
  readonly maxClientsPerAddress: number;
  readonly handshakesPerSecond: number;
}

/** The modern side's share of the room: its open connections, in all and per IP address. */
export interface ModernRoom {
  openConnections(): number;
  connectionsFrom(address: string): number;
}

/** What a classic `HELLO <token>` gets. */
export type ClassicVerdict =
  /** Wrong token: no reply; `notify` says whether the program hears of it (rate limited). */
  | { type: 'bad-token'; notify: boolean }
  /** No room under maxClients or maxClientsPerAddress: the program hears of it. */
  | { type: 'full' }
  /** Dropped unanswered: too many classic handshakes pending, or over the HELLO rate. */
  | { type: 'dropped'; why: 'pending' | 'rate' }
  /** Answer it (a private socket and the redirect). */
  | { type: 'accept' };

/**
 * Who of the classic (Lua UDPIPE) clients a server lets in, sans-I/O: the token, the
 * room they share with modern clients, the cap on pending handshakes and the HELLO
 * rate. A classic HELLO proves no address (its source may be forged), so pending ones
 * take no room and have a cap of their own, and answers go out at a bounded rate.
 */
export class ClassicAdmission implements ReservedRoom {
  private tokenKey: Uint8Array;
  /** HELLOs answered per second, all addresses together. */
  private readonly limiter: RateLimiter;
  /** onBadToken for classic HELLOs, per second (they may be forged). */
  private readonly noticeLimiter: RateLimiter;
  /** Connected classic clients per IP address, and in all: the room they take from modern clients. */
  private readonly connectedFrom = new Map<string, number>();
  private connected = 0;

  constructor(
    private readonly cfg: ClassicAdmissionConfig,
    private readonly modern: ModernRoom,
    token: string,
  ) {
    this.tokenKey = deriveTokenKey(token);
    this.limiter = new RateLimiter(cfg.handshakesPerSecond, 2 * cfg.handshakesPerSecond);
    this.noticeLimiter = new RateLimiter(cfg.handshakesPerSecond, 2 * cfg.handshakesPerSecond);
  }

  retoken(tokenKey: Uint8Array): void {
    this.tokenKey = tokenKey;
  }

  /**
   * A HELLO whose token is `token` (the bytes after `HELLO `) from `address`; `known`:
   * this client address has a link already (a repeated HELLO), `pending`: how many
   * classic handshakes are not finished (asked only for a new client).
   */
  hello(token: Uint8Array, address: string, known: boolean, pending: () => number, now: number): ClassicVerdict {
    // Compared as MACs of fixed length: constant time whatever the lengths.
    if (!equalBytes(deriveTokenKey(token), this.tokenKey)) return { type: 'bad-token', notify: this.noticeLimiter.take('bad-token', now) };
    if (!known) {
      if (!this.room(address)) return { type: 'full' };
      if (pending() >= MAX_CLASSIC_PENDING) return { type: 'dropped', why: 'pending' };
    }
    if (!this.limiter.take('classic', now)) return { type: 'dropped', why: 'rate' };
    return { type: 'accept' };
  }

  /**
   * Room for one more classic client from `address`: connected modern and classic
   * clients share maxClients (and maxClientsPerAddress). Checked again when a client
   * finishes its handshake: modern clients may have taken the room since its HELLO.
   */
  room(address: string): boolean {
    const total = this.modern.openConnections() + this.connected;
    const fromAddress = this.modern.connectionsFrom(address) + (this.connectedFrom.get(address) ?? 0);
    return total < this.cfg.maxClients && fromAddress < this.cfg.maxClientsPerAddress;
  }

  /** A classic client finished its handshake and was let in. */
  joined(address: string): void {
    this.connected++;
    this.connectedFrom.set(address, (this.connectedFrom.get(address) ?? 0) + 1);
  }

  /** A connected classic client's connection ended. */
  left(address: string): void {
    const n = (this.connectedFrom.get(address) ?? 0) - 1;
    if (n > 0) this.connectedFrom.set(address, n);
    else this.connectedFrom.delete(address);
    this.connected--;
  }

  // ReservedRoom: what the modern endpoint's own checks count (ServerEndpoint.reserve).
  get total(): number {
    return this.connected;
  }

  get perAddress(): ReadonlyMap<string, number> {
    return this.connectedFrom;
  }
}
