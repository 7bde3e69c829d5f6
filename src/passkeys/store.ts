import type { Sql } from 'postgres';
import { bindTenant, withLookup } from '../db/lookup.ts';
import type { TenantSql } from '../db/tenant.ts';

// Passkeys in the database: a user_factors row of kind 'passkey' (its name,
// when it was added and last used) and its passkey_credentials row (the
// public key, counter, transports and backup flags), keyed by the factor id.

/** What the profile shows of a passkey: never its public key or credential id. */
export interface PasskeyListing {
  readonly id: string;
  readonly name: string;
  readonly created_at: Date;
  readonly last_used_at: Date | null;
  readonly backup_eligible: boolean;
  readonly backed_up: boolean;
}

/** A credential as an assertion is checked against it. */
export interface StoredPasskey {
  readonly factor_id: string;
  readonly tenant_id: string;
  readonly user_id: string;
  readonly credential_id: string;
  readonly public_key: Buffer;
  readonly sign_count: number;
  readonly transports: string[];
}

/** A credential id and its transports: what a browser needs to be told about a passkey. */
export interface CredentialDescriptor {
  readonly credential_id: string;
  readonly transports: string[];
}

export interface NewPasskey {
  readonly tenantId: string;
  readonly userId: string;
  readonly name: string;
  readonly credentialId: string;
  readonly publicKey: Uint8Array;
  readonly signCount: number;
  readonly transports: readonly string[];
  readonly backupEligible: boolean;
  readonly backedUp: boolean;
}

/** A user's passkeys: each factor row with its credential. */
const userPasskeys = (tx: TenantSql, userId: string) => tx`
  user_factors f join passkey_credentials c on c.factor_id = f.id
  where f.user_id = ${userId}::uuid and f.kind = 'passkey'`;

const LISTING_COLUMNS = (tx: TenantSql) =>
  tx`f.id, f.name, f.created_at, f.last_used_at, c.backup_eligible, c.backed_up`;

export async function listPasskeys(tx: TenantSql, userId: string): Promise<PasskeyListing[]> {
  return tx<PasskeyListing[]>`
    select ${LISTING_COLUMNS(tx)} from ${userPasskeys(tx, userId)}
    order by f.created_at, f.id`;
}

export async function findPasskey(
  tx: TenantSql,
  userId: string,
  factorId: string,
): Promise<PasskeyListing | undefined> {
  const [passkey] = await tx<PasskeyListing[]>`
    select ${LISTING_COLUMNS(tx)} from ${userPasskeys(tx, userId)} and f.id = ${factorId}::uuid`;
  return passkey;
}

/** The user's credentials, for a browser to leave out (registration) or to offer (a second step). */
export async function credentialDescriptors(tx: TenantSql, userId: string): Promise<CredentialDescriptor[]> {
  return tx<CredentialDescriptor[]>`
    select c.credential_id, c.transports from ${userPasskeys(tx, userId)} order by f.created_at, f.id`;
}

/** Inserts the factor and its credential; returns the factor id. A credential id already stored anywhere fails (unique). */
export async function insertPasskey(tx: TenantSql, passkey: NewPasskey): Promise<string> {
  const [factor] = await tx<{ id: string }[]>`
    insert into user_factors (tenant_id, user_id, kind, name)
    values (${passkey.tenantId}::uuid, ${passkey.userId}::uuid, 'passkey', ${passkey.name})
    returning id`;
  if (factor === undefined) throw new Error('insert into user_factors returned no row');
  await tx`
    insert into passkey_credentials
      (factor_id, tenant_id, credential_id, public_key, sign_count, transports, backup_eligible, backed_up)
    values (${factor.id}::uuid, ${passkey.tenantId}::uuid, ${passkey.credentialId},
            ${Buffer.from(passkey.publicKey)}, ${passkey.signCount}, ${[...passkey.transports]}::text[],
            ${passkey.backupEligible}, ${passkey.backedUp})`;
  return factor.id;
}

/** True if the user's passkey was renamed; false if the user has no such passkey. */
export async function renamePasskey(
  tx: TenantSql,
  userId: string,
  factorId: string,
  name: string,
): Promise<boolean> {
  const rows = await tx`
    update user_factors set name = ${name}
    where id = ${factorId}::uuid and user_id = ${userId}::uuid and kind = 'passkey'`;
  return rows.count === 1;
}

/** True if the user's passkey was removed (its credential goes with it, on delete cascade). */
export async function removePasskey(tx: TenantSql, userId: string, factorId: string): Promise<boolean> {
  const rows = await tx`
    delete from user_factors where id = ${factorId}::uuid and user_id = ${userId}::uuid and kind = 'passkey'`;
  return rows.count === 1;
}

const STORED_COLUMNS = (tx: TenantSql) => tx`
  c.factor_id, c.tenant_id, f.user_id, c.credential_id, c.public_key, c.sign_count::float8 as sign_count,
  c.transports`;

/** The user's passkey with this credential id, in a transaction bound to the user's tenant. */
export async function findUserCredential(
  tx: TenantSql,
  userId: string,
  credentialId: string,
): Promise<StoredPasskey | undefined> {
  const [passkey] = await tx<StoredPasskey[]>`
    select ${STORED_COLUMNS(tx)} from ${userPasskeys(tx, userId)} and c.credential_id = ${credentialId}`;
  return passkey;
}

/**
 * Finds a credential by its id before any tenant is known (a passwordless
 * sign-in), then runs `fn` in the same transaction, bound to its tenant.
 * `fn` gets undefined when no credential has that id.
 */
export async function withCredential<T>(
  sql: Sql,
  credentialId: string,
  fn: (tx: TenantSql, passkey: StoredPasskey | undefined) => Promise<T>,
): Promise<T> {
  return withLookup(sql, credentialId, async (tx) => {
    const [found] = await tx<{ tenant_id: string }[]>`
      select tenant_id from passkey_credentials where credential_id = enclave.current_lookup()`;
    if (found === undefined) return fn(tx, undefined);
    await bindTenant(tx, found.tenant_id);
    const [passkey] = await tx<StoredPasskey[]>`
      select ${STORED_COLUMNS(tx)}
      from passkey_credentials c join user_factors f on f.id = c.factor_id
      where c.credential_id = ${credentialId} and f.kind = 'passkey'
      for update of c`;
    // Locked until the answer is recorded: two answers at once see each other's counter, as TOTP's steps do.
    return fn(tx, passkey);
  });
}

/** After a good assertion: the new counter and backup state, and the factor's last use. */
export async function recordPasskeyUse(
  tx: TenantSql,
  factorId: string,
  use: { signCount: number; backedUp: boolean },
): Promise<void> {
  await tx`
    with credential as (
      update passkey_credentials set sign_count = ${use.signCount}, backed_up = ${use.backedUp}
      where factor_id = ${factorId}::uuid)
    update user_factors set last_used_at = now() where id = ${factorId}::uuid`;
}
