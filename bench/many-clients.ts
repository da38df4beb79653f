/**
 * One client process of bench/many.ts: `node many-clients.js <port> <n> <local ip>`
 * connects n udpipe clients to 127.0.0.1:<port>, each on its own socket bound to
 * <local ip> (one address has only about 28,000 ephemeral ports), 500 at a time, then
 * prints "ready <n> <ms>" and holds them. BENCH_PING_MS sets their keep-alive interval.
 */
import { UDPipe } from '../src/index.js';
import { NodeTransport } from '../src/transport/node-transport.js';
import type { DatagramSocket, SocketHooks } from '../src/transport/types.js';

const [port, count, local] = process.argv.slice(2) as [string, string, string];
const ping = process.env.BENCH_PING_MS ? Number(process.env.BENCH_PING_MS) : undefined;

/** The real transport, with sockets bound to one chosen local address. */
class LocalTransport extends NodeTransport {
  override bind(p: number, _host: string | undefined, hooks: SocketHooks): Promise<DatagramSocket> {
    return super.bind(p, local, hooks);
  }
}

const transport = new LocalTransport();
const clients: UDPipe[] = [];
const t0 = performance.now();
const n = Number(count);
for (let i = 0; i < n; i += 500) {
  const batch = Array.from(
    { length: Math.min(500, n - i) },
    () =>
      new UDPipe({
        reconnect: false,
        transport,
        ...(ping ? { pingIntervalMs: ping, stallTimeoutMs: 3 * ping, timeoutMs: 10 * ping } : {}),
      }),
  );
  const results = await Promise.allSettled(batch.map((c) => c.connect('127.0.0.1', Number(port), 60)));
  const failed = results.filter((r) => r.status === 'rejected');
  if (failed.length > 0) {
    const why = (failed[0] as PromiseRejectedResult).reason as Error;
    console.error(
      `${local}: ${failed.length} of the ${batch.length} clients from ${i} on failed after ${Math.round(performance.now() - t0)} ms: ${why.message}`,
    );
    process.exit(1);
  }
  clients.push(...batch);
}
process.stdout.write(`ready ${n} ${Math.round(performance.now() - t0)}\n`);
process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
