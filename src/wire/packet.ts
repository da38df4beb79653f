import { ByteReader, type ByteWriter } from './bytes.js';
import { DATA_HEADER_SIZE, PacketType, RESET_SIZE, TAG_SIZE, VERSION_BYTE, VERSION_FAMILY, VERSION_FAMILY_MASK } from './constants.js';
import { WireFormatError } from './errors.js';
import { decodeFrames, describeFrame } from './frames.js';
import { decodeHandshake, type HandshakePacket } from './handshake.js';

/**
 * Top-level datagram classification. A DATA packet is decoded in two steps: its header
 * here (enough to find the connection), then, after the connection checked its MAC, its
 * frames (decodeFrames). Nothing is trusted before the MAC.
 */
export interface DataHeader {
  type: 'data';
  connId: number;
  /** Low 32 bits of the packet number; the connection expands it (src/reliability/seq.ts). */
  pnLow: number;
}

/** S->C: "I have no connection with the id your packet named" (docs/PROTOCOL.md, section 10a). */
export interface ResetPacket {
  type: 'reset';
  token: Uint8Array;
}

export type Datagram = HandshakePacket | DataHeader | ResetPacket;

export function isUdpipeDatagram(bytes: Uint8Array): boolean {
  return bytes.length >= 2 && (bytes[0]! & VERSION_FAMILY_MASK) === VERSION_FAMILY;
}

/** Classifies and decodes a datagram; throws WireFormatError for anything malformed. */
export function decodeDatagram(bytes: Uint8Array): Datagram {
  if (bytes.length < 2) throw new WireFormatError(`datagram of ${bytes.length} bytes`);
  if (bytes[0] !== VERSION_BYTE) {
    throw new WireFormatError(
      isUdpipeDatagram(bytes) ? `unsupported udpipe version byte 0x${bytes[0]!.toString(16)}` : 'not a udpipe datagram',
    );
  }
  if (bytes[1] === PacketType.Data) {
    if (bytes.length < DATA_HEADER_SIZE + TAG_SIZE + 1) throw new WireFormatError(`data packet of ${bytes.length} bytes`);
    const r = new ByteReader(bytes, 2);
    const connId = r.u32('connection id');
    const pnLow = r.u32('packet number');
    return { type: 'data', connId, pnLow };
  }
  if (bytes[1] === PacketType.Reset) {
    if (bytes.length !== RESET_SIZE) throw new WireFormatError(`reset: size ${bytes.length}, expected ${RESET_SIZE}`);
    return { type: 'reset', token: bytes.slice(2) };
  }
  return decodeHandshake(bytes);
}

export function encodeReset(token: Uint8Array): Uint8Array {
  const out = new Uint8Array(RESET_SIZE);
  out[0] = VERSION_BYTE;
  out[1] = PacketType.Reset;
  out.set(token, 2);
  return out;
}

/** Writes the DATA header; the frames follow at DATA_HEADER_SIZE, the tag at the end. */
export function writeDataHeader(w: ByteWriter, connId: number, pn: number): void {
  w.u8(VERSION_BYTE)
    .u8(PacketType.Data)
    .u32(connId)
    .u32(pn >>> 0);
}

function hex(b: Uint8Array, n = 4): string {
  let s = '';
  for (const x of b.subarray(0, n)) s += x.toString(16).padStart(2, '0');
  return s;
}

/**
 * One readable line per datagram for debug logs. Frames of a DATA packet are decoded
 * without checking the tag (this is for eyes only), unless the connection is encrypted;
 * a malformed datagram says so.
 */
export function describeDatagram(bytes: Uint8Array, encrypted = false): string {
  try {
    const d = decodeDatagram(bytes);
    switch (d.type) {
      case 'data': {
        let frames = 'encrypted';
        if (!encrypted) {
          try {
            frames = decodeFrames(bytes, DATA_HEADER_SIZE, bytes.length - TAG_SIZE)
              .map(describeFrame)
              .join(', ');
          } catch (e) {
            frames = `malformed frames: ${(e as Error).message}`;
          }
        }
        return `DATA conn=${d.connId.toString(16)} pn=${d.pnLow} ${bytes.length}B [${frames}]`;
      }
      case 'hello':
        return `HELLO conn=${d.clientConnId.toString(16)} nonce=${hex(d.clientNonce)}.. ${bytes.length}B`;
      case 'challenge':
        return `CHALLENGE conn=${d.clientConnId.toString(16)} nonce=${hex(d.clientNonce)}.. cookie=${hex(d.cookie)}..`;
      case 'connect':
        return `CONNECT conn=${d.clientConnId.toString(16)} nonce=${hex(d.clientNonce)}.. cookie=${hex(d.cookie)}..${d.flags ? ' encrypt' : ''}`;
      case 'accept':
        return `ACCEPT conn=${d.clientConnId.toString(16)} server-conn=${d.serverConnId.toString(16)}${d.flags ? ' encrypted' : ''}`;
      case 'refuse':
        return `REFUSE conn=${d.clientConnId.toString(16)} reason=${d.reason}`;
      case 'reset':
        return `RESET token=${hex(d.token)}..`;
    }
  } catch (e) {
    return `malformed ${bytes.length}B (${(e as Error).message})`;
  }
}
