/**
 * Issue 10: attacks on the handshake by someone who knows the token and sees the
 * traffic (finding 3, guards 12 and 14), on the sans-I/O endpoints in virtual time.
 * Each test fails on 0.1.0's code, or without the guard it names.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Pair, type Client } from './helpers/pair.js';
import { PROOF_SIZE, PUBLIC_KEY_SIZE, RESET_TOKEN_SIZE } from '../src/wire/constants.js';
import { encodeHandshake, type ConnectPacket } from '../src/wire/handshake.js';
import { decodeDatagram } from '../src/wire/packet.js';

/** Every CONNECT on the wire, decoded, as an observer records them. */
function watchConnects(p: Pair): ConnectPacket[] {
  const connects: ConnectPacket[] = [];
  p.tap = (bytes) => {
    const d = decodeDatagram(bytes);
    if (d.type === 'connect') connects.push(d);
  };
  return connects;
}

/** A client that holds the token and starts a handshake naming someone else's session. */
function claimSession(p: Pair, host: string, sessionId: Uint8Array): Client {
  const attacker = p.client(host);
  (attacker.ep as unknown as { sessionId: Uint8Array }).sessionId = sessionId;
  attacker.ep.start(p.now, Infinity);
  return attacker;
}

for (const encrypt of [true, false]) {
  test(`finding 3 (${encrypt ? 'encrypted' : 'plaintext'}): a token holder who saw a CONNECT cannot take the session over from elsewhere`, () => {
    const p = new Pair(3, encrypt);
    const connects = watchConnects(p);
    const victim = p.client('127.0.2.1');
    victim.ep.start(0, Infinity);
    p.run(200);
    assert.equal(victim.ep.state, 'connected');
    const sessionId = connects[0]!.sessionId;
    // The victim goes quiet (a stall: its link is down); the server has 500 messages for it.
    victim.cut = true;
    const id = p.connIdAt(victim.at)!;
    for (let i = 0; i < 500; i++) p.server.send(id, Buffer.from(`secret ${i}`), true);
    p.run(100);
    // The attacker knows the token and the session id, and makes a handshake of its own naming that session.
    const attacker = claimSession(p, '127.0.3.1', sessionId);
    p.run(300);
    assert.equal(attacker.got.length, 0, `the attacker received ${attacker.got.length} of the victim's 500 messages`);
    assert.equal(p.server.connection(id)?.state, 'stalled', "the victim's connection is untouched (only stalled)");
    // The victim's link comes back before its timeout: it gets every message, once.
    victim.cut = false;
    p.run(1000);
    assert.equal(victim.got.length, 500, `${victim.got.length} of 500 reached the victim`);
    assert.deepEqual(victim.got.slice(0, 2), ['secret 0', 'secret 1']);
  });
}

test('finding 3: the owner still resumes its session after a reconnect; an attacker naming it afterwards does not', () => {
  const p = new Pair(33, true);
  const connects = watchConnects(p);
  const victim = p.client('127.0.2.1');
  victim.ep.start(0, Infinity);
  p.run(200);
  for (let i = 0; i < 20; i++) victim.ep.send(Buffer.from(`up ${i}`), true);
  victim.cut = true;
  p.run(1700); // the client gives up on the connection (timeoutMs 1500) and tries again
  victim.cut = false;
  p.run(500);
  assert.equal(victim.ep.state, 'connected');
  assert.ok(connects.length >= 2, 'it made a second handshake');
  assert.equal(p.atServer.length, 20, 'every message arrived once, over the resumed session');
  claimSession(p, '127.0.3.1', connects[0]!.sessionId);
  p.run(300);
  assert.equal(victim.ep.state, 'connected');
  assert.equal(p.server.connection(p.connIdAt(victim.at)!)?.state, 'connected', "the owner's connection was not ended");
});

test('a client that never got the ACCEPT of its first connection starts a session of its own; nothing it queued is lost', () => {
  const p = new Pair(31, true);
  const c = p.client('127.0.2.1');
  for (let i = 0; i < 30; i++) c.ep.send(Buffer.from(`q${i}`), true);
  // Every ACCEPT is lost until the client has given up on its first handshake and
  // begun another (new connection id and nonce, same session, still no secret).
  const ids = new Set<number>();
  p.tap = (bytes) => {
    const d = decodeDatagram(bytes);
    if (d.type === 'connect') ids.add(d.clientConnId);
  };
  p.pass = (bytes) => decodeDatagram(bytes).type !== 'accept' || ids.size > 1;
  c.ep.start(0, Infinity);
  p.run(6000);
  assert.ok(ids.size > 1, 'it made a second handshake');
  assert.equal(c.ep.state, 'connected');
  assert.ok(p.server.counters.resumesRefused >= 1, 'the server would not resume the session for a CONNECT without its proof');
  assert.ok(c.events.includes('refused'));
  assert.deepEqual(
    p.atServer,
    Array.from({ length: 30 }, (_, i) => `q${i}`),
    'every queued message, once, in order',
  );
});

test('guard 12: an ACCEPT forged by someone who saw HELLO and CHALLENGE is dropped; no queued message is lost', () => {
  const p = new Pair(12, true);
  const client = p.client('127.0.2.1');
  // Queued before any connection: the carry a forged "resumed, delivered = 50" would throw away.
  for (let i = 0; i < 50; i++) client.ep.send(Buffer.from(`m${i}`), true);
  let hello: { clientConnId: number; clientNonce: Uint8Array } | undefined;
  p.tap = (bytes) => {
    const d = decodeDatagram(bytes);
    if (d.type === 'hello') hello ??= d;
    // The forger answers the CONNECT before the server can: the server never hears it.
    if (d.type === 'connect') client.cut = true;
  };
  client.ep.start(0, Infinity);
  p.run(20);
  assert.ok(hello && client.cut, 'the client got a CHALLENGE and sent its CONNECT');
  const forged = encodeHandshake({
    type: 'accept',
    clientConnId: hello.clientConnId,
    clientNonce: hello.clientNonce,
    serverConnId: 0x1234,
    resumed: 1,
    delivered: 50,
    flags: 1,
    publicKey: p.rng.bytes(PUBLIC_KEY_SIZE),
    resetToken: p.rng.bytes(RESET_TOKEN_SIZE),
    proof: p.rng.bytes(PROOF_SIZE),
  });
  const before = client.ep.malformed;
  client.ep.handleDatagram(forged, p.now);
  assert.equal(client.ep.state, 'handshake', 'still in its handshake');
  assert.equal(client.ep.malformed, before + 1, 'counted as malformed');
  p.tap = () => {};
  client.cut = false;
  p.run(1000);
  assert.equal(client.ep.state, 'connected');
  assert.equal(p.atServer.length, 50, `${p.atServer.length} of 50 queued messages arrived`);
});

test('guard 14: a CONNECT replayed after its connection ended starts nothing and leaves the current connection alone', () => {
  const p = new Pair(14, true);
  const connects: Uint8Array[] = [];
  p.tap = (bytes) => {
    if (decodeDatagram(bytes).type === 'connect') connects.push(bytes);
  };
  // A client that closed for good: its first CONNECT, copied (a duplicate on the network
  // or an attacker who can send from its address), arrives again within the cookie's life.
  const gone = p.client('127.0.2.1');
  gone.ep.start(0, Infinity);
  p.run(200);
  gone.ep.close(p.now);
  p.run(1500); // the server lingers three probe timeouts after the CLOSE
  assert.equal(gone.ep.state, 'closed');
  assert.equal(p.server.stateSize().peers, 0);
  p.inject(connects[0]!, gone.at);
  assert.equal(p.server.stateSize().peers, 0, 'the replay started a connection');
  assert.equal(p.server.pollTransmit(p.now), null, 'and got no answer');
  // A client that reconnected: a replay of the CONNECT of its first, ended connection.
  const back = p.client('127.0.2.2');
  const first = connects.length;
  back.ep.start(p.now, Infinity);
  p.run(200);
  back.cut = true;
  p.run(1700);
  back.cut = false;
  p.run(500);
  assert.equal(back.ep.state, 'connected');
  const current = p.connIdAt(back.at)!;
  p.inject(connects[first]!, back.at);
  p.run(50);
  assert.equal(p.connIdAt(back.at), current, 'the current connection is still the one');
  assert.equal(p.server.connection(current)!.state, 'connected');
  assert.equal(p.server.stateSize().peers, 1, 'and no other was started');
});
