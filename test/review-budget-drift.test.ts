/**
 * Review: the reassembly budget's accounting over a whole life (REFUSED, parked sessions,
 * resumption, eviction): after every client has gone and every session ended, the
 * server's budget holds nothing. Sans-I/O pair (test/helpers/pair.ts).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Pair } from './helpers/pair.js';

for (const seed of [1, 2, 3]) {
  test(`review: seed ${seed}: large and small messages through a tight budget with connections cut and resumed; every message once, and budget.used back to 0`, () => {
    const p = new Pair(seed, seed % 2 === 0);
    p.server = p.newServer({ maxReassemblyBytes: 256 * 1024, sessionLingerMs: 4000 });
    const clients = [0, 1, 2, 3].map((i) => p.client(`10.0.0.${i + 1}`));
    for (const c of clients) c.ep.start(p.now, p.now + 10_000);
    p.run(200);
    const expected: string[] = [];
    clients.forEach((c, i) => {
      for (let k = 0; k < 3; k++) {
        const s = `L${i}-${k}|`.padEnd(150_000 + 7_000 * k, 'x');
        expected.push(s.slice(0, 8));
        c.ep.send(Buffer.from(s), true, 0);
      }
      for (let k = 0; k < 30; k++) {
        expected.push(`s${i}-${k}`);
        c.ep.send(Buffer.from(`s${i}-${k}`), true, 1);
      }
    });
    // Cut clients for longer than the timeout at staggered times: their sessions park and resume.
    for (let t = 0; t < 40; t++) {
      const c = clients[(t * 7 + seed) % clients.length]!;
      if (t % 5 === 0) c.cut = true;
      p.run(400);
      if (t % 5 === 4) for (const x of clients) x.cut = false;
    }
    for (const x of clients) x.cut = false;
    p.run(20_000);
    const got = p.atServer.map((s) => (s.startsWith('L') ? s.slice(0, 8) : s));
    const missing = expected.filter((e) => !got.includes(e));
    const dup = got.filter((g, i) => got.indexOf(g) !== i);
    console.log(
      `seed ${seed}: got ${got.length}/${expected.length}, missing ${missing.length} ${missing.slice(0, 5).join(',')}, duplicates ${dup.length}, budget used ${p.server.budget.used}, peak ${p.server.budget.peak}, evicted ${p.server.evictedSessions}, refused ${p.server.budget.refused}`,
    );
    assert.ok(
      clients.some((c) => c.events.includes('ended:timeout')),
      'some connection timed out and its session was resumed',
    );
    assert.deepEqual(missing, []);
    assert.deepEqual(dup, []);
    for (const c of clients) c.ep.close(p.now);
    p.run(10_000);
    assert.equal(p.server.openConnections(), 0);
    assert.equal(p.server.stateSize().parked, 0);
    assert.equal(p.server.budget.used, 0, 'every charge given back');
  });
}
