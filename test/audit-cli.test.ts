import assert from 'node:assert/strict';
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { verifierKeyString } from '../src/audit/note.ts';
import { connectionUrl } from '../src/db/target.ts';
import { appendEvents, createTenant } from './helpers/audit.ts';
import { createTestDatabase, type TestDatabase, testClusterInfo } from './helpers/database.ts';
import { runProcess } from './helpers/process.ts';

// The operator's recovery kit (AUD-4, AUD-5): `enclave audit checkpoint`
// and `enclave audit export`, run as separate processes against the same
// database a server uses, and the bundle checked by `enclave-verify`.

const ROOT = path.join(import.meta.dirname, '..');

let db: TestDatabase;
let dataDir: string;
let env: Record<string, string>;

before(async () => {
  db = await createTestDatabase();
  dataDir = await mkdtemp(path.join(tmpdir(), 'enclave-audit-cli-'));
  const info = testClusterInfo();
  env = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    ENCLAVE_DATA_DIR: dataDir,
    DATABASE_URL: connectionUrl(db.target, db.target.admin),
    ENCLAVE_DB_OWNER_PASSWORD: info.ownerPassword,
    ENCLAVE_DB_APP_PASSWORD: info.appPassword,
    ENCLAVE_PUBLIC_URL: 'https://enclave.example',
  };
});
after(async () => {
  await db.drop();
  await rm(dataDir, { recursive: true, force: true });
});

async function run(bin: string, args: readonly string[], extra: Record<string, string> = {}) {
  return runProcess(process.execPath, [path.join(ROOT, 'bin', bin), ...args], {
    cwd: ROOT,
    env: { ...env, ...extra },
  });
}

describe('enclave audit', () => {
  let tenant: string;

  before(async () => {
    tenant = await createTenant(db);
    await appendEvents(db, tenant, 4);
  });

  test('AUD-4: `enclave audit checkpoint` signs with a key generated once under the data dir (0600) and publishes to <data dir>/checkpoints', async () => {
    const result = await run('enclave.js', ['audit', 'checkpoint']);
    assert.equal(result.code, 0, result.stderr);
    assert.match(
      result.stdout,
      /^Checkpoint of size \d+ signed \(\d+ new leaves\), published to .*checkpoints\.$/m,
    );
    const keyFile = path.join(dataDir, 'secrets', 'checkpoint_key.pem');
    assert.equal((await stat(keyFile)).mode & 0o777, 0o600);
    const published = await readdir(path.join(dataDir, 'checkpoints'));
    assert.ok(
      published.some((file) => /^checkpoint-\d+\.note$/.test(file)),
      published.join(', '),
    );
    const again = await run('enclave.js', ['audit', 'checkpoint']);
    assert.match(again.stdout, /nothing to sign/);
  });

  test('AUD-5: `enclave audit export` writes a bundle that enclave-verify accepts with the operator key pinned, and the export is in the tenant’s log and in the bundle itself (not one event behind)', async () => {
    const bundle = path.join(dataDir, 'tenant.jsonl');
    const result = await run('enclave.js', ['audit', 'export', '--tenant', tenant, '--bundle', bundle]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(
      result.stdout,
      /^Wrote .*tenant\.jsonl: 5 events, 0 archive segments, checkpoint of size \d+\.$/m,
    );
    assert.equal((await stat(bundle)).mode & 0o777, 0o600);
    const pem = await readFile(path.join(dataDir, 'secrets', 'checkpoint_key.pem'), 'utf8');
    const key = verifierKeyString('enclave.example/enclave/audit', createPublicKey(createPrivateKey(pem)));
    const verified = await run('enclave-verify.js', ['--key', key, bundle]);
    assert.equal(verified.code, 0, verified.stdout + verified.stderr);
    assert.match(verified.stdout, /OK: every check holds/);
    const [recorded] = await db.superuser<{ canonical: string }[]>`
      select canonical from audit_events where tenant_id = ${tenant}::uuid order by seq desc limit 1`;
    assert.match(recorded?.canonical ?? '', /"action":"[a-z.]*service_query".*enclave audit export/);
    const lines = (await readFile(bundle, 'utf8')).trimEnd().split('\n');
    assert.equal(JSON.parse(lines.at(-1) ?? '{}').event.seq, JSON.parse(recorded?.canonical ?? '{}').seq);
  });

  test('AUD-5: `enclave audit` usage mistakes exit 2 with one line', async () => {
    for (const args of [
      ['audit'],
      ['audit', 'bogus'],
      ['audit', 'export', '--bundle', 'x.jsonl'],
      ['audit', 'export', '--tenant', 'not-a-uuid', '--bundle', 'x.jsonl'],
      ['audit', 'export', '--tenant', tenant],
      ['audit', 'checkpoint', '--tenant', tenant],
      ['migrate', '--bundle', 'x.jsonl'],
    ]) {
      const result = await run('enclave.js', args);
      assert.equal(result.code, 2, `${args.join(' ')}: ${result.stderr}`);
      assert.equal(result.stderr.trim().split('\n').length, 1, result.stderr);
    }
  });

  test('AUD-4: in production the checkpoint key has no default: ENCLAVE_CHECKPOINT_KEY_FILE is required', async () => {
    const result = await run('enclave.js', ['audit', 'checkpoint'], {
      ENCLAVE_ENV: 'production',
      ENCLAVE_SMTP_URL: 'smtp://mail.example',
    });
    assert.equal(result.code, 1);
    assert.match(
      result.stderr,
      /^enclave: ENCLAVE_CHECKPOINT_KEY_FILE: is required when ENCLAVE_ENV=production/m,
    );
  });
});
