import type { ConnectionConfig, ConnectionEvent } from '../protocol/config.js';
import type { PumpTarget } from '../transport/driver.js';
import type { Address } from '../transport/types.js';
import type { DropReason, EndpointStats, EventName, UDPipeEvents } from './events.js';
import type { ResolvedOptions } from './options.js';
import type { Peer, PeerOwner } from './peer.js';

/** How send() was asked to deliver a message (checked by the facade). */
export interface SendHow {
  reliable: boolean;
  channel: number;
  sequenced: boolean;
  unordered: boolean;
}

/** What a role needs from the UDPipe that made it: its settings and its way to the program. */
export interface RoleHost {
  /** The Peer objects' owner (the UDPipe): a peer's send() and close() go there. */
  readonly owner: PeerOwner;
  /** Shared with the UDPipe: setDebug() and setToken() change it in place. */
  readonly opts: ResolvedOptions;
  /** Shared with every connection: setTimeout() changes it in place. */
  readonly connCfg: ConnectionConfig;
  /** Calls the seed's callback, then emits the event; a throwing callback cannot break our state. */
  fire<K extends EventName>(name: K, ...args: UDPipeEvents[K]): void;
  /** A debug line (only with debug on). */
  log(line: string): void;
  trace: PumpTarget['trace'];
  socketError(err: Error): void;
}

/**
 * What start() or connect() made: a UDPipe is a facade over one of these. Messages and
 * options reach a role checked; the role decides what its side can do with them.
 */
export interface Role {
  readonly kind: 'server' | 'client';
  /** close() was called, or the client gave up: nothing will start again. */
  readonly closed: boolean;
  readonly local: Address | undefined;
  readonly clients: Peer[];
  /** New timeouts or token key, for the connections there are and those to come. */
  configure(patch: Partial<ConnectionConfig> & { tokenKey?: Uint8Array; token?: string }): void;
  send(bytes: Uint8Array, how: SendHow, sock: Peer | undefined): boolean;
  ping(sock: Peer | undefined): void;
  step(): void;
  close(sock: Peer | undefined): Promise<void>;
  sentPackets(): number;
  receivedPackets(): number;
  stats(): EndpointStats;
}

/** A send() past this many times maxQueue or highWaterMark is dropped instead of queued (docs/SECURITY.md). */
const HARD_QUEUE_FACTOR = 8;

export function overHardLimit(cfg: ConnectionConfig, length: number, bytes: number): boolean {
  return length >= cfg.maxQueue * HARD_QUEUE_FACTOR || bytes >= cfg.highWaterMark * HARD_QUEUE_FACTOR;
}

/**
 * A message not queued for `sock`: counted, logged, and told to the program. What a
 * peer does (not acknowledging, closing) never makes send() throw: the program learns
 * from false and this event, and the process goes on.
 */
export function dropMessage(host: RoleHost, sock: Peer, bytes: Uint8Array, reason: DropReason): false {
  sock.sendDropped++;
  host.log(`not queued for ${sock} (${reason}): ${bytes.length} bytes`);
  host.fire('dropped', sock, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), reason);
  return false;
}

/** The program's callbacks and events for what one connection reported; both roles and classic links share it. */
export function fireConnectionEvent(host: RoleHost, peer: Peer, e: ConnectionEvent): void {
  switch (e.type) {
    case 'message':
      host.fire('newMessage', Buffer.from(e.data.buffer, e.data.byteOffset, e.data.byteLength), peer, {
        reliable: e.reliable,
        channel: e.channel,
        delivery: e.reliable ? (e.unordered ? 'reliable-unordered' : 'reliable') : e.sequenced ? 'unreliable-sequenced' : 'unreliable',
      });
      return;
    case 'ping':
      host.fire('ping', peer);
      return;
    case 'pong':
      host.fire('pong', peer, e.rttMs);
      return;
    case 'stalled':
      host.fire('stalled', peer);
      return;
    case 'unstalled':
      host.fire('unstalled', peer);
      return;
    case 'drain':
      host.fire('drain', peer);
      return;
    case 'state':
      host.log(`${peer} ${e.from} -> ${e.to} (${e.why})`);
      return;
    case 'ended':
      if (e.reason === 'timeout') host.fire('disconnect', peer);
      else host.fire('close', peer, e.reason);
      return;
    case 'path-validated':
    case 'path-failed':
      return;
  }
}
