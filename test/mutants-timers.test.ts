/**
 * Tests for one-line bugs in the timers and the congestion response that survived a hand
 * mutation run: the handshake, reconnect, PATH_CHALLENGE and CLOSE backoffs, the drain
 * period after a peer's CLOSE, persistent congestion, the app-limited window bound and
 * the pacing gain. Each test fails on its mutant, named in the test. Everything runs in
 * virtual time; where a backoff has jitter the client's randomness puts every jitter at
 * its low end, so each wait is exact.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Pacer } from '../src/congestion/pacer.js';
import { deriveTokenKey } from '../src/crypto/handshake-keys.js';
import { HmacPacketCipher } from '../src/crypto/packet-cipher.js';
import type { Address } from '../src/protocol/address.js';
import { ClientEndpoint, type ClientConfig, type ClientEvent } from '../src/protocol/client.js';
import { DEFAULT_CONNECTION_CONFIG, type ConnectionConfig, type ConnectionEvent } from '../src/protocol/config.js';
import { Connection } from '../src/protocol/connection/connection.js';
import { ServerEndpoint, type ServerConfig } from '../src/protocol/server.js';
import { Rng } from '../src/testing/index.js';
import { BASE_DATAGRAM_SIZE, DATA_HEADER_SIZE, TAG_SIZE } from '../src/wire/constants.js';
import { decodeFrames } from '../src/wire/frames.js';
import { decodeDatagram } from '../src/wire/packet.js';
import { recordEvents } from './helpers/events.js';
import { link } from './helpers/link.js';
import { Pair, SERVER } from './helpers/pair.js';

const KEY = deriveTokenKey('mutants-timers');
const CONN: ConnectionConfig = { ...DEFAULT_CONNECTION_CONFIG, pingIntervalMs: 100, stallTimeoutMs: 400, timeoutMs: 1500 };
/**
 * The client's randomness: zeros in every 4-byte draw (each jitter, and the connection
 * id), so every jitter factor is at its low end (0.75 for handshakes, 0.5 for
 * reconnects); seeded bytes elsewhere (session id, nonces, keys), so each attempt's
 * handshake is its own.
 */
const lowJitter = (seed: number) => {
  const rng = new Rng(seed);
  return (n: number) => (n === 4 ? new Uint8Array(4) : rng.bytes(n));
};

/** Frame types of a DATA datagram (the HMAC cipher leaves the frames readable); [] for a handshake datagram. */
function frameTypes(d: Uint8Array): string[] {
  if (decodeDatagram(d).type !== 'data') return [];
  return decodeFrames(d, DATA_HEADER_SIZE, d.length - TAG_SIZE).map((f) => f.type);
}

/** Everything a connection sends now (bounded: a bug that sends for ever must not hang the test). */
function sendAll(c: Connection, now: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let d = c.pollTransmit(now); d && out.length < 50; d = c.pollTransmit(now)) out.push(d);
  return out;
}

function deliver(to: Connection, d: Uint8Array, now: number): string {
  const h = decodeDatagram(d);
  assert.equal(h.type, 'data');
  return h.type === 'data' ? to.handleDatagram(d, h.pnLow, now) : 'rejected';
}

/** Two connections with each other's keys, driven by hand; nothing moves unless the test moves it. */
function connections(cfg: Partial<ConnectionConfig> = {}): {
  a: Connection;
  b: Connection;
  aEvents: ConnectionEvent[];
  bEvents: ConnectionEvent[];
} {
  const config = { ...DEFAULT_CONNECTION_CONFIG, ...cfg };
  const k1 = new Uint8Array(32).fill(1);
  const k2 = new Uint8Array(32).fill(2);
  const a = new Connection({ localConnId: 1, remoteConnId: 2, cipher: new HmacPacketCipher(k1, k2), config, now: 0 });
  const b = new Connection({ localConnId: 2, remoteConnId: 1, cipher: new HmacPacketCipher(k2, k1), config, now: 0 });
  return { a, b, aEvents: recordEvents(() => a), bEvents: recordEvents(() => b) };
}

// ---- the client's handshake and reconnect backoffs ---------------------------------

/** A client alone (no server answers): the times its HELLOs go, each at its timer's deadline. */
function helloTimes(patch: Partial<ClientConfig>, count: number): number[] {
  const c = new ClientEndpoint(
    {
      ...CONN,
      tokenKey: KEY,
      encrypt: false,
      handshakeRetryMs: 100,
      reconnect: { enabled: true, minDelayMs: 100, maxDelayMs: 60_000 },
      ...patch,
    },
    lowJitter(1),
  );
  c.start(0, Infinity);
  const times: number[] = [];
  let now = 0;
  for (let i = 0; i < count; i++) {
    for (let d = c.pollTransmit(now), n = 0; d && n < 10; d = c.pollTransmit(now), n++) {
      assert.equal(decodeDatagram(d).type, 'hello');
      times.push(now);
    }
    now = c.nextDeadline();
    c.handleTimeout(now);
  }
  return times;
}

const gaps = (t: number[]) => t.slice(1).map((x, i) => x - t[i]!);

test('HELLO retransmissions double from handshakeRetryMs up to 1 s (mutants: the backoff does not double, the cap changed)', () => {
  // Nominal waits 100, 200, 400, 800, then 1000 for good; jitter 0.75 with zero randomness.
  assert.deepEqual(gaps(helloTimes({}, 9)), [75, 150, 300, 600, 750, 750, 750, 750]);
});

test('HELLO retransmissions never wait longer than the reconnect cap either (mutant: the cap dropped from the min)', () => {
  assert.deepEqual(gaps(helloTimes({ reconnect: { enabled: true, minDelayMs: 100, maxDelayMs: 300 } }, 6)), [75, 150, 225, 225, 225]);
});

const CLIENT_AT: Address = { address: '127.0.3.1', port: 40_000 };

/**
 * A client and a server back to back with no latency, driven from deadline to deadline:
 * every client event and every handshake datagram the client sends, with its time.
 */
function endpoints(serverPatch: Partial<ServerConfig>) {
  const rng = new Rng(11);
  const server = new ServerEndpoint(
    { ...CONN, tokenKey: KEY, maxClients: 8, sessionLingerMs: 30_000, encrypt: false, handshakesPerSecond: 0, ...serverPatch },
    (n) => rng.bytes(n),
    0,
  );
  const client = new ClientEndpoint(
    { ...CONN, tokenKey: KEY, encrypt: false, handshakeRetryMs: 100, reconnect: { enabled: true, minDelayMs: 100, maxDelayMs: 10_000 } },
    lowJitter(2),
  );
  const r = {
    server,
    client,
    now: 0,
    events: [] as { at: number; e: ClientEvent }[],
    hellos: [] as number[],
    pump(): void {
      // Bounded: a bug that sends or raises events for ever must fail the test, not hang it.
      const most = 1000;
      for (let moved = true, i = 0; moved && i < 100; i++) {
        moved = false;
        let n = 0;
        for (let d = client.pollTransmit(r.now); d && n < most; d = client.pollTransmit(r.now), n++) {
          moved = true;
          if (decodeDatagram(d).type === 'hello') r.hellos.push(r.now);
          server.handleDatagram(d, CLIENT_AT, r.now);
        }
        for (let o = server.pollTransmit(r.now); o && n < 2 * most; o = server.pollTransmit(r.now), n++) {
          moved = true;
          client.handleDatagram(o.bytes, r.now);
        }
        for (let e = client.pollEvent(); e && n < 3 * most; e = client.pollEvent(), n++) r.events.push({ at: r.now, e });
        for (let e = server.pollEvent(); e && n < 4 * most; e = server.pollEvent(), n++);
      }
    },
    run(until: number): void {
      for (let i = 0; i < 100_000; i++) {
        client.handleTimeout(r.now);
        server.handleTimeout(r.now);
        r.pump();
        const next = Math.min(client.nextDeadline(), server.nextDeadline());
        if (next > until) {
          r.now = until;
          return;
        }
        r.now = next > r.now ? next : r.now + 1;
      }
      throw new Error(`no progress at ${r.now}`);
    },
    retries(): { at: number; delayMs: number }[] {
      return r.events.flatMap((x) => (x.e.type === 'retrying' ? [{ at: x.at, delayMs: x.e.delayMs }] : []));
    },
  };
  return r;
}

test('a client refused as server-full waits twice as long after each refusal, up to maxDelayMs (mutant: the reconnect backoff does not grow)', () => {
  const r = endpoints({ maxClients: 0 });
  r.client.start(0, Infinity);
  r.run(20_000);
  assert.ok(r.events.some((x) => x.e.type === 'refused' && x.e.reason === 'server-full'));
  const retries = r.retries().slice(0, 9);
  // Nominal 100, 200, ... 6400, then maxDelayMs (10 000); equal jitter at its low end halves them.
  assert.deepEqual(
    retries.map((x) => x.delayMs),
    [50, 100, 200, 400, 800, 1600, 3200, 5000, 5000],
  );
  // And the next attempt's HELLO goes exactly when the wait is over.
  for (const x of retries) assert.ok(r.hellos.includes(x.at + x.delayMs), `a HELLO at ${x.at + x.delayMs}`);
  assert.ok(!r.events.some((x) => x.e.type === 'connected' || x.e.type === 'failed'), 'it keeps trying');
});

test('a successful reconnect resets the reconnect backoff: the next loss waits minDelayMs again (mutant: failures not reset on ACCEPT)', () => {
  const r = endpoints({});
  r.client.start(0, Infinity);
  r.run(50);
  assert.equal(r.client.state, 'connected');
  // The server fills up and closes our connection: the loss and three refusals grow the backoff.
  r.server.configure({ maxClients: 0 });
  r.server.close(r.now, r.server.connIds()[0]);
  for (let i = 0; i < 100 && r.retries().length < 4; i++) r.run(r.now + 10);
  assert.deepEqual(
    r.retries().map((x) => x.delayMs),
    [50, 100, 200, 400],
  );
  // Room again: the next attempt connects.
  r.server.configure({ maxClients: 8 });
  r.run(r.now + 1000);
  assert.equal(r.client.state, 'connected');
  const before = r.retries().length;
  r.server.close(
    r.now,
    r.server.connIds().find((id) => r.server.connection(id)?.state !== 'closed'),
  );
  r.run(r.now + 1000);
  const after = r.retries().slice(before);
  assert.ok(after.length > 0, 'the client lost the connection and waits to reconnect');
  assert.equal(after[0]!.delayMs, 50, 'the first wait after a connection is minDelayMs (jitter at its low end), as at the start');
});

// ---- path validation ---------------------------------------------------------------

/** A connection that challenges a new address nobody answers at: when challenges go, and when it gives up. */
function unansweredChallenges(received: number): { challenges: number[]; failedAt: number | undefined } {
  const { a, aEvents } = connections();
  a.validatePath(0, new Uint8Array(8).fill(7), received);
  const challenges: number[] = [];
  let now = 0;
  for (let i = 0; i < 1000 && now < 5000; i++) {
    for (const d of sendAll(a, now)) if (frameTypes(d).includes('path-challenge')) challenges.push(now);
    const failed = aEvents.findIndex((e) => e.type === 'path-failed');
    if (failed >= 0) return { challenges, failedAt: now };
    now = a.nextDeadline();
    a.handleTimeout(now);
  }
  return { challenges, failedAt: undefined };
}

// No RTT sample: the probe timeout is 100 + 4 x 50 + 10 = 310 ms, above the 100 ms floor of the retry.
const R = 310;

test('PATH_CHALLENGE goes again after R, 2R: each wait doubles, and validation fails 4R after the third (mutant: the retry backoff)', () => {
  const { challenges, failedAt } = unansweredChallenges(100_000);
  assert.deepEqual(challenges, [0, R, 3 * R]);
  assert.equal(failedAt, 7 * R);
});

test('path validation gives up after exactly three unanswered challenges (mutants: PATH_TRIES 2 or 4, tries > PATH_TRIES)', () => {
  const { challenges } = unansweredChallenges(100_000);
  assert.equal(challenges.length, 3);
  // With no allowance at all no challenge gets out: the timer gives up after twice as many expiries.
  const starved = unansweredChallenges(0);
  assert.deepEqual(starved.challenges, []);
  assert.equal(starved.failedAt, 6 * R);
});

test('an answer to the third PATH_CHALLENGE still validates the path (mutant: one try fewer)', () => {
  const l = link();
  l.run(50);
  l.b.conn.validatePath(l.now, new Uint8Array(8).fill(9), 1_000_000);
  let seen = 0;
  // The first two challenges are lost on the way; the third reaches a, which echoes it.
  l.run(3000, (types, to) => to === l.a && types.includes('path-challenge') && ++seen <= 2);
  assert.equal(seen, 3, 'three challenges went');
  const types = l.b.events.map((e) => e.type);
  assert.ok(types.includes('path-validated'), types.join(','));
  assert.ok(!types.includes('path-failed'));
});

// ---- closing -----------------------------------------------------------------------

test('CLOSE goes again after the probe timeout, then twice as long each time, until closeTimeoutMs (mutant: the CLOSE retransmit backoff)', () => {
  const { a, aEvents } = connections();
  a.close(0);
  const closes: number[] = [];
  let now = 0;
  for (let i = 0; i < 1000 && a.state !== 'closed'; i++) {
    for (const d of sendAll(a, now)) if (frameTypes(d).includes('close')) closes.push(now);
    now = a.nextDeadline();
    a.handleTimeout(now);
  }
  // No RTT sample: the first wait is the probe timeout, 310 ms; then 620, 1240, 2480.
  assert.deepEqual(closes, [0, 310, 930, 2170, 4650]);
  assert.equal(now, DEFAULT_CONNECTION_CONFIG.closeTimeoutMs);
  assert.deepEqual(aEvents.at(-1), { type: 'ended', reason: 'normal', byPeer: false });
});

test('on a fast path CLOSE still waits at least 20 ms before it goes again (mutant: MIN_CLOSE_RETRY_MS)', () => {
  const { a, b } = connections({ maxAckDelayMs: 1 });
  a.send(new Uint8Array([1]), true);
  for (let t = 0; t < 5; t++) {
    a.handleTimeout(t);
    b.handleTimeout(t);
    for (const d of sendAll(a, t)) deliver(b, d, t);
    for (const d of sendAll(b, t)) deliver(a, d, t);
  }
  const rtt = a.stats().rtt as { smoothedMs: number; varianceMs: number };
  const pto = rtt.smoothedMs + Math.max(4 * rtt.varianceMs, 1) + 1;
  assert.ok(pto < 10, `the probe timeout is well under 20 ms (${pto})`);
  const start = 10;
  a.close(start);
  const closes: number[] = [];
  let now = start;
  for (let i = 0; i < 1000 && closes.length < 4; i++) {
    for (const d of sendAll(a, now)) if (frameTypes(d).includes('close')) closes.push(now - start);
    now = a.nextDeadline();
    a.handleTimeout(now);
  }
  assert.deepEqual(closes, [0, 20, 60, 140]);
});

test('after a peer CLOSE the connection drains 3 PTO: each fresh CLOSE is answered once, a replay or silence never (mutant: the drain period)', () => {
  const { a, b, aEvents, bEvents } = connections();
  a.close(0);
  const close0 = sendAll(a, 0);
  assert.deepEqual(close0.map(frameTypes), [['close']]);
  deliver(b, close0[0]!, 0);
  assert.deepEqual(bEvents.at(-1), { type: 'ended', reason: 'normal', byPeer: true });
  const answer0 = sendAll(b, 0);
  assert.equal(answer0.length, 1);
  assert.ok(frameTypes(answer0[0]!).includes('closed'), 'one CLOSED (with the ACK of the CLOSE)');
  // That CLOSED is lost. b stays silent until a's CLOSE comes again, 310 ms later.
  let now = 0;
  let close1: Uint8Array | undefined;
  for (let i = 0; i < 100 && !close1; i++) {
    now = Math.min(a.nextDeadline(), b.nextDeadline());
    a.handleTimeout(now);
    b.handleTimeout(now);
    assert.deepEqual(sendAll(b, now), [], `b sends nothing on its own at ${now}`);
    close1 = sendAll(a, now).find((d) => frameTypes(d).includes('close'));
  }
  assert.equal(now, 310);
  assert.equal(b.finished, false, 'b is draining');
  deliver(b, close1!, now);
  const answer1 = sendAll(b, now);
  assert.equal(answer1.length, 1);
  assert.ok(frameTypes(answer1[0]!).includes('closed'), 'the repeated CLOSE is answered, once');
  assert.equal(deliver(b, close1!, now), 'duplicate', 'a replayed CLOSE is dropped');
  assert.deepEqual(sendAll(b, now), [], 'and not answered');
  deliver(a, answer1[0]!, now);
  assert.deepEqual(aEvents.at(-1), { type: 'ended', reason: 'normal', byPeer: false }, 'a closed cleanly, well before its timeout');
  // The drain lasts three probe timeouts from the first CLOSE (no RTT sample: 3 x 310 ms).
  b.handleTimeout(3 * 310 - 1);
  assert.equal(b.finished, false);
  assert.equal(b.nextDeadline(), 3 * 310);
  b.handleTimeout(3 * 310);
  assert.equal(b.finished, true, 'then b is finished and may be forgotten');
  assert.equal(b.nextDeadline(), Infinity);
});

test("a server whose CLOSED was lost answers the client's repeated CLOSE, not with a stateless reset (mutant: no drain period)", () => {
  const p = new Pair(21, false);
  const c = p.client('127.0.4.1');
  c.ep.start(p.now, Infinity);
  p.run(100);
  assert.equal(c.ep.state, 'connected');
  let lost = 0;
  let fromServer = 0;
  p.pass = (bytes, from) => {
    // Pair.run polls until nothing is left: a server that never stops sending must fail the test, not hang it.
    if (from === SERVER && ++fromServer > 1000) throw new Error('the server sends without end');
    return !(from === SERVER && frameTypes(bytes).includes('closed') && ++lost === 1);
  };
  c.ep.close(p.now);
  p.run(1500); // past the server's drain: three probe timeouts (no RTT sample there: 930 ms)
  assert.equal(lost, 2, 'the first CLOSED was lost; a second one answered the repeated CLOSE');
  assert.ok(c.events.includes('ended:normal'), c.events.join(','));
  assert.ok(!c.events.includes('ended:reset'), c.events.join(','));
  assert.equal(c.ep.state, 'closed');
  assert.equal(p.server.connIds().length, 0, 'and the server forgot the connection after the drain');
});

// ---- congestion --------------------------------------------------------------------

const windowOf = (c: Connection): number => (c.stats().congestion as { windowBytes: number }).windowBytes;

test('persistent congestion collapses the window to two datagrams (mutant: the connection ignores persistentCongestion)', () => {
  const l = link();
  const chunk = new Uint8Array(1000);
  const bulk = (ms: number, drop?: (types: string[], to: typeof l.a) => boolean) => {
    for (let t = 0; t < ms; t++) {
      while (l.a.conn.queuedBytes < 100_000) l.a.conn.send(chunk, true);
      l.run(1, drop);
    }
  };
  bulk(100);
  const before = windowOf(l.a.conn);
  assert.ok(before > 100 * BASE_DATAGRAM_SIZE, `slow start grew the window (${before})`);
  // Everything from a is lost for 500 ms: many probe timeouts, nothing acknowledged. On a
  // path without a queue those losses are taken for noise (the window would stay), so
  // only persistent congestion brings it down.
  bulk(500, (_types, to) => to === l.b);
  // The next probe gets through (the probe timer has backed off: within 400 ms).
  let least = Infinity;
  for (let t = 0; t < 400 && least === Infinity; t++) {
    bulk(1);
    if (l.a.conn.stats().packetsLost > 0) least = windowOf(l.a.conn);
  }
  const congestion = l.a.conn.stats().congestion as { persistentCongestions: number; ssthresh: number };
  assert.equal(congestion.persistentCongestions, 1, 'the loss detector saw it');
  assert.ok(least < 3 * BASE_DATAGRAM_SIZE, `the window went down to about two datagrams (${least}; ${before} before)`);
  assert.ok(Math.abs(congestion.ssthresh - before / 2) < 0.02 * before, `slow start ends at half the old window (${congestion.ssthresh})`);
});

/** The window after 2 s of sending `packets` reliable messages of 1000 bytes at once every 20 ms over a 10 ms round trip. */
function windowAfterBursts(packets: number): { window: number; initial: number } {
  const l = link();
  const initial = windowOf(l.a.conn);
  const msg = new Uint8Array(1000);
  for (let t = 0; t < 2000; t += 20) {
    for (let i = 0; i < packets; i++) l.a.conn.send(msg, true);
    l.run(20);
  }
  return { window: windowOf(l.a.conn), initial };
}

test('the window grows only on packets sent with at least half of it in flight (RFC 9002 7.8; mutant: a quarter)', () => {
  // Five packets of 1033 bytes: the last goes with 5165 in flight, under half of the 12 320.
  const limited = windowAfterBursts(5);
  assert.equal(limited.initial, 10 * BASE_DATAGRAM_SIZE);
  assert.equal(limited.window, limited.initial, 'an application-limited sender keeps its window');
  // Seven: the sixth (6198) and the seventh go with at least half in flight, and grow it.
  const bound = windowAfterBursts(7);
  assert.ok(bound.window > bound.initial, `${bound.initial} -> ${bound.window}`);
});

test('a packet that brings the bytes in flight to exactly half the window is window-bound (mutant: > for >=)', () => {
  // Five full packets (1223 bytes each) and one small one, all at once: with a last message
  // of 13 bytes (a 45-byte packet) the burst is exactly half of the initial 12 320.
  const burst = (last: number) => {
    const l = link();
    const initial = windowOf(l.a.conn);
    for (let i = 0; i < 5; i++) l.a.conn.send(new Uint8Array(1190), true);
    l.a.conn.send(new Uint8Array(last), true);
    l.run(1);
    const sent = l.a.sent;
    l.run(30);
    return { initial, sent, window: windowOf(l.a.conn) };
  };
  const exact = burst(13);
  assert.equal(2 * exact.sent, exact.initial, `the burst is half the window (${exact.sent} of ${exact.initial}): the test's premise`);
  assert.equal(exact.window, exact.initial + 45, 'the ACK of the last packet, sent at exactly half, grows the window by its size');
  const short = burst(12);
  assert.equal(2 * short.sent, short.initial - 2);
  assert.equal(short.window, short.initial, 'a byte short of half: nothing grows');
});

test('the pacer sends at 1.25 times the window per smoothed RTT (RFC 9002 7.7; mutant: PACING_GAIN)', () => {
  assert.equal(Pacer.rate(100_000, 100), 1250);
  // Over one second of virtual time, 1000-byte packets as fast as it allows: the initial
  // bucket of ten, then 1250 bytes per ms.
  const p = new Pacer(1000, 0);
  let now = 0;
  let sent = 0;
  for (let i = 0; i < 10_000 && now <= 1000; i++) {
    const at = p.sendTime(100_000, 100, now);
    if (at <= now) {
      p.onSent(1000);
      sent++;
    } else now = at;
  }
  assert.ok(sent >= 1255 && sent <= 1262, `${sent} packets in 1 s`);
});
