/**
 * Hostile traffic against the server core, sans-I/O (groundwork of the security issue):
 * spoofed HELLO floods leave no state, unvalidated addresses never get more bytes back
 * than they sent, and the token never appears on the wire.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import fc from 'fast-check';
import { deriveTokenKey } from '../src/crypto/handshake-keys.js';
import { DEFAULT_CONNECTION_CONFIG } from '../src/protocol/config.js';
import { ServerEndpoint } from '../src/protocol/server.js';
import { UDPipe } from '../src/index.js';
import { SimNetwork } from '../src/testing/index.js';
import { encodeHandshake } from '../src/wire/handshake.js';
import { HELLO_SIZE } from '../src/wire/constants.js';

const rnd = (n: number) => new Uint8Array(randomBytes(n));
const newServer = () =>
  new ServerEndpoint(
    {
      ...DEFAULT_CONNECTION_CONFIG,
      tokenKey: deriveTokenKey('secret'),
      maxClients: 100,
      sessionLingerMs: 60_000,
      encrypt: false,
      handshakesPerSecond: 50,
    },
    rnd,
    0,
  );

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

test('a million spoofed HELLOs from a million addresses leave no state and under 2 MB of heap', () => {
  const server = newServer();
  let hello = encodeHandshake({ type: 'hello', clientConnId: 1, clientNonce: new Uint8Array(16) });
  const before = server.stateSize();
  gc();
  const heap0 = process.memoryUsage().heapUsed;
  let replies = 0;
  let replyBytes = 0;
  for (let i = 0; i < 1_000_000; i++) {
    if (i % 1000 === 0) hello = encodeHandshake({ type: 'hello', clientConnId: i, clientNonce: rnd(16) });
    const from = { address: `10.${(i >> 16) & 0xff}.${(i >> 8) & 0xff}.${i & 0xff}`, port: 1024 + (i % 60_000) };
    server.handleDatagram(hello, from, i / 1000);
    for (let d = server.pollTransmit(i / 1000); d; d = server.pollTransmit(i / 1000)) {
      replies++;
      replyBytes += d.bytes.length;
    }
  }
  gc();
  const heapDelta = process.memoryUsage().heapUsed - heap0;
  assert.deepEqual(server.stateSize(), before, 'no peer, handshake, session, timer, queued reply or event');
  assert.equal(replies, 1_000_000, 'each got its stateless CHALLENGE');
  assert.ok(replyBytes <= 1_000_000 * HELLO_SIZE, 'never more bytes back than came in');
  assert.ok(heapDelta < 2 * 1024 * 1024, `heap grew by ${heapDelta} bytes`);
});

test('bytes sent to an unvalidated address never exceed bytes received from it, whatever arrives', () => {
  const datagram = fc.oneof(
    fc.record({ kind: fc.constant('hello' as const), conn: fc.nat(), nonce: fc.uint8Array({ minLength: 16, maxLength: 16 }) }),
    fc.record({
      kind: fc.constant('connect' as const),
      conn: fc.nat(),
      nonce: fc.uint8Array({ minLength: 16, maxLength: 16 }),
      cookie: fc.uint8Array({ minLength: 16, maxLength: 16 }),
    }),
    fc.record({ kind: fc.constant('garbage' as const), bytes: fc.uint8Array({ maxLength: 1400 }) }),
  );
  fc.assert(
    fc.property(
      fc.array(fc.record({ d: datagram, from: fc.integer({ min: 0, max: 7 }), dropReply: fc.boolean() }), { maxLength: 60 }),
      (events) => {
        const server = newServer();
        const inBytes = new Map<string, number>();
        const outBytes = new Map<string, number>();
        let t = 0;
        for (const { d, from } of events) {
          const addr = { address: `192.0.2.${from}`, port: 4000 + from };
          const key = `${addr.address}:${addr.port}`;
          const bytes =
            d.kind === 'hello'
              ? encodeHandshake({ type: 'hello', clientConnId: d.conn >>> 0, clientNonce: d.nonce })
              : d.kind === 'connect'
                ? encodeHandshake({
                    type: 'connect',
                    clientConnId: d.conn >>> 0,
                    clientNonce: d.nonce,
                    cookie: d.cookie,
                    sessionId: new Uint8Array(16),
                    nextSendIndex: 0,
                    delivered: 0,
                    flags: 0,
                    publicKey: new Uint8Array(32),
                    resumeProof: new Uint8Array(16),
                    proof: new Uint8Array(16),
                  })
                : d.bytes;
          inBytes.set(key, (inBytes.get(key) ?? 0) + bytes.length);
          server.handleDatagram(bytes, addr, (t += 7));
          for (let o = server.pollTransmit(t); o; o = server.pollTransmit(t)) {
            const k = `${o.to.address}:${o.to.port}`;
            outBytes.set(k, (outBytes.get(k) ?? 0) + o.bytes.length);
          }
        }
        for (const [k, n] of outBytes) assert.ok(n <= (inBytes.get(k) ?? 0), `${k}: ${n} bytes out for ${inBytes.get(k)} in`);
        assert.equal(server.stateSize().peers, 0, 'no forged CONNECT made a connection');
      },
    ),
    { numRuns: 300 },
  );
});

test('the token never travels: not in clear, hex or base64, in any datagram of a whole session', async () => {
  const token = 'correct horse battery staple';
  const net = new SimNetwork({ seed: 31, conditions: { latencyMs: 5, loss: 0.05 }, capture: true });
  const server = new UDPipe({ token, transport: net.transport('127.0.1.1') });
  await server.start(9000, '127.0.1.1');
  server.onNewMessage = function (m, sock) {
    this.send(m, sock);
  };
  const client = new UDPipe({
    token,
    transport: net.transport('127.0.2.1'),
    timeoutMs: 1000,
    stallTimeoutMs: 300,
    pingIntervalMs: 100,
    reconnect: { minDelayMs: 20, maxDelayMs: 100 },
  });
  void client.connect('127.0.1.1', 9000, 30);
  await net.advance(500);
  for (let i = 0; i < 20; i++) client.send(`message ${i}`);
  net.partition('127.0.1.1', '127.0.2.1', net.now + 100, net.now + 2000); // a reconnect, with its handshake
  await net.advance(6000);
  const closing = client.close();
  await net.advance(3000);
  await closing;
  const forms = [
    Buffer.from(token),
    Buffer.from(Buffer.from(token).toString('hex')),
    Buffer.from(Buffer.from(token).toString('base64')),
    Buffer.from(deriveTokenKey(token)),
  ];
  assert.ok(net.captured.length > 50, `captured ${net.captured.length} datagrams`);
  for (const d of net.captured)
    for (const f of forms) assert.equal(Buffer.from(d.bytes).indexOf(f), -1, 'the token (or its key) is in a datagram');
});
