/**
 * Wire constants of protocol version 1. Every number here is described in
 * docs/PROTOCOL.md; change one and the document with it.
 */

/** First byte of every udpipe v1 datagram. Not ASCII, so never confused with the classic protocol's text. */
export const VERSION_BYTE = 0xc1;
/** Bytes 0xC0..0xCF are reserved for udpipe versions; others are not ours at all. */
export const VERSION_FAMILY_MASK = 0xf0;
export const VERSION_FAMILY = 0xc0;

export const enum PacketType {
  Hello = 0x01,
  Challenge = 0x02,
  Connect = 0x03,
  Accept = 0x04,
  Refuse = 0x05,
  /** S->C: the server has no connection with that id (it restarted): a stateless reset. */
  Reset = 0x06,
  Data = 0x10,
}

export const enum FrameType {
  Padding = 0x00,
  Ping = 0x01,
  Pong = 0x02,
  Ack = 0x03,
  Reliable = 0x04,
  Unreliable = 0x05,
  Close = 0x06,
  Closed = 0x07,
  ReliablePart = 0x08,
  UnreliablePart = 0x09,
  /** Ack-eliciting, no body: marks a path MTU probe (padding fills the rest). */
  MtuProbe = 0x0a,
  /** An unreliable message with a per-channel sequence number: the receiver keeps only the newest. */
  UnreliableSequenced = 0x0b,
  /** A whole reliable message delivered as soon as it arrives, outside its channel's order. */
  ReliableUnordered = 0x0c,
  /** 8 bytes the peer must echo in PATH_RESPONSE: proves it receives at its new address. */
  PathChallenge = 0x0d,
  PathResponse = 0x0e,
  /** A packet that arrived but whose reliable units were not all taken, for lack of memory: not lost. */
  Refused = 0x0f,
}

export const NONCE_SIZE = 16;
export const COOKIE_SIZE = 16;
export const PROOF_SIZE = 16;
/** Client-chosen id of a session: survives reconnects, so nothing is lost or repeated across them. */
export const SESSION_ID_SIZE = 16;
/** An X25519 public key (RFC 7748). */
export const PUBLIC_KEY_SIZE = 32;
/** A stateless reset token: sent masked in ACCEPT, in clear in RESET. */
export const RESET_TOKEN_SIZE = 16;
/** RESET: version, type, token. Smaller than any DATA packet, so a RESET never answers a RESET or amplifies. */
export const RESET_SIZE = 2 + RESET_TOKEN_SIZE;
/** Bits of the flags byte of CONNECT and ACCEPT. */
export const enum HandshakeFlag {
  /** CONNECT: the client wants an encrypted connection; ACCEPT: it is one. */
  Encrypt = 0x01,
}
/** Authentication tag at the end of every DATA packet (HMAC-SHA256 truncated, or Poly1305). */
export const TAG_SIZE = 16;
export const CRC_SIZE = 4;
/** A HELLO is padded to this size, so the server's reply is never larger than what caused it. */
export const HELLO_SIZE = 1200;
/** DATA header: version, type, destination connection id (4), packet number (4). */
export const DATA_HEADER_SIZE = 10;
/**
 * Largest datagram we send: the IPv6 minimum MTU (1280) less IPv6 (40) and UDP (8)
 * headers, so it crosses any path without IP fragmentation.
 */
export const MAX_DATAGRAM_SIZE = 1232;
/** Base PLPMTU of DPLPMTUD (RFC 8899): every connection starts here and falls back here. */
export const BASE_DATAGRAM_SIZE = MAX_DATAGRAM_SIZE;
/** Probe ceiling on ordinary paths: Ethernet's 1500-byte MTU less IPv4 (20) and UDP (8) headers. */
export const ETHERNET_DATAGRAM_SIZE = 1472;
/** Same for IPv6 (40-byte header). */
export const ETHERNET_DATAGRAM_SIZE_V6 = 1452;
/** Probe ceiling towards loopback: Linux lo has a 65536-byte MTU; IPv6 (40) and UDP (8) headers off. */
export const LOOPBACK_DATAGRAM_SIZE = 65488;
/** Largest UDP payload over IPv4; no configured ceiling may exceed it. */
export const MAX_UDP_PAYLOAD = 65507;
/** Reliable message frame overhead: type, channel, u16 sequence, 2-byte varint length. */
export const MESSAGE_FRAME_OVERHEAD = 6;
/** Largest message that fits one DATA packet alone (larger reliable ones travel in parts). */
export const MAX_MESSAGE_SIZE = MAX_DATAGRAM_SIZE - DATA_HEADER_SIZE - TAG_SIZE - MESSAGE_FRAME_OVERHEAD;
/**
 * Largest reliable unit sent whole in a 1232-byte packet whatever else: the frame room
 * (1206) less the largest RELIABLE header (type, channel, sequence, an 8-byte delta
 * varint, a 4-byte length varint).
 */
export const MAX_RELIABLE_WHOLE = MAX_DATAGRAM_SIZE - DATA_HEADER_SIZE - TAG_SIZE - 16;
/** RELIABLE_PART overhead: type, channel, u16 sequence, flags, 2-byte varint length. */
export const PART_FRAME_OVERHEAD = 7;
/**
 * Payload of each part of a message larger than MAX_MESSAGE_SIZE: a full packet less
 * 48 bytes, so an ACK frame can ride along with every part.
 */
export const PART_SIZE = MAX_DATAGRAM_SIZE - DATA_HEADER_SIZE - TAG_SIZE - PART_FRAME_OVERHEAD - 48;

/** Why a connection ended or was refused; one byte on the wire (CLOSE, REFUSE). */
export const enum ReasonCode {
  Normal = 0,
  Timeout = 1,
  BadToken = 2,
  ServerFull = 3,
  ProtocolError = 4,
  Shutdown = 5,
  /** One side has `encrypt: true` and the other not. */
  EncryptionMismatch = 6,
  /** REFUSE: the CONNECT names a session the server has, without proving it is that session's client. */
  SessionMismatch = 7,
  /** Never sent: a connection that ended because the server answered with a stateless reset. */
  Reset = 8,
}

export type Reason =
  | 'normal'
  | 'timeout'
  | 'bad-token'
  | 'server-full'
  | 'protocol-error'
  | 'shutdown'
  | 'encryption-mismatch'
  | 'session-mismatch'
  | 'reset';

const REASONS: readonly Reason[] = [
  'normal',
  'timeout',
  'bad-token',
  'server-full',
  'protocol-error',
  'shutdown',
  'encryption-mismatch',
  'session-mismatch',
  'reset',
];

export function reasonFromCode(code: number): Reason {
  return REASONS[code] ?? 'protocol-error';
}

export function reasonToCode(reason: Reason): ReasonCode {
  return REASONS.indexOf(reason) as ReasonCode;
}
