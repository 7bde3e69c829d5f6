import type { Sql } from 'postgres';
import type { CheckOutcome } from './runs.ts';

// Checkpoint freshness (OPS-5, AUD-4): a checkpoint is signed within
// ENCLAVE_CHECKPOINT_DELAY seconds of a chain head moving, so no event may
// wait longer than that (with FRESHNESS_GRACE_SECONDS for a busy host) for a
// checkpoint to commit to it. A quiet platform has an old latest checkpoint
// and nothing waiting: that passes.

export const FRESHNESS_GRACE_SECONDS = 60;

export interface CheckpointFreshnessDeps {
  readonly sql: Sql;
  readonly delaySeconds: number;
}

export async function checkCheckpointFreshness(deps: CheckpointFreshnessDeps): Promise<CheckOutcome> {
  const [row] = await deps.sql<
    {
      size: string | null;
      signed_at: Date | null;
      age_seconds: number | null;
      waiting_tenants: string;
      oldest_waiting_seconds: number | null;
    }[]
  >`
    select l.size::text, l.created_at as signed_at,
           extract(epoch from now() - l.created_at)::float8 as age_seconds,
           u.tenants::text as waiting_tenants,
           extract(epoch from now() - u.oldest_unchecked_at)::float8 as oldest_waiting_seconds
    from enclave.posture_unchecked_heads() u
    left join lateral (select c.size, c.created_at from checkpoints c order by c.size desc limit 1) l on true`;
  const limit = deps.delaySeconds + FRESHNESS_GRACE_SECONDS;
  const waiting = Math.floor(row?.oldest_waiting_seconds ?? 0);
  const figures = {
    latest_size: row?.size ?? null,
    latest_signed_at: row?.signed_at?.toISOString() ?? null,
    latest_age_seconds: row?.age_seconds === null || row === undefined ? null : Math.floor(row.age_seconds),
    delay_seconds: deps.delaySeconds,
    limit_seconds: limit,
    tenants_waiting: Number(row?.waiting_tenants ?? 0),
    oldest_waiting_seconds: row?.oldest_waiting_seconds == null ? null : waiting,
  };
  const latest =
    figures.latest_age_seconds === null
      ? 'no checkpoint signed yet'
      : `latest checkpoint signed ${figures.latest_age_seconds} s ago`;
  if (waiting > limit) {
    return {
      result: 'failed',
      details: {
        summary: `${latest}; an event has waited ${waiting} s for a checkpoint (limit ${limit} s)`,
        ...figures,
      },
    };
  }
  return {
    result: 'pass',
    details: { summary: `${latest}; no event has waited more than ${limit} s for one`, ...figures },
  };
}
