import type { ClassicStats } from '../protocol/classic.js';
import type { ConnectionState } from '../protocol/config.js';
import type { ConnectionStats } from '../protocol/connection/connection.js';
import type { Address } from '../transport/types.js';

export type PeerState = 'connecting' | ConnectionState;

/** Every peer's stats carry `sendDropped`: messages send() or sendAll() could not queue for it (see the 'dropped' event). */
export type PeerStats = ((ConnectionStats | ClassicStats) & { sendDropped: number }) | { state: 'connecting'; sendDropped: number };

/** What a Peer reads its state and stats from: a modern Connection or a classic link. */
export interface PeerLink {
  readonly state: PeerState;
  stats(): ConnectionStats | ClassicStats;
}

/** How a message travels (docs/PROTOCOL.md, section 5). */
export type Delivery = 'reliable' | 'reliable-unordered' | 'unreliable' | 'unreliable-sequenced';

export interface SendOptions {
  /** Default true: acknowledged, retransmitted, delivered once and in order. false is `delivery: 'unreliable'`. */
  reliable?: boolean;
  /**
   * 'reliable' (the default): once, in its channel's order. 'reliable-unordered': once,
   * as soon as it arrives (a message larger than one packet keeps its channel's order).
   * 'unreliable': at most once, maybe lost. 'unreliable-sequenced': at most once, and
   * never after a newer message of the same channel (older ones still queued are
   * replaced, late ones dropped); for state that only matters when fresh. At most
   * 1200 bytes.
   */
  delivery?: Delivery;
  /**
   * 0..255, default 0. Each channel is its own ordered stream: a large or delayed
   * message on one does not hold back messages on another. Sequencing is per channel.
   */
  channel?: number;
}

/** What a Peer needs from the UDPipe that owns it. */
export interface PeerOwner {
  send(msg: string | Uint8Array, sock?: Peer, opts?: SendOptions): boolean;
  close(sock?: Peer): Promise<void>;
  ping(sock?: Peer): void;
}

/**
 * The other end of one connection: the `sock` argument of every callback. On a server,
 * one per client; on a client, one per connection to the server (a reconnect makes a
 * new one). Not a raw socket: it only sends through its UDPipe.
 */
export class Peer {
  /** Set once the handshake completes. */
  private conn: PeerLink | undefined;
  private addr: Address;
  /** @internal Messages not queued for this peer (over its queue limits, or it was closing). */
  sendDropped = 0;

  /** @internal Created by UDPipe only. */
  constructor(
    private readonly owner: PeerOwner,
    /** Connection id (the server's id for this connection); 0 while connecting. */
    public id: number,
    /** Taken as it is, not copied (a server holds thousands of peers): the caller gives up its object. */
    address: Address,
    conn?: PeerLink,
    /** 'classic': the original UDPIPE text protocol (unreliable, one datagram per message). */
    readonly protocol: 'udpipe' | 'classic' = 'udpipe',
  ) {
    this.addr = address;
    this.conn = conn;
  }

  /** @internal */
  attach(id: number, conn: PeerLink): void {
    this.id = id;
    this.conn = conn;
  }

  /** @internal The client moved (NAT rebinding, network change). */
  moved(address: Address): void {
    this.addr = { address: address.address, port: address.port };
  }

  get address(): string {
    return this.addr.address;
  }

  get port(): number {
    return this.addr.port;
  }

  get state(): PeerState {
    return this.conn?.state ?? 'connecting';
  }

  stats(): PeerStats {
    return { ...(this.conn?.stats() ?? { state: 'connecting' as const }), sendDropped: this.sendDropped };
  }

  send(msg: string | Uint8Array, opts?: SendOptions): boolean {
    return this.owner.send(msg, this, opts);
  }

  ping(): void {
    this.owner.ping(this);
  }

  close(): Promise<void> {
    return this.owner.close(this);
  }

  toJSON(): { id: number; address: string; port: number; state: PeerState } {
    return { id: this.id, address: this.address, port: this.port, state: this.state };
  }

  toString(): string {
    const host = this.address.includes(':') ? `[${this.address}]` : this.address;
    return `${host}:${this.port}#${this.id.toString(16)}`;
  }
}
