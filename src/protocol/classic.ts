import { equalBytes } from '../crypto/handshake-keys.js';
import type { Reason } from '../wire/constants.js';
import { Deque } from '../reliability/deque.js';
import type { ConnectionEvent, ConnectionState } from './config.js';
import { TimerTable } from './timers.js';
import {
  CLASSIC_CLOSE,
  CLASSIC_CLOSED,
  CLASSIC_CONNECT,
  CLASSIC_CONNECTED,
  CLASSIC_GO_AWAY,
  CLASSIC_MAX_DATAGRAM,
  CLASSIC_PING,
  CLASSIC_PONG,
  encodeClassicHello,
  parseClassicRedirect,
} from '../wire/classic.js';

/**
 * The classic UDPIPE protocol of the original Lua library (docs/PROTOCOL.md, section
 * 14), sans-I/O: every datagram is either one ASCII control word or raw application
 * data. No sequencing, acknowledgement or retransmission of data; the token travels in
 * clear. Kept for existing Lua programs; the modern protocol is what to use otherwise.
 * The datagrams themselves are encoded and parsed in src/wire/classic.ts.
 */

export interface ClassicConfig {
  pingIntervalMs: number;
  stallTimeoutMs: number;
  timeoutMs: number;
  closeTimeoutMs: number;
  maxQueue: number;
  highWaterMark: number;
}

export type ClassicState = 'connecting' | ConnectionState;

export interface ClassicStats {
  protocol: 'classic';
  state: ClassicState;
  datagramsSent: number;
  datagramsReceived: number;
  bytesSent: number;
  bytesReceived: number;
  messagesSent: number;
  messagesReceived: number;
  queueLength: number;
  queuedBytes: number;
  /** Datagrams too large to be classic data, dropped. */
  malformed: number;
}

type Timer = 'ping' | 'stall' | 'idle' | 'connect' | 'retry' | 'close' | 'linger';

/** How often a side repeats CONNECT (client) or CLOSE until answered. */
const RETRY_MS = 250;
/** A closed link still answers a repeated CLOSE for this long. */
const LINGER_MS = 2000;

/**
 * One classic connection, either end, between the client's socket and the server's
 * private socket (SC). The client side sends CONNECT until CONNECTED; both sides PING
 * every pingIntervalMs and answer PING with PONG; no datagram for stallTimeoutMs makes
 * it 'stalled' (sends queue, and go out when anything arrives again), none for
 * timeoutMs ends it ('timeout'). CLOSE is answered with CLOSED.
 */
export class ClassicLink {
  private _state: ClassicState = 'connecting';
  private readonly timers = new TimerTable<Timer>();
  private readonly out = new Deque<Uint8Array>();
  private readonly queue = new Deque<Uint8Array>();
  private queued = 0;
  private readonly events = new Deque<ConnectionEvent>();
  private pingSentAt: number | undefined;
  private owesDrain = false;
  private lastNow: number;
  /** Bytes in `out`, not yet taken by pollTransmit. */
  private outBytes = 0;
  /** The link has ended and its linger is over: its socket may go. */
  finished = false;
  private readonly counters = {
    datagramsSent: 0,
    datagramsReceived: 0,
    bytesSent: 0,
    bytesReceived: 0,
    messagesSent: 0,
    messagesReceived: 0,
    malformed: 0,
  };

  constructor(
    readonly role: 'client' | 'server',
    private readonly cfg: ClassicConfig,
    now: number,
    /** Connect deadline: a server link whose client never says CONNECT ends silently. */
    connectDeadline = now + cfg.timeoutMs,
  ) {
    this.lastNow = now;
    this.timers.set('connect', connectDeadline);
    if (role === 'client') this.sendConnect(now);
  }

  get state(): ClassicState {
    return this._state;
  }

  /** Messages waiting: queued while not connected, or handed over but not yet sent. */
  get queueLength(): number {
    return this.queue.length + this.out.length;
  }

  get queuedBytes(): number {
    return this.queued + this.outBytes;
  }

  /** Client: CONNECT to the private socket, again every RETRY_MS until CONNECTED. */
  private sendConnect(now: number): void {
    this.out.push(CLASSIC_CONNECT);
    this.timers.set('retry', now + RETRY_MS);
  }

  /** A datagram from the peer (the caller checked it came from the peer's address). */
  handleDatagram(bytes: Uint8Array, now: number): void {
    if (this.finished) return;
    this.lastNow = now;
    this.counters.datagramsReceived++;
    this.counters.bytesReceived += bytes.length;
    if (this._state === 'closed') {
      if (equalBytes(bytes, CLASSIC_CLOSE)) this.out.push(CLASSIC_CLOSED);
      return;
    }
    this.timers.set('stall', now + this.cfg.stallTimeoutMs);
    this.timers.set('idle', now + this.cfg.timeoutMs);
    if (this._state === 'stalled') {
      this._state = 'connected';
      this.events.push({ type: 'unstalled' });
      this.flush();
    }
    if (equalBytes(bytes, CLASSIC_CONNECT)) {
      if (this.role === 'server') {
        this.out.push(CLASSIC_CONNECTED); // also for a repeated CONNECT: our answer may have been lost
        if (this._state === 'connecting') this.establish(now);
      }
      return;
    }
    if (equalBytes(bytes, CLASSIC_CONNECTED)) {
      if (this.role === 'client' && this._state === 'connecting') this.establish(now);
      return;
    }
    if (this._state === 'connecting') return; // nothing else counts before the handshake ends
    if (equalBytes(bytes, CLASSIC_PING)) {
      this.out.push(CLASSIC_PONG);
      this.events.push({ type: 'ping' });
    } else if (equalBytes(bytes, CLASSIC_PONG)) {
      if (this.pingSentAt !== undefined) this.events.push({ type: 'pong', rttMs: now - this.pingSentAt });
      this.pingSentAt = undefined;
    } else if (equalBytes(bytes, CLASSIC_CLOSE)) {
      this.out.push(CLASSIC_CLOSED);
      this.end('normal', true, now);
    } else if (equalBytes(bytes, CLASSIC_CLOSED)) {
      if (this._state === 'closing') this.end(this.closeReason, false, now);
    } else if (equalBytes(bytes, CLASSIC_GO_AWAY)) {
      // From the public socket during the handshake only; ignore here.
    } else if (bytes.length > CLASSIC_MAX_DATAGRAM) {
      this.counters.malformed++;
    } else {
      // Also while closing: the peer may still be answering what we sent before CLOSE.
      this.counters.messagesReceived++;
      this.events.push({ type: 'message', data: bytes, reliable: false, channel: 0, sequenced: false });
    }
  }

  private establish(now: number): void {
    this._state = 'connected';
    this.timers.clear('connect');
    this.timers.clear('retry');
    this.timers.set('ping', now + this.cfg.pingIntervalMs);
    this.timers.set('stall', now + this.cfg.stallTimeoutMs);
    this.timers.set('idle', now + this.cfg.timeoutMs);
    this.flush();
  }

  private closeReason: Reason = 'normal';

  private end(reason: Reason, byPeer: boolean, now: number): void {
    const wasOpen = this._state !== 'connecting';
    this._state = 'closed';
    for (const t of ['ping', 'stall', 'idle', 'connect', 'close', 'retry'] as const) this.timers.clear(t);
    if (wasOpen) {
      this.timers.set('linger', now + LINGER_MS);
      this.events.push({ type: 'ended', reason, byPeer });
    } else {
      // Never connected: no CLOSE to answer later, the socket may go at once.
      this.finished = true;
      this.events.push({ type: 'ended', reason: 'timeout', byPeer: false });
    }
  }

  /** Messages never sent, for the next link (a client reconnecting); leaves the queue empty. */
  takeQueued(): Uint8Array[] {
    const all: Uint8Array[] = [];
    for (let m = this.queue.shift(); m; m = this.queue.shift()) all.push(m);
    this.queued = 0;
    return all;
  }

  /** Queues a message: sent now when connected, when the link recovers when stalled. */
  send(data: Uint8Array): boolean {
    if (this._state === 'closed' || this._state === 'closing') return false;
    this.queue.push(data);
    this.queued += data.length;
    if (this._state === 'connected') this.flush();
    const ok = this.queueLength < this.cfg.maxQueue && this.queuedBytes < this.cfg.highWaterMark;
    if (!ok) this.owesDrain = true;
    return ok;
  }

  private flush(): void {
    for (let m = this.queue.shift(); m; m = this.queue.shift()) {
      this.queued -= m.length;
      this.out.push(m);
      this.outBytes += m.length;
      this.counters.messagesSent++;
    }
  }

  ping(now = this.lastNow): void {
    if (this._state !== 'connected' && this._state !== 'stalled') return;
    this.out.push(CLASSIC_PING);
    this.pingSentAt = now;
  }

  close(now: number, reason: Reason = 'normal'): void {
    if (this._state === 'closed' || this._state === 'closing') return;
    if (this._state === 'connecting') {
      this.end(reason, false, now);
      return;
    }
    this.closeReason = reason;
    // What waits (queued during a stall) goes first: the peer may still hear it.
    this.flush();
    this._state = 'closing';
    this.out.push(CLASSIC_CLOSE);
    this.timers.set('close', now + this.cfg.closeTimeoutMs);
    this.timers.set('retry', now + RETRY_MS);
  }

  handleTimeout(now: number): void {
    this.lastNow = now;
    const due = (t: Timer): boolean => {
      if (!this.timers.due(t, now)) return false;
      this.timers.clear(t);
      return true;
    };
    if (due('linger')) this.finished = true;
    if (due('retry')) {
      if (this._state === 'connecting' && this.role === 'client') this.sendConnect(now);
      else if (this._state === 'closing') {
        this.out.push(CLASSIC_CLOSE);
        this.timers.set('retry', now + RETRY_MS);
      }
    }
    if (due('connect') || due('idle')) {
      this.end('timeout', false, now);
      return;
    }
    if (due('close')) {
      this.end(this.closeReason, false, now);
      return;
    }
    if (due('stall') && this._state === 'connected') {
      this._state = 'stalled';
      this.events.push({ type: 'stalled' });
    }
    if (due('ping')) {
      this.ping(now);
      this.timers.set('ping', now + this.cfg.pingIntervalMs);
    }
  }

  pollTransmit(): Uint8Array | undefined {
    const b = this.out.shift();
    if (b) {
      this.outBytes = Math.max(0, this.outBytes - b.length);
      this.counters.datagramsSent++;
      if (this.owesDrain && this.queueLength < this.cfg.maxQueue && this.queuedBytes < this.cfg.highWaterMark) {
        this.owesDrain = false;
        this.events.push({ type: 'drain' });
      }
      this.counters.bytesSent += b.length;
    }
    return b;
  }

  pollEvent(): ConnectionEvent | undefined {
    return this.events.shift();
  }

  nextDeadline(): number {
    return this.finished ? Infinity : this.timers.next();
  }

  stats(): ClassicStats {
    return { protocol: 'classic', state: this._state, ...this.counters, queueLength: this.queue.length, queuedBytes: this.queued };
  }
}

export interface ClassicClientConfig extends ClassicConfig {
  token: string;
  /** First HELLO retransmission; doubles up to reconnect.maxDelayMs. */
  handshakeRetryMs: number;
  reconnect: { enabled: boolean; minDelayMs: number; maxDelayMs: number };
}

export interface Endpoint {
  address: string;
  port: number;
}

export type ClassicClientEvent =
  | { type: 'connecting'; attempt: number; address: Endpoint }
  | { type: 'connected'; attempt: number }
  | { type: 'connection'; event: ConnectionEvent }
  | { type: 'retrying'; delayMs: number; attempt: number }
  | { type: 'failed'; code: 'ERR_HANDSHAKE_TIMEOUT'; message: string }
  | { type: 'closed' };

/**
 * The client side of the classic protocol: `HELLO <token>` to the server's public
 * socket until it answers `CONNECT <ip> <port>`, then a ClassicLink to that private
 * socket, from the same local socket. A link that times out is made again (HELLO
 * first) with backoff, while reconnecting is on; messages not yet sent carry over.
 */
export class ClassicClient {
  private _state: 'idle' | 'handshake' | 'connected' | 'waiting' | 'closed' = 'idle';
  private link: ClassicLink | undefined;
  private sc: Endpoint | undefined;
  private readonly out = new Deque<{ bytes: Uint8Array; to: Endpoint }>();
  private readonly events = new Deque<ClassicClientEvent>();
  private readonly timers = new TimerTable<'hello' | 'deadline' | 'reconnect'>();
  private carry: Uint8Array[] = [];
  private carriedBytes = 0;
  private attempt = 0;
  private retries = 0;
  private closing = false;
  /** Connections lost in a row: the reconnect delay doubles with each. */
  private failures = 0;
  datagramsSent = 0;
  datagramsReceived = 0;
  malformed = 0;

  /** The server's public socket; set before start() (it is resolved after construction). */
  server: Endpoint = { address: '', port: 0 };

  constructor(private readonly cfg: ClassicClientConfig) {}

  get state(): 'idle' | 'handshake' | 'connected' | 'waiting' | 'closed' {
    return this._state;
  }

  /** The link of the current connection, once the server named its private socket. */
  get connection(): ClassicLink | undefined {
    return this.link;
  }

  get queueLength(): number {
    return this.carry.length + (this.link?.queueLength ?? 0);
  }

  get queuedBytes(): number {
    return this.carriedBytes + (this.link?.queuedBytes ?? 0);
  }

  configure(patch: Partial<ClassicClientConfig>): void {
    Object.assign(this.cfg, patch);
  }

  start(now: number, deadline: number): void {
    if (deadline !== Infinity) this.timers.set('deadline', deadline);
    this.hello(now);
  }

  private hello(now: number): void {
    this._state = 'handshake';
    this.attempt++;
    this.retries = 0;
    this.link = undefined;
    this.sc = undefined;
    this.sendHello(now);
  }

  private sendHello(now: number): void {
    this.out.push({ bytes: encodeClassicHello(this.cfg.token), to: this.server });
    const interval = Math.min(this.cfg.handshakeRetryMs * 2 ** Math.min(this.retries++, 30), this.cfg.reconnect.maxDelayMs);
    this.timers.set('hello', now + interval);
  }

  /** PINGs the server now, if connected (the seed's ping()). */
  ping(now?: number): void {
    this.link?.ping(now);
  }

  /** Classic data has no reliability or channels: the other arguments are ignored. */
  send(data: Uint8Array, ..._ignored: unknown[]): boolean {
    // A link that is still connecting queues too, and flushes once CONNECTED arrives.
    if (this.link && this.link.state !== 'closed' && this.link.state !== 'closing') return this.link.send(data);
    this.carry.push(data);
    this.carriedBytes += data.length;
    return this.carry.length < this.cfg.maxQueue && this.carriedBytes < this.cfg.highWaterMark;
  }

  handleDatagram(bytes: Uint8Array, from: Endpoint, now: number): void {
    this.datagramsReceived++;
    if (this.link && this.sc && from.address === this.sc.address && from.port === this.sc.port) {
      this.link.handleDatagram(bytes, now);
      this.afterLink(now);
      return;
    }
    if (from.address !== this.server.address || from.port !== this.server.port) {
      this.malformed++; // not our server, nor its private socket
      return;
    }
    const redirect = parseClassicRedirect(bytes);
    if (redirect && this._state === 'handshake' && !this.link) {
      // 0.0.0.0 or :: means "the address you reached me at".
      const unspecified = redirect.address === '0.0.0.0' || redirect.address === '::';
      this.sc = { address: unspecified ? this.server.address : redirect.address, port: redirect.port };
      this.timers.clear('hello');
      this.link = new ClassicLink('client', this.cfg, now);
      for (const m of this.carry.splice(0)) this.link.send(m);
      this.carriedBytes = 0;
      this.events.push({ type: 'connecting', attempt: this.attempt, address: { ...this.sc } });
      this.afterLink(now);
    } else if (!redirect && !equalBytes(bytes, CLASSIC_GO_AWAY)) {
      this.malformed++;
    }
  }

  private afterLink(now: number): void {
    const link = this.link;
    if (!link) return;
    for (let e = link.pollEvent(); e; e = link.pollEvent()) {
      if (e.type === 'ended') {
        // A link that never connected ends unseen: the program met no connection.
        if (this._state === 'connected') this.events.push({ type: 'connection', event: e });
        this.onLinkEnded(now);
        return;
      }
      this.events.push({ type: 'connection', event: e });
    }
    if (this._state === 'handshake' && link.state === 'connected') {
      this._state = 'connected';
      this.failures = 0;
      this.timers.clear('deadline');
      this.events.push({ type: 'connected', attempt: this.attempt });
    }
  }

  private onLinkEnded(now: number): void {
    const link = this.link!;
    const wasConnected = this._state === 'connected';
    // Drain what the link still has to say (a last CLOSED) before letting it go.
    for (let b = link.pollTransmit(); b; b = link.pollTransmit()) this.out.push({ bytes: b, to: this.sc! });
    this.carry = [...link.takeQueued(), ...this.carry];
    this.carriedBytes = this.carry.reduce((n, m) => n + m.length, 0);
    if (!wasConnected && !this.closing) {
      // The private socket never answered CONNECT: ask the public one again (the first
      // connection is bounded by the connect deadline, not by reconnect).
      this.hello(now);
      return;
    }
    if (this.closing || !this.cfg.reconnect.enabled) {
      this.finish();
      return;
    }
    this._state = 'waiting';
    const delay = Math.min(this.cfg.reconnect.minDelayMs * 2 ** Math.min(this.failures++, 30), this.cfg.reconnect.maxDelayMs);
    this.events.push({ type: 'retrying', delayMs: delay, attempt: this.attempt + 1 });
    this.timers.set('reconnect', now + delay);
  }

  private finish(): void {
    this._state = 'closed';
    this.timers.clearAll();
    this.events.push({ type: 'closed' });
  }

  close(now: number): void {
    if (this.closing && this.link?.state === 'closing') return; // already closing: let it finish
    this.closing = true;
    if (this.link && (this.link.state === 'connected' || this.link.state === 'stalled')) {
      this.link.close(now);
      return;
    }
    if (this._state !== 'closed') {
      this.link?.close(now);
      this.finish();
    }
  }

  handleTimeout(now: number): void {
    if (this.timers.due('deadline', now)) {
      this.timers.clear('deadline');
      if (this._state === 'handshake') {
        this.events.push({
          type: 'failed',
          code: 'ERR_HANDSHAKE_TIMEOUT',
          message: `no answer from the classic server at ${this.server.address}:${this.server.port}`,
        });
        this.closing = true;
        this.link?.close(now);
        this.finish();
        return;
      }
    }
    if (this.timers.due('hello', now) && this._state === 'handshake' && !this.link) this.sendHello(now);
    if (this.timers.due('reconnect', now)) {
      this.timers.clear('reconnect');
      if (this._state === 'waiting') this.hello(now);
    }
    if (this.link) {
      this.link.handleTimeout(now);
      this.afterLink(now);
    }
  }

  pollTransmit(): { bytes: Uint8Array; to: Endpoint } | null {
    const queued = this.out.shift();
    if (queued) {
      this.datagramsSent++;
      return queued;
    }
    const b = this.link?.pollTransmit();
    if (b && this.sc) {
      this.datagramsSent++;
      return { bytes: b, to: this.sc };
    }
    return null;
  }

  pollEvent(): ClassicClientEvent | undefined {
    return this.events.shift();
  }

  nextDeadline(): number {
    return Math.min(this.timers.next(), this.link?.nextDeadline() ?? Infinity);
  }
}
