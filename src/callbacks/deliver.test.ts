import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { after, before, mock, test } from 'node:test';
import { Webhook } from 'standardwebhooks';
import {
  callbackDeliveryRow,
  callbackEndpoint,
  callbackReceiver,
  type TestEndpoint,
} from '../../test/helpers/callbacks.ts';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/database.ts';
import { withTenant } from '../db/tenant.ts';
import { createSecretDeriver } from '../webhooks/derived-secrets.ts';
import { publicKeyFor, verifyWebhook } from '../webhooks/signature.ts';
import {
  ATTEMPTS_PER_SERIES,
  CALLBACK_DERIVATION_LABEL,
  callbackJobKey,
  callbackQueue,
  createCallbackDelivery,
  DISABLE_AFTER_FAILED_DELIVERIES,
  RETRY_DELAYS_SECONDS,
  replayDelivery,
} from './deliver.ts';
import { createCallbackRules } from './destination.ts';
import { CALLBACK_TIMEOUT_MS } from './send.ts';

// RLY-7: the callback_deliver job, run directly with an injected clock (time
// is driven by moving the clock to each scheduled run_at, never by sleeping),
// against a receiver on 127.0.0.1 (allowed as ENCLAVE_CALLBACK_ALLOW would).
// Every delivery is checked with the `standardwebhooks` package.

const SESSION_KEY = 'callbacks-test-session-key-0123456789abcdef';
const derived = createSecretDeriver(SESSION_KEY, CALLBACK_DERIVATION_LABEL);
const rules = createCallbackRules({ env: 'development', callbackAllow: ['127.0.0.1/32'] });

let db: TestDatabase;
let receiver: Awaited<ReturnType<typeof callbackReceiver>>;

before(async () => {
  db = await createTestDatabase();
  receiver = await callbackReceiver();
});
after(async () => {
  await receiver.close();
  await db.drop();
});

function delivery(clock?: () => Date, send?: { timeoutMs?: number }) {
  return createCallbackDelivery({
    sql: db.app,
    sessionKey: SESSION_KEY,
    rules,
    ...(clock === undefined ? {} : { clock }),
    ...(send === undefined ? {} : { send }),
  });
}

async function deliveryState(endpoint: TestEndpoint, id: string) {
  return withTenant(db.app, endpoint.tenantId, async (tx) => {
    const [row] = await tx<
      { state: string; attempts: number; last_status: number | null; next_attempt_at: Date | null }[]
    >`select state, attempts, last_status, next_attempt_at from callback_deliveries where id = ${id}`;
    const attempts = await tx<
      {
        number: number;
        status: number | null;
        error: string | null;
        response_prefix: string | null;
        attempted_at: Date;
      }[]
    >`select number, status, error, response_prefix, attempted_at from callback_attempts
      where delivery_id = ${id} order by number`;
    const [endpointRow] = await tx<
      { state: string; disabled_reason: string | null; consecutive_failures: number }[]
    >`
      select state, disabled_reason, consecutive_failures from callback_endpoints where id = ${endpoint.id}`;
    return { delivery: row, attempts, endpoint: endpointRow };
  });
}

async function queuedJob(deliveryId: string) {
  const [job] = await db.superuser<{ run_at: Date; queue_name: string | null; payload: unknown }[]>`
    select j.run_at, q.queue_name, j.payload
    from graphile_worker._private_jobs j left join graphile_worker._private_job_queues q on q.id = j.job_queue_id
    where j.key = ${callbackJobKey(deliveryId)}`;
  return job;
}

/** Removes a delivery's job as the worker does once the job it runs completes (these tests run the job directly). */
async function completeJob(deliveryId: string): Promise<void> {
  await db.superuser`delete from graphile_worker._private_jobs where key = ${callbackJobKey(deliveryId)}`;
}

function verifyWithStandardWebhooks(
  secret: string,
  received: { headers: Record<string, unknown>; body: string },
) {
  const headers = {
    'webhook-id': String(received.headers['webhook-id']),
    'webhook-timestamp': String(received.headers['webhook-timestamp']),
    'webhook-signature': String(received.headers['webhook-signature']),
  };
  return new Webhook(secret).verify(received.body, headers);
}

test('RLY-7: a delivery is signed so the standardwebhooks package verifies it, and a 2xx marks it succeeded', async () => {
  receiver.answer = (res) => res.writeHead(204).end();
  const endpoint = await callbackEndpoint(db, receiver.url);
  const made = await callbackDeliveryRow(db, endpoint);
  const before = receiver.received.length;
  await delivery().deliver({ tenant_id: endpoint.tenantId, delivery_id: made.id });
  const got = receiver.received.slice(before);
  assert.equal(got.length, 1);
  const [request] = got;
  assert.ok(request !== undefined);
  assert.equal(request.body, made.payload);
  assert.equal(request.headers['webhook-id'], made.webhookId);
  assert.deepEqual(
    verifyWithStandardWebhooks(derived.secret(endpoint.id, endpoint.salt), request),
    JSON.parse(made.payload),
  );
  const state = await deliveryState(endpoint, made.id);
  assert.equal(state.delivery?.state, 'succeeded');
  assert.equal(state.delivery?.attempts, 1);
  assert.equal(state.delivery?.last_status, 204);
  assert.deepEqual(
    state.attempts.map((a) => [a.number, a.status, a.error]),
    [[1, 204, null]],
  );
  assert.equal(state.endpoint?.consecutive_failures, 0);
  // Nothing is left queued for a succeeded delivery.
  assert.equal(await queuedJob(made.id), undefined);
});

test('RLY-7: with the receiver down the attempts follow the schedule (0, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h) with one webhook-id, then the delivery fails', async () => {
  receiver.answer = (res) => res.writeHead(500).end('down for maintenance');
  const endpoint = await callbackEndpoint(db, receiver.url);
  const made = await callbackDeliveryRow(db, endpoint);
  let now = new Date('2030-01-01T00:00:00Z');
  const job = delivery(() => now);
  const before = receiver.received.length;
  assert.equal(ATTEMPTS_PER_SERIES, 7);
  for (let attempt = 1; attempt <= ATTEMPTS_PER_SERIES; attempt += 1) {
    await completeJob(made.id);
    await job.deliver({ tenant_id: endpoint.tenantId, delivery_id: made.id });
    const queued = await queuedJob(made.id);
    if (attempt < ATTEMPTS_PER_SERIES) {
      assert.ok(queued !== undefined, `attempt ${attempt} schedules the next`);
      const delay = RETRY_DELAYS_SECONDS[attempt] ?? -1;
      assert.equal(queued.run_at.getTime() - now.getTime(), delay * 1000, `delay after attempt ${attempt}`);
      assert.equal(queued.queue_name, callbackQueue(endpoint.id));
      const state = await deliveryState(endpoint, made.id);
      assert.equal(state.delivery?.state, 'pending');
      assert.equal(state.delivery?.next_attempt_at?.getTime(), queued.run_at.getTime());
      now = queued.run_at;
    } else {
      assert.equal(queued, undefined, 'no attempt after the last');
    }
  }
  const got = receiver.received.slice(before);
  assert.equal(got.length, ATTEMPTS_PER_SERIES);
  assert.deepEqual(new Set(got.map((r) => r.headers['webhook-id'])), new Set([made.webhookId]));
  const state = await deliveryState(endpoint, made.id);
  assert.equal(state.delivery?.state, 'failed');
  assert.equal(state.delivery?.attempts, ATTEMPTS_PER_SERIES);
  assert.equal(state.delivery?.last_status, 500);
  assert.deepEqual(
    state.attempts.map((a) => [a.number, a.status, a.response_prefix]),
    Array.from({ length: ATTEMPTS_PER_SERIES }, (_, i) => [i + 1, 500, 'down for maintenance']),
  );
  assert.equal(state.endpoint?.consecutive_failures, 1);
  assert.equal(state.endpoint?.state, 'enabled');
});

async function failSeries(endpoint: TestEndpoint): Promise<string> {
  const made = await callbackDeliveryRow(db, endpoint);
  let now = new Date('2030-02-01T00:00:00Z');
  const job = delivery(() => now);
  for (let attempt = 1; attempt <= ATTEMPTS_PER_SERIES; attempt += 1) {
    await completeJob(made.id);
    await job.deliver({ tenant_id: endpoint.tenantId, delivery_id: made.id });
    now = (await queuedJob(made.id))?.run_at ?? now;
  }
  return made.id;
}

test('RLY-7: 5 failed deliveries in a row disable the endpoint with a reason the owner sees; a replay once the receiver is back succeeds with the same webhook-id', async () => {
  receiver.answer = (res) => res.writeHead(503).end();
  assert.equal(DISABLE_AFTER_FAILED_DELIVERIES, 5);
  const endpoint = await callbackEndpoint(db, receiver.url);
  const failed: string[] = [];
  for (let i = 0; i < DISABLE_AFTER_FAILED_DELIVERIES; i += 1) failed.push(await failSeries(endpoint));
  const last = failed.at(-1) ?? '';
  const state = await deliveryState(endpoint, last);
  assert.equal(state.endpoint?.state, 'disabled');
  assert.equal(state.endpoint?.consecutive_failures, DISABLE_AFTER_FAILED_DELIVERIES);
  assert.match(state.endpoint?.disabled_reason ?? '', /5 deliveries in a row failed \(last: HTTP 503\)/);

  // Disabled: a pending delivery's job sends nothing.
  const pending = await callbackDeliveryRow(db, endpoint);
  const before = receiver.received.length;
  await delivery().deliver({ tenant_id: endpoint.tenantId, delivery_id: pending.id });
  assert.equal(receiver.received.length, before);
  // It ends failed, without an attempt, so replay-failed can send it once the endpoint is enabled again.
  const skipped = await deliveryState(endpoint, pending.id);
  assert.deepEqual([skipped.delivery?.state, skipped.attempts.length], ['failed', 0]);

  // The owner fixes the receiver and enables the endpoint; the failed one is replayed.
  receiver.answer = (res) => res.writeHead(200).end('thanks');
  await withTenant(db.app, endpoint.tenantId, async (tx) => {
    await tx`update callback_endpoints set state = 'enabled', disabled_reason = null where id = ${endpoint.id}`;
    assert.equal(await replayDelivery(tx, endpoint.tenantId, last), true);
    // A pending delivery is not replayed twice.
    assert.equal(await replayDelivery(tx, endpoint.tenantId, last), false);
  });
  const queued = await queuedJob(last);
  assert.ok(queued !== undefined);
  const webhookId = receiver.received.findLast(() => true)?.headers['webhook-id'];
  await delivery().deliver(queued.payload);
  const replayed = receiver.received.at(-1);
  assert.equal(replayed?.headers['webhook-id'], webhookId);
  verifyWithStandardWebhooks(
    derived.secret(endpoint.id, endpoint.salt),
    replayed ?? { headers: {}, body: '' },
  );
  const after = await deliveryState(endpoint, last);
  assert.equal(after.delivery?.state, 'succeeded');
  // The replay continues the attempt count.
  assert.deepEqual(
    after.attempts.map((a) => a.number),
    Array.from({ length: ATTEMPTS_PER_SERIES + 1 }, (_, i) => i + 1),
  );
  assert.equal(after.endpoint?.consecutive_failures, 0);
});

test('RLY-7: a replayed series gets the whole schedule again', async () => {
  receiver.answer = (res) => res.writeHead(500).end();
  const endpoint = await callbackEndpoint(db, receiver.url);
  const id = await failSeries(endpoint);
  await withTenant(db.app, endpoint.tenantId, (tx) => replayDelivery(tx, endpoint.tenantId, id));
  let now = new Date('2030-03-01T00:00:00Z');
  const job = delivery(() => now);
  await job.deliver((await queuedJob(id))?.payload);
  const queued = await queuedJob(id);
  assert.equal(queued?.run_at.getTime(), now.getTime() + (RETRY_DELAYS_SECONDS[1] ?? 0) * 1000);
  now = queued?.run_at ?? now;
  assert.equal((await deliveryState(endpoint, id)).delivery?.state, 'pending');
});

test('RLY-7: a 100 MB answer is cut by the sender and recorded as too_large with its first 1 KB', async () => {
  const chunk = Buffer.alloc(1024 * 1024, 'x');
  receiver.answer = (res) => {
    res.writeHead(200);
    let sent = 0;
    const pump = (): void => {
      while (sent < 100 && !res.destroyed) {
        sent += 1;
        if (!res.write(chunk)) {
          res.once('drain', pump);
          return;
        }
      }
      res.end();
    };
    res.on('error', () => {});
    pump();
  };
  const endpoint = await callbackEndpoint(db, receiver.url);
  const made = await callbackDeliveryRow(db, endpoint);
  await delivery().deliver({ tenant_id: endpoint.tenantId, delivery_id: made.id });
  const state = await deliveryState(endpoint, made.id);
  assert.deepEqual(
    state.attempts.map((a) => [a.status, a.error, a.response_prefix?.length]),
    [[200, 'too_large', 1024]],
  );
  assert.equal(state.delivery?.state, 'pending', 'a cut answer is a failed attempt, retried');
});

test('RLY-7: a trickling answer is cut at the attempt timeout and recorded as timeout', async () => {
  const timers: NodeJS.Timeout[] = [];
  receiver.answer = (res) => {
    res.writeHead(200);
    res.on('error', () => {});
    timers.push(setInterval(() => res.destroyed || res.write('.'), 20));
  };
  const endpoint = await callbackEndpoint(db, receiver.url);
  const made = await callbackDeliveryRow(db, endpoint);
  try {
    await delivery(undefined, { timeoutMs: 300 }).deliver({
      tenant_id: endpoint.tenantId,
      delivery_id: made.id,
    });
  } finally {
    for (const timer of timers) clearInterval(timer);
  }
  const state = await deliveryState(endpoint, made.id);
  assert.deepEqual(
    state.attempts.map((a) => [a.status, a.error]),
    [[200, 'timeout']],
  );
  assert.match(state.attempts[0]?.response_prefix ?? '', /^\.+$/);
});

test('RLY-7: during a rotation both the new and the previous secret verify, and v1a verifies with the public key', async () => {
  receiver.answer = (res) => res.writeHead(200).end();
  const endpoint = await callbackEndpoint(db, receiver.url, { signV1a: true });
  const previous = Buffer.alloc(16, 7);
  await withTenant(
    db.app,
    endpoint.tenantId,
    (tx) => tx`
      update callback_endpoints set previous_salt = ${previous}, previous_salt_until = now() + interval '1 day'
      where id = ${endpoint.id}`,
  );
  const made = await callbackDeliveryRow(db, endpoint);
  await delivery().deliver({ tenant_id: endpoint.tenantId, delivery_id: made.id });
  const request = receiver.received.at(-1);
  assert.ok(request !== undefined);
  verifyWithStandardWebhooks(derived.secret(endpoint.id, endpoint.salt), request);
  verifyWithStandardWebhooks(derived.secret(endpoint.id, previous), request);
  const now = Date.now() / 1000;
  verifyWebhook(
    request.headers,
    request.body,
    [publicKeyFor(derived.signingKey(endpoint.id, endpoint.salt))],
    {
      now,
    },
  );
  verifyWebhook(request.headers, request.body, [publicKeyFor(derived.signingKey(endpoint.id, previous))], {
    now,
  });

  // Past previous_salt_until only the current secret signs.
  await withTenant(
    db.app,
    endpoint.tenantId,
    (tx) =>
      tx`update callback_endpoints set previous_salt_until = now() - interval '1 second' where id = ${endpoint.id}`,
  );
  const second = await callbackDeliveryRow(db, endpoint);
  await delivery().deliver({ tenant_id: endpoint.tenantId, delivery_id: second.id });
  const later = receiver.received.at(-1);
  assert.ok(later !== undefined);
  verifyWithStandardWebhooks(derived.secret(endpoint.id, endpoint.salt), later);
  assert.throws(() => verifyWithStandardWebhooks(derived.secret(endpoint.id, previous), later));
});

test('RLY-7: with no override an attempt is bounded by the 10 s CALLBACK_TIMEOUT_MS, as src/main.ts builds the worker’s delivery; an override replaces it', async () => {
  assert.equal(CALLBACK_TIMEOUT_MS, 10_000);
  receiver.answer = (res) => res.writeHead(200).end();
  const endpoint = await callbackEndpoint(db, receiver.url);
  /** The delays of the timers armed while one delivery runs. */
  async function timerDelays(send?: { timeoutMs: number }): Promise<unknown[]> {
    const made = await callbackDeliveryRow(db, endpoint);
    const timers = mock.method(globalThis, 'setTimeout');
    try {
      await delivery(undefined, send).deliver({ tenant_id: endpoint.tenantId, delivery_id: made.id });
    } finally {
      timers.mock.restore();
    }
    return timers.mock.calls.map((call) => call.arguments[1]);
  }
  // The worker's delivery (src/main.ts) is built with sql, sessionKey and rules, and no `send`: the default is its bound.
  const main = await readFile(new URL('../main.ts', import.meta.url), 'utf8');
  const built = /createCallbackDelivery\(\{([^}]*)\}\)/.exec(main)?.[1];
  assert.ok(built !== undefined, 'main.ts builds the callback delivery');
  assert.deepEqual(
    built
      .split(',')
      .map((field) => field.trim().split(':')[0])
      .filter(Boolean),
    ['sql', 'sessionKey', 'rules'],
  );
  assert.ok((await timerDelays()).includes(CALLBACK_TIMEOUT_MS), 'the attempt armed a 10 s timer');
  const overridden = await timerDelays({ timeoutMs: 4321 });
  assert.ok(overridden.includes(4321));
  assert.ok(!overridden.includes(CALLBACK_TIMEOUT_MS), 'the 10 s timer was the attempt’s own');
});
