import { randomUUID } from 'node:crypto';
import { Bench } from 'tinybench';
import { CURRENT_PARAMS, hashPassword } from '../src/accounts/passwords.ts';
import { withTenant } from '../src/db/tenant.ts';
import { createAccount } from '../test/helpers/accounts.ts';
import { buildTestApp } from '../test/helpers/app.ts';
import { startTestCluster } from '../test/helpers/cluster.ts';
import { createTestDatabase } from '../test/helpers/database.ts';
import { runAuditBench } from './audit.ts';
import { runCheckpointBench } from './checkpoint.ts';
import { runColdStartBench } from './cold-start.ts';
import { runEgressBench } from './egress.ts';
import { runIngressBench } from './ingress.ts';
import { runVaultBench } from './vault.ts';

// `npm run bench`: what tenancy costs. The same indexed select runs
// (a) through withTenant as enclave_app: one transaction that binds the tenant,
//     then the select, filtered by the row-level security policy;
// (b) in a plain transaction as the superuser, which no policy applies to
//     (the app role would see nothing without a tenant, and the owner is
//     subject to FORCE RLS too).
// Both run in the same process against the same database, so the ratio holds
// on a noisy machine even when the absolute numbers do not.
//
// Then what signing in costs: scrypt milliseconds per hash at the current
// parameters, and GET /api/v1/me (through app.inject) with a Bearer token —
// token lookup, tenant binding, user check — against the same route without
// credentials (401 from the same hook, no database work), as a ratio.

const TENANTS = 1000;
const ROWS_PER_TENANT = 3;
const TIME_MS = 3000;
const SCRYPT_RUNS = 5;
const API_TIME_MS = 2000;

const cluster = await startTestCluster();
process.env.ENCLAVE_TEST_CLUSTER = JSON.stringify(cluster.info);
const db = await createTestDatabase().catch(async (error: unknown) => {
  await cluster.stop();
  throw error;
});

try {
  const tenantIds = Array.from({ length: TENANTS }, () => randomUUID());
  await db.superuser`
    insert into tenants (id, name)
    select id, 'tenant ' || n from unnest(${tenantIds}::uuid[]) with ordinality as t(id, n)`;
  // One user per tenant, each with ROWS_PER_TENANT sessions: the select below uses the index on sessions (tenant_id, user_id).
  await db.superuser`
    insert into users (tenant_id, username, email, password_hash, role)
    select id, 'bench_' || n, 'bench_' || n || '@example.test', 'not a hash', 'owner'
    from unnest(${tenantIds}::uuid[]) with ordinality as t(id, n)`;
  await db.superuser`
    insert into sessions (tenant_id, user_id, token_hash, expires_at)
    select u.tenant_id, u.id, encode(sha256(convert_to(u.id::text || ':' || r, 'UTF8')), 'hex'), now() + interval '1 day'
    from users u, generate_series(1, ${ROWS_PER_TENANT}) as r`;
  await db.superuser`analyze tenants, users, sessions`;

  let next = 0;
  const pickTenant = (): string => tenantIds[next++ % TENANTS] ?? '';
  const expectOneRow = (rows: readonly unknown[], label: string): void => {
    if (rows.length !== 1) throw new Error(`${label}: expected one row, got ${rows.length}`);
  };

  const bench = new Bench({ time: TIME_MS, warmupTime: 500, throws: true });
  bench
    .add('withTenant (enclave_app, RLS)', async () => {
      const tenantId = pickTenant();
      const rows = await withTenant(
        db.app,
        tenantId,
        (tx) => tx`select id from sessions where tenant_id = ${tenantId}::uuid limit 1`,
      );
      expectOneRow(rows, 'withTenant');
    })
    .add('plain transaction (superuser)', async () => {
      const tenantId = pickTenant();
      const rows = await db.superuser.begin(
        (tx) => tx`select id from sessions where tenant_id = ${tenantId}::uuid limit 1`,
      );
      expectOneRow(rows, 'plain');
    });

  console.log(
    `Seeded ${TENANTS} tenants × ${ROWS_PER_TENANT} sessions; ${TIME_MS / 1000} s per task, one connection at a time.\n`,
  );
  await bench.run();
  console.table(bench.table());

  const throughput = (name: string): number => {
    const result = bench.getTask(name)?.result;
    if (result === undefined || !('throughput' in result)) throw new Error(`${name} did not complete`);
    return result.throughput.mean;
  };
  const tenant = throughput('withTenant (enclave_app, RLS)');
  const plain = throughput('plain transaction (superuser)');
  console.log(
    `\nwithTenant: ${tenant.toFixed(0)} ops/s; plain transaction: ${plain.toFixed(0)} ops/s` +
      `\nwithTenant cost: ${(tenant / plain).toFixed(2)}× the throughput of a plain transaction`,
  );

  // scrypt: one hash at a time, as a login does.
  const { ln, r, p } = CURRENT_PARAMS;
  await hashPassword('warm-up password');
  const scryptMs: number[] = [];
  for (let i = 0; i < SCRYPT_RUNS; i += 1) {
    const started = performance.now();
    await hashPassword(`bench password ${i}`);
    scryptMs.push(performance.now() - started);
  }
  const mean = scryptMs.reduce((sum, ms) => sum + ms, 0) / scryptMs.length;
  console.log(
    `\nscrypt (N=2^${ln}, r=${r}, p=${p}): ${mean.toFixed(0)} ms per hash, mean of ${SCRYPT_RUNS} ` +
      `(min ${Math.min(...scryptMs).toFixed(0)}, max ${Math.max(...scryptMs).toFixed(0)})`,
  );

  const testApp = await buildTestApp(db);
  try {
    const account = await createAccount(db, testApp);
    const authorization = `Bearer ${account.apiToken}`;
    const api = new Bench({ time: API_TIME_MS, warmupTime: 300, throws: true });
    api
      .add('GET /api/v1/me with a Bearer token (200)', async () => {
        const response = await testApp.app.inject({
          method: 'GET',
          url: '/api/v1/me',
          headers: { authorization },
        });
        if (response.statusCode !== 200) throw new Error(`authenticated: ${response.statusCode}`);
      })
      .add('GET /api/v1/me without credentials (401)', async () => {
        const response = await testApp.app.inject({ method: 'GET', url: '/api/v1/me' });
        if (response.statusCode !== 401) throw new Error(`unauthenticated: ${response.statusCode}`);
      });
    await api.run();
    console.log('');
    console.table(api.table());
    const apiThroughput = (name: string): number => {
      const result = api.getTask(name)?.result;
      if (result === undefined || !('throughput' in result)) throw new Error(`${name} did not complete`);
      return result.throughput.mean;
    };
    const authenticated = apiThroughput('GET /api/v1/me with a Bearer token (200)');
    const anonymous = apiThroughput('GET /api/v1/me without credentials (401)');
    console.log(
      `\nauthenticated: ${authenticated.toFixed(0)} req/s; unauthenticated: ${anonymous.toFixed(0)} req/s` +
        `\nan authenticated request costs ${(anonymous / authenticated).toFixed(2)}× an unauthenticated one` +
        ` (${(authenticated / anonymous).toFixed(2)}× its throughput)`,
    );
  } finally {
    await testApp.app.close();
  }

  await runAuditBench(db);
  await runCheckpointBench();
  await runVaultBench(db);
  await runIngressBench(db);
  await runEgressBench(db);
  await runColdStartBench(db);
} finally {
  await db.drop();
  await cluster.stop();
}
