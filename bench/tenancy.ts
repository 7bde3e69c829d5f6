import { randomUUID } from 'node:crypto';
import { withTenant } from '../src/db/tenant.ts';
import type { TestDatabase } from '../test/helpers/database.ts';
import { compare } from './ab.ts';

// `npm run bench -- tenancy`: what tenancy costs. The same indexed select runs
// (a) through withTenant as enclave_app: one transaction that binds the tenant,
//     then the select, filtered by the row-level security policy;
// (b) in a plain transaction as the superuser, which no policy applies to
//     (the app role would see nothing without a tenant, and the owner is
//     subject to FORCE RLS too).

const TENANTS = 1000;
const ROWS_PER_TENANT = 3;

export async function runTenancyBench(db: TestDatabase): Promise<void> {
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
  console.log(`\nSeeded ${TENANTS} tenants × ${ROWS_PER_TENANT} sessions; one connection at a time.`);
  await compare({
    name: 'withTenant vs a plain transaction',
    ratio: 'throughput',
    per: { ms: 1000 },
    aim: { atLeast: 0.87 },
    a: {
      label: 'withTenant (enclave_app, RLS)',
      op: async () => {
        const tenantId = pickTenant();
        const rows = await withTenant(
          db.app,
          tenantId,
          (tx) => tx`select id from sessions where tenant_id = ${tenantId}::uuid limit 1`,
        );
        expectOneRow(rows, 'withTenant');
      },
    },
    b: {
      label: 'a plain transaction (superuser)',
      op: async () => {
        const tenantId = pickTenant();
        const rows = await db.superuser.begin(
          (tx) => tx`select id from sessions where tenant_id = ${tenantId}::uuid limit 1`,
        );
        expectOneRow(rows, 'plain');
      },
    },
  });
}
