import type { Sql } from 'postgres';
import { createBatchWriter, errorFields } from '../db/batch-writer.ts';
import { type TenantSql, withTenant } from '../db/tenant.ts';
import type { Logger } from '../logger.ts';
import type { ModelProvider } from './provider-names.ts';
import type { TokenCounts } from './usage.ts';

// The gateway's records (AGT-7): one gateway_calls row per upstream call,
// and the per-day rollup the usage view reads. Rows are written in batches,
// one insert in flight per instance, at most FLUSH_MS after a call ends: an
// agent calling fast costs the database a committed write every FLUSH_MS, not
// one per call (whose commits, each waiting for the disk, measurably slowed
// the next calls' key reads). An instance's listener drains its queue when it
// closes; a killed worker loses at most the last FLUSH_MS of rows. The limits
// do not wait for them: the gateway counts the day's tokens as calls end.

export interface GatewayCall {
  readonly provider: ModelProvider;
  readonly model: string;
  /** The upstream's status; 0 when it never answered. */
  readonly status: number;
  readonly tokens: TokenCounts | undefined;
  readonly latencyMs: number;
  readonly streamed: boolean;
  readonly at: Date;
}

export interface Owner {
  readonly tenantId: string;
  readonly agentId: string;
}

const BATCH = 500;
/** How long a finished call's row may wait to be written with the ones after it. */
export const FLUSH_MS = 100;
const MAX_LATENCY_MS = 2_147_483_647;

/** The UTC day a call counts toward, as the rollup keys it. */
export function utcDay(at: Date): string {
  return at.toISOString().slice(0, 10);
}

/** Writes calls and adds them to the day's rollup, in the caller's tenant transaction, two statements. */
export async function insertGatewayCalls(
  tx: TenantSql,
  owner: Owner,
  calls: readonly GatewayCall[],
): Promise<void> {
  if (calls.length === 0) return;
  const rows = calls.map((call) => ({
    provider: call.provider,
    model: call.model,
    status: call.status,
    input_tokens: call.tokens?.input ?? null,
    output_tokens: call.tokens?.output ?? null,
    latency_ms: Math.min(MAX_LATENCY_MS, Math.max(0, Math.round(call.latencyMs))),
    streamed: call.streamed,
    created_at: call.at.toISOString(),
    day: utcDay(call.at),
    failed: call.status < 200 || call.status >= 300,
  }));
  await tx`
    with r as (
      select * from jsonb_to_recordset(${tx.json(rows)}::jsonb) as r(
        provider text, model text, status int4, input_tokens int8, output_tokens int8, latency_ms int4,
        streamed bool, created_at timestamptz, day date, failed bool)
    ), calls as (
      insert into gateway_calls
        (tenant_id, agent_id, provider, model, status, input_tokens, output_tokens, latency_ms, streamed, created_at)
      select ${owner.tenantId}::uuid, ${owner.agentId}::uuid, provider, model, status, input_tokens, output_tokens,
             latency_ms, streamed, created_at
      from r
    )
    insert into gateway_usage_daily as d
      (tenant_id, agent_id, day, provider, model, requests, failed, input_tokens, output_tokens)
    select ${owner.tenantId}::uuid, ${owner.agentId}::uuid, day, provider, model, count(*), count(*) filter (where failed),
           coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0)
    from r group by day, provider, model
    on conflict (tenant_id, agent_id, day, provider, model) do update set
      requests = d.requests + excluded.requests,
      failed = d.failed + excluded.failed,
      input_tokens = d.input_tokens + excluded.input_tokens,
      output_tokens = d.output_tokens + excluded.output_tokens`;
}

export interface CallRecorder {
  record(call: GatewayCall): void;
  /** Tokens recorded for `day` that are not yet written (the limit check adds them to the stored sum). */
  pendingTokens(day: string): number;
  /** Resolves once every call recorded so far has been written (or its loss logged). */
  drain(): Promise<void>;
}

export function createCallRecorder(deps: { sql: Sql; logger: Logger }, owner: Owner): CallRecorder {
  const writer = createBatchWriter<GatewayCall>({
    batch: BATCH,
    flushMs: FLUSH_MS,
    write: (batch) => withTenant(deps.sql, owner.tenantId, (tx) => insertGatewayCalls(tx, owner, batch)),
    lost: (count, error) =>
      deps.logger.error(
        { agentId: owner.agentId, tenantId: owner.tenantId, lost: count, err: errorFields(error) },
        'model gateway usage could not be written',
      ),
  });
  return {
    record: writer.add,
    pendingTokens: (day) =>
      writer
        .pending()
        .reduce(
          (sum, call) =>
            sum + (utcDay(call.at) === day ? (call.tokens?.input ?? 0) + (call.tokens?.output ?? 0) : 0),
          0,
        ),
    drain: writer.drain,
  };
}

export interface ModelLimits {
  readonly requests_per_minute: number | null;
  readonly tokens_per_day: number | null;
}

export interface UsageDay {
  readonly day: string;
  readonly provider: ModelProvider;
  readonly model: string;
  readonly requests: number;
  readonly failed: number;
  readonly input_tokens: number;
  readonly output_tokens: number;
}

/** The usage view reads at most this many rollup rows (days × models), newest days first. */
export const MAX_USAGE_ROWS = 1000;

/** The agent's usage per UTC day and model over the last `days` days (today included), newest first. */
export async function readUsage(tx: TenantSql, agentId: string, days: number): Promise<UsageDay[]> {
  return tx<UsageDay[]>`
    select to_char(day, 'YYYY-MM-DD') as day, provider, model, requests::float8 as requests,
           failed::float8 as failed, input_tokens::float8 as input_tokens, output_tokens::float8 as output_tokens
    from gateway_usage_daily
    where agent_id = ${agentId}::uuid
      and day > (now() at time zone 'UTC')::date - ${days}::int4
    order by day desc, provider, model
    limit ${MAX_USAGE_ROWS}::int4`;
}

/** The agent's limits; undefined when there is no such agent in the tenant. */
export async function readLimits(tx: TenantSql, agentId: string): Promise<ModelLimits | undefined> {
  const [row] = await tx<ModelLimits[]>`
    select model_requests_per_minute as requests_per_minute, model_tokens_per_day::float8 as tokens_per_day
    from agents where id = ${agentId}::uuid`;
  return row;
}

export async function writeLimits(tx: TenantSql, agentId: string, limits: ModelLimits): Promise<void> {
  await tx`
    update agents set model_requests_per_minute = ${limits.requests_per_minute},
                      model_tokens_per_day = ${limits.tokens_per_day}, updated_at = now()
    where id = ${agentId}::uuid`;
}
