import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { createAccount, type TestAccount } from './helpers/accounts.ts';
import { buildTestApp, type TestApp } from './helpers/app.ts';
import { startTestCluster, type TestCluster } from './helpers/cluster.ts';
import { createTestDatabase, type TestDatabase } from './helpers/database.ts';
import { postgresRunning, signalPostgres } from './helpers/postgres-signals.ts';

// Every operation of the API document, sent at once to a frozen database
// (SIGSTOP): each answers within the bound with a status the document lists
// (503 database_unavailable where it needs the database), never a 500 or a
// hang, and the server serves again once the database thaws. A cluster of
// this file's own, so freezing it touches no other suite.

const TIMEOUT_MS = 1000;
/** A safety net far above the bound, not a timing assertion: a hang fails here, not at the harness timeout. */
const HANG_MS = 15_000;

let cluster: TestCluster;
let db: TestDatabase;
let testApp: TestApp;
let owner: TestAccount;
let pgDir = '';

before(async () => {
  cluster = await startTestCluster({});
  db = await createTestDatabase({ cluster: cluster.info, timeoutMs: TIMEOUT_MS });
  testApp = await buildTestApp(db, { ENCLAVE_DB_TIMEOUT_MS: String(TIMEOUT_MS) });
  [{ dir: pgDir } = { dir: '' }] = await db.superuser<{ dir: string }[]>`
    select current_setting('data_directory') as dir`;
  owner = await createAccount(db, testApp);
});

after(async () => {
  if (pgDir !== '' && postgresRunning(pgDir)) signalPostgres(pgDir, 'SIGCONT'); // failed while frozen
  try {
    await testApp?.app.close();
  } finally {
    await db?.drop();
    await cluster?.stop();
  }
});

/** `GET /api/v1/me` with the owner's token, until it answers 200 (a connection the freeze broke may answer 503 first). */
async function assertServing(): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    const response = await testApp.app.inject({
      method: 'GET',
      url: '/api/v1/me',
      headers: { authorization: `Bearer ${owner.apiToken}` },
    });
    if (response.statusCode === 200) return;
    assert.ok(attempt < 3 && response.statusCode === 503, `status ${response.statusCode}: ${response.body}`);
  }
}

test('every operation of the API document, with the database frozen, answers a status the document lists (503 where it needs the database), never a 500 or a hang', {
  timeout: 120_000,
}, async () => {
  const document = (await testApp.app.inject({ method: 'GET', url: '/openapi.json' })).json<{
    paths: Record<string, Record<string, { responses: Record<string, unknown> }>>;
  }>();
  const operations = Object.entries(document.paths).flatMap(([path, item]) =>
    Object.entries(item).map(([method, operation]) => ({ method: method.toUpperCase(), path, operation })),
  );
  await assertServing();
  signalPostgres(pgDir, 'SIGSTOP');
  let answers: { name: string; status: number | 'hang'; documented: boolean }[];
  try {
    // All at once: each waits out the bound on its own, and together far more than the pools hold.
    answers = await Promise.all(
      operations.map(async ({ method, path, operation }) => {
        const url = path.replace(/\{[^}]+\}/g, '00000000-0000-4000-8000-000000000000');
        const hang = new AbortController();
        const response = await Promise.race([
          testApp.app.inject({
            method: method as 'GET',
            url,
            headers: { authorization: `Bearer ${owner.apiToken}`, 'content-type': 'application/json' },
            ...(method === 'GET' ? {} : { payload: '{}' }),
          }),
          delay(HANG_MS, 'hang' as const, { signal: hang.signal }).catch(() => 'hang' as const),
        ]);
        hang.abort();
        const status = response === 'hang' ? 'hang' : response.statusCode;
        return {
          name: `${method} ${path}`,
          status,
          documented: operation.responses[String(status)] !== undefined,
        };
      }),
    );
  } finally {
    signalPostgres(pgDir, 'SIGCONT');
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
