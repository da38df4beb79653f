/**
 * The server half of each benchmark, run in its own process by bench/run.ts. It prints
 * "ready <port>" when listening, echoes ("echo" mode) or counts messages ("sink") or
 * bytes ("bytes"; TCP always counts bytes) of what it receives, answers "count" queries for sink totals, and exits when stdin closes.
 * Loopback only.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { UDPipe } from '../src/index.js';

const [impl, mode] = process.argv.slice(2) as [string, 'echo' | 'sink' | 'bytes'];
const HOST = '127.0.0.1';
let received = 0;

process.stdin.on('data', (d) => {
  if (String(d).includes('count')) process.stdout.write(`count ${received}\n`);
});
process.stdin.on('end', () => process.exit(0));

async function main(): Promise<void> {
  switch (impl) {
    case 'dgram': {
      const s = dgram.createSocket({ type: 'udp4', recvBufferSize: 4 << 20 });
      s.on('message', (m, r) => {
        received++;
        if (mode === 'echo') s.send(m, r.port, r.address);
      });
      s.bind(0, HOST, () => process.stdout.write(`ready ${s.address().port}\n`));
      return;
    }
    case 'tcp': {
      const srv = net.createServer((c) => {
        c.setNoDelay(true);
        c.on('data', (d) => {
          received += d.length; // bytes; run.ts divides by the message size
          if (mode === 'echo') c.write(d);
        });
      });
      srv.listen(0, HOST, () => process.stdout.write(`ready ${(srv.address() as net.AddressInfo).port}\n`));
      return;
    }
    case 'udpipe': {
      const s = new UDPipe({ maxQueue: 1 << 16 });
      s.onNewMessage = function (m, sock, info) {
        received += mode === 'bytes' ? m.length : 1;
        if (mode === 'echo') this.send(m, sock, { reliable: info.reliable });
      };
      const { port } = await s.start(0, HOST);
      process.stdout.write(`ready ${port}\n`);
      return;
    }
    default:
      throw new Error(`unknown implementation ${impl}`);
  }
}

void main();
