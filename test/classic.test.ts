/**
 * The classic UDPIPE protocol (docs/PROTOCOL.md, section 14) in the simulator: a
 * scripted client that sends exactly the seed's datagrams, against a udpipe server.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { ClassicLink } from '../src/protocol/classic.js';
import { parseClassicHello, parseClassicRedirect } from '../src/wire/classic.js';
import { UDPipe, UDPipeError, type Peer } from '../src/index.js';
import { SimNetwork } from '../src/testing/index.js';
import type { Address, DatagramSocket } from '../src/transport/types.js';

const S = '127.0.1.1';
const PORT = 1234;
const T = { pingIntervalMs: 100, stallTimeoutMs: 400, timeoutMs: 1500, classic: true };
const text = (b: Uint8Array) => Buffer.from(b).toString('latin1');

/** A raw socket that records what it gets, as a Lua script would see it. */
async function rawSocket(net: SimNetwork, host: string) {
  const got: { text: string; from: Address }[] = [];
  let sock: DatagramSocket | undefined;
  sock = await net.transport(host).bind(0, host, { onDatagram: (b, from) => got.push({ text: text(b), from }), onError: () => {} });
  return {
    got,
    local: sock.local,
    send: (s: string | Uint8Array, to: Address) => sock!.send(typeof s === 'string' ? Buffer.from(s, 'latin1') : s, to),
    close: () => sock!.close(),
  };
}

test("classic client against a udpipe server: the seed's sequence byte for byte, messages both ways, stall, close", async () => {
  const net = new SimNetwork({ seed: 1, conditions: { latencyMs: 5 } });
  const server = new UDPipe({ ...T, token: 'lua', transport: net.transport(S) });
  const seen: string[] = [];
  let newClient: unknown[] = [];
  server.onNewClient = (...args) => (newClient = args.slice(0, 5));
  server.onNewMessage = function (m, sock) {
    seen.push(`msg ${m}`);
    this.send(`echo ${m}`, sock);
  };
  server.onStalled = () => seen.push('stalled');
  server.onUnstalled = () => seen.push('unstalled');
  server.onClose = (_s, reason) => seen.push(`close ${reason}`);
  await server.start(PORT, S);
  const c = await rawSocket(net, '127.0.2.1');
  c.send('HELLO lua', { address: S, port: PORT });
  await net.advance(50);
  assert.equal(c.got.length, 2);
  const m = /^CONNECT (\S+) (\d+)$/.exec(c.got[0]!.text);
  assert.ok(m, `redirect: ${c.got[0]!.text}`);
  assert.equal(c.got[1]!.text, 'GO AWAY!');
  assert.deepEqual(c.got[0]!.from, { address: S, port: PORT }, 'both from the public socket');
  const sc = { address: m[1]!, port: Number(m[2]) };
  assert.equal(sc.address, S);
  assert.notEqual(sc.port, PORT);
  c.got.length = 0;
  c.send('CONNECT', sc);
  await net.advance(20);
  assert.equal(c.got[0]?.text, 'CONNECTED');
  assert.deepEqual(c.got[0]!.from, sc);
  assert.equal(server.clients.length, 1);
  const peer = server.clients[0]!;
  assert.equal(peer.protocol, 'classic');
  assert.deepEqual(
    newClient,
    ['HELLO lua', S, sc.port, '127.0.2.1', c.local.port],
    'onNewClient(msg, private ip, private port, client ip, client port)',
  );
  // Data both ways, and PING/PONG both ways.
  c.send('hello server', sc);
  c.send('PING', sc);
  await net.advance(150);
  assert.ok(c.got.some((d) => d.text === 'echo hello server'));
  assert.ok(
    c.got.some((d) => d.text === 'PONG'),
    'our PING answered',
  );
  assert.ok(
    c.got.some((d) => d.text === 'PING'),
    'the server pings too',
  );
  // A stall: the client goes quiet; messages sent meanwhile wait and arrive after.
  c.got.length = 0;
  await net.advance(600);
  assert.equal(peer.state, 'stalled');
  const pingsWhileStalled = c.got.filter((d) => d.text === 'PING').length;
  assert.ok(pingsWhileStalled > 0, 'keeps pinging while stalled');
  assert.equal(server.send('while you were away', peer), true);
  assert.ok(!c.got.some((d) => d.text === 'while you were away'), 'queued while stalled');
  c.send('PONG', sc);
  await net.advance(20);
  assert.equal(peer.state, 'connected');
  assert.ok(
    c.got.some((d) => d.text === 'while you were away'),
    'flushed when the link came back',
  );
  // Misuse is caught at the call site.
  assert.throws(
    () => server.send('PING', peer),
    (e: unknown) => e instanceof UDPipeError && e.code === 'ERR_INVALID_ARGUMENT' && /control word/.test(e.message),
  );
  assert.throws(
    () => server.send(new Uint8Array(9000), peer),
    (e: unknown) => e instanceof UDPipeError && e.code === 'ERR_MESSAGE_TOO_LARGE',
  );
  // The client closes.
  c.got.length = 0;
  c.send('CLOSE', sc);
  await net.advance(20);
  assert.ok(c.got.some((d) => d.text === 'CLOSED'));
  assert.deepEqual(seen, ['msg hello server', 'stalled', 'unstalled', 'close normal']);
  assert.equal(server.clients.length, 0);
  const closing = server.close();
  await net.advance(3000);
  await closing;
});

test('classic: a bad token gets no answer and onBadToken; the server closes a classic client with CLOSE', async () => {
  const net = new SimNetwork({ seed: 2, conditions: { latencyMs: 5 } });
  const server = new UDPipe({ ...T, token: 'right', transport: net.transport(S) });
  const bad: unknown[][] = [];
  server.onBadToken = (...a) => bad.push(a);
  await server.start(PORT, S);
  const c = await rawSocket(net, '127.0.2.1');
  c.send('HELLO wrong', { address: S, port: PORT });
  await net.advance(50);
  assert.equal(c.got.length, 0);
  assert.deepEqual(bad, [['HELLO wrong', '127.0.2.1', c.local.port]]);
  c.send('HELLO right', { address: S, port: PORT });
  await net.advance(50);
  const [, ip, port] = /^CONNECT (\S+) (\d+)$/.exec(c.got[0]!.text)!;
  const sc = { address: ip!, port: Number(port) };
  c.send('CONNECT', sc);
  await net.advance(20);
  const peer: Peer = server.clients[0]!;
  c.got.length = 0;
  const closing = server.close(peer);
  await net.advance(20);
  assert.ok(c.got.some((d) => d.text === 'CLOSE'));
  c.send('CLOSED', sc);
  await net.advance(20);
  await closing;
  assert.equal(server.clients.length, 0);
  const stopping = server.close();
  await net.advance(3000);
  await stopping;
});

test('classic and modern clients on one server: sendAll reaches both; maxClients counts both', async () => {
  const net = new SimNetwork({ seed: 3, conditions: { latencyMs: 5 } });
  const server = new UDPipe({ ...T, maxClients: 2, transport: net.transport(S) });
  const full: string[] = [];
  server.onMaxClients = (msg) => full.push(msg);
  await server.start(PORT, S);
  const modern = new UDPipe({ ...T, transport: net.transport('127.0.3.1') });
  const gotModern: string[] = [];
  modern.onNewMessage = (m) => gotModern.push(String(m));
  void modern.connect(S, PORT, 5);
  const c = await rawSocket(net, '127.0.2.1');
  c.send('HELLO ', { address: S, port: PORT });
  await net.advance(50);
  const [, ip, port] = /^CONNECT (\S+) (\d+)$/.exec(c.got[0]!.text)!;
  c.send('CONNECT', { address: ip!, port: Number(port) });
  await net.advanceUntil(() => server.clients.length === 2, 2000);
  assert.deepEqual(server.clients.map((p) => p.protocol).sort(), ['classic', 'udpipe']);
  const third = await rawSocket(net, '127.0.2.2');
  third.send('HELLO ', { address: S, port: PORT });
  await net.advance(50);
  assert.deepEqual(full, ['HELLO '], 'a third client, classic, is refused');
  assert.equal(third.got.length, 0);
  // The classic client takes a modern one's room too.
  const late = new UDPipe({ ...T, transport: net.transport('127.0.3.2') });
  late.connect(S, PORT, 1).catch(() => {});
  await net.advanceUntil(() => full.length >= 2, 2000);
  assert.equal(full[1], 'CONNECT', 'a third client, modern, is refused too');
  assert.equal(server.clients.length, 2);
  server.sendAll('to everyone');
  await net.advance(50);
  assert.deepEqual(gotModern, ['to everyone']);
  assert.ok(c.got.some((d) => d.text === 'to everyone'));
  const closing = Promise.all([modern.close(), late.close(), server.close()]);
  await net.advance(5000);
  await closing;
});

test("protocol: 'classic' client against a udpipe server: messages both ways, a stall with queued sends, a reconnect, close", async () => {
  const net = new SimNetwork({ seed: 4, conditions: { latencyMs: 5 } });
  const server = new UDPipe({ ...T, token: 'lua', transport: net.transport(S) });
  const atServer: string[] = [];
  server.onNewMessage = function (m, sock) {
    atServer.push(String(m));
    this.send(`echo ${m}`, sock);
  };
  await server.start(PORT, S);
  const client = new UDPipe({
    ...T,
    token: 'lua',
    protocol: 'classic',
    reconnect: { minDelayMs: 50, maxDelayMs: 200 },
    transport: net.transport('127.0.2.1'),
  });
  const events: string[] = [];
  const atClient: string[] = [];
  client.onConnecting = (_s, ip, port) => events.push(`connecting ${ip} ${port !== PORT}`);
  client.onConnect = () => events.push('connect');
  client.onStalled = () => events.push('stalled');
  client.onUnstalled = () => events.push('unstalled');
  client.onDisconnect = () => events.push('disconnect');
  client.onNewMessage = (m) => atClient.push(String(m));
  let peer: Peer | undefined;
  void client.connect(S, PORT, 5).then((p) => (peer = p));
  client.send('sent before connecting');
  await net.advanceUntil(() => peer !== undefined, 2000);
  assert.equal(peer!.protocol, 'classic');
  assert.deepEqual(events, ['connecting 127.0.1.1 true', 'connect'], 'onConnecting names the private socket');
  await net.advance(50);
  assert.deepEqual(atClient, ['echo sent before connecting']);
  // A stall: sends wait and go out when the link returns.
  net.partition(S, '127.0.2.1', net.now, net.now + 700);
  await net.advance(500);
  client.send('during the stall');
  await net.advance(400);
  assert.deepEqual(events.slice(2), ['stalled', 'unstalled']);
  assert.ok(atServer.includes('during the stall'));
  // A partition longer than the timeout: disconnect, reconnect (a new HELLO), and on.
  net.partition(S, '127.0.2.1', net.now, net.now + 2000);
  await net.advance(2500);
  await net.advanceUntil(() => events.filter((e) => e === 'connect').length === 2, 5000);
  assert.ok(events.includes('disconnect'));
  client.send('after reconnecting');
  await net.advance(100);
  assert.ok(atClient.includes('echo after reconnecting'));
  assert.throws(
    () => client.send('CLOSE'),
    (e: unknown) => e instanceof UDPipeError && e.code === 'ERR_INVALID_ARGUMENT',
  );
  const closing = client.close();
  await net.advance(200);
  await closing;
  assert.equal(server.clients.length, 0, 'CLOSE/CLOSED ended it on the server too');
  const stopping = server.close();
  await net.advance(3000);
  await stopping;
});

test('classic: forged HELLOs (right token, many source addresses) neither crowd out clients nor make a reflector', async () => {
  const net = new SimNetwork({ seed: 6, conditions: { latencyMs: 5 }, capture: true });
  const server = new UDPipe({ ...T, token: 'k', maxClients: 100, transport: net.transport(S) });
  await server.start(PORT, S);
  const forgers = await Promise.all(Array.from({ length: 200 }, (_, i) => rawSocket(net, `127.0.${3 + (i >> 6)}.${(i % 64) + 1}`)));
  for (let round = 0; round < 5; round++) {
    for (const f of forgers) f.send('HELLO k', { address: S, port: PORT });
    await net.advance(100);
  }
  const redirects = net.captured.filter((d) => d.from.port === PORT && Buffer.from(d.bytes).toString('latin1').startsWith('CONNECT '));
  // handshakesPerSecond (50, bursts of 100) over half a second, and at most 64 private sockets.
  assert.ok(redirects.length <= 130, `${redirects.length} redirects for 1000 forged HELLOs`);
  assert.ok(new Set(redirects.map((d) => Buffer.from(d.bytes).toString('latin1'))).size <= 64, 'at most 64 pending private sockets');
  // A modern client and a real classic client still get in.
  const modern = new UDPipe({ ...T, token: 'k', transport: net.transport('127.0.2.9') });
  let connected = false;
  void modern.connect(S, PORT, 5).then(() => (connected = true));
  await net.advanceUntil(() => connected, 3000);
  assert.ok(connected, 'a modern client is not crowded out');
  await net.advance(T.timeoutMs + 100); // the forged ones expire unanswered
  const real = await rawSocket(net, '127.0.2.1');
  real.send('HELLO k', { address: S, port: PORT });
  await net.advance(50);
  const m = /^CONNECT (\S+) (\d+)$/.exec(real.got[0]?.text ?? '');
  assert.ok(m, 'a real classic client gets its redirect once the forged ones expired');
  real.send('CONNECT', { address: m[1]!, port: Number(m[2]) });
  await net.advance(50);
  assert.equal(server.clients.length, 2);
  const closing = Promise.all([modern.close(), server.close()]);
  await net.advance(5000);
  await closing;
});

test('classic: off with classic: false (a HELLO is just malformed); with autoStep: false nothing moves outside step()', async () => {
  const net = new SimNetwork({ seed: 7, conditions: { latencyMs: 5 } });
  const off = new UDPipe({ ...T, classic: false, transport: net.transport(S) });
  await off.start(PORT, S);
  const c = await rawSocket(net, '127.0.2.1');
  c.send('HELLO ', { address: S, port: PORT });
  await net.advance(50);
  assert.equal(c.got.length, 0);
  assert.equal((off.stats() as { malformed: number }).malformed, 1);
  const offClosing = off.close();
  await net.advance(100);
  await offClosing;

  const server = new UDPipe({ ...T, autoStep: false, transport: net.transport('127.0.1.2') });
  const got: string[] = [];
  server.onNewMessage = (m) => got.push(String(m));
  await server.start(PORT, '127.0.1.2');
  c.send('HELLO ', { address: '127.0.1.2', port: PORT });
  await net.advance(50);
  assert.equal(c.got.length, 0, 'not answered before step()');
  server.step(); // takes the HELLO, opens the private socket
  await net.advance(50);
  assert.equal(c.got.length, 0, 'the redirect waits for the next step() too');
  server.step();
  await net.advance(50);
  const [, ip, port] = /^CONNECT (\S+) (\d+)$/.exec(c.got[0]!.text)!;
  const sc = { address: ip!, port: Number(port) };
  c.send('CONNECT', sc);
  await net.advance(20);
  assert.equal(server.clients.length, 0);
  server.step();
  await net.advance(20);
  assert.equal(server.clients.length, 1);
  c.send('data', sc);
  await net.advance(20);
  assert.deepEqual(got, []);
  server.step();
  assert.deepEqual(got, ['data']);
  const closing = server.close();
  for (let i = 0; i < 100 && server.clients.length > 0; i++) {
    server.step();
    await net.advance(50);
  }
  c.send('CLOSED', sc);
  for (let i = 0; i < 100; i++) {
    server.step();
    await net.advance(50);
  }
  await closing;
});

test('classic: random datagrams never throw and leave a link in a valid state with a deadline ahead', () => {
  fc.assert(
    fc.property(
      fc.array(
        fc.oneof(
          fc.uint8Array({ maxLength: 9000 }),
          fc
            .constantFrom(
              'PING',
              'PONG',
              'CONNECT',
              'CONNECTED',
              'CLOSE',
              'CLOSED',
              'GO AWAY!',
              'HELLO x',
              'CONNECT 1.2.3.4 99999',
              'CONNECT ::1 5',
            )
            .map((w) => Buffer.from(w)),
        ),
        { maxLength: 50 },
      ),
      fc.constantFrom<'client' | 'server'>('client', 'server'),
      (datagrams, role) => {
        const link = new ClassicLink(role, { ...T, closeTimeoutMs: 1000, maxQueue: 100, highWaterMark: 1 << 20 }, 0);
        let now = 0;
        for (const d of datagrams) {
          parseClassicHello(d);
          parseClassicRedirect(d);
          link.handleDatagram(new Uint8Array(d), (now += 10));
          link.handleTimeout(now);
          while (link.pollTransmit());
          while (link.pollEvent());
        }
        assert.ok(['connecting', 'connected', 'stalled', 'closing', 'closed'].includes(link.state));
        assert.ok(link.nextDeadline() > now || link.finished || link.state === 'closed');
      },
    ),
    { numRuns: 500 },
  );
});

test('classic: sends from onConnecting go out once connected; HELLO and CONNECT during shutdown make no client; maxClientsPerAddress applies', async () => {
  const net = new SimNetwork({ seed: 8, conditions: { latencyMs: 5 } });
  const server = new UDPipe({ ...T, maxClientsPerAddress: 1, transport: net.transport(S) });
  const got: string[] = [];
  let refused = 0;
  server.onNewMessage = (m) => got.push(String(m));
  server.onMaxClients = () => refused++;
  await server.start(PORT, S);
  const client = new UDPipe({ ...T, protocol: 'classic', transport: net.transport('127.0.2.1') });
  client.onConnecting = function () {
    this.send('from onConnecting');
  };
  void client.connect(S, PORT, 5);
  await net.advanceUntil(() => got.length === 1, 2000);
  assert.deepEqual(got, ['from onConnecting']);
  // A second client from the same IP address: refused by maxClientsPerAddress.
  const second = await rawSocket(net, '127.0.2.1');
  second.send('HELLO ', { address: S, port: PORT });
  await net.advance(50);
  assert.equal(second.got.length, 0);
  assert.equal(refused, 1);
  // Shutdown: a HELLO arriving now, and a CONNECT for a handshake pending before, make nothing.
  const late = await rawSocket(net, '127.0.2.2');
  late.send('HELLO ', { address: S, port: PORT });
  await net.advance(50);
  const [, ip, port] = /^CONNECT (\S+) (\d+)$/.exec(late.got[0]!.text)!;
  let newClients = 0;
  server.onNewClient = () => newClients++;
  const closing = server.close();
  const later = await rawSocket(net, '127.0.2.3');
  later.send('HELLO ', { address: S, port: PORT });
  late.send('CONNECT', { address: ip!, port: Number(port) });
  await net.advance(3000);
  await closing;
  assert.equal(newClients, 0);
  assert.equal(later.got.length, 0);
  assert.ok(!late.got.some((d) => d.text === 'CONNECTED'));
  const clientClosing = client.close();
  await net.advance(3000);
  await clientClosing;
});

test('classic: a flood of HELLOs with a wrong token calls onBadToken at most handshakesPerSecond times a second (bursts of twice that)', async () => {
  const net = new SimNetwork({ seed: 9, conditions: { latencyMs: 2 } });
  const server = new UDPipe({ ...T, token: 'right', handshakesPerSecond: 10, transport: net.transport(S) });
  let calls = 0;
  server.onBadToken = () => calls++;
  await server.start(PORT, S);
  const c = await rawSocket(net, '127.0.2.1');
  for (let i = 0; i < 500; i++) c.send(`HELLO wrong${i}`, { address: S, port: PORT });
  await net.advance(1000);
  assert.ok(calls >= 20 && calls <= 31, `${calls} onBadToken calls for 500 bad HELLOs in one second`);
  assert.equal(c.got.length, 0);
  const closing = server.close();
  await net.advance(100);
  await closing;
});
