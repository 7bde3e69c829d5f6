import assert from 'node:assert/strict';
import { createHash, randomUUID } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  checkpointKey,
  checkpointLine,
  genesis,
  headerLine,
  nextEvent,
  signedCheckpoint,
  syntheticLog,
} from '../../test/helpers/audit-bundle.ts';
import { runProcess } from '../../test/helpers/process.ts';
import { feedLines, runVerify, type VerifyIo } from './verify-cli.ts';

// enclave-verify as a tenant meets it (AUD-5): a separate program that needs
// no server, no database and no configuration — only the bundle.

const ROOT = path.join(import.meta.dirname, '..', '..');
const BIN = path.join(ROOT, 'bin', 'enclave-verify.js');
const tenant = randomUUID();
const key = checkpointKey();
let dir: string;
let good: string;
let bad: string;
let previousNote: string;

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'enclave-verify-'));
  const state = genesis();
  const events = Array.from({ length: 20 }, () => nextEvent(tenant, state));
  const log = syntheticLog({ tenant, heads: [{ ...state }], key });
  const lines = [headerLine(tenant, key), checkpointLine(log, key, [2]), ...events.map((e) => e.line)];
  good = path.join(dir, 'good.jsonl');
  await writeFile(good, `${lines.join('\n')}\n`);
  bad = path.join(dir, 'bad.jsonl');
  const tampered = [...lines];
  tampered[2 + 12] = (tampered[2 + 12] as string).replace('203.0.113.7', '203.0.113.8');
  await writeFile(bad, `${tampered.join('\n')}\n`);
  previousNote = path.join(dir, 'checkpoint-2.note');
  await writeFile(previousNote, signedCheckpoint(log, 2, key));
});
after(() => rm(dir, { recursive: true, force: true }));

async function run(
  args: readonly string[],
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return runProcess(process.execPath, [BIN, ...args], {
    cwd: dir,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
  });
}

/** Relative and bare imports of a module (static `import … from`, `export … from` and dynamic import()). */
function importsOf(source: string): string[] {
  const specifiers = [...source.matchAll(/(?:^|\n)\s*(?:import|export)\s[^'"`;]*?from\s*['"]([^'"]+)['"]/g)];
  const dynamic = [...source.matchAll(/import\(\s*['"]([^'"]+)['"]\s*\)/g)];
  const bare = [...source.matchAll(/(?:^|\n)\s*import\s*['"]([^'"]+)['"]/g)];
  return [...specifiers, ...dynamic, ...bare].map((match) => match[1] as string);
}

describe('enclave-verify', () => {
  test('AUD-5: enclave-verify imports nothing outside src/audit but node: builtins, canonicalize and the Node version check (no db, http or config)', async () => {
    const auditDir = path.join(ROOT, 'src', 'audit');
    // The entry point's version check: plain JavaScript that imports nothing.
    const versionCheck = path.join(ROOT, 'bin', 'node-version.js');
    const seen = new Set<string>();
    const outside: string[] = [];
    const queue = [BIN];
    while (queue.length > 0) {
      const file = queue.pop() as string;
      if (seen.has(file)) continue;
      seen.add(file);
      for (const specifier of importsOf(await readFile(file, 'utf8'))) {
        if (specifier.startsWith('node:') || specifier === 'canonicalize') continue;
        if (!specifier.startsWith('.')) {
          outside.push(`${path.relative(ROOT, file)} imports ${specifier}`);
          continue;
        }
        const target = path.resolve(path.dirname(file), specifier);
        if (target === versionCheck) {
          assert.deepEqual(
            importsOf(await readFile(target, 'utf8')),
            [],
            'the version check imports nothing',
          );
          continue;
        }
        if (path.dirname(target) !== auditDir)
          outside.push(`${path.relative(ROOT, file)} imports ${specifier}`);
        else queue.push(target);
      }
    }
    assert.deepEqual(outside, []);
    assert.ok(seen.has(path.join(auditDir, 'verify-cli.ts')), 'the walk reached the verifier');
    assert.ok(seen.has(path.join(auditDir, 'chain.ts')), 'the walk reached the chain verifier');
    for (const file of seen) assert.doesNotMatch(path.basename(file), /test|routes|export|retention|log\.ts/);
  });

  test('AUD-5: an intact bundle verifies offline: exit 0 and "OK"', async () => {
    const result = await run([good]);
    assert.equal(result.code, 0, result.stdout + result.stderr);
    assert.match(result.stdout, /OK: every check holds/);
    assert.match(result.stdout, /20 verified \(head seq 20\)/);
    assert.equal(result.stderr, '', 'no progress bar when stderr is not a terminal');
  });

  test('AUD-5: a tampered bundle exits 1 naming the first bad seq and why', async () => {
    const result = await run([bad]);
    assert.equal(result.code, 1);
    assert.match(result.stdout, /FAILED: first bad seq 13 \(chain\): seq 13: stored hash/);
  });

  test('AUD-5: --key pins the operator key; another key fails', async () => {
    assert.equal((await run(['--key', key.verifierKey, good])).code, 0);
    const other = await run(['--key', checkpointKey().verifierKey, good]);
    assert.equal(other.code, 1);
    assert.match(other.stdout, /\[checkpoint\] the checkpoint does not verify/);
  });

  test('AUD-8: --previous-checkpoint takes a saved note or an earlier bundle', async () => {
    const fromNote = await run(['--previous-checkpoint', previousNote, good]);
    assert.equal(fromNote.code, 0, fromNote.stdout);
    assert.match(fromNote.stdout, /previous {4}checkpoint of size 2/);
    const fromBundle = await run(['--previous-checkpoint', good, good]);
    assert.equal(fromBundle.code, 0, fromBundle.stdout);
  });

  test('AUD-5: a bundle whose last line has no newline fails: the file may have been cut short', async () => {
    const cut = path.join(dir, 'cut.jsonl');
    await writeFile(cut, (await readFile(good, 'utf8')).trimEnd());
    const result = await run([cut]);
    assert.equal(result.code, 1, result.stdout);
    assert.match(
      result.stdout,
      /\[bundle\] line 22 does not end in a newline, as every line of a bundle does/,
    );
  });

  test('AUD-4: a verifier key whose name is not the log origin is refused, with the reason', async () => {
    const misnamed = checkpointKey('another.example/enclave/audit');
    const result = await run(['--key', misnamed.verifierKey, good]);
    assert.equal(result.code, 1);
    assert.match(
      result.stdout,
      /the verifier key is named another\.example\/enclave\/audit, not this log's origin/,
    );
  });

  test('AUD-5: bad usage and unreadable files exit 2', async () => {
    assert.equal((await run([])).code, 2);
    assert.equal((await run(['--nope', good])).code, 2);
    const missing = await run([path.join(dir, 'missing.jsonl')]);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /ENOENT/);
    assert.equal((await run(['--help'])).code, 0);
  });

  test('AUD-5: lines are split the same whatever the chunk boundaries, multi-byte characters included', async () => {
    const text = 'first line\n{"a":"ci «deploy» ✓"}\n\nlast line without newline';
    const bytes = Buffer.from(text, 'utf8');
    for (const size of [1, 2, 3, 5, 7, 64]) {
      const chunks = async function* () {
        for (let i = 0; i < bytes.length; i += size) yield bytes.subarray(i, i + size);
      };
      const lines: string[] = [];
      await feedLines(chunks(), (chunk, start, end, utf8) => {
        assert.ok(utf8, 'every line is valid UTF-8');
        return lines.push(chunk.toString('utf8', start, end)) > 0;
      });
      assert.deepEqual(lines, text.split('\n'), `chunks of ${size}`);
    }
    const stopped: string[] = [];
    await feedLines(
      (async function* () {
        yield bytes;
      })(),
      (chunk, start, end) => stopped.push(chunk.toString('utf8', start, end)) < 2,
    );
    assert.equal(stopped.length, 2, 'reading stops when the verifier says so');
    // A chunk that is not valid UTF-8 says so for its lines; a line split across chunks is checked whole.
    const valid: boolean[] = [];
    const broken = [
      Buffer.from('ok\nno \xff\n', 'latin1'),
      Buffer.from('fine ✓'),
      Buffer.from(' too\nbad \xc3', 'latin1'),
    ];
    await feedLines(
      (async function* () {
        yield* broken;
      })(),
      (_chunk, _start, _end, utf8) => valid.push(utf8) > 0,
    );
    assert.deepEqual(valid, [false, false, true, false]);
  });

  test('AUD-5: multi-byte text verifies from the file; a line cut short inside a character, or ending in CRLF, fails naming it', async () => {
    const state = genesis();
    const events = Array.from({ length: 6 }, () =>
      nextEvent(tenant, state, { data: { name: 'ci «deploy» ✓ 😀', note: 'Zoë' } }),
    );
    const log = syntheticLog({ tenant, heads: [{ ...state }], key });
    const lines = [headerLine(tenant, key), checkpointLine(log, key), ...events.map((e) => e.line)];
    const file = path.join(dir, 'multibyte.jsonl');
    await writeFile(file, `${lines.join('\n')}\n`);
    const intact = await run([file]);
    assert.equal(intact.code, 0, intact.stdout);
    assert.match(intact.stdout, /6 verified \(head seq 6\)/);

    // Cut inside the emoji of the last event: its bytes are not valid UTF-8, and the line has no newline.
    const bytes = await readFile(file);
    const cut = path.join(dir, 'multibyte-cut.jsonl');
    await writeFile(cut, bytes.subarray(0, bytes.lastIndexOf(Buffer.from('😀')) + 2));
    const short = await run([cut]);
    assert.equal(short.code, 1, short.stdout);
    assert.match(short.stdout, /FAILED: first bad seq 6 \(chain\): line 8 is not an event line/);
    assert.match(short.stdout, /\[bundle\] line 8 does not end in a newline/);

    const crlf = path.join(dir, 'crlf.jsonl');
    await writeFile(crlf, `${lines.slice(0, 5).join('\n')}\r\n${lines.slice(5).join('\n')}\n`);
    const windows = await run([crlf]);
    assert.equal(windows.code, 1, windows.stdout);
    assert.match(windows.stdout, /FAILED: first bad seq 3 \(chain\): line 5 is not an event line/);
  });

  test('AUD-5: an event whose canonical bytes are not valid UTF-8 fails at its seq, even with its hash taken over those bytes', async () => {
    const state = genesis();
    const events = Array.from({ length: 5 }, () => nextEvent(tenant, state));
    const log = syntheticLog({ tenant, heads: [{ ...state }], key });
    // The next event, its "é" replaced by two bytes no UTF-8 text has, hashed and linked as they are.
    const canonical = Buffer.from(nextEvent(tenant, { ...state }, { data: { note: 'café' } }).canonical);
    canonical.set([0xff, 0xfe], canonical.indexOf(Buffer.from('é')));
    const hash = createHash('sha256').update(state.hash).update(canonical).digest('hex');
    const line = Buffer.concat([
      Buffer.from(`{"hash":"${hash}","prev_hash":"${state.hash.toString('hex')}","event":`),
      canonical,
      Buffer.from('}\n'),
    ]);
    const head = [headerLine(tenant, key), checkpointLine(log, key), ...events.map((e) => e.line)];
    const file = path.join(dir, 'not-utf8.jsonl');
    await writeFile(file, Buffer.concat([Buffer.from(`${head.join('\n')}\n`), line]));
    const result = await run([file]);
    assert.equal(result.code, 1, result.stdout);
    assert.match(result.stdout, /FAILED: first bad seq 6 \(chain\): seq 6: stored hash ≠ SHA-256/);
  });

  test('AUD-5: on a terminal, progress is drawn on stderr and cleared before the report', async () => {
    const drawn: string[] = [];
    const out: string[] = [];
    const io: VerifyIo = {
      out: (line) => out.push(line),
      err: (line) => out.push(line),
      progress: { write: (text) => drawn.push(text) },
    };
    assert.equal(await runVerify([good], io), 0);
    assert.ok(
      drawn.some((text) => /^\r\[#+\.*\] 100% \d+ lines$/.test(text)),
      JSON.stringify(drawn),
    );
    assert.equal(drawn.at(-1), '\r\x1b[K');
    assert.match(out.join('\n'), /OK: every check holds/);
  });
});
