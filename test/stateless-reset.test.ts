/**
 * Issue 10, finding 11: a restarted server tells its old clients at once that their
 * connections are gone (a stateless reset, docs/PROTOCOL.md section 10a), instead of
 * leaving each to wait out its timeout. Sans-I/O endpoints in virtual time.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { deriveResetKey, resetToken } from '../src/crypto/handshake-keys.js';
import { RESET_TOKEN_SIZE } from '../src/wire/constants.js';
import { decodeDatagram, encodeReset } from '../src/wire/packet.js';
import { UDPipe, type UDPipeError } from '../src/index.js';
import { SimNetwork } from '../src/testing/index.js';
import { Pair } from './helpers/pair.js';

function connected(seed: number, encrypt: boolean) {
  const p = new Pair(seed, encrypt);
  const c = p.client('127.0.2.1');
  c.ep.start(0, Infinity);
  p.run(200);
  assert.equal(c.ep.state, 'connected');
  return { p, c };
}

for (const encrypt of [true, false]) {
  test(`finding 11 (${encrypt ? 'encrypted' : 'plaintext'}): after a server restart the client reconnects within a round trip or two, not after timeoutMs`, (t) => {
    const { p, c } = connected(11, encrypt);
    // The server process dies and a new one starts on the same port: it knows the token,
    // nothing else.
    p.server = p.newServer();
    const restartedAt = p.now;
    for (let i = 0; i < 10; i++) c.ep.send(Buffer.from(`after ${i}`), true);
    let back = Infinity;
    for (let ms = 0; ms < 3000 && back === Infinity; ms += 5) {
      p.run(5);
      if (c.ep.state === 'connected' && p.server.connIds().length === 1) back = p.now - restartedAt;
    }
    assert.ok(c.events.includes('ended:reset'), `the connection ended by a reset (${c.events.join(', ')})`);
    assert.ok(back < 200, `connected again ${back} ms after the restart (timeoutMs is 1500)`);
    t.diagnostic(`connected again ${back} ms after the restart (timeoutMs 1500, pings every 100 ms, reconnect.minDelayMs 20)`);
    assert.equal(p.server.counters.resetsSent >= 1, true);
    p.run(300);
    assert.deepEqual(
      p.atServer,
      Array.from({ length: 10 }, (_, i) => `after ${i}`),
      'what it sent meanwhile arrived, once',
    );
  });
}

test('a RESET with any other token is ignored (counted malformed), so nobody who lacks it can end a connection', () => {
  const { p, c } = connected(111, true);
  const before = c.ep.malformed;
  for (let i = 0; i < 100; i++) c.ep.handleDatagram(encodeReset(p.rng.bytes(RESET_TOKEN_SIZE)), p.now);
  // Nor the token of another connection id, made with the right key.
  c.ep.handleDatagram(encodeReset(resetToken(deriveResetKey(new Uint8Array(32)), 1)), p.now);
  assert.equal(c.ep.malformed, before + 101);
  assert.equal(c.ep.state, 'connected');
  assert.equal(c.ep.connection!.state, 'connected');
});

test('the reset token never travels in clear: not in any handshake datagram; a client reads it from ACCEPT only with its keys', () => {
  const p = new Pair(112, false);
  const seen: Uint8Array[] = [];
  p.tap = (bytes) => seen.push(bytes.slice());
  const c = p.client('127.0.2.1');
  c.ep.start(0, Infinity);
  p.run(200);
  const id = p.server.connIds()[0]!;
  // The server's default reset key comes from the token key.
  const token = Buffer.from(resetToken(deriveResetKey((p.server as unknown as { cfg: { tokenKey: Uint8Array } }).cfg.tokenKey), id));
  const accept = seen.find((b) => decodeDatagram(b).type === 'accept')!;
  assert.ok(accept);
  for (const b of seen) assert.ok(!Buffer.from(b).includes(token), 'the token is visible on the wire');
  // Yet a RESET with it ends the connection: the client unmasked it.
  c.ep.handleDatagram(encodeReset(token), p.now);
  assert.equal(c.ep.connection?.state ?? 'closed', 'closed');
});

test('resets are rate limited: a flood of DATA naming unknown connections gets at most the burst and then the rate', () => {
  const p = new Pair(113, true);
  const at = { address: '198.51.100.7', port: 4444 };
  const junk = new Uint8Array(60);
  junk[0] = 0xc1;
  junk[1] = 0x10;
  let resets = 0;
  const count = () => {
    for (let o = p.server.pollTransmit(p.now); o; o = p.server.pollTransmit(p.now)) {
      assert.ok(o.bytes.length < junk.length, 'smaller than what caused it');
      if (decodeDatagram(o.bytes).type === 'reset') resets++;
    }
  };
  for (let i = 0; i < 10_000; i++) {
    junk.set(p.rng.bytes(4), 2);
    p.inject(junk, at);
    count();
  }
  assert.equal(resets, 128, 'the burst');
  p.now += 1000;
  for (let i = 0; i < 10_000; i++) {
    junk.set(p.rng.bytes(4), 2);
    p.inject(junk, at);
    count();
  }
  assert.equal(resets, 128 + 64, 'then 64 per second');
  assert.equal(p.server.stateSize().peers, 0);
});

test("resetSecret: servers that share it reset each other's connections; a server with another secret cannot", () => {
  const secret = deriveResetKey('the servers keep this 32-char key');
  for (const [other, reset] of [
    [secret, true],
    [deriveResetKey('another secret, other servers..'), false],
  ] as const) {
    const p = new Pair(114, true);
    p.server = p.newServer({ resetKey: secret });
    const c = p.client('127.0.2.1');
    c.ep.start(0, Infinity);
    p.run(200);
    assert.equal(c.ep.state, 'connected');
    p.server = p.newServer({ resetKey: other });
    c.ep.send(Buffer.from('x'), true);
    p.run(400);
    assert.equal(c.events.includes('ended:reset'), reset, c.events.join(', '));
    assert.equal(p.server.counters.resetsSent > 0, true, 'the new server sent resets either way');
  }
});

test("a server cannot be used as an oracle for another server's tokens: same token, another port, another token", () => {
  const p = new Pair(115, true);
  p.server = p.newServer({ resetPort: 9000 });
  const c = p.client('127.0.2.1');
  c.ep.start(0, Infinity);
  p.run(200);
  // Someone who sees the client's packets sends one to a second server with the same
  // token on port 9001 and relays its RESET to the client.
  const other = p.newServer({ resetPort: 9001 });
  c.ep.send(Buffer.from('seen'), true);
  const packet = c.ep.pollTransmit(p.now)!;
  other.handleDatagram(packet, c.at, p.now);
  const reset = other.pollTransmit(p.now)!;
  assert.equal(decodeDatagram(reset.bytes).type, 'reset');
  const before = c.ep.malformed;
  c.ep.handleDatagram(reset.bytes, p.now);
  assert.equal(c.ep.malformed, before + 1);
  assert.equal(c.ep.connection!.state, 'connected');
});

test('resetSecret must be a string of at least 16 characters', () => {
  assert.throws(
    () => new UDPipe({ resetSecret: 'short' }),
    (e: UDPipeError) => e.code === 'ERR_INVALID_OPTION' && /resetSecret/.test(e.message),
  );
  assert.throws(
    () => new UDPipe({ resetSecret: 42 as unknown as string }),
    (e: UDPipeError) => e.code === 'ERR_INVALID_OPTION',
  );
  assert.doesNotThrow(() => new UDPipe({ resetSecret: 'a long random secret the servers keep' }));
});

test('through the API: a client of a server that died and came back hears onClose(sock, "reset") and reconnects at once', async () => {
  const S = '127.0.1.1';
  const C = '127.0.2.1';
  const T = { pingIntervalMs: 100, stallTimeoutMs: 1000, timeoutMs: 20_000, reconnect: { minDelayMs: 20, maxDelayMs: 200 } };
  const net = new SimNetwork({ seed: 116, conditions: { latencyMs: 5 } });
  const first = new UDPipe({ ...T, token: 'game', transport: net.transport(S) });
  await first.start(9000, S);
  const client = new UDPipe({ ...T, token: 'game', transport: net.transport(C) });
  const reasons: string[] = [];
  let connects = 0;
  client.onClose = (_sock, reason) => reasons.push(reason);
  client.onConnect = () => connects++;
  void client.connect(S, 9000);
  await net.advanceUntil(() => connects === 1, 1000);
  // The process dies: its goodbye never reaches the client. A new one starts on the port.
  const healed = net.now + 5500;
  net.partition(S, C, net.now, healed);
  let dead = false;
  void first.close().then(() => (dead = true));
  await net.advanceUntil(() => dead, 5400);
  assert.ok(dead);
  const second = new UDPipe({ ...T, token: 'game', transport: net.transport(S) });
  await second.start(9000, S);
  await net.advance(healed - net.now);
  const restarted = net.now;
  await net.advanceUntil(() => connects === 2, 6000);
  assert.deepEqual(reasons, ['reset']);
  assert.ok(net.now - restarted < 300, `reconnected ${net.now - restarted} ms after the partition healed (timeoutMs 20000)`);
  assert.equal((second.stats() as { resetsSent: number }).resetsSent >= 1, true);
  const closing = Promise.all([client.close(), second.close()]);
  await net.advance(6000);
  await closing;
});
