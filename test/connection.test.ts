/**
 * The connection core on its own: two Connection objects wired back to back with a
 * hand-driven clock. Timers are checked at deadline - 1 (nothing) and at deadline.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AeadPacketCipher, HmacPacketCipher } from '../src/crypto/packet-cipher.js';
import { DEFAULT_CONNECTION_CONFIG, type ConnectionConfig, type ConnectionEvent } from '../src/protocol/config.js';
import { Connection } from '../src/protocol/connection/connection.js';
import { decodeDatagram } from '../src/wire/packet.js';
import { decodeFrames } from '../src/wire/frames.js';
import { DATA_HEADER_SIZE, TAG_SIZE } from '../src/wire/constants.js';
import { recordEvents } from './helpers/events.js';

const K1 = new Uint8Array(32).fill(1);
const K2 = new Uint8Array(32).fill(2);

interface End {
  conn: Connection;
  events: ConnectionEvent[];
}

function pair(cfg: Partial<ConnectionConfig> = {}, init: { pn?: number; seq?: number; aead?: boolean } = {}): { a: End; b: End } {
  const config = { ...DEFAULT_CONNECTION_CONFIG, ...cfg };
  const mk = (local: number, remote: number, send: Uint8Array, recv: Uint8Array): End => {
    const events = recordEvents(() => conn);
    const conn = new Connection({
      localConnId: local,
      remoteConnId: remote,
      cipher: init.aead ? new AeadPacketCipher(send, recv) : new HmacPacketCipher(send, recv),
      config,
      now: 0,
      initialPacketNumber: init.pn,
      initialSeq: init.seq,
    });
    return { conn, events };
  };
  return { a: mk(1, 2, K1, K2), b: mk(2, 1, K2, K1) };
}

/** Moves every datagram from one side to the other (optionally dropping some), both ways, until quiet. */
function exchange(a: End, b: End, now: number, drop: (bytes: Uint8Array) => boolean = () => false): number {
  let moved = 0;
  for (let progress = true; progress; ) {
    progress = false;
    for (const [from, to] of [
      [a, b],
      [b, a],
    ] as const) {
      for (let d = from.conn.pollTransmit(now); d; d = from.conn.pollTransmit(now)) {
        progress = true;
        moved++;
        if (drop(d)) continue;
        const h = decodeDatagram(d);
        assert.equal(h.type, 'data');
        if (h.type === 'data') to.conn.handleDatagram(d, h.pnLow, now);
      }
    }
  }
  return moved;
}

const types = (e: End): string[] => e.events.filter((x) => x.type !== 'state').map((x) => x.type);

test('stall fires at exactly stallTimeoutMs of silence, disconnect at exactly timeoutMs', () => {
  const { a } = pair({ pingIntervalMs: 100, stallTimeoutMs: 300, timeoutMs: 1000 });
  a.conn.handleTimeout(299);
  assert.equal(a.conn.state, 'connected');
  a.conn.handleTimeout(300);
  assert.equal(a.conn.state, 'stalled');
  assert.ok(types(a).includes('stalled'));
  a.conn.handleTimeout(999);
  assert.equal(a.conn.state, 'stalled');
  a.conn.handleTimeout(1000);
  assert.equal(a.conn.state, 'closed');
  assert.deepEqual(a.events.at(-1), { type: 'ended', reason: 'timeout', byPeer: false });
});

test('a ping goes out at exactly pingIntervalMs and its pong reports the round trip', () => {
  const { a, b } = pair({ pingIntervalMs: 100, stallTimeoutMs: 300, timeoutMs: 1000 });
  a.conn.handleTimeout(99);
  assert.equal(a.conn.pollTransmit(99), null, 'nothing to send before the ping timer');
  a.conn.handleTimeout(100);
  const ping = a.conn.pollTransmit(100);
  assert.ok(ping);
  const h = decodeDatagram(ping);
  if (h.type === 'data') b.conn.handleDatagram(ping, h.pnLow, 105);
  assert.ok(types(b).includes('ping'));
  const pong = b.conn.pollTransmit(105)!;
  const h2 = decodeDatagram(pong);
  if (h2.type === 'data') a.conn.handleDatagram(pong, h2.pnLow, 110);
  const ev = a.events.find((e) => e.type === 'pong');
  assert.deepEqual(ev, { type: 'pong', rttMs: 10 });
});

test('the next packet after a stall unstalls and flushes what was queued, in order', () => {
  const { a, b } = pair({ pingIntervalMs: 100, stallTimeoutMs: 300, timeoutMs: 5000 });
  a.conn.handleTimeout(300);
  assert.equal(a.conn.state, 'stalled');
  for (let i = 0; i < 5; i++) a.conn.send(new Uint8Array([i]), true);
  for (let d = a.conn.pollTransmit(300); d; d = a.conn.pollTransmit(300)) {
    const frames = decodeFrames(d, DATA_HEADER_SIZE, d.length - TAG_SIZE).map((f) => f.type);
    assert.ok(!frames.includes('reliable'), `stalled: data waits, only keep-alives go (${frames.join(',')})`);
  }
  b.conn.ping();
  exchange(a, b, 310);
  assert.equal(a.conn.state, 'connected');
  const got = b.events.filter((e) => e.type === 'message').map((e) => (e.type === 'message' ? e.data[0] : -1));
  assert.deepEqual(got, [0, 1, 2, 3, 4]);
  assert.deepEqual(types(a).slice(0, 2), ['stalled', 'unstalled']);
});

for (const aead of [false, true]) {
  test(`packet numbers across 2^32 and message sequence across 2^16 keep order (${aead ? 'encrypted' : 'authenticated'})`, () => {
    // Under both ciphers the full 64-bit number is under the tag: a wrong expansion fails it.
    const { a, b } = pair({}, { pn: 2 ** 32 - 20, seq: 0xffff - 20, aead });
    let now = 0;
    for (let i = 0; i < 300; i++) {
      a.conn.send(new Uint8Array([i & 0xff, i >> 8]), true);
      if (i % 3 === 0) exchange(a, b, (now += 1));
    }
    exchange(a, b, (now += 1));
    const got = b.events.filter((e) => e.type === 'message').map((e) => (e.type === 'message' ? e.data[0]! | (e.data[1]! << 8) : -1));
    assert.deepEqual(
      got,
      Array.from({ length: 300 }, (_, i) => i),
    );
    assert.ok(b.conn.stats().datagramsReceived > 20);
    assert.equal(b.conn.stats().malformed, 0, 'every packet across the wrap opened');
  });
}

test('lost packets are retransmitted after the loss timer and arrive once, in order', () => {
  const { a, b } = pair();
  let n = 0;
  for (let i = 0; i < 50; i++) a.conn.send(new Uint8Array(600).fill(i), true);
  // Drop every third datagram from a on the first pass.
  exchange(a, b, 0, () => ++n % 3 === 0);
  for (let now = 1; now < 3000; now += 5) {
    a.conn.handleTimeout(now);
    b.conn.handleTimeout(now);
    exchange(a, b, now);
  }
  const got = b.events.filter((e) => e.type === 'message').map((e) => (e.type === 'message' ? e.data[0] : -1));
  assert.deepEqual(
    got,
    Array.from({ length: 50 }, (_, i) => i),
  );
  assert.ok(a.conn.stats().retransmissions > 0);
  assert.equal(a.conn.queueLength, 0);
});

test('a corrupted or forged packet is dropped and counted, and changes nothing', () => {
  const { a, b } = pair();
  a.conn.send(new Uint8Array([7]), true);
  const d = a.conn.pollTransmit(0)!;
  const bad = d.slice();
  bad[12]! ^= 0x40;
  const h = decodeDatagram(bad);
  if (h.type === 'data') assert.equal(b.conn.handleDatagram(bad, h.pnLow, 1), 'rejected');
  assert.equal(b.events.length, 0);
  assert.equal(b.conn.stats().malformed, 1);
  const h2 = decodeDatagram(d);
  if (h2.type === 'data') {
    assert.equal(b.conn.handleDatagram(d, h2.pnLow, 2), 'newest');
    assert.equal(b.conn.handleDatagram(d, h2.pnLow, 3), 'duplicate', 'a replayed packet is a duplicate');
  }
  assert.equal(b.events.filter((e) => e.type === 'message').length, 1);
});

test('graceful close flushes, then CLOSE/CLOSED; both sides end with the reason', () => {
  const { a, b } = pair();
  for (let i = 0; i < 10; i++) a.conn.send(new Uint8Array([i]), true);
  a.conn.close(0);
  assert.equal(a.conn.state, 'closing');
  for (let now = 0; now < 200 && a.conn.state === 'closing'; now += 5) {
    a.conn.handleTimeout(now);
    b.conn.handleTimeout(now);
    exchange(a, b, now);
  }
  assert.equal(a.conn.state, 'closed');
  assert.equal(b.conn.state, 'closed');
  assert.equal(b.events.filter((e) => e.type === 'message').length, 10, 'everything queued before close() arrives');
  assert.deepEqual(a.events.at(-1), { type: 'ended', reason: 'normal', byPeer: false });
  assert.deepEqual(b.events.at(-1), { type: 'ended', reason: 'normal', byPeer: true });
  assert.equal(a.conn.finished, true);
});

test('send() reports backpressure at maxQueue and a drain event follows', () => {
  const { a, b } = pair({ maxQueue: 4 });
  const results = [1, 2, 3, 4, 5].map((i) => a.conn.send(new Uint8Array([i]), true));
  assert.deepEqual(results, [true, true, true, false, false]);
  for (let now = 0; now < 100; now += 5) {
    a.conn.handleTimeout(now);
    b.conn.handleTimeout(now);
    exchange(a, b, now);
  }
  assert.ok(types(a).includes('drain'));
});

test('a message larger than a packet travels in parts through loss and arrives whole, once', () => {
  const { a, b } = pair();
  const big = new Uint8Array(100_000).map((_, i) => (i * 7) & 0xff);
  a.conn.send(new Uint8Array([1]), true);
  a.conn.send(big, true);
  a.conn.send(new Uint8Array([2]), true);
  let n = 0;
  for (let now = 0; now < 5000; now += 5) {
    a.conn.handleTimeout(now);
    b.conn.handleTimeout(now);
    exchange(a, b, now, () => ++n % 5 === 0);
  }
  const got = b.events.filter((e) => e.type === 'message').map((e) => (e.type === 'message' ? e : undefined)!);
  assert.deepEqual(
    got.map((e) => e.data.length),
    [1, 100_000, 1],
  );
  assert.deepEqual(got[1]!.data, big);
  assert.ok(a.conn.stats().messagesSent > 80, 'it went in parts, one sequence number each');
  assert.equal(a.conn.queueLength, 0);
});

test('parts beyond maxMessageSize are dropped and counted; the stream goes on', () => {
  const { a, b } = pair({ maxMessageSize: 3000 });
  // The sender is not bound by the receiver's limit: send 5000 bytes, then a small message.
  a.conn.send(new Uint8Array(5000), true);
  a.conn.send(new Uint8Array([9]), true);
  for (let now = 0; now < 200; now += 5) {
    a.conn.handleTimeout(now);
    b.conn.handleTimeout(now);
    exchange(a, b, now);
  }
  const got = b.events.filter((e) => e.type === 'message').map((e) => (e.type === 'message' ? e.data.length : -1));
  assert.deepEqual(got, [1], 'the oversized message is gone, the next one arrives');
  assert.equal(b.conn.stats().malformed, 1);
});

test('a large unreliable message arrives whole, or not at all when a part is lost', () => {
  const { a, b } = pair();
  const big = new Uint8Array(50_000).map((_, i) => i & 0xff);
  // Over a few milliseconds of virtual time: the pacer spreads the parts out.
  const run = (from: number, drop?: (d: Uint8Array) => boolean) => {
    for (let t = from; t < from + 20; t++) exchange(a, b, t, drop);
  };
  a.conn.send(big, false);
  run(0);
  a.conn.send(big, false);
  let n = 0;
  run(20, (d) => d.length > 1000 && ++n === 10); // lose one part of the second copy
  a.conn.send(new Uint8Array([7]), false);
  run(40);
  const got = b.events.filter((e) => e.type === 'message').map((e) => (e.type === 'message' ? e.data : new Uint8Array()));
  assert.deepEqual(
    got.map((d) => d.length),
    [50_000, 1],
  );
  assert.deepEqual(got[0], big);
  b.conn.handleTimeout(2000);
  assert.equal(b.conn.stats().unreliableDropped, 0);
  b.conn.handleTimeout(3100); // past the reassembly age: the unfinished copy is given up
  assert.equal(b.conn.stats().unreliableDropped, 1);
});

test('a peer that receives CLOSE with messages still queued sends them first, then CLOSED', () => {
  const { a, b } = pair();
  a.conn.close(0); // a has nothing queued: CLOSE goes at once
  const close = a.conn.pollTransmit(0)!;
  for (let i = 0; i < 20; i++) b.conn.send(new Uint8Array(500).fill(i), true); // b's replies
  const h = decodeDatagram(close);
  if (h.type === 'data') b.conn.handleDatagram(close, h.pnLow, 1);
  assert.equal(b.conn.state, 'closing', 'b flushes before answering');
  for (let now = 1; now < 500 && a.conn.state !== 'closed'; now += 5) {
    a.conn.handleTimeout(now);
    b.conn.handleTimeout(now);
    exchange(a, b, now);
  }
  const got = a.events.filter((e) => e.type === 'message').map((e) => (e.type === 'message' ? e.data[0] : -1));
  assert.deepEqual(
    got,
    Array.from({ length: 20 }, (_, i) => i),
    'every reply reached the closing side',
  );
  assert.equal(a.conn.state, 'closed');
  assert.equal(b.conn.state, 'closed');
  assert.deepEqual(b.events.at(-1), { type: 'ended', reason: 'normal', byPeer: true });
});

test('a hostile peer with the keys cannot make the receiver hold more than its caps: part bombs, window bombs, chains', async () => {
  const { ReassemblyBudget } = await import('../src/reliability/budget.js');
  const { ByteWriter } = await import('../src/wire/bytes.js');
  const { writeFrame } = await import('../src/wire/frames.js');
  const { writeDataHeader } = await import('../src/wire/packet.js');
  const budget = new ReassemblyBudget(8 * 1024 * 1024);
  const events = recordEvents(() => victim);
  const { newInbound, releaseInbound } = await import('../src/protocol/connection/connection.js');
  const inbound = newInbound();
  const victim = new Connection({
    localConnId: 2,
    remoteConnId: 1,
    cipher: new HmacPacketCipher(K2, K1),
    config: { ...DEFAULT_CONNECTION_CONFIG, maxMessageSize: 1 << 20 },
    now: 0,
    budget,
    inbound,
  });
  const attacker = new HmacPacketCipher(K1, K2);
  let pn = 0;
  const inject = (frames: Parameters<typeof writeFrame>[1][]) => {
    const out = new Uint8Array(65_000);
    const w = new ByteWriter(out);
    writeDataHeader(w, 2, pn);
    for (const f of frames) writeFrame(w, f);
    const packet = out.slice(0, w.offset + TAG_SIZE);
    attacker.seal(packet, w.offset, pn);
    victim.handleDatagram(packet, pn++, 1);
  };
  const chunk = new Uint8Array(1000);
  // 0. One channel's message growing in order past maxMessageSize (1 MiB): dropped, its bytes given back.
  for (let i = 0; i < 1500; i++) inject([{ type: 'reliable', channel: 7, seq: i, delta: i === 0 ? 0 : 1, data: chunk, last: false }]);
  assert.ok(budget.used < 1 << 20, `the oversized message was let go (${budget.used} held)`);
  // 1. Unreliable parts claiming messages of 2^40 parts, thousands of them.
  for (let id = 0; id < 5000; id++) inject([{ type: 'unreliable', channel: 0, data: chunk, part: { id, index: 0, count: 2 ** 40 } }]);
  // 2. Reliable units far out of order, each waiting for a predecessor that never comes.
  for (let i = 1; i < 8000; i++)
    inject([{ type: 'reliable', channel: i % 256, seq: (1501 + i) & 0xffff, delta: 1, data: chunk.subarray(0, 900), last: false }]);
  assert.ok(budget.used <= budget.limit + (1 << 20), `held ${budget.used} bytes against a limit of ${budget.limit}`);
  assert.ok(budget.peak <= budget.limit + (1 << 20), `peak ${budget.peak}`);
  assert.ok(victim.stats().refused > 1000, `out-of-order units past 4 MiB refused (${victim.stats().refused})`);
  assert.ok(victim.stats().unreliableDropped > 4000, `claimed-huge unreliable messages dropped (${victim.stats().unreliableDropped})`);
  assert.equal(victim.state, 'connected', 'and the connection is still there');
  assert.equal(events.filter((e) => e.type === 'message').length, 0, 'nothing bogus delivered');
  victim.abort('protocol-error');
  releaseInbound(inbound); // the session ends too
  assert.equal(budget.used, 0, 'everything given back when the connection and its session end');
});

test('one session cannot hold more than about two maxMessageSize of half-built messages, whatever the channels', async () => {
  const { RECEIVE_WINDOW_BYTES } = await import('../src/reliability/receiver.js');
  const { ReassemblyBudget } = await import('../src/reliability/budget.js');
  const { ByteWriter } = await import('../src/wire/bytes.js');
  const { writeFrame } = await import('../src/wire/frames.js');
  const { writeDataHeader } = await import('../src/wire/packet.js');
  const { newInbound } = await import('../src/protocol/connection/connection.js');
  const MAX = 1 << 20;
  const budget = new ReassemblyBudget(8 * MAX);
  const peer = (id: number, events: ConnectionEvent[]) => {
    const conn = new Connection({
      localConnId: id,
      remoteConnId: 1,
      cipher: new HmacPacketCipher(K2, K1),
      config: { ...DEFAULT_CONNECTION_CONFIG, maxMessageSize: MAX },
      now: 0,
      budget,
      inbound: newInbound(),
    });
    const c = new HmacPacketCipher(K1, K2);
    let pn = 0;
    return (frames: Parameters<typeof writeFrame>[1][]) => {
      const out = new Uint8Array(65_000);
      const w = new ByteWriter(out);
      writeDataHeader(w, id, pn);
      for (const f of frames) writeFrame(w, f);
      const packet = out.slice(0, w.offset + TAG_SIZE);
      c.seal(packet, w.offset, pn);
      conn.handleDatagram(packet, pn++, 1);
      for (let e = conn.pollEvent(); e; e = conn.pollEvent()) events.push(e);
    };
  };
  // A hostile session opens a message on each of 40 channels, 60 kB at a time, in order, and never finishes one.
  const inject = peer(2, []);
  const chunk = new Uint8Array(60_000);
  const lastOn = new Map<number, number>();
  for (let seq = 0; seq < 400; seq++) {
    const ch = seq % 40;
    const prev = lastOn.get(ch);
    inject([{ type: 'reliable', channel: ch, seq, delta: prev === undefined ? 0 : seq - prev, data: chunk, last: false }]);
    lastOn.set(ch, seq);
  }
  // Half-built messages: up to MAX, plus the oldest growing past it; units waiting for
  // a refused predecessor sit in the reorder buffer, whose own cap is 4 MiB.
  assert.ok(budget.used <= 2 * MAX + RECEIVE_WINDOW_BYTES + 65_536, `the session holds ${budget.used} bytes`);
  // An honest session still gets its large message through.
  const events: ConnectionEvent[] = [];
  const honest = peer(3, events);
  for (let seq = 0; seq < 15; seq++)
    honest([{ type: 'reliable', channel: 0, seq, delta: seq === 0 ? 0 : 1, data: chunk, last: seq === 14 }]);
  assert.equal(events.filter((e) => e.type === 'message').length, 1, 'the honest 900 kB message arrived');
});

test('initialPacketNumber (tests only) must be an integer below 2^32', () => {
  for (const pn of [2 ** 32, -1, 1.5]) assert.throws(() => pair({}, { pn }), /initialPacketNumber/);
});
