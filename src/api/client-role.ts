import { isIP } from 'node:net';
import { UDPipeError } from '../errors.js';
import { ClassicClient, type ClassicClientEvent } from '../protocol/classic.js';
import type { ClientEndpoint, ClientEvent } from '../protocol/client.js';
import { Driver, type PumpTarget } from '../transport/driver.js';
import type { Address, Transport } from '../transport/types.js';
import { checkClassicMessage } from './classic-side.js';
import type { EndpointStats } from './events.js';
import { bindError, fmt } from './format.js';
import { Peer } from './peer.js';
import { dropMessage, fireConnectionEvent, overHardLimit, type Role, type RoleHost, type SendHow } from './role.js';

/**
 * A UDPipe that connect() made: the modern client endpoint, or the classic one with
 * `protocol: 'classic'` (same surface), the server's Peer, and the promises of
 * connect() and close().
 */
export class ClientRole implements Role {
  readonly kind = 'client';
  readonly driver: Driver;
  private readonly classic: boolean;
  private serverPeer: Peer | undefined;
  private serverAddr: Address | undefined;
  private _closed = false;
  /** connect() failed before the handshake began (resolve, bind): the driver is stopped, nothing will happen. */
  private failed = false;
  private connectWaiter: { resolve: (p: Peer) => void; reject: (e: Error) => void } | undefined;
  private readonly closeWaiters: (() => void)[] = [];

  constructor(
    private readonly host: RoleHost,
    private readonly transport: Transport,
    private readonly client: ClientEndpoint | ClassicClient,
  ) {
    this.classic = client instanceof ClassicClient;
    this.driver = new Driver(transport, this.target(), host.opts.autoStep);
  }

  /**
   * Resolves the server, binds, and starts the handshake. The promise settles with the
   * first connection, a refusal, the timeout, or close(). A failure here leaves the role closed.
   */
  async connect(host: string, port: number, timeoutMs: number): Promise<Peer> {
    const connected = new Promise<Peer>((resolve, reject) => {
      this.connectWaiter = { resolve, reject };
    });
    // Rejections reach the caller through the returned promise; this only stops Node
    // from calling one unhandled when close() wins the race before we return it.
    connected.catch(() => {});
    const client = this.client;
    try {
      let serverIp: string;
      try {
        serverIp = await this.transport.resolve(host);
      } catch (err) {
        throw new UDPipeError('ERR_RESOLVE', `cannot resolve '${host}': ${(err as Error).message}`, { cause: err });
      }
      this.serverAddr = { address: serverIp, port };
      if (client instanceof ClassicClient) client.server = { address: serverIp, port };
      else client.serverAddress = serverIp;
      try {
        await this.driver.bind(0, isIP(serverIp) === 6 ? '::' : '0.0.0.0');
        // One peer for the life of this client: a connected socket sends more cheaply.
        // (Not classic: it also talks to the server's private socket.)
        if (!this.classic) await this.driver.connect(this.serverAddr);
      } catch (err) {
        throw (err as { code?: string }).code === 'ERR_CLOSED'
          ? new UDPipeError('ERR_CLOSED', 'close() was called before the connection was made')
          : bindError(err, 0, undefined);
      }
    } catch (err) {
      this.connectWaiter = undefined;
      this.driver.stop();
      this._closed = true;
      this.failed = true;
      throw err;
    }
    if (client.state === 'closed') throw new UDPipeError('ERR_CLOSED', 'close() was called before the connection was made');
    this.host.log(`connecting to ${fmt(this.serverAddr)}`);
    client.start(this.transport.now(), this.transport.now() + timeoutMs);
    this.driver.pump();
    return connected;
  }

  get closed(): boolean {
    return this._closed;
  }

  get local(): Address | undefined {
    return this.driver.local;
  }

  get clients(): Peer[] {
    return [];
  }

  configure(patch: Parameters<Role['configure']>[0]): void {
    this.client.configure(patch);
  }

  send(bytes: Uint8Array, how: SendHow, _sock: Peer | undefined): boolean {
    const client = this.client;
    this.checkOpen();
    if (this.classic) checkClassicMessage(bytes, 'the server');
    if (overHardLimit(this.host.connCfg, client.queueLength, client.queuedBytes)) {
      const peer = this.serverPeer ?? new Peer(this.host.owner, 0, this.serverAddr ? { ...this.serverAddr } : { address: '', port: 0 });
      return dropMessage(this.host, peer, bytes, 'queue-full');
    }
    const ok = client.send(bytes, how.reliable, how.channel, how.sequenced, how.unordered);
    this.driver.kick();
    return ok;
  }

  /** send() and ping() on a client that is over are the program's mistake. */
  private checkOpen(): void {
    if (this.failed || this.client.state === 'closed')
      throw new UDPipeError('ERR_CLOSED', 'this client is closed; create a new UDPipe to connect again');
  }

  ping(_sock: Peer | undefined): void {
    this.checkOpen();
    this.client.ping(this.driver.now());
    this.driver.kick();
  }

  step(): void {
    this.driver.step();
  }

  /** Graceful: queued messages are flushed first; no more reconnects. */
  close(_sock: Peer | undefined): Promise<void> {
    this._closed = true;
    if (this.failed || this.client.state === 'closed') return Promise.resolve();
    const done = new Promise<void>((resolve) => this.closeWaiters.push(resolve));
    this.client.close(this.driver.now());
    this.driver.pump(true);
    return done;
  }

  sentPackets(): number {
    return this.client.datagramsSent;
  }

  receivedPackets(): number {
    return this.client.datagramsReceived;
  }

  stats(): EndpointStats {
    const c = this.client;
    return {
      role: 'client',
      state: c.state,
      datagramsSent: c.datagramsSent,
      datagramsReceived: c.datagramsReceived,
      malformed: c.malformed,
      queued: c.queueLength,
      connection: this.serverPeer?.stats(),
    };
  }

  // ---- what the endpoint reports ------------------------------------------------------

  private target(): PumpTarget {
    // The classic client talks to two addresses (the public socket and its private one)
    // and says where each datagram goes; the modern one only ever to the server.
    const client = this.client;
    return {
      handleDatagram:
        client instanceof ClassicClient
          ? (b, from, now) => client.handleDatagram(b, from, now)
          : (b, _from, now) => client.handleDatagram(b, now),
      handleTimeout: (now) => client.handleTimeout(now),
      pollTransmit:
        client instanceof ClassicClient
          ? () => client.pollTransmit()
          : (now) => {
              const bytes = client.pollTransmit(now);
              return bytes && this.serverAddr ? { bytes, to: this.serverAddr } : null;
            },
      nextDeadline: () => client.nextDeadline(),
      deliverEvents: () => {
        let n = 0;
        for (let e = client.pollEvent(); e; e = client.pollEvent(), n++) this.onClientEvent(e);
        return n;
      },
      trace: this.host.trace,
      onSocketError: (err) => this.host.socketError(err),
    };
  }

  private newServerPeer(to: Address): Peer {
    return new Peer(this.host.owner, 0, { ...to }, undefined, this.classic ? 'classic' : 'udpipe');
  }

  private onClientEvent(e: ClientEvent | ClassicClientEvent): void {
    const host = this.host;
    const server = this.serverAddr ?? { address: '', port: 0 };
    switch (e.type) {
      case 'connecting': {
        // Classic: the server's private socket for us (the seed's "final port").
        const to = 'address' in e ? e.address : server;
        this.serverPeer = this.newServerPeer(to);
        host.log(`attempt ${e.attempt}: server answered, completing handshake at ${fmt(to)}`);
        host.fire('connecting', this.serverPeer, to.address, to.port);
        return;
      }
      case 'connected': {
        const conn = this.client.connection;
        const peer = this.serverPeer ?? this.newServerPeer(server);
        if (conn) peer.attach('remoteConnId' in conn ? conn.remoteConnId : 0, conn);
        this.serverPeer = peer;
        host.log(`connected to ${peer} (attempt ${e.attempt})`);
        host.fire('connect', peer, server.address, server.port);
        const w = this.connectWaiter;
        this.connectWaiter = undefined;
        w?.resolve(peer);
        return;
      }
      case 'connection':
        if (this.serverPeer) fireConnectionEvent(host, this.serverPeer, e.event);
        return;
      case 'refused':
        host.log(`refused by server: ${e.reason}`);
        return;
      case 'retrying':
        host.log(`retrying in ${Math.round(e.delayMs)} ms`);
        return;
      case 'failed': {
        const err = new UDPipeError(e.code, e.message);
        host.log(`failed: ${e.message}`);
        const w = this.connectWaiter;
        this.connectWaiter = undefined;
        if (w) w.reject(err);
        else host.fire('error', err);
        return;
      }
      case 'closed': {
        host.log('closed');
        this._closed = true;
        // A classic client may still owe its server a last CLOSED: send it before stopping.
        if (this.client instanceof ClassicClient) {
          for (let t = this.client.pollTransmit(); t; t = this.client.pollTransmit()) this.driver.sendRaw(t.bytes, t.to);
        }
        this.driver.stop();
        const w = this.connectWaiter;
        this.connectWaiter = undefined;
        w?.reject(new UDPipeError('ERR_CLOSED', 'close() was called before the connection was made'));
        for (const resolve of this.closeWaiters.splice(0)) resolve();
        return;
      }
    }
  }
}
