/**
 * Tests for one-line bugs that survived a hand mutation run (2026-12-04: 25 of 53
 * mutants killed in the areas an earlier review found weak; the closing note of that
 * stop lists the rest). Each test here fails on its mutant, named in the test.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { UDPipe, UDPipeError } from '../src/index.js';
import { PathMtu } from '../src/protocol/path-mtu.js';
import { RttEstimator } from '../src/reliability/rtt.js';

const code = (c: string) => (err: unknown) => err instanceof UDPipeError && err.code === c;

test('the probe timeout is srtt + max(4 x rttvar, granularity) + max ack delay (RFC 9002 6.2.1; mutant: 2 x rttvar)', () => {
  const rtt = new RttEstimator(100);
  rtt.update(40, 0); // first sample: srtt 40, rttvar 20
  assert.equal(rtt.pto(1, 25), 40 + 4 * 20 + 25);
  rtt.variance = 0.1;
  assert.equal(rtt.pto(1, 25), 40 + 1 + 25, 'the granularity floors the variance term');
});

test('maxClients may be 0 (refuse everyone) and maxClientsPerAddress may not (mutants: the ranges off by one)', () => {
  assert.doesNotThrow(() => new UDPipe({ maxClients: 0 }));
  assert.throws(() => new UDPipe({ maxClientsPerAddress: 0 }), code('ERR_INVALID_OPTION'));
  assert.doesNotThrow(() => new UDPipe({ maxClientsPerAddress: 1 }));
});

test('PathMtu: three large packets lost while a smaller one got through make a black hole, two do not (mutant: LARGE_LOSSES 1000)', () => {
  const m = new PathMtu(1472, 0);
  m.onProbeSent(1472);
  m.onProbeAcked(1472, 10);
  assert.equal(m.current, 1472);
  const window = 100;
  assert.equal(m.onLost(1472, 20, 200, window), false);
  m.onAcked(100, 30, 200); // a small packet sent after the first loss got through
  assert.equal(m.onLost(1472, 21, 200, window), false, 'two losses are not enough');
  assert.equal(m.onLost(1472, 22, 200, window), true, 'the third is');
  const n = new PathMtu(1472, 0);
  n.onProbeSent(1472);
  n.onProbeAcked(1472, 10);
  for (let i = 0; i < 5; i++) assert.equal(n.onLost(1472, 20 + i, 200, window), false, 'no smaller packet got through: an outage');
});
