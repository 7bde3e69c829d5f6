import type { Sql } from 'postgres';

// A worker killed mid-job (kill -9, a lost machine) leaves its job locked, and
// the job's named queue with it; graphile-worker frees such a lock only after
// 4 hours. For the tasks below one run is bounded (an HTTP attempt with its
// own timeout, under 30 s, plus the database's bound), so a lock older than
// STALE_LOCK_SECONDS can only be a dead worker's: the `stale_lock_release`
// cron (every minute, and at every worker start) frees those jobs and their
// queues, and each runs again. Each task is idempotent per run (OPS-2): the
// relay and inbound deliveries record an answer once, a callback attempt keeps
// its webhook-id.

/** Older than any live run of a bounded task: its worker died. */
export const STALE_LOCK_SECONDS = 120;

/** Bounded tasks and the prefix of the named queues their jobs run in. */
export const BOUNDED_TASKS: readonly { readonly task: string; readonly queuePrefix: string }[] = [
  { task: 'callback_deliver', queuePrefix: 'callback:' },
  { task: 'relay_deliver', queuePrefix: 'relay:' },
  { task: 'inbound_webhook_deliver', queuePrefix: 'inbound:' },
];

/** Frees the bounded tasks' jobs and queues locked past STALE_LOCK_SECONDS; returns how many jobs. */
export async function releaseStaleLocks(sql: Sql): Promise<number> {
  const tasks = BOUNDED_TASKS.map((bounded) => bounded.task);
  const queues = BOUNDED_TASKS.map((bounded) => `${bounded.queuePrefix}%`);
  return sql.begin(async (tx) => {
    const jobs = await tx`
      update graphile_worker._private_jobs j set locked_at = null, locked_by = null
      from graphile_worker._private_tasks t
      where t.id = j.task_id and t.identifier = any(${tasks}::text[])
        and j.locked_at < now() - make_interval(secs => ${STALE_LOCK_SECONDS})
      returning j.id`;
    await tx`
      update graphile_worker._private_job_queues set locked_at = null, locked_by = null
      where queue_name like any(${queues}::text[])
        and locked_at < now() - make_interval(secs => ${STALE_LOCK_SECONDS})`;
    return jobs.length;
  });
}
