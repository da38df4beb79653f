/**
 * T2: real node:dgram sockets on 127.0.0.1 and ::1, few and bounded. Waits are
 * event-driven with a deadline; protocol behaviour in depth is the simulator's job
 * (sim-scenarios.test.ts).
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { afterEach, describe, test } from 'node:test';
import { MAX_MESSAGE_SIZE, UDPipe, UDPipeError, type Peer, type UDPipeOptions } from '../src/index.js';
import { UdpProxy } from './helpers/udp-proxy.js';

const FAST: UDPipeOptions = { pingIntervalMs: 50, stallTimeoutMs: 200, timeoutMs: 600, reconnect: { minDelayMs: 20, maxDelayMs: 100 } };

const open: { close(): unknown }[] = [];
function track<T extends { close(): unknown }>(x: T): T {
  open.push(x);
  return x;
}
afterEach(async () => {
  for (const x of open.splice(0).reverse()) await x.close();
});

/** Resolves when pred() holds, polling on the event loop; rejects after ms. */
async function until(pred: () => boolean, ms = 5000, what = 'condition'): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => (t = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms))),
  ]).finally(() => clearTimeout(t));
}

async function server(opts: UDPipeOptions = {}, host = '127.0.0.1'): Promise<{ pipe: UDPipe; port: number }> {
  const pipe = track(new UDPipe(opts));
  const { port } = await pipe.start(0, host);
  return { pipe, port };
}

for (const host of ['127.0.0.1', '::1']) {
  test(`the seed's two examples, as written, on ${host}`, { timeout: 10000 }, async () => {
    const srv = track(new UDPipe());
    const { port } = await srv.start(0, host);
    srv.onNewMessage = function (msg, sock) {
      this.send(`Reply from server: ${msg}`, sock);
    };
    const client = track(new UDPipe());
    client.onConnect = function () {
      this.send('HelloWorld');
    };
    const got = new Promise<string>((resolve) => (client.onNewMessage = (msg) => resolve(String(msg))));
    await client.connect(host, port);
    assert.equal(await withTimeout(got, 5000, 'the reply'), 'Reply from server: HelloWorld');
  });
}

test('a burst of 500 reliable messages arrives once each, in order; unreliable ones arrive too', { timeout: 10000 }, async () => {
  const { pipe: srv, port } = await server();
  const got: string[] = [];
  srv.onNewMessage = (msg, _sock, info) => got.push(`${info.reliable ? 'r' : 'u'}${msg}`);
  const client = track(new UDPipe());
  await client.connect('127.0.0.1', port);
  for (let i = 0; i < 500; i++) client.send(String(i));
  client.send('x', undefined, { reliable: false });
  await until(() => got.filter((g) => g.startsWith('r')).length === 500 && got.includes('ux'), 8000, '500 messages');
  assert.deepEqual(
    got.filter((g) => g.startsWith('r')),
    Array.from({ length: 500 }, (_, i) => `r${i}`),
  );
  assert.ok(client.getSentPackets() < 100, `packed into few datagrams (${client.getSentPackets()})`);
});

for (const host of ['127.0.0.1', '::1']) {
  describe(`on ${host}`, () => {
    describe('through a lossy proxy', () => {
      test('20% loss and 10% duplication: 300 reliable messages each way arrive exactly once, in order', { timeout: 20000 }, async () => {
        const { pipe: srv, port } = await server(FAST, host);
        const proxy = track(await UdpProxy.start({ address: host, port }, host, 7));
        proxy.dropRate = 0.2;
        proxy.duplicateRate = 0.1;
        const atServer: number[] = [];
        const atClient: number[] = [];
        srv.onNewMessage = (msg) => atServer.push(Number(msg));
        const client = track(new UDPipe(FAST));
        client.onNewMessage = (msg) => atClient.push(Number(msg));
        const peer = await new Promise<Peer>((resolve, reject) => {
          srv.onConnect = resolve;
          client.connect(host, proxy.port, 5).catch(reject);
        });
        for (let i = 0; i < 300; i++) {
          client.send(String(i));
          srv.send(String(i), peer);
        }
        await until(() => atServer.length >= 300 && atClient.length >= 300, 15000, '300 messages each way');
        const expected = Array.from({ length: 300 }, (_, i) => i);
        assert.deepEqual(atServer, expected);
        assert.deepEqual(atClient, expected);
        assert.ok(proxy.counters.dropped > 0 && proxy.counters.duplicated > 0);
      });

      test('stall and flush: sends queue while the link is down and go out in order when it returns', { timeout: 10000 }, async () => {
        const { pipe: srv, port } = await server(FAST, host);
        const proxy = track(await UdpProxy.start({ address: host, port }, host));
        const got: string[] = [];
        srv.onNewMessage = (msg) => got.push(String(msg));
        const client = track(new UDPipe({ ...FAST, timeoutMs: 5000 }));
        const serverPeer = await client.connect(host, proxy.port);
        await until(() => srv.clients.length === 1, 2000, 'server to see the client');
        proxy.blocked = true;
        await withTimeout(Promise.all([once(client, 'stalled'), once(srv, 'stalled')]), 3000, 'both sides to stall');
        for (let i = 0; i < 5; i++) assert.equal(client.send(`queued ${i}`), true);
        assert.ok((client.stats(serverPeer) as { queueLength: number }).queueLength >= 5, 'queued, not sent');
        assert.deepEqual(got, []);
        proxy.blocked = false;
        await withTimeout(once(client, 'unstalled'), 3000, 'unstall');
        await until(() => got.length === 5, 3000, 'the queued messages');
        assert.deepEqual(got, ['queued 0', 'queued 1', 'queued 2', 'queued 3', 'queued 4']);
      });

      test('disconnect and reconnect: what the client sent meanwhile arrives on the new connection, once', { timeout: 15000 }, async () => {
        const { pipe: srv, port } = await server(FAST, host);
        const proxy = track(await UdpProxy.start({ address: host, port }, host));
        const got: string[] = [];
        let connects = 0;
        srv.onNewMessage = (msg) => got.push(String(msg));
        srv.onConnect = () => connects++;
        const client = track(new UDPipe(FAST));
        let resolved = 0;
        await client.connect(host, proxy.port).then(() => resolved++);
        client.send('before');
        await until(() => got.length === 1, 3000, 'first message');
        proxy.blocked = true;
        await withTimeout(Promise.all([once(client, 'disconnect'), once(srv, 'disconnect')]), 5000, 'both sides to disconnect');
        client.send('while away 1');
        client.send('while away 2');
        proxy.blocked = false;
        await withTimeout(once(client, 'connect'), 5000, 'reconnect');
        await until(() => got.length === 3, 3000, 'queued messages');
        assert.deepEqual(got, ['before', 'while away 1', 'while away 2']);
        assert.equal(connects, 2, 'the server saw a new connection');
        assert.equal(resolved, 1, 'connect() resolved once');
      });

      test('address change: the server follows the client to its new port', { timeout: 10000 }, async () => {
        const { pipe: srv, port } = await server(FAST, host);
        const proxy = track(await UdpProxy.start({ address: host, port }, host));
        const got: string[] = [];
        let newClients = 0;
        srv.onNewClient = () => newClients++;
        srv.onNewMessage = (msg, sock) => {
          got.push(String(msg));
          srv.send(`echo ${msg}`, sock);
        };
        const client = track(new UDPipe(FAST));
        const echoes: string[] = [];
        client.onNewMessage = (msg) => echoes.push(String(msg));
        await client.connect(host, proxy.port);
        client.send('one');
        await until(() => echoes.length === 1, 3000, 'first echo');
        const before = srv.clients[0]!.port;
        proxy.rebind();
        client.send('two');
        await until(() => echoes.length === 2, 3000, 'echo after rebinding');
        assert.deepEqual(echoes, ['echo one', 'echo two']);
        // The echo may come back before the server has validated the new address (it
        // answers there at once, within the anti-amplification allowance); the peer's
        // port changes once the client's PATH_RESPONSE is in. Asserting it at once raced.
        await until(() => srv.clients[0]!.port !== before, 3000, 'the move validated');
        assert.equal(newClients, 1, 'no new client: the same connection moved');
      });
    });

    test('maxClients: a client over the limit is refused and gives up with ERR_SERVER_FULL; a later one gets in', {
      timeout: 10000,
    }, async () => {
      const { pipe: srv, port } = await server({ ...FAST, maxClients: 1 }, host);
      const refused: string[] = [];
      srv.onMaxClients = (_msg, ip, p) => refused.push(`${ip}:${p}`);
      const first = track(new UDPipe(FAST));
      await first.connect(host, port);
      const second = track(new UDPipe(FAST));
      await assert.rejects(second.connect(host, port, 0.5), (err: UDPipeError) => err.code === 'ERR_SERVER_FULL');
      assert.ok(refused.length >= 1 && refused[0]!.startsWith(`${host}:`), 'onMaxClients fired with the address');
      await first.close();
      await until(() => srv.clients.length === 0, 3000, 'the first client to leave');
      const third = track(new UDPipe(FAST));
      await third.connect(host, port, 2);
      await until(() => srv.clients.length === 1, 2000, 'the server to confirm the third client');
    });

    test('bad token: onBadToken on the server, ERR_BAD_TOKEN on the client', { timeout: 10000 }, async () => {
      const { pipe: srv, port } = await server({ token: 'a' }, host);
      let bad = 0;
      srv.onBadToken = () => bad++;
      const client = track(new UDPipe({ token: 'b' }));
      await assert.rejects(client.connect(host, port), (err: UDPipeError) => err.code === 'ERR_BAD_TOKEN' && /token/.test(err.message));
      assert.equal(bad, 1);
      // That it never retries is checked in virtual time (api-sim.test.ts), not with a sleep.
    });

    test('close: client close resolves and the server hears it; server close reaches every client', { timeout: 10000 }, async () => {
      const { pipe: srv, port } = await server(FAST, host);
      const closedAtServer: string[] = [];
      srv.onClose = (_sock, reason) => closedAtServer.push(reason);
      const a = track(new UDPipe(FAST));
      await a.connect(host, port);
      await a.close();
      await until(() => closedAtServer.length === 1, 2000, 'server onClose');
      assert.deepEqual(closedAtServer, ['normal']);
      assert.throws(
        () => a.send('x'),
        (err: UDPipeError) => err.code === 'ERR_CLOSED',
      );

      const b = track(new UDPipe(FAST));
      const c = track(new UDPipe(FAST));
      await Promise.all([b.connect(host, port), c.connect(host, port)]);
      await until(() => srv.clients.length === 2, 2000, 'two clients');
      const closes = Promise.all([once(b, 'close'), once(c, 'close')]);
      await srv.close();
      const [[, rb], [, rc]] = await withTimeout(closes, 3000, 'clients onClose');
      assert.equal(rb, 'shutdown');
      assert.equal(rc, 'shutdown');
    });
  });
}

test('an 8 MiB message arrives whole (SHA-256 matches), 1 MiB through 10% loss, 100 kB unreliable', { timeout: 20000 }, async () => {
  const { createHash, randomBytes } = await import('node:crypto');
  const { pipe: srv, port } = await server(FAST);
  const proxy = track(await UdpProxy.start({ address: '127.0.0.1', port }, '127.0.0.1', 3));
  proxy.dropRate = 0.1;
  const digests: string[] = [];
  srv.onNewMessage = (msg) => digests.push(createHash('sha256').update(msg).digest('hex'));
  const direct = track(new UDPipe(FAST));
  const lossy = track(new UDPipe(FAST));
  await Promise.all([direct.connect('127.0.0.1', port), lossy.connect('127.0.0.1', proxy.port, 5)]);
  const big = randomBytes(8 * 1024 * 1024);
  const mid = randomBytes(1024 * 1024);
  direct.send(big);
  lossy.send(mid);
  direct.send(mid.subarray(0, 100_000), undefined, { reliable: false });
  await until(() => digests.length === 3, 18000, 'the large messages');
  const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
  assert.deepEqual(
    digests.sort(),
    [sha(big), sha(mid), sha(mid.subarray(0, 100_000))].sort(),
    'unreliable 100 kB too, on a clean loopback',
  );
});

test('a 64 MiB transfer in 1 MiB messages over loopback arrives in order, SHA-256 intact', { timeout: 60000 }, async () => {
  const { createHash, randomBytes } = await import('node:crypto');
  const { pipe: srv, port } = await server(FAST);
  const recv = createHash('sha256');
  let bytes = 0;
  srv.onNewMessage = (msg) => {
    recv.update(msg);
    bytes += msg.length;
  };
  const client = track(new UDPipe({ ...FAST, maxQueue: 1 << 14 }));
  await client.connect('127.0.0.1', port);
  const sent = createHash('sha256');
  const seed = randomBytes(1024 * 1024);
  for (let i = 0; i < 64; i++) {
    const chunk = Buffer.from(seed);
    chunk.writeUInt32BE(i, 0); // every chunk differs, so order matters to the digest
    sent.update(chunk);
    if (!client.send(chunk)) await once(client, 'drain');
  }
  await until(() => bytes === 64 * 1024 * 1024, 50000, 'all 64 MiB');
  assert.equal(recv.digest('hex'), sent.digest('hex'));
  const st = client.stats();
  const conn = st.role === 'client' ? st.connection : undefined;
  const pmtu = conn && 'pmtu' in conn ? conn.pmtu.current : undefined;
  assert.ok(pmtu !== undefined && pmtu > 60_000, `loopback path MTU found (${pmtu})`);
});

test('start() without a host listens on IPv4 and IPv6 at once', { timeout: 10000 }, async () => {
  const srv = track(new UDPipe());
  const { port } = await srv.start(0);
  const got: string[] = [];
  srv.onNewMessage = (msg) => got.push(String(msg));
  const v4 = track(new UDPipe());
  const v6 = track(new UDPipe());
  await Promise.all([v4.connect('127.0.0.1', port), v6.connect('::1', port)]);
  v4.send('four');
  v6.send('six');
  await until(() => got.length === 2, 3000, 'both messages');
  assert.deepEqual(got.sort(), ['four', 'six']);
});

test('autoStep: false does nothing until step()', { timeout: 10000 }, async () => {
  const { pipe: srv, port } = await server();
  const got: string[] = [];
  srv.onNewMessage = (msg) => got.push(String(msg));
  const client = new UDPipe({ autoStep: false });
  let connected = false;
  client.connect('127.0.0.1', port).then(() => (connected = true));
  client.send('stepped');
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(connected, false, 'no handshake without step()');
  assert.equal(client.getSentPackets(), 0);
  await until(
    () => {
      client.step();
      return got.length === 1;
    },
    5000,
    'delivery through step()',
  );
  assert.deepEqual(got, ['stepped']);
  // Closing takes round trips, and with autoStep off they happen in step() only.
  let closed = false;
  client.close().then(() => (closed = true));
  await until(
    () => {
      client.step();
      return closed;
    },
    5000,
    'close through step()',
  );
});

test('packet counters agree between the two ends once quiet', { timeout: 10000 }, async () => {
  const { pipe: srv, port } = await server();
  const client = track(new UDPipe());
  srv.onNewMessage = (msg, sock) => srv.send(msg, sock);
  let echoes = 0;
  client.onNewMessage = () => echoes++;
  await client.connect('127.0.0.1', port);
  for (let i = 0; i < 20; i++) client.send(String(i));
  await until(() => echoes === 20, 3000, 'echoes');
  await new Promise((r) => setTimeout(r, 100));
  assert.ok(client.getSentPackets() > 0 && srv.getSentPackets() > 0);
  assert.ok(Math.abs(client.getSentPackets() - srv.getReceivedPackets()) <= 2);
  assert.ok(Math.abs(srv.getSentPackets() - client.getReceivedPackets()) <= 2);
});

test('nothing listening (ICMP port unreachable) does not crash; connect() times out', { timeout: 10000 }, async () => {
  const { pipe: gone, port } = await server();
  await gone.close();
  const client = track(new UDPipe());
  await assert.rejects(client.connect('127.0.0.1', port, 0.5), (err: UDPipeError) => err.code === 'ERR_HANDSHAKE_TIMEOUT');
});

test('misuse throws at the call site with a code', { timeout: 10000 }, async () => {
  const code = (c: string) => (err: unknown) => err instanceof UDPipeError && err.code === c;
  assert.throws(() => new UDPipe({ pingIntervalMs: -1 }), code('ERR_INVALID_OPTION'));
  assert.throws(() => new UDPipe({ pingIntreval: 5 } as UDPipeOptions), code('ERR_INVALID_OPTION'));
  assert.throws(() => new UDPipe({ stallTimeoutMs: 5000, timeoutMs: 4000 }), code('ERR_INVALID_OPTION'));
  assert.throws(() => new UDPipe().send('x'), code('ERR_NOT_CONNECTED'));
  const { pipe: srv, port } = await server();
  await assert.rejects(srv.start(0), code('ERR_ALREADY_STARTED'));
  const other = track(new UDPipe());
  await assert.rejects(other.start(port, '127.0.0.1'), (err: UDPipeError) => err.code === 'ERR_BIND' && /in use/.test(err.message));
  assert.throws(() => srv.send('x'), code('ERR_INVALID_ARGUMENT'));
  const client = track(new UDPipe());
  await client.connect('127.0.0.1', port);
  assert.throws(() => client.send(new Uint8Array(16 * 1024 * 1024 + 1)), code('ERR_MESSAGE_TOO_LARGE'));
  assert.throws(() => client.send(42 as unknown as string), code('ERR_INVALID_ARGUMENT'));
  assert.throws(() => client.sendAll('x'), code('ERR_WRONG_ROLE'));
  assert.equal(client.send(new Uint8Array(MAX_MESSAGE_SIZE)), true, 'exactly the limit is fine');
});
