import type { PendingQuery, Row } from 'postgres';
import type { TenantSql } from '../db/tenant.ts';
import { canonicalEventParts } from './event.ts';

// Appending to a tenant's audit chain (AUD-1, AUD-2, AUD-3), inside the
// transaction of the action it records, so the two commit or roll back
// together. One round trip: we send the canonical text cut around seq and ts
// (canonicalEventParts); the database locks the tenant's head, splices in
// seq = head + 1 and the event time, checks the text, hashes it and stores it
// (audit_append_event in src/db/migrations/0006_audit_append_one_trip.sql,
// with the checks of 0011, as 0033 runs them).

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
  const { beforeSeq, beforeTs, afterTs } = canonicalEventParts({ tenant: tenantId, ...event });
  return appended(
    await tx<AppendedRow[]>`
      select seq, hash from enclave.audit_append_event(${beforeSeq}, ${beforeTs}, ${afterTs})`,
  );
}

/**
 * The append of one of two events to the chain of `tenantId`, as a function
 * call for the FROM list of the statement that writes what they record, so
 * the write and its event take one round trip and neither is stored without
 * the other. `which`, an SQL boolean of that statement (a column of an
 * earlier FROM item), picks `ifTrue` or `ifFalse`.
 */
export function appendEitherAuditEvent(
  tx: TenantSql,
  tenantId: string,
  which: PendingQuery<Row[]>,
  ifTrue: AuditEventInput,
  ifFalse: AuditEventInput,
): PendingQuery<Row[]> {
  const yes = canonicalEventParts({ tenant: tenantId, ...ifTrue });
  const no = canonicalEventParts({ tenant: tenantId, ...ifFalse });
  // What follows ts is the same in every event (only "v" sorts after it), so one afterTs serves both.
  if (yes.afterTs !== no.afterTs) throw new Error('audit events differ after their ts');
  return tx`enclave.audit_append_event(case when ${which} then ${yes.beforeSeq} else ${no.beforeSeq} end,
                                       case when ${which} then ${yes.beforeTs} else ${no.beforeTs} end,
                                       ${yes.afterTs})`;
}

/**
 * Appends one event to the platform's chain from inside a transaction bound
 * to a customer tenant (a signup redeeming a platform invite, an operator
 * revoking one), then binds that tenant again, in one round trip. Both appends
 * commit or roll back with the transaction; the platform head stays locked
 * until it ends.
 */
export async function appendPlatformAuditEvent(
  tx: TenantSql,
  event: AuditEventInput,
): Promise<AppendedEvent> {
  const { beforeSeq, beforeTs, afterTs } = canonicalEventParts({ tenant: PLATFORM_TENANT, ...event });
  return appended(
    await tx<AppendedRow[]>`
      select seq, hash from enclave.audit_append_platform_event(${beforeSeq}, ${beforeTs}, ${afterTs})`,
  );
}

interface AppendedRow {
  readonly seq: string;
  readonly hash: Buffer;
}

function appended(rows: readonly AppendedRow[]): AppendedEvent {
  const [row] = rows;
  if (row === undefined) throw new Error('the audit append returned no row');
  return { seq: Number(row.seq), hash: row.hash };
}
