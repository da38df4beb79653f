/**
 * What the driver needs from the outside world, and nothing more: a clock, randomness,
 * timers and datagram sockets. `node-transport.ts` implements it with node:dgram and
 * real time; `src/testing` implements it with a seeded simulated network in virtual
 * time. Everything above this interface runs identically on both.
 */

import type { Address } from '../protocol/address.js';

export type { Address };

export interface SocketHooks {
  /**
   * A datagram arrived. `bytes` are the receiver's from now on: the transport never
   * writes to them again (node:dgram gives each datagram its own buffer), so the core
   * keeps slices of them without a copy.
   */
  onDatagram(bytes: Uint8Array, from: Address): void;
  /** A socket error (for example ICMP port unreachable). Never fatal by itself. */
  onError(err: Error): void;
}

export interface DatagramSocket {
  /** The bound local address (port resolved if 0 was asked). */
  readonly local: Address;
  /**
   * Sends one datagram; failures are reported through SocketHooks.onError, never thrown.
   * `bytes` may be a view into a larger ArrayBuffer shared with other data (Node's Buffer
   * pool): send exactly bytes[0, bytes.length), never `bytes.buffer` whole.
   */
  send(bytes: Uint8Array, to: Address): void;
  /** Closes the socket; no hook is called afterwards. Idempotent. */
  close(): void;
  /**
   * Optional: from now on this socket talks to `to` only (a client and its server).
   * The kernel then skips the per-datagram route lookup, and datagrams from anyone else
   * are not delivered. send() still takes `to`.
   */
  connect?(to: Address): Promise<void>;
}

export interface TimerHandle {
  cancel(): void;
}

export interface Transport {
  /** Monotonic milliseconds (fractional allowed). */
  now(): number;
  /** n cryptographically random bytes (seeded in simulation). */
  randomBytes(n: number): Uint8Array;
  /** Runs fn once at time `at` (ms on this transport's clock) or as soon as possible after. */
  setTimer(at: number, fn: () => void): TimerHandle;
  /**
   * Binds a datagram socket. host undefined means all interfaces (IPv6 "::" with dual
   * stack when available, else "0.0.0.0"). Rejects with a UDPipeError-compatible Error
   * whose `code` is 'EADDRINUSE', 'EADDRNOTAVAIL', 'EACCES' or similar.
   */
  bind(port: number, host: string | undefined, hooks: SocketHooks): Promise<DatagramSocket>;
  /**
   * Runs fn soon, after the current synchronous work (a microtask on Node, an event at
   * the current virtual time in simulation). Used to coalesce a burst of send() calls
   * into full datagrams. Optional: the driver falls back to setTimer(now()).
   */
  defer?(fn: () => void): void;
  /** Resolves a host name to one address (IPv4 or IPv6 literal). */
  resolve(host: string): Promise<string>;
}
