/**
 * Encrypted connections under attack, in the simulator (docs/SECURITY.md): what an
 * attacker who sees every datagram can and cannot do, mismatched settings, forged
 * refusals, the handshake rate limit, and legitimate clients during a flood.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { UDPipe, UDPipeError, type Peer } from '../src/index.js';
import { Rng, SimNetwork } from '../src/testing/index.js';
import { PacketType, VERSION_BYTE } from '../src/wire/constants.js';
import { decodeDatagram } from '../src/wire/packet.js';
import { encodeHandshake } from '../src/wire/handshake.js';
import type { DatagramSocket } from '../src/transport/types.js';
import { deriveTokenKey } from '../src/crypto/handshake-keys.js';
import { ClientEndpoint } from '../src/protocol/client.js';
import { DEFAULT_CONNECTION_CONFIG } from '../src/protocol/config.js';
import { ServerEndpoint, type ServerEvent } from '../src/protocol/server.js';

const T = { pingIntervalMs: 100, stallTimeoutMs: 400, timeoutMs: 1500, reconnect: { minDelayMs: 20, maxDelayMs: 200 } };
const S = '127.0.1.1';
const C = '127.0.2.1';
const ATTACKER = '127.0.3.1';
const PORT = 9000;

async function shutdown(net: SimNetwork, ...all: UDPipe[]): Promise<void> {
  const closing = Promise.all(all.map((u) => u.close()));
  await net.advance(3000);
  await closing;
}

/** A socket on the attacker's host that can send anything anywhere. */
async function attackerSocket(net: SimNetwork, host = ATTACKER): Promise<DatagramSocket> {
  return net.transport(host).bind(0, host, { onDatagram: () => {}, onError: () => {} });
}

test('a live encrypted connection shrugs off replayed, truncated, corrupted and forged packets', async () => {
  const net = new SimNetwork({ seed: 41, conditions: { latencyMs: 5 }, capture: true });
  const server = new UDPipe({ ...T, token: 'tok', encrypt: true, transport: net.transport(S) });
  await server.start(PORT, S);
  const client = new UDPipe({ ...T, token: 'tok', encrypt: true, transport: net.transport(C) });
  const atServer: string[] = [];
  const atClient: string[] = [];
  const trouble: string[] = [];
  server.onNewMessage = function (m, sock) {
    atServer.push(String(m));
    this.send(`echo ${m}`, sock);
  };
  client.onNewMessage = (m) => atClient.push(String(m));
  for (const [who, u] of [
    ['server', server],
    ['client', client],
  ] as const) {
    u.on('disconnect', () => trouble.push(`${who} disconnect`));
    u.on('stalled', () => trouble.push(`${who} stalled`));
    u.on('close', () => trouble.push(`${who} close`));
  }
  let moved = 0;
  server.on('newClient', () => moved++);
  void client.connect(S, PORT, 10);
  await net.advanceUntil(() => server.clients.length === 1, 5000);
  await net.advance(50);
  const peer = server.clients[0]!;
  const clientAddress = `${peer.address}:${peer.port}`;

  const attacker = await attackerSocket(net);
  const rng = new Rng(7);
  const N = 200;
  for (let i = 0; i < N; i++) {
    client.send(`secret message number ${i}`);
    if (i % 10 === 9) client.send(`secret unreliable ${i}`, undefined, { reliable: false });
    await net.advance(3);
    // Every DATA packet seen so far, in both directions, is ammunition.
    const data = net.captured.filter((d) => d.bytes[1] === PacketType.Data && d.from.address !== ATTACKER);
    for (let k = 0; k < 6 && data.length > 0; k++) {
      const d = data[rng.int(data.length)]!;
      const b = d.bytes.slice();
      const kind = rng.int(4);
      if (kind === 1) {
        b[rng.int(b.length)]! ^= 1 << rng.int(8); // one flipped bit, anywhere
      }
      const bytes = kind === 2 ? b.subarray(0, rng.int(b.length)) : b; // truncated
      if (kind === 3) {
        // Forged: a valid header for this connection, a fresh packet number, random body.
        for (let j = 6; j < b.length; j++) b[j] = rng.int(256);
      }
      attacker.send(bytes, d.to); // kind 0: a verbatim replay from another address
    }
  }
  await net.advanceUntil(() => atClient.filter((m) => m.startsWith('echo secret message')).length === N, 20_000);

  const want = Array.from({ length: N }, (_, i) => `secret message number ${i}`);
  assert.deepEqual(
    atServer.filter((m) => m.startsWith('secret message')),
    want,
    'every message once, in order',
  );
  assert.deepEqual(
    atClient.filter((m) => m.startsWith('echo secret message')),
    want.map((m) => `echo ${m}`),
  );
  const unreliable = atServer.filter((m) => m.startsWith('secret unreliable'));
  assert.equal(new Set(unreliable).size, unreliable.length, 'no unreliable message delivered twice');
  assert.deepEqual(trouble, [], 'the connection never noticed');
  assert.equal(`${peer.address}:${peer.port}`, clientAddress, 'replays from another address did not move the connection');
  assert.equal(server.clients.length, 1);
  assert.equal(moved, 1, 'one client, met once');
  const ps = peer.stats() as { duplicates: number; malformed: number };
  assert.ok(ps.duplicates > 50 && ps.malformed > 50, `rejected: ${ps.duplicates} replays, ${ps.malformed} bad tags`);
  // Nothing the program sent is readable on the wire.
  for (const d of net.captured) assert.equal(Buffer.from(d.bytes).indexOf('secret'), -1, 'plaintext on the wire');
  // The captured handshake, replayed from elsewhere, makes nothing.
  const accepted = (server.stats() as { handshakesAccepted: number }).handshakesAccepted;
  for (const d of net.captured.filter((x) => x.bytes[1] !== PacketType.Data && x.to.address === S && x.from.address === C))
    attacker.send(d.bytes, d.to);
  await net.advance(200);
  assert.equal((server.stats() as { handshakesAccepted: number }).handshakesAccepted, accepted, 'a replayed CONNECT made no connection');
  assert.equal(server.clients.length, 1);
  assert.deepEqual(trouble, []);
  await shutdown(net, client, server);
});

test('encrypted sessions across reconnects: fresh X25519 keys every connection, no packet number twice under one, nothing lost', async () => {
  const net = new SimNetwork({ seed: 77, conditions: { latencyMs: 5, loss: 0.05 }, capture: true });
  const server = new UDPipe({ ...T, encrypt: true, transport: net.transport(S) });
  await server.start(PORT, S);
  const got: string[] = [];
  server.onNewMessage = (m) => got.push(String(m));
  const client = new UDPipe({ ...T, encrypt: true, transport: net.transport(C) });
  void client.connect(S, PORT, 10);
  await net.advanceUntil(() => server.clients.length === 1, 5000);
  for (let round = 0; round < 3; round++) {
    for (let i = 0; i < 30; i++) {
      client.send(`r${round}:${i}`);
      await net.advance(10);
    }
    net.partition(S, C, net.now, net.now + T.timeoutMs + 500); // each round ends in a reconnect
    await net.advance(T.timeoutMs + 2000);
  }
  await net.advanceUntil(() => got.length >= 90, 20_000);
  assert.deepEqual(
    got,
    Array.from({ length: 90 }, (_, i) => `r${Math.floor(i / 30)}:${i % 30}`),
    'every message once, in order, across three reconnects',
  );
  const sent = net.captured; // no duplication on this network: each entry is one send
  const keys = (type: PacketType, at: number) =>
    new Set(sent.filter((d) => d.bytes[1] === type).map((d) => Buffer.from(d.bytes.subarray(at, at + 32)).toString('hex')));
  const accepts = keys(PacketType.Accept, 36);
  assert.ok(accepts.size >= 4, `${accepts.size} server keys for at least four connections`);
  assert.ok(keys(PacketType.Connect, 71).size >= accepts.size, 'a client key per handshake');
  // Within a connection (its destination id) and direction, a packet number is used once: with fresh keys per connection no nonce repeats.
  const nonces = new Set<string>();
  for (const d of sent.filter((x) => x.bytes[1] === PacketType.Data)) {
    const id = `${d.from.address}>${Buffer.from(d.bytes.subarray(2, 10)).toString('hex')}`;
    assert.ok(!nonces.has(id), `packet ${id} sent twice`);
    nonces.add(id);
  }
  await shutdown(net, client, server);
});

test('encryption settings that disagree are refused on both ends with a clear error', async () => {
  for (const [serverEncrypts, clientEncrypts] of [
    [true, false],
    [false, true],
  ]) {
    const net = new SimNetwork({ seed: 3, conditions: { latencyMs: 5 } });
    const warnings: string[] = [];
    const server = new UDPipe({
      ...T,
      encrypt: serverEncrypts,
      transport: net.transport(S),
      logger: { debug() {}, warn: (m) => warnings.push(m) },
    });
    await server.start(PORT, S);
    const client = new UDPipe({ ...T, encrypt: clientEncrypts, transport: net.transport(C) });
    const result = client.connect(S, PORT, 5).then(
      () => undefined,
      (e: unknown) => e,
    );
    await net.advance(500);
    const err = await result;
    assert.ok(err instanceof UDPipeError && err.code === 'ERR_ENCRYPTION_MISMATCH', String(err));
    assert.match(err.message, /encrypt: true/);
    assert.equal(server.clients.length, 0);
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]!, serverEncrypts ? /requires encryption/ : /client encrypts/);
    await shutdown(net, server);
  }
});

test('a forged "server full" or "encryption mismatch" REFUSE is ignored; the client connects', async () => {
  const net = new SimNetwork({ seed: 5, conditions: { latencyMs: 20 }, capture: true });
  const server = new UDPipe({ ...T, token: 't', encrypt: true, transport: net.transport(S) });
  await server.start(PORT, S);
  const client = new UDPipe({ ...T, token: 't', encrypt: true, transport: net.transport(C) });
  const connecting = client.connect(S, PORT, 10);
  // An attacker who sees the handshake (a spoofing on-path host, closer to the client
  // than the server) answers the client's CONNECT before the server does; the client
  // holds the cookie by then, so the refuse proof is really compared.
  const attacker = await attackerSocket(net);
  net.setConditions({ latencyMs: 1 }, ATTACKER, C);
  await net.advanceUntil(() => net.captured.some((d) => d.bytes[1] === PacketType.Connect), 1000);
  const connect = net.captured.find((d) => d.bytes[1] === PacketType.Connect)!;
  const h = decodeDatagram(connect.bytes);
  assert.equal(h.type, 'connect');
  if (h.type !== 'connect') return;
  for (const reason of [3, 6]) {
    attacker.send(
      encodeHandshake({
        type: 'refuse',
        clientConnId: h.clientConnId,
        clientNonce: h.clientNonce,
        reason,
        proof: new Uint8Array(16).fill(9),
      }),
      connect.from,
    );
  }
  await net.advance(5);
  assert.equal((client.stats() as { state: string }).state, 'handshake', 'the refusals arrived before the ACCEPT');
  assert.equal((client.stats() as { malformed: number }).malformed, 2, 'both forged refusals were dropped');
  let peer: Peer | undefined;
  void connecting.then((p) => (peer = p));
  await net.advanceUntil(() => peer !== undefined, 5000);
  assert.ok(peer);
  assert.equal(peer.state, 'connected');
  await shutdown(net, client, server);
});

test('handshake rate limit: one address beyond handshakesPerSecond gets no answer; others are unaffected', async () => {
  const net = new SimNetwork({ seed: 9, conditions: { latencyMs: 2 } });
  const server = new UDPipe({ ...T, handshakesPerSecond: 5, maxClientsPerAddress: 30, transport: net.transport(S) });
  await server.start(PORT, S);
  // 30 clients on one host (many ports) connect at once: a burst of 10, then 5 a second.
  const crowd = Array.from({ length: 30 }, () => new UDPipe({ ...T, connectTimeoutMs: 60_000, transport: net.transport(C) }));
  for (const c of crowd) void c.connect(S, PORT);
  await net.advance(100);
  assert.equal(server.clients.length, 10, 'the burst');
  const stats = server.stats() as { handshakesRateLimited: number };
  assert.ok(stats.handshakesRateLimited > 0);
  // Another address is not held back by the busy one.
  const other = new UDPipe({ ...T, transport: net.transport('127.0.2.2') });
  let otherIn = false;
  void other.connect(S, PORT, 1).then(() => (otherIn = true));
  await net.advance(100);
  assert.ok(otherIn);
  await net.advanceUntil(() => server.clients.length === 31, 30_000);
  assert.equal(server.clients.length, 31, 'everyone got in, the crowd at the allowed rate');
  assert.ok(net.now < 12_000, `the crowd took ${net.now} ms`);
  await shutdown(net, server);
});

test('legitimate clients connect and talk during a flood of spoofed and forged handshakes', async () => {
  const net = new SimNetwork({ seed: 13, conditions: { latencyMs: 10, loss: 0.02 } });
  const server = new UDPipe({ ...T, token: 'flood', encrypt: true, transport: net.transport(S) });
  await server.start(PORT, S);
  const got = new Set<string>();
  server.onNewMessage = (m) => got.add(String(m));
  const flooders = await Promise.all(Array.from({ length: 50 }, (_, i) => attackerSocket(net, `127.0.${4 + (i >> 4)}.${(i % 16) + 1}`)));
  const rng = new Rng(13);
  let flood = 0;
  const hello = encodeHandshake({ type: 'hello', clientConnId: 1, clientNonce: new Uint8Array(16) });
  const connect = encodeHandshake({
    type: 'connect',
    clientConnId: 2,
    clientNonce: new Uint8Array(16),
    cookie: new Uint8Array(16),
    sessionId: new Uint8Array(16),
    nextSendIndex: 0,
    delivered: 0,
    flags: 1,
    publicKey: new Uint8Array(32).fill(5),
    resumeProof: new Uint8Array(16),
    proof: new Uint8Array(16),
  });
  const floodFor = (ms: number) => {
    // 250 datagrams per simulated millisecond: HELLOs, CONNECTs with forged cookies,
    // DATA for random connection ids, garbage.
    for (let t = 0; t < ms; t++) {
      for (let k = 0; k < 250; k++) {
        const s = flooders[rng.int(flooders.length)]!;
        const kind = rng.int(4);
        const b = kind === 0 ? hello : kind === 1 ? connect : new Uint8Array(20 + rng.int(100)).map(() => rng.int(256));
        if (kind === 2) {
          b[0] = VERSION_BYTE;
          b[1] = PacketType.Data;
        }
        s.send(b, { address: S, port: PORT });
        flood++;
      }
      net.run(1);
    }
  };
  const clients = Array.from(
    { length: 8 },
    (_, i) => new UDPipe({ ...T, token: 'flood', encrypt: true, transport: net.transport(`127.0.2.${i + 1}`) }),
  );
  let connected = 0;
  for (const c of clients) void c.connect(S, PORT, 30).then(() => connected++);
  floodFor(500);
  clients.forEach((c, i) => c.send(`hello from ${i}`));
  floodFor(300);
  await net.advanceUntil(() => got.size === clients.length, 10_000);
  assert.equal(connected, clients.length, 'every legitimate client connected during the flood');
  assert.equal(got.size, clients.length);
  assert.equal(server.clients.length, clients.length, 'and nobody else did');
  assert.ok(flood >= 200_000, `${flood} flood datagrams`);
  await shutdown(net, server);
});

function sansIoPair(firstDataFrom?: { address: string; port: number }) {
  let seed = 1;
  const randomBytes = (n: number) => Uint8Array.from({ length: n }, () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) & 0xff);
  const key = deriveTokenKey('k');
  const server = new ServerEndpoint(
    { ...DEFAULT_CONNECTION_CONFIG, tokenKey: key, maxClients: 4, sessionLingerMs: 1000, encrypt: true, handshakesPerSecond: 0 },
    randomBytes,
    0,
  );
  const client = new ClientEndpoint(
    {
      ...DEFAULT_CONNECTION_CONFIG,
      tokenKey: key,
      encrypt: true,
      handshakeRetryMs: 250,
      reconnect: { enabled: false, minDelayMs: 10, maxDelayMs: 100 },
    },
    randomBytes,
  );
  const X = { address: '127.0.2.1', port: 5000 };
  client.start(0, Infinity);
  for (let i = 0; i < 4; i++) {
    for (let d = client.pollTransmit(0); d; d = client.pollTransmit(0))
      server.handleDatagram(d, d[1] === PacketType.Data && firstDataFrom ? firstDataFrom : X, 0);
    for (let o = server.pollTransmit(0); o; o = server.pollTransmit(0))
      if (!firstDataFrom || o.to.port === X.port || o.bytes[1] !== PacketType.Data) client.handleDatagram(o.bytes, 0);
  }
  assert.equal(client.state, 'connected');
  const events: ServerEvent[] = [];
  const drain = () => {
    for (let e = server.pollEvent(); e; e = server.pollEvent()) events.push(e);
  };
  drain();
  assert.ok(events.some((e) => e.type === 'accepted'));
  const packet = (text: string, now: number) => {
    client.send(new TextEncoder().encode(text), true);
    return client.pollTransmit(now)!;
  };
  return { server, client, X, events, drain, packet };
}

test('only the newest packet moves a connection, once the client answers at its new address; a late packet from the old address does not move it back', () => {
  const { server, client, X, events, drain, packet } = sansIoPair();
  const Y = { address: '127.0.2.1', port: 6000 };
  let now = 1;
  const older = packet('a', now++);
  const newer = packet('b', now++);
  server.handleDatagram(newer, Y, now); // the client moved to Y (NAT rebinding)
  server.handleDatagram(older, X, now); // a late packet from before the move
  drain();
  assert.equal(events.filter((e) => e.type === 'address-changed').length, 0, 'not before Y proved itself');
  // The server challenges Y; the client (now at Y) answers.
  const toY: Uint8Array[] = [];
  for (let o = server.pollTransmit(now); o; o = server.pollTransmit(now)) {
    assert.deepEqual(o.to, Y, 'replies go to the newest address');
    toY.push(o.bytes);
  }
  assert.ok(toY.length > 0);
  for (const b of toY) client.handleDatagram(b, now);
  for (let d = client.pollTransmit(now); d; d = client.pollTransmit(now)) server.handleDatagram(d, Y, now);
  drain();
  const moves = events.filter((e) => e.type === 'address-changed');
  assert.deepEqual(
    moves.map((e) => e.type === 'address-changed' && e.address),
    [Y],
    'moved to Y once, not back to X',
  );
  assert.equal(events.filter((e) => e.type === 'connection' && e.event.type === 'message').length, 2, 'both packets were still taken');
});

test('a fresh packet raced from another address (on-path attacker): the server sends there at most 3x what came from there, then goes back', () => {
  const { server, client, X, events, drain, packet } = sansIoPair();
  const V = { address: '198.51.100.9', port: 7000 }; // the victim the attacker points us at
  let now = 1;
  // Give the server plenty to send, then let the attacker's copy of a fresh packet arrive first from V.
  const id = server.connIds()[0]!;
  for (let i = 0; i < 200; i++) server.send(id, new Uint8Array(1000), true);
  const fresh = packet('c', now);
  server.handleDatagram(fresh, V, now);
  let toVictim = 0;
  for (; now < 5000; now += 10) {
    server.handleTimeout(now);
    for (let o = server.pollTransmit(now); o; o = server.pollTransmit(now)) {
      if (o.to.address === V.address) toVictim += o.bytes.length;
      else client.handleDatagram(o.bytes, now); // back at X: the client hears again
    }
    client.handleTimeout(now);
    for (let d = client.pollTransmit(now); d; d = client.pollTransmit(now)) server.handleDatagram(d, X, now);
  }
  drain();
  assert.ok(toVictim > 0 && toVictim <= 3 * fresh.length, `${toVictim} bytes to the victim for ${fresh.length} received from it`);
  assert.equal(
    events.filter((e) => e.type === 'address-changed').length,
    0,
    'the program never saw the connection at V; back at X (validated, no check) it did not move',
  );
  assert.ok(client.connection!.stats().messagesReceived >= 200, 'everything reached the client at X');
});

for (const size of [100, 1]) {
  test(`a move nobody answers at (raced packet of ${size} bytes of message): the server gives up and goes back; the program never saw it`, () => {
    const { server, events, drain, packet } = sansIoPair();
    const V = { address: '198.51.100.9', port: 7000 };
    // 3x a packet with 100 bytes holds three challenges; with 1 byte only two, and the
    // server gives up by time instead.
    const fresh = packet('d'.repeat(size), 1);
    server.handleDatagram(fresh, V, 1);
    let toVictim = 0;
    let packetsToVictim = 0;
    let backAtX = 0;
    for (let now = 2; now < 8000; now += 5) {
      server.handleTimeout(now);
      for (let o = server.pollTransmit(now); o; o = server.pollTransmit(now)) {
        if (o.to.address === V.address) {
          toVictim += o.bytes.length;
          packetsToVictim++;
        } else backAtX++;
      }
    }
    drain();
    assert.ok(toVictim > 0 && toVictim <= 3 * fresh.length, `${toVictim} bytes to the victim for ${fresh.length} received from it`);
    assert.ok(packetsToVictim >= (size === 100 ? 3 : 1), `${packetsToVictim} packets (challenges) went to the victim`);
    assert.ok(backAtX > 0, 'after giving up, the server talks to X again');
    assert.equal(events.filter((e) => e.type === 'address-changed').length, 0);
  });
}

test("a first DATA packet from another address than the handshake's: the program meets the client at the proven address, and hears of the move once validated", () => {
  const Z = { address: '127.0.2.1', port: 5999 };
  const { events, drain } = sansIoPair(Z);
  drain();
  const accepted = events.find((e) => e.type === 'accepted');
  assert.deepEqual(
    accepted?.type === 'accepted' && accepted.address,
    { address: '127.0.2.1', port: 5000 },
    'the handshake (cookie) address',
  );
});
