// Attack: a migration adds a tenant table without FORCE RLS or with a policy that does not compare tenant_id with the bound tenant, and nothing notices before it ships.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { GLOBAL_TABLES } from '../src/db/global-tables.ts';
import { findUnprotectedTables, type UnprotectedTable } from '../src/db/rls-gate.ts';
import { createTestDatabase, type TestDatabase } from './helpers/database.ts';

let db: TestDatabase;
/** A second database where tables with broken protection are planted. */
let planted: TestDatabase;

before(async () => {
  [db, planted] = await Promise.all([createTestDatabase(), createTestDatabase()]);
});
after(() => Promise.all([db.drop(), planted.drop()]));

function describeTables(tables: readonly UnprotectedTable[]): string {
  return tables.map((t) => `  ${t.table}: missing ${t.missing.join('; ')}`).join('\n');
}

describe('RLS gate', () => {
  test('TEN-6: every table of the migrated schema has ENABLE + FORCE RLS and a tenant policy, or is allowlisted', async () => {
    const unprotected = await findUnprotectedTables(db.superuser);
    assert.deepEqual(unprotected, [], `tables without row-level security:\n${describeTables(unprotected)}`);
  });

  test('TEN-6: every table with a tenant_id column has ENABLE and FORCE RLS, unless allowlisted with a reason for it (read straight from the catalog)', async () => {
    const rows = await db.superuser<{ table: string; enabled: boolean; forced: boolean }[]>`
      select n.nspname || '.' || c.relname as table, c.relrowsecurity as enabled, c.relforcerowsecurity as forced
      from pg_class c
      join pg_attribute a on a.attrelid = c.oid and a.attname = 'tenant_id' and not a.attisdropped
      join pg_namespace n on n.oid = c.relnamespace
      where c.relkind in ('r', 'p') and n.nspname not in ('pg_catalog', 'information_schema')
      order by 1`;
    assert.ok(
      rows.some((row) => row.table === 'enclave.audit_events'),
      `the catalog query found no tenant table: ${JSON.stringify(rows)}`,
    );
    const excused = (table: string): boolean => GLOBAL_TABLES[table]?.tenantColumn !== undefined;
    const weak = rows
      .filter((row) => (!row.enabled || !row.forced) && !excused(row.table))
      .map((row) => row.table);
    assert.deepEqual(weak, [], `tenant tables without ENABLE + FORCE RLS: ${weak.join(', ')}`);
  });

  test('TEN-1, TEN-6: enclave.invites is a tenant table like any other: not allowlisted, ENABLE + FORCE RLS, and only its tenant and lookup policies', async () => {
    assert.equal(Object.hasOwn(GLOBAL_TABLES, 'enclave.invites'), false);
    const [row] = await db.superuser<{ enabled: boolean; forced: boolean; policies: string[] }[]>`
      select c.relrowsecurity as enabled, c.relforcerowsecurity as forced,
             array(select p.polname::text from pg_policy p where p.polrelid = c.oid order by 1) as policies
      from pg_class c where c.oid = 'enclave.invites'::regclass`;
    assert.deepEqual(row, {
      enabled: true,
      forced: true,
      policies: ['invites_lookup', 'invites_mailed_lookup', 'tenant_isolation'],
    });
  });

  test('TEN-6: every allowlisted global table exists and says why it is global', async () => {
    const names = Object.keys(GLOBAL_TABLES);
    assert.ok(names.length > 0);
    for (const name of names) {
      const [row] = await db.superuser<
        { found: string | null }[]
      >`select to_regclass(${name})::text as found`;
      assert.notEqual(row?.found, null, `GLOBAL_TABLES lists ${name}, which does not exist: remove it`);
      const entry = GLOBAL_TABLES[name];
      const reason = entry?.reason ?? '';
      assert.ok(reason.trim().length >= 20, `GLOBAL_TABLES[${name}] needs a real reason, not "${reason}"`);
      if (entry?.tenantColumn !== undefined) {
        assert.ok(
          entry.tenantColumn.trim().length >= 20,
          `GLOBAL_TABLES[${name}].tenantColumn needs a real reason`,
        );
      }
    }
  });
});

describe('RLS gate on planted tables', () => {
  let report: UnprotectedTable[];
  const missingFor = (table: string): string[] | undefined =>
    report.find((entry) => entry.table === table)?.missing.slice();

  before(async () => {
    await planted.superuser.unsafe(`
      create table enclave.bare (id int, tenant_id uuid not null);

      create table enclave.enabled_only (id int, tenant_id uuid not null);
      alter table enclave.enabled_only enable row level security;
      create policy p on enclave.enabled_only
        using (tenant_id = enclave.current_tenant_id()) with check (tenant_id = enclave.current_tenant_id());

      create table enclave.open_policy (id int, tenant_id uuid not null);
      alter table enclave.open_policy enable row level security;
      alter table enclave.open_policy force row level security;
      create policy p on enclave.open_policy using (true) with check (true);

      create table enclave.check_open (id int, tenant_id uuid not null);
      alter table enclave.check_open enable row level security;
      alter table enclave.check_open force row level security;
      create policy p on enclave.check_open using (tenant_id = enclave.current_tenant_id()) with check (true);

      create table enclave.select_only (id int, tenant_id uuid not null);
      alter table enclave.select_only enable row level security;
      alter table enclave.select_only force row level security;
      create policy p on enclave.select_only for select using (tenant_id = enclave.current_tenant_id());

      create table enclave.protected (id int, tenant_id uuid not null);
      alter table enclave.protected enable row level security;
      alter table enclave.protected force row level security;
      create policy p on enclave.protected
        using (tenant_id = enclave.current_tenant_id()) with check (tenant_id = enclave.current_tenant_id());

      create table enclave.with_lookup (id int, tenant_id uuid not null, token_hash text);
      alter table enclave.with_lookup enable row level security;
      alter table enclave.with_lookup force row level security;
      create policy p on enclave.with_lookup
        using (tenant_id = enclave.current_tenant_id()) with check (tenant_id = enclave.current_tenant_id());
      create policy with_lookup_lookup on enclave.with_lookup for select
        using (token_hash = enclave.current_lookup());

      create table enclave.widened (id int, tenant_id uuid not null);
      alter table enclave.widened enable row level security;
      alter table enclave.widened force row level security;
      create policy p on enclave.widened
        using (tenant_id = enclave.current_tenant_id()) with check (tenant_id = enclave.current_tenant_id());
      create policy everyone on enclave.widened for select using (true);

      create table enclave.writable_lookup (id int, tenant_id uuid not null, token_hash text);
      alter table enclave.writable_lookup enable row level security;
      alter table enclave.writable_lookup force row level security;
      create policy p on enclave.writable_lookup
        using (tenant_id = enclave.current_tenant_id()) with check (tenant_id = enclave.current_tenant_id());
      create policy writable_lookup_lookup on enclave.writable_lookup for update
        using (token_hash = enclave.current_lookup());

      create table enclave.with_definer (id int, tenant_id uuid not null);
      alter table enclave.with_definer enable row level security;
      alter table enclave.with_definer force row level security;
      create policy p on enclave.with_definer
        using (tenant_id = enclave.current_tenant_id()) with check (tenant_id = enclave.current_tenant_id());
      create policy with_definer_definer on enclave.with_definer for select to enclave_owner using (true);

      create table enclave.definer_leaks (id int, tenant_id uuid not null);
      alter table enclave.definer_leaks enable row level security;
      alter table enclave.definer_leaks force row level security;
      create policy p on enclave.definer_leaks
        using (tenant_id = enclave.current_tenant_id()) with check (tenant_id = enclave.current_tenant_id());
      create policy to_public_definer on enclave.definer_leaks for select using (true);
      create policy to_app_definer on enclave.definer_leaks for select to enclave_app using (true);
      create policy to_both_definer on enclave.definer_leaks for select to enclave_owner, enclave_app using (true);
      create policy writes_definer on enclave.definer_leaks for update to enclave_owner using (true);

      create table public.stray (x int);

      alter table enclave.worker_heartbeats add column tenant_id uuid;
    `);
    report = await findUnprotectedTables(planted.superuser);
  });

  test('TEN-6: a tenant table with no RLS at all is reported as missing ENABLE, FORCE and a policy', () => {
    const missing = missingFor('enclave.bare')?.join('\n') ?? '';
    assert.match(missing, /ENABLE ROW LEVEL SECURITY/);
    assert.match(missing, /FORCE ROW LEVEL SECURITY/);
    assert.match(missing, /policy/);
  });

  test('TEN-6: a table with ENABLE and a correct policy but no FORCE is reported for FORCE only', () => {
    const missing = missingFor('enclave.enabled_only') ?? [];
    assert.equal(missing.length, 1, describeTables(report));
    assert.match(missing[0] ?? '', /FORCE ROW LEVEL SECURITY/);
  });

  test('TEN-6: a policy that does not compare with current_tenant_id() in both USING and WITH CHECK does not count', () => {
    for (const table of ['enclave.open_policy', 'enclave.check_open', 'enclave.select_only']) {
      const missing = missingFor(table) ?? [];
      assert.ok(missing.length > 0, `${table}:\n${describeTables(report)}`);
      assert.ok(
        missing.some((line) => /current_tenant_id/.test(line)),
        `${table}:\n${describeTables(report)}`,
      );
      assert.ok(
        missing.every((line) => /policy/.test(line)),
        `${table}:\n${describeTables(report)}`,
      );
    }
  });

  test('TEN-6: a FOR SELECT *_lookup policy on current_lookup() is the only extra policy allowed', () => {
    assert.equal(missingFor('enclave.with_lookup'), undefined, describeTables(report));
    assert.match(missingFor('enclave.widened')?.join('\n') ?? '', /no policy "everyone"/);
    assert.match(
      missingFor('enclave.writable_lookup')?.join('\n') ?? '',
      /no policy "writable_lookup_lookup"/,
    );
  });

  test('TEN-6, AUD-4: a FOR SELECT *_definer policy TO enclave_owner alone is allowed; to any other role, or for writing, it is reported', () => {
    assert.equal(missingFor('enclave.with_definer'), undefined, describeTables(report));
    const missing = missingFor('enclave.definer_leaks')?.join('\n') ?? '';
    for (const name of ['to_public_definer', 'to_app_definer', 'to_both_definer', 'writes_definer']) {
      assert.match(missing, new RegExp(`no policy "${name}"`), describeTables(report));
    }
  });

  test('TEN-6: a table with ENABLE + FORCE and a tenant policy on both sides passes', () => {
    assert.equal(missingFor('enclave.protected'), undefined, describeTables(report));
  });

  test('TEN-6: tables in any schema are checked, and the allowlist excuses a tenant_id column only with a stated reason', () => {
    assert.ok(missingFor('public.stray'), describeTables(report));
    assert.match(missingFor('enclave.worker_heartbeats')?.join('\n') ?? '', /allowlisted/);
    assert.equal(missingFor('enclave.checkpoint_leaves'), undefined, describeTables(report));
    // The untouched allowlisted tables stay excused.
    assert.equal(missingFor('enclave.schema_migrations'), undefined);
    assert.equal(missingFor('graphile_worker._private_jobs'), undefined);
  });

  test('TEN-6: nothing else is reported, so every report above is caused by its planted defect', () => {
    assert.deepEqual(report.map((entry) => entry.table).sort(), [
      'enclave.bare',
      'enclave.check_open',
      'enclave.definer_leaks',
      'enclave.enabled_only',
      'enclave.open_policy',
      'enclave.select_only',
      'enclave.widened',
      'enclave.worker_heartbeats',
      'enclave.writable_lookup',
      'public.stray',
    ]);
  });
});
