/**
 * Tests for one-line bugs in the classic (Lua UDPIPE) protocol that survived a hand
 * mutation run (K1 to K10: the repeated CONNECT, the stall queue on close, the stall
 * timer, the HELLO/CONNECT retransmission, CLOSE answers, the control-word check, the
 * room a leaving peer gives back, the 8192-byte limit). Each test here fails on its
 * mutant, named in the test. All run in virtual time: the sans-I/O ClassicLink and
 * ClassicClient driven by hand, or the simulator in src/testing.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { checkClassicMessage, classicCarries } from '../src/api/classic-side.js';
import { UDPipe, UDPipeError } from '../src/index.js';
import { ClassicClient, type ClassicClientConfig, type ClassicConfig, ClassicLink } from '../src/protocol/classic.js';
import type { ConnectionEvent } from '../src/protocol/config.js';
import { SimNetwork } from '../src/testing/index.js';
import type { Address, DatagramSocket } from '../src/transport/types.js';
import { CLASSIC_MAX_DATAGRAM, isClassicControlWord } from '../src/wire/classic.js';

/** Pings rarely, so they stay out of the way of what a test watches. */
const CFG: ClassicConfig = {
  pingIntervalMs: 10_000,
  stallTimeoutMs: 400,
  timeoutMs: 1500,
  closeTimeoutMs: 1000,
  maxQueue: 100,
  highWaterMark: 1 << 20,
};
const RETRY_MS = 250;
const LINGER_MS = 2000;
const bytes = (s: string) => new Uint8Array(Buffer.from(s, 'latin1'));
const text = (b: Uint8Array) => Buffer.from(b).toString('latin1');
const code = (c: string) => (err: unknown) => err instanceof UDPipeError && err.code === c;

/** What a link has to send, as text (bounded). */
function sent(link: ClassicLink): string[] {
  const out: string[] = [];
  for (let i = 0; i < 1000; i++) {
    const b = link.pollTransmit();
    if (!b) break;
    out.push(text(b));
  }
  return out;
}

/** What a link reported (bounded). */
function events(link: ClassicLink): ConnectionEvent[] {
  const out: ConnectionEvent[] = [];
  for (let i = 0; i < 1000; i++) {
    const e = link.pollEvent();
    if (!e) break;
    out.push(e);
  }
  return out;
}

/** A server link whose client said CONNECT at `now`, its CONNECTED and events taken. */
function connectedServer(now = 0, cfg: ClassicConfig = CFG): ClassicLink {
  const link = new ClassicLink('server', { ...cfg }, now);
  link.handleDatagram(bytes('CONNECT'), now);
  assert.deepEqual(sent(link), ['CONNECTED']);
  assert.equal(link.state, 'connected');
  events(link);
  return link;
}

/**
 * Moves datagrams between two links at `now` until both are quiet (at most `rounds`
 * rounds): the log of what went which way. `drop` may lose a datagram.
 */
function shuttle(
  a: ClassicLink,
  b: ClassicLink,
  now: number,
  log: string[] = [],
  drop: (dir: string, d: string) => boolean = () => false,
  rounds = 20,
): string[] {
  for (let r = 0; r < rounds; r++) {
    let moved = false;
    for (const [from, to, dir] of [
      [a, b, 'a>b'],
      [b, a, 'b>a'],
    ] as const) {
      for (const d of sent(from)) {
        moved = true;
        log.push(`${dir} ${d}`);
        if (!drop(dir, d)) to.handleDatagram(bytes(d), now);
      }
    }
    if (!moved) break;
  }
  return log;
}

/** A raw socket that records what it gets, as a Lua script would see it. */
async function rawSocket(net: SimNetwork, host: string) {
  const got: { text: string; from: Address }[] = [];
  const sock: DatagramSocket = await net
    .transport(host)
    .bind(0, host, { onDatagram: (b, from) => got.push({ text: text(b), from }), onError: () => {} });
  return { got, send: (s: string, to: Address) => sock.send(bytes(s), to) };
}

const SERVER = { address: '10.0.0.1', port: 1234 };
const SC = { address: '10.0.0.2', port: 4000 };

function clientCfg(patch: Partial<ClassicClientConfig> = {}): ClassicClientConfig {
  return {
    ...CFG,
    token: 'lua',
    handshakeRetryMs: 100,
    reconnect: { enabled: true, minDelayMs: 50, maxDelayMs: 500 },
    ...patch,
  };
}

function drainClient(c: ClassicClient): { text: string; to: Endpoint }[] {
  const out: { text: string; to: Endpoint }[] = [];
  for (let i = 0; i < 1000; i++) {
    const d = c.pollTransmit();
    if (!d) break;
    out.push({ text: text(d.bytes), to: d.to });
  }
  return out;
}
type Endpoint = { address: string; port: number };

/** Runs a client from deadline to deadline until `until`: when it sent what (bounded). */
function runClient(c: ClassicClient, from: number, until: number): { at: number; text: string; to: number }[] {
  const log: { at: number; text: string; to: number }[] = [];
  let now = from;
  for (let i = 0; i < 200; i++) {
    for (const d of drainClient(c)) log.push({ at: now, text: d.text, to: d.to.port });
    const next = c.nextDeadline();
    if (next > until) break;
    now = next;
    c.handleTimeout(now);
  }
  return log;
}

// ---- K1: a repeated CONNECT -----------------------------------------------------------

test('a repeated CONNECT from a connected classic client is answered with CONNECTED again (mutant K1: only the first CONNECT answered)', () => {
  const link = connectedServer(0);
  link.handleDatagram(bytes('CONNECT'), 50);
  assert.deepEqual(sent(link), ['CONNECTED'], 'our first CONNECTED may have been lost');
  assert.equal(link.state, 'connected');
  assert.deepEqual(events(link), [], 'no second connection');
  // Stalled too: the CONNECT wakes the link and is answered.
  link.handleTimeout(50 + CFG.stallTimeoutMs);
  assert.equal(link.state, 'stalled');
  link.handleDatagram(bytes('CONNECT'), 500);
  assert.deepEqual(sent(link), ['CONNECTED']);
  assert.equal(link.state, 'connected');
});

test('a client whose CONNECTED was lost connects on its next CONNECT (mutant K1: the repeated CONNECT unanswered)', () => {
  const client = new ClassicLink('client', { ...CFG }, 0);
  const server = new ClassicLink('server', { ...CFG }, 0);
  let lost = 0;
  const log = shuttle(client, server, 0, [], (dir, d) => dir === 'b>a' && d === 'CONNECTED' && lost++ === 0);
  assert.deepEqual(log, ['a>b CONNECT', 'b>a CONNECTED']);
  assert.equal(server.state, 'connected');
  assert.equal(client.state, 'connecting');
  assert.equal(client.nextDeadline(), RETRY_MS, 'CONNECT again after RETRY_MS');
  client.handleTimeout(RETRY_MS);
  assert.deepEqual(shuttle(client, server, RETRY_MS), ['a>b CONNECT', 'b>a CONNECTED']);
  assert.equal(client.state, 'connected');
});

// ---- K2: close flushes the stall queue ------------------------------------------------

test('closing a stalled link sends what its stall queue held before CLOSE (mutant K2: close without flush)', () => {
  const link = connectedServer(0);
  link.handleTimeout(CFG.stallTimeoutMs);
  assert.equal(link.state, 'stalled');
  assert.equal(link.send(bytes('first')), true);
  assert.equal(link.send(bytes('second')), true);
  assert.deepEqual(sent(link), [], 'queued while stalled');
  assert.equal(link.stats().queueLength, 2);
  link.close(500);
  assert.deepEqual(sent(link), ['first', 'second', 'CLOSE'], 'the peer may still hear them');
  assert.equal(link.stats().queueLength, 0);
  assert.equal(link.stats().messagesSent, 2);
  assert.deepEqual(link.takeQueued(), [], 'nothing left behind');
});

test('a classic client closing while stalled sends its queued messages, then CLOSE (mutant K2: close without flush)', () => {
  const c = new ClassicClient(clientCfg());
  c.server = SERVER;
  c.start(0, Infinity);
  drainClient(c);
  c.handleDatagram(bytes('CONNECT 10.0.0.2 4000'), SERVER, 10);
  c.handleDatagram(bytes('CONNECTED'), SC, 20);
  assert.equal(c.state, 'connected');
  drainClient(c);
  c.handleTimeout(20 + CFG.stallTimeoutMs);
  assert.equal(c.connection?.state, 'stalled');
  c.send(bytes('late news'));
  assert.deepEqual(drainClient(c), []);
  c.close(500);
  assert.deepEqual(
    drainClient(c).map((d) => `${d.to.port} ${d.text}`),
    ['4000 late news', '4000 CLOSE'],
  );
});

// ---- K3: the stall timer --------------------------------------------------------------

test('a classic link stalls exactly stallTimeoutMs after the last datagram, not a tick before or after (mutant K3: the stall timer off by one)', () => {
  const link = connectedServer(0);
  assert.equal(link.nextDeadline(), CFG.stallTimeoutMs, 'armed when the handshake ends');
  link.handleTimeout(CFG.stallTimeoutMs - 1);
  assert.equal(link.state, 'connected', 'one tick early');
  assert.deepEqual(events(link), []);
  link.handleTimeout(CFG.stallTimeoutMs);
  assert.equal(link.state, 'stalled', 'at the deadline');
  assert.deepEqual(
    events(link).map((e) => e.type),
    ['stalled'],
  );
  // Any datagram re-arms it from its arrival.
  link.handleDatagram(bytes('PONG'), 450);
  assert.equal(link.state, 'connected');
  assert.equal(link.nextDeadline(), 450 + CFG.stallTimeoutMs);
  link.handleTimeout(450 + CFG.stallTimeoutMs - 1);
  assert.equal(link.state, 'connected');
  link.handleDatagram(bytes('some data'), 600);
  link.handleTimeout(600 + CFG.stallTimeoutMs - 1);
  assert.equal(link.state, 'connected', 'data re-arms it too');
  link.handleTimeout(600 + CFG.stallTimeoutMs);
  assert.equal(link.state, 'stalled');
});

test('a classic client link stalls exactly stallTimeoutMs after CONNECTED (mutant K3: the stall timer off by one)', () => {
  const link = new ClassicLink('client', { ...CFG }, 0);
  assert.deepEqual(sent(link), ['CONNECT']);
  link.handleDatagram(bytes('CONNECTED'), 30);
  assert.equal(link.state, 'connected');
  link.handleTimeout(30 + CFG.stallTimeoutMs - 1);
  assert.equal(link.state, 'connected');
  link.handleTimeout(30 + CFG.stallTimeoutMs);
  assert.equal(link.state, 'stalled');
  // And it times out exactly timeoutMs after the last datagram.
  link.handleTimeout(30 + CFG.timeoutMs - 1);
  assert.equal(link.state, 'stalled');
  link.handleTimeout(30 + CFG.timeoutMs);
  assert.equal(link.state, 'closed');
});

// ---- K4: HELLO and CONNECT retransmission ---------------------------------------------

test('classic HELLO is repeated after handshakeRetryMs, doubling up to reconnect.maxDelayMs (mutant K4: no doubling, or another cap)', () => {
  const c = new ClassicClient(clientCfg());
  c.server = SERVER;
  c.start(0, Infinity);
  const hellos = runClient(c, 0, 2300);
  assert.ok(hellos.every((h) => h.text === 'HELLO lua' && h.to === SERVER.port));
  assert.deepEqual(
    hellos.map((h) => h.at),
    [0, 100, 300, 700, 1200, 1700, 2200],
    '100, 200, 400, then capped at 500',
  );
});

test('classic CONNECT is repeated every 250 ms until CONNECTED; a link that never connects starts over with HELLO at the first interval (mutant K4: the backoff not reset)', () => {
  const c = new ClassicClient(clientCfg());
  c.server = SERVER;
  c.start(0, Infinity);
  runClient(c, 0, 1000); // HELLOs at 0, 100, 300, 700, 1200 (not yet)
  c.handleDatagram(bytes(`CONNECT ${SC.address} ${SC.port}`), SERVER, 1000);
  const log = runClient(c, 1000, 1000 + CFG.timeoutMs + 350);
  const connects = log.filter((d) => d.text === 'CONNECT' && d.at < 1000 + CFG.timeoutMs);
  assert.ok(connects.every((d) => d.to === SC.port));
  assert.deepEqual(
    connects.map((d) => d.at),
    [1000, 1250, 1500, 1750, 2000, 2250],
    'every RETRY_MS, no backoff',
  );
  assert.equal(
    log.some((d) => d.text === 'HELLO lua' && d.at < 1000 + CFG.timeoutMs),
    false,
    'no HELLO while the private socket is tried',
  );
  const hellos = log.filter((d) => d.text === 'HELLO lua');
  assert.deepEqual(
    hellos.map((d) => d.at),
    [2500, 2600, 2800],
    'the private socket never answered: HELLO again, from handshakeRetryMs',
  );
});

// ---- K5: CLOSE and CLOSED -------------------------------------------------------------

test("a peer's CLOSE is answered with one CLOSED, a repeated CLOSE again while lingering, and nothing else is answered (mutant K5)", () => {
  const link = connectedServer(0);
  link.handleDatagram(bytes('CLOSED'), 50);
  assert.equal(link.state, 'connected', 'a stray CLOSED ends nothing');
  assert.deepEqual(sent(link), [], 'and is not answered');
  link.handleDatagram(bytes('CLOSE'), 100);
  assert.deepEqual(sent(link), ['CLOSED']);
  assert.equal(link.state, 'closed');
  assert.deepEqual(events(link), [{ type: 'ended', reason: 'normal', byPeer: true }]);
  link.handleDatagram(bytes('CLOSE'), 200);
  assert.deepEqual(sent(link), ['CLOSED'], 'our CLOSED may have been lost');
  for (const word of ['CLOSED', 'PING', 'CONNECT', 'data']) {
    link.handleDatagram(bytes(word), 300);
    assert.deepEqual(sent(link), [], `${word} after the end is not answered`);
  }
  assert.deepEqual(events(link), []);
  link.handleTimeout(100 + LINGER_MS);
  assert.equal(link.finished, true);
  link.handleDatagram(bytes('CLOSE'), 100 + LINGER_MS + 1);
  assert.deepEqual(sent(link), [], 'the linger is over');
});

test('a CLOSED is never answered: one close, and both ends closing at once, end in a bounded exchange (mutant K5: a reply loop)', () => {
  const a = connectedServer(0);
  const b = new ClassicLink('client', { ...CFG }, 0);
  b.handleDatagram(bytes('CONNECTED'), 0);
  sent(b);
  events(b);
  a.close(10);
  assert.deepEqual(shuttle(a, b, 10), ['a>b CLOSE', 'b>a CLOSED']);
  assert.deepEqual([a.state, b.state], ['closed', 'closed']);
  assert.deepEqual(events(a), [{ type: 'ended', reason: 'normal', byPeer: false }]);
  assert.deepEqual(events(b), [{ type: 'ended', reason: 'normal', byPeer: true }]);
  // Both at once: each answers the other's CLOSE, and neither answers the CLOSED.
  const c = connectedServer(0);
  const d = new ClassicLink('client', { ...CFG }, 0);
  d.handleDatagram(bytes('CONNECTED'), 0);
  sent(d);
  c.close(10);
  d.close(10);
  const log = shuttle(c, d, 10);
  assert.deepEqual(log.sort(), ['a>b CLOSE', 'a>b CLOSED', 'b>a CLOSE', 'b>a CLOSED']);
  assert.deepEqual([c.state, d.state], ['closed', 'closed']);
  // Nor does anything go out later, until both sockets may go.
  for (const link of [c, d]) {
    for (let i = 0; i < 20 && !link.finished; i++) {
      link.handleTimeout(link.nextDeadline());
      assert.deepEqual(sent(link), []);
    }
    assert.equal(link.finished, true);
  }
});

test('a closing link repeats CLOSE every 250 ms until CLOSED, and CLOSED ends it (mutant K5: CLOSE not repeated)', () => {
  const a = connectedServer(0);
  a.close(0);
  assert.deepEqual(sent(a), ['CLOSE']);
  a.handleTimeout(RETRY_MS - 1);
  assert.deepEqual(sent(a), []);
  a.handleTimeout(RETRY_MS);
  assert.deepEqual(sent(a), ['CLOSE']);
  a.handleTimeout(2 * RETRY_MS);
  assert.deepEqual(sent(a), ['CLOSE']);
  assert.equal(a.state, 'closing');
  a.handleDatagram(bytes('CLOSED'), 2 * RETRY_MS + 10);
  assert.equal(a.state, 'closed');
  a.handleTimeout(3 * RETRY_MS);
  assert.deepEqual(sent(a), [], 'answered: no more CLOSE');
});

// ---- K6: the control words ------------------------------------------------------------

test('the control words are recognised whole, CONNECTED at its 9 bytes, and nothing that merely starts with one (mutant K6)', () => {
  for (const w of ['PING', 'PONG', 'CONNECT', 'CONNECTED', 'CLOSE', 'CLOSED', 'GO AWAY!']) {
    assert.equal(isClassicControlWord(bytes(w)), true, w);
    assert.equal(classicCarries(bytes(w)), false, w);
    assert.throws(() => checkClassicMessage(bytes(w), 'peer'), code('ERR_INVALID_ARGUMENT'), w);
  }
  assert.equal(bytes('CONNECTED').length, 9);
  for (const m of ['CONNECTED!', 'CONNECTEDX', 'PINGPONG!', 'PING ', 'CLOSED 1', 'CONNECTE', 'CONNECTEX', ' PING', 'ping', '']) {
    assert.equal(isClassicControlWord(bytes(m)), false, JSON.stringify(m));
    assert.equal(classicCarries(bytes(m)), true, JSON.stringify(m));
    assert.doesNotThrow(() => checkClassicMessage(bytes(m), 'peer'), JSON.stringify(m));
  }
});

test('a classic link takes only the exact control words for control, everything else is data (mutant K6)', () => {
  const client = new ClassicLink('client', { ...CFG }, 0);
  sent(client);
  client.handleDatagram(bytes('CONNECTEDX'), 10);
  assert.equal(client.state, 'connecting', 'not CONNECTED');
  client.handleDatagram(bytes('CONNECTED'), 20);
  assert.equal(client.state, 'connected', 'CONNECTED, all 9 bytes');
  const link = connectedServer(0);
  const words = ['PING', 'PINGS', 'PONG!', 'CONNECTED', 'CONNECTED!', 'CLOSEX', 'CLOSED!', 'GO AWAY!!'];
  for (const w of words) link.handleDatagram(bytes(w), 30);
  const got = events(link);
  assert.deepEqual(
    got.filter((e) => e.type === 'message').map((e) => (e.type === 'message' ? text(e.data) : '')),
    ['PINGS', 'PONG!', 'CONNECTED!', 'CLOSEX', 'CLOSED!', 'GO AWAY!!'],
  );
  assert.deepEqual(sent(link), ['PONG'], 'only the PING answered');
  assert.equal(link.state, 'connected');
});

// ---- K8: the room a leaving classic client gives back ---------------------------------

/**
 * A classic server with `limits` and room for one more client: a client joins, one
 * more is refused, the first leaves by CLOSE, the next joins and times out, and the
 * one after joins too. `hosts`: the IP address of each of the five clients.
 */
async function roomComesBack(limits: { maxClients: number; maxClientsPerAddress?: number }, hosts: string[], seed: number) {
  const S = '127.0.1.1';
  const PORT = 1234;
  const net = new SimNetwork({ seed, conditions: { latencyMs: 5 } });
  const server = new UDPipe({
    pingIntervalMs: 100,
    stallTimeoutMs: 400,
    timeoutMs: 1500,
    classic: true,
    ...limits,
    transport: net.transport(S),
  });
  const full: string[] = [];
  server.onMaxClients = (_msg, ip) => full.push(ip);
  await server.start(PORT, S);
  const join = async (host: string) => {
    const c = await rawSocket(net, host);
    c.send('HELLO ', { address: S, port: PORT });
    await net.advance(50);
    const m = /^CONNECT (\S+) (\d+)$/.exec(c.got[0]?.text ?? '');
    if (!m) return undefined;
    const sc = { address: m[1]!, port: Number(m[2]) };
    c.send('CONNECT', sc);
    await net.advance(50);
    assert.ok(c.got.some((d) => d.text === 'CONNECTED'));
    return { ...c, sc };
  };
  const a = await join(hosts[0]!);
  assert.ok(a);
  assert.equal(server.clients.length, 1);
  assert.equal(await join(hosts[1]!), undefined, 'no room while the first is connected');
  assert.deepEqual(full, [hosts[1]]);
  a.send('CLOSE', a.sc);
  await net.advance(50);
  assert.equal(server.clients.length, 0);
  const b = await join(hosts[2]!);
  assert.ok(b, 'the room came back after a CLOSE');
  assert.equal(server.clients.length, 1);
  await net.advance(2000); // b goes quiet: it times out
  assert.equal(server.clients.length, 0);
  assert.ok(await join(hosts[3]!), 'the room came back after a timeout');
  assert.equal(full.length, 1);
  const closing = server.close();
  await net.advance(5000);
  await closing;
}

test('a classic client that leaves (CLOSE or timeout) gives its maxClients room back (mutant K8: the room kept)', async () => {
  await roomComesBack({ maxClients: 1 }, ['127.0.2.1', '127.0.2.2', '127.0.2.3', '127.0.2.4'], 11);
});

test('a classic client that leaves (CLOSE or timeout) gives its maxClientsPerAddress room back (mutant K8: the room kept)', async () => {
  await roomComesBack({ maxClients: 10, maxClientsPerAddress: 1 }, ['127.0.2.1', '127.0.2.1', '127.0.2.1', '127.0.2.1'], 13);
});

// ---- K10: the 8192-byte limit ---------------------------------------------------------

test('a classic message may be 8192 bytes, not one more, both ways (mutant K10: the limit off by one)', () => {
  assert.equal(CLASSIC_MAX_DATAGRAM, 8192, "luasocket's default receive size");
  const max = new Uint8Array(8192).fill(0x61);
  const over = new Uint8Array(8193).fill(0x61);
  assert.equal(classicCarries(max), true);
  assert.equal(classicCarries(over), false);
  assert.doesNotThrow(() => checkClassicMessage(max, 'peer'));
  assert.throws(() => checkClassicMessage(over, 'peer'), code('ERR_MESSAGE_TOO_LARGE'));
  const link = connectedServer(0);
  link.handleDatagram(max, 10);
  link.handleDatagram(over, 20);
  link.handleDatagram(new Uint8Array(8191).fill(0x62), 30);
  const got = events(link).flatMap((e) => (e.type === 'message' ? [e.data.length] : []));
  assert.deepEqual(got, [8192, 8191]);
  assert.equal(link.stats().malformed, 1);
  assert.equal(link.stats().messagesReceived, 2);
  assert.equal(link.send(max), true);
  assert.deepEqual(
    sent(link).map((d) => d.length),
    [8192],
  );
});

test('a classic UDPipe sends an 8192-byte message and refuses 8193 bytes at the call site (mutant K10)', async () => {
  const S = '127.0.1.1';
  const net = new SimNetwork({ seed: 12, conditions: { latencyMs: 5 } });
  const server = new UDPipe({ classic: true, transport: net.transport(S) });
  await server.start(1234, S);
  const c = await rawSocket(net, '127.0.2.1');
  c.send('HELLO ', { address: S, port: 1234 });
  await net.advance(50);
  const [, ip, port] = /^CONNECT (\S+) (\d+)$/.exec(c.got[0]!.text)!;
  c.send('CONNECT', { address: ip!, port: Number(port) });
  await net.advance(50);
  const peer = server.clients[0]!;
  c.got.length = 0;
  assert.equal(server.send(new Uint8Array(8192).fill(0x61), peer), true);
  assert.throws(() => server.send(new Uint8Array(8193), peer), code('ERR_MESSAGE_TOO_LARGE'));
  server.sendAll(new Uint8Array(8193).fill(0x62)); // skipped for the classic peer
  await net.advance(50);
  assert.deepEqual(
    c.got.map((d) => d.text.length),
    [8192],
  );
  const closing = server.close();
  await net.advance(5000);
  c.send('CLOSED', { address: ip!, port: Number(port) });
  await net.advance(3000);
  await closing;
});
