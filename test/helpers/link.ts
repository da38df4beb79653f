/**
 * Two Connection objects back to back in virtual time, for the connection core's tests:
 * 1 ms steps, 5 ms of latency each way, nothing lost unless `drop` says so. Each end
 * records the frame types of every packet it receives; the wire is kept between runs.
 * With `bottleneck`, what `a` sends passes a drop-tail queue drained at a fixed rate
 * first, as at a router in front of a slower link.
 */
import { HmacPacketCipher } from '../../src/crypto/packet-cipher.js';
import { DEFAULT_CONNECTION_CONFIG, type ConnectionConfig, type ConnectionEvent } from '../../src/protocol/config.js';
import { Connection } from '../../src/protocol/connection/connection.js';
import type { ReassemblyBudget } from '../../src/reliability/budget.js';
import { DATA_HEADER_SIZE, TAG_SIZE } from '../../src/wire/constants.js';
import { decodeFrames } from '../../src/wire/frames.js';
import { decodeDatagram } from '../../src/wire/packet.js';
import { recordEvents } from './events.js';

const K1 = new Uint8Array(32).fill(1);
const K2 = new Uint8Array(32).fill(2);

/** Datagrams one pollTransmit loop may give before the harness calls it a bug (one that sends for ever would hang the suite). */
const MAX_POLLS = 100_000;

export interface End {
  conn: Connection;
  events: ConnectionEvent[];
  /** Frame types of every packet this end received. */
  frames: string[][];
  /** Bytes this end sent. */
  sent: number;
}

/** A FIFO in front of a link of `bytesPerMs`, holding at most `bufferBytes`; what does not fit is dropped. */
export interface Bottleneck {
  bytesPerMs: number;
  bufferBytes: number;
}

export interface Link {
  a: End;
  b: End;
  now: number;
  /** Datagrams from `a` the bottleneck's queue had no room for. */
  queueDrops: number;
  /** Runs both ends for ms; drop(types, to) true loses that datagram. */
  run(ms: number, drop?: (types: string[], to: End) => boolean): void;
}

function end(local: number, send: Uint8Array, recv: Uint8Array, config: ConnectionConfig, budget?: ReassemblyBudget): End {
  const events = recordEvents(() => conn);
  const conn = new Connection({
    localConnId: local,
    remoteConnId: 3 - local,
    cipher: new HmacPacketCipher(send, recv),
    config,
    now: 0,
    ...(budget ? { budget } : {}),
  });
  return { conn, events, frames: [], sent: 0 };
}

/** `b` receives with `budget` (default: unlimited); both ends share `patch` over the default config, with a 5 ms max ack delay. */
export function link(budget?: ReassemblyBudget, patch: Partial<ConnectionConfig> = {}, bottleneck?: Bottleneck): Link {
  const config = { ...DEFAULT_CONNECTION_CONFIG, maxAckDelayMs: 5, ...patch };
  const a = end(1, K1, K2, config);
  const b = end(2, K2, K1, config, budget);
  const wire: { at: number; to: End; bytes: Uint8Array }[] = [];
  /** When the bottleneck's queue is empty again. */
  let queueFreeAt = 0;
  const arrival = (x: End, size: number, now: number): number | undefined => {
    if (!bottleneck || x !== a) return now + 5;
    const start = Math.max(now, queueFreeAt);
    if ((start - now) * bottleneck.bytesPerMs + size > bottleneck.bufferBytes) return undefined;
    queueFreeAt = start + size / bottleneck.bytesPerMs;
    return queueFreeAt + 5;
  };
  const l: Link = {
    a,
    b,
    now: 0,
    queueDrops: 0,
    run(ms, drop = () => false) {
      const until = l.now + ms;
      for (; l.now < until; l.now++) {
        const now = l.now;
        for (const [x, y] of [
          [a, b],
          [b, a],
        ] as const) {
          if (x.conn.nextDeadline() <= now) x.conn.handleTimeout(now);
          for (let d = x.conn.pollTransmit(now), n = 0; d; d = x.conn.pollTransmit(now)) {
            if (++n > MAX_POLLS)
              throw new Error(`link: more than ${MAX_POLLS} datagrams in one poll at ${now} ms: a connection that sends without end`);
            x.sent += d.length;
            const at = arrival(x, d.length, now);
            if (at === undefined) l.queueDrops++;
            else wire.push({ at, to: y, bytes: d });
          }
        }
        for (let i = 0; i < wire.length; ) {
          const w = wire[i]!;
          if (w.at > now) {
            i++;
            continue;
          }
          wire.splice(i, 1);
          const h = decodeDatagram(w.bytes);
          if (h.type !== 'data') continue;
          const types = decodeFrames(w.bytes, DATA_HEADER_SIZE, w.bytes.length - TAG_SIZE).map((f) => f.type);
          if (drop(types, w.to)) continue;
          w.to.frames.push(types);
          w.to.conn.handleDatagram(w.bytes, h.pnLow, now);
        }
      }
    },
  };
  return l;
}
