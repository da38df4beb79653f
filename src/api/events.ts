import type { ClientState } from '../protocol/client.js';
import type { ServerCounters } from '../protocol/server.js';
import type { Delivery, Peer, PeerStats } from './peer.js';

/** Arguments of each event; the callback `on<Name>` gets the same ones. */
export interface UDPipeEvents {
  /** Server: a client completed the handshake. msg is the handshake's name; ip/port are ours, ipc/portc the client's. */
  newClient: [msg: string, ip: string, port: number, ipc: string, portc: number, peer: Peer];
  newMessage: [msg: Buffer, sock: Peer, info: { reliable: boolean; channel: number; delivery: Delivery }];
  /** The connection timed out (no packet for timeoutMs). */
  disconnect: [sock: Peer];
  /** Server: a new client; client: connected to the server. ip/port: the other side's. */
  connect: [sock: Peer, ip: string, port: number];
  /** The connection was closed by either side (CLOSE/CLOSED). */
  close: [sock: Peer, reason: string];
  /** Client: the server answered; completing the handshake. */
  connecting: [sock: Peer, ip: string, port: number];
  stalled: [sock: Peer];
  unstalled: [sock: Peer];
  /** Server: a client was refused because maxClients are connected. */
  maxClients: [msg: string, ip: string, port: number];
  pong: [sock: Peer, rttMs: number];
  ping: [sock: Peer];
  /** Server: a client proved a different token and was refused. */
  badToken: [msg: string, ip: string, port: number];
  error: [err: Error];
  /** A send() that returned false is now below maxQueue. */
  drain: [sock: Peer];
  /**
   * A message send() or sendAll() did not queue for `sock`, and why: 'queue-full' (the
   * peer is 8x past maxQueue or highWaterMark, or the server's maxQueuedBytes is used up:
   * a peer that does not acknowledge cannot make us hold more), 'closing' (the peer's
   * connection is ending), 'classic' (sendAll: a Lua client cannot take this message).
   */
  dropped: [sock: Peer, msg: Buffer, reason: DropReason];
}

export type DropReason = 'queue-full' | 'closing' | 'classic';

export type EventName = keyof UDPipeEvents;

/** The seed's callback method for each event ('' for events the seed did not have). */
export const CALLBACK: { [K in EventName]: string } = {
  newClient: 'onNewClient',
  newMessage: 'onNewMessage',
  disconnect: 'onDisconnect',
  connect: 'onConnect',
  close: 'onClose',
  connecting: 'onConnecting',
  stalled: 'onStalled',
  unstalled: 'onUnstalled',
  maxClients: 'onMaxClients',
  pong: 'onPong',
  ping: 'onPing',
  badToken: 'onBadToken',
  error: '',
  drain: '',
  dropped: '',
};

/** stats() without a peer: the endpoint's own counters. */
export type EndpointStats =
  | ({
      role: 'server';
      connections: number;
      droppedUnstepped: number;
      /** Messages send()/sendAll() did not queue (the 'dropped' event), all peers together. */
      sendDropped: number;
      /** Bytes queued for all peers together, and the limit (maxQueuedBytes). */
      queued: { bytes: number; limit: number };
      /**
       * Reassembly memory shared by all connections: in use, the peak, the limit, requests refused at it, and
       * parked sessions forgotten to make room for live connections (their clients start new sessions).
       */
      reassembly: { bytes: number; peak: number; limit: number; refused: number; evictedSessions: number };
    } & ServerCounters)
  | {
      role: 'client';
      state: ClientState;
      datagramsSent: number;
      datagramsReceived: number;
      malformed: number;
      queued: number;
      connection: PeerStats | undefined;
    }
  | { role: 'none' };
