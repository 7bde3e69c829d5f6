import type { Sql, TransactionSql } from 'postgres';
import { appendAuditEvent } from '../audit/append.ts';
import { AppError } from '../errors.ts';

// The only two ways to touch tenant data.
//
// withTenant: one transaction whose first statement binds app.tenant_id
// (transaction-local), so every later statement is filtered by the tenant
// policies and the binding cannot outlive the transaction on a pooled
// connection. Route handlers get it from the request's principal (TEN-3).
//
// serviceQuery: the same for system work (jobs, maintenance) that acts for a
// tenant without a request. It refuses to run without an explicit tenant and
// a reason, and records the call as a `system.service_query` audit event in
// the same transaction (TEN-5).

export type TenancyErrorCode = 'tenant_id_invalid' | 'service_query_unscoped';

export type TenantSql = TransactionSql;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function isUuid(value: unknown): value is string {
  return typeof value === 'string' && UUID.test(value);
}

export async function withTenant<T>(
  sql: Sql,
  tenantId: string,
  fn: (tx: TenantSql) => Promise<T>,
): Promise<T> {
  // tenantId comes from an authenticated principal, never straight from a
  // client; still, anything but a uuid here is a bug and must not reach SQL.
  if (!isUuid(tenantId)) throw new AppError('tenant_id_invalid', 'withTenant needs a tenant uuid');
  return (await sql.begin(async (tx) => {
    // Sent first on this connection, so the server runs it before anything fn
    // sends; not awaited alone, so fn's first statement rides the same round trip.
    // (postgres.js sends a query when it is awaited or execute() is called: execute() now.)
    const bound = tx`select set_config('app.tenant_id', ${tenantId}, true)`.execute();
    const [, result] = await Promise.all([bound, fn(tx)]);
    return result;
  })) as T;
}

/** The audit action of a serviceQuery call (actions are dotted `noun.verb` words, so not bare `service_query`). */
export const SERVICE_QUERY_ACTION = 'system.service_query';

export interface ServiceQueryScope {
  readonly tenantId: string;
  /** Why system code touches this tenant's data; recorded with the call. */
  readonly reason: string;
}

export async function serviceQuery<T>(
  sql: Sql,
  scope: ServiceQueryScope,
  fn: (tx: TenantSql) => Promise<T>,
  options: { recordFirst?: boolean } = {},
): Promise<T> {
  if (!isUuid(scope.tenantId)) {
    throw new AppError('service_query_unscoped', 'serviceQuery refuses to run without an explicit tenant id');
  }
  // The scope may be built from a job payload (parsed JSON): check the runtime type, not just the static one.
  const reason = typeof scope.reason === 'string' ? scope.reason.trim() : '';
  if (reason.length === 0 || reason.length > 200) {
    throw new AppError('service_query_unscoped', 'serviceQuery needs a reason of 1 to 200 characters');
  }
  const record = (tx: TenantSql) =>
    appendAuditEvent(tx, scope.tenantId, {
      actor: 'system',
      action: SERVICE_QUERY_ACTION,
      target: null,
      data: { reason },
    });
  if (options.recordFirst === true) {
    // Committed before fn reads, so what fn reads (an audit export) includes its own record;
    // an fn that then fails has still been recorded.
    await withTenant(sql, scope.tenantId, record);
    return withTenant(sql, scope.tenantId, fn);
  }
  return withTenant(sql, scope.tenantId, async (tx) => {
    const result = await fn(tx);
    // Recorded last, so the tenant's audit head is locked only for the moment of the append.
    await record(tx);
    return result;
  });
}
