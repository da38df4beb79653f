/**
 * A sans-I/O server and clients wired back to back with no latency, in virtual time, for
 * handshake tests: every datagram can be watched (tap), dropped (cut) or injected.
 */
import { deriveTokenKey } from '../../src/crypto/handshake-keys.js';
import { ClientEndpoint, type ClientConfig } from '../../src/protocol/client.js';
import { DEFAULT_CONNECTION_CONFIG } from '../../src/protocol/config.js';
import { ServerEndpoint, type ServerConfig } from '../../src/protocol/server.js';
import type { Address } from '../../src/protocol/address.js';
import { Rng } from '../../src/testing/index.js';

/** Datagrams one pollTransmit loop may give before the harness calls it a bug (one that sends for ever would hang the suite). */
const MAX_POLLS = 100_000;
export const KEY = deriveTokenKey('shared game token');
export const SERVER: Address = { address: '127.0.1.1', port: 9000 };
const CONN = { ...DEFAULT_CONNECTION_CONFIG, pingIntervalMs: 100, stallTimeoutMs: 400, timeoutMs: 1500 };

export interface Client {
  ep: ClientEndpoint;
  at: Address;
  /** Messages the program got, as text. */
  got: string[];
  /** Every event, as its type ('ended:<reason>' for a connection's end, the connection event's type for others). */
  events: string[];
  /** Datagrams to and from this client are dropped while true. */
  cut: boolean;
}

/** A server and clients wired back to back with no latency; every datagram is seen by `tap`. */
export class Pair {
  readonly rng: Rng;
  server: ServerEndpoint;
  readonly clients: Client[] = [];
  readonly atServer: string[] = [];
  now = 0;
  tap: (bytes: Uint8Array, from: Address, to: Address) => void = () => {};
  /** Return false to drop a datagram (after tap saw it). */
  pass: (bytes: Uint8Array, from: Address, to: Address) => boolean = () => true;

  constructor(
    seed: number,
    private readonly encrypt: boolean,
  ) {
    this.rng = new Rng(seed);
    this.server = this.newServer();
  }

  /** A server with this pair's token, as a fresh process would start it (`patch` on top). */
  newServer(patch: Partial<ServerConfig> = {}): ServerEndpoint {
    const cfg: ServerConfig = {
      ...CONN,
      tokenKey: KEY,
      maxClients: 8,
      maxClientsPerAddress: 8,
      sessionLingerMs: 30_000,
      encrypt: this.encrypt,
      handshakesPerSecond: 0,
      ...patch,
    };
    return new ServerEndpoint(cfg, (n) => this.rng.bytes(n), this.now);
  }

  client(host: string, patch: Partial<ClientConfig> = {}): Client {
    const cfg: ClientConfig = {
      ...CONN,
      tokenKey: KEY,
      encrypt: this.encrypt,
      handshakeRetryMs: 100,
      reconnect: { enabled: true, minDelayMs: 20, maxDelayMs: 200 },
      ...patch,
    };
    const c: Client = {
      ep: new ClientEndpoint(cfg, (n) => this.rng.bytes(n)),
      at: { address: host, port: 40_000 + this.clients.length },
      got: [],
      events: [],
      cut: false,
    };
    this.clients.push(c);
    return c;
  }

  /** Hands a datagram to the server as if it came from `from`. */
  inject(bytes: Uint8Array, from: Address): void {
    this.server.handleDatagram(bytes, from, this.now);
  }

  run(ms: number): void {
    const end = this.now + ms;
    for (; this.now <= end; this.now += 5) {
      for (const c of this.clients) {
        if (c.ep.state === 'idle') continue;
        c.ep.handleTimeout(this.now);
        for (let d = c.ep.pollTransmit(this.now), n = 0; d; d = c.ep.pollTransmit(this.now)) {
          if (++n > MAX_POLLS) throw new Error(`pair: a client gave more than ${MAX_POLLS} datagrams in one poll at ${this.now} ms`);
          this.tap(d, c.at, SERVER);
          if (!c.cut && this.pass(d, c.at, SERVER)) this.server.handleDatagram(d, c.at, this.now);
        }
        for (let e = c.ep.pollEvent(); e; e = c.ep.pollEvent()) {
          if (e.type === 'connection' && e.event.type === 'message') c.got.push(Buffer.from(e.event.data).toString());
          c.events.push(e.type !== 'connection' ? e.type : e.event.type === 'ended' ? `ended:${e.event.reason}` : e.event.type);
        }
      }
      this.server.handleTimeout(this.now);
      for (let o = this.server.pollTransmit(this.now), n = 0; o; o = this.server.pollTransmit(this.now)) {
        if (++n > MAX_POLLS) throw new Error(`pair: the server gave more than ${MAX_POLLS} datagrams in one poll at ${this.now} ms`);
        this.tap(o.bytes, SERVER, o.to);
        const c = this.clients.find((x) => x.at.address === o.to.address && x.at.port === o.to.port);
        if (c && !c.cut && this.pass(o.bytes, SERVER, o.to)) c.ep.handleDatagram(o.bytes, this.now);
      }
      for (let e = this.server.pollEvent(); e; e = this.server.pollEvent()) {
        if (e.type === 'connection' && e.event.type === 'message') this.atServer.push(Buffer.from(e.event.data).toString());
      }
    }
  }

  /** The server's live connection to a client at `at`, if any. */
  connIdAt(at: Address): number | undefined {
    return this.server.connIds().find((id) => this.server.connection(id)?.state !== 'closed' && this.addressOf(id)?.port === at.port);
  }

  private addressOf(id: number): Address | undefined {
    return (this.server as unknown as { peers: Map<number, { address: Address }> }).peers.get(id)?.address;
  }
}
