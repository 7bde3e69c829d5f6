import type { Sql } from 'postgres';
import { GLOBAL_TABLES } from './global-tables.ts';
import { OWNER_ROLE } from './target.ts';

// TEN-6: reads the catalog and lists every ordinary or partitioned table
// outside the system schemas that is not in the global allowlist and lacks
// ENABLE + FORCE row-level security or a tenant policy, or that has any other
// permissive policy than a FOR SELECT lookup on current_lookup() (see
// src/db/lookup.ts) or a FOR SELECT *_definer policy granted TO enclave_owner
// alone (read by SECURITY DEFINER functions that work across tenants, such as
// the checkpoint job's; nothing connects as enclave_owner at run time, and
// enclave_app is not its member). An empty list is the gate.

export interface UnprotectedTable {
  readonly table: string;
  readonly missing: readonly string[];
}

export async function findUnprotectedTables(sql: Sql): Promise<UnprotectedTable[]> {
  const rows = await sql<
    {
      table: string;
      enabled: boolean;
      forced: boolean;
      tenant_policies: number;
      other_policies: string[];
      has_tenant: boolean;
    }[]
  >`
    select n.nspname || '.' || c.relname as table,
           c.relrowsecurity as enabled,
           c.relforcerowsecurity as forced,
           -- A policy counts only if it covers every command and both its USING and
           -- WITH CHECK compare with the transaction's tenant.
           (select count(*)::int from pg_policy p
             where p.polrelid = c.oid and p.polcmd = '*' and p.polpermissive
               and pg_get_expr(p.polqual, p.polrelid) like '%current_tenant_id()%'
               and pg_get_expr(p.polwithcheck, p.polrelid) like '%current_tenant_id()%') as tenant_policies,
           -- Any other permissive policy widens access: only a read-only lookup by
           -- app.lookup is allowed (*_lookup, FOR SELECT, on current_lookup()).
           array(select p.polname::text from pg_policy p
             where p.polrelid = c.oid and p.polpermissive
               and not (p.polcmd = '*'
                        and pg_get_expr(p.polqual, p.polrelid) like '%current_tenant_id()%'
                        and pg_get_expr(p.polwithcheck, p.polrelid) like '%current_tenant_id()%')
               and not (p.polcmd = 'r' and p.polname like '%\_lookup'
                        and pg_get_expr(p.polqual, p.polrelid) like '%current_lookup()%')
               -- ...and a read-only policy for the owner's SECURITY DEFINER functions.
               and not (p.polcmd = 'r' and p.polname like '%\_definer'
                        and p.polroles = array[(select r.oid from pg_roles r where r.rolname = ${OWNER_ROLE})]::oid[])
             order by 1) as other_policies,
           exists (select 1 from pg_attribute a where a.attrelid = c.oid and a.attname = 'tenant_id'
                   and not a.attisdropped) as has_tenant
    from pg_class c
    join pg_namespace n on n.oid = c.relnamespace
    where c.relkind in ('r', 'p')
      and n.nspname not in ('pg_catalog', 'information_schema', 'pg_toast')
      and n.nspname not like 'pg_temp%'
      and n.nspname not like 'pg_toast_temp%'
    order by 1`;
  const unprotected: UnprotectedTable[] = [];
  for (const row of rows) {
    const global = Object.hasOwn(GLOBAL_TABLES, row.table) ? GLOBAL_TABLES[row.table] : undefined;
    // A tenant_id column means tenant data: the allowlist excuses it only with a stated reason.
    if (global !== undefined && (!row.has_tenant || global.tenantColumn !== undefined)) continue;
    const missing: string[] = [];
    if (global !== undefined)
      missing.push('allowlisted but has a tenant_id column and no tenantColumn reason');
    if (!row.enabled) missing.push('ENABLE ROW LEVEL SECURITY');
    if (!row.forced) missing.push('FORCE ROW LEVEL SECURITY');
    if (row.tenant_policies === 0) missing.push('a policy with USING and WITH CHECK on current_tenant_id()');
    for (const name of row.other_policies) {
      missing.push(
        `no policy "${name}" (only tenant policies, FOR SELECT *_lookup policies on current_lookup() and FOR SELECT *_definer policies TO ${OWNER_ROLE})`,
      );
    }
    if (missing.length > 0) unprotected.push({ table: row.table, missing });
  }
  return unprotected;
}
