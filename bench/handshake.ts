/**
 * Pure-core benchmark of the handshake: a ClientEndpoint and the ServerEndpoint in one
 * process, no sockets, full HELLO/CHALLENGE/CONNECT/ACCEPT each time with fresh keys.
 * Prints microseconds per handshake (both sides together), plaintext and encrypted, so
 * a regression in the key exchange or the proofs shows. `npm run bench:handshake`.
 */
import { randomBytes } from 'node:crypto';
import { deriveTokenKey } from '../src/crypto/handshake-keys.js';
import { ClientEndpoint } from '../src/protocol/client.js';
import { DEFAULT_CONNECTION_CONFIG } from '../src/protocol/config.js';
import { ServerEndpoint } from '../src/protocol/server.js';

const N = Number(process.env.HANDSHAKES ?? 3000);
const key = deriveTokenKey('bench');
const rb = (n: number) => new Uint8Array(randomBytes(n));

function run(encrypt: boolean): number {
  const server = new ServerEndpoint(
    {
      ...DEFAULT_CONNECTION_CONFIG,
      tokenKey: key,
      maxClients: N,
      maxClientsPerAddress: N,
      sessionLingerMs: 1000,
      encrypt,
      handshakesPerSecond: 0,
    },
    rb,
    0,
  );
  const started = process.hrtime.bigint();
  for (let i = 0; i < N; i++) {
    const c = new ClientEndpoint(
      {
        ...DEFAULT_CONNECTION_CONFIG,
        tokenKey: key,
        encrypt,
        handshakeRetryMs: 250,
        reconnect: { enabled: false, minDelayMs: 10, maxDelayMs: 100 },
      },
      rb,
    );
    c.start(0, Infinity);
    const from = { address: `10.0.${(i >> 8) & 255}.${i & 255}`, port: 1024 + (i % 60000) };
    for (let round = 0; round < 3; round++) {
      for (let d = c.pollTransmit(0); d; d = c.pollTransmit(0)) server.handleDatagram(d, from, 0);
      for (let o = server.pollTransmit(0); o; o = server.pollTransmit(0)) c.handleDatagram(o.bytes, 0);
    }
    if (c.state !== 'connected') throw new Error(`handshake ${i} did not complete`);
  }
  return Number(process.hrtime.bigint() - started) / 1000 / N;
}

run(false); // warm up
for (const encrypt of [false, true])
  console.log(
    `${encrypt ? 'encrypted' : 'plaintext'}: ${run(encrypt).toFixed(1)} us per handshake, client and server together (${N} handshakes)`,
  );
