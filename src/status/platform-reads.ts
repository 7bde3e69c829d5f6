import type { Sql } from 'postgres';
import { DatabaseUnavailableError } from '../db/timeouts.ts';
import { STALE_LOCK_SECONDS } from '../jobs/stale-locks.ts';
import { THRESHOLDS } from './components.ts';

// The status page's reads (RLY-10): one transaction, one statement of
// platform-wide aggregates. The job queue, the worker heartbeats and the
// checkpoints are global tables the app role reads already
// (src/db/global-tables.ts); the running-instance count crosses tenants
// through enclave.status_running_instances() (SECURITY DEFINER, a number only,
// migration 0024). Nothing read here names a tenant.
//
// The queue figures count jobs due and not taken, less those held only
// because their named queue is busy: a callback endpoint's deliveries run one
// at a time in its own queue (src/callbacks/deliver.ts), so 1,000 events to
// one slow endpoint wait there while a worker sends the first. That is one
// tenant's endpoint being slow, not the platform's workers falling behind, and
// it must not turn the public `queue` component degraded. A queue whose lock
// is older than STALE_LOCK_SECONDS is no live run's (a dead worker's, freed
// by src/jobs/stale-locks.ts): its jobs count. What stays counted: jobs of no
// named queue, and the head of a free named queue that no worker takes.

export interface PlatformFigures {
  readonly workersSeen: number;
  readonly lastHeartbeatAt: Date | null;
  readonly queueDepth: number;
  readonly oldestPendingAgeSeconds: number | null;
  readonly runningInstances: number;
  readonly latestCheckpointAgeSeconds: number | null;
}

export interface CallbackFigures {
  readonly successRateHour: number | null;
  readonly successRateDay: number | null;
}

interface FiguresRow {
  workers_seen: number;
  last_heartbeat_at: Date | null;
  queue_depth: number;
  oldest_pending_age_seconds: number | null;
  running_instances: number;
  latest_checkpoint_age_seconds: number | null;
}

/**
 * Reads the figures, bounded twice: statement_timeout ends the statement on a
 * live but slow server, and the client gives up after `timeoutMs` whatever the
 * server does, because a frozen one never answers (the connection itself is
 * then ended by the pool's own bound, src/db/timeouts.ts).
 */
export async function readPlatformFigures(sql: Sql, timeoutMs: number): Promise<PlatformFigures> {
  const reading = sql.begin(async (tx) => {
    await tx`select set_config('statement_timeout', ${String(timeoutMs)}, true)`;
    const [row] = await tx<FiguresRow[]>`
      select
        (select count(*)::int from worker_heartbeats
          where seen_at > now() - make_interval(mins => ${THRESHOLDS.workerWindowMinutes})) as workers_seen,
        (select max(seen_at) from worker_heartbeats) as last_heartbeat_at,
        due.depth as queue_depth,
        extract(epoch from now() - due.oldest_run_at)::float8 as oldest_pending_age_seconds,
        enclave.status_running_instances()::int as running_instances,
        (select extract(epoch from now() - max(created_at))::float8 from checkpoints) as latest_checkpoint_age_seconds
      from (
        select count(*)::int as depth, min(j.run_at) as oldest_run_at
        from graphile_worker._private_jobs j
        left join graphile_worker._private_job_queues q on q.id = j.job_queue_id
        where j.is_available and j.run_at <= now()
          -- Held behind a live run of its queue: not waiting for a worker.
          and not coalesce(q.locked_at > now() - make_interval(secs => ${STALE_LOCK_SECONDS}), false)
      ) due`;
    if (row === undefined) throw new Error('the status query returned no row');
    return row;
  });
  const row = await withinBound(reading, timeoutMs);
  return {
    workersSeen: row.workers_seen,
    lastHeartbeatAt: row.last_heartbeat_at,
    queueDepth: row.queue_depth,
    oldestPendingAgeSeconds: wholeSeconds(row.oldest_pending_age_seconds),
    runningInstances: row.running_instances,
    latestCheckpointAgeSeconds: wholeSeconds(row.latest_checkpoint_age_seconds),
  };
}

/**
 * Callback delivery success over the last hour and day (RLY-7): of the
 * deliveries that finished in the window (succeeded or failed; pending ones
 * are not an outcome yet), the share that succeeded; null for a window where
 * none finished. Counted by enclave.status_callback_outcomes (migration 0025,
 * SECURITY DEFINER, counts only), bounded as readPlatformFigures is; if it
 * throws, the callbacks component reads down.
 */
export async function readCallbackFigures(sql: Sql, timeoutMs: number): Promise<CallbackFigures> {
  const reading = sql.begin(async (tx) => {
    await tx`select set_config('statement_timeout', ${String(timeoutMs)}, true)`;
    const [row] = await tx<{ hour_ok: number; hour_failed: number; day_ok: number; day_failed: number }[]>`
      select h.succeeded::int as hour_ok, h.failed::int as hour_failed,
        d.succeeded::int as day_ok, d.failed::int as day_failed
      from enclave.status_callback_outcomes(now() - interval '1 hour') h,
        enclave.status_callback_outcomes(now() - interval '1 day') d`;
    if (row === undefined) throw new Error('the callback outcome query returned no row');
    return row;
  });
  const row = await withinBound(reading, timeoutMs);
  const rate = (ok: number, failed: number) => (ok + failed === 0 ? null : ok / (ok + failed));
  return {
    successRateHour: rate(row.hour_ok, row.hour_failed),
    successRateDay: rate(row.day_ok, row.day_failed),
  };
}

function wholeSeconds(seconds: number | null): number | null {
  // Clocks of the server and a job's run_at may differ by a little: a due job is never younger than 0 s.
  return seconds === null ? null : Math.max(0, Math.floor(seconds));
}

function withinBound<T>(work: Promise<T>, timeoutMs: number): Promise<T> {
  // Settled later or never: its outcome no longer matters once the bound has answered.
  work.catch(() => {});
  let timer: NodeJS.Timeout | undefined;
  const bound = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(
      () => reject(new DatabaseUnavailableError(`the status reads got no answer within ${timeoutMs} ms`)),
      timeoutMs,
    );
  });
  return Promise.race([work, bound]).finally(() => clearTimeout(timer));
}
