import { constants, existsSync } from 'node:fs';
import { access, link, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { loadAuditSetup } from '../audit/setup.ts';
import { makeBackup } from '../backup/backup.ts';
import { isEncrypted } from '../backup/container.ts';
import { formatDrillReport, runDrill } from '../backup/drill.ts';
import { recordDrill } from '../backup/drill-record.ts';
import { BackupError } from '../backup/errors.ts';
import { readBackup, restoreBackup } from '../backup/restore.ts';
import { type Config, type Env, loadConfig } from '../config.ts';
import { openDatabase } from '../db/database.ts';
import { connect } from '../db/target.ts';
import { loadMasterKeyProvider } from '../vault/service.ts';
import type { Io } from './main.ts';
import { shown, UsageError } from './usage-error.ts';

// `enclave backup FILE`, `enclave restore FILE` and `enclave drill` (OPS-4):
// the operator's side of src/backup/. Each works on the same database and
// directories as `npm start` (ENCLAVE_DATA_DIR's embedded cluster, or
// DATABASE_URL).

export interface BackupArgs {
  readonly command: 'backup' | 'restore' | 'drill';
  readonly rest: readonly string[];
  readonly passphraseFile: string | undefined;
}

const MASTER_KEY_REMINDER =
  'The master key is not in the backup: keep ENCLAVE_MASTER_KEY (or its file) apart from it; a restore needs the same key to open the credentials.';

function fileArgument(args: BackupArgs): string {
  const [file, ...extra] = args.rest;
  if (file === undefined || file === '') throw new UsageError(`"${args.command}" needs a FILE`);
  if (extra.length > 0)
    throw new UsageError(`"${args.command}" takes one FILE (got also ${shown(extra[0])})`);
  return file;
}

/** The passphrase file's first line: a trailing newline from an editor or `echo` is not part of it. */
async function readPassphrase(file: string | undefined): Promise<Buffer | undefined> {
  if (file === undefined) return undefined;
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    throw new UsageError(
      `cannot read --passphrase-file ${shown(file)} (${(error as NodeJS.ErrnoException).code})`,
    );
  }
  const passphrase = text.replace(/\r?\n$/, '');
  if (passphrase.length < 8)
    throw new UsageError('the passphrase in --passphrase-file must be at least 8 characters');
  return Buffer.from(passphrase, 'utf8');
}

function directories(config: Config) {
  return { checkpointDir: config.checkpointDir, auditArchiveDir: config.auditArchiveDir };
}

async function backup(args: BackupArgs, env: Env, io: Io): Promise<number> {
  const file = fileArgument(args);
  const passphrase = await readPassphrase(args.passphraseFile);
  const config = loadConfig(env, process.cwd());
  // Said before the snapshot is taken, not after.
  if (existsSync(file))
    throw new UsageError(`${shown(file)} exists; choose another name (a backup is never overwritten)`);
  await access(path.dirname(path.resolve(file)), constants.W_OK).catch((error: NodeJS.ErrnoException) => {
    throw new UsageError(`cannot write into the directory of ${shown(file)} (${error.code})`);
  });
  const db = await openDatabase(config, env, { appPoolSize: 1 });
  try {
    const admin = connect(db.target, db.target.admin, { max: 1, applicationName: 'enclave-backup' });
    let made: Awaited<ReturnType<typeof makeBackup>>;
    try {
      made = await makeBackup(admin, directories(config), passphrase);
    } finally {
      await admin.end({ timeout: 5 });
    }
    // Written beside FILE, then linked to its name: a reader never sees half
    // a backup, and link() never replaces an existing FILE.
    const temporary = `${file}.${process.pid}.partial`;
    await writeFile(temporary, made.file, { mode: 0o600, flag: 'wx' }).catch(
      (error: NodeJS.ErrnoException) => {
        throw new UsageError(`cannot write ${shown(temporary)} (${error.code})`);
      },
    );
    try {
      await link(temporary, file);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'EEXIST') {
        throw new UsageError(`${shown(file)} exists; choose another name (a backup is never overwritten)`);
      }
      throw error;
    } finally {
      await rm(temporary, { force: true });
    }
    const rows = made.manifest.tables.reduce((sum, table) => sum + table.rows, 0);
    io.out(
      `Wrote ${file}: ${made.manifest.tables.length} tables, ${rows} rows, ${made.parts - made.manifest.tables.length} checkpoint and archive files, ${passphrase === undefined ? 'NOT encrypted (use --passphrase-file to encrypt)' : 'encrypted'}.`,
    );
    io.out(MASTER_KEY_REMINDER);
    return 0;
  } finally {
    await db.close();
  }
}

async function restore(args: BackupArgs, env: Env, io: Io): Promise<number> {
  const file = fileArgument(args);
  const passphrase = await readPassphrase(args.passphraseFile);
  const config = loadConfig(env, process.cwd());
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch (error) {
    throw new UsageError(`cannot read ${shown(file)} (${(error as NodeJS.ErrnoException).code})`);
  }
  if (passphrase === undefined && isEncrypted(bytes)) {
    throw new BackupError(
      'backup_passphrase_needed',
      'this backup is encrypted: give its passphrase with --passphrase-file FILE',
    );
  }
  // The whole file is checked before a cluster is started or a directory made.
  await readBackup(bytes, passphrase);
  const db = await openDatabase(config, env, { appPoolSize: 1, migrate: false });
  try {
    const result = await restoreBackup(
      bytes,
      passphrase,
      { target: db.target, ownerCredentials: db.ownerCredentials, dirs: directories(config) },
      db.migrations,
    );
    const rows = result.manifest.tables.reduce((sum, table) => sum + table.rows, 0);
    io.out(
      `Restored ${file} (made ${result.manifest.created_at}) into database "${db.target.database}": ${rows} rows, ${result.files} checkpoint and archive files.`,
    );
    io.out(MASTER_KEY_REMINDER);
    io.out('Check it with: enclave drill');
    return 0;
  } finally {
    await db.close();
  }
}

async function drill(env: Env, io: Io): Promise<number> {
  const config = loadConfig(env, process.cwd());
  const [audit, masterKeys] = await Promise.all([
    loadAuditSetup(config, env),
    loadMasterKeyProvider(config, env),
  ]);
  const db = await openDatabase(config, env, { appPoolSize: 2 });
  try {
    const report = await runDrill({
      target: db.target,
      ownerCredentials: db.ownerCredentials,
      appCredentials: db.appCredentials,
      dirs: directories(config),
      signing: audit.signing,
      masterKeys,
      migrations: db.migrations,
    });
    await recordDrill(db.app, report);
    for (const line of formatDrillReport(report)) io.out(line);
    return report.ok ? 0 : 1;
  } finally {
    await db.close();
  }
}

export async function runBackupCommand(args: BackupArgs, env: Env, io: Io): Promise<number> {
  switch (args.command) {
    case 'backup':
      return backup(args, env, io);
    case 'restore':
      return restore(args, env, io);
    default:
      if (args.rest.length > 0)
        throw new UsageError(`"drill" takes no arguments (got ${shown(args.rest[0])})`);
      if (args.passphraseFile !== undefined)
        throw new UsageError('--passphrase-file is an option of "backup" and "restore"');
      return drill(env, io);
  }
}
