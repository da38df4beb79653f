import type { CongestionController } from '../../congestion/controller.js';
import { Reno } from '../../congestion/reno.js';
import { Pacer } from '../../congestion/pacer.js';
import type { PacketCipher } from '../../crypto/packet-cipher.js';
import { AckTracker, type AckUrgency } from '../../reliability/ack-tracker.js';
import { type ReassemblyBudget, type SessionBudget, SessionBudget as Session, unlimitedBudget } from '../../reliability/budget.js';
import { type LossCallbacks, LossRecovery, type SentPacket } from '../../reliability/loss-recovery.js';
import { StreamReceiver } from '../../reliability/receiver.js';
import { ReplayWindow } from '../../reliability/replay-window.js';
import { type OutMessage, ReliableSender, type Unit, type WholeMessage } from '../../reliability/sender.js';
import { expandPacketNumber } from '../../reliability/seq.js';
import { BASE_DATAGRAM_SIZE, type Reason, reasonFromCode } from '../../wire/constants.js';
import { WireFormatError } from '../../wire/errors.js';
import { decodeFrames, type Frame, frameSize, isAckEliciting, wantsPromptAck } from '../../wire/frames.js';
import type { ConnectionConfig, ConnectionEvent, ConnectionState } from '../config.js';
import { PathMtu, datagramCeiling, isLoopback } from '../path-mtu.js';
import { CloseState } from './close.js';
import { Datagrams, type UnreliableOut } from './datagrams.js';
import { type InboundSession, type MessageSink, newInbound, ReliableDelivery } from './inbound.js';
import { KeepAlive } from './keepalive.js';
import { PACKET_OVERHEAD, PacketBuilder } from './packet-builder.js';
import { PathValidation } from './path.js';
import { ConnectionCounters, type ConnectionStats } from './stats.js';

/** Probe timeouts in a row, while sending above the base size, that mean a PMTU black hole... */
const BLACK_HOLE_PTOS = 3;
/**
 * ...once nothing sent for this many probe timeouts (with the peer's ack delay) has been
 * acknowledged. A probe timeout while two packets are in flight leaves the ack delay out
 * (loss-recovery.ts), and three of those fit in an ordinary outage, which is no sign that
 * large packets fail. Three doubling ones with the delay took 7, and a 150 ms outage on a
 * 10 ms path ended at 164 ms of silence, after 7.8 of them; 10 leaves a margin.
 */
const BLACK_HOLE_SILENCE_PTOS = 10;
/** REFUSED frames owed to the peer; beyond this a refused packet is left to the peer's loss detection. */
const MAX_REFUSED_REPORTS = 32;
/** Longest wait before sending again a unit the peer refused for lack of memory. */
const MAX_REFUSAL_WAIT_MS = 500;
/** The sent packet of a packet that carries no reliable unit shares this (it is only read). */
const NO_MESSAGES: OutMessage[] = [];
/**
 * The packet being built, shared by every connection of the process: a packet is built
 * and sealed within one pollTransmit call, which nothing re-enters, and the builder keeps
 * nothing between packets. One per connection cost an idle connection about 200 bytes.
 */
const PACKET = new PacketBuilder();
/** unitRoom on loopback: no limit but the packet's room. A small integer, not Infinity, which V8 would box (16 bytes a connection). */
const NO_UNIT_LIMIT = 2 ** 30;
/** Every connection's refusedToReport until its first refusal: frozen, so a write that skipped the swap throws. */
const NO_REFUSED = Object.freeze([]) as readonly number[] as number[];

export interface ConnectionInit {
  /** Our connection id: the peer puts it in every packet it sends us. */
  localConnId: number;
  /** The peer's connection id: we put it in every packet we send. */
  remoteConnId: number;
  cipher: PacketCipher;
  config: ConnectionConfig;
  now: number;
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
  /** The server's side: keep-alive leaves the asking to the client (keepalive.ts, `answerer`). */
  keepAliveAnswerer?: boolean;
}

/** What a connection's owner lets others read; changes go through the owner (ServerEndpoint.send, ping, close). */
export type ConnectionView = Pick<Connection, 'state' | 'remoteConnId' | 'queueLength' | 'queuedBytes' | 'stats'>;

/** The reliable units of one packet: none, only ones that had arrived before, or some new. */
type UnitsSeen = 'none' | 'repeats' | 'new';

/**
 * One established connection, sans-I/O: datagrams and time in (handleDatagram,
 * handleTimeout, send), datagrams, events and the next deadline out (pollTransmit,
 * pollEvent, nextDeadline); the owner drains pollEvent after every call it makes.
 * Both the client and the server side use it; the endpoints own handshakes and addresses. State diagram: docs/PROTOCOL.md, "Connection states".
 *
 * It orchestrates named parts, each in its own file: keep-alive (keepalive.ts), the
 * close state (close.ts), path validation (path.ts), unreliable messages (datagrams.ts),
 * delivery of reliable ones (inbound.ts), the packet being built (packet-builder.ts),
 * counters (stats.ts); and from src/reliability and src/congestion the reliable sender
 * and receiver, acknowledgements, loss recovery, congestion control and pacing.
 */
export class Connection implements LossCallbacks, MessageSink {
  readonly localConnId: number;
  readonly remoteConnId: number;
  private _state: ConnectionState = 'connected';
  private readonly cfg: ConnectionConfig;
  private readonly cipher: PacketCipher;
  /**
   * Events not yet taken by pollEvent: events[eventsHead..]. Made when an event comes
   * and dropped once drained, so an idle connection holds none between calls.
   */
  private events: ConnectionEvent[] | undefined;
  private eventsHead = 0;

  private readonly keepalive: KeepAlive;
  private readonly closing = new CloseState();
  private readonly path = new PathValidation();
  private readonly datagrams: Datagrams;
  private readonly counters = new ConnectionCounters();

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
   * on loopback, whose MTU never changes, a unit may fill a 64 KiB datagram
   * (NO_UNIT_LIMIT).
   */
  private unitRoom: number;
  private readonly sender: ReliableSender;
  private readonly receiver: StreamReceiver;
  private readonly acks: AckTracker;
  /** Packet numbers already taken: duplicates and replays are dropped (replay-window.ts). */
  private readonly replay = new ReplayWindow();
  /** The session's view of the endpoint's budget: reliable units. */
  private readonly budget: SessionBudget;
  private nextPn: number;
  /** Probe packets that may go whatever the window (RFC 9002 6.2.4). */
  private probes = 0;
  private backpressured = false;
  /** Set while a packet's frames are processed when a reliable unit could not be taken. */
  private refusedInPacket = false;
  /** The reliable units of the packet being read: none, only ones that had arrived before, or some new. */
  private unitsInPacket: UnitsSeen = 'none';
  /** Packets we did not acknowledge because we refused a unit in them: told to the peer in REFUSED frames, before the ACK. */
  private refusedToReport: number[] = NO_REFUSED;
  private lastNow: number;
  /** More than a packet's worth was once held for the peer: the path MTU search may run (pollProbe). */
  private searchWanted = false;

  constructor(init: ConnectionInit) {
    this.localConnId = init.localConnId;
    this.remoteConnId = init.remoteConnId;
    this.cfg = init.config;
    this.cipher = init.cipher;
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
    const endpointBudget = init.budget ?? unlimitedBudget();
    const inbound = init.inbound ?? newInbound();
    this.budget = inbound.budget ??= new Session(endpointBudget);
    this.datagrams = new Datagrams(this.cfg.maxMessageSize, endpointBudget, this.counters);
    this.recovery = new LossRecovery(this.cfg.initialRttMs, this.cfg.maxAckDelayMs, Math.max(this.cfg.pingIntervalMs, 200));
    this.cc = new Reno(BASE_DATAGRAM_SIZE, this.recovery.rtt);
    this.pacer = new Pacer(BASE_DATAGRAM_SIZE, init.now);
    this.pmtu = new PathMtu(
      init.peerAddress === undefined ? BASE_DATAGRAM_SIZE : datagramCeiling(init.peerAddress, this.cfg.maxDatagramSize),
      init.now,
    );
    this.unitRoom = init.peerAddress !== undefined && isLoopback(init.peerAddress) ? NO_UNIT_LIMIT : BASE_DATAGRAM_SIZE - PACKET_OVERHEAD;
    this.sender = new ReliableSender(init.initialSeq ?? 0);
    this.delivery = new ReliableDelivery(inbound, this.budget, this.cfg.maxMessageSize, this.counters, this);
    this.receiver = new StreamReceiver(init.initialSeq ?? 0, this.budget, inbound.state);
    this.keepalive = new KeepAlive(this.cfg, init.now, init.keepAliveAnswerer);
    this.lastNow = init.now;
  }

  private readonly delivery: ReliableDelivery;

  private reportRefused(pn: number): void {
    if (this.refusedToReport === NO_REFUSED) this.refusedToReport = [pn];
    else this.refusedToReport.push(pn);
  }

  /** A whole reliable message, from ReliableDelivery (MessageSink). */
  reliableMessage(data: Uint8Array, channel: number, unordered: boolean): void {
    this.counters.messagesReceived++;
    this.emit({ type: 'message', data, reliable: true, channel, sequenced: false, unordered });
  }

  private emit(e: ConnectionEvent): void {
    if (this.events === undefined) this.events = [e];
    else this.events.push(e);
  }

  /** The next event the connection raised, in order; undefined when there is none. */
  pollEvent(): ConnectionEvent | undefined {
    const q = this.events;
    if (q === undefined) return undefined;
    if (this.eventsHead < q.length) return q[this.eventsHead++];
    // Drained: the array goes (one that grew by push keeps room for 17 for good).
    this.events = undefined;
    this.eventsHead = 0;
    return undefined;
  }

  get state(): ConnectionState {
    return this._state;
  }

  /** Why the connection ended, once state is 'closed'. */
  get reason(): Reason | undefined {
    const p = this.closing.phase;
    return p.kind === 'ended' ? p.reason : undefined;
  }

  /** Reliable messages not yet acknowledged plus unreliable ones not yet sent. */
  get queueLength(): number {
    return this.sender.length + this.datagrams.length;
  }

  /** Bytes held for the peer: reliable ones until acknowledged, unreliable ones until sent. */
  get queuedBytes(): number {
    return this.sender.bytes + this.datagrams.bytes;
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
    return this.closing.finished;
  }

  private transition(to: ConnectionState, why: string): void {
    const from = this._state;
    if (from === to) return;
    this._state = to;
    this.emit({ type: 'state', from, to, why });
  }

  /** The shared config changed (setTimeout): recompute keep-alive deadlines from the last packet. */
  retime(): void {
    if (this._state !== 'closed') this.keepalive.retime(this.lastNow);
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
    this.path.start(now, data, received, this.pathRetryMs());
  }

  /** An authenticated packet arrived from the address on trial: three times its size more may go there. */
  creditPath(bytes: number): void {
    this.path.credit(bytes);
  }

  /** The endpoint went back to an address already validated: no check needed. */
  cancelPathValidation(): void {
    this.path.cancel();
  }

  private pathRetryMs(): number {
    return Math.max(this.ptoMs(), 100);
  }

  private ptoMs(): number {
    return this.recovery.rtt.pto(1, this.cfg.maxAckDelayMs);
  }

  /** Windows and pacing count in datagrams of the current path MTU. */
  private pmtuChanged(): void {
    this.cc.setMaxDatagram(this.pmtu.current);
    this.pacer.setMaxDatagram(this.pmtu.current);
  }

  // ---- inputs -------------------------------------------------------------------

  /**
   * Queues a message. Returns false when the queue is at or past maxQueue (the message
   * is still queued; a 'drain' event follows when it empties below). The caller checks
   * size and state first (src/api), so this never throws on network grounds.
   */
  send(data: Uint8Array, reliable: boolean, channel = 0, sequenced = false, unordered = false): boolean {
    if (!reliable) this.datagrams.push({ data, channel, sequenced });
    else this.sender.enqueueMessage(data, channel, unordered);
    return this.afterQueued();
  }

  /** Queues an unreliable message; a sequenced one supersedes its channel's older one still queued. */
  queueUnreliable(m: UnreliableOut): boolean {
    this.datagrams.push(m);
    return this.afterQueued();
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
    if (this._state !== 'closed') this.keepalive.request();
  }

  /**
   * Starts a graceful close: what is queued is flushed and acknowledged first, then
   * CLOSE/CLOSED. Ends by itself after closeTimeoutMs whatever the peer does.
   */
  close(now: number, reason: Reason = 'normal'): void {
    if (this._state === 'closed' || this._state === 'closing') return;
    this.closing.start(now, reason, this.cfg.closeTimeoutMs);
    this.transition('closing', `local close (${reason})`);
  }

  /** Ends at once without a handshake (endpoint shutting down hard, or replaced). */
  abort(reason: Reason): void {
    if (this._state !== 'closed') this.end(reason, false);
  }

  /**
   * A DATA packet for this connection. Drops it if the replay window has its number
   * already, then checks its tag (and decrypts it) before looking at anything else, and
   * only then records the number and processes the frames. Returns what happened, so
   * the endpoint may count it and update the peer's address: 'newest' is an
   * authenticated packet with the largest number so far, 'late' one behind it. Only the
   * newest may move the connection to a new address: a late or reordered one from an
   * old address must not move it back (RFC 9000 section 9.3 does the same).
   */
  handleDatagram(bytes: Uint8Array, pnLow: number, now: number): 'newest' | 'late' | 'rejected' | 'duplicate' {
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
    const accepted = pn > this.replay.largest ? 'newest' : 'late';
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
    let urgency: AckUrgency = 'none';
    for (const f of frames) {
      if (wantsPromptAck(f)) urgency = 'prompt';
      else if (urgency === 'none' && isAckEliciting(f)) urgency = 'lazy';
    }
    if (this._state === 'closed') {
      this.acks.onPacket(pn, urgency, now);
      // Draining: only answer a repeated CLOSE.
      for (const f of frames) if (f.type === 'close') this.closing.answerAgain();
      return accepted;
    }
    // PING on silence only: a side that just heard from its peer has no reason to ask
    // whether the peer is there.
    this.keepalive.heard(now);
    if (this._state === 'stalled') this.unstall(now);

    this.refusedInPacket = false;
    this.unitsInPacket = 'none';
    for (const f of frames) {
      this.onFrame(f, now);
      if ((this._state as ConnectionState) === 'closed') break;
    }
    // (Read through the alias: the compiler cannot see onFrame change the field.)
    if ((this.unitsInPacket as UnitsSeen) === 'repeats') urgency = 'now';
    // A reliable unit refused for lack of memory: leave the packet unacknowledged, so
    // the peer declares it lost and sends its units again (the rest of it, already
    // taken, arrive as duplicates and are dropped by sequence number).
    this.acks.onPacket(pn, urgency, now, !this.refusedInPacket);
    if (this.refusedInPacket && this.refusedToReport.length < MAX_REFUSED_REPORTS) this.reportRefused(pn);
    return accepted;
  }

  private onFrame(f: Frame, now: number): void {
    switch (f.type) {
      case 'padding':
      case 'mtu-probe':
        return;
      case 'ack':
        if (!this.recovery.onAck(f.ranges, f.delayUs / 1000, now, this)) this.counters.malformed++;
        this.afterAckOrLoss();
        return;
      case 'refused':
        this.onRefused(f.pn, now);
        return;
      case 'path-challenge':
        this.path.onChallenge(f.data);
        return;
      case 'path-response':
        if (this.path.onResponse(f.data)) this.emit({ type: 'path-validated' });
        return;
      case 'ping':
        this.keepalive.onPing(f.id);
        this.emit({ type: 'ping' });
        return;
      case 'pong': {
        const rttMs = this.keepalive.onPong(f.id, now);
        if (rttMs !== undefined) this.emit({ type: 'pong', rttMs }); // else unsolicited or very late: ignored
        return;
      }
      case 'reliable': {
        const unit = { data: f.data, last: f.last, channel: f.channel, unordered: f.unordered === true, delta: f.delta };
        const r = this.receiver.receive(f.seq, unit, this.delivery);
        if (r !== 'duplicate') this.unitsInPacket = 'new';
        else if (this.unitsInPacket === 'none') this.unitsInPacket = 'repeats';
        if (r === 'refused' || r === 'out-of-window') {
          this.refusedInPacket = true;
          this.counters.refused++;
        }
        return;
      }
      case 'unreliable': {
        const data = this.datagrams.receive(f, now);
        if (!data) return;
        this.counters.messagesReceived++;
        this.emit({ type: 'message', data, reliable: false, channel: f.channel, sequenced: f.seq !== undefined });
        return;
      }
      case 'close': {
        const reason = reasonFromCode(f.reason);
        if (this.queueLength === 0) {
          this.end(reason, true, true);
        } else if (this.closing.peerClosing(now, reason, this.cfg.closeTimeoutMs)) {
          // The peer is done sending, we are not: finish what we owe it (its replies,
          // say) and answer CLOSED after. A repeated CLOSE meanwhile changes nothing.
          this.transition('closing', `peer closing (${reason}); flushing ${this.queueLength} queued`);
        }
        return;
      }
      case 'closed': {
        const p = this.closing.phase;
        if (p.kind === 'closing') this.end(p.reason, false);
        return;
      }
    }
  }

  /**
   * The peer refused one of our packets for lack of memory: not lost. No congestion
   * response; each unit goes again after a wait that doubles with each of its
   * refusals, up to four round trips (the peer frees memory as its other messages
   * complete), while the other channels' messages go on.
   */
  private onRefused(pn: number, now: number): void {
    const p = this.recovery.onRefused(pn);
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
    this.keepalive.unstalled(now);
  }

  /** `answer`: a CLOSED is owed (the peer's CLOSE ended it). */
  private end(reason: Reason, byPeer: boolean, answer = false): void {
    this.recovery.clear();
    // What was held for reassembly goes back to the endpoint's budget.
    this.receiver.release();
    this.datagrams.release();
    this.keepalive.stop();
    // Linger a little to answer a retransmitted CLOSE whose CLOSED was lost.
    this.closing.end(reason, byPeer, answer, byPeer ? this.lastNow + 3 * this.ptoMs() : Infinity);
    this.transition('closed', `${byPeer ? 'peer' : 'local'}: ${reason}`);
    this.emit({ type: 'ended', reason, byPeer });
  }

  handleTimeout(now: number): void {
    this.lastNow = now;
    this.closing.onTimeout(now);
    if (this._state === 'closed') return;
    this.sender.releaseDeferred(now);
    if (this.keepalive.idleAt <= now) {
      this.end('timeout', false);
      return;
    }
    const closed = this.closing.timedOut(now);
    if (closed) {
      this.end(closed.reason, closed.byPeer);
      return;
    }
    if (this.keepalive.takeStall(now) && this._state === 'connected') {
      this.transition('stalled', `no packet for ${this.cfg.stallTimeoutMs} ms`);
      this.emit({ type: 'stalled' });
    }
    if (this.path.onTimeout(now, this.pathRetryMs())) this.emit({ type: 'path-failed' });
    this.acks.onTimeout(now);
    this.datagrams.expire(now);
    this.keepalive.onTimeout(now);
    if (this.recovery.deadline() <= now) {
      if (this.recovery.onTimeout(now, this) === 'probe') {
        // RFC 9002 6.2.4: send probes even if the window is full.
        this.probes = 2;
        // Big packets may be what is not getting through: go back to the size every path carries.
        const silentFor = now - this.recovery.ackedSentAt;
        if (this.recovery.ptoCount >= BLACK_HOLE_PTOS && silentFor >= BLACK_HOLE_SILENCE_PTOS * this.ptoMs() && this.pmtu.onBlackHole(now))
          this.pmtuChanged();
        if (this.sender.requeueInFlight() === 0 && this.sender.unsent === 0) this.ping();
      }
      this.afterAckOrLoss();
    }
  }

  // ---- what loss recovery reports (LossCallbacks) -------------------------------
  // Methods, not closures in a callbacks object: three closures and their context cost
  // every connection about 230 bytes. Only LossRecovery calls them.

  /** @internal LossCallbacks: a packet was acknowledged. */
  acked(p: SentPacket): void {
    if (p.probe) {
      this.pmtu.onProbeAcked(p.size, this.lastNow);
      this.pmtuChanged();
    } else this.pmtu.onAcked(p.size, p.sentAt, this.lastNow);
    this.cc.onAck(p.size, p.sentAt, this.lastNow, p.windowBound === true);
    for (const m of p.messages) this.sender.onAcked(m);
    if (p.refused) for (const pn of p.refused) this.acks.markReceived(pn);
  }

  /** @internal LossCallbacks: a packet was declared lost. */
  lost(p: SentPacket): void {
    // RFC 8899 / RFC 9000 14.4: a lost probe says the size is too big, nothing about congestion.
    if (p.probe) {
      this.pmtu.onProbeLost(p.size, this.lastNow);
      return;
    }
    // Large packets lost while small ones get through: the path shrank (path-mtu.ts).
    if (this.pmtu.onLost(p.size, p.sentAt, this.lastNow, BLACK_HOLE_PTOS * this.ptoMs()) && this.pmtu.onBlackHole(this.lastNow))
      this.pmtuChanged();
    this.cc.onLoss(p.size, p.sentAt, this.lastNow);
    for (const m of p.messages) this.sender.onLost(m);
    if (p.refused) for (const pn of p.refused) if (this.refusedToReport.length < MAX_REFUSED_REPORTS) this.reportRefused(pn);
  }

  /** @internal LossCallbacks: persistent congestion (RFC 9002 7.6). */
  persistentCongestion(): void {
    this.cc.onPersistentCongestion();
  }

  // ---- outputs ------------------------------------------------------------------

  nextDeadline(): number {
    if (this._state === 'closed') return this.closing.deadline();
    return Math.min(
      this.keepalive.deadline(),
      this.closing.deadline(),
      this.path.deadline(),
      this.recovery.deadline(),
      this.acks.deadline,
      this.pacedUntil,
      this.sender.deferredUntil,
    );
  }

  private get queuesEmpty(): boolean {
    return this.sender.length === 0 && this.datagrams.length === 0;
  }

  private canSendData(now: number): boolean {
    this.pacedUntil = Infinity;
    if (this._state !== 'connected' && this._state !== 'closing') return false;
    if (this.probes > 0) return true;
    if (this.recovery.bytesInFlight + this.pmtu.current > this.cc.window) return false;
    if (!this.sender.ready() && this.datagrams.length === 0) return true;
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
    if (this._state !== 'connected') return null;
    // Nor before the connection has once held more than a packet's worth for the peer: a
    // larger MTU only helps a sender with that much to send, and an idle connection or
    // a game's small messages would pay probes of up to 64 KiB (on loopback) for
    // nothing. 45,000 idle connections probing at once filled their clients' receive
    // buffers and stalled the handshakes behind them (bench/many.ts at 100,000). Once
    // asked for, the search goes on as before (a bulk sender's queue may be empty just
    // when a probe could go alone).
    if (!this.searchWanted) {
      if (this.queuedBytes <= this.pmtu.current) return null;
      this.searchWanted = true;
    }
    if (this.recovery.largestAcked < 0) return null;
    const size = this.pmtu.probeSize(now);
    // Within the window, or alone in flight: the initial window is smaller than a
    // loopback probe, and waiting for the window to grow would mean a lossy path
    // (whose window never grows) never probes at all.
    if (size === undefined || (this.recovery.bytesInFlight > 0 && this.recovery.bytesInFlight + size > this.cc.window)) return null;
    const b = PACKET;
    b.reset(size - PACKET_OVERHEAD);
    const ack = this.acks.pending ? this.acks.peekFrame(now) : undefined;
    const probe: Frame = { type: 'mtu-probe' };
    if (PACKET_OVERHEAD + (ack ? frameSize(ack) : 0) + frameSize(probe) > size) return null;
    if (ack && b.add(ack)) this.acks.markSent();
    b.add(probe);
    if (b.room > 0) b.add({ type: 'padding', length: b.room });
    this.pmtu.onProbeSent(size);
    return this.finishPacket(NO_MESSAGES, now, true);
  }

  /** The next datagram to send, or null when there is nothing to send now. */
  pollTransmit(now: number): Uint8Array | null {
    this.lastNow = now;
    const phase = this.closing.phase;
    if (phase.kind === 'peer-closing' && this.queuesEmpty) {
      // Everything we owed the closing peer is acknowledged: now CLOSED.
      this.end(phase.reason, true, true);
    }
    if (this._state === 'closed' && !this.closing.owesFrame) return null;
    if (phase.kind === 'flushing' && this.queuesEmpty) this.closing.flushed(this.ptoMs());
    // Towards an unproven address, no more than the anti-amplification allowance.
    const allowance = this.path.allowance();
    if (allowance === 0) {
      this.pacedUntil = Infinity; // nothing may go until more arrives: no deadline from pacing
      return null;
    }
    const probe = this.path.active ? null : this.pollProbe(now);
    if (probe) return probe;
    const dataOk = this.canSendData(now);
    const hasData = dataOk && (this.sender.ready() || this.datagrams.length > 0);
    const hasControl = this.refusedToReport.length > 0 || this.keepalive.owesFrame || this.closing.owesFrame || this.path.owesFrame;
    if (!hasData && !hasControl && !this.acks.due) return null;

    const b = PACKET;
    b.reset(Math.min(this.pmtu.current, allowance) - PACKET_OVERHEAD);
    this.path.fillChallenge(b);
    // Before the ACK: the peer must hear that a packet was refused before an ACK of later
    // ones makes it declare that packet lost.
    let refused: number[] | undefined;
    while (this.refusedToReport.length > 0 && b.add({ type: 'refused', pn: this.refusedToReport[0]! })) {
      refused ??= [];
      refused.push(this.refusedToReport.shift()!);
    }
    // Built first and marked sent only if it fits (room can be small on a path on trial).
    const ack = this.acks.pending ? this.acks.peekFrame(now) : undefined;
    if (ack && b.add(ack)) this.acks.markSent();
    this.path.fillResponses(b);
    this.closing.fillClosed(b);
    let messages = NO_MESSAGES;
    if (this._state !== 'closed') {
      this.keepalive.fill(b, now);
      if (dataOk) {
        messages = this.fillReliable(b);
        this.datagrams.fill(b);
      }
      this.closing.fillClose(b, now);
    }
    if (b.empty) return null;
    if (b.ackEliciting && this.probes > 0) this.probes--;
    return this.finishPacket(messages, now, false, refused);
  }

  /** Reliable units into the packet, as far as they fit; returns those that went in. */
  private fillReliable(b: PacketBuilder): OutMessage[] {
    let messages = NO_MESSAGES;
    for (let m = this.sender.peek(Math.min(b.room, this.unitRoom)); m; m = this.sender.peek(Math.min(b.room, this.unitRoom))) {
      const f: Frame = m.unordered
        ? { type: 'reliable', channel: m.channel, seq: m.seq, data: m.data, delta: 0, unordered: true }
        : { type: 'reliable', channel: m.channel, seq: m.seq, data: m.data, last: m.last, delta: m.delta };
      if (!b.add(f)) {
        // A unit cut for a larger path MTU than we have now (a black hole shrank it):
        // it goes alone, oversized, and IP fragmentation carries it if it can.
        if (messages.length > 0 || b.ackEliciting || this.path.active) break;
        b.force(f);
      }
      this.sender.take(m);
      if (messages === NO_MESSAGES) messages = [];
      messages.push(m);
      if (m.sendCount === 1) this.counters.messagesSent++;
    }
    return messages;
  }

  /** Seals the packet built and records it for loss detection, congestion control and pacing. */
  private finishPacket(messages: OutMessage[], now: number, probe: boolean, refused?: number[]): Uint8Array {
    const b = PACKET;
    const pn = this.nextPn++;
    const { ackEliciting, carriesData } = b;
    const lazyAck = ackEliciting && !b.promptAck;
    const out = b.seal(this.cipher, this.remoteConnId, pn);
    const size = out.length;
    const windowBound = 2 * (this.recovery.bytesInFlight + size) >= this.cc.window;
    this.recovery.onSent(
      refused
        ? { pn, sentAt: now, size, ackEliciting, messages, probe, refused, lazyAck, windowBound }
        : { pn, sentAt: now, size, ackEliciting, messages, probe, lazyAck, windowBound },
    );
    this.cc.onSent(size, now);
    if (!probe && carriesData) this.pacer.onSent(size);
    this.counters.datagramsSent++;
    this.counters.bytesSent += size;
    this.path.onSent(size);
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
    return { reliable: units, firstIndex, whole, unreliable: this.datagrams.takeUnsent() };
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
      malformed: c.malformed + c.oversized + this.datagrams.rejected,
      duplicates: c.duplicates,
      unreliableDropped: this.datagrams.dropped,
      refused: c.refused,
      refusedByPeer: c.refusedByPeer,
      sequencedSuperseded: c.superseded,
      sequencedStale: c.stale,
      pmtu: this.pmtu.toJSON(),
    };
  }
}

export type { ConnectionStats } from './stats.js';
export type { UnreliableOut } from './datagrams.js';
export { type InboundSession, newInbound, releaseInbound } from './inbound.js';
