/**
 * Two network namespaces joined by a veth pair, for real-kernel fault tests
 * (test/fault.test.ts). Everything is created inside the namespaces (the veth ends are
 * created directly in them), so nothing in the machine's own namespace is touched, and
 * deleting the namespaces deletes everything else. Names carry the creating process id
 * (udpf<pid><n>a/b), so leftovers of a crashed run can be found and deleted: cleanupLeftovers()
 * removes those whose process is gone. Impairments are nftables tables, applied with nft()
 * and removed with nftDelete(). Importing this module does nothing.
 */
import { spawnSync } from 'node:child_process';

export const PREFIX = 'udpf';

function run(cmd: string, args: string[], input?: string): { status: number; stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, { input, encoding: 'utf8', timeout: 10_000 });
  return { status: r.status ?? -1, stdout: r.stdout ?? '', stderr: (r.stderr ?? '') + (r.error ? String(r.error) : '') };
}

function must(cmd: string, args: string[], input?: string): string {
  const r = run(cmd, args, input);
  if (r.status !== 0)
    throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr.trim()}${input ? `\ninput:\n${input}` : ''}`);
  return r.stdout;
}

/** Why namespaces cannot be used here, or undefined when they can. */
export function unavailable(): string | undefined {
  if (process.platform !== 'linux') return 'not Linux';
  if (typeof process.getuid === 'function' && process.getuid() !== 0) return 'not root (network namespaces and nftables need root)';
  if (run('ip', ['-V']).status !== 0) return '`ip` (iproute2) not installed (apt-get install iproute2)';
  if (run('nft', ['--version']).status !== 0) return '`nft` not installed (apt-get install nftables)';
  if (run('tc', ['-V']).status !== 0) return '`tc` (iproute2) not installed (apt-get install iproute2)';
  if (run('ip', ['netns', 'list']).status !== 0) return '`ip netns` does not work here';
  return undefined;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as { code?: string }).code === 'EPERM';
  }
}

/** Deletes namespaces (and any stray veth in the root namespace) left by runs whose process is gone. */
export function cleanupLeftovers(): string[] {
  const removed: string[] = [];
  const re = new RegExp(`^${PREFIX}(\\d+)x(\\d+)[ab]$`);
  for (const line of run('ip', ['netns', 'list']).stdout.split('\n')) {
    const name = line.split(' ')[0] ?? '';
    const m = re.exec(name);
    if (!m || (Number(m[1]) !== process.pid && alive(Number(m[1])))) continue;
    if (run('ip', ['netns', 'del', name]).status === 0) removed.push(name);
  }
  const links = run('ip', ['-o', 'link', 'show']).stdout;
  for (const m of links.matchAll(new RegExp(`^\\d+: (${PREFIX}(\\d+)x\\d+v[ab])[@:]`, 'gm'))) {
    if (Number(m[2]) !== process.pid && alive(Number(m[2]))) continue;
    if (run('ip', ['link', 'del', m[1]!]).status === 0) removed.push(m[1]!);
  }
  return removed;
}

let counter = 0;

/**
 * ns a (`server` side) has `a.addr` on veth `a.dev`; ns b (`client` side) has `b.addr` on
 * `b.dev`, and `b.alt` can be added as a second address (addAltAddress) for address
 * rebinding. Subnet 10.254.77.0/24, inside the namespaces only.
 */
export class NetPair {
  readonly a: { ns: string; dev: string; addr: string };
  readonly b: { ns: string; dev: string; addr: string; alt: string };
  private destroyed = false;

  private constructor(id: string) {
    this.a = { ns: `${id}a`, dev: `${id}va`, addr: '10.254.77.1' };
    this.b = { ns: `${id}b`, dev: `${id}vb`, addr: '10.254.77.2', alt: '10.254.77.3' };
  }

  static create(): NetPair {
    const p = new NetPair(`${PREFIX}${process.pid}x${counter++}`);
    try {
      must('ip', ['netns', 'add', p.a.ns]);
      must('ip', ['netns', 'add', p.b.ns]);
      must('ip', ['link', 'add', p.a.dev, 'netns', p.a.ns, 'type', 'veth', 'peer', 'name', p.b.dev, 'netns', p.b.ns]);
      for (const side of [p.a, p.b]) {
        must('ip', ['-n', side.ns, 'addr', 'add', `${side.addr}/24`, 'dev', side.dev]);
        must('ip', ['-n', side.ns, 'link', 'set', side.dev, 'up']);
        must('ip', ['-n', side.ns, 'link', 'set', 'lo', 'up']);
      }
    } catch (err) {
      p.destroy();
      throw err;
    }
    return p;
  }

  /** Runs `nft -f -` in a namespace with the given ruleset text. */
  nft(ns: string, ruleset: string): void {
    must('ip', ['netns', 'exec', ns, 'nft', '-f', '-'], ruleset);
  }

  /** Deletes a table (family and name, e.g. 'inet blackhole'); absent is fine. */
  nftDelete(ns: string, table: string): void {
    run('ip', ['netns', 'exec', ns, 'nft', 'delete', 'table', ...table.split(' ')]);
  }

  /** The table's ruleset, with counters. */
  nftList(ns: string): string {
    return run('ip', ['netns', 'exec', ns, 'nft', 'list', 'ruleset']).stdout;
  }

  /** Sum of the packets counted by the `counter` statements of a namespace's rules whose text contains `tag` (a comment). */
  counted(ns: string, tag: string): number {
    let n = 0;
    for (const line of this.nftList(ns).split('\n')) {
      if (!line.includes(tag)) continue;
      const m = /counter packets (\d+)/.exec(line);
      if (m) n += Number(m[1]);
    }
    return n;
  }

  /** Runs `tc` inside a namespace (for a qdisc such as tbf, a bottleneck). */
  tc(ns: string, args: string[]): void {
    must('ip', ['netns', 'exec', ns, 'tc', ...args]);
  }

  /** Packets a device's root qdisc dropped (`tc -s qdisc show`'s "dropped"). */
  qdiscDrops(ns: string, dev: string): number {
    const out = must('ip', ['netns', 'exec', ns, 'tc', '-s', 'qdisc', 'show', 'dev', dev]);
    return Number(/dropped (\d+)/.exec(out)?.[1] ?? 0);
  }

  addAltAddress(): void {
    must('ip', ['-n', this.b.ns, 'addr', 'add', `${this.b.alt}/24`, 'dev', this.b.dev]);
  }

  /** The command line that runs `args` inside a namespace. */
  exec(ns: string, args: string[]): [string, string[]] {
    return ['ip', ['netns', 'exec', ns, ...args]];
  }

  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    for (const ns of [this.a.ns, this.b.ns]) run('ip', ['netns', 'del', ns]);
  }
}
