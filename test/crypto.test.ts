import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { test } from 'node:test';
import {
  CookieJar,
  clientProof,
  connectionKeys,
  deriveResetKey,
  deriveTokenKey,
  equalBytes,
  resetToken,
  resumeProof,
  serverProof,
} from '../src/crypto/handshake-keys.js';
import { PreparedHmacSha256, SMALL_MAC_LIMIT, tagEquals, writeTag } from '../src/crypto/hmac-sha256.js';
import { EphemeralKey } from '../src/crypto/key-exchange.js';
import { AeadPacketCipher, HmacPacketCipher } from '../src/crypto/packet-cipher.js';
import { REPLAY_WINDOW, ReplayWindow, SMALL_REPLAY_WINDOW } from '../src/reliability/replay-window.js';
import { DATA_HEADER_SIZE, TAG_SIZE } from '../src/wire/constants.js';

const counterBytes = (() => {
  let c = 0;
  return (n: number) => Uint8Array.from({ length: n }, () => c++ & 0xff);
})();

const t = {
  clientConnId: 1,
  clientNonce: new Uint8Array(16).fill(2),
  cookie: new Uint8Array(16).fill(3),
  sessionId: new Uint8Array(16).fill(4),
  nextSendIndex: 5,
  delivered: 6,
  flags: 0,
  publicKey: new Uint8Array(32).fill(7),
  resumeProof: new Uint8Array(16).fill(8),
};

/** One change to each field of CONNECT that every proof covers (the resume proof is added where it counts). */
const CONNECT_FIELD_CHANGES = [
  { clientConnId: 9 },
  { clientNonce: new Uint8Array(16) },
  { cookie: new Uint8Array(16) },
  { sessionId: new Uint8Array(16) },
  { nextSendIndex: 50 },
  { delivered: 60 },
  { flags: 1 },
  { publicKey: new Uint8Array(32) },
];

test('proofs depend on the token and on every field they cover; client and server proofs differ', () => {
  const k = deriveTokenKey('secret');
  const base = clientProof(k, t);
  assert.equal(base.length, 16);
  assert.ok(!equalBytes(base, clientProof(deriveTokenKey('secreT'), t)), 'another token');
  for (const change of [...CONNECT_FIELD_CHANGES, { resumeProof: new Uint8Array(16) }]) {
    assert.ok(!equalBytes(base, clientProof(k, { ...t, ...change })), JSON.stringify(Object.keys(change)));
  }
  const a = {
    serverConnId: 7,
    resumed: 1,
    delivered: 8,
    flags: 1,
    publicKey: new Uint8Array(32).fill(8),
    resetToken: new Uint8Array(16).fill(9),
  };
  const s = serverProof(k, t, a);
  assert.ok(!equalBytes(s, base));
  for (const change of [
    { serverConnId: 70 },
    { resumed: 0 },
    { delivered: 80 },
    { flags: 0 },
    { publicKey: new Uint8Array(32) },
    { resetToken: new Uint8Array(16) },
  ]) {
    assert.ok(!equalBytes(s, serverProof(k, t, { ...a, ...change })));
  }
});

test('resume proofs: keyed by the session secret, over every CONNECT field but themselves; the token does not enter', () => {
  const secret = new Uint8Array(32).fill(0x33);
  const base = resumeProof(secret, t);
  assert.equal(base.length, 16);
  const zeroed = { ...t, resumeProof: new Uint8Array(16) };
  assert.deepEqual(resumeProof(secret, zeroed), base, 'does not cover itself');
  assert.ok(!equalBytes(base, resumeProof(new Uint8Array(32).fill(0x34), t)), 'another secret');
  for (const change of CONNECT_FIELD_CHANGES) {
    assert.ok(!equalBytes(base, resumeProof(secret, { ...t, ...change })), JSON.stringify(Object.keys(change)));
  }
});

test('reset tokens: one per connection id, from the reset key alone (a restarted server makes the same)', () => {
  const key = deriveResetKey('a reset secret of the servers');
  assert.deepEqual(resetToken(key, 7), resetToken(deriveResetKey('a reset secret of the servers'), 7));
  assert.equal(resetToken(key, 7).length, 16);
  assert.ok(!equalBytes(resetToken(key, 7), resetToken(key, 8)));
  assert.ok(!equalBytes(resetToken(key, 7), resetToken(deriveResetKey('another secret, other servers'), 7)));
});

test('the token key never equals the token bytes, and an empty token still gives a key', () => {
  const k = deriveTokenKey('');
  assert.equal(k.length, 32);
  assert.ok(!equalBytes(deriveTokenKey('x'), k));
});

test('cookies: valid for one to two rotation periods, bound to address, port and nonce', () => {
  const jar = new CookieJar(counterBytes, 0, 1000);
  const hello = { clientConnId: 1, clientNonce: new Uint8Array(16).fill(9) };
  const cookie = jar.make('127.0.0.1', 5000, hello, 0);
  assert.ok(jar.check('127.0.0.1', 5000, { ...hello, cookie }, 10));
  assert.ok(!jar.check('127.0.0.2', 5000, { ...hello, cookie }, 10), 'another address');
  assert.ok(!jar.check('127.0.0.1', 5001, { ...hello, cookie }, 10), 'another port');
  assert.ok(!jar.check('127.0.0.1', 5000, { ...hello, clientNonce: new Uint8Array(16), cookie }, 10), 'another nonce');
  assert.ok(jar.check('127.0.0.1', 5000, { ...hello, cookie }, 1500), 'after one rotation');
  assert.ok(!jar.check('127.0.0.1', 5000, { ...hello, cookie }, 2600), 'after two');
});

test("packet integrity: a tag opens only with the other side's receive key; any bit flip is caught", () => {
  const a = new EphemeralKey(counterBytes(32));
  const b = new EphemeralKey(counterBytes(32));
  const keys = connectionKeys(deriveTokenKey('k'), a.agree(b.publicKey)!, t, 99, a.publicKey, b.publicKey);
  const client = new HmacPacketCipher(keys.clientToServer, keys.serverToClient);
  const server = new HmacPacketCipher(keys.serverToClient, keys.clientToServer);
  const p = new Uint8Array(40 + TAG_SIZE);
  p.fill(0x5a, 0, 40);
  client.seal(p, 40, 0);
  assert.deepEqual(server.open(p, 0), p.subarray(DATA_HEADER_SIZE, 40));
  assert.ok(!client.open(p, 0), "not with the sender's own receive key");
  // The full packet number is under the MAC though only 32 bits travel: a packet captured
  // long ago cannot pass as the same low bits 2^32 packets later.
  assert.equal(server.open(p, 2 ** 32), undefined);
  for (let i = 0; i < p.length * 8; i++) {
    const q = p.slice();
    q[i >> 3]! ^= 1 << (i & 7);
    assert.ok(!server.open(q, 0), `bit ${i}`);
  }
});

test('prepared HMAC-SHA256 matches RFC 4231 (test cases 1 to 4; the first 8 data bytes are its packet-number words)', () => {
  const hex = (h: Int32Array) => {
    const out = new Uint8Array(32);
    writeTag(h, out, 0, 32);
    return Buffer.from(out).toString('hex');
  };
  const cases: [Uint8Array, Uint8Array, string][] = [
    [new Uint8Array(20).fill(0x0b), Buffer.from('Hi There'), 'b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7'],
    [Buffer.from('Jefe'), Buffer.from('what do ya want for nothing?'), '5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843'],
    [new Uint8Array(20).fill(0xaa), new Uint8Array(50).fill(0xdd), '773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe'],
    [
      Uint8Array.from({ length: 25 }, (_, i) => i + 1),
      new Uint8Array(50).fill(0xcd),
      '82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b',
    ],
  ];
  for (const [key, data, want] of cases) {
    const d = Buffer.from(data);
    const rest = d.subarray(8);
    assert.equal(hex(new PreparedHmacSha256(key).mac(d.readInt32BE(0), d.readInt32BE(4), rest, rest.length)), want);
  }
});

test('prepared HMAC-SHA256 equals node:crypto at every length around the block edges, any packet number; tags compare exactly', () => {
  const key = counterBytes(32);
  const mac = new PreparedHmacSha256(key);
  const data = counterBytes(300);
  const pnBytes = Buffer.alloc(8);
  for (let len = 0; len <= 300; len++) {
    for (const pn of [0, 1, 2 ** 31, 2 ** 32 - 1, 2 ** 32 + 5, 2 ** 53 - 1]) {
      pnBytes.writeUInt32BE(Math.floor(pn / 2 ** 32), 0);
      pnBytes.writeUInt32BE(pn >>> 0, 4);
      const want = createHmac('sha256', key).update(pnBytes).update(data.subarray(0, len)).digest();
      const h = mac.mac(Math.floor(pn / 2 ** 32), pn | 0, data, len);
      const out = new Uint8Array(32);
      writeTag(h, out, 0, 32);
      assert.deepEqual(Buffer.from(out), want, `length ${len}, pn ${pn}`);
      assert.ok(tagEquals(h, want, 0, TAG_SIZE));
      for (const bit of [0, 31, 64, 127]) {
        const bad = Buffer.from(want);
        bad[bit >> 3]! ^= 1 << (bit & 7);
        assert.ok(!tagEquals(h, bad, 0, TAG_SIZE), `bit ${bit} of the tag`);
      }
    }
  }
});

test('HMAC packets seal and open the same whichever implementation computes the tag (below and above SMALL_MAC_LIMIT)', () => {
  const k1 = counterBytes(32);
  const k2 = counterBytes(32);
  const a = new HmacPacketCipher(k1, k2);
  const b = new HmacPacketCipher(k2, k1);
  for (const len of [DATA_HEADER_SIZE, SMALL_MAC_LIMIT - 1, SMALL_MAC_LIMIT, SMALL_MAC_LIMIT + 1, 1400]) {
    const p = new Uint8Array(len + TAG_SIZE);
    p.set(counterBytes(len));
    a.seal(p, len, 77);
    const pn = Buffer.alloc(8);
    pn.writeUInt32BE(77, 4);
    const want = createHmac('sha256', k1).update(pn).update(p.subarray(0, len)).digest().subarray(0, TAG_SIZE);
    assert.deepEqual(Buffer.from(p.subarray(len)), want, `tag at length ${len}`);
    assert.deepEqual(b.open(p, 77), p.subarray(DATA_HEADER_SIZE, len), `opens at length ${len}`);
    p[len - 1]! ^= 1;
    assert.equal(b.open(p, 77), undefined, `a flipped bit at length ${len}`);
  }
});

test('the DATA packet examples of docs/PROTOCOL.md section 4 are what both ciphers make, and they open', () => {
  const frames = '0100000001'; // PING, id 1
  const examples = [
    { cipher: (k: Uint8Array) => new HmacPacketCipher(k, k), tail: '0100000001' + '4151d7699908ad4d38c974510f1ce794' },
    { cipher: (k: Uint8Array) => new AeadPacketCipher(k, k), tail: '7b8c4a7534' + '8424bc88f461836f27573057a9feef36' },
  ];
  for (const { cipher, tail } of examples) {
    const c = cipher(new Uint8Array(32));
    const p = new Uint8Array(31);
    p.set(Buffer.from(`c1101122334400000005${frames}`, 'hex'));
    c.seal(p, 15, 5);
    assert.equal(Buffer.from(p).toString('hex'), `c1101122334400000005${tail}`);
    assert.equal(Buffer.from(c.open(p, 5)!).toString('hex'), frames);
  }
});

test('cookies: the age limit counts from when the secrets rotate, not from when we were last asked', () => {
  const jar = new CookieJar(counterBytes, 0, 1000);
  const hello = { clientConnId: 1, clientNonce: new Uint8Array(16).fill(9) };
  const cookie = jar.make('127.0.0.1', 5000, hello, 999); // made at the very end of period 0
  // Nobody asks until 1999 (period 1): still valid under the previous secret.
  assert.ok(jar.check('127.0.0.1', 5000, { ...hello, cookie }, 1999));
  // At 2000 period 2 begins: two rotations since it was made, so it is gone.
  assert.ok(!jar.check('127.0.0.1', 5000, { ...hello, cookie }, 2000));
});

test('X25519 matches RFC 7748, section 6.1 (keys from raw bytes, public key by the base point)', () => {
  const hex = (h: string) => Uint8Array.from(Buffer.from(h, 'hex'));
  const alice = new EphemeralKey(hex('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a'));
  const bob = new EphemeralKey(hex('5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb'));
  assert.equal(Buffer.from(alice.publicKey).toString('hex'), '8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a');
  assert.equal(Buffer.from(bob.publicKey).toString('hex'), 'de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f');
  const shared = '4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742';
  assert.equal(Buffer.from(alice.agree(bob.publicKey)!).toString('hex'), shared);
  assert.equal(Buffer.from(bob.agree(alice.publicKey)!).toString('hex'), shared);
});

test('X25519: both sides agree on a secret; unusable public keys give none instead of throwing', () => {
  const a = new EphemeralKey(counterBytes(32));
  const b = new EphemeralKey(counterBytes(32));
  assert.equal(a.publicKey.length, 32);
  assert.deepEqual(a.agree(b.publicKey), b.agree(a.publicKey));
  assert.deepEqual(
    new EphemeralKey(new Uint8Array(32).fill(1)).publicKey,
    new EphemeralKey(new Uint8Array(32).fill(1)).publicKey,
    'deterministic from its secret',
  );
  // Low-order points (RFC 7748 section 6.1): u = 0 and u = 1 give an all-zero secret.
  const one = new Uint8Array(32);
  one[0] = 1;
  for (const bad of [new Uint8Array(32), one, new Uint8Array(31), new Uint8Array(33)]) assert.equal(a.agree(bad), undefined);
});

test('connection keys: both sides derive the same keys, all four different; the token and every exchanged value matter', () => {
  const a = new EphemeralKey(counterBytes(32));
  const b = new EphemeralKey(counterBytes(32));
  const k = deriveTokenKey('tok');
  const shared = a.agree(b.publicKey)!;
  const keys = connectionKeys(k, shared, t, 5, a.publicKey, b.publicKey);
  assert.deepEqual(keys, connectionKeys(k, b.agree(a.publicKey)!, t, 5, a.publicKey, b.publicKey));
  const all = [keys.clientToServer, keys.serverToClient, keys.resume, keys.resetMask.subarray(0, 16)].map((x) =>
    Buffer.from(x).toString('hex'),
  );
  assert.equal(new Set(all.map((h) => h.slice(0, 32))).size, 4);
  assert.equal(keys.resetMask.length, 16);
  const other = [
    connectionKeys(deriveTokenKey('tok2'), shared, t, 5, a.publicKey, b.publicKey),
    connectionKeys(k, shared, { ...t, cookie: new Uint8Array(16) }, 5, a.publicKey, b.publicKey),
    connectionKeys(k, shared, t, 6, a.publicKey, b.publicKey),
    connectionKeys(k, shared, t, 5, b.publicKey, a.publicKey),
  ];
  for (const o of other) {
    assert.ok(!equalBytes(o.clientToServer, keys.clientToServer));
    assert.ok(!equalBytes(o.resume, keys.resume));
  }
});

test('AEAD packets: frames unreadable on the wire, open only with the right key and packet number, any bit flip caught', () => {
  const client = new AeadPacketCipher(new Uint8Array(32).fill(1), new Uint8Array(32).fill(2));
  const server = new AeadPacketCipher(new Uint8Array(32).fill(2), new Uint8Array(32).fill(1));
  const frames = new TextEncoder().encode('a secret message the path must not read');
  const p = new Uint8Array(DATA_HEADER_SIZE + frames.length + TAG_SIZE);
  p.fill(0xc1, 0, DATA_HEADER_SIZE);
  p.set(frames, DATA_HEADER_SIZE);
  client.seal(p, DATA_HEADER_SIZE + frames.length, 2 ** 40 + 3);
  assert.ok(!Buffer.from(p).includes(Buffer.from('secret')), 'encrypted');
  assert.deepEqual(p.subarray(0, DATA_HEADER_SIZE), new Uint8Array(DATA_HEADER_SIZE).fill(0xc1), 'header left readable');
  assert.deepEqual(new Uint8Array(server.open(p, 2 ** 40 + 3)!), frames);
  assert.equal(server.open(p, 3), undefined, 'another packet number (nonce)');
  assert.equal(client.open(p, 2 ** 40 + 3), undefined, "the sender's own receive key");
  for (let i = 0; i < p.length * 8; i++) {
    const q = p.slice();
    q[i >> 3]! ^= 1 << (i & 7);
    assert.equal(server.open(q, 2 ** 40 + 3), undefined, `bit ${i}`);
  }
  for (const n of [0, 1, DATA_HEADER_SIZE, DATA_HEADER_SIZE + TAG_SIZE - 1, p.length - 1])
    assert.equal(server.open(p.subarray(0, n), 2 ** 40 + 3), undefined, `truncated to ${n}`);
  // The same frames sealed under two packet numbers differ: the nonce changes the keystream.
  const p2 = new Uint8Array(p.length);
  p2.set(frames, DATA_HEADER_SIZE);
  client.seal(p2, DATA_HEADER_SIZE + frames.length, 2 ** 40 + 4);
  assert.ok(!equalBytes(p.subarray(DATA_HEADER_SIZE), p2.subarray(DATA_HEADER_SIZE)));
});

test('replay window: each number once; forgets nothing inside its size, refuses everything older', () => {
  const w = new ReplayWindow();
  assert.equal(w.windowSize, SMALL_REPLAY_WINDOW, 'a connection starts with the small window');
  assert.equal(w.rejects(0), false);
  w.record(0);
  assert.equal(w.rejects(0), true);
  for (const pn of [5, 3, 100, 4]) {
    assert.equal(w.rejects(pn), false, `${pn} first time`);
    w.record(pn);
    assert.equal(w.rejects(pn), true, `${pn} again`);
  }
  assert.equal(w.rejects(1), false, '1 is still missing and in the window');
  w.record(100 + SMALL_REPLAY_WINDOW - 1);
  assert.equal(w.rejects(100), true);
  assert.equal(w.rejects(101), false, 'slots reused by the move were cleared');
  w.record(10 * REPLAY_WINDOW);
  assert.equal(w.rejects(10 * REPLAY_WINDOW - 1), false, 'a jump past the whole window clears it');
  assert.equal(w.windowSize, SMALL_REPLAY_WINDOW, 'no packet came from deeper than the small window');
});

test('replay window: a packet older than the small window grows it, and growing lets no replay through', () => {
  const w = new ReplayWindow();
  const L = 10_000;
  for (const pn of [L - 3000, L - 200, L - 100]) w.record(pn);
  w.record(L);
  assert.equal(w.rejects(L - 300), true, 'older than the small window: refused');
  assert.equal(w.windowSize, REPLAY_WINDOW, 'and the window grew');
  assert.equal(w.rejects(L - 300), true, 'what the small window had forgotten stays refused');
  assert.equal(w.rejects(L - 3000), true, 'seen before growing, refused after');
  assert.equal(w.rejects(L - 200), true, 'seen within the small window: still taken');
  assert.equal(w.rejects(L - 150), false, 'unseen within the small window: still open');
  w.record(L + 1000);
  assert.equal(w.rejects(L + 1000 - 900), false, 'deep reordering after growing: taken once');
  w.record(L + 100);
  assert.equal(w.rejects(L + 100), true);
  assert.equal(w.rejects(L + 1000 - REPLAY_WINDOW), true, 'older than the large window: refused');
});

test('replay window against a set model over random traffic, through its growth', () => {
  const seen = new Set<number>();
  const m = new ReplayWindow();
  let size = SMALL_REPLAY_WINDOW;
  let forgottenUpTo = -1;
  let x = 7;
  for (let i = 0; i < 20_000; i++) {
    x = (x * 1103515245 + 12345) % 2 ** 31;
    // Mostly near the front; after a while, some from deep behind.
    const depth = i < 5000 ? x % 300 : x % 6000;
    const pn = Math.max(0, m.largest + 50 - depth);
    const tooOld = pn <= m.largest - size;
    const expected = seen.has(pn) || tooOld || pn <= forgottenUpTo;
    if (tooOld && size < REPLAY_WINDOW && pn > m.largest - REPLAY_WINDOW) {
      forgottenUpTo = m.largest - size;
      size = REPLAY_WINDOW;
    }
    assert.equal(m.rejects(pn), expected, `pn ${pn} at largest ${m.largest}`);
    assert.equal(m.windowSize, size);
    if (!expected) {
      m.record(pn);
      seen.add(pn);
    }
  }
  assert.equal(size, REPLAY_WINDOW, 'the run reached the growth');
});
