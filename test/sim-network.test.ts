import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SimNetwork, type LinkConditions } from '../src/testing/index.js';
import type { Address } from '../src/index.js';

async function pair(
  net: SimNetwork,
): Promise<{ got: { t: number; bytes: Uint8Array; from: Address }[]; send: (b: Uint8Array) => void; port: number }> {
  const got: { t: number; bytes: Uint8Array; from: Address }[] = [];
  const rx = await net
    .transport('127.0.1.1')
    .bind(7000, undefined, { onDatagram: (bytes, from) => got.push({ t: net.now, bytes: bytes.slice(), from }), onError: () => {} });
  const tx = await net.transport('127.0.2.1').bind(0, undefined, { onDatagram: () => {}, onError: () => {} });
  return { got, send: (b) => tx.send(b, rx.local), port: tx.local.port };
}

async function blast(c: LinkConditions, seed = 1, n = 10_000) {
  const net = new SimNetwork({ seed, conditions: c, capture: true });
  const p = await pair(net);
  for (let i = 0; i < n; i++) p.send(new Uint8Array([i & 0xff, i >> 8]));
  net.run(10_000);
  return { net, ...p };
}

test('the same seed replays the same run; another seed does not', async () => {
  const c = { latencyMs: 5, jitterMs: 5, loss: 0.2, duplicate: 0.1, reorder: 0.1, corrupt: 0.05 };
  const a = await blast(c, 42, 500);
  const b = await blast(c, 42, 500);
  const d = await blast(c, 43, 500);
  const trace = (x: typeof a) => x.net.captured.map((e) => `${e.t}:${e.fate}:${e.bytes.join('.')}`).join('|');
  assert.equal(trace(a), trace(b));
  assert.notEqual(trace(a), trace(d));
});

test('latency is exact without jitter; loss, duplication and corruption happen at their rates', async () => {
  const exact = await blast({ latencyMs: 25 }, 1, 10);
  assert.ok(exact.got.every((g) => g.t === 25));
  const lossy = await blast({ loss: 0.3 });
  assert.ok(Math.abs(lossy.got.length / 10_000 - 0.7) < 0.03, `${lossy.got.length}`);
  const dup = await blast({ duplicate: 0.2 });
  assert.ok(Math.abs(dup.got.length / 10_000 - 1.2) < 0.03);
  const bad = await blast({ corrupt: 0.1 });
  assert.ok(Math.abs(bad.net.stats.corrupted / 10_000 - 0.1) < 0.02);
});

test('bursts lose datagrams in runs', async () => {
  const { net } = await blast({ burst: { enterProbability: 0.01, exitProbability: 0.2 } });
  const fates = net.captured.map((c) => c.fate);
  let longest = 0;
  for (let i = 0, run = 0; i < fates.length; i++) longest = Math.max(longest, (run = fates[i] === 'lost' ? run + 1 : 0));
  assert.ok(longest >= 5, `longest run ${longest}`);
});

test('a partition drops exactly what is sent inside its window', async () => {
  const net = new SimNetwork({ seed: 1 });
  const p = await pair(net);
  net.partition('127.0.1.1', '127.0.2.1', 100, 200);
  for (let t = 0; t < 300; t += 10) {
    p.send(new Uint8Array([t / 10]));
    net.run(10);
  }
  net.run(10);
  assert.deepEqual(
    p.got.map((g) => g.bytes[0]),
    [...Array(10).keys(), ...Array.from({ length: 10 }, (_, i) => 20 + i)],
  );
});

test('timers fire in time order, ties in insertion order, and cancel', () => {
  const net = new SimNetwork({ seed: 1 });
  const tr = net.transport('127.0.0.5');
  const out: string[] = [];
  tr.setTimer(20, () => out.push('b'));
  tr.setTimer(10, () => out.push('a'));
  tr.setTimer(20, () => out.push('c'));
  tr.setTimer(15, () => out.push('x')).cancel();
  net.run(19);
  assert.deepEqual(out, ['a']);
  net.run(1);
  assert.deepEqual(out, ['a', 'b', 'c']);
  assert.equal(net.now, 20);
});

test('bind errors name their cause; DNS knows localhost only', async () => {
  const net = new SimNetwork({ seed: 1 });
  const tr = net.transport('127.0.0.7');
  const hooks = { onDatagram: () => {}, onError: () => {} };
  await tr.bind(80, undefined, hooks);
  await assert.rejects(tr.bind(80, undefined, hooks), { code: 'EADDRINUSE' });
  await assert.rejects(tr.bind(81, '127.0.0.8', hooks), { code: 'EADDRNOTAVAIL' });
  assert.equal(await tr.resolve('localhost'), '127.0.0.1');
  await assert.rejects(tr.resolve('nowhere.example'), { code: 'ENOTFOUND' });
});

test('rebind: the sender is seen from a new port and replies to it arrive', async () => {
  const net = new SimNetwork({ seed: 1 });
  const p = await pair(net);
  p.send(new Uint8Array([1]));
  net.run(5);
  const newPort = net.rebind('127.0.2.1', p.port);
  p.send(new Uint8Array([2]));
  net.run(5);
  assert.deepEqual(
    p.got.map((g) => g.from.port),
    [p.port, newPort],
  );
});

test('an exception inside the simulation surfaces with the seed', () => {
  const net = new SimNetwork({ seed: 1234 });
  net.transport('127.0.0.9').setTimer(1, () => {
    throw new Error('boom');
  });
  assert.throws(() => net.run(5), /seed 1234.*boom/s);
});

test('advance lets promise continuations run between events', async () => {
  const net = new SimNetwork({ seed: 1 });
  const tr = net.transport('127.0.0.10');
  const order: string[] = [];
  tr.setTimer(1, () => {
    order.push('timer1');
    void Promise.resolve().then(() => order.push('continuation'));
  });
  tr.setTimer(1, () => order.push('timer2'));
  await net.advance(2);
  assert.deepEqual(order, ['timer1', 'continuation', 'timer2']);
});

test('dropNext drops exactly the next n datagrams of one direction, whenever they are sent', async () => {
  const net = new SimNetwork({ seed: 5, conditions: { latencyMs: 1 } });
  const p = await pair(net);
  net.dropNext('127.0.2.1', '127.0.1.1', 3);
  net.dropNext('127.0.1.1', '127.0.2.1', 100); // the other direction: not these
  for (let i = 0; i < 5; i++) {
    p.send(new Uint8Array([i]));
    net.run(50);
  }
  assert.deepEqual(
    p.got.map((g) => g.bytes[0]),
    [3, 4],
  );
});
