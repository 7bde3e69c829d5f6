import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { latestDrill } from '../src/backup/drill-record.ts';
import { connectionUrl } from '../src/db/target.ts';
import { appendEvents, createTenant } from './helpers/audit.ts';
import { createTestDatabase, type TestDatabase, testClusterInfo } from './helpers/database.ts';
import { runProcess } from './helpers/process.ts';

// OPS-4 from the operator's side: `enclave backup`, `enclave restore` and
// `enclave drill` run as processes against the database a server uses.

const ROOT = path.join(import.meta.dirname, '..');

let source: TestDatabase;
let target: TestDatabase;
let dir: string;
let env: Record<string, string>;
let targetEnv: Record<string, string>;

before(async () => {
  [source, target] = await Promise.all([createTestDatabase(), createTestDatabase({ empty: true })]);
  dir = await mkdtemp(path.join(tmpdir(), 'enclave-backup-cli-'));
  const info = testClusterInfo();
  const common = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    ENCLAVE_DB_OWNER_PASSWORD: info.ownerPassword,
    ENCLAVE_DB_APP_PASSWORD: info.appPassword,
    ENCLAVE_PUBLIC_URL: 'https://enclave.example',
    ENCLAVE_MASTER_KEY: `1:${randomBytes(32).toString('base64')}`,
  };
  env = {
    ...common,
    ENCLAVE_DATA_DIR: path.join(dir, 'source'),
    DATABASE_URL: connectionUrl(source.target, source.target.admin),
  };
  targetEnv = {
    ...common,
    ENCLAVE_DATA_DIR: path.join(dir, 'target'),
    DATABASE_URL: connectionUrl(target.target, target.target.admin),
  };
  const tenant = await createTenant(source, 'cli drill tenant');
  await appendEvents(source, tenant, 3);
  await writeFile(path.join(dir, 'pass'), 'a long enough passphrase\n');
  await writeFile(path.join(dir, 'wrong'), 'another passphrase entirely\n');
});
after(async () => {
  await Promise.all([source.drop(), target.drop()]);
  await rm(dir, { recursive: true, force: true });
});

function enclave(args: readonly string[], withEnv: Record<string, string> = env) {
  return runProcess(process.execPath, [path.join(ROOT, 'bin/enclave.js'), ...args], {
    cwd: ROOT,
    env: withEnv,
  });
}

test('OPS-4: `enclave drill` on a populated instance prints a one-screen report, exits 0 and records the outcome', async () => {
  const checkpoint = await enclave(['audit', 'checkpoint']);
  assert.equal(checkpoint.code, 0, checkpoint.stderr);
  const result = await enclave(['drill']);
  assert.equal(result.code, 0, result.stdout + result.stderr);
  const lines = result.stdout.trim().split('\n');
  assert.match(lines[0] ?? '', /^Backup-and-restore drill, \d{4}-\d\d-\d\dT/);
  for (const name of ['backup', 'restore', 'migrations', 'row counts', 'audit chains', 'credentials']) {
    assert.ok(
      lines.some((line) => line.startsWith(`  ok    ${name}`)),
      `${name} in:\n${result.stdout}`,
    );
  }
  assert.equal(lines.at(-1), 'Drill passed.');
  assert.ok(lines.length <= 24);
  const latest = await latestDrill(source.app);
  assert.equal(latest?.ok, true);
  assert.equal(latest?.checks.length, 6);
});

test('OPS-4: `enclave backup` writes an encrypted file (0600) once; `enclave restore` puts it into an empty database and refuses a second time, a wrong passphrase and bad usage', async () => {
  const file = path.join(dir, 'enclave.backup');
  const made = await enclave(['backup', file, '--passphrase-file', path.join(dir, 'pass')]);
  assert.equal(made.code, 0, made.stderr);
  assert.match(
    made.stdout,
    /^Wrote .*enclave\.backup: \d+ tables, \d+ rows, \d+ checkpoint and archive files, encrypted\.$/m,
  );
  assert.match(made.stdout, /master key is not in the backup/);
  assert.equal((await stat(file)).mode & 0o777, 0o600);
  const again = await enclave(['backup', file]);
  assert.equal(again.code, 2);
  assert.match(again.stderr, /exists; choose another name/);
  assert.deepEqual(
    (await readdir(dir)).filter((name) => name.endsWith('.partial')),
    [],
  );

  const wrong = await enclave(['restore', file, '--passphrase-file', path.join(dir, 'wrong')], targetEnv);
  assert.equal(wrong.code, 1);
  assert.match(wrong.stderr, /^enclave: the passphrase does not open this backup/);
  const missing = await enclave(['restore', file], targetEnv);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /this backup is encrypted: give its passphrase with --passphrase-file FILE/);

  const restored = await enclave(['restore', file, '--passphrase-file', path.join(dir, 'pass')], targetEnv);
  assert.equal(restored.code, 0, restored.stderr);
  assert.match(
    restored.stdout,
    /^Restored .*enclave\.backup \(made .*\) into database "test_[0-9a-f]+": \d+ rows, \d+ checkpoint and archive files\.$/m,
  );
  const [names] = await Promise.all([
    target.superuser<{ name: string }[]>`select name from enclave.tenants order by name`,
  ]);
  assert.ok(names.some((row) => row.name === 'cli drill tenant'));

  const twice = await enclave(['restore', file, '--passphrase-file', path.join(dir, 'pass')], targetEnv);
  assert.equal(twice.code, 1);
  assert.match(twice.stderr, /^enclave: database "test_[0-9a-f]+" is not empty/);

  for (const [args, message] of [
    [['restore'], /"restore" needs a FILE/],
    [
      ['backup', path.join(dir, 'no-such-dir', 'x.backup')],
      /cannot write into the directory of .*\(ENOENT\)/,
    ],
    [
      ['backup', path.join(dir, 'x.backup'), '--passphrase-file', path.join(dir, 'absent')],
      /cannot read --passphrase-file .*\(ENOENT\)/,
    ],
    [['drill', 'extra'], /"drill" takes no arguments/],
    [['migrate', '--passphrase-file', 'x'], /--passphrase-file is an option of "backup" and "restore"/],
  ] as const) {
    const result = await enclave(args);
    assert.equal(result.code, 2, args.join(' '));
    assert.match(result.stderr, message);
  }
});

test('OPS-4: `enclave restore` with no DATABASE_URL restores into the embedded cluster of ENCLAVE_DATA_DIR, which keeps it across a restart', async () => {
  const file = path.join(dir, 'plain.backup');
  const made = await enclave(['backup', file]);
  assert.equal(made.code, 0, made.stderr);
  const counts = /: \d+ tables, (\d+) rows, (\d+) checkpoint and archive files, NOT encrypted/.exec(
    made.stdout,
  );
  assert.ok(counts !== null, made.stdout);
  const { DATABASE_URL: _external, ...common } = env;
  // A data dir of its own: under root the embedded server runs as postgres and must reach it.
  const dataDir = await mkdtemp(path.join(tmpdir(), 'enclave-restore-embedded-'));
  const embedded = { ...common, ENCLAVE_DATA_DIR: dataDir };
  try {
    const restored = await enclave(['restore', file], embedded);
    assert.equal(restored.code, 0, restored.stderr);
    assert.match(
      restored.stdout,
      new RegExp(
        `^Restored .*plain\\.backup \\(made .*\\) into database "[a-z_]+": ${counts[1]} rows, ${counts[2]} checkpoint and archive files\\.$`,
        'm',
      ),
    );
    // A second run starts the embedded cluster again and finds the restored rows there.
    const twice = await enclave(['restore', file], embedded);
    assert.equal(twice.code, 1);
    assert.match(twice.stderr, /^enclave: database "[a-z_]+" is not empty/);
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
});
