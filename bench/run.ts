import { randomUUID } from 'node:crypto';
import { Bench } from 'tinybench';
import { withTenant } from '../src/db/tenant.ts';
import { startTestCluster } from '../test/helpers/cluster.ts';
import { createTestDatabase } from '../test/helpers/database.ts';

// `npm run bench`: what tenancy costs. The same indexed select runs
// (a) through withTenant as enclave_app: one transaction that binds the tenant,
//     then the select, filtered by the row-level security policy;
// (b) in a plain transaction as the superuser, which no policy applies to
//     (the app role would see nothing without a tenant, and the owner is
//     subject to FORCE RLS too).
// Both run in the same process against the same database, so the ratio holds
// on a noisy machine even when the absolute numbers do not.

const TENANTS = 1000;
const ROWS_PER_TENANT = 3;
const TIME_MS = 3000;

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
  await db.superuser`
    insert into service_queries (tenant_id, reason)
    select id, 'bench seed ' || r from unnest(${tenantIds}::uuid[]) as t(id), generate_series(1, ${ROWS_PER_TENANT}) as r`;
  await db.superuser`analyze tenants, service_queries`;

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
        (tx) => tx`select id from service_queries where tenant_id = ${tenantId}::uuid limit 1`,
      );
      expectOneRow(rows, 'withTenant');
    })
    .add('plain transaction (superuser)', async () => {
      const tenantId = pickTenant();
      const rows = await db.superuser.begin(
        (tx) => tx`select id from service_queries where tenant_id = ${tenantId}::uuid limit 1`,
      );
      expectOneRow(rows, 'plain');
    });

  console.log(
    `Seeded ${TENANTS} tenants × ${ROWS_PER_TENANT} service_queries rows; ${TIME_MS / 1000} s per task, one connection at a time.\n`,
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
} finally {
  await db.drop();
  await cluster.stop();
}
