import { NewReno } from '../congestion/new-reno.js';
import { Pacer } from '../congestion/pacer.js';
import type { CongestionController } from '../congestion/controller.js';
import { equalBytes } from '../crypto/handshake-keys.js';
import type { PacketCipher } from '../crypto/packet-cipher.js';
import { AckTracker } from '../reliability/ack-tracker.js';
import { ReliableAssembler } from '../reliability/reliable-assembler.js';
import { type ReassemblyBudget, SessionBudget, UNIT_OVERHEAD_BYTES, unlimitedBudget } from '../reliability/budget.js';
import { UnreliableAssembler } from '../reliability/unreliable-assembler.js';
import { Deque } from '../reliability/deque.js';
import { LossRecovery, type LossCallbacks, type SentPacket } from '../reliability/loss-recovery.js';
import { StreamReceiver, newReceiveState, releaseReceiveState, type InUnit, type ReceiveState } from '../reliability/receiver.js';
import { ReliableSender, type OutMessage, type Unit, type WholeMessage } from '../reliability/sender.js';
import { ReplayWindow } from '../reliability/replay-window.js';
import { expandPacketNumber, seqLess } from '../reliability/seq.js';
import { ByteWriter } from '../wire/bytes.js';
import {
  BASE_DATAGRAM_SIZE,
  DATA_HEADER_SIZE,
  MAX_MESSAGE_SIZE,
  PART_SIZE,
  TAG_SIZE,
  reasonFromCode,
  reasonToCode,
  type Reason,
} from '../wire/constants.js';
import { WireFormatError } from '../wire/errors.js';
import { decodeFrames, frameSize, isAckEliciting, writeFrame, type Frame } from '../wire/frames.js';
import { writeDataHeader } from '../wire/packet.js';
import type { ConnectionConfig, ConnectionEvent, ConnectionState } from './config.js';
import { PathMtu, datagramCeiling, isLoopback, type PmtuStats } from './path-mtu.js';
import { TimerTable } from './timers.js';

type TimerName = 'ping' | 'stall' | 'idle' | 'close' | 'closeRetry' | 'drain' | 'path';

/** Bytes of a DATA packet that are not frames. */
const PACKET_OVERHEAD = DATA_HEADER_SIZE + TAG_SIZE;
/** A packet with nothing but a PATH_CHALLENGE. */
const CHALLENGE_PACKET = PACKET_OVERHEAD + 9;
/** PATH_CHALLENGEs sent to a new address before going back. */
const PATH_TRIES = 3;

/** Probe timeouts in a row, while sending above the base size, that mean a PMTU black hole. */
const BLACK_HOLE_PTOS = 3;
/** Outstanding pings remembered for RTT on PONG. */
const MAX_PINGS_REMEMBERED = 8;
/** REFUSED frames owed to the peer; beyond this a refused packet is left to the peer's loss detection. */
const MAX_REFUSED_REPORTS = 32;
/** Longest wait before sending again a unit the peer refused for lack of memory. */
const MAX_REFUSAL_WAIT_MS = 500;

/** An unreliable message waiting to go. */
export interface UnreliableOut {
  data: Uint8Array;
  channel: number;
  /** Unreliable-sequenced: the receiver keeps only the newest of its channel. */
  sequenced: boolean;
  /** A newer sequenced message of the same channel was queued: this one is not sent. */
  superseded?: boolean;
}

/**
 * What a receiver keeps of a session's incoming reliable stream across connections:
 * which units are done, and each channel's half-built message. A connection that
 * resumes the session continues both (docs/PROTOCOL.md, "Sessions").
 */
export interface InboundSession {
  state: ReceiveState;
  assemblers: Map<number, ReliableAssembler>;
  /** What the session's stream holds, through which every charge for it goes (set by its first connection). */
  budget?: SessionBudget;
}

export function newInbound(delivered = 0): InboundSession {
  return { state: newReceiveState(delivered), assemblers: new Map() };
}

/** The session ends for good: its half-built messages and done-out-of-order units give their charges back to the budget. */
export function releaseInbound(s: InboundSession): void {
  for (const a of s.assemblers.values()) a.reset();
  s.assemblers.clear();
  releaseReceiveState(s.state);
}

export interface ConnectionInit {
  /** Our connection id: the peer puts it in every packet it sends us. */
  localConnId: number;
  /** The peer's connection id: we put it in every packet we send. */
  remoteConnId: number;
  cipher: PacketCipher;
  config: ConnectionConfig;
  now: number;
  emit: (e: ConnectionEvent) => void;
  /** First packet number; tests start near 2^32 to cross the wire's wraparound. */
  initialPacketNumber?: number;
  /** First message sequence number in both directions (docs/PROTOCOL.md: both start at 0). */
  initialSeq?: number;
  /**
   * The peer's address, for the path MTU search's ceiling (src/protocol/path-mtu.ts).
   * Without it the connection stays at the base datagram size.
   */
  peerAddress?: string;
  /** Reassembly memory shared with the endpoint's other connections (default: unlimited). */
  budget?: ReassemblyBudget;
  /** The session's incoming stream so far (default: a new session). */
  inbound?: InboundSession;
}

export interface ConnectionStats {
  state: ConnectionState;
  rtt: ReturnType<LossRecovery['rtt']['toJSON']>;
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

/**
 * One established connection, sans-I/O: datagrams and time in (handleDatagram,
 * handleTimeout, send), datagrams, events and the next deadline out (pollTransmit,
 * emit, nextDeadline). Both the client and the server side use it; the endpoints own
 * handshakes and addresses. State diagram: docs/PROTOCOL.md, "Connection states".
 */
export class Connection {
  readonly localConnId: number;
  readonly remoteConnId: number;
  private _state: ConnectionState = 'connected';
  private endReason: Reason | undefined;
  private readonly cfg: ConnectionConfig;
  private readonly cipher: PacketCipher;
  private readonly emit: (e: ConnectionEvent) => void;
  private readonly timers = new TimerTable<TimerName>();

  private readonly recovery: LossRecovery;
  private readonly cc: CongestionController;
  private readonly pacer: Pacer;
  /** When the pacer lets the next data packet go, if it held one back. */
  private pacedUntil = Infinity;
  private readonly pmtu: PathMtu;
  /**
   * Largest frame room a reliable unit is cut for. A unit keeps its size for good, so
   * one cut for a big path MTU could never cross a path that later shrinks (a route
   * change, a move to another network: a black hole). Off loopback, units are cut for
   * the base size, which every path carries, and large datagrams carry several of them;
   * on loopback, whose MTU never changes, a unit may fill a 64 KiB datagram.
   */
  private unitRoom: number;
  private readonly sender: ReliableSender;
  private readonly receiver: StreamReceiver;
  private readonly unreliable = new Deque<UnreliableOut>();
  /** The newest queued sequenced message of each channel: a newer one supersedes it. */
  private readonly latestSequenced = new Map<number, UnreliableOut>();
  /** Next sequence number of each channel's sequenced messages, sent... */
  private readonly sequencedOut = new Map<number, number>();
  /** ...and the newest received. */
  private readonly sequencedIn = new Map<number, number>();
  private unreliableBytes = 0;
  /** The unreliable message being sent in parts, and the next part to go. */
  private unreliableCursor: { id: number; next: number } | undefined;
  private nextUnreliableId = 0;
  private readonly unreliableParts: UnreliableAssembler;
  /** Puts reliable messages back together from their parts. */
  private readonly inbound: InboundSession;
  private readonly acks: AckTracker;
  /** Packet numbers already taken: duplicates and replays are dropped (replay-window.ts). */
  private readonly replay = new ReplayWindow();
  /**
   * The last authenticated packet had the largest number so far. Only such a packet may
   * move the connection to a new address: a late or reordered one from an old address
   * must not move it back (RFC 9000 section 9.3 does the same).
   */
  newestPacket = false;
  /** The endpoint's memory budget for reassembly, shared by its connections. */
  /** The session's view of the endpoint's budget: reliable units. */
  private readonly budget: SessionBudget;
  /** The endpoint's budget itself: unreliable parts. */
  private readonly endpointBudget: ReassemblyBudget;
  private nextPn: number;

  // Control frames waiting for the next packet.
  private pongsToSend: number[] = [];
  /** PATH_RESPONSEs owed (echoes of the peer's PATH_CHALLENGEs), at most 4. */
  private pathResponses: Uint8Array[] = [];
  /**
   * Validation of a new peer address (validatePath): the challenge sent, and until it is
   * answered an anti-amplification budget, three times the bytes received since.
   */
  private pathCheck: { data: Uint8Array; limit: number; sent: number; tries: number; toSend: boolean; timeouts: number } | undefined;
  private pingToSend: number | undefined;
  private nextPingId = 1;
  private readonly pingsSent = new Map<number, number>();
  private probes = 0;
  private closeToSend = false;
  private closeStarted = false;
  private closeRetryMs = 0;
  private closedToSend = false;
  private closeReason: Reason = 'normal';
  /** Set when the peer sent CLOSE while we still had messages queued for it. */
  private peerCloseReason: Reason | undefined;
  private backpressured = false;

  private lastReceivedAt: number;
  /** Set while a packet's frames are processed when a reliable unit could not be taken. */
  private refusedInPacket = false;
  /** Packets we did not acknowledge because we refused a unit in them: told to the peer in REFUSED frames, before the ACK. */
  private readonly refusedToReport: number[] = [];
  private counters = {
    oversized: 0,
    superseded: 0,
    stale: 0,
    refused: 0,
    refusedByPeer: 0,
    datagramsSent: 0,
    datagramsReceived: 0,
    bytesSent: 0,
    bytesReceived: 0,
    messagesSent: 0,
    messagesReceived: 0,
    malformed: 0,
    duplicates: 0,
    ackElicitingSent: 0,
  };

  private readonly lossCallbacks: LossCallbacks = {
    acked: (p: SentPacket) => {
      if (p.probe) {
        this.pmtu.onProbeAcked(p.size, this.lastNow);
        this.pmtuChanged();
      }
      this.cc.onAck(p.size, p.sentAt, this.lastNow);
      for (const m of p.messages) this.sender.onAcked(m);
      for (const pn of p.refused ?? []) this.acks.markReceived(pn);
    },
    persistentCongestion: () => this.cc.onPersistentCongestion(),
    lost: (p: SentPacket) => {
      // RFC 8899 / RFC 9000 14.4: a lost probe says the size is too big, nothing about congestion.
      if (p.probe) return this.pmtu.onProbeLost(p.size, this.lastNow);
      this.cc.onLoss(p.size, p.sentAt, this.lastNow);
      for (const m of p.messages) this.sender.onLost(m);
      for (const pn of p.refused ?? []) if (this.refusedToReport.length < MAX_REFUSED_REPORTS) this.refusedToReport.push(pn);
    },
  };
  private lastNow: number;

  constructor(init: ConnectionInit) {
    this.localConnId = init.localConnId;
    this.remoteConnId = init.remoteConnId;
    this.cfg = init.config;
    this.cipher = init.cipher;
    this.emit = init.emit;
    // Tests start near 2^32 to cross the wire's wraparound; the receiver expands its first
    // packet number from nothing, so the start must be below 2^32.
    if (
      init.initialPacketNumber !== undefined &&
      !(Number.isInteger(init.initialPacketNumber) && init.initialPacketNumber >= 0 && init.initialPacketNumber < 2 ** 32)
    ) {
      throw new Error(`initialPacketNumber ${init.initialPacketNumber} must be in [0, 2^32)`);
    }
    this.nextPn = init.initialPacketNumber ?? 0;
    this.acks = new AckTracker(this.cfg.maxAckDelayMs);
    this.endpointBudget = init.budget ?? unlimitedBudget();
    this.inbound = init.inbound ?? newInbound();
    this.budget = this.inbound.budget ??= new SessionBudget(this.endpointBudget);
    // Parts of unfinished unreliable messages: one maximum message's worth per connection.
    this.unreliableParts = new UnreliableAssembler(this.cfg.maxMessageSize, this.cfg.maxMessageSize, this.endpointBudget);
    this.recovery = new LossRecovery(this.cfg.initialRttMs, this.cfg.maxAckDelayMs, Math.max(this.cfg.pingIntervalMs, 200));
    this.cc = new NewReno(BASE_DATAGRAM_SIZE);
    this.pacer = new Pacer(BASE_DATAGRAM_SIZE, init.now);
    this.pmtu = new PathMtu(
      init.peerAddress === undefined ? BASE_DATAGRAM_SIZE : datagramCeiling(init.peerAddress, this.cfg.maxDatagramSize),
      init.now,
    );
    this.unitRoom = init.peerAddress !== undefined && isLoopback(init.peerAddress) ? Infinity : BASE_DATAGRAM_SIZE - PACKET_OVERHEAD;
    this.sender = new ReliableSender(init.initialSeq ?? 0);
    this.receiver = new StreamReceiver(init.initialSeq ?? 0, this.budget, this.inbound.state, (u) =>
      u.last === undefined ? undefined : this.inbound.assemblers.get(u.channel),
    );
    this.lastReceivedAt = init.now;
    this.lastNow = init.now;
    this.armKeepalive(init.now);
    this.timers.set('ping', init.now + this.cfg.pingIntervalMs);
  }

  get state(): ConnectionState {
    return this._state;
  }

  /** Why the connection ended, once state is 'closed'. */
  get reason(): Reason | undefined {
    return this.endReason;
  }

  /** Reliable messages not yet acknowledged plus unreliable ones not yet sent. */
  get queueLength(): number {
    return this.sender.length + this.unreliable.length;
  }

  /** Bytes held for the peer: reliable ones until acknowledged, unreliable ones until sent. */
  get queuedBytes(): number {
    return this.sender.bytes + this.unreliableBytes;
  }

  /** A send() returned false and its 'drain' has not come yet (the session owes it if this connection ends first). */
  get owesDrain(): boolean {
    return this.backpressured;
  }

  /** Takes over a 'drain' that the session's previous connection owed: raised once this one's queue is below both marks. */
  oweDrain(): void {
    this.backpressured = true;
  }

  /** Below both high-water marks (maxQueue units, highWaterMark bytes): send() returns true. */
  get belowHighWater(): boolean {
    return this.queueLength < this.cfg.maxQueue && this.queuedBytes < this.cfg.highWaterMark;
  }

  /** Closed and nothing left to answer: the endpoint may forget it. */
  get finished(): boolean {
    return this._state === 'closed' && this.timers.get('drain') === Infinity && !this.closedToSend;
  }

  private transition(to: ConnectionState, why: string): void {
    const from = this._state;
    if (from === to) return;
    this._state = to;
    this.emit({ type: 'state', from, to, why });
  }

  /** The shared config changed (setTimeout): recompute keep-alive deadlines from the last packet. */
  retime(): void {
    if (this._state === 'closed') return;
    if (this.timers.get('stall') !== Infinity) this.timers.set('stall', this.lastReceivedAt + this.cfg.stallTimeoutMs);
    this.timers.set('idle', this.lastReceivedAt + this.cfg.timeoutMs);
    this.timers.set('ping', Math.min(this.timers.get('ping'), this.lastNow + this.cfg.pingIntervalMs));
  }

  /** The peer now sends from another address: search that path's MTU from the base size. */
  pathChanged(address: string, now: number): void {
    this.pmtu.reset(datagramCeiling(address, this.cfg.maxDatagramSize), now);
    if (!isLoopback(address)) this.unitRoom = BASE_DATAGRAM_SIZE - PACKET_OVERHEAD;
    this.pmtuChanged();
  }

  /**
   * The peer moved to an address it has not proved it receives at (RFC 9000 section
   * 8.2): send it `data` in PATH_CHALLENGE, and until the echo comes back send no more
   * than three times what arrived from there (`received` bytes so far, then creditPath).
   * Room for the challenge itself is always kept. Emits 'path-validated', or
   * 'path-failed' after three tries sent and unanswered, for the endpoint to move back.
   */
  validatePath(now: number, data: Uint8Array, received: number): void {
    this.pathCheck = { data, limit: 3 * received, sent: 0, tries: 0, toSend: true, timeouts: 0 };
    this.timers.set('path', now + this.pathRetryMs());
  }

  /** An authenticated packet arrived from the address on trial: three times its size more may go there. */
  creditPath(bytes: number): void {
    if (this.pathCheck) this.pathCheck.limit += 3 * bytes;
  }

  /** The endpoint went back to an address already validated: no check needed. */
  cancelPathValidation(): void {
    this.pathCheck = undefined;
    this.timers.clear('path');
  }

  private pathRetryMs(): number {
    return Math.max(this.recovery.rtt.pto(1, this.cfg.maxAckDelayMs), 100);
  }

  /** Windows and pacing count in datagrams of the current path MTU. */
  private pmtuChanged(): void {
    this.cc.setMaxDatagram(this.pmtu.current);
    this.pacer.setMaxDatagram(this.pmtu.current);
  }

  private armKeepalive(now: number): void {
    this.timers.set('stall', now + this.cfg.stallTimeoutMs);
    this.timers.set('idle', now + this.cfg.timeoutMs);
  }

  // ---- inputs -------------------------------------------------------------------

  /**
   * Queues a message. Returns false when the queue is at or past maxQueue (the message
   * is still queued; a 'drain' event follows when it empties below). The caller checks
   * size and state first (src/api), so this never throws on network grounds.
   */
  send(data: Uint8Array, reliable: boolean, channel = 0, sequenced = false, unordered = false): boolean {
    if (!reliable) this.queueUnreliable({ data, channel, sequenced });
    else this.sender.enqueueMessage(data, channel, unordered);
    return this.afterQueued();
  }

  /** Queues an unreliable message; a sequenced one supersedes its channel's older one still queued. */
  queueUnreliable(m: UnreliableOut): boolean {
    if (m.sequenced) {
      const older = this.latestSequenced.get(m.channel);
      if (older) older.superseded = true;
      this.latestSequenced.set(m.channel, m);
    }
    this.unreliable.push(m);
    this.unreliableBytes += m.data.length;
    return this.afterQueued();
  }

  /**
   * Unreliable messages into the packet being built: whole when they fit, else part by
   * part (a message's parts go in order, possibly across several packets).
   */
  private addUnreliable(add: (f: Frame) => boolean): void {
    for (let m = this.unreliable.peek(); m; m = this.unreliable.peek()) {
      const u = m.data;
      if (m.superseded) {
        this.counters.superseded++;
      } else if (m.sequenced) {
        const seq = this.sequencedOut.get(m.channel) ?? 0;
        if (!add({ type: 'unreliable', channel: m.channel, data: u, seq })) return;
        this.sequencedOut.set(m.channel, (seq + 1) & 0xffff);
        this.counters.messagesSent++;
      } else if (u.length <= MAX_MESSAGE_SIZE) {
        if (!add({ type: 'unreliable', channel: m.channel, data: u })) return;
        this.counters.messagesSent++;
      } else {
        const count = Math.ceil(u.length / PART_SIZE);
        this.unreliableCursor ??= { id: this.nextUnreliableId++, next: 0 };
        const c = this.unreliableCursor;
        for (; c.next < count; c.next++) {
          const part = { id: c.id, index: c.next, count };
          if (!add({ type: 'unreliable', channel: m.channel, data: u.subarray(c.next * PART_SIZE, (c.next + 1) * PART_SIZE), part }))
            return;
        }
        this.unreliableCursor = undefined;
        this.counters.messagesSent++;
      }
      this.unreliable.shift();
      this.unreliableBytes -= u.length;
      if (this.latestSequenced.get(m.channel) === m) this.latestSequenced.delete(m.channel);
    }
  }

  /** Re-queues a unit kept from an earlier connection of the session, parts as they were. */
  sendUnit(unit: Unit): boolean {
    this.sender.enqueue(unit.data, unit.last, unit.channel, unit.unordered, unit.first, unit.message);
    return this.afterQueued();
  }

  private afterQueued(): boolean {
    const ok = this.belowHighWater;
    if (!ok) this.backpressured = true;
    return ok;
  }

  /** Sends a PING now (the seed's ping()). */
  ping(): void {
    if (this._state === 'closed') return;
    this.pingToSend = this.nextPingId++ >>> 0;
  }

  /**
   * Starts a graceful close: what is queued is flushed and acknowledged first, then
   * CLOSE/CLOSED. Ends by itself after closeTimeoutMs whatever the peer does.
   */
  close(now: number, reason: Reason = 'normal'): void {
    if (this._state === 'closed' || this._state === 'closing') return;
    this.closeReason = reason;
    this.transition('closing', `local close (${reason})`);
    this.timers.set('close', now + this.cfg.closeTimeoutMs);
  }

  /** Ends at once without a handshake (endpoint shutting down hard, or replaced). */
  abort(reason: Reason): void {
    if (this._state === 'closed') return;
    this.end(reason, false);
  }

  /**
   * A DATA packet for this connection. Drops it if the replay window has its number
   * already, then checks its tag (and decrypts it) before looking at anything else, and
   * only then records the number and processes the frames. Returns what happened, so
   * the endpoint may count and, on 'ok', update the peer's address.
   */
  handleDatagram(bytes: Uint8Array, pnLow: number, now: number): 'ok' | 'rejected' | 'duplicate' {
    this.lastNow = now;
    const pn = expandPacketNumber(this.replay.largest, pnLow);
    if (this.replay.rejects(pn)) {
      this.counters.duplicates++;
      return 'duplicate';
    }
    const body = this.cipher.open(bytes, pn);
    if (!body) {
      this.counters.malformed++;
      return 'rejected';
    }
    this.newestPacket = pn > this.replay.largest;
    this.replay.record(pn);
    let frames: Frame[];
    try {
      frames = decodeFrames(body, 0, body.length);
    } catch (e) {
      if (!(e instanceof WireFormatError)) throw e;
      // Authenticated yet malformed: a broken peer. Drop the packet, keep the connection.
      this.counters.malformed++;
      return 'rejected';
    }
    this.counters.datagramsReceived++;
    this.counters.bytesReceived += bytes.length;
    this.lastReceivedAt = now;
    if (this._state === 'closed') {
      this.acks.onPacket(pn, frames.some(isAckEliciting), now);
      // Draining: only answer a repeated CLOSE.
      if (frames.some((f) => f.type === 'close')) this.closedToSend = true;
      return 'ok';
    }
    this.armKeepalive(now);
    // PING on silence only: a side that just heard from its peer has no reason to ask
    // whether the peer is there (a PING in the packet pushes this further, below).
    this.timers.set('ping', now + this.cfg.pingIntervalMs);
    if (this._state === 'stalled') this.unstall(now);

    this.refusedInPacket = false;
    for (const f of frames) {
      this.onFrame(f, now);
      if ((this._state as ConnectionState) === 'closed') break;
    }
    // A reliable unit refused for lack of memory: leave the packet unacknowledged, so
    // the peer declares it lost and sends its units again (the rest of it, already
    // taken, arrive as duplicates and are dropped by sequence number).
    this.acks.onPacket(pn, frames.some(isAckEliciting), now, !this.refusedInPacket);
    if (this.refusedInPacket && this.refusedToReport.length < MAX_REFUSED_REPORTS) this.refusedToReport.push(pn);
    return 'ok';
  }

  private onFrame(f: Frame, now: number): void {
    switch (f.type) {
      case 'padding':
      case 'mtu-probe':
        return;
      case 'ack':
        if (!this.recovery.onAck(f.ranges, f.delayUs / 1000, now, this.lossCallbacks)) this.counters.malformed++;
        this.afterAckOrLoss();
        return;
      case 'refused': {
        // Not lost: the peer is short of memory. No congestion response; each unit goes
        // again after a wait that doubles with each of its refusals, up to four round
        // trips (the peer frees memory as its other messages complete), while the
        // other channels' messages go on.
        const p = this.recovery.onRefused(f.pn);
        if (!p) return;
        if (p.probe) {
          // It arrived, so that size passes (only a broken peer refuses a probe).
          this.pmtu.onProbeAcked(p.size, now);
          this.pmtuChanged();
          return;
        }
        this.counters.refusedByPeer++;
        // The window stays as it is: not cut (nothing was lost), not grown (nothing was
        // delivered; a peer that refuses everything would otherwise grow it without limit).
        const rtt = Math.max(this.recovery.rtt.smoothed, 1);
        for (const m of p.messages) this.sender.defer(m, now + Math.min(MAX_REFUSAL_WAIT_MS, 4 * rtt, rtt * 2 ** Math.min(m.refusals, 16)));
        return;
      }
      case 'path-challenge':
        if (this.pathResponses.length < 4) this.pathResponses.push(f.data);
        return;
      case 'path-response':
        if (this.pathCheck && equalBytes(this.pathCheck.data, f.data)) {
          this.cancelPathValidation();
          this.emit({ type: 'path-validated' });
        }
        return;
      case 'ping':
        if (this.pongsToSend.length < 4) this.pongsToSend.push(f.id);
        // The side that answers waits half an interval longer before it would ask
        // itself: on an idle connection one side pings and the other answers, one
        // exchange per interval (on the same beat their PINGs crossed: two). Each side
        // still hears from the other every interval, the PING one way, the PONG back.
        this.timers.set('ping', now + 1.5 * this.cfg.pingIntervalMs);
        this.emit({ type: 'ping' });
        return;
      case 'pong': {
        const sentAt = this.pingsSent.get(f.id);
        if (sentAt === undefined) return; // unsolicited or very late: ignore
        this.pingsSent.delete(f.id);
        this.emit({ type: 'pong', rttMs: now - sentAt });
        return;
      }
      case 'reliable': {
        const r = this.receiver.receive(
          f.seq,
          { data: f.data, last: f.last, channel: f.channel, unordered: f.unordered === true, delta: f.delta },
          this.deliverUnit,
        );
        if (r === 'refused' || r === 'out-of-window') {
          this.refusedInPacket = true;
          this.counters.refused++;
        }
        return;
      }
      case 'unreliable': {
        if (f.seq !== undefined) {
          // Sequenced: only what is newer than the newest delivered on its channel.
          const newest = this.sequencedIn.get(f.channel);
          if (newest !== undefined && !seqLess(newest, f.seq)) {
            this.counters.stale++;
            return;
          }
          this.sequencedIn.set(f.channel, f.seq);
        }
        const data = f.part ? this.unreliableParts.add(f.part.id, f.part.index, f.part.count, f.data, now) : f.data;
        if (!data) return;
        this.counters.messagesReceived++;
        this.emit({ type: 'message', data, reliable: false, channel: f.channel, sequenced: f.seq !== undefined });
        return;
      }
      case 'close':
        if (this.queueLength === 0) {
          this.closedToSend = true;
          this.end(reasonFromCode(f.reason), true);
        } else if (this.peerCloseReason === undefined) {
          // The peer is done sending, we are not: finish what we owe it (its replies,
          // say) and answer CLOSED after. A repeated CLOSE meanwhile changes nothing.
          this.peerCloseReason = reasonFromCode(f.reason);
          this.transition('closing', `peer closing (${this.peerCloseReason}); flushing ${this.queueLength} queued`);
          if (this.timers.get('close') === Infinity) this.timers.set('close', now + this.cfg.closeTimeoutMs);
        }
        return;
      case 'closed':
        if (this._state === 'closing' && this.closeStarted) this.end(this.closeReason, false);
        return;
    }
  }

  /** A reliable unit whose turn came: to the program if whole, else to its channel's half-built message. */
  private readonly deliverUnit = (u: InUnit, precharged: boolean): boolean => {
    const assemblers = this.inbound.assemblers;
    let a = assemblers.get(u.channel);
    if (u.last === undefined && (u.unordered || !a)) {
      if (precharged) this.budget.give(u.data.length + UNIT_OVERHEAD_BYTES);
      if (u.data.length > this.cfg.maxMessageSize) this.counters.oversized++;
      else this.deliverMessage(u.data, u.channel, u.unordered);
      return true;
    }
    if (!a) {
      a = new ReliableAssembler(this.cfg.maxMessageSize, this.budget);
      assemblers.set(u.channel, a);
    }
    const m = this.overSessionCap(u, a, precharged) ? 'refused' : a.add(u.data, u.last, precharged);
    // An assembler lives only while it holds a half-built message (Map order = age).
    if (!a.building) {
      this.counters.oversized += a.rejected;
      assemblers.delete(u.channel);
    }
    if (m === 'refused') return false;
    if (m) this.deliverMessage(m.data, u.channel, false);
    return true;
  };

  /**
   * One session holds at most maxMessageSize of half-built messages on its other
   * channels, besides its oldest, which may always grow (so one always finishes): a peer
   * cannot take the endpoint's budget with a half-built message per channel. A unit from
   * the reorder buffer is charged already and always taken.
   */
  private overSessionCap(u: InUnit, a: ReliableAssembler, precharged: boolean): boolean {
    const assemblers = this.inbound.assemblers;
    const oldest = assemblers.values().next().value;
    if (precharged || u.last === undefined || a === oldest) return false;
    // The other channels share maxMessageSize among themselves; the oldest is not counted:
    // counting it, two messages of more than half of maxMessageSize each on two channels
    // blocked each other for good (the sender's window stops at the refused unit, and
    // the oldest cannot finish within it).
    let held = 0;
    for (const x of assemblers.values()) if (x !== oldest) held += x.size;
    return held + u.data.length > this.cfg.maxMessageSize;
  }

  private deliverMessage(data: Uint8Array, channel: number, unordered: boolean): void {
    this.counters.messagesReceived++;
    this.emit({ type: 'message', data, reliable: true, channel, sequenced: false, unordered });
  }

  private afterAckOrLoss(): void {
    if (this.backpressured && this.belowHighWater) {
      this.backpressured = false;
      this.emit({ type: 'drain' });
    }
  }

  private unstall(now: number): void {
    this.transition('connected', 'packet received');
    this.emit({ type: 'unstalled' });
    // Whatever was in flight during the stall is probably lost: resend it now rather
    // than after a backed-off probe timeout.
    this.recovery.resetBackoff();
    this.sender.requeueInFlight();
    this.timers.set('ping', Math.min(this.timers.get('ping'), now + this.cfg.pingIntervalMs));
  }

  private end(reason: Reason, byPeer: boolean): void {
    this.endReason = reason;
    this.recovery.clear();
    // What was held for reassembly goes back to the endpoint's budget.
    this.receiver.release();
    this.unreliableParts.clear();
    this.timers.clearAll();
    this.transition('closed', `${byPeer ? 'peer' : 'local'}: ${reason}`);
    // Linger a little to answer a retransmitted CLOSE whose CLOSED was lost.
    if (byPeer) this.timers.set('drain', this.lastNow + 3 * this.recovery.rtt.pto(1, this.cfg.maxAckDelayMs));
    this.emit({ type: 'ended', reason, byPeer });
  }

  handleTimeout(now: number): void {
    this.lastNow = now;
    if (this._state === 'closed') {
      if (this.timers.due('drain', now)) this.timers.clear('drain');
      return;
    }
    this.sender.releaseDeferred(now);
    if (this.timers.due('idle', now)) {
      this.end('timeout', false);
      return;
    }
    if (this.timers.due('close', now)) {
      if (this.peerCloseReason !== undefined) this.end(this.peerCloseReason, true);
      else this.end(this.closeReason, false);
      return;
    }
    if (this.timers.due('stall', now)) {
      this.timers.clear('stall');
      if (this._state === 'connected') {
        this.transition('stalled', `no packet for ${this.cfg.stallTimeoutMs} ms`);
        this.emit({ type: 'stalled' });
      }
    }
    if (this.timers.due('closeRetry', now)) {
      this.timers.clear('closeRetry');
      this.closeToSend = true;
    }
    if (this.timers.due('path', now) && this.pathCheck) {
      const c = this.pathCheck;
      // Three challenges sent and unanswered; or, should they not get out, twice the time.
      if (c.tries >= PATH_TRIES || ++c.timeouts >= 2 * PATH_TRIES) {
        this.cancelPathValidation();
        this.emit({ type: 'path-failed' });
      } else {
        // A try counts once its challenge went out; one still waiting to go keeps waiting.
        c.toSend = true;
        this.timers.set('path', now + this.pathRetryMs() * 2 ** c.tries);
      }
    }
    this.acks.onTimeout(now);
    this.unreliableParts.expire(now);
    if (this.timers.due('ping', now)) {
      this.timers.set('ping', now + this.cfg.pingIntervalMs);
      this.ping();
    }
    if (this.recovery.deadline() <= now) {
      if (this.recovery.onTimeout(now, this.lossCallbacks) === 'probe') {
        // RFC 9002 6.2.4: send probes even if the window is full.
        this.probes = 2;
        // Big packets may be what is not getting through: go back to the size every path carries.
        if (this.recovery.ptoCount >= BLACK_HOLE_PTOS && this.pmtu.onBlackHole(now)) this.pmtuChanged();
        if (this.sender.requeueInFlight() === 0 && this.sender.unsent === 0) this.ping();
      }
      this.afterAckOrLoss();
    }
  }

  // ---- outputs ------------------------------------------------------------------

  nextDeadline(): number {
    if (this._state === 'closed') return this.timers.get('drain');
    return Math.min(this.timers.next(), this.recovery.deadline(), this.acks.deadline, this.pacedUntil, this.sender.deferredUntil);
  }

  private mayCloseNow(): boolean {
    return this._state === 'closing' && this.sender.length === 0 && this.unreliable.length === 0;
  }

  private canSendData(now: number): boolean {
    this.pacedUntil = Infinity;
    if (this._state !== 'connected' && this._state !== 'closing') return false;
    if (this.probes > 0) return true;
    if (this.recovery.bytesInFlight + this.pmtu.current > this.cc.window) return false;
    if (!this.sender.ready() && this.unreliable.length === 0) return true;
    const at = this.pacer.sendTime(this.cc.window, this.recovery.rtt.smoothed, now);
    if (at <= now) return true;
    this.pacedUntil = at;
    return false;
  }

  /**
   * A path MTU probe, when the search wants one and the window has room: an ACK if one
   * is owed, MTU_PROBE, and padding up to the size probed. No data rides in it, so
   * its loss costs nothing to retransmit.
   */
  private pollProbe(now: number): Uint8Array | null {
    // Not before the peer has acknowledged something: a connection's first datagrams are
    // its data, and a probe of 64 KiB ahead of them, dropped by a small receive buffer
    // with what followed it, held the first message back a probe timeout (~310 ms).
    if (this._state !== 'connected' || this.recovery.largestAcked < 0) return null;
    const size = this.pmtu.probeSize(now);
    // Within the window, or alone in flight: the initial window is smaller than a
    // loopback probe, and waiting for the window to grow would mean a lossy path
    // (whose window never grows) never probes at all.
    if (size === undefined || (this.recovery.bytesInFlight > 0 && this.recovery.bytesInFlight + size > this.cc.window)) return null;
    const frames: Frame[] = [];
    const ack = this.acks.pending ? this.acks.takeFrame(now) : undefined;
    if (ack) frames.push(ack);
    frames.push({ type: 'mtu-probe' });
    let used = PACKET_OVERHEAD;
    for (const f of frames) used += frameSize(f);
    if (used > size) return null;
    if (used < size) frames.push({ type: 'padding', length: size - used });
    this.pmtu.onProbeSent(size);
    return this.finishPacket(frames, [], true, now, true);
  }

  /** The next datagram to send, or null when there is nothing to send now. */
  pollTransmit(now: number): Uint8Array | null {
    this.lastNow = now;
    if (this.peerCloseReason !== undefined && this.mayCloseNow()) {
      // Everything we owed the closing peer is acknowledged: now CLOSED.
      this.closedToSend = true;
      this.end(this.peerCloseReason, true);
    }
    if (this._state === 'closed' && !this.closedToSend) return null;
    if (!this.closeStarted && this.peerCloseReason === undefined && this.mayCloseNow()) {
      this.closeStarted = true;
      this.closeToSend = true;
      this.closeRetryMs = Math.max(this.recovery.rtt.pto(1, this.cfg.maxAckDelayMs), 20);
    }
    // Towards an unproven address, no more than the anti-amplification allowance; what
    // goes before the challenge leaves room for it.
    const check = this.pathCheck;
    let allowance = Infinity;
    if (check) {
      // Room is kept for the next challenge (the allowance may not stretch to all three:
      // then the timer gives up by time, below).
      allowance = check.limit - check.sent - (check.toSend ? 0 : CHALLENGE_PACKET);
      if (allowance < (check.toSend ? CHALLENGE_PACKET : PACKET_OVERHEAD + 16)) {
        this.pacedUntil = Infinity; // nothing may go until more arrives: no deadline from pacing
        return null;
      }
    }
    const probe = check ? null : this.pollProbe(now);
    if (probe) return probe;
    const dataOk = this.canSendData(now);
    const hasData = dataOk && (this.sender.ready() || this.unreliable.length > 0);
    const hasControl =
      this.refusedToReport.length > 0 ||
      this.pongsToSend.length > 0 ||
      this.pingToSend !== undefined ||
      this.closeToSend ||
      this.closedToSend ||
      this.pathResponses.length > 0 ||
      this.pathCheck?.toSend === true;
    if (!hasData && !hasControl && !this.acks.due) return null;

    const frames: Frame[] = [];
    const messages: OutMessage[] = [];
    let room = Math.min(this.pmtu.current, allowance) - PACKET_OVERHEAD;
    let ackEliciting = false;
    const add = (f: Frame): boolean => {
      const n = frameSize(f);
      if (n > room) return false;
      frames.push(f);
      room -= n;
      if (isAckEliciting(f)) ackEliciting = true;
      return true;
    };

    if (this.pathCheck?.toSend && add({ type: 'path-challenge', data: this.pathCheck.data })) {
      this.pathCheck.toSend = false;
      this.pathCheck.tries++;
    }
    // Before the ACK: the peer must hear that a packet was refused before an ACK of later
    // ones makes it declare that packet lost.
    const refused: number[] = [];
    while (this.refusedToReport.length > 0 && add({ type: 'refused', pn: this.refusedToReport[0]! }))
      refused.push(this.refusedToReport.shift()!);
    // Built first and marked sent only if it fits (room can be small on a path on trial).
    const ack = this.acks.pending ? this.acks.peekFrame(now) : undefined;
    if (ack && add(ack)) this.acks.markSent();
    while (this.pathResponses.length > 0 && add({ type: 'path-response', data: this.pathResponses[0]! })) this.pathResponses.shift();
    if (this.closedToSend) {
      add({ type: 'closed' });
      this.closedToSend = false;
    }
    if (this._state !== 'closed') {
      while (this.pongsToSend.length > 0 && add({ type: 'pong', id: this.pongsToSend[0]! })) this.pongsToSend.shift();
      if (this.pingToSend !== undefined && add({ type: 'ping', id: this.pingToSend })) {
        this.pingsSent.set(this.pingToSend, now);
        if (this.pingsSent.size > MAX_PINGS_REMEMBERED) this.pingsSent.delete(this.pingsSent.keys().next().value!);
        this.pingToSend = undefined;
      }
      if (dataOk) {
        for (let m = this.sender.peek(Math.min(room, this.unitRoom)); m; m = this.sender.peek(Math.min(room, this.unitRoom))) {
          const f: Frame = m.unordered
            ? { type: 'reliable', channel: m.channel, seq: m.seq, data: m.data, delta: 0, unordered: true }
            : { type: 'reliable', channel: m.channel, seq: m.seq, data: m.data, last: m.last, delta: m.delta };
          if (!add(f)) {
            // A unit cut for a larger path MTU than we have now (a black hole shrank it):
            // it goes alone, oversized, and IP fragmentation carries it if it can.
            if (messages.length > 0 || ackEliciting || this.pathCheck) break;
            room = frameSize(f);
            add(f);
          }
          this.sender.take(m);
          messages.push(m);
          if (m.sendCount === 1) this.counters.messagesSent++;
        }
        this.addUnreliable(add);
      }
      if (this.closeToSend && add({ type: 'close', reason: reasonToCode(this.closeReason) })) {
        this.closeToSend = false;
        this.timers.set('closeRetry', now + this.closeRetryMs);
        this.closeRetryMs *= 2;
      }
    }
    if (frames.length === 0) return null;
    if (ackEliciting && this.probes > 0) this.probes--;
    return this.finishPacket(frames, messages, ackEliciting, now, false, refused);
  }

  private finishPacket(
    frames: Frame[],
    messages: OutMessage[],
    ackEliciting: boolean,
    now: number,
    probe: boolean,
    refused?: number[],
  ): Uint8Array {
    const pn = this.nextPn++;
    let size = PACKET_OVERHEAD;
    for (const f of frames) size += frameSize(f);
    const out = new Uint8Array(size);
    const w = new ByteWriter(out);
    writeDataHeader(w, this.remoteConnId, pn);
    for (const f of frames) writeFrame(w, f);
    this.cipher.seal(out, w.offset, pn);

    this.recovery.onSent({ pn, sentAt: now, size, ackEliciting, messages, probe, ...(refused?.length ? { refused } : {}) });
    this.cc.onSent(size, now);
    if (!probe && frames.some((f) => f.type === 'reliable' || f.type === 'unreliable')) this.pacer.onSent(size);
    this.counters.datagramsSent++;
    this.counters.bytesSent += size;
    if (this.pathCheck) this.pathCheck.sent += size;
    if (ackEliciting) this.counters.ackElicitingSent++;
    this.afterAckOrLoss();
    return out;
  }

  /**
   * Everything this connection still owed the peer, for the session's next connection:
   * reliable messages from the oldest unacknowledged one on (in order, with the
   * connection-local index of the first), the same as whole messages for a peer that
   * lost the session (sender.ts, takeAll), and unreliable ones never sent.
   */
  takeUnfinished(): { reliable: Unit[]; firstIndex: number; whole: WholeMessage[]; unreliable: UnreliableOut[] } {
    const { units, firstIndex, whole } = this.sender.takeAll();
    // An unreliable message cut off mid-parts goes again whole: the peer drops the parts it got.
    this.unreliableCursor = undefined;
    this.unreliableBytes = 0;
    this.latestSequenced.clear();
    return { reliable: units, firstIndex, whole, unreliable: this.unreliable.clear().filter((m) => !m.superseded) };
  }

  stats(): ConnectionStats {
    const c = this.counters;
    return {
      state: this._state,
      rtt: this.recovery.rtt.toJSON(),
      datagramsSent: c.datagramsSent,
      datagramsReceived: c.datagramsReceived,
      bytesSent: c.bytesSent,
      bytesReceived: c.bytesReceived,
      messagesSent: c.messagesSent,
      messagesReceived: c.messagesReceived,
      retransmissions: this.sender.retransmissions,
      packetsLost: this.recovery.lostPackets,
      lossRate: c.ackElicitingSent === 0 ? 0 : this.recovery.lostPackets / c.ackElicitingSent,
      queueLength: this.queueLength,
      queuedBytes: this.queuedBytes,
      bytesInFlight: this.recovery.bytesInFlight,
      congestion: { ...this.cc.toJSON(), persistentCongestions: this.recovery.persistentCongestions },
      malformed: c.malformed + c.oversized + this.unreliableParts.rejected,
      duplicates: c.duplicates,
      unreliableDropped: this.unreliableParts.dropped,
      refused: c.refused,
      refusedByPeer: c.refusedByPeer,
      sequencedSuperseded: c.superseded,
      sequencedStale: c.stale,
      pmtu: this.pmtu.toJSON(),
    };
  }
}
