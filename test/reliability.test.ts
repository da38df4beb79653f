import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { Deque, EMPTY_DEQUE } from '../src/reliability/deque.js';
import { RangeSet } from '../src/reliability/range-set.js';
import { StreamReceiver, RECEIVE_WINDOW, RECEIVE_WINDOW_BYTES, newReceiveState } from '../src/reliability/receiver.js';
import { ReliableSender, type OutMessage } from '../src/reliability/sender.js';
import { LossRecovery, type SentPacket } from '../src/reliability/loss-recovery.js';
import { RttEstimator } from '../src/reliability/rtt.js';
import { SentPackets } from '../src/reliability/sent-packets.js';
import { DeadlineHeap } from '../src/protocol/deadline-heap.js';
import { TimerTable } from '../src/protocol/timers.js';
import { UnreliableAssembler } from '../src/reliability/unreliable-assembler.js';

describe('RangeSet', () => {
  test('keeps disjoint descending ranges and reports duplicates', () => {
    const s = new RangeSet();
    for (const n of [5, 1, 2, 3, 9, 7, 8]) assert.equal(s.add(n), true);
    assert.equal(s.add(2), false);
    assert.deepEqual(s.ranges, [
      { lo: 7, hi: 9 },
      { lo: 5, hi: 5 },
      { lo: 1, hi: 3 },
    ]);
    s.add(4);
    s.add(6);
    assert.deepEqual(s.ranges, [{ lo: 1, hi: 9 }]);
    assert.equal(s.largest, 9);
  });

  test('matches a plain Set for any insertion order, within its range budget', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 300 }), { maxLength: 400 }), (xs) => {
        const s = new RangeSet(1000);
        const ref = new Set<number>();
        for (const x of xs) {
          assert.equal(s.add(x), !ref.has(x));
          ref.add(x);
        }
        for (let i = 0; i <= 300; i++) assert.equal(s.has(i), ref.has(i));
        for (let i = 1; i < s.ranges.length; i++) assert.ok(s.ranges[i]!.hi < s.ranges[i - 1]!.lo - 1);
      }),
    );
  });

  test('is bounded: the oldest ranges fold into a floor counted as seen', () => {
    const s = new RangeSet(4);
    for (let i = 0; i < 20; i += 2) s.add(i);
    assert.equal(s.ranges.length, 4);
    assert.ok(s.has(1), 'below the floor counts as seen (a very old packet is a duplicate)');
    assert.equal(s.has(17), false);
  });
});

describe('StreamReceiver', () => {
  const unit = (i: number, delta = 1, channel = 0) => ({
    data: new Uint8Array([i & 0xff, i >> 8]),
    last: undefined,
    channel,
    unordered: false,
    delta: i === 0 ? 0 : delta,
  });
  test('delivers one channel in order exactly once whatever the arrival order, across the 16-bit wrap', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 0xffff }),
        fc.array(fc.integer({ min: 0, max: 199 }), { minLength: 200, maxLength: 600 }),
        (start, order) => {
          const r = new StreamReceiver(start);
          const out: number[] = [];
          const all = [...order, ...Array.from({ length: 200 }, (_, i) => i)];
          for (const i of all) r.receive((start + i) & 0xffff, unit(i), { take: (u) => out.push(u.data[0]! | (u.data[1]! << 8)) > 0 });
          assert.deepEqual(
            out,
            Array.from({ length: 200 }, (_, i) => i),
          );
          assert.equal(r.buffered, 0);
        },
      ),
    );
  });

  test('channels are independent: a gap in one holds back only that one; unordered goes at once', () => {
    // Units 0..5: channel A = 0, 2, 4 (deltas 0, 2, 2), channel B = 1, 3 (deltas 0, 2), 5 unordered on A.
    const r = new StreamReceiver(0);
    const out: string[] = [];
    const give = (i: number, ch: string, delta: number, unordered = false) =>
      r.receive(
        i,
        { data: new Uint8Array([i]), last: undefined, channel: ch === 'A' ? 0 : 1, unordered, delta },
        { take: (u) => out.push(`${u.channel ? 'B' : 'A'}${u.data[0]}`) > 0 },
      );
    give(1, 'B', 0);
    give(3, 'B', 2);
    give(2, 'A', 2); // waits for unit 0
    give(5, 'A', 0, true);
    assert.deepEqual(out, ['B1', 'B3', 'A5'], 'B flows and the unordered one arrives while A waits for its first unit');
    give(0, 'A', 0);
    give(4, 'A', 2);
    assert.deepEqual(out, ['B1', 'B3', 'A5', 'A0', 'A2', 'A4']);
    assert.equal(give(2, 'A', 2), 'duplicate');
    assert.equal(give(5, 'A', 0, true), 'duplicate');
  });

  test('a resumed session skips what an earlier connection delivered', () => {
    const state = newReceiveState(10);
    state.above = new Set([12]); // delivered early on the last connection
    const r = new StreamReceiver(0, undefined, state);
    const out: number[] = [];
    for (const i of [0, 1, 2, 3])
      r.receive(
        i,
        { data: new Uint8Array([10 + i]), last: undefined, channel: 0, unordered: false, delta: i === 0 ? 0 : 1 },
        { take: (u) => out.push(u.data[0]!) > 0 },
      );
    assert.deepEqual(out, [10, 11, 13]);
    assert.equal(state.delivered, 14);
    assert.equal(state.above?.size ?? 0, 0);
  });

  test('refuses what lies beyond its window, so a peer cannot make it buffer more', () => {
    const r = new StreamReceiver(0);
    const u = { data: new Uint8Array(1), last: undefined, channel: 0, unordered: false, delta: 1 };
    assert.equal(r.receive(RECEIVE_WINDOW, u, { take: () => true }), 'out-of-window');
    assert.equal(r.receive(RECEIVE_WINDOW - 1, u, { take: () => true }), 'buffered');
    assert.equal(r.receive(0xffff, u, { take: () => true }), 'duplicate');
  });
});

describe('ReliableSender', () => {
  test('retransmits lost messages before new ones and forgets acknowledged ones', () => {
    const s = new ReliableSender(0xfffe);
    const a = s.enqueue(new Uint8Array([1]));
    const b = s.enqueue(new Uint8Array([2]));
    const c = s.enqueue(new Uint8Array([3]));
    assert.deepEqual([a.seq, b.seq, c.seq], [0xfffe, 0xffff, 0]);
    s.take(s.peek()!);
    s.take(s.peek()!);
    s.onLost(a);
    assert.equal(s.peek(), a, 'the lost message goes first');
    s.take(a);
    assert.equal(s.retransmissions, 1);
    s.onAcked(b);
    assert.equal(s.length, 3, 'a is still unacknowledged, so nothing is forgotten yet');
    s.onAcked(a);
    assert.equal(s.length, 1);
    assert.equal(s.peek(), c);
  });

  test('never sends beyond the receive window of the oldest unacknowledged message', () => {
    const s = new ReliableSender();
    for (let i = 0; i <= RECEIVE_WINDOW; i++) s.enqueue(new Uint8Array(1));
    for (let i = 0; i < RECEIVE_WINDOW; i++) s.take(s.peek()!);
    assert.equal(s.peek(), undefined, `message ${RECEIVE_WINDOW} waits until message 0 is acknowledged`);
  });

  test('a queued message is cut to fill the room of the packet being built', () => {
    const s = new ReliableSender();
    const big = new Uint8Array(100_000).map((_, i) => i & 0xff);
    s.enqueueMessage(big);
    s.enqueueMessage(new Uint8Array(500));
    assert.equal(s.length, 87 + 1, 'length counts base-size units until cut');
    const a = s.peek(60_000)!;
    assert.equal(a.last, false);
    assert.ok(a.data.length > 59_000 && a.data.length <= 60_000 - 9, `first part ${a.data.length} B`);
    s.take(a);
    assert.equal(s.peek(100), undefined, 'no part smaller than 256 bytes while more remains');
    const b = s.peek(65_000)!;
    assert.equal(b.last, true);
    assert.equal(a.data.length + b.data.length, big.length);
    s.take(b);
    assert.equal(s.peek(400), undefined, 'a small message is never cut: it waits for a packet with room');
    assert.equal(s.peek(1000)?.last, undefined);
    // Units are views of the message, in order.
    assert.deepEqual(new Uint8Array([...a.data, ...b.data]), big);
  });

  test('never has more than RECEIVE_WINDOW_BYTES of the stream past its oldest unacknowledged unit', () => {
    const s = new ReliableSender();
    for (let i = 0; i < 200; i++) s.enqueueMessage(new Uint8Array(60_000));
    const first = s.peek(65_000)!;
    let sent = 0;
    for (let m: OutMessage | undefined = first; m; m = s.peek(65_000)) {
      s.take(m);
      sent += m.data.length;
    }
    assert.ok(sent <= RECEIVE_WINDOW_BYTES && sent > RECEIVE_WINDOW_BYTES - 65_000, `${sent} bytes out`);
    s.onAcked(first);
    assert.ok(s.peek(65_000), 'the window moves on when the oldest unit is acknowledged');
  });

  test('takeAll hands over staged and partly cut messages as base-size units', () => {
    const s = new ReliableSender();
    s.enqueueMessage(new Uint8Array(5000));
    s.take(s.peek(2000)!);
    s.enqueueMessage(new Uint8Array(10));
    const { units, firstIndex } = s.takeAll();
    assert.equal(firstIndex, 0);
    assert.equal(
      units.reduce((n, u) => n + u.data.length, 0),
      5010,
    );
    assert.deepEqual(
      units.map((u) => u.last),
      [false, ...units.slice(1, -2).map(() => false), true, undefined],
    );
    assert.equal(s.length, 0);
    assert.equal(s.bytes, 0);
  });

  test('an acknowledged message queued for retransmission is skipped', () => {
    const s = new ReliableSender();
    const a = s.enqueue(new Uint8Array(1));
    s.take(s.peek()!);
    s.onLost(a);
    s.onAcked(a);
    assert.equal(s.peek(), undefined);
  });
});

describe('LossRecovery', () => {
  const pkt = (pn: number, sentAt: number): SentPacket => ({ pn, sentAt, size: 100, ackEliciting: true, messages: [] });

  test('persistent congestion: losses spanning three probe timeouts with nothing acknowledged between (RFC 9002 7.6)', () => {
    const lr = new LossRecovery(100, 10, 1000);
    let persistent = 0;
    const cb = { acked: () => {}, lost: () => {}, persistentCongestion: () => persistent++ };
    lr.onSent(pkt(0, 0));
    lr.onAck([{ lo: 0, hi: 0 }], 0, 20, cb); // RTT sample: 20 ms, so a PTO is about 70 ms
    for (let i = 1; i <= 10; i++) lr.onSent(pkt(i, 20 + i * 40)); // sent over 360 ms, all lost
    lr.onSent(pkt(11, 500));
    lr.onAck([{ lo: 11, hi: 11 }], 0, 520, cb);
    assert.equal(persistent, 1);
    const short = new LossRecovery(100, 10, 1000);
    let none = 0;
    short.onSent(pkt(0, 0));
    short.onAck([{ lo: 0, hi: 0 }], 0, 20, { ...cb, persistentCongestion: () => none++ });
    for (let i = 1; i <= 4; i++) short.onSent(pkt(i, 20 + i));
    short.onSent(pkt(5, 30));
    short.onAck([{ lo: 5, hi: 5 }], 0, 50, { ...cb, persistentCongestion: () => none++ });
    assert.equal(none, 0, 'a burst lost within a round trip is ordinary loss');
  });

  test("the probe timeout adds the peer's max ack delay only while one packet is in flight: with two, the peer acknowledges at once", () => {
    const lr = new LossRecovery(100, 10, 1000);
    const cb = { acked: () => {}, lost: () => {} };
    lr.onSent(pkt(0, 0));
    lr.onAck([{ lo: 0, hi: 0 }], 0, 2, cb); // first sample: srtt 2, rttvar 1, so 4 x rttvar = 4
    lr.onSent(pkt(1, 10));
    assert.equal(lr.deadline(), 10 + 2 + 4 + 10, 'one packet: the peer may hold its ACK for its max ack delay');
    lr.onSent(pkt(2, 11));
    assert.equal(lr.deadline(), 11 + 2 + 4, 'two: an ACK not back within the RTT and its variance is lost, or its packets are');
    lr.onAck([{ lo: 1, hi: 1 }], 0, 14, cb);
    assert.ok(lr.deadline() > 14 + 10, 'one again after an ACK: the delay counts again');
  });

  test("the peer's reported ack delay counts for at most its max_ack_delay (RFC 9002 5.3): a peer cannot hide a queue", () => {
    const lr = new LossRecovery(100, 10, 1000);
    const cb = { acked: () => {}, lost: () => {} };
    lr.onSent(pkt(0, 0));
    lr.onAck([{ lo: 0, hi: 0 }], 0, 10, cb); // min 10 ms
    // A queue builds: samples of 60 ms, each claimed as 50 ms of ack delay.
    for (let i = 1; i <= 20; i++) {
      lr.onSent(pkt(i, i * 100));
      lr.onAck([{ lo: i, hi: i }], 50, i * 100 + 60, cb);
    }
    assert.ok(lr.rtt.smoothed > 45, `the smoothed RTT shows the queue less 10 ms at most: ${lr.rtt.smoothed}`);
  });

  test('declares a packet lost three packets behind an acknowledged one (RFC 9002 6.1.1)', () => {
    const lr = new LossRecovery(100, 10, 1000);
    for (let i = 0; i < 5; i++) lr.onSent(pkt(i, 0));
    const lost: number[] = [];
    const acked: number[] = [];
    lr.onAck([{ lo: 3, hi: 3 }], 0, 1, { acked: (p) => acked.push(p.pn), lost: (p) => lost.push(p.pn) });
    assert.deepEqual(acked, [3]);
    assert.deepEqual(lost, [0], 'only packet 0 is 3 behind; 1 and 2 wait for the time threshold');
    assert.ok(lr.deadline() > 1 && lr.deadline() < Infinity);
  });

  test('probe timeout fires at its deadline, not a millisecond before, and backs off', () => {
    const lr = new LossRecovery(100, 10, 10_000);
    lr.onSent(pkt(0, 0));
    const d = lr.deadline();
    const cb = { acked: () => {}, lost: () => {} };
    assert.equal(lr.onTimeout(d - 1, cb), 'none');
    assert.equal(lr.onTimeout(d, cb), 'probe');
    assert.ok(lr.deadline() - d > d, 'the next probe waits twice as long');
  });

  test('RTT sample from the largest newly acknowledged packet', () => {
    const lr = new LossRecovery(100, 10, 1000);
    lr.onSent(pkt(0, 0));
    lr.onAck([{ lo: 0, hi: 0 }], 0, 40, { acked: () => {}, lost: () => {} });
    assert.equal(lr.rtt.smoothed, 40);
    assert.equal(lr.rtt.min, 40);
  });
});

test('RttEstimator follows RFC 6298/9002 smoothing and ignores ack delay below min', () => {
  const r = new RttEstimator(100);
  r.update(50, 0);
  assert.equal(r.smoothed, 50);
  assert.equal(r.variance, 25);
  r.update(90, 30);
  assert.equal(r.smoothed, 0.875 * 50 + 0.125 * 60);
  r.update(60, 30); // 60 - 30 < min 50: the delay is not subtracted
  assert.ok(Math.abs(r.smoothed - (0.875 * (0.875 * 50 + 0.125 * 60) + 0.125 * 60)) < 1e-9);
});

test('DeadlineHeap pops in deadline order and honours moves, deletes and slot reuse', () => {
  // Items up to 60 pass the arrays' first size (16); pops in between free slots for reuse.
  const op = fc.tuple(
    fc.constantFrom('set', 'set', 'delete', 'forget', 'pop'),
    fc.integer({ min: 0, max: 40 }),
    fc.integer({ min: 0, max: 1000 }),
  );
  fc.assert(
    fc.property(fc.array(op, { maxLength: 400 }), (ops) => {
      const h = new DeadlineHeap<number>();
      const ref = new Map<number, number>();
      for (const [kind, item, at] of ops) {
        if (kind === 'set') {
          h.set(item, at);
          ref.set(item, at);
        } else if (kind === 'delete') {
          h.delete(item);
          ref.delete(item);
        } else if (kind === 'forget') {
          h.set(item, Infinity);
          ref.delete(item);
        } else {
          const due = h.popDue(at);
          const want = [...ref].filter(([, t]) => t <= at);
          assert.deepEqual(
            [...due].sort((a, b) => a - b),
            want.map(([i]) => i).sort((a, b) => a - b),
          );
          for (let i = 1; i < due.length; i++) assert.ok(ref.get(due[i - 1]!)! <= ref.get(due[i]!)!, 'earliest first');
          for (const i of due) ref.delete(i);
        }
        assert.equal(h.size, ref.size);
        assert.equal(h.peek(), ref.size ? Math.min(...ref.values()) : Infinity);
      }
    }),
  );
});

test('DeadlineHeap: an entry moved into another subtree by a delete rises past larger parents', () => {
  // Heap [0, 100, 1, 101, 102, 2, 3]: deleting 101 puts 3 under 100, where it must rise,
  // or a pop up to 50 stops at 100 and misses it.
  const h = new DeadlineHeap<number>();
  for (const at of [0, 100, 1, 101, 102, 2, 3]) h.set(at, at);
  h.delete(101);
  for (const at of [103, 104, 105, 106]) h.set(at, at);
  assert.deepEqual(h.popDue(50), [0, 1, 2, 3]);
  assert.equal(h.peek(), 100);
});

test('SentPackets keeps packets in order through removals anywhere, finds them by number, and empties to nothing', () => {
  const op = fc.tuple(fc.constantFrom('push', 'push', 'remove', 'find', 'clear'), fc.nat(3000), fc.nat(40));
  fc.assert(
    fc.property(fc.array(op, { maxLength: 3000 }), (ops) => {
      const list = new SentPackets();
      const ref = new Map<number, SentPacket>(); // insertion order = pn order, as the list's
      let pn = 0;
      for (const [kind, n, gap] of ops) {
        if (kind === 'push') {
          pn += 1 + gap;
          const p = { pn, size: 1, sentAt: 0, ackEliciting: true, probe: false, messages: [] } as unknown as SentPacket;
          list.push(p);
          ref.set(pn, p);
        } else if (kind === 'remove' && ref.size > 0) {
          const want = [...ref.keys()][n % ref.size]!;
          const i = list.indexOf(want);
          assert.ok(i >= 0);
          assert.equal(list.at(i)!.pn, want);
          list.remove(i);
          ref.delete(want);
          assert.equal(list.indexOf(want), -1, 'gone once removed');
        } else if (kind === 'find') {
          assert.equal(list.indexOf(n) >= 0, ref.has(n));
        } else if (kind === 'clear') {
          assert.deepEqual(
            list.clear().map((p) => p.pn),
            [...ref.keys()],
          );
          ref.clear();
        }
        assert.equal(list.size, ref.size);
        const seen: number[] = [];
        for (let i = list.start; i < list.end; i++) {
          const p = list.at(i);
          if (p) seen.push(p.pn);
        }
        assert.deepEqual(seen, [...ref.keys()]);
        if (ref.size === 0) assert.equal(list.end, 0, 'an empty list holds no slots');
        else assert.ok(list.at(list.start) !== undefined, 'the front is trimmed');
      }
    }),
    { numRuns: 60 },
  );
});

test('TimerTable: a timer is due at its deadline, not before', () => {
  const t = new TimerTable<'a' | 'b'>();
  t.set('a', 100);
  t.set('b', 50);
  assert.equal(t.next(), 50);
  assert.equal(t.due('b', 49), false);
  assert.equal(t.due('b', 50), true);
  t.clear('b');
  assert.equal(t.next(), 100);
});

test('ReliableSender forgets the acknowledged prefix, but keeps unfinished messages whole for a session that starts over', () => {
  const s = new ReliableSender();
  s.enqueueMessage(new Uint8Array([0]));
  s.enqueueMessage(new Uint8Array(3000).fill(1));
  const sent: OutMessage[] = [];
  for (let m = s.peek(1300); m; m = s.peek(1300)) {
    s.take(m);
    sent.push(m);
  }
  assert.deepEqual(
    sent.map((m) => m.last),
    [undefined, false, false, true],
  );
  s.onAcked(sent[0]!);
  s.onAcked(sent[1]!);
  s.onAcked(sent[3]!);
  assert.equal(s.length, 2, 'the acknowledged prefix is forgotten; the part after the gap stays');
  const left = s.takeAll();
  assert.equal(left.firstIndex, 2);
  assert.deepEqual(
    left.units.map((u) => [u.last, u.first]),
    [
      [false, false],
      [true, false],
    ],
    'a resumed session gets the rest of the parts',
  );
  assert.deepEqual(
    left.whole.map((w) => w.data.length),
    [3000],
    'a session that starts over gets the unfinished message whole',
  );
  const t = new ReliableSender();
  t.enqueueMessage(new Uint8Array(10));
  const m = t.peek()!;
  t.take(m);
  t.onAcked(m);
  assert.deepEqual(t.takeAll().whole, [], 'once acknowledged with nothing before it, a message is not needed again');
});

test('ReliableSender: channels take turns, so a large message on one does not hold back another', () => {
  const s = new ReliableSender();
  s.enqueueMessage(new Uint8Array(100_000), 1);
  s.enqueueMessage(new Uint8Array(10), 0);
  const order: number[] = [];
  for (let m = s.peek(1200); m && order.length < 4; m = s.peek(1200)) {
    s.take(m);
    order.push(m.channel);
  }
  assert.ok(order.slice(0, 2).includes(0), `channel 0 goes within the first two units: ${order.join(',')}`);
  const deltas = new Map<number, number[]>();
  // Deltas point to the previous unit of the same channel.
  const t = new ReliableSender();
  t.enqueueMessage(new Uint8Array(3000), 1);
  t.enqueueMessage(new Uint8Array(10), 0);
  t.enqueueMessage(new Uint8Array(10), 0);
  for (let m = t.peek(1200); m; m = t.peek(1200)) {
    t.take(m);
    deltas.set(m.channel, [...(deltas.get(m.channel) ?? []), m.delta]);
  }
  assert.equal(deltas.get(0)![0], 0, 'first unit of a channel: no predecessor');
  assert.ok(
    deltas
      .get(1)!
      .slice(1)
      .every((d) => d >= 1),
  );
});

test('UnreliableAssembler: whole in any order, duplicates ignored, bounded against lies', () => {
  const u = new UnreliableAssembler(100, 150);
  const p = (b: number) => new Uint8Array([b, b]);
  assert.equal(u.add(1, 2, 3, p(2), 0), undefined);
  assert.equal(u.add(1, 0, 3, p(0), 0), undefined);
  assert.equal(u.add(1, 0, 3, p(9), 0), undefined, 'a duplicate part changes nothing');
  assert.deepEqual(u.add(1, 1, 3, p(1), 0), new Uint8Array([0, 0, 1, 1, 2, 2]));
  // The count may not change mid-message.
  u.add(2, 0, 3, p(0), 0);
  assert.equal(u.add(2, 1, 4, p(1), 0), undefined);
  assert.equal(u.rejected, 1);
  // A message may not grow past maxMessageSize, whatever count it claims.
  for (let i = 0; i < 60; i++) u.add(3, i, 1_000_000, p(i), 0);
  assert.equal(u.rejected, 2);
  // At most 32 unfinished messages: the oldest go first.
  const v = new UnreliableAssembler(1000, 1_000_000);
  for (let id = 0; id < 40; id++) v.add(id, 0, 2, p(id), 0);
  assert.equal(v.dropped, 8);
  assert.equal(v.add(0, 1, 2, p(0), 0), undefined, 'message 0 was given up');
  assert.deepEqual(v.add(39, 1, 2, p(1), 0), new Uint8Array([39, 39, 1, 1]));
  // Too old: given up at the next arrival.
  v.add(100, 0, 2, p(1), 0);
  v.add(101, 0, 2, p(1), 10_000);
  assert.equal(v.add(100, 1, 2, p(1), 10_000), undefined);
});

test('LossRecovery ignores an ACK of a packet never sent (it would declare everything lost)', () => {
  const lr = new LossRecovery(100, 10, 1000);
  const pkt = (pn: number): SentPacket => ({ pn, sentAt: 0, size: 100, ackEliciting: true, messages: [] });
  for (let i = 0; i < 5; i++) lr.onSent(pkt(i));
  const lost: number[] = [];
  assert.equal(lr.onAck([{ lo: 100, hi: 100 }], 0, 1, { acked: () => {}, lost: (p) => lost.push(p.pn) }), false);
  assert.deepEqual(lost, []);
  assert.equal(lr.largestAcked, -1);
});

test('UnreliableAssembler: a duplicate part near the size limit does not sink its message', () => {
  const u = new UnreliableAssembler(4, 100);
  u.add(1, 0, 2, new Uint8Array(2), 0);
  assert.equal(u.add(1, 0, 2, new Uint8Array(2), 0), undefined);
  assert.deepEqual(u.add(1, 1, 2, new Uint8Array(2), 0), new Uint8Array(4));
  assert.equal(u.rejected, 0);
});

test('ReassemblyBudget refuses past its limit, except to the oldest half-built message', async () => {
  const { ReassemblyBudget, UNIT_OVERHEAD_BYTES: O } = await import('../src/reliability/budget.js');
  const { ReliableAssembler } = await import('../src/reliability/reliable-assembler.js');
  const b = new ReassemblyBudget(1000 + 2 * O); // each part is charged its bytes and O
  const first = new ReliableAssembler(1 << 20, b);
  const second = new ReliableAssembler(1 << 20, b);
  assert.equal(first.add(new Uint8Array(600), false), undefined);
  assert.equal(second.add(new Uint8Array(300), false), undefined);
  assert.equal(second.add(new Uint8Array(300), false), 'refused', 'over the limit and not the oldest');
  assert.equal(first.add(new Uint8Array(600), false), undefined, 'the oldest may always grow: it will finish');
  assert.equal(b.used, 1500 + 3 * O);
  const done = first.add(new Uint8Array(10), true);
  assert.ok(done && done !== 'refused' && done.data.length === 1210);
  assert.equal(b.used, 300 + O, 'its bytes went back');
  assert.equal(second.add(new Uint8Array(300), true) !== 'refused', true, 'now the second one fits');
  assert.equal(b.used, 0);
  assert.equal(b.take(2000), false, 'no builder: plain refusal');
  assert.equal(b.refused, 2);
});

test('a message carried over without its first part stays headless across resumes and is never resent whole', () => {
  const msg = new Uint8Array(5000).map((_, i) => i & 0xff);
  const drain = (s: ReliableSender) => {
    const out: OutMessage[] = [];
    for (let m = s.peek(1200); m; m = s.peek(1200)) {
      s.take(m);
      out.push(m);
    }
    return out;
  };
  let s = new ReliableSender();
  s.enqueueMessage(msg);
  const sent = drain(s);
  s.onAcked(sent[0]!);
  s.onAcked(sent[1]!); // its head is acknowledged and forgotten; the connection dies
  let left = s.takeAll();
  for (let conn = 0; conn < 3; conn++) {
    assert.equal(left.units[0]!.first, false, `carry ${conn}: headless`);
    s = new ReliableSender();
    for (const u of left.units) s.enqueue(u.data, u.last, u.channel, u.unordered, u.first);
    drain(s); // nothing acknowledged this time
    left = s.takeAll();
  }
  assert.deepEqual(left.whole, [], 'never offered whole: the tail alone would be a truncated message');
});

test('a message carried over without its first part but with its whole data is offered whole after any number of resumes', () => {
  const msg = new Uint8Array(5000).map((_, i) => i & 0xff);
  let s = new ReliableSender();
  s.enqueueMessage(msg);
  const sent: OutMessage[] = [];
  for (let m = s.peek(1200); m; m = s.peek(1200)) {
    s.take(m);
    sent.push(m);
  }
  s.onAcked(sent[0]!);
  s.onAcked(sent[1]!);
  let left = s.takeAll();
  assert.ok(
    left.units.every((u) => u.message === msg),
    'each part carries its whole message',
  );
  for (let conn = 0; conn < 3; conn++) {
    assert.equal(left.units[0]!.first, false, `carry ${conn}: headless`);
    s = new ReliableSender();
    for (const u of left.units) s.enqueue(u.data, u.last, u.channel, u.unordered, u.first, u.message);
    left = s.takeAll();
  }
  // A session forgotten by the server (expired, or it gave way for memory) gets it whole.
  assert.deepEqual(
    left.whole.map((w) => w.data),
    [msg],
  );
});

describe('shared empty state (idle connections hold none of their own)', () => {
  test("EMPTY_DEQUE reads as empty and refuses a push, so no owner can put into it what would be everyone's", () => {
    assert.equal(EMPTY_DEQUE.length, 0);
    assert.equal(EMPTY_DEQUE.shift(), undefined);
    assert.deepEqual(EMPTY_DEQUE.clear(), []);
    assert.throws(() => (EMPTY_DEQUE as Deque<number>).push(1), /shared/);
    const own = new Deque<number>();
    own.push(1);
    own.push(2);
    assert.deepEqual([own.shift(), own.shift(), own.shift()], [1, 2, undefined]);
  });

  test('two senders sending, losing and retransmitting leave the shared deque empty and keep their own messages', () => {
    const a = new ReliableSender(0);
    const b = new ReliableSender(0);
    const ma = a.enqueue(new Uint8Array([1]));
    b.enqueue(new Uint8Array([2]));
    a.take(a.peek()!);
    a.onLost(ma);
    assert.equal(EMPTY_DEQUE.length, 0);
    assert.equal(a.peek(), ma, 'a retransmits its own');
    assert.equal(b.peek()?.data[0], 2, 'b is untouched');
  });
});
