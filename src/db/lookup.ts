import type { Sql } from 'postgres';
import type { TenantSql } from './tenant.ts';

// Sign-in has to find one row (a user by login, a session or token by its
// hash) before any tenant is known. withLookup binds app.lookup for one
// transaction; the *_lookup policies then show the single row whose login or
// token hash equals it, and nothing else. Once the row names its tenant,
// bindTenant switches the same transaction to ordinary tenant scope.

export async function withLookup<T>(sql: Sql, key: string, fn: (tx: TenantSql) => Promise<T>): Promise<T> {
  return (await sql.begin(async (tx) => {
    await tx`select set_config('app.lookup', ${key}, true)`;
    return fn(tx);
  })) as T;
}

/** Ends the lookup and binds the tenant the looked-up row belongs to, inside the same transaction. */
export async function bindTenant(tx: TenantSql, tenantId: string): Promise<void> {
  await tx`select set_config('app.lookup', '', true), set_config('app.tenant_id', ${tenantId}, true)`;
}
