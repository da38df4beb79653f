import { EventEmitter } from 'node:events';
import { isIP } from 'node:net';
import { networkInterfaces } from 'node:os';
import { deriveResetKey, deriveTokenKey, equalBytes } from '../crypto/handshake-keys.js';
import {
  CLASSIC_MAX_DATAGRAM,
  ClassicClient,
  ClassicLink,
  isClassicControlWord,
  parseClassicHello,
  type ClassicClientEvent,
} from '../protocol/classic.js';
import { ClassicHost } from './classic-host.js';
import { RateLimiter } from '../protocol/rate-limiter.js';
import { UDPipeError } from '../errors.js';
import { ClientEndpoint, type ClientEvent } from '../protocol/client.js';
import type { ConnectionConfig, ConnectionEvent } from '../protocol/config.js';
import { ServerEndpoint, type ServerEvent } from '../protocol/server.js';
import { Driver, type PumpTarget } from '../transport/driver.js';
import { NodeTransport } from '../transport/node-transport.js';
import type { Address, Transport } from '../transport/types.js';
import { MAX_MESSAGE_SIZE } from '../wire/constants.js';
import { describeDatagram } from '../wire/packet.js';
import { checkMs, checkTimings, checkToken, resolveOptions, type ResolvedOptions, type UDPipeOptions } from './options.js';
import { CALLBACK, type DropReason, type EndpointStats, type EventName, type UDPipeEvents } from './events.js';
import { bindError, checkPort, fmt } from './format.js';
import { Peer, type PeerOwner, type PeerStats, type SendOptions } from './peer.js';

/** How send() was asked to deliver a message. */
interface SendHow {
  reliable: boolean;
  channel: number;
  sequenced: boolean;
  unordered: boolean;
}

/** Classic clients that said HELLO but not yet CONNECT, at most (each holds a socket). */
const MAX_CLASSIC_PENDING = 64;

/** A send() past this many times maxQueue throws instead of growing without bound. */
const HARD_QUEUE_FACTOR = 8;

export interface UDPipe {
  on<K extends EventName>(event: K, listener: (this: UDPipe, ...args: UDPipeEvents[K]) => void): this;
  once<K extends EventName>(event: K, listener: (this: UDPipe, ...args: UDPipeEvents[K]) => void): this;
  off<K extends EventName>(event: K, listener: (this: UDPipe, ...args: UDPipeEvents[K]) => void): this;
  emit<K extends EventName>(event: K, ...args: UDPipeEvents[K]): boolean;
}

/**
 * A UDP server (start) or client (connect) with the Lua UDPIPE's API: twelve
 * overridable callbacks, each also an event, plus reliable ordered messages,
 * stall queueing and reconnects. See README.md for the API table.
 */
// biome-ignore lint/suspicious/noUnsafeDeclarationMerging: the interface above only types the inherited EventEmitter methods for UDPipe's events; it declares nothing the class lacks.
export class UDPipe extends EventEmitter implements PeerOwner {
  private opts: ResolvedOptions;
  private readonly connCfg: ConnectionConfig;
  private role: 'none' | 'server' | 'client' = 'none';
  private driver: Driver | undefined;
  private server: ServerEndpoint | undefined;
  /** Client: the modern endpoint, or the classic one with `protocol: 'classic'` (same surface). */
  private client: ClientEndpoint | ClassicClient | undefined;
  private readonly peers = new Map<number, Peer>();
  /** Server: the classic (Lua UDPIPE) clients and their private sockets. */
  private classic: ClassicHost | undefined;
  private readonly classicPeers = new Map<ClassicLink, Peer>();
  /** Classic peers the program knows (until their connection ends), and their links. */
  private readonly classicByPeer = new Map<Peer, ClassicLink>();
  /** Key of the token classic clients must send (classicToken, else token). */
  private classicTokenKey: Uint8Array = new Uint8Array(0);
  /** Ids of classic peers start above the 32-bit connection ids, so they never collide. */
  private nextClassicId = 2 ** 32;
  private bindHostValue: string | undefined;
  /** Classic HELLOs answered per second, all addresses together (see onClassicHello). */
  private classicLimiter = new RateLimiter(0, 0);
  /** onBadToken for classic HELLOs, per second (they may be forged). */
  private classicNoticeLimiter = new RateLimiter(0, 0);
  /** Addresses already warned about an encryption mismatch. */
  private readonly warnedMismatch = new Set<string>();
  private serverPeer: Peer | undefined;
  private serverAddr: Address | undefined;
  private closed = false;
  /** Messages not queued (the 'dropped' event), all peers together. */
  private sendDropped = 0;
  private queuedCache = { at: -1, bytes: 0 };
  private connectWaiter: { resolve: (p: Peer) => void; reject: (e: Error) => void } | undefined;
  private readonly closeWaiters: { connId: number | undefined; resolve: () => void }[] = [];

  constructor(options?: UDPipeOptions) {
    super();
    this.opts = resolveOptions(options);
    const o = this.opts;
    // One object shared with every connection, so setTimeout() reaches current ones too.
    this.connCfg = {
      pingIntervalMs: o.pingIntervalMs,
      stallTimeoutMs: o.stallTimeoutMs,
      timeoutMs: o.timeoutMs,
      maxQueue: o.maxQueue,
      highWaterMark: o.highWaterMark,
      maxReassemblyBytes: o.maxReassemblyBytes,
      maxAckDelayMs: 10,
      initialRttMs: 100,
      closeTimeoutMs: Math.min(5000, o.timeoutMs),
      maxMessageSize: o.maxMessageSize,
      maxDatagramSize: o.maxDatagramSize,
    };
  }

  // ---- the twelve callbacks of the seed: override or assign ----------------------
  onNewClient(_msg: string, _ip: string, _port: number, _ipc: string, _portc: number, _peer: Peer): void {}
  onNewMessage(_msg: Buffer, _sock: Peer, _info: UDPipeEvents['newMessage'][2]): void {}
  onDisconnect(_sock: Peer): void {}
  onConnect(_sock: Peer, _ip: string, _port: number): void {}
  onClose(_sock: Peer, _reason: string): void {}
  onConnecting(_sock: Peer, _ip: string, _port: number): void {}
  onStalled(_sock: Peer): void {}
  onUnstalled(_sock: Peer): void {}
  onMaxClients(_msg: string, _ip: string, _port: number): void {}
  onPong(_sock: Peer, _rttMs: number): void {}
  onPing(_sock: Peer): void {}
  onBadToken(_msg: string, _ip: string, _port: number): void {}

  // ---- settings ------------------------------------------------------------------

  /** Disconnect timeout in seconds (the seed's unit), for current and new connections. */
  setTimeout(t: number): void {
    const ms = checkMs('setTimeout(t): t in seconds', typeof t === 'number' ? t * 1000 : t, 30);
    const c = this.connCfg;
    const stall = c.stallTimeoutMs < ms ? c.stallTimeoutMs : ms / 2;
    const ping = c.pingIntervalMs < stall ? c.pingIntervalMs : stall / 3;
    checkTimings({ pingIntervalMs: ping, stallTimeoutMs: stall, timeoutMs: ms });
    const patch = { timeoutMs: ms, stallTimeoutMs: stall, pingIntervalMs: ping, closeTimeoutMs: Math.min(5000, ms) };
    Object.assign(c, patch);
    this.server?.configure(patch);
    this.client?.configure(patch);
    this.opts.timeoutMs = ms;
    this.driver?.kick(); // re-arm the timer for the new deadlines
  }

  setDebug(d: boolean): void {
    if (typeof d !== 'boolean') throw new UDPipeError('ERR_INVALID_ARGUMENT', `setDebug(d) takes true or false, got ${String(d)}`);
    this.opts.debug = d;
  }

  /** The shared token: must match on both sides. Applies to handshakes from now on. */
  setToken(t: string): void {
    this.opts.token = checkToken(t);
    const tokenKey = deriveTokenKey(t);
    this.server?.configure({ tokenKey });
    this.client?.configure({ tokenKey, token: this.opts.token });
    if (this.opts.classicToken === undefined) this.classicTokenKey = tokenKey;
  }

  private log(line: string): void {
    if (this.opts.debug) this.opts.logger.debug(`${this.role === 'server' ? 'server' : 'client'} ${line}`);
  }

  // ---- starting --------------------------------------------------------------------

  private claim(role: 'server' | 'client'): Transport {
    if (this.closed) throw new UDPipeError('ERR_CLOSED', 'this UDPipe was closed; create a new one');
    if (this.role !== 'none') {
      throw new UDPipeError('ERR_ALREADY_STARTED', `this UDPipe is already a ${this.role}; create another UDPipe for another ${role}`);
    }
    this.role = role;
    return this.opts.transport ?? new NodeTransport();
  }

  /**
   * Server: binds host:port (all interfaces when host is omitted; IPv4 and IPv6) and
   * resolves with the bound address once listening. `timeout` (seconds) sets the
   * disconnect timeout, as setTimeout does.
   */
  async start(port: number, host?: string, timeout?: number): Promise<Address> {
    checkPort(port, true);
    if (host !== undefined && (typeof host !== 'string' || host === ''))
      throw new UDPipeError('ERR_INVALID_ARGUMENT', `host must be a non-empty string, got ${String(host)}`);
    if (timeout !== undefined) this.setTimeout(timeout);
    const transport = this.claim('server');
    const server = new ServerEndpoint(
      {
        ...this.connCfg,
        tokenKey: deriveTokenKey(this.opts.token),
        maxClients: this.opts.maxClients,
        maxClientsPerAddress: this.opts.maxClientsPerAddress,
        sessionLingerMs: this.opts.sessionLingerMs,
        encrypt: this.opts.encrypt,
        handshakesPerSecond: this.opts.handshakesPerSecond,
        resetKey: this.opts.resetSecret === undefined ? undefined : deriveResetKey(this.opts.resetSecret, port),
        resetPort: port,
      },
      (n) => transport.randomBytes(n),
      transport.now(),
    );
    this.server = server;
    const driver = new Driver(transport, this.serverTarget(server), this.opts.autoStep);
    this.driver = driver;
    if (this.opts.classic) {
      this.classic = new ClassicHost(this.classicOwner(transport));
      this.classicTokenKey = deriveTokenKey(this.opts.classicToken ?? this.opts.token);
      this.classicLimiter = new RateLimiter(this.opts.handshakesPerSecond, 2 * this.opts.handshakesPerSecond);
      this.classicNoticeLimiter = new RateLimiter(this.opts.handshakesPerSecond, 2 * this.opts.handshakesPerSecond);
    }
    let address: string | undefined;
    try {
      address = host === undefined ? undefined : await transport.resolve(host);
      this.bindHostValue = address;
      const local = await driver.bind(port, address);
      this.log(`listening on ${fmt(local)}`);
      return local;
    } catch (err) {
      this.role = 'none';
      this.server = undefined;
      this.driver = undefined;
      this.classic = undefined;
      throw bindError(err, port, host);
    }
  }

  /**
   * Client: connects to host:port. Resolves with the server's Peer on the first
   * connection; rejects with ERR_BAD_TOKEN, or when `timeout` seconds (default
   * connectTimeoutMs) pass first with ERR_SERVER_FULL (the server kept refusing for lack
   * of room) or ERR_HANDSHAKE_TIMEOUT. Afterwards, a lost connection is
   * re-established by itself (with backoff) until close().
   */
  async connect(host: string, port: number, timeout?: number): Promise<Peer> {
    if (typeof host !== 'string' || host === '')
      throw new UDPipeError('ERR_INVALID_ARGUMENT', `host must be a non-empty string, got ${String(host)}`);
    checkPort(port, false);
    const timeoutMs =
      timeout === undefined
        ? this.opts.connectTimeoutMs
        : checkMs('connect(host, port, timeout): timeout in seconds', typeof timeout === 'number' ? timeout * 1000 : timeout, 1);
    const transport = this.claim('client');
    // Endpoint and driver exist at once, so send() right after connect() queues.
    const classic = this.opts.protocol === 'classic';
    const client = classic
      ? new ClassicClient({ ...this.connCfg, token: this.opts.token, handshakeRetryMs: 1000, reconnect: this.opts.reconnect })
      : new ClientEndpoint(
          {
            ...this.connCfg,
            tokenKey: deriveTokenKey(this.opts.token),
            encrypt: this.opts.encrypt,
            handshakeRetryMs: 250,
            reconnect: this.opts.reconnect,
          },
          (n) => transport.randomBytes(n),
        );
    this.client = client;
    const driver = new Driver(transport, this.clientTarget(client), this.opts.autoStep);
    this.driver = driver;
    const connected = new Promise<Peer>((resolve, reject) => {
      this.connectWaiter = { resolve, reject };
    });
    // Rejections reach the caller through the returned promise; this only stops Node
    // from calling one unhandled when close() wins the race before we return it.
    connected.catch(() => {});
    try {
      let serverIp: string;
      try {
        serverIp = await transport.resolve(host);
      } catch (err) {
        throw new UDPipeError('ERR_RESOLVE', `cannot resolve '${host}': ${(err as Error).message}`, { cause: err });
      }
      this.serverAddr = { address: serverIp, port };
      if (client instanceof ClassicClient) client.server = { address: serverIp, port };
      else client.serverAddress = serverIp;
      try {
        await driver.bind(0, isIP(serverIp) === 6 ? '::' : '0.0.0.0');
        // One peer for the life of this client: a connected socket sends more cheaply.
        // (Not classic: it also talks to the server's private socket.)
        if (!classic) await driver.connect(this.serverAddr);
      } catch (err) {
        throw (err as { code?: string }).code === 'ERR_CLOSED'
          ? new UDPipeError('ERR_CLOSED', 'close() was called before the connection was made')
          : bindError(err, 0, undefined);
      }
    } catch (err) {
      this.connectWaiter = undefined;
      driver.stop();
      this.closed = true;
      throw err;
    }
    if (client.state === 'closed') throw new UDPipeError('ERR_CLOSED', 'close() was called before the connection was made');
    this.log(`connecting to ${fmt(this.serverAddr)}`);
    client.start(transport.now(), transport.now() + timeoutMs);
    driver.pump();
    return connected;
  }

  // ---- sending ---------------------------------------------------------------------

  private encode(msg: string | Uint8Array): Uint8Array {
    let bytes: Uint8Array;
    if (typeof msg === 'string') bytes = Buffer.from(msg, 'utf8');
    else if (msg instanceof Uint8Array)
      bytes = new Uint8Array(msg); // copy: the caller may reuse its buffer
    else
      throw new UDPipeError(
        'ERR_INVALID_ARGUMENT',
        `a message must be a string, Buffer or Uint8Array, got ${msg === null ? 'null' : typeof msg}`,
      );
    if (bytes.length > this.connCfg.maxMessageSize) {
      throw new UDPipeError(
        'ERR_MESSAGE_TOO_LARGE',
        `message of ${bytes.length} bytes exceeds maxMessageSize (${this.connCfg.maxMessageSize}); raise the option on both sides or split it`,
      );
    }
    return bytes;
  }

  private deliveryOf(opts: SendOptions | undefined, size: number): SendHow {
    if (opts === undefined) return { reliable: true, channel: 0, sequenced: false, unordered: false };
    const bad = (m: string): never => {
      throw new UDPipeError('ERR_INVALID_ARGUMENT', m);
    };
    if (typeof opts !== 'object' || opts === null)
      bad('send options must be an object like { reliable: false } or { delivery: "unreliable-sequenced", channel: 2 }');
    if (opts.reliable !== undefined && typeof opts.reliable !== 'boolean') bad('opts.reliable must be true or false');
    const delivery = opts.delivery ?? (opts.reliable === false ? 'unreliable' : 'reliable');
    if (delivery !== 'reliable' && delivery !== 'reliable-unordered' && delivery !== 'unreliable' && delivery !== 'unreliable-sequenced') {
      bad(`opts.delivery must be 'reliable', 'reliable-unordered', 'unreliable' or 'unreliable-sequenced', got ${String(delivery)}`);
    }
    const reliable = delivery === 'reliable' || delivery === 'reliable-unordered';
    if (opts.reliable !== undefined && opts.reliable !== reliable)
      bad(`opts.reliable: ${opts.reliable} contradicts opts.delivery: '${delivery}'; give one of them`);
    const channel = opts.channel ?? 0;
    if (!Number.isInteger(channel) || channel < 0 || channel > 255)
      bad(`opts.channel must be an integer from 0 to 255, got ${String(channel)}`);
    if (delivery === 'unreliable-sequenced' && size > MAX_MESSAGE_SIZE) {
      throw new UDPipeError(
        'ERR_MESSAGE_TOO_LARGE',
        `an unreliable-sequenced message travels in one packet: at most ${MAX_MESSAGE_SIZE} bytes, got ${size}`,
      );
    }
    return { reliable, channel, sequenced: delivery === 'unreliable-sequenced', unordered: delivery === 'reliable-unordered' };
  }

  /** Past HARD_QUEUE_FACTOR times either limit a peer takes nothing more (docs/SECURITY.md). */
  private overHardLimit(length: number, bytes: number): boolean {
    return length >= this.connCfg.maxQueue * HARD_QUEUE_FACTOR || bytes >= this.connCfg.highWaterMark * HARD_QUEUE_FACTOR;
  }

  /**
   * A message not queued for `sock`: counted, logged, and told to the program. What a
   * peer does (not acknowledging, closing) never makes send() throw: the program learns
   * from false and this event, and the process goes on.
   */
  private drop(sock: Peer, bytes: Uint8Array, reason: DropReason): false {
    sock.sendDropped++;
    this.sendDropped++;
    this.log(`not queued for ${sock} (${reason}): ${bytes.length} bytes`);
    this.fire('dropped', sock, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), reason);
    return false;
  }

  /**
   * Bytes queued for every peer of the server together, for maxQueuedBytes. Summed at
   * most once per clock tick (sends within one tick add what they queue), so a burst of
   * sends to many peers costs one pass.
   */
  private queuedTotal(): number {
    const now = this.driver?.now() ?? 0;
    if (this.queuedCache.at !== now) {
      let n = 0;
      for (const id of this.server?.connIds() ?? []) n += this.server!.connection(id)!.queuedBytes;
      for (const link of this.classicByPeer.values()) n += link.queuedBytes;
      this.queuedCache = { at: now, bytes: n };
    }
    return this.queuedCache.bytes;
  }

  /**
   * Sends a message: to `sock` on a server, to the server on a client. Reliable and
   * ordered unless { reliable: false }. While stalled or reconnecting it queues.
   * Returns false once maxQueue messages or highWaterMark bytes wait; 'drain' follows.
   * A message that cannot be queued at all (the peer is 8x past those limits, the
   * server's maxQueuedBytes is used up, or the peer is closing) is not sent: false, and
   * a 'dropped' event. Throws only for the program's own mistakes (a bad message or
   * option, no start()/connect(), after close()).
   */
  send(msg: string | Uint8Array, sock?: Peer, opts?: SendOptions): boolean {
    const bytes = this.encode(msg);
    const how = this.deliveryOf(opts, bytes.length);
    if (this.role === 'client' && this.client) {
      if (this.client.state === 'closed')
        throw new UDPipeError('ERR_CLOSED', 'this client is closed; create a new UDPipe to connect again');
      if (this.client instanceof ClassicClient) this.checkClassicMessage(bytes, 'the server');
      if (this.overHardLimit(this.client.queueLength, this.client.queuedBytes)) {
        return this.drop(this.serverPeer ?? new Peer(this, 0, this.serverAddr ?? { address: '', port: 0 }), bytes, 'queue-full');
      }
      const ok = this.client.send(bytes, how.reliable, how.channel, how.sequenced, how.unordered);
      this.driver?.kick();
      return ok;
    }
    if (this.role === 'server' && this.server) {
      if (!(sock instanceof Peer))
        throw new UDPipeError(
          'ERR_INVALID_ARGUMENT',
          'a server sends to one client: pass its peer (the sock argument of a callback), or use sendAll()',
        );
      if (sock.protocol === 'classic') this.checkClassicMessage(bytes, `peer ${sock}`);
      return this.sendToPeer(sock, bytes, how);
    }
    throw new UDPipeError(this.closed ? 'ERR_CLOSED' : 'ERR_NOT_CONNECTED', 'call start() (server) or connect() (client) before send()');
  }

  /** Server: queues for one peer (modern or classic) what its limits allow; the message is checked already. */
  private sendToPeer(sock: Peer, bytes: Uint8Array, how: SendHow): boolean {
    const link = sock.protocol === 'classic' ? this.classicLink(sock) : this.server!.connection(sock.id);
    if (!link || link.state === 'closed' || link.state === 'closing') return this.drop(sock, bytes, 'closing');
    if (this.overHardLimit(link.queueLength, link.queuedBytes) || this.queuedTotal() + bytes.length > this.opts.maxQueuedBytes) {
      return this.drop(sock, bytes, 'queue-full');
    }
    this.queuedCache.bytes += bytes.length;
    let ok: boolean;
    if (link instanceof ClassicLink) {
      ok = link.send(bytes);
      this.classic!.kick(link);
    } else {
      ok = this.server!.send(sock.id, bytes, how.reliable, how.channel, how.sequenced, how.unordered);
    }
    this.driver?.kick();
    return ok;
  }

  /**
   * Server: sends to every connected client, each on its own: a client that cannot take
   * the message (its queue is full, it is closing, or it is a classic client and the
   * message is too large for the classic protocol or a control word) is skipped, with
   * a 'dropped' event naming it; the others get it. Returns false if any client was
   * skipped or is past maxQueue/highWaterMark.
   */
  sendAll(msg: string | Uint8Array, opts?: SendOptions): boolean {
    if (this.role !== 'server' || !this.server)
      throw new UDPipeError('ERR_WRONG_ROLE', 'sendAll() is for servers; a client sends to its server with send()');
    const bytes = this.encode(msg);
    const how = this.deliveryOf(opts, bytes.length);
    const classicOk = bytes.length <= CLASSIC_MAX_DATAGRAM && !isClassicControlWord(bytes);
    let ok = true;
    for (const p of [...this.peers.values()]) {
      if (p.state !== 'connected' && p.state !== 'stalled') continue;
      if (p.protocol === 'classic' && !classicOk) ok = this.drop(p, bytes, 'classic');
      else ok = this.sendToPeer(p, bytes, how) && ok;
    }
    return ok;
  }

  /** Pings now: client to server; server to `sock`, or to every client. */
  ping(sock?: Peer): void {
    if (this.role === 'client') {
      this.client?.ping(this.driver?.now());
    } else if (this.role === 'server' && this.server) {
      if (!sock) this.server.ping();
      else if (sock.protocol !== 'classic') this.server.ping(sock.id);
      for (const [peer, link] of this.classicByPeer) {
        if (sock && sock !== peer) continue;
        link.ping(this.driver!.now());
        this.classic?.kick(link);
      }
    } else {
      throw new UDPipeError('ERR_NOT_CONNECTED', 'call start() or connect() before ping()');
    }
    this.driver?.kick();
  }

  /**
   * Handles what arrived, runs due timers and delivers events now. With autoStep off
   * this is the only place anything happens (call it every tick of your loop); with
   * autoStep on it is harmless. `dt` is accepted for the seed's signature; time comes
   * from the clock.
   */
  step(_dt?: number): void {
    this.driver?.step();
    this.classic?.step();
  }

  /**
   * Client: graceful close (queued messages are flushed first), no more reconnects.
   * Server: closes one client, or with no argument every client and then the socket.
   * Resolves when done.
   */
  close(sock?: Peer): Promise<void> {
    const driver = this.driver;
    if (this.role === 'none' || !driver) {
      this.closed = true;
      return Promise.resolve();
    }
    const now = driver.now();
    if (this.role === 'client') {
      const client = this.client!;
      this.closed = true;
      if (client.state === 'closed') return Promise.resolve();
      const done = new Promise<void>((resolve) => this.closeWaiters.push({ connId: undefined, resolve }));
      client.close(now);
      driver.pump(true);
      return done;
    }
    const server = this.server!;
    if (sock !== undefined) {
      if (!(sock instanceof Peer)) throw new UDPipeError('ERR_INVALID_ARGUMENT', 'close(sock) takes a peer from a callback');
      if (!this.peers.has(sock.id)) return Promise.resolve();
      const done = new Promise<void>((resolve) => this.closeWaiters.push({ connId: sock.id, resolve }));
      const link = sock.protocol === 'classic' ? this.classicLink(sock) : undefined;
      if (link) {
        link.close(now);
        this.classic!.pump(link);
        return done;
      }
      server.close(now, sock.id);
      driver.pump(true);
      return done;
    }
    this.closed = true;
    const done = new Promise<void>((resolve) => this.closeWaiters.push({ connId: undefined, resolve }));
    server.close(now, undefined, 'shutdown');
    server.configure({ maxClients: 0 });
    this.classic?.dropPending();
    for (const link of [...this.classicByPeer.values()]) {
      link.close(now, 'shutdown');
      this.classic!.pump(link);
    }
    driver.pump(true);
    this.maybeFinishServer();
    return done;
  }

  private maybeFinishServer(): void {
    // Wait for every connection, including ones whose client has not confirmed the
    // handshake yet (the program never saw those): each must get its CLOSE first.
    if (!this.closed || this.role !== 'server' || this.peers.size > 0 || (this.server?.openConnections() ?? 0) > 0) return;
    this.classic?.stopAll(); // private sockets still lingering for a repeated CLOSE
    this.classicPeers.clear();
    this.driver?.stop();
    this.log('closed');
    for (const w of this.closeWaiters.splice(0)) w.resolve();
  }

  // ---- counters --------------------------------------------------------------------

  /** Datagrams sent, as in the seed. */
  getSentPackets(): number {
    return (this.server?.counters.datagramsSent ?? this.client?.datagramsSent ?? 0) + (this.classic?.datagramsSent ?? 0);
  }

  /** Datagrams received, as in the seed. */
  getReceivedPackets(): number {
    return (this.server?.counters.datagramsReceived ?? this.client?.datagramsReceived ?? 0) + (this.classic?.datagramsReceived ?? 0);
  }

  /** Statistics of one peer (see PeerStats), or of the whole endpoint. */
  stats(sock: Peer): PeerStats;
  stats(): EndpointStats;
  stats(sock?: Peer): PeerStats | EndpointStats {
    if (sock) return sock.stats();
    if (this.server) {
      const b = this.server.budget;
      return {
        role: 'server',
        connections: this.peers.size,
        ...this.server.counters,
        droppedUnstepped: this.driver?.overflowed ?? 0,
        sendDropped: this.sendDropped,
        queued: { bytes: this.queuedTotal(), limit: this.opts.maxQueuedBytes },
        reassembly: { bytes: b.used, peak: b.peak, limit: b.limit, refused: b.refused, evictedSessions: this.server.evictedSessions },
      };
    }
    if (this.client) {
      return {
        role: 'client',
        state: this.client.state,
        datagramsSent: this.client.datagramsSent,
        datagramsReceived: this.client.datagramsReceived,
        malformed: this.client.malformed,
        queued: this.client.queueLength,
        connection: this.serverPeer?.stats(),
      };
    }
    return { role: 'none' };
  }

  /** The server's peers that are connected now. */
  get clients(): Peer[] {
    return [...this.peers.values()];
  }

  /** Local address once started or connecting. */
  get address(): Address | undefined {
    return this.driver?.local;
  }

  toJSON(): Record<string, unknown> {
    return { role: this.role, address: this.address, peers: this.clients.map((p) => p.toJSON()) };
  }

  // ---- events from the endpoints -------------------------------------------------

  private fire<K extends EventName>(name: K, ...args: UDPipeEvents[K]): void {
    const cbName = CALLBACK[name];
    const cb = cbName ? (this as unknown as Record<string, (...a: unknown[]) => void>)[cbName] : undefined;
    try {
      cb?.apply(this, args);
      if (name === 'error' && this.listenerCount('error') === 0) {
        this.opts.logger.warn((args[0] as Error).message);
        return;
      }
      this.emit(name, ...args);
    } catch (err) {
      // The program's callback threw. Keep our state whole, and let the error surface
      // as it would from any event handler.
      queueMicrotask(() => {
        throw err;
      });
    }
  }

  private traceFn(): PumpTarget['trace'] {
    return (dir, bytes, peer) => {
      if (!this.opts.debug) return;
      // Classic datagrams are text (or raw data): show them as such.
      const what =
        (bytes[0]! & 0xf0) === 0xc0
          ? describeDatagram(bytes, this.opts.encrypt)
          : `classic ${JSON.stringify(Buffer.from(bytes.subarray(0, 48)).toString('latin1'))}${bytes.length > 48 ? '...' : ''} ${bytes.length}B`;
      this.log(`${dir === 'in' ? '<-' : '->'} ${fmt(peer)} ${what}`);
    };
  }

  private socketError(err: Error): void {
    // ICMP port unreachable and friends: a hint, never fatal (the timeouts decide).
    this.log(`socket error: ${err.message}`);
  }

  // ---- classic (Lua UDPIPE) clients ---------------------------------------------------

  private onClassicHello(bytes: Uint8Array, from: Address): void {
    if (this.closed) return; // shutting down: no new clients of either kind
    const msg = Buffer.from(bytes).toString('latin1');
    // Compared as MACs of fixed length: constant time whatever the lengths.
    if (!equalBytes(deriveTokenKey(bytes.subarray(6)), this.classicTokenKey)) {
      // No reply, as for a modern client whose proof fails. The callback is rate limited:
      // unlike a modern one, this HELLO proves no address, so it may come from a flood.
      if (this.classicNoticeLimiter.take('bad-token', this.driver!.now())) {
        this.log(`classic client ${fmt(from)}: bad token`);
        this.fire('badToken', msg, from.address, from.port);
      }
      return;
    }
    const host = this.classic!;
    if (!host.has(from)) {
      if (!this.classicRoom(from.address)) {
        this.log(`refused classic client ${fmt(from)}: no room (maxClients ${this.opts.maxClients})`);
        this.fire('maxClients', msg, from.address, from.port);
        return;
      }
      if (host.pending >= MAX_CLASSIC_PENDING) {
        this.log(`classic HELLO from ${fmt(from)} dropped: ${MAX_CLASSIC_PENDING} classic handshakes pending`);
        return;
      }
    }
    // A classic HELLO proves no address (its source may be forged), yet it opens a socket
    // and its reply is larger than a short HELLO: a few pending at a time, and replies at
    // a bounded rate, so forged ones neither crowd out real clients nor make a reflector.
    if (!this.classicLimiter.take('classic', this.driver!.now())) {
      this.log(`classic HELLO from ${fmt(from)} dropped: over handshakesPerSecond`);
      return;
    }
    host.hello(bytes, from);
    this.updateReserve();
  }

  /**
   * Room for one more classic client from `address`: connected modern and classic
   * clients share maxClients (and maxClientsPerAddress). Pending classic handshakes do
   * not count: a HELLO proves no address, so forged ones must not take modern clients'
   * room (they have their own cap, MAX_CLASSIC_PENDING).
   */
  private classicRoom(address: string): boolean {
    const total = (this.server?.openConnections() ?? 0) + this.classicByPeer.size;
    let fromAddress = this.server?.connectionsFrom(address) ?? 0;
    for (const p of this.classicByPeer.keys()) if (p.address === address) fromAddress++;
    return total < this.opts.maxClients && fromAddress < this.opts.maxClientsPerAddress;
  }

  /** Tells the modern endpoint how much room connected classic clients take (pending ones take none). */
  private updateReserve(): void {
    if (!this.classic || !this.server) return;
    const perAddress = new Map<string, number>();
    for (const p of this.classicByPeer.keys()) perAddress.set(p.address, (perAddress.get(p.address) ?? 0) + 1);
    this.server.reserve(this.classicByPeer.size, perAddress);
  }

  private classicOwner(transport: Transport): ConstructorParameters<typeof ClassicHost>[0] {
    return {
      transport,
      autoStep: () => this.opts.autoStep,
      config: () => this.connCfg, // shared: setTimeout() reaches classic links too
      bindHost: () => this.bindHostValue,
      advertisedAddress: (sc, client) => this.advertise(sc, client),
      sendPublic: (bytes, to) => this.driver?.sendRaw(bytes, to),
      accepted: (link, client, sc, hello) => {
        // Room is checked again: modern clients may have taken it since the HELLO.
        if (this.closed || !this.classicRoom(client.address)) {
          if (!this.closed) this.fire('maxClients', Buffer.from(hello).toString('latin1'), client.address, client.port);
          this.updateReserve();
          return false;
        }
        const peer = new Peer(this, this.nextClassicId++, client, link, 'classic');
        this.peers.set(peer.id, peer);
        this.classicPeers.set(link, peer);
        this.classicByPeer.set(peer, link);
        this.updateReserve();
        this.log(`new classic client ${peer} on private port ${sc.port}`);
        this.fire(
          'newClient',
          Buffer.from(hello).toString('latin1'),
          this.advertise(sc, client),
          sc.port,
          client.address,
          client.port,
          peer,
        );
        this.fire('connect', peer, client.address, client.port);
        return true;
      },
      event: (link, e) => {
        const peer = this.classicPeers.get(link);
        if (!peer) return;
        this.onConnectionEvent(peer, e);
        if (e.type === 'ended') {
          this.classicByPeer.delete(peer);
          this.updateReserve();
          if (this.closed) this.maybeFinishServer();
        }
      },
      released: (link) => {
        this.classicPeers.delete(link);
        this.updateReserve();
        if (this.closed) this.maybeFinishServer();
      },
      trace: this.traceFn(),
      socketError: (err) => this.socketError(err),
    };
  }

  /**
   * The address in `CONNECT <ip> <port>` (see the classicAddress option): the private
   * socket's own address when it has one; else loopback for a client on loopback, and
   * otherwise the first non-internal address of the client's family.
   */
  private advertise(sc: Address, client: Address): string {
    if (this.opts.classicAddress) return this.opts.classicAddress;
    if (sc.address !== '0.0.0.0' && sc.address !== '::') return sc.address;
    const c = client.address.startsWith('::ffff:') ? client.address.slice(7) : client.address;
    const v6 = isIP(c) === 6;
    if (c.startsWith('127.')) return '127.0.0.1';
    if (c === '::1') return '::1';
    for (const list of Object.values(networkInterfaces())) {
      for (const i of list ?? [])
        if (!i.internal && i.family === (v6 ? 'IPv6' : 'IPv4') && !(v6 && i.address.startsWith('fe80'))) return i.address;
    }
    return v6 ? '::1' : '127.0.0.1';
  }

  private classicLink(sock: Peer): ClassicLink | undefined {
    return this.classicByPeer.get(sock);
  }

  /** What the classic protocol cannot carry throws at the call site. */
  private checkClassicMessage(bytes: Uint8Array, who: string): void {
    if (bytes.length > CLASSIC_MAX_DATAGRAM) {
      throw new UDPipeError(
        'ERR_MESSAGE_TOO_LARGE',
        `${who} speaks the classic protocol: one datagram per message, at most ${CLASSIC_MAX_DATAGRAM} bytes, got ${bytes.length}`,
      );
    }
    if (isClassicControlWord(bytes)) {
      throw new UDPipeError(
        'ERR_INVALID_ARGUMENT',
        `${who} speaks the classic protocol, where '${Buffer.from(bytes).toString('latin1')}' is a control word: it cannot be sent as a message`,
      );
    }
  }

  private serverTarget(server: ServerEndpoint): PumpTarget {
    return {
      handleDatagram: (b, from, now) => {
        // 'H': a classic client's HELLO; modern datagrams start with 0xC1.
        if (this.classic && b[0] === 0x48 && parseClassicHello(b) !== undefined) return this.onClassicHello(b, from);
        server.handleDatagram(b, from, now);
      },
      handleTimeout: (now) => server.handleTimeout(now),
      pollTransmit: (now) => server.pollTransmit(now),
      nextDeadline: () => server.nextDeadline(),
      deliverEvents: () => {
        let n = 0;
        for (let e = server.pollEvent(); e; e = server.pollEvent(), n++) this.onServerEvent(e);
        return n;
      },
      // After everything due went out (a last CLOSED, say): is a shutdown complete?
      afterPump: () => {
        if (this.closed) this.maybeFinishServer();
      },
      trace: this.traceFn(),
      onSocketError: (err) => this.socketError(err),
    };
  }

  private onServerEvent(e: ServerEvent): void {
    const local = this.driver?.local ?? { address: '', port: 0 };
    switch (e.type) {
      case 'accepted': {
        const peer = new Peer(this, e.connId, e.address, this.server!.connection(e.connId));
        this.peers.set(e.connId, peer);
        this.log(`new client ${peer}`);
        this.fire('newClient', 'CONNECT', local.address, local.port, e.address.address, e.address.port, peer);
        this.fire('connect', peer, e.address.address, e.address.port);
        return;
      }
      case 'connection': {
        const peer = this.peers.get(e.connId);
        if (peer) this.onConnectionEvent(peer, e.event);
        return;
      }
      case 'address-changed': {
        const peer = this.peers.get(e.connId);
        peer?.moved(e.address);
        this.log(`peer ${e.connId.toString(16)} moved to ${fmt(e.address)}`);
        return;
      }
      case 'removed':
        this.forgetPeer(e.connId);
        return;
      case 'bad-token':
        this.log(`bad token from ${fmt(e.address)}`);
        this.fire('badToken', 'CONNECT', e.address.address, e.address.port);
        return;
      case 'max-clients':
        this.log(`refused ${fmt(e.address)}: ${this.opts.maxClients} clients connected`);
        this.fire('maxClients', 'CONNECT', e.address.address, e.address.port);
        return;
      case 'encryption-mismatch':
        // A client with the right token and the other setting: a configuration mistake
        // worth a warning even without debug (only token holders get this far), once
        // per address so a retrying client does not flood the log.
        if (this.warnedMismatch.has(e.address.address)) return;
        if (this.warnedMismatch.size >= 1024) this.warnedMismatch.clear();
        this.warnedMismatch.add(e.address.address);
        this.opts.logger.warn(
          `refused ${fmt(e.address)}: ${e.clientEncrypts ? 'the client encrypts and this server does not' : 'this server requires encryption and the client does not'} (encrypt option)`,
        );
        return;
      case 'session-mismatch':
        this.log(`refused ${fmt(e.address)}: it named a session without that session's resume proof`);
        return;
    }
  }

  /**
   * A server's connection ended: the program is done with it, even while the endpoint
   * lingers a moment to answer a repeated CLOSE.
   */
  private forgetPeer(connId: number): void {
    if (!this.peers.delete(connId)) return;
    for (let i = this.closeWaiters.length - 1; i >= 0; i--) {
      const w = this.closeWaiters[i]!;
      if (w.connId === connId) {
        this.closeWaiters.splice(i, 1);
        w.resolve();
      }
    }
  }

  private onConnectionEvent(peer: Peer, e: ConnectionEvent): void {
    switch (e.type) {
      case 'message':
        this.fire('newMessage', Buffer.from(e.data.buffer, e.data.byteOffset, e.data.byteLength), peer, {
          reliable: e.reliable,
          channel: e.channel,
          delivery: e.reliable ? (e.unordered ? 'reliable-unordered' : 'reliable') : e.sequenced ? 'unreliable-sequenced' : 'unreliable',
        });
        return;
      case 'ping':
        this.fire('ping', peer);
        return;
      case 'pong':
        this.fire('pong', peer, e.rttMs);
        return;
      case 'stalled':
        this.fire('stalled', peer);
        return;
      case 'unstalled':
        this.fire('unstalled', peer);
        return;
      case 'drain':
        this.fire('drain', peer);
        return;
      case 'state':
        this.log(`${peer} ${e.from} -> ${e.to} (${e.why})`);
        return;
      case 'ended':
        if (e.reason === 'timeout') this.fire('disconnect', peer);
        else this.fire('close', peer, e.reason);
        if (this.role === 'server') this.forgetPeer(peer.id);
        return;
    }
  }

  private clientTarget(client: ClientEndpoint | ClassicClient): PumpTarget {
    // The classic client talks to two addresses (the public socket and its private one)
    // and says where each datagram goes; the modern one only ever to the server.
    const classic = client instanceof ClassicClient ? client : undefined;
    const modern = client instanceof ClientEndpoint ? client : undefined;
    return {
      handleDatagram: (b, from, now) => (classic ? classic.handleDatagram(b, from, now) : modern!.handleDatagram(b, now)),
      handleTimeout: (now) => client.handleTimeout(now),
      pollTransmit: (now) => {
        if (classic) return classic.pollTransmit();
        const bytes = modern!.pollTransmit(now);
        return bytes ? { bytes, to: this.serverAddr! } : null;
      },
      nextDeadline: () => client.nextDeadline(),
      deliverEvents: () => {
        let n = 0;
        for (let e = client.pollEvent(); e; e = client.pollEvent(), n++) this.onClientEvent(e);
        return n;
      },
      trace: this.traceFn(),
      onSocketError: (err) => this.socketError(err),
    };
  }

  private onClientEvent(e: ClientEvent | ClassicClientEvent): void {
    const server = this.serverAddr!;
    const classic = this.client instanceof ClassicClient;
    switch (e.type) {
      case 'connecting': {
        // Classic: the server's private socket for us (the seed's "final port").
        const to = 'address' in e ? e.address : server;
        this.serverPeer = new Peer(this, 0, to, undefined, classic ? 'classic' : 'udpipe');
        this.log(`attempt ${e.attempt}: server answered, completing handshake at ${fmt(to)}`);
        this.fire('connecting', this.serverPeer, to.address, to.port);
        return;
      }
      case 'connected': {
        const conn = this.client!.connection!;
        const peer = this.serverPeer ?? new Peer(this, 0, server, undefined, classic ? 'classic' : 'udpipe');
        peer.attach('remoteConnId' in conn ? conn.remoteConnId : 0, conn);
        this.serverPeer = peer;
        this.log(`connected to ${peer} (attempt ${e.attempt})`);
        this.fire('connect', peer, server.address, server.port);
        const w = this.connectWaiter;
        this.connectWaiter = undefined;
        w?.resolve(peer);
        return;
      }
      case 'connection':
        if (this.serverPeer) this.onConnectionEvent(this.serverPeer, e.event);
        return;
      case 'refused':
        this.log(`refused by server: ${e.reason}`);
        return;
      case 'retrying':
        this.log(`retrying in ${Math.round(e.delayMs)} ms`);
        return;
      case 'failed': {
        const err = new UDPipeError(e.code, e.message);
        this.log(`failed: ${e.message}`);
        const w = this.connectWaiter;
        this.connectWaiter = undefined;
        if (w) w.reject(err);
        else this.fire('error', err);
        return;
      }
      case 'closed': {
        this.log('closed');
        this.closed = true;
        // A classic client may still owe its server a last CLOSED: send it before stopping.
        if (this.client instanceof ClassicClient) {
          for (let t = this.client.pollTransmit(); t; t = this.client.pollTransmit()) this.driver?.sendRaw(t.bytes, t.to);
        }
        this.driver?.stop();
        const w = this.connectWaiter;
        this.connectWaiter = undefined;
        w?.reject(new UDPipeError('ERR_CLOSED', 'close() was called before the connection was made'));
        for (const c of this.closeWaiters.splice(0)) c.resolve();
        return;
      }
    }
  }
}
