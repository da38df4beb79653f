import type { RttEstimator } from '../../reliability/rtt.js';
import type { ConnectionState } from '../config.js';
import type { PmtuStats } from '../path-mtu.js';

/** A connection's own counters; the parts that count write here. */
export class ConnectionCounters {
  /** Reliable messages larger than maxMessageSize, dropped. */
  oversized = 0;
  superseded = 0;
  stale = 0;
  refused = 0;
  refusedByPeer = 0;
  datagramsSent = 0;
  datagramsReceived = 0;
  bytesSent = 0;
  bytesReceived = 0;
  messagesSent = 0;
  messagesReceived = 0;
  malformed = 0;
  duplicates = 0;
  ackElicitingSent = 0;
}

export interface ConnectionStats {
  state: ConnectionState;
  rtt: ReturnType<RttEstimator['toJSON']>;
  datagramsSent: number;
  datagramsReceived: number;
  bytesSent: number;
  bytesReceived: number;
  messagesSent: number;
  messagesReceived: number;
  retransmissions: number;
  packetsLost: number;
  /** Lost ack-eliciting packets / ack-eliciting packets sent. */
  lossRate: number;
  queueLength: number;
  /** Bytes queued: reliable until acknowledged, unreliable until sent. */
  queuedBytes: number;
  bytesInFlight: number;
  congestion: Record<string, number | string>;
  malformed: number;
  duplicates: number;
  /** Unreliable messages that lost a part and were given up whole. */
  unreliableDropped: number;
  /** Reliable units not taken for lack of reassembly memory (their packets go unacknowledged and come again). */
  refused: number;
  /** Our packets the peer refused for lack of memory (REFUSED): their units wait and go again, not counted as lost. */
  refusedByPeer: number;
  /** Sequenced messages replaced by a newer one of their channel before they went out. */
  sequencedSuperseded: number;
  /** Sequenced messages that arrived after a newer one of their channel and were dropped. */
  sequencedStale: number;
  /** Path MTU search: the datagram size in use, its ceiling, probes sent and lost. */
  pmtu: PmtuStats;
}
