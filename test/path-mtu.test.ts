/**
 * Path MTU discovery and pacing in the simulator, in virtual time: the search finds a
 * path's limit, falls back when the path shrinks under it, and large messages keep
 * arriving whole throughout; the pacer spreads a window over the round trip.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { test } from 'node:test';
import { PathMtu, datagramCeiling, isLoopback } from '../src/protocol/path-mtu.js';
import { Pacer } from '../src/congestion/pacer.js';
import { UDPipe, type Peer, type UDPipeOptions } from '../src/index.js';
import { SimNetwork } from '../src/testing/index.js';

const T: UDPipeOptions = { pingIntervalMs: 100, stallTimeoutMs: 2000, timeoutMs: 8000, reconnect: { minDelayMs: 20, maxDelayMs: 200 } };

async function pair(net: SimNetwork, serverHost: string, clientHost: string, opts: UDPipeOptions = {}) {
  const server = new UDPipe({ ...T, ...opts, transport: net.transport(serverHost) });
  await server.start(9000, serverHost);
  const got: string[] = [];
  server.onNewMessage = (m) => got.push(createHash('sha256').update(m).digest('hex'));
  let peer: Peer | undefined;
  server.onConnect = (p) => (peer = p);
  const client = new UDPipe({ ...T, ...opts, transport: net.transport(clientHost) });
  void client.connect(serverHost, 9000, 30);
  await net.advanceUntil(() => peer !== undefined, 5000);
  assert.ok(peer, `connected (seed ${net.seed})`);
  const pmtu = () => {
    const st = client.stats();
    const c = st.role === 'client' ? st.connection : undefined;
    return c && 'pmtu' in c ? c.pmtu : undefined;
  };
  const serverPmtu = () => {
    const c = peer!.stats();
    return 'pmtu' in c ? c.pmtu : undefined;
  };
  return { server, client, got, pmtu, serverPmtu };
}

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

test('the ceiling comes from the peer address: near 64 KiB on loopback, an Ethernet frame elsewhere', () => {
  assert.equal(isLoopback('127.0.0.1'), true);
  assert.equal(isLoopback('::ffff:127.1.2.3'), true);
  assert.equal(isLoopback('::1'), true);
  assert.equal(isLoopback('10.0.0.1'), false);
  assert.equal(datagramCeiling('127.0.0.1', undefined), 65488);
  assert.equal(datagramCeiling('192.0.2.1', undefined), 1472);
  assert.equal(datagramCeiling('2001:db8::1', undefined), 1452);
  assert.equal(datagramCeiling('::ffff:192.0.2.1', undefined), 1472);
  assert.equal(datagramCeiling('192.0.2.1', 9000), 9000);
  assert.equal(datagramCeiling('192.0.2.1', 100), 1232, 'never below the base size');
});

test('PathMtu bisects after the ceiling fails three times and stops within 16 bytes', () => {
  const p = new PathMtu(65488, 0);
  const limit = 9000;
  let now = 0;
  for (let i = 0; i < 200; i++) {
    const size = p.probeSize(now);
    if (size === undefined) break;
    p.onProbeSent(size);
    if (size <= limit) p.onProbeAcked(size, now);
    else p.onProbeLost(size, now);
    now += 10;
  }
  assert.ok(p.current <= limit && p.current > limit - 16, `found ${p.current}`);
  assert.equal(p.probeSize(now), undefined, 'search over until the raise timer');
  assert.ok(p.probeSize(now + 600_001) !== undefined, 'and it looks again later');
});

test('a loopback connection finds its path MTU (9000 here) and a large message crosses intact', async () => {
  const net = new SimNetwork({ seed: 11, conditions: { latencyMs: 2, mtu: 9000 } });
  const { server, client, got, pmtu, serverPmtu } = await pair(net, '127.0.1.1', '127.0.2.1');
  // Each side searches once it has more than a packet to send: a large message each way.
  const big = new Uint8Array(2_000_000).map((_, i) => (i * 7) & 0xff);
  client.send(big);
  await net.advanceUntil(() => got.length === 1, 20_000);
  assert.deepEqual(got, [sha(big)], `seed ${net.seed}`);
  let back = 0;
  client.onNewMessage = (m) => (back = m.length);
  server.sendAll(new Uint8Array(200_000));
  await net.advance(20_000);
  assert.equal(back, 200_000, 'the reply arrived');
  const c = pmtu()!;
  const s = serverPmtu()!;
  assert.ok(c.current <= 9000 && c.current > 9000 - 16, `client found ${c.current} (seed ${net.seed})`);
  assert.ok(s.current <= 9000 && s.current > 9000 - 16, `server found ${s.current} (seed ${net.seed})`);
});

test('a path that shrinks under the connection (a black hole) falls back to 1232 bytes and loses nothing', async () => {
  // A LAN with jumbo frames, then a route through a tunnel with a 1300-byte MTU.
  const net = new SimNetwork({ seed: 12, conditions: { latencyMs: 2 } });
  const { client, got, pmtu } = await pair(net, '10.0.0.1', '10.0.0.2', { maxDatagramSize: 9000 });
  // A first transfer finds the ceiling (a side searches once it has more than a packet to send).
  const warmUp = new Uint8Array(100_000).fill(3);
  client.send(warmUp);
  await net.advanceUntil(() => got.length === 1, 5000);
  assert.equal(pmtu()!.current, 9000, 'ceiling reached at once');
  got.length = 0;
  const msgs = [new Uint8Array(300_000).fill(1), new Uint8Array(300_000).fill(2)];
  client.send(msgs[0]!);
  await net.advance(5);
  net.setConditions({ latencyMs: 2, mtu: 1300 });
  client.send(msgs[1]!);
  await net.advanceUntil(() => got.length === 2, 30_000);
  assert.deepEqual(got, msgs.map(sha), `both messages, in order (seed ${net.seed})`);
  assert.ok(pmtu()!.current <= 1300, `fell back (${pmtu()!.current})`);
  const st = client.stats();
  assert.ok(st.role === 'client' && st.state === 'connected', 'never disconnected');
});

test('the search ceiling is an option, and a non-loopback peer is never probed past 1472 bytes', async () => {
  const net = new SimNetwork({ seed: 13, conditions: { latencyMs: 5 }, capture: true });
  const { client, pmtu } = await pair(net, '10.0.0.1', '10.0.0.2');
  client.send(new Uint8Array(100_000));
  await net.advance(3000);
  assert.equal(pmtu()!.current, 1472);
  assert.ok(
    net.captured.every((d) => d.bytes.length <= 1472),
    'no datagram larger than the ceiling',
  );
  const net2 = new SimNetwork({ seed: 14, conditions: { latencyMs: 5 } });
  const { client: client2, pmtu: pmtu2 } = await pair(net2, '10.0.0.1', '10.0.0.2', { maxDatagramSize: 8000 });
  client2.send(new Uint8Array(100_000));
  await net2.advance(3000);
  assert.equal(pmtu2()!.current, 8000);
});

test('the pacer lets a burst of the bucket go, then one packet per refill', () => {
  const p = new Pacer(1000, 0);
  const window = 100_000;
  const srtt = 100; // rate 1.25 * 100 000 / 100 = 1250 bytes per ms
  let sent = 0;
  // Bounded: a pacer that never runs out of tokens must fail here, not hang the suite.
  while (sent < 100 && p.sendTime(window, srtt, 0) === 0) {
    p.onSent(1000);
    sent++;
  }
  assert.equal(sent, 10, 'the initial burst is ten datagrams');
  const next = p.sendTime(window, srtt, 0);
  assert.ok(next > 0 && next < 2, `next at ${next} ms`);
  assert.equal(p.sendTime(window, srtt, next), next, 'the deadline it gave tests as due');
});

test("no path MTU probe goes ahead of a connection's first data: each side probes only once the peer acknowledged something", async () => {
  const net = new SimNetwork({ seed: 12, conditions: { latencyMs: 2 }, capture: true });
  const server = new UDPipe({ ...T, transport: net.transport('127.0.1.1') });
  await server.start(9000, '127.0.1.1');
  const client = new UDPipe({ ...T, transport: net.transport('127.0.2.1') });
  let got = 0;
  // The server answers: a side that only answers PINGs sends nothing the peer
  // acknowledges, so it has no reason to probe and does not.
  let replies = 0;
  client.onNewMessage = () => replies++;
  // Messages of several packets each way: a side probes only with more than a packet's
  // worth to send (the next test).
  server.onNewMessage = (_msg, sock) => {
    got++;
    server.send(new Uint8Array(20_000), sock);
  };
  void client.connect('127.0.1.1', 9000).then(() => client.send(new Uint8Array(20_000)));
  await net.advanceUntil(() => got === 1 && replies === 1, 2000);
  await net.advance(500);
  for (const host of ['127.0.1.1', '127.0.2.1']) {
    const data = net.captured.filter((c) => c.from.address === host && c.bytes[1] === 0x10);
    const firstProbe = data.findIndex((c) => c.bytes.length > 1232);
    assert.ok(firstProbe > 0, `${host}: its first DATA datagram is not a probe (probe at ${firstProbe}, seed ${net.seed})`);
    // Before it, this side had heard from the peer (an ACK came back): a probe lost to a
    // small receive buffer then costs nothing but itself.
    const heard = net.captured.some((c) => c.to.address === host && c.bytes[1] === 0x10 && c.t < data[firstProbe]!.t);
    assert.ok(heard, `${host}: probed before the peer answered anything`);
  }
  const closing = Promise.all([client.close(), server.close()]);
  await net.advance(6000);
  await closing;
});

test('idle connections and small messages never probe the path MTU; a transfer of many packets does', async () => {
  // A probe is up to 64 KiB on loopback: 45,000 idle connections probing at once filled
  // their clients' receive buffers and stalled their handshakes (bench:many at 100,000).
  // A larger MTU only helps a sender with more than a packet to send.
  const net = new SimNetwork({ seed: 13, conditions: { latencyMs: 2 } });
  const { server, client, pmtu, serverPmtu } = await pair(net, '127.0.1.1', '127.0.2.1');
  let sock: Peer | undefined;
  server.onNewMessage = (m, s) => {
    sock = s;
    if (m.length < 1000) server.send(new Uint8Array(200), s);
  };
  await net.advance(10_000); // 100 keep-alive exchanges
  for (let i = 0; i < 100; i++) {
    client.send(new Uint8Array(200));
    await net.advance(33);
  }
  assert.ok(sock, 'the messages arrived');
  assert.equal(pmtu()?.probesSent, 0, `client: no probe while idle or sending small messages (seed ${net.seed})`);
  assert.equal(serverPmtu()?.probesSent, 0, `server: no probe (seed ${net.seed})`);
  client.send(new Uint8Array(500_000));
  await net.advance(2000);
  assert.ok((pmtu()?.probesSent ?? 0) > 0, 'a transfer of many packets probes');
  assert.ok((pmtu()?.current ?? 0) > 1232, `and finds the larger MTU: ${JSON.stringify(pmtu())}`);
  assert.equal(serverPmtu()?.probesSent, 0, 'the side with nothing large to send still does not probe');
  const closing = Promise.all([client.close(), server.close()]);
  await net.advance(6000);
  await closing;
});

test('random loss, in bursts too, is not taken for a black hole: the path MTU stays where the search put it', async () => {
  // About 10% of datagrams lost in bursts of about 10 (Gilbert-Elliott), and 5% at random.
  for (const [seed, conditions] of [
    [15, { latencyMs: 5, burst: { enterProbability: 0.011, exitProbability: 0.1 } }],
    [16, { latencyMs: 5, loss: 0.05 }],
  ] as const) {
    const net = new SimNetwork({ seed, conditions });
    const { client, got, pmtu } = await pair(net, '10.0.0.1', '10.0.0.2', { maxDatagramSize: 9000 });
    const msgs = Array.from({ length: 4 }, (_, i) => new Uint8Array(500_000).fill(i));
    for (const m of msgs) client.send(m);
    await net.advanceUntil(() => got.length === 4, 60_000);
    assert.deepEqual(got, msgs.map(sha), `all four, in order (seed ${seed})`);
    const st = client.stats();
    const lost = st.role === 'client' && st.connection && 'packetsLost' in st.connection ? st.connection.packetsLost : 0;
    assert.ok(lost > 5, `datagrams were lost (${lost}), else this tests nothing (seed ${seed})`);
    assert.equal(pmtu()!.current, 9000, `no fall back to the base size after ${lost} losses: ${JSON.stringify(pmtu())} (seed ${seed})`);
  }
});

test('review: a 150 ms outage is not a path MTU black hole (game traffic: large unreliable, small reliable)', async () => {
  // Everything is lost in an outage, and the first ACK after it may cover only a small
  // packet while it declares the outage's large ones lost: no sign that large packets
  // fail where small ones pass.
  const fellBack: number[] = [];
  for (let seed = 1; seed <= 10; seed++) {
    const net = new SimNetwork({ seed, conditions: { latencyMs: 5 } });
    const { client, got, pmtu } = await pair(net, '10.0.0.1', '10.0.0.2');
    client.send(new Uint8Array(100_000)); // more than a packet: the search runs
    await net.advanceUntil(() => got.length === 1, 5000);
    await net.advance(500);
    assert.equal(pmtu()!.current, 1472, `search done (seed ${seed})`);
    let tick = 0;
    const game = async (ms: number) => {
      for (let t = 0; t < ms; t += 10, tick++) {
        if (tick % 2 === 0) client.send(new Uint8Array(1400), undefined, { reliable: false });
        if (tick % 5 === 0) client.send(new Uint8Array(40));
        await net.advance(10);
      }
    };
    await game(1000);
    net.partition('10.0.0.1', '10.0.0.2', net.now, net.now + 150);
    await game(1500);
    if (pmtu()!.current !== 1472) fellBack.push(seed);
  }
  assert.deepEqual(fellBack, [], `seeds whose 150 ms outage dropped the path MTU to the base size: ${fellBack}`);
});

test('review: a path that shrinks to 1400 bytes is noticed while packets of 1233-1400 bytes still get through', async () => {
  const net = new SimNetwork({ seed: 3, conditions: { latencyMs: 5 } });
  const { client, got, pmtu } = await pair(net, '10.0.0.1', '10.0.0.2');
  let arrived = 0;
  client.send(new Uint8Array(100_000));
  await net.advanceUntil(() => got.length === 1, 5000);
  await net.advance(500);
  assert.equal(pmtu()!.current, 1472, 'search done');
  net.setConditions({ latencyMs: 5, mtu: 1400 }); // a tunnel comes up
  const before = got.length;
  // 200-byte unreliable messages, 6 then 7 per tick: 1250-byte packets (they pass) and 1454-byte ones (lost).
  for (let i = 0; i < 500; i++) {
    for (let k = 0; k < (i % 2 === 0 ? 6 : 7); k++) client.send(new Uint8Array(200), undefined, { reliable: false });
    await net.advance(20);
  }
  arrived = got.length - before;
  const sent = 250 * 13;
  assert.ok(arrived > 0.9 * sent, `${arrived} of ${sent} messages arrived in 10 s; path MTU ${JSON.stringify(pmtu())} (seed ${net.seed})`);
});
