import type { Sql } from 'postgres';
import { withLookup } from '../db/lookup.ts';
import type { TenantSql } from '../db/tenant.ts';
import type { Role } from './roles.ts';

export type { Role };

export interface User {
  readonly id: string;
  readonly tenant_id: string;
  readonly username: string;
  readonly email: string;
  readonly email_verified: boolean;
  readonly pending_email: string | null;
  readonly role: Role;
  readonly is_operator: boolean;
  readonly created_at: Date;
}

export interface UserWithHash extends User {
  /** Null for an account made through a provider or a passkey: no password signs in to it. */
  readonly password_hash: string | null;
}

const USER_COLUMNS =
  'id, tenant_id, username, email, email_verified, pending_email, role, is_operator, created_at';

/**
 * Finds the account a login name (username or email, lower-cased) belongs
 * to, before any tenant is known. An unverified email does not sign in
 * (ACC-6): it is answered like an unknown login.
 */
export async function findUserByLogin(sql: Sql, login: string): Promise<UserWithHash | undefined> {
  const key = login.trim().toLowerCase();
  if (key === '') return undefined;
  return withLookup(sql, key, async (tx) => {
    const [user] = await tx<UserWithHash[]>`
      select ${tx.unsafe(USER_COLUMNS)}, password_hash from users
      where username = ${key} or (email = ${key} and email_verified)`;
    return user;
  });
}

/**
 * ACC-9: the account whose verified address this is, before any tenant is
 * known (users.email is unique across tenants). An unverified address finds
 * nothing: whoever typed it in has not proven it.
 */
export async function findUserByVerifiedEmail(sql: Sql, email: string): Promise<User | undefined> {
  return withLookup(sql, email, async (tx) => {
    const [user] = await tx<User[]>`
      select ${tx.unsafe(USER_COLUMNS)} from users where email = ${email} and email_verified`;
    return user;
  });
}

export async function getUser(tx: TenantSql, userId: string): Promise<User | undefined> {
  const [user] = await tx<User[]>`select ${tx.unsafe(USER_COLUMNS)} from users where id = ${userId}::uuid`;
  return user;
}

/**
 * The user a session or API token acts for, and whether the tenant's policy
 * wants a second factor this user has not set up (ACC-8): one statement, as
 * every authenticated request runs it.
 */
export async function getActingUser(
  tx: TenantSql,
  userId: string,
): Promise<{ user: User; secondFactorMissing: boolean } | undefined> {
  const [row] = await tx<(User & { second_factor_missing: boolean })[]>`
    select ${tx.unsafe(USER_COLUMNS)},
           coalesce((select t.require_second_factor from tenants t where t.id = users.tenant_id), false)
             and not exists (select 1 from user_factors f
                             where f.tenant_id = users.tenant_id and f.user_id = users.id)
             as second_factor_missing
    from users where id = ${userId}::uuid`;
  if (row === undefined) return undefined;
  const { second_factor_missing, ...user } = row;
  return { user, secondFactorMissing: second_factor_missing };
}

export async function getUserWithHash(tx: TenantSql, userId: string): Promise<UserWithHash | undefined> {
  const [user] = await tx<UserWithHash[]>`
    select ${tx.unsafe(USER_COLUMNS)}, password_hash from users where id = ${userId}::uuid`;
  return user;
}

export async function insertUser(
  tx: TenantSql,
  user: {
    /** Chosen by signup, which claims its invite for this id before the row exists. */
    id: string;
    tenantId: string;
    username: string;
    email: string;
    passwordHash: string | null;
    role: Role;
    isOperator: boolean;
    /** True only when the address was proven: the invite used was mailed to it (ACC-1). */
    emailVerified: boolean;
  },
): Promise<User> {
  const [row] = await tx<User[]>`
    insert into users (id, tenant_id, username, email, email_verified, password_hash, role, is_operator)
    values (${user.id}::uuid, ${user.tenantId}::uuid, ${user.username}, ${user.email}, ${user.emailVerified},
            ${user.passwordHash}, ${user.role}, ${user.isOperator})
    returning ${tx.unsafe(USER_COLUMNS)}`;
  if (row === undefined) throw new Error('insert into users returned no row');
  return row;
}

export async function updatePasswordHash(tx: TenantSql, userId: string, passwordHash: string): Promise<void> {
  await tx`
    update users set password_hash = ${passwordHash}, password_changed_at = now() where id = ${userId}::uuid`;
}
