/**
 * Real heap, not just counted bytes, stays bounded by maxReassemblyBytes whatever a
 * peer with the keys sends: every unit the receiver holds is charged its payload plus
 * UNIT_OVERHEAD_BYTES (src/reliability/budget.ts), and empty non-final parts, which
 * cost heap but no bytes, are malformed on the wire.
 *
 * Heap here is V8's heapUsed plus arrayBuffers (a received part is a copy with its own
 * ArrayBuffer), measured after a forced gc, with the victim connections and what they
 * hold kept alive.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { HmacPacketCipher } from '../src/crypto/packet-cipher.js';
import { DEFAULT_CONNECTION_CONFIG, type ConnectionEvent } from '../src/protocol/config.js';
import { Connection, newInbound, releaseInbound, type InboundSession } from '../src/protocol/connection/connection.js';
import { ReassemblyBudget } from '../src/reliability/budget.js';
import { ByteWriter } from '../src/wire/bytes.js';
import { type Frame, writeFrame } from '../src/wire/frames.js';
import { writeDataHeader } from '../src/wire/packet.js';
import { TAG_SIZE } from '../src/wire/constants.js';
import { recordEvents } from './helpers/events.js';
import { Pair } from './helpers/pair.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const K1 = new Uint8Array(32).fill(1);
const K2 = new Uint8Array(32).fill(2);
const MiB = 1024 * 1024;

function heap(): number {
  gc();
  gc();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

interface Victim {
  conn: Connection;
  inbound: InboundSession;
  events: ConnectionEvent[];
  /**
   * Sends one authenticated datagram holding these frames, as a peer with the keys can;
   * `asDgram` hands it over as node:dgram does, a Buffer of its own exactly its size.
   */
  inject: (frames: Frame[], asDgram?: boolean) => void;
}

function victim(id: number, budget: ReassemblyBudget): Victim {
  const events = recordEvents(() => conn);
  const inbound = newInbound();
  const conn = new Connection({
    localConnId: id,
    remoteConnId: 1,
    cipher: new HmacPacketCipher(K2, K1),
    config: DEFAULT_CONNECTION_CONFIG,
    now: 0,
    budget,
    inbound,
  });
  const attacker = new HmacPacketCipher(K1, K2);
  const out = new Uint8Array(66_000);
  let pn = 0;
  const inject = (frames: Frame[], asDgram = false) => {
    const w = new ByteWriter(out);
    writeDataHeader(w, id, pn);
    for (const f of frames) writeFrame(w, f);
    const packet = asDgram ? Buffer.from(out.subarray(0, w.offset + TAG_SIZE)) : out.slice(0, w.offset + TAG_SIZE);
    attacker.seal(packet, w.offset, pn);
    conn.handleDatagram(packet, pn++, 1);
  };
  return { conn, inbound, events, inject };
}

test('a bomb of empty non-final parts is malformed and costs no heap', () => {
  const LIMIT = 4 * MiB;
  const budget = new ReassemblyBudget(LIMIT);
  const v = victim(2, budget);
  const empty = new Uint8Array(0);
  const heap0 = heap();
  // 100 datagrams of ~60 kB, each 8,500 empty reliable parts in order on one channel
  // (the oldest half-built message of the endpoint, which may always grow), and 100
  // more of empty unreliable parts.
  const PER = 8500;
  let seq = 0;
  for (let d = 0; d < 100; d++) {
    const frames: Frame[] = [];
    for (let i = 0; i < PER; i++, seq++)
      frames.push({ type: 'reliable', channel: 0, seq: seq & 0xffff, delta: seq === 0 ? 0 : 1, data: empty, last: false });
    v.inject(frames);
  }
  for (let d = 0; d < 100; d++) {
    const frames: Frame[] = [];
    for (let i = 0; i < 6000; i++)
      frames.push({ type: 'unreliable', channel: 0, data: empty, part: { id: d * 6000 + i, index: 0, count: 2 } });
    v.inject(frames);
  }
  const grown = heap() - heap0;
  console.log(
    `empty-part bomb: heap grew ${(grown / MiB).toFixed(1)} MiB, budget used ${budget.used}, malformed ${v.conn.stats().malformed}`,
  );
  assert.equal(v.conn.stats().malformed, 200, 'every bomb datagram is malformed');
  assert.ok(grown <= LIMIT + 2 * MiB, `heap grew ${grown} bytes against a ${LIMIT}-byte budget`);
  assert.equal(v.conn.state, 'connected');
  assert.equal(v.events.filter((e) => e.type === 'message').length, 0);
});

test('one-byte units out of order from 40 connections: heap bounded by the budget, and every charge given back', () => {
  const LIMIT = 8 * MiB;
  const budget = new ReassemblyBudget(LIMIT);
  const heap0 = heap();
  const victims: Victim[] = [];
  for (let c = 0; c < 40; c++) victims.push(victim(100 + c, budget));
  const heapConns = heap() - heap0;
  const one = new Uint8Array(1);
  for (const v of victims) {
    // One ~57 kB datagram: units 1..8191, each waiting for the one before it (unit 0 never comes).
    const frames: Frame[] = [];
    for (let s = 1; s < 8192; s++) frames.push({ type: 'reliable', channel: 0, seq: s, delta: 1, data: one });
    v.inject(frames);
  }
  const grown = heap() - heap0 - heapConns;
  console.log(
    `one-byte units: heap grew ${(grown / MiB).toFixed(1)} MiB (connections themselves ${(heapConns / MiB).toFixed(1)} MiB), budget used ${budget.used} (peak ${budget.peak}), refused ${budget.refused}`,
  );
  assert.ok(budget.peak <= LIMIT, `budget peaked at ${budget.peak}`);
  // Held units cost what they are charged or less, so the heap grows by the limit at
  // most; 4 MiB more for what the charge does not see (Map tables grown to their next
  // power of two, V8's allocation slack) and measurement noise.
  assert.ok(grown <= LIMIT + 4 * MiB, `heap grew ${grown} bytes against a ${LIMIT}-byte budget`);
  // Unit 0 arrives on each: everything is delivered, and the charges balance exactly.
  const used0 = 0;
  for (const v of victims) v.inject([{ type: 'reliable', channel: 0, seq: 0, delta: 0, data: one }]);
  for (const v of victims) {
    v.conn.abort('protocol-error');
    releaseInbound(v.inbound);
  }
  assert.equal(budget.used, used0, 'every charge given back');
  assert.ok(victims.every((v) => v.events.some((e) => e.type === 'message')));
});

test('a held unit keeps its own bytes, not its datagram: one-byte units in 60 kB Buffers, out of order, as parts, as unreliable parts', () => {
  // node:dgram hands each datagram over as a Buffer of its own, and a Buffer's slice() is
  // a view: a unit kept as a view of its datagram kept all 60 kB alive while the budget
  // counted 1 + 256 bytes, so a peer could make a server hold ~200x its budget.
  const LIMIT = 8 * MiB;
  const budget = new ReassemblyBudget(LIMIT);
  const v = victim(3, budget);
  const one = new Uint8Array([7]);
  const pad: Frame = { type: 'padding', length: 60_000 };
  const heap0 = heap();
  const N = 1500;
  // The reorder buffer: units 1..N of channel 0 (unit 0 withheld); then parts of a
  // message on channel 1, in order, never the last; then first halves of unreliable
  // messages. Each one byte, each alone in a padded datagram.
  for (let s = 1; s <= N; s++) v.inject([{ type: 'reliable', channel: 0, seq: s, delta: 1, data: one }, pad], true);
  for (let s = N + 1; s <= 2 * N; s++)
    v.inject([{ type: 'reliable', channel: 1, seq: s, delta: s === N + 1 ? 0 : 1, data: one, last: false }, pad], true);
  for (let i = 0; i < N; i++) v.inject([{ type: 'unreliable', channel: 2, data: one, part: { id: i, index: 0, count: 2 } }, pad], true);
  const grown = heap() - heap0;
  console.log(`one-byte units in 60 kB datagrams: heap grew ${(grown / MiB).toFixed(1)} MiB, budget used ${budget.used}`);
  assert.equal(v.conn.stats().malformed, 0);
  assert.ok(budget.used > 3 * N * 256, `the units are held (budget used ${budget.used})`);
  // 4,500 datagrams of 60 kB went by: held as views they would pin 270 MB.
  assert.ok(grown <= budget.used + 4 * MiB, `heap grew ${grown} bytes for ${budget.used} charged`);
});

test('a message of exactly k parts is cut into k non-empty parts, the last marked', async () => {
  const { splitMessage } = await import('../src/reliability/sender.js');
  const units = splitMessage(new Uint8Array(3000), 100, 1000);
  assert.deepEqual(
    units.map((u) => [u.data.length, u.last]),
    [
      [1000, false],
      [1000, false],
      [1000, true],
    ],
  );
});

test('charges balance exactly: a completed message, a connection that ends and its session give everything back', () => {
  const budget = new ReassemblyBudget(64 * MiB);
  const v = victim(7, budget);
  const part = new Uint8Array(300);
  // Units 1..3 on channel 0 wait for unit 0; unit 5 is unordered and done out of order
  // (an entry of ReceiveState.above); unit 4 opens a message of parts on channel 1.
  v.inject([
    { type: 'reliable', channel: 0, seq: 1, delta: 1, data: part, last: false },
    { type: 'reliable', channel: 0, seq: 2, delta: 1, data: part, last: true },
    { type: 'reliable', channel: 0, seq: 3, delta: 1, data: part },
    { type: 'reliable', channel: 1, seq: 4, delta: 0, data: part, last: false },
    { type: 'reliable', channel: 2, seq: 5, delta: 0, unordered: true, data: part },
    { type: 'unreliable', channel: 0, data: part, part: { id: 1, index: 0, count: 3 } },
  ]);
  assert.ok(budget.used > 0);
  const before = budget.used;
  // A message on channel 1 completes: its charge goes back.
  v.inject([{ type: 'reliable', channel: 1, seq: 6, delta: 2, data: part, last: true }]);
  assert.equal(v.events.filter((e) => e.type === 'message').length, 2);
  const afterOne = budget.used;
  assert.ok(afterOne < before);
  // Unit 0 comes: channel 0's message of parts and the whole message behind it complete.
  v.inject([{ type: 'reliable', channel: 0, seq: 0, delta: 0, data: part, last: false }]);
  assert.equal(v.events.filter((e) => e.type === 'message').length, 4);
  assert.equal(v.inbound.state.above?.size ?? 0, 0, 'units 0..6 all done in order now');
  // Left: the unreliable part, given back when the connection ends.
  v.conn.abort('protocol-error');
  releaseInbound(v.inbound);
  assert.equal(budget.used, 0, 'every charge given back');
  // And a session left half-done on a connection that ends also comes back to zero.
  const w = victim(8, budget);
  w.inject([
    { type: 'reliable', channel: 0, seq: 2, delta: 1, data: part },
    { type: 'reliable', channel: 3, seq: 1, delta: 0, unordered: true, data: part },
    { type: 'reliable', channel: 4, seq: 3, delta: 0, data: part, last: false },
  ]);
  assert.ok(budget.used > 0);
  w.conn.abort('protocol-error');
  releaseInbound(w.inbound);
  assert.equal(budget.used, 0);
});

test('a message of more parts than maxMessageSize needs is dropped, even as the oldest, and its charge given back', async () => {
  const { ReliableAssembler } = await import('../src/reliability/reliable-assembler.js');
  const { MIN_PART } = await import('../src/reliability/sender.js');
  const budget = new ReassemblyBudget(1024);
  const a = new ReliableAssembler(4 * MIN_PART, budget); // at most 5 parts
  const one = new Uint8Array(1);
  for (let i = 0; i < 5; i++) assert.equal(a.add(one, false), undefined);
  assert.ok(budget.used > budget.limit, 'the oldest may pass the limit');
  assert.equal(a.add(one, false), undefined);
  assert.equal(a.rejected, 1, 'the sixth part drops it');
  assert.equal(budget.used, 0);
  assert.equal(a.add(one, true), undefined, 'discarded to its last part');
  assert.equal(a.building, false);
  assert.equal(budget.used, 0);
});

test('finding 10, real heap: peers that withhold acknowledgements cost the server at most maxQueuedBytes, whatever the program sends', async (t) => {
  const { UDPipe } = await import('../src/index.js');
  const { SimNetwork } = await import('../src/testing/index.js');
  const S = '127.0.1.1';
  const T = { pingIntervalMs: 100, stallTimeoutMs: 3000, timeoutMs: 20_000, reconnect: { minDelayMs: 20, maxDelayMs: 200 } };
  const net = new SimNetwork({ seed: 110, conditions: { latencyMs: 5 } });
  const server = new UDPipe({ ...T, maxQueuedBytes: 4 * MiB, transport: net.transport(S) });
  await server.start(9000, S);
  const hosts = Array.from({ length: 10 }, (_, i) => `127.0.3.${i + 1}`);
  const clients = hosts.map((h) => new UDPipe({ ...T, transport: net.transport(h) }));
  for (const c of clients) void c.connect(S, 9000).catch(() => {});
  await net.advanceUntil(() => server.clients.length === hosts.length, 3000);
  for (const h of hosts) net.setConditions({ latencyMs: 5, loss: 1 }, S, h); // nothing reaches them: no acknowledgements
  const before = heap();
  // A program that ignores send()'s false: 40 MiB offered, each message a fresh buffer.
  for (let round = 0; round < 64; round++) {
    for (const p of server.clients) p.send(Buffer.alloc(64 * 1024, round));
    await net.advance(10);
  }
  const grown = heap() - before;
  t.diagnostic(`heap grew ${(grown / MiB).toFixed(1)} MiB for 40 MiB offered`);
  assert.ok(grown < 4 * MiB + 4 * MiB, `heap grew ${(grown / MiB).toFixed(1)} MiB for a 4 MiB maxQueuedBytes (40 MiB offered)`);
  const stats = server.stats() as { queued: { bytes: number; limit: number }; sendDropped: number };
  assert.ok(stats.queued.bytes <= stats.queued.limit + 64 * 1024);
  assert.ok(stats.sendDropped > 0);
  for (const h of hosts) net.setConditions({ latencyMs: 5 }, S, h);
  const closing = Promise.all([...clients.map((c) => c.close()), server.close()]);
  await net.advance(10_000);
  await closing;
});

test('review: an idle connection does not keep its last sent packet (and the 8 KiB pool slab under it) alive', async () => {
  const conns: Connection[] = [];
  const slabs: WeakRef<ArrayBufferLike>[] = [];
  for (let i = 0; i < 200; i++) {
    const conn = new Connection({
      localConnId: 1 + i,
      remoteConnId: 1000 + i,
      cipher: new HmacPacketCipher(K1, K2),
      config: DEFAULT_CONNECTION_CONFIG,
      now: 0,
    });
    conn.send(new Uint8Array(20), true);
    const p = conn.pollTransmit(0);
    assert.ok(p && p.buffer.byteLength === Buffer.poolSize, 'a packet cut from the pool');
    slabs.push(new WeakRef(p.buffer));
    conns.push(conn);
    // Other traffic fills the rest of the slab, so each idle connection's packet sits in a slab of its own.
    for (let k = 0; k < 3; k++) Buffer.allocUnsafe(3000);
  }
  await new Promise((r) => setImmediate(r));
  gc();
  gc();
  const alive = slabs.filter((w) => w.deref() !== undefined).length;
  assert.equal(conns.length, 200);
  assert.ok(alive <= 2, `${alive} of 200 pool slabs (8 KiB each) still alive, held by idle connections' last packets`);
});

test('connections that come and go leave no deadline and no timer behind (the server keeps deadline-heap slots in its connection records)', () => {
  const p = new Pair(31, false);
  for (let round = 0; round < 3; round++) {
    const clients = Array.from({ length: 6 }, (_, i) => p.client(`127.0.3.${round * 10 + i + 1}`));
    for (const c of clients) c.ep.start(p.now, Infinity);
    p.run(300);
    assert.equal(p.server.stateSize().peers, 6, `round ${round}: all connected`);
    assert.equal(p.server.stateSize().deadlines, 6, `round ${round}: one deadline each`);
    for (const c of clients) c.ep.close(p.now);
    p.run(1500); // the server lingers three probe timeouts after each CLOSE
    const s = p.server.stateSize();
    assert.deepEqual([s.peers, s.deadlines], [0, 0], `round ${round}: every record and every deadline gone`);
    assert.equal(p.server.nextDeadline(), Infinity, `round ${round}: no timer left for connections that are gone`);
  }
});
