/**
 * 100,000 udpipe connections to one server (issue 11): connect time, the server's
 * memory per connection and its CPU for keep-alives. `node dist/bench/many.js`
 * (`npm run bench:many`); BENCH_MANY (default 100000) clients over BENCH_MANY_PROCS
 * (default: 4, or one per 18,000 clients) client processes, each on its own loopback address. BENCH_PING_MS
 * (default 10000) is both sides' keep-alive interval: at the default 1 s, 100,000
 * connections would take the server about three cores on this machine (the 10,000 row
 * of `npm run bench` costs about a quarter of one), so the CPU row is reported for the
 * interval given.
 */
import { fileURLToPath } from 'node:url';
import { type Peer, sleep, startChild, startPeer } from './clients.js';

const CLIENTS = fileURLToPath(new URL('./many-clients.js', import.meta.url));
const N = Number(process.env.BENCH_MANY ?? 100_000);
/** A process may hold 20,000 files here (the hard limit, which root in this container cannot raise). */
const PROCS = Number(process.env.BENCH_MANY_PROCS ?? Math.max(4, Math.ceil(N / 18_000)));
const PING = Number(process.env.BENCH_PING_MS ?? 10_000);

interface ServerStats {
  cpuMs: number;
  rss: number;
  heapUsed: number;
  external: number;
  clients: number;
  endpoint: Record<string, unknown>;
}
const stats = async (p: Peer): Promise<ServerStats> => JSON.parse((await p.ask('stats')).slice(6)) as ServerStats;

const env = { BENCH_MAX_CLIENTS: String(N + 1000), BENCH_PING_MS: String(PING), NODE_OPTIONS: '--max-old-space-size=12000' };
const server = await startPeer(['udpipe', 'idle'], { env });
const groups: Peer[] = [];
try {
  const before = await stats(server);
  const t0 = performance.now();
  const per = Math.ceil(N / PROCS);
  const starting = Array.from({ length: PROCS }, (_, i) =>
    startChild(CLIENTS, [String(server.port), String(Math.min(per, N - i * per)), `127.0.0.${10 + i}`], { env }),
  );
  // Progress on stderr while the clients connect, so that a run that does not finish says where it stood.
  const progress = setInterval(async () => {
    const s = await stats(server);
    const e = s.endpoint as Record<string, number>;
    const t = ((performance.now() - t0) / 1000).toFixed(0);
    console.error(
      `${t} s: ${s.clients} connected; server cpu ${((s.cpuMs - before.cpuMs) / 1000).toFixed(1)} s, in ${e.datagramsReceived} out ${e.datagramsSent}, accepted ${e.handshakesAccepted} abandoned ${e.handshakesAbandoned} malformed ${e.malformed}, unstepped drops ${e.droppedUnstepped}`,
    );
  }, 5000);
  try {
    groups.push(...(await Promise.all(starting)));
  } finally {
    clearInterval(progress);
  }
  const connectSeconds = (performance.now() - t0) / 1000;
  const cpuAfterConnect = (await stats(server)).cpuMs - before.cpuMs;
  await sleep(PING + 2000); // every connection has had a keep-alive exchange
  const a = await stats(server);
  const window = 2 * PING;
  await sleep(window);
  const b = await stats(server);
  const f = (x: number) => Math.round(x).toLocaleString('en-US');
  console.log(
    [
      `| connections | connect time (${PROCS} client processes) | server CPU while connecting | server heap+external per connection | server RSS per connection | server CPU for keep-alives (PING every ${PING / 1000} s) |`,
      '|---|---|---|---|---|---|',
      `| ${f(b.clients)} of ${f(N)} | ${connectSeconds.toFixed(1)} s | ${(cpuAfterConnect / 1000).toFixed(1)} s (${((cpuAfterConnect / 1000 / connectSeconds) * 100).toFixed(0)}% of a core) | ${f((a.heapUsed + a.external - before.heapUsed - before.external) / N)} B | ${f((a.rss - before.rss) / N)} B | ${(((b.cpuMs - a.cpuMs) / window) * 100).toFixed(1)}% of a core |`,
    ].join('\n'),
  );
} finally {
  for (const g of groups) g.stop();
  server.stop();
  await sleep(1000);
  for (const g of [...groups, server]) g.child.kill('SIGKILL');
}
process.exit(0);
