import type { Sql } from 'postgres';
import { AppError } from '../errors.ts';
import { APP_ROLE, APP_SCHEMA, OWNER_ROLE } from './target.ts';

// Role and grant set-up, run over the admin connection at every start. It is
// idempotent and serialised by an advisory lock, so several processes may
// start at once.

export type RolesErrorCode = 'db_role_unsafe';

export interface RolePasswords {
  readonly owner: string;
  readonly app: string;
}

const BOOTSTRAP_LOCK = 'enclave.bootstrap';
const CONCURRENT_CATALOG_ATTEMPTS = 5;

/**
 * Runs `work` again when PostgreSQL reports "tuple concurrently updated". Roles
 * are cluster-wide, but an advisory lock holds only within one database: two
 * processes setting up two databases of one cluster at once (tests, or two
 * installations on one server) can still collide on pg_authid. The one that
 * fails retries after the other has committed.
 */
async function retryingCatalogRace<T>(work: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await work();
    } catch (error) {
      const raced = error instanceof Error && /tuple concurrently (updated|deleted)/.test(error.message);
      if (!raced || attempt >= CONCURRENT_CATALOG_ATTEMPTS) throw error;
    }
  }
}

export async function ensureRoles(admin: Sql, passwords: RolePasswords): Promise<void> {
  await retryingCatalogRace(() => setUpRoles(admin, passwords));
  await assertRolesSafe(admin);
}

async function setUpRoles(admin: Sql, passwords: RolePasswords): Promise<void> {
  await admin.begin(async (tx) => {
    await tx`select pg_advisory_xact_lock(hashtext(${BOOTSTRAP_LOCK}))`;
    for (const [role, password] of [
      [OWNER_ROLE, passwords.owner],
      [APP_ROLE, passwords.app],
    ] as const) {
      const [existing] = await tx`select 1 from pg_roles where rolname = ${role}`;
      // format() quotes server-side, so a password with quotes cannot break out.
      const [statement] = await tx<{ text: string }[]>`
        select format(
          ${existing === undefined ? 'create role %I login nosuperuser nocreatedb nocreaterole noinherit nobypassrls noreplication password %L' : 'alter role %I login password %L'},
          ${role}::text, ${password}::text
        ) as text`;
      if (statement === undefined) throw new Error('format() returned no row');
      await tx.unsafe(statement.text);
    }
    // The app role must never inherit or assume the owner's rights.
    const [member] = await tx`
      select 1 from pg_auth_members m
      join pg_roles r on r.oid = m.roleid and r.rolname = ${OWNER_ROLE}
      join pg_roles a on a.oid = m.member and a.rolname = ${APP_ROLE}`;
    if (member !== undefined) await tx.unsafe(`revoke ${OWNER_ROLE} from ${APP_ROLE}`);
  });
}

/** TEN-2: refuse to run if either role could bypass row-level security. */
export async function assertRolesSafe(
  sql: Sql,
  roles: readonly string[] = [OWNER_ROLE, APP_ROLE],
): Promise<void> {
  const rows = await sql<{ rolname: string; rolsuper: boolean; rolbypassrls: boolean }[]>`
    select rolname, rolsuper, rolbypassrls from pg_roles where rolname in ${sql(roles)}`;
  for (const row of rows) {
    if (row.rolsuper || row.rolbypassrls) {
      throw new AppError(
        'db_role_unsafe',
        `role ${row.rolname} has ${row.rolsuper ? 'SUPERUSER' : 'BYPASSRLS'}; run: alter role ${row.rolname} nosuperuser nobypassrls`,
      );
    }
  }
  const missing = roles.filter((role) => !rows.some((row) => row.rolname === role));
  if (missing.length > 0) throw new AppError('db_role_unsafe', `role ${missing.join(', ')} is missing`);
}

/** Database-level grants and the schema Enclave's tables live in. */
export async function prepareDatabase(admin: Sql, database: string): Promise<void> {
  await retryingCatalogRace(() => grantDatabase(admin, database));
}

async function grantDatabase(admin: Sql, database: string): Promise<void> {
  await admin.begin(async (tx) => {
    await tx`select pg_advisory_xact_lock(hashtext(${BOOTSTRAP_LOCK}))`;
    const [statement] = await tx<{ text: string }[]>`
      select format('grant connect, create on database %I to %I; grant connect on database %I to %I',
        ${database}::text, ${OWNER_ROLE}::text, ${database}::text, ${APP_ROLE}::text) as text`;
    if (statement === undefined) throw new Error('format() returned no row');
    await tx.unsafe(statement.text);
    await tx.unsafe(`create schema if not exists ${APP_SCHEMA} authorization ${OWNER_ROLE}`);
    // PostgreSQL 15 already withholds CREATE on public; older clusters upgraded in place may not.
    await tx.unsafe('revoke create on schema public from public');
  });
}
