/**
 * Review of the reassembly budget's bound past its limit (docs/SECURITY.md, memory row):
 * maxReassemblyBytes, plus at most maxMessageSize + the reorder buffer's cap + half the
 * limit past it, whatever takes it (found: the sessions' shares ignored that cap). The
 * budget is built exactly as ServerEndpoint builds it.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { sessionShare } from '../src/protocol/server.js';
import { IDLE_BUILDER_MS, ReassemblyBudget, SessionBudget, UNIT_OVERHEAD_BYTES } from '../src/reliability/budget.js';
import { BUFFER_LIMIT } from '../src/reliability/receiver.js';
import { ReliableAssembler } from '../src/reliability/reliable-assembler.js';

const KiB = 1024;
const MiB = 1024 * KiB;

test("review: half-built messages of connected holders in turn, and then the sessions' shares, stay within the budget's documented bound", () => {
  const limit = 1 * MiB;
  const maxClients = 16;
  const maxMessageSize = 1 * MiB;
  const share = sessionShare(limit, maxClients);
  const budget = new ReassemblyBudget(limit, share, maxMessageSize + BUFFER_LIMIT + 2 * Math.max(16, maxClients) * share);
  const documented = limit + maxMessageSize + BUFFER_LIMIT + 2 * Math.max(16, maxClients) * share;
  // The limit is taken by ordinary traffic.
  const filler = new SessionBudget(budget);
  assert.ok(filler.take(limit));
  // Token holders that stay connected: the oldest half-built message grows past the
  // limit to maxMessageSize and stops; after IDLE_BUILDER_MS the turn passes to the next
  // holder's message, which does the same, until the cap (limit + maxOver) is reached.
  const p = new Uint8Array(KiB - UNIT_OVERHEAD_BYTES);
  let holders = 0;
  for (;;) {
    const a = new ReliableAssembler(maxMessageSize, new SessionBudget(budget));
    let refused = false;
    while (a.size + p.length <= maxMessageSize)
      if (a.add(p, false) === 'refused') {
        refused = true;
        break;
      }
    holders++;
    if (refused) break;
    budget.now += IDLE_BUILDER_MS;
  }
  assert.ok(holders < maxClients, `${holders} holders, all connected at once`);
  // Then every other session (live and parked: 2 x max(16, maxClients) less the three above) takes its share for whole messages.
  for (let s = 0; s < 2 * Math.max(16, maxClients) - 3; s++) {
    const sb = new SessionBudget(budget);
    while (sb.take(512, undefined, false, true));
  }
  console.log(
    `peak ${(budget.peak / MiB).toFixed(2)} MiB, documented bound ${(documented / MiB).toFixed(2)} MiB (limit ${limit / MiB} MiB)`,
  );
  assert.ok(budget.peak <= documented, `used ${budget.peak} bytes, past the documented ${documented}`);
});
