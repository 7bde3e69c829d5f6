import { randomBytes } from 'node:crypto';
import type { Sql } from 'postgres';
import type { TenantSql } from '../db/tenant.ts';
import { canaryAad, dataKeyAad, KEY_BYTES } from './envelope.ts';
import { VaultError } from './errors.ts';
import type { MasterKeyProvider } from './master-keys.ts';

// The middle of the hierarchy: one data key per tenant (a new version per
// rotation), stored only wrapped under a master-key version, and the
// registry of master-key versions (vault_master_keys) with a canary each.

export interface DataKeyRow {
  readonly version: number;
  readonly master_version: number;
  readonly wrapped: Buffer;
}

export interface DataKey {
  readonly version: number;
  /** Unwrapped: the caller zeroes it when done. */
  readonly key: Buffer;
}

const CANARY = Buffer.alloc(KEY_BYTES);

/**
 * Start-up check: every master-key version this database uses must be held
 * by the provider and must open its canary, so a wrong key stops start-up
 * with a message instead of failing request by request. On a database with
 * no version yet, the provider's newest version is registered.
 */
export async function checkMasterKeys(sql: Sql, provider: MasterKeyProvider): Promise<void> {
  const registered = await verifyMasterKeys(sql, provider);
  if (registered.length === 0) {
    const held = await provider.versions();
    await registerMasterVersion(sql, provider, Math.max(...held));
    await verifyMasterKeys(sql, provider);
  }
}

/** The read-only half of checkMasterKeys (for `enclave doctor`): the versions in use, each proven to open. */
export async function verifyMasterKeys(sql: Sql, provider: MasterKeyProvider): Promise<number[]> {
  const registered = await sql<{ version: number; canary: Buffer }[]>`
    select version, canary from vault_master_keys order by version`;
  for (const { version, canary } of registered) {
    let opened: Buffer;
    try {
      opened = await provider.unwrap(version, canary, canaryAad(version));
    } catch (error) {
      if (error instanceof VaultError && error.code === 'ciphertext_rejected') {
        throw new VaultError(
          'master_key_mismatch',
          `master key version ${version} in ${provider.source} is not the key this database's data keys are wrapped with (wrong key?)`,
        );
      }
      if (error instanceof VaultError && error.code === 'master_key_unavailable') {
        throw new VaultError(
          'master_key_unavailable',
          `master key version ${version}, which wraps data keys in this database, is not in ${provider.source}`,
        );
      }
      throw error;
    }
    opened.fill(0);
  }
  return registered.map((row) => row.version);
}

/** Records a master-key version as usable, with its canary. Idempotent. */
export async function registerMasterVersion(
  sql: Sql | TenantSql,
  provider: MasterKeyProvider,
  version: number,
): Promise<void> {
  const canary = await provider.wrap(version, CANARY, canaryAad(version));
  await sql`
    insert into vault_master_keys (version, canary) values (${version}, ${canary})
    on conflict (version) do nothing`;
}

/**
 * Serialises a tenant's credential writers (shared) against its data-key
 * rotation (exclusive). Held to the end of the transaction; statements after
 * it see everything the other side committed. Sent at once (not when
 * awaited), so a statement issued right after the call runs after it on the
 * server and rides the same round trip.
 */
export function lockTenantKeys(
  tx: TenantSql,
  tenantId: string,
  mode: 'shared' | 'exclusive',
): Promise<unknown> {
  const key = `enclave.vault:${tenantId}`;
  return mode === 'shared'
    ? tx`select pg_advisory_xact_lock_shared(hashtextextended(${key}, 0))`.execute()
    : tx`select pg_advisory_xact_lock(hashtextextended(${key}, 0))`.execute();
}

export async function unwrapDataKey(
  provider: MasterKeyProvider,
  tenantId: string,
  row: DataKeyRow,
): Promise<Buffer> {
  return provider.unwrap(row.master_version, row.wrapped, dataKeyAad(tenantId, row.version));
}

/**
 * Inserts data-key `version` for the tenant, wrapped under the newest master
 * version, and returns it unwrapped; undefined if another transaction
 * inserted that version first. If a master-key rotation retires the version
 * we read between our read and our insert, the foreign key refuses the
 * insert: we read again, inside a savepoint so the transaction survives.
 */
export async function insertDataKey(
  tx: TenantSql,
  provider: MasterKeyProvider,
  tenantId: string,
  version: number,
): Promise<DataKey | undefined> {
  const key = randomBytes(KEY_BYTES);
  for (let attempt = 1; ; attempt++) {
    try {
      const inserted = await tx.savepoint(async (sp) => {
        const [master] = await sp<
          { version: number }[]
        >`select max(version) as version from vault_master_keys`;
        if (master?.version == null) {
          throw new VaultError(
            'master_key_unavailable',
            'no master-key version is registered (start-up check not run)',
          );
        }
        const wrapped = await provider.wrap(master.version, key, dataKeyAad(tenantId, version));
        return sp`
          insert into vault_data_keys (tenant_id, version, master_version, wrapped)
          values (${tenantId}::uuid, ${version}, ${master.version}, ${wrapped})
          on conflict (tenant_id, version) do nothing
          returning version`;
      });
      if (inserted.length === 0) {
        key.fill(0);
        return undefined;
      }
      return { version, key };
    } catch (error) {
      const retired = (error as { code?: string }).code === '23503' && attempt < 3;
      if (!retired) {
        key.fill(0);
        throw error;
      }
    }
  }
}

/** The tenant's newest data key, created on first use. Call under lockTenantKeys(…, 'shared'). */
export async function currentDataKey(
  tx: TenantSql,
  provider: MasterKeyProvider,
  tenantId: string,
): Promise<DataKey> {
  for (;;) {
    const [row] = await tx<DataKeyRow[]>`
      select version, master_version, wrapped from vault_data_keys
      where tenant_id = ${tenantId}::uuid order by version desc limit 1`;
    if (row !== undefined) return { version: row.version, key: await unwrapDataKey(provider, tenantId, row) };
    // Two first writers race to create version 1; the loser reads the winner's.
    const created = await insertDataKey(tx, provider, tenantId, 1);
    if (created !== undefined) return created;
  }
}
