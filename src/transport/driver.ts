import type { Address, DatagramSocket, TimerHandle, Transport } from './types.js';

/** What the driver pumps: a sans-I/O endpoint, seen through the same four calls. */
export interface PumpTarget {
  handleDatagram(bytes: Uint8Array, from: Address, now: number): void;
  handleTimeout(now: number): void;
  pollTransmit(now: number): { bytes: Uint8Array; to: Address } | null;
  nextDeadline(): number;
  /** Delivers the endpoint's buffered events to the program (callbacks run here); returns how many. */
  deliverEvents(): number;
  /** Debug hook, one line per datagram; undefined when debug is off. */
  trace?: ((dir: 'in' | 'out', bytes: Uint8Array, peer: Address) => void) | undefined;
  onSocketError(err: Error): void;
  /** Called once a pump has sent everything due. */
  afterPump?: (() => void) | undefined;
}

/** With autoStep off, datagrams wait for step(); past this many they are dropped and counted. */
const MAX_BUFFERED_DATAGRAMS = 8192;

/**
 * Binds a sans-I/O endpoint to a Transport: feeds it datagrams and timeouts, sends what
 * it produces, hands its events to the API layer, and keeps exactly one timer armed
 * for its earliest deadline. With autoStep off, nothing happens outside step().
 */
export class Driver {
  private socket: DatagramSocket | undefined;
  private timer: TimerHandle | undefined;
  private armedAt = Infinity;
  private pumping = false;
  private again = false;
  private flushScheduled = false;
  private readonly inbox: { bytes: Uint8Array; from: Address }[] = [];
  /** Datagrams dropped because step() was not called often enough. */
  overflowed = 0;
  stopped = false;

  constructor(
    readonly transport: Transport,
    private readonly target: PumpTarget,
    private autoStep: boolean,
  ) {}

  get local(): Address | undefined {
    return this.socket?.local;
  }

  now(): number {
    return this.transport.now();
  }

  async bind(port: number, host: string | undefined): Promise<Address> {
    const socket = await this.transport.bind(port, host, {
      onDatagram: (bytes, from) => this.onDatagram(bytes, from),
      onError: (err) => this.target.onSocketError(err),
    });
    if (this.stopped) {
      // Closed while we were binding: do not leak the socket.
      socket.close();
      throw Object.assign(new Error('closed while binding'), { code: 'ERR_CLOSED' });
    }
    this.socket = socket;
    return socket.local;
  }

  /** Sends one datagram outside the endpoint (the classic protocol's redirect from the public socket). */
  sendRaw(bytes: Uint8Array, to: Address): void {
    if (this.stopped || !this.socket) return;
    this.target.trace?.('out', bytes, to);
    this.socket.send(bytes, to);
  }

  /** Ties the socket to one peer where the transport can (a client and its server). */
  async connect(to: Address): Promise<void> {
    await this.socket?.connect?.(to);
  }

  private onDatagram(bytes: Uint8Array, from: Address): void {
    if (this.stopped) return;
    // No copy: the bytes are ours (SocketHooks.onDatagram).
    if (!this.autoStep) {
      if (this.inbox.length >= MAX_BUFFERED_DATAGRAMS) this.overflowed++;
      else this.inbox.push({ bytes, from });
      return;
    }
    this.target.trace?.('in', bytes, from);
    this.target.handleDatagram(bytes, from, this.transport.now());
    this.pump();
  }

  /**
   * The program changed something (send, close, ping): flush soon, once, so that a
   * burst of sends in one tick shares datagrams.
   */
  kick(): void {
    if (!this.autoStep || this.stopped || this.flushScheduled) return;
    this.flushScheduled = true;
    const run = (): void => {
      this.flushScheduled = false;
      this.pump();
    };
    if (this.transport.defer) this.transport.defer(run);
    else this.transport.setTimer(this.transport.now(), run);
  }

  /** The seed's step(): handle what arrived, run due timers, deliver events. */
  step(): void {
    if (this.stopped) return;
    const now = this.transport.now();
    for (const d of this.inbox.splice(0)) {
      this.target.trace?.('in', d.bytes, d.from);
      this.target.handleDatagram(d.bytes, d.from, now);
    }
    this.target.handleTimeout(now);
    this.pump(true);
  }

  setAutoStep(on: boolean): void {
    this.autoStep = on;
    if (on) {
      this.step();
    } else {
      this.timer?.cancel();
      this.timer = undefined;
      this.armedAt = Infinity;
    }
  }

  /** Delivers events and sends everything due until both are quiet, then re-arms the timer. */
  pump(force = false): void {
    if ((!this.autoStep && !force) || this.stopped) return;
    if (this.pumping) {
      this.again = true; // a callback sent something: the outer loop picks it up
      return;
    }
    this.pumping = true;
    try {
      // Until a pass raises no event: events first, so what the program sends from its
      // callbacks (a reply, say) shares a datagram with our acknowledgement; sending
      // may raise events in turn (drain, closed).
      for (let events = 1; (events > 0 || this.again) && !this.stopped; ) {
        this.again = false;
        events = this.target.deliverEvents();
        const now = this.transport.now();
        for (let t = this.target.pollTransmit(now); t; t = this.target.pollTransmit(now)) {
          this.target.trace?.('out', t.bytes, t.to);
          this.socket?.send(t.bytes, t.to);
        }
      }
    } finally {
      this.pumping = false;
    }
    this.target.afterPump?.();
    this.arm();
  }

  /**
   * Arms the timer for the endpoint's next deadline, lazily: a timer set for earlier
   * stays, fires, finds nothing due and arms again (handleTimeout is harmless when
   * nothing is due; step() calls it every time). A server's earliest deadline moves
   * later with nearly every datagram (a PING arrives, the ping timer moves); re-arming
   * each time cost a clearTimeout and a setTimeout per datagram, 10,000 a second with
   * 10,000 idle clients, for a timer that never fired.
   */
  private arm(): void {
    if (!this.autoStep || this.stopped) return;
    const at = this.target.nextDeadline();
    // Keep the timer when nothing changed, or when it is set for earlier; cancel it only when nothing is due at all.
    if (at === this.armedAt || (at > this.armedAt && at !== Infinity)) return;
    this.timer?.cancel();
    this.timer = undefined;
    this.armedAt = at;
    if (at === Infinity) return;
    this.timer = this.transport.setTimer(at, () => {
      this.timer = undefined;
      this.armedAt = Infinity;
      if (this.stopped) return;
      this.target.handleTimeout(this.transport.now());
      this.pump();
    });
  }

  /** Stops everything and closes the socket. */
  stop(): void {
    this.stopped = true;
    this.timer?.cancel();
    this.timer = undefined;
    this.socket?.close();
    this.inbox.length = 0;
  }
}
