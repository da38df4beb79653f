/**
 * Tests for one-line bugs that survived the hand mutation run of the API layer, the CLI,
 * memory bounds, pacing and closing, or that were caught only by a test that hung
 * (C8: the pacer's tokens; D1: the drain after CLOSE). Each test here fails on its
 * mutant, named in the test, and fails fast: every loop is bounded, protocol behaviour
 * runs in virtual time, and the one real process (the CLI) is killed after 10 s at most.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { once } from 'node:events';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Pacer } from '../src/congestion/pacer.js';
import { HmacPacketCipher } from '../src/crypto/packet-cipher.js';
import { MAX_MESSAGE_SIZE, type Peer, UDPipe, UDPipeError, type UDPipeOptions } from '../src/index.js';
import { DEFAULT_CONNECTION_CONFIG } from '../src/protocol/config.js';
import { Connection } from '../src/protocol/connection/connection.js';
import { ReassemblyBudget } from '../src/reliability/budget.js';
import { SimNetwork } from '../src/testing/index.js';
import { ByteWriter, keepable } from '../src/wire/bytes.js';
import { DATA_HEADER_SIZE, TAG_SIZE } from '../src/wire/constants.js';
import { decodeFrames, type Frame, frameSize, writeFrame } from '../src/wire/frames.js';
import { writeDataHeader } from '../src/wire/packet.js';
import { link } from './helpers/link.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const code = (c: string) => (err: unknown) => err instanceof UDPipeError && err.code === c;

const S = '127.0.1.1';
const PORT = 9200;
/**
 * Far more events than any run here needs: a timer that keeps coming due at the same
 * instant (a livelock, as the drain mutant made) throws at once instead of hanging.
 */
const MAX_EVENTS = 20_000;
const T: UDPipeOptions = { pingIntervalMs: 100, stallTimeoutMs: 350, timeoutMs: 1000, reconnect: { minDelayMs: 20, maxDelayMs: 200 } };

/** A server and one client connected in the simulator; `opts` for the client. */
async function connected(seed: number, opts: UDPipeOptions = {}) {
  const net = new SimNetwork({ seed, conditions: { latencyMs: 5 }, maxEventsPerRun: MAX_EVENTS });
  const server = new UDPipe({ ...T, transport: net.transport(S) });
  await server.start(PORT, S);
  const client = new UDPipe({ ...T, ...opts, transport: net.transport('127.0.2.1') });
  let up = false;
  void client.connect(S, PORT).then(() => (up = true));
  assert.ok(await net.advanceUntil(() => up && server.clients.length === 1, 2000), 'connected');
  const done = async () => {
    const closing = Promise.all([client.close(), server.close()]);
    await net.advance(3000);
    await closing;
  };
  return { net, server, client, done };
}

// --- A1: the size limit of unreliable-sequenced messages ---

test('an unreliable-sequenced message of exactly MAX_MESSAGE_SIZE (1200) bytes is sent and arrives; one byte more throws (mutants: the check off by one, the constant changed)', async () => {
  assert.equal(MAX_MESSAGE_SIZE, 1200, 'docs/PROTOCOL.md and the README promise 1200 bytes');
  const { net, server, client, done } = await connected(1);
  const got: { length: number; delivery: string }[] = [];
  server.onNewMessage = (m, _sock, info) => got.push({ length: m.length, delivery: info.delivery });
  const SEQ = { delivery: 'unreliable-sequenced', channel: 3 } as const;
  assert.throws(() => client.send(Buffer.alloc(MAX_MESSAGE_SIZE + 1), undefined, SEQ), code('ERR_MESSAGE_TOO_LARGE'));
  assert.equal(client.send(Buffer.alloc(MAX_MESSAGE_SIZE, 7), undefined, SEQ), true, 'exactly the limit is accepted');
  // It fits one packet, so it is sent at once and not stuck at the head of the queue.
  assert.ok(await net.advanceUntil(() => got.length === 1, 200), 'the 1200-byte sequenced message arrived');
  assert.deepEqual(got, [{ length: MAX_MESSAGE_SIZE, delivery: 'unreliable-sequenced' }]);
  await done();
});

// --- A3: the hard send-queue limit, in bytes ---

test('the hard send-queue limit is 8 x highWaterMark bytes: the 17th 512-byte message past a 1024-byte mark is dropped (mutants: counted in messages, the factor or the comparison changed)', async () => {
  // maxQueue is far away (8 x 4096 messages), so only the bytes can stop a message.
  const { client, done } = await connected(3, { highWaterMark: 1024, maxQueue: 4096 });
  const dropped: string[] = [];
  let droppedFor: Peer | undefined;
  client.on('dropped', (sock, _msg, reason) => {
    droppedFor = sock;
    dropped.push(reason);
  });
  const msg = Buffer.alloc(512, 1);
  // All sent within one task: nothing can be acknowledged meanwhile, so every accepted
  // message is still queued (reliable ones stay until acknowledged).
  let accepted = 0;
  for (let i = 0; i < 40 && dropped.length === 0; i++) {
    client.send(msg);
    if (dropped.length === 0) accepted++;
  }
  assert.equal(accepted, 16, '16 x 512 = 8 x 1024 bytes are queued, the next is not');
  assert.deepEqual(dropped, ['queue-full']);
  assert.equal(droppedFor?.stats().sendDropped, 1, 'and counted');
  await done();
});

test('the hard limit also holds for a server sending to one peer: 16 messages of 1 kB past a 2 kB mark (mutant: counted in messages)', async () => {
  const net = new SimNetwork({ seed: 4, conditions: { latencyMs: 5 }, maxEventsPerRun: MAX_EVENTS });
  const server = new UDPipe({ ...T, highWaterMark: 2048, transport: net.transport(S) });
  await server.start(PORT, S);
  const client = new UDPipe({ ...T, transport: net.transport('127.0.2.1') });
  void client.connect(S, PORT).catch(() => {});
  assert.ok(await net.advanceUntil(() => server.clients.length === 1, 2000));
  const peer = server.clients[0]!;
  let dropped = 0;
  server.on('dropped', () => dropped++);
  let accepted = 0;
  for (let i = 0; i < 40 && dropped === 0; i++) {
    server.send(Buffer.alloc(1024), peer);
    if (dropped === 0) accepted++;
  }
  assert.equal(accepted, 16);
  const closing = Promise.all([client.close(), server.close()]);
  await net.advance(3000);
  await closing;
});

// --- A5: the default maxClientsPerAddress ---

test('by default one address gets at most 16 slots, even when maxClients would allow more (mutant: the default 16 changed)', async () => {
  const net = new SimNetwork({ seed: 5, conditions: { latencyMs: 2 }, maxEventsPerRun: MAX_EVENTS });
  const server = new UDPipe({ ...T, maxClients: 64, transport: net.transport(S) });
  await server.start(PORT, S);
  const hog = Array.from({ length: 18 }, () => new UDPipe({ ...T, transport: net.transport('127.0.6.1') }));
  const results: string[] = [];
  for (const c of hog)
    void c.connect(S, PORT, 1).then(
      () => results.push('connected'),
      (e: { code: string }) => results.push(e.code),
    );
  assert.ok(await net.advanceUntil(() => results.length === hog.length, 3000), `all settled: ${results}`);
  assert.equal(server.clients.filter((p) => p.address === '127.0.6.1').length, 16);
  assert.deepEqual(
    results.filter((r) => r !== 'connected'),
    ['ERR_SERVER_FULL', 'ERR_SERVER_FULL'],
  );
  // Below 32 clients in all, half the slots: 5 of maxClients 10.
  const small = new UDPipe({ ...T, maxClients: 10, transport: net.transport('127.0.1.2') });
  await small.start(PORT, '127.0.1.2');
  const few = Array.from({ length: 6 }, () => new UDPipe({ ...T, transport: net.transport('127.0.6.2') }));
  for (const c of few) void c.connect('127.0.1.2', PORT, 1).catch(() => {});
  await net.advance(1200);
  assert.equal(small.clients.length, 5);
  const closing = Promise.all([...hog.map((c) => c.close()), ...few.map((c) => c.close()), server.close(), small.close()]);
  await net.advance(3000);
  await closing;
});

// --- L2: `udpipe serve` and a startup error ---

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

/** Runs the CLI to its end, killed after `ms` if it has not ended by then. */
async function cli(args: string[], ms = 10_000): Promise<{ code: number | null; stderr: string }> {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), ms);
  const [exitCode] = (await once(child, 'exit')) as [number | null];
  clearTimeout(timer);
  return { code: exitCode, stderr };
}

test('udpipe serve exits 1 on a startup error: the port in use, or an invalid option (mutant: the UDPipeError exit code)', {
  timeout: 15_000,
}, async () => {
  const holder = createSocket('udp4');
  holder.bind(0, '127.0.0.1');
  await once(holder, 'listening');
  try {
    const port = String(holder.address().port);
    const [inUse, badToken] = await Promise.all([
      cli(['serve', '--port', port, '--host', '127.0.0.1']),
      cli(['serve', '--port', '0', '--host', '127.0.0.1', '--token', 'x'.repeat(1025)]),
    ]);
    assert.equal(inUse.code, 1, `port in use: ${inUse.stderr}`);
    assert.match(inUse.stderr, /cannot listen on 127\.0\.0\.1 port \d+: the port is already in use/);
    assert.equal(badToken.code, 1, `invalid option: ${badToken.stderr}`);
    assert.match(badToken.stderr, /token must be at most 1024 bytes/);
    for (const r of [inUse, badToken]) assert.doesNotMatch(r.stderr, /udpipe --help/, 'not a usage error');
  } finally {
    holder.close();
  }
});

// --- M2, M5: what a held unit pins ---

const K1 = new Uint8Array(32).fill(1);
const K2 = new Uint8Array(32).fill(2);

/**
 * A receiving connection and a peer with its keys that sends it datagrams of exactly
 * `size` bytes, each in an ArrayBuffer of its own (as node:dgram hands them over), with
 * a WeakRef to each so a test can count those still alive.
 */
function receiver(size: number) {
  const budget = new ReassemblyBudget(64 * 1024 * 1024);
  const conn = new Connection({
    localConnId: 2,
    remoteConnId: 1,
    cipher: new HmacPacketCipher(K2, K1),
    config: DEFAULT_CONNECTION_CONFIG,
    now: 0,
    budget,
  });
  const peer = new HmacPacketCipher(K1, K2);
  const out = new Uint8Array(size);
  const datagrams: WeakRef<ArrayBufferLike>[] = [];
  let pn = 0;
  const inject = (f: Frame) => {
    const w = new ByteWriter(out);
    writeDataHeader(w, 2, pn);
    writeFrame(w, f);
    writeFrame(w, { type: 'padding', length: size - TAG_SIZE - DATA_HEADER_SIZE - frameSize(f) });
    assert.equal(w.offset + TAG_SIZE, size);
    const dgram = Buffer.from(new ArrayBuffer(size));
    dgram.set(out);
    peer.seal(dgram, w.offset, pn);
    assert.equal(conn.handleDatagram(dgram, pn++, 1), 'newest');
    datagrams.push(new WeakRef(dgram.buffer));
  };
  const alive = async () => {
    await new Promise((r) => setImmediate(r)); // WeakRefs made in this task hold their targets until it ends
    gc();
    gc();
    return datagrams.filter((d) => d.deref() !== undefined).length;
  };
  return { conn, budget, inject, alive };
}

test('a one-byte unit held from a 1.5 kB datagram is a copy and does not pin it: out of order, a part, an unreliable part (mutant: KEEP_SLACK 2048)', async () => {
  // The direct rule: a view may keep at most 64 bytes besides its own.
  const d = new Uint8Array(1500);
  assert.ok(keepable(d.subarray(100, 101)).buffer !== d.buffer, 'one byte of a 1500-byte datagram is copied');
  assert.ok(keepable(d.subarray(30, 1470)).buffer === d.buffer, 'a unit that fills its datagram (but 60 bytes) is kept as it is');
  const r = receiver(1500);
  const one = new Uint8Array([9]);
  const N = 20;
  // Units 1..N of channel 0 wait for unit 0, which never comes.
  for (let s = 1; s <= N; s++) r.inject({ type: 'reliable', channel: 0, seq: s, delta: 1, data: one });
  // A message on channel 1 in parts, never the last.
  for (let s = N + 1; s <= 2 * N; s++)
    r.inject({ type: 'reliable', channel: 1, seq: s, delta: s === N + 1 ? 0 : 1, data: one, last: false });
  // First halves of unreliable messages.
  for (let i = 0; i < N; i++) r.inject({ type: 'unreliable', channel: 2, data: one, part: { id: i, index: 0, count: 2 } });
  assert.equal(r.conn.stats().malformed, 0);
  assert.ok(r.budget.used >= 3 * N * 257, `the units are held (budget used ${r.budget.used})`);
  assert.equal(await r.alive(), 0, 'no datagram is kept alive by the byte held from it');
  assert.equal(r.conn.state, 'connected');
});

test('an unreliable part is kept as a copy, not a view of its datagram: 1.5 kB and 60 kB datagrams (mutant: the part kept as a view)', async () => {
  // At most 32 unfinished unreliable messages are held, so 32 pinned 60 kB datagrams (2 MB)
  // hid under the heap test's slack in test/memory-bounds.test.ts; counted here one by one.
  for (const size of [1500, 60_000]) {
    const r = receiver(size);
    for (let i = 0; i < 20; i++)
      r.inject({ type: 'unreliable', channel: 0, data: new Uint8Array([i]), part: { id: i, index: 0, count: 2 } });
    assert.ok(r.budget.used > 20 * 256, `${size}: the parts are held (budget used ${r.budget.used})`);
    assert.equal(await r.alive(), 0, `${size}: no datagram is kept alive by the part held from it`);
    // The parts held are intact: the second halves complete the messages.
    for (let i = 0; i < 20; i++)
      r.inject({ type: 'unreliable', channel: 0, data: new Uint8Array([100 + i]), part: { id: i, index: 1, count: 2 } });
    const got: number[][] = [];
    for (let e = r.conn.pollEvent(); e; e = r.conn.pollEvent()) if (e.type === 'message') got.push([...e.data]);
    assert.deepEqual(
      got,
      Array.from({ length: 20 }, (_, i) => [i, 100 + i]),
    );
  }
});

// --- C8: the pacer's tokens, in bounded loops ---

test('the pacer spends a token per byte sent: ten full datagrams at once, then the eleventh waits (mutant: tokens not spent)', () => {
  const p = new Pacer(1200, 0);
  const window = 120_000;
  const srtt = 100; // 1.25 x 120,000 / 100 = 1500 bytes per ms: a 2 ms bucket is under ten datagrams
  let burst = 0;
  for (let i = 0; i < 100 && p.sendTime(window, srtt, 0) === 0; i++) {
    p.onSent(1200);
    burst++;
  }
  assert.equal(burst, 10, 'the initial bucket holds ten datagrams; each one sent takes its size from it');
  assert.deepEqual(p.toJSON(), { tokens: 0 });
  const next = p.sendTime(window, srtt, 0);
  assert.ok(next > 0, `the eleventh waits (next at ${next} ms)`);
  assert.equal(p.sendTime(window, srtt, next), next, 'and goes when its deadline comes');
  // Bytes smaller than a datagram take less: a 100-byte packet leaves tokens for more.
  const q = new Pacer(1200, 0);
  q.onSent(100);
  assert.deepEqual(q.toJSON(), { tokens: 12_000 - 100 });
});

test('the pacer holds its rate over time and refills only to its capacity (mutants: tokens not spent, or refilled wrongly)', () => {
  const p = new Pacer(1200, 0);
  const window = 120_000;
  const srtt = 10; // 15,000 bytes per ms; the bucket holds 2 ms of it, 30,000 bytes
  const rate = Pacer.rate(window, srtt);
  assert.equal(rate, 15_000);
  // Drain the initial bucket, then send 1,000 datagrams, each when the pacer allows.
  let now = 0;
  for (let i = 0; i < 10; i++) p.onSent(1200);
  const start = p.sendTime(window, srtt, now);
  now = start;
  const N = 1000;
  for (let i = 0; i < N; i++) {
    const at = p.sendTime(window, srtt, now);
    assert.ok(at >= now && at - now < 1, `packet ${i}: a deadline within a datagram's time (${at - now} ms)`);
    now = at;
    assert.equal(p.sendTime(window, srtt, now), now, `packet ${i}: due at its deadline`);
    p.onSent(1200);
  }
  const expected = (N * 1200) / rate; // 80 ms
  assert.ok(Math.abs(now - start - expected) < 1, `1,000 datagrams took ${now - start} ms, expected ${expected} ms`);
  // After a second idle the bucket is full, at its capacity (2 ms at the rate), no more.
  now += 1000;
  let burst = 0;
  for (let i = 0; i < 1000 && p.sendTime(window, srtt, now) === now; i++) {
    p.onSent(1200);
    burst++;
  }
  assert.equal(burst, (2 * rate) / 1200, 'a full bucket lets 25 datagrams go at once');
});

// --- D1: the drain after a CLOSE, in a bounded loop ---

test('after the peer closes, a connection answers CLOSE for about 3 PTO, then is finished and has no deadline left (mutant: the drain never ends)', () => {
  const l = link();
  // A message each way: each side has an RTT sample of the 10 ms round trip, so a PTO
  // of about 35 ms (srtt + 4 x rttvar + max ack delay), not the initial 305.
  l.a.conn.send(new Uint8Array(100), true);
  l.b.conn.send(new Uint8Array(100), true);
  l.run(100);
  assert.equal(l.b.events.filter((e) => e.type === 'message').length, 1);
  l.a.conn.close(l.now);
  for (let i = 0; i < 200 && l.b.conn.state !== 'closed'; i++) l.run(1);
  assert.equal(l.b.conn.state, 'closed', 'the CLOSE arrived');
  const endedAt = l.now;
  assert.equal(l.b.conn.finished, false, 'draining: a retransmitted CLOSE would still be answered');
  assert.ok(Number.isFinite(l.b.conn.nextDeadline()), 'the drain has a deadline');
  // 10 ms in, a's CLOSE comes again (as if its CLOSED had been lost): b answers it.
  l.run(10);
  const again = new Uint8Array(DATA_HEADER_SIZE + 2 + TAG_SIZE);
  const w = new ByteWriter(again);
  writeDataHeader(w, 2, 500);
  writeFrame(w, { type: 'close', reason: 0 });
  new HmacPacketCipher(K1, K2).seal(again, w.offset, 500); // a's keys (test/helpers/link.ts)
  l.b.conn.handleDatagram(again, 500, l.now);
  const answer = l.b.conn.pollTransmit(l.now);
  assert.ok(answer, 'a repeated CLOSE during the drain is answered');
  assert.deepEqual(
    decodeFrames(answer, DATA_HEADER_SIZE, answer.length - TAG_SIZE).map((f) => f.type),
    ['ack', 'closed'],
  );
  for (let i = 0; i < 1000 && !l.b.conn.finished; i++) l.run(1);
  const drained = l.now - endedAt;
  assert.ok(l.b.conn.finished, `still draining ${drained} ms after the CLOSE`);
  assert.ok(drained >= 30 && drained <= 300, `the drain took ${drained} ms, 3 PTO of a 10 ms path`);
  assert.equal(l.b.conn.nextDeadline(), Infinity, 'no timer left once the drain is over');
  // The side that closed got CLOSED and is finished at once.
  assert.ok(l.a.conn.finished);
  assert.deepEqual(
    l.b.events.filter((e) => e.type === 'ended'),
    [{ type: 'ended', reason: 'normal', byPeer: true }],
  );
});
