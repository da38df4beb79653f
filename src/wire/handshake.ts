import { ByteReader, ByteWriter } from './bytes.js';
import { crc32 } from './checksum.js';
import {
  COOKIE_SIZE,
  CRC_SIZE,
  HELLO_SIZE,
  HandshakeFlag,
  NONCE_SIZE,
  PROOF_SIZE,
  PUBLIC_KEY_SIZE,
  PacketType,
  RESET_TOKEN_SIZE,
  SESSION_ID_SIZE,
  VERSION_BYTE,
} from './constants.js';
import { WireFormatError } from './errors.js';

/**
 * Handshake packets (docs/PROTOCOL.md, "Handshake"). Each is fixed-size and ends in a
 * CRC-32 over everything before it: these packets travel before any session key exists.
 */

/** C->S: opens a handshake. Padded to HELLO_SIZE (anti-amplification). */
export interface HelloPacket {
  type: 'hello';
  clientConnId: number;
  clientNonce: Uint8Array;
}

/** S->C: stateless cookie; the server keeps nothing until it comes back. */
export interface ChallengePacket {
  type: 'challenge';
  clientConnId: number;
  clientNonce: Uint8Array;
  cookie: Uint8Array;
}

/**
 * C->S: echoes the cookie, names the session (to resume it after a reconnect) and
 * proves the token over all of it.
 */
export interface ConnectPacket {
  type: 'connect';
  clientConnId: number;
  clientNonce: Uint8Array;
  cookie: Uint8Array;
  sessionId: Uint8Array;
  /** Session index of the first reliable message the client will send on this connection. */
  nextSendIndex: number;
  /** Reliable messages from the server the client has delivered in this session. */
  delivered: number;
  /** HandshakeFlag bits: Encrypt asks for an encrypted connection. */
  flags: number;
  /** The client's ephemeral X25519 public key (every connection makes one, encrypted or not). */
  publicKey: Uint8Array;
  /**
   * Proves the client holds its session's resumption secret (a MAC over the fields
   * above); zeros when it has none yet (a new session).
   */
  resumeProof: Uint8Array;
  proof: Uint8Array;
}

/** S->C: connection established; proves the server knows the token too. */
export interface AcceptPacket {
  type: 'accept';
  clientConnId: number;
  clientNonce: Uint8Array;
  serverConnId: number;
  /** 1 when the server still had the session and continues it, 0 for a new session. */
  resumed: number;
  /** Reliable messages from the client the server has delivered in this session. */
  delivered: number;
  /** HandshakeFlag bits: Encrypt when the connection is encrypted. */
  flags: number;
  /** The server's ephemeral X25519 public key. */
  publicKey: Uint8Array;
  /** This connection's stateless reset token, masked with a key only the client can derive. */
  resetToken: Uint8Array;
  proof: Uint8Array;
}

/**
 * S->C: connection refused. `proof` is a MAC with the token key over the CONNECT and the
 * reason when the client proved the token (server full, encryption mismatch); zeros for
 * a bad token, which nobody can authenticate.
 */
export interface RefusePacket {
  type: 'refuse';
  clientConnId: number;
  clientNonce: Uint8Array;
  reason: number;
  proof: Uint8Array;
}

export type HandshakePacket = HelloPacket | ChallengePacket | ConnectPacket | AcceptPacket | RefusePacket;

const BODY_SIZE: Record<HandshakePacket['type'], number> = {
  hello: HELLO_SIZE - 2 - CRC_SIZE,
  challenge: 4 + NONCE_SIZE + COOKIE_SIZE,
  connect: 4 + NONCE_SIZE + COOKIE_SIZE + SESSION_ID_SIZE + 8 + 8 + 1 + PUBLIC_KEY_SIZE + PROOF_SIZE + PROOF_SIZE,
  accept: 4 + NONCE_SIZE + 4 + 1 + 8 + 1 + PUBLIC_KEY_SIZE + RESET_TOKEN_SIZE + PROOF_SIZE,
  refuse: 4 + NONCE_SIZE + 1 + PROOF_SIZE,
};

const TYPE_BYTE: Record<HandshakePacket['type'], PacketType> = {
  hello: PacketType.Hello,
  challenge: PacketType.Challenge,
  connect: PacketType.Connect,
  accept: PacketType.Accept,
  refuse: PacketType.Refuse,
};

/** Total datagram size of a handshake packet of this type. */
export function handshakeSize(type: HandshakePacket['type']): number {
  return 2 + BODY_SIZE[type] + CRC_SIZE;
}

function fixed(b: Uint8Array, size: number, what: string): Uint8Array {
  if (b.length !== size) throw new Error(`${what} must be ${size} bytes, got ${b.length}`);
  return b;
}

export function encodeHandshake(p: HandshakePacket): Uint8Array {
  const out = new Uint8Array(handshakeSize(p.type));
  const w = new ByteWriter(out);
  w.u8(VERSION_BYTE)
    .u8(TYPE_BYTE[p.type])
    .u32(p.clientConnId)
    .raw(fixed(p.clientNonce, NONCE_SIZE, 'nonce'));
  switch (p.type) {
    case 'hello':
      w.zeros(BODY_SIZE.hello - 4 - NONCE_SIZE);
      break;
    case 'challenge':
      w.raw(fixed(p.cookie, COOKIE_SIZE, 'cookie'));
      break;
    case 'connect':
      w.raw(fixed(p.cookie, COOKIE_SIZE, 'cookie'))
        .raw(fixed(p.sessionId, SESSION_ID_SIZE, 'session id'))
        .u64(p.nextSendIndex)
        .u64(p.delivered)
        .u8(p.flags)
        .raw(fixed(p.publicKey, PUBLIC_KEY_SIZE, 'public key'))
        .raw(fixed(p.resumeProof, PROOF_SIZE, 'resume proof'))
        .raw(fixed(p.proof, PROOF_SIZE, 'proof'));
      break;
    case 'accept':
      w.u32(p.serverConnId)
        .u8(p.resumed)
        .u64(p.delivered)
        .u8(p.flags)
        .raw(fixed(p.publicKey, PUBLIC_KEY_SIZE, 'public key'))
        .raw(fixed(p.resetToken, RESET_TOKEN_SIZE, 'reset token'))
        .raw(fixed(p.proof, PROOF_SIZE, 'proof'));
      break;
    case 'refuse':
      w.u8(p.reason).raw(fixed(p.proof, PROOF_SIZE, 'proof'));
      break;
  }
  w.u32(crc32(out, 0, w.offset));
  return out;
}

const KNOWN_FLAGS = HandshakeFlag.Encrypt;

function flags(r: ByteReader, type: string): number {
  const f = r.u8('flags');
  if (f & ~KNOWN_FLAGS) throw new WireFormatError(`${type}: unknown flag bits 0x${f.toString(16)}`);
  return f;
}

/**
 * Decodes a handshake packet whose type byte is already known to be a handshake type.
 * Checks, in order: exact size, CRC, fields (copied out, so the packet does not pin the
 * receive buffer).
 */
export function decodeHandshake(bytes: Uint8Array): HandshakePacket {
  const r = new ByteReader(bytes);
  const version = r.u8('version');
  if (version !== VERSION_BYTE) throw new WireFormatError(`version byte 0x${version.toString(16)}`);
  const typeByte = r.u8('type');
  const type = (Object.keys(TYPE_BYTE) as HandshakePacket['type'][]).find((k) => TYPE_BYTE[k] === typeByte);
  if (!type) throw new WireFormatError(`not a handshake type: 0x${typeByte.toString(16)}`);
  if (bytes.length !== handshakeSize(type)) {
    throw new WireFormatError(`${type}: size ${bytes.length}, expected ${handshakeSize(type)}`);
  }
  const end = bytes.length - CRC_SIZE;
  const crc = new ByteReader(bytes, end).u32('crc');
  if (crc !== crc32(bytes, 0, end)) throw new WireFormatError(`${type}: bad checksum`);
  const clientConnId = r.u32('client connection id');
  const clientNonce = r.bytesCopy(NONCE_SIZE, 'nonce');
  switch (type) {
    case 'hello':
      return { type, clientConnId, clientNonce };
    case 'challenge':
      return { type, clientConnId, clientNonce, cookie: r.bytesCopy(COOKIE_SIZE, 'cookie') };
    case 'connect':
      return {
        type,
        clientConnId,
        clientNonce,
        cookie: r.bytesCopy(COOKIE_SIZE, 'cookie'),
        sessionId: r.bytesCopy(SESSION_ID_SIZE, 'session id'),
        nextSendIndex: r.u64('next send index'),
        delivered: r.u64('delivered count'),
        flags: flags(r, type),
        publicKey: r.bytesCopy(PUBLIC_KEY_SIZE, 'public key'),
        resumeProof: r.bytesCopy(PROOF_SIZE, 'resume proof'),
        proof: r.bytesCopy(PROOF_SIZE, 'proof'),
      };
    case 'accept': {
      const serverConnId = r.u32('server connection id');
      const resumed = r.u8('resumed');
      if (resumed > 1) throw new WireFormatError(`accept: resumed flag ${resumed}`);
      return {
        type,
        clientConnId,
        clientNonce,
        serverConnId,
        resumed,
        delivered: r.u64('delivered count'),
        flags: flags(r, type),
        publicKey: r.bytesCopy(PUBLIC_KEY_SIZE, 'public key'),
        resetToken: r.bytesCopy(RESET_TOKEN_SIZE, 'reset token'),
        proof: r.bytesCopy(PROOF_SIZE, 'proof'),
      };
    }
    case 'refuse':
      return { type, clientConnId, clientNonce, reason: r.u8('reason'), proof: r.bytesCopy(PROOF_SIZE, 'proof') };
  }
}
