import type { Sql } from 'postgres';
import { GLOBAL_TABLES } from '../db/global-tables.ts';
import { findUnprotectedTables } from '../db/rls-gate.ts';
import { withTenant } from '../db/tenant.ts';
import type { CheckOutcome } from './runs.ts';

// Tenant isolation probe (OPS-5, TEN-1, TEN-6), against the live database:
// two probe tenants the platform keeps for this alone (tenants.probe, left out
// of every listing). Bound to each in turn through withTenant, as a request
// is, every tenant table the app role can read must show no row of any other
// tenant — while the probe's own tenant row is seen, so the probe is not
// looking at nothing — and the other probe's row must be invisible. Then the
// RLS gate (db/rls-gate.ts) runs on the same database: every tenant table
// still has ENABLE + FORCE RLS and its policy.

export const PROBE_TENANTS = [
  { id: '00000000-0000-4000-8000-0000000e0001', name: 'isolation probe A' },
  { id: '00000000-0000-4000-8000-0000000e0002', name: 'isolation probe B' },
] as const;

/** Creates the probe tenants if they are missing (any worker may, at any time). */
export async function ensureProbeTenants(sql: Sql): Promise<void> {
  for (const probe of PROBE_TENANTS) {
    await withTenant(
      sql,
      probe.id,
      (tx) => tx`
      insert into tenants (id, name, probe) values (${probe.id}::uuid, ${probe.name}, true)
      on conflict (id) do nothing`,
    );
  }
}

/** Tenant tables the app role can read, schema-qualified and quoted by the catalog itself. */
async function tenantTables(sql: Sql): Promise<string[]> {
  const rows = await sql<{ name: string; plain: string }[]>`
    select quote_ident(n.nspname) || '.' || quote_ident(c.relname) as name, n.nspname || '.' || c.relname as plain
    from pg_class c
    join pg_namespace n on n.oid = c.relnamespace
    join pg_attribute a on a.attrelid = c.oid and a.attname = 'tenant_id' and not a.attisdropped
    where c.relkind in ('r', 'p')
      and n.nspname not in ('pg_catalog', 'information_schema')
      and has_table_privilege(c.oid, 'select')
    order by 1`;
  // Global tables that name a tenant are public by design (the checkpoint log): not probed.
  return rows.filter((row) => !Object.hasOwn(GLOBAL_TABLES, row.plain)).map((row) => row.name);
}

export async function checkTenantIsolation(sql: Sql): Promise<CheckOutcome> {
  await ensureProbeTenants(sql);
  const tables = await tenantTables(sql);
  const leaks: string[] = [];
  for (const [i, probe] of PROBE_TENANTS.entries()) {
    const other = PROBE_TENANTS[1 - i]?.id ?? probe.id;
    await withTenant(sql, probe.id, async (tx) => {
      const [seen] = await tx<{ own: number; others: number }[]>`
        select count(*) filter (where id = ${probe.id}::uuid)::int as own,
               count(*) filter (where id <> ${probe.id}::uuid)::int as others
        from tenants`;
      if (seen?.own !== 1) leaks.push(`${probe.name} does not see its own tenant row`);
      if (seen?.others !== 0) leaks.push(`${probe.name} sees ${seen?.others} other tenant rows`);
      const [named] = await tx<
        { n: number }[]
      >`select count(*)::int as n from tenants where id = ${other}::uuid`;
      if (named?.n !== 0) leaks.push(`${probe.name} reads the other probe’s tenant row by id`);
      for (const table of tables) {
        // The table name comes from the catalog, quoted by quote_ident: no input reaches it.
        const [row] = await tx.unsafe<{ n: number }[]>(
          `select count(*)::int as n from ${table} where tenant_id <> $1::uuid`,
          [probe.id],
        );
        if (row?.n !== 0) leaks.push(`${probe.name} reads ${row?.n} rows of other tenants in ${table}`);
      }
    });
  }
  const unprotected = await findUnprotectedTables(sql);
  const figures = {
    probe_tenants: PROBE_TENANTS.length,
    tables_probed: tables.length,
    leaks,
    unprotected_tables: unprotected.map((table) => `${table.table}: missing ${table.missing.join('; ')}`),
  };
  if (leaks.length > 0 || unprotected.length > 0) {
    const first = leaks[0] ?? figures.unprotected_tables[0] ?? '';
    return {
      result: 'failed',
      details: {
        summary: `${leaks.length} leaks, ${unprotected.length} unprotected tables; first: ${first}`,
        ...figures,
      },
    };
  }
  return {
    result: 'pass',
    details: {
      summary: `${tables.length} tenant tables read as each of 2 probe tenants: no other tenant’s row seen; every tenant table has FORCE RLS and its policy`,
      ...figures,
    },
  };
}
