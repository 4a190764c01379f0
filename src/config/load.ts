// Server.conf parser (PROTOCOL.md §10): blocks `NAME={` ... `}`, one `key=value` per line, `//` comments,
// empty values mean "default". Environment variables `P2PC_<BLOCK>_<KEY>` override single keys.
// An unknown key or a bad value throws a ConfigError naming the line.

import { readFileSync } from 'node:fs';
import { type BlockName, type Config, type ConfigOverrides, type KeyDef, SCHEMA } from './schema.ts';

export class ConfigError extends Error {
  readonly code = 'ERR_CONFIG';
}

type Mutable = Record<string, Record<string, unknown>>;

const blockIndex = new Map<string, BlockName>();
const keyIndex = new Map<string, string>(); // "BLOCK.KEY" upper-cased -> canonical key
for (const block of Object.keys(SCHEMA) as BlockName[]) {
  blockIndex.set(block.toUpperCase(), block);
  for (const key of Object.keys(SCHEMA[block])) keyIndex.set(`${block.toUpperCase()}.${key.toUpperCase()}`, key);
}

function keyDef(block: BlockName, key: string): KeyDef {
  return (SCHEMA[block] as Record<string, KeyDef>)[key]!;
}

/** Converts a textual value to the key's type, or throws a message (without location). */
export function convertValue(def: KeyDef, raw: string): unknown {
  const text = raw.trim();
  switch (def.type) {
    case 'string':
      return text;
    case 'bool': {
      const v = text.toLowerCase();
      if (v === 'true' || v === '1' || v === 'yes' || v === 'on') return true;
      if (v === 'false' || v === '0' || v === 'no' || v === 'off') return false;
      throw new Error(`expected true or false, got "${text}"`);
    }
    case 'int':
    case 'number': {
      const n = Number(text);
      if (text === '' || !Number.isFinite(n)) throw new Error(`expected a number, got "${text}"`);
      if (def.type === 'int' && !Number.isInteger(n)) throw new Error(`expected a whole number, got "${text}"`);
      checkRange(def, n);
      return n;
    }
    case 'levels': {
      const parts = text.split(',').map((p) => p.trim());
      if (parts.length !== 4) throw new Error(`expected four comma-separated numbers (levels 1..4), got "${text}"`);
      const out = parts.map((p) => {
        const n = Number(p);
        if (p === '' || !Number.isInteger(n) || n < 0) throw new Error(`expected whole numbers ≥ 0, got "${text}"`);
        return n;
      });
      return Object.freeze(out);
    }
  }
}

function checkRange(def: KeyDef, n: number): void {
  if (def.min !== undefined && n < def.min) throw new Error(`must be at least ${def.min}, got ${n}`);
  if (def.max !== undefined && n > def.max) throw new Error(`must be at most ${def.max}, got ${n}`);
}

function defaults(): Mutable {
  const out: Mutable = {};
  for (const block of Object.keys(SCHEMA) as BlockName[]) {
    const b: Record<string, unknown> = {};
    for (const [key, def] of Object.entries(SCHEMA[block] as Record<string, KeyDef>)) b[key] = def.def;
    out[block] = b;
  }
  return out;
}

/** Strips a `//` comment that starts the line or follows white space (so `http://x` survives). */
function stripComment(line: string): string {
  let from = 0;
  for (;;) {
    const i = line.indexOf('//', from);
    if (i < 0) return line;
    if (i === 0 || /\s/.test(line[i - 1]!)) return line.slice(0, i);
    from = i + 2;
  }
}

/** Parses Server.conf text into `target`; `source` names the file in errors. */
export function parseConfText(text: string, source: string, target: Mutable = defaults()): Mutable {
  const lines = text.split(/\r?\n/);
  let block: BlockName | null = null;
  let blockLine = 0;
  for (let n = 0; n < lines.length; n++) {
    const where = `${source}:${n + 1}`;
    const line = stripComment(lines[n]!).trim();
    if (line === '') continue;
    if (block === null) {
      const m = /^([A-Za-z_][A-Za-z0-9_]*)\s*=\s*\{$/.exec(line);
      if (!m) throw new ConfigError(`${where}: expected a block start like "NODE={", got "${line}"`);
      const name = blockIndex.get(m[1]!.toUpperCase());
      if (!name) throw new ConfigError(`${where}: unknown block "${m[1]}" (known: ${Object.keys(SCHEMA).join(', ')})`);
      block = name;
      blockLine = n + 1;
      continue;
    }
    if (line === '}') {
      block = null;
      continue;
    }
    const eq = line.indexOf('=');
    if (eq <= 0) throw new ConfigError(`${where}: expected key=value in block ${block}, got "${line}"`);
    const rawKey = line.slice(0, eq).trim();
    const key = keyIndex.get(`${block.toUpperCase()}.${rawKey.toUpperCase()}`);
    if (!key) throw new ConfigError(`${where}: unknown key "${rawKey}" in block ${block}`);
    const raw = line.slice(eq + 1);
    if (raw.trim() === '') {
      target[block]![key] = keyDef(block, key).def; // empty value: the default
      continue;
    }
    try {
      target[block]![key] = convertValue(keyDef(block, key), raw);
    } catch (err) {
      throw new ConfigError(`${where}: ${block}.${key}: ${(err as Error).message}`);
    }
  }
  if (block !== null) throw new ConfigError(`${source}:${blockLine}: block ${block} is not closed with "}"`);
  return target;
}

/** Applies `P2PC_<BLOCK>_<KEY>` variables. Unknown P2PC_ variables are errors too. */
export function applyEnv(target: Mutable, env: NodeJS.ProcessEnv): void {
  for (const [name, value] of Object.entries(env)) {
    if (!name.toUpperCase().startsWith('P2PC_') || value === undefined) continue;
    const rest = name.slice(5).toUpperCase();
    const sep = rest.indexOf('_');
    const block = sep > 0 ? blockIndex.get(rest.slice(0, sep)) : undefined;
    const key = block ? keyIndex.get(`${block.toUpperCase()}.${rest.slice(sep + 1)}`) : undefined;
    if (!block || !key) throw new ConfigError(`environment ${name}: no such configuration key`);
    if (value.trim() === '') {
      target[block]![key] = keyDef(block, key).def;
      continue;
    }
    try {
      target[block]![key] = convertValue(keyDef(block, key), value);
    } catch (err) {
      throw new ConfigError(`environment ${name}: ${block}.${key}: ${(err as Error).message}`);
    }
  }
}

function applyOverrides(target: Mutable, overrides: ConfigOverrides): void {
  for (const [block, keys] of Object.entries(overrides)) {
    const b = blockIndex.get(block.toUpperCase());
    if (!b) throw new ConfigError(`override: unknown block "${block}"`);
    for (const [k, v] of Object.entries(keys as Record<string, unknown>)) {
      const key = keyIndex.get(`${b.toUpperCase()}.${k.toUpperCase()}`);
      if (!key) throw new ConfigError(`override: unknown key "${block}.${k}"`);
      if (v === undefined) continue;
      try {
        target[b]![key] = convertValue(keyDef(b, key), Array.isArray(v) ? v.join(',') : String(v));
      } catch (err) {
        throw new ConfigError(`override ${b}.${key}: ${(err as Error).message}`);
      }
    }
  }
}

function freeze(c: Mutable): Config {
  for (const b of Object.values(c)) Object.freeze(b);
  return Object.freeze(c) as unknown as Config;
}

export interface LoadOptions {
  /** Path of a Server.conf; missing file is an error only when given explicitly. */
  file?: string | undefined;
  /** Default file read when `file` is not given and it exists. */
  defaultFile?: string | undefined;
  env?: NodeJS.ProcessEnv | undefined;
  overrides?: ConfigOverrides | undefined;
}

/** Defaults, then the file, then the environment, then explicit overrides. */
export function loadConfig(opts: LoadOptions = {}): Config {
  const c = defaults();
  const path = opts.file ?? opts.defaultFile;
  if (path !== undefined) {
    let text: string | undefined;
    try {
      text = readFileSync(path, 'latin1');
    } catch (err) {
      if (opts.file !== undefined) throw new ConfigError(`${path}: cannot read: ${(err as Error).message}`);
    }
    if (text !== undefined) parseConfText(text, path, c);
  }
  if (opts.env) applyEnv(c, opts.env);
  if (opts.overrides) applyOverrides(c, opts.overrides);
  return freeze(c);
}

/** The documented default Server.conf, generated from the schema. */
export function renderDefaultConf(): string {
  const out: string[] = [
    '// P2Pcluster configuration (PROTOCOL.md §10). Every key with its default.',
    '// Empty value = default. Environment variables P2PC_<BLOCK>_<KEY> override single keys.',
  ];
  for (const block of Object.keys(SCHEMA) as BlockName[]) {
    out.push('', `${block}={`);
    for (const [key, def] of Object.entries(SCHEMA[block] as Record<string, KeyDef>)) {
      const v = Array.isArray(def.def) ? def.def.join(',') : String(def.def);
      out.push(`  // ${def.doc}`, `  ${key}=${v}`);
    }
    out.push('}');
  }
  return `${out.join('\n')}\n`;
}

/** docs/configuration.md: every key, its default and what it does, as a Markdown table per block. */
export function renderConfigDoc(): string {
  const out: string[] = [
    '# Configuration reference',
    '',
    'Every key of `config/Server.conf` with its default (generated from `src/config/schema.ts` by',
    '`npx p2pcluster config --markdown`; a test keeps this file equal to it). An empty value means the default;',
    '`P2PC_<BLOCK>_<KEY>` environment variables override single keys (`P2PC_PSERVER_SERVERPORT=9000`). Plan-level keys',
    '(`USER.*` lists) give one value per plan level 1..4.',
  ];
  const cell = (text: string): string => text.replace(/\|/g, '\\|');
  for (const block of Object.keys(SCHEMA) as BlockName[]) {
    out.push('', `## ${block}`, '', '| key | default | meaning |', '|---|---|---|');
    for (const [key, def] of Object.entries(SCHEMA[block] as Record<string, KeyDef>)) {
      const v = Array.isArray(def.def) ? def.def.join(',') : String(def.def);
      out.push(`| \`${block}.${key}\` | ${v === '' ? '(empty)' : `\`${v}\``} | ${cell(def.doc)} |`);
    }
  }
  return `${out.join('\n')}\n`;
}
