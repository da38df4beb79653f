/**
 * Every timer of the core, checked at deadline - 1 (nothing happens) and at the
 * deadline (it fires): handshake retransmission, connect deadline, reconnect backoff,
 * delayed ACK, close timeout and session linger.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { deriveTokenKey } from '../src/crypto/handshake-keys.js';
import { EphemeralKey } from '../src/crypto/key-exchange.js';
import { HmacPacketCipher } from '../src/crypto/packet-cipher.js';
import { ClientEndpoint, type ClientConfig, type ClientEvent } from '../src/protocol/client.js';
import { DEFAULT_CONNECTION_CONFIG } from '../src/protocol/config.js';
import { newInbound } from '../src/protocol/connection/connection.js';
import { KeepAlive } from '../src/protocol/connection/keepalive.js';
import { PacketBuilder } from '../src/protocol/connection/packet-builder.js';
import { Connection } from '../src/protocol/connection/connection.js';
import { ServerEndpoint, type ServerEvent } from '../src/protocol/server.js';
import { SessionStore } from '../src/protocol/sessions.js';
import { decodeDatagram } from '../src/wire/packet.js';
import { Rng } from '../src/testing/index.js';

const SECRET = '\0'.repeat(32);

const rng = new Rng(5);
const randomBytes = (n: number) => rng.bytes(n);
const clientCfg = (): ClientConfig => ({
  ...DEFAULT_CONNECTION_CONFIG,
  tokenKey: deriveTokenKey('t'),
  encrypt: false,
  handshakeRetryMs: 250,
  reconnect: { enabled: true, minDelayMs: 100, maxDelayMs: 1000 },
});

function drain<T>(poll: () => T | undefined | null): T[] {
  const out: T[] = [];
  for (let x = poll(); x; x = poll()) out.push(x);
  return out;
}

test('client: HELLO is retransmitted exactly at its deadline, and the connect deadline fails at its own', () => {
  const c = new ClientEndpoint(clientCfg(), randomBytes);
  c.start(0, 2000);
  assert.equal(drain(() => c.pollTransmit(0)).length, 1);
  for (let i = 0; i < 3; i++) {
    const due = c.nextDeadline();
    assert.ok(due < 2000);
    c.handleTimeout(due - 1);
    assert.equal(c.pollTransmit(due - 1), null, 'nothing before the retry deadline');
    c.handleTimeout(due);
    const again = drain(() => c.pollTransmit(due));
    assert.equal(again.length, 1);
    assert.equal(decodeDatagram(again[0]!).type, 'hello');
  }
  const events = (): ClientEvent[] => drain(() => c.pollEvent());
  while (c.nextDeadline() < 2000) c.handleTimeout(c.nextDeadline());
  c.handleTimeout(1999);
  assert.deepEqual(
    events().filter((e) => e.type === 'failed'),
    [],
  );
  c.handleTimeout(2000);
  assert.deepEqual(
    events().find((e) => e.type === 'failed'),
    {
      type: 'failed',
      code: 'ERR_HANDSHAKE_TIMEOUT',
      message: 'no connection before the connect timeout: is the server running, reachable, and on this port?',
    },
  );
  assert.equal(c.state, 'closed');
});

/** Runs a client and a server against each other with a perfect zero-delay link. */
function connectPair(now: number) {
  const serverEvents: ServerEvent[] = [];
  const server = new ServerEndpoint(
    {
      ...DEFAULT_CONNECTION_CONFIG,
      tokenKey: deriveTokenKey('t'),
      maxClients: 10,
      sessionLingerMs: 500,
      encrypt: false,
      handshakesPerSecond: 0,
    },
    randomBytes,
    now,
  );
  const client = new ClientEndpoint(clientCfg(), randomBytes);
  const from = { address: '127.0.2.1', port: 5000 };
  const pump = (t: number, clientToServer = true, serverToClient = true): void => {
    for (let moved = true; moved; ) {
      moved = false;
      for (let d = client.pollTransmit(t); d; d = client.pollTransmit(t)) {
        moved = true;
        if (clientToServer) server.handleDatagram(d, from, t);
      }
      for (let d = server.pollTransmit(t); d; d = server.pollTransmit(t)) {
        moved = true;
        if (serverToClient) client.handleDatagram(d.bytes, t);
      }
      for (let e = server.pollEvent(); e; e = server.pollEvent()) serverEvents.push(e);
    }
  };
  client.start(now, Infinity);
  pump(now);
  return { server, client, pump, serverEvents };
}

test('client: after a lost connection the reconnect waits its backoff, not a millisecond less', () => {
  const { client, server, pump } = connectPair(0);
  assert.equal(client.state, 'connected');
  // Silence both ways until the client times out.
  let t = 0;
  while (client.state === 'connected') {
    t = client.nextDeadline();
    client.handleTimeout(t);
    server.handleTimeout(t);
    pump(t, false, false);
  }
  assert.equal(client.state, 'waiting');
  const due = client.nextDeadline();
  assert.ok(due > t && due <= t + 100, `equal jitter: between half and all of minDelayMs (${due - t})`);
  client.handleTimeout(due - 1);
  assert.equal(client.state, 'waiting');
  client.handleTimeout(due);
  assert.equal(client.state, 'handshake');
});

test('connection: a lone ack-eliciting packet is acknowledged exactly maxAckDelayMs later', () => {
  const k1 = new Uint8Array(32).fill(1);
  const k2 = new Uint8Array(32).fill(2);
  const mk = (send: Uint8Array, recv: Uint8Array) =>
    new Connection({
      localConnId: 1,
      remoteConnId: 1,
      cipher: new HmacPacketCipher(send, recv),
      config: DEFAULT_CONNECTION_CONFIG,
      now: 0,
    });
  const a = mk(k1, k2);
  const b = mk(k2, k1);
  a.send(new Uint8Array([1]), true);
  const d = a.pollTransmit(0)!;
  const h = decodeDatagram(d);
  if (h.type === 'data') b.handleDatagram(d, h.pnLow, 0);
  assert.equal(b.pollTransmit(0), null, 'the ACK waits');
  const due = b.nextDeadline();
  assert.equal(due, DEFAULT_CONNECTION_CONFIG.maxAckDelayMs);
  b.handleTimeout(due - 1);
  assert.equal(b.pollTransmit(due - 1), null);
  b.handleTimeout(due);
  assert.ok(b.pollTransmit(due), 'the ACK goes at its deadline');
});

test('connection: close() gives up on a silent peer exactly at closeTimeoutMs', () => {
  const c = new Connection({
    localConnId: 1,
    remoteConnId: 2,
    cipher: new HmacPacketCipher(new Uint8Array(32), new Uint8Array(32)),
    config: { ...DEFAULT_CONNECTION_CONFIG, closeTimeoutMs: 700 },
    now: 0,
  });
  c.close(0);
  drain(() => c.pollTransmit(0));
  c.handleTimeout(699);
  assert.equal(c.state, 'closing');
  c.handleTimeout(700);
  assert.equal(c.state, 'closed');
});

test('sessions: a parked session can be resumed until its linger deadline, not at it', () => {
  const store = new SessionStore(
    () => 10,
    () => 500,
  );
  store.park('a', { resumeSecret: SECRET, inbound: newInbound(1), outbound: [], outboundBase: 0, owesDrain: false }, 0);
  store.handleTimeout(499);
  assert.ok(store.take('a'));
  store.park('a', { resumeSecret: SECRET, inbound: newInbound(1), outbound: [], outboundBase: 0, owesDrain: false }, 0);
  assert.equal(store.nextDeadline(), 500);
  store.handleTimeout(500);
  assert.equal(store.take('a'), undefined);
});

test('sessions: the number parked is bounded; the oldest goes first', () => {
  const store = new SessionStore(
    () => 2,
    () => 500,
  );
  for (const k of ['a', 'b', 'c'])
    store.park(k, { resumeSecret: SECRET, inbound: newInbound(0), outbound: [], outboundBase: 0, owesDrain: false }, 0);
  assert.equal(store.parkedCount, 2);
  assert.equal(store.take('a'), undefined);
  assert.ok(store.take('c'));
});

test('client: an ACCEPT made for an earlier cookie of the same attempt is still accepted', async () => {
  const { encodeHandshake } = await import('../src/wire/handshake.js');
  const { serverProof } = await import('../src/crypto/handshake-keys.js');
  const c = new ClientEndpoint(clientCfg(), randomBytes);
  c.start(0, 10_000);
  const hello = decodeDatagram(c.pollTransmit(0)!);
  assert.equal(hello.type, 'hello');
  if (hello.type !== 'hello') return;
  const challenge = (cookie: number) =>
    encodeHandshake({
      type: 'challenge',
      clientConnId: hello.clientConnId,
      clientNonce: hello.clientNonce,
      cookie: new Uint8Array(16).fill(cookie),
    });
  c.handleDatagram(challenge(1), 1);
  const connect1 = decodeDatagram(c.pollTransmit(1)!);
  c.handleDatagram(challenge(2), 2); // the server's secret rotated between two HELLOs
  c.pollTransmit(2);
  assert.equal(connect1.type, 'connect');
  if (connect1.type !== 'connect') return;
  const claims = {
    serverConnId: 77,
    resumed: 0,
    delivered: connect1.nextSendIndex,
    flags: 0,
    publicKey: new EphemeralKey(new Uint8Array(32).fill(9)).publicKey,
    resetToken: new Uint8Array(16),
  };
  c.handleDatagram(
    encodeHandshake({
      type: 'accept',
      clientConnId: hello.clientConnId,
      clientNonce: hello.clientNonce,
      ...claims,
      proof: serverProof(deriveTokenKey('t'), connect1, claims),
    }),
    3,
  );
  assert.equal(c.state, 'connected');
});

test('keep-alive: a client whose timers run late still does the asking; the server asks only after two intervals of silence (measured: 80% of 10,000 idle connections had passed the asking to the server)', () => {
  const cfg = { ...DEFAULT_CONNECTION_CONFIG, pingIntervalMs: 1000, stallTimeoutMs: 3000, timeoutMs: 10_000 };
  for (const answerer of [true, false]) {
    const client = new KeepAlive(cfg, 0);
    const server = new KeepAlive(cfg, 0, answerer);
    const b = new PacketBuilder();
    /** One PING from `from`, answered at once: what the connections do with a ping deadline and the frames. */
    const exchange = (from: KeepAlive, to: KeepAlive, now: number) => {
      from.onTimeout(now);
      b.reset(100);
      from.fill(b, now);
      to.heard(now);
      to.onPing(1);
      from.heard(now);
    };
    const asked = { client: 0, server: 0 };
    // The client's timer fires 600 ms late every time (a process busy with thousands of connections).
    for (let now = 0; now <= 60_000; now += 10) {
      if (now >= client.pingAt + 600) {
        exchange(client, server, now);
        if (now > 10_000) asked.client++;
      } else if (now >= server.pingAt) {
        exchange(server, client, now);
        if (now > 10_000) asked.server++;
      }
    }
    if (answerer) {
      assert.equal(asked.server, 0, 'the server, an answerer, never asked');
      assert.ok(asked.client >= 30, `the client asked every 1.6 s (${asked.client})`);
    } else assert.ok(asked.server > asked.client, `without it the server takes the asking over (${JSON.stringify(asked)})`);
  }
});
