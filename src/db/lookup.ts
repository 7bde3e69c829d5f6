import type { Sql } from 'postgres';
import type { TenantSql } from './tenant.ts';

// Sign-in has to find one row (a user by login, a session or token by its
// hash) before any tenant is known. withLookup binds app.lookup for one
// transaction; the *_lookup policies then show the single row whose login or
// token hash equals it, and nothing else. Once the row names its tenant,
// bindTenant switches the same transaction to ordinary tenant scope.

export async function withLookup<T>(sql: Sql, key: string, fn: (tx: TenantSql) => Promise<T>): Promise<T> {
  return (await sql.begin(async (tx) => {
    // Sent now (execute), so it runs before fn's first statement, in the same round trip (see withTenant).
    const bound = tx`select set_config('app.lookup', ${key}, true)`.execute();
    const [, result] = await Promise.all([bound, fn(tx)]);
    return result;
  })) as T;
}

/**
 * Ends the lookup and binds the tenant the looked-up row belongs to, inside
 * the same transaction. Sent at once: statements issued after the call run
 * after it even before the returned promise is awaited.
 */
export function bindTenant(tx: TenantSql, tenantId: string): Promise<unknown> {
  return tx`select set_config('app.lookup', '', true), set_config('app.tenant_id', ${tenantId}, true)`.execute();
}
