import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { connectionUrl } from '../src/db/target.ts';
import { createTestDatabase, type TestDatabase, testClusterInfo } from './helpers/database.ts';
import { requireTool } from './helpers/system-tools.ts';

// The `enclave` command as an operator meets it: run as a separate process
// with nothing in its environment but what each test sets.

const ROOT = path.join(import.meta.dirname, '..');
const BIN = path.join(ROOT, 'bin', 'enclave.js');

interface Result {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

let dataDir: string;

async function enclave(args: readonly string[], env: Record<string, string> = {}): Promise<Result> {
  const child = spawn(process.execPath, [BIN, ...args], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ENCLAVE_DATA_DIR: dataDir, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => {
    stdout += chunk.toString('utf8');
  });
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString('utf8');
  });
  const [code] = (await once(child, 'close')) as [number | null];
  return { code, stdout, stderr };
}

function lines(text: string): string[] {
  return text.split('\n').filter((line) => line !== '');
}

function assertUsageError(result: Result): void {
  assert.equal(result.code, 2, result.stderr);
  const errors = lines(result.stderr);
  assert.equal(errors.length, 1, `exactly one line on stderr, got:\n${result.stderr}`);
  assert.match(errors[0] ?? '', /^enclave: /);
}

before(async () => {
  dataDir = await mkdtemp(path.join(tmpdir(), 'enclave-cli-'));
});
after(() => rm(dataDir, { recursive: true, force: true }));

describe('enclave usage', { concurrency: 4 }, () => {
  test('--help exits 0 and lists every command', async () => {
    const result = await enclave(['--help']);
    assert.equal(result.code, 0);
    for (const command of ['start', 'worker', 'migrate', 'doctor']) {
      assert.match(result.stdout, new RegExp(`^  ${command} `, 'm'), `lists ${command}`);
    }
  });

  for (const command of ['start', 'migrate', 'worker', 'doctor']) {
    test(`${command} --help exits 0 with a usage line`, async () => {
      const result = await enclave([command, '--help']);
      assert.equal(result.code, 0);
      assert.match(result.stdout, new RegExp(`^Usage: enclave ${command}\\b`, 'm'));
      assert.equal(result.stderr, '');
    });
  }

  test('no command exits non-zero and shows the usage', async () => {
    const result = await enclave([]);
    assert.notEqual(result.code, 0);
    assert.match(result.stdout + result.stderr, /Usage: enclave <command>/);
  });

  test('an unknown command exits 2 with one line', async () => {
    assertUsageError(await enclave(['bogus']));
  });

  test('an unknown flag exits 2 with one line', async () => {
    for (const args of [['--bogus'], ['migrate', '--bogus']]) {
      const result = await enclave(args);
      assertUsageError(result);
      assert.match(result.stderr, /^enclave: unknown option '--bogus'\. Run "enclave --help"\.$/m);
    }
  });

  test('an extra argument exits 2 with one line', async () => {
    assertUsageError(await enclave(['migrate', 'extra']));
  });

  test('a bad config value exits 1 with one line naming the variable and no stack trace', async () => {
    const result = await enclave(['migrate'], { ENCLAVE_PORT: 'abc' });
    assert.equal(result.code, 1);
    const errors = lines(result.stderr);
    assert.equal(errors.length, 1, `exactly one line on stderr, got:\n${result.stderr}`);
    assert.match(errors[0] ?? '', /^enclave: ENCLAVE_PORT: /);
    assert.doesNotMatch(result.stderr, /\n\s+at /);
  });
});

describe('enclave migrate and doctor against PostgreSQL', () => {
  let db: TestDatabase;
  let env: Record<string, string>;

  before(async () => {
    db = await createTestDatabase({ empty: true });
    const info = testClusterInfo();
    env = {
      DATABASE_URL: connectionUrl(db.target, db.target.admin),
      // The roles are shared by the whole test run: pass the passwords they already have.
      ENCLAVE_DB_OWNER_PASSWORD: info.ownerPassword,
      ENCLAVE_DB_APP_PASSWORD: info.appPassword,
    };
  });
  after(() => db.drop());

  test('migrate applies the migrations once, then finds the database up to date', async () => {
    const first = await enclave(['migrate'], env);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, /^applied 0001_tenancy$/m);
    const second = await enclave(['migrate'], env);
    assert.equal(second.code, 0, second.stderr);
    assert.match(second.stdout, /^Database is up to date\.$/m);
    assert.doesNotMatch(second.stdout, /^applied /m);
  });

  test('doctor passes on the migrated database (a missing worker or host tool is only a warning)', async () => {
    const result = await enclave(['doctor'], env);
    assert.equal(result.code, 0, result.stdout + result.stderr);
    assert.match(result.stdout, /^ok {4}database +PostgreSQL .* \(external\)/m);
    assert.match(result.stdout, /^ok {4}migrations /m);
    assert.match(result.stdout, /^ok {4}row security /m);
    assert.match(result.stdout, /^ok {4}roles /m);
    assert.match(result.stdout, /^(ok|warn) {2,4}worker /m);
  });

  test('doctor reports bubblewrap and chromium', async (t) => {
    if (!requireTool(t, 'bwrap', 'bubblewrap') || !requireTool(t, 'chromium', 'chromium')) return;
    const result = await enclave(['doctor'], env);
    assert.equal(result.code, 0, result.stdout + result.stderr);
    assert.match(result.stdout, /^ok {4}bubblewrap /m);
    assert.match(result.stdout, /^ok {4}chromium /m);
  });

  test('doctor fails on an unreachable database and says how to fix it', async () => {
    const result = await enclave(['doctor'], { DATABASE_URL: 'postgres://u:p@127.0.0.1:1/x' });
    assert.equal(result.code, 1);
    const out = lines(result.stdout);
    const failed = out.findIndex((line) => /^fail {2}database /.test(line));
    assert.ok(failed >= 0, result.stdout);
    assert.match(out[failed + 1] ?? '', /^\s+fix: /);
    assert.doesNotMatch(result.stdout + result.stderr, /\n\s+at /);
  });
});
