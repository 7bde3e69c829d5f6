import type { TenantSql } from '../db/tenant.ts';

// Relay retention (RLY-9) of inbound webhook events: an event's body is the
// text handed to an agent, as a relay message is, so it goes 30 days after it
// was received, in the hourly `relay_retention` job (src/relay/retention.ts,
// migration 0032). The row keeps its ids, webhook-id, times and delivery
// state, and records the body's size and when it was removed.
//
// An event's own retries (INBOUND_DELIVER_ATTEMPTS, graphile-worker's
// backoff) end within minutes, so a 30-day-old event still `queued` is only
// waiting for a stopped instance to start: it is marked failed as its body
// goes, since nothing is left to deliver.

/** Removes up to `limit` of the bound tenant's event bodies received before `cutoff`; returns how many. */
export async function deleteDueInboundBodies(
  tx: TenantSql,
  tenantId: string,
  cutoff: Date,
  limit: number,
): Promise<number> {
  const deleted = await tx`
    update inbound_webhook_events
    set body_bytes = octet_length(body), body = null, payload_deleted_at = now(),
      delivery = case when delivery = 'queued' then 'failed' else delivery end
    where tenant_id = ${tenantId}::uuid and body is not null and received_at < ${cutoff}
      and id in (select id from inbound_webhook_events
                 where tenant_id = ${tenantId}::uuid and body is not null and received_at < ${cutoff}
                 order by received_at limit ${limit}::int4)`;
  return deleted.count;
}
