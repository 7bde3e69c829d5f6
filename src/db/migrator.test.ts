// Attack: a schema changes behind the code's back (an edited or unknown migration, a half-applied one, or two servers migrating at once), leaving tables without the protections the migrations promise.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Sql } from 'postgres';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/database.ts';
import { type Migration, migrate, pendingMigrations, readMigrations } from './migrator.ts';

// Tests run in order on one empty database: never migrated, then migrated
// by two starters at once, then probed with tampered migration lists.

let db: TestDatabase;
let owner: Sql;
let migrations: readonly Migration[];
const tempDirs: string[] = [];

before(async () => {
  db = await createTestDatabase({ empty: true });
  owner = db.connectAs(db.ownerCredentials, 2);
  migrations = db.migrations;
});
after(async () => {
  await db.drop();
  await Promise.all(tempDirs.map((dir) => rm(dir, { recursive: true, force: true })));
});

const label = (m: Migration): string => `${String(m.version).padStart(4, '0')}_${m.name}`;
const sha256 = (text: string): string => createHash('sha256').update(text).digest('hex');

async function ledgerVersions(): Promise<number[]> {
  const rows = await owner<{ version: number }[]>`select version from schema_migrations order by version`;
  return rows.map((row) => row.version);
}

function hasCode(code: string, message?: RegExp) {
  return (error: Error & { code?: string }): boolean => {
    assert.equal(error.code, code, error.message);
    if (message !== undefined) assert.match(error.message, message);
    return true;
  };
}

async function migrationDir(files: Record<string, string>): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'enclave-migrations-'));
  tempDirs.push(dir);
  for (const [name, sql] of Object.entries(files)) await writeFile(path.join(dir, name), sql);
  return dir;
}

describe('migrator', () => {
  test('OPS-4: pendingMigrations lists every version on a never-migrated database', async () => {
    assert.ok(migrations.length > 0);
    assert.deepEqual(
      await pendingMigrations(owner, migrations),
      migrations.map((m) => m.version),
    );
  });

  test('OPS-4: two migrators started at once both succeed and apply each migration exactly once', async () => {
    const first = db.connectAs(db.ownerCredentials, 2);
    const second = db.connectAs(db.ownerCredentials, 2);
    const results = await Promise.all([
      migrate(first, db.target, db.ownerCredentials, migrations),
      migrate(second, db.target, db.ownerCredentials, migrations),
    ]);
    const applied = results.flatMap((result) => result.applied);
    assert.deepEqual([...applied].sort(), migrations.map(label).sort());
    assert.deepEqual(
      await ledgerVersions(),
      migrations.map((m) => m.version),
    );
    const [schema] = await db.superuser<{ found: boolean }[]>`
      select exists (select 1 from pg_namespace where nspname = 'graphile_worker') as found`;
    assert.equal(schema?.found, true);
  });

  test('OPS-4: running again applies nothing and leaves nothing pending', async () => {
    const result = await migrate(owner, db.target, db.ownerCredentials, migrations);
    assert.deepEqual(result.applied, []);
    assert.deepEqual(await pendingMigrations(owner, migrations), []);
    assert.equal((await ledgerVersions()).length, migrations.length);
  });

  test('OPS-2: after migrating, enclave_app can add a job inside its own transaction, and it rolls back with it', async () => {
    const jobs = async (): Promise<number> => {
      const [row] = await db.superuser<{ count: number }[]>`
        select count(*)::int as count from graphile_worker._private_jobs j
        join graphile_worker._private_tasks t on t.id = j.task_id
        where t.identifier = 'platform_heartbeat'`;
      return row?.count ?? -1;
    };
    const before = await jobs();
    await db.app.begin((tx) => tx`select graphile_worker.add_job('platform_heartbeat', '{}'::json)`);
    assert.equal(await jobs(), before + 1);
    await assert.rejects(
      db.app.begin(async (tx) => {
        await tx`select graphile_worker.add_job('platform_heartbeat', '{}'::json)`;
        throw new Error('work failed');
      }),
      /work failed/,
    );
    assert.equal(await jobs(), before + 1);
  });

  test('OPS-4: a migration changed after it was applied is refused', async () => {
    const [first, ...rest] = migrations;
    assert.ok(first !== undefined);
    const editedSql = `${first.sql}\n-- edited after release\n`;
    const edited: Migration[] = [{ ...first, sql: editedSql, checksum: sha256(editedSql) }, ...rest];
    await assert.rejects(
      migrate(owner, db.target, db.ownerCredentials, edited),
      hasCode('migration_invalid', /changed after it was applied/),
    );
    assert.equal((await ledgerVersions()).length, migrations.length);
  });

  test('OPS-4: a database with a migration this code does not know is refused', async () => {
    await owner`insert into schema_migrations (version, name, checksum) values (9999, 'from_the_future', 'x')`;
    try {
      await assert.rejects(
        migrate(owner, db.target, db.ownerCredentials, migrations),
        hasCode('migration_invalid', /9999/),
      );
    } finally {
      await owner`delete from schema_migrations where version = 9999`;
    }
  });

  test('OPS-4: a failing migration leaves no trace, and the lock is released for the next start', async () => {
    const sql = 'create table enclave.half (x int); select 1/0;';
    const failing: Migration = {
      version: migrations.length + 1,
      name: 'half',
      sql,
      checksum: sha256(sql),
    };
    await assert.rejects(
      migrate(owner, db.target, db.ownerCredentials, [...migrations, failing]),
      hasCode('migration_failed', /half/),
    );
    const [row] = await db.superuser<
      { half: string | null }[]
    >`select to_regclass('enclave.half')::text as half`;
    assert.equal(row?.half, null);
    assert.deepEqual(
      await ledgerVersions(),
      migrations.map((m) => m.version),
    );
    const again = await migrate(owner, db.target, db.ownerCredentials, migrations);
    assert.deepEqual(again.applied, []);
  });

  test('OPS-4: readMigrations reads NNNN_snake_case.sql files in order with their checksums', async () => {
    const dir = await migrationDir({
      '0002_second.sql': 'select 2;',
      '0001_first.sql': 'select 1;',
      'README.md': 'not a migration',
    });
    const read = await readMigrations(dir);
    assert.deepEqual(
      read.map((m) => ({ ...m })),
      [
        { version: 1, name: 'first', sql: 'select 1;', checksum: sha256('select 1;') },
        { version: 2, name: 'second', sql: 'select 2;', checksum: sha256('select 2;') },
      ],
    );
  });

  test('OPS-4: readMigrations rejects badly named files', async () => {
    for (const name of ['0001_Bad-Name.sql', '1_short.sql', '0001-dash.sql', '0001_.sql', 'init.sql']) {
      const dir = await migrationDir({ [name]: 'select 1;' });
      await assert.rejects(readMigrations(dir), hasCode('migration_invalid'), name);
    }
  });

  test('OPS-4: readMigrations rejects gaps, duplicates and numbering that does not start at 0001', async () => {
    for (const files of [
      { '0001_a.sql': '', '0003_c.sql': '' },
      { '0001_a.sql': '', '0001_b.sql': '' },
      { '0002_b.sql': '' },
    ]) {
      const dir = await migrationDir(files);
      await assert.rejects(readMigrations(dir), hasCode('migration_invalid'), Object.keys(files).join(', '));
    }
  });
});
