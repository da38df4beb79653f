/**
 * The one error a wire decoder throws. Decoders are pure functions over bytes that came
 * off the network; whoever calls them catches this, drops the datagram and counts it.
 * It never reaches user code (docs/ARCHITECTURE.md, "Network bytes never throw").
 */
export class WireFormatError extends Error {
  override readonly name = 'WireFormatError';
}
