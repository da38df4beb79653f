import { createHmac, hkdfSync } from 'node:crypto';
import { COOKIE_SIZE, PROOF_SIZE, RESET_TOKEN_SIZE } from '../wire/constants.js';
import { AeadPacketCipher, HmacPacketCipher, type PacketCipher } from './packet-cipher.js';

/**
 * Handshake cryptography of protocol v1 (docs/PROTOCOL.md, "Handshake"): the token
 * never travels; each side proves it knows the token with an HMAC-SHA256 keyed from it
 * over both sides' fresh values (client nonce, server cookie, connection ids).
 * Deterministic given its inputs: all randomness is injected by the caller.
 */

const enc = new TextEncoder();

function u32(n: number): Uint8Array {
  return new Uint8Array([(n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff]);
}

function u64(n: number): Uint8Array {
  const b = new Uint8Array(8);
  b.set(u32(Math.floor(n / 2 ** 32)), 0);
  b.set(u32(n % 2 ** 32), 4);
  return b;
}

function hmac(key: Uint8Array, label: string, ...parts: Uint8Array[]): Uint8Array {
  const h = createHmac('sha256', key).update(enc.encode(label));
  for (const p of parts) h.update(p);
  return new Uint8Array(h.digest());
}

/** The key every proof is made with; the token itself is never used or sent as is. */
export function deriveTokenKey(token: string | Uint8Array): Uint8Array {
  return hmac(enc.encode('udpipe v1 token key'), '', typeof token === 'string' ? enc.encode(token) : token);
}

export interface HandshakeTranscript {
  clientConnId: number;
  clientNonce: Uint8Array;
  cookie: Uint8Array;
}

/**
 * What CONNECT claims besides the transcript; the client's proof covers it, so nobody on
 * the path can alter it (in particular, nobody can strip the request for encryption).
 */
export interface ConnectClaims {
  sessionId: Uint8Array;
  nextSendIndex: number;
  delivered: number;
  flags: number;
  publicKey: Uint8Array;
  resumeProof: Uint8Array;
}

/** What ACCEPT claims; covered by the server's proof. */
export interface AcceptClaims {
  serverConnId: number;
  resumed: number;
  delivered: number;
  flags: number;
  publicKey: Uint8Array;
  resetToken: Uint8Array;
}

type Connect = HandshakeTranscript & Omit<ConnectClaims, 'resumeProof'>;

function connectFields(t: Connect): Uint8Array[] {
  return [
    u32(t.clientConnId),
    t.clientNonce,
    t.cookie,
    t.sessionId,
    u64(t.nextSendIndex),
    u64(t.delivered),
    new Uint8Array([t.flags]),
    t.publicKey,
  ];
}

function connectParts(t: HandshakeTranscript & ConnectClaims): Uint8Array[] {
  return [...connectFields(t), t.resumeProof];
}

/**
 * Proves the client is the one its session began with: a MAC under the session's
 * resumption secret, which only the two ends of the session's first connection could
 * derive (from its X25519 exchange). Knowing the token and the session id is not enough.
 */
export function resumeProof(secret: Uint8Array, t: Connect): Uint8Array {
  return hmac(secret, 'udpipe v1 resume proof', ...connectFields(t)).subarray(0, PROOF_SIZE);
}

export function clientProof(key: Uint8Array, t: HandshakeTranscript & ConnectClaims): Uint8Array {
  return hmac(key, 'udpipe v1 client proof', ...connectParts(t)).subarray(0, PROOF_SIZE);
}

export function serverProof(key: Uint8Array, t: HandshakeTranscript & ConnectClaims, a: AcceptClaims): Uint8Array {
  return hmac(
    key,
    'udpipe v1 server proof',
    ...connectParts(t),
    u32(a.serverConnId),
    new Uint8Array([a.resumed]),
    u64(a.delivered),
    new Uint8Array([a.flags]),
    a.publicKey,
    a.resetToken,
  ).subarray(0, PROOF_SIZE);
}

/**
 * A REFUSE for a client that proved the token (server full, encryption mismatch,
 * session mismatch): the client believes it only with this proof, so nobody without the
 * token can turn it away.
 */
export function refuseProof(key: Uint8Array, t: HandshakeTranscript & ConnectClaims, reason: number): Uint8Array {
  return hmac(key, 'udpipe v1 refuse proof', ...connectParts(t), new Uint8Array([reason])).subarray(0, PROOF_SIZE);
}

/** Everything one connection's X25519 exchange gives both ends (docs/PROTOCOL.md, section 3). */
export interface ConnectionKeys {
  clientToServer: Uint8Array;
  serverToClient: Uint8Array;
  /** The session's resumption secret, if this connection starts the session. */
  resume: Uint8Array;
  /** XORed over the reset token in ACCEPT: an observer of the handshake cannot read it. */
  resetMask: Uint8Array;
}

/**
 * HKDF-SHA256 (RFC 5869) with the X25519 shared secret as input key material, the token
 * key as salt (a man in the middle without the token derives other keys) and the whole
 * exchange as info. Every connection makes them, encrypted or not: so even without
 * encryption, someone who knows the token and saw the handshake can neither forge
 * packets nor resume the session.
 */
export function connectionKeys(
  tokenKey: Uint8Array,
  shared: Uint8Array,
  t: HandshakeTranscript,
  serverConnId: number,
  clientPublic: Uint8Array,
  serverPublic: Uint8Array,
): ConnectionKeys {
  const info = Buffer.concat([
    enc.encode('udpipe v1 keys'),
    u32(t.clientConnId),
    t.clientNonce,
    t.cookie,
    u32(serverConnId),
    clientPublic,
    serverPublic,
  ]);
  const okm = new Uint8Array(hkdfSync('sha256', shared, tokenKey, info, 96 + RESET_TOKEN_SIZE));
  return { clientToServer: okm.slice(0, 32), serverToClient: okm.slice(32, 64), resume: okm.slice(64, 96), resetMask: okm.slice(96) };
}

/**
 * The packet protection of one side of a connection: ChaCha20-Poly1305 when encrypting,
 * else HMAC-SHA256 tags, under the same keys. Each side sends with its own direction's key.
 */
export function connectionCipher(side: 'client' | 'server', keys: ConnectionKeys, encrypt: boolean): PacketCipher {
  const [send, receive] = side === 'client' ? [keys.clientToServer, keys.serverToClient] : [keys.serverToClient, keys.clientToServer];
  return encrypt ? new AeadPacketCipher(send, receive) : new HmacPacketCipher(send, receive);
}

/**
 * The key stateless reset tokens are made with: from `resetSecret` when the program
 * gives one, else from the token key; and from the port the server listens on, so two
 * servers with one token on two ports cannot be used to learn each other's tokens.
 */
export function deriveResetKey(secret: string | Uint8Array, port = 0): Uint8Array {
  return hmac(
    enc.encode('udpipe v1 reset key'),
    '',
    typeof secret === 'string' ? enc.encode(secret) : secret,
    new Uint8Array([port >> 8, port & 0xff]),
  );
}

/** The reset token of a server connection id: the same after a restart, so the server need not remember it. */
export function resetToken(resetKey: Uint8Array, serverConnId: number): Uint8Array {
  return hmac(resetKey, 'udpipe v1 reset token', u32(serverConnId)).subarray(0, RESET_TOKEN_SIZE);
}

export function xorBytes(a: Uint8Array, b: Uint8Array): Uint8Array {
  return a.map((x, i) => x ^ b[i]!);
}

/** Constant-time comparison of two byte strings of any length. */
export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i]! ^ b[i]!;
  return d === 0;
}

/**
 * Stateless cookies (the server allocates nothing for a HELLO): a MAC over the client's
 * address, port, connection id and nonce under a secret that rotates every
 * `rotateMs`; the previous secret is still accepted, so a cookie lives between one and
 * two periods.
 */
export class CookieJar {
  private current: Uint8Array;
  private previous: Uint8Array | undefined;
  private rotatedAt: number;

  constructor(
    private readonly randomBytes: (n: number) => Uint8Array,
    now: number,
    private readonly rotateMs = 30_000,
  ) {
    this.current = randomBytes(32);
    this.rotatedAt = now;
  }

  private rotate(now: number): void {
    const periods = Math.floor((now - this.rotatedAt) / this.rotateMs);
    if (periods < 1) return;
    // Periods are counted from the first secret, not from the last call, so a cookie
    // never outlives two periods however rarely we are asked; skipped periods
    // invalidate both secrets at once.
    this.previous = periods === 1 ? this.current : undefined;
    this.current = this.randomBytes(32);
    this.rotatedAt += periods * this.rotateMs;
  }

  private compute(secret: Uint8Array, address: string, port: number, t: Omit<HandshakeTranscript, 'cookie'>): Uint8Array {
    return hmac(secret, 'udpipe v1 cookie', enc.encode(`${address}|${port}|`), u32(t.clientConnId), t.clientNonce).subarray(0, COOKIE_SIZE);
  }

  make(address: string, port: number, t: Omit<HandshakeTranscript, 'cookie'>, now: number): Uint8Array {
    this.rotate(now);
    return this.compute(this.current, address, port, t);
  }

  check(address: string, port: number, t: HandshakeTranscript, now: number): boolean {
    this.rotate(now);
    if (equalBytes(this.compute(this.current, address, port, t), t.cookie)) return true;
    return this.previous !== undefined && equalBytes(this.compute(this.previous, address, port, t), t.cookie);
  }
}
