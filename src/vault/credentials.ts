import type { PendingQuery, Row, Sql } from 'postgres';
import type { TenantSql } from '../db/tenant.ts';
import {
  lendUnderDataKey,
  type SealedUnderDataKey,
  type StoredUnderDataKey,
  sealUnderDataKey,
} from './data-key-seal.ts';
import { type CredentialAddress, credentialAad } from './envelope.ts';
import { VaultError } from './errors.ts';
import type { MasterKeyProvider } from './master-keys.ts';

// The credential store: one row per credential, sealed under the tenant's
// current data key. Values come in as strings (that is how HTTP delivers
// them) and go out only through lendCredential (or lendCredentialAlone), as a Buffer zeroed once the
// borrower is done (VLT-5). Listings carry names, last 4 and timestamps.

export interface CredentialListing {
  readonly name: string;
  /** The value's last 4 characters; null when it is too short to show any of it. */
  readonly last4: string | null;
  readonly created_at: Date;
  readonly updated_at: Date;
}

/** Values shorter than this show no last 4: four characters would give away too much of them. */
const MIN_LENGTH_FOR_LAST4 = 16;
export const MAX_CREDENTIAL_BYTES = 65_535;
/** The schema's bound; the byte bound above is checked too, as a character may take up to 4 bytes. */
export const MAX_CREDENTIAL_CHARACTERS = MAX_CREDENTIAL_BYTES;

export function last4Of(value: string): string | null {
  const characters = Array.from(value);
  return characters.length < MIN_LENGTH_FOR_LAST4 ? null : characters.slice(-4).join('');
}

/** Why a credential value is refused, naming the rule and never the value; undefined if it is acceptable. */
export function credentialValueProblem(value: string): string | undefined {
  if (value.length === 0) return 'must not be empty';
  if (Buffer.byteLength(value, 'utf8') > MAX_CREDENTIAL_BYTES) {
    return `must be at most ${MAX_CREDENTIAL_BYTES} bytes`;
  }
  return undefined;
}

export interface PutCredentialOptions {
  /**
   * The caller's checks still under way (the agent's lookup and what follows
   * from it): they share the round trip of the key lock and read, and
   * nothing is written, nor the value judged, unless they pass.
   */
  readonly checked?: Promise<unknown>;
  /**
   * The audit append that records the write, given an SQL boolean that is
   * true when the credential is new (see appendEitherAuditEvent): it runs in
   * the upsert's own statement, so the two take one round trip.
   */
  readonly record?: (created: PendingQuery<Row[]>) => PendingQuery<Row[]>;
}

/**
 * Adds or replaces one credential. Only that row is written, so writers of
 * different names never clobber each other (VLT-4); writers of the same name
 * are ordered by the row lock of the upsert, and the last one wins.
 */
export async function putCredential(
  tx: TenantSql,
  provider: MasterKeyProvider,
  address: CredentialAddress,
  value: string,
  options: PutCredentialOptions = {},
): Promise<{ listing: CredentialListing; created: boolean }> {
  const problem = credentialValueProblem(value);
  const judge = (): void => {
    if (problem !== undefined) throw new VaultError('validation_failed', problem, { field: 'value' });
  };
  // After the caller's checks, as when they ran first.
  const ready = options.checked?.then(judge);
  if (ready === undefined) judge();
  const plaintext = Buffer.from(value, 'utf8');
  let sealed: SealedUnderDataKey;
  try {
    sealed = await sealUnderDataKey(
      tx,
      provider,
      address.tenantId,
      plaintext,
      (version) => credentialAad(address, version),
      ready,
    );
  } finally {
    plaintext.fill(0);
  }
  const [row] = await tx<(CredentialListing & { created: boolean })[]>`
    with stored as (
      insert into credentials (tenant_id, agent_id, name, key_version, ciphertext, nonce, tag, last4)
      values (${address.tenantId}::uuid, ${address.agentId}::uuid, ${address.name}, ${sealed.key_version},
              ${sealed.ciphertext}, ${sealed.nonce}, ${sealed.tag}, ${last4Of(value)})
      on conflict (agent_id, name) do update
        set key_version = excluded.key_version, ciphertext = excluded.ciphertext, nonce = excluded.nonce,
            tag = excluded.tag, last4 = excluded.last4, updated_at = now()
      returning name, last4, created_at, updated_at, (xmax = 0) as created)
    select s.name, s.last4, s.created_at, s.updated_at, s.created
    from stored s${options.record === undefined ? tx`` : tx`, ${options.record(tx`s.created`)}`}`;
  if (row === undefined) throw new VaultError('not_found', 'the credential could not be stored');
  const { created, ...listing } = row;
  return { listing, created };
}

export async function listCredentials(tx: TenantSql, agentId: string): Promise<CredentialListing[]> {
  return tx<CredentialListing[]>`
    select name, last4, created_at, updated_at from credentials
    where agent_id = ${agentId}::uuid order by name`;
}

export async function deleteCredential(tx: TenantSql, address: CredentialAddress): Promise<boolean> {
  const deleted = await tx`
    delete from credentials where agent_id = ${address.agentId}::uuid and name = ${address.name}
    returning 1`;
  return deleted.length > 0;
}

type SealedRow = StoredUnderDataKey;

/**
 * VLT-5: the one way to a credential's plaintext. It is decrypted into a
 * Buffer, lent to `use`, and zeroed when `use` settles, also when it throws.
 * The borrower must not keep the Buffer or copy it into a string.
 */
export async function lendCredential<T>(
  tx: TenantSql,
  provider: MasterKeyProvider,
  address: CredentialAddress,
  use: (plaintext: Buffer) => Promise<T> | T,
): Promise<T> {
  // One statement, one snapshot: a concurrent data-key rotation is seen
  // entirely (new ciphertext and new key) or not at all.
  const [row] = await tx<SealedRow[]>`
    select c.ciphertext, c.nonce, c.tag, c.key_version, k.master_version, k.wrapped
    from credentials c
    join vault_data_keys k on k.tenant_id = c.tenant_id and k.version = c.key_version
    where c.agent_id = ${address.agentId}::uuid and c.name = ${address.name}`;
  return openAndLend(provider, address, row, use);
}

/**
 * The same, for a caller with no transaction of its own (the model gateway,
 * once per call): one statement, enclave.credential_sealed, which binds the
 * address's tenant for itself (migration 0015), so the read is one round trip.
 */
export async function lendCredentialAlone<T>(
  sql: Sql,
  provider: MasterKeyProvider,
  address: CredentialAddress,
  use: (plaintext: Buffer) => Promise<T> | T,
): Promise<T> {
  const [row] = await sql<SealedRow[]>`
    select ciphertext, nonce, tag, key_version, master_version, wrapped
    from enclave.credential_sealed(${address.tenantId}::uuid, ${address.agentId}::uuid, ${address.name})`;
  return openAndLend(provider, address, row, use);
}

async function openAndLend<T>(
  provider: MasterKeyProvider,
  address: CredentialAddress,
  row: SealedRow | undefined,
  use: (plaintext: Buffer) => Promise<T> | T,
): Promise<T> {
  if (row === undefined) throw new VaultError('not_found', `no credential named ${address.name}`);
  return lendUnderDataKey(provider, address.tenantId, row, credentialAad(address, row.key_version), use);
}
