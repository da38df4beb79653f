/**
 * Congestion control (src/congestion/reno.ts): NewReno's growth and its halving when the
 * path shows a queue, and no halving for loss on a path without one (issue 11: random
 * loss must not be taken for congestion forever; the sender must still back off under
 * real congestion). Unit tests drive the controller by hand; the simulations push a
 * bulk transfer through a drop-tail bottleneck in virtual time, with seeded random loss
 * on top. A failing simulation names its seed.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Reno } from '../src/congestion/reno.js';
import { RttEstimator } from '../src/reliability/rtt.js';
import { Rng } from '../src/testing/random.js';
import { type Bottleneck, link } from './helpers/link.js';

const MSS = 1200;

function reno(minRtt?: number, smoothed = minRtt): { cc: Reno; rtt: RttEstimator } {
  const rtt = new RttEstimator(100);
  if (minRtt !== undefined && smoothed !== undefined) {
    rtt.update(minRtt, 0);
    rtt.smoothed = smoothed;
  }
  return { cc: new Reno(MSS, rtt), rtt };
}

test('slow start adds what is acknowledged; congestion avoidance adds about a datagram per window', () => {
  const { cc } = reno(10);
  const start = cc.window;
  assert.equal(start, 10 * MSS, 'the initial window of RFC 9002 7.2');
  cc.onAck(MSS, 1, 1, true);
  assert.equal(cc.window, start + MSS);
  // A congestion event ends slow start, then a whole window acknowledged adds one datagram.
  const queued = reno(10, 20).cc;
  queued.onLoss(MSS, 5, 6);
  const w = queued.window;
  for (let acked = 0; acked < w; acked += MSS) queued.onAck(MSS, 7, 7, true);
  assert.ok(Math.abs(queued.window - (w + MSS)) < MSS * 0.1, `one datagram per window: ${w} -> ${queued.window}`);
});

test('a loss with a queue on the path halves the window, once per round trip', () => {
  const { cc } = reno(10, 20);
  const w = cc.window;
  cc.onLoss(MSS, 5, 6);
  assert.equal(cc.window, w / 2);
  cc.onLoss(MSS, 5.5, 7); // sent before the reduction: the same round
  assert.equal(cc.window, w / 2, 'a second loss of the same round does not halve again');
  cc.onLoss(MSS, 8, 30); // sent after it: a new round
  assert.equal(cc.window, w / 4);
  assert.equal(cc.toJSON().congestionEvents, 2);
  assert.equal(cc.toJSON().randomLossEvents, 0);
});

test('a loss on a path without a queue keeps the window and slow start', () => {
  const { cc } = reno(10, 10.5);
  const w = cc.window;
  cc.onLoss(MSS, 5, 6);
  assert.equal(cc.window, w, 'the window is kept');
  assert.equal(cc.toJSON().randomLossEvents, 1);
  assert.equal(cc.toJSON().ssthresh, -1, 'slow start goes on');
  cc.onAck(MSS, 7, 7, true);
  assert.equal(cc.window, w + MSS, 'and still doubles per round trip');
  // Packets of the round the loss started do not grow the window (as in recovery).
  cc.onAck(MSS, 5.5, 5.5, true);
  assert.equal(cc.window, w + MSS);
});

test('the queue threshold: a quarter of the minimum RTT, never under 1 ms', () => {
  for (const [min, smoothed, congested] of [
    [20, 24.5, false],
    [20, 25.5, true],
    [0.2, 1.1, false],
    [0.2, 1.3, true],
  ] as const) {
    const { cc } = reno(min, smoothed);
    const w = cc.window;
    cc.onLoss(MSS, 1, 2);
    assert.equal(cc.window < w, congested, `min ${min} ms, smoothed ${smoothed} ms`);
  }
});

test('heavy loss halves the window even without a queue (a policer, an overloaded link)', () => {
  const { cc } = reno(10);
  let now = 1;
  // Two of every three datagrams lost, each loss in a new round: the loss rate climbs past 40%.
  for (let i = 0; i < 200 && cc.toJSON().congestionEvents === 0; i++) {
    cc.onAck(MSS, now - 0.5, now - 0.5, true);
    cc.onLoss(MSS, now + 0.1, now + 0.2);
    cc.onLoss(MSS, now + 0.3, now + 0.4);
    now += 1;
  }
  assert.equal(cc.toJSON().congestionEvents, 1, 'the window was cut');
  assert.ok(Number(cc.toJSON().randomLossEvents) > 0, 'after losses first taken for noise');
  assert.ok(Number(cc.toJSON().lossRate) > 0.4, `loss rate ${cc.toJSON().lossRate}`);
});

test('before any RTT sample a loss is congestion; persistent congestion collapses to two datagrams', () => {
  const { cc } = reno();
  const w = cc.window;
  cc.onLoss(MSS, 1, 2);
  assert.equal(cc.window, w / 2);
  const other = reno(10).cc;
  const before = other.window;
  other.onPersistentCongestion();
  assert.equal(other.window, 2 * MSS);
  assert.equal(other.toJSON().ssthresh, before / 2, 'slow start ends at half the old window');
});

test('the queue threshold slides down as losses grow', () => {
  // min 20 ms, 3 ms of queue: noise while losses are rare (under 5 ms), congestion at a 20% loss rate (under 2.5 ms).
  const { cc } = reno(20, 23);
  const w = cc.window;
  cc.onLoss(MSS, 1, 2);
  assert.equal(cc.window, w, 'rare losses: 3 ms of queue is noise');
  const lossy = reno(20, 23).cc;
  for (let i = 0; i < 200 && Number(lossy.toJSON().lossRate) < 0.2; i++) {
    lossy.onAck(MSS, 0, 0, true);
    lossy.onLoss(MSS, 0, 0.5); // sent before the round the first loss started: no decision
  }
  const rate = Number(lossy.toJSON().lossRate);
  assert.ok(rate >= 0.2 && rate < 0.4, `loss rate ${rate}`);
  const lw = lossy.window;
  lossy.onLoss(MSS, 10, 11);
  assert.ok(lossy.window < lw, 'at a 20% loss rate the same queue is congestion');
});

// --- In the simulator: a bulk transfer through a bottleneck ---

/** 1 MB/s with 40 ms of buffer: four times the 10 ms path's bandwidth-delay product. */
const BOTTLENECK: Bottleneck = { bytesPerMs: 1000, bufferBytes: 40_000 };
const RUN_MS = 8000;

/** Bytes delivered in RUN_MS while `a` always has data queued, losing each datagram with probability `loss`. */
function transfer(
  loss: number,
  seed: number,
  bottleneck = BOTTLENECK,
): { bytes: number; queueDrops: number; windowBytes: number; rtt: number } {
  const rng = new Rng(seed);
  const l = link(undefined, {}, bottleneck);
  const { a, b } = l;
  l.run(50);
  const chunk = new Uint8Array(1000);
  const drop = () => loss > 0 && rng.next() < loss;
  for (let t = 0; t < RUN_MS; t++) {
    while (a.conn.queuedBytes < 200_000) a.conn.send(chunk, true);
    l.run(1, drop);
  }
  let bytes = 0;
  for (const e of b.events) if (e.type === 'message') bytes += e.data.length;
  const s = a.conn.stats();
  return {
    bytes,
    queueDrops: l.queueDrops,
    windowBytes: (s.congestion as { windowBytes: number }).windowBytes,
    rtt: (s.rtt as { smoothedMs: number }).smoothedMs,
  };
}

test('sim: through a bottleneck the sender backs off: the link stays busy and the queue drops little', () => {
  const seed = 1;
  const r = transfer(0, seed);
  const capacity = BOTTLENECK.bytesPerMs * RUN_MS;
  const where = `seed ${seed}: ${JSON.stringify(r)}`;
  assert.ok(r.bytes > 0.8 * capacity, `the link was used: ${where}`);
  assert.ok(r.queueDrops > 0, `the sender filled the queue (else this tests nothing): ${where}`);
  // A sender that never backed off would lose most of what it sends once the queue is full.
  assert.ok(r.queueDrops < 0.05 * (r.bytes / 1000), `the queue dropped little: ${where}`);
  assert.ok(r.windowBytes < 4 * (10 * BOTTLENECK.bytesPerMs + BOTTLENECK.bufferBytes), `the window is bounded: ${where}`);
});

test('sim: random loss on top of the bottleneck is not taken for congestion', () => {
  const clean = transfer(0, 1).bytes;
  for (const [loss, floor] of [
    [0.02, 0.8],
    [0.2, 0.3],
  ] as const) {
    for (const seed of [2, 3]) {
      const r = transfer(loss, seed);
      const ratio = r.bytes / clean;
      assert.ok(ratio >= floor, `${loss * 100}% loss each way, seed ${seed}: ${ratio.toFixed(2)}x of clean (${JSON.stringify(r)})`);
    }
  }
});

test('sim: a shallow buffer (a third of the RTT) shows a short queue; the sender still backs off before losses are heavy', () => {
  const seed = 4;
  const r = transfer(0, seed, { bytesPerMs: 1000, bufferBytes: 5000 });
  const where = `seed ${seed}: ${JSON.stringify(r)}`;
  assert.ok(r.bytes > 0.8 * 1000 * RUN_MS, `the link was used: ${where}`);
  // Taking every such loss for noise until the 40% bound ran at about 30% loss here.
  const lossRate = r.queueDrops / (r.queueDrops + r.bytes / 1000);
  assert.ok(lossRate < 0.22, `the queue dropped ${(lossRate * 100).toFixed(1)}%: ${where}`);
});

test('sim: an application-limited sender does not grow its window (RFC 9002 7.8), and one that fills it still does', () => {
  // A game loop: 200 bytes every 20 ms, reliable, over a 10 ms round trip, for 60 s. It
  // never has more than a packet in flight, so its ACKs say nothing about what the path
  // could carry: growing on them left a window of megabytes that a later burst would be
  // sent into the network at once with.
  const l = link();
  const msg = new Uint8Array(200);
  for (let t = 0; t < 60_000; t += 20) {
    l.a.conn.send(msg, true);
    l.run(20);
  }
  const window = (l.a.conn.stats().congestion as { windowBytes: number }).windowBytes;
  const initial = new Reno(MSS, new RttEstimator(100)).window;
  assert.ok(window <= 2 * initial, `window ${window} after 60 s of one small packet at a time (initial ${initial})`);
  // A bulk sender, window-limited, still grows.
  const big = new Uint8Array(1 << 20);
  for (let i = 0; i < 4; i++) l.a.conn.send(big, true);
  l.run(300);
  const grown = (l.a.conn.stats().congestion as { windowBytes: number }).windowBytes;
  assert.ok(grown > 4 * window, `a window-limited sender grows: ${window} -> ${grown}`);
});

test('the window grows only on packets sent while the window bound them', () => {
  const { cc } = reno(10);
  const start = cc.window;
  cc.onAck(MSS, 1, 2, false);
  assert.equal(cc.window, start, 'a packet sent with most of the window unused adds nothing');
  cc.onAck(MSS, 1, 2, true);
  assert.equal(cc.window, start + MSS);
});
