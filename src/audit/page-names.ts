import type { TenantSql } from '../db/tenant.ts';
import type { StoredAuditEvent } from './log.ts';

// The audit page names the users and agents its rows refer to (`user:<id>`,
// `agent:<id>` as actor or target) instead of showing raw ids. One query for
// the rows of the page, whatever their number, in the reader's tenant: a
// reference to another tenant's user or agent, or to one since deleted, finds
// no name and is shown as it was recorded.

const REFERENCE = /^(user|agent):([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/;

/** The name of each user and agent the events refer to, keyed by the reference (`user:<id>`). */
export async function namesForEvents(
  tx: TenantSql,
  events: readonly StoredAuditEvent[],
): Promise<Map<string, string>> {
  const users = new Set<string>();
  const agents = new Set<string>();
  for (const event of events) {
    for (const reference of [event.actor, event.target]) {
      // Recorded values: only a well-formed id ever reaches the query, as a bound array.
      const match = reference === null ? null : REFERENCE.exec(reference);
      if (match?.[2] === undefined) continue;
      (match[1] === 'user' ? users : agents).add(match[2]);
    }
  }
  if (users.size === 0 && agents.size === 0) return new Map();
  const rows = await tx<{ reference: string; name: string }[]>`
    select 'user:' || id::text as reference, username as name from users
    where id = any(${[...users]}::uuid[]) and tenant_id = enclave.current_tenant_id()
    union all
    select 'agent:' || id::text, name from agents
    where id = any(${[...agents]}::uuid[]) and tenant_id = enclave.current_tenant_id()`;
  return new Map(rows.map((row) => [row.reference, row.name]));
}
