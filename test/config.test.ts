// Server.conf (PROTOCOL.md §10): blocks `NAME={` ... `}`, one key=value per line, whitespace ignored, `//` comments,
// empty values mean "default", env overrides P2PC_<BLOCK>_<KEY>, unknown keys and bad values stop start-up naming the line.

import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import {
  applyEnv,
  ConfigError,
  convertValue,
  loadConfig,
  parseConfText,
  renderConfigDoc,
  renderDefaultConf,
} from '../src/config/load.ts';
import {
  type BlockName,
  type KeyDef,
  MAX_SLOTS_PER_SHARD,
  MAX_WORKERS,
  planValue,
  SCHEMA,
  shardCount,
} from '../src/config/schema.ts';

const CONF_PATH = join(import.meta.dirname, '..', 'config', 'Server.conf');

const dir = mkdtempSync(join(tmpdir(), 'p2pc-config-test-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let fileNo = 0;
function confFile(text: string): string {
  const p = join(dir, `test-${fileNo++}.conf`);
  writeFileSync(p, text, 'latin1');
  return p;
}

type Mutable = Record<string, Record<string, unknown>>;

function defaultsObject(): Mutable {
  const out: Mutable = {};
  for (const [block, keys] of Object.entries(SCHEMA)) {
    out[block] = {};
    for (const [key, def] of Object.entries(keys as Record<string, KeyDef>)) {
      out[block][key] = Array.isArray(def.def) ? [...def.def] : def.def;
    }
  }
  return out;
}

/** Parses text; returns the parsed object (defaults + file). */
const parse = (text: string, source = 'Server.conf'): Mutable => parseConfText(text, source);

/** The ConfigError message of a parse, or a marker when it did not throw. */
function parseError(text: string, source = 'test.conf'): string {
  try {
    parseConfText(text, source);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).code).toBe('ERR_CONFIG');
    return (err as Error).message;
  }
  return '<no error>';
}

function envError(env: NodeJS.ProcessEnv): string {
  try {
    applyEnv(defaultsObject(), env);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
  return '<no error>';
}

describe('parsing the block format', () => {
  it('reads blocks and keys; everything else stays at its default', () => {
    const c = parse('PServer={\nServerPort=9000\nMAXLOAD=5\n}\nNODE={\nMAX_LINE=128\n}\n');
    const want = defaultsObject();
    want.PServer!.ServerPort = 9000;
    want.PServer!.MAXLOAD = 5;
    want.NODE!.MAX_LINE = 128;
    expect(c).toEqual(want);
  });

  it('ignores white space around names, = and values, blank lines, tabs and CRLF', () => {
    const c = parse(
      '\r\n  \tPServer  =  {  \r\n\t ServerPort \t=\t 9001 \r\n\r\n   }  \r\nSTORE={\r\n PATH =  /var/lib/p2p  \r\n}\r\n',
    );
    expect(c.PServer!.ServerPort).toBe(9001);
    expect(c.STORE!.PATH).toBe('/var/lib/p2p');
  });

  it('// starts a comment at line start or after white space; http://x is kept', () => {
    const c = parse(
      [
        '// header comment',
        'PServer={ // the device port block',
        '  // ServerPort=1',
        '  ServerPort=9002 // trailing comment',
        '  DNS=http://relay.example.org/x',
        '}',
        'EMAIL={',
        '  mail_smtp_host=smtp://mail.example.org:25 // with a comment',
        '}',
        '// trailing',
      ].join('\n'),
    );
    expect(c.PServer!.ServerPort).toBe(9002);
    expect(c.PServer!.DNS).toBe('http://relay.example.org/x');
    expect(c.EMAIL!.mail_smtp_host).toBe('smtp://mail.example.org:25');
  });

  it('an empty value means the default', () => {
    const c = parse(
      'PServer={\nServerPort=\nDNS=\n}\nSTORE={\nPATH=   \n}\nUSER={\n10MAXNODE=\n}\nEMAIL={\nmail_smtp_auth= // c\n}',
    );
    expect(c).toEqual(defaultsObject());
    expect(c.STORE!.PATH).toBe('./data');
  });

  it('block and key names are case-insensitive and stored under their canonical names', () => {
    const c = parse(
      'pserver={\nserverport=9003\nmaxLoad=7\n}\nnode={\nmax_line=100\n}\nemail={\nMAIL_SMTP_HOST=h\n}\nuser={\n10maxnode=1,2,3,4\n}',
    );
    expect(c.PServer!.ServerPort).toBe(9003);
    expect(c.PServer!.MAXLOAD).toBe(7);
    expect(c.NODE!.MAX_LINE).toBe(100);
    expect(c.EMAIL!.mail_smtp_host).toBe('h');
    expect(c.USER!['10MAXNODE']).toEqual([1, 2, 3, 4]);
    expect(Object.keys(c).sort()).toEqual(Object.keys(SCHEMA).sort());
    expect(Object.keys(c.PServer!).sort()).toEqual(Object.keys(SCHEMA.PServer).sort());
  });

  it('string values keep inner spaces, = and case', () => {
    const c = parse('EMAIL={\nPASSWORD= a=b C d \nUSERNAME=Me@X\n}');
    expect(c.EMAIL!.PASSWORD).toBe('a=b C d');
    expect(c.EMAIL!.USERNAME).toBe('Me@X');
  });

  it('a later line wins; a block may appear twice', () => {
    const c = parse('NODE={\nMAX_ID=10\n}\nNODE={\nMAX_ID=20\nDATA_CACHE=3\n}');
    expect(c.NODE!.MAX_ID).toBe(20);
    expect(c.NODE!.DATA_CACHE).toBe(3);
  });

  it('an empty text gives the defaults', () => {
    expect(parse('')).toEqual(defaultsObject());
    expect(parse('\n\n// only comments\n')).toEqual(defaultsObject());
  });
});

describe('errors name the file and the line', () => {
  it('unknown block', () => {
    expect(parseError('// c\nFOO={\nX=1\n}', 'a/Server.conf')).toBe(
      `a/Server.conf:2: unknown block "FOO" (known: ${Object.keys(SCHEMA).join(', ')})`,
    );
  });

  it('unknown key', () => {
    expect(parseError('NODE={\nMAX_LINE=100\nNOPE=1\n}')).toBe('test.conf:3: unknown key "NOPE" in block NODE');
  });

  it('a key of another block is unknown', () => {
    expect(parseError('NODE={\nServerPort=1\n}')).toBe('test.conf:2: unknown key "ServerPort" in block NODE');
  });

  it('bad value', () => {
    expect(parseError('\n\nPServer={\nServerPort=http\n}')).toBe(
      'test.conf:4: PServer.ServerPort: expected a number, got "http"',
    );
    expect(parseError('NODE={\n MAX_LINE = 1.5 \n}')).toBe(
      'test.conf:2: NODE.MAX_LINE: expected a whole number, got "1.5"',
    );
    expect(parseError('EMAIL={\nmail_smtp_auth=maybe\n}')).toBe(
      'test.conf:2: EMAIL.mail_smtp_auth: expected true or false, got "maybe"',
    );
  });

  it('unclosed block names the line that opened it', () => {
    expect(parseError('PServer={\n}\n\nNODE={\nMAX_ID=3\n')).toBe('test.conf:4: block NODE is not closed with "}"');
  });

  it('a key outside any block, or a line without =', () => {
    expect(parseError('ServerPort=9000')).toBe(
      'test.conf:1: expected a block start like "NODE={", got "ServerPort=9000"',
    );
    expect(parseError('NODE={\nMAX_LINE\n}')).toBe('test.conf:2: expected key=value in block NODE, got "MAX_LINE"');
    expect(parseError('NODE={\n=5\n}')).toBe('test.conf:2: expected key=value in block NODE, got "=5"');
    expect(parseError('}')).toBe('test.conf:1: expected a block start like "NODE={", got "}"');
  });

  it('line numbers count CRLF lines', () => {
    expect(parseError('NODE={\r\n\r\nMAX_ID=0\r\n}\r\n')).toBe('test.conf:3: NODE.MAX_ID: must be at least 1, got 0');
  });

  it('loadConfig names the real file path', () => {
    const p = confFile('NODE={\nMAX_ID=x\n}\n');
    expect(() => loadConfig({ file: p })).toThrow(new ConfigError(`${p}:2: NODE.MAX_ID: expected a number, got "x"`));
  });

  it('an explicit file that does not exist is an error; a missing default file is not', () => {
    const missing = join(dir, 'nope.conf');
    expect(() => loadConfig({ file: missing })).toThrow(ConfigError);
    expect(() => loadConfig({ file: missing })).toThrow(`${missing}: cannot read:`);
    expect(loadConfig({ defaultFile: missing })).toEqual(defaultsObject());
  });
});

describe('environment overrides P2PC_<BLOCK>_<KEY>', () => {
  it('PServer.WORKERS = 0 runs one shard per core but one, at least one; a number is taken as it is', () => {
    expect([1, 2, 3, 4, 8, 64].map((cores) => shardCount(0, cores))).toEqual([1, 1, 2, 3, 7, 63]);
    expect([shardCount(4, 2), shardCount(1, 64), shardCount(2, 2)]).toEqual([4, 1, 2]);
  });

  it('P2PC_PSERVER_SERVERPORT, P2PC_STORE_PATH, P2PC_PSERVER_WORKERS', () => {
    const c = loadConfig({
      env: { P2PC_PSERVER_SERVERPORT: '9000', P2PC_STORE_PATH: '/srv/p2p', P2PC_PSERVER_WORKERS: '4' },
    });
    expect(c.PServer.ServerPort).toBe(9000);
    expect(c.STORE.PATH).toBe('/srv/p2p');
    expect(c.PServer.WORKERS).toBe(4);
    const want = defaultsObject();
    want.PServer!.ServerPort = 9000;
    want.PServer!.WORKERS = 4;
    want.STORE!.PATH = '/srv/p2p';
    expect(c).toEqual(want);
  });

  it('keys containing underscores, lower-case keys and level lists', () => {
    const c = loadConfig({
      env: {
        P2PC_NODE_MAX_LINE: '8192',
        P2PC_EMAIL_MAIL_SMTP_HOST: 'smtp.example.org',
        P2PC_USER_10MAXNODE: '1,2,3,4',
        P2PC_NODE_WAIT_FOR_CMD: '2.5',
        P2PC_EMAIL_MAIL_SMTP_AUTH: 'off',
      },
    });
    expect(c.NODE.MAX_LINE).toBe(8192);
    expect(c.EMAIL.mail_smtp_host).toBe('smtp.example.org');
    expect(c.USER['10MAXNODE']).toEqual([1, 2, 3, 4]);
    expect(c.NODE.WAIT_FOR_CMD).toBe(2.5);
    expect(c.EMAIL.mail_smtp_auth).toBe(false);
  });

  it('other environment variables are ignored', () => {
    expect(loadConfig({ env: { PATH: '/bin', HOME: '/root', P2P_X: '1', XP2PC_NODE_MAX_ID: 'x' } })).toEqual(
      defaultsObject(),
    );
  });

  it('an unknown P2PC_ variable is an error naming it', () => {
    expect(envError({ P2PC_FOO_BAR: '1' })).toBe('environment P2PC_FOO_BAR: no such configuration key');
    expect(envError({ P2PC_NODE_NOPE: '1' })).toBe('environment P2PC_NODE_NOPE: no such configuration key');
    expect(envError({ P2PC_PSERVER: '1' })).toBe('environment P2PC_PSERVER: no such configuration key');
    expect(envError({ P2PC_: '1' })).toBe('environment P2PC_: no such configuration key');
    expect(envError({ P2PC_NODE_SERVERPORT: '1' })).toBe('environment P2PC_NODE_SERVERPORT: no such configuration key');
    expect(() => loadConfig({ env: { P2PC_TYPO: '1' } })).toThrow(ConfigError);
  });

  it('a bad value in the environment is an error naming the variable and key', () => {
    expect(envError({ P2PC_PSERVER_WORKERS: String(MAX_WORKERS + 1) })).toBe(
      `environment P2PC_PSERVER_WORKERS: PServer.WORKERS: must be at most ${MAX_WORKERS}, got ${MAX_WORKERS + 1}`,
    );
    expect(envError({ P2PC_PSERVER_SERVERPORT: 'eighty' })).toBe(
      'environment P2PC_PSERVER_SERVERPORT: PServer.ServerPort: expected a number, got "eighty"',
    );
  });

  it('precedence: defaults, then the file, then the environment, then overrides', () => {
    const p = confFile('PServer={\nServerPort=9100\nMAXLOAD=50\nVELOCITY=7\n}\n');
    const c = loadConfig({
      file: p,
      env: { P2PC_PSERVER_SERVERPORT: '9200', P2PC_PSERVER_MAXLOAD: '60' },
      overrides: { PServer: { ServerPort: 9300 } },
    });
    expect([c.PServer.ServerPort, c.PServer.MAXLOAD, c.PServer.VELOCITY, c.PServer.WORKERS]).toEqual([9300, 60, 7, 0]);
  });

  it('overrides are validated like the file', () => {
    expect(() => loadConfig({ overrides: { NODE: { MAX_LINE: 10 } } })).toThrow(
      new ConfigError('override NODE.MAX_LINE: must be at least 64, got 10'),
    );
    expect(() => loadConfig({ overrides: { NOPE: {} } as never })).toThrow(ConfigError);
    expect(loadConfig({ overrides: { USER: { '1TREE': [0, 1, 0, 1] } } }).USER['1TREE']).toEqual([0, 1, 0, 1]);
  });

  it('the loaded config is frozen', () => {
    const c = loadConfig({});
    expect(Object.isFrozen(c)).toBe(true);
    expect(Object.isFrozen(c.NODE)).toBe(true);
    expect(Object.isFrozen(c.USER['10MAXNODE'])).toBe(true);
  });
});

describe('values', () => {
  const def = (block: BlockName, key: string): KeyDef => (SCHEMA[block] as Record<string, KeyDef>)[key]!;
  const conv = (block: BlockName, key: string, raw: string): unknown => convertValue(def(block, key), raw);
  const convErr = (block: BlockName, key: string, raw: string): string => {
    try {
      conv(block, key, raw);
    } catch (err) {
      return (err as Error).message;
    }
    return '<no error>';
  };

  it('levels: four comma-separated whole numbers ≥ 0, spaces allowed', () => {
    expect(conv('USER', '10MAXNODE', '1,2,3,4')).toEqual([1, 2, 3, 4]);
    expect(conv('USER', '10MAXNODE', ' 0 , 10,100 ,  1000000 ')).toEqual([0, 10, 100, 1000000]);
    expect(Object.isFrozen(conv('USER', '1TREE', '1,1,1,1'))).toBe(true);
    for (const bad of ['1,2,3', '1,2,3,4,5', '1,,3,4', '1,-1,3,4', '1,a,3,4', '1.5,2,3,4', '', ',,,']) {
      expect(convErr('USER', '10MAXNODE', bad)).not.toBe('<no error>');
    }
    expect(convErr('USER', '10MAXNODE', '1,2,3')).toBe(
      'expected four comma-separated numbers (levels 1..4), got "1,2,3"',
    );
    expect(convErr('USER', '10MAXNODE', '1,-1,3,4')).toBe('expected whole numbers ≥ 0, got "1,-1,3,4"');
  });

  it('levels in a file', () => {
    const c = parse('USER={\n1TREE=0,0,1,1\n4HOLDPUSH = 1, 1, 1, 1\n}');
    expect(c.USER!['1TREE']).toEqual([0, 0, 1, 1]);
    expect(c.USER!['4HOLDPUSH']).toEqual([1, 1, 1, 1]);
    expect(parseError('USER={\n2NODEPERTREE=1,2\n}')).toBe(
      'test.conf:2: USER.2NODEPERTREE: expected four comma-separated numbers (levels 1..4), got "1,2"',
    );
  });

  it('planValue reads level 1..4 and clamps outside', () => {
    const l = [10, 20, 30, 40];
    expect([1, 2, 3, 4].map((n) => planValue(l, n))).toEqual([10, 20, 30, 40]);
    expect(planValue(l, 0)).toBe(10);
    expect(planValue(l, 9)).toBe(40);
  });

  it('min/max bounds are inclusive', () => {
    expect(conv('NODE', 'MAX_LINE', '64')).toBe(64);
    expect(convErr('NODE', 'MAX_LINE', '63')).toBe('must be at least 64, got 63');
    expect(conv('NODE', 'MAX_LINE', String(16 * 1024 * 1024))).toBe(16 * 1024 * 1024);
    expect(convErr('NODE', 'MAX_LINE', String(16 * 1024 * 1024 + 1))).toBe(
      `must be at most ${16 * 1024 * 1024}, got ${16 * 1024 * 1024 + 1}`,
    );
    expect(conv('PServer', 'ServerPort', '0')).toBe(0);
    expect(conv('PServer', 'ServerPort', '65535')).toBe(65535);
    expect(convErr('PServer', 'ServerPort', '65536')).toBe('must be at most 65535, got 65536');
    expect(convErr('PServer', 'ServerPort', '-1')).toBe('must be at least 0, got -1');
    expect(conv('PServer', 'MAXLOAD', String(MAX_SLOTS_PER_SHARD))).toBe(MAX_SLOTS_PER_SHARD);
    expect(convErr('PServer', 'MAXLOAD', String(MAX_SLOTS_PER_SHARD + 1))).toBe(
      `must be at most ${MAX_SLOTS_PER_SHARD}, got ${MAX_SLOTS_PER_SHARD + 1}`,
    );
    expect(convErr('PServer', 'MAXLOAD', '0')).toBe('must be at least 1, got 0');
    expect(conv('PServer', 'WORKERS', String(MAX_WORKERS))).toBe(MAX_WORKERS);
    expect(conv('NODE', 'WAIT_FOR_CMD', '0.01')).toBe(0.01);
    expect(convErr('NODE', 'WAIT_FOR_CMD', '0.001')).toBe('must be at least 0.01, got 0.001');
    expect(conv('USER', 'DEFAULT_LEVEL', '1')).toBe(1);
    expect(convErr('USER', 'DEFAULT_LEVEL', '5')).toBe('must be at most 4, got 5');
    expect(convErr('USER', 'SIGNUP_LEVEL', '0')).toBe('must be at least 1, got 0');
  });

  it('numbers: not a number, not finite, fractions for ints', () => {
    expect(convErr('NODE', 'MAX_ID', 'abc')).toBe('expected a number, got "abc"');
    expect(convErr('NODE', 'MAX_ID', 'Infinity')).toBe('expected a number, got "Infinity"');
    expect(convErr('NODE', 'MAX_ID', 'NaN')).toBe('expected a number, got "NaN"');
    expect(convErr('NODE', 'MAX_ID', '1 0')).toBe('expected a number, got "1 0"');
    expect(convErr('NODE', 'MAX_ID', '2.5')).toBe('expected a whole number, got "2.5"');
    expect(conv('NODE', 'COM_CHK', '2.5')).toBe(2.5);
    expect(conv('NODE', 'MAX_ID', ' 12 ')).toBe(12);
  });

  it('booleans', () => {
    for (const t of ['true', 'TRUE', '1', 'yes', 'On']) expect(conv('EMAIL', 'mail_smtp_auth', t)).toBe(true);
    for (const f of ['false', 'False', '0', 'no', 'OFF']) expect(conv('EMAIL', 'mail_smtp_auth', f)).toBe(false);
    expect(convErr('EMAIL', 'mail_smtp_auth', '2')).toBe('expected true or false, got "2"');
  });

  it('property: every int key accepts its bounds and rejects just outside', () => {
    for (const [block, keys] of Object.entries(SCHEMA) as [BlockName, Record<string, KeyDef>][]) {
      for (const [key, d] of Object.entries(keys)) {
        if (d.type !== 'int') continue;
        if (d.min !== undefined) {
          expect(conv(block, key, String(d.min))).toBe(d.min);
          expect(convErr(block, key, String(d.min - 1))).toBe(`must be at least ${d.min}, got ${d.min - 1}`);
        }
        if (d.max !== undefined) {
          expect(conv(block, key, String(d.max))).toBe(d.max);
          expect(convErr(block, key, String(d.max + 1))).toBe(`must be at most ${d.max}, got ${d.max + 1}`);
        }
      }
    }
  });

  it('property: arbitrary text never throws anything but ConfigError', () => {
    const piece = fc.oneof(
      fc.constantFrom('NODE={', 'PServer = {', '}', 'MAX_ID=', 'ServerPort=1', '//', ' ', '\n', '\r\n', '=', '{', 'x'),
      fc.string({ maxLength: 8 }),
    );
    fc.assert(
      fc.property(fc.array(piece, { maxLength: 20 }), (parts) => {
        try {
          parseConfText(parts.join(''), 'f.conf');
        } catch (err) {
          expect(err).toBeInstanceOf(ConfigError);
          expect((err as Error).message.startsWith('f.conf:')).toBe(true);
        }
      }),
      { numRuns: 2000 },
    );
  });
});

describe('the schema and the committed config/Server.conf', () => {
  const entries = (): [BlockName, string, KeyDef][] =>
    (Object.entries(SCHEMA) as [BlockName, Record<string, KeyDef>][]).flatMap(([b, keys]) =>
      Object.entries(keys).map(([k, d]): [BlockName, string, KeyDef] => [b, k, d]),
    );

  it('every key has a default of its type, within its bounds, and a doc', () => {
    expect(entries().length).toBeGreaterThan(30);
    for (const [block, key, d] of entries()) {
      const where = `${block}.${key}`;
      expect({ where, hasDef: d.def !== undefined }).toEqual({ where, hasDef: true });
      expect({ where, doc: typeof d.doc === 'string' && d.doc.trim().length > 0 }).toEqual({ where, doc: true });
      switch (d.type) {
        case 'int':
        case 'number': {
          expect({ where, t: typeof d.def }).toEqual({ where, t: 'number' });
          const n = d.def as number;
          if (d.type === 'int') expect({ where, int: Number.isInteger(n) }).toEqual({ where, int: true });
          if (d.min !== undefined) expect(n).toBeGreaterThanOrEqual(d.min);
          if (d.max !== undefined) expect(n).toBeLessThanOrEqual(d.max);
          break;
        }
        case 'bool':
          expect({ where, t: typeof d.def }).toEqual({ where, t: 'boolean' });
          break;
        case 'string':
          expect({ where, t: typeof d.def }).toEqual({ where, t: 'string' });
          break;
        case 'levels':
          expect({ where, levels: Array.isArray(d.def) && d.def.length === 4 }).toEqual({ where, levels: true });
          break;
      }
      // The rendered default converts back to the default.
      const text = Array.isArray(d.def) ? d.def.join(',') : String(d.def);
      if (text !== '') expect({ where, v: convertValue(d, text) }).toEqual({ where, v: d.def });
    }
  });

  it('key names are unique per block ignoring case, and env names are unambiguous', () => {
    const seen = new Set<string>();
    for (const [block, key] of entries()) {
      const env = `P2PC_${block.toUpperCase()}_${key.toUpperCase()}`;
      expect(seen.has(env)).toBe(false);
      seen.add(env);
      expect(block.includes('_')).toBe(false); // the first _ after P2PC_ ends the block name
    }
  });

  it('every key is reachable through its environment variable', () => {
    for (const [block, key, d] of entries()) {
      const text = Array.isArray(d.def) ? d.def.join(',') : String(d.def);
      if (text === '') continue;
      const c = defaultsObject();
      applyEnv(c, { [`P2PC_${block.toUpperCase()}_${key.toUpperCase()}`]: text });
      expect(c).toEqual(defaultsObject());
    }
  });

  it('the §10 legacy blocks and keys exist', () => {
    expect(Object.keys(SCHEMA.PServer)).toEqual(expect.arrayContaining(['ServerPort', 'MAXLOAD', 'VELOCITY', 'DNS']));
    expect(Object.keys(SCHEMA.NODE)).toEqual(expect.arrayContaining(['WAIT_FOR_CMD', 'COM_CHK', 'DATA_CACHE']));
    expect(Object.keys(SCHEMA.USER)).toEqual(
      expect.arrayContaining([
        '1TREE',
        '2NODEPERTREE',
        '4HOLDPUSH',
        '5HOLDBUFFER',
        '6MAILPUSH',
        '7SMSPUSH',
        '10MAXNODE',
        'DEFAULT_LEVEL',
        'SIGNUP_LEVEL',
      ]),
    );
    expect(Object.keys(SCHEMA.EMAIL)).toEqual(
      expect.arrayContaining([
        'mail_smtp_host',
        'mail_smtp_port',
        'mail_smtp_auth',
        'mail_transport_protocol',
        'USERNAME',
        'PASSWORD',
      ]),
    );
  });

  it('documented defaults of §1, §2, §4, §10', () => {
    expect(SCHEMA.PServer.ServerPort.def).toBe(8080);
    expect(SCHEMA.NODE.WAIT_FOR_CMD.def).toBe(60);
    expect(SCHEMA.NODE.COM_CHK.def).toBe(300);
    expect(SCHEMA.NODE.DATA_CACHE.def).toBe(5);
    expect(SCHEMA.NODE.LINE_IDLE_MS.def).toBe(150);
    expect(SCHEMA.NODE.MAX_LINE.def).toBe(4096);
    expect(SCHEMA.NODE.MAX_ID.def).toBe(64);
    expect(SCHEMA.NODE.MAX_FANOUT.def).toBe(100000);
    expect(SCHEMA.USER.DEFAULT_LEVEL.def).toBe(4);
    expect(SCHEMA.USER.SIGNUP_LEVEL.def).toBe(1);
  });

  it('docs/configuration.md is exactly renderConfigDoc(): every key, in its block, with its default and doc', () => {
    const doc = readFileSync(new URL('../docs/configuration.md', import.meta.url), 'utf8');
    expect(doc).toBe(renderConfigDoc());
    for (const block of Object.keys(SCHEMA) as (keyof typeof SCHEMA)[]) {
      for (const key of Object.keys(SCHEMA[block])) expect(doc).toContain(`| \`${block}.${key}\` |`);
    }
  });

  it('config/Server.conf is exactly renderDefaultConf()', () => {
    expect(readFileSync(CONF_PATH, 'utf8')).toBe(renderDefaultConf());
  });

  it('config/Server.conf parses and equals the defaults', () => {
    expect(loadConfig({ file: CONF_PATH })).toEqual(defaultsObject());
    expect(loadConfig({ file: CONF_PATH })).toEqual(loadConfig({}));
  });

  it('config/Server.conf lists every schema key, in its block, with a doc comment above it', () => {
    const lines = readFileSync(CONF_PATH, 'utf8').split('\n');
    for (const [block, key, d] of entries()) {
      const open = lines.indexOf(`${block}={`);
      expect({ block, open: open >= 0 }).toEqual({ block, open: true });
      const close = lines.indexOf('}', open);
      const text = Array.isArray(d.def) ? d.def.join(',') : String(d.def);
      const at = lines.indexOf(`  ${key}=${text}`, open);
      expect({ key, inBlock: at > open && at < close }).toEqual({ key, inBlock: true });
      expect(lines[at - 1]).toBe(`  // ${d.doc}`);
    }
  });

  it('renderDefaultConf() round-trips through the parser', () => {
    expect(parseConfText(renderDefaultConf(), 'rendered')).toEqual(defaultsObject());
  });
});
