// The examples (examples/*.py, examples/walkthrough.md) as smoke tests against the real server: each script runs
// with the machine's python3, gets the server through env vars (P2PC_HOST, P2PC_PORT, P2PC_HTTP_PORT, P2PC_KEY;
// a fresh account per test), does its own setup through the operator REST API, and its output is checked line by
// line. The walkthrough's replay checks every byte the server sends; a tampered transcript must make it fail.

import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from './helpers/server.ts';

const EXAMPLES = join(import.meta.dirname, '..', 'examples');

let srv: TestServer;
let tmp: string;
const children: ChildProcessWithoutNullStreams[] = [];

beforeAll(async () => {
  srv = await startTestServer();
  expect(srv.supervisor.shardCount).toBe(2);
  tmp = mkdtempSync(join(tmpdir(), 'p2pc-examples-'));
}, 30000);

afterAll(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  await srv?.stop();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

/** A running example: its stdout lines as they come, and its exit. */
class Script {
  readonly child: ChildProcessWithoutNullStreams;
  out = '';
  err = '';
  readonly exited: Promise<number | null>;
  private waiters: (() => void)[] = [];

  constructor(args: string[], key: string) {
    this.child = spawn('python3', args, {
      cwd: EXAMPLES,
      env: {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        PYTHONDONTWRITEBYTECODE: '1',
        P2PC_HOST: '127.0.0.1',
        P2PC_PORT: String(srv.port),
        P2PC_HTTP_PORT: String(srv.httpPort),
        P2PC_KEY: key,
      },
    });
    children.push(this.child);
    this.child.stdout.on('data', (b: Buffer) => {
      this.out += b.toString();
      this.wake();
    });
    this.child.stderr.on('data', (b: Buffer) => {
      this.err += b.toString();
    });
    this.exited = new Promise((resolve) => this.child.on('close', (code) => resolve(code)));
    void this.exited.then(() => this.wake());
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  get lines(): string[] {
    return this.out.split('\n').filter((l) => l !== '');
  }

  /** Waits until stdout has n lines (or the script ends). */
  async untilLines(n: number, ms = 10000): Promise<string[]> {
    const deadline = Date.now() + ms;
    while (this.lines.length < n && this.child.exitCode === null) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${n} lines; have:\n${this.out}\nstderr:\n${this.err}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    return this.lines;
  }

  /** Waits for the exit; returns the stdout lines, failing with stderr on a non-zero status. */
  async done(ms = 20000): Promise<string[]> {
    let timer: NodeJS.Timeout | undefined;
    const code = await Promise.race([
      this.exited,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`still running after ${ms} ms:\n${this.out}\n${this.err}`)), ms);
      }),
    ]).finally(() => clearTimeout(timer));
    if (code !== 0) throw new Error(`exit ${code}\nstdout:\n${this.out}\nstderr:\n${this.err}`);
    return this.lines;
  }
}

const run = (args: string[], key: string): Promise<string[]> => new Script(args, key).done();

const sha256 = (path: string): string => createHash('sha256').update(readFileSync(path)).digest('hex');

/** The output examples/README.md shows for `python3 examples/<script>` (the text block after that line). */
function readmeOutput(script: string): string[] {
  const md = readFileSync(join(EXAMPLES, 'README.md'), 'utf8');
  const at = md.indexOf(`\`python3 examples/${script}\``);
  const block = /```text\n([\s\S]*?)```/.exec(md.slice(at));
  if (at < 0 || block === null) throw new Error(`examples/README.md shows no output of ${script}`);
  return block[1]!.trimEnd().split('\n');
}

describe('the netcat/putty walkthrough (examples/walkthrough.md)', () => {
  it('replays every session line against the server, byte for byte', async () => {
    const lines = await run(['walkthrough.py'], srv.newKey());
    const md = readFileSync(join(EXAMPLES, 'walkthrough.md'), 'utf8');
    const steps = [...md.matchAll(/^```session\n([\s\S]*?)^```/gm)].flatMap((m) => m[1]!.trimEnd().split('\n'));
    const sent = steps.filter((l) => /^[A-Z]> /.test(l)).length;
    const received = steps.filter((l) => /^[A-Z][<~] /.test(l)).length;
    expect(sent).toBeGreaterThanOrEqual(20);
    expect(received).toBeGreaterThanOrEqual(25);
    expect(lines).toEqual([`walkthrough OK: ${sent} lines sent, ${received} lines received and checked byte for byte`]);
  });

  it('fails on a transcript the server does not follow', async () => {
    const md = readFileSync(join(EXAMPLES, 'walkthrough.md'), 'utf8');
    const tampered = md.replace('B< PUSH:kettle unplugged', 'B< PUSH:kettle unplugged!');
    expect(tampered).not.toBe(md);
    const file = join(tmp, 'tampered.md');
    writeFileSync(file, tampered);
    const s = new Script(['walkthrough.py', '--file', file], srv.newKey());
    expect(await s.exited).toBe(1);
    expect(s.lines.at(-1)).toMatch(
      /^walkthrough FAILED at step \d+: B: expected b'PUSH:kettle unplugged!\\r\\n', got b'PUSH:kettle unplugged\\r\\n'$/,
    );
  });
});

describe('light switch and lamps joined by ALIAS (examples/light_switch.py)', () => {
  it('separate lamp and switch programs; the operator re-points the alias and the same switch reaches the new lamp', async () => {
    const key = srv.newKey();
    expect(await run(['light_switch.py', 'point', '--to', 'lamp-1'], key)).toEqual(['operator: alias LIGHT -> LAMP-1']);
    const lamp1 = new Script(['light_switch.py', 'lamp', '--id', 'LAMP-1', '--count', '1'], key);
    const lamp2 = new Script(['light_switch.py', 'lamp', '--id', 'LAMP-2', '--count', '2'], key);
    expect(await lamp1.untilLines(1)).toEqual(['LAMP-1: online, light OFF']);
    expect(await lamp2.untilLines(1)).toEqual(['LAMP-2: online, light OFF']);
    expect(await run(['light_switch.py', 'switch'], key)).toEqual([
      'SWITCH-1: pressed, sending TOGGLE to ALIAS:LIGHT',
      'SWITCH-1: DATA_SENT, LAMP-1 is ON',
    ]);
    expect(await lamp1.done()).toEqual(['LAMP-1: online, light OFF', 'LAMP-1: SWITCH-1 says TOGGLE -> light ON']);
    expect(await run(['light_switch.py', 'point', '--to', 'LAMP-2'], key)).toEqual(['operator: alias LIGHT -> LAMP-2']);
    expect(await run(['light_switch.py', 'switch'], key)).toEqual([
      'SWITCH-1: pressed, sending TOGGLE to ALIAS:LIGHT',
      'SWITCH-1: DATA_SENT, LAMP-2 is ON',
    ]);
    expect(await run(['light_switch.py', 'switch', 'OFF'], key)).toEqual([
      'SWITCH-1: pressed, sending OFF to ALIAS:LIGHT',
      'SWITCH-1: DATA_SENT, LAMP-2 is OFF',
    ]);
    expect(await lamp2.done()).toEqual([
      'LAMP-2: online, light OFF',
      'LAMP-2: SWITCH-1 says TOGGLE -> light ON',
      'LAMP-2: SWITCH-1 says OFF -> light OFF',
    ]);
    // No lamp behind the alias any more: the switch says so and fails.
    const s = new Script(['light_switch.py', 'switch'], key);
    expect(await s.exited).toBe(1);
    expect(s.lines).toEqual([
      'SWITCH-1: pressed, sending TOGGLE to ALIAS:LIGHT',
      'SWITCH-1: [FAIL:REM_ID] (is a lamp online behind LIGHT?)',
    ]);
    const aliases = await fetch(`http://127.0.0.1:${srv.httpPort}/api/v1/accounts/me/aliases`, {
      headers: { authorization: `Bearer ${key}` },
    });
    expect(await aliases.json()).toEqual({ aliases: [{ name: 'LIGHT', targets: ['LAMP-2'] }] });
  });

  it('the whole story in one process, as examples/README.md shows it', async () => {
    const lines = await run(['light_switch.py'], srv.newKey());
    expect(lines).toEqual(readmeOutput('light_switch.py'));
    expect(lines).toEqual([
      'operator: alias LIGHT -> LAMP-1',
      'LAMP-1: online, light OFF',
      'LAMP-2: online, light OFF',
      'SWITCH-1: pressed, sending TOGGLE to ALIAS:LIGHT',
      'LAMP-1: SWITCH-1 says TOGGLE -> light ON',
      'SWITCH-1: DATA_SENT, LAMP-1 is ON',
      'operator: alias LIGHT -> LAMP-2',
      'SWITCH-1: pressed, sending TOGGLE to ALIAS:LIGHT',
      'LAMP-2: SWITCH-1 says TOGGLE -> light ON',
      'SWITCH-1: DATA_SENT, LAMP-2 is ON',
      'SWITCH-1: pressed, sending TOGGLE to ALIAS:LIGHT',
      'LAMP-2: SWITCH-1 says TOGGLE -> light OFF',
      'SWITCH-1: DATA_SENT, LAMP-2 is OFF',
      'operator: alias LIGHT -> LAMP-1',
      'SWITCH-1: pressed, sending OFF to ALIAS:LIGHT',
      'LAMP-1: SWITCH-1 says OFF -> light OFF',
      'SWITCH-1: DATA_SENT, LAMP-1 is OFF',
    ]);
  });
});

const GARDEN = [
  'operator: router GARDEN = LIGHT-1, LIGHT-2, LIGHT-3, MOTION',
  'HOUSE: WATCHING RO:GARDEN',
  'HOUSE: 4 garden devices online',
  'MOTION: motion at the gate -> RO:GARDEN [OK:ALL_3]',
  'LIGHT-1: motion:gate -> light on for 60 s',
  'LIGHT-2: motion:gate -> light on for 60 s',
  'LIGHT-3: motion:gate -> light on for 60 s',
  'HOUSE: LIGHT-2 went OFFLINE',
  'MOTION: motion at the pond -> RO:GARDEN [OK:2/3]',
  'LIGHT-1: motion:pond -> light on for 60 s',
  'LIGHT-3: motion:pond -> light on for 60 s',
  'HOUSE: all off -> RO:GARDEN [FAIL:NO_ROUTER] (not a member)',
  'operator: HOUSE added to GARDEN',
  'HOUSE: all off -> RO:GARDEN [OK:3/4]',
  'LIGHT-1: all off',
  'LIGHT-3: all off',
  'MOTION: all off',
  'HOUSE: LIGHT-2 went ONLINE',
];

describe('garden lights on a mesh router (examples/garden_lights.py)', () => {
  it('prints the story exactly, and again on a second run (the setup puts the router back)', async () => {
    const key = srv.newKey();
    expect(await run(['garden_lights.py'], key)).toEqual(GARDEN);
    expect(await run(['garden_lights.py'], key)).toEqual(GARDEN);
    expect(readmeOutput('garden_lights.py')).toEqual(GARDEN);
    const r = await fetch(`http://127.0.0.1:${srv.httpPort}/api/v1/accounts/me/routers/GARDEN`, {
      headers: { authorization: `Bearer ${key}` },
    });
    expect(await r.json()).toEqual({ name: 'GARDEN', members: ['HOUSE', 'LIGHT-1', 'LIGHT-2', 'LIGHT-3', 'MOTION'] });
  });
});

describe('sensors pushing to their PARENT (examples/sensor_parent.py)', () => {
  it('prints the story exactly, as examples/README.md shows it', async () => {
    const readings = [
      ['THERMO-1', '21.5'],
      ['THERMO-2', '19.0'],
      ['THERMO-1', '21.7'],
      ['THERMO-2', '19.4'],
      ['THERMO-1', '21.6'],
      ['THERMO-2', '19.8'],
    ].flatMap(([id, t]) => [`${id}: temp=${t} -> PARENT [OK:DATA_SENT]`, `HUB-A: ${id} temp=${t}`]);
    const lines = await run(['sensor_parent.py'], srv.newKey());
    expect(lines).toEqual(readmeOutput('sensor_parent.py'));
    expect(lines).toEqual([
      'operator: tree HUB-A -> THERMO-1, THERMO-2; HUB-B',
      'HUB-A: WATCHING CHILDS',
      'THERMO-1: online, last will set',
      'HUB-A: THERMO-1 is ONLINE',
      'THERMO-2: online, last will set',
      'HUB-A: THERMO-2 is ONLINE',
      'HUB-A: interval=10 -> CHILDS [OK:ALL_2]',
      'THERMO-1: config interval=10',
      'THERMO-2: config interval=10',
      ...readings,
      'HUB-A: average 20.50 C over 6 readings',
      'THERMO-2: battery dead (connection lost)',
      'HUB-A: THERMO-2 is OFFLINE',
      'HUB-A: last will THERMO-2:LOST',
      'HUB-A: STATUS THERMO-2 -> OFFLINE',
      'operator: THERMO-1 moved under HUB-B',
      'THERMO-1: temp=22.0 -> PARENT [OK:DATA_SENT]',
      'HUB-B: THERMO-1:temp=22.0',
      'THERMO-1: connection lost',
      'HUB-B: last will THERMO-1:LOST',
    ]);
  });
});

describe('audio over the RAW channel (examples/audio_raw.py)', () => {
  it('streams a generated WAV from player to speaker; the SHA-256 matches on arrival', async () => {
    const tone = join(tmp, 'tone.wav');
    const out = join(tmp, 'received.wav');
    const lines = await run(['audio_raw.py', 'demo', '--tone', tone, '--out', out], srv.newKey());
    expect(lines).toEqual(readmeOutput('audio_raw.py'));
    expect(lines).toEqual([
      'PLAYER: streaming tone.wav (3.00 s, 44100 Hz, 16-bit stereo, 529244 bytes) to SPEAKER',
      'SPEAKER: received 529244 bytes from PLAYER, sha256 OK, saved to received.wav',
      'PLAYER: SPEAKER confirmed 529244 bytes, sha256 matches',
      'received.wav is identical to tone.wav',
    ]);
    expect(readFileSync(out).length).toBe(529244);
    expect(sha256(out)).toBe(sha256(tone));
    expect(readFileSync(out).subarray(0, 4).toString('latin1')).toBe('RIFF');
  });

  it('speaker and player as two programs', async () => {
    const key = srv.newKey();
    const tone = join(tmp, 'tone2.wav');
    const out = join(tmp, 'received2.wav');
    const made = await run(['audio_raw.py', 'tone', '--out', tone], key);
    expect(made).toEqual([`${tone}: 3.00 s, 44100 Hz, 16-bit stereo, 529244 bytes, sha256 ${sha256(tone)}`]);
    const speaker = new Script(['audio_raw.py', 'speaker', '--id', 'speaker', '--out', out], key);
    expect(await speaker.untilLines(1)).toEqual(['SPEAKER: online, waiting for a stream']);
    expect(await run(['audio_raw.py', 'player', '--to', 'speaker', '--wav', tone], key)).toEqual([
      'PLAYER: streaming tone2.wav (3.00 s, 44100 Hz, 16-bit stereo, 529244 bytes) to SPEAKER',
      'PLAYER: SPEAKER confirmed 529244 bytes, sha256 matches',
    ]);
    expect(await speaker.done()).toEqual([
      'SPEAKER: online, waiting for a stream',
      'SPEAKER: received 529244 bytes from PLAYER, sha256 OK, saved to received2.wav',
    ]);
    expect(sha256(out)).toBe(sha256(tone));
  });
});
