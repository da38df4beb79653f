import { EventEmitter } from 'node:events';
import { deriveResetKey, deriveTokenKey } from '../crypto/handshake-keys.js';
import { UDPipeError } from '../errors.js';
import { ClassicClient } from '../protocol/classic.js';
import { ClientEndpoint } from '../protocol/client.js';
import type { ConnectionConfig } from '../protocol/config.js';
import { ServerEndpoint } from '../protocol/server.js';
import type { PumpTarget } from '../transport/driver.js';
import { NodeTransport } from '../transport/node-transport.js';
import type { Address, Transport } from '../transport/types.js';
import { MAX_MESSAGE_SIZE } from '../wire/constants.js';
import { describeDatagram } from '../wire/packet.js';
import { ClientRole } from './client-role.js';
import { CALLBACK, type EndpointStats, type EventName, type UDPipeEvents } from './events.js';
import { bindError, checkPort, fmt } from './format.js';
import { checkMs, checkTimings, checkToken, resolveOptions, type ResolvedOptions, type UDPipeOptions } from './options.js';
import type { Peer, PeerOwner, PeerStats, SendOptions } from './peer.js';
import type { RoleHost, SendHow } from './role.js';
import { ServerRole } from './server-role.js';

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
 *
 * A facade: it checks what the program passes and holds the settings, and hands the
 * rest to the role start() or connect() made (ServerRole, ClientRole).
 */
// biome-ignore lint/suspicious/noUnsafeDeclarationMerging: the interface above only types the inherited EventEmitter methods for UDPipe's events; it declares nothing the class lacks.
export class UDPipe extends EventEmitter implements PeerOwner {
  private readonly opts: ResolvedOptions;
  private readonly connCfg: ConnectionConfig;
  private readonly host: RoleHost;
  private role: ServerRole | ClientRole | undefined;
  /** close() before start() or connect() had a role, or before start() was listening. */
  private closedEarly = false;

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
    this.host = {
      owner: this,
      opts: this.opts,
      connCfg: this.connCfg,
      fire: (name, ...args) => this.fire(name, ...args),
      log: (line) => this.log(line),
      trace: this.traceFn(),
      // ICMP port unreachable and friends: a hint, never fatal (the timeouts decide).
      socketError: (err) => this.log(`socket error: ${err.message}`),
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
    this.role?.configure(patch);
    this.opts.timeoutMs = ms;
    this.role?.driver.kick(); // re-arm the timer for the new deadlines
  }

  setDebug(d: boolean): void {
    if (typeof d !== 'boolean') throw new UDPipeError('ERR_INVALID_ARGUMENT', `setDebug(d) takes true or false, got ${String(d)}`);
    this.opts.debug = d;
  }

  /** The shared token: must match on both sides. Applies to handshakes from now on. */
  setToken(t: string): void {
    this.opts.token = checkToken(t);
    this.role?.configure({ tokenKey: deriveTokenKey(t), token: this.opts.token });
  }

  private log(line: string): void {
    if (this.opts.debug) this.opts.logger.debug(`${this.role?.kind === 'server' ? 'server' : 'client'} ${line}`);
  }

  // ---- starting --------------------------------------------------------------------

  private claim(role: 'server' | 'client'): Transport {
    if (this.closedEarly || this.role?.closed) throw new UDPipeError('ERR_CLOSED', 'this UDPipe was closed; create a new one');
    if (this.role) {
      throw new UDPipeError('ERR_ALREADY_STARTED', `this UDPipe is already a ${this.role.kind}; create another UDPipe for another ${role}`);
    }
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
    const role = new ServerRole(this.host, transport, server);
    this.role = role;
    try {
      const address = host === undefined ? undefined : await transport.resolve(host);
      const local = await role.bind(port, address);
      this.log(`listening on ${fmt(local)}`);
      return local;
    } catch (err) {
      this.role = undefined;
      if (role.closed) {
        // close() came first: this UDPipe is done, as close() promised.
        this.closedEarly = true;
        throw new UDPipeError('ERR_CLOSED', 'close() was called before the server was listening', { cause: err });
      }
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
    const client =
      this.opts.protocol === 'classic'
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
    // The role exists at once, so send() right after connect() queues.
    const role = new ClientRole(this.host, transport, client);
    this.role = role;
    return role.connect(host, port, timeoutMs);
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
    if (!this.role) {
      throw new UDPipeError(
        this.closedEarly ? 'ERR_CLOSED' : 'ERR_NOT_CONNECTED',
        'call start() (server) or connect() (client) before send()',
      );
    }
    return this.role.send(bytes, how, sock);
  }

  /**
   * Server: sends to every connected client, each on its own: a client that cannot take
   * the message (its queue is full, it is closing, or it is a classic client and the
   * message is too large for the classic protocol or a control word) is skipped, with
   * a 'dropped' event naming it; the others get it. Returns false if any client was
   * skipped or is past maxQueue/highWaterMark.
   */
  sendAll(msg: string | Uint8Array, opts?: SendOptions): boolean {
    const role = this.role;
    if (!(role instanceof ServerRole))
      throw new UDPipeError('ERR_WRONG_ROLE', 'sendAll() is for servers; a client sends to its server with send()');
    const bytes = this.encode(msg);
    return role.sendAll(bytes, this.deliveryOf(opts, bytes.length));
  }

  /** Pings now: client to server; server to `sock`, or to every client. */
  ping(sock?: Peer): void {
    if (!this.role) throw new UDPipeError('ERR_NOT_CONNECTED', 'call start() or connect() before ping()');
    this.role.ping(sock);
  }

  /**
   * Handles what arrived, runs due timers and delivers events now. With autoStep off
   * this is the only place anything happens (call it every tick of your loop); with
   * autoStep on it is harmless. `dt` is accepted for the seed's signature; time comes
   * from the clock.
   */
  step(_dt?: number): void {
    this.role?.step();
  }

  /**
   * Client: graceful close (queued messages are flushed first), no more reconnects.
   * Server: closes one client, or with no argument every client and then the socket.
   * Resolves when done.
   */
  close(sock?: Peer): Promise<void> {
    if (!this.role) {
      this.closedEarly = true;
      return Promise.resolve();
    }
    return this.role.close(sock);
  }

  // ---- counters --------------------------------------------------------------------

  /** Datagrams sent, as in the seed. */
  getSentPackets(): number {
    return this.role?.sentPackets() ?? 0;
  }

  /** Datagrams received, as in the seed. */
  getReceivedPackets(): number {
    return this.role?.receivedPackets() ?? 0;
  }

  /** Statistics of one peer (see PeerStats), or of the whole endpoint. */
  stats(sock: Peer): PeerStats;
  stats(): EndpointStats;
  stats(sock?: Peer): PeerStats | EndpointStats {
    if (sock) return sock.stats();
    return this.role?.stats() ?? { role: 'none' };
  }

  /** The server's peers that are connected now. */
  get clients(): Peer[] {
    return this.role?.clients ?? [];
  }

  /** Local address once started or connecting. */
  get address(): Address | undefined {
    return this.role?.local;
  }

  toJSON(): Record<string, unknown> {
    return { role: this.role?.kind ?? 'none', address: this.address, peers: this.clients.map((p) => p.toJSON()) };
  }

  // ---- events for the program ------------------------------------------------------

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
}
