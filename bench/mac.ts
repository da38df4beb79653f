/**
 * What one packet's MAC costs, by packet size: node:crypto's createHmac (an object per
 * call) against the prepared HMAC-SHA256 of src/crypto/hmac-sha256.ts. The crossover
 * decides SMALL_MAC_LIMIT. `npm run bench:mac`; pin it (`taskset -c 1`) for steady numbers.
 */
import { createHmac, createSecretKey } from 'node:crypto';
import { PreparedHmacSha256, SMALL_MAC_LIMIT } from '../src/crypto/hmac-sha256.js';

const key = new Uint8Array(32).fill(7);
const keyObject = createSecretKey(Buffer.from(key));
const prepared = new PreparedHmacSha256(key);
const pn = Buffer.alloc(8);
const N = 200_000;

function usPer(f: () => void): number {
  for (let i = 0; i < N / 10; i++) f();
  const t = process.hrtime.bigint();
  for (let i = 0; i < N; i++) f();
  return Number(process.hrtime.bigint() - t) / N / 1000;
}

console.log(`packet bytes | node:crypto us | prepared us | ratio (SMALL_MAC_LIMIT ${SMALL_MAC_LIMIT})`);
for (const len of [32, 64, 128, 192, 256, 512, 1200]) {
  const bytes = new Uint8Array(len).fill(1);
  const native = usPer(() => createHmac('sha256', keyObject).update(pn).update(bytes).digest());
  const js = usPer(() => prepared.mac(0, 1, bytes, len));
  console.log(
    `${String(len).padStart(12)} | ${native.toFixed(2).padStart(14)} | ${js.toFixed(2).padStart(11)} | ${(native / js).toFixed(2)}x`,
  );
}
