import type { Address, DatagramSocket, SocketHooks, TimerHandle, Transport } from '../transport/types.js';
import { Rng } from './random.js';

/** How one direction of a simulated link treats datagrams. Every field is optional. */
export interface LinkConditions {
  /** One-way base delay. Default 1 ms. */
  latencyMs?: number;
  /** Extra delay, uniform in [0, jitterMs). Default 0. */
  jitterMs?: number;
  /** Independent loss probability, 0..1. Default 0. */
  loss?: number;
  /** Gilbert-Elliott bursts: enter the bad state with enterProbability per datagram, leave with exitProbability; in it, datagrams are lost with `loss` (default 1). */
  burst?: { enterProbability: number; exitProbability: number; loss?: number };
  /** Probability a datagram is delivered twice (each copy with its own delay). */
  duplicate?: number;
  /** Probability a datagram is held back by up to reorderDelayMs (default 3 x latency), so later ones overtake it. */
  reorder?: number;
  reorderDelayMs?: number;
  /** Probability that one to three bytes of a datagram are flipped. */
  corrupt?: number;
  /** Datagrams larger than this are dropped. Default 65507. */
  mtu?: number;
}

export interface SimNetworkOptions {
  seed: number;
  conditions?: LinkConditions;
  /** Record every datagram and its fate in `captured` (bounded). Default false. */
  capture?: boolean;
  /** A datagram to a port nobody listens on reports ECONNREFUSED to its sender, as Linux does. Default false. */
  icmpUnreachable?: boolean;
  /** A run that processes more events than this throws (a livelock guard). Default 5 000 000. */
  maxEventsPerRun?: number;
}

export type Fate = 'delivered' | 'lost' | 'partition' | 'unreachable' | 'mtu';

export interface CapturedDatagram {
  t: number;
  from: Address;
  to: Address;
  bytes: Uint8Array;
  fate: Fate;
}

const MAX_CAPTURE = 1_000_000;

interface Event {
  t: number;
  seq: number;
  fn: () => void;
}

interface SimSocket {
  host: string;
  port: number;
  /** The port the world sees (changes on rebind). */
  publicPort: number;
  hooks: SocketHooks;
  closed: boolean;
}

const key = (host: string, port: number): string => `${host}|${port}`;

function codeError(code: string, message: string): Error {
  return Object.assign(new Error(message), { code });
}

/**
 * A seeded network in virtual time. Hosts are IP strings; each gets a `Transport` whose
 * clock, timers and randomness are this network's, so a UDPipe given that transport
 * runs with no real time passing and replays exactly from the seed.
 */
export class SimNetwork {
  private t = 0;
  private seqNo = 0;
  private readonly heap: Event[] = [];
  private readonly rng: Rng;
  private readonly hostRng = new Map<string, Rng>();
  private readonly transports = new Map<string, Transport>();
  private readonly sockets = new Map<string, SimSocket>();
  private readonly nextPort = new Map<string, number>();
  private readonly conditions = new Map<string, LinkConditions>();
  private readonly badState = new Map<string, boolean>();
  private readonly partitions: { a: string; b: string | undefined; from: number; to: number }[] = [];
  /** Datagrams still to drop per directed link (dropNext). */
  private readonly toDrop = new Map<string, number>();
  private readonly maxEvents: number;
  readonly captured: CapturedDatagram[] = [];
  /** Exceptions thrown by code run from the network's events; rethrown at the end of the run. */
  readonly errors: unknown[] = [];
  readonly stats = {
    sent: 0,
    delivered: 0,
    dropped: 0,
    droppedBurst: 0,
    droppedPartition: 0,
    duplicated: 0,
    corrupted: 0,
    reordered: 0,
    unreachable: 0,
    bytesSent: 0,
    bytesDelivered: 0,
  };

  constructor(private readonly opts: SimNetworkOptions) {
    this.rng = new Rng(opts.seed);
    this.maxEvents = opts.maxEventsPerRun ?? 5_000_000;
    if (opts.conditions) this.conditions.set('*', opts.conditions);
  }

  get seed(): number {
    return this.opts.seed;
  }

  /** Virtual milliseconds since the network was made. */
  get now(): number {
    return this.t;
  }

  describe(): string {
    return `SimNetwork seed=${this.seed} t=${this.t} conditions=${JSON.stringify(Object.fromEntries(this.conditions))}`;
  }

  /** Sets the conditions of every link, or of the direction from host `from` to host `to`. */
  setConditions(c: LinkConditions, from?: string, to?: string): void {
    this.conditions.set(from === undefined ? '*' : `${from}>${to ?? '*'}`, c);
  }

  /** Drops every datagram between hosts a and b (both ways) sent during [fromMs, toMs). */
  partition(a: string, b: string, fromMs: number, toMs: number): void {
    this.partitions.push({ a, b, from: fromMs, to: toMs });
  }

  /** Cuts host a off from everyone during [fromMs, toMs). */
  partitionHost(a: string, fromMs: number, toMs: number): void {
    this.partitions.push({ a, b: undefined, from: fromMs, to: toMs });
  }

  /** Drops the next n datagrams sent from host `from` to host `to`, whenever they are sent. */
  dropNext(from: string, to: string, n: number): void {
    this.toDrop.set(`${from}>${to}`, n);
  }

  /**
   * NAT rebinding: the socket bound at host:port is seen from a new port from now on
   * (replies to the new port reach it; so do those to the old one). Returns the new port.
   */
  rebind(host: string, port: number): number {
    const s = this.sockets.get(key(host, port));
    if (!s) throw new Error(`rebind: nothing bound at ${host}:${port}`);
    const p = this.allocPort(host);
    s.publicPort = p;
    this.sockets.set(key(host, p), s);
    return p;
  }

  /** The transport of simulated host `host` (one per host). */
  transport(host: string): Transport {
    let t = this.transports.get(host);
    if (!t) {
      t = this.makeTransport(host);
      this.transports.set(host, t);
    }
    return t;
  }

  // ---- running --------------------------------------------------------------------

  /** Runs every event up to now + ms, then sets the clock there. */
  run(ms: number): void {
    this.runUntil(() => false, ms);
  }

  /** Runs events in order until pred() holds after one (true) or now + maxMs is reached (false). */
  runUntil(pred: () => boolean, maxMs: number): boolean {
    const end = this.t + maxMs;
    let n = 0;
    try {
      while (!pred() && this.runOne(end, ++n));
      return pred();
    } finally {
      this.rethrow();
    }
  }

  /** As run(), but lets promise continuations run between events (async code under test). */
  async advance(ms: number): Promise<void> {
    await this.advanceUntil(() => false, ms);
  }

  /** As runUntil(), letting promise continuations run between events. */
  async advanceUntil(pred: () => boolean, maxMs: number): Promise<boolean> {
    const end = this.t + maxMs;
    let n = 0;
    try {
      for (;;) {
        await settle();
        if (pred() || !this.runOne(end, ++n)) break;
      }
      await settle();
      return pred();
    } finally {
      this.rethrow();
    }
  }

  /** Runs the next event if it is due by `end` (true); otherwise moves the clock to `end` (false). */
  private runOne(end: number, count: number): boolean {
    const e = this.heap[0];
    if (!e || e.t > end) {
      this.t = Math.max(this.t, end);
      return false;
    }
    if (count > this.maxEvents) throw new Error(`simulation ran over ${this.maxEvents} events in one run (livelock?); ${this.describe()}`);
    this.pop();
    this.t = e.t;
    this.fire(e);
    return true;
  }

  private fire(e: Event): void {
    try {
      e.fn();
    } catch (err) {
      this.errors.push(err);
    }
  }

  private rethrow(): void {
    if (this.errors.length === 0) return;
    const first = this.errors.splice(0);
    const err = first[0];
    throw new Error(`simulation (seed ${this.seed}) raised: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`, {
      cause: err,
    });
  }

  private schedule(t: number, fn: () => void): Event {
    const e: Event = { t: Math.max(t, this.t), seq: this.seqNo++, fn };
    const h = this.heap;
    h.push(e);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (before(h[p]!, e)) break;
      h[i] = h[p]!;
      i = p;
    }
    h[i] = e;
    return e;
  }

  private pop(): void {
    const h = this.heap;
    const last = h.pop()!;
    if (h.length === 0) return;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= h.length) break;
      const r = l + 1;
      const c = r < h.length && before(h[r]!, h[l]!) ? r : l;
      if (before(last, h[c]!)) break;
      h[i] = h[c]!;
      i = c;
    }
    h[i] = last;
  }

  // ---- hosts and sockets ------------------------------------------------------------

  private allocPort(host: string): number {
    let p = this.nextPort.get(host) ?? 49152;
    while (this.sockets.has(key(host, p))) p++;
    this.nextPort.set(host, p + 1);
    return p;
  }

  private makeTransport(host: string): Transport {
    const rng = this.rng.fork();
    this.hostRng.set(host, rng);
    return {
      now: () => this.t,
      randomBytes: (n) => rng.bytes(n),
      setTimer: (at, fn): TimerHandle => {
        let live = true;
        this.schedule(at, () => {
          if (live) fn();
        });
        return { cancel: () => (live = false) };
      },
      defer: (fn) => {
        this.schedule(this.t, fn);
      },
      resolve: async (name) => {
        if (name === 'localhost') return '127.0.0.1';
        if (/^[0-9.]+$/.test(name) || name.includes(':')) return name;
        throw codeError('ENOTFOUND', `simulated DNS: no host named '${name}'`);
      },
      bind: async (port, bindHost, hooks): Promise<DatagramSocket> => {
        if (bindHost !== undefined && bindHost !== host && bindHost !== '0.0.0.0' && bindHost !== '::') {
          throw codeError('EADDRNOTAVAIL', `simulated host ${host} has no address ${bindHost}`);
        }
        const p = port === 0 ? this.allocPort(host) : port;
        if (this.sockets.has(key(host, p))) throw codeError('EADDRINUSE', `simulated ${host}:${p} is already in use`);
        const s: SimSocket = { host, port: p, publicPort: p, hooks, closed: false };
        this.sockets.set(key(host, p), s);
        return {
          local: { address: host, port: p },
          send: (bytes, to) => this.send(s, bytes, to),
          close: () => {
            if (s.closed) return;
            s.closed = true;
            for (const [k, v] of this.sockets) if (v === s) this.sockets.delete(k);
          },
        };
      },
    };
  }

  // ---- the wire -----------------------------------------------------------------------

  private conditionsFor(from: string, to: string): LinkConditions {
    return this.conditions.get(`${from}>${to}`) ?? this.conditions.get(`${from}>*`) ?? this.conditions.get('*') ?? {};
  }

  private partitioned(a: string, b: string): boolean {
    return this.partitions.some(
      (p) =>
        this.t >= p.from &&
        this.t < p.to &&
        ((p.b === undefined && (p.a === a || p.a === b)) || (p.a === a && p.b === b) || (p.a === b && p.b === a)),
    );
  }

  private record(from: Address, to: Address, bytes: Uint8Array, fate: Fate): void {
    if (this.opts.capture && this.captured.length < MAX_CAPTURE) this.captured.push({ t: this.t, from, to, bytes, fate });
  }

  private send(s: SimSocket, data: Uint8Array, to: Address): void {
    if (s.closed) return;
    const bytes = new Uint8Array(data);
    const from = { address: s.host, port: s.publicPort };
    const c = this.conditionsFor(s.host, to.address);
    this.stats.sent++;
    this.stats.bytesSent += bytes.length;
    if (bytes.length > (c.mtu ?? 65507)) {
      this.drop(from, to, bytes, 'mtu');
      return;
    }
    const link = `${s.host}>${to.address}`;
    const dropping = this.toDrop.get(link) ?? 0;
    if (dropping > 0) {
      this.toDrop.set(link, dropping - 1);
      this.drop(from, to, bytes, 'lost');
      return;
    }
    if (this.partitioned(s.host, to.address)) {
      this.stats.droppedPartition++;
      this.drop(from, to, bytes, 'partition');
      return;
    }
    const rng = this.rng;
    if (c.burst) {
      const bad = this.badState.get(link) ?? false;
      const nowBad = bad ? rng.next() >= c.burst.exitProbability : rng.next() < c.burst.enterProbability;
      this.badState.set(link, nowBad);
      if (nowBad && rng.next() < (c.burst.loss ?? 1)) {
        this.stats.droppedBurst++;
        this.drop(from, to, bytes, 'lost');
        return;
      }
    }
    if (rng.next() < (c.loss ?? 0)) {
      this.drop(from, to, bytes, 'lost');
      return;
    }
    const copies = rng.next() < (c.duplicate ?? 0) ? 2 : 1;
    if (copies === 2) this.stats.duplicated++;
    for (let i = 0; i < copies; i++) {
      const copy = i === 0 ? bytes : new Uint8Array(bytes);
      if (rng.next() < (c.corrupt ?? 0)) {
        this.stats.corrupted++;
        const flips = 1 + rng.int(3);
        for (let f = 0; f < flips && copy.length > 0; f++) copy[rng.int(copy.length)]! ^= 1 + rng.int(255);
      }
      const latency = c.latencyMs ?? 1;
      let delay = latency + rng.next() * (c.jitterMs ?? 0);
      if (rng.next() < (c.reorder ?? 0)) {
        this.stats.reordered++;
        delay += rng.next() * (c.reorderDelayMs ?? 3 * latency);
      }
      this.schedule(this.t + delay, () => this.deliver(s, from, to, copy));
    }
  }

  private drop(from: Address, to: Address, bytes: Uint8Array, fate: Fate): void {
    this.stats.dropped++;
    this.record(from, to, bytes, fate);
  }

  private deliver(sender: SimSocket, from: Address, to: Address, bytes: Uint8Array): void {
    const dest = this.sockets.get(key(to.address, to.port));
    if (!dest || dest.closed) {
      this.stats.unreachable++;
      this.record(from, to, bytes, 'unreachable');
      if (this.opts.icmpUnreachable && !sender.closed) {
        sender.hooks.onError(codeError('ECONNREFUSED', `simulated ICMP port unreachable from ${to.address}:${to.port}`));
      }
      return;
    }
    this.stats.delivered++;
    this.stats.bytesDelivered += bytes.length;
    this.record(from, to, bytes, 'delivered');
    // A copy of its own for the receiver (SocketHooks.onDatagram), so `captured` keeps what was sent.
    dest.hooks.onDatagram(this.opts.capture ? new Uint8Array(bytes) : bytes, from);
  }
}

function before(a: Event, b: Event): boolean {
  return a.t < b.t || (a.t === b.t && a.seq < b.seq);
}

/** Lets queued promise continuations run (a few hops deep). */
async function settle(): Promise<void> {
  for (let i = 0; i < 4; i++) await Promise.resolve();
}
