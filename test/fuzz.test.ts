/**
 * Fuzzing a live server and client core (sans-I/O): real datagrams of a working
 * connection, mutated (bit flips, truncation, extension, splicing, replays, random
 * bytes) and thrown at both ends from the peer's address and from others, interleaved
 * with the real traffic. Nothing may throw, and the connection must still carry
 * messages afterwards. `npm test` runs a short campaign; `npm run fuzz` a long one
 * (FUZZ_RUNS, default 200 here in the test run).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { deriveTokenKey } from '../src/crypto/handshake-keys.js';
import { ClientEndpoint } from '../src/protocol/client.js';
import { DEFAULT_CONNECTION_CONFIG } from '../src/protocol/config.js';
import { ServerEndpoint } from '../src/protocol/server.js';
import { Rng } from '../src/testing/index.js';

const RUNS = Number(process.env.FUZZ_RUNS ?? 200);
const PEER = { address: '127.0.2.1', port: 5000 };

function livePair(seed: number, encrypt: boolean) {
  const rng = new Rng(seed);
  const randomBytes = (n: number) => rng.bytes(n);
  const key = deriveTokenKey('fuzz');
  const server = new ServerEndpoint(
    { ...DEFAULT_CONNECTION_CONFIG, tokenKey: key, maxClients: 8, sessionLingerMs: 5000, encrypt, handshakesPerSecond: 0 },
    randomBytes,
    0,
  );
  const client = new ClientEndpoint(
    {
      ...DEFAULT_CONNECTION_CONFIG,
      tokenKey: key,
      encrypt,
      handshakeRetryMs: 250,
      reconnect: { enabled: true, minDelayMs: 50, maxDelayMs: 500 },
    },
    randomBytes,
  );
  const seen: Uint8Array[] = [];
  const got: string[] = [];
  let now = 0;
  const pump = (): void => {
    for (let moved = true, rounds = 0; moved && rounds < 1000; rounds++) {
      moved = false;
      for (let d = client.pollTransmit(now); d; d = client.pollTransmit(now)) {
        moved = true;
        seen.push(d);
        server.handleDatagram(d, PEER, now);
      }
      for (let d = server.pollTransmit(now); d; d = server.pollTransmit(now)) {
        moved = true;
        seen.push(d.bytes);
        if (d.to.address === PEER.address && d.to.port === PEER.port) client.handleDatagram(d.bytes, now);
      }
      for (let e = server.pollEvent(); e; e = server.pollEvent()) {
        if (e.type === 'connection' && e.event.type === 'message') got.push(new TextDecoder().decode(e.event.data));
      }
      while (client.pollEvent()) {
        // client events are not needed here
      }
    }
  };
  const advance = (ms: number): void => {
    const end = now + ms;
    while (now < end) {
      now = Math.min(end, Math.max(now + 1, Math.min(client.nextDeadline(), server.nextDeadline())));
      client.handleTimeout(now);
      server.handleTimeout(now);
      pump();
    }
  };
  client.start(0, Infinity);
  pump();
  advance(50);
  return {
    server,
    client,
    seen,
    got,
    pump,
    advance,
    get now() {
      return now;
    },
  };
}

const mutation = fc.oneof(
  fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('extend' as const), extra: fc.uint8Array({ minLength: 1, maxLength: 64 }) }),
  fc.record({ kind: fc.constant('splice' as const), other: fc.nat(), at: fc.nat() }),
  fc.record({ kind: fc.constant('replay' as const) }),
  fc.record({ kind: fc.constant('random' as const), bytes: fc.uint8Array({ maxLength: 1500 }) }),
  fc.record({ kind: fc.constant('set' as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
);

type Mutation = typeof mutation extends fc.Arbitrary<infer T> ? T : never;

function mutate(seen: Uint8Array[], pick: number, m: Mutation): Uint8Array {
  const base = seen[pick % seen.length]!;
  switch (m.kind) {
    case 'flip': {
      const b = base.slice();
      if (b.length) b[m.at % b.length]! ^= 1 << m.bit;
      return b;
    }
    case 'truncate':
      return base.slice(0, base.length ? m.at % base.length : 0);
    case 'extend':
      return new Uint8Array([...base, ...m.extra]);
    case 'splice': {
      const other = seen[m.other % seen.length]!;
      const cut = base.length ? m.at % base.length : 0;
      return new Uint8Array([...base.subarray(0, cut), ...other.subarray(cut)]);
    }
    case 'replay':
      return base;
    case 'random':
      return m.bytes;
    case 'set': {
      const b = base.slice();
      if (b.length) b[m.at % b.length] = m.value;
      return b;
    }
  }
}

test(`fuzz: ${RUNS} campaigns of mutated and replayed datagrams against a live server and client, plain or encrypted`, () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 1_000_000 }),
      fc.boolean(),
      fc.array(fc.record({ pick: fc.nat(), m: mutation, toServer: fc.boolean(), fromPeer: fc.boolean() }), { minLength: 1, maxLength: 40 }),
      (seed, encrypt, attacks) => {
        const p = livePair(seed, encrypt);
        assert.equal(p.client.state, 'connected', 'the pair connected before the attack');
        p.client.send(new TextEncoder().encode('before'), true);
        p.advance(20);
        for (const a of attacks) {
          const bytes = mutate(p.seen, a.pick, a.m);
          const from = a.fromPeer ? PEER : { address: '198.51.100.7', port: 4444 };
          // Nothing thrown, whatever arrives (fast-check reports any exception with its input).
          if (a.toServer) p.server.handleDatagram(bytes, from, p.now);
          else p.client.handleDatagram(bytes, p.now);
          p.pump();
        }
        p.client.send(new TextEncoder().encode('after'), true);
        p.advance(3000);
        assert.deepEqual(p.got, ['before', 'after'], 'the connection still carries messages, once each and in order');
      },
    ),
    { numRuns: RUNS },
  );
});
