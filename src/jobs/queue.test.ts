import assert from 'node:assert/strict';
import { EventEmitter, once } from 'node:events';
import { Writable } from 'node:stream';
import { after, before, beforeEach, describe, test } from 'node:test';
import type { WorkerEvents } from 'graphile-worker';
import { testAuditSetup } from '../../test/helpers/audit.ts';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/database.ts';
import { loadConfig } from '../config.ts';
import { createOutboxMailer } from '../email/mailer.ts';
import { createLogger } from '../logger.ts';
import { POSTURE_CHECKS } from '../posture/runs.ts';
import { postureTaskName } from '../posture/verifiers.ts';
import { enqueueJob } from './queue.ts';
import { cronItems, startWorker, type Worker } from './worker.ts';

// OPS-2: a side effect is a job committed with its cause. If the cause rolls
// back, no job exists; if it commits, exactly one does, however often the
// same job key is enqueued; and a real worker picks it up and runs it.

let db: TestDatabase;

before(async () => {
  db = await createTestDatabase();
});
after(() => db.drop());

async function jobCount(where: { task?: string; key?: string; id?: string } = {}): Promise<number> {
  const [row] = await db.superuser<{ count: number }[]>`
    select count(*)::int as count
    from graphile_worker._private_jobs as jobs
    join graphile_worker._private_tasks as tasks on tasks.id = jobs.task_id
    where (${where.task ?? null}::text is null or tasks.identifier = ${where.task ?? null}::text)
      and (${where.key ?? null}::text is null or jobs.key = ${where.key ?? null}::text)
      and (${where.id ?? null}::bigint is null or jobs.id = ${where.id ?? null}::bigint)`;
  return row?.count ?? -1;
}

describe('enqueueJob', () => {
  beforeEach(async () => {
    await db.superuser`delete from graphile_worker._private_jobs`;
  });

  test('OPS-2: a job enqueued in a transaction that rolls back does not exist', async () => {
    let jobId: string | undefined;
    await assert.rejects(
      db.app.begin(async (tx) => {
        jobId = await enqueueJob(tx, 'platform_heartbeat', {});
        // Inside the transaction the job is there...
        const [inside] = await tx<{ count: number }[]>`
          select count(*)::int as count from graphile_worker.jobs where id = ${jobId}::bigint`;
        assert.equal(inside?.count, 1);
        throw new Error('the cause failed');
      }),
      /the cause failed/,
    );
    // ...and after the rollback it is gone with its cause.
    assert.ok(jobId !== undefined);
    assert.equal(await jobCount({ id: jobId }), 0);
    assert.equal(await jobCount({ task: 'platform_heartbeat' }), 0);
  });

  test('OPS-2: a job enqueued in a committed transaction exists exactly once', async () => {
    const jobId = await db.app.begin((tx) => enqueueJob(tx, 'platform_heartbeat', {}));
    assert.equal(await jobCount({ task: 'platform_heartbeat' }), 1);
    assert.equal(await jobCount({ id: jobId }), 1);
  });

  test('OPS-2: enqueueing the same job key twice leaves one job', async () => {
    const first = await db.app.begin((tx) =>
      enqueueJob(tx, 'platform_heartbeat', {}, { jobKey: 'heartbeat:dedupe' }),
    );
    const second = await db.app.begin((tx) =>
      enqueueJob(tx, 'platform_heartbeat', {}, { jobKey: 'heartbeat:dedupe' }),
    );
    assert.equal(second, first);
    assert.equal(await jobCount({ key: 'heartbeat:dedupe' }), 1);
    assert.equal(await jobCount({ task: 'platform_heartbeat' }), 1);
  });
});

interface JobCompleteEvent {
  job: { id: string | number };
  error: unknown;
}

/**
 * Watches the worker's job:complete events from before any job is added, so a
 * job that finishes quickly cannot be missed. `finished(id)` resolves with the
 * job's error (null on success) once the worker is done with it and has
 * logged the outcome.
 */
function watchJobs(events: WorkerEvents): { finished(jobId: string): Promise<unknown> } {
  const outcomes = new Map<string, unknown>();
  const waiters = new Map<string, (error: unknown) => void>();
  events.on('job:complete', ({ job, error }: JobCompleteEvent) => {
    const id = String(job.id);
    outcomes.set(id, error);
    waiters.get(id)?.(error);
  });
  return {
    finished(jobId) {
      if (outcomes.has(jobId)) return Promise.resolve(outcomes.get(jobId));
      return new Promise((resolve) => waiters.set(jobId, resolve));
    },
  };
}

describe('worker', () => {
  const events: WorkerEvents = new EventEmitter();
  const jobs = watchJobs(events);
  const logLines: string[] = [];
  let runner: Worker | undefined;

  before(async () => {
    await db.superuser`delete from graphile_worker._private_jobs`;
    const cronStarted = once(events, 'cron:started');
    runner = await startWorker({
      target: db.target,
      credentials: db.appCredentials,
      sql: db.app,
      // A captured logger rather than a silent one, so the payload test can read what was logged.
      logger: createLogger(
        'info',
        new Writable({
          write(chunk: Buffer, _encoding, done) {
            logLines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
            done();
          },
        }),
      ),
      concurrency: 1,
      workerId: 'test-worker',
      mailer: createOutboxMailer(db.app),
      publicUrl: 'http://127.0.0.1:3000',
      audit: testAuditSetup(),
      events,
    });
    await cronStarted;
  });
  after(async () => {
    await runner?.stop();
  });

  test('OPS-2: the worker runs an enqueued heartbeat job, which records the worker', async () => {
    const before = await db.superuser`select 1 from worker_heartbeats where worker_id = 'test-worker'`;
    assert.equal(before.length, 0);
    const jobId = await db.app.begin((tx) => enqueueJob(tx, 'platform_heartbeat', {}));
    assert.equal(await jobs.finished(jobId), null, 'the job succeeded');
    const rows = await db.superuser<{ worker_id: string; seen_at: Date }[]>`
      select worker_id, seen_at from worker_heartbeats where worker_id = 'test-worker'`;
    assert.equal(rows.length, 1);
    assert.ok(rows[0]?.seen_at instanceof Date);
  });

  test('OPS-2, AUD-7, RLY-7, OPS-5: the heartbeat, maintenance, retention, stale-lock and posture cron schedules are registered with the queue when the worker starts (checkpoints follow head moves instead)', async () => {
    const rows = await db.superuser<{ identifier: string }[]>`
      select identifier from graphile_worker._private_known_crontabs order by identifier`;
    assert.deepEqual(
      rows.map((row) => row.identifier),
      [
        'audit_retention',
        'maintenance_prune',
        'platform_heartbeat',
        'posture_chain_integrity',
        'posture_checkpoint_freshness',
        'posture_key_hygiene',
        'posture_retention_slo',
        'posture_tenant_isolation',
        'relay_retention',
        'stale_lock_release',
      ],
    );
  });

  test('OPS-5: the posture cron schedules follow ENCLAVE_POSTURE_INTERVAL_MINUTES: each verifier runs once per interval, all day, at its own minute', () => {
    for (const [value, perDay] of [
      [undefined, 24],
      ['5', 288],
      ['15', 96],
      ['360', 4],
      ['1440', 1],
    ] as const) {
      const env = value === undefined ? {} : { ENCLAVE_POSTURE_INTERVAL_MINUTES: value };
      const { postureIntervalMinutes } = loadConfig({ ENCLAVE_DATA_DIR: '/nonexistent', ...env }, '/');
      const items = cronItems(false, postureIntervalMinutes);
      const minutesOfDay = POSTURE_CHECKS.map((check) => {
        const item = items.find((candidate) => candidate.identifier === postureTaskName(check));
        assert.ok(item, `${check} has a cron item`);
        const ticks: number[] = [];
        for (let hour = 0; hour < 24; hour++) {
          for (let min = 0; min < 60; min++) {
            if (item.match({ min, hour, date: 3, month: 12, dow: 4 })) ticks.push(hour * 60 + min);
          }
        }
        assert.equal(ticks.length, perDay, `${check} every ${postureIntervalMinutes} minutes`);
        const gaps = ticks.map((tick, i) => (ticks[i + 1] ?? (ticks[0] ?? 0) + 1440) - tick);
        assert.ok(
          gaps.every((gap) => gap === postureIntervalMinutes),
          `${check}: evenly spaced`,
        );
        return ticks[0];
      });
      assert.equal(new Set(minutesOfDay).size, POSTURE_CHECKS.length, 'each verifier at its own minute');
    }
  });

  test('OPS-5: the worker queues one run of each posture verifier shortly after it starts', async () => {
    // Queued at start (the job still waits, or is running), or already run and recorded: either way, not missing.
    const rows = await db.superuser<{ task: string }[]>`
      select t.identifier as task
      from graphile_worker._private_jobs j join graphile_worker._private_tasks t on t.id = j.task_id
      where t.identifier like 'posture\\_%' and j.run_at > now() - interval '1 minute'
      union
      select 'posture_' || check_name from posture_runs
      order by 1`;
    assert.deepEqual(
      rows.map((row) => row.task),
      [
        'posture_chain_integrity',
        'posture_checkpoint_freshness',
        'posture_key_hygiene',
        'posture_retention_slo',
        'posture_tenant_isolation',
      ],
    );
  });

  test('job logs name the job and task but never include its payload', async () => {
    const canary = 'payload-canary-91c2e7';
    const [job] = await db.app<{ id: string }[]>`
      select id::text from graphile_worker.add_job('platform_heartbeat', json_build_object('note', ${canary}::text))`;
    assert.ok(job);
    assert.equal(await jobs.finished(job.id), null, 'the job succeeded');
    const completion = logLines
      .map((line) => JSON.parse(line) as { jobId?: string; task?: string; component?: string })
      .find((line) => line.jobId === job.id);
    assert.ok(completion, 'the completed job is logged by id');
    assert.equal(completion.task, 'platform_heartbeat');
    assert.equal(completion.component, 'worker');
    assert.ok(!logLines.some((line) => line.includes(canary)), 'the payload reached the log');
  });
});
