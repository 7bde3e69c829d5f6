import { AppError } from '../errors.ts';

// What can go wrong with a backup file or a restore target (OPS-4). Each
// message says what was found and what to do; none carries a passphrase.

export type BackupErrorCode =
  | 'backup_invalid' // not a backup, truncated or altered: nothing was restored
  | 'backup_passphrase_wrong' // the passphrase does not open this backup
  | 'backup_passphrase_needed' // an encrypted backup and no --passphrase-file (or a plain one and one given)
  | 'backup_incompatible' // made by a newer Enclave, or a table whose columns differ
  | 'restore_target_not_empty' // the database or a directory to restore into already holds data
  | 'backup_privilege_missing'; // the admin connection cannot read or write past row-level security

export class BackupError extends AppError<BackupErrorCode> {}
