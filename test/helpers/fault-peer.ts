/**
 * One end of a fault-test transfer (test/fault.test.ts), run as a child process inside a
 * network namespace: `UDPF_PEER='{json}' node dist/test/helpers/fault-peer.js`. It uses
 * only the package's public API (dist/src/index.js). Without UDPF_PEER it does nothing
 * (node --test also runs this file as a test and must find it inert).
 *
 * Client: connects, sends `bulkMiB` reliable 1 MiB messages on channel 0 (seeded
 * pseudo-random bytes, honouring send()'s backpressure and 'drain'), and meanwhile 32-byte
 * numbered messages on channel 1, then an END message carrying their count. With
 * `phaseAt`, after that many MiB it prints {ev:'phase'} and waits for a `go` line on stdin
 * (the test applies an impairment in between). Server: checks what arrives (SHA-256 of the
 * bulk; small ones exactly once, in order, with the right bytes), sends its own numbered
 * stream back the same way, and prints {ev:'result'} when everything arrived. Both print
 * one JSON object a line on stdout, close on a `quit` line, and exit by themselves after
 * `deadlineMs` or when stdin closes, so nothing outlives the test.
 */
import { createHash } from 'node:crypto';
import { createInterface } from 'node:readline';
import { UDPipe, type Peer } from '../../src/index.js';

interface Config {
  role: 'server' | 'client';
  host: string;
  port: number;
  bulkMiB: number;
  seed: number;
  phaseAt?: number;
  minSmall: number;
  deadlineMs: number;
  opts: Record<string, unknown>;
}

const MiB = 1 << 20;
const SMALL = 32;

function out(o: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify({ t: Date.now(), ...o })}\n`);
}

function small(kind: 'SMAL' | 'END!', seq: number): Buffer {
  const b = Buffer.alloc(SMALL);
  b.write(kind, 0, 'latin1');
  b.writeUInt32BE(seq, 4);
  for (let i = 8; i < SMALL; i++) b[i] = (seq * 31 + i * 7) & 255;
  return b;
}

/** Checks the numbered stream: exactly once, in order, unaltered. */
class SmallChecker {
  next = 0;
  end: number | undefined;
  error: string | undefined;
  accept(msg: Buffer, info: { reliable: boolean; channel: number; delivery: string }): void {
    if (this.error) return;
    const kind = msg.length === SMALL ? msg.toString('latin1', 0, 4) : '';
    const seq = msg.length === SMALL ? msg.readUInt32BE(4) : -1;
    if (info.delivery !== 'reliable') this.error = `small message ${seq} delivered as ${info.delivery}`;
    else if (this.end !== undefined) this.error = `message after END (${msg.length} bytes)`;
    else if (kind !== 'SMAL' && kind !== 'END!')
      this.error = `malformed small message (${msg.length} bytes: ${msg.subarray(0, 8).toString('hex')})`;
    else if (!msg.equals(small(kind, seq))) this.error = `small message ${seq} altered: ${msg.toString('hex')}`;
    else if (kind === 'END!') {
      if (seq !== this.next) this.error = `END says ${seq} small messages, ${this.next} arrived`;
      this.end = seq;
    } else if (seq !== this.next)
      this.error = `small message ${seq} arrived where ${this.next} was expected (${seq < this.next ? 'duplicate or reordered' : 'gap'})`;
    else this.next++;
  }
}

/** xorshift128 pseudo-random bulk bytes, one MiB at a time. */
class Bulk {
  private s: Uint32Array;
  constructor(seed: number) {
    this.s = new Uint32Array([seed >>> 0 || 1, 0x9e3779b9, 0x243f6a88, 0xb7e15162]);
  }
  chunk(): Buffer {
    const b = Buffer.allocUnsafe(MiB);
    const w = new Uint32Array(b.buffer, b.byteOffset, MiB / 4);
    const s = this.s;
    let x = s[0]!,
      y = s[1]!,
      z = s[2]!,
      v = s[3]!;
    for (let i = 0; i < w.length; i++) {
      const t = x ^ (x << 11);
      x = y;
      y = z;
      z = v;
      v = (v ^ (v >>> 19) ^ (t ^ (t >>> 8))) >>> 0;
      w[i] = v;
    }
    s[0] = x;
    s[1] = y;
    s[2] = z;
    s[3] = v;
    return b;
  }
}

async function main(cfg: Config): Promise<void> {
  const deadline = setTimeout(() => {
    out({ ev: 'deadline' });
    process.exit(3);
  }, cfg.deadlineMs);
  deadline.unref();

  const lines: string[] = [];
  const lineWaiters: (() => void)[] = [];
  const rl = createInterface({ input: process.stdin });
  rl.on('line', (l) => {
    // 'stats' (the test asks when a scenario fails): what this side holds and counts now.
    if (l.trim() === 'stats') return out({ ev: 'stats', blocked, events, smallReceived: checker.next, stats: statsOf() });
    lines.push(l.trim());
    for (const w of lineWaiters.splice(0)) w();
  });
  rl.on('close', () => process.exit(4));
  const waitLine = async (want: string): Promise<void> => {
    while (!lines.includes(want)) await new Promise<void>((r) => lineWaiters.push(r));
  };

  const events: Record<string, number> = {};
  const pipe = new UDPipe({ token: 'fault-suite', ...cfg.opts });
  for (const ev of ['connect', 'disconnect', 'close', 'stalled', 'unstalled'] as const) {
    pipe.on(ev, () => {
      events[ev] = (events[ev] ?? 0) + 1;
      out({ ev: 'event', name: ev });
    });
  }
  pipe.on('error', (err: Error) => out({ ev: 'error', message: String(err) }));

  // Backpressure shared by both streams: once a send() says false, both wait for 'drain'.
  let blocked = false;
  const drainWaiters: (() => void)[] = [];
  pipe.on('drain', () => {
    blocked = false;
    for (const w of drainWaiters.splice(0)) w();
  });
  const waitDrain = () => new Promise<void>((r) => (blocked ? drainWaiters.push(r) : r()));
  const trySend = (msg: Buffer, channel: number, sock?: Peer): boolean => {
    const ok = pipe.send(msg, sock, { channel });
    if (!ok) blocked = true;
    return ok;
  };

  const checker = new SmallChecker();
  let smallDone: () => void = () => {};
  const smallEnd = new Promise<void>((r) => (smallDone = r));
  const onSmall = (msg: Buffer, info: { reliable: boolean; channel: number; delivery: string }) => {
    checker.accept(msg, info);
    if (checker.end !== undefined || checker.error) smallDone();
  };

  /** Our numbered stream: a few messages every 10 ms while not backpressured, until stop(). */
  const ticker = (target: () => Peer | undefined | null) => {
    let sent = 0;
    let stopping = false;
    let finished: () => void = () => {};
    const done = new Promise<void>((r) => (finished = r));
    const timer = setInterval(() => {
      const sock = target();
      if (blocked || sock === null) return;
      for (let i = 0; i < 4 && !blocked; i++) trySend(small('SMAL', sent++), 1, sock);
      if (stopping && sent >= cfg.minSmall && !blocked) {
        trySend(small('END!', sent), 1, sock);
        clearInterval(timer);
        finished();
      }
    }, 10);
    return {
      stop: () => {
        stopping = true;
        return done;
      },
      get sent() {
        return sent;
      },
    };
  };

  const statsOf = () => {
    const endpoint = pipe.stats();
    const conn = endpoint.role === 'client' ? endpoint.connection : pipe.clients[0]?.stats();
    return { endpoint, conn };
  };

  if (cfg.role === 'server') {
    const hash = createHash('sha256');
    let bytes = 0;
    let count = 0;
    let first = 0;
    let last = 0;
    let bulkError: string | undefined;
    let bulkDone: () => void = () => {};
    const bulkEnd = new Promise<void>((r) => (bulkDone = r));
    let reverse: ReturnType<typeof ticker> | undefined;
    pipe.on('newMessage', (msg: Buffer, _sock: unknown, info: { reliable: boolean; channel: number; delivery: string }) => {
      if (info.channel === 1) return onSmall(msg, info);
      if (info.channel !== 0 || info.delivery !== 'reliable' || msg.length !== MiB)
        bulkError ??= `bulk message ${count}: ${msg.length} bytes on channel ${info.channel} as ${info.delivery}`;
      if (first === 0) first = Date.now();
      hash.update(msg);
      bytes += msg.length;
      count++;
      last = Date.now();
      if (count === cfg.bulkMiB) bulkDone();
    });
    pipe.on('connect', () => {
      reverse ??= ticker(() => pipe.clients[0] ?? null);
    });
    await pipe.start(cfg.port, cfg.host);
    out({ ev: 'listening' });
    await Promise.all([bulkEnd, smallEnd]);
    await reverse?.stop();
    out({
      ev: 'result',
      sha: hash.digest('hex'),
      bytes,
      count,
      ms: last - first,
      last,
      smallReceived: checker.next,
      smallEnd: checker.end,
      smallError: checker.error,
      bulkError,
      smallSent: reverse?.sent,
      events,
      stats: statsOf(),
      peer: pipe.clients[0] ? { address: pipe.clients[0].address, port: pipe.clients[0].port } : undefined,
    });
    await waitLine('quit');
    await pipe.close();
    out({ ev: 'closed' });
    process.exit(0);
  }

  pipe.on('newMessage', (msg: Buffer, _sock: unknown, info: { reliable: boolean; channel: number; delivery: string }) => {
    if (info.channel === 1) onSmall(msg, info);
    else checker.error ??= `unexpected message of ${msg.length} bytes on channel ${info.channel}`;
  });
  await pipe.connect(cfg.host, cfg.port, 10);
  out({ ev: 'connected', port: pipe.address?.port });
  const mine = ticker(() => undefined);
  const bulk = new Bulk(cfg.seed);
  const hash = createHash('sha256');
  const t0 = Date.now();
  for (let i = 0; i < cfg.bulkMiB; i++) {
    if (i === cfg.phaseAt) {
      out({ ev: 'phase', mib: i });
      await waitLine('go');
    }
    const chunk = bulk.chunk();
    hash.update(chunk);
    await waitDrain();
    trySend(chunk, 0);
  }
  await mine.stop();
  out({ ev: 'sent', sha: hash.digest('hex'), bytes: cfg.bulkMiB * MiB, smallSent: mine.sent, t0, ms: Date.now() - t0 });
  await smallEnd;
  out({ ev: 'result', smallReceived: checker.next, smallEnd: checker.end, smallError: checker.error, events, stats: statsOf() });
  await waitLine('quit');
  await pipe.close();
  out({ ev: 'closed' });
  process.exit(0);
}

const env = process.env.UDPF_PEER;
if (env) {
  main(JSON.parse(env) as Config).catch((err: unknown) => {
    out({ ev: 'fatal', message: String((err as Error)?.stack ?? err) });
    process.exit(2);
  });
}
