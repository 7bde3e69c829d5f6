import type { Sql } from 'postgres';
import { withTenant } from '../db/tenant.ts';

// The isolation probe's two tenants (OPS-5) and the rows each keeps, so that
// a policy letting one tenant read another's rows has a row to show: a table
// holding nothing of the other probe cannot reveal a leak.
//
// Rows go only where making them has no side effect and no reader outside the
// tenant: no job, mail, audit event or checkpoint leaf (the checkpoint log is
// public, and would carry the probes' heads), no user who could sign in, no
// published card or directory listing, no agent instance. The agent's handle
// starts with `enclave-`, which no user may take (agents/handles.ts). The
// comment in 0030_posture.sql ("no users, agents or listings; every listing
// filters on the flag") predates these rows and is not edited, as no applied
// migration is: what holds is that nothing of theirs enters a listing, and the
// one report that enumerates tenants, the drill's chain count, filters on it.

export interface ProbeTenant {
  readonly id: string;
  readonly name: string;
  /** The probe's agent, the parent of its gateway usage row. */
  readonly agentId: string;
  readonly handle: string;
  /** The id of its rows in tables keyed by id. */
  readonly rowId: string;
}

export const PROBE_TENANTS: readonly [ProbeTenant, ProbeTenant] = [
  {
    id: '00000000-0000-4000-8000-0000000e0001',
    name: 'isolation probe A',
    agentId: '00000000-0000-4000-8000-0000000e0a01',
    handle: 'enclave-isolation-probe-a',
    rowId: '00000000-0000-4000-8000-0000000e0b01',
  },
  {
    id: '00000000-0000-4000-8000-0000000e0002',
    name: 'isolation probe B',
    agentId: '00000000-0000-4000-8000-0000000e0a02',
    handle: 'enclave-isolation-probe-b',
    rowId: '00000000-0000-4000-8000-0000000e0b02',
  },
];

/** The tenant tables in which each probe keeps a row of its own besides its tenants row (as the catalog names them). */
export const PROBE_ROW_TABLES = [
  'enclave.agents',
  'enclave.agent_provision_requests',
  'enclave.gateway_usage_daily',
  'enclave.gateway_key_hours',
  'enclave.egress_connections',
  'enclave.idempotency_keys',
] as const;

/**
 * Makes whatever is missing of the probe tenants and their rows: every run
 * calls it, so a row removed (an expired idempotency key swept) comes back.
 * Any worker may run it at any time; each insert does nothing on a conflict.
 */
export async function ensureProbeRows(sql: Sql): Promise<void> {
  for (const probe of PROBE_TENANTS) {
    await withTenant(sql, probe.id, async (tx) => {
      await tx`
        insert into tenants (id, name, probe) values (${probe.id}::uuid, ${probe.name}, true)
        on conflict (id) do nothing`;
      await tx`
        insert into agents (id, tenant_id, handle, name, template_id)
        values (${probe.agentId}::uuid, ${probe.id}::uuid, ${probe.handle}, ${probe.name}, 'isolation-probe')
        on conflict do nothing`;
      await tx`
        insert into agent_provision_requests (id, tenant_id, agent_id, template_id, support_access, credentials_provided)
        values (${probe.rowId}::uuid, ${probe.id}::uuid, ${probe.agentId}::uuid, 'isolation-probe', false, '{}'::jsonb)
        on conflict do nothing`;
      await tx`
        insert into gateway_usage_daily (tenant_id, agent_id, day, provider, model)
        values (${probe.id}::uuid, ${probe.agentId}::uuid, '2000-01-01'::date, 'anthropic', 'isolation-probe')
        on conflict do nothing`;
      await tx`
        insert into gateway_key_hours (tenant_id, agent_id, provider, hour)
        values (${probe.id}::uuid, ${probe.agentId}::uuid, 'anthropic', '2000-01-01T00:00:00Z'::timestamptz)
        on conflict do nothing`;
      await tx`
        insert into egress_connections (id, tenant_id, agent_id, host, port, method, allowed, reason, started_at)
        values (${probe.rowId}::uuid, ${probe.id}::uuid, ${probe.agentId}::uuid, 'isolation-probe.invalid', 0,
                'CONNECT', false, 'isolation probe (OPS-5)', '2000-01-01T00:00:00Z'::timestamptz)
        on conflict do nothing`;
      await tx`
        insert into idempotency_keys (id, tenant_id, scope, key, fingerprint, claim, state, status, expires_at)
        values (${probe.rowId}::uuid, ${probe.id}::uuid, 'isolation-probe', 'isolation-probe',
                sha256('isolation-probe'::bytea), ${probe.rowId}::uuid, 'done', 200, 'infinity'::timestamptz)
        on conflict do nothing`;
    });
  }
}
