import type { Reason } from '../wire/constants.js';

/** Tunables of one connection, in milliseconds; validated by the API layer (src/api/options.ts). */
export interface ConnectionConfig {
  pingIntervalMs: number;
  stallTimeoutMs: number;
  timeoutMs: number;
  maxQueue: number;
  /** send() returns false once this many bytes are queued (reliable until acknowledged). */
  highWaterMark: number;
  /** How long to wait for an ACK before acknowledging alone (we promise the peer this bound). */
  maxAckDelayMs: number;
  initialRttMs: number;
  /** How long close() may take to flush what is queued and hear CLOSED back. */
  closeTimeoutMs: number;
  /** Largest reliable message, sent or accepted; reassembly never holds more than this. */
  maxMessageSize: number;
  /**
   * Ceiling of the path MTU search, in bytes of UDP payload; undefined picks one from
   * the peer's address (src/protocol/path-mtu.ts).
   */
  maxDatagramSize?: number | undefined;
  /**
   * Bytes that all of an endpoint's connections together may hold for reassembly
   * (out-of-order units, half-built messages); src/reliability/budget.ts.
   */
  maxReassemblyBytes: number;
}

export const DEFAULT_CONNECTION_CONFIG: ConnectionConfig = {
  pingIntervalMs: 1000,
  stallTimeoutMs: 3000,
  timeoutMs: 10_000,
  maxQueue: 1024,
  highWaterMark: 4 * 1024 * 1024,
  maxAckDelayMs: 10,
  initialRttMs: 100,
  closeTimeoutMs: 5000,
  maxMessageSize: 16 * 1024 * 1024,
  maxReassemblyBytes: 256 * 1024 * 1024,
};

/** A connection's visible state; every change goes through Connection.transition. */
export type ConnectionState = 'connected' | 'stalled' | 'closing' | 'closed';

export type ConnectionEvent =
  | { type: 'message'; data: Uint8Array; reliable: boolean; channel: number; sequenced: boolean; unordered?: boolean }
  | { type: 'ping' }
  | { type: 'pong'; rttMs: number }
  | { type: 'stalled' }
  | { type: 'unstalled' }
  | { type: 'drain' }
  /** The peer answered our PATH_CHALLENGE at its new address (the endpoint handles it). */
  | { type: 'path-validated' }
  /** Three PATH_CHALLENGEs went unanswered: the endpoint moves back to the old address. */
  | { type: 'path-failed' }
  /** The connection ended. 'timeout' is the disconnect of the seed; others come from CLOSE. */
  | { type: 'ended'; reason: Reason; byPeer: boolean }
  | { type: 'state'; from: ConnectionState; to: ConnectionState; why: string };
