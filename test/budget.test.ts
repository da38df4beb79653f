/**
 * The shared reassembly budget and the parked sessions that hold part of it
 * (src/reliability/budget.ts, src/protocol/sessions.ts): half-built messages of a
 * session whose connection is gone cannot grow, so they neither keep the oldest
 * builder's right to pass the limit nor keep a live connection out.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { newInbound, releaseInbound, type InboundSession } from '../src/protocol/connection/connection.js';
import { SessionStore } from '../src/protocol/sessions.js';
import { IDLE_BUILDER_MS, ReassemblyBudget, SessionBudget, UNIT_OVERHEAD_BYTES } from '../src/reliability/budget.js';
import { StreamReceiver } from '../src/reliability/receiver.js';
import { ReliableAssembler } from '../src/reliability/reliable-assembler.js';
import { UnreliableAssembler } from '../src/reliability/unreliable-assembler.js';

const KiB = 1024;
const part = (n: number) => new Uint8Array(n);

/** A session with a half-built message on channel 0 of `bytes` (in parts of 1 KiB). */
function halfBuilt(budget: ReassemblyBudget, bytes: number): { inbound: InboundSession; a: ReliableAssembler } {
  const inbound = newInbound();
  const a = new ReliableAssembler(1 << 20, budget);
  for (let at = 0; at < bytes; at += KiB) assert.equal(a.add(part(KiB), false), undefined);
  inbound.assemblers = new Map([[0, a]]);
  return { inbound, a };
}

function store(budget: ReassemblyBudget): SessionStore {
  const s = new SessionStore(
    () => 16,
    () => 60_000,
    (p) => releaseInbound(p.inbound),
  );
  s.share(budget);
  return s;
}

const parked = (inbound: InboundSession) => ({
  resumeSecret: '\0'.repeat(32),
  inbound,
  outbound: [],
  outboundBase: 0,
  owesDrain: false,
});

test('budget: a request that does not fit asks reclaim for the shortfall, and is taken once room is made', () => {
  const b = new ReassemblyBudget(100);
  const asked: number[] = [];
  let room = 0;
  b.reclaim = (n) => {
    asked.push(n);
    if (room < n) return false;
    b.give(room);
    return true;
  };
  assert.ok(b.take(80));
  assert.deepEqual(asked, [], 'a request that fits asks nothing');
  assert.equal(b.take(30), false);
  assert.deepEqual(asked, [10]);
  assert.equal(b.refused, 1);
  room = 40;
  assert.ok(b.take(30));
  assert.equal(b.used, 70);
  // A reclaim that says yes without making room does not let a request past the limit.
  b.reclaim = () => true;
  assert.equal(b.take(31), false);
  assert.equal(b.used, 70);
  // An unreliable part does not ask (its message may be lost; a session is worth more).
  let asks = 0;
  b.reclaim = () => (asks++, false);
  assert.equal(b.take(31, undefined, true), false);
  assert.equal(asks, 0);
  assert.equal(b.take(31), false);
  assert.equal(asks, 1);
});

test('budget: only a builder that may grow has the right to pass the limit; one put back comes last', () => {
  const b = new ReassemblyBudget(10);
  const [x, y] = [{}, {}];
  b.startBuilding(x);
  b.startBuilding(y);
  assert.ok(b.take(10));
  assert.equal(b.take(1, y), false, 'not the oldest');
  assert.ok(b.take(1, x), 'the oldest may grow');
  b.stopBuilding(x); // its connection is gone
  assert.equal(b.take(1, x), false);
  assert.ok(b.take(1, y), 'the next oldest has the right now');
  b.startBuilding(x); // back: after y
  assert.equal(b.take(1, x), false);
  assert.ok(b.take(1, y));
});

test('sessions: a parked half-built message is not the oldest builder; it is again, last, once resumed', () => {
  const b = new ReassemblyBudget(16 * KiB);
  const s = store(b);
  const old = halfBuilt(b, 4 * KiB);
  const live = halfBuilt(b, 3 * KiB);
  assert.ok(b.take(b.limit - b.used)); // at the limit
  // Parts larger than what the parked session holds: forgetting it would not make room.
  assert.equal(live.a.add(part(8 * KiB), false), 'refused', 'the older message has the right');
  s.park('old', parked(old.inbound), 0);
  assert.equal(live.a.add(part(8 * KiB), false), undefined, 'the live one has it once the other is parked');
  assert.ok(s.take('old'));
  assert.equal(old.a.add(part(8 * KiB), false), 'refused', 'resumed, it comes after the live one');
  const done = live.a.add(part(KiB), true);
  assert.ok(done && done !== 'refused' && done.data.length === 12 * KiB, 'the live one finishes');
  assert.equal(old.a.add(part(8 * KiB), false), undefined, 'and the resumed one has the right');
  assert.equal(s.evicted, 0);
});

test('sessions: under pressure parked sessions give way, the one holding most first, only as many as needed', () => {
  const b = new ReassemblyBudget(64 * KiB);
  const s = store(b);
  const small = halfBuilt(b, 4 * KiB);
  const large = halfBuilt(b, 20 * KiB);
  const medium = halfBuilt(b, 10 * KiB);
  s.park('small', parked(small.inbound), 0);
  s.park('large', parked(large.inbound), 0);
  s.park('medium', parked(medium.inbound), 0);
  s.park('empty', parked(newInbound()), 0);
  const live = halfBuilt(b, 16 * KiB);
  const other = new ReliableAssembler(1 << 20, b);
  const held = b.used;
  assert.equal(held, 50 * KiB + 50 * UNIT_OVERHEAD_BYTES);
  // Up to the limit nobody is forgotten.
  while (b.used + KiB + UNIT_OVERHEAD_BYTES <= b.limit) assert.equal(live.a.add(part(KiB), false), undefined);
  assert.equal(s.evicted, 0);
  assert.equal(s.parkedCount, 4);
  // A live connection needs room: the largest parked session goes, and no other.
  assert.equal(other.add(part(KiB), false), undefined);
  assert.equal(s.evicted, 1);
  assert.equal(s.take('large'), undefined, 'forgotten: its client starts a new session');
  assert.equal(s.parkedCount, 3);
  assert.equal(large.a.building, false);
  assert.ok(b.used <= b.limit);
  // Fill again: then medium, then small.
  while (b.used + KiB + UNIT_OVERHEAD_BYTES <= b.limit) live.a.add(part(KiB), false);
  assert.equal(other.add(part(KiB), false), undefined);
  assert.equal(s.evicted, 2);
  assert.equal(s.take('medium'), undefined);
  assert.ok(s.take('small'), 'the smallest one stays');
  s.park('small', parked(small.inbound), 0);
  assert.ok(b.used <= b.limit);
  assert.equal(b.refused, 0);
});

test('sessions: parked sessions that cannot make enough room together are all kept', () => {
  const b = new ReassemblyBudget(32 * KiB);
  const s = store(b);
  const p = halfBuilt(b, 2 * KiB);
  s.park('p', parked(p.inbound), 0);
  // A live connection holds the rest; it asks for more than the parked one holds.
  assert.ok(b.take(b.limit - b.used));
  const live = new ReliableAssembler(1 << 20, b);
  const later = new ReliableAssembler(1 << 20, b);
  b.startBuilding(later); // an older live builder: `live` is not exempt
  assert.equal(live.add(part(4 * KiB), false), 'refused');
  assert.equal(s.evicted, 0);
  assert.equal(s.parkedCount, 1);
  assert.equal(p.a.building, true);
  // One that the parked session's bytes do cover gets them.
  assert.equal(live.add(part(KiB), false), undefined);
  assert.equal(s.evicted, 1);
  assert.equal(s.parkedCount, 0);
});

test('sessions: an unreliable part does not make a parked session give way; a reliable one does', () => {
  const b = new ReassemblyBudget(16 * KiB);
  const s = store(b);
  const p = halfBuilt(b, 4 * KiB);
  s.park('p', parked(p.inbound), 0);
  assert.ok(b.take(b.limit - b.used));
  const u = new UnreliableAssembler(1 << 20, 1 << 20, b);
  assert.equal(u.add(1, 0, 2, part(KiB), 0), undefined);
  assert.equal(u.dropped, 1, 'dropped, as an unreliable message may be');
  assert.equal(s.evicted, 0);
  assert.equal(new ReliableAssembler(1 << 20, b).add(part(KiB), false), undefined);
  assert.equal(s.evicted, 1);
});

test('sessions: what a forgotten session held all comes back, counting its units done out of order', () => {
  const b = new ReassemblyBudget(16 * KiB);
  const s = store(b);
  const p = halfBuilt(b, 3 * KiB);
  // Two units done out of order: their entries are charged too (StreamReceiver does this).
  p.inbound.state.above = new Set([7, 9]);
  p.inbound.state.budget = b;
  assert.ok(b.take(2 * UNIT_OVERHEAD_BYTES));
  s.park('p', parked(p.inbound), 0);
  const rest = b.limit - b.used;
  assert.ok(b.take(rest));
  assert.ok(b.take(3 * KiB + 3 * UNIT_OVERHEAD_BYTES + 2 * UNIT_OVERHEAD_BYTES), 'exactly what it held');
  assert.equal(s.evicted, 1);
  assert.equal(b.used, b.limit);
  // Expiry after eviction finds nothing to give back twice.
  s.handleTimeout(120_000);
  assert.equal(b.used, b.limit);
});

test('session share: a session may hold sessionShare past the limit for whole messages only, counted per session', () => {
  const budget = new ReassemblyBudget(10 * KiB, 2 * KiB);
  assert.ok(budget.take(10 * KiB)); // full
  const one = new SessionBudget(budget);
  const two = new SessionBudget(budget);
  assert.ok(!one.take(KiB), 'a part (not small) gets no share');
  assert.ok(one.take(KiB, undefined, false, true), 'a whole message does');
  assert.ok(one.take(KiB, undefined, false, true));
  assert.ok(!one.take(1, undefined, false, true), 'up to the share, no more');
  assert.ok(two.take(2 * KiB, undefined, false, true), 'another session has its own');
  assert.equal(one.held, 2 * KiB);
  one.give(2 * KiB);
  assert.equal(one.held, 0);
  assert.ok(one.take(KiB, undefined, false, true), 'given back, usable again');
  assert.equal(budget.used, 10 * KiB + 3 * KiB);
});

test("the oldest half-built message may buffer its early parts past the limit; another channel's early parts are refused", () => {
  const budget = new ReassemblyBudget(8 * KiB);
  const session = new SessionBudget(budget);
  const assemblers = new Map<number, ReliableAssembler>();
  const receiver = new StreamReceiver(0, session);
  const deliver = {
    take(u: { data: Uint8Array; last: boolean | undefined; channel: number }) {
      let a = assemblers.get(u.channel);
      if (!a) assemblers.set(u.channel, (a = new ReliableAssembler(1 << 20, session)));
      return a.add(u.data, u.last) !== 'refused';
    },
    builderOf: (u: { last: boolean | undefined; channel: number }) => (u.last === undefined ? undefined : assemblers.get(u.channel)),
  };
  // Channel 0 starts a message (the endpoint's oldest), channel 1 another; the budget fills.
  assert.equal(receiver.receive(0, { data: part(3 * KiB), last: false, channel: 0, unordered: false, delta: 0 }, deliver), 'delivered');
  assert.equal(receiver.receive(1, { data: part(3 * KiB), last: false, channel: 1, unordered: false, delta: 0 }, deliver), 'delivered');
  // Units 2 and 3 (one per channel) are lost for now; 4 and 5 arrive early and must wait.
  assert.equal(
    receiver.receive(4, { data: part(3 * KiB), last: false, channel: 0, unordered: false, delta: 2 }, deliver),
    'buffered',
    "the oldest message's early part waits past the limit",
  );
  assert.equal(
    receiver.receive(5, { data: part(3 * KiB), last: false, channel: 1, unordered: false, delta: 2 }, deliver),
    'refused',
    "another channel's is refused",
  );
  assert.ok(budget.used > budget.limit);
});

test('the turn to pass the limit: an older message that stops asking loses it after IDLE_BUILDER_MS, and queues again at the back', () => {
  const budget = new ReassemblyBudget(10 * KiB, 0, 20 * KiB);
  const holder = {};
  const honest = {};
  budget.startBuilding(holder);
  assert.ok(budget.take(10 * KiB, holder)); // the holder fills the budget, then stops sending
  budget.now = 100;
  budget.startBuilding(honest);
  assert.ok(!budget.take(KiB, honest), 'the holder asked a moment ago: its turn');
  budget.now = IDLE_BUILDER_MS - 1;
  assert.ok(!budget.take(KiB, honest), 'still within the idle time');
  budget.now = IDLE_BUILDER_MS;
  assert.ok(budget.take(KiB, honest), 'the holder stopped asking: the honest message may pass the limit');
  // The holder asks again: behind the honest message now.
  assert.ok(!budget.take(KiB, holder));
  assert.ok(budget.take(KiB, honest));
  // Asking once past the limit and stopping again does not keep the turn either.
  budget.stopBuilding(honest);
  assert.ok(budget.take(KiB, holder), 'alone, the holder has the turn');
  const late = {};
  budget.startBuilding(late);
  budget.now += IDLE_BUILDER_MS;
  assert.ok(budget.take(KiB, late));
  // maxOver caps it all: used may not pass limit + maxOver.
  assert.ok(!budget.take(20 * KiB, late), 'within maxOver only');
});
