/**
 * Throughput through real-kernel loss: a transfer between two network namespaces joined
 * by a veth pair (test/helpers/netns.ts), the receiver (bench/peer.ts "bytes") in one and
 * the sender (bench/sender.ts) in the other, with datagrams dropped by nftables rules in
 * the input hook of both namespaces, so data and acknowledgements are lost alike. Each
 * pattern is reported as a ratio to the same implementation's clean rate in this run.
 *
 * Run by `npm run bench` (section "loss") or alone: `npm run bench:loss`. Needs root,
 * iproute2 and nftables; without them the section says so and measures nothing.
 * BENCH_LOSS_MIB (default 32) sets the size of each transfer.
 */
import { cleanupLeftovers, NetPair, unavailable } from '../test/helpers/netns.js';
import { fileURLToPath } from 'node:url';
import { type Impl, type Peer, sleep, startChild, startPeer } from './clients.js';

const SENDER = fileURLToPath(new URL('./sender.js', import.meta.url));
export const LOSS_MIB = Number(process.env.BENCH_LOSS_MIB ?? 32);
/** A transfer not done by then is reported with its rate so far. */
const LIMIT_MS = 60_000;

export interface LossPattern {
  name: string;
  /** nftables rule text for the input hook (empty: clean). */
  rule: string;
  /** Issue 11's floor for udpipe's rate under it, as a ratio to its clean rate. */
  goal: number;
}

export const PATTERNS: LossPattern[] = [
  { name: 'clean', rule: '', goal: 1 },
  { name: '2% random loss each way', rule: 'numgen random mod 100 < 2', goal: 0.8 },
  { name: '20% random loss each way', rule: 'numgen random mod 100 < 20', goal: 0.25 },
  // The bursts come last in each 100 datagrams, so the handshake's first datagrams pass
  // (dropping the first ten each way kept TCP and udpipe alike from connecting).
  { name: '10% loss in bursts of 10 datagrams each way', rule: 'numgen inc mod 100 >= 90', goal: 0.25 },
];

export interface LossResult {
  impl: Impl;
  pattern: string;
  seconds: number;
  /** Bytes the receiver had when it finished or the limit came. */
  done: number;
  total: number;
  /** Datagrams the rules dropped, both namespaces. */
  dropped: number;
  /** udpipe: the sender's congestion controller at the end (stats().connection.congestion). */
  congestion?: unknown;
}

async function one(impl: Impl, p: LossPattern): Promise<LossResult> {
  const net = NetPair.create();
  let receiver: Peer | undefined;
  let sender: Peer | undefined;
  try {
    if (p.rule) {
      for (const ns of [net.a.ns, net.b.ns]) {
        net.nft(
          ns,
          `table inet udpl {\n chain in {\n  type filter hook input priority -10; policy accept;\n  meta l4proto { udp, tcp } ${p.rule} counter drop comment "loss"\n }\n}\n`,
        );
      }
    }
    receiver = await startPeer([impl, 'bytes'], { prefix: net.exec(net.a.ns, []).flat(), env: { BENCH_HOST: net.a.addr } });
    // The far end listens on an ephemeral port; the sender is told it.
    const total = LOSS_MIB << 20;
    try {
      sender = await startChild(SENDER, [impl, net.a.addr, String(receiver.port), String(LOSS_MIB)], {
        prefix: net.exec(net.b.ns, []).flat(),
      });
    } catch {
      return { impl, pattern: p.name, seconds: 0, done: 0, total, dropped: 0 };
    }
    const t0 = performance.now();
    void sender.ask('go');
    let done = 0;
    for (;;) {
      done = await receiver.count();
      if (done >= total || performance.now() - t0 > LIMIT_MS) break;
      await sleep(5);
    }
    const seconds = (performance.now() - t0) / 1000;
    const dropped = p.rule ? net.counted(net.a.ns, 'loss') + net.counted(net.b.ns, 'loss') : 0;
    let congestion: unknown;
    if (impl.startsWith('udpipe')) {
      const line = await Promise.race([sender.ask('stats'), sleep(2000).then(() => 'stats null')]);
      congestion = (JSON.parse(line.slice(6)) as { connection?: { congestion?: unknown } } | null)?.connection?.congestion;
    }
    return { impl, pattern: p.name, seconds, done, total, dropped, congestion };
  } finally {
    sender?.stop();
    receiver?.stop();
    await sleep(200);
    sender?.child.kill('SIGKILL');
    receiver?.child.kill('SIGKILL');
    net.destroy();
  }
}

/** Why the loss rows cannot run here, or undefined. */
export function lossUnavailable(): string | undefined {
  return unavailable();
}

export async function measureLoss(impls: Impl[], log: (line: string) => void = () => {}): Promise<LossResult[]> {
  cleanupLeftovers();
  const out: LossResult[] = [];
  for (const p of PATTERNS) {
    for (const impl of impls) {
      const r = await one(impl, p);
      out.push(r);
      const cc = r.congestion ? `; ${JSON.stringify(r.congestion)}` : '';
      log(`loss ${impl} ${p.name}: ${r.seconds > 0 ? `${lossRate(r).toFixed(1)} MB/s, ${r.dropped} dropped${cc}` : 'could not connect'}`);
    }
  }
  return out;
}

export const lossRate = (r: LossResult): number => r.done / 1e6 / r.seconds;

/** The markdown table: rate, and the ratio to the same implementation's clean rate. */
export function lossTable(results: LossResult[]): string[] {
  const clean = (impl: Impl) => results.find((r) => r.impl === impl && r.pattern === 'clean');
  return [
    `| implementation | pattern | seconds | MB/s | vs its clean rate | datagrams dropped |`,
    '|---|---|---|---|---|---|',
    ...results.map((r) => {
      const c = clean(r.impl);
      if (r.seconds === 0) return `| ${r.impl} | ${r.pattern} | could not connect | 0 | 0 | |`;
      const secs =
        r.done < r.total ? `not done after ${r.seconds.toFixed(0)} (${(r.done / 2 ** 20).toFixed(0)} MiB)` : r.seconds.toFixed(2);
      return `| ${r.impl} | ${r.pattern} | ${secs} | ${lossRate(r).toFixed(1)} | ${c ? (lossRate(r) / lossRate(c)).toFixed(2) : 'n/a'} | ${r.dropped.toLocaleString('en-US')} |`;
    }),
  ];
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const why = lossUnavailable();
  if (why) {
    console.error(`bench:loss needs network namespaces: ${why}`);
    process.exit(2);
  }
  const impls = (process.env.BENCH_LOSS_IMPLS ?? 'tcp,udpipe').split(',') as Impl[];
  const results = await measureLoss(impls, (l) => console.error(l));
  console.log(`${LOSS_MIB} MiB per transfer, veth between two network namespaces, nftables drops in both input hooks.\n`);
  console.log(lossTable(results).join('\n'));
  process.exit(0);
}
