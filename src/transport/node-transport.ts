import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { lookup as dnsLookup, type LookupOneOptions } from 'node:dns';
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Address, DatagramSocket, SocketHooks, TimerHandle, Transport } from './types.js';

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string, family: number) => void;

/** Destinations a socket's literalLookup answers at once; forgotten all at once when full. */
const MAX_KNOWN = 4096;

/**
 * A lookup for node:dgram that answers the IP literals this socket sent to before at
 * once. dgram passes the address of every send() through the socket's lookup, and
 * dns.lookup answers even a literal on the next tick: a tick and a closure per datagram.
 * Anything else (the bind address, a name) goes to dns.lookup as before, so binding
 * still reports its errors asynchronously.
 */
function literalLookup(known: Map<string, number>) {
  // dgram passes the family as a number (4 or 6); the types allow dns.lookup's options too.
  return (host: string, family: number | LookupOneOptions, cb: LookupCallback): void => {
    const f = known.get(host);
    if (f !== undefined) cb(null, host, f);
    else if (typeof family === 'number') dnsLookup(host, family, cb);
    else dnsLookup(host, family, cb);
  };
}

/** Notes `address` as a literal literalLookup may answer, if it is one. */
function remember(known: Map<string, number>, address: string): void {
  const f = isIP(address);
  if (f === 0) return;
  if (known.size >= MAX_KNOWN) known.clear();
  known.set(address, f);
}

/**
 * The real world: node:dgram, performance.now(), crypto randomness and one Node timer
 * per armed deadline. The only file of the library that touches sockets and clocks.
 */
export class NodeTransport implements Transport {
  now(): number {
    return performance.now();
  }

  randomBytes(n: number): Uint8Array {
    return new Uint8Array(randomBytes(n));
  }

  setTimer(at: number, fn: () => void): TimerHandle {
    const wait = at - performance.now();
    if (wait < 1) {
      // setTimeout waits at least 1 ms: a deadline microseconds away (the pacer's next
      // send, a loss timer just due) would cost a whole millisecond. setImmediate runs
      // after the I/O already waiting; if it comes early, nothing is due and the
      // driver arms again.
      const t = setImmediate(fn);
      return { cancel: () => clearImmediate(t) };
    }
    const t = setTimeout(fn, Math.ceil(wait));
    return { cancel: () => clearTimeout(t) };
  }

  defer(fn: () => void): void {
    queueMicrotask(fn);
  }

  async resolve(host: string): Promise<string> {
    if (isIP(host)) return host;
    const r = await lookup(host);
    return r.address;
  }

  async bind(port: number, host: string | undefined, hooks: SocketHooks): Promise<DatagramSocket> {
    if (host !== undefined) return this.bindOne(port, host, hooks);
    try {
      // All interfaces: IPv6 with IPv4-mapped addresses where the machine has IPv6...
      return await this.bindOne(port, '::', hooks);
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code !== 'EAFNOSUPPORT' && code !== 'EADDRNOTAVAIL' && code !== 'EINVAL') throw err;
      // ...and plain IPv4 where it has none.
      return this.bindOne(port, '0.0.0.0', hooks);
    }
  }

  private bindOne(port: number, host: string, hooks: SocketHooks): Promise<DatagramSocket> {
    const v6 = isIP(host) === 6;
    // Bigger kernel buffers absorb bursts; the kernel caps them at net.core.*mem_max.
    const known = new Map<string, number>();
    const sock = dgram.createSocket({
      type: v6 ? 'udp6' : 'udp4',
      ipv6Only: false,
      recvBufferSize: 4 << 20,
      sendBufferSize: 4 << 20,
      lookup: literalLookup(known),
    });
    return new Promise((resolve, reject) => {
      let bound = false;
      let closed = false;
      sock.once('error', (err) => {
        if (bound) return;
        sock.close();
        reject(err);
      });
      sock.on('error', (err) => {
        // After binding, errors (ICMP port unreachable, EMSGSIZE...) are reported, never fatal.
        if (bound && !closed) hooks.onError(err);
      });
      sock.on('message', (msg, rinfo) => {
        if (!closed) hooks.onDatagram(msg, { address: rinfo.address, port: rinfo.port });
      });
      sock.bind({ port, address: host, exclusive: true }, () => {
        bound = true;
        const a = sock.address();
        let connected = false;
        resolve({
          local: { address: a.address, port: a.port },
          send(bytes: Uint8Array, to: Address): void {
            if (closed) return;
            // No callback: Node then sends at once where it can, and a failure arrives as
            // the socket's 'error' event, which goes to hooks.onError above. A connected
            // socket takes no address (and costs half as much per datagram).
            if (connected) sock.send(bytes);
            else {
              if (!known.has(to.address)) remember(known, to.address);
              sock.send(bytes, to.port, to.address);
            }
          },
          connect(to: Address): Promise<void> {
            return new Promise((done) => {
              if (closed) return done();
              try {
                sock.connect(to.port, to.address, () => {
                  connected = !closed;
                  done();
                });
              } catch {
                done(); // stays unconnected: sends carry the address
              }
            });
          },
          close(): void {
            if (closed) return;
            closed = true;
            try {
              sock.close();
            } catch {
              // already closed by the runtime: nothing to do
            }
          },
        });
      });
    });
  }
}
