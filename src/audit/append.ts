import type { TenantSql } from '../db/tenant.ts';
import { canonicalEvent, eventHash } from './event.ts';

// Appending to a tenant's audit chain (AUD-1, AUD-2, AUD-3), inside the
// transaction of the action it records, so the two commit or roll back
// together. The database locks the tenant's head and hands back its seq,
// hash and the event time; we build the canonical text and its hash; the
// database checks both again before it stores anything
// (src/db/migrations/0003_audit.sql).

/** The chain of events that belong to no customer tenant: operator actions, failed sign-ins of unknown logins. */
export const PLATFORM_TENANT = '00000000-0000-0000-0000-000000000000';

export interface AuditEventInput {
  /** Who acted: `user:<id>`, `token:<id>`, `operator:cli`, `system`, `anonymous`. */
  readonly actor: string;
  /** What happened, `noun.verb`: `session.login`, `token.minted`, … */
  readonly action: string;
  /** What it happened to: `session:<id>`, `user:<id>`, …, or null. */
  readonly target: string | null;
  /** Details: ids, flags and counts, never a secret. */
  readonly data: Readonly<Record<string, unknown>>;
}

export interface AppendedEvent {
  readonly seq: number;
  readonly hash: Buffer;
}

/** Appends one event to the chain of `tenantId`, which `tx` must be bound to. */
export async function appendAuditEvent(
  tx: TenantSql,
  tenantId: string,
  event: AuditEventInput,
): Promise<AppendedEvent> {
  const [head] = await tx<{ seq: string; hash: Buffer; ts: string }[]>`
    select seq, hash, ts from enclave.audit_lock_head()`;
  if (head === undefined) throw new Error('audit_lock_head returned no row');
  const seq = Number(head.seq) + 1;
  const canonical = canonicalEvent({ tenant: tenantId, seq, ts: head.ts, ...event });
  const hash = eventHash(head.hash, canonical);
  await tx`select enclave.audit_append(${canonical}, ${hash})`;
  return { seq, hash };
}

/**
 * Appends one event to the platform's chain from inside a transaction bound
 * to a customer tenant (a signup redeeming a platform invite, an operator
 * revoking one), then binds that tenant again. Both appends commit or roll
 * back with the transaction; the platform head stays locked until it ends.
 */
export async function appendPlatformAuditEvent(
  tx: TenantSql,
  event: AuditEventInput,
): Promise<AppendedEvent> {
  const [bound] = await tx<
    { tenant: string | null }[]
  >`select current_setting('app.tenant_id', true) as tenant`;
  await tx`select set_config('app.tenant_id', ${PLATFORM_TENANT}, true)`;
  const appended = await appendAuditEvent(tx, PLATFORM_TENANT, event);
  await tx`select set_config('app.tenant_id', ${bound?.tenant ?? ''}, true)`;
  return appended;
}
