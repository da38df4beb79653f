/**
 * Issue 10, findings 4, 5, 6, 7, 8 and 10, as an attacker or a careless program meets them
 * through the public API, in virtual time: no peer's behaviour turns into an exception,
 * a broadcast is per peer, the send queues have an endpoint-wide bound, classic
 * handshakes never take modern clients' room, and one address cannot take every slot.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { UDPipe, type Peer, type UDPipeOptions } from '../src/index.js';
import { SimNetwork } from '../src/testing/index.js';
import type { Address, DatagramSocket } from '../src/transport/types.js';

const S = '127.0.1.1';
const PORT = 9100;
const T: UDPipeOptions = { pingIntervalMs: 100, stallTimeoutMs: 350, timeoutMs: 1000, reconnect: { minDelayMs: 20, maxDelayMs: 200 } };

async function connectClients(net: SimNetwork, server: UDPipe, hosts: string[], opts: UDPipeOptions = {}): Promise<UDPipe[]> {
  const cs = hosts.map((h) => new UDPipe({ ...T, ...opts, transport: net.transport(h) }));
  for (const c of cs) void c.connect(S, PORT, 30).catch(() => {});
  await net.advanceUntil(() => server.clients.length === hosts.length, 10_000);
  return cs;
}

async function rawSocket(net: SimNetwork, host: string) {
  const got: Uint8Array[] = [];
  const sock: DatagramSocket = await net.transport(host).bind(0, host, { onDatagram: (b) => got.push(b), onError: () => {} });
  return { got, send: (s: string, to: Address) => sock.send(Buffer.from(s, 'latin1'), to) };
}

test('finding 7: send() from onNewMessage to a peer that never acknowledges never throws; memory stays bounded', async () => {
  const net = new SimNetwork({ seed: 71, conditions: { latencyMs: 5 } });
  const server = new UDPipe({
    ...T,
    timeoutMs: 5000,
    stallTimeoutMs: 2000,
    highWaterMark: 4096,
    maxQueue: 16,
    transport: net.transport(S),
  });
  await server.start(PORT, S);
  const thrown: unknown[] = [];
  const dropped: number[] = [];
  server.on('dropped', (_sock, msg) => dropped.push(msg.length));
  server.onNewMessage = function (msg, sock) {
    try {
      for (let i = 0; i < 16; i++) this.send(Buffer.alloc(512, msg[0]), sock); // ignores false, as `serve --echo` did
    } catch (err) {
      thrown.push(err);
    }
  };
  const [client] = await connectClients(net, server, ['127.0.2.1'], { timeoutMs: 5000, stallTimeoutMs: 2000 });
  // 200 small messages leave the client; from then on nothing reaches it, so it never
  // acknowledges the server's replies.
  for (let i = 0; i < 200; i++) client!.send(`m${i}`);
  await net.advance(2);
  net.setConditions({ latencyMs: 5, loss: 1 }, S, '127.0.2.1');
  await net.advance(1000);
  assert.deepEqual(thrown, [], 'send() did not throw');
  const peer = server.clients[0]!;
  const st = peer.stats();
  assert.ok('queuedBytes' in st && st.queuedBytes <= 8 * 4096 + 512, `queued ${'queuedBytes' in st ? st.queuedBytes : '?'} bytes`);
  assert.ok(dropped.length > 0, "what could not be queued was reported by 'dropped'");
  assert.ok('sendDropped' in st && st.sendDropped === dropped.length, 'and counted in stats().sendDropped');
  const closing = Promise.all([client!.close(), server.close()]);
  await net.advance(6000);
  await closing;
});

test('finding 7: replies sent from onNewMessage during server.close() never throw', async () => {
  const net = new SimNetwork({ seed: 72, conditions: { latencyMs: 10 } });
  const server = new UDPipe({ ...T, transport: net.transport(S) });
  await server.start(PORT, S);
  const thrown: unknown[] = [];
  let replies = 0;
  server.onNewMessage = function (msg, sock) {
    try {
      this.send(`echo ${msg}`, sock);
      replies++;
    } catch (err) {
      thrown.push(err);
    }
  };
  const clients = await connectClients(net, server, ['127.0.2.1', '127.0.2.2']);
  for (const c of clients) for (let i = 0; i < 50; i++) c.send(`x${i}`);
  await net.advance(12); // the first messages are on their way
  const closing = server.close();
  await net.advance(3000);
  await closing;
  assert.deepEqual(thrown, [], 'no reply threw');
  assert.ok(replies > 0);
  await Promise.all(clients.map((c) => c.close()));
});

test('finding 8: sendAll is per peer: a stalled client is skipped and reported, the healthy ones get everything', async () => {
  const net = new SimNetwork({ seed: 81, conditions: { latencyMs: 5 } });
  const opts = { stallTimeoutMs: 3000, timeoutMs: 20_000, highWaterMark: 2048, maxQueue: 8 };
  const server = new UDPipe({ ...T, ...opts, transport: net.transport(S) });
  await server.start(PORT, S);
  const hosts = ['127.0.2.1', '127.0.2.2', '127.0.2.3'];
  const clients = await connectClients(net, server, hosts, opts);
  const got = clients.map(() => 0);
  clients.forEach((c, i) => c.on('newMessage', () => got[i]!++));
  const skipped = new Set<string>();
  server.on('dropped', (sock: Peer) => skipped.add(sock.address));
  net.partitionHost('127.0.2.3', net.now, net.now + 8000);
  let thrown = 0;
  for (let i = 0; i < 200; i++) {
    try {
      server.sendAll(Buffer.alloc(100, i));
    } catch {
      thrown++;
    }
    await net.advance(20);
  }
  await net.advance(500);
  assert.equal(thrown, 0, 'sendAll never threw');
  assert.deepEqual([got[0], got[1]], [200, 200], 'every healthy client got every message');
  assert.deepEqual([...skipped], ['127.0.2.3'], 'only the stalled client was skipped, and the program was told');
  const closing = Promise.all([...clients.map((c) => c.close()), server.close()]);
  await net.advance(10_000);
  await closing;
});

test('finding 8: one classic client does not make a large sendAll throw; modern clients still get it', async () => {
  const net = new SimNetwork({ seed: 82, conditions: { latencyMs: 5 } });
  const server = new UDPipe({ ...T, classic: true, transport: net.transport(S) });
  await server.start(PORT, S);
  const modern = new UDPipe({ ...T, transport: net.transport('127.0.2.1') });
  const lua = new UDPipe({ ...T, protocol: 'classic', transport: net.transport('127.0.2.2') });
  void modern.connect(S, PORT);
  void lua.connect(S, PORT);
  await net.advanceUntil(() => server.clients.length === 2, 5000);
  let got = 0;
  modern.on('newMessage', (m) => (got = m.length));
  const skipped: string[] = [];
  server.on('dropped', (sock: Peer) => skipped.push(sock.protocol));
  server.sendAll(Buffer.alloc(20_000, 7));
  await net.advance(200);
  assert.equal(got, 20_000);
  assert.deepEqual(skipped, ['classic']);
  const closing = Promise.all([modern.close(), lua.close(), server.close()]);
  await net.advance(5000);
  await closing;
});

test('finding 10: peers that withhold ACKs cannot make the server hold more than maxQueuedBytes in all', async () => {
  const net = new SimNetwork({ seed: 101, conditions: { latencyMs: 5 } });
  const opts = { stallTimeoutMs: 3000, timeoutMs: 20_000 };
  const server = new UDPipe({ ...T, ...opts, maxQueuedBytes: 1 << 20, transport: net.transport(S) });
  await server.start(PORT, S);
  const hosts = Array.from({ length: 10 }, (_, i) => `127.0.3.${i + 1}`);
  const clients = await connectClients(net, server, hosts, opts);
  for (const h of hosts) net.setConditions({ latencyMs: 5, loss: 1 }, S, h);
  const chunk = Buffer.alloc(64 * 1024, 1);
  for (let round = 0; round < 20; round++) {
    for (const p of server.clients) p.send(chunk); // a program that ignores false
    await net.advance(10);
  }
  let total = 0;
  for (const p of server.clients) {
    const st = p.stats();
    if ('queuedBytes' in st) total += st.queuedBytes;
  }
  assert.ok(total <= (1 << 20) + chunk.length, `${total} bytes queued over all peers`);
  const closing = Promise.all([...clients.map((c) => c.close()), server.close()]);
  await net.advance(10_000);
  await closing;
});

test('finding 4: classic is off unless the program turns it on; a HELLO gets nothing back', async () => {
  const net = new SimNetwork({ seed: 41, conditions: { latencyMs: 5 } });
  const server = new UDPipe({ ...T, transport: net.transport(S) });
  await server.start(PORT, S);
  const raw = await rawSocket(net, '127.0.4.1');
  raw.send('HELLO ', { address: S, port: PORT });
  await net.advance(100);
  assert.equal(raw.got.length, 0);
  await server.close();
});

test('finding 4: spoofed classic HELLOs never lock modern clients out', async () => {
  const net = new SimNetwork({ seed: 42, conditions: { latencyMs: 5 } });
  const server = new UDPipe({ ...T, classic: true, maxClients: 16, timeoutMs: 10_000, stallTimeoutMs: 3000, transport: net.transport(S) });
  await server.start(PORT, S);
  const forgers = await Promise.all(Array.from({ length: 40 }, (_, i) => rawSocket(net, `127.0.5.${i + 1}`)));
  // 40 forged HELLOs a second, for three seconds; their private sockets wait for a CONNECT that never comes.
  for (let s = 0; s < 3; s++) {
    for (const f of forgers) {
      f.send('HELLO ', { address: S, port: PORT });
      await net.advance(25);
    }
  }
  const modern = new UDPipe({ ...T, transport: net.transport('127.0.2.9') });
  let result = 'pending';
  void modern.connect(S, PORT, 3).then(
    () => (result = 'connected'),
    (e: { code: string }) => (result = e.code),
  );
  await net.advanceUntil(() => result !== 'pending', 4000);
  assert.equal(result, 'connected');
  const closing = Promise.all([modern.close(), server.close()]);
  await net.advance(12_000);
  await closing;
});

test('finding 5: by default one address cannot take every slot; another address still gets in', async () => {
  const net = new SimNetwork({ seed: 51, conditions: { latencyMs: 5 } });
  const server = new UDPipe({ ...T, maxClients: 32, transport: net.transport(S) });
  await server.start(PORT, S);
  const hog = Array.from({ length: 32 }, () => new UDPipe({ ...T, transport: net.transport('127.0.6.1') }));
  for (const c of hog) void c.connect(S, PORT, 3).catch(() => {});
  await net.advance(3500);
  const fromHog = server.clients.filter((p) => p.address === '127.0.6.1').length;
  assert.ok(fromHog < 32 && fromHog >= 8, `${fromHog} slots from one address`);
  const honest = new UDPipe({ ...T, transport: net.transport('127.0.7.1') });
  let ok = false;
  void honest.connect(S, PORT, 2).then(() => (ok = true));
  await net.advanceUntil(() => ok, 1000);
  assert.ok(ok, 'an honest client got in at once');
  const closing = Promise.all([...hog.map((c) => c.close()), honest.close(), server.close()]);
  await net.advance(6000);
  await closing;
});

/**
 * Finding 6: two token holders each start a message of almost 1 MiB, which together fill
 * the server's 1 MiB reassembly budget, and stop halfway; then an honest client sends 8
 * large messages on channel 0 and 50 small ones on channel 1. 'parked': the attackers
 * vanish, so their sessions park with the half-built messages. 'live': they stay
 * connected (pings and ACKs get through) but their parts no longer arrive.
 */
async function stalledHolders(mode: 'parked' | 'live', honestSendsLarge = true) {
  const net = new SimNetwork({ seed: 6, conditions: { latencyMs: 5 } });
  const server = new UDPipe({ ...T, maxReassemblyBytes: 1 << 20, maxMessageSize: 1 << 20, transport: net.transport(S) });
  await server.start(PORT, S);
  const big: number[] = [];
  const small: number[] = [];
  server.onNewMessage = (m, sock, info) => {
    if (sock.address === '127.0.9.1') (info.channel === 0 ? big : small).push(m.length);
  };
  const hosts = ['127.0.8.1', '127.0.8.2'];
  const attackers = await connectClients(net, server, hosts);
  for (const a of attackers) a.send(Buffer.alloc((1 << 20) - 1000));
  const reassembly = () =>
    (server.stats() as { reassembly: { bytes: number; peak: number; limit: number; evictedSessions: number } }).reassembly;
  await net.advanceUntil(() => reassembly().bytes > 900_000, 5000);
  for (const h of hosts) {
    if (mode === 'parked') net.partitionHost(h, net.now, net.now + 120_000);
    else net.setConditions({ latencyMs: 5, mtu: 300 }, h, S); // every part is larger
  }
  const honest = new UDPipe({ ...T, transport: net.transport('127.0.9.1') });
  void honest.connect(S, PORT);
  await net.advance(300);
  if (honestSendsLarge) for (let i = 0; i < 8; i++) honest.send(Buffer.alloc(256 * 1024));
  for (let i = 0; i < 50; i++) honest.send('x'.repeat(32), undefined, { channel: 1 });
  await net.advance(15_000);
  return { big: big.length, small: small.length, attackersConnected: server.clients.length - 1, reassembly: reassembly() };
}

test('finding 6: half-built messages parked by stalled sessions must not starve another session', async () => {
  const r = await stalledHolders('parked');
  // Measured before parked sessions gave way: 0 of 8 large and 5 of 50 small in 15 s (all of them in 0.8 s now).
  assert.deepEqual({ big: r.big, small: r.small }, { big: 8, small: 50 });
  // Attackers' sessions were forgotten to make room (one or both: units the budget
  // refused come again later and wait in the reorder buffer), and the budget's bound held.
  assert.ok(r.reassembly.evictedSessions >= 1 && r.reassembly.evictedSessions <= 2, `${r.reassembly.evictedSessions} sessions forgotten`);
  assert.ok(r.reassembly.peak <= r.reassembly.limit + (1 << 20), `peak ${r.reassembly.peak} within the limit and one maxMessageSize`);
});

// Finding 6 with holders that stay connected (docs/SECURITY.md): before REFUSED and the
// per-session share for whole messages, the honest session got 0 of 8 large and 5 of 50
// small messages in 15 s; now every small one arrives, and its large ones too once the
// holders' messages have not asked to grow for IDLE_BUILDER_MS (they lose their turn).
test('finding 6, live holders: a session whose large messages are refused still gets every small one on another channel', async () => {
  const r = await stalledHolders('live');
  assert.equal(r.attackersConnected, 2, 'the attackers are still connected');
  assert.equal(r.small, 50);
});

test('finding 6, live holders: ...and its large messages too, once the holders stop asking to grow theirs', async (t) => {
  const r = await stalledHolders('live');
  assert.equal(r.attackersConnected, 2, 'the attackers are still connected');
  assert.equal(r.big, 8);
  t.diagnostic(`reassembly: ${JSON.stringify(r.reassembly)}`);
  // Past the limit by the honest message only (the holders' messages were under it).
  assert.ok(r.reassembly.peak <= r.reassembly.limit + (1 << 20) + (1 << 20), `peak ${r.reassembly.peak}`);
});

test('finding 6, live holders: a session with no large message of its own still gets all its small messages through', async () => {
  const r = await stalledHolders('live', false);
  assert.equal(r.attackersConnected, 2, 'the attackers are still connected');
  assert.equal(r.small, 50);
});

test("a send() that returned false before a disconnect still gets its 'drain' after the reconnect", async () => {
  const net = new SimNetwork({ seed: 12, conditions: { latencyMs: 5 } });
  const server = new UDPipe({ ...T, transport: net.transport(S) });
  await server.start(PORT, S);
  const client = new UDPipe({ ...T, highWaterMark: 4096, transport: net.transport('127.0.2.1') });
  void client.connect(S, PORT);
  await net.advance(200);
  let drains = 0;
  client.on('drain', () => drains++);
  let full = false;
  for (let i = 0; i < 20 && !full; i++) full = !client.send(Buffer.alloc(1000, i));
  assert.ok(full, 'send() said false');
  // Everything reaches the server, but none of its acknowledgements come back before the
  // client gives the connection up; the session resumes on the next one.
  net.setConditions({ latencyMs: 5, loss: 1 }, S, '127.0.2.1');
  await net.advance(1500);
  net.setConditions({ latencyMs: 5 }, S, '127.0.2.1');
  await net.advanceUntil(() => drains > 0, 5000);
  assert.equal(drains, 1, "'drain' came once");
  const closing = Promise.all([client.close(), server.close()]);
  await net.advance(6000);
  await closing;
});

/**
 * A session parked with a half-built message, forgotten to make room for a live one
 * (finding 6's fix): its client comes back to a new session and resends whole what it
 * cannot know delivered. `resumes` connections first come back and lose the link again
 * before the session is forgotten (so the half-built message is carried over in parts).
 */
async function evictedAndBack(seed: number, resumes: number): Promise<void> {
  const net = new SimNetwork({ seed, conditions: { latencyMs: 5 } });
  const server = new UDPipe({
    ...T,
    maxReassemblyBytes: 1 << 20,
    maxMessageSize: 1 << 20,
    sessionLingerMs: 60_000,
    transport: net.transport(S),
  });
  await server.start(PORT, S);
  const got = new Map<string, Uint8Array[]>();
  server.onNewMessage = (m, sock) => {
    const list = got.get(sock.address) ?? [];
    list.push(new Uint8Array(m));
    got.set(sock.address, list);
  };
  const reassembly = () =>
    (server.stats() as { reassembly: { bytes: number; peak: number; limit: number; evictedSessions: number } }).reassembly;
  const V = '127.0.8.3';
  const [victim] = await connectClients(net, server, [V]);
  victim!.send('first');
  await net.advance(200);
  const big = Uint8Array.from({ length: 1000 * 1024 }, (_, i) => i % 251);
  victim!.send(big);
  let held = 400_000 - resumes * 200_000;
  for (let i = 0; i <= resumes; i++) {
    assert.ok(await net.advanceUntil(() => reassembly().bytes > held, 5000), `the server holds part of it (${reassembly().bytes})`);
    held = reassembly().bytes + 200_000;
    net.partitionHost(V, net.now, net.now + (i < resumes ? 1500 : 4000));
    if (i < resumes) {
      assert.ok(await net.advanceUntil(() => server.clients.length === 0, 3000), 'lost');
      assert.ok(await net.advanceUntil(() => server.clients.length === 1, 3000), 'and back');
    }
  }
  await net.advanceUntil(() => server.clients.length === 0, 3000);
  // Another client's large messages need the room the parked session holds.
  const honest = new UDPipe({ ...T, transport: net.transport('127.0.9.1') });
  void honest.connect(S, PORT);
  await net.advance(300);
  for (let i = 0; i < 4; i++) honest.send(Buffer.alloc(600 * 1024, i));
  assert.ok(await net.advanceUntil(() => reassembly().evictedSessions === 1, 3000), 'the parked session gave way');
  await net.advanceUntil(() => (got.get(V)?.length ?? 0) >= 2 && got.get('127.0.9.1')?.length === 4, 15_000);
  await net.advance(2000); // and nothing more comes
  const mine = got.get(V) ?? [];
  assert.deepEqual(
    mine.map((m) => m.length),
    [5, big.length],
    'each message of the victim exactly once',
  );
  assert.equal(Buffer.from(mine[0]!).toString(), 'first');
  assert.ok(Buffer.from(mine[1]!).equals(big), 'the large one intact');
  assert.equal(got.get('127.0.9.1')?.length, 4);
  // Within the budget's bound (the limit, and the one message still being sent past it).
  assert.ok(reassembly().peak <= reassembly().limit + (1 << 20), `peak ${reassembly().peak}`);
}

test('a client whose parked session gave way for memory comes back and gets every message delivered once', async () => {
  await evictedAndBack(61, 0);
});

test('...also when its large message was carried over to another connection of the session before', async () => {
  await evictedAndBack(62, 1);
});
