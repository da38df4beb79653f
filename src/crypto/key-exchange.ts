import { createPrivateKey, createPublicKey, diffieHellman, type KeyObject } from 'node:crypto';
import { PUBLIC_KEY_SIZE } from '../wire/constants.js';

/**
 * X25519 (RFC 7748) for the encrypted handshake. The private key is made from 32 bytes
 * the caller gives (the endpoint's injected randomness), so a seeded simulation is
 * deterministic; node:crypto clamps the scalar itself.
 */

// DER prefixes of an X25519 key in PKCS#8 and SubjectPublicKeyInfo (RFC 8410): the raw
// 32 key bytes follow them.
const PKCS8_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');
const SPKI_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');

export class EphemeralKey {
  private readonly privateKey: KeyObject;
  /** Raw 32-byte public key, as sent in CONNECT/ACCEPT. */
  readonly publicKey: Uint8Array;

  constructor(secret: Uint8Array) {
    if (secret.length !== 32) throw new Error(`an X25519 secret is 32 bytes, got ${secret.length}`);
    this.privateKey = createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, secret]), format: 'der', type: 'pkcs8' });
    const spki = createPublicKey(this.privateKey).export({ format: 'der', type: 'spki' });
    this.publicKey = new Uint8Array(spki.subarray(spki.length - PUBLIC_KEY_SIZE));
  }

  /**
   * The shared secret with a peer's raw public key, or undefined when the key is not
   * usable (wrong size, or a low-order point giving an all-zero secret, RFC 7748 section
   * 6.1). Never throws on network bytes.
   */
  agree(peerPublic: Uint8Array): Uint8Array | undefined {
    if (peerPublic.length !== PUBLIC_KEY_SIZE) return undefined;
    let shared: Buffer;
    try {
      const publicKey = createPublicKey({ key: Buffer.concat([SPKI_PREFIX, peerPublic]), format: 'der', type: 'spki' });
      shared = diffieHellman({ privateKey: this.privateKey, publicKey });
    } catch {
      return undefined;
    }
    let any = 0;
    for (const b of shared) any |= b;
    return any === 0 ? undefined : new Uint8Array(shared);
  }
}
