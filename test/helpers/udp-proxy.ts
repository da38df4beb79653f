/**
 * An in-process UDP proxy for real-socket tests, on loopback only: clients talk to the
 * proxy, the proxy talks to the server from one upstream socket per client (so the
 * server sees a distinct address per client). It can block (a partition), drop and
 * duplicate with a seeded generator, and rebind (the server then sees each client from
 * a new port, as after a NAT rebinding). No timers: nothing outlives close().
 */
import dgram from 'node:dgram';
import { Rng } from '../../src/testing/index.js';

interface Upstream {
  socket: dgram.Socket;
  client: { address: string; port: number };
}

export class UdpProxy {
  blocked = false;
  dropRate = 0;
  duplicateRate = 0;
  readonly counters = { forwarded: 0, dropped: 0, duplicated: 0 };
  private readonly front: dgram.Socket;
  private readonly upstreams = new Map<string, Upstream>();
  private readonly rng: Rng;
  private closed = false;

  private constructor(
    private readonly family: 'udp4' | 'udp6',
    private readonly host: string,
    private readonly target: { address: string; port: number },
    seed: number,
  ) {
    this.rng = new Rng(seed);
    this.front = dgram.createSocket(family);
    this.front.on('error', () => {});
    this.front.on('message', (msg, rinfo) => this.fromClient(msg, rinfo));
  }

  static async start(target: { address: string; port: number }, host = '127.0.0.1', seed = 1): Promise<UdpProxy> {
    const p = new UdpProxy(host.includes(':') ? 'udp6' : 'udp4', host, target, seed);
    await new Promise<void>((resolve) => p.front.bind(0, host, resolve));
    return p;
  }

  get port(): number {
    return this.front.address().port;
  }

  private pass(): number {
    if (this.blocked || this.rng.next() < this.dropRate) {
      this.counters.dropped++;
      return 0;
    }
    this.counters.forwarded++;
    if (this.rng.next() < this.duplicateRate) {
      this.counters.duplicated++;
      return 2;
    }
    return 1;
  }

  private upstreamFor(client: { address: string; port: number }): Upstream {
    const key = `${client.address}|${client.port}`;
    let up = this.upstreams.get(key);
    if (!up) {
      const socket = dgram.createSocket(this.family);
      socket.on('error', () => {});
      socket.bind(0, this.host);
      const u: Upstream = { socket, client };
      socket.on('message', (msg) => {
        if (this.closed || this.upstreams.get(key) !== u) return;
        for (let i = this.pass(); i > 0; i--) this.front.send(msg, client.port, client.address);
      });
      up = u;
      this.upstreams.set(key, up);
    }
    return up;
  }

  private fromClient(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    if (this.closed) return;
    const up = this.upstreamFor({ address: rinfo.address, port: rinfo.port });
    for (let i = this.pass(); i > 0; i--) up.socket.send(msg, this.target.port, this.target.address);
  }

  /** Every client's traffic leaves from a new port from now on. */
  rebind(): void {
    for (const [key, up] of this.upstreams) {
      up.socket.close();
      this.upstreams.delete(key);
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.front.close();
    this.rebind();
  }
}
