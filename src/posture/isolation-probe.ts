import type { Sql } from 'postgres';
import { GLOBAL_TABLES } from '../db/global-tables.ts';
import { findUnprotectedTables } from '../db/rls-gate.ts';
import { withTenant } from '../db/tenant.ts';
import { ensureProbeRows, PROBE_ROW_TABLES, PROBE_TENANTS } from './probe-tenants.ts';
import type { CheckOutcome } from './runs.ts';

// Tenant isolation probe (OPS-5, TEN-1, TEN-6), against the live database:
// two probe tenants the platform keeps for this alone (tenants.probe), each
// with a row of its own in several tenant tables (probe-tenants.ts). Bound to
// each in turn through withTenant, as a request is, every tenant table the
// app role can read must show no row of any other tenant — so the other
// probe's rows, which are there to be seen, stay invisible — while the
// probe's own rows are seen, so the probe is not looking at nothing. Then the
// RLS gate (db/rls-gate.ts) runs on the same database: every tenant table
// still has ENABLE + FORCE RLS and its policy. The two parts catch different
// faults: the gate reads the catalog, so it cannot tell a policy that names
// current_tenant_id() but lets every row through; only reading rows can.

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
  await ensureProbeRows(sql);
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
      for (const table of PROBE_ROW_TABLES) {
        // A fixed name of ours, not input.
        const [row] = await tx.unsafe<{ n: number }[]>(
          `select count(*)::int as n from ${table} where tenant_id = $1::uuid`,
          [probe.id],
        );
        if ((row?.n ?? 0) < 1) leaks.push(`${probe.name} does not see its own row in ${table}`);
      }
    });
  }
  const unprotected = await findUnprotectedTables(sql);
  const figures = {
    probe_tenants: PROBE_TENANTS.length,
    tables_with_probe_rows: PROBE_ROW_TABLES.length,
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
      summary: `${tables.length} tenant tables read as each of 2 probe tenants (each holding rows in ${PROBE_ROW_TABLES.length + 1}): no other tenant’s row seen, its own seen; every tenant table has FORCE RLS and its policy`,
      ...figures,
    },
  };
}
