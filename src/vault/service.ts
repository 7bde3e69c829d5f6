import type { Sql } from 'postgres';
import type { TenantSql } from '../db/tenant.ts';
import {
  type CredentialListing,
  credentialValueProblem,
  deleteCredential,
  last4Of,
  lendCredential,
  lendCredentialAlone,
  listCredentials,
  MAX_CREDENTIAL_CHARACTERS,
  type PutCredentialOptions,
  putCredential,
} from './credentials.ts';
import type { StoredUnderDataKey } from './data-key-seal.ts';
import { checkMasterKeys, verifyMasterKeys } from './data-keys.ts';
import type { CredentialAddress } from './envelope.ts';
import type { MasterKeyProvider } from './master-keys.ts';

// AES-256-GCM for other short-lived secrets (accounts/secret-flash.ts), so this folder stays the one place that decrypts (VLT-5).
export { open, type Sealed, seal } from './envelope.ts';
export { VaultError } from './errors.ts';
export { loadMasterKeyProvider, type MasterKeyProvider } from './master-keys.ts';

import { rotateMasterKey, rotateTenantKey } from './rotation.ts';
import { lendTotpSecret, sealTotpSecret, type TotpSecretAddress } from './totp-secrets.ts';

// What other capabilities may use of the vault. Every tenant-data function
// takes the caller's tenant transaction, so a credential write commits or
// rolls back with the action (and audit event) around it.

export type { SealedUnderDataKey, StoredUnderDataKey } from './data-key-seal.ts';
export type { CredentialAddress, CredentialListing, TotpSecretAddress };
export { credentialValueProblem, last4Of, MAX_CREDENTIAL_CHARACTERS };

export function createVault(deps: { provider: MasterKeyProvider }) {
  const { provider } = deps;
  return {
    /** Start-up check that the master key opens this database's data keys. */
    checkMasterKeys: (sql: Sql) => checkMasterKeys(sql, provider),
    /** The same check without registering a first version: the master-key versions in use. */
    verifyMasterKeys: (sql: Sql) => verifyMasterKeys(sql, provider),
    putCredential: (
      tx: TenantSql,
      address: CredentialAddress,
      value: string,
      options?: PutCredentialOptions,
    ) => putCredential(tx, provider, address, value, options),
    listCredentials: (tx: TenantSql, agentId: string) => listCredentials(tx, agentId),
    deleteCredential: (tx: TenantSql, address: CredentialAddress) => deleteCredential(tx, address),
    lendCredential: <T>(
      tx: TenantSql,
      address: CredentialAddress,
      use: (plaintext: Buffer) => Promise<T> | T,
    ) => lendCredential(tx, provider, address, use),
    /** lendCredential in one statement of its own, outside any transaction (the model gateway's per-call read). */
    lendCredentialAlone: <T>(
      sql: Sql,
      address: CredentialAddress,
      use: (plaintext: Buffer) => Promise<T> | T,
    ) => lendCredentialAlone(sql, provider, address, use),
    /** A TOTP secret sealed for its own purpose (ACC-8); the caller writes the row in the same transaction. */
    sealTotpSecret: (tx: TenantSql, address: TotpSecretAddress, secret: Buffer) =>
      sealTotpSecret(tx, provider, address, secret),
    /** The one way to a TOTP secret: lent to `use`, zeroed when it settles. */
    lendTotpSecret: <T>(
      address: TotpSecretAddress,
      row: StoredUnderDataKey,
      use: (secret: Buffer) => Promise<T> | T,
    ) => lendTotpSecret(provider, address, row, use),
    rotateTenantKey: (sql: Sql, tenantId: string, actor: string) =>
      rotateTenantKey(sql, provider, tenantId, actor),
    rotateMasterKey: (sql: Sql, actor: string) => rotateMasterKey(sql, provider, actor),
  };
}

export type Vault = ReturnType<typeof createVault>;
