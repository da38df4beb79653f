/**
 * Every surface that reads network bytes: round trips, and random or mutated input
 * either decodes or raises WireFormatError, never anything else.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import {
  ByteReader,
  ByteWriter,
  COOKIE_SIZE,
  crc32,
  DATA_HEADER_SIZE,
  decodeDatagram,
  encodeReset,
  RESET_SIZE,
  decodeFrames,
  describeDatagram,
  encodeHandshake,
  frameSize,
  HELLO_SIZE,
  MAX_ACK_RANGES,
  MAX_DATAGRAM_SIZE,
  NONCE_SIZE,
  PUBLIC_KEY_SIZE,
  PROOF_SIZE,
  RESET_TOKEN_SIZE,
  SESSION_ID_SIZE,
  TAG_SIZE,
  WireFormatError,
  writeDataHeader,
  writeFrame,
  type Frame,
  type HandshakePacket,
  type PnRange,
} from '../src/wire/index.js';
import { expandPacketNumber, seqDiff, seqLess } from '../src/reliability/seq.js';

const bytes = (n: number) => fc.uint8Array({ minLength: n, maxLength: n });
const u32 = fc.integer({ min: 0, max: 0xffffffff });
const index = fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER });

const handshake: fc.Arbitrary<HandshakePacket> = fc.oneof(
  fc.record({ type: fc.constant('hello' as const), clientConnId: u32, clientNonce: bytes(NONCE_SIZE) }),
  fc.record({ type: fc.constant('challenge' as const), clientConnId: u32, clientNonce: bytes(NONCE_SIZE), cookie: bytes(COOKIE_SIZE) }),
  fc.record({
    type: fc.constant('connect' as const),
    clientConnId: u32,
    clientNonce: bytes(NONCE_SIZE),
    cookie: bytes(COOKIE_SIZE),
    sessionId: bytes(SESSION_ID_SIZE),
    nextSendIndex: index,
    delivered: index,
    flags: fc.integer({ min: 0, max: 1 }),
    publicKey: bytes(PUBLIC_KEY_SIZE),
    resumeProof: bytes(PROOF_SIZE),
    proof: bytes(PROOF_SIZE),
  }),
  fc.record({
    type: fc.constant('accept' as const),
    clientConnId: u32,
    clientNonce: bytes(NONCE_SIZE),
    serverConnId: u32,
    resumed: fc.integer({ min: 0, max: 1 }),
    delivered: index,
    flags: fc.integer({ min: 0, max: 1 }),
    publicKey: bytes(PUBLIC_KEY_SIZE),
    resetToken: bytes(RESET_TOKEN_SIZE),
    proof: bytes(PROOF_SIZE),
  }),
  fc.record({
    type: fc.constant('refuse' as const),
    clientConnId: u32,
    clientNonce: bytes(NONCE_SIZE),
    reason: fc.integer({ min: 0, max: 255 }),
    proof: bytes(PROOF_SIZE),
  }),
);

/** Valid ACK ranges: disjoint, descending, with at least one number between ranges. */
const ackRanges: fc.Arbitrary<PnRange[]> = fc
  .array(fc.tuple(fc.integer({ min: 0, max: 1000 }), fc.integer({ min: 1, max: 1000 })), { minLength: 1, maxLength: 20 })
  .chain((parts) =>
    fc.integer({ min: 0, max: 2 ** 40 }).map((base) => {
      const ranges: PnRange[] = [];
      let lo = base;
      for (const [len, gap] of parts) {
        const r = { lo, hi: lo + len };
        ranges.unshift(r);
        lo = r.hi + gap + 1;
      }
      return ranges;
    }),
  );

const frame: fc.Arbitrary<Frame> = fc.oneof(
  fc.record({ type: fc.constant('ping' as const), id: u32 }),
  fc.record({ type: fc.constant('pong' as const), id: u32 }),
  fc.record({ type: fc.constant('ack' as const), delayUs: fc.integer({ min: 0, max: 2 ** 32 }), ranges: ackRanges }),
  fc.record({
    type: fc.constant('reliable' as const),
    channel: fc.integer({ min: 0, max: 255 }),
    seq: fc.integer({ min: 0, max: 0xffff }),
    delta: fc.nat(),
    data: fc.uint8Array({ maxLength: 200 }),
  }),
  fc
    .record({
      type: fc.constant('reliable' as const),
      channel: fc.integer({ min: 0, max: 255 }),
      seq: fc.integer({ min: 0, max: 0xffff }),
      delta: fc.nat(),
      data: fc.uint8Array({ maxLength: 200 }),
      last: fc.boolean(),
    })
    .map((f) => (f.data.length === 0 && !f.last ? { ...f, last: true } : f)),
  fc.record({
    type: fc.constant('reliable' as const),
    channel: fc.integer({ min: 0, max: 255 }),
    seq: fc.integer({ min: 0, max: 0xffff }),
    delta: fc.constant(0),
    unordered: fc.constant(true),
    data: fc.uint8Array({ maxLength: 200 }),
  }),
  fc.record({
    type: fc.constant('unreliable' as const),
    channel: fc.integer({ min: 0, max: 255 }),
    data: fc.uint8Array({ maxLength: 200 }),
  }),
  fc.record({
    type: fc.constant('unreliable' as const),
    channel: fc.integer({ min: 0, max: 255 }),
    data: fc.uint8Array({ minLength: 1, maxLength: 200 }),
    part: fc
      .integer({ min: 2, max: 20_000 })
      .chain((count) => fc.record({ id: fc.nat(), index: fc.integer({ min: 0, max: count - 1 }), count: fc.constant(count) })),
  }),
  fc.record({ type: fc.constant('close' as const), reason: fc.integer({ min: 0, max: 255 }) }),
  fc.constant({ type: 'closed' as const }),
  fc.constant({ type: 'mtu-probe' as const }),
  fc.record({ type: fc.constant('path-challenge' as const), data: bytes(8) }),
  fc.record({ type: fc.constant('path-response' as const), data: bytes(8) }),
  fc.record({ type: fc.constant('refused' as const), pn: index }),
  fc.record({
    type: fc.constant('unreliable' as const),
    channel: fc.integer({ min: 0, max: 255 }),
    data: fc.uint8Array({ maxLength: 200 }),
    seq: fc.integer({ min: 0, max: 0xffff }),
  }),
);

function encodeData(frames: Frame[], connId = 7, pn = 1): Uint8Array {
  const size = DATA_HEADER_SIZE + frames.reduce((n, f) => n + frameSize(f), 0) + TAG_SIZE;
  const out = new Uint8Array(size);
  const w = new ByteWriter(out);
  writeDataHeader(w, connId, pn);
  for (const f of frames) writeFrame(w, f);
  return out;
}

/** Runs fn; passes if it returns or throws WireFormatError, fails on any other exception. */
function onlyWireErrors(fn: () => unknown): void {
  try {
    fn();
  } catch (e) {
    if (!(e instanceof WireFormatError)) throw e;
  }
}

test('varints round-trip at every length boundary and reject what exceeds 2^53', () => {
  for (const v of [0, 63, 64, 16383, 16384, 2 ** 30 - 1, 2 ** 30, 2 ** 53 - 1]) {
    const buf = new Uint8Array(8);
    const w = new ByteWriter(buf).varint(v);
    assert.equal(new ByteReader(buf, 0, w.offset).varint(), v);
  }
  assert.throws(() => new ByteReader(new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])).varint(), WireFormatError);
  assert.throws(() => new ByteWriter(new Uint8Array(8)).varint(2 ** 53), /out of range/);
  fc.assert(
    fc.property(index, (v) => {
      const buf = new Uint8Array(8);
      const w = new ByteWriter(buf).varint(v);
      assert.equal(new ByteReader(buf, 0, w.offset).varint(), v);
    }),
  );
});

test('crc32 is the IEEE one', () => {
  assert.equal(crc32(new TextEncoder().encode('123456789')), 0xcbf43926);
});

test('handshake packets round-trip; HELLO is padded to its full size', () => {
  fc.assert(
    fc.property(handshake, (p) => {
      const b = encodeHandshake(p);
      if (p.type === 'hello') assert.equal(b.length, HELLO_SIZE);
      assert.deepEqual(decodeDatagram(b), { ...p });
      assert.match(describeDatagram(b), new RegExp(`^${p.type.toUpperCase()}`));
    }),
  );
});

test('RESET: version, type 0x06, 16-byte token; any other size is malformed', () => {
  const token = Uint8Array.from({ length: RESET_TOKEN_SIZE }, (_, i) => i + 1);
  const b = encodeReset(token);
  assert.equal(b.length, RESET_SIZE);
  assert.equal(Buffer.from(b).toString('hex'), 'c106' + '0102030405060708090a0b0c0d0e0f10');
  assert.deepEqual(decodeDatagram(b), { type: 'reset', token });
  assert.match(describeDatagram(b), /^RESET token=01020304/);
  for (const n of [2, RESET_SIZE - 1, RESET_SIZE + 1]) {
    const c = new Uint8Array(n);
    c.set(b.subarray(0, Math.min(n, b.length)));
    assert.throws(() => decodeDatagram(c), WireFormatError, `${n} bytes`);
  }
  // Smaller than the smallest DATA packet, so a RESET never answers one of its own size or more.
  assert.ok(RESET_SIZE < DATA_HEADER_SIZE + TAG_SIZE + 1);
});

test('any single bit flip in a handshake packet is rejected', () => {
  fc.assert(
    fc.property(handshake, fc.nat(), fc.integer({ min: 0, max: 7 }), (p, at, bit) => {
      const b = encodeHandshake(p);
      const i = at % b.length;
      b[i]! ^= 1 << bit;
      try {
        const d = decodeDatagram(b);
        // Flipping the version/type bytes may turn it into another kind; the CRC still guards the body.
        assert.notDeepEqual(d, p);
      } catch (e) {
        assert.ok(e instanceof WireFormatError);
      }
    }),
  );
});

test('every frame list that fits a packet round-trips', () => {
  fc.assert(
    fc.property(fc.array(frame, { minLength: 1, maxLength: 8 }), (frames) => {
      const b = encodeData(frames);
      fc.pre(b.length <= MAX_DATAGRAM_SIZE);
      const back = decodeFrames(b, DATA_HEADER_SIZE, b.length - TAG_SIZE);
      assert.deepEqual(
        back,
        frames.map((f) => (f.type === 'unreliable' && f.part ? { ...f, part: { ...f.part } } : { ...f })),
      );
      const h = decodeDatagram(b);
      assert.deepEqual(h, { type: 'data', connId: 7, pnLow: 1 });
    }),
  );
});

test('random bytes and mutated packets decode or raise WireFormatError, nothing else', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 1300 }), (b) => {
      onlyWireErrors(() => decodeDatagram(b));
      onlyWireErrors(() => decodeFrames(b, 0, b.length));
      assert.equal(typeof describeDatagram(b), 'string');
    }),
    { numRuns: 2000 },
  );
  fc.assert(
    fc.property(
      fc.array(frame, { minLength: 1, maxLength: 4 }),
      fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 6 }),
      (frames, edits) => {
        const b = encodeData(frames);
        for (const [at, v] of edits) b[at % b.length] = v;
        onlyWireErrors(() => decodeDatagram(b));
        onlyWireErrors(() => decodeFrames(b, DATA_HEADER_SIZE, b.length - TAG_SIZE));
      },
    ),
    { numRuns: 2000 },
  );
});

test('every truncation of a valid packet raises WireFormatError', () => {
  const frames: Frame[] = [
    {
      type: 'ack',
      delayUs: 300,
      ranges: [
        { lo: 10, hi: 20 },
        { lo: 1, hi: 5 },
      ],
    },
    { type: 'reliable', channel: 0, seq: 9, delta: 1, data: new Uint8Array(30) },
  ];
  const b = encodeData(frames);
  const body = b.subarray(DATA_HEADER_SIZE, b.length - TAG_SIZE);
  const ackEnd = frameSize(frames[0]!);
  for (let n = 1; n < body.length; n++) {
    if (n === ackEnd) assert.equal(decodeFrames(body, 0, n).length, 1, 'a cut between frames is a valid shorter packet');
    else assert.throws(() => decodeFrames(body, 0, n), WireFormatError, `cut at ${n}`);
  }
  const hs = encodeHandshake({
    type: 'refuse',
    clientConnId: 1,
    clientNonce: new Uint8Array(NONCE_SIZE),
    reason: 2,
    proof: new Uint8Array(PROOF_SIZE),
  });
  for (let n = 0; n < hs.length; n++) assert.throws(() => decodeDatagram(hs.subarray(0, n)), WireFormatError);
});

test('ACK frames that reach below zero or carry too many ranges are rejected', () => {
  const below = new Uint8Array([0x03, 5, 0, 0, 6]); // largest 5, first range 6 -> -1
  assert.throws(() => decodeFrames(below, 0, below.length), /below zero/);
  const bytes = new Uint8Array(16);
  const many = new ByteWriter(bytes).u8(0x03).varint(1_000_000).varint(0).varint(MAX_ACK_RANGES).varint(0);
  assert.throws(() => decodeFrames(bytes, 0, many.offset), /ranges/);
});

test('a RELIABLE_PART frame with unknown flag bits is rejected', () => {
  const ok = new Uint8Array([0x08, 0, 0, 7, 1, 3, 1, 0x41]);
  assert.deepEqual(decodeFrames(ok, 0, ok.length), [
    { type: 'reliable', channel: 0, seq: 7, delta: 3, data: new Uint8Array([0x41]), last: true },
  ]);
  const bad = new Uint8Array([0x08, 0, 0, 7, 2, 3, 1, 0x41]);
  assert.throws(() => decodeFrames(bad, 0, bad.length), /part flags/);
});

test('an UNRELIABLE_PART frame must name a part inside its message', () => {
  const bad = new Uint8Array([0x09, 0, 5, 3, 3, 1, 0x41]); // part 3 of 3
  assert.throws(() => decodeFrames(bad, 0, bad.length), /unreliable part 3 of 3/);
  const one = new Uint8Array([0x09, 0, 5, 0, 1, 1, 0x41]); // a message of one part is not parted
  assert.throws(() => decodeFrames(one, 0, one.length), WireFormatError);
});

test('an empty part is malformed unless it is the final RELIABLE_PART', () => {
  const lastEmpty = new Uint8Array([0x08, 0, 0, 7, 1, 3, 0]);
  assert.deepEqual(decodeFrames(lastEmpty, 0, lastEmpty.length), [
    { type: 'reliable', channel: 0, seq: 7, delta: 3, data: new Uint8Array(0), last: true },
  ]);
  const notLast = new Uint8Array([0x08, 0, 0, 7, 0, 3, 0]);
  assert.throws(() => decodeFrames(notLast, 0, notLast.length), /empty reliable part/);
  const unreliable = new Uint8Array([0x09, 0, 5, 0, 2, 0]);
  assert.throws(() => decodeFrames(unreliable, 0, unreliable.length), /empty unreliable part/);
});

test('packet numbers expand across the 32-bit wire wraparound', () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 2 ** 40 }), fc.integer({ min: -(2 ** 31) + 1, max: 2 ** 31 - 1 }), (largest, delta) => {
      const pn = largest + 1 + delta;
      fc.pre(pn >= 0);
      assert.equal(expandPacketNumber(largest, pn % 2 ** 32), pn);
    }),
  );
});

test('16-bit sequence comparisons wrap', () => {
  assert.equal(seqDiff(0xffff, 0), 1);
  assert.equal(seqDiff(0, 0xffff), -1);
  assert.ok(seqLess(0xfff0, 5));
  assert.ok(!seqLess(5, 0xfff0));
});

test('a ByteReader with bounds outside its array is a programming error, caught at once', () => {
  assert.throws(() => new ByteReader(new Uint8Array(4), 0, 5), RangeError);
  assert.throws(() => new ByteReader(new Uint8Array(4), 3, 2), RangeError);
});

test('decodeHandshake checks the version byte itself', async () => {
  const { decodeHandshake } = await import('../src/wire/handshake.js');
  const b = encodeHandshake({
    type: 'refuse',
    clientConnId: 1,
    clientNonce: new Uint8Array(NONCE_SIZE),
    reason: 3,
    proof: new Uint8Array(PROOF_SIZE),
  });
  b[0] = 0xc2;
  assert.throws(() => decodeHandshake(b), /version/);
});
