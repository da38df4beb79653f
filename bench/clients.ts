/**
 * What the benchmark's drivers share (bench/run.ts on loopback, bench/loss.ts in network
 * namespaces, bench/sender.ts inside one): the far-end child process (bench/peer.ts) and
 * its line protocol, and one connected client per implementation.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import type { EnetHost, EnetPeer } from 'enet';
import { UDPipe } from '../src/index.js';

const PEER = fileURLToPath(new URL('./peer.js', import.meta.url));

/** udpipe-enc: udpipe with `encrypt: true` on both sides. */
export type Impl = 'dgram' | 'tcp' | 'udx' | 'enet' | 'udpipe' | 'udpipe-enc';

export interface Peer {
  child: ChildProcess;
  port: number;
  ask(line: string): Promise<string>;
  count(): Promise<number>;
  stop(): void;
}

/** Where and how a child runs: `prefix` goes before the command (`ip netns exec NS`), `env` is added to ours. */
export interface Placement {
  prefix?: string[];
  env?: Record<string, string>;
}

/** bench/peer.ts with `args`, once it printed "ready <port>". */
export function startPeer(args: string[], where: Placement = {}): Promise<Peer> {
  return startChild(PEER, args, where);
}

/**
 * A node script that speaks the far end's line protocol: its first line is "ready <port>",
 * then it answers each line we write with one line.
 */
export async function startChild(script: string, args: string[], where: Placement = {}): Promise<Peer> {
  const nodeArgs = [...(process.env.BENCH_PROF ? ['--cpu-prof', '--cpu-prof-dir=/tmp/prof'] : []), '--expose-gc', script, ...args];
  const cpu = process.env.BENCH_PEER_CPU;
  const argv = [...(where.prefix ?? []), ...(cpu ? ['taskset', '-c', cpu] : []), process.execPath, ...nodeArgs];
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'inherit'], env: { ...process.env, ...where.env } });
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
  const exited = new Promise<never>((_, reject) =>
    child.once('exit', (code, signal) => reject(new Error(`${script} ${args.join(' ')} exited (${code ?? signal}) before it was ready`))),
  );
  exited.catch(() => {});
  const ready = await Promise.race([next(), exited]);
  const ask = (line: string) => {
    const p = next();
    child.stdin!.write(`${line}\n`);
    return p;
  };
  return {
    child,
    port: Number(ready.split(' ')[1]),
    ask,
    count: async () => Number((await ask('count')).split(' ')[1]),
    stop: () => child.stdin!.end(),
  };
}

const pendingDrain = new WeakMap<object, () => void>();

/**
 * Resolves on the emitter's next `event`. Callers race it with a timer, so the
 * previous listener of ours, if it never fired, is removed first: at most one waits.
 */
export function once(emitter: import('node:events').EventEmitter, event: string): Promise<void> {
  const old = pendingDrain.get(emitter);
  if (old) emitter.removeListener(event, old);
  return new Promise<void>((resolve) => {
    const fn = () => {
      pendingDrain.delete(emitter);
      resolve();
    };
    pendingDrain.set(emitter, fn);
    emitter.once(event, fn);
  });
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A connected client of one implementation, as the rows below need it. */
export interface Client {
  /** Sends one message; false when the implementation asks us to wait. */
  send(data: Buffer, reliable: boolean): boolean;
  /** Resolves when sending may go on. */
  drained(): Promise<void>;
  /** Called for every message (or chunk, for byte streams) that comes back. */
  onData(fn: (bytes: number) => void): void;
  close(): Promise<void>;
  /** What the implementation reports about itself (udpipe: its stats), for diagnostics. */
  stats?(): unknown;
}

/**
 * A client of `impl` connected to `host:port`. `ask` reaches the far end's line protocol
 * (a udx stream has no handshake: the far end is told our port).
 */
export async function connect(impl: Impl, host: string, port: number, ask: (line: string) => Promise<string>): Promise<Client> {
  let onData: (bytes: number) => void = () => {};
  switch (impl) {
    case 'dgram': {
      const s = dgram.createSocket({ type: 'udp4', sendBufferSize: 4 << 20, recvBufferSize: 4 << 20 });
      await new Promise<void>((r) => s.bind(0, host, r));
      s.on('message', (m) => onData(m.length));
      return {
        send: (d) => (s.send(d, port, host), true),
        drained: () => new Promise<void>((r) => setImmediate(r)),
        onData: (fn) => (onData = fn),
        close: async () => void s.close(),
      };
    }
    case 'tcp': {
      const c = net.connect(port, host);
      c.setNoDelay(true);
      await new Promise((resolve, reject) => c.once('connect', resolve).once('error', reject));
      c.on('error', () => {});
      c.on('data', (d) => onData(d.length));
      return {
        send: (d) => c.write(d),
        drained: () => once(c, 'drain'),
        onData: (fn) => (onData = fn),
        close: async () => void c.destroy(),
      };
    }
    case 'udx': {
      const udx = new (await import('udx-native')).default();
      const sock = udx.createSocket();
      sock.bind(0, host);
      await ask(`udx ${sock.address().port}`);
      const stream = udx.createStream(1);
      stream.connect(sock, 2, port, host);
      stream.on('data', (d: Buffer) => onData(d.length));
      stream.on('error', () => {});
      return {
        send: (d, reliable) => (reliable ? stream.write(d) : (stream.trySend(d), true)),
        drained: () => once(stream, 'drain'),
        onData: (fn) => (onData = fn),
        close: async () => {
          stream.destroy();
          await sock.close();
        },
      };
    }
    case 'enet': {
      // Loaded only here: ENet's emscripten build installs process-wide exception handlers.
      const enet = (await import('enet')).default;
      const enetHost = await new Promise<EnetHost>((resolve, reject) =>
        enet.createClient({ peers: 1, channels: 2, down: 0, up: 0 }, (err, h) => (err ? reject(err) : resolve(h))),
      );
      const p = await new Promise<EnetPeer>((resolve, reject) =>
        enetHost.connect({ address: host, port }, 2, 0, (err, pe) => (err ? reject(err) : resolve(pe))),
      );
      enetHost.start(1);
      p.on('message', (packet) => onData(packet.data().length));
      // ENet has no backpressure of its own: we keep at most this much unacknowledged.
      let outstanding = 0;
      let waiter: (() => void) | undefined;
      return {
        send: (d, reliable) => {
          outstanding += d.length;
          p.send(0, new enet.Packet(d, reliable ? enet.PACKET_FLAG.RELIABLE : 0), () => {
            outstanding -= d.length;
            if (outstanding < 2 << 20) waiter?.();
          });
          return outstanding < 4 << 20;
        },
        drained: () => new Promise<void>((r) => (waiter = r)),
        onData: (fn) => (onData = fn),
        close: async () => {
          p.disconnect();
          await sleep(20);
          enetHost.destroy();
        },
      };
    }
    case 'udpipe':
    case 'udpipe-enc': {
      const c = new UDPipe({ maxQueue: 1 << 14, encrypt: impl === 'udpipe-enc' });
      c.onNewMessage = (m) => onData(m.length);
      await c.connect(host, port);
      return {
        send: (d, reliable) => c.send(d, undefined, { reliable }),
        drained: () => once(c, 'drain'),
        onData: (fn) => (onData = fn),
        close: () => c.close(),
        stats: () => c.stats(),
      };
    }
  }
}
