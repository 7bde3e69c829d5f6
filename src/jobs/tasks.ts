import { hostname } from 'node:os';
import type { Sql } from 'postgres';

// The task list: every durable side effect is one of these, enqueued with
// enqueueJob() in the same transaction as its cause (OPS-2). A task must be
// idempotent: a job may run again after a crash between its work and its
// completion.

export interface TaskPayloads {
  /** Cron, every minute: records that this worker process is alive. */
  platform_heartbeat: Record<string, never>;
}

export type TaskName = keyof TaskPayloads;

export interface TaskDeps {
  readonly sql: Sql;
  /** Identifies this process in worker_heartbeats. */
  readonly workerId: string;
  readonly startedAt: Date;
}

export function defaultWorkerId(): string {
  return `${hostname()}:${process.pid}`;
}

async function recordHeartbeat(deps: TaskDeps): Promise<void> {
  await deps.sql.begin(async (tx) => {
    await tx`
      insert into worker_heartbeats (worker_id, started_at, seen_at)
      values (${deps.workerId}, ${deps.startedAt}, now())
      on conflict (worker_id) do update set seen_at = excluded.seen_at`;
    await tx`delete from worker_heartbeats where seen_at < now() - interval '1 day'`;
  });
}

export type TaskHandlers = { readonly [N in TaskName]: (payload: unknown) => Promise<void> };

export function createTaskHandlers(deps: TaskDeps): TaskHandlers {
  return {
    platform_heartbeat: () => recordHeartbeat(deps),
  };
}
