/**
 * `udpipe/testing`: a seeded simulated network in virtual time. Give a UDPipe
 * `{ transport: net.transport(host) }` and drive time with `net.advance(ms)`.
 */
export { SimNetwork, type LinkConditions, type SimNetworkOptions, type CapturedDatagram, type Fate } from './network.js';
export { Rng } from './random.js';
