import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, test } from 'node:test';
import { Webhook } from 'standardwebhooks';
import { createCallbackDelivery, RETRY_DELAYS_SECONDS } from '../src/callbacks/deliver.ts';
import { createCallbackRules } from '../src/callbacks/destination.ts';
import { startWorker, type Worker } from '../src/jobs/worker.ts';
import { createLogger } from '../src/logger.ts';
import { createAccount, type TestAccount } from './helpers/accounts.ts';
import { buildTestApp, type ProblemBody, type TestApp, useTestApp } from './helpers/app.ts';
import { testAuditSetup } from './helpers/audit.ts';
import { type CallbackReceiver, callbackReceiver, type ReceivedCallback } from './helpers/callbacks.ts';
import { type ApprovedConnection, approvedConnection, type RelayAgent, relayAgent } from './helpers/relay.ts';

// Issue #16's "How it will be checked", as a new user meets it, through the
// API and a real job worker: the owner of an agent and the caller who talks
// to it each register a callback to a local receiver (127.0.0.1, which this
// operator allowed with ENCLAVE_CALLBACK_ALLOW), a thread is started,
// followed up, answered and closed through the relay API, and every delivery
// that arrives is verified with the `standardwebhooks` package under the
// whsec_ secret shown once. Then the receiver is stopped: the delivery log
// shows each retry fail; it is started again and the deliveries are replayed,
// arriving with their webhook-id. Without the operator's allowance, callback
// URLs at loopback and the metadata address are refused. Waits poll for what
// must happen, under a safety net; none is a fixed sleep.

const SAFETY_MS = 15_000;
const THREAD_EVENTS = ['thread.message_received', 'thread.agent_replied', 'thread.closed'];
/**
 * How far the delivery job's clock (its injected `clock`, as deliver.test.ts
 * drives it) runs behind while the receiver is down: more than the longest
 * step of the schedule, so each retry is scheduled at a time already past
 * and the whole series runs now instead of over 17 hours.
 */
const BEHIND_MS = (Math.max(...RETRY_DELAYS_SECONDS) + 3600) * 1000;

const ctx = useTestApp({ ENCLAVE_CALLBACK_ALLOW: '127.0.0.1/32' });
/** An agent's owner, and a caller of another tenant approved to talk to it. */
let parties: { owner: TestAccount; asker: TestAccount; target: RelayAgent; connection: ApprovedConnection };
let receiver: CallbackReceiver;
let worker: Worker;
/** The same database without ENCLAVE_CALLBACK_ALLOW: as every operator starts. */
let unallowed: TestApp;
let clockBehindMs = 0;

ctx.before(async () => {
  // Side by side: the two sign-ups hash passwords, and the second app compiles its routes.
  const [owner, asker, other] = await Promise.all([
    createAccount(ctx.db, ctx.testApp),
    createAccount(ctx.db, ctx.testApp),
    buildTestApp(ctx.db).then(async (built) => {
      await built.app.ready();
      return built;
    }),
  ]);
  unallowed = other;
  const target = await relayAgent(ctx, owner);
  parties = { owner, asker, target, connection: await approvedConnection(ctx, owner, asker, target) };
  receiver = await callbackReceiver();
  worker = await startWorker({
    target: ctx.db.target,
    credentials: ctx.db.appCredentials,
    sql: ctx.db.app,
    logger: createLogger('info', new Writable({ write: (_chunk, _encoding, done) => done() })),
    concurrency: 4,
    workerId: `callbacks-e2e-${process.pid}`,
    mailer: { send: async () => undefined },
    publicUrl: ctx.testApp.config.publicUrl,
    audit: testAuditSetup(),
    pollIntervalMs: 100,
    // As `enclave start` builds it: the app's session key (which derives the secrets) and the operator's rules.
    callbackDelivery: createCallbackDelivery({
      sql: ctx.db.app,
      sessionKey: ctx.testApp.sessionKey,
      rules: createCallbackRules(ctx.testApp.config),
      clock: () => new Date(Date.now() - clockBehindMs),
    }),
  });
});
ctx.after(async () => {
  await worker?.stop();
  await receiver?.close();
  await unallowed?.app.close();
});

interface Answer {
  readonly status: number;
  readonly contentType: string;
  readonly body: Record<string, unknown>;
}

/** One API call with a Bearer token (an API token, a relay token or a thread token). */
async function call(
  token: string,
  method: 'GET' | 'POST',
  url: string,
  payload?: object,
  app = ctx.testApp.app,
): Promise<Answer> {
  const response = await app.inject({
    method,
    url,
    headers: { authorization: `Bearer ${token}` },
    ...(payload === undefined ? {} : { payload }),
  });
  return {
    status: response.statusCode,
    contentType: String(response.headers['content-type']),
    body: response.body === '' ? {} : response.json<Record<string, unknown>>(),
  };
}

async function created(token: string, url: string, payload: object): Promise<Record<string, unknown>> {
  const answer = await call(token, 'POST', url, payload);
  assert.equal(answer.status, 201, JSON.stringify(answer.body));
  return answer.body;
}

interface Registered {
  readonly id: string;
  readonly secret: string;
  readonly path: string;
}

async function register(account: TestAccount, path: string, subject: object): Promise<Registered> {
  const endpoint = await created(account.apiToken, '/api/v1/webhook-endpoints', {
    url: new URL(path, receiver.url).href,
    event_types: THREAD_EVENTS,
    ...subject,
  });
  assert.match(String(endpoint.signing_secret), /^whsec_/);
  return { id: String(endpoint.id), secret: String(endpoint.signing_secret), path };
}

interface LoggedDelivery {
  id: string;
  webhook_id: string;
  state: string;
  attempts: number;
  created_at: string;
}

/** The endpoint's delivery log, as its owner reads it. */
async function deliveryLog(account: TestAccount, endpoint: Registered): Promise<LoggedDelivery[]> {
  const answer = await call(account.apiToken, 'GET', `/api/v1/webhook-endpoints/${endpoint.id}/deliveries`);
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
  return answer.body.deliveries as LoggedDelivery[];
}

/** Polls `read` until `done` holds: a safety net against a hang, never a timing assertion. */
async function until<T>(what: string, read: () => T | Promise<T>, done: (value: T) => boolean): Promise<T> {
  const deadline = Date.now() + SAFETY_MS;
  for (;;) {
    const value = await read();
    if (done(value)) return value;
    if (Date.now() > deadline) throw new Error(`safety net: ${what} did not happen`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** The receiver's side: Standard Webhooks verification with someone else's library; the parsed event. */
function verified(
  secret: string,
  delivery: ReceivedCallback,
): { type: string; data: Record<string, unknown> } {
  const headers = {
    'webhook-id': String(delivery.headers['webhook-id']),
    'webhook-timestamp': String(delivery.headers['webhook-timestamp']),
    'webhook-signature': String(delivery.headers['webhook-signature']),
  };
  return new Webhook(secret).verify(delivery.body, headers) as {
    type: string;
    data: Record<string, unknown>;
  };
}

async function threadToken(account: TestAccount, threadId: string): Promise<string> {
  const minted = await created(account.apiToken, `/api/v1/threads/${threadId}/access-token`, {});
  return String(minted.thread_token);
}

describe('callbacks to a local receiver', () => {
  let ownerSide: Registered;
  let callerSide: Registered;

  test('RLY-7: a thread started, followed up, answered and closed through the API reaches both sides’ callbacks, and every delivery verifies with standardwebhooks under the secret shown once', async () => {
    const { owner, asker, target, connection } = parties;
    ownerSide = await register(owner, '/owner', { agent_id: target.id });
    callerSide = await register(asker, '/caller', { connection_id: connection.connectionId });

    const started = await created(connection.relayToken, '/relay/v1/threads', { text: 'hello, agent' });
    const threadId = String((started.thread as { id: string }).id);
    await created(connection.relayToken, `/relay/v1/threads/${threadId}/messages`, {
      text: 'one more thing',
    });
    // The agent's answer, given by its owner (an instance's answer is the same event).
    await created(await threadToken(owner, threadId), `/relay/v1/threads/${threadId}/responses`, {
      text: 'hello, caller',
    });
    const closed = await call(
      await threadToken(asker, threadId),
      'POST',
      `/relay/v1/threads/${threadId}/close`,
    );
    assert.equal(closed.status, 200, JSON.stringify(closed.body));

    // Four events, each to both sides.
    const got = await until(
      'every delivery arrived',
      () => receiver.received,
      (received) => received.length >= 8,
    );
    assert.equal(got.length, 8);
    const expected = [
      'thread.agent_replied',
      'thread.closed',
      'thread.message_received',
      'thread.message_received',
    ];
    for (const endpoint of [ownerSide, callerSide]) {
      const mine = got.filter((delivery) => delivery.path === endpoint.path);
      const events = mine.map((delivery) => verified(endpoint.secret, delivery));
      assert.deepEqual(events.map((event) => event.type).sort(), expected, endpoint.path);
      for (const event of events) assert.equal(event.data.thread_id, threadId);
      // One endpoint's secret does not verify another's deliveries.
      const other = endpoint === ownerSide ? callerSide : ownerSide;
      const [first] = mine;
      assert.ok(first !== undefined);
      assert.throws(() => verified(other.secret, first));
      // The delivery log names each one by the webhook-id the receiver saw, all succeeded.
      const account = endpoint === ownerSide ? owner : asker;
      const log = await until(
        `${endpoint.path}'s log shows every delivery succeeded`,
        () => deliveryLog(account, endpoint),
        (rows) => rows.length === 4 && rows.every((row) => row.state === 'succeeded'),
      );
      assert.deepEqual(
        log.map((row) => row.webhook_id).sort(),
        mine.map((delivery) => String(delivery.headers['webhook-id'])).sort(),
      );
      assert.equal(new Set(log.map((row) => row.webhook_id)).size, 4);
    }
  });

  test('RLY-7: with the receiver stopped the delivery log shows every retry failing; once it is started again a replay arrives with the same webhook-id and verifies', async () => {
    const { owner, asker, connection } = parties;
    await receiver.close();
    clockBehindMs = BEHIND_MS;
    // The attempts are timed by the job's clock, behind by BEHIND_MS: "failed since" is read on it.
    const since = new Date(Date.now() - clockBehindMs).toISOString();
    const arrivedBefore = receiver.received.length;
    await created(connection.relayToken, '/relay/v1/threads', { text: 'is anyone there?' });

    // The owner watches the log: attempts pile up, each refused, until the series ends failed.
    const failedOf = async (account: TestAccount, endpoint: Registered) => {
      const [failed] = await until(
        `${endpoint.path}'s new delivery failed every attempt`,
        async () => (await deliveryLog(account, endpoint)).filter((row) => row.state === 'failed'),
        (rows) => rows.length === 1,
      );
      assert.ok(failed !== undefined);
      const detail = await call(account.apiToken, 'GET', `/api/v1/webhook-deliveries/${failed.id}`);
      assert.equal(detail.status, 200, JSON.stringify(detail.body));
      const attempts = detail.body.attempt_log as { number: number; status: number | null; error: string }[];
      assert.deepEqual(
        attempts.map((attempt) => [attempt.number, attempt.status, attempt.error]),
        RETRY_DELAYS_SECONDS.map((_, i) => [i + 1, null, 'refused']),
      );
      return failed;
    };
    const ownerFailed = await failedOf(owner, ownerSide);
    const callerFailed = await failedOf(asker, callerSide);
    assert.equal(receiver.received.length, arrivedBefore, 'nothing arrived while the receiver was down');

    clockBehindMs = 0;
    await receiver.reopen();
    // One delivery replayed by id, the other as "every failed one since".
    const replayed = await call(
      owner.apiToken,
      'POST',
      `/api/v1/webhook-deliveries/${ownerFailed.id}/replay`,
    );
    assert.deepEqual([replayed.status, replayed.body], [202, { replayed: true }]);
    const requeued = await call(
      asker.apiToken,
      'POST',
      `/api/v1/webhook-endpoints/${callerSide.id}/replay-failed`,
      { since },
    );
    assert.deepEqual([requeued.status, requeued.body], [202, { requeued: 1 }]);

    const got = await until(
      'both replays arrived',
      () => receiver.received.slice(arrivedBefore),
      (received) => received.length >= 2,
    );
    for (const [endpoint, failed] of [
      [ownerSide, ownerFailed],
      [callerSide, callerFailed],
    ] as const) {
      const arrivals = got.filter((delivery) => delivery.path === endpoint.path);
      assert.equal(arrivals.length, 1, endpoint.path);
      const [arrival] = arrivals;
      assert.ok(arrival !== undefined);
      assert.equal(arrival.headers['webhook-id'], failed.webhook_id);
      const event = verified(endpoint.secret, arrival);
      assert.deepEqual([event.type, event.data.text], ['thread.message_received', 'is anyone there?']);
    }
    const [after] = await until(
      "the replay's attempt is in the log",
      async () => (await deliveryLog(owner, ownerSide)).filter((row) => row.id === ownerFailed.id),
      (rows) => rows[0]?.state === 'succeeded',
    );
    // The replay continues the attempt count: the seven refused, then the one that arrived.
    assert.equal(after?.attempts, RETRY_DELAYS_SECONDS.length + 1);
  });
});

describe('callback URLs at the host and the metadata address', () => {
  /** A 400 problem+json naming the url field, with code callback_destination_forbidden. */
  function assertForbidden(answer: Answer, url: string): void {
    assert.equal(answer.status, 400, `${url}: ${JSON.stringify(answer.body)}`);
    assert.equal(answer.contentType, 'application/problem+json', url);
    const problem = answer.body as unknown as ProblemBody;
    assert.equal(problem.code, 'callback_destination_forbidden', url);
    assert.ok(
      (problem.errors ?? []).some((error) => error.field.includes('url')),
      `${url}: ${JSON.stringify(problem)}`,
    );
  }

  const endpointCount = async () => {
    const [row] = await ctx.db.superuser<{ count: number }[]>`
      select count(*)::int as count from callback_endpoints`;
    return row?.count ?? 0;
  };

  test('RLY-12: without the operator’s allowance, callback URLs at loopback (127.0.0.1, ::1, localhost) and at the metadata address 169.254.169.254 are refused with a 400 problem+json naming url, and nothing is stored', async () => {
    const { owner, target } = parties;
    const port = new URL(receiver.url).port;
    const before = await endpointCount();
    for (const url of [
      `http://127.0.0.1:${port}/owner`,
      `http://[::1]:${port}/owner`,
      `http://localhost:${port}/owner`,
      'http://169.254.169.254/latest/meta-data/',
    ]) {
      const answer = await call(
        owner.apiToken,
        'POST',
        '/api/v1/webhook-endpoints',
        { url, event_types: THREAD_EVENTS, agent_id: target.id },
        unallowed.app,
      );
      assertForbidden(answer, url);
    }
    assert.equal(await endpointCount(), before);
  });

  test('RLY-12: the operator’s allowance of 127.0.0.1/32 opens that address only: ::1 and the metadata address are still refused', async () => {
    const { owner, target } = parties;
    for (const url of ['http://[::1]/owner', 'http://169.254.169.254/latest/meta-data/']) {
      const answer = await call(owner.apiToken, 'POST', '/api/v1/webhook-endpoints', {
        url,
        event_types: THREAD_EVENTS,
        agent_id: target.id,
      });
      assertForbidden(answer, url);
    }
  });
});
