import { isIP } from 'node:net';
import { UDPipeError } from '../errors.js';
import type { Transport } from '../transport/types.js';

/** Where debug lines and warnings go. Any console-like object fits. */
export interface Logger {
  debug(message: string): void;
  warn(message: string): void;
}

export interface ReconnectOptions {
  /** Delay before the first retry; doubles per failed attempt. Default 250 ms. */
  minDelayMs?: number;
  /** Cap of the backoff. Default 10 000 ms. */
  maxDelayMs?: number;
}

/** Every tunable of a UDPipe, with its unit in its name. */
export interface UDPipeOptions {
  /** Shared secret: client and server must have the same one. Never sent on the wire. Default ''. */
  token?: string;
  /**
   * Server: also accept clients of the original Lua UDPIPE ("classic" protocol: token in
   * clear, unreliable, a private port per client; docs/PROTOCOL.md section 14) on the
   * same port. Default false: the classic protocol sends its token in clear, proves no
   * address (its replies can be reflected at a forged source) and cannot be encrypted,
   * so a program that needs it turns it on (the CLI: `serve --classic`).
   */
  classic?: boolean;
  /**
   * Server: the token classic clients must send. It travels in clear, so give them their
   * own rather than the modern clients' `token`. Default: `token`.
   */
  classicToken?: string;
  /**
   * Server: the IP address classic clients are told to reach their private socket at.
   * Default: the host given to start(); when listening on all interfaces, loopback for a
   * client on loopback, else the first non-internal address of the client's family.
   */
  classicAddress?: string;
  /** Client: 'classic' speaks the original Lua UDPIPE protocol to a classic server. Default 'udpipe'. */
  protocol?: 'udpipe' | 'classic';
  /**
   * Server: the secret behind stateless resets (a restarted server tells a client at once
   * that its connection is gone, instead of letting it wait out timeoutMs). Give the
   * server that takes over a port the one of the server it replaces, servers running
   * side by side each their own, and keep it from clients. Default: derived from `token`
   * and the port, so anyone who holds the token and sees a connection id could make
   * that client reconnect (it resumes its session; nothing is lost).
   */
  resetSecret?: string;
  /** Server: connections accepted at once; more are refused ('server-full'). Default 1024. */
  maxClients?: number;
  /**
   * Server: connections from one IP address (any port), so one host cannot take every
   * slot. Default: half of maxClients, at most 16 (players behind one NAT share an
   * address: raise it for a LAN party or a campus).
   */
  maxClientsPerAddress?: number;
  /**
   * Server: bytes queued for all peers together (reliable ones until acknowledged). A
   * send() past it is not queued: it returns false and 'dropped' tells which peer, so
   * peers that withhold acknowledgements cannot make the server hold more. Default 256 MiB.
   */
  maxQueuedBytes?: number;
  /**
   * Encrypt every packet (X25519 key exchange, ChaCha20-Poly1305; docs/SECURITY.md).
   * Client and server must agree: one with and one without is refused with
   * ERR_ENCRYPTION_MISMATCH. Without it packets are authenticated but readable on the
   * path. Default false.
   */
  encrypt?: boolean;
  /**
   * Server: handshakes per second one IP address may make, with bursts of twice that;
   * more get no answer (the client retries with backoff). 0 turns the limit off.
   * Default 50.
   */
  handshakesPerSecond?: number;
  /** Each side pings this often. Default 1000 ms. */
  pingIntervalMs?: number;
  /** No packet for this long: 'stalled', sends queue. Default 3000 ms (three missed pings). */
  stallTimeoutMs?: number;
  /** No packet for this long: disconnect (the seed's setTimeout, in ms). Default 10 000 ms. */
  timeoutMs?: number;
  /** Client: connect() rejects if no connection within this. Default 10 000 ms. */
  connectTimeoutMs?: number;
  /**
   * Server: how long the state of a lost connection's session (what the client had
   * delivered, what was still to send it) waits for the client to reconnect and resume.
   * Past it the client starts a new session. Default 60 000 ms.
   */
  sessionLingerMs?: number;
  /** Client: reconnect after a lost connection. `false` turns it off. Default on, 250..10 000 ms. */
  reconnect?: boolean | ReconnectOptions;
  /** send() returns false once this many messages (or parts of large ones) wait, unacknowledged or unsent. Default 1024. */
  maxQueue?: number;
  /**
   * send() also returns false once this many bytes are queued for one peer (reliable
   * ones count until acknowledged). Default 4 MiB. Past 8 times this (or 8 times
   * maxQueue) a send is not queued: false and a 'dropped' event, so a peer that does not
   * acknowledge cannot make us hold more.
   */
  highWaterMark?: number;
  /**
   * Bytes that all connections of this endpoint together may hold while putting
   * messages back together (out-of-order parts, half-built messages). At the limit a
   * reliable part is refused and comes again later (nothing is lost; one message at a
   * time always progresses), an unreliable one is dropped. Default 256 MiB.
   */
  maxReassemblyBytes?: number;
  /**
   * Largest message, sent or accepted (over 1200 bytes it travels in parts of about
   * 1.1 kB). Default 16 MiB.
   */
  maxMessageSize?: number;
  /**
   * Ceiling of the path MTU search, in bytes of UDP payload (1232..65507). Every
   * connection starts at 1232 bytes, which any path carries, and probes larger sizes up
   * to this (RFC 8899). Default: 65488 towards loopback, 1472 (IPv6: 1452) elsewhere;
   * raise it on a LAN with jumbo frames. Node cannot set the don't-fragment bit, so a
   * ceiling above the local interface's MTU lets the kernel fragment datagrams.
   */
  maxDatagramSize?: number;
  /** Run by itself on the event loop (true) or only inside step() (false). Default true. */
  autoStep?: boolean;
  /** Log every datagram and state change, one line each, through `logger`. Default false. */
  debug?: boolean;
  /** Default: lines to stderr prefixed with "[udpipe]". */
  logger?: Logger;
  /** Where datagrams go: real UDP by default; `udpipe/testing` gives a simulated network. */
  transport?: Transport;
}

export interface ResolvedOptions {
  token: string;
  classic: boolean;
  classicToken: string | undefined;
  classicAddress: string | undefined;
  protocol: 'udpipe' | 'classic';
  resetSecret: string | undefined;
  maxClients: number;
  maxClientsPerAddress: number;
  maxQueuedBytes: number;
  encrypt: boolean;
  handshakesPerSecond: number;
  pingIntervalMs: number;
  stallTimeoutMs: number;
  timeoutMs: number;
  connectTimeoutMs: number;
  sessionLingerMs: number;
  reconnect: { enabled: boolean; minDelayMs: number; maxDelayMs: number };
  maxQueue: number;
  highWaterMark: number;
  maxReassemblyBytes: number;
  maxMessageSize: number;
  maxDatagramSize: number | undefined;
  autoStep: boolean;
  debug: boolean;
  logger: Logger;
  transport: Transport | undefined;
}

const defaultLogger: Logger = {
  debug: (m) => process.stderr.write(`[udpipe] ${m}\n`),
  warn: (m) => process.stderr.write(`[udpipe] warning: ${m}\n`),
};

const KNOWN = new Set([
  'token',
  'classic',
  'classicToken',
  'classicAddress',
  'protocol',
  'resetSecret',
  'maxClients',
  'maxClientsPerAddress',
  'maxQueuedBytes',
  'encrypt',
  'handshakesPerSecond',
  'pingIntervalMs',
  'stallTimeoutMs',
  'timeoutMs',
  'connectTimeoutMs',
  'sessionLingerMs',
  'reconnect',
  'maxQueue',
  'highWaterMark',
  'maxReassemblyBytes',
  'maxMessageSize',
  'maxDatagramSize',
  'autoStep',
  'debug',
  'logger',
  'transport',
]);

function bad(message: string): never {
  throw new UDPipeError('ERR_INVALID_OPTION', message);
}

/** A finite number of milliseconds within [min, max]. */
export function checkMs(name: string, v: unknown, min: number, max = 86_400_000): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max) {
    bad(`${name} must be a number of milliseconds from ${min} to ${max}, got ${String(v)}`);
  }
  return v;
}

function checkInt(name: string, v: unknown, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    bad(`${name} must be an integer from ${min} to ${max}, got ${String(v)}`);
  }
  return v;
}

function checkAddress(v: unknown): string {
  if (typeof v !== 'string' || isIP(v) === 0) bad(`classicAddress must be an IP address, got ${String(v)}`);
  return v;
}

function checkBool(name: string, v: unknown): boolean {
  if (typeof v !== 'boolean') bad(`${name} must be true or false, got ${String(v)}`);
  return v;
}

export function checkToken(v: unknown): string {
  if (typeof v !== 'string') bad(`token must be a string, got ${typeof v}`);
  if (Buffer.byteLength(v) > 1024) bad('token must be at most 1024 bytes');
  return v;
}

function checkSecret(name: string, v: unknown): string {
  if (typeof v !== 'string' || v.length < 16) bad(`${name} must be a string of at least 16 characters (random, kept by the servers only)`);
  if (Buffer.byteLength(v) > 1024) bad(`${name} must be at most 1024 bytes`);
  return v;
}

/** Checks the timing invariants: ping < stall < disconnect. */
export function checkTimings(o: Pick<ResolvedOptions, 'pingIntervalMs' | 'stallTimeoutMs' | 'timeoutMs'>): void {
  if (o.pingIntervalMs >= o.stallTimeoutMs) {
    bad(
      `pingIntervalMs (${o.pingIntervalMs}) must be below stallTimeoutMs (${o.stallTimeoutMs}), or every quiet moment looks like a stall`,
    );
  }
  if (o.stallTimeoutMs >= o.timeoutMs) {
    bad(`stallTimeoutMs (${o.stallTimeoutMs}) must be below timeoutMs (${o.timeoutMs}): a connection stalls before it is given up`);
  }
}

/** Validates once, at construction; every error names the option and what it accepts. */
export function resolveOptions(opts: UDPipeOptions | undefined): ResolvedOptions {
  if (opts === undefined) opts = {};
  if (typeof opts !== 'object' || opts === null) bad(`options must be an object, got ${String(opts)}`);
  for (const k of Object.keys(opts)) {
    if (!KNOWN.has(k)) bad(`unknown option '${k}'; known options: ${[...KNOWN].join(', ')}`);
  }
  let reconnect = { enabled: true, minDelayMs: 250, maxDelayMs: 10_000 };
  if (opts.reconnect !== undefined) {
    if (typeof opts.reconnect === 'boolean') reconnect.enabled = opts.reconnect;
    else if (typeof opts.reconnect === 'object' && opts.reconnect !== null) {
      reconnect = {
        enabled: true,
        minDelayMs: checkMs('reconnect.minDelayMs', opts.reconnect.minDelayMs ?? 250, 1),
        maxDelayMs: checkMs('reconnect.maxDelayMs', opts.reconnect.maxDelayMs ?? 10_000, 1),
      };
      if (reconnect.minDelayMs > reconnect.maxDelayMs) bad('reconnect.minDelayMs must not exceed reconnect.maxDelayMs');
    } else bad('reconnect must be true, false or { minDelayMs, maxDelayMs }');
  }
  const logger = opts.logger ?? defaultLogger;
  if (typeof logger.debug !== 'function' || typeof logger.warn !== 'function')
    bad('logger must have debug(message) and warn(message) functions');
  const r: ResolvedOptions = {
    token: checkToken(opts.token ?? ''),
    classic: checkBool('classic', opts.classic ?? false),
    classicToken: opts.classicToken === undefined ? undefined : checkToken(opts.classicToken),
    classicAddress: opts.classicAddress === undefined ? undefined : checkAddress(opts.classicAddress),
    protocol:
      opts.protocol === undefined || opts.protocol === 'udpipe' || opts.protocol === 'classic'
        ? (opts.protocol ?? 'udpipe')
        : bad(`protocol must be 'udpipe' or 'classic', got ${String(opts.protocol)}`),
    resetSecret: opts.resetSecret === undefined ? undefined : checkSecret('resetSecret', opts.resetSecret),
    maxClients: checkInt('maxClients', opts.maxClients ?? 1024, 0, 1_000_000),
    maxClientsPerAddress: 0, // below: its default follows maxClients
    maxQueuedBytes: checkInt('maxQueuedBytes', opts.maxQueuedBytes ?? 256 * 1024 * 1024, 65536, 2 ** 40),
    encrypt: checkBool('encrypt', opts.encrypt ?? false),
    handshakesPerSecond: checkInt('handshakesPerSecond', opts.handshakesPerSecond ?? 50, 0, 1_000_000),
    pingIntervalMs: checkMs('pingIntervalMs', opts.pingIntervalMs ?? 1000, 10),
    stallTimeoutMs: checkMs('stallTimeoutMs', opts.stallTimeoutMs ?? 3000, 20),
    timeoutMs: checkMs('timeoutMs', opts.timeoutMs ?? 10_000, 30),
    connectTimeoutMs: checkMs('connectTimeoutMs', opts.connectTimeoutMs ?? 10_000, 1),
    sessionLingerMs: checkMs('sessionLingerMs', opts.sessionLingerMs ?? 60_000, 0),
    reconnect,
    maxQueue: checkInt('maxQueue', opts.maxQueue ?? 1024, 1, 1 << 20),
    highWaterMark: checkInt('highWaterMark', opts.highWaterMark ?? 4 * 1024 * 1024, 1024, 1 << 30),
    maxReassemblyBytes: checkInt('maxReassemblyBytes', opts.maxReassemblyBytes ?? 256 * 1024 * 1024, 65536, 2 ** 40),
    maxMessageSize: checkInt('maxMessageSize', opts.maxMessageSize ?? 16 * 1024 * 1024, 1, 1 << 30),
    maxDatagramSize: opts.maxDatagramSize === undefined ? undefined : checkInt('maxDatagramSize', opts.maxDatagramSize, 1232, 65507),
    autoStep: checkBool('autoStep', opts.autoStep ?? true),
    debug: checkBool('debug', opts.debug ?? false),
    logger,
    transport: opts.transport,
  };
  r.maxClientsPerAddress =
    opts.maxClientsPerAddress === undefined
      ? defaultPerAddress(r.maxClients)
      : checkInt('maxClientsPerAddress', opts.maxClientsPerAddress, 1, 1_000_000);
  checkTimings(r);
  if (r.protocol === 'classic' && r.encrypt)
    bad("protocol 'classic' cannot encrypt: the original UDPIPE protocol has no encryption; drop encrypt or use the udpipe protocol");
  return r;
}

/** Half the slots, at most 16: one host cannot fill a server, and 16 players behind one NAT still fit. */
export function defaultPerAddress(maxClients: number): number {
  return Math.min(16, Math.max(1, Math.ceil(maxClients / 2)));
}
