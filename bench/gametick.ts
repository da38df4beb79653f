/**
 * The game-tick scenario of issue 11: 500 clients, spread over a few client processes,
 * and one server, all at 30 Hz. Per tick each client sends a 64-byte input and receives
 * a 256-byte snapshot; once a second each client also receives a reliable 32-byte event
 * (bench/gametick-peer.ts). Reported: the server's CPU, snapshot and event delivery and
 * their latency p50/p99, for udpipe beside raw node:dgram sending the same datagrams.
 *
 * Run by `npm run bench` (section "gametick") or alone: `npm run bench:gametick`, which
 * also writes bench/results/gametick.md. BENCH_GAMETICK_CLIENTS (default 500),
 * BENCH_GAMETICK_PROCS (default 4 client processes), BENCH_GAMETICK_SECONDS (default
 * 10, after 3 s of warm-up) and BENCH_GAMETICK_RUNS (default 1; rows alternate dgram,
 * udpipe) change it.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { type Peer, sleep, startChild } from './clients.js';

const PEER = fileURLToPath(new URL('./gametick-peer.js', import.meta.url));
export const GAMETICK_CLIENTS = Number(process.env.BENCH_GAMETICK_CLIENTS ?? 500);
const PROCS = Number(process.env.BENCH_GAMETICK_PROCS ?? 4);
const SECONDS = Number(process.env.BENCH_GAMETICK_SECONDS ?? 10);
const RUNS = Number(process.env.BENCH_GAMETICK_RUNS ?? 1);
const WARMUP_MS = 3000;

export type GametickImpl = 'dgram' | 'udpipe';

interface Window {
  ms: number;
  cpuMs: number;
  inputs?: number;
  snapshots?: number;
  events?: number;
  clients?: number;
  datagramsSent?: number;
  datagramsReceived?: number;
  snapshotUs: number[];
  eventUs: number[];
}

export interface GametickResult {
  impl: GametickImpl;
  clients: number;
  seconds: number;
  /** The server's CPU, percent of one core. */
  serverCpu: number;
  /** All client processes together, percent of one core. */
  clientCpu: number;
  /** Datagrams the server sent and received per second (dgram: what it sent and got). */
  sentPerSecond: number;
  receivedPerSecond: number;
  /** Received by clients / sent by the server, during the window. */
  snapshotDelivery: number;
  eventDelivery: number;
  snapshotP50us: number;
  snapshotP99us: number;
  eventP50us: number;
  eventP99us: number;
}

const pct = (xs: number[], p: number) => (xs.length ? xs[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]! : 0);

async function stats(p: Peer): Promise<Window> {
  return JSON.parse((await p.ask('stats')).slice(6)) as Window;
}

async function one(impl: GametickImpl): Promise<GametickResult> {
  const server = await startChild(PEER, ['server', impl]);
  const groups: Peer[] = [];
  try {
    for (let i = 0; i < PROCS; i++) {
      const n = Math.floor(GAMETICK_CLIENTS / PROCS) + (i < GAMETICK_CLIENTS % PROCS ? 1 : 0);
      groups.push(await startChild(PEER, ['clients', impl, String(server.port), String(n)]));
    }
    await sleep(WARMUP_MS);
    await Promise.all([server, ...groups].map((p) => p.ask('mark')));
    await sleep(SECONDS * 1000);
    const s = await stats(server);
    const cs = await Promise.all(groups.map(stats));
    const sum = (k: 'snapshots' | 'events' | 'inputs' | 'cpuMs') => cs.reduce((a, c) => a + (c[k] ?? 0), 0);
    const sorted = (k: 'snapshotUs' | 'eventUs') => cs.flatMap((c) => c[k]).sort((a, b) => a - b);
    const snap = sorted('snapshotUs');
    const ev = sorted('eventUs');
    const secs = s.ms / 1000;
    return {
      impl,
      clients: s.clients ?? 0,
      seconds: secs,
      serverCpu: (s.cpuMs / s.ms) * 100,
      clientCpu: (sum('cpuMs') / s.ms) * 100,
      sentPerSecond: (s.datagramsSent ?? (s.snapshots ?? 0) + (s.events ?? 0)) / secs,
      receivedPerSecond: (s.datagramsReceived ?? s.inputs ?? 0) / secs,
      snapshotDelivery: sum('snapshots') / Math.max(1, s.snapshots ?? 0),
      eventDelivery: sum('events') / Math.max(1, s.events ?? 0),
      snapshotP50us: pct(snap, 50),
      snapshotP99us: pct(snap, 99),
      eventP50us: pct(ev, 50),
      eventP99us: pct(ev, 99),
    };
  } finally {
    for (const p of [server, ...groups]) p.stop();
    await sleep(300);
    for (const p of [server, ...groups]) p.child.kill('SIGKILL');
  }
}

/** Rows in the order measured: dgram, udpipe, RUNS times. */
export async function measureGametick(log: (line: string) => void = () => {}): Promise<GametickResult[]> {
  const out: GametickResult[] = [];
  for (let run = 0; run < RUNS; run++) {
    for (const impl of ['dgram', 'udpipe'] as const) {
      const r = await one(impl);
      out.push(r);
      log(
        `gametick ${impl}: server ${r.serverCpu.toFixed(1)}% CPU, snapshot p50 ${r.snapshotP50us.toFixed(0)} us p99 ${r.snapshotP99us.toFixed(0)} us`,
      );
    }
  }
  return out;
}

/** udpipe's server CPU over raw dgram's, each the median of its rows. */
export function gametickCpuRatio(results: GametickResult[]): number {
  const median = (impl: GametickImpl) => {
    const xs = results
      .filter((r) => r.impl === impl)
      .map((r) => r.serverCpu)
      .sort((a, b) => a - b);
    return xs[Math.floor(xs.length / 2)] ?? 0;
  };
  return median('dgram') > 0 ? median('udpipe') / median('dgram') : 0;
}

export function gametickTable(results: GametickResult[]): string[] {
  const ms = (us: number) => `${(us / 1000).toFixed(2)} ms`;
  const pc = (x: number) => `${(x * 100).toFixed(1)}%`;
  return [
    '| implementation | clients | server CPU | client processes CPU | server datagrams out/s / in/s | snapshots delivered | snapshot latency p50 / p99 | events delivered | event latency p50 / p99 |',
    '|---|---|---|---|---|---|---|---|---|',
    ...results.map(
      (r) =>
        `| ${r.impl} | ${r.clients} | ${r.serverCpu.toFixed(1)}% | ${r.clientCpu.toFixed(0)}% | ${Math.round(r.sentPerSecond).toLocaleString('en-US')} / ${Math.round(r.receivedPerSecond).toLocaleString('en-US')} | ${pc(r.snapshotDelivery)} | ${ms(r.snapshotP50us)} / ${ms(r.snapshotP99us)} | ${pc(r.eventDelivery)} | ${ms(r.eventP50us)} / ${ms(r.eventP99us)} |`,
    ),
  ];
}

export const gametickSetup = (): string =>
  `${GAMETICK_CLIENTS} clients in ${PROCS} client processes, one server process, loopback, 30 Hz; per tick and client a 64-byte input up and a 256-byte snapshot down (udpipe: unreliable-sequenced), once a second per client a 32-byte event down (udpipe: reliable). ${SECONDS} s measured after ${WARMUP_MS / 1000} s of warm-up. CPU in % of one core (\`process.cpuUsage\`). Latency: from the server's send call to the client's callback, on the shared monotonic clock. Delivered: what the clients got over what the server sent, in windows that start a moment apart in each process (so up to about 0.5% either way).`;

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const results = await measureGametick((l) => console.error(l));
  const machine = `${os.cpus()[0]?.model ?? 'unknown cpu'}, ${os.cpus().length} cores, node ${process.version}`;
  const out = [
    `# Game tick, ${new Date().toISOString().slice(0, 10)}`,
    '',
    `Machine: ${machine}. Command: \`${RUNS > 1 ? `BENCH_GAMETICK_RUNS=${RUNS} ` : ''}npm run bench:gametick\`. ${gametickSetup()}`,
    '',
    ...gametickTable(results),
    '',
    `Server CPU, udpipe / raw dgram: ${gametickCpuRatio(results).toFixed(2)} (goal: at most 2).`,
    '',
  ].join('\n');
  console.log(out);
  const dir = fileURLToPath(new URL('../../bench/results/', import.meta.url));
  mkdirSync(dir, { recursive: true });
  writeFileSync(`${dir}gametick.md`, out);
  process.exit(0);
}
