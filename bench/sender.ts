/**
 * The sending end of a bench/loss.ts transfer, run inside the client's network namespace:
 * `node sender.js <impl> <host> <port> <MiB>`. It connects, prints "ready 0", and on a
 * `go` line sends that many MiB in 1 MiB messages (streams: 1 MiB writes), honouring each
 * implementation's backpressure, then answers "sent <ms>"; a `stats` line is answered with
 * the implementation's stats as one line of JSON. It stays connected (so lost data is
 * still retransmitted) until stdin closes.
 */
import { connect, type Impl, sleep } from './clients.js';

const [impl, host, port, mib] = process.argv.slice(2) as [Impl, string, string, string];
const noAsk = (): Promise<string> => Promise.reject(new Error(`${impl} needs the far end told our port: not supported across namespaces`));
const client = await connect(impl, host, Number(port), noAsk).catch((err: Error) => {
  console.error(`sender: ${impl} could not connect to ${host}:${port}: ${err.message}`);
  process.exit(1);
});
const chunk = Buffer.alloc(1 << 20, 0x62);

process.stdin.setEncoding('utf8');
process.stdin.on('data', async (d: string) => {
  if (d.includes('stats')) process.stdout.write(`stats ${JSON.stringify(client.stats?.() ?? null)}\n`);
  if (!d.includes('go')) return;
  const t0 = performance.now();
  for (let i = 0; i < Number(mib); i++) {
    if (!client.send(chunk, true)) await Promise.race([client.drained(), sleep(100)]);
  }
  process.stdout.write(`sent ${Math.round(performance.now() - t0)}\n`);
});
process.stdin.on('end', async () => {
  await client.close();
  process.exit(0);
});
process.stdout.write('ready 0\n');
