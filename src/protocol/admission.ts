import { CookieJar, clientProof, equalBytes } from '../crypto/handshake-keys.js';
import { HandshakeFlag } from '../wire/constants.js';
import type { ConnectPacket, HelloPacket } from '../wire/handshake.js';
import type { Address } from './address.js';
import { RateLimiter, rateKey } from './rate-limiter.js';

/**
 * Handshakes whose connection is gone are remembered this long (at least a cookie's
 * lifetime), so a late duplicate CONNECT cannot start a second connection.
 */
const USED_HANDSHAKE_MS = 60_000;
const MAX_USED_HANDSHAKES = 4096;

/** What the server's admission rules need to know of its settings (read on every use: setToken and configure change them). */
export interface AdmissionConfig {
  tokenKey: Uint8Array;
  encrypt: boolean;
  maxClients: number;
  maxClientsPerAddress?: number | undefined;
  handshakesPerSecond: number;
}

/** Room taken by clients the endpoint does not hold (classic ones), read live at each check. */
export interface ReservedRoom {
  readonly total: number;
  readonly perAddress: ReadonlyMap<string, number>;
}

const NOTHING_RESERVED: ReservedRoom = { total: 0, perAddress: new Map() };

/** What the first checks of a CONNECT decided (docs/PROTOCOL.md section 3, steps 1 to 6). */
export type Verdict =
  /** No reply: the cookie failed (counted as malformed), or a late copy of a finished handshake. */
  | { type: 'ignore'; malformed: boolean }
  /** A CONNECT of a handshake already accepted, whose connection exists: send its ACCEPT again. */
  | { type: 'repeat'; connId: number }
  /** No reply: the address is over its handshake rate. */
  | { type: 'rate-limited' }
  | { type: 'bad-token' }
  | { type: 'encryption-mismatch'; clientEncrypts: boolean }
  /** Passed: the session check, the key agreement and the room come next. */
  | { type: 'go'; handshakeKey: string; encrypt: boolean };

/**
 * The server's rules for who may connect, and the state they keep: the stateless
 * cookies, the handshakes accepted or finished (so a repeated CONNECT gets the same
 * ACCEPT and a late one nothing), the handshake rate per address, and the connections
 * per address with the room taken by clients the endpoint does not hold (classic ones).
 * The server asks; the sessions and the connections stay the server's.
 */
export class Admission {
  private readonly cookies: CookieJar;
  /** Handshakes per IP address (rate-limiter.ts); holds validated addresses only. */
  private readonly limiter: RateLimiter;
  private readonly byHandshake = new Map<string, number>();
  private readonly usedHandshakes = new Map<string, number>();
  /** Connections per IP address, for maxClientsPerAddress. */
  private readonly perAddress = new Map<string, number>();
  /** Room taken by clients this endpoint does not hold (classic ones): counted against maxClients. */
  private reserved: ReservedRoom = NOTHING_RESERVED;

  constructor(
    private readonly cfg: AdmissionConfig,
    randomBytes: (n: number) => Uint8Array,
    now: number,
  ) {
    this.cookies = new CookieJar(randomBytes, now);
    this.limiter = new RateLimiter(cfg.handshakesPerSecond, 2 * cfg.handshakesPerSecond);
  }

  /** The cookie a HELLO from `from` gets; nothing is kept. */
  cookie(from: Address, hello: Pick<HelloPacket, 'clientConnId' | 'clientNonce'>, now: number): Uint8Array {
    return this.cookies.make(from.address, from.port, hello, now);
  }

  /** Steps 1 to 6 of docs/PROTOCOL.md section 3, in that order. */
  check(d: ConnectPacket, from: Address, now: number): Verdict {
    if (!this.cookies.check(from.address, from.port, d, now)) return { type: 'ignore', malformed: true };
    // Joined, not concatenated: a flat string, where a template would keep a rope of parts for the connection's life.
    const handshakeKey = [from.address, from.port, d.clientConnId, hex(d.clientNonce)].join('|');
    const existing = this.byHandshake.get(handshakeKey);
    if (existing !== undefined) return { type: 'repeat', connId: existing };
    const used = this.usedHandshakes.get(handshakeKey);
    if (used !== undefined && used > now) return { type: 'ignore', malformed: false };
    if (!equalBytes(clientProof(this.cfg.tokenKey, d), d.proof)) return { type: 'bad-token' };
    // After the proof: someone without the token who shares the address (a NAT, a
    // campus network) cannot spend the bucket of those who have it. What comes next
    // (key agreement, a connection) is what costs.
    if (!this.limiter.take(rateKey(from.address), now)) return { type: 'rate-limited' };
    const encrypt = (d.flags & HandshakeFlag.Encrypt) !== 0;
    if (encrypt !== this.cfg.encrypt) return { type: 'encryption-mismatch', clientEncrypts: encrypt };
    return { type: 'go', handshakeKey, encrypt };
  }

  /** Step 10: room for one more connection from this address, with `connections` open now. */
  room(address: string, connections: number): boolean {
    const fromAddress = (this.perAddress.get(address) ?? 0) + (this.reserved.perAddress.get(address) ?? 0);
    return connections + this.reserved.total < this.cfg.maxClients && fromAddress < (this.cfg.maxClientsPerAddress ?? this.cfg.maxClients);
  }

  /** A connection was made for this handshake, at this address. */
  admitted(handshakeKey: string, connId: number, address: string): void {
    this.byHandshake.set(handshakeKey, connId);
    this.countAddress(address, 1);
  }

  /** The connection of this handshake is gone: a late copy of its CONNECT gets nothing for a while. */
  finished(handshakeKey: string, address: string, now: number): void {
    this.countAddress(address, -1);
    this.byHandshake.delete(handshakeKey);
    this.usedHandshakes.set(handshakeKey, now + USED_HANDSHAKE_MS);
    if (this.usedHandshakes.size > MAX_USED_HANDSHAKES) this.usedHandshakes.delete(this.usedHandshakes.keys().next().value!);
  }

  /** A connection moved from one IP address to another (maxClientsPerAddress counts where it is). */
  moved(from: string, to: string): void {
    this.countAddress(from, -1);
    this.countAddress(to, 1);
  }

  reserve(room: ReservedRoom): void {
    this.reserved = room;
  }

  /** Connections from one IP address, for a shared maxClientsPerAddress. */
  connectionsFrom(address: string): number {
    return this.perAddress.get(address) ?? 0;
  }

  /** Entries in each table, for stateSize(). */
  sizes(): { handshakes: number; usedHandshakes: number; addresses: number; rateLimited: number } {
    return {
      handshakes: this.byHandshake.size,
      usedHandshakes: this.usedHandshakes.size,
      addresses: this.perAddress.size,
      rateLimited: this.limiter.size,
    };
  }

  private countAddress(address: string, delta: number): void {
    const n = (this.perAddress.get(address) ?? 0) + delta;
    if (n > 0) this.perAddress.set(address, n);
    else this.perAddress.delete(address);
  }
}

const HEX_BYTES = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

/** Lower-case hex, as one flat string (these are kept as map keys for a connection's life). */
export function hex(b: Uint8Array): string {
  return Array.from(b, (x) => HEX_BYTES[x]!).join('');
}
