/**
 * The worked example of docs/PROTOCOL.md section 3a: one whole handshake and the
 * client's first DATA packet, made by the real client and server from fixed inputs (the
 * randomness is scripted), rendered as the hex dumps the document shows.
 */
import { createHmac, hkdfSync } from 'node:crypto';
import { deriveResetKey, deriveTokenKey, resetToken } from '../../src/crypto/handshake-keys.js';
import { EphemeralKey } from '../../src/crypto/key-exchange.js';
import type { Address } from '../../src/protocol/address.js';
import { ClientEndpoint } from '../../src/protocol/client.js';
import { DEFAULT_CONNECTION_CONFIG } from '../../src/protocol/config.js';
import { ServerEndpoint } from '../../src/protocol/server.js';

export const EXAMPLE_TOKEN = 'shared game token';
export const CLIENT_AT: Address = { address: '192.0.2.1', port: 40000 };
const SERVER_PORT = 9000;

/** `first, first+1, ...` as n bytes. */
function run(first: number, n: number): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => (first + i) & 0xff);
}

/** The example's random inputs, in the order each side draws them. */
export const INPUTS = {
  sessionId: run(0xa0, 16),
  clientConnId: Uint8Array.of(0x0a, 0x0b, 0x0c, 0x0d),
  clientNonce: run(0x00, 16),
  clientPrivate: run(0x01, 32),
  cookieSecret: run(0xc0, 32),
  serverPrivate: run(0x41, 32),
  serverConnId: Uint8Array.of(0x11, 0x22, 0x33, 0x44),
};

/** Hands out `values` in order, each only for a draw of its size; later draws get zeros. */
function scripted(values: Uint8Array[]): (n: number) => Uint8Array {
  const queue = [...values];
  return (n) => {
    const next = queue[0];
    if (next && next.length === n) return queue.shift()!.slice();
    if (next) throw new Error(`the example's randomness is drawn out of order: asked for ${n} bytes, next input has ${next.length}`);
    return new Uint8Array(n);
  };
}

export interface HandshakeExample {
  tokenKey: Uint8Array;
  clientPublic: Uint8Array;
  serverPublic: Uint8Array;
  shared: Uint8Array;
  okm: Uint8Array;
  resetKey: Uint8Array;
  resetToken: Uint8Array;
  hello: Uint8Array;
  challenge: Uint8Array;
  connect: Uint8Array;
  accept: Uint8Array;
  firstData: Uint8Array;
  firstReply: Uint8Array;
}

/** Runs the handshake between a real ClientEndpoint and ServerEndpoint, capturing each datagram. */
export function makeHandshakeExample(): HandshakeExample {
  const tokenKey = deriveTokenKey(EXAMPLE_TOKEN);
  const conn = { ...DEFAULT_CONNECTION_CONFIG };
  const server = new ServerEndpoint(
    {
      ...conn,
      tokenKey,
      maxClients: 8,
      sessionLingerMs: 30_000,
      encrypt: false,
      handshakesPerSecond: 0,
      resetPort: SERVER_PORT,
    },
    scripted([INPUTS.cookieSecret, INPUTS.serverPrivate, INPUTS.serverConnId]),
    0,
  );
  const client = new ClientEndpoint(
    { ...conn, tokenKey, encrypt: false, handshakeRetryMs: 250, reconnect: { enabled: false, minDelayMs: 250, maxDelayMs: 10_000 } },
    scripted([INPUTS.sessionId, INPUTS.clientConnId, INPUTS.clientNonce, INPUTS.clientPrivate]),
  );
  const toServer: Uint8Array[] = [];
  const toClient: Uint8Array[] = [];
  const now = 1000;
  client.start(now, Infinity);
  // Four flights, each answered at once: HELLO, CHALLENGE, CONNECT, ACCEPT, then the first DATA.
  for (let flight = 0; flight < 3; flight++) {
    for (let d = client.pollTransmit(now); d; d = client.pollTransmit(now)) {
      toServer.push(d);
      server.handleDatagram(d, CLIENT_AT, now);
    }
    for (let o = server.pollTransmit(now); o; o = server.pollTransmit(now)) {
      toClient.push(o.bytes);
      client.handleDatagram(o.bytes, now);
    }
  }
  if (toServer.length !== 3 || toClient.length !== 3) {
    throw new Error(`expected 3 datagrams each way, got ${toServer.length} to the server and ${toClient.length} back`);
  }
  const clientPublic = new EphemeralKey(INPUTS.clientPrivate).publicKey;
  const serverKey = new EphemeralKey(INPUTS.serverPrivate);
  const shared = serverKey.agree(clientPublic)!;
  const [hello, connect, firstData] = toServer as [Uint8Array, Uint8Array, Uint8Array];
  const [challenge, accept, firstReply] = toClient as [Uint8Array, Uint8Array, Uint8Array];
  // HKDF's info, as docs/PROTOCOL.md section 3 spells it, built here from the packets.
  const info = Buffer.concat([
    Buffer.from('udpipe v1 keys'),
    challenge.subarray(2, 38), // cid | nonce | cookie
    INPUTS.serverConnId,
    clientPublic,
    serverKey.publicKey,
  ]);
  const resetKey = deriveResetKey(tokenKey, SERVER_PORT);
  return {
    tokenKey,
    clientPublic,
    serverPublic: serverKey.publicKey,
    shared,
    okm: new Uint8Array(hkdfSync('sha256', shared, tokenKey, info, 112)),
    resetKey,
    resetToken: resetToken(resetKey, 0x11223344),
    hello,
    challenge,
    connect,
    accept,
    firstData,
    firstReply,
  };
}

/** HMAC-SHA256 truncated to 16 bytes, as the proofs use it: for checking the example's proofs from the document's formulas. */
export function proof16(key: Uint8Array, ...parts: (string | Uint8Array)[]): Uint8Array {
  const h = createHmac('sha256', key);
  for (const p of parts) h.update(p);
  return new Uint8Array(h.digest().subarray(0, 16));
}

/** Hex, 16 bytes a line, each line indented and led by its offset. */
export function dump(b: Uint8Array, from = 0, to = b.length): string {
  const lines: string[] = [];
  for (let at = from; at < to; at += 16) {
    const row = Array.from(b.subarray(at, Math.min(at + 16, to)), (x) => x.toString(16).padStart(2, '0')).join(' ');
    lines.push(`    ${at.toString(10).padStart(4, ' ')}: ${row}`);
  }
  return lines.join('\n');
}

/** The example as it appears in docs/PROTOCOL.md, between its markers. */
export function renderHandshakeExample(x: HandshakeExample): string {
  const okm = x.okm;
  const helloZerosTo = 1196;
  return [
    'Token key `K` (from the token `shared game token`):',
    '',
    dump(x.tokenKey),
    '',
    'Public keys (X25519 of the private keys with the base point 9):',
    '',
    '    client',
    dump(x.clientPublic),
    '    server',
    dump(x.serverPublic),
    '',
    `HELLO, ${x.hello.length} bytes: the common start, zeros from offset 22 to ${helloZerosTo}, then the CRC:`,
    '',
    dump(x.hello, 0, 22),
    dump(x.hello, helloZerosTo, x.hello.length),
    '',
    `CHALLENGE, ${x.challenge.length} bytes (the cookie is at 22-37):`,
    '',
    dump(x.challenge),
    '',
    `CONNECT, ${x.connect.length} bytes (session id at 38, next send index 54, delivered 62, flags 70,`,
    'client public key 71, resume proof 103 (zeros: a new session), client proof 119, CRC 135):',
    '',
    dump(x.connect),
    '',
    'Shared secret `S` and the 112 bytes of OKM (`c2s` 0-31, `s2c` 32-63, `R` 64-95, reset mask 96-111):',
    '',
    '    S',
    dump(x.shared),
    '    OKM',
    dump(okm),
    '',
    'Reset key `Z` (from `K` and port 9000) and the reset token of connection `0x11223344`:',
    '',
    '    Z',
    dump(x.resetKey),
    '    reset token',
    dump(x.resetToken),
    '',
    `ACCEPT, ${x.accept.length} bytes (server connection id at 22, resumed 26, delivered 27, flags 35,`,
    'server public key 36, masked reset token 68, server proof 84, CRC 100):',
    '',
    dump(x.accept),
    '',
    `The client's first DATA packet, ${x.firstData.length} bytes, tagged with \`c2s\` (section 4):`,
    '',
    dump(x.firstData),
    '',
    `The server's answer, ${x.firstReply.length} bytes, tagged with \`s2c\`:`,
    '',
    dump(x.firstReply),
  ].join('\n');
}
