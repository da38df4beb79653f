/**
 * Acknowledgements of unreliable traffic ride along instead of going alone: the
 * datagram pattern of a game loop (issue 11's game tick) in virtual time. A packet that
 * carries only unreliable data has nothing to retransmit, so its ACK may wait for the
 * receiver's next packet; reliable data is still acknowledged within the max ack delay.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type Peer, UDPipe, type UDPipeOptions } from '../src/index.js';
import { LAZY_ACK_DELAY_MS } from '../src/reliability/ack-tracker.js';
import { LossRecovery, type SentPacket } from '../src/reliability/loss-recovery.js';
import { SimNetwork } from '../src/testing/index.js';

const S = '127.0.1.1';
const PORT = 9000;
const TICK = 1000 / 30;
const SNAPSHOT = { delivery: 'unreliable-sequenced', channel: 1 } as const;

interface ConnStats {
  datagramsSent: number;
  rtt: { smoothedMs: number };
  retransmissions: number;
}
/** A client's connection stats (under `connection`), or a server's peer's (at the top). */
const conn = (s: object): ConnStats => ('connection' in s ? s.connection : s) as ConnStats;

async function game(seed: number, clients: number, opts: UDPipeOptions = {}) {
  const net = new SimNetwork({ seed, conditions: { latencyMs: 5, jitterMs: 1 } });
  const server = new UDPipe({ ...opts, transport: net.transport(S) });
  await server.start(PORT, S);
  const cs: UDPipe[] = [];
  let connected = 0;
  for (let i = 0; i < clients; i++) {
    const c = new UDPipe({ ...opts, transport: net.transport(`127.0.2.${i + 1}`) });
    void c.connect(S, PORT, 30).then(() => connected++);
    cs.push(c);
  }
  await net.advanceUntil(() => server.clients.length === clients && connected === clients, 10_000);
  assert.equal(server.clients.length, clients, `seed ${seed}: everyone connected`);
  // Past the handshake and the path MTU search: what follows is the steady state.
  await net.advance(2000);
  const sent = () => ({ server: server.getSentPackets(), clients: cs.map((c) => c.getSentPackets()) });
  return { net, server, clients: cs, sent };
}

test('a 30 Hz loop of unreliable messages both ways sends one datagram per message: the ACKs ride along', async () => {
  for (const seed of [1, 2, 3]) {
    const { net, server, clients, sent } = await game(seed, 3);
    const before = sent();
    const ticks = 90;
    let got = 0;
    for (const c of clients) c.onNewMessage = () => got++;
    for (let k = 0; k < ticks; k++) {
      for (const p of server.clients as Peer[]) server.send(Buffer.alloc(256), p, SNAPSHOT);
      // The clients tick out of phase with the server, as separate machines do.
      await net.advance(TICK * (0.3 + 0.1 * seed));
      for (const c of clients) c.send(Buffer.alloc(64), undefined, SNAPSHOT);
      await net.advance(TICK * (0.7 - 0.1 * seed));
    }
    const after = sent();
    const serverSent = after.server - before.server;
    assert.ok(got >= clients.length * ticks * 0.99, `seed ${seed}: ${got} snapshots arrived`);
    assert.ok(
      serverSent <= clients.length * ticks * 1.1,
      `seed ${seed}: the server sent ${serverSent} datagrams for ${clients.length * ticks} snapshots`,
    );
    for (let i = 0; i < clients.length; i++) {
      const n = after.clients[i]! - before.clients[i]!;
      assert.ok(n <= ticks * 1.1, `seed ${seed}: client ${i} sent ${n} datagrams for ${ticks} inputs`);
    }
    // A sample taken from an ACK that waited for a ride would read the wait as path delay.
    const rtt = conn(clients[0]!.stats()).rtt.smoothedMs;
    assert.ok(rtt >= 9 && rtt < 14, `seed ${seed}: smoothed RTT ${rtt} ms on a 10-12 ms path`);
    const closing = Promise.all([server.close(), ...clients.map((c) => c.close())]);
    await net.advance(1000);
    await closing;
  }
});

test('a silent receiver of 30 Hz unreliable messages acknowledges every second packet, and the sender sends no probes for them', async () => {
  const { net, server, clients, sent } = await game(7, 1);
  const before = sent();
  const ticks = 90;
  for (let k = 0; k < ticks; k++) {
    for (const p of server.clients as Peer[]) server.send(Buffer.alloc(256), p, SNAPSHOT);
    await net.advance(TICK);
  }
  const after = sent();
  const acks = after.clients[0]! - before.clients[0]!;
  const serverSent = after.server - before.server;
  assert.ok(acks <= ticks * 0.6, `the client sent ${acks} datagrams for ${ticks} snapshots`);
  assert.ok(acks >= ticks * 0.4, `the client sent ${acks} datagrams for ${ticks} snapshots: too few to keep the sender informed`);
  assert.ok(serverSent <= ticks * 1.05, `the server sent ${serverSent} datagrams for ${ticks} snapshots`);
  const rtt = conn(server.stats(server.clients[0]!)).rtt.smoothedMs;
  assert.ok(rtt >= 9 && rtt < 14, `smoothed RTT ${rtt} ms on a 10-12 ms path`);
  const closing = Promise.all([server.close(), clients[0]!.close()]);
  await net.advance(1000);
  await closing;
});

test('reliable messages are still acknowledged within the max ack delay', async () => {
  const { net, server, clients, sent } = await game(9, 1);
  const before = sent();
  const ticks = 30;
  for (let k = 0; k < ticks; k++) {
    for (const p of server.clients as Peer[]) server.send(Buffer.alloc(32), p);
    await net.advance(TICK);
  }
  const after = sent();
  const acks = after.clients[0]! - before.clients[0]!;
  // One alone for each: the next packet of the client's is a tick away, past the delay.
  assert.ok(acks >= ticks * 0.95, `the client sent ${acks} ACKs for ${ticks} reliable messages`);
  assert.equal(conn(server.stats(server.clients[0]!)).retransmissions, 0, 'nothing was sent again');
  const closing = Promise.all([server.close(), clients[0]!.close()]);
  await net.advance(1000);
  await closing;
});

test('a packet that brings only what already arrived is acknowledged at once: its sender missed our ACKs', async () => {
  // Ten ACKs in a row lost, from a receiver that ACKs every second packet: the sender's
  // probes (copies of what arrived) must each get an ACK through, or each probe timeout
  // gets one ACK for its two probes and the stall lasts twice as many timeouts.
  for (const seed of [11, 12, 13]) {
    const net = new SimNetwork({ seed, conditions: { latencyMs: 5 } });
    const server = new UDPipe({ transport: net.transport('10.0.1.1') });
    await server.start(PORT, '10.0.1.1');
    const client = new UDPipe({ transport: net.transport('10.0.2.1') });
    let connected = false;
    void client.connect('10.0.1.1', PORT, 30).then(() => (connected = true));
    await net.advanceUntil(() => connected, 10_000);
    let got = 0;
    server.onNewMessage = () => got++;
    await net.advance(1000);
    const inFlight = () => (conn(client.stats()) as unknown as { bytesInFlight: number }).bytesInFlight;
    const n = 40;
    for (let i = 0; i < n; i++) client.send(Buffer.alloc(1000, i));
    net.dropNext('10.0.1.1', '10.0.2.1', 10);
    const t0 = net.now;
    await net.advanceUntil(() => got === n && inFlight() === 0, 10_000);
    assert.equal(got, n, `seed ${seed}: every message arrived`);
    // Measured: 579 ms when two probes shared one ACK, 158 ms with one ACK each (10 ms RTT).
    const ms = net.now - t0;
    assert.ok(ms < 300, `seed ${seed}: all acknowledged after ${ms.toFixed(0)} ms`);
    const closing = Promise.all([server.close(), client.close()]);
    await net.advance(1000);
    await closing;
  }
});

/** A client and server on a LAN path (1472-byte datagrams), connected and past the MTU search. */
async function lan(seed: number) {
  const net = new SimNetwork({ seed, conditions: { latencyMs: 5, jitterMs: 1 } });
  const server = new UDPipe({ transport: net.transport('10.0.0.1') });
  await server.start(PORT, '10.0.0.1');
  const client = new UDPipe({ transport: net.transport('10.0.0.2') });
  let connected = false;
  void client.connect('10.0.0.1', PORT, 30).then(() => (connected = true));
  await net.advanceUntil(() => connected && server.clients.length === 1, 10_000);
  await net.advance(2000);
  return { net, server, client };
}

// The next two were found in review: packets of unreliable data alone armed no probe
// timer at first, so lost ones filled the window for good.
test('after a one-way outage of a 30 Hz unreliable loop, the client sends again (its lost packets do not hold the window)', async () => {
  const { net, server, client } = await lan(5);
  const inputs: number[] = [];
  let reliable = 0;
  server.onNewMessage = (m) => (m.length === 400 ? inputs.push(net.now) : reliable++);
  const tick = async (n: number) => {
    for (let k = 0; k < n; k++) {
      for (const p of server.clients as Peer[]) server.send(Buffer.alloc(256), p, SNAPSHOT);
      await net.advance(TICK / 2);
      client.send(Buffer.alloc(400), undefined, SNAPSHOT);
      await net.advance(TICK / 2);
    }
  };
  await tick(60);
  net.setConditions({ latencyMs: 5, loss: 1 }, '10.0.0.2', '10.0.0.1');
  await tick(120);
  net.setConditions({ latencyMs: 5, jitterMs: 1 }, '10.0.0.2', '10.0.0.1');
  const restoredAt = net.now;
  await tick(30);
  client.send(Buffer.alloc(10));
  await tick(90);
  const after = inputs.filter((t) => t > restoredAt).length;
  assert.ok(after > 100, `inputs that arrived in the 4 s after the outage: ${after} of 120`);
  assert.equal(reliable, 1, 'the reliable message sent after the outage arrived');
  const closing = Promise.all([server.close(), client.close()]);
  await net.advance(6000);
  await closing;
});

test('unreliable traffic alone recovers when the path MTU shrinks (a black hole)', async () => {
  const { net, server, client } = await lan(3);
  const got: number[] = [];
  server.onNewMessage = () => got.push(net.now);
  const tick = async (n: number) => {
    for (let k = 0; k < n; k++) {
      client.send(Buffer.alloc(700), undefined, { delivery: 'unreliable', channel: 1 });
      client.send(Buffer.alloc(700), undefined, { delivery: 'unreliable', channel: 1 });
      await net.advance(TICK);
    }
  };
  await tick(30);
  assert.ok(got.length > 50, `${got.length} messages before the MTU shrank`);
  net.setConditions({ latencyMs: 5, jitterMs: 1, mtu: 1250 }, '10.0.0.2', '10.0.0.1');
  const at = net.now;
  await tick(150);
  const late = got.filter((t) => t > at + 2000).length;
  assert.ok(late > 100, `messages that arrived 2-5 s after the MTU shrank: ${late} of 180`);
  const closing = Promise.all([server.close(), client.close()]);
  await net.advance(6000);
  await closing;
});

test('the ack delay a peer reports on ACKs of unreliable data hides at most LAZY_ACK_DELAY_MS of queue', () => {
  const lazy = (pn: number, sentAt: number): SentPacket => ({ pn, sentAt, size: 100, ackEliciting: true, messages: [], lazyAck: true });
  const cb = { acked: () => {}, lost: () => {} };
  for (const [claimed, path] of [
    [11, 60], // a delay past the max ack delay, within the lazy one: all of it comes off
    [10_000, 160], // a lie: at most LAZY_ACK_DELAY_MS comes off
  ] as const) {
    const lr = new LossRecovery(100, 10, 1000);
    lr.onSent({ pn: 0, sentAt: 0, size: 100, ackEliciting: true, messages: [] });
    lr.onAck([{ lo: 0, hi: 0 }], 0, 10, cb); // min RTT 10 ms
    for (let i = 1; i <= 60; i++) {
      lr.onSent(lazy(i, i * 1000));
      lr.onAck([{ lo: i, hi: i }], claimed, i * 1000 + path, cb);
    }
    const least = path - Math.min(claimed, LAZY_ACK_DELAY_MS);
    assert.ok(
      lr.rtt.smoothed > least - 1,
      `claimed ${claimed} ms on a ${path} ms path: smoothed RTT ${lr.rtt.smoothed} ms, at least ${least}`,
    );
  }
});
