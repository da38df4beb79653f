/**
 * udpipe: connections over UDP for Node.js. The one public entry; `udpipe/testing`
 * adds the simulated network.
 */
export { UDPipe } from './api/udpipe.js';
export type { UDPipeEvents, EndpointStats, DropReason } from './api/events.js';
export { Peer, type Delivery, type PeerState, type PeerStats, type SendOptions } from './api/peer.js';
export type { UDPipeOptions, ReconnectOptions, Logger } from './api/options.js';
export { UDPipeError, type UDPipeErrorCode } from './errors.js';
export type { Address, Transport, DatagramSocket, SocketHooks, TimerHandle } from './transport/types.js';
export { MAX_MESSAGE_SIZE } from './wire/constants.js';
