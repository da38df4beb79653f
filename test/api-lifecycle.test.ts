/**
 * The life of a UDPipe around its failures, on the simulated network: a start() that
 * close() overtook, a connect() that failed before its handshake. Once closed, a
 * UDPipe stays closed and says so; close() always settles.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { UDPipe, UDPipeError } from '../src/index.js';
import { SimNetwork } from '../src/testing/index.js';
import { Pair } from './helpers/pair.js';

const code = (c: string) => (err: unknown) => err instanceof UDPipeError && err.code === c;

test('close() while start() is binding: the start fails and the UDPipe stays closed (no second start, send says ERR_CLOSED)', async () => {
  const net = new SimNetwork({ seed: 11 });
  const pipe = new UDPipe({ transport: net.transport('127.0.1.1') });
  const starting = pipe.start(9000);
  starting.catch(() => {});
  await pipe.close();
  await assert.rejects(starting, code('ERR_CLOSED'));
  assert.throws(() => pipe.send('x'), code('ERR_CLOSED'));
  await assert.rejects(pipe.start(9000), code('ERR_CLOSED'));
  await assert.rejects(pipe.connect('127.0.1.2', 9000), code('ERR_CLOSED'));
});

test('a connect() that failed before its handshake (unknown host): close() resolves, send() and ping() say ERR_CLOSED', async () => {
  const net = new SimNetwork({ seed: 12 });
  const pipe = new UDPipe({ transport: net.transport('127.0.2.1') });
  await assert.rejects(pipe.connect('no-such-host', 9000), code('ERR_RESOLVE'));
  let settled = false;
  void pipe.close().then(() => {
    settled = true;
  });
  await net.advanceUntil(() => settled, 1000);
  assert.ok(settled, 'close() settled');
  assert.throws(() => pipe.send('x'), code('ERR_CLOSED'));
  assert.throws(() => pipe.ping(), code('ERR_CLOSED'));
  await assert.rejects(pipe.connect('127.0.1.1', 9000), code('ERR_CLOSED'));
});

test('close() on a server that has closed already resolves at once, as often as it is called', async () => {
  const net = new SimNetwork({ seed: 13 });
  const pipe = new UDPipe({ transport: net.transport('127.0.1.1') });
  await pipe.start(9000);
  let settled = 0;
  const count = () => {
    settled++;
  };
  void pipe.close().then(count);
  await net.advanceUntil(() => settled === 1, 1000);
  void pipe.close().then(count);
  void pipe.close().then(count);
  await net.advanceUntil(() => settled === 3, 1000);
  assert.equal(settled, 3, 'every close() settled');
});

test('a client closed while it lingers after its server closed the connection reports closed once', () => {
  const p = new Pair(21, false);
  const c = p.client('127.0.2.1');
  c.ep.start(0, Infinity);
  p.run(200);
  assert.equal(c.ep.state, 'connected');
  p.server.close(p.now, p.connIdAt(c.at));
  p.run(10); // the client answered CLOSED and drains
  c.ep.close(p.now);
  p.run(3000);
  assert.equal(c.ep.state, 'closed');
  assert.equal(c.events.filter((e) => e === 'closed').length, 1, `events: ${c.events.join(' ')}`);
});
