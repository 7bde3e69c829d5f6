import type { Sql, TransactionSql } from 'postgres';
import type { TaskName, TaskPayloads } from './tasks.ts';

export interface EnqueueOptions {
  /** Deduplicates: a job with the same key is replaced, not doubled. */
  readonly jobKey?: string;
  readonly runAt?: Date;
  readonly maxAttempts?: number;
  /** Jobs in one named queue run one at a time. */
  readonly queue?: string;
}

/**
 * Adds a job through graphile_worker.add_job on the caller's own connection,
 * so the job commits or rolls back with the work that caused it (OPS-2).
 * Pass the transaction handle the work runs in.
 */
export async function enqueueJob<N extends TaskName>(
  sql: Sql | TransactionSql,
  task: N,
  payload: TaskPayloads[N],
  options: EnqueueOptions = {},
): Promise<string> {
  // sql.json, not JSON.stringify: postgres.js encodes a ::json parameter itself, so a string would arrive as a JSON string.
  const [job] = await sql<{ id: string }[]>`
    select id::text from graphile_worker.add_job(
      identifier => ${task}::text,
      payload => ${sql.json(payload as unknown as Parameters<typeof sql.json>[0])}::json,
      queue_name => ${options.queue ?? null}::text,
      run_at => ${options.runAt ?? null}::timestamptz,
      max_attempts => ${options.maxAttempts ?? null}::int,
      job_key => ${options.jobKey ?? null}::text
    )`;
  if (job === undefined) throw new Error('add_job returned no row');
  return job.id;
}
