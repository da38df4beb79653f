/**
 * `npm run bench`: udpipe side by side with raw node:dgram (the ceiling), node:net TCP,
 * udx-native (native reliable UDP streams) and the npm `enet` package, in one run on
 * loopback, each with its far end in a second process (bench/peer.ts). Writes a table
 * with the machine description to bench/results/latest.md. Numbers are reported as
 * measured and as ratios; nothing here is a test.
 *
 * BENCH_SECONDS (default 2) sets the length of each timed row; BENCH_IDLE (default
 * "1000,10000") the idle-connection counts. BENCH_PEER_CPU=N runs every far end on CPU
 * N (taskset); with `taskset -c M` on this process, that fixes the placement (the two
 * sides on one vCPU or on two change ping-pong by up to 4x on a 2-vCPU machine).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { UDPipe } from '../src/index.js';
import { connect, type Impl, sleep, startPeer } from './clients.js';
import { gametickCpuRatio, gametickSetup, gametickTable, measureGametick } from './gametick.js';
import { LOSS_MIB, lossRate, lossTable, lossUnavailable, measureLoss, PATTERNS } from './loss.js';

const HOST = '127.0.0.1';
const SECONDS = Number(process.env.BENCH_SECONDS ?? 2);
/** BENCH_ONLY=ping,blast,transfer,idle,gametick,loss runs only those sections (the table shows what ran). */
const SECTIONS = ['ping', 'blast', 'transfer', 'idle', 'gametick', 'loss'];
const ONLY = new Set((process.env.BENCH_ONLY ?? SECTIONS.join(',')).split(','));
const IDLE_COUNTS = (process.env.BENCH_IDLE ?? '1000,10000')
  .split(',')
  .map(Number)
  .filter((n) => n > 0);
const MSG = Buffer.alloc(32, 0x61);
const TRANSFER = 64 * 1024 * 1024;
/** A transfer that has not finished by then is reported as not finished, with its rate so far. */
const TRANSFER_LIMIT_S = 30;

const yieldNow = () => new Promise((r) => setImmediate(r));
const pct = (xs: number[], p: number) => xs[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;

interface PingResult {
  perSecond: number;
  p50us: number;
  p99us: number;
  /** CPU per round trip, microseconds: this process (the asking side), and the echoing peer. */
  cpuNearUs: number;
  cpuFarUs: number;
}

/** Sequential round trips of one 32-byte message for SECONDS. */
async function pingPong(impl: Impl): Promise<PingResult> {
  const peer = await startPeer([impl, 'echo']);
  const c = await connect(impl, HOST, peer.port, peer.ask);
  let got = 0;
  let waiting: (() => void) | undefined;
  c.onData((n) => {
    got += n;
    if (got >= MSG.length) {
      got -= MSG.length;
      waiting?.();
    }
  });
  const roundTrip = () =>
    new Promise<void>((resolve) => {
      // Raw dgram has no retransmission: a lost datagram is sent again after 100 ms.
      const retry = impl === 'dgram' ? setTimeout(() => c.send(MSG, true), 100) : undefined;
      waiting = () => {
        clearTimeout(retry);
        resolve();
      };
      c.send(MSG, true);
    });
  const lat: number[] = [];
  for (let i = 0; i < 200; i++) await roundTrip(); // warm-up
  const farCpu = async () => Number((await peer.ask('cpu')).split(' ')[1]) * 1000;
  const far0 = await farCpu();
  const near0 = process.cpuUsage();
  const end = performance.now() + SECONDS * 1000;
  while (performance.now() < end) {
    const t = performance.now();
    await roundTrip();
    lat.push((performance.now() - t) * 1000);
  }
  const near = process.cpuUsage(near0);
  const far = (await farCpu()) - far0;
  await c.close();
  peer.stop();
  lat.sort((a, b) => a - b);
  const n = Math.max(1, lat.length);
  return {
    perSecond: lat.length / SECONDS,
    p50us: pct(lat, 50),
    p99us: pct(lat, 99),
    cpuNearUs: (near.user + near.system) / n,
    cpuFarUs: far / n,
  };
}

/** 32-byte messages for SECONDS, as fast as the implementation lets us: how many arrived. */
async function blast(impl: Impl, reliable: boolean): Promise<{ sent: number; delivered: number }> {
  const peer = await startPeer([impl, 'sink']);
  const c = await connect(impl, HOST, peer.port, peer.ask);
  const end = performance.now() + SECONDS * 1000;
  let sent = 0;
  while (performance.now() < end) {
    let ok = true;
    for (let i = 0; i < 256 && ok; i++, sent++) ok = c.send(MSG, reliable);
    if (!ok) await Promise.race([c.drained(), sleep(50)]);
    else await yieldNow();
  }
  // Give what is in flight a moment; reliable ones are counted as they arrive anyway.
  await sleep(reliable ? 200 : 50);
  let delivered = await peer.count();
  // Byte streams count bytes.
  if ((impl === 'tcp' || impl === 'udx') && reliable) delivered = Math.floor(delivered / MSG.length);
  await c.close();
  peer.stop();
  return { sent, delivered };
}

/** Seconds to move TRANSFER bytes in 1 MiB messages (streams: 1 MiB writes) until the far end has them all. */
async function transfer(impl: Impl, dropRate = 0): Promise<{ seconds: number; done: number }> {
  const peer = await startPeer([impl, 'bytes']);
  const proxy = dropRate > 0 ? await startPeer(['proxy', String(peer.port), String(dropRate)]) : undefined;
  const c = await connect(impl, HOST, proxy?.port ?? peer.port, peer.ask);
  const chunk = Buffer.alloc(1024 * 1024, 0x62);
  const t0 = performance.now();
  const limit = t0 + TRANSFER_LIMIT_S * 1000;
  for (let sent = 0; sent < TRANSFER && performance.now() < limit; sent += chunk.length) {
    if (!c.send(chunk, true)) await Promise.race([c.drained(), sleep(100)]);
  }
  let done = 0;
  while ((done = await peer.count()) < TRANSFER && performance.now() < limit) await sleep(5);
  const seconds = (performance.now() - t0) / 1000;
  await c.close();
  peer.stop();
  proxy?.stop();
  return { seconds, done };
}

interface IdleResult {
  clients: number;
  connectSeconds: number;
  bytesPerConnection: number;
  rssPerConnection: number;
  cpuPercent: number;
}

/** N udpipe clients connect to one server and stay idle (keep-alive only): the server's cost. */
async function idle(n: number): Promise<IdleResult> {
  const peer = await startPeer(['udpipe', 'idle']);
  const before = JSON.parse((await peer.ask('stats')).slice(6));
  const clients: UDPipe[] = [];
  const t0 = performance.now();
  for (let i = 0; i < n; i += 200) {
    const batch = Array.from({ length: Math.min(200, n - i) }, () => new UDPipe({ reconnect: false }));
    await Promise.all(batch.map((c) => c.connect(HOST, peer.port, 30)));
    clients.push(...batch);
  }
  const connectSeconds = (performance.now() - t0) / 1000;
  await sleep(1500); // handshakes settle, first keep-alives go
  const a = JSON.parse((await peer.ask('stats')).slice(6));
  const window = 5000;
  await sleep(window);
  const b = JSON.parse((await peer.ask('stats')).slice(6));
  await Promise.all(clients.map((c) => c.close()));
  peer.stop();
  return {
    clients: a.clients,
    connectSeconds,
    bytesPerConnection: (a.heapUsed + a.external - before.heapUsed - before.external) / n,
    rssPerConnection: (a.rss - before.rss) / n,
    cpuPercent: ((b.cpuMs - a.cpuMs) / window) * 100,
  };
}

function meanPing(a: PingResult, b: PingResult): PingResult {
  const mean = (k: keyof PingResult) => (a[k] + b[k]) / 2;
  return {
    perSecond: mean('perSecond'),
    p50us: mean('p50us'),
    p99us: mean('p99us'),
    cpuNearUs: mean('cpuNearUs'),
    cpuFarUs: mean('cpuFarUs'),
  };
}

async function main(): Promise<void> {
  const machine = `${os.cpus()[0]?.model ?? 'unknown cpu'}, ${os.cpus().length} cores, ${Math.round(os.totalmem() / 2 ** 30)} GiB, ${os.platform()} ${os.release()}, node ${process.version}`;
  console.error(`machine: ${machine}\n${SECONDS} s per timed row`);
  const f = (x: number) => Math.round(x).toLocaleString('en-US');
  const r = (a: number, b: number) => (b > 0 ? (a / b).toFixed(2) : 'n/a');
  /** The throughput issue's targets, as ratios measured in this run. */
  const targets: string[] = [];
  const target = (name: string, ratio: number, goal: number, why: string) =>
    targets.push(
      `| ${name} | ${ratio.toFixed(2)} | ${goal.toFixed(2)} | ${ratio >= goal ? 'met' : `missed by ${((1 - ratio / goal) * 100).toFixed(0)}%: ${why}`} |`,
    );
  /** The core issue's targets (issue 11); `atMost` for a ceiling rather than a floor. */
  const coreTargets: string[] = [];
  /** `metOnly`: what a 'met' is worth (a ratio that holds for one placement of the processes only). */
  const coreTarget = (name: string, measured: number, goal: number, why: string, atMost = false, unit = '', metOnly = '') => {
    const met = atMost ? measured <= goal : measured >= goal;
    const off = atMost ? measured / goal - 1 : 1 - measured / goal;
    const show = (x: number) => (unit ? `${f(x)}${unit}` : x.toFixed(2));
    coreTargets.push(
      `| ${name} | ${show(measured)} | ${atMost ? 'at most' : 'at least'} ${show(goal)} | ${met ? `met${metOnly}` : `missed by ${(off * 100).toFixed(0)}%: ${why}`} |`,
    );
  };
  const lines = [
    `# udpipe benchmark, ${new Date().toISOString().slice(0, 10)}`,
    '',
    `Machine: ${machine}. Loopback; the far end in a second process (the lossy proxy in a third); ${SECONDS} s per timed row. ${process.env.BENCH_PEER_CPU ? `Far ends pinned to CPU ${process.env.BENCH_PEER_CPU} (taskset).` : 'Processes not pinned.'} Command: \`npm run bench\`.`,
    '',
    'The lossless udpipe rows with and without encryption are each the mean of two runs made in opposite orders (a later row in one process runs on warmer code).',
  ];

  if (ONLY.has('ping')) {
    const impls: Impl[] = ['dgram', 'tcp', 'udx', 'enet', 'udpipe', 'udpipe-enc'];
    const ping: Partial<Record<Impl, PingResult>> = {};
    for (const i of impls) {
      ping[i] = await pingPong(i);
      console.error(`ping-pong ${i}: ${Math.round(ping[i]!.perSecond)}/s`);
    }
    // The second of two rows in one process runs on warmer code: measure the encrypted
    // and plain rows again in the other order and report the mean of both.
    for (const i of ['udpipe-enc', 'udpipe'] as const) ping[i] = meanPing(ping[i]!, await pingPong(i));
    lines.push(
      '',
      '## Ping-pong, 32-byte messages, one at a time (reliable where the library has a choice)',
      '',
      '| implementation | round trips/s | p50 | p99 | vs udx-native | CPU per round trip, asking side / echoing side |',
      '|---|---|---|---|---|---|',
      ...impls.map(
        (i) =>
          `| ${i} | ${f(ping[i]!.perSecond)} | ${ping[i]!.p50us.toFixed(0)} us | ${ping[i]!.p99us.toFixed(0)} us | ${r(ping[i]!.perSecond, ping.udx!.perSecond)} | ${ping[i]!.cpuNearUs.toFixed(0)} us / ${ping[i]!.cpuFarUs.toFixed(0)} us |`,
      ),
    );
    target(
      'ping-pong round trips, udpipe / udx-native',
      ping.udpipe!.perSecond / ping.udx!.perSecond,
      1,
      'udx-native is C and its round trip is as fast as raw dgram; udpipe spends about 60-70 us of JavaScript per packet (MAC, frames, timers, events, node:dgram) on each side',
    );
    target(
      'ping-pong round trips, udpipe encrypted / unencrypted',
      ping['udpipe-enc']!.perSecond / ping.udpipe!.perSecond,
      0.7,
      'ChaCha20-Poly1305 per packet costs more than the HMAC',
    );
    const perPacket = 'JavaScript per packet (frames, MAC, events, timers) on top of what node:dgram costs';
    // Where the two processes run decides raw dgram's round trip (up to 4x on 2 vCPUs), so
    // a ratio holds only for its placement: the row says which.
    const placement = process.env.BENCH_PEER_CPU ? `far end on CPU ${process.env.BENCH_PEER_CPU}` : 'unpinned';
    const metOnly = process.env.BENCH_PEER_CPU
      ? ''
      : ' for this placement only: pin both processes to one vCPU (BENCH_PEER_CPU=1 taskset -c 1) to judge it';
    coreTarget(
      `ping-pong round trips, udpipe / raw dgram (${placement})`,
      ping.udpipe!.perSecond / ping.dgram!.perSecond,
      0.6,
      perPacket,
      false,
      '',
      metOnly,
    );
    coreTarget(
      `ping-pong p99, udpipe / raw dgram (${placement})`,
      ping.udpipe!.p99us / ping.dgram!.p99us,
      2,
      'garbage collection pauses and timer wakeups',
      true,
      '',
      metOnly,
    );
    // The asking side's CPU includes this script's own loop, the same for every row.
    const cpuRatio = Math.max(ping.udpipe!.cpuNearUs / ping.dgram!.cpuNearUs, ping.udpipe!.cpuFarUs / ping.dgram!.cpuFarUs);
    coreTarget(
      `ping-pong CPU per round trip, udpipe / raw dgram (the worse side, ${placement})`,
      cpuRatio,
      1.6,
      perPacket,
      true,
      '',
      metOnly,
    );
  }

  if (ONLY.has('blast')) {
    const blasts: { name: string; r: { sent: number; delivered: number } }[] = [];
    for (const [impl, reliable, name] of [
      ['dgram', false, 'dgram (no flow control: what the receiver dropped is lost)'],
      ['tcp', true, 'tcp (node:net, reliable stream)'],
      ['udx', true, 'udx-native stream (reliable)'],
      ['udx', false, 'udx-native datagrams (unreliable)'],
      ['enet', true, 'enet reliable'],
      ['enet', false, 'enet unreliable'],
      ['udpipe', true, 'udpipe reliable-ordered'],
      ['udpipe', false, 'udpipe unreliable'],
      ['udpipe-enc', true, 'udpipe reliable-ordered, encrypted'],
    ] as const) {
      const res = await blast(impl, reliable);
      blasts.push({ name, r: res });
      console.error(`32-byte ${name}: ${Math.round(res.delivered / SECONDS)}/s`);
    }
    // As for ping-pong: the encrypted and plain reliable rows again, in the other order.
    for (const name of ['udpipe reliable-ordered, encrypted', 'udpipe reliable-ordered']) {
      const b = blasts.find((x) => x.name === name)!;
      const again = await blast(name.endsWith('encrypted') ? 'udpipe-enc' : 'udpipe', true);
      b.r = { sent: (b.r.sent + again.sent) / 2, delivered: (b.r.delivered + again.delivered) / 2 };
    }
    const rate = (x: { delivered: number }) => x.delivered / SECONDS;
    const dg = rate(blasts[0]!.r);
    const ordered = rate(blasts.find((b) => b.name === 'udpipe reliable-ordered')!.r);
    target('32-byte reliable messages delivered, udpipe / raw dgram', ordered / dg, 2, 'packing did not make up for per-packet cost');
    coreTarget(
      '32-byte reliable messages delivered, udpipe / udx-native stream',
      ordered / rate(blasts.find((b) => b.name === 'udx-native stream (reliable)')!.r),
      1,
      'a message costs objects and per-message bookkeeping; udx-native streams bytes in C',
    );
    target(
      '32-byte reliable messages delivered, udpipe encrypted / unencrypted',
      rate(blasts.find((b) => b.name === 'udpipe reliable-ordered, encrypted')!.r) / ordered,
      0.7,
      'ChaCha20-Poly1305 per packet costs more than the HMAC',
    );
    lines.push(
      '',
      '## 32-byte messages, as fast as each lets the sender go (messages delivered per second)',
      '',
      '| implementation | sent | delivered/s | delivered | vs dgram |',
      '|---|---|---|---|---|',
      ...blasts.map(
        (b) =>
          `| ${b.name} | ${f(b.r.sent)} | ${f(rate(b.r))} | ${((100 * b.r.delivered) / Math.max(1, b.r.sent)).toFixed(1)}% | ${r(rate(b.r), dg)} |`,
      ),
    );
  }

  if (ONLY.has('transfer')) {
    const moves: { name: string; t: { seconds: number; done: number } }[] = [];
    for (const [impl, drop, name] of [
      ['tcp', 0, 'tcp'],
      ['udx', 0, 'udx-native'],
      ['enet', 0, 'enet'],
      ['udpipe', 0, 'udpipe reliable'],
      ['udpipe-enc', 0, 'udpipe reliable, encrypted'],
      ['udx', 0.02, 'udx-native, 2% loss'],
      ['udpipe', 0.02, 'udpipe reliable, 2% loss'],
    ] as const) {
      const t = await transfer(impl, drop);
      moves.push({ name, t });
      console.error(`transfer ${name}: ${(t.done / 1e6 / t.seconds).toFixed(0)} MB/s`);
    }
    // As for ping-pong: the encrypted and plain lossless rows again, in the other order.
    for (const name of ['udpipe reliable, encrypted', 'udpipe reliable']) {
      const m = moves.find((x) => x.name === name)!;
      const again = await transfer(name.endsWith('encrypted') ? 'udpipe-enc' : 'udpipe', 0);
      m.t = { seconds: (m.t.seconds + again.seconds) / 2, done: Math.min(m.t.done, again.done) };
    }
    const mbps = (t: { seconds: number; done: number }) => t.done / 1e6 / t.seconds;
    const udxMove = mbps(moves[1]!.t);
    const ours = mbps(moves.find((m) => m.name === 'udpipe reliable')!.t);
    target('64 MiB transfer, udpipe / udx-native', ours / udxMove, 1, 'per-byte cost (copies, HMAC) on two shared cores');
    target(
      '64 MiB transfer, udpipe encrypted / unencrypted',
      mbps(moves.find((m) => m.name === 'udpipe reliable, encrypted')!.t) / ours,
      0.7,
      'ChaCha20-Poly1305 costs more per byte than the HMAC',
    );
    coreTarget(
      '64 MiB transfer, udpipe / TCP',
      ours / mbps(moves[0]!.t),
      0.5,
      'per-datagram cost and two copies per byte, against a kernel byte stream',
    );
    coreTarget(
      '64 MiB transfer, udpipe encrypted / unencrypted',
      mbps(moves.find((m) => m.name === 'udpipe reliable, encrypted')!.t) / ours,
      0.8,
      'ChaCha20-Poly1305 costs more per byte than the HMAC',
    );
    target(
      '64 MiB transfer at 2% loss / lossless, udpipe',
      mbps(moves.find((m) => m.name === 'udpipe reliable, 2% loss')!.t) / ours,
      0.5,
      'loss recovery too slow for this rate',
    );
    lines.push(
      '',
      `## 64 MiB in 1 MiB messages (streams: 1 MiB writes), until the far end has every byte (limit ${TRANSFER_LIMIT_S} s)`,
      '',
      '| implementation | seconds | MB/s | vs udx-native |',
      '|---|---|---|---|',
      ...moves.map(
        (m) =>
          `| ${m.name} | ${m.t.done < TRANSFER ? `not done after ${m.t.seconds.toFixed(0)} (${(m.t.done / 2 ** 20).toFixed(0)} MiB)` : m.t.seconds.toFixed(2)} | ${mbps(m.t).toFixed(0)} | ${r(mbps(m.t), udxMove)} |`,
      ),
    );
  }

  if (ONLY.has('idle')) {
    const idles: IdleResult[] = [];
    for (const n of IDLE_COUNTS) {
      idles.push(await idle(n));
      console.error(`idle ${n}: done`);
    }
    lines.push(
      '',
      '## Idle udpipe connections to one server (keep-alive: PING after 1 s of silence, PONG back)',
      '',
      '| connections | connect time | server heap+external per connection | server RSS per connection | server CPU for keep-alives |',
      '|---|---|---|---|---|',
      ...idles.map(
        (i) =>
          `| ${f(i.clients)} | ${i.connectSeconds.toFixed(1)} s | ${f(i.bytesPerConnection)} B | ${f(i.rssPerConnection)} B | ${i.cpuPercent.toFixed(1)}% of a core |`,
      ),
    );
    const ten = idles.find((i) => i.clients >= 10_000);
    if (ten) {
      coreTarget(
        '10,000 idle connections: server heap+external per connection',
        ten.bytesPerConnection,
        4096,
        'some twenty objects per connection, each a few dozen bytes, and times kept as boxed doubles',
        true,
        ' B',
      );
      coreTarget(
        '10,000 idle connections: server CPU, % of a core',
        ten.cpuPercent,
        15,
        "the JavaScript of each PING/PONG exchange (frames, MAC, allocations) on top of node:dgram's own cost, which is about a third",
        true,
      );
    }
  }

  if (ONLY.has('gametick')) {
    const results = await measureGametick((l) => console.error(l));
    lines.push('', '## Game tick (`npm run bench:gametick`)', '', gametickSetup(), '', ...gametickTable(results));
    coreTarget(
      'game tick: server CPU, udpipe / raw dgram',
      gametickCpuRatio(results),
      2,
      'the same datagrams as raw dgram now (ACKs of unreliable data ride along), but each costs udpipe about three and a half times what it costs raw dgram: MAC, frames, timers, events',
      true,
    );
  }

  if (ONLY.has('loss')) {
    const why = lossUnavailable();
    lines.push('', '## Loss in network namespaces (veth, nftables drops in both input hooks; `npm run bench:loss`)', '');
    if (why) lines.push(`Not run: ${why}.`);
    else {
      const results = await measureLoss(['tcp', 'udpipe'], (l) => console.error(l));
      lines.push(`${LOSS_MIB} MiB per transfer, 1 MiB messages.`, '', ...lossTable(results));
      const ratio = (pattern: string) => {
        const clean = results.find((x) => x.impl === 'udpipe' && x.pattern === 'clean');
        const row = results.find((x) => x.impl === 'udpipe' && x.pattern === pattern);
        return clean && row && lossRate(clean) > 0 ? lossRate(row) / lossRate(clean) : 0;
      };
      const cause = (pattern: string) =>
        pattern.includes('bursts')
          ? 'a burst drops ten ACKs in a row, every ACK of a flight of the small window the receiver-side queue allows, and the sender waits out doubling probe timeouts until ACKs of its probes get through'
          : 'losses that came with a queue (the receiver falls behind and its socket buffer fills) are congestion, and halve the window';
      for (const p of PATTERNS.slice(1)) coreTarget(`${p.name}: udpipe throughput / its clean rate`, ratio(p.name), p.goal, cause(p.name));
    }
  }

  if (targets.length > 0) {
    lines.push('', '## Targets (from the throughput issue)', '', '| target | measured | goal | result |', '|---|---|---|---|', ...targets);
  }
  if (coreTargets.length > 0) {
    lines.push(
      '',
      '## Targets (from the core issue, 11)',
      '',
      '100,000 connections are measured apart (`BENCH_MANY=100000 BENCH_PING_MS=30000 npm run bench:many`, several minutes): bench/results/many.md.',
      '',
      '| target | measured | goal | result |',
      '|---|---|---|---|',
      ...coreTargets,
    );
  }
  const out = `${lines.join('\n')}\n`;
  console.log(out);
  const dir = fileURLToPath(new URL('../../bench/results/', import.meta.url));
  mkdirSync(dir, { recursive: true });
  // A run of some sections only does not replace the full table.
  writeFileSync(`${dir}${SECTIONS.every((x) => ONLY.has(x)) ? 'latest' : 'partial'}.md`, out);
  process.exit(0);
}

void main();
