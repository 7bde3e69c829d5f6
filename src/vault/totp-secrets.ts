import type { TenantSql } from '../db/tenant.ts';
import {
  lendUnderDataKey,
  resealUnderDataKey,
  type SealedUnderDataKey,
  type StoredUnderDataKey,
  sealUnderDataKey,
} from './data-key-seal.ts';
import { type TotpSecretAddress, totpSecretAad } from './envelope.ts';
import type { MasterKeyProvider } from './master-keys.ts';

// TOTP secrets (ACC-8) are kept like credentials: sealed under the tenant's
// data key, lent as a Buffer zeroed after use, re-sealed by a tenant key
// rotation. Their associated data names a purpose of their own
// (totpSecretAad), so key material for sign-in stays apart from customer
// credentials. The rows live in totp_secrets (src/factors/totp-secrets.ts
// reads and writes them); only this folder opens them.

export type { TotpSecretAddress };

export function sealTotpSecret(
  tx: TenantSql,
  provider: MasterKeyProvider,
  address: TotpSecretAddress,
  secret: Buffer,
): Promise<SealedUnderDataKey> {
  return sealUnderDataKey(tx, provider, address.tenantId, secret, (version) =>
    totpSecretAad(address, version),
  );
}

export function lendTotpSecret<T>(
  provider: MasterKeyProvider,
  address: TotpSecretAddress,
  row: StoredUnderDataKey,
  use: (secret: Buffer) => Promise<T> | T,
): Promise<T> {
  return lendUnderDataKey(provider, address.tenantId, row, totpSecretAad(address, row.key_version), use);
}

/** A tenant rotation's share: every TOTP secret of the tenant, re-sealed under the new key. Returns how many. */
export async function resealTotpSecrets(
  tx: TenantSql,
  tenantId: string,
  oldKeys: ReadonlyMap<number, Buffer>,
  newKey: { readonly version: number; readonly key: Buffer },
): Promise<number> {
  const rows = await tx<(SealedUnderDataKey & { id: string; user_id: string })[]>`
    select id, user_id, key_version, ciphertext, nonce, tag from totp_secrets
    where tenant_id = ${tenantId}::uuid for update`;
  for (const row of rows) {
    const address = { tenantId, userId: row.user_id, factorId: row.id };
    const sealed = resealUnderDataKey(oldKeys, newKey, row, (version) => totpSecretAad(address, version));
    await tx`
      update totp_secrets set key_version = ${sealed.key_version}, ciphertext = ${sealed.ciphertext},
             nonce = ${sealed.nonce}, tag = ${sealed.tag}
      where tenant_id = ${tenantId}::uuid and id = ${row.id}::uuid`;
  }
  return rows.length;
}
