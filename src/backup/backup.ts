import type { Sql } from 'postgres';
import {
  BACKUP_FORMAT,
  BACKUP_VERSION,
  type Manifest,
  PASSPHRASE_COST,
  packBody,
  type ScryptCost,
  sealFile,
} from './container.ts';
import { snapshotDatabase } from './database-copy.ts';
import { type BackupDirectories, readDirectoryParts } from './files.ts';

// `enclave backup` (OPS-4): one snapshot of the database and the two
// write-once directories, framed and sealed by container.ts. The master key
// is not in it: it lives outside the database (ENCLAVE_MASTER_KEY or its
// file), and the backup holds credentials only as ciphertext under data keys
// that are themselves wrapped by it. Restoring a backup needs the same
// master key, kept apart from backups.

export interface BackupResult {
  readonly file: Buffer;
  readonly manifest: Omit<Manifest, 'parts'>;
  readonly parts: number;
}

export async function makeBackup(
  admin: Sql,
  dirs: BackupDirectories,
  passphrase: Buffer | undefined,
  options: { readonly now?: Date; readonly cost?: ScryptCost } = {},
): Promise<BackupResult> {
  // The directories are read while the snapshot's transaction is open and
  // holds the archive lock shared, so retention cannot delete a segment the
  // snapshot still lists.
  const { snapshot, files } = await snapshotDatabase(admin, () => readDirectoryParts(dirs));
  const manifest: Omit<Manifest, 'parts'> = {
    format: BACKUP_FORMAT,
    version: BACKUP_VERSION,
    created_at: (options.now ?? new Date()).toISOString(),
    server: snapshot.server,
    migrations: snapshot.migrations,
    tables: snapshot.tables,
    sequences: snapshot.sequences,
  };
  const parts = [...snapshot.parts, ...files];
  return {
    file: await sealFile(packBody(manifest, parts), passphrase, options.cost ?? PASSPHRASE_COST),
    manifest,
    parts: parts.length,
  };
}
