/**
 * docs/PROTOCOL.md section 3a, a whole handshake byte for byte: the document shows what
 * the code makes, and every field in it follows from the section 3 formulas, recomputed
 * here from the document's own definitions (what an independent implementer would do).
 */
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { crc32 } from '../src/wire/checksum.js';
import { CLIENT_AT, EXAMPLE_TOKEN, INPUTS, makeHandshakeExample, proof16, renderHandshakeExample } from './helpers/handshake-example.js';

const BEGIN = '<!-- handshake-example:begin -->';
const END = '<!-- handshake-example:end -->';

function documented(): string {
  const doc = readFileSync(new URL('../../docs/PROTOCOL.md', import.meta.url), 'utf8');
  const from = doc.indexOf(BEGIN);
  const to = doc.indexOf(END);
  assert.ok(from >= 0 && to > from, `docs/PROTOCOL.md has no ${BEGIN} ... ${END} block`);
  return doc.slice(from + BEGIN.length, to).trim();
}

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
const u64 = (n: number) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(n));
  return b;
};

test('the worked handshake in docs/PROTOCOL.md section 3a is what the client and server make', () => {
  const rendered = renderHandshakeExample(makeHandshakeExample());
  assert.equal(documented(), rendered, `docs/PROTOCOL.md's example is out of date; the code makes:\n\n${rendered}\n`);
});

test("the worked handshake's fields follow from section 3's formulas", () => {
  const x = makeHandshakeExample();
  const K = createHmac('sha256', 'udpipe v1 token key').update(EXAMPLE_TOKEN).digest();
  assert.equal(hex(x.tokenKey), hex(K), 'token key');

  // Every handshake packet ends with the CRC-32 of what comes before it.
  for (const p of [x.hello, x.challenge, x.connect, x.accept]) {
    assert.equal(Buffer.from(p).readUInt32BE(p.length - 4), crc32(p, 0, p.length - 4), `CRC of a ${p.length}-byte packet`);
  }
  assert.equal(x.hello.length, 1200);
  assert.ok(
    x.hello.subarray(22, 1196).every((b) => b === 0),
    "HELLO's padding is zeros",
  );

  const cidNonce = Buffer.concat([INPUTS.clientConnId, INPUTS.clientNonce]);
  const cookie = proof16(INPUTS.cookieSecret, 'udpipe v1 cookie', `${CLIENT_AT.address}|${CLIENT_AT.port}|`, cidNonce);
  assert.equal(hex(x.challenge.subarray(22, 38)), hex(cookie), 'cookie');
  assert.equal(hex(x.connect.subarray(22, 38)), hex(cookie), 'CONNECT echoes the cookie');
  assert.equal(hex(x.connect.subarray(38, 54)), hex(INPUTS.sessionId), 'session id');
  assert.equal(hex(x.connect.subarray(71, 103)), hex(x.clientPublic), 'client public key');

  // C = cid | nonce | cookie | session id | next send index | delivered | flags | client public key: CONNECT bytes 2-102.
  const C = x.connect.subarray(2, 103);
  const resume = x.connect.subarray(103, 119);
  assert.ok(
    resume.every((b) => b === 0),
    'a new session: the resume proof is zeros',
  );
  assert.equal(hex(x.connect.subarray(119, 135)), hex(proof16(K, 'udpipe v1 client proof', C, resume)), 'client proof');

  // Keys: HKDF-SHA256 over the shared secret, salt K.
  const info = Buffer.concat([Buffer.from('udpipe v1 keys'), cidNonce, cookie, INPUTS.serverConnId, x.clientPublic, x.serverPublic]);
  // HKDF by hand (RFC 5869): extract, then expand to 112 bytes.
  const prk = createHmac('sha256', K).update(x.shared).digest();
  const blocks: Buffer[] = [];
  let t = Buffer.alloc(0);
  for (let i = 1; blocks.length * 32 < 112; i++) {
    t = createHmac('sha256', prk)
      .update(Buffer.concat([t, info, Buffer.of(i)]))
      .digest();
    blocks.push(t);
  }
  const okm = Buffer.concat(blocks).subarray(0, 112);
  assert.equal(hex(x.okm), hex(okm), 'OKM');
  const [c2s, s2c, mask] = [okm.subarray(0, 32), okm.subarray(32, 64), okm.subarray(96, 112)];

  const Z = createHmac('sha256', 'udpipe v1 reset key')
    .update(Buffer.concat([K, Buffer.of(0x23, 0x28)]))
    .digest();
  assert.equal(hex(x.resetKey), hex(Z), 'reset key from K and port 9000');
  assert.equal(hex(x.resetToken), hex(proof16(Z, 'udpipe v1 reset token', INPUTS.serverConnId)), 'reset token');

  // ACCEPT: sid, resumed 0, delivered 0, flags 0, server public key, masked reset token, proof.
  assert.equal(hex(x.accept.subarray(22, 26)), hex(INPUTS.serverConnId));
  assert.ok(
    x.accept.subarray(26, 36).every((b) => b === 0),
    'resumed, delivered and flags are 0',
  );
  assert.equal(hex(x.accept.subarray(36, 68)), hex(x.serverPublic), 'server public key');
  const masked = Uint8Array.from(x.resetToken, (b, i) => b ^ mask[i]!);
  assert.equal(hex(x.accept.subarray(68, 84)), hex(masked), 'masked reset token');
  const serverProof = proof16(K, 'udpipe v1 server proof', C, resume, x.accept.subarray(22, 84));
  assert.equal(hex(x.accept.subarray(84, 100)), hex(serverProof), 'server proof');

  // DATA packets: tag = HMAC-SHA256(direction key, 64-bit packet number | header and frames), 16 bytes.
  for (const [p, key, dest] of [
    [x.firstData, c2s, INPUTS.serverConnId],
    [x.firstReply, s2c, INPUTS.clientConnId],
  ] as const) {
    assert.equal(hex(p.subarray(0, 2)), 'c110');
    assert.equal(hex(p.subarray(2, 6)), hex(dest), 'destination: the receiver own connection id');
    const pn = Buffer.from(p).readUInt32BE(6);
    const body = p.subarray(0, p.length - 16);
    assert.equal(hex(p.subarray(p.length - 16)), hex(proof16(key, u64(pn), body)), 'DATA tag');
  }
  assert.equal(hex(x.firstData.subarray(10, 15)), '0100000001', 'the first DATA carries PING id 1');
  assert.equal(hex(x.firstReply.subarray(10, 20)), '03000000000200000001', 'the answer: ACK of packet 0, PONG id 1');
});
