import {
  clientProof,
  connectionCipher,
  connectionKeys,
  equalBytes,
  refuseProof,
  resumeProof,
  serverProof,
  xorBytes,
  type ConnectionKeys,
} from '../crypto/handshake-keys.js';
import { EphemeralKey } from '../crypto/key-exchange.js';
import { Deque } from '../reliability/deque.js';
import { ReassemblyBudget } from '../reliability/budget.js';
import { splitMessage, type Unit, type WholeMessage } from '../reliability/sender.js';
import { HandshakeFlag, MAX_RELIABLE_WHOLE, NONCE_SIZE, PART_SIZE, PROOF_SIZE, ReasonCode, SESSION_ID_SIZE } from '../wire/constants.js';
import { WireFormatError } from '../wire/errors.js';
import { encodeHandshake, type AcceptPacket, type ChallengePacket, type HandshakePacket } from '../wire/handshake.js';
import { type Datagram, decodeDatagram } from '../wire/packet.js';
import type { ConnectionConfig, ConnectionEvent } from './config.js';
import { Connection, type ConnectionView, newInbound, releaseInbound, type UnreliableOut } from './connection/connection.js';
import { TimerTable } from './timers.js';

export interface ReconnectPolicy {
  enabled: boolean;
  minDelayMs: number;
  maxDelayMs: number;
}

export interface ClientConfig extends ConnectionConfig {
  tokenKey: Uint8Array;
  /** Ask for an encrypted connection (X25519 + ChaCha20-Poly1305); the server must agree. */
  encrypt: boolean;
  /** First handshake retransmission; doubles up to 8x. */
  handshakeRetryMs: number;
  reconnect: ReconnectPolicy;
  /** Tests only: first packet number, to cross the 32-bit wire wraparound. */
  initialPacketNumber?: number;
}

/** The client's life: docs/PROTOCOL.md, "Client states". */
export type ClientState = 'idle' | 'handshake' | 'connected' | 'waiting' | 'closed';

export type ClientEvent =
  /** The server answered this attempt's HELLO: completing the handshake. */
  | { type: 'connecting'; attempt: number }
  | { type: 'connected'; attempt: number }
  | { type: 'connection'; event: ConnectionEvent }
  | { type: 'refused'; reason: 'bad-token' | 'server-full' | 'encryption-mismatch' | 'session-mismatch' }
  /** Waiting before the next attempt. */
  | { type: 'retrying'; delayMs: number; attempt: number }
  /** Gave up for good: state is 'closed'. */
  | { type: 'failed'; code: FailureCode; message: string }
  /** close() finished (or the client could not reconnect). */
  | { type: 'closed' };

type TimerName = 'handshake' | 'deadline' | 'reconnect';

export type FailureCode = 'ERR_HANDSHAKE_TIMEOUT' | 'ERR_BAD_TOKEN' | 'ERR_SERVER_FULL' | 'ERR_ENCRYPTION_MISMATCH';

const NO_PROOF = new Uint8Array(PROOF_SIZE);

/** Longest wait between two handshake datagrams of one attempt. */
const HANDSHAKE_RETRY_CAP_MS = 1000;
/** CONNECT retransmissions before starting over with a fresh HELLO (the cookie may have expired). */
const CONNECT_TRIES = 4;

/**
 * The client side, sans-I/O: the handshake with retransmission, one Connection at a
 * time, and reconnection with exponential backoff and jitter. What the program sends
 * while not connected waits here and goes out, in order, on the next connection;
 * reliable messages the lost connection never saw acknowledged go first.
 */
export class ClientEndpoint {
  private _state: ClientState = 'idle';
  private readonly timers = new TimerTable<TimerName>();
  private readonly events = new Deque<ClientEvent>();
  private conn: Connection | undefined;
  /**
   * Session state (docs/PROTOCOL.md, "Sessions"): reliable messages are numbered across
   * connections, so after a reconnect the server can say how many it already delivered
   * and we resend exactly the rest.
   */
  private sessionId: Uint8Array | undefined;
  /** The session's resumption secret, from the ACCEPT that began it (docs/PROTOCOL.md, section 10). */
  private sessionSecret: Uint8Array | undefined;
  /** The current connection's stateless reset token (section 10a). */
  private resetToken: Uint8Array | undefined;
  /** Reliable messages waiting for a connection; the first has session index carryBase. */
  private carry: Unit[] = [];
  private carryBase = 0;
  /** The same messages whole, for a server that lost the session (it cannot resume units). */
  private carryWhole: WholeMessage[] = [];
  private carryUnreliable: UnreliableOut[] = [];
  /** Session index of the current connection's first reliable message. */
  private sendBase = 0;
  /** The server's reliable stream in this session: what is done, half-built messages. */
  private inbound = newInbound();
  private attempt = 0;
  private failures = 0;
  private everConnected = false;
  /** The server said it was full on the latest attempt: the reason to give if we run out of time. */
  private lastRefusedFull = false;
  private hs:
    | {
        connId: number;
        nonce: Uint8Array;
        /** This attempt's ephemeral X25519 key. */
        key: EphemeralKey;
        challenge?: ChallengePacket | undefined;
        cookies: ChallengePacket[];
        retries: number;
        connectTries: number;
        restarts: number;
        announced: boolean;
      }
    | undefined;
  private out: Uint8Array[] = [];
  /** Handshake and stale datagrams dropped; the connection counts its own. */
  malformed = 0;
  datagramsSent = 0;
  datagramsReceived = 0;

  private readonly budget: ReassemblyBudget;

  /** The server's address as the transport resolved it: sets the path MTU search's ceiling. */
  serverAddress: string | undefined;

  constructor(
    private readonly cfg: ClientConfig,
    private readonly randomBytes: (n: number) => Uint8Array,
  ) {
    this.budget = new ReassemblyBudget(cfg.maxReassemblyBytes);
  }

  get state(): ClientState {
    return this._state;
  }

  /** The current connection, to read; changes go through the client (send, ping, close). */
  get connection(): ConnectionView | undefined {
    return this.conn;
  }

  /** Messages waiting for a connection. */
  get carried(): number {
    return this.carry.length + this.carryUnreliable.length;
  }

  /** Bytes of carried messages, reliable and unreliable (carryWhole repeats them and is not counted). */
  private carriedBytes = 0;

  /** Total bytes queued: carried plus the connection's queue. */
  get queuedBytes(): number {
    return (this.conn?.queuedBytes ?? 0) + this.carriedBytes;
  }

  configure(patch: Partial<ClientConfig>): void {
    // In place: the connection shares this object, so new timeouts reach it too.
    Object.assign(this.cfg, patch);
    this.conn?.retime();
  }

  /** Starts connecting; `deadline` bounds the first connection only (Infinity: none). */
  start(now: number, deadline: number): void {
    if (this._state !== 'idle') throw new Error('ClientEndpoint.start called twice');
    if (deadline !== Infinity) this.timers.set('deadline', deadline);
    this.beginAttempt(now);
  }

  private beginAttempt(now: number): void {
    this._state = 'handshake';
    this.attempt++;
    this.sessionId ??= this.randomBytes(SESSION_ID_SIZE);
    this.hs = { ...this.freshIds(), cookies: [], retries: 0, connectTries: 0, restarts: 0, announced: false };
    this.sendHandshake(now);
  }

  private freshIds(): { connId: number; nonce: Uint8Array; key: EphemeralKey } {
    const b = this.randomBytes(4);
    return {
      connId: ((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) >>> 0 || 1,
      nonce: this.randomBytes(NONCE_SIZE),
      // Encrypted or not: the exchange makes the packet keys and the session's secret.
      key: new EphemeralKey(this.randomBytes(32)),
    };
  }

  private sendHandshake(now: number): void {
    const hs = this.hs!;
    if (hs.challenge && hs.connectTries >= CONNECT_TRIES) {
      // No ACCEPT for several CONNECTs: ask for a fresh cookie. If that fails too, the
      // server may have given up on this very handshake, so start a new one.
      hs.challenge = undefined;
      hs.connectTries = 0;
      if (++hs.restarts >= 2) Object.assign(hs, this.freshIds(), { restarts: 0, cookies: [] });
    }
    if (hs.challenge) {
      hs.connectTries++;
      const t = this.transcript(hs.challenge);
      this.out.push(encodeHandshake({ type: 'connect', ...t, proof: clientProof(this.cfg.tokenKey, t) }));
    } else {
      this.out.push(encodeHandshake({ type: 'hello', clientConnId: hs.connId, clientNonce: hs.nonce }));
    }
    // An attempt goes on until it succeeds or the connect deadline passes (a fresh
    // nonce would only leave the server a half-open connection): retransmissions back
    // off exponentially, but only to HANDSHAKE_RETRY_CAP_MS (a HELLO costs the server
    // nothing, and backing off to the reconnect cap made ten lost datagrams cost 58 s),
    // with jitter so a crowd spreads out.
    const interval = Math.min(
      this.cfg.handshakeRetryMs * 2 ** Math.min(hs.retries, 30),
      HANDSHAKE_RETRY_CAP_MS,
      this.cfg.reconnect.maxDelayMs,
    );
    hs.retries++;
    this.timers.set('handshake', now + interval * (0.75 + 0.5 * this.random()));
  }

  private transcript(challenge: ChallengePacket) {
    const hs = this.hs!;
    const t = {
      clientConnId: hs.connId,
      clientNonce: hs.nonce,
      cookie: challenge.cookie,
      sessionId: this.sessionId!,
      nextSendIndex: this.carryBase,
      delivered: this.inbound.state.delivered,
      flags: this.cfg.encrypt ? HandshakeFlag.Encrypt : 0,
      publicKey: hs.key.publicKey,
    };
    return { ...t, resumeProof: this.sessionSecret ? resumeProof(this.sessionSecret, t) : NO_PROOF };
  }

  /** Uniform in [0, 1) from the injected randomness. */
  private random(): number {
    const b = this.randomBytes(4);
    return (((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) >>> 0) / 2 ** 32;
  }

  /** PINGs the server now, if connected (the seed's ping()). */
  ping(_now?: number): void {
    this.conn?.ping();
  }

  send(data: Uint8Array, reliable: boolean, channel = 0, sequenced = false, unordered = false): boolean {
    if (this.conn && this.conn.state !== 'closed') return this.conn.send(data, reliable, channel, sequenced, unordered);
    if (reliable) {
      for (const u of splitMessage(data, MAX_RELIABLE_WHOLE, PART_SIZE, channel, unordered)) this.carry.push(u);
      this.carryWhole.push({ data, channel, unordered });
    } else {
      if (sequenced) {
        // Only the newest sequenced message of a channel is worth sending once connected.
        const i = this.carryUnreliable.findIndex((m) => m.sequenced && m.channel === channel);
        if (i >= 0) this.carriedBytes -= this.carryUnreliable.splice(i, 1)[0]!.data.length;
      }
      this.carryUnreliable.push({ data, channel, sequenced });
    }
    this.carriedBytes += data.length;
    const ok = this.carried < this.cfg.maxQueue && this.carriedBytes < this.cfg.highWaterMark;
    if (!ok) this.owesDrain = true;
    return ok;
  }

  /** Total queued: carried plus the connection's queue. */
  get queueLength(): number {
    return this.carried + (this.conn?.queueLength ?? 0);
  }

  /** One datagram from the server. It is taken over: messages delivered from it may be views of its bytes, so the caller must not reuse them. */
  handleDatagram(bytes: Uint8Array, now: number): void {
    this.datagramsReceived++;
    this.budget.now = now;
    let d: Datagram;
    try {
      d = decodeDatagram(bytes);
    } catch (e) {
      if (!(e instanceof WireFormatError)) throw e;
      this.malformed++;
      return;
    }
    if (d.type === 'reset') {
      this.onReset(d.token, now);
      return;
    }
    if (d.type === 'data') {
      if (!this.conn || d.connId !== this.conn.localConnId) {
        this.malformed++; // stale (an earlier connection) or forged
        return;
      }
      this.conn.handleDatagram(bytes, d.pnLow, now);
      this.afterConnection(now);
      return;
    }
    this.onHandshake(d, now);
  }

  private onHandshake(d: HandshakePacket, now: number): void {
    const hs = this.hs;
    if (this._state !== 'handshake' || !hs || d.clientConnId !== hs.connId || !equalBytes(d.clientNonce, hs.nonce)) {
      this.malformed++;
      return;
    }
    switch (d.type) {
      case 'challenge':
        // Remember every cookie this attempt used: the server answers a repeated
        // CONNECT with the ACCEPT of the first one it accepted, whichever cookie that had.
        if (!hs.cookies.some((c) => equalBytes(c.cookie, d.cookie))) {
          hs.cookies.push(d);
          if (hs.cookies.length > 4) hs.cookies.shift();
        }
        hs.challenge = d;
        hs.connectTries = 0;
        hs.retries = 0;
        if (!hs.announced) {
          hs.announced = true;
          this.events.push({ type: 'connecting', attempt: this.attempt });
        }
        this.sendHandshake(now);
        return;
      case 'accept': {
        const t = hs.cookies.map((c) => this.transcript(c)).find((x) => equalBytes(serverProof(this.cfg.tokenKey, x, d), d.proof));
        if (!t) {
          this.malformed++; // not a server that knows our token
          return;
        }
        if (((d.flags & HandshakeFlag.Encrypt) !== 0) !== this.cfg.encrypt) {
          // The server should have refused; it accepted with the other setting instead.
          this.mismatch();
          return;
        }
        const shared = hs.key.agree(d.publicKey);
        if (!shared) {
          this.malformed++; // an unusable public key: nothing to build keys from
          return;
        }
        this.onAccepted(d, t, connectionKeys(this.cfg.tokenKey, shared, t, d.serverConnId, hs.key.publicKey, d.publicKey), now);
        return;
      }
      case 'refuse':
        if (d.reason === ReasonCode.BadToken) {
          // Cannot be authenticated (we share no key with a server that has another
          // token); its nonce echo shows it answers our CONNECT. docs/SECURITY.md.
          this.events.push({ type: 'refused', reason: 'bad-token' });
          this.fail('ERR_BAD_TOKEN', 'the server refused our token: client and server must be given the same token (setToken / --token)');
          return;
        }
        if (!hs.cookies.some((c) => equalBytes(refuseProof(this.cfg.tokenKey, this.transcript(c), d.reason), d.proof))) {
          this.malformed++; // a refusal the server did not make: ignore it
          return;
        }
        if (d.reason === ReasonCode.EncryptionMismatch) {
          this.mismatch();
          return;
        }
        if (d.reason === ReasonCode.SessionMismatch) {
          // The server has our session id under another secret: it lost our session
          // and someone else took the id. Start a new session at once (its ACCEPT says
          // resumed = 0, so everything not known delivered goes again, whole).
          this.events.push({ type: 'refused', reason: 'session-mismatch' });
          this.sessionId = undefined;
          this.sessionSecret = undefined;
          this.timers.clear('handshake');
          this.beginAttempt(now);
          return;
        }
        // Server full, or a reason this version does not know: try again later.
        if (d.reason === ReasonCode.ServerFull) {
          this.events.push({ type: 'refused', reason: 'server-full' });
          this.lastRefusedFull = true;
        }
        this.retryLater(now);
        return;
      default:
        this.malformed++; // hello/connect travel to servers only
    }
  }

  /**
   * A stateless reset: the server no longer has our connection (it restarted). Believed
   * only with the token its ACCEPT gave us; then the connection is lost at once, as by a
   * timeout, and we reconnect without waiting it out.
   */
  private onReset(token: Uint8Array, now: number): void {
    const c = this.conn;
    if (!c || c.state === 'closed' || !this.resetToken || !equalBytes(token, this.resetToken)) {
      this.malformed++;
      return;
    }
    c.abort('reset');
    this.afterConnection(now);
  }

  private mismatch(): void {
    this.events.push({ type: 'refused', reason: 'encryption-mismatch' });
    this.fail(
      'ERR_ENCRYPTION_MISMATCH',
      this.cfg.encrypt
        ? 'the server does not encrypt: give it encrypt: true (--encrypt) too, or drop it here'
        : 'the server requires encryption: give this client encrypt: true (--encrypt) too',
    );
  }

  private onAccepted(accept: AcceptPacket, t: { clientConnId: number }, keys: ConnectionKeys, now: number): void {
    const serverConnId = accept.serverConnId;
    if (!accept.resumed) {
      // The server has no session of ours: its stream to us starts over, under the
      // secret this connection's exchange made.
      releaseInbound(this.inbound);
      this.inbound = newInbound();
      this.sessionSecret = keys.resume;
    }
    this.resetToken = xorBytes(accept.resetToken, keys.resetMask);
    this.conn = new Connection({
      localConnId: t.clientConnId,
      remoteConnId: serverConnId,
      cipher: connectionCipher('client', keys, this.cfg.encrypt),
      config: this.cfg,
      now,
      initialPacketNumber: this.cfg.initialPacketNumber,
      ...(this.serverAddress === undefined ? {} : { peerAddress: this.serverAddress }),
      budget: this.budget,
      inbound: this.inbound,
    });
    this.hs = undefined;
    this._state = 'connected';
    this.everConnected = true;
    this.failures = 0;
    this.timers.clear('handshake');
    this.timers.clear('deadline');
    this.events.push({ type: 'connected', attempt: this.attempt });
    if (accept.resumed) {
      // The server already has everything before accept.delivered: skip it.
      const skip = Math.min(Math.max(0, accept.delivered - this.carryBase), this.carry.length);
      this.carry.splice(0, skip);
      this.carryBase += skip;
      for (const u of this.carry.splice(0)) this.conn.sendUnit(u);
    } else {
      // A new session on the server (first connection, or it forgot us): its stream to
      // us starts over, and ours to it too, with every message it may lack, whole.
      this.carry = [];
      for (const m of this.carryWhole) this.conn.send(m.data, true, m.channel, false, m.unordered);
    }
    this.sendBase = this.carryBase;
    this.carryWhole = [];
    for (const m of this.carryUnreliable.splice(0)) this.conn.queueUnreliable(m);
    this.carriedBytes = 0;
    // A send() that returned false while we were away is owed a 'drain': the new
    // connection raises it once below both marks, as the server's does for a resumed session.
    if (this.owesDrain) this.conn.oweDrain();
    // Our first DATA packet confirms the handshake to the server; send one at once.
    this.conn.ping();
  }

  /** Moves to 'waiting' with exponential backoff and jitter, or gives up. */
  private retryLater(now: number): void {
    this.hs = undefined;
    this.timers.clear('handshake');
    if (!this.cfg.reconnect.enabled && this.everConnected) {
      this.finish();
      return;
    }
    const { minDelayMs, maxDelayMs } = this.cfg.reconnect;
    const base = Math.min(maxDelayMs, minDelayMs * 2 ** Math.min(this.failures, 30));
    this.failures++;
    // "Equal jitter": half fixed, half random, so a crowd of clients spreads out.
    const delayMs = base / 2 + (base / 2) * this.random();
    this._state = 'waiting';
    this.timers.set('reconnect', now + delayMs);
    this.events.push({ type: 'retrying', delayMs, attempt: this.attempt });
  }

  private fail(code: FailureCode, message: string): void {
    this.events.push({ type: 'failed', code, message });
    this.finish();
  }

  /**
   * Ends the client, once: a close() while the last connection still drains ends it,
   * and that connection finishing later must not end it again (it said closed twice).
   */
  private finish(): void {
    if (this._state === 'closed') return;
    releaseInbound(this.inbound);
    this.hs = undefined;
    this.timers.clearAll();
    this._state = 'closed';
    this.events.push({ type: 'closed' });
  }

  /** Takes, in order, what the connection raised during the calls made into it. */
  private drainConnection(): void {
    const c = this.conn;
    if (!c) return;
    for (let event = c.pollEvent(); event; event = c.pollEvent()) {
      if (event.type === 'drain') this.owesDrain = false;
      this.events.push({ type: 'connection', event });
    }
  }

  /** Checks the connection after anything touched it (its events first): has it ended? */
  private afterConnection(now: number): void {
    this.drainConnection();
    const c = this.conn;
    if (c?.state !== 'closed') return;
    if (!c.finished) return; // still draining (answering the peer's CLOSE)
    this.conn = undefined;
    // A send() that returned false on this connection still gets its 'drain', from the
    // next connection (found by the fault suite: a reconnect after a disconnect whose
    // queue was all delivered left the program waiting for ever).
    if (c.owesDrain) this.owesDrain = true;
    const left = c.takeUnfinished();
    // concat, not unshift(...): a long queue would overflow the argument limit.
    this.carry = left.reliable.concat(this.carry);
    this.carryWhole = left.whole.concat(this.carryWhole);
    this.carryBase = this.sendBase + left.firstIndex;
    this.carryUnreliable = left.unreliable.concat(this.carryUnreliable);
    for (const u of left.reliable) this.carriedBytes += u.data.length;
    for (const m of left.unreliable) this.carriedBytes += m.data.length;
    if (this.closing || c.reason === 'bad-token') {
      this.finish();
      return;
    }
    // Lost (timeout) or closed by the server: reconnect, as the seed does.
    if (this.cfg.reconnect.enabled) this.retryLater(now);
    else this.finish();
  }

  private closing = false;
  /** send() returned false while there was no connection to raise 'drain' later. */
  private owesDrain = false;

  /** Graceful close: flush, CLOSE/CLOSED, no more reconnects. */
  close(now: number): void {
    if (this._state === 'closed') return;
    this.closing = true;
    if (this.conn && this.conn.state !== 'closed') {
      this.conn.close(now);
      return;
    }
    this.finish();
  }

  handleTimeout(now: number): void {
    this.budget.now = now;
    if (this.timers.due('deadline', now)) {
      if (this.lastRefusedFull)
        this.fail('ERR_SERVER_FULL', 'the server is full (maxClients connected) and stayed full until the connect timeout');
      else
        this.fail('ERR_HANDSHAKE_TIMEOUT', 'no connection before the connect timeout: is the server running, reachable, and on this port?');
      return;
    }
    if (this.timers.due('reconnect', now)) {
      this.timers.clear('reconnect');
      this.beginAttempt(now);
    }
    if (this.timers.due('handshake', now) && this._state === 'handshake') this.sendHandshake(now);
    if (this.conn) {
      this.conn.handleTimeout(now);
      this.afterConnection(now);
    }
  }

  pollTransmit(now: number): Uint8Array | null {
    const hs = this.out.shift();
    const bytes = hs ?? this.conn?.pollTransmit(now) ?? null;
    if (bytes) this.datagramsSent++;
    if (!hs && this.conn) this.afterConnection(now);
    return bytes;
  }

  pollEvent(): ClientEvent | undefined {
    this.drainConnection(); // what send(), ping() or close() made it raise
    return this.events.shift();
  }

  nextDeadline(): number {
    const t = this.timers.next();
    const c = this.conn?.nextDeadline() ?? Infinity;
    return Math.min(t, c);
  }
}
