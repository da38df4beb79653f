/**
 * The `udpipe` command, as a user runs it: real processes on loopback only. Each test
 * is bounded and kills what it started.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const children: ChildProcess[] = [];
after(() => {
  for (const c of children) c.kill('SIGKILL');
});

interface Run {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  exit: Promise<number | null>;
}

function run(args: string[], stdin?: string): Run {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  children.push(child);
  let out = '';
  let err = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (err += d));
  const exit = once(child, 'exit').then(([code]) => code as number | null);
  if (stdin !== undefined) child.stdin!.end(stdin);
  return { child, stdout: () => out, stderr: () => err, exit };
}

/** Resolves when `get()` matches, or rejects after ms (never a fixed sleep). */
async function waitFor(get: () => string, re: RegExp, ms = 5000): Promise<RegExpMatchArray> {
  const end = Date.now() + ms;
  for (;;) {
    const m = get().match(re);
    if (m) return m;
    if (Date.now() > end) throw new Error(`timed out waiting for ${re} in: ${get()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function startServer(args: string[] = [], host = '127.0.0.1'): Promise<{ server: Run; port: string }> {
  const server = run(['serve', '--port', '0', '--host', host, ...args]);
  const m = await waitFor(server.stderr, /listening on \S+:(\d+)/);
  return { server, port: m[1]! };
}

test('serve --echo and connect: lines go out and come back, exit code 0', { timeout: 15000 }, async () => {
  const { server, port } = await startServer(['--echo']);
  const client = run(['connect', '127.0.0.1', port], 'one\ntwo\n\nthree four\n');
  assert.equal(await client.exit, 0);
  assert.equal(client.stdout(), 'one\ntwo\n\nthree four\n');
  await waitFor(server.stdout, /three four\n/);
  assert.equal(server.stdout(), 'one\ntwo\n\nthree four\n');
  server.child.kill('SIGTERM');
  assert.equal(await server.exit, 0, 'SIGTERM closes the server cleanly');
});

test('without --echo the server relays each message to the other clients', { timeout: 15000 }, async () => {
  const { server, port } = await startServer();
  const listener = run(['connect', '127.0.0.1', port]);
  await waitFor(listener.stderr, /connected to/);
  await waitFor(server.stderr, /connected/);
  const talker = run(['connect', '127.0.0.1', port], 'relayed\n');
  assert.equal(await talker.exit, 0);
  await waitFor(listener.stdout, /relayed\n/);
  assert.equal(talker.stdout(), '', 'the sender does not get its own message back');
  listener.child.stdin!.end();
  assert.equal(await listener.exit, 0);
  server.child.kill('SIGTERM');
  await server.exit;
});

test('IPv6 loopback round trip, encrypted', { timeout: 15000 }, async () => {
  const { server, port } = await startServer(['--echo', '--encrypt', '--token', 'six'], '::1');
  const client = run(['connect', '::1', port, '--encrypt', '--token', 'six'], 'over six\n');
  assert.equal(await client.exit, 0);
  assert.equal(client.stdout(), 'over six\n');
  server.child.kill('SIGTERM');
  await server.exit;
});

test('a wrong token fails with exit code 1 and says so', { timeout: 15000 }, async () => {
  const { server, port } = await startServer(['--token', 'right']);
  const client = run(['connect', '127.0.0.1', port, '--token', 'wrong'], 'x\n');
  assert.equal(await client.exit, 1);
  assert.match(client.stderr(), /token/);
  await waitFor(server.stderr, /bad token/);
  server.child.kill('SIGTERM');
  await server.exit;
});

test('connect --classic speaks the Lua UDPIPE protocol to serve --classic', { timeout: 15000 }, async () => {
  const { server, port } = await startServer(['--echo', '--classic', '--token', 'lua']);
  const client = run(['connect', '127.0.0.1', port, '--classic', '--token', 'lua'], 'PING\nhello classic\n');
  assert.equal(await client.exit, 1, 'a line that is a control word is skipped, and the exit code says so');
  assert.equal(client.stdout(), 'hello classic\n');
  assert.match(client.stderr(), /line 1 skipped: .*control word/);
  server.child.kill('SIGTERM');
  await server.exit;
});

test('relaying a line a classic client cannot take (a control word) skips that client and keeps the server up', {
  timeout: 15000,
}, async () => {
  const { server, port } = await startServer(['--classic']);
  const listener = run(['connect', '127.0.0.1', port, '--classic']);
  await waitFor(listener.stderr, /connected to/);
  const talker = run(['connect', '127.0.0.1', port], 'PING\nafter\n');
  assert.equal(await talker.exit, 0);
  await waitFor(listener.stdout, /after\n/);
  assert.equal(listener.stdout(), 'after\n');
  await waitFor(server.stderr, /not relayed to .*control word/);
  listener.child.stdin!.end();
  assert.equal(await listener.exit, 0);
  server.child.kill('SIGTERM');
  assert.equal(await server.exit, 0, 'the server was still running');
});

test('finding 9: serve and serve --encrypt refuse classic clients unless --classic is given too', { timeout: 20000 }, async () => {
  for (const args of [[], ['--encrypt']]) {
    const { server, port } = await startServer(args);
    const client = run(['connect', '127.0.0.1', port, '--classic', '--timeout', '1'], 'x\n');
    assert.equal(await client.exit, 1, `serve ${args.join(' ')}: the classic client gets no answer`);
    server.child.kill('SIGTERM');
    await server.exit;
  }
  const { server, port } = await startServer(['--encrypt', '--classic', '--echo']);
  const client = run(['connect', '127.0.0.1', port, '--classic'], 'both asked for\n');
  assert.equal(await client.exit, 0);
  assert.equal(client.stdout(), 'both asked for\n');
  server.child.kill('SIGTERM');
  await server.exit;
});

test('--encrypt on one side only: exit code 1 with a message naming the option', { timeout: 15000 }, async () => {
  const { server, port } = await startServer(['--encrypt']);
  const client = run(['connect', '127.0.0.1', port], 'x\n');
  assert.equal(await client.exit, 1);
  assert.match(client.stderr(), /requires encryption.*--encrypt/);
  await waitFor(server.stderr, /encryption/);
  server.child.kill('SIGTERM');
  await server.exit;
});

test('nobody listening: exit code 1 after --timeout', { timeout: 15000 }, async () => {
  // Find a port that is free right now by binding and releasing it.
  const probe = run(['serve', '--port', '0', '--host', '127.0.0.1']);
  const port = (await waitFor(probe.stderr, /listening on \S+:(\d+)/))[1]!;
  probe.child.kill('SIGKILL');
  await probe.exit;
  const started = Date.now();
  const client = run(['connect', '127.0.0.1', port, '--timeout', '1'], '');
  assert.equal(await client.exit, 1);
  assert.match(client.stderr(), /connect timeout/);
  assert.ok(Date.now() - started < 8000);
});

test('usage: --help exits 0, bad arguments exit 2', { timeout: 15000 }, async () => {
  const help = run(['--help']);
  assert.equal(await help.exit, 0);
  assert.match(help.stdout(), /usage: udpipe/);
  const serveHelp = run(['serve', '--help']);
  assert.equal(await serveHelp.exit, 0);
  for (const args of [
    [],
    ['bogus'],
    ['serve', '--port', 'x'],
    ['serve', '--nope'],
    ['connect', '127.0.0.1'],
    ['connect', '127.0.0.1', '70000'],
  ]) {
    const r = run(args);
    assert.equal(await r.exit, 2, `udpipe ${args.join(' ')}`);
    assert.match(r.stderr(), /udpipe --help/);
  }
  const v = run(['--version']);
  assert.equal(await v.exit, 0);
  assert.match(v.stdout(), /^\d+\.\d+\.\d+\n$/);
});

test('a long line travels as one message in parts; one over maxMessageSize is refused', { timeout: 20000 }, async () => {
  const { server, port } = await startServer(['--echo']);
  const long = 'x'.repeat(5000);
  const client = run(['connect', '127.0.0.1', port], `before\n${long}\nafter\n`);
  assert.equal(await client.exit, 0);
  assert.equal(client.stdout(), `before\n${long}\nafter\n`);
  const huge = run(['connect', '127.0.0.1', port], `${'y'.repeat(16 * 1024 * 1024 + 1)}\nsmall\n`);
  assert.equal(await huge.exit, 1);
  assert.match(huge.stderr(), /line 1 skipped: message of 16777217 bytes exceeds maxMessageSize/);
  assert.equal(huge.stdout(), 'small\n');
  server.child.kill('SIGTERM');
  await server.exit;
});
