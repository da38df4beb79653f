/**
 * Review of the REFUSED frame (docs/PROTOCOL.md, section 5) from the sender's side:
 * what a receiver, honest and short of memory or hostile with the keys, can make the
 * sender do by refusing its packets. Two Connection objects back to back (or one and a
 * hand-driven peer), a hand-driven clock.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { HmacPacketCipher } from '../src/crypto/packet-cipher.js';
import { DEFAULT_CONNECTION_CONFIG } from '../src/protocol/config.js';
import { Connection } from '../src/protocol/connection/connection.js';
import { link, type End } from './helpers/link.js';
import { ReassemblyBudget } from '../src/reliability/budget.js';
import { ByteWriter } from '../src/wire/bytes.js';
import { DATA_HEADER_SIZE, TAG_SIZE } from '../src/wire/constants.js';
import { decodeFrames, type Frame, writeFrame } from '../src/wire/frames.js';
import { decodeDatagram, writeDataHeader } from '../src/wire/packet.js';
import { recordEvents } from './helpers/events.js';

const K1 = new Uint8Array(32).fill(1);
const K2 = new Uint8Array(32).fill(2);

const windowOf = (e: End) => (e.conn.stats().congestion as { windowBytes: number }).windowBytes;

test('review: a receiver that refuses everything for lack of memory must not make the congestion window grow without anything delivered', (t) => {
  // The receiver's budget is full and someone else's older message holds the right to
  // pass the limit: every part of a 2 MiB message is refused, for as long as that lasts.
  const budget = new ReassemblyBudget(64 * 1024, 0);
  assert.ok(budget.take(64 * 1024));
  budget.startBuilding({});
  const l = link(budget);
  const { a, b } = l;
  l.run(50);
  const window0 = windowOf(a);
  a.conn.send(new Uint8Array(2 * 1024 * 1024).fill(7), true, 0);
  const sentBefore = a.sent;
  l.run(10_000);
  const sent = { bytes: a.sent - sentBefore };
  const s = a.conn.stats();
  t.diagnostic(
    `refusedByPeer ${s.refusedByPeer}, window ${window0} -> ${windowOf(a)} bytes, sent ${(sent.bytes / 1e6).toFixed(1)} MB in 10 s for a 2 MiB message`,
  );
  assert.ok(s.refusedByPeer > 0);
  assert.equal(b.events.filter((e) => e.type === 'message').length, 0, 'nothing delivered (no memory)');
  // Nothing reached the application, yet every refusal credited the window as an ACK
  // would: it grows for as long as the receiver is short of memory, and the sender
  // resends everything in flight every four round trips at that growing rate.
  assert.ok(windowOf(a) <= 4 * window0, `window grew from ${window0} to ${windowOf(a)} bytes while nothing was delivered`);
  assert.ok(sent.bytes <= 8 * 2 * 1024 * 1024, `sent ${sent.bytes} bytes in 10 s for a 2 MiB message nobody could take`);
});

/** One connection and a hostile peer with its keys, driven by hand. */
function hostile() {
  const events = recordEvents(() => conn);
  const conn = new Connection({
    localConnId: 1,
    remoteConnId: 2,
    cipher: new HmacPacketCipher(K1, K2),
    config: { ...DEFAULT_CONNECTION_CONFIG, maxAckDelayMs: 5 },
    now: 0,
  });
  const peer = new HmacPacketCipher(K2, K1);
  const out = new Uint8Array(1500);
  let pn = 0;
  const inject = (frames: Frame[], now: number, raw: number[] = []) => {
    const w = new ByteWriter(out);
    writeDataHeader(w, 1, pn);
    for (const f of frames) writeFrame(w, f);
    w.raw(new Uint8Array(raw));
    const packet = out.slice(0, w.offset + TAG_SIZE);
    peer.seal(packet, w.offset, pn);
    return conn.handleDatagram(packet, pn++, now);
  };
  /** Everything the connection sends now: packet numbers and frames. */
  const drain = (now: number) => {
    const got: { pn: number; frames: Frame[] }[] = [];
    if (conn.nextDeadline() <= now) conn.handleTimeout(now);
    for (let d = conn.pollTransmit(now); d; d = conn.pollTransmit(now)) {
      const h = decodeDatagram(d);
      if (h.type !== 'data') continue;
      assert.ok(peer.open(d.slice(), h.pnLow) !== undefined);
      got.push({ pn: h.pnLow, frames: decodeFrames(d, DATA_HEADER_SIZE, d.length - TAG_SIZE) });
    }
    return got;
  };
  return { conn, events, inject, drain };
}

test('review: REFUSED frames naming odd packet numbers (huge, never sent, past 2^53, acknowledged, repeated) throw nothing and change nothing', () => {
  const h = hostile();
  let now = 0;
  h.inject([{ type: 'ping', id: 1 }], now);
  for (let i = 0; i < 20; i++) h.conn.send(new TextEncoder().encode(`m${i}`), true, 0);
  let sent: { pn: number; frames: Frame[] }[] = [];
  for (; now < 20; now++) sent = sent.concat(h.drain(now));
  assert.ok(sent.length > 0);
  const before = h.conn.stats();
  // Never sent, huge (2^53 - 1 and past it), negative-looking (2^32 - 1), the wire's maximum varint.
  for (const pn of [1_000_000, 2 ** 32 - 1, Number.MAX_SAFE_INTEGER]) {
    assert.equal(h.inject([{ type: 'refused', pn }], now), 'newest');
  }
  // The largest 8-byte varint (2^62 - 1), past what the reader takes: a malformed packet, no throw.
  assert.doesNotThrow(() => h.inject([{ type: 'ping', id: 2 }], now, [0x0f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]));
  assert.equal(h.conn.state, 'connected');
  assert.equal(h.conn.stats().refusedByPeer, before.refusedByPeer, 'nothing in flight had those numbers');
  // A flood of REFUSED frames for one packet: taken once.
  const first = sent.find((p) => p.frames.some((f) => f.type === 'reliable'))!;
  const frames: Frame[] = [];
  for (let i = 0; i < 200; i++) frames.push({ type: 'refused', pn: first.pn });
  assert.equal(h.inject(frames, now), 'newest');
  assert.equal(h.conn.stats().refusedByPeer, before.refusedByPeer + 1);
  // Acknowledge everything, then refuse all of it: nothing happens.
  const hi = Math.max(...sent.map((p) => p.pn));
  h.inject([{ type: 'ack', delayUs: 0, ranges: [{ lo: 0, hi }] }], now);
  for (const p of sent) h.inject([{ type: 'refused', pn: p.pn }], now);
  assert.equal(h.conn.stats().refusedByPeer, before.refusedByPeer + 1);
  // The refused messages still all arrive: run on, acknowledging whatever comes.
  const got = new Set<string>();
  for (const p of sent) for (const f of p.frames) if (f.type === 'reliable') got.add(Buffer.from(f.data).toString());
  for (let t = 0; t < 3000; t++, now++) {
    for (const p of h.drain(now)) {
      for (const f of p.frames) if (f.type === 'reliable') got.add(Buffer.from(f.data).toString());
      if (p.frames.some((f) => f.type !== 'ack' && f.type !== 'padding'))
        h.inject([{ type: 'ack', delayUs: 0, ranges: [{ lo: p.pn, hi: p.pn }] }], now);
    }
  }
  assert.equal(got.size, 20);
  assert.equal(h.conn.state, 'connected');
  assert.equal(h.conn.queueLength, 0, 'nothing left queued');
});

test('review: a peer that answers every packet with REFUSED only cannot keep close() from finishing within closeTimeoutMs', () => {
  const h = hostile();
  let now = 0;
  h.inject([{ type: 'ping', id: 1 }], now);
  h.conn.send(new Uint8Array(200_000), true, 0);
  for (; now < 200; now++) for (const p of h.drain(now)) h.inject([{ type: 'refused', pn: p.pn }], now);
  h.conn.close(now);
  const deadline = now + DEFAULT_CONNECTION_CONFIG.closeTimeoutMs;
  for (; now <= deadline + 10 && h.conn.state !== 'closed'; now++)
    for (const p of h.drain(now)) h.inject([{ type: 'refused', pn: p.pn }], now);
  assert.equal(h.conn.state, 'closed', 'closed by the close timeout');
  assert.ok(now <= deadline + 1);
});
