import type { TenantSql } from '../db/tenant.ts';
import { currentDataKey, lockTenantKeys, unwrapDataKey } from './data-keys.ts';
import { open, type Sealed, seal } from './envelope.ts';
import { VaultError } from './errors.ts';
import type { MasterKeyProvider } from './master-keys.ts';

// Sealing a secret under a tenant's data key and lending it back, for every
// kind of secret the vault keeps (credentials, TOTP secrets). Each kind
// brings its associated data, which names its purpose and address, so no
// kind's ciphertext opens as another's.

export interface SealedUnderDataKey extends Sealed {
  readonly key_version: number;
}

/** A sealed row read together with its data key (one statement, one snapshot: see README, rotation 3). */
export interface StoredUnderDataKey extends SealedUnderDataKey {
  readonly master_version: number;
  readonly wrapped: Buffer;
}

/**
 * Seals `plaintext` under the tenant's current data key, with the AAD that
 * `aadFor` gives for that key's version. Takes the tenant's key lock
 * (shared) to the end of the transaction, so the row the caller writes next
 * is ordered against a rotation. The caller zeroes `plaintext`.
 *
 * `checked`: the caller's checks still under way (a lookup and what follows
 * from it), whose statements share the lock's round trip. Nothing is sealed
 * unless they pass; their error is thrown first, and only once the key read
 * has settled, so no statement of ours runs after the transaction ends.
 */
export async function sealUnderDataKey(
  tx: TenantSql,
  provider: MasterKeyProvider,
  tenantId: string,
  plaintext: Buffer,
  aadFor: (dataKeyVersion: number) => Buffer,
  checked?: Promise<unknown>,
): Promise<SealedUnderDataKey> {
  // The key is read in the lock's round trip: the server runs the read after the lock is
  // granted, in a snapshot of its own, so a rotation we waited for is still seen.
  const [check, lock, dataKey] = await Promise.allSettled([
    checked,
    lockTenantKeys(tx, tenantId, 'shared'),
    currentDataKey(tx, provider, tenantId),
  ]);
  try {
    if (check.status === 'rejected') throw check.reason;
    if (lock.status === 'rejected') throw lock.reason;
    if (dataKey.status === 'rejected') throw dataKey.reason;
    const { version, key } = dataKey.value;
    return { key_version: version, ...seal(key, plaintext, aadFor(version)) };
  } finally {
    if (dataKey.status === 'fulfilled') dataKey.value.key.fill(0);
  }
}

/** Opens a stored row into a Buffer lent to `use` and zeroed when `use` settles, also when it throws (VLT-5). */
export async function lendUnderDataKey<T>(
  provider: MasterKeyProvider,
  tenantId: string,
  row: StoredUnderDataKey,
  aad: Buffer,
  use: (plaintext: Buffer) => Promise<T> | T,
): Promise<T> {
  const dataKey = await unwrapDataKey(provider, tenantId, {
    version: row.key_version,
    master_version: row.master_version,
    wrapped: row.wrapped,
  });
  let plaintext: Buffer;
  try {
    plaintext = open(dataKey, row, aad);
  } finally {
    dataKey.fill(0);
  }
  try {
    return await use(plaintext);
  } finally {
    plaintext.fill(0);
  }
}

/** A tenant rotation's step for one row: opened under its old key, sealed under the new one. */
export function resealUnderDataKey(
  oldKeys: ReadonlyMap<number, Buffer>,
  newKey: { readonly version: number; readonly key: Buffer },
  row: SealedUnderDataKey,
  aadFor: (dataKeyVersion: number) => Buffer,
): SealedUnderDataKey {
  const oldKey = oldKeys.get(row.key_version);
  if (oldKey === undefined)
    throw new VaultError('ciphertext_rejected', 'a sealed row names a missing data key');
  const plaintext = open(oldKey, row, aadFor(row.key_version));
  try {
    return { key_version: newKey.version, ...seal(newKey.key, plaintext, aadFor(newKey.version)) };
  } finally {
    plaintext.fill(0);
  }
}
