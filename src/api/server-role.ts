import { UDPipeError } from '../errors.js';
import type { ConnectionEvent } from '../protocol/config.js';
import type { ServerEndpoint, ServerEvent } from '../protocol/server.js';
import { Driver, type PumpTarget } from '../transport/driver.js';
import type { Address, Transport } from '../transport/types.js';
import { ClassicSide, checkClassicMessage, classicCarries } from './classic-side.js';
import type { EndpointStats } from './events.js';
import { fmt } from './format.js';
import { Peer } from './peer.js';
import { dropMessage, fireConnectionEvent, overHardLimit, type Role, type RoleHost, type SendHow } from './role.js';

/**
 * A UDPipe that start() made: the modern endpoint, its classic clients if enabled, the
 * Peers the program holds, the send limits shared by all peers, and a graceful shutdown.
 */
export class ServerRole implements Role {
  readonly kind = 'server';
  readonly driver: Driver;
  private readonly peers = new Map<number, Peer>();
  private readonly classic: ClassicSide | undefined;
  private _closed = false;
  /** The shutdown is complete: sockets stopped, close() resolved. */
  private finished = false;
  private boundHost: string | undefined;
  /** Messages not queued (the 'dropped' event), all peers together. */
  private sendDropped = 0;
  /** All peers' queued bytes, summed once per task (queuedTotal); undefined: sum again. */
  private queuedSum: number | undefined;
  /** Addresses already warned about an encryption mismatch. */
  private readonly warnedMismatch = new Set<string>();
  private readonly closeWaiters: { connId: number | undefined; resolve: () => void }[] = [];

  constructor(
    readonly host: RoleHost,
    readonly transport: Transport,
    readonly server: ServerEndpoint,
  ) {
    this.driver = new Driver(transport, this.target(), host.opts.autoStep);
    if (host.opts.classic) {
      this.classic = new ClassicSide({
        host,
        transport,
        server,
        driver: this.driver,
        bindHost: () => this.boundHost,
        closed: () => this._closed,
        added: (peer) => this.peers.set(peer.id, peer),
        connectionEvent: (peer, e) => this.onConnectionEvent(peer, e),
        changed: () => {
          if (this._closed) this.maybeFinish();
        },
      });
    }
  }

  /** Binds the public socket; `address` is the resolved host, or undefined for every interface. */
  async bind(port: number, address: string | undefined): Promise<Address> {
    this.boundHost = address;
    return this.driver.bind(port, address);
  }

  get closed(): boolean {
    return this._closed;
  }

  get local(): Address | undefined {
    return this.driver.local;
  }

  get clients(): Peer[] {
    return [...this.peers.values()];
  }

  configure(patch: Parameters<Role['configure']>[0]): void {
    const { token: _token, ...serverPatch } = patch;
    this.server.configure(serverPatch);
    if (patch.tokenKey) this.classic?.retoken(patch.tokenKey);
  }

  send(bytes: Uint8Array, how: SendHow, sock: Peer | undefined): boolean {
    if (!(sock instanceof Peer))
      throw new UDPipeError(
        'ERR_INVALID_ARGUMENT',
        'a server sends to one client: pass its peer (the sock argument of a callback), or use sendAll()',
      );
    if (sock.protocol === 'classic') checkClassicMessage(bytes, `peer ${sock}`);
    return this.sendToPeer(sock, bytes, how);
  }

  /** Every connected client, each on its own: false if any was skipped or is past its limits. */
  sendAll(bytes: Uint8Array, how: SendHow): boolean {
    const classicOk = classicCarries(bytes);
    let ok = true;
    for (const p of [...this.peers.values()]) {
      if (p.state !== 'connected' && p.state !== 'stalled') continue;
      if (p.protocol === 'classic' && !classicOk) ok = this.drop(p, bytes, 'classic');
      else ok = this.sendToPeer(p, bytes, how) && ok;
    }
    return ok;
  }

  /** Queues for one peer (modern or classic) what its limits allow; the message is checked already. */
  private sendToPeer(sock: Peer, bytes: Uint8Array, how: SendHow): boolean {
    const link = sock.protocol === 'classic' ? this.classic?.link(sock) : this.server.connection(sock.id);
    if (!link || link.state === 'closed' || link.state === 'closing') return this.drop(sock, bytes, 'closing');
    if (
      overHardLimit(this.host.connCfg, link.queueLength, link.queuedBytes) ||
      this.queuedTotal() + bytes.length > this.host.opts.maxQueuedBytes
    ) {
      return this.drop(sock, bytes, 'queue-full');
    }
    if (this.queuedSum !== undefined) this.queuedSum += bytes.length;
    const ok =
      sock.protocol === 'classic'
        ? (this.classic?.send(sock, bytes) ?? false)
        : this.server.send(sock.id, bytes, how.reliable, how.channel, how.sequenced, how.unordered);
    this.driver.kick();
    return ok;
  }

  private drop(sock: Peer, bytes: Uint8Array, reason: Parameters<typeof dropMessage>[3]): false {
    this.sendDropped++;
    return dropMessage(this.host, sock, bytes, reason);
  }

  /**
   * Bytes queued for every peer together, for maxQueuedBytes. Summed at most once per
   * task (sends within it add what they queue), so a burst of sends to many peers
   * costs one pass. Acknowledgements only shrink the queues, so the sum never
   * undercounts. (It was keyed on the clock, whose fractional milliseconds differ from
   * one call to the next: every send summed every peer, sendAll was quadratic.)
   */
  private queuedTotal(): number {
    if (this.queuedSum === undefined) {
      let n = this.classic?.queuedBytes() ?? 0;
      for (const id of this.server.connIds()) n += this.server.connection(id)?.queuedBytes ?? 0;
      this.queuedSum = n;
      // Good until the program's current task ends (nothing is sent or acknowledged before).
      queueMicrotask(() => {
        this.queuedSum = undefined;
      });
    }
    return this.queuedSum;
  }

  ping(sock: Peer | undefined): void {
    if (!sock) this.server.ping();
    else if (sock.protocol !== 'classic') this.server.ping(sock.id);
    this.classic?.ping(sock, this.driver.now());
    this.driver.kick();
  }

  step(): void {
    this.driver.step();
    this.classic?.step();
  }

  /** One client, or with no argument every client and then the socket. */
  close(sock: Peer | undefined): Promise<void> {
    const now = this.driver.now();
    if (sock !== undefined) {
      if (!(sock instanceof Peer)) throw new UDPipeError('ERR_INVALID_ARGUMENT', 'close(sock) takes a peer from a callback');
      if (!this.peers.has(sock.id)) return Promise.resolve();
      const done = new Promise<void>((resolve) => this.closeWaiters.push({ connId: sock.id, resolve }));
      if (sock.protocol === 'classic') {
        this.classic?.close(sock, now);
        return done;
      }
      this.server.close(now, sock.id);
      this.driver.pump(true);
      return done;
    }
    if (this.finished) return Promise.resolve();
    this._closed = true;
    const done = new Promise<void>((resolve) => this.closeWaiters.push({ connId: undefined, resolve }));
    this.server.close(now, undefined, 'shutdown');
    this.server.configure({ maxClients: 0 });
    this.classic?.shutdown(now);
    this.driver.pump(true);
    this.maybeFinish();
    return done;
  }

  private maybeFinish(): void {
    // Wait for every connection, including ones whose client has not confirmed the
    // handshake yet (the program never saw those): each must get its CLOSE first.
    if (!this._closed || this.finished || this.peers.size > 0 || this.server.openConnections() > 0) return;
    this.finished = true;
    this.classic?.stopAll(); // private sockets still lingering for a repeated CLOSE
    this.driver.stop();
    this.host.log('closed');
    for (const w of this.closeWaiters.splice(0)) w.resolve();
  }

  sentPackets(): number {
    return this.server.counters.datagramsSent + (this.classic?.datagramsSent ?? 0);
  }

  receivedPackets(): number {
    return this.server.counters.datagramsReceived + (this.classic?.datagramsReceived ?? 0);
  }

  stats(): EndpointStats {
    const b = this.server.budget;
    return {
      role: 'server',
      connections: this.peers.size,
      ...this.server.counters,
      droppedUnstepped: this.driver.overflowed,
      sendDropped: this.sendDropped,
      queued: { bytes: this.queuedTotal(), limit: this.host.opts.maxQueuedBytes },
      reassembly: { bytes: b.used, peak: b.peak, limit: b.limit, refused: b.refused, evictedSessions: this.server.evictedSessions },
    };
  }

  // ---- what the endpoint reports ------------------------------------------------------

  private target(): PumpTarget {
    const server = this.server;
    return {
      handleDatagram: (b, from, now) => {
        if (this.classic?.isHello(b)) return this.classic.hello(b, from);
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
        if (this._closed) this.maybeFinish();
      },
      trace: this.host.trace,
      onSocketError: (err) => this.host.socketError(err),
    };
  }

  private onServerEvent(e: ServerEvent): void {
    const host = this.host;
    switch (e.type) {
      case 'accepted': {
        const local = this.driver.local ?? { address: '', port: 0 };
        const peer = new Peer(host.owner, e.connId, e.address, this.server.connection(e.connId));
        this.peers.set(e.connId, peer);
        host.log(`new client ${peer}`);
        host.fire('newClient', 'CONNECT', local.address, local.port, e.address.address, e.address.port, peer);
        host.fire('connect', peer, e.address.address, e.address.port);
        return;
      }
      case 'connection': {
        const peer = this.peers.get(e.connId);
        if (peer) this.onConnectionEvent(peer, e.event);
        return;
      }
      case 'address-changed':
        this.peers.get(e.connId)?.moved(e.address);
        host.log(`peer ${e.connId.toString(16)} moved to ${fmt(e.address)}`);
        return;
      case 'removed':
        this.forgetPeer(e.connId);
        return;
      case 'bad-token':
        host.log(`bad token from ${fmt(e.address)}`);
        host.fire('badToken', 'CONNECT', e.address.address, e.address.port);
        return;
      case 'max-clients':
        host.log(`refused ${fmt(e.address)}: ${host.opts.maxClients} clients connected`);
        host.fire('maxClients', 'CONNECT', e.address.address, e.address.port);
        return;
      case 'encryption-mismatch':
        // A client with the right token and the other setting: a configuration mistake
        // worth a warning even without debug (only token holders get this far), once
        // per address so a retrying client does not flood the log.
        if (this.warnedMismatch.has(e.address.address)) return;
        if (this.warnedMismatch.size >= 1024) this.warnedMismatch.clear();
        this.warnedMismatch.add(e.address.address);
        host.opts.logger.warn(
          `refused ${fmt(e.address)}: ${e.clientEncrypts ? 'the client encrypts and this server does not' : 'this server requires encryption and the client does not'} (encrypt option)`,
        );
        return;
      case 'session-mismatch':
        host.log(`refused ${fmt(e.address)}: it named a session without that session's resume proof`);
        return;
    }
  }

  private onConnectionEvent(peer: Peer, e: ConnectionEvent): void {
    fireConnectionEvent(this.host, peer, e);
    if (e.type === 'ended') this.forgetPeer(peer.id);
  }

  /**
   * A connection ended: the program is done with it, even while the endpoint lingers a
   * moment to answer a repeated CLOSE.
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
}
