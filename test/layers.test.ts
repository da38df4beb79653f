/**
 * Keeps the architecture true (docs/ARCHITECTURE.md): each layer imports only the
 * layers before it, and the sans-I/O layers touch no Node module, timer, clock or
 * randomness.
 */
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const SRC = resolve(dirname(fileURLToPath(import.meta.url)), '../../src');
const ORDER = ['errors.ts', 'wire', 'reliability', 'congestion', 'crypto', 'protocol', 'transport', 'testing', 'api', 'index.ts', 'cli'];
/** testing and transport are siblings: the simulator implements the transport interface. */
const RANK: Record<string, number> = {
  'errors.ts': 0,
  wire: 1,
  reliability: 2,
  congestion: 3,
  crypto: 4,
  protocol: 5,
  transport: 6,
  testing: 6,
  api: 7,
  'index.ts': 8,
  cli: 9,
};
const PURE = new Set(['wire', 'reliability', 'congestion', 'protocol']);

function files(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? files(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
  );
}

const layerOf = (file: string): string => relative(SRC, file).split('/')[0]!;

test('every source file belongs to a known layer', () => {
  for (const f of files(SRC)) assert.ok(ORDER.includes(layerOf(f)), `${relative(SRC, f)} is in no layer of docs/ARCHITECTURE.md`);
});

test('layers import only layers before them (testing and transport share a rank)', () => {
  for (const f of files(SRC)) {
    const from = layerOf(f);
    const src = readFileSync(f, 'utf8');
    for (const m of src.matchAll(/from '(\.[^']+)'/g)) {
      const target = layerOf(resolve(dirname(f), m[1]!.replace(/\.js$/, '.ts')));
      if (target === from) continue;
      assert.ok(
        RANK[target]! < RANK[from]! || (from === 'testing' && target === 'transport'),
        `${relative(SRC, f)} (${from}) imports ${m[1]} (${target})`,
      );
    }
  }
});

test('the sans-I/O layers use no node module, timer, clock or randomness', () => {
  for (const f of files(SRC)) {
    if (!PURE.has(layerOf(f))) continue;
    const src = readFileSync(f, 'utf8').replace(/\/\*[\s\S]*?\*\/|\/\/.*$/gm, '');
    for (const bad of [
      /from 'node:/,
      /\bsetTimeout\(/,
      /\bsetInterval\(/,
      /\bsetImmediate\(/,
      /Date\.now\(/,
      /performance\.now\(/,
      /Math\.random\(/,
      /\bprocess\./,
    ]) {
      assert.doesNotMatch(src, bad, `${relative(SRC, f)} uses ${bad}`);
    }
  }
});
