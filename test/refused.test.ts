/**
 * REFUSED (docs/PROTOCOL.md, section 5): a receiver short of reassembly memory says so,
 * and its peer neither counts the packet as lost nor stops its other channels (issue
 * 10, finding 6). Two Connection objects back to back, a hand-driven clock.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ReassemblyBudget } from '../src/reliability/budget.js';
import { LossRecovery } from '../src/reliability/loss-recovery.js';
import { ReliableSender } from '../src/reliability/sender.js';
import { link, type End } from './helpers/link.js';

const messages = (e: End, channel: number) => e.events.filter((x) => x.type === 'message' && x.channel === channel);

test('parts refused for lack of memory: no packet counted lost, the window is not cut, other channels go on, and the message completes once memory frees', () => {
  // The receiver's budget (8 KiB share per session) is all but used by others, and an older half-built message
  // (someone else's) holds the right to pass the limit.
  const budget = new ReassemblyBudget(64 * 1024, 8 * 1024);
  const others = 64 * 1024 - 2000;
  assert.ok(budget.take(others));
  const olderBuilder = {};
  budget.startBuilding(olderBuilder);
  const l = link(budget);
  const { a, b } = l;
  l.run(50);
  const window = (a.conn.stats().congestion as { windowBytes: number }).windowBytes;
  a.conn.send(new Uint8Array(30_000).fill(7), true, 0);
  for (let i = 0; i < 20; i++) a.conn.send(new TextEncoder().encode(`small ${i}`), true, 1);
  l.run(2000);
  const sa = a.conn.stats();
  assert.ok(sa.refusedByPeer > 0, 'the receiver said REFUSED');
  assert.equal(sa.packetsLost, 0, 'and no packet was counted lost');
  assert.ok((sa.congestion as { windowBytes: number }).windowBytes >= window, 'the congestion window was not cut');
  assert.equal(messages(b, 1).length, 20, 'channel 1 went on while channel 0 waited');
  assert.equal(messages(b, 0).length, 0, 'the large message waits for memory');
  // REFUSED rides before the ACK, so the sender never declares the packet lost first.
  const both = a.frames.filter((f) => f.includes('refused') && f.includes('ack'));
  assert.ok(both.length > 0 && both.every((f) => f.indexOf('refused') < f.indexOf('ack')));
  // The others' memory comes back: the waiting parts go again and the message completes.
  budget.stopBuilding(olderBuilder);
  budget.give(others);
  l.run(3000);
  assert.equal(messages(b, 0).length, 1);
  assert.equal(a.conn.stats().packetsLost, 0);
});

test('LossRecovery.onRefused: out of flight without a loss; a refused packet counts as arrived for later loss detection', () => {
  const r = new LossRecovery(100, 10, 60_000);
  for (let pn = 0; pn < 5; pn++) r.onSent({ pn, sentAt: 0, size: 1000, ackEliciting: true, messages: [] });
  const p = r.onRefused(4);
  assert.equal(p?.pn, 4);
  assert.equal(r.onRefused(4), undefined, 'only once');
  assert.equal(r.bytesInFlight, 4000);
  assert.equal(r.lostPackets, 0);
  assert.equal(r.largestAcked, 4, 'packet 4 arrived');
  // An ACK of packet 3 alone: packets 0 and 1 are three or more below the largest that arrived.
  const lost: number[] = [];
  r.onAck([{ lo: 3, hi: 3 }], 0, 1, { acked: () => {}, lost: (q) => lost.push(q.pn) });
  assert.deepEqual(lost, [0, 1]);
});

test('ReliableSender.defer: a refused unit waits until its time, is not sent early by a probe timeout, and then goes first', () => {
  const s = new ReliableSender();
  s.enqueueMessage(new Uint8Array(100), 0);
  s.enqueueMessage(new Uint8Array(100), 0);
  const first = s.peek(1000)!;
  s.take(first);
  s.defer(first, 50);
  assert.equal(first.refusals, 1);
  assert.equal(s.requeueInFlight(), 0, 'a probe timeout leaves it waiting');
  assert.notEqual(s.peek(1000), first, 'the next unit goes meanwhile');
  s.releaseDeferred(49);
  assert.notEqual(s.peek(1000), first);
  assert.equal(s.deferredUntil, 50);
  s.releaseDeferred(50);
  assert.equal(s.peek(1000), first, 'then it goes again, before new units');
  assert.equal(s.deferredUntil, Infinity);
});

test('a lost REFUSED is sent again; the packet it named, by then declared lost, is simply sent again', () => {
  const budget = new ReassemblyBudget(16 * 1024, 4 * 1024);
  assert.ok(budget.take(16 * 1024 - 500));
  const older = {};
  budget.startBuilding(older);
  const l = link(budget);
  const { a, b } = l;
  l.run(50);
  a.conn.send(new Uint8Array(5000).fill(1), true, 0);
  let dropped = 0;
  l.run(1500, (types, to) => to === a && types.includes('refused') && dropped++ === 0);
  assert.ok(dropped > 1, 'the first packet with REFUSED was lost and more followed');
  const refusals = a.frames.flat().filter((t) => t === 'refused').length;
  assert.ok(refusals >= 1, 'REFUSED frames still reached the sender');
  assert.ok(a.conn.stats().packetsLost <= 1, `${a.conn.stats().packetsLost} packets counted lost: at most the one whose REFUSED was lost`);
  budget.stopBuilding(older);
  budget.give(16 * 1024 - 500);
  l.run(2000);
  assert.equal(messages(b, 0).length, 1);
  assert.equal(a.conn.stats().bytesInFlight, 0, 'nothing left waiting');
});
