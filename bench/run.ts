/**
 * `npm run bench`: udpipe against raw node:dgram (the ceiling) and node:net TCP, side by
 * side in one run on loopback, each with its server in a second process
 * (bench/peer.ts). Writes a table with the machine description to bench/results/.
 * Numbers are reported as measured and as ratios; nothing here is a test.
 *
 * Not yet here (the throughput issue adds them): udx-native, ENet, the transfer through
 * a lossy proxy, and idle-connection memory.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { mkdirSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { UDPipe } from '../src/index.js';

const HOST = '127.0.0.1';
const SECONDS = Number(process.env.BENCH_SECONDS ?? 2);
const MSG = Buffer.alloc(32, 0x61);
const PEER = fileURLToPath(new URL('./peer.js', import.meta.url));

interface Peer {
  child: ChildProcess;
  port: number;
  count(): Promise<number>;
  stop(): void;
}

async function startPeer(impl: string, mode: 'echo' | 'sink' | 'bytes'): Promise<Peer> {
  const child = spawn(process.execPath, [PEER, impl, mode], { stdio: ['pipe', 'pipe', 'inherit'] });
  let buf = '';
  const waiters: ((line: string) => void)[] = [];
  child.stdout!.on('data', (d) => {
    buf += d;
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      waiters.shift()?.(line);
    }
  });
  const next = () => new Promise<string>((r) => waiters.push(r));
  const ready = await next();
  return {
    child,
    port: Number(ready.split(' ')[1]),
    count: async () => {
      const p = next();
      child.stdin!.write('count\n');
      return Number((await p).split(' ')[1]);
    },
    stop: () => child.stdin!.end(),
  };
}

const pct = (xs: number[], p: number) => xs[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;

interface PingResult {
  perSecond: number;
  p50us: number;
  p99us: number;
}

/** Sequential round trips for SECONDS: one message out, wait for it back. */
async function pingPong(roundTrip: () => Promise<void>): Promise<PingResult> {
  const lat: number[] = [];
  const end = performance.now() + SECONDS * 1000;
  for (let i = 0; i < 200; i++) await roundTrip(); // warm-up
  while (performance.now() < end) {
    const t = performance.now();
    await roundTrip();
    lat.push((performance.now() - t) * 1000);
  }
  lat.sort((a, b) => a - b);
  return { perSecond: lat.length / SECONDS, p50us: pct(lat, 50), p99us: pct(lat, 99) };
}

async function pingDgram(): Promise<PingResult> {
  const peer = await startPeer('dgram', 'echo');
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, HOST, r));
  let waiting: (() => void) | undefined;
  s.on('message', () => waiting?.());
  // A lost datagram would stall a round trip forever: resend after 100 ms.
  const res = await pingPong(
    () =>
      new Promise<void>((resolve) => {
        const t = setTimeout(() => s.send(MSG, peer.port, HOST), 100);
        waiting = () => {
          clearTimeout(t);
          resolve();
        };
        s.send(MSG, peer.port, HOST);
      }),
  );
  s.close();
  peer.stop();
  return res;
}

async function pingTcp(): Promise<PingResult> {
  const peer = await startPeer('tcp', 'echo');
  const c = net.connect(peer.port, HOST);
  c.setNoDelay(true);
  await new Promise((r) => c.once('connect', r));
  let got = 0;
  let waiting: (() => void) | undefined;
  c.on('data', (d) => {
    got += d.length;
    if (got >= MSG.length) {
      got -= MSG.length;
      waiting?.();
    }
  });
  const res = await pingPong(() => new Promise<void>((resolve) => ((waiting = resolve), c.write(MSG))));
  c.destroy();
  peer.stop();
  return res;
}

async function pingUdpipe(): Promise<PingResult> {
  const peer = await startPeer('udpipe', 'echo');
  const c = new UDPipe();
  let waiting: (() => void) | undefined;
  c.onNewMessage = () => waiting?.();
  await c.connect(HOST, peer.port);
  const res = await pingPong(() => new Promise<void>((resolve) => ((waiting = resolve), c.send(MSG))));
  await c.close();
  peer.stop();
  return res;
}

/** Messages per second the server received during SECONDS of sending as fast as allowed. */
async function blast(impl: 'dgram' | 'tcp' | 'udpipe', reliable: boolean): Promise<{ sent: number; delivered: number }> {
  const peer = await startPeer(impl, 'sink');
  const end = performance.now() + SECONDS * 1000;
  let sent = 0;
  const yieldNow = () => new Promise((r) => setImmediate(r));
  if (impl === 'dgram') {
    const s = dgram.createSocket({ type: 'udp4', sendBufferSize: 4 << 20 });
    await new Promise<void>((r) => s.bind(0, HOST, r));
    while (performance.now() < end) {
      for (let i = 0; i < 64; i++, sent++) s.send(MSG, peer.port, HOST);
      await yieldNow();
    }
    await new Promise((r) => setTimeout(r, 50));
    s.close();
  } else if (impl === 'tcp') {
    const c = net.connect(peer.port, HOST);
    c.setNoDelay(true);
    await new Promise((r) => c.once('connect', r));
    while (performance.now() < end) {
      let ok = true;
      for (let i = 0; i < 256 && ok; i++, sent++) ok = c.write(MSG);
      if (!ok) await new Promise((r) => c.once('drain', r));
      else await yieldNow();
    }
    await new Promise((r) => setTimeout(r, 50));
    c.destroy();
  } else {
    const c = new UDPipe({ maxQueue: 1 << 14 });
    await c.connect(HOST, peer.port);
    while (performance.now() < end) {
      let ok = true;
      for (let i = 0; i < 256 && ok; i++, sent++) ok = c.send(MSG, undefined, { reliable });
      if (!ok) await new Promise((r) => c.once('drain', r));
      else await yieldNow();
    }
    await new Promise((r) => setTimeout(r, 50));
    await c.close();
  }
  let delivered = await peer.count();
  if (impl === 'tcp') delivered = Math.floor(delivered / MSG.length);
  peer.stop();
  return { sent, delivered };
}

const TRANSFER = 64 * 1024 * 1024;

/** Seconds to move TRANSFER bytes, sent as 1 MiB messages (TCP: 1 MiB writes), until the server has them all. */
async function transfer(impl: 'tcp' | 'udpipe'): Promise<number> {
  const peer = await startPeer(impl, 'bytes');
  const chunk = Buffer.alloc(1024 * 1024, 0x62);
  const t0 = performance.now();
  if (impl === 'tcp') {
    const c = net.connect(peer.port, HOST);
    await new Promise((r) => c.once('connect', r));
    for (let sent = 0; sent < TRANSFER; sent += chunk.length) if (!c.write(chunk)) await new Promise((r) => c.once('drain', r));
    while ((await peer.count()) < TRANSFER) await new Promise((r) => setTimeout(r, 5));
    c.destroy();
  } else {
    const c = new UDPipe({ maxQueue: 1 << 14 });
    await c.connect(HOST, peer.port);
    for (let sent = 0; sent < TRANSFER; sent += chunk.length) if (!c.send(chunk)) await new Promise((r) => c.once('drain', r));
    while ((await peer.count()) < TRANSFER) await new Promise((r) => setTimeout(r, 5));
    await c.close();
  }
  const seconds = (performance.now() - t0) / 1000;
  peer.stop();
  return seconds;
}

async function main(): Promise<void> {
  const machine = `${os.cpus()[0]?.model ?? 'unknown cpu'}, ${os.cpus().length} cores, ${Math.round(os.totalmem() / 2 ** 30)} GiB, ${os.platform()} ${os.release()}, node ${process.version}`;
  console.error(`machine: ${machine}\n${SECONDS} s per measurement`);
  const ping = { dgram: await pingDgram(), tcp: await pingTcp(), udpipe: await pingUdpipe() };
  const thr = {
    dgram: await blast('dgram', false),
    tcp: await blast('tcp', true),
    udpipeUnreliable: await blast('udpipe', false),
    udpipeReliable: await blast('udpipe', true),
  };
  const moved = { tcp: await transfer('tcp'), udpipe: await transfer('udpipe') };
  const mbps = (sec: number) => TRANSFER / 1e6 / sec;
  const rate = (x: { delivered: number }) => Math.round(x.delivered / SECONDS);
  const r = (a: number, b: number) => (a / b).toFixed(2);
  const lines = [
    `# udpipe benchmark, ${new Date().toISOString().slice(0, 10)}`,
    '',
    `Machine: ${machine}. Loopback, server in a second process, ${SECONDS} s per row. Command: \`npm run bench\`.`,
    '',
    '## Ping-pong, 32-byte messages, one at a time',
    '',
    '| implementation | round trips/s | p50 | p99 | vs dgram |',
    '|---|---|---|---|---|',
    ...Object.entries(ping).map(([k, v]) => `| ${k} | ${Math.round(v.perSecond)} | ${v.p50us.toFixed(0)} us | ${v.p99us.toFixed(0)} us | ${r(v.perSecond, ping.dgram.perSecond)} |`),
    '',
    '## 32-byte messages, as fast as the sender may (messages delivered per second)',
    '',
    '| implementation | sent | delivered/s | delivered | vs dgram |',
    '|---|---|---|---|---|',
    `| dgram (no flow control: what the receiver dropped is lost) | ${thr.dgram.sent} | ${rate(thr.dgram)} | ${((100 * thr.dgram.delivered) / thr.dgram.sent).toFixed(1)}% | 1.00 |`,
    `| tcp (node:net, reliable stream) | ${thr.tcp.sent} | ${rate(thr.tcp)} | ${((100 * thr.tcp.delivered) / thr.tcp.sent).toFixed(1)}% | ${r(rate(thr.tcp), rate(thr.dgram))} |`,
    `| udpipe unreliable | ${thr.udpipeUnreliable.sent} | ${rate(thr.udpipeUnreliable)} | ${((100 * thr.udpipeUnreliable.delivered) / thr.udpipeUnreliable.sent).toFixed(1)}% | ${r(rate(thr.udpipeUnreliable), rate(thr.dgram))} |`,
    `| udpipe reliable-ordered | ${thr.udpipeReliable.sent} | ${rate(thr.udpipeReliable)} | ${((100 * thr.udpipeReliable.delivered) / thr.udpipeReliable.sent).toFixed(1)}% | ${r(rate(thr.udpipeReliable), rate(thr.dgram))} |`,
    '',
    '## 64 MiB in 1 MiB messages (TCP: 1 MiB writes), until the server has every byte',
    '',
    '| implementation | seconds | MB/s | vs tcp |',
    '|---|---|---|---|',
    `| tcp | ${moved.tcp.toFixed(2)} | ${mbps(moved.tcp).toFixed(0)} | 1.00 |`,
    `| udpipe reliable | ${moved.udpipe.toFixed(2)} | ${mbps(moved.udpipe).toFixed(0)} | ${r(mbps(moved.udpipe), mbps(moved.tcp))} |`,
    '',
  ];
  const out = lines.join('\n');
  console.log(out);
  const dir = fileURLToPath(new URL('../../bench/results/', import.meta.url));
  mkdirSync(dir, { recursive: true });
  writeFileSync(`${dir}latest.md`, `${out}\n`);
}

void main();
