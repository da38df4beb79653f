/**
 * Issue 10, guards 13 and 15: checks that worked in 0.1.0 but that no test protected
 * (each was removed as a one-line change and the whole suite still passed). Each test
 * here fails without its guard.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CookieJar } from '../src/crypto/handshake-keys.js';
import { ReliableSender, splitMessage } from '../src/reliability/sender.js';
import { MAX_RELIABLE_WHOLE, PART_SIZE } from '../src/wire/constants.js';

let counter = 0;
const counterBytes = (n: number) => new Uint8Array(n).fill(++counter & 0xff);

test('guard 13: on a quiet server a cookie dies after two rotation periods, whenever the jar is next asked', () => {
  for (const quiet of [2000, 2500, 5000, 1_000_000]) {
    const jar = new CookieJar(counterBytes, 0, 1000);
    const hello = { clientConnId: 7, clientNonce: new Uint8Array(16).fill(3) };
    const cookie = jar.make('127.0.0.1', 5000, hello, 0);
    // Nothing happens between making it and this check: several periods pass at once.
    assert.ok(!jar.check('127.0.0.1', 5000, { ...hello, cookie }, quiet), `still valid after ${quiet} ms of silence`);
  }
  // One period of silence keeps it (the previous secret): the bound is two periods, not one.
  const jar = new CookieJar(counterBytes, 0, 1000);
  const hello = { clientConnId: 7, clientNonce: new Uint8Array(16).fill(3) };
  const cookie = jar.make('127.0.0.1', 5000, hello, 0);
  assert.ok(jar.check('127.0.0.1', 5000, { ...hello, cookie }, 1999));
});

/** The units' bytes joined, and the number of units marked last. */
function rejoin(units: { data: Uint8Array; last: boolean | undefined }[]): { bytes: Buffer; lasts: number } {
  return { bytes: Buffer.concat(units.map((u) => u.data)), lasts: units.filter((u) => u.last === true).length };
}

test('guard 15: a message of exactly k x PART_SIZE bytes, carried to another connection, still ends in a last part', () => {
  for (const k of [2, 3, 5]) {
    const data = new Uint8Array(k * PART_SIZE).map((_, i) => i & 0xff);
    // Sent while there is no connection (the client's carry) or staged uncut when one ends.
    const units = splitMessage(data, MAX_RELIABLE_WHOLE, PART_SIZE, 1);
    assert.equal(units.length, k);
    assert.equal(units.at(-1)!.last, true, `the ${k}th part is the last`);
    assert.deepEqual(rejoin(units), { bytes: Buffer.from(data), lasts: 1 });
  }
});

test('guard 15: a message cut partly when its connection ended resumes with the rest in parts, the final one last', () => {
  for (const k of [2, 3]) {
    const sender = new ReliableSender();
    // One part goes out on the old connection (983 bytes fit a 1000-byte room), and
    // exactly k x PART_SIZE bytes are left when the connection ends.
    const first = 1000 - 17;
    const data = new Uint8Array(first + k * PART_SIZE).map((_, i) => (i * 7) & 0xff);
    sender.enqueueMessage(data, 2);
    const cut = sender.peek(1000)!;
    assert.equal(cut.data.length, first);
    sender.take(cut);
    const { units } = sender.takeAll();
    assert.equal(units.length, 1 + k);
    assert.equal(units.at(-1)!.last, true, 'the rest ends in a last part');
    assert.deepEqual(rejoin(units), { bytes: Buffer.from(data), lasts: 1 });
  }
});
