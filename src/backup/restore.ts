import { rm } from 'node:fs/promises';
import type { Sql } from 'postgres';
import { type Migration, migrate } from '../db/migrator.ts';
import { prepareDatabase } from '../db/roles.ts';
import { type Credentials, connect, type DbTarget } from '../db/target.ts';
import { type Manifest, openFile, type Part, unpackBody } from './container.ts';
import { loadDatabase, SCHEMAS, userRelations } from './database-copy.ts';
import { BackupError } from './errors.ts';
import { type BackupDirectories, nonEmptyDirectories, writeDirectoryParts } from './files.ts';

// `enclave restore` (OPS-4). In order, and stopping at the first problem:
//   1. the whole file is read and checked (trailer or GCM tag, then every
//      part's SHA-256): a truncated or altered file, or a wrong passphrase,
//      stops here, before anything is touched;
//   2. the backup's migrations must be ones this Enclave has, unchanged;
//   3. the target must be empty: no relation in the database, no file in the
//      checkpoint or archive directory;
//   4. the database is migrated to the backup's schema, the rows are copied
//      back in one transaction, later migrations run, and the files are
//      written. If any of step 4 fails, what it made is removed again (the
//      schemas, and the files it wrote, never a path it did not), so the
//      target is left empty, never half-restored.

export interface RestoreTarget {
  /** The database to restore into, with admin credentials that bypass row-level security. */
  readonly target: DbTarget;
  readonly ownerCredentials: Credentials;
  readonly dirs: BackupDirectories;
}

export interface RestoreResult {
  readonly manifest: Manifest;
  readonly files: number;
}

/** Step 1: the file's manifest and parts, every byte checked. */
export async function readBackup(
  file: Buffer,
  passphrase: Buffer | undefined,
): Promise<{ manifest: Manifest; parts: Part[] }> {
  return unpackBody(await openFile(file, passphrase));
}

/** Step 2: the migrations to apply before the rows go in (the backup's), checked against this code's. */
function migrationsOf(manifest: Manifest, migrations: readonly Migration[]): readonly Migration[] {
  manifest.migrations.forEach((applied, index) => {
    const known = migrations[index];
    if (known === undefined || known.version !== applied.version) {
      throw new BackupError(
        'backup_incompatible',
        `the backup has migration ${applied.version}, which this version of Enclave does not know; restore with the newer Enclave that made it`,
      );
    }
    if (known.checksum !== applied.checksum) {
      throw new BackupError(
        'backup_incompatible',
        `migration ${applied.version} in the backup differs from this Enclave's; restore with the Enclave version that made it`,
      );
    }
  });
  return migrations.slice(0, manifest.migrations.length);
}

/** Step 3: refuses a target that holds anything. */
export async function assertEmptyTarget(admin: Sql, into: RestoreTarget): Promise<void> {
  const relations = await userRelations(admin);
  if (relations > 0) {
    throw new BackupError(
      'restore_target_not_empty',
      `database "${into.target.database}" is not empty (${relations} tables, views or sequences): restore only into a new, empty database or data directory`,
    );
  }
  const dirs = await nonEmptyDirectories(into.dirs);
  if (dirs.length > 0) {
    throw new BackupError(
      'restore_target_not_empty',
      `${dirs.join(' and ')} already holds files: restore only into empty checkpoint and archive directories`,
    );
  }
}

async function withOwner<T>(into: RestoreTarget, fn: (owner: Sql) => Promise<T>): Promise<T> {
  const owner = connect(into.target, into.ownerCredentials, { max: 1, applicationName: 'enclave-restore' });
  try {
    return await fn(owner);
  } finally {
    await owner.end({ timeout: 5 });
  }
}

/**
 * Back to empty after a failed step 4: Enclave's schemas dropped (and its own
 * recreated), the files this restore wrote removed. A path it did not write
 * (one that appeared after step 3) is not its to remove.
 */
async function undo(admin: Sql, into: RestoreTarget, written: readonly string[]): Promise<void> {
  await admin.unsafe(`drop schema if exists ${SCHEMAS.join(', ')} cascade`);
  await prepareDatabase(admin, into.target.database);
  for (const file of written) await rm(file, { force: true });
}

export async function restoreBackup(
  file: Buffer,
  passphrase: Buffer | undefined,
  into: RestoreTarget,
  migrations: readonly Migration[],
): Promise<RestoreResult> {
  const { manifest, parts } = await readBackup(file, passphrase);
  const backupMigrations = migrationsOf(manifest, migrations);
  const admin = connect(into.target, into.target.admin, { max: 1, applicationName: 'enclave-restore' });
  try {
    await assertEmptyTarget(admin, into);
    await prepareDatabase(admin, into.target.database);
    const written: string[] = [];
    try {
      await withOwner(into, (owner) => migrate(owner, into.target, into.ownerCredentials, backupMigrations));
      await loadDatabase(
        admin,
        manifest.tables,
        manifest.sequences,
        new Map(parts.map((part) => [part.name, part.data])),
      );
      await withOwner(into, (owner) => migrate(owner, into.target, into.ownerCredentials, migrations));
      const files = await writeDirectoryParts(parts, into.dirs, written);
      return { manifest, files };
    } catch (error) {
      await undo(admin, into, written);
      throw error;
    }
  } finally {
    await admin.end({ timeout: 5 });
  }
}
