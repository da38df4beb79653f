/** The classic server's admission rules, sans-I/O (src/protocol/classic-admission.ts). */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { deriveTokenKey } from '../src/crypto/handshake-keys.js';
import { ClassicAdmission, MAX_CLASSIC_PENDING } from '../src/protocol/classic-admission.js';

const TOKEN = new TextEncoder().encode('classic token');
const modern = { open: 0, from: new Map<string, number>() };
const room = { openConnections: () => modern.open, connectionsFrom: (a: string) => modern.from.get(a) ?? 0 };

function admission(cfg = { maxClients: 3, maxClientsPerAddress: 2, handshakesPerSecond: 0 }) {
  modern.open = 0;
  modern.from.clear();
  return new ClassicAdmission(cfg, room, 'classic token');
}

test('classic room is shared with modern clients, in all and per address, and a client that leaves gives its room back', () => {
  const a = admission();
  assert.equal(a.hello(TOKEN, '10.0.0.1', false, () => 0, 0).type, 'accept');
  a.joined('10.0.0.1');
  a.joined('10.0.0.1');
  assert.equal(a.hello(TOKEN, '10.0.0.1', false, () => 0, 0).type, 'full', 'maxClientsPerAddress counts classic clients');
  assert.equal(a.hello(TOKEN, '10.0.0.2', false, () => 0, 0).type, 'accept');
  modern.open = 1;
  assert.equal(a.hello(TOKEN, '10.0.0.2', false, () => 0, 0).type, 'full', 'maxClients counts modern and classic together');
  assert.equal(a.hello(TOKEN, '10.0.0.2', true, () => 0, 0).type, 'accept', 'a repeated HELLO of a known client is answered');
  a.left('10.0.0.1');
  assert.equal(a.hello(TOKEN, '10.0.0.2', false, () => 0, 0).type, 'accept', 'the room came back');
  assert.deepEqual([a.total, [...a.perAddress]], [1, [['10.0.0.1', 1]]], 'the room it reserves for the modern endpoint');
  modern.from.set('10.0.0.1', 1);
  assert.equal(a.hello(TOKEN, '10.0.0.1', false, () => 0, 0).type, 'full', 'a modern client from the address counts too');
});

test('a bad token gets no reply and a bounded number of notices; pending handshakes and the HELLO rate are capped', () => {
  const a = admission({ maxClients: 100, maxClientsPerAddress: 100, handshakesPerSecond: 5 });
  const bad = new TextEncoder().encode('wrong');
  const notices = Array.from({ length: 50 }, () => a.hello(bad, '10.0.0.9', false, () => 0, 1000)).filter(
    (v) => v.type === 'bad-token' && v.notify,
  ).length;
  assert.equal(notices, 10, 'a burst of twice handshakesPerSecond notices, then none');
  assert.deepEqual(
    a.hello(TOKEN, '10.0.0.1', false, () => MAX_CLASSIC_PENDING, 1000),
    { type: 'dropped', why: 'pending' },
  );
  assert.equal(a.hello(TOKEN, '10.0.0.1', false, () => MAX_CLASSIC_PENDING - 1, 1000).type, 'accept');
  let answered = 1;
  for (let i = 0; i < 50; i++) if (a.hello(TOKEN, '10.0.0.1', true, () => 0, 1000).type === 'accept') answered++;
  assert.equal(answered, 10, 'HELLOs answered in a burst: twice handshakesPerSecond');
  assert.equal(a.hello(TOKEN, '10.0.0.1', true, () => 0, 2000).type, 'accept', 'the rate refills');
});

test('a new token (setToken) applies to the next HELLO', () => {
  const a = admission();
  a.retoken(deriveTokenKey('another token'));
  assert.equal(a.hello(TOKEN, '10.0.0.1', false, () => 0, 0).type, 'bad-token');
  assert.equal(a.hello(new TextEncoder().encode('another token'), '10.0.0.1', false, () => 0, 0).type, 'accept');
});
