import type { Sql } from 'postgres';
import { createBatchWriter, errorFields } from '../../db/batch-writer.ts';
import { type TenantSql, withTenant } from '../../db/tenant.ts';
import {
  afterPosition,
  boundTenant,
  type PageRequest,
  type PositionedRow,
  positionColumns,
} from '../../http/page-cursor.ts';
import type { Logger } from '../../logger.ts';
import type { EgressIdentity } from '../runtime/driver.ts';

// The egress proxy's connection records (AGT-4): one row per connection or
// attempt in egress_connections, scoped to the agent's tenant by RLS, read
// back on the agent's page and through GET /api/v1/agents/:id/egress.

export type EgressMethod = 'CONNECT' | 'HTTP';

/** One connection or attempt, as the proxy saw it when it ended. */
export interface EgressRecord {
  readonly host: string;
  readonly port: number;
  readonly method: EgressMethod;
  readonly allowed: boolean;
  /** Why it was refused or failed; undefined for a connection that ended normally. */
  readonly reason: string | undefined;
  /** Bytes from the agent to the destination (request line and headers included for plain HTTP). */
  readonly bytesOut: number;
  /** Bytes from the destination to the agent. */
  readonly bytesIn: number;
  readonly durationMs: number;
  readonly startedAt: Date;
}

/** A record as the API shows it. */
export interface EgressConnectionRow {
  readonly id: string;
  readonly host: string;
  readonly port: number;
  readonly method: EgressMethod;
  readonly allowed: boolean;
  readonly reason: string | null;
  readonly bytes_out: number;
  readonly bytes_in: number;
  readonly duration_ms: number;
  readonly started_at: Date;
}

/**
 * How a connection ended, as its owner reads it: allowed; refused by policy
 * (the allowlist, a private or host address, a malformed request); or failed
 * on the way (no DNS answer, connection refused upstream, the proxy busy).
 * Both of the last two are stored as not allowed, so the reasons that
 * proxy.ts gives for a failure tell them apart.
 */
export type EgressOutcome = 'allowed' | 'refused' | 'failed';

const FAILURE_REASON = /^(?:DNS |connect |too many |the egress listener closed)/;

export function egressOutcome(row: Pick<EgressConnectionRow, 'allowed' | 'reason'>): EgressOutcome {
  if (row.allowed) return 'allowed';
  return row.reason !== null && FAILURE_REASON.test(row.reason) ? 'failed' : 'refused';
}

const MAX_HOST = 253;
const MAX_REASON = 300;
const MAX_DURATION_MS = 2_147_483_647;
/** Rows per insert when records queue up faster than they are written. */
const BATCH = 500;

/** Inserts records for one agent in the caller's tenant transaction, in one statement. */
export async function insertEgressRecords(
  tx: TenantSql,
  owner: Pick<EgressIdentity, 'tenantId' | 'agentId'>,
  records: readonly EgressRecord[],
): Promise<void> {
  if (records.length === 0) return;
  // host and reason derive from what the agent sent: passed as one bound JSON value, clipped to the column limits.
  const rows = records.map((r) => ({
    host: r.host.slice(0, MAX_HOST),
    port: r.port,
    method: r.method,
    allowed: r.allowed,
    reason: r.reason === undefined ? null : r.reason.slice(0, MAX_REASON),
    bytes_out: Math.max(0, Math.trunc(r.bytesOut)),
    bytes_in: Math.max(0, Math.trunc(r.bytesIn)),
    duration_ms: Math.min(MAX_DURATION_MS, Math.max(0, Math.round(r.durationMs))),
    started_at: r.startedAt.toISOString(),
  }));
  await tx`
    insert into egress_connections
      (tenant_id, agent_id, host, port, method, allowed, reason, bytes_out, bytes_in, duration_ms, started_at)
    select ${owner.tenantId}::uuid, ${owner.agentId}::uuid, r.host, r.port, r.method, r.allowed, r.reason,
           r.bytes_out, r.bytes_in, r.duration_ms, r.started_at
    from jsonb_to_recordset(${tx.json(rows)}::jsonb) as r(
      host text, port int4, method text, allowed bool, reason text,
      bytes_out int8, bytes_in int8, duration_ms int4, started_at timestamptz)`;
}

/** Whether the agent exists in the transaction's tenant (a foreign agent is invisible under RLS). */
/** The agent's creator (who may read its records, with owners and admins); undefined: no such agent. */
export async function agentCreator(
  tx: TenantSql,
  agentId: string,
): Promise<{ created_by: string | null } | undefined> {
  const [agent] = await tx<{ created_by: string | null }[]>`
    select created_by from agents where id = ${agentId}::uuid`;
  return agent;
}

/** The agent's newest `limit` egress records, newest first, without their page positions. */
export async function listEgressRecords(
  tx: TenantSql,
  agentId: string,
  limit: number,
): Promise<EgressConnectionRow[]> {
  const rows = await listEgressPage(tx, agentId, { after: undefined, limit });
  return rows.slice(0, limit).map(({ page_at: _at, page_id: _id, ...row }) => row);
}

/** A page of the agent's egress records, newest first, keyed by (started_at, id) (egress_connections_agent_page index). */
export async function listEgressPage(
  tx: TenantSql,
  agentId: string,
  page: PageRequest,
): Promise<(EgressConnectionRow & PositionedRow)[]> {
  return tx<(EgressConnectionRow & PositionedRow)[]>`
    select id, host, port, method, allowed, reason, bytes_out::float8 as bytes_out,
           bytes_in::float8 as bytes_in, duration_ms, started_at, ${positionColumns(tx, 'started_at')}
    from egress_connections
    where ${boundTenant(tx)} and agent_id = ${agentId}::uuid ${afterPosition(tx, 'started_at', 'desc', page.after)}
    order by started_at desc, id desc
    limit ${page.limit + 1}::int4`;
}

export interface EgressRecorder {
  /** Queues a record; it is written shortly after, in a batch with any others queued meanwhile. */
  record(record: EgressRecord): void;
  /** Resolves once every record queued so far has been written (or its failure logged). */
  drain(): Promise<void>;
}

/**
 * One agent's record writer (db/batch-writer.ts): at most one insert in
 * flight per listener, so an agent opening connections quickly costs the
 * database batches, not a transaction each.
 */
export function createEgressRecorder(
  deps: { sql: Sql; logger: Logger },
  owner: Pick<EgressIdentity, 'tenantId' | 'agentId'>,
): EgressRecorder {
  const writer = createBatchWriter<EgressRecord>({
    batch: BATCH,
    // The agent is the principal and each row is itself the record: withTenant, not serviceQuery,
    // whose audit event per call would copy every connection into the tenant's audit chain.
    write: (batch) => withTenant(deps.sql, owner.tenantId, (tx) => insertEgressRecords(tx, owner, batch)),
    // Never the rows themselves: hosts are logged at debug level only.
    lost: (count, error) =>
      deps.logger.error(
        { agentId: owner.agentId, tenantId: owner.tenantId, lost: count, err: errorFields(error) },
        'egress records could not be written',
      ),
  });
  return { record: writer.add, drain: writer.drain };
}
