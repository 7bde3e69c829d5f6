import type { TenantSql } from '../db/tenant.ts';

// Relay retention (RLY-9) of callback deliveries: a delivery's payload holds
// the event's text as sent, and its attempts' response excerpts may echo it
// back, so both go 30 days after the delivery was created, in the hourly
// `relay_retention` job (src/relay/retention.ts, migration 0032). The row
// keeps its ids, times, state, attempts and statuses, and records the
// payload's size and when it was removed; the delivery log shows it expired.
//
// A delivery still pending keeps its payload: its attempt series (at most
// about 18 hours, deliver.ts) would otherwise send nothing. The first run
// after the series ends removes it. replayDelivery refuses a delivery whose
// payload is gone, so nothing is sent without one.

/** Removes up to `limit` of the bound tenant's finished deliveries' payloads created before `cutoff`, and their attempts' excerpts; returns how many deliveries. */
export async function deleteDueCallbackPayloads(
  tx: TenantSql,
  tenantId: string,
  cutoff: Date,
  limit: number,
): Promise<number> {
  // The conditions are repeated in the update so a row replayed meanwhile (pending again) is left alone.
  const [row] = await tx<{ count: number }[]>`
    with due as (
      select id from callback_deliveries
      where tenant_id = ${tenantId}::uuid and payload is not null and created_at < ${cutoff}
        and state <> 'pending'
      order by created_at limit ${limit}::int4
    ), expired as (
      update callback_deliveries d
      set payload_bytes = octet_length(d.payload), payload = null, payload_deleted_at = now()
      where d.tenant_id = ${tenantId}::uuid and d.id in (select id from due)
        and d.payload is not null and d.state <> 'pending'
      returning d.id
    ), answers as (
      update callback_attempts a set response_prefix = null
      where a.tenant_id = ${tenantId}::uuid and a.delivery_id in (select id from expired)
        and a.response_prefix is not null
    )
    select count(*)::int as count from expired`;
  return row?.count ?? 0;
}
