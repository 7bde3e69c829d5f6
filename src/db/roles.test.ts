// Attack: code running as the app role escapes row-level security by being (or becoming) a superuser, a BYPASSRLS role or the tables' owner, or by rewriting the policies and the function they call.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import type { Sql } from 'postgres';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/database.ts';
import { assertRolesSafe, ensureRoles } from './roles.ts';
import { APP_ROLE, OWNER_ROLE } from './target.ts';

// The roles are cluster-global and shared by every test file running at the
// same time: these tests read them and re-apply the same passwords, and never
// change their attributes.

let db: TestDatabase;

before(async () => {
  db = await createTestDatabase();
});
after(() => db.drop());

const INSUFFICIENT_PRIVILEGE = '42501';

// Each attack runs in a transaction that is rolled back, so even if one
// succeeded (a failing test) it could not leak into the pooled connection.
const ATTACKS: readonly string[] = [
  `set role ${OWNER_ROLE}`,
  `grant ${OWNER_ROLE} to ${APP_ROLE}`,
  `alter role ${APP_ROLE} bypassrls`,
  'alter table tenants disable row level security',
  'alter table tenants no force row level security',
  'drop policy tenant_isolation on tenants',
  'create table enclave.evil (x int)',
  'create table public.evil (x int)',
  `create or replace function enclave.current_tenant_id() returns uuid language sql
     as $$ select '00000000-0000-0000-0000-000000000000'::uuid $$`,
];

async function attemptAsApp(sql: Sql, statement: string): Promise<unknown> {
  return sql.begin(async (tx) => {
    await tx.unsafe(statement);
    throw new Error(`the app role was allowed to run: ${statement}`);
  });
}

describe('database roles', () => {
  test('TEN-2: enclave_app and enclave_owner are neither superuser nor BYPASSRLS', async () => {
    const rows = await db.superuser<{ rolname: string; rolsuper: boolean; rolbypassrls: boolean }[]>`
      select rolname, rolsuper, rolbypassrls from pg_roles
      where rolname in (${APP_ROLE}, ${OWNER_ROLE}) order by rolname`;
    assert.deepEqual(
      rows.map((row) => ({ ...row })),
      [
        { rolname: APP_ROLE, rolsuper: false, rolbypassrls: false },
        { rolname: OWNER_ROLE, rolsuper: false, rolbypassrls: false },
      ],
    );
  });

  test('TEN-2: enclave_app is not a member of enclave_owner, directly or through another role', async () => {
    const [row] = await db.superuser<{ member: boolean; direct: boolean }[]>`
      select pg_has_role(${APP_ROLE}, ${OWNER_ROLE}, 'member') as member,
             exists (select 1 from pg_auth_members m
                     where m.roleid = ${OWNER_ROLE}::regrole and m.member = ${APP_ROLE}::regrole) as direct`;
    assert.deepEqual({ ...row }, { member: false, direct: false });
  });

  test('TEN-2: the requests connection runs as enclave_app, and every Enclave table belongs to enclave_owner', async () => {
    const [who] = await db.app<{ user: string }[]>`select current_user as user`;
    assert.equal(who?.user, APP_ROLE);
    const tables = await db.superuser<{ table: string; owner: string }[]>`
      select schemaname || '.' || tablename as table, tableowner as owner from pg_tables
      where schemaname in ('enclave', 'graphile_worker') order by 1`;
    assert.ok(
      tables.some((row) => row.table === 'enclave.tenants'),
      'the catalog query found no Enclave table',
    );
    assert.deepEqual(
      tables.filter((row) => row.owner !== OWNER_ROLE).map((row) => `${row.table} (${row.owner})`),
      [],
    );
  });

  for (const statement of ATTACKS) {
    test(`TEN-2: as enclave_app, \`${statement.split('\n')[0]}\` is refused`, async () => {
      await assert.rejects(attemptAsApp(db.app, statement), (error: Error & { code?: string }) => {
        assert.equal(error.code, INSUFFICIENT_PRIVILEGE, error.message);
        return true;
      });
    });
  }

  test('TEN-2: after the attacks, tenants still has ENABLE + FORCE RLS and its policy', async () => {
    const [row] = await db.superuser<{ enabled: boolean; forced: boolean; policies: number }[]>`
      select c.relrowsecurity as enabled, c.relforcerowsecurity as forced,
             (select count(*)::int from pg_policy p
               where p.polrelid = c.oid and p.polname = 'tenant_isolation') as policies
      from pg_class c where c.oid = 'enclave.tenants'::regclass`;
    assert.deepEqual({ ...row }, { enabled: true, forced: true, policies: 1 });
    const [fn] = await db.superuser<{ source: string }[]>`
      select prosrc as source from pg_proc where oid = 'enclave.current_tenant_id()'::regprocedure`;
    assert.match(fn?.source ?? '', /current_setting\('app\.tenant_id', true\)/);
    const [evil] = await db.superuser<{ enclave: string | null; public: string | null }[]>`
      select to_regclass('enclave.evil')::text as enclave, to_regclass('public.evil')::text as public`;
    assert.deepEqual({ ...evil }, { enclave: null, public: null });
  });

  test('TEN-2: assertRolesSafe passes on the roles as created', async () => {
    await assertRolesSafe(db.superuser);
    // pg_roles is readable by every role: the app can check itself at start.
    await assertRolesSafe(db.app);
  });

  test('TEN-2: assertRolesSafe refuses a role with BYPASSRLS or SUPERUSER, or a missing role', async () => {
    // Throwaway roles: the shared enclave_* roles are used by every test file running now.
    const probe = `ten2_probe_${randomBytes(4).toString('hex')}`;
    await db.superuser.unsafe(`create role ${probe}_safe nologin`);
    await db.superuser.unsafe(`create role ${probe}_bypass nologin bypassrls`);
    await db.superuser.unsafe(`create role ${probe}_super nologin superuser`);
    try {
      await assertRolesSafe(db.superuser, [`${probe}_safe`]);
      for (const [role, reason] of [
        [`${probe}_bypass`, /BYPASSRLS/],
        [`${probe}_super`, /SUPERUSER/],
        [`${probe}_absent`, /missing/],
      ] as const) {
        await assert.rejects(
          assertRolesSafe(db.superuser, [`${probe}_safe`, role]),
          (error: Error & { code?: string }) => {
            assert.equal(error.code, 'db_role_unsafe');
            assert.match(error.message, reason);
            return true;
          },
        );
      }
    } finally {
      await db.superuser.unsafe(`drop role ${probe}_safe, ${probe}_bypass, ${probe}_super`);
    }
  });

  test('TEN-2: ensureRoles is idempotent and leaves the roles safe and usable', async () => {
    const passwords = { owner: db.ownerCredentials.password, app: db.appCredentials.password };
    await ensureRoles(db.superuser, passwords);
    await ensureRoles(db.superuser, passwords);
    await assertRolesSafe(db.superuser);
    const [row] = await db.superuser<{ roles: number; member: boolean }[]>`
      select (select count(*)::int from pg_roles where rolname in (${APP_ROLE}, ${OWNER_ROLE})) as roles,
             pg_has_role(${APP_ROLE}, ${OWNER_ROLE}, 'member') as member`;
    assert.deepEqual({ ...row }, { roles: 2, member: false });
    // Fresh connections with the same passwords still log in as each role.
    for (const credentials of [db.appCredentials, db.ownerCredentials]) {
      const [who] = await db.connectAs(credentials, 1)<{ user: string }[]>`select current_user as user`;
      assert.equal(who?.user, credentials.user);
    }
  });

  test('set-up from two databases of one cluster at once (roles are cluster-wide) always succeeds', async () => {
    // An advisory lock holds within one database only: this is the race the retry covers.
    const other = await createTestDatabase();
    try {
      const passwords = { owner: db.ownerCredentials.password, app: db.appCredentials.password };
      const admins = [
        db.superuser,
        other.superuser,
        db.connectAs(db.target.admin, 2),
        other.connectAs(other.target.admin, 2),
      ];
      for (let round = 0; round < 15; round++) {
        await Promise.all(admins.map((admin) => ensureRoles(admin, passwords)));
      }
    } finally {
      await other.drop();
    }
  });
});
