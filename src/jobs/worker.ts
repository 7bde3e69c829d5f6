import { once } from 'node:events';
import {
  Logger as GraphileLogger,
  type LogLevel,
  parseCronItems,
  type Runner,
  run,
  type TaskList,
  type WorkerEvents,
} from 'graphile-worker';
import pg from 'pg';
import type { Sql } from 'postgres';
import type { Lifecycle } from '../agents/runtime/lifecycle.ts';
import { startCheckpointer } from '../audit/checkpointer.ts';
import { type AuditSetup, createAuditServices } from '../audit/setup.ts';
import type { CallbackDelivery } from '../callbacks/deliver.ts';
import type { Credentials, DbTarget } from '../db/target.ts';
import { connectionUrl } from '../db/target.ts';
import { DB_TIMEOUT_DEFAULT_MS, pgPoolTimeouts } from '../db/timeouts.ts';
import type { Mailer } from '../email/mailer.ts';
import type { Logger } from '../logger.ts';
import { POSTURE_CHECKS } from '../posture/runs.ts';
import { DEFAULT_POSTURE_INTERVAL_MINUTES, postureCronMatch } from '../posture/schedule.ts';
import { createPostureService, postureTaskName } from '../posture/verifiers.ts';
import type { RelayDelivery } from '../relay/delivery.ts';
import type { InboundDelivery } from '../webhooks/inbound-delivery.ts';
import { createTaskHandlers, type TaskDeps, type TaskName } from './tasks.ts';

// The job runner: graphile-worker over the app role, inside `enclave start`
// or alone as `enclave worker`. Signals are ours to handle (the process
// stops the HTTP server first, then the worker, then the database).

export interface WorkerDeps {
  readonly target: DbTarget;
  readonly credentials: Credentials;
  /** Bound on every wait on the database (ENCLAVE_DB_TIMEOUT_MS; see db/timeouts.ts). */
  readonly timeoutMs?: number;
  readonly sql: Sql;
  readonly logger: Logger;
  readonly concurrency: number;
  readonly workerId: string;
  readonly mailer: Pick<Mailer, 'send'>;
  /** Origin that links in mail point at (ENCLAVE_PUBLIC_URL). */
  readonly publicUrl: string;
  /** Checkpoint key, publisher, archive and windows (AUD-4, AUD-7). */
  readonly audit: AuditSetup;
  /** The agent runtime, in the one process that runs instances; absent in scale-out workers. */
  readonly lifecycle?: Lifecycle;
  /** The relay's delivery to instances, in the same process as `lifecycle` (it reaches their sockets). */
  readonly relayDelivery?: RelayDelivery;
  /** Inbound webhook events to instances, beside `relayDelivery`. */
  readonly inboundDelivery?: InboundDelivery;
  /** Callback deliveries (RLY-7), in every worker process. */
  readonly callbackDelivery?: CallbackDelivery;
  readonly events?: WorkerEvents;
  /** How often jobs are looked for besides the insert notifications (POLL_INTERVAL_MS when absent). */
  readonly pollIntervalMs?: number;
  /** How often each posture verifier runs (ENCLAVE_POSTURE_INTERVAL_MINUTES; hourly when absent). */
  readonly postureIntervalMinutes?: number;
}

/**
 * graphile-worker looks for the next job before the one it just finished is
 * marked complete, so a job waiting in a named queue (a relay thread's
 * deliveries, one at a time) behind the finished one is missed then, and was
 * found only by the next poll: its default 2 s was the relay's p99. A poll is
 * one small query a process makes while idle.
 */
export const POLL_INTERVAL_MS = 250;

/** The posture verifiers first run this long after the worker starts, once start-up work has settled. */
export const POSTURE_START_DELAY_MS = 15_000;

/** A platform cron task: one job per tick (job key = task), never backfilled after downtime. */
function platformCron(task: TaskName, match: string, maxAttempts: number) {
  return {
    task,
    match,
    identifier: task,
    options: { backfillPeriod: 0, maxAttempts, jobKey: task, jobKeyMode: 'replace' as const },
  };
}

export const cronItems = (runtime = false, postureIntervalMinutes = DEFAULT_POSTURE_INTERVAL_MINUTES) =>
  parseCronItems([
    platformCron('platform_heartbeat', '* * * * *', 1),
    platformCron('maintenance_prune', '17 * * * *', 3),
    platformCron('relay_retention', '29 * * * *', 3),
    platformCron('audit_retention', '41 3 * * *', 3),
    platformCron('stale_lock_release', '* * * * *', 1),
    // OPS-5: each verifier every ENCLAVE_POSTURE_INTERVAL_MINUTES, at its own minute (posture/schedule.ts).
    ...POSTURE_CHECKS.map((check, i) =>
      platformCron(postureTaskName(check), postureCronMatch(i, postureIntervalMinutes), 1),
    ),
    ...(runtime ? [platformCron('agent_reconcile', '* * * * *', 1)] : []),
  ]);

export function graphileLogger(logger: Logger): GraphileLogger {
  const child = logger.child({ component: 'worker' });
  return new GraphileLogger((scope) => (level: LogLevel, message, meta) => {
    // graphile-worker attaches the whole job row; log its id and task only, never the payload.
    const { job, ...rest } = (meta ?? {}) as { job?: { id?: string; task_identifier?: string } };
    const fields = {
      ...scope,
      ...rest,
      ...(job === undefined ? {} : { jobId: job.id, task: job.task_identifier }),
    };
    if (level === 'error') child.error(fields, message);
    else if (level === 'warning') child.warn(fields, message);
    else if (level === 'info') child.info(fields, message);
    else child.debug(fields, message);
  });
}

export interface Worker {
  /** Settles when the runner stops; rejects if it dies on its own. */
  readonly done: Promise<void>;
  stop(): Promise<void>;
}

/** How long a stop waits for the queries still under way (a finished job's completion) before ending the pool. */
const SETTLE_MS = 10_000;

/**
 * Resolves once no client of `pool` is checked out or waited for, or after
 * `ms`. graphile-worker does not await a finished job's completion (its
 * batched mode does, but turns one failed write into the worker's shutdown),
 * so its stop can resolve while that write is still under way; ending the
 * pool then would lose it, and a SIGTERM in the middle of deliveries left a
 * delivered job, and its endpoint's queue, locked until the stale-lock
 * release (src/callbacks/deliver-worker.test.ts).
 */
async function settled(pool: pg.Pool, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while ((pool.totalCount > pool.idleCount || pool.waitingCount > 0) && Date.now() < deadline) {
    await once(pool, 'release', { signal: AbortSignal.timeout(Math.max(1, deadline - Date.now())) }).catch(
      () => undefined,
    );
  }
}

export async function startWorker(deps: WorkerDeps): Promise<Worker> {
  const auditLogger = deps.logger.child({ component: 'audit' });
  const audit = createAuditServices(deps.audit, deps.sql, auditLogger);
  const handlers = createTaskHandlers({
    sql: deps.sql,
    workerId: deps.workerId,
    startedAt: new Date(),
    mailer: deps.mailer,
    publicUrl: deps.publicUrl,
    audit,
    lifecycle: deps.lifecycle,
    relayDelivery: deps.relayDelivery,
    inboundDelivery: deps.inboundDelivery,
    callbackDelivery: deps.callbackDelivery,
    posture: createPostureService({ sql: deps.sql, audit: deps.audit }),
  } satisfies TaskDeps);
  const taskList: TaskList = {};
  for (const [name, handler] of Object.entries(handlers)) {
    if (handler !== undefined) taskList[name] = async (payload) => handler(payload);
  }
  // Our own pool, with an error listener that outlives the runner: graphile-
  // worker drops its listener before ending a pool it was given a connection
  // string for, and an idle client's error after that would crash the process.
  const pool = new pg.Pool({
    connectionString: connectionUrl(deps.target, deps.credentials),
    max: deps.concurrency + 2,
    ...pgPoolTimeouts(deps.timeoutMs ?? DB_TIMEOUT_DEFAULT_MS),
  });
  pool.on('error', (error) => deps.logger.warn({ err: error }, 'job queue connection error'));
  // A checked-out client's own error events, too (graphile-worker warns without this listener).
  pool.on('connect', (client) => {
    client.on('error', (error) => deps.logger.warn({ err: error }, 'job queue client error'));
  });
  let runner: Runner;
  try {
    runner = await run({
      pgPool: pool,
      concurrency: deps.concurrency,
      taskList,
      parsedCronItems: cronItems(deps.lifecycle !== undefined, deps.postureIntervalMinutes),
      noHandleSignals: true,
      logger: graphileLogger(deps.logger),
      ...(deps.events === undefined ? {} : { events: deps.events }),
      pollInterval: deps.pollIntervalMs ?? POLL_INTERVAL_MS,
    });
  } catch (error) {
    await pool.end();
    throw error;
  }
  // Deliveries a killed worker left locked are freed now, not at the next cron tick.
  await runner.addJob('stale_lock_release', {}, { jobKey: 'stale_lock_release', maxAttempts: 1 });
  // OPS-5: /security shows real runs from shortly after start, not from the next hour.
  const postureAt = new Date(Date.now() + POSTURE_START_DELAY_MS);
  for (const check of POSTURE_CHECKS) {
    const task = postureTaskName(check);
    await runner.addJob(task, {}, { jobKey: task, maxAttempts: 1, runAt: postureAt });
  }
  // Instances that should run are started again now, not at the next cron tick.
  if (deps.lifecycle !== undefined) {
    await runner.addJob('agent_reconcile', {}, { jobKey: 'agent_reconcile', maxAttempts: 1 });
  }
  const checkpointer = startCheckpointer({
    sql: deps.sql,
    checkpoints: audit.checkpoints,
    delaySeconds: deps.audit.checkpointDelaySeconds,
    logger: auditLogger,
  });
  let stopping: Promise<void> | undefined;
  return {
    done: runner.promise,
    stop() {
      // The runner first, so no sync starts an instance while they are being stopped.
      stopping ??= checkpointer
        .stop()
        .then(() => runner.stop())
        .then(() => settled(pool, SETTLE_MS))
        .then(() => deps.lifecycle?.stopAll())
        .finally(() => pool.end());
      return stopping;
    },
  };
}
