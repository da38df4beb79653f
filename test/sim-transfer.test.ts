/**
 * The fault suite's transfer (test/helpers/fault-peer.ts) in the simulator: a client
 * sends reliable bulk messages and a numbered stream of small ones on another channel,
 * the server sends its own numbered stream back, both honouring send()'s backpressure
 * and 'drain' with one shared flag, as a program would. Across a disconnect that the
 * session survives, every message must arrive exactly once and in order, and neither
 * side may be left waiting for a 'drain' that never comes.
 * A failure prints the seed.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { UDPipe, type UDPipeOptions } from '../src/index.js';
import { SimNetwork } from '../src/testing/index.js';

const S = '127.0.1.1';
const C = '127.0.2.1';
const PORT = 9000;
const OPTS: UDPipeOptions = {
  pingIntervalMs: 250,
  stallTimeoutMs: 750,
  timeoutMs: 2000,
  reconnect: { minDelayMs: 100, maxDelayMs: 500 },
  // Small marks, so both sides are backpressured often.
  highWaterMark: 64 * 1024,
  maxQueue: 64,
};
const BULK = 16;
const BULK_SIZE = 100_000;
const SMALL = 200;

function small(seq: number): Buffer {
  const b = Buffer.alloc(32, seq & 0xff);
  b.writeUInt32BE(seq, 0);
  return b;
}

/** One side's numbered stream: a few messages every 10 ms while not backpressured. */
class Ticker {
  sent = 0;
  blocked = false;
  drains = 0;
  constructor(
    private readonly pipe: UDPipe,
    private readonly target: () => Parameters<UDPipe['send']>[1] | null,
  ) {
    pipe.on('drain', () => {
      this.blocked = false;
      this.drains++;
    });
  }
  tick(): void {
    const to = this.target();
    if (this.blocked || to === null) return;
    for (let i = 0; i < 4 && !this.blocked && this.sent < SMALL; i++) {
      if (!this.pipe.send(small(this.sent++), to, { channel: 1 })) this.blocked = true;
    }
  }
}

/** Impairments in virtual time: `at` ms after the connection is up, for `ms`. */
interface Impairment {
  at: number;
  ms: number;
  apply: (net: SimNetwork) => void;
  undo: (net: SimNetwork) => void;
}

async function transfer(seed: number, impairment: Impairment): Promise<void> {
  const net = new SimNetwork({ seed, conditions: { latencyMs: 2 } });
  const server = new UDPipe({ ...OPTS, transport: net.transport(S) });
  await server.start(PORT, S);
  const client = new UDPipe({ ...OPTS, transport: net.transport(C) });
  void client.connect(S, PORT, 30);

  const up: number[] = [];
  const down: number[] = [];
  let bulkIn = 0;
  server.on('newMessage', (m: Buffer, _p, info) => {
    if (info.channel === 1) up.push(m.readUInt32BE(0));
    else bulkIn++;
  });
  client.on('newMessage', (m: Buffer) => down.push(m.readUInt32BE(0)));
  const mine = new Ticker(client, () => undefined);
  const theirs = new Ticker(server, () => server.clients[0] ?? null);

  let bulkOut = 0;
  const step = () => {
    mine.tick();
    theirs.tick();
    while (bulkOut < BULK && !mine.blocked) {
      if (!client.send(Buffer.alloc(BULK_SIZE, bulkOut++), undefined, { channel: 0 })) mine.blocked = true;
    }
  };
  await net.advanceUntil(() => server.clients.length === 1, 10_000);
  const done = () => up.length === SMALL && down.length === SMALL && bulkIn === BULK;
  for (let t = 0; t < 120_000 && !done(); t += 10) {
    if (t === impairment.at) impairment.apply(net);
    if (t === impairment.at + impairment.ms) impairment.undo(net);
    step();
    await net.advance(10);
  }
  const where = `seed ${seed}: up ${up.length}/${mine.sent} (blocked ${mine.blocked}, drains ${mine.drains}), down ${down.length}/${theirs.sent} (blocked ${theirs.blocked}, drains ${theirs.drains}), bulk ${bulkIn}/${bulkOut}`;
  // Everything is delivered, so every queue empties: a send() that said false has its 'drain' by now.
  await net.advance(1000);
  assert.deepEqual(
    up,
    Array.from({ length: SMALL }, (_, i) => i),
    `client to server, ${where}`,
  );
  assert.deepEqual(
    down,
    Array.from({ length: SMALL }, (_, i) => i),
    `server to client, ${where}`,
  );
  assert.equal(bulkIn, BULK, `bulk, ${where}`);
  assert.equal(mine.blocked, false, `the client's blocked send() never got its 'drain', ${where}`);
  assert.equal(theirs.blocked, false, `the server's blocked send() never got its 'drain', ${where}`);
  await Promise.all([client.close(), server.close(), net.advance(2000)]);
}

const FAST = { latencyMs: 2 };

test("a disconnect that the session survives: both streams arrive whole, and each side's blocked send() gets its 'drain'", async () => {
  for (const seed of [1, 2, 3]) {
    await transfer(seed, {
      at: 300 + seed * 50,
      ms: 3500,
      apply: (net) => net.partition(S, C, net.now, net.now + 3500),
      undo: () => {},
    });
  }
});

test("only the client's datagrams lost for longer than the disconnect timeout: the server's blocked send() still gets its 'drain'", async () => {
  for (const seed of [1, 2, 3]) {
    await transfer(seed, {
      at: 300 + seed * 50,
      ms: 4500,
      apply: (net) => net.setConditions({ ...FAST, loss: 1 }, C, S),
      undo: (net) => net.setConditions(FAST, C, S),
    });
  }
});
