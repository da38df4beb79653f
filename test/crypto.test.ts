import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CookieJar, clientProof, deriveTokenKey, equalBytes, serverProof, sessionKeys } from '../src/crypto/handshake-keys.js';
import { HmacPacketCipher } from '../src/crypto/packet-cipher.js';
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
};

test('proofs depend on the token and on every field they cover; client and server proofs differ', () => {
  const k = deriveTokenKey('secret');
  const base = clientProof(k, t);
  assert.equal(base.length, 16);
  assert.ok(!equalBytes(base, clientProof(deriveTokenKey('secreT'), t)), 'another token');
  for (const change of [{ clientConnId: 9 }, { clientNonce: new Uint8Array(16) }, { cookie: new Uint8Array(16) }, { sessionId: new Uint8Array(16) }, { nextSendIndex: 50 }, { delivered: 60 }, { flags: 1 }, { publicKey: new Uint8Array(32) }]) {
    assert.ok(!equalBytes(base, clientProof(k, { ...t, ...change })), JSON.stringify(Object.keys(change)));
  }
  const a = { serverConnId: 7, resumed: 1, delivered: 8, flags: 1, publicKey: new Uint8Array(32).fill(8) };
  const s = serverProof(k, t, a);
  assert.ok(!equalBytes(s, base));
  for (const change of [{ serverConnId: 70 }, { resumed: 0 }, { delivered: 80 }, { flags: 0 }, { publicKey: new Uint8Array(32) }]) assert.ok(!equalBytes(s, serverProof(k, t, { ...a, ...change })));
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

test('packet integrity: a tag opens only with the other side\'s receive key; any bit flip is caught', () => {
  const keys = sessionKeys(deriveTokenKey('k'), t, 99);
  const client = new HmacPacketCipher(keys.clientToServer, keys.serverToClient);
  const server = new HmacPacketCipher(keys.serverToClient, keys.clientToServer);
  const p = new Uint8Array(40 + TAG_SIZE);
  p.fill(0x5a, 0, 40);
  client.seal(p, 40, 0);
  assert.deepEqual(server.open(p, 0), p.subarray(DATA_HEADER_SIZE, 40));
  assert.ok(!client.open(p, 0), 'not with the sender\'s own receive key');
  for (let i = 0; i < p.length * 8; i++) {
    const q = p.slice();
    q[i >> 3]! ^= 1 << (i & 7);
    assert.ok(!server.open(q, 0), `bit ${i}`);
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
