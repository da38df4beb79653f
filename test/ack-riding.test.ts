/**
 * Acknowledgements of unreliable traffic ride along instead of going alone: the
 * datagram pattern of a game loop (issue 11's game tick) in virtual time. A packet that
 * carries only unreliable data has nothing to retransmit, so its ACK may wait for the
 * receiver's next packet; reliable data is still acknowledged within the max ack delay.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type Peer, UDPipe, type UDPipeOptions } from '../src/index.js';
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
