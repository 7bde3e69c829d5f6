import type { Sql } from 'postgres';
import { appendAuditEvent, appendPlatformAuditEvent, PLATFORM_TENANT } from '../audit/append.ts';
import { serviceQuery, withTenant } from '../db/tenant.ts';
import { resealUnderDataKey, type SealedUnderDataKey } from './data-key-seal.ts';
import {
  type DataKeyRow,
  insertDataKey,
  lockTenantKeys,
  registerMasterVersion,
  unwrapDataKey,
} from './data-keys.ts';
import { credentialAad, dataKeyAad } from './envelope.ts';
import { VaultError } from './errors.ts';
import type { MasterKeyProvider } from './master-keys.ts';
import { resealTotpSecrets } from './totp-secrets.ts';

// VLT-6: rotating each key in the hierarchy while servers keep serving. The
// invariants these keep are written down in src/vault/README.md.

export interface TenantKeyRotation {
  readonly from: number;
  readonly to: number;
  readonly credentials: number;
  readonly totpSecrets: number;
}

/**
 * A new data key for one tenant; every credential and TOTP secret is re-encrypted under it
 * and the old keys deleted, in one transaction. Credential writers wait on
 * the tenant's key lock; readers keep reading the old key and ciphertext
 * until the commit, then the new ones (each read is a single statement).
 */
export async function rotateTenantKey(
  sql: Sql,
  provider: MasterKeyProvider,
  tenantId: string,
  actor: string,
): Promise<TenantKeyRotation> {
  return serviceQuery(sql, { tenantId, reason: 'vault: rotate the tenant data key' }, async (tx) => {
    await lockTenantKeys(tx, tenantId, 'exclusive');
    const keys = await tx<DataKeyRow[]>`
      select version, master_version, wrapped from vault_data_keys
      where tenant_id = ${tenantId}::uuid order by version`;
    const from = keys.at(-1)?.version ?? 0;
    const created = await insertDataKey(tx, provider, tenantId, from + 1);
    if (created === undefined)
      throw new VaultError('not_found', 'a concurrent rotation created the same key');
    const unwrapped = new Map<number, Buffer>();
    try {
      for (const row of keys) unwrapped.set(row.version, await unwrapDataKey(provider, tenantId, row));
      const credentials = await tx<(SealedUnderDataKey & { id: string; agent_id: string; name: string })[]>`
        select id, agent_id, name, key_version, ciphertext, nonce, tag from credentials
        where tenant_id = ${tenantId}::uuid for update`;
      for (const credential of credentials) {
        const address = { tenantId, agentId: credential.agent_id, name: credential.name };
        const sealed = resealUnderDataKey(unwrapped, created, credential, (version) =>
          credentialAad(address, version),
        );
        await tx`
          update credentials set key_version = ${sealed.key_version}, ciphertext = ${sealed.ciphertext},
                 nonce = ${sealed.nonce}, tag = ${sealed.tag}
          where id = ${credential.id}::uuid`;
      }
      // Every row sealed under an old key is re-sealed before the old keys go (README, rotation 2).
      const totpSecrets = await resealTotpSecrets(tx, tenantId, unwrapped, created);
      await tx`delete from vault_data_keys where tenant_id = ${tenantId}::uuid and version < ${created.version}`;
      await appendAuditEvent(tx, tenantId, {
        actor,
        action: 'vault.data_key_rotated',
        target: `tenant:${tenantId}`,
        data: {
          from_version: from,
          to_version: created.version,
          credentials: credentials.length,
          totp_secrets: totpSecrets,
        },
      });
      return { from, to: created.version, credentials: credentials.length, totpSecrets };
    } finally {
      created.key.fill(0);
      for (const key of unwrapped.values()) key.fill(0);
    }
  });
}

export interface MasterKeyRotation {
  readonly to: number;
  readonly retired: readonly number[];
  readonly tenants: number;
  readonly dataKeys: number;
  /** Retired versions the provider could not forget itself (an environment variable): the operator removes them. */
  readonly leftInProvider: readonly number[];
}

/** Re-wraps one tenant's data keys that are under a master version older than `to`. */
async function rewrapTenant(
  sql: Sql,
  provider: MasterKeyProvider,
  tenantId: string,
  to: number,
): Promise<number> {
  return serviceQuery(
    sql,
    { tenantId, reason: 'vault: re-wrap data keys under a new master key' },
    async (tx) => {
      const rows = await tx<DataKeyRow[]>`
      select version, master_version, wrapped from vault_data_keys
      where tenant_id = ${tenantId}::uuid and master_version < ${to} for update`;
      for (const row of rows) {
        const key = await unwrapDataKey(provider, tenantId, row);
        try {
          const wrapped = await provider.wrap(to, key, dataKeyAad(tenantId, row.version));
          await tx`
          update vault_data_keys set master_version = ${to}, wrapped = ${wrapped}
          where tenant_id = ${tenantId}::uuid and version = ${row.version}`;
        } finally {
          key.fill(0);
        }
      }
      return rows.length;
    },
  );
}

const MAX_REWRAP_ROUNDS = 5;

/**
 * Adds a master-key version (or takes one the operator added to the
 * provider), re-wraps every tenant's data keys under it, then retires the
 * older versions. Servers keep serving throughout: until a version is
 * retired both open the data keys, and a server asked for a version it does
 * not hold reads its key file again.
 */
export async function rotateMasterKey(
  sql: Sql,
  provider: MasterKeyProvider,
  actor: string,
): Promise<MasterKeyRotation> {
  const registered = (
    await sql<{ version: number }[]>`select version from vault_master_keys order by version`
  ).map((row) => row.version);
  const newestRegistered = Math.max(0, ...registered);
  const held = await provider.versions();
  const newestHeld = Math.max(...held);
  // An operator who supplies keys through the environment adds the version
  // there first; a key file gets a new version from us.
  const to = newestHeld > newestRegistered ? newestHeld : await provider.addVersion();
  await registerMasterVersion(sql, provider, to);

  let tenants = 0;
  let dataKeys = 0;
  for (let round = 1; ; round++) {
    const pending = await sql<{ tenant_id: string }[]>`
      select tenant_id from enclave.vault_tenants_wrapped_before(${to}) as tenant_id`;
    for (const { tenant_id } of pending) {
      dataKeys += await rewrapTenant(sql, provider, tenant_id, to);
    }
    tenants += pending.length;
    try {
      // The foreign key from vault_data_keys refuses this while any data key
      // (committed or in flight) is still wrapped under an older version.
      const retired = await sql<{ version: number }[]>`
        delete from vault_master_keys where version < ${to} returning version`;
      const retiredVersions = retired.map((row) => row.version).sort((a, b) => a - b);
      const leftInProvider: number[] = [];
      for (const version of held.filter((v) => v < to)) {
        try {
          await provider.removeVersion(version);
        } catch (error) {
          if (!(error instanceof VaultError && error.code === 'master_key_read_only')) throw error;
          leftInProvider.push(version);
        }
      }
      await withTenant(sql, PLATFORM_TENANT, (tx) =>
        appendPlatformAuditEvent(tx, {
          actor,
          action: 'vault.master_key_rotated',
          target: null,
          data: { to_version: to, retired_versions: retiredVersions, tenants, data_keys: dataKeys },
        }),
      );
      return { to, retired: retiredVersions, tenants, dataKeys, leftInProvider };
    } catch (error) {
      // A data key written under an old version while we re-wrapped: go round again.
      if ((error as { code?: string }).code !== '23503' || round >= MAX_REWRAP_ROUNDS) throw error;
    }
  }
}
