import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { insertAgent } from '../../test/helpers/agents.ts';
import {
  appendEvents,
  createTenant,
  daysAgo,
  insertChain,
  tempAuditSetup,
} from '../../test/helpers/audit.ts';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/database.ts';
import { createCheckpointService } from '../audit/checkpoint-log.ts';
import { createRetentionService } from '../audit/retention.ts';
import type { AuditSetup } from '../audit/setup.ts';
import { loadConfig } from '../config.ts';
import type { Migration, MigratorErrorCode } from '../db/migrator.ts';
import { connect } from '../db/target.ts';
import { withTenant } from '../db/tenant.ts';
import { ensureProbeRows } from '../posture/probe-tenants.ts';
import { envMasterKeyProvider } from '../vault/master-keys.ts';
import { createVault } from '../vault/service.ts';
import { makeBackup } from './backup.ts';
import { userRelations } from './database-copy.ts';
import { type DrillInputs, formatDrillReport, runDrill } from './drill.ts';
import { latestDrill, recordDrill } from './drill-record.ts';
import type { BackupErrorCode } from './errors.ts';
import { type BackupDirectories, nonEmptyDirectories, partTarget, readDirectoryParts } from './files.ts';
import { restoreBackup } from './restore.ts';

// OPS-4: backups, restores and the drill against a populated database:
// two tenants with audit events (one with an archived segment), agents with
// credentials, and a signed checkpoint; and the isolation probe's two tenants
// with their rows (OPS-5), restored like any but left out of the report's
// tenant count.

const logger = { info: () => {}, error: () => {} };
const masterKey = randomBytes(32);
const masterKeys = envMasterKeyProvider(`1:${masterKey.toString('base64')}`);
/** Every credential's plaintext, as put into the vault. */
const credentialValues: string[] = [];
let db: TestDatabase;
let setup: AuditSetup;
let dir: string;
let dirs: BackupDirectories;
let tenants: string[];

before(async () => {
  db = await createTestDatabase();
  ({ setup, dir } = await tempAuditSetup());
  const config = loadConfig({ ENCLAVE_DATA_DIR: dir, ENCLAVE_PUBLIC_URL: 'https://enclave.test' }, dir);
  dirs = { checkpointDir: config.checkpointDir, auditArchiveDir: config.auditArchiveDir };
  const vault = createVault({ provider: masterKeys });
  await vault.checkMasterKeys(db.app);
  tenants = [await createTenant(db, 'drill one'), await createTenant(db, 'drill two')];
  await ensureProbeRows(db.app);
  // 30 events past the hot window go to an archive segment; new ones stay in the database.
  await insertChain(db, tenants[0] ?? '', daysAgo(120, 30));
  await createRetentionService({
    sql: db.app,
    archiveDir: setup.archiveDir,
    hotDays: 90,
    coldMonths: 24,
    logger,
  }).runRetention();
  for (const tenant of tenants) {
    await appendEvents(db, tenant, 5);
    const agent = await insertAgent(db.app, tenant, 'drill');
    for (const name of ['openai_api_key', 'github_token']) {
      const value = `sk-${randomBytes(16).toString('hex')}`;
      credentialValues.push(value);
      await withTenant(db.app, tenant, (tx) =>
        vault.putCredential(tx, { tenantId: tenant, agentId: agent, name }, value),
      );
    }
  }
  await createCheckpointService({
    sql: db.app,
    signing: setup.signing,
    publisher: setup.publisher,
    logger,
  }).makeCheckpoint();
});

after(async () => {
  await db.drop();
  await rm(dir, { recursive: true, force: true });
});

function inputs(overrides: Partial<DrillInputs> = {}): DrillInputs {
  return {
    target: db.target,
    ownerCredentials: db.ownerCredentials,
    appCredentials: db.appCredentials,
    dirs,
    signing: setup.signing,
    masterKeys,
    migrations: db.migrations,
    ...overrides,
  };
}

async function countRows(sql: TestDatabase['superuser'], table: string): Promise<number> {
  const [row] = await sql.unsafe<{ n: string }[]>(`select count(*)::text as n from ${table}`);
  return Number(row?.n);
}

/** An empty database and empty directories to restore into, removed after `use`. */
async function withEmptyTarget(
  use: (target: TestDatabase, into: Parameters<typeof restoreBackup>[2]) => Promise<void>,
): Promise<void> {
  const target = await createTestDatabase({ empty: true });
  const scratch = path.join(dir, `restore-${randomBytes(4).toString('hex')}`);
  const into = {
    target: target.target,
    ownerCredentials: target.ownerCredentials,
    dirs: {
      checkpointDir: path.join(scratch, 'checkpoints'),
      auditArchiveDir: path.join(scratch, 'archive'),
    },
  };
  try {
    await use(target, into);
  } finally {
    await target.drop();
    await rm(scratch, { recursive: true, force: true });
  }
}

async function assertNothingRestored(target: TestDatabase, into: { dirs: BackupDirectories }): Promise<void> {
  assert.equal(await userRelations(target.superuser), 0, 'no table was created');
  assert.deepEqual(await nonEmptyDirectories(into.dirs), [], 'no file was written');
}

/** A secret as a search may find it: raw, base64 (unpadded), base64url, and hex in either case. */
function encodings(secret: Buffer): [string, Buffer][] {
  const texts: [string, string][] = [
    ['base64', secret.toString('base64').replace(/=+$/, '')],
    ['base64url', secret.toString('base64url')],
    ['hex', secret.toString('hex')],
    ['HEX', secret.toString('hex').toUpperCase()],
  ];
  return [['raw', secret], ...texts.map(([form, text]): [string, Buffer] => [form, Buffer.from(text)])];
}

function rejectsWith(code: BackupErrorCode | MigratorErrorCode, pattern: RegExp) {
  return (error: unknown): boolean => {
    assert.equal((error as { code?: string }).code, code);
    assert.match((error as Error).message, pattern);
    return true;
  };
}

describe('the drill', () => {
  test('OPS-4: the drill backs up a populated database, restores it into a scratch database and passes every check, then records its outcome', async () => {
    const report = await runDrill(inputs());
    const lines = formatDrillReport(report);
    assert.equal(report.ok, true, lines.join('\n'));
    assert.deepEqual(
      report.checks.map((check) => [check.name, check.ok]),
      [
        ['backup', true],
        ['restore', true],
        ['migrations', true],
        ['row counts', true],
        ['audit chains', true],
        ['credentials', true],
      ],
    );
    const detail = Object.fromEntries(report.checks.map((check) => [check.name, check.detail]));
    assert.match(
      detail['audit chains'] ?? '',
      /^3 tenants, \d+ events verified against the latest checkpoint \(1 with no checkpointed head yet\)$/,
    );
    assert.match(detail.credentials ?? '', /^4 decrypt with the configured key \(master key version 1\)$/);
    assert.match(detail.backup ?? '', /encrypted$/);
    assert.ok(lines.length <= 24, 'the report fits one screen');
    assert.equal(lines.at(-1), 'Drill passed.');
    // The scratch database is gone (other test files may run drills of their own on this cluster).
    const scratchName = /scratch database (enclave_drill_[0-9a-f]+)/.exec(detail.restore ?? '')?.[1];
    assert.ok(scratchName !== undefined);
    const scratch = await db.superuser`select 1 from pg_database where datname = ${scratchName}`;
    assert.equal(scratch.length, 0);

    assert.equal(await latestDrill(db.app), undefined);
    await recordDrill(db.app, report);
    const latest = await latestDrill(db.app);
    assert.equal(latest?.ok, true);
    assert.equal(latest?.finishedAt.getTime(), report.finishedAt.getTime());
    assert.deepEqual(latest?.checks, report.checks);
  });

  test('OPS-4: the drill fails its credentials check under another master key, naming the credential', async () => {
    const other = envMasterKeyProvider(`1:${randomBytes(32).toString('base64')}`);
    const report = await runDrill(inputs({ masterKeys: other }));
    assert.equal(report.ok, false);
    const check = report.checks.find((c) => c.name === 'credentials');
    assert.equal(check?.ok, false);
    assert.equal(
      formatDrillReport(report).at(-1),
      'Drill FAILED: the backup could not be trusted to restore.',
    );
  });

  test('OPS-4: the drill fails its audit-chain check when a row was tampered with, naming the tenant and seq', async () => {
    const tenant = tenants[1] ?? '';
    const [row] = await db.superuser<{ seq: string }[]>`
      select max(seq)::text as seq from audit_events where tenant_id = ${tenant}::uuid`;
    await db.superuser.begin(async (tx) => {
      await tx`set local session_replication_role = replica`;
      await tx`update audit_events set canonical = replace(canonical, '"n":2', '"n":7')
               where tenant_id = ${tenant}::uuid and seq = ${Number(row?.seq) - 2}`;
    });
    try {
      const report = await runDrill(inputs());
      const check = report.checks.find((c) => c.name === 'audit chains');
      assert.equal(check?.ok, false);
      assert.match(check?.detail ?? '', new RegExp(`^tenant ${tenant}: .*seq ${Number(row?.seq) - 2}`));
    } finally {
      await db.superuser.begin(async (tx) => {
        await tx`set local session_replication_role = replica`;
        await tx`update audit_events set canonical = replace(canonical, '"n":7', '"n":2')
                 where tenant_id = ${tenant}::uuid and seq = ${Number(row?.seq) - 2}`;
      });
    }
  });
});

describe('backup', () => {
  test('OPS-4: a plain backup holds neither the master key (raw, base64, base64url or hex) nor any credential in plaintext', async () => {
    const { file, manifest } = await makeBackup(connectAdmin(), dirs, undefined);
    // The search can see: an unencrypted backup shows names as they are, and carries every credential row.
    assert.ok(file.includes(Buffer.from('drill one')));
    assert.ok(file.includes(Buffer.from('openai_api_key')));
    assert.equal(
      manifest.tables.find((table) => table.name === 'enclave.credentials')?.rows,
      credentialValues.length,
    );
    for (const [form, bytes] of encodings(masterKey)) {
      assert.equal(file.includes(bytes), false, `the master key (${form}) is in the backup`);
    }
    assert.equal(credentialValues.length, 4);
    for (const value of credentialValues) {
      for (const [form, bytes] of encodings(Buffer.from(value))) {
        assert.equal(file.includes(bytes), false, `a credential's plaintext (${form}) is in the backup`);
      }
    }
  });
});

describe('restore', () => {
  test('OPS-4: a backup restores into an empty database and directories with the same rows and files', async () => {
    const backup = await makeBackup(connectAdmin(), dirs, undefined);
    await withEmptyTarget(async (target, into) => {
      const result = await restoreBackup(backup.file, undefined, into, db.migrations);
      for (const table of [
        'enclave.tenants',
        'enclave.audit_events',
        'enclave.credentials',
        'enclave.checkpoints',
      ]) {
        assert.equal(await countRows(target.superuser, table), await countRows(db.superuser, table), table);
      }
      assert.ok(result.files >= 2, 'a checkpoint and an archive segment at least');
      assert.deepEqual(
        (await readdir(into.dirs.checkpointDir)).sort(),
        (await readdir(dirs.checkpointDir)).sort(),
      );
    });
  });

  test('OPS-4: restore into a non-empty database or directory is refused and changes nothing', async () => {
    const backup = await makeBackup(connectAdmin(), dirs, undefined);
    await assert.rejects(
      restoreBackup(
        backup.file,
        undefined,
        { target: db.target, ownerCredentials: db.ownerCredentials, dirs },
        db.migrations,
      ),
      rejectsWith(
        'restore_target_not_empty',
        /^database "test_[0-9a-f]+" is not empty \(\d+ tables, views or sequences\)/,
      ),
    );
    await withEmptyTarget(async (target, into) => {
      await restoreBackup(backup.file, undefined, into, db.migrations);
      const tenantsBefore = await countRows(target.superuser, 'enclave.tenants');
      await assert.rejects(
        restoreBackup(backup.file, undefined, into, db.migrations),
        rejectsWith('restore_target_not_empty', /is not empty/),
      );
      assert.equal(await countRows(target.superuser, 'enclave.tenants'), tenantsBefore);
    });
    await withEmptyTarget(async (target, into) => {
      await restoreBackup(
        backup.file,
        undefined,
        { ...into, dirs: { ...into.dirs, checkpointDir: dirs.checkpointDir } },
        db.migrations,
      )
        .then(() => assert.fail('restored over a checkpoint directory with files'))
        .catch(rejectsWith('restore_target_not_empty', /already holds files/));
      assert.equal(await userRelations(target.superuser), 0);
    });
  });

  test('OPS-4: a truncated backup file fails restore with a clear error and nothing is restored', async () => {
    for (const passphrase of [undefined, Buffer.from('correct horse battery staple')]) {
      const { file } = await makeBackup(connectAdmin(), dirs, passphrase);
      await withEmptyTarget(async (target, into) => {
        for (const cut of [1, 100, Math.floor(file.length / 2)]) {
          await assert.rejects(
            restoreBackup(file.subarray(0, file.length - cut), passphrase, into, db.migrations),
            rejectsWith('backup_invalid', /damaged or was altered \(.*(truncated|ends before)/),
          );
        }
        await assertNothingRestored(target, into);
      });
    }
  });

  test('OPS-4: one altered byte anywhere in a backup file fails restore with a clear error and nothing is restored', async () => {
    for (const passphrase of [undefined, Buffer.from('correct horse battery staple')]) {
      const { file } = await makeBackup(connectAdmin(), dirs, passphrase);
      const headerEnd = file.indexOf(0x0a, 20) + 1;
      await withEmptyTarget(async (target, into) => {
        for (const at of [headerEnd + 10, Math.floor(file.length / 2), file.length - 1]) {
          const altered = Buffer.from(file);
          altered[at] = (altered[at] ?? 0) ^ 0x01;
          await assert.rejects(
            restoreBackup(altered, passphrase, into, db.migrations),
            rejectsWith('backup_invalid', /damaged or was altered.*nothing was restored$/),
          );
        }
        await assertNothingRestored(target, into);
      });
    }
  });

  test('OPS-4: a wrong or missing backup passphrase is refused clearly and nothing is restored', async () => {
    const { file } = await makeBackup(connectAdmin(), dirs, Buffer.from('the right one'));
    assert.equal(file.includes(Buffer.from('drill one')), false, 'an encrypted backup shows no tenant data');
    await withEmptyTarget(async (target, into) => {
      await assert.rejects(
        restoreBackup(file, Buffer.from('the wrong one'), into, db.migrations),
        rejectsWith('backup_passphrase_wrong', /^the passphrase does not open this backup/),
      );
      await assert.rejects(
        restoreBackup(file, undefined, into, db.migrations),
        rejectsWith('backup_passphrase_needed', /encrypted: give its passphrase with --passphrase-file/),
      );
      await assertNothingRestored(target, into);
      await restoreBackup(file, Buffer.from('the right one'), into, db.migrations);
      assert.equal(
        await countRows(target.superuser, 'enclave.tenants'),
        await countRows(db.superuser, 'enclave.tenants'),
      );
    });
  });

  test('OPS-4: a restore that fails part-way, on a later migration the restored rows break, is undone: no Enclave table is left and the same target then takes the restore', async () => {
    const backup = await makeBackup(connectAdmin(), dirs, undefined);
    // A newer Enclave's migration: it runs after the rows are copied in, and they violate it.
    const newer: Migration = {
      version: (db.migrations.at(-1)?.version ?? 0) + 1,
      name: 'tenant_names_short',
      sql: 'alter table enclave.tenants add constraint tenant_names_short check (length(name) < 3)',
      checksum: 'not applied anywhere',
    };
    await withEmptyTarget(async (target, into) => {
      await assert.rejects(
        restoreBackup(backup.file, undefined, into, [...db.migrations, newer]),
        rejectsWith(
          'migration_failed',
          /^migration \d+ \(tenant_names_short\) failed: check constraint "tenant_names_short" .*is violated by some row/,
        ),
      );
      await assertNothingRestored(target, into);
      await restoreBackup(backup.file, undefined, into, db.migrations);
      assert.equal(
        await countRows(target.superuser, 'enclave.tenants'),
        await countRows(db.superuser, 'enclave.tenants'),
      );
    });
  });

  test('OPS-4: a restore that fails part-way, on a file it cannot write after the database and the checkpoints are in, is undone: no Enclave table and no restored file is left, and what it did not write is kept', async () => {
    const backup = await makeBackup(connectAdmin(), dirs, undefined);
    const files = await readDirectoryParts(dirs);
    assert.ok(files.some((part) => part.name.startsWith('checkpoints/')));
    const last = files.at(-1)?.name ?? '';
    assert.match(last, /^audit-archive\//, 'archive files are written last');
    await withEmptyTarget(async (target, into) => {
      // A directory where the last file goes: the emptiness check counts files,
      // so the restore goes ahead and fails on that file, last of all.
      const blocked = partTarget(last, into.dirs) ?? '';
      await mkdir(blocked, { recursive: true });
      await assert.rejects(restoreBackup(backup.file, undefined, into, db.migrations), (error) => {
        assert.equal((error as NodeJS.ErrnoException).code, 'EEXIST');
        assert.equal((error as NodeJS.ErrnoException).path, blocked);
        return true;
      });
      await assertNothingRestored(target, into);
      assert.ok((await stat(blocked)).isDirectory(), 'the directory the restore did not make is kept');
      await rm(blocked, { recursive: true });
      const result = await restoreBackup(backup.file, undefined, into, db.migrations);
      assert.equal(result.files, files.length);
    });
  });

  test('OPS-4: a file that is not a backup, or one made by a newer Enclave, is refused before anything changes', async () => {
    const { file } = await makeBackup(connectAdmin(), dirs, undefined);
    await withEmptyTarget(async (target, into) => {
      await assert.rejects(
        restoreBackup(Buffer.from('PGDMP not ours'), undefined, into, db.migrations),
        rejectsWith('backup_invalid', /not an Enclave backup file/),
      );
      await assert.rejects(
        restoreBackup(file, undefined, into, db.migrations.slice(0, -1)),
        rejectsWith('backup_incompatible', /this version of Enclave does not know/),
      );
      await assertNothingRestored(target, into);
    });
  });
});

let admin: ReturnType<typeof connect> | undefined;
function connectAdmin(): ReturnType<typeof connect> {
  admin ??= connect(db.target, db.target.admin, { max: 2 });
  return admin;
}
after(async () => {
  await admin?.end({ timeout: 5 });
});
