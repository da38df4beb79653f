#!/usr/bin/env node
/**
 * The `udpipe` command: a server that prints, echoes or relays messages, and a client
 * that turns stdin lines into messages. Uses only the public API. stdout carries data
 * only; everything else goes to stderr. Exit codes: 0 done, 1 connection failure,
 * 2 bad usage.
 */
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { UDPipe, UDPipeError, type Peer } from '../index.js';

const USAGE = `usage: udpipe <command> [options]

commands:
  serve [--port P] [--host H] [--token T] [--encrypt] [--classic] [--echo] [--debug]
      Listen for clients (default port 1234, all interfaces). Prints each message
      received as a line on stdout. --echo sends each message back to its sender;
      otherwise it is relayed to every other client. A client that cannot take a
      message (it does not acknowledge, or is closing) is skipped and noted on stderr.
  connect HOST PORT [--token T] [--encrypt | --classic] [--timeout SECONDS] [--unreliable] [--debug]
      Connect to a server. Each line of stdin is sent as a message; each message
      received is printed as a line. At the end of input, waits until everything
      sent is acknowledged (--classic: sent), closes, and exits 0.

options:
  --token T        shared token; client and server must match (default: none)
  --encrypt        encrypt every packet (X25519, ChaCha20-Poly1305); both sides need it
  --classic        connect: speak the original Lua UDPIPE protocol (token in clear, unreliable);
                   serve: also accept Lua UDPIPE clients (off by default, also with --encrypt:
                   their token and data travel in clear)
  --debug          log every datagram and state change on stderr
  -h, --help       show this help
  -v, --version    print the version

exit codes: 0 success, 1 connection failure, 2 bad usage
`;

class UsageError extends Error {}

function fail(message: string, code: number): never {
  process.stderr.write(`udpipe: ${message}\n`);
  if (code === 2) process.stderr.write("run 'udpipe --help' for usage\n");
  process.exit(code);
}

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

function parsePort(s: string | undefined, what: string, allowZero: boolean): number {
  const n = Number(s);
  if (s === undefined || !/^\d+$/.test(s) || n < (allowZero ? 0 : 1) || n > 65535)
    throw new UsageError(`${what} must be an integer from ${allowZero ? 0 : 1} to 65535, got '${s ?? ''}'`);
  return n;
}

function fmt(address: string, port: number): string {
  return `${address.includes(':') ? `[${address}]` : address}:${port}`;
}

async function serve(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: true,
    options: {
      port: { type: 'string', short: 'p', default: '1234' },
      host: { type: 'string' },
      token: { type: 'string', default: '' },
      encrypt: { type: 'boolean', default: false },
      classic: { type: 'boolean', default: false },
      // Accepted for scripts written for 0.1.0, where classic clients were on by default.
      'no-classic': { type: 'boolean', default: false },
      echo: { type: 'boolean', default: false },
      debug: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) return void process.stdout.write(USAGE);
  if (positionals.length > 0) throw new UsageError(`serve takes no arguments, got '${positionals.join(' ')}'`);
  const port = parsePort(values.port, '--port', true);
  if (values.classic && values['no-classic']) throw new UsageError('--classic and --no-classic contradict each other');
  const server = new UDPipe({ token: values.token, encrypt: values.encrypt, classic: values.classic, debug: values.debug });
  server.onNewMessage = function (msg, sock) {
    process.stdout.write(`${msg.toString('utf8')}\n`);
    if (values.echo) {
      this.send(msg, sock);
      return;
    }
    for (const other of this.clients) {
      if (other === sock || (other.state !== 'connected' && other.state !== 'stalled')) continue;
      try {
        this.send(msg, other);
      } catch (err) {
        // A classic (Lua) client cannot take every message (a control word, over 8 kB):
        // skip it for that one, never end the server over what a client sent.
        if (!(err instanceof UDPipeError)) throw err;
        process.stderr.write(`not relayed to ${other}: ${err.message}\n`);
      }
    }
  };
  // What a client cannot take (it does not acknowledge, or is going) is skipped: said
  // once per client, so a stuck one does not flood the terminal.
  const noted = new WeakSet<Peer>();
  server.on('dropped', (sock, _msg, reason) => {
    if (noted.has(sock)) return;
    noted.add(sock);
    process.stderr.write(`client ${sock}: messages not delivered (${reason === 'queue-full' ? 'it is not acknowledging' : reason})\n`);
  });
  server.onConnect = (sock: Peer) => process.stderr.write(`client ${sock} connected\n`);
  server.onDisconnect = (sock: Peer) => process.stderr.write(`client ${sock} timed out\n`);
  server.onClose = (sock: Peer, reason: string) => process.stderr.write(`client ${sock} closed (${reason})\n`);
  server.onBadToken = (_msg, ip, p) => process.stderr.write(`refused ${fmt(ip, p)}: bad token\n`);
  const local = await server.start(port, values.host);
  process.stderr.write(`listening on ${fmt(local.address, local.port)}\n`);
  const stop = (): void => {
    server.close().then(
      () => process.exit(0),
      () => process.exit(0),
    );
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

async function connect(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: true,
    options: {
      token: { type: 'string', default: '' },
      encrypt: { type: 'boolean', default: false },
      classic: { type: 'boolean', default: false },
      timeout: { type: 'string', default: '10' },
      unreliable: { type: 'boolean', default: false },
      debug: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) return void process.stdout.write(USAGE);
  if (positionals.length !== 2) throw new UsageError('connect needs HOST and PORT');
  const [host, portText] = positionals as [string, string];
  const port = parsePort(portText, 'PORT', false);
  const timeout = Number(values.timeout);
  if (!Number.isFinite(timeout) || timeout <= 0)
    throw new UsageError(`--timeout must be a positive number of seconds, got '${values.timeout}'`);

  // A larger queue than the default: readline hands over a whole input chunk of lines
  // at once, even while paused, and send() throws past 8x maxQueue.
  if (values.classic && values.encrypt)
    throw new UsageError('--classic cannot be combined with --encrypt: the classic protocol has no encryption');
  const client = new UDPipe({
    token: values.token,
    encrypt: values.encrypt,
    protocol: values.classic ? 'classic' : 'udpipe',
    debug: values.debug,
    maxQueue: 4096,
  });
  client.onNewMessage = (msg) => process.stdout.write(`${msg.toString('utf8')}\n`);
  client.onDisconnect = () => process.stderr.write('connection lost; reconnecting\n');
  client.onClose = (_sock, reason) => {
    if (reason !== 'normal') process.stderr.write(`server closed the connection (${reason}); reconnecting\n`);
  };
  client.on('error', (err) => fail(err.message, 1));
  try {
    await client.connect(host, port, timeout);
  } catch (err) {
    fail(err instanceof Error ? err.message : String(err), 1);
  }
  process.stderr.write(`connected to ${fmt(host, port)}\n`);

  let exitCode = 0;
  let lineNo = 0;
  const rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
  client.on('drain', () => rl.resume());
  rl.on('line', (line) => {
    lineNo++;
    try {
      // Backpressure: stop reading until the queue drains.
      if (!client.send(line, undefined, { reliable: !values.unreliable })) rl.pause();
    } catch (err) {
      // Too large, or (classic) a line that is a control word like PING: skip it, say so.
      if (!(err instanceof UDPipeError) || (err.code !== 'ERR_MESSAGE_TOO_LARGE' && err.code !== 'ERR_INVALID_ARGUMENT')) throw err;
      process.stderr.write(`udpipe: line ${lineNo} skipped: ${err.message}\n`);
      exitCode = 1;
    }
  });
  rl.once('close', () => {
    client.close().then(() => process.exit(exitCode));
  });
}

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'serve':
      return serve(rest);
    case 'connect':
      return connect(rest);
    case '-h':
    case '--help':
    case 'help':
      process.stdout.write(USAGE);
      return;
    case '-v':
    case '--version':
      process.stdout.write(`${version()}\n`);
      return;
    case undefined:
      throw new UsageError('a command is needed: serve or connect');
    default:
      throw new UsageError(`unknown command '${command}'`);
  }
}

main(process.argv.slice(2)).catch((err: unknown) => {
  if (err instanceof UsageError) fail(err.message, 2);
  // parseArgs reports unknown options and missing values with these codes.
  const code = (err as { code?: string }).code;
  if (
    code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' ||
    code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' ||
    code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL'
  )
    fail((err as Error).message, 2);
  if (err instanceof UDPipeError) fail(err.message, 1);
  fail(err instanceof Error ? err.message : String(err), 1);
});
