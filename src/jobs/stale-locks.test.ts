// A worker killed with kill -9 mid-delivery leaves its job and its named queue locked; graphile-worker would wait 4 hours.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { test } from 'node:test';
import { useTestApp } from '../../test/helpers/app.ts';
import { enqueueJob } from './queue.ts';
import { releaseStaleLocks, STALE_LOCK_SECONDS } from './stale-locks.ts';

const ctx = useTestApp();

/** Enqueues a job of `task` in `queue` and marks it and its queue locked `ageSeconds` ago by a worker that is gone. */
async function lockedJob(task: 'relay_deliver' | 'agent_instance_sync', queue: string, ageSeconds: number) {
  const id = randomUUID();
  const jobId = await ctx.db.app.begin((tx) =>
    task === 'relay_deliver'
      ? enqueueJob(tx, task, { tenant_id: id, message_id: id }, { queue })
      : enqueueJob(tx, task, { tenant_id: id, agent_id: id, restart: false }, { queue }),
  );
  await ctx.db.superuser`
    update graphile_worker._private_jobs set locked_at = now() - make_interval(secs => ${ageSeconds}),
      locked_by = 'a-dead-worker' where id = ${jobId}::bigint`;
  await ctx.db.superuser`
    update graphile_worker._private_job_queues set locked_at = now() - make_interval(secs => ${ageSeconds}),
      locked_by = 'a-dead-worker' where queue_name = ${queue}`;
  return jobId;
}

const lockOf = async (jobId: string, queue: string) => ({
  job: (
    await ctx.db.superuser<{ locked_by: string | null }[]>`
      select locked_by from graphile_worker._private_jobs where id = ${jobId}::bigint`
  )[0]?.locked_by,
  queue: (
    await ctx.db.superuser<{ locked_by: string | null }[]>`
      select locked_by from graphile_worker._private_job_queues where queue_name = ${queue}`
  )[0]?.locked_by,
});

test('OPS-2, RLY-3: a relay delivery a dead worker left locked, with its thread queue, is freed past the stale bound; a fresh lock and an unbounded task are not', async () => {
  const staleQueue = `relay:${randomUUID()}`;
  const stale = await lockedJob('relay_deliver', staleQueue, STALE_LOCK_SECONDS + 60);
  const freshQueue = `relay:${randomUUID()}`;
  const fresh = await lockedJob('relay_deliver', freshQueue, 5);
  const unboundedQueue = `sync:${randomUUID()}`;
  const unbounded = await lockedJob('agent_instance_sync', unboundedQueue, STALE_LOCK_SECONDS + 60);

  assert.equal(await releaseStaleLocks(ctx.db.app), 1);
  assert.deepEqual(await lockOf(stale, staleQueue), { job: null, queue: null });
  assert.deepEqual(await lockOf(fresh, freshQueue), { job: 'a-dead-worker', queue: 'a-dead-worker' });
  assert.deepEqual(await lockOf(unbounded, unboundedQueue), {
    job: 'a-dead-worker',
    queue: 'a-dead-worker',
  });
});
