import { isIP } from 'node:net';
import { networkInterfaces } from 'node:os';
import { UDPipeError } from '../errors.js';
import type { ClassicConfig, ClassicLink } from '../protocol/classic.js';
import type { ConnectionEvent } from '../protocol/config.js';
import { ClassicAdmission, MAX_CLASSIC_PENDING } from '../protocol/classic-admission.js';
import type { ServerEndpoint } from '../protocol/server.js';
import type { Driver } from '../transport/driver.js';
import type { Address, Transport } from '../transport/types.js';
import { CLASSIC_MAX_DATAGRAM, isClassicControlWord, parseClassicHello } from '../wire/classic.js';
import { ClassicHost, type ClassicHostOwner } from './classic-host.js';
import { fmt } from './format.js';
import { Peer } from './peer.js';
import type { RoleHost } from './role.js';

/** What the classic side needs from the server role it belongs to. */
export interface ClassicSideOwner {
  readonly host: RoleHost;
  readonly transport: Transport;
  readonly server: ServerEndpoint;
  readonly driver: Driver;
  /** The host the server bound to, once known (the private sockets bind there too). */
  bindHost(): string | undefined;
  /** Shutting down: no new clients of either kind. */
  closed(): boolean;
  /** A classic client finished its handshake: the program meets it. */
  added(peer: Peer): void;
  /** What one classic link reported, for the program. */
  connectionEvent(peer: Peer, e: ConnectionEvent): void;
  /** A classic link ended or its socket closed: is a shutdown complete? */
  changed(): void;
}

/** What the classic protocol cannot carry throws at the call site. */
export function checkClassicMessage(bytes: Uint8Array, who: string): void {
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

/** A message the classic protocol can carry (sendAll skips classic peers for the others). */
export function classicCarries(bytes: Uint8Array): boolean {
  return bytes.length <= CLASSIC_MAX_DATAGRAM && !isClassicControlWord(bytes);
}

/**
 * A server's classic (Lua UDPIPE) clients: their Peers and the ClassicHost with their
 * private sockets. Who is let in is decided by ClassicAdmission (src/protocol), sans-I/O.
 */
export class ClassicSide implements ClassicHostOwner {
  private readonly sockets: ClassicHost;
  private readonly peerOf = new Map<ClassicLink, Peer>();
  /** Classic peers the program knows (until their connection ends), and their links. */
  private readonly linkOf = new Map<Peer, ClassicLink>();
  private readonly admission: ClassicAdmission;
  /** Ids of classic peers start above the 32-bit connection ids, so they never collide. */
  private nextId = 2 ** 32;

  constructor(private readonly role: ClassicSideOwner) {
    const o = role.host.opts;
    // The token classic clients must send: classicToken, else the token.
    this.admission = new ClassicAdmission(o, role.server, o.classicToken ?? o.token);
    this.sockets = new ClassicHost(this);
    role.server.reserve(this.admission); // connected classic clients take room from modern ones
  }

  /** A new token (setToken), when classic clients use the common one. */
  retoken(tokenKey: Uint8Array): void {
    if (this.role.host.opts.classicToken === undefined) this.admission.retoken(tokenKey);
  }

  /** Is this datagram on the public port a classic HELLO? ('H'; modern datagrams start with 0xC1.) */
  isHello(bytes: Uint8Array): boolean {
    return bytes[0] === 0x48 && parseClassicHello(bytes) !== undefined;
  }

  link(peer: Peer): ClassicLink | undefined {
    return this.linkOf.get(peer);
  }

  get datagramsSent(): number {
    return this.sockets.datagramsSent;
  }

  get datagramsReceived(): number {
    return this.sockets.datagramsReceived;
  }

  queuedBytes(): number {
    let n = 0;
    for (const link of this.linkOf.values()) n += link.queuedBytes;
    return n;
  }

  /** Queues on a peer's link and flushes it at the end of the tick. */
  send(peer: Peer, bytes: Uint8Array): boolean {
    const link = this.linkOf.get(peer);
    if (!link) return false;
    const ok = link.send(bytes);
    this.sockets.kick(link);
    return ok;
  }

  /** PINGs one classic peer, or all. */
  ping(sock: Peer | undefined, now: number): void {
    for (const [peer, link] of this.linkOf) {
      if (sock && sock !== peer) continue;
      link.ping(now);
      this.sockets.kick(link);
    }
  }

  close(peer: Peer, now: number): void {
    const link = this.linkOf.get(peer);
    if (!link) return;
    link.close(now);
    this.sockets.pump(link);
  }

  /** Shutdown: pending handshakes are dropped, every connected client gets its CLOSE. */
  shutdown(now: number): void {
    this.sockets.dropPending();
    for (const link of [...this.linkOf.values()]) {
      link.close(now, 'shutdown');
      this.sockets.pump(link);
    }
  }

  /** The last step of a shutdown: private sockets still lingering for a repeated CLOSE stop. */
  stopAll(): void {
    this.sockets.stopAll();
    this.peerOf.clear();
  }

  step(): void {
    this.sockets.step();
  }

  /** A classic HELLO on the public port. */
  hello(bytes: Uint8Array, from: Address): void {
    if (this.role.closed()) return; // shutting down: no new clients of either kind
    const host = this.role.host;
    const now = this.role.driver.now();
    const msg = () => Buffer.from(bytes).toString('latin1');
    const verdict = this.admission.hello(bytes.subarray(6), from.address, this.sockets.has(from), () => this.sockets.pending, now);
    switch (verdict.type) {
      case 'bad-token':
        // No reply, as for a modern client whose proof fails; the program hears of it at a bounded rate.
        if (verdict.notify) {
          host.log(`classic client ${fmt(from)}: bad token`);
          host.fire('badToken', msg(), from.address, from.port);
        }
        return;
      case 'full':
        host.log(`refused classic client ${fmt(from)}: no room (maxClients ${host.opts.maxClients})`);
        host.fire('maxClients', msg(), from.address, from.port);
        return;
      case 'dropped':
        host.log(
          `classic HELLO from ${fmt(from)} dropped: ${verdict.why === 'pending' ? `${MAX_CLASSIC_PENDING} classic handshakes pending` : 'over handshakesPerSecond'}`,
        );
        return;
      case 'accept':
        this.sockets.hello(bytes, from);
        return;
    }
  }

  // ---- ClassicHostOwner: what the private sockets report ----------------------------

  get transport(): Transport {
    return this.role.transport;
  }

  autoStep(): boolean {
    return this.role.host.opts.autoStep;
  }

  config(): ClassicConfig {
    return this.role.host.connCfg; // shared: setTimeout() reaches classic links too
  }

  bindHost(): string | undefined {
    return this.role.bindHost();
  }

  sendPublic(bytes: Uint8Array, to: Address): void {
    this.role.driver.sendRaw(bytes, to);
  }

  accepted(link: ClassicLink, client: Address, sc: Address, hello: Uint8Array): boolean {
    const host = this.role.host;
    // Room is checked again: modern clients may have taken it since the HELLO.
    if (this.role.closed() || !this.admission.room(client.address)) {
      if (!this.role.closed()) host.fire('maxClients', Buffer.from(hello).toString('latin1'), client.address, client.port);
      return false;
    }
    const peer = new Peer(host.owner, this.nextId++, { ...client }, link, 'classic');
    this.peerOf.set(link, peer);
    this.linkOf.set(peer, link);
    this.admission.joined(client.address);
    this.role.added(peer);
    host.log(`new classic client ${peer} on private port ${sc.port}`);
    host.fire(
      'newClient',
      Buffer.from(hello).toString('latin1'),
      this.advertisedAddress(sc, client),
      sc.port,
      client.address,
      client.port,
      peer,
    );
    host.fire('connect', peer, client.address, client.port);
    return true;
  }

  event(link: ClassicLink, e: ConnectionEvent): void {
    const peer = this.peerOf.get(link);
    if (!peer) return;
    this.role.connectionEvent(peer, e);
    if (e.type === 'ended') {
      if (this.linkOf.delete(peer)) this.admission.left(peer.address);
      this.role.changed();
    }
  }

  released(link: ClassicLink): void {
    this.peerOf.delete(link);
    this.role.changed();
  }

  get trace(): RoleHost['trace'] {
    return this.role.host.trace;
  }

  socketError(err: Error): void {
    this.role.host.socketError(err);
  }

  /**
   * The address in `CONNECT <ip> <port>` (see the classicAddress option): the private
   * socket's own address when it has one; else loopback for a client on loopback, and
   * otherwise the first non-internal address of the client's family.
   */
  advertisedAddress(sc: Address, client: Address): string {
    const configured = this.role.host.opts.classicAddress;
    if (configured) return configured;
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
}
