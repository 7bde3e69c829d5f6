import { EventEmitter } from 'node:events';
import { Writable } from 'node:stream';
import { run, type WorkerEvents } from 'graphile-worker';
import { createCallbackDelivery, enqueueCallbackDelivery } from '../src/callbacks/deliver.ts';
import { createCallbackRules } from '../src/callbacks/destination.ts';
import { connectionUrl } from '../src/db/target.ts';
import { withTenant } from '../src/db/tenant.ts';
import { createOutboxMailer } from '../src/email/mailer.ts';
import { graphileLogger, startWorker, type Worker } from '../src/jobs/worker.ts';
import { createLogger } from '../src/logger.ts';
import { postCallerMessage, startThread } from '../src/relay/threads.ts';
import { buildTestApp } from '../test/helpers/app.ts';
import { testAuditSetup } from '../test/helpers/audit.ts';
import {
  type CallbackReceiver,
  callbackEndpoint,
  callbackReceiver,
  type TestEndpoint,
} from '../test/helpers/callbacks.ts';
import type { TestDatabase } from '../test/helpers/database.ts';
import { relayParties } from '../test/helpers/relay.ts';
import { compare, percentile } from './ab.ts';

// `npm run bench -- callbacks` (issue #16 item 3): callback deliveries per
// second through the real worker (callback_deliver: load, sign, POST to a
// receiver on 127.0.0.1 that answers at once, record the attempt) against
// graphile-worker's own rate for an empty job, same database, same
// concurrency, in interleaved rounds of BATCH jobs; p50/p99 from a
// delivery row's insert (with its job, one transaction) to the receiver's
// arrival, which includes waiting in the endpoint's queue (a batch puts
// BATCH / ENDPOINTS deliveries in each). Then, one at a time, the time from a
// thread event (a caller message committed) to its delivery's arrival:
// the fan-out job, its two serviceQuery transactions, the delivery job.

const BATCH = 40;
const EVENTS = 60;
const ENDPOINTS = 4;
const CONCURRENCY = 4;

/** Resolves once `count` jobs of `task` completed after the call. */
function completions(events: WorkerEvents, task: string) {
  let waiting: { left: number; resolve: () => void } | undefined;
  events.on('job:complete', ({ job }) => {
    if (job.task_identifier !== task || waiting === undefined) return;
    waiting.left -= 1;
    if (waiting.left === 0) waiting.resolve();
  });
  return (count: number) =>
    new Promise<void>((resolve) => {
      waiting = { left: count, resolve };
    });
}

/** Sorted times from a caller message committed to its thread.message_received delivery's arrival. */
async function threadEventLatencies(
  db: TestDatabase,
  receiver: CallbackReceiver,
  delivered: (count: number) => Promise<void>,
): Promise<number[]> {
  const testApp = await buildTestApp(db, {}, { openApiConformance: false, passwordCost: 'production' });
  try {
    const { grant, target } = await relayParties({ db, testApp });
    await callbackEndpoint(db, receiver.url, { tenantId: grant.targetTenantId, agentId: target.id });
    const asTarget = <T>(fn: Parameters<typeof withTenant<T>>[2]) =>
      withTenant(db.app, grant.targetTenantId, fn);
    const opened = delivered(1);
    const { thread } = await asTarget((tx) => startThread(tx, grant, 'the bench thread'));
    await opened;
    const latencies: number[] = [];
    for (let i = 0; i < EVENTS; i += 1) {
      const done = delivered(1);
      const at = performance.now();
      await asTarget((tx) => postCallerMessage(tx, grant, thread.id, `event ${i}`));
      await done;
      const arrival = receiver.received.at(-1)?.arrivedAt;
      if (arrival !== undefined) latencies.push(arrival - at);
    }
    return latencies.sort((x, y) => x - y);
  } finally {
    await testApp.app.close();
  }
}

export async function runCallbacksBench(db: TestDatabase): Promise<void> {
  const receiver = await callbackReceiver();
  const quiet = createLogger('warn', new Writable({ write: (_c, _e, done) => done() }));
  const events: WorkerEvents = new EventEmitter();
  const noopEvents: WorkerEvents = new EventEmitter();
  let worker: Worker | undefined;
  const noop = await run({
    connectionString: connectionUrl(db.target, db.appCredentials),
    concurrency: CONCURRENCY,
    taskList: { bench_noop: async () => {} },
    noHandleSignals: true,
    logger: graphileLogger(quiet),
    events: noopEvents,
  });
  try {
    worker = await startWorker({
      target: db.target,
      credentials: db.appCredentials,
      sql: db.app,
      logger: quiet,
      concurrency: CONCURRENCY,
      workerId: `callbacks-bench-${process.pid}`,
      mailer: createOutboxMailer(db.app),
      publicUrl: 'http://localhost:3000',
      audit: testAuditSetup(),
      events,
      callbackDelivery: createCallbackDelivery({
        sql: db.app,
        sessionKey: 'callbacks-bench-session-key-0123456789abcdef',
        rules: createCallbackRules({ env: 'development', callbackAllow: ['127.0.0.1/32'] }),
      }),
    });
    const first = await callbackEndpoint(db, receiver.url);
    const endpoints: TestEndpoint[] = [first];
    while (endpoints.length < ENDPOINTS) {
      endpoints.push(await callbackEndpoint(db, receiver.url, { tenantId: first.tenantId }));
    }
    const sent = new Map<string, number>();
    const latencies: number[] = [];
    receiver.answer = (res) => res.writeHead(204).end();
    const arrived = receiver.received;
    const delivered = completions(events, 'callback_deliver');
    const noopDone = completions(noopEvents, 'bench_noop');
    let n = 0;

    const deliveries = async () => {
      const done = delivered(BATCH);
      const from = arrived.length;
      await withTenant(db.app, first.tenantId, async (tx) => {
        for (let i = 0; i < BATCH; i += 1) {
          const endpoint = endpoints[i % ENDPOINTS] ?? first;
          const webhookId = `msg_bench_${n++}`;
          const [row] = await tx<{ id: string }[]>`
            insert into callback_deliveries (tenant_id, endpoint_id, event_id, event_type, webhook_id, payload)
            values (${first.tenantId}, ${endpoint.id}, gen_random_uuid(), 'thread.closed', ${webhookId},
              '{"type":"thread.closed"}') returning id`;
          if (row === undefined) throw new Error('callbacks bench: no delivery made');
          await enqueueCallbackDelivery(tx, {
            tenantId: first.tenantId,
            id: row.id,
            endpointId: endpoint.id,
          });
          sent.set(webhookId, performance.now());
        }
      });
      await done;
      for (const request of arrived.slice(from)) {
        const at = sent.get(String(request.headers['webhook-id']));
        if (at !== undefined) latencies.push(request.arrivedAt - at);
      }
    };
    const emptyJobs = async () => {
      const done = noopDone(BATCH);
      await db.app.begin(async (tx) => {
        for (let i = 0; i < BATCH; i += 1) {
          await tx`select graphile_worker.add_job('bench_noop', '{}'::json)`;
        }
      });
      await done;
    };

    await compare({
      name: `callbacks: ${BATCH} deliveries to a local receiver vs ${BATCH} empty jobs (concurrency ${CONCURRENCY}, ${ENDPOINTS} endpoints)`,
      a: { label: 'callback_deliver', op: deliveries },
      b: { label: 'graphile-worker empty job', op: emptyJobs },
      ratio: 'throughput',
      per: { ops: 1 },
      aim: { atLeast: 0.1 },
    });
    const sorted = [...latencies].sort((x, y) => x - y);
    console.log(
      `  delivery insert → receiver, ${sorted.length} deliveries: ` +
        `p50 ${percentile(sorted, 50).toFixed(1)} ms, p99 ${percentile(sorted, 99).toFixed(1)} ms`,
    );
    const eventLatencies = await threadEventLatencies(db, receiver, delivered);
    console.log(
      `  thread event → delivery at the receiver, ${eventLatencies.length} events one at a time: ` +
        `p50 ${percentile(eventLatencies, 50).toFixed(1)} ms, p99 ${percentile(eventLatencies, 99).toFixed(1)} ms`,
    );
  } finally {
    await worker?.stop();
    await noop.stop();
    await receiver.close();
  }
}
