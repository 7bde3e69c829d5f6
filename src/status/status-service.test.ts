import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { after, before, beforeEach, describe, test } from 'node:test';
import type { Sql } from 'postgres';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/database.ts';
import { enqueueJob } from '../jobs/queue.ts';
import { createLogger } from '../logger.ts';
import { callbacksStatus, queueStatus, THRESHOLDS, workersStatus, worstStatus } from './components.ts';
import { readPlatformFigures } from './platform-reads.ts';
import { createStatusService } from './status-service.ts';

// RLY-10: the status report's figures come from the database as platform-wide
// aggregates, turn into statuses by the documented thresholds, and are read
// once per cache window however many requests ask.

let db: TestDatabase;
const logger = createLogger('silent');

before(async () => {
  db = await createTestDatabase();
});
after(() => db.drop());

/** A service with a clock the test moves, counting the platform reads it makes. */
function countingService() {
  let clock = 1_000_000;
  let reads = 0;
  const service = createStatusService({
    sql: db.app,
    logger,
    now: () => clock,
    readPlatform: (sql: Sql, timeoutMs: number) => {
      reads += 1;
      return readPlatformFigures(sql, timeoutMs);
    },
  });
  return {
    service,
    reads: () => reads,
    advance: (ms: number) => {
      clock += ms;
    },
  };
}

describe('status report', () => {
  beforeEach(async () => {
    await db.superuser`delete from graphile_worker._private_jobs`;
    await db.superuser`delete from worker_heartbeats`;
  });

  test('RLY-10: the queue is degraded when the oldest pending job has waited over 5 minutes, and down past 30', async () => {
    await db.app`insert into worker_heartbeats (worker_id, started_at, seen_at) values ('status-test', now(), now())`;
    const minutesAgo = (minutes: number) => new Date(Date.now() - minutes * 60_000);
    await enqueueJob(db.app, 'platform_heartbeat', {}, { runAt: minutesAgo(1) });
    // A job scheduled for later is not pending: it is not yet due.
    await enqueueJob(db.app, 'maintenance_prune', {}, { runAt: new Date(Date.now() + 3_600_000) });
    const fresh = await countingService().service.report();
    assert.equal(fresh.components.queue.status, 'operational');
    assert.equal(fresh.components.queue.depth, 1);
    assert.equal(fresh.status, 'operational');

    await enqueueJob(db.app, 'relay_retention', {}, { runAt: minutesAgo(10) });
    const old = await countingService().service.report();
    assert.equal(old.components.queue.status, 'degraded');
    assert.equal(old.components.queue.depth, 2);
    assert.ok((old.components.queue.oldest_pending_age_seconds ?? 0) >= 10 * 60);
    assert.equal(old.status, 'degraded');

    await enqueueJob(db.app, 'audit_retention', {}, { runAt: minutesAgo(40) });
    const stuck = await countingService().service.report();
    assert.equal(stuck.components.queue.status, 'down');
    assert.equal(stuck.status, 'down');
  });

  test('RLY-10: one slow callback endpoint with many deliveries queued behind its running attempt does not make the queue degraded; a real backlog still does', async () => {
    await db.app`insert into worker_heartbeats (worker_id, started_at, seen_at) values ('status-test', now(), now())`;
    const minutesAgo = (minutes: number) => new Date(Date.now() - minutes * 60_000);
    const queue = `callback:${randomUUID()}`;
    for (let n = 0; n < 50; n += 1) {
      await enqueueJob(
        db.app,
        'callback_deliver',
        { tenant_id: randomUUID(), delivery_id: randomUUID() },
        { queue, jobKey: `status-test:${n}`, runAt: minutesAgo(40) },
      );
    }
    // A worker runs the first: it holds the job and the endpoint's queue, as graphile-worker's get_job does.
    const lockQueue = (lockedAt: string) => db.superuser`
      update graphile_worker._private_job_queues set locked_at = now() - ${lockedAt}::interval, locked_by = 'status-test'
      where queue_name = ${queue}`;
    await db.superuser`
      update graphile_worker._private_jobs set locked_at = now(), locked_by = 'status-test'
      where key = 'status-test:0'`;
    await lockQueue('1 second');
    const slow = await countingService().service.report();
    assert.deepEqual(
      [
        slow.components.queue.status,
        slow.components.queue.depth,
        slow.components.queue.oldest_pending_age_seconds,
      ],
      ['operational', 0, null],
      'the 49 deliveries wait for their endpoint, not for a worker',
    );
    assert.equal(slow.status, 'operational');

    await enqueueJob(db.app, 'relay_retention', {}, { runAt: minutesAgo(10) });
    const backlog = await countingService().service.report();
    assert.deepEqual([backlog.components.queue.status, backlog.components.queue.depth], ['degraded', 1]);

    // A queue lock older than any live run is a dead worker's: the jobs behind it count again.
    await lockQueue('10 minutes');
    const stuck = await countingService().service.report();
    assert.deepEqual([stuck.components.queue.status, stuck.components.queue.depth], ['down', 50]);
  });

  test('RLY-10: job workers are down with no heartbeat in the last 3 minutes, operational with one', async () => {
    await db.app`
      insert into worker_heartbeats (worker_id, started_at, seen_at)
      values ('status-stale', now() - interval '1 hour', now() - interval '10 minutes')`;
    const stale = await countingService().service.report();
    assert.equal(stale.components.job_workers.status, 'down');
    assert.equal(stale.components.job_workers.workers_seen, 0);
    assert.ok(stale.components.job_workers.last_heartbeat_at !== null);

    await db.app`insert into worker_heartbeats (worker_id, started_at, seen_at) values ('status-live', now(), now())`;
    const live = await countingService().service.report();
    assert.equal(live.components.job_workers.status, 'operational');
    assert.equal(live.components.job_workers.workers_seen, 1);
  });

  test('RLY-10: two reports within the cache window do one set of reads, concurrent ones share it, and one after the window reads again', async () => {
    const { service, reads, advance } = countingService();
    const first = await service.report();
    advance(4999);
    const second = await service.report();
    assert.equal(reads(), 1);
    assert.equal(second, first);

    advance(1);
    const flood = await Promise.all(Array.from({ length: 50 }, () => service.report()));
    assert.equal(reads(), 2);
    assert.ok(flood.every((report) => report === flood[0]));
  });

  test('RLY-10: the running-instance count crosses tenants only through a definer that returns a number; the app role alone sees none', async () => {
    const subdomain = () => `st${randomBytes(4).toString('hex')}`;
    for (const [tenant, states] of [
      ['status tenant one', ['running']],
      ['status tenant two', ['running', 'stopped']],
    ] as const) {
      const [row] = await db.superuser<
        { id: string }[]
      >`insert into tenants (name) values (${tenant}) returning id::text`;
      assert.ok(row !== undefined);
      for (const state of states) {
        await db.superuser`
          with agent as (
            insert into agents (tenant_id, handle, name, template_id)
            values (${row.id}::uuid, ${`status-${randomBytes(4).toString('hex')}`}, 'Status test', 'echo') returning id)
          insert into agent_instances (agent_id, tenant_id, subdomain, state)
          select id, ${row.id}::uuid, ${subdomain()}, ${state} from agent`;
      }
    }
    const [direct] = await db.app<{ count: number }[]>`select count(*)::int as count from agent_instances`;
    assert.equal(direct?.count, 0, 'without a tenant, RLS shows the app role no instance');
    const report = await countingService().service.report();
    assert.equal(report.components.agent_instances.running, 2);
    const [fn] = await db.superuser<
      { definer: boolean; owner: string; config: string[]; result: string; public: boolean }[]
    >`
      select p.prosecdef as definer, pg_get_userbyid(p.proowner) as owner, p.proconfig as config,
             pg_get_function_result(p.oid) as result,
             exists (select 1 from aclexplode(p.proacl) a where a.grantee = 0) as public
      from pg_proc p where p.oid = 'enclave.status_running_instances()'::regprocedure`;
    assert.deepEqual(
      { ...fn },
      {
        definer: true,
        owner: 'enclave_owner',
        config: ['search_path=enclave, pg_temp'],
        result: 'bigint',
        public: false,
      },
    );
  });

  test('RLY-10: callbacks with deliveries are judged on the hour; a callback read that fails reports callbacks down, not an error', async () => {
    const withRates = createStatusService({
      sql: db.app,
      logger,
      readCallbacks: async () => ({ successRateHour: 0.9, successRateDay: 0.99 }),
    });
    const rated = (await withRates.report()).components.callbacks;
    assert.deepEqual(
      { status: rated.status, hour: rated.success_rate_hour, day: rated.success_rate_day },
      { status: 'degraded', hour: 0.9, day: 0.99 },
    );
    const failing = createStatusService({
      sql: db.app,
      logger,
      readCallbacks: () => Promise.reject(new Error('the deliveries table is unreadable')),
    });
    const report = await failing.report();
    assert.equal(report.components.callbacks.status, 'down');
    assert.equal(report.components.callbacks.success_rate_hour, null);
    assert.equal(report.status, 'down');
  });

  test('RLY-10: the thresholds turn figures into statuses as documented', () => {
    assert.equal(queueStatus(null), 'operational');
    assert.equal(queueStatus(THRESHOLDS.queueDegradedSeconds), 'operational');
    assert.equal(queueStatus(THRESHOLDS.queueDegradedSeconds + 1), 'degraded');
    assert.equal(queueStatus(THRESHOLDS.queueDownSeconds + 1), 'down');
    assert.equal(workersStatus(0), 'down');
    assert.equal(workersStatus(2), 'operational');
    // Callbacks are judged on the last hour; no deliveries is no_data, not a fault.
    assert.equal(callbacksStatus(null), 'no_data');
    assert.equal(callbacksStatus(1), 'operational');
    assert.equal(callbacksStatus(0.9), 'degraded');
    assert.equal(callbacksStatus(0.2), 'down');
    assert.equal(worstStatus(['operational', 'no_data']), 'operational');
    assert.equal(worstStatus(['degraded', 'operational', 'no_data']), 'degraded');
    assert.equal(worstStatus(['degraded', 'down', 'operational']), 'down');
  });
});
