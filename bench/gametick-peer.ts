/**
 * The two halves of the game-tick scenario (bench/gametick.ts), each in its own process:
 *
 *   node gametick-peer.js server <impl>               impl: dgram | udpipe
 *   node gametick-peer.js clients <impl> <port> <n>   n clients of one server
 *
 * The server ticks at 30 Hz: each tick it sends every client a 256-byte snapshot
 * (udpipe: unreliable-sequenced on channel 1), and each client a 32-byte event once a
 * second, spread over the ticks (udpipe: reliable on channel 2). Each client process
 * ticks at 30 Hz too and sends, per client, a 64-byte input (udpipe: unreliable-sequenced
 * on channel 1). Raw dgram sends the same datagrams with no protocol at all: its inputs
 * tell the server where its clients are.
 *
 * Snapshots and events carry the server's `process.hrtime` at sending (the monotonic
 * clock, the same in every process of one machine), so a client measures delivery
 * latency without clock sync. Line protocol on stdin, as bench/peer.ts: the first line
 * out is "ready <port>" (clients: "ready <n>" once all are connected); "mark" starts a
 * window and answers "ok"; "stats" answers "stats <json>" for the window so far.
 */
import dgram from 'node:dgram';
import { type Peer, UDPipe } from '../src/index.js';

const [role, impl, portArg, countArg] = process.argv.slice(2) as [string, string, string?, string?];
const HOST = '127.0.0.1';
const TICK_MS = 1000 / 30;
const SNAPSHOT = 256;
const INPUT = 64;
const EVENT = 32;
const SNAPSHOT_CHANNEL = 1;
const EVENT_CHANNEL = 2;
/** Latency samples kept per window, per process: a uniform subsample beyond it. */
const MAX_SAMPLES = 50_000;

if (impl !== 'dgram' && impl !== 'udpipe') throw new Error(`unknown implementation ${impl}: dgram or udpipe`);

/** Calls `fn(tick)` every TICK_MS without drift, as a fixed-step game loop does. */
function ticker(fn: (tick: number) => void): void {
  const t0 = performance.now();
  let tick = 0;
  const next = () => {
    fn(tick++);
    setTimeout(next, Math.max(0, t0 + tick * TICK_MS - performance.now()));
  };
  next();
}

function stamped(size: number, tick: number): Buffer {
  const b = Buffer.alloc(size, 0x73);
  b.writeBigUInt64LE(process.hrtime.bigint(), 0);
  b.writeUInt32LE(tick, 8);
  return b;
}

/** Microseconds since the sender stamped `b`. */
const ageUs = (b: Buffer): number => Number(process.hrtime.bigint() - b.readBigUInt64LE(0)) / 1000;

let window = { t0: performance.now(), cpu: process.cpuUsage() };
let counts: Record<string, number> = {};
const count = (k: string, n = 1) => {
  counts[k] = (counts[k] ?? 0) + n;
};
const samples: Record<'snapshot' | 'event', number[]> = { snapshot: [], event: [] };
const seen: Record<'snapshot' | 'event', number> = { snapshot: 0, event: 0 };

/** Reservoir sampling: every latency of the window has the same chance to be kept. */
function sample(kind: 'snapshot' | 'event', us: number): void {
  const n = ++seen[kind];
  const xs = samples[kind];
  if (xs.length < MAX_SAMPLES) xs.push(us);
  else {
    const j = Math.floor(Math.random() * n);
    if (j < MAX_SAMPLES) xs[j] = us;
  }
}

/** What a role adds to "stats"; `mark` starts its window too. */
let extra: { mark(): void; stats(): Record<string, number> } = { mark: () => {}, stats: () => ({}) };

process.stdin.setEncoding('utf8');
let input = '';
process.stdin.on('data', (d: string) => {
  input += d;
  for (let i = input.indexOf('\n'); i >= 0; i = input.indexOf('\n')) {
    const cmd = input.slice(0, i).trim();
    input = input.slice(i + 1);
    if (cmd === 'mark') {
      window = { t0: performance.now(), cpu: process.cpuUsage() };
      counts = {};
      extra.mark();
      for (const k of ['snapshot', 'event'] as const) {
        samples[k] = [];
        seen[k] = 0;
      }
      process.stdout.write('ok\n');
    } else if (cmd === 'stats') {
      const cpu = process.cpuUsage(window.cpu);
      const out = {
        ms: performance.now() - window.t0,
        cpuMs: (cpu.user + cpu.system) / 1000,
        ...counts,
        ...extra.stats(),
        snapshotUs: samples.snapshot,
        eventUs: samples.event,
      };
      process.stdout.write(`stats ${JSON.stringify(out)}\n`);
    }
  }
});
process.stdin.on('end', () => process.exit(0));

async function server(): Promise<void> {
  if (impl === 'dgram') {
    const s = dgram.createSocket({ type: 'udp4', recvBufferSize: 4 << 20, sendBufferSize: 4 << 20 });
    const clients = new Map<string, { port: number; address: string }>();
    s.on('message', (_m, r) => {
      count('inputs');
      const key = `${r.address}:${r.port}`;
      if (!clients.has(key)) clients.set(key, { port: r.port, address: r.address });
    });
    await new Promise<void>((r) => s.bind(0, HOST, r));
    ticker((tick) => {
      const snap = stamped(SNAPSHOT, tick);
      const ev = stamped(EVENT, tick);
      let i = 0;
      for (const c of clients.values()) {
        s.send(snap, c.port, c.address);
        count('snapshots');
        if (i++ % 30 === tick % 30) {
          s.send(ev, c.port, c.address);
          count('events');
        }
      }
    });
    extra = { mark: () => {}, stats: () => ({ clients: clients.size }) };
    process.stdout.write(`ready ${s.address().port}\n`);
    return;
  }
  const s = new UDPipe({ maxClients: 2000, maxClientsPerAddress: 2000, handshakesPerSecond: 0 });
  s.onNewMessage = () => count('inputs');
  const { port } = await s.start(0, HOST);
  ticker((tick) => {
    const snap = stamped(SNAPSHOT, tick);
    const ev = stamped(EVENT, tick);
    let i = 0;
    for (const peer of s.clients as Peer[]) {
      s.send(snap, peer, { delivery: 'unreliable-sequenced', channel: SNAPSHOT_CHANNEL });
      count('snapshots');
      if (i++ % 30 === tick % 30) {
        s.send(ev, peer, { channel: EVENT_CHANNEL });
        count('events');
      }
    }
  });
  let base = { sent: 0, received: 0 };
  extra = {
    mark: () => {
      base = { sent: s.getSentPackets(), received: s.getReceivedPackets() };
    },
    stats: () => ({
      clients: s.clients.length,
      datagramsSent: s.getSentPackets() - base.sent,
      datagramsReceived: s.getReceivedPackets() - base.received,
    }),
  };
  process.stdout.write(`ready ${port}\n`);
}

async function clients(port: number, n: number): Promise<void> {
  const sends: ((b: Buffer) => void)[] = [];
  const onMessage = (m: Buffer, channel: number) => {
    if (m.length === SNAPSHOT && channel === SNAPSHOT_CHANNEL) {
      count('snapshots');
      sample('snapshot', ageUs(m));
    } else if (m.length === EVENT && channel === EVENT_CHANNEL) {
      count('events');
      sample('event', ageUs(m));
    }
  };
  if (impl === 'dgram') {
    for (let i = 0; i < n; i++) {
      const s = dgram.createSocket('udp4');
      // Raw dgram has no channels: the size says what a datagram is.
      s.on('message', (m) => onMessage(m, m.length === SNAPSHOT ? SNAPSHOT_CHANNEL : EVENT_CHANNEL));
      await new Promise<void>((r) => s.bind(0, HOST, r));
      sends.push((b) => s.send(b, port, HOST));
    }
  } else {
    for (let i = 0; i < n; i += 50) {
      const batch = Array.from({ length: Math.min(50, n - i) }, () => new UDPipe({ reconnect: false }));
      await Promise.all(batch.map((c) => c.connect(HOST, port, 30)));
      for (const c of batch) {
        c.onNewMessage = (m, _sock, info) => onMessage(m, info.channel);
        sends.push((b) => c.send(b, undefined, { delivery: 'unreliable-sequenced', channel: SNAPSHOT_CHANNEL }));
      }
    }
  }
  ticker((tick) => {
    // A fresh input per tick and client, as a game encodes its controls each frame.
    for (const send of sends) {
      const b = Buffer.alloc(INPUT, 0x69);
      b.writeUInt32LE(tick, 0);
      send(b);
      count('inputs');
    }
  });
  process.stdout.write(`ready ${n}\n`);
}

if (role === 'server') await server();
else if (role === 'clients') await clients(Number(portArg), Number(countArg));
else throw new Error(`unknown role ${role}: server or clients`);
