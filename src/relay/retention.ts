import type { Sql } from 'postgres';
import { deleteDueCallbackPayloads } from '../callbacks/retention.ts';
import { serviceQuery, type TenantSql } from '../db/tenant.ts';
import { AppError } from '../errors.ts';
import { deleteDueInboundBodies } from '../webhooks/retention.ts';
import { deleteExpiredIdempotencyKeys } from './idempotency.ts';

// Relay retention (RLY-9), the hourly `relay_retention` job: a message's
// payload is deleted 30 days after it was created (`body = null`,
// `payload_deleted_at` set); its thread's metadata (ids, authors, timestamps,
// states, body_bytes, payload_bytes) stays. The copies of relay text kept
// elsewhere go by the same 30 days (migration 0032): callback deliveries'
// payloads with their attempts' response excerpts (src/callbacks/retention.ts;
// a delivery still pending keeps its payload until its series ends) and
// inbound webhook events' bodies (src/webhooks/retention.ts). The same pass
// deletes thread tokens and idempotency keys past their expiry.
//
// Hourly rather than daily: a payload then outlives its 30 days by an hour at
// most, and thread tokens (60 minutes) do not pile up for a day. A run with
// nothing due costs a few index probes (enclave.relay_retention_tenants in
// migration 0021), and touches no tenant.
//
// Each tenant with anything due is worked on in batches, each its own
// serviceQuery transaction (TEN-5: recorded on the tenant's chain with
// RELAY_RETENTION_REASON), until a batch comes back short: a large backlog
// never holds one long transaction, and the cutoff is fixed for the run, so
// no batch skips a row and a second run finds nothing. Re-running is safe: a
// deleted payload no longer matches.

export const PAYLOAD_RETENTION_DAYS = 30;
/** Rows of each kind deleted per transaction. */
export const RETENTION_BATCH = 500;
export const RELAY_RETENTION_REASON =
  'relay retention (RLY-9): delete message, callback and inbound webhook payloads 30 days old, expired thread tokens and idempotency keys';

export type RelayRetentionErrorCode = 'relay_retention_incomplete';

export interface RelayRetentionResult {
  readonly payloadsDeleted: number;
  /** Callback deliveries whose payload (and attempts' excerpts) went. */
  readonly callbackPayloadsDeleted: number;
  readonly inboundBodiesDeleted: number;
  readonly threadTokensDeleted: number;
  readonly idempotencyKeysDeleted: number;
  /** Tenants whose sweep stopped on an error, with it; their rows wait for the next run. */
  readonly failures: readonly { readonly tenantId: string; readonly error: unknown }[];
}

/** When a payload created before it is due: `now` less 30 days. */
export function payloadCutoff(now: Date): Date {
  return new Date(now.getTime() - PAYLOAD_RETENTION_DAYS * 24 * 60 * 60 * 1000);
}

/** Ids of the tenants with a payload, thread token or idempotency key due at `now`. */
export async function tenantsWithRelayRetentionDue(sql: Sql, now: Date): Promise<string[]> {
  const rows = await sql<{ tenant_id: string }[]>`
    select tenant_id from enclave.relay_retention_tenants(${payloadCutoff(now)}, ${now}) as tenant_id
    order by tenant_id`;
  return rows.map((row) => row.tenant_id);
}

/** Deletes up to `limit` of the bound tenant's payloads created before `cutoff`, oldest first; returns how many. */
export async function deleteDuePayloads(
  tx: TenantSql,
  tenantId: string,
  cutoff: Date,
  limit: number,
): Promise<number> {
  // The conditions are repeated outside the subquery so a row changed meanwhile is checked again.
  const deleted = await tx`
    update relay_messages set body = null, payload_deleted_at = now()
    where tenant_id = ${tenantId}::uuid and body is not null and created_at < ${cutoff}
      and id in (select id from relay_messages
                 where tenant_id = ${tenantId}::uuid and body is not null and created_at < ${cutoff}
                 order by created_at limit ${limit}::int4)`;
  return deleted.count;
}

/** Deletes up to `limit` of the bound tenant's thread tokens expired at `now`; returns how many. */
export async function deleteExpiredThreadTokens(
  tx: TenantSql,
  tenantId: string,
  now: Date,
  limit: number,
): Promise<number> {
  const deleted = await tx`
    delete from relay_thread_tokens
    where tenant_id = ${tenantId}::uuid and expires_at <= ${now}
      and id in (select id from relay_thread_tokens
                 where tenant_id = ${tenantId}::uuid and expires_at <= ${now}
                 order by expires_at limit ${limit}::int4)`;
  return deleted.count;
}

export interface RelayRetentionOptions {
  /** The run's clock: payloads created before now less 30 days and tokens and keys expired at now are due. */
  readonly now: Date;
  readonly batch?: number;
}

export async function runRelayRetention(
  sql: Sql,
  options: RelayRetentionOptions,
): Promise<RelayRetentionResult> {
  const { now } = options;
  const batch = options.batch ?? RETENTION_BATCH;
  const cutoff = payloadCutoff(now);
  const totals = {
    payloadsDeleted: 0,
    callbackPayloadsDeleted: 0,
    inboundBodiesDeleted: 0,
    threadTokensDeleted: 0,
    idempotencyKeysDeleted: 0,
  };
  const failures: { tenantId: string; error: unknown }[] = [];
  for (const tenantId of await tenantsWithRelayRetentionDue(sql, now)) {
    try {
      for (;;) {
        const counts = await serviceQuery(sql, { tenantId, reason: RELAY_RETENTION_REASON }, async (tx) => ({
          payloads: await deleteDuePayloads(tx, tenantId, cutoff, batch),
          callbackPayloads: await deleteDueCallbackPayloads(tx, tenantId, cutoff, batch),
          inboundBodies: await deleteDueInboundBodies(tx, tenantId, cutoff, batch),
          threadTokens: await deleteExpiredThreadTokens(tx, tenantId, now, batch),
          idempotencyKeys: await deleteExpiredIdempotencyKeys(tx, { now, limit: batch }),
        }));
        totals.payloadsDeleted += counts.payloads;
        totals.callbackPayloadsDeleted += counts.callbackPayloads;
        totals.inboundBodiesDeleted += counts.inboundBodies;
        totals.threadTokensDeleted += counts.threadTokens;
        totals.idempotencyKeysDeleted += counts.idempotencyKeys;
        // A full batch of any kind may have left more behind; short batches of every kind mean done.
        if (Math.max(...Object.values(counts)) < batch) break;
      }
    } catch (error) {
      // One tenant's failure (a lock timeout, say) must not keep the others' payloads past their 30 days.
      failures.push({ tenantId, error });
    }
  }
  return { ...totals, failures };
}

/** The job's body: fails (so the queue retries and shows it) when any tenant's sweep did not finish. */
export async function relayRetentionJob(sql: Sql, now: Date): Promise<void> {
  const { failures } = await runRelayRetention(sql, { now });
  if (failures.length > 0) {
    throw new AppError<RelayRetentionErrorCode>(
      'relay_retention_incomplete',
      `relay retention could not finish for tenant(s) ${failures.map((failure) => failure.tenantId).join(', ')}`,
      { cause: failures[0]?.error },
    );
  }
}
