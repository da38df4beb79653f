/**
 * The far half of each benchmark, run in its own process by bench/run.ts:
 *
 *   node peer.js <impl> <mode>            impl: dgram | tcp | udx | enet | udpipe | udpipe-enc
 *   node peer.js proxy <port> <dropRate>  a UDP proxy to 127.0.0.1:<port> that drops
 *                                         a seeded fraction of datagrams each way
 *
 * Modes: "echo" sends back what it receives, "sink" counts messages (byte streams, TCP
 * and udx, count bytes), "bytes" counts bytes, "idle" holds connections (udpipe only).
 * It prints "ready <port>" when listening. On stdin it answers "count" with
 * "count <n>", "cpu" with its CPU time in ms, "stats" with its CPU time and memory, "udx <port>" (a udx stream has no
 * handshake: the client tells us where it is) with "ok"; it exits when stdin closes.
 * Loopback, or inside a network namespace with BENCH_HOST set to its address.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import type { UdxSocket } from 'udx-native';
import { UDPipe } from '../src/index.js';
import { Rng } from '../src/testing/index.js';

const [impl, mode, arg] = process.argv.slice(2) as [string, string, string | undefined];
/** BENCH_HOST: where to listen (bench/loss.ts runs the far end inside a network namespace). */
const HOST = process.env.BENCH_HOST ?? '127.0.0.1';
let received = 0;
let udxSocket: UdxSocket | undefined;
let server: UDPipe | undefined;

function stats(): string {
  const cpu = process.cpuUsage();
  const m = process.memoryUsage();
  return `stats ${JSON.stringify({ cpuMs: (cpu.user + cpu.system) / 1000, rss: m.rss, heapUsed: m.heapUsed, external: m.external, clients: server?.clients.length ?? 0, sent: server?.getSentPackets() ?? 0, received: server?.getReceivedPackets() ?? 0, endpoint: server?.stats() })}`;
}

let input = '';
process.stdin.on('data', (d) => {
  input += d;
  for (let i = input.indexOf('\n'); i >= 0; i = input.indexOf('\n')) {
    const [cmd, value] = input.slice(0, i).split(' ');
    input = input.slice(i + 1);
    if (cmd === 'count') process.stdout.write(`count ${received}\n`);
    else if (cmd === 'cpu') {
      // CPU time so far, without the collection that 'stats' makes first.
      const c = process.cpuUsage();
      process.stdout.write(`cpu ${(c.user + c.system) / 1000}\n`);
    } else if (cmd === 'stats') {
      // A full collection first, so memory is what is live, not what awaits collection.
      (globalThis as { gc?: () => void }).gc?.();
      process.stdout.write(`${stats()}\n`);
    } else if (cmd === 'udx') udxConnect(Number(value));
  }
});
process.stdin.on('end', () => process.exit(0));

// Loaded only when benchmarked: ENet's emscripten build hooks the process when imported.
const udx = impl === 'udx' ? new (await import('udx-native')).default() : undefined;

function udxConnect(clientPort: number): void {
  const stream = udx!.createStream(2);
  stream.connect(udxSocket!, 1, clientPort, HOST);
  stream.on('data', (d: Buffer) => {
    received += d.length; // bytes; run.ts divides by the message size
    if (mode === 'echo') stream.write(d);
  });
  stream.on('message', () => received++); // unreliable datagrams on the stream
  stream.on('error', () => {});
  process.stdout.write('ok\n');
}

function proxy(targetPort: number, dropRate: number): void {
  // One upstream socket per client address, as a NAT would; drops with a seeded generator.
  const rng = new Rng(1);
  const front = dgram.createSocket({ type: 'udp4', recvBufferSize: 4 << 20, sendBufferSize: 4 << 20 });
  const ups = new Map<string, dgram.Socket>();
  front.on('message', (msg, r) => {
    const key = `${r.address}:${r.port}`;
    let up = ups.get(key);
    if (!up) {
      const u = dgram.createSocket({ type: 'udp4', recvBufferSize: 4 << 20, sendBufferSize: 4 << 20 });
      u.on('message', (back) => {
        if (rng.next() >= dropRate) front.send(back, r.port, r.address);
      });
      u.bind(0, HOST);
      ups.set(key, u);
      up = u;
    }
    if (rng.next() >= dropRate) up.send(msg, targetPort, HOST);
  });
  front.bind(0, HOST, () => process.stdout.write(`ready ${front.address().port}\n`));
}

async function main(): Promise<void> {
  switch (impl) {
    case 'proxy':
      return proxy(Number(mode), Number(arg ?? 0));
    case 'dgram': {
      const s = dgram.createSocket({ type: 'udp4', recvBufferSize: 4 << 20 });
      s.on('message', (m, r) => {
        received++;
        if (mode === 'echo') s.send(m, r.port, r.address);
      });
      s.bind(0, HOST, () => process.stdout.write(`ready ${s.address().port}\n`));
      return;
    }
    case 'tcp': {
      const srv = net.createServer((c) => {
        c.setNoDelay(true);
        c.on('data', (d) => {
          received += d.length; // bytes; run.ts divides by the message size
          if (mode === 'echo') c.write(d);
        });
      });
      srv.listen(0, HOST, () => process.stdout.write(`ready ${(srv.address() as net.AddressInfo).port}\n`));
      return;
    }
    case 'udx': {
      udxSocket = udx!.createSocket();
      udxSocket.bind(0, HOST);
      process.stdout.write(`ready ${udxSocket.address().port}\n`);
      return;
    }
    case 'enet': {
      const enet = (await import('enet')).default;
      enet.createServer({ address: { address: HOST, port: 0 }, peers: 64, channels: 2, down: 0, up: 0 }, (err, host) => {
        if (err) throw err;
        host.on('connect', (peer) => {
          peer.on('message', (packet, channel) => {
            const data = packet.data();
            received += mode === 'bytes' ? data.length : 1;
            if (mode === 'echo') peer.send(channel, new enet.Packet(Buffer.from(data), enet.PACKET_FLAG.RELIABLE));
          });
        });
        // The npm build of ENet is polled: every millisecond, the shortest interval Node allows.
        host.start(1);
        process.stdout.write(`ready ${host.address().port}\n`);
      });
      return;
    }
    case 'udpipe':
    case 'udpipe-enc': {
      // No handshake rate limit or per-address cap: the idle rows connect thousands of clients from one address.
      // BENCH_MAX_CLIENTS and BENCH_PING_MS: bench/many.ts's 100,000 connections.
      const max = Number(process.env.BENCH_MAX_CLIENTS ?? 20_000);
      const ping = process.env.BENCH_PING_MS ? Number(process.env.BENCH_PING_MS) : undefined;
      const s = new UDPipe({
        maxQueue: 1 << 16,
        maxClients: max,
        maxClientsPerAddress: max,
        handshakesPerSecond: 0,
        encrypt: impl === 'udpipe-enc',
        ...(ping ? { pingIntervalMs: ping, stallTimeoutMs: 3 * ping, timeoutMs: 10 * ping } : {}),
      });
      server = s;
      s.onNewMessage = function (m, sock, info) {
        received += mode === 'bytes' ? m.length : 1;
        if (mode === 'echo') this.send(m, sock, { reliable: info.reliable });
      };
      const { port } = await s.start(0, HOST);
      process.stdout.write(`ready ${port}\n`);
      return;
    }
    default:
      throw new Error(`unknown implementation ${impl}`);
  }
}

void main();
