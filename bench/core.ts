/**
 * Pure-core benchmark of the data path: two Connection objects back to back in one
 * process, no sockets, no timers, zero latency. Prints microseconds of CPU per datagram
 * and per message (both sides' work, encrypt and decrypt included) for three patterns,
 * so a per-packet regression shows in review without the noise of the network.
 * `npm run bench:core`; compare runs on one machine, pinned (`taskset -c 1`); each pattern
 * runs CORE_RUNS times (default 5) and the median is reported; CORE_ONLY and CORE_CIPHER pick
 * patterns (below).
 */
import { AeadPacketCipher, HmacPacketCipher, type PacketCipher } from '../src/crypto/packet-cipher.js';
import { DEFAULT_CONNECTION_CONFIG } from '../src/protocol/config.js';
import { Connection } from '../src/protocol/connection/connection.js';
import { decodeDatagram } from '../src/wire/packet.js';

const K1 = new Uint8Array(32).fill(1);
const K2 = new Uint8Array(32).fill(2);

function pair(aead: boolean) {
  const cipher = (send: Uint8Array, recv: Uint8Array): PacketCipher =>
    aead ? new AeadPacketCipher(send, recv) : new HmacPacketCipher(send, recv);
  let delivered = 0;
  const mk = (local: number, send: Uint8Array, recv: Uint8Array) =>
    new Connection({
      localConnId: local,
      remoteConnId: 3 - local,
      cipher: cipher(send, recv),
      config: { ...DEFAULT_CONNECTION_CONFIG, maxQueue: 1 << 20, highWaterMark: 1 << 30 },
      now: 0,
      peerAddress: '127.0.0.1',
    });
  const a = mk(1, K1, K2);
  const b = mk(2, K2, K1);
  let now = 0;
  let datagrams = 0;
  /** Moves datagrams both ways until neither side has anything to send; the clock steps 1 ms per round. */
  const pump = () => {
    for (let moved = true; moved; ) {
      moved = false;
      now += 1;
      for (const [x, y] of [
        [a, b],
        [b, a],
      ] as const) {
        if (x.nextDeadline() <= now) x.handleTimeout(now);
        for (let d = x.pollTransmit(now); d; d = x.pollTransmit(now)) {
          const h = decodeDatagram(d);
          if (h.type === 'data') y.handleDatagram(d, h.pnLow, now);
          for (let e = y.pollEvent(); e; e = y.pollEvent()) if (e.type === 'message') delivered++;
          datagrams++;
          moved = true;
        }
      }
    }
  };
  /** Lets `ms` of virtual time pass (timers fire), then moves what that released. */
  const wait = (ms: number) => {
    now += ms;
    pump();
  };
  return { a, b, pump, wait, count: () => ({ datagrams, delivered }) };
}

/** Runs of each pattern; the median is reported (this machine's speed varies by 1.5x from run to run). */
const RUNS = Number(process.env.CORE_RUNS ?? 5);

const median = (xs: number[]): number => [...xs].sort((x, y) => x - y)[xs.length >> 1]!;

/** CORE_ONLY=text: only the patterns whose name contains it; CORE_CIPHER=hmac|aead: only that protection. */
const ONLY = process.env.CORE_ONLY;
const CIPHER = process.env.CORE_CIPHER;

function measure(name: string, aead: boolean, run: (p: ReturnType<typeof pair>) => void): void {
  if (ONLY && !`${name}${aead ? ', encrypted' : ''}`.includes(ONLY)) return;
  if (CIPHER && CIPHER !== (aead ? 'aead' : 'hmac')) return;
  const perDatagram: number[] = [];
  const perMessage: number[] = [];
  let counts = '';
  for (let r = 0; r < RUNS; r++) {
    const p = pair(aead);
    p.pump();
    const before = p.count().datagrams;
    const cpu = process.cpuUsage();
    run(p);
    const used = process.cpuUsage(cpu);
    const datagrams = p.count().datagrams - before;
    const total = used.user + used.system;
    const messages = p.count().delivered;
    perDatagram.push(total / datagrams);
    perMessage.push(total / messages);
    counts = `${datagrams} datagrams, ${messages} messages`;
  }
  const range = `${Math.min(...perDatagram).toFixed(1)}-${Math.max(...perDatagram).toFixed(1)}`;
  console.log(
    `${name}${aead ? ', encrypted' : ''}: ${median(perDatagram).toFixed(1)} us per datagram (range ${range}), ` +
      `${median(perMessage).toFixed(2)} us per message; median of ${RUNS} runs of ${counts}`,
  );
}

const small = new Uint8Array(32);
const input = new Uint8Array(64);
const snapshot = new Uint8Array(256);
for (const aead of [false, true]) {
  measure('ping-pong, 32 B reliable each way', aead, (p) => {
    for (let i = 0; i < 20_000; i++) {
      p.a.send(small, true);
      p.pump();
      p.b.send(small, true);
      p.pump();
    }
  });
  measure('32 B reliable messages, batches of 100', aead, (p) => {
    for (let i = 0; i < 2000; i++) {
      for (let k = 0; k < 100; k++) p.a.send(small, true);
      p.pump();
    }
  });
  // bench/gametick.ts's pattern for one client, in virtual time: 30 ticks a second, a
  // 64 B unreliable-sequenced input up and a 256 B snapshot down each, a 32 B reliable
  // event down once a second.
  measure('game tick, 30 Hz', aead, (p) => {
    for (let tick = 0; tick < 20_000; tick++) {
      p.b.send(input, false, 0, true);
      p.a.send(snapshot, false, 0, true);
      if (tick % 30 === 0) p.a.send(small, true, 1);
      p.wait(33);
    }
  });
  measure('64 MiB in 1 MiB messages', aead, (p) => {
    const mib = new Uint8Array(1 << 20);
    for (let i = 0; i < 64; i++) {
      p.a.send(mib, true);
      p.pump();
    }
  });
}
