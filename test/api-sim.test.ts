/**
 * The UDPipe API on the simulated network, in virtual time: callbacks by subclass and
 * by assignment, events, settings that reach live connections, hostile datagrams,
 * debug lines, sendAll and close from the server side.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { UDPipe, type Peer, type UDPipeOptions } from '../src/index.js';
import { Rng, SimNetwork } from '../src/testing/index.js';

const S = '127.0.1.1';
const PORT = 9000;
const T: UDPipeOptions = { pingIntervalMs: 100, stallTimeoutMs: 350, timeoutMs: 1000, reconnect: { minDelayMs: 20, maxDelayMs: 200 } };

/** Loopback by default; LAN addresses give 1472-byte datagrams and 1.2 kB parts. */
const LOOPBACK = { server: S, client: '127.0.2.' };
const LAN = { server: '10.0.1.1', client: '10.0.2.' };

async function setup(net: SimNetwork, serverOpts: UDPipeOptions = {}, clients = 1, clientOpts: UDPipeOptions = {}, hosts = LOOPBACK) {
  const server = new UDPipe({ ...T, ...serverOpts, transport: net.transport(hosts.server) });
  await server.start(PORT, hosts.server);
  const cs: UDPipe[] = [];
  for (let i = 0; i < clients; i++) {
    const c = new UDPipe({ ...T, ...clientOpts, transport: net.transport(`${hosts.client}${i + 1}`) });
    void c.connect(hosts.server, PORT, 30);
    cs.push(c);
  }
  await net.advanceUntil(() => server.clients.length === clients, 10_000);
  assert.equal(server.clients.length, clients, 'everyone connected');
  return { server, clients: cs };
}

test('callbacks work by subclass, by assignment and as events, with this bound to the UDPipe', async () => {
  const net = new SimNetwork({ seed: 1, conditions: { latencyMs: 5 } });
  const seen: string[] = [];
  class EchoServer extends UDPipe {
    override onNewMessage(msg: Buffer, sock: Peer): void {
      seen.push(`subclass:${msg}`);
      this.send(`echo:${msg}`, sock);
    }
  }
  const server = new EchoServer({ ...T, transport: net.transport(S) });
  await server.start(PORT, S);
  server.on('newMessage', (msg) => seen.push(`event:${msg}`));
  const client = new UDPipe({ ...T, transport: net.transport('127.0.2.1') });
  client.onNewMessage = function (msg) {
    assert.ok(this instanceof UDPipe);
    seen.push(`assigned:${msg}`);
  };
  void client.connect(S, PORT);
  await net.advance(100);
  client.send('hi');
  await net.advance(100);
  assert.deepEqual(seen, ['subclass:hi', 'event:hi', 'assigned:echo:hi']);
});

test('ping() gets onPong with a round-trip time; stats report rtt and counters', async () => {
  const net = new SimNetwork({ seed: 2, conditions: { latencyMs: 20 } });
  const { server, clients } = await setup(net, {}, 1, { pingIntervalMs: 10_000, stallTimeoutMs: 20_000, timeoutMs: 30_000 });
  const client = clients[0]!;
  const rtts: number[] = [];
  client.onPong = (_sock, rtt) => rtts.push(rtt);
  let pings = 0;
  server.onPing = () => pings++;
  client.ping();
  await net.advance(100);
  assert.equal(rtts.at(-1), 40, 'two 20 ms hops');
  assert.ok(pings >= 1);
  const st = client.stats() as {
    connection: { rtt: { smoothedMs: number; minMs: number }; datagramsSent: number; bytesSent: number; malformed: number };
  };
  assert.equal(st.connection.rtt.minMs, 40);
  assert.ok(st.connection.datagramsSent > 0 && st.connection.bytesSent > 0);
  assert.equal(st.connection.malformed, 0);
});

test('setTimeout(t) reaches connections that are already open', async () => {
  const net = new SimNetwork({ seed: 3, conditions: { latencyMs: 5 } });
  const { server, clients } = await setup(net, { pingIntervalMs: 100, stallTimeoutMs: 2000, timeoutMs: 5000 }, 1, {
    pingIntervalMs: 100,
    stallTimeoutMs: 2000,
    timeoutMs: 5000,
  });
  server.setTimeout(1); // seconds, as in the seed
  let disconnectedAt = -1;
  server.onDisconnect = () => (disconnectedAt = net.now);
  const cut = net.now;
  net.partitionHost('127.0.2.1', cut, cut + 10_000);
  clients[0]!.setTimeout(3);
  await net.advance(4000);
  assert.ok(disconnectedAt > cut && disconnectedAt <= cut + 1100, `server disconnected after ${disconnectedAt - cut} ms, not 5 s`);
});

test('garbage, truncated, replayed and corrupted datagrams at a live server change nothing', async () => {
  const net = new SimNetwork({ seed: 4, conditions: { latencyMs: 5 }, capture: true });
  const { server, clients } = await setup(net);
  const client = clients[0]!;
  const got: number[] = [];
  server.onNewMessage = (msg) => got.push(Number(msg));
  const attacker = await net.transport('127.0.9.9').bind(0, undefined, { onDatagram: () => {}, onError: () => {} });
  const rng = new Rng(99);
  for (let i = 0; i < 200; i++) {
    client.send(String(i));
    await net.advance(5);
    const real = net.captured.filter((c) => c.to.port === PORT).map((c) => c.bytes);
    const pick = real[rng.int(real.length)]!;
    const evil = [rng.bytes(rng.int(1300)), pick.slice(0, rng.int(pick.length)), pick.slice()];
    const flipped = pick.slice();
    flipped[rng.int(flipped.length)]! ^= 1 + rng.int(255);
    evil.push(flipped);
    for (const e of evil) attacker.send(e, { address: S, port: PORT });
  }
  await net.advance(2000);
  assert.deepEqual(
    got,
    Array.from({ length: 200 }, (_, i) => i),
  );
  assert.equal(server.clients.length, 1, 'no extra connection, none lost');
  assert.ok((server.stats() as { malformed: number }).malformed > 100, 'the junk was counted');
});

test('sendAll reaches every client; close(sock) ends one, which then reconnects (seed behaviour)', async () => {
  const net = new SimNetwork({ seed: 5, conditions: { latencyMs: 5 } });
  const { server, clients } = await setup(net, {}, 3);
  const got = clients.map(() => [] as string[]);
  clients.forEach((c, i) => (c.onNewMessage = (m) => got[i]!.push(String(m))));
  server.sendAll('all');
  await net.advance(100);
  assert.deepEqual(got, [['all'], ['all'], ['all']]);
  const closedAt: string[] = [];
  clients[0]!.onClose = (_s, reason) => closedAt.push(`client:${reason}`);
  server.onClose = (_s, reason) => closedAt.push(`server:${reason}`);
  const victim = server.clients[0]!;
  await Promise.all([server.close(victim), net.advance(200)]);
  assert.ok(closedAt.includes('server:normal') && closedAt.some((c) => c.startsWith('client:')), closedAt.join());
  await net.advanceUntil(() => server.clients.length === 3, 5000);
  assert.equal(server.clients.length, 3, 'the closed client came back');
});

test('debug mode logs each datagram and state change as one line', async () => {
  const net = new SimNetwork({ seed: 6, conditions: { latencyMs: 5 } });
  const lines: string[] = [];
  const logger = { debug: (l: string) => lines.push(l), warn: (l: string) => lines.push(`warn ${l}`) };
  const { clients } = await setup(net, { debug: true, logger }, 1);
  clients[0]!.send('x');
  await net.advance(50);
  assert.ok(lines.some((l) => /^server <- .* HELLO /.test(l)));
  assert.ok(lines.some((l) => /^server -> .* CHALLENGE /.test(l)));
  assert.ok(lines.some((l) => /DATA .*MSG ch0 #0 1B/.test(l)));
  assert.ok(lines.some((l) => /new client/.test(l)));
  assert.ok(lines.every((l) => !l.includes('\n')));
});

test('a server that restarted has forgotten the session: the client starts a new one and resends what it kept', async () => {
  const net = new SimNetwork({ seed: 7, conditions: { latencyMs: 5 } });
  const { server, clients } = await setup(net);
  const client = clients[0]!;
  const closing = server.close();
  await net.advance(500);
  await closing;
  client.send('after restart');
  const server2 = new UDPipe({ ...T, transport: net.transport(S) });
  await server2.start(PORT, S);
  const got: string[] = [];
  server2.onNewMessage = (m) => got.push(String(m));
  await net.advanceUntil(() => got.length > 0, 10_000);
  assert.deepEqual(got, ['after restart']);
});

test("a send() refused while reconnecting is owed a 'drain', raised when the new connection takes the queue", async () => {
  const net = new SimNetwork({ seed: 8, conditions: { latencyMs: 5 } });
  const client = new UDPipe({ ...T, maxQueue: 4, transport: net.transport('127.0.2.1') });
  void client.connect(S, PORT, 30);
  const results = [1, 2, 3, 4].map((i) => client.send(String(i)));
  assert.deepEqual(results, [true, true, true, false], 'no server yet: the queue fills');
  let drains = 0;
  client.on('drain', () => drains++);
  const server = new UDPipe({ ...T, transport: net.transport(S) });
  await server.start(PORT, S);
  const got: string[] = [];
  server.onNewMessage = (m) => got.push(String(m));
  await net.advanceUntil(() => got.length === 4 && drains > 0, 10_000);
  await net.advance(500);
  assert.deepEqual(got, ['1', '2', '3', '4']);
  assert.equal(drains, 1, 'exactly one drain, once the queue is acknowledged');
});

test('server.close() reaches a client whose handshake confirmation is still on its way', async () => {
  const net = new SimNetwork({ seed: 9, conditions: { latencyMs: 20 } });
  const server = new UDPipe({ ...T, transport: net.transport(S) });
  await server.start(PORT, S);
  const client = new UDPipe({ ...T, transport: net.transport('127.0.2.1') });
  const reasons: string[] = [];
  client.onClose = (_s, reason) => reasons.push(reason);
  void client.connect(S, PORT, 30);
  await net.advanceUntil(() => (server.stats() as { handshakesAccepted: number }).handshakesAccepted === 1, 5000);
  assert.equal(server.clients.length, 0, 'accepted but not yet confirmed: the program has not seen it');
  let closed = false;
  void server.close().then(() => (closed = true));
  await net.advanceUntil(() => closed, 10_000);
  assert.ok(closed);
  assert.deepEqual(reasons, ['shutdown'], 'the client was told, not left to time out');
});

test('a client refused for its token gives up for good: one refusal in a minute', async () => {
  const net = new SimNetwork({ seed: 10, conditions: { latencyMs: 5 } });
  const server = new UDPipe({ ...T, token: 'a', transport: net.transport(S) });
  await server.start(PORT, S);
  let bad = 0;
  server.onBadToken = () => bad++;
  const client = new UDPipe({ ...T, token: 'b', transport: net.transport('127.0.2.1') });
  const result = client.connect(S, PORT, 30).then(
    () => 'connected',
    (err: { code: string }) => err.code,
  );
  await net.advance(60_000);
  assert.equal(await result, 'ERR_BAD_TOKEN');
  assert.equal(bad, 1);
});

test('backpressure in bytes: a sender faster than the link stays under highWaterMark, and what one that ignores it sends past 8x is dropped and reported', async () => {
  // 40 ms each way and 1% loss: the link, not the program, sets the pace.
  const net = new SimNetwork({ seed: 21, conditions: { latencyMs: 40, loss: 0.01 } });
  const hwm = 256 * 1024;
  const { server, clients } = await setup(net, {}, 1, { highWaterMark: hwm });
  const client = clients[0]!;
  let bytes = 0;
  server.onNewMessage = (m) => (bytes += m.length);
  const chunk = new Uint8Array(64 * 1024);
  let drains = 0;
  client.on('drain', () => drains++);
  let maxQueued = 0;
  const queued = () => {
    const st = client.stats();
    const c = st.role === 'client' ? st.connection : undefined;
    return c && 'queuedBytes' in c ? c.queuedBytes : 0;
  };
  // A polite program: send until false, then wait for 'drain'. 4 MiB in all.
  for (let sent = 0; sent < 64; sent++) {
    if (!client.send(chunk)) {
      const before = drains;
      await net.advanceUntil(() => drains > before, 30_000);
      assert.ok(drains > before, `drain came (seed ${net.seed})`);
    }
    maxQueued = Math.max(maxQueued, queued());
  }
  await net.advanceUntil(() => bytes === 64 * chunk.length, 60_000);
  assert.equal(bytes, 64 * chunk.length, `everything arrived (seed ${net.seed})`);
  assert.ok(maxQueued <= hwm + chunk.length, `queue peaked at ${maxQueued} bytes`);
  // A program that ignores false: nothing more is queued past 8 x highWaterMark; send()
  // says false and 'dropped' says what was not sent.
  const dropped: string[] = [];
  client.on('dropped', (_sock, m, reason) => dropped.push(`${m.length} ${reason}`));
  let falses = 0;
  for (let i = 0; i < 100; i++) if (!client.send(chunk)) falses++;
  assert.ok(falses >= 90, `${falses} of 100 sends said false (the first ones may still fit below highWaterMark)`);
  assert.ok(dropped.length > 0 && dropped.every((d) => d === `${chunk.length} queue-full`), `dropped: ${dropped.slice(0, 3).join(', ')}`);
  const st = client.stats();
  assert.equal(st.role === 'client' && st.connection?.sendDropped, dropped.length);
  assert.ok(queued() < 8 * hwm + chunk.length, 'memory bounded');
});

test('reassembly memory is capped across connections: six clients sending 400 kB messages through a 256 kB budget all get through', async () => {
  // LAN addresses: parts of 1.2 kB, so every message is put together from hundreds.
  const net = new SimNetwork({ seed: 22, conditions: { latencyMs: 10, jitterMs: 5, loss: 0.02, reorder: 0.1 } });
  const { server, clients } = await setup(net, { maxReassemblyBytes: 256 * 1024 }, 6, {}, LAN);
  const got = new Map<string, number[]>();
  server.onNewMessage = (m) => {
    const who = String(m.subarray(0, 2));
    assert.ok(
      m.subarray(4).every((b) => b === m[2]),
      'intact',
    );
    (got.get(who) ?? got.set(who, []).get(who)!).push(m[2]!);
  };
  clients.forEach((c, k) => {
    for (let i = 0; i < 3; i++) {
      const m = new Uint8Array(400_000).fill(i);
      m.set(Buffer.from(`c${k}`), 0);
      c.send(m);
    }
  });
  await net.advanceUntil(() => [...got.values()].flat().length === 18, 300_000);
  for (let k = 0; k < 6; k++) assert.deepEqual(got.get(`c${k}`), [0, 1, 2], `client ${k}, in order (seed ${net.seed})`);
  const st = server.stats();
  assert.ok(st.role === 'server');
  assert.ok(st.reassembly.refused > 0, 'the budget did bite');
  assert.ok(
    st.reassembly.peak <= 256 * 1024 + 400_000 + 65_536,
    `peak ${st.reassembly.peak}: the limit, plus the one message allowed past it`,
  );
  assert.equal(st.reassembly.bytes, 0, 'everything given back');
});

test('unreliable-sequenced: per channel, never older after newer, and a stall sends only the newest', async () => {
  const net = new SimNetwork({ seed: 23, conditions: { latencyMs: 5, jitterMs: 20, reorder: 0.3, duplicate: 0.2, loss: 0.05 } });
  const { server, clients } = await setup(net);
  const client = clients[0]!;
  const got: { ch: number; n: number; delivery: string }[] = [];
  server.onNewMessage = (m, _s, info) => got.push({ ch: info.channel, n: Number(String(m)), delivery: info.delivery });
  for (let i = 0; i < 200; i++) {
    client.send(String(i), undefined, { delivery: 'unreliable-sequenced', channel: 1 });
    client.send(String(1000 + i), undefined, { delivery: 'unreliable-sequenced', channel: 2 });
    await net.advance(3);
  }
  await net.advance(500);
  for (const ch of [1, 2]) {
    const ns = got.filter((g) => g.ch === ch).map((g) => g.n);
    assert.ok(ns.length > 50, `channel ${ch}: ${ns.length} arrived (seed ${net.seed})`);
    assert.ok(
      ns.every((n, i) => i === 0 || n > ns[i - 1]!),
      `channel ${ch} only ever moves forward: ${ns.join(',')}`,
    );
  }
  assert.ok(got.every((g) => g.delivery === 'unreliable-sequenced'));
  // A stall: everything queued meanwhile collapses to the newest of each channel.
  got.length = 0;
  net.partition(S, '127.0.2.1', net.now, net.now + 600);
  await net.advance(450);
  for (let i = 0; i < 50; i++) client.send(`${5000 + i}`, undefined, { delivery: 'unreliable-sequenced', channel: 1 });
  await net.advance(2000);
  assert.deepEqual(
    got.map((g) => g.n),
    [5049],
    'only the newest went out',
  );
  const st = client.stats();
  assert.ok(st.role === 'client' && st.connection && 'sequencedSuperseded' in st.connection && st.connection.sequencedSuperseded >= 49);
});

test('send options are checked at the call site with a message that says what to do', async () => {
  const net = new SimNetwork({ seed: 24, conditions: { latencyMs: 5 } });
  const { clients } = await setup(net);
  const client = clients[0]!;
  const code = (f: () => unknown) => {
    try {
      f();
      return 'ok';
    } catch (e) {
      return (e as { code: string }).code;
    }
  };
  assert.equal(
    code(() => client.send('x', undefined, { delivery: 'unreliable', channel: 256 })),
    'ERR_INVALID_ARGUMENT',
  );
  assert.equal(
    code(() => client.send('x', undefined, { reliable: true, delivery: 'unreliable' })),
    'ERR_INVALID_ARGUMENT',
  );
  assert.equal(
    code(() => client.send('x', undefined, { delivery: 'sideways' as never })),
    'ERR_INVALID_ARGUMENT',
  );
  assert.equal(
    code(() => client.send(new Uint8Array(1201), undefined, { delivery: 'unreliable-sequenced' })),
    'ERR_MESSAGE_TOO_LARGE',
  );
  assert.equal(
    code(() => client.send('x', undefined, { delivery: 'unreliable', channel: 7 })),
    'ok',
  );
  assert.equal(
    code(() => client.send('x', undefined, { delivery: 'reliable-unordered', channel: 3 })),
    'ok',
  );
  assert.equal(
    code(() => client.send('x', undefined, { reliable: false, delivery: 'reliable-unordered' })),
    'ERR_INVALID_ARGUMENT',
  );
});

test('channels are independent streams: a 2 MB message on channel 1 does not hold back channel 0', async () => {
  // LAN addresses (1.2 kB parts) and 2% loss: the large message takes many round trips.
  const net = new SimNetwork({ seed: 25, conditions: { latencyMs: 20, loss: 0.02 } });
  const { server, clients } = await setup(net, {}, 1, {}, LAN);
  const client = clients[0]!;
  const arrivals: string[] = [];
  const sentAt: number[] = [];
  const waited: number[] = [];
  let bigAt = -1;
  server.onNewMessage = (m, _s, info) => {
    if (info.channel === 1) {
      bigAt = net.now;
      assert.ok(m.length === 2_000_000 && m.every((b) => b === 7), 'the large message intact');
      return;
    }
    const i = Number(String(m).split(' ')[1]);
    waited[i] = net.now - sentAt[i]!;
    arrivals.push(String(m));
  };
  const t0 = net.now;
  client.send(new Uint8Array(2_000_000).fill(7), undefined, { channel: 1 });
  for (let i = 0; i < 20; i++) {
    await net.advance(25);
    sentAt[i] = net.now;
    client.send(`small ${i}`);
  }
  await net.advanceUntil(() => bigAt >= 0 && arrivals.length === 20, 60_000);
  const where = `seed ${net.seed}: large message after ${Math.round(bigAt - t0)} ms, small ones waited ${waited.map(Math.round).join(' ')} ms`;
  assert.deepEqual(
    arrivals,
    Array.from({ length: 20 }, (_, i) => `small ${i}`),
    `channel 0 complete and in order (${where})`,
  );
  assert.ok(bigAt - t0 > 300, `the large message was still arriving while the small ones were sent, else this tests nothing (${where})`);
  // Held behind the large message, the first small ones would wait for most of its transfer.
  assert.ok(Math.max(...waited) < 250, `no small message waited for the large one (${where})`);
});

test('reliable-unordered messages arrive once each, without waiting for earlier ones', async () => {
  const net = new SimNetwork({ seed: 26, conditions: { latencyMs: 10, jitterMs: 30, loss: 0.1, reorder: 0.3, duplicate: 0.1 } });
  const { server, clients } = await setup(net);
  const client = clients[0]!;
  const got: number[] = [];
  server.onNewMessage = (m, _s, info) => {
    assert.equal(info.delivery, 'reliable-unordered');
    got.push(Number(String(m)));
  };
  for (let i = 0; i < 300; i++) {
    client.send(String(i), undefined, { delivery: 'reliable-unordered', channel: 2 });
    await net.advance(3); // one packet each, so the network can reorder them
  }
  await net.advanceUntil(() => got.length === 300, 30_000);
  await net.advance(2000);
  assert.deepEqual(
    [...got].sort((a, b) => a - b),
    Array.from({ length: 300 }, (_, i) => i),
    `each exactly once (seed ${net.seed})`,
  );
  assert.ok(
    got.some((n, i) => i > 0 && n < got[i - 1]!),
    'and some overtook earlier ones, as unordered allows',
  );
});

test('a half-built message survives a reconnect: the session resumes it instead of starting it over', async () => {
  const net = new SimNetwork({ seed: 27, conditions: { latencyMs: 20 } });
  const { server, clients } = await setup(net, {}, 1, {}, LAN);
  const client = clients[0]!;
  const got: Buffer[] = [];
  server.onNewMessage = (m) => got.push(m);
  let connects = 0;
  client.onConnect = () => connects++;
  const big = new Uint8Array(3_000_000).map((_, i) => (i * 13) & 0xff);
  client.send(big);
  await net.advance(400); // part of it is across
  net.partition('10.0.1.1', '10.0.2.1', net.now, net.now + T.timeoutMs! + 500); // past the disconnect timeout
  await net.advanceUntil(() => got.length === 1, 120_000);
  await net.advance(2000);
  assert.equal(connects, 1, 'the client reconnected once');
  assert.equal(got.length, 1, `delivered exactly once (seed ${net.seed})`);
  assert.ok(Buffer.from(big).equals(got[0]!), 'intact');
  const st = client.stats();
  assert.ok(st.role === 'client');
  assert.ok(st.datagramsSent < (3_000_000 / 1200) * 1.6, `the reconnect did not resend it all: ${st.datagramsSent} datagrams`);
});

test('maxClientsPerAddress: one address gets its share, others still get in', async () => {
  const net = new SimNetwork({ seed: 28, conditions: { latencyMs: 5 } });
  const server = new UDPipe({ ...T, maxClientsPerAddress: 2, transport: net.transport(S) });
  await server.start(PORT, S);
  let refusedFull = 0;
  server.onMaxClients = () => refusedFull++;
  const results: string[] = [];
  const attempt = (host: string) => {
    const c = new UDPipe({ ...T, transport: net.transport(host) });
    void c.connect(S, PORT, 2).then(
      () => results.push(`${host} ok`),
      (e: { code: string }) => results.push(`${host} ${e.code}`),
    );
  };
  attempt('127.0.2.1');
  attempt('127.0.2.1');
  await net.advance(300);
  attempt('127.0.2.1'); // a third from the same address
  attempt('127.0.2.2');
  await net.advance(3000);
  assert.deepEqual(results.sort(), ['127.0.2.1 ERR_SERVER_FULL', '127.0.2.1 ok', '127.0.2.1 ok', '127.0.2.2 ok']);
  assert.ok(refusedFull > 0);
  assert.equal(server.clients.length, 3);
});

test('one client, two messages of 10 MiB on two channels with maxMessageSize 10 MiB: both arrive (the session cap does not count the oldest)', async () => {
  const net = new SimNetwork({ seed: 22, conditions: { latencyMs: 10 } });
  const { server, clients } = await setup(net, { maxMessageSize: 10 << 20 }, 1, { maxMessageSize: 10 << 20, maxQueue: 1 << 15 });
  const got: string[] = [];
  server.onNewMessage = (m, _s, info) => got.push(`${info.channel}:${m.length}`);
  clients[0]!.send(new Uint8Array(10 << 20), undefined, { channel: 0 });
  clients[0]!.send(new Uint8Array(10 << 20), undefined, { channel: 1 });
  await net.advanceUntil(() => got.length === 2, 120_000);
  assert.deepEqual(got.sort(), [`0:${10 << 20}`, `1:${10 << 20}`]);
});

test('ten lost handshake datagrams in a row cost seconds, not most of a minute (default retry settings)', async (t) => {
  const net = new SimNetwork({ seed: 77, conditions: { latencyMs: 5 } });
  const server = new UDPipe({ transport: net.transport('127.0.1.1') });
  await server.start(9000, '127.0.1.1');
  const client = new UDPipe({ connectTimeoutMs: 120_000, transport: net.transport('127.0.2.1') });
  net.dropNext('127.0.2.1', '127.0.1.1', 10);
  let connectedAt = -1;
  void client.connect('127.0.1.1', 9000).then(() => (connectedAt = net.now));
  await net.advanceUntil(() => connectedAt >= 0, 120_000);
  t.diagnostic(`connected after ${connectedAt} ms`);
  assert.ok(connectedAt >= 0 && connectedAt < 10_000, `connected after ${connectedAt} ms (seed ${net.seed})`);
  const closing = Promise.all([client.close(), server.close()]);
  await net.advance(6000);
  await closing;
});

test('an idle connection costs one PING and one PONG per ping interval, not two of each, and the client asks', async (t) => {
  const net = new SimNetwork({ seed: 78, conditions: { latencyMs: 5 }, capture: true });
  const opts = { pingIntervalMs: 1000, stallTimeoutMs: 3000, timeoutMs: 10_000 };
  const server = new UDPipe({ ...opts, transport: net.transport('127.0.1.1') });
  await server.start(9000, '127.0.1.1');
  const client = new UDPipe({ ...opts, transport: net.transport('127.0.2.1') });
  const events: string[] = [];
  const pingsAnswered = { server: 0, client: 0 };
  for (const [who, u] of [
    ['server', server],
    ['client', client],
  ] as const) {
    u.on('stalled', () => events.push(`${who} stalled`));
    u.on('disconnect', () => events.push(`${who} disconnect`));
    u.on('ping', () => pingsAnswered[who]++);
  }
  let up = false;
  void client.connect('127.0.1.1', 9000).then(() => (up = true));
  await net.advanceUntil(() => up, 2000);
  await net.advance(2000);
  const from = net.captured.length;
  await net.advance(60_000);
  const idle = net.captured.slice(from).filter((c) => c.bytes[1] === 0x10).length;
  t.diagnostic(`${idle} datagrams in 60 s of idleness`);
  assert.ok(idle <= 2 * 60 + 4, `${idle} datagrams in 60 s: more than one exchange per interval (seed ${net.seed})`);
  assert.deepEqual(events, [], 'and nobody stalled');
  // The server answers, from the first PING on (its connection is the older one, so left
  // to the clock it would ask first): an idle server's timers stay quiet.
  assert.ok(pingsAnswered.server >= 60, `the server answered ${pingsAnswered.server} PINGs (seed ${net.seed})`);
  assert.equal(pingsAnswered.client, 0, 'and asked none itself');
  const closing = Promise.all([client.close(), server.close()]);
  await net.advance(6000);
  await closing;
});
