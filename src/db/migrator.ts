import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { Logger as GraphileLogger, runMigrations as runWorkerMigrations } from 'graphile-worker';
import type { Sql } from 'postgres';
import { AppError } from '../errors.ts';
import { APP_ROLE, type Credentials, connectionUrl, type DbTarget } from './target.ts';

// Forward-only numbered SQL migrations (src/db/migrations/NNNN_name.sql), each
// in its own transaction, recorded in a ledger. A session advisory lock makes
// concurrent starters queue: the first migrates, the rest find nothing to do.
// The job queue's own schema (graphile-worker) is migrated under the same lock.

export type MigratorErrorCode = 'migration_invalid' | 'migration_failed';

export interface Migration {
  readonly version: number;
  readonly name: string;
  readonly sql: string;
  readonly checksum: string;
}

export const MIGRATIONS_DIR = path.join(import.meta.dirname, 'migrations');
const MIGRATION_LOCK = 'enclave.migrate';

export async function readMigrations(dir: string = MIGRATIONS_DIR): Promise<Migration[]> {
  const files = (await readdir(dir)).filter((file) => file.endsWith('.sql')).sort();
  const migrations: Migration[] = [];
  for (const [index, file] of files.entries()) {
    const match = /^(\d{4})_([a-z0-9_]+)\.sql$/.exec(file);
    if (match === null) throw new AppError('migration_invalid', `${file}: name must be NNNN_snake_case.sql`);
    const version = Number(match[1]);
    if (version !== index + 1) {
      throw new AppError(
        'migration_invalid',
        `${file}: expected version ${String(index + 1).padStart(4, '0')}`,
      );
    }
    const sql = await readFile(path.join(dir, file), 'utf8');
    const checksum = createHash('sha256').update(sql).digest('hex');
    migrations.push({ version, name: match[2] ?? '', sql, checksum });
  }
  return migrations;
}

interface LedgerRow {
  version: number;
  name: string;
  checksum: string;
}

async function ensureLedger(sql: Sql): Promise<void> {
  await sql`
    create table if not exists schema_migrations (
      version int primary key,
      name text not null,
      checksum text not null,
      applied_at timestamptz not null default now()
    )`;
  // /readyz (running as the app role) compares the ledger with the files on disk.
  await sql.unsafe(`grant select on schema_migrations to ${APP_ROLE}`);
}

function verifyApplied(applied: LedgerRow[], migrations: Migration[]): void {
  for (const row of applied) {
    const file = migrations.find((m) => m.version === row.version);
    if (file === undefined) {
      throw new AppError(
        'migration_invalid',
        `the database has migration ${row.version} (${row.name}) that this version of Enclave does not know; refusing to run older code against a newer schema`,
      );
    }
    if (file.checksum !== row.checksum) {
      throw new AppError(
        'migration_invalid',
        `migration ${row.version} (${row.name}) was changed after it was applied; write a new migration instead`,
      );
    }
  }
}

// The job queue's tables are global (see global-tables.ts); the app role adds
// jobs inside its own transactions and the worker, also the app role, runs
// them. graphile-worker enables RLS on its tables with no policy (so only
// their owner sees rows); the app role gets one open policy per table.
async function grantJobQueue(sql: Sql): Promise<void> {
  await sql.unsafe(`
    grant usage on schema graphile_worker to ${APP_ROLE};
    grant select, insert, update, delete on all tables in schema graphile_worker to ${APP_ROLE};
    grant usage, select on all sequences in schema graphile_worker to ${APP_ROLE};
    grant execute on all functions in schema graphile_worker to ${APP_ROLE};
  `);
  const statements = await sql<{ text: string }[]>`
    select format('create policy enclave_job_queue on graphile_worker.%I to %I using (true) with check (true)',
                  c.relname, ${APP_ROLE}::text) as text
    from pg_class c
    join pg_namespace n on n.oid = c.relnamespace and n.nspname = 'graphile_worker'
    where c.relkind = 'r' and c.relrowsecurity
      and not exists (select 1 from pg_policy p where p.polrelid = c.oid and p.polname = 'enclave_job_queue')`;
  for (const { text } of statements) await sql.unsafe(text);
}

export interface MigrateResult {
  readonly applied: readonly string[];
}

/** Runs pending migrations as the owner role. `owner` must be a pool for that role. */
export async function migrate(
  owner: Sql,
  target: DbTarget,
  ownerCredentials: Credentials,
  migrations: readonly Migration[],
): Promise<MigrateResult> {
  const applied: string[] = [];
  const lockHolder = await owner.reserve();
  try {
    await lockHolder`select pg_advisory_lock(hashtext(${MIGRATION_LOCK}))`;
    await ensureLedger(lockHolder);
    const done = await lockHolder<
      LedgerRow[]
    >`select version, name, checksum from schema_migrations order by version`;
    verifyApplied(done, [...migrations]);
    for (const migration of migrations) {
      if (done.some((row) => row.version === migration.version)) continue;
      // A reserved connection has no begin(): the transaction is spelled out.
      try {
        await lockHolder`begin`;
        await lockHolder.unsafe(migration.sql);
        await lockHolder`
          insert into schema_migrations (version, name, checksum)
          values (${migration.version}, ${migration.name}, ${migration.checksum})`;
        await lockHolder`commit`;
      } catch (error) {
        await lockHolder`rollback`.catch(() => undefined);
        throw new AppError(
          'migration_failed',
          `migration ${migration.version} (${migration.name}) failed: ${(error as Error).message}`,
          { cause: error },
        );
      }
      applied.push(`${String(migration.version).padStart(4, '0')}_${migration.name}`);
    }
    await runWorkerMigrations({
      connectionString: connectionUrl(target, ownerCredentials),
      logger: new GraphileLogger(() => () => {}),
    });
    await grantJobQueue(lockHolder);
  } finally {
    await lockHolder`select pg_advisory_unlock(hashtext(${MIGRATION_LOCK}))`.catch(() => undefined);
    lockHolder.release();
  }
  return { applied };
}

/** Versions this code knows that the database has not applied. */
export async function pendingMigrations(sql: Sql, migrations: readonly Migration[]): Promise<number[]> {
  let rows: { version: number }[];
  try {
    rows = await sql<{ version: number }[]>`select version from schema_migrations`;
  } catch (error) {
    if ((error as { code?: string }).code === '42P01') return migrations.map((m) => m.version); // never migrated
    throw error;
  }
  const done = new Set(rows.map((row) => row.version));
  return migrations.filter((m) => !done.has(m.version)).map((m) => m.version);
}
