import { AppError } from '../errors.ts';

// Codes the vault raises. Only credential_invalid and not_found reach a
// client (as 400 and 404); the rest are operator problems: a start-up error
// naming the key source, or a 500 whose message stays in the server log.
export type VaultErrorCode =
  /** The master-key source is missing, unreadable or malformed. */
  | 'master_key_invalid'
  /** The master key does not open what this database holds (wrong key). */
  | 'master_key_mismatch'
  /** A master-key version the data needs is not held by the provider. */
  | 'master_key_unavailable'
  /** The provider cannot add or remove versions (rotation needs an operator step). */
  | 'master_key_read_only'
  /** A ciphertext or wrapped key failed its authentication check. */
  | 'ciphertext_rejected'
  | 'validation_failed'
  | 'not_found';

export class VaultError extends AppError<VaultErrorCode> {
  constructor(code: VaultErrorCode, message: string, options?: { cause?: unknown; field?: string }) {
    super(code, message, options);
    this.name = 'VaultError';
  }
}
