/**
 * The datagrams of the classic UDPIPE protocol (docs/PROTOCOL.md, section 14): ASCII
 * control words, `HELLO <token>`, `CONNECT <ip> <port>`, and raw data. The state
 * machines that use them are in src/protocol/classic.ts.
 */

const ascii = (s: string): Uint8Array => Uint8Array.from(s, (c) => c.charCodeAt(0));
const text = (b: Uint8Array): string => String.fromCharCode(...b);

export const CLASSIC_PING = ascii('PING');
export const CLASSIC_PONG = ascii('PONG');
export const CLASSIC_CONNECT = ascii('CONNECT');
export const CLASSIC_CONNECTED = ascii('CONNECTED');
export const CLASSIC_CLOSE = ascii('CLOSE');
export const CLASSIC_CLOSED = ascii('CLOSED');
export const CLASSIC_GO_AWAY = ascii('GO AWAY!');

/** Largest classic payload we send or accept: luasocket's default UDP receive size. */
export const CLASSIC_MAX_DATAGRAM = 8192;

const CONTROL_WORDS = new Set(['PING', 'PONG', 'CONNECT', 'CONNECTED', 'CLOSE', 'CLOSED', 'GO AWAY!']);

/** A payload the classic peer would read as a control word (it cannot be sent as data). */
export function isClassicControlWord(data: Uint8Array): boolean {
  return data.length <= 9 && CONTROL_WORDS.has(text(data));
}

/** The token of a `HELLO <token>` datagram, or undefined if it is not one. */
export function parseClassicHello(bytes: Uint8Array): string | undefined {
  if (bytes.length < 6 || bytes.length > 6 + 1024) return undefined;
  if (text(bytes.subarray(0, 6)) !== 'HELLO ') return undefined;
  return new TextDecoder().decode(bytes.subarray(6));
}

export function encodeClassicHello(token: string): Uint8Array {
  const t = new TextEncoder().encode(token);
  const out = new Uint8Array(6 + t.length);
  out.set(ascii('HELLO '), 0);
  out.set(t, 6);
  return out;
}

/** `CONNECT <ip> <port>`: where the server's private socket for this client is. */
export function encodeClassicRedirect(address: string, port: number): Uint8Array {
  return ascii(`CONNECT ${address} ${port}`);
}

export function parseClassicRedirect(bytes: Uint8Array): { address: string; port: number } | undefined {
  if (bytes.length > 64) return undefined;
  const m = /^CONNECT ([0-9A-Fa-f:.]+) (\d{1,5})$/.exec(text(bytes));
  if (!m) return undefined;
  const port = Number(m[2]);
  return port >= 1 && port <= 65535 ? { address: m[1]!, port } : undefined;
}
