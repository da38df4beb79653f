import {
  connectionCipher,
  connectionKeys,
  deriveResetKey,
  equalBytes,
  refuseProof,
  resetToken,
  resumeProof,
  serverProof,
  xorBytes,
} from '../crypto/handshake-keys.js';
import { EphemeralKey } from '../crypto/key-exchange.js';
import type { Address } from './address.js';
import { HandshakeFlag, PROOF_SIZE, ReasonCode, type Reason } from '../wire/constants.js';
import { PATH_DATA_SIZE } from '../wire/frames.js';
import { WireFormatError } from '../wire/errors.js';
import { encodeHandshake, type ConnectPacket } from '../wire/handshake.js';
import { type Datagram, decodeDatagram, encodeReset } from '../wire/packet.js';
import type { ConnectionConfig, ConnectionEvent } from './config.js';
import { Connection, type ConnectionView, newInbound, releaseInbound, type InboundSession } from './connection/connection.js';
import { DeadlineHeap, type SlotStore } from './deadline-heap.js';
import { Admission, hex, type ReservedRoom } from './admission.js';
import { RateLimiter } from './rate-limiter.js';
import { SessionStore } from './sessions.js';
import { ReassemblyBudget } from '../reliability/budget.js';
import { BUFFER_LIMIT } from '../reliability/receiver.js';
import type { Unit } from '../reliability/sender.js';
import { Deque } from '../reliability/deque.js';

export interface ServerConfig extends ConnectionConfig {
  tokenKey: Uint8Array;
  maxClients: number;
  /** Connections from one IP address (any port); more are refused as server-full. Default maxClients. */
  maxClientsPerAddress?: number;
  /** How long a lost connection's session waits for its client to come back. */
  sessionLingerMs: number;
  /** Encrypted connections only (X25519 + ChaCha20-Poly1305); false: plaintext with MACs only. A client that disagrees is refused. */
  encrypt: boolean;
  /** CONNECTs per second one IP address may make (burst twice that); more get no answer. 0: no limit. */
  handshakesPerSecond: number;
  /**
   * Key of the stateless reset tokens (deriveResetKey): the same across restarts, so a
   * restarted server can reset. Default: derived from the token key and resetPort.
   */
  resetKey?: Uint8Array | undefined;
  /** The port we listen on, for the default reset key (0 in tests). */
  resetPort?: number | undefined;
}

export type ServerEvent =
  /** The client's first authenticated DATA packet arrived: the connection is confirmed both ways. */
  | { type: 'accepted'; connId: number; address: Address }
  | { type: 'connection'; connId: number; event: ConnectionEvent }
  | { type: 'address-changed'; connId: number; address: Address }
  | { type: 'removed'; connId: number }
  | { type: 'bad-token'; address: Address }
  | { type: 'max-clients'; address: Address }
  /** Refused: the client asked for encryption and we do not encrypt, or the other way round. */
  | { type: 'encryption-mismatch'; address: Address; clientEncrypts: boolean }
  /** Refused: the CONNECT named a session we have without proving it is that session's client. */
  | { type: 'session-mismatch'; address: Address };

export interface ServerCounters {
  datagramsReceived: number;
  datagramsSent: number;
  bytesReceived: number;
  bytesSent: number;
  /** Datagrams that failed to decode or authenticate, or named no connection. */
  malformed: number;
  handshakesAccepted: number;
  handshakesRefused: number;
  /** Connections whose client never confirmed our ACCEPT (it retried with a new handshake, or vanished). */
  handshakesAbandoned: number;
  /** CONNECTs dropped unanswered: their address exceeded handshakesPerSecond. */
  handshakesRateLimited: number;
  /** CONNECTs refused because they named a session without its resumption proof. */
  resumesRefused: number;
  /** Stateless resets sent, for DATA naming no connection we have. */
  resetsSent: number;
}

interface Peer {
  conn: Connection;
  address: Address;
  /** The last address the client proved it receives at (the handshake's, or a validated move). */
  validated: Address;
  /** Key of the handshake that made it, so a retransmitted CONNECT gets the same ACCEPT. */
  handshakeKey: string;
  /** Our ACCEPT, said again to a retransmitted CONNECT until the client's first DATA confirms it got it. */
  accept: Uint8Array | undefined;
  sessionKey: string;
  /**
   * The session's resumption secret, from the X25519 exchange of its first connection:
   * its 32 bytes as a latin1 string, 48 bytes of heap where a Uint8Array with its
   * ArrayBuffer took about 250 (every connection holds one, and it is read only when
   * the client resumes).
   */
  resumeSecret: string;
  /** The client's reliable stream in this session: what is done, half-built messages. */
  inbound: InboundSession;
  /** Session index of this connection's first reliable message to the client. */
  sendBase: number;
  /**
   * False until the client's first DATA packet proves it got our ACCEPT. Until then the
   * program is told nothing: a connection whose ACCEPT was lost ends silently.
   */
  confirmed: boolean;
  /** Events raised while unconfirmed, released with 'accepted'. */
  held: ConnectionEvent[] | undefined;
  /** Listed in the server's `dirty`: its output may be pending. */
  dirty: boolean;
  /** Its slot in the server's deadline heap (-1: none), kept here rather than in a Map of the heap's. */
  heapSlot: number;
}

/** The deadline heap keeps each connection's slot in its record: no Map entry per connection. */
const RECORD_SLOTS: SlotStore<Peer> = {
  get: (p) => (p.heapSlot < 0 ? undefined : p.heapSlot),
  set: (p, slot) => {
    p.heapSlot = slot;
  },
  delete: (p) => {
    p.heapSlot = -1;
  },
};

/** Handshake replies waiting for the driver; beyond this they are dropped (a flood gets no more answers). */
const MAX_OUTBOX = 1024;
/**
 * Stateless resets per second, all addresses together (burst twice that): each answers a
 * datagram larger than itself, so they cannot amplify, and the limit keeps a flood of
 * unknown connection ids from turning the server into a reflector at full rate.
 */
const RESETS_PER_SECOND = 64;

/**
 * The server side, sans-I/O: one public address, many connections told apart by the
 * connection id in each DATA packet (so a client may change address). Allocates
 * nothing for a HELLO (stateless cookie); a connection exists only after a CONNECT
 * with a valid cookie and token proof. docs/PROTOCOL.md, "Handshake".
 */
export class ServerEndpoint {
  /** Reassembly memory shared by every connection (src/reliability/budget.ts). */
  readonly budget: ReassemblyBudget;
  readonly counters: ServerCounters = {
    datagramsReceived: 0,
    datagramsSent: 0,
    bytesReceived: 0,
    bytesSent: 0,
    malformed: 0,
    handshakesAccepted: 0,
    handshakesRefused: 0,
    handshakesAbandoned: 0,
    handshakesRateLimited: 0,
    resumesRefused: 0,
    resetsSent: 0,
  };
  private readonly peers = new Map<number, Peer>();
  /** Who may connect: cookies, handshakes seen, rates and room per address (admission.ts). */
  private readonly admission: Admission;
  private readonly outbox = new Deque<{ bytes: Uint8Array; to: Address }>();
  /**
   * Connections whose output may be pending, in the order touched, each listed once
   * (Peer.dirty): dirty[dirtyHead, dirtyCount). An array that keeps its storage, where a
   * Set made a new table when its last entry went, about once per datagram.
   */
  private readonly dirty: number[] = [];
  private dirtyHead = 0;
  private dirtyCount = 0;
  private readonly deadlines = new DeadlineHeap<Peer>(RECORD_SLOTS);
  private readonly events = new Deque<ServerEvent>();
  private readonly resets = new RateLimiter(RESETS_PER_SECOND, 2 * RESETS_PER_SECOND, 1);
  /** The latest time we were given; events raised inside a call carry it. */
  private lastNow: number;
  private readonly sessions = new SessionStore(
    () => Math.max(16, this.cfg.maxClients),
    () => this.cfg.sessionLingerMs,
    // A parked session that expires (or gives way) gives its half-built messages' bytes back.
    (s) => releaseInbound(s.inbound),
  );

  constructor(
    private readonly cfg: ServerConfig,
    private readonly randomBytes: (n: number) => Uint8Array,
    now: number,
  ) {
    this.admission = new Admission(cfg, randomBytes, now);
    // Every session may hold a small share past the limit for whole messages, so a few
    // sessions' large messages cannot hold up everyone's small ones; all the shares
    // together (connected and parked sessions) come to at most half the limit.
    // Past the limit, the turn to grow never takes the budget over its documented bound:
    // one message and its reorder buffer, plus the shares.
    const share = sessionShare(cfg.maxReassemblyBytes, cfg.maxClients);
    this.budget = new ReassemblyBudget(
      cfg.maxReassemblyBytes,
      share,
      cfg.maxMessageSize + BUFFER_LIMIT + 2 * Math.max(16, cfg.maxClients) * share,
    );
    this.sessions.share(this.budget);
    this.lastNow = now;
  }

  /** Room taken by clients this endpoint does not hold (classic ones), counted against maxClients: read live, set once. */
  reserve(room: ReservedRoom): void {
    this.admission.reserve(room);
  }

  /** Connections from one IP address, for a shared maxClientsPerAddress. */
  connectionsFrom(address: string): number {
    return this.admission.connectionsFrom(address);
  }

  /** Applies new settings to future connections (setToken, setTimeout, maxClients). */
  configure(patch: Partial<ServerConfig>): void {
    // In place: every connection shares this object, so new timeouts reach them too.
    Object.assign(this.cfg, patch);
    for (const [id, p] of this.peers) {
      p.conn.retime();
      this.touch(id);
    }
  }

  /**
   * One connection, to read (state, queue, stats). Changes go through the server's own
   * methods (send, ping, close), so it sees the output and timers they make.
   */
  connection(connId: number): ConnectionView | undefined {
    return this.peers.get(connId)?.conn;
  }

  /** Queues a message on one connection (Connection.send); false past its high-water mark, as there. */
  send(connId: number, data: Uint8Array, reliable: boolean, channel = 0, sequenced = false, unordered = false): boolean {
    const p = this.peers.get(connId);
    if (!p) return false;
    const ok = p.conn.send(data, reliable, channel, sequenced, unordered);
    this.touch(connId);
    return ok;
  }

  /** PINGs one connection now, or every one (the seed's ping()). */
  ping(connId?: number): void {
    const ids = connId === undefined ? [...this.peers.keys()] : [connId];
    for (const id of ids) {
      this.peers.get(id)?.conn.ping();
      this.touch(id);
    }
  }

  connIds(): number[] {
    return [...this.peers.keys()];
  }

  /**
   * How much per-peer state the server holds: entries in each of its tables. For tests
   * and stats: a HELLO must leave all of them unchanged (docs/PROTOCOL.md, section 3).
   */
  stateSize(): {
    peers: number;
    handshakes: number;
    usedHandshakes: number;
    parked: number;
    deadlines: number;
    addresses: number;
    rateLimited: number;
    queuedReplies: number;
    events: number;
  } {
    const a = this.admission.sizes();
    return {
      peers: this.peers.size,
      handshakes: a.handshakes,
      usedHandshakes: a.usedHandshakes,
      parked: this.sessions.parkedCount,
      deadlines: this.deadlines.size,
      addresses: a.addresses,
      rateLimited: a.rateLimited,
      queuedReplies: this.outbox.length,
      events: this.events.length,
    };
  }

  /** Parked sessions forgotten to make room in the budget for live connections. */
  get evictedSessions(): number {
    return this.sessions.evicted;
  }

  /** Connections not yet ended, confirmed or not (a shutdown waits for them all). */
  openConnections(): number {
    let n = 0;
    for (const p of this.peers.values()) if (p.conn.state !== 'closed') n++;
    return n;
  }

  /** Lists a connection whose output or deadline may have changed, so the next poll sees them. */
  private touch(connId: number): void {
    const p = this.peers.get(connId);
    if (!p) return;
    this.drain(connId, p.conn);
    if (!p.dirty) {
      p.dirty = true;
      this.dirty[this.dirtyCount++] = connId;
    }
    this.deadlines.set(p, p.conn.nextDeadline());
  }

  /** One datagram from `from`. It is taken over: messages delivered from it may be views of its bytes, so the caller must not reuse them. */
  handleDatagram(bytes: Uint8Array, from: Address, now: number): void {
    this.lastNow = now;
    this.budget.now = now;
    this.counters.datagramsReceived++;
    this.counters.bytesReceived += bytes.length;
    let d: Datagram;
    try {
      d = decodeDatagram(bytes);
    } catch (e) {
      if (!(e instanceof WireFormatError)) throw e;
      this.counters.malformed++;
      return;
    }
    switch (d.type) {
      case 'hello': {
        const cookie = this.admission.cookie(from, d, now);
        this.reply(encodeHandshake({ type: 'challenge', clientConnId: d.clientConnId, clientNonce: d.clientNonce, cookie }), from);
        return;
      }
      case 'connect':
        this.onConnect(d, from, now);
        return;
      case 'data': {
        const peer = this.peers.get(d.connId);
        if (!peer) {
          this.counters.malformed++;
          this.reset(d.connId, from, now);
          return;
        }
        const result = peer.conn.handleDatagram(bytes, d.pnLow, now);
        this.drain(d.connId, peer.conn);
        if (result === 'rejected') this.counters.malformed++;
        const ok = result === 'newest' || result === 'late';
        const movedByConfirm = ok && !peer.confirmed && this.confirm(d.connId, peer, from, bytes.length, now);
        if (result === 'newest' && (peer.address.address !== from.address || peer.address.port !== from.port)) {
          this.moved(peer, from, bytes.length, now);
        } else if (ok && !movedByConfirm && peer.address.address === from.address && peer.address.port === from.port) {
          peer.conn.creditPath(bytes.length); // only what comes from the address on trial counts
        }
        this.touch(d.connId);
        this.reap(d.connId);
        return;
      }
      default:
        // challenge/accept/refuse/reset travel to clients only.
        this.counters.malformed++;
    }
  }

  /** The default reset key, made once per token key (setToken replaces the token key). */
  private derivedResetKey: { tokenKey: Uint8Array; key: Uint8Array } | undefined;

  private get resetKey(): Uint8Array {
    if (this.cfg.resetKey) return this.cfg.resetKey;
    if (this.derivedResetKey?.tokenKey !== this.cfg.tokenKey) {
      this.derivedResetKey = { tokenKey: this.cfg.tokenKey, key: deriveResetKey(this.cfg.tokenKey, this.cfg.resetPort) };
    }
    return this.derivedResetKey.key;
  }

  /**
   * A DATA packet for a connection we do not have (we restarted, or forgot it): tell the
   * client at once with a stateless reset rather than let it wait out its timeout. Its
   * token is a MAC of the connection id under the reset key, which a restarted server
   * still has; the client learnt it, masked, in our ACCEPT (docs/PROTOCOL.md, section 10a).
   */
  private reset(connId: number, to: Address, now: number): void {
    if (!this.resets.take('', now)) return;
    this.counters.resetsSent++;
    this.reply(encodeReset(resetToken(this.resetKey, connId)), to);
  }

  private onConnect(d: ConnectPacket, from: Address, now: number): void {
    const verdict = this.admission.check(d, from, now);
    switch (verdict.type) {
      case 'ignore':
        if (verdict.malformed) this.counters.malformed++; // no reply: an unproven address gets nothing
        return;
      case 'repeat': {
        const accept = this.peers.get(verdict.connId)?.accept;
        if (accept) this.reply(accept, from); // our ACCEPT was lost: say it again
        return;
      }
      case 'bad-token':
        this.events.push({ type: 'bad-token', address: { ...from } });
        this.refuse(d, from, ReasonCode.BadToken, false);
        return;
      case 'rate-limited':
        this.counters.handshakesRateLimited++;
        return; // no reply; the client retries with backoff
      case 'encryption-mismatch':
        this.events.push({ type: 'encryption-mismatch', address: { ...from }, clientEncrypts: verdict.clientEncrypts });
        this.refuse(d, from, ReasonCode.EncryptionMismatch, true);
        return;
      case 'go':
        this.admit(d, from, now, verdict.handshakeKey, verdict.encrypt);
        return;
    }
  }

  /** A CONNECT past the admission checks: its session, the key agreement, the room, then the connection. */
  private admit(d: ConnectPacket, from: Address, now: number, hsKey: string, encrypt: boolean): void {
    // A session we have is continued only for its own client (finding 3 of issue 10:
    // the session id travels in clear, so knowing it and the token proves nothing).
    const sessionKey = hex(d.sessionId);
    const previous = this.sessions.liveConnection(sessionKey);
    const known = previous === undefined ? this.sessions.peek(sessionKey)?.resumeSecret : this.peers.get(previous)?.resumeSecret;
    if (known !== undefined && !equalBytes(resumeProof(Buffer.from(known, 'latin1'), d), d.resumeProof)) {
      // Not its client, or one that never got the ACCEPT that began the session (so has
      // no secret): either way it must start a session of its own.
      this.counters.resumesRefused++;
      this.events.push({ type: 'session-mismatch', address: { ...from } });
      this.refuse(d, from, ReasonCode.SessionMismatch, true);
      return;
    }
    // The key exchange before anything changes: a public key that gives no shared
    // secret ends the attempt here, leaving any live connection of the session alone.
    const ephemeral = new EphemeralKey(this.randomBytes(32));
    const shared = ephemeral.agree(d.publicKey);
    if (!shared) {
      this.counters.malformed++;
      return;
    }
    if (previous !== undefined) {
      // The client gave up on its old connection before we did: end ours now; its
      // state is parked and resumed below.
      this.peers.get(previous)?.conn.abort('timeout');
      this.touch(previous);
      this.reap(previous);
    }
    if (!this.admission.room(from.address, this.peers.size)) {
      this.events.push({ type: 'max-clients', address: { ...from } });
      this.refuse(d, from, ReasonCode.ServerFull, true);
      return;
    }
    const connId = this.newConnId();
    const publicKey = ephemeral.publicKey;
    const keys = connectionKeys(this.cfg.tokenKey, shared, d, connId, d.publicKey, publicKey);
    const cipher = connectionCipher('server', keys, encrypt);
    // Resume: the client resends from what we delivered; we resend from what it did.
    const parked = this.sessions.take(sessionKey);
    // A new session's resumption secret comes from this connection's exchange.
    const resumeSecret = parked?.resumeSecret ?? Buffer.from(keys.resume).toString('latin1');
    let inbound = newInbound(d.nextSendIndex);
    let sendBase = 0;
    let outbound: Unit[] = [];
    if (parked) {
      inbound = parked.inbound;
      const skip = Math.min(Math.max(0, d.delivered - parked.outboundBase), parked.outbound.length);
      outbound = parked.outbound.slice(skip);
      sendBase = parked.outboundBase + skip;
    }
    const claims = {
      serverConnId: connId,
      resumed: parked ? 1 : 0,
      delivered: inbound.state.delivered,
      flags: encrypt ? HandshakeFlag.Encrypt : 0,
      publicKey,
      resetToken: xorBytes(resetToken(this.resetKey, connId), keys.resetMask),
    };
    const accept = encodeHandshake({
      type: 'accept',
      clientConnId: d.clientConnId,
      clientNonce: d.clientNonce,
      ...claims,
      proof: serverProof(this.cfg.tokenKey, d, claims),
    });
    const conn = new Connection({
      localConnId: connId,
      remoteConnId: d.clientConnId,
      cipher,
      config: this.cfg,
      now,
      peerAddress: from.address,
      budget: this.budget,
      inbound,
      keepAliveAnswerer: true,
    });
    for (const u of outbound) conn.sendUnit(u);
    // A send() that returned false on the session's last connection gets its 'drain'
    // from this one (found by the fault suite: a program waiting for it waited for ever
    // when the client's reconnect acknowledged everything that had been queued).
    if (parked?.owesDrain) conn.oweDrain();
    const address = { address: from.address, port: from.port };
    this.peers.set(connId, {
      conn,
      address,
      validated: address, // replaced, never changed in place, so the two may share
      handshakeKey: hsKey,
      accept,
      sessionKey,
      resumeSecret,
      inbound,
      sendBase,
      confirmed: false,
      heapSlot: -1,
      held: undefined,
      dirty: false,
    });
    this.sessions.bind(sessionKey, connId);
    this.admission.admitted(hsKey, connId, from.address);
    this.counters.handshakesAccepted++;
    this.reply(accept, from);
    this.touch(connId);
  }

  private refuse(d: ConnectPacket, from: Address, reason: ReasonCode, authenticated: boolean): void {
    this.counters.handshakesRefused++;
    const proof = authenticated ? refuseProof(this.cfg.tokenKey, d, reason) : new Uint8Array(PROOF_SIZE);
    this.reply(encodeHandshake({ type: 'refuse', clientConnId: d.clientConnId, clientNonce: d.clientNonce, reason, proof }), from);
  }

  /**
   * Takes what a connection raised during the call just made into it. Called after
   * every such call, before anything else looks at the connection: an ended one is
   * parked, a path result applies to the path it was about.
   */
  private drain(connId: number, conn: Connection): void {
    for (let e = conn.pollEvent(); e; e = conn.pollEvent()) this.onConnectionEvent(connId, e);
  }

  private onConnectionEvent(connId: number, event: ConnectionEvent): void {
    const p = this.peers.get(connId);
    if (event.type === 'path-validated' || event.type === 'path-failed') {
      if (p) this.onPathEvent(connId, p, event);
      return;
    }
    if (p && event.type === 'ended') {
      this.sessions.unbind(p.sessionKey, connId);
      // The client closing is the end of its session; anything else may be resumed.
      if (!event.byPeer && event.reason !== 'shutdown') {
        const left = p.conn.takeUnfinished();
        this.sessions.park(
          p.sessionKey,
          {
            resumeSecret: p.resumeSecret,
            inbound: p.inbound,
            outbound: left.reliable,
            outboundBase: p.sendBase + left.firstIndex,
            owesDrain: p.conn.owesDrain,
          },
          this.lastNow,
        );
      } else releaseInbound(p.inbound);
    }
    if (p && !p.confirmed) {
      p.held ??= [];
      p.held.push(event);
      return;
    }
    this.events.push({ type: 'connection', connId, event });
  }

  /**
   * The newest authenticated packet came from a new address: the client moved (NAT
   * rebinding, network change), or someone on the path replayed a fresh packet from
   * elsewhere. Replies follow at once, but only within three times what arrived from
   * there until the client answers a PATH_CHALLENGE at that address; if it does not,
   * the connection goes back (docs/PROTOCOL.md, section 11). Going back to the last
   * validated address needs no check.
   */
  private moved(peer: Peer, from: Address, received: number, now: number): void {
    this.admission.moved(peer.address.address, from.address);
    peer.address = { address: from.address, port: from.port };
    peer.conn.pathChanged(from.address, now);
    if (from.address === peer.validated.address && from.port === peer.validated.port) {
      // Back where the program already knows it to be: nothing to check or announce.
      peer.conn.cancelPathValidation();
      return;
    }
    peer.conn.validatePath(now, this.randomBytes(PATH_DATA_SIZE), received);
  }

  private onPathEvent(connId: number, p: Peer, event: { type: 'path-validated' | 'path-failed' }): void {
    if (event.type === 'path-validated') {
      p.validated = { ...p.address };
      this.events.push({ type: 'address-changed', connId, address: { ...p.address } });
      return;
    }
    // Nobody answered at the new address: back to the one we know.
    this.admission.moved(p.address.address, p.validated.address);
    p.address = { ...p.validated };
    p.conn.pathChanged(p.address.address, this.lastNow);
  }

  /** The client's first DATA packet: returns true when it came from elsewhere and started a move. */
  private confirm(connId: number, peer: Peer, from: Address, received: number, now: number): boolean {
    peer.confirmed = true;
    peer.accept = undefined;
    // Confirmed from another address than the handshake's (the cookie proved that one):
    // a move like any other, validated before it is trusted.
    const moved = from.address !== peer.address.address || from.port !== peer.address.port;
    if (moved) this.moved(peer, from, received, now);
    // The program meets it where it is proven to be; a validated move is announced later.
    this.events.push({ type: 'accepted', connId, address: { ...peer.validated } });
    for (const event of peer.held ?? []) this.events.push({ type: 'connection', connId, event });
    peer.held = undefined;
    return moved;
  }

  private newConnId(): number {
    for (;;) {
      const b = this.randomBytes(4);
      const id = ((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) >>> 0;
      if (id !== 0 && !this.peers.has(id)) return id;
    }
  }

  private reply(bytes: Uint8Array, to: Address): void {
    if (this.outbox.length < MAX_OUTBOX) this.outbox.push({ bytes, to: { address: to.address, port: to.port } });
  }

  /** Forgets a connection that has ended and has nothing left to say. */
  private reap(connId: number): void {
    const p = this.peers.get(connId);
    if (!p?.conn.finished) return;
    this.peers.delete(connId);
    this.admission.finished(p.handshakeKey, p.address.address, this.lastNow);
    this.deadlines.delete(p);
    if (p.confirmed) this.events.push({ type: 'removed', connId });
    else this.counters.handshakesAbandoned++;
  }

  handleTimeout(now: number): void {
    this.lastNow = now;
    this.budget.now = now;
    this.sessions.handleTimeout(now);
    for (const p of this.deadlines.popDue(now)) {
      const id = p.conn.localConnId;
      p.conn.handleTimeout(now);
      this.touch(id);
      this.reap(id);
    }
  }

  pollTransmit(now: number): { bytes: Uint8Array; to: Address } | null {
    this.lastNow = now;
    const out = this.outbox.shift() ?? this.pollConnections(now);
    if (out) {
      this.counters.datagramsSent++;
      this.counters.bytesSent += out.bytes.length;
    }
    return out;
  }

  private pollConnections(now: number): { bytes: Uint8Array; to: Address } | null {
    while (this.dirtyHead < this.dirtyCount) {
      const id = this.dirty[this.dirtyHead]!;
      const p = this.peers.get(id);
      // Not dirty: a stale entry (its connection was reaped; one with the same id came later).
      if (p?.dirty) {
        const bytes = p.conn.pollTransmit(now);
        this.drain(id, p.conn);
        // A paced connection with nothing to send now has a new deadline for when it may.
        this.deadlines.set(p, p.conn.nextDeadline());
        if (bytes) return { bytes, to: p.address };
        p.dirty = false;
      }
      this.dirtyHead++;
      this.reap(id);
    }
    this.dirtyHead = this.dirtyCount = 0;
    return null;
  }

  pollEvent(): ServerEvent | undefined {
    return this.events.shift();
  }

  nextDeadline(): number {
    return Math.min(this.deadlines.peek(), this.sessions.nextDeadline());
  }

  /** Starts a graceful close of one connection, or of all. */
  close(now: number, connId?: number, reason: Reason = 'normal'): void {
    const ids = connId === undefined ? [...this.peers.keys()] : [connId];
    for (const id of ids) {
      this.peers.get(id)?.conn.close(now, reason);
      this.touch(id);
    }
  }
}

/** The budget share of one session: a quarter of the limit over max(16, maxClients), parked sessions as many again. */
export function sessionShare(limit: number, maxClients: number): number {
  return Math.floor(limit / (4 * Math.max(16, maxClients)));
}
