import { ClassicLink, type ClassicConfig } from '../protocol/classic.js';
import { CLASSIC_GO_AWAY, encodeClassicRedirect } from '../wire/classic.js';
import type { ConnectionEvent } from '../protocol/config.js';
import { Driver, type PumpTarget } from '../transport/driver.js';
import type { Address, Transport } from '../transport/types.js';

/** What the classic side of a server needs from its UDPipe. */
export interface ClassicHostOwner {
  readonly transport: Transport;
  autoStep(): boolean;
  config(): ClassicConfig;
  /** The host the private sockets bind to (the server's own host, or all interfaces). */
  bindHost(): string | undefined;
  /** The IP told to a client in `CONNECT <ip> <port>`. */
  advertisedAddress(privateSocket: Address, client: Address): string;
  /** Sends from the server's public socket. */
  sendPublic(bytes: Uint8Array, to: Address): void;
  /**
   * The link finished its handshake: the program meets the client now. False refuses
   * it after all (no room any more, or shutting down): the link closes unseen.
   */
  accepted(link: ClassicLink, client: Address, privateSocket: Address, hello: Uint8Array): boolean;
  event(link: ClassicLink, e: ConnectionEvent): void;
  /** The link is over and its socket closed. */
  released(link: ClassicLink): void;
  trace: PumpTarget['trace'];
  socketError(err: Error): void;
}

interface Entry {
  link: ClassicLink;
  client: Address;
  driver: Driver;
  /** The private socket's address, once bound. */
  local: Address | undefined;
  hello: Uint8Array;
  accepted: boolean;
  /** Finished its handshake but turned away (see ClassicHostOwner.accepted). */
  refused: boolean;
  /** Bound while autoStep is off: the redirect goes at the next step(). */
  redirectDue?: boolean;
}

/**
 * The classic clients of one server (docs/PROTOCOL.md, section 14): for each accepted
 * `HELLO <token>` a private socket (SC) on a new port with its own Driver and a
 * ClassicLink, the redirect sent from the public socket, and the link's events handed
 * to the UDPipe. Keyed by the client's address, so a repeated HELLO gets the same
 * private socket.
 */
export class ClassicHost {
  private readonly entries = new Map<string, Entry>();
  private readonly byLink = new Map<ClassicLink, Entry>();
  datagramsSent = 0;
  datagramsReceived = 0;

  constructor(private readonly owner: ClassicHostOwner) {}

  /** Links whose client has not said CONNECT yet (and are not over), per client IP address. */
  pendingByAddress(): Map<string, number> {
    const m = new Map<string, number>();
    for (const e of this.entries.values())
      if (!e.accepted && !e.refused && e.link.state === 'connecting') m.set(e.client.address, (m.get(e.client.address) ?? 0) + 1);
    return m;
  }

  /** All of them. */
  get pending(): number {
    let n = 0;
    for (const k of this.pendingByAddress().values()) n += k;
    return n;
  }

  /** Drops every link still in its handshake (the server is shutting down). */
  dropPending(): void {
    for (const e of [...this.entries.values()]) if (!e.accepted) this.release(e);
  }

  /** A link exists for this client address (a repeated HELLO). */
  has(from: Address): boolean {
    return this.entries.has(`${from.address}|${from.port}`);
  }

  /** A valid HELLO from `from` (token and room already checked by the caller). */
  hello(bytes: Uint8Array, from: Address): void {
    const key = `${from.address}|${from.port}`;
    const existing = this.entries.get(key);
    if (existing && existing.link.state !== 'closed') {
      // A repeated HELLO (our redirect was lost): the same private socket again.
      if (existing.local && !existing.accepted) this.redirect(existing);
      return;
    }
    // A client back after its connection ended: its old socket stops lingering.
    if (existing) this.release(existing);
    const transport = this.owner.transport;
    const link = new ClassicLink('server', this.owner.config(), transport.now());
    const entry: Entry = {
      link,
      client: { address: from.address, port: from.port },
      driver: undefined as unknown as Driver,
      local: undefined,
      hello: bytes,
      accepted: false,
      refused: false,
    };
    entry.driver = new Driver(transport, this.target(entry), this.owner.autoStep());
    this.entries.set(key, entry);
    this.byLink.set(link, entry);
    entry.driver.bind(0, this.owner.bindHost()).then(
      async (local) => {
        entry.local = local;
        await entry.driver.connect(entry.client).catch(() => {});
        // With autoStep off nothing goes out outside step(): the redirect waits for it.
        if (this.owner.autoStep()) this.redirect(entry);
        else entry.redirectDue = true;
        entry.driver.pump();
      },
      (err: Error) => {
        if (this.entries.get(key) === entry) this.entries.delete(key);
        this.byLink.delete(link);
        this.owner.socketError(err);
      },
    );
  }

  private redirect(e: Entry): void {
    this.owner.sendPublic(encodeClassicRedirect(this.owner.advertisedAddress(e.local!, e.client), e.local!.port), e.client);
    this.owner.sendPublic(CLASSIC_GO_AWAY, e.client);
    this.datagramsSent += 2;
  }

  private target(e: Entry): PumpTarget {
    return {
      handleDatagram: (bytes, from, now) => {
        // The socket is connected to the client where the transport can; check anyway.
        if (from.address !== e.client.address || from.port !== e.client.port) return;
        this.datagramsReceived++;
        e.link.handleDatagram(bytes, now);
      },
      handleTimeout: (now) => e.link.handleTimeout(now),
      pollTransmit: () => {
        const bytes = e.link.pollTransmit();
        if (!bytes) return null;
        this.datagramsSent++;
        return { bytes, to: e.client };
      },
      nextDeadline: () => e.link.nextDeadline(),
      deliverEvents: () => {
        let n = 0;
        if (!e.accepted && !e.refused && (e.link.state === 'connected' || e.link.state === 'stalled')) {
          if (this.owner.accepted(e.link, e.client, e.local!, e.hello)) e.accepted = true;
          else {
            e.refused = true;
            e.link.close(this.owner.transport.now(), 'shutdown');
          }
          n++;
        }
        for (let ev = e.link.pollEvent(); ev; ev = e.link.pollEvent(), n++) {
          // A client that never finished the handshake ends unseen.
          if (e.accepted) this.owner.event(e.link, ev);
        }
        return n;
      },
      afterPump: () => {
        if (e.link.finished) this.release(e);
      },
      trace: this.owner.trace,
      onSocketError: (err) => this.owner.socketError(err),
    };
  }

  private release(e: Entry): void {
    const key = `${e.client.address}|${e.client.port}`;
    if (this.entries.get(key) !== e) return;
    this.entries.delete(key);
    this.byLink.delete(e.link);
    e.driver.stop();
    this.owner.released(e.link);
  }

  /** The Driver of a link, to flush after the program sent or closed. */
  kick(link: ClassicLink): void {
    this.byLink.get(link)?.driver.kick();
  }

  /** Forces a flush now (close paths, where the caller waits on the result). */
  pump(link: ClassicLink): void {
    this.byLink.get(link)?.driver.pump(true);
  }

  step(): void {
    for (const e of [...this.entries.values()]) {
      if (e.redirectDue) {
        e.redirectDue = false;
        this.redirect(e);
      }
      e.driver.step();
    }
  }

  /** Stops every private socket at once (the server is going away hard). */
  stopAll(): void {
    for (const e of this.entries.values()) e.driver.stop();
    this.entries.clear();
    this.byLink.clear();
  }
}
