import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import type { ServerResponse } from 'node:http';
import { Writable } from 'node:stream';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { testAuditSetup } from '../../test/helpers/audit.ts';
import { callbackDeliveryRow, callbackEndpoint, callbackReceiver } from '../../test/helpers/callbacks.ts';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/database.ts';
import { withTenant } from '../db/tenant.ts';
import { createOutboxMailer } from '../email/mailer.ts';
import { startWorker, type Worker } from '../jobs/worker.ts';
import { createLogger } from '../logger.ts';
import { callbackJobKey, createCallbackDelivery, enqueueCallbackDelivery } from './deliver.ts';
import { createCallbackRules } from './destination.ts';

// RLY-7 with a real graphile-worker: the per-endpoint queue keeps a slow
// endpoint from delaying the others, and a job left locked by a worker
// process killed with SIGKILL mid-attempt comes back at the next worker start
// with the same webhook-id, and one stopped with SIGTERM finishes the attempts
// under way and leaves the rest, unlocked, to the next worker. Waits are
// bounded safety nets; assertions are on what arrived.

const SAFETY_MS = 30_000;
const SESSION_KEY = 'callbacks-worker-test-session-key-0123456789';
let db: TestDatabase;

before(async () => {
  db = await createTestDatabase();
});
after(() => db.drop());

async function worker(): Promise<Worker> {
  const quiet = new Writable({ write: (_chunk, _encoding, done) => done() });
  return startWorker({
    target: db.target,
    credentials: db.appCredentials,
    sql: db.app,
    logger: createLogger('info', quiet),
    concurrency: 4,
    // A loaded test machine can take longer than the 5 s default to hand out a connection; this file is not
    // about that, and a connect timeout in the worker's background work would fail it after its test ended.
    timeoutMs: 30_000,
    workerId: `callbacks-worker-${process.pid}`,
    mailer: createOutboxMailer(db.app),
    publicUrl: 'http://localhost:3000',
    audit: testAuditSetup(),
    pollIntervalMs: 100,
    callbackDelivery: createCallbackDelivery({
      sql: db.app,
      sessionKey: SESSION_KEY,
      rules: createCallbackRules({ env: 'development', callbackAllow: ['127.0.0.1/32'] }),
      // Held answers stay open for the whole test, not the 10 s default.
      send: { timeoutMs: 120_000 },
    }),
  });
}

/** test/helpers/callback-worker-process.ts in a process of its own; `lines` are what it printed so far. */
function workerProcess(concurrency?: number) {
  const child = spawn(
    process.execPath,
    [fileURLToPath(new URL('../../test/helpers/callback-worker-process.ts', import.meta.url))],
    {
      env: {
        ...process.env,
        CALLBACK_WORKER: JSON.stringify({
          target: db.target,
          credentials: db.appCredentials,
          sessionKey: SESSION_KEY,
          concurrency,
        }),
      },
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  const lines: string[] = [];
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    lines.push(...chunk.split('\n').filter((line) => line !== ''));
  });
  return { child, exited: once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>, lines };
}

function until(what: string, check: () => boolean): Promise<void> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const poll = setInterval(() => {
      if (check()) {
        clearInterval(poll);
        resolve();
      } else if (Date.now() - started > SAFETY_MS) {
        clearInterval(poll);
        reject(new Error(`safety net: ${what} did not happen`));
      }
    }, 20);
  });
}

test('RLY-7: 1,000 events to one slow endpoint: the others are not delayed', async () => {
  const slow = await callbackReceiver();
  const fast = await callbackReceiver();
  const held: ServerResponse[] = [];
  slow.answer = (res) => held.push(res);
  const slowEndpoint = await callbackEndpoint(db, slow.url);
  const fastEndpoint = await callbackEndpoint(db, fast.url);
  await withTenant(db.app, slowEndpoint.tenantId, async (tx) => {
    const rows = await tx<{ id: string }[]>`
      insert into callback_deliveries (tenant_id, endpoint_id, event_id, event_type, webhook_id, payload)
      select ${slowEndpoint.tenantId}, ${slowEndpoint.id}, gen_random_uuid(), 'thread.closed',
        'msg_slow_' || n, '{"type":"thread.closed"}'
      from generate_series(1, 1000) n returning id`;
    for (const row of rows) {
      await enqueueCallbackDelivery(tx, {
        tenantId: slowEndpoint.tenantId,
        id: row.id,
        endpointId: slowEndpoint.id,
      });
    }
  });
  const quick = await callbackDeliveryRow(db, fastEndpoint);
  await withTenant(db.app, fastEndpoint.tenantId, (tx) =>
    enqueueCallbackDelivery(tx, {
      tenantId: fastEndpoint.tenantId,
      id: quick.id,
      endpointId: fastEndpoint.id,
    }),
  );
  const running = await worker();
  try {
    // Both are taken side by side, so either request may arrive first (under load the slow one came second).
    await until(
      'the fast endpoint got its event and the slow one its first attempt',
      () => fast.received.length === 1 && slow.received.length >= 1,
    );
    // One slow attempt at a time: the other 999 wait in the endpoint's queue, holding no worker slot.
    assert.equal(slow.received.length, 1);
    assert.equal(fast.received[0]?.headers['webhook-id'], quick.webhookId);
    const [queues] = await db.superuser<{ count: number }[]>`
      select count(*)::int as count from graphile_worker._private_job_queues where queue_name like 'callback:%'`;
    assert.ok((queues?.count ?? 0) <= 2, 'one queue row per endpoint at most');
    // The database stays small: per event, one delivery row whose only variable part is the payload, and one
    // job that holds ids, never the payload; no attempt row until an attempt ends.
    const [stored] = await db.superuser<
      { deliveries: number; attempts: number; jobs: number; row_overhead: number; job_bytes: number }[]
    >`
      select
        (select count(*)::int from callback_deliveries where endpoint_id = ${slowEndpoint.id}) as deliveries,
        (select count(*)::int from callback_attempts a join callback_deliveries d on d.id = a.delivery_id
          where d.endpoint_id = ${slowEndpoint.id}) as attempts,
        (select count(*)::int from graphile_worker._private_jobs j
          join graphile_worker._private_job_queues q on q.id = j.job_queue_id
          where q.queue_name = ${`callback:${slowEndpoint.id}`}) as jobs,
        (select max(pg_column_size(d.*) - octet_length(d.payload))::int from callback_deliveries d
          where d.endpoint_id = ${slowEndpoint.id}) as row_overhead,
        (select max(pg_column_size(j.payload))::int from graphile_worker._private_jobs j
          join graphile_worker._private_job_queues q on q.id = j.job_queue_id
          where q.queue_name = ${`callback:${slowEndpoint.id}`}) as job_bytes`;
    assert.deepEqual([stored?.deliveries, stored?.attempts, stored?.jobs], [1000, 0, 1000]);
    assert.ok(
      (stored?.row_overhead ?? Infinity) <= 300,
      `a delivery row is its payload and ${stored?.row_overhead} bytes`,
    );
    assert.ok(
      (stored?.job_bytes ?? Infinity) <= 200,
      `a job holds ${stored?.job_bytes} bytes: ids, not the payload`,
    );
  } finally {
    // The 999 waiting jobs are not this test's: gone before the held attempt is answered and the worker stops.
    await db.superuser`
      delete from graphile_worker._private_jobs
      where locked_at is null and key like 'callback_deliver:%'`;
    for (const res of held) res.writeHead(200).end();
    await running.stop();
    await slow.close();
    await fast.close();
  }
});

test('RLY-7: a worker killed with SIGKILL mid-attempt loses no delivery: a restarted worker frees the lock and sends it again with the same webhook-id', async () => {
  const receiver = await callbackReceiver();
  const held: ServerResponse[] = [];
  // The first attempt is never answered: the worker is killed while it waits.
  receiver.answer = (res) => held.push(res);
  const endpoint = await callbackEndpoint(db, receiver.url);
  const made = await callbackDeliveryRow(db, endpoint);
  await withTenant(db.app, endpoint.tenantId, (tx) =>
    enqueueCallbackDelivery(tx, { tenantId: endpoint.tenantId, id: made.id, endpointId: endpoint.id }),
  );
  const { child, exited } = workerProcess();
  let running: Worker | undefined;
  try {
    await until('the killed worker made its attempt', () => receiver.received.length === 1);
    child.kill('SIGKILL');
    await exited;
    for (const res of held) res.destroy();
    const [locked] = await db.superuser<{ locked_by: string | null }[]>`
      select locked_by from graphile_worker._private_jobs where key = ${callbackJobKey(made.id)}`;
    assert.ok(locked?.locked_by, 'the dead worker still holds the job');
    // Time passes beyond STALE_LOCK_SECONDS (src/jobs/stale-locks.ts): the lock is aged rather than waited for.
    await db.superuser`
      update graphile_worker._private_jobs set locked_at = now() - interval '3 minutes'
      where key = ${callbackJobKey(made.id)}`;
    await db.superuser`
      update graphile_worker._private_job_queues set locked_at = now() - interval '3 minutes'
      where queue_name = ${`callback:${endpoint.id}`}`;
    receiver.answer = (res) => res.writeHead(200).end();
    running = await worker();
    await until('the delivery was sent again', () => receiver.received.length === 2);
    assert.deepEqual(
      receiver.received.map((r) => r.headers['webhook-id']),
      [made.webhookId, made.webhookId],
    );
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    // A graceful stop waits for the running job, so its attempt is recorded below.
    await running?.stop();
    await receiver.close();
  }
  const [row] = await withTenant(
    db.app,
    endpoint.tenantId,
    (tx) => tx<{ state: string; attempts: number }[]>`
      select state, attempts from callback_deliveries where id = ${made.id}`,
  );
  // The killed attempt was never recorded: one attempt, succeeded.
  assert.deepEqual([row?.state, row?.attempts], ['succeeded', 1]);
});

test('RLY-7, OPS-2: a worker stopped with SIGTERM mid-delivery finishes the attempts under way and a new worker sends the rest: all 20 arrive, none lost, each only ever with its own webhook-id', async () => {
  const receiver = await callbackReceiver();
  const held: ServerResponse[] = [];
  // The receiver answers slowly: nothing until the worker has begun to stop.
  receiver.answer = (res) => held.push(res);
  // Four endpoints of five deliveries each: one attempt at a time per endpoint, four under way at once.
  const made: { id: string; webhookId: string; payload: string }[] = [];
  let tenantId: string | undefined;
  for (let e = 0; e < 4; e += 1) {
    const endpoint = await callbackEndpoint(db, receiver.url, tenantId === undefined ? {} : { tenantId });
    tenantId = endpoint.tenantId;
    for (let d = 0; d < 5; d += 1) {
      const row = await callbackDeliveryRow(db, endpoint);
      made.push(row);
      await withTenant(db.app, endpoint.tenantId, (tx) =>
        enqueueCallbackDelivery(tx, { tenantId: endpoint.tenantId, id: row.id, endpointId: endpoint.id }),
      );
    }
  }
  const keys = made.map((row) => callbackJobKey(row.id));
  const deliveryStates = () =>
    withTenant(
      db.app,
      tenantId ?? '',
      (tx) => tx<{ state: string; attempts: number }[]>`
        select state, attempts from callback_deliveries where id = any(${made.map((row) => row.id)}::uuid[])`,
    );
  const first = workerProcess(4);
  let second: ReturnType<typeof workerProcess> | undefined;
  try {
    await until('four attempts are under way', () => receiver.received.length === 4);
    first.child.kill('SIGTERM');
    await until('the worker began to stop', () => first.lines.includes('stopping'));
    assert.equal(first.child.exitCode, null, 'it waits for the attempts under way');
    for (const res of held.splice(0)) res.writeHead(200).end('ok');
    assert.deepEqual(await first.exited, [0, null], 'a clean stop, not a kill');
    // The four were recorded; the other sixteen wait, locked by nobody, for the next worker.
    const states = await deliveryStates();
    assert.deepEqual(
      [
        states.filter((row) => row.state === 'succeeded').length,
        states.filter((row) => row.state === 'pending').length,
      ],
      [4, 16],
    );
    const [{ locked } = { locked: -1 }] = await db.superuser<{ locked: number }[]>`
      select count(*)::int as locked from graphile_worker._private_jobs
      where key = any(${keys}::text[]) and locked_at is not null`;
    assert.equal(locked, 0);

    // The new worker, with the receiver still slow but answering.
    receiver.answer = (res) => setTimeout(() => res.writeHead(200).end('ok'), 50);
    second = workerProcess(4);
    const expected = new Set(made.map((row) => row.webhookId));
    const arrivedIds = () => new Set(receiver.received.map((r) => String(r.headers['webhook-id'])));
    await until('every delivery arrived', () => arrivedIds().size === expected.size);
    second.child.kill('SIGTERM');
    assert.deepEqual(await second.exited, [0, null]);
  } finally {
    for (const running of [first, second]) {
      if (running !== undefined && running.child.exitCode === null && running.child.signalCode === null) {
        running.child.kill('SIGKILL');
      }
    }
    for (const res of held) res.destroy();
    await receiver.close();
  }
  // None lost: every webhook-id arrived; none sent with another id: each body came with its delivery's own.
  const idOfPayload = new Map(made.map((row) => [row.payload, row.webhookId]));
  assert.deepEqual(
    new Set(receiver.received.map((r) => r.headers['webhook-id'])),
    new Set(made.map((row) => row.webhookId)),
  );
  for (const arrival of receiver.received) {
    assert.equal(arrival.headers['webhook-id'], idOfPayload.get(arrival.body));
  }
  const states = await deliveryStates();
  assert.deepEqual(
    states.map((row) => [row.state, row.attempts]),
    made.map(() => ['succeeded', 1]),
  );
});
