import type { Sql } from 'postgres';
import { type TenantSql, withTenant } from '../db/tenant.ts';
import { fieldError } from './errors.ts';
import type { PasswordHasher } from './password-pool.ts';
import type { Principal } from './service.ts';
import { getUserWithHash } from './users.ts';

// ACC-11: an action that needs the current password checks it before its
// transaction opens, so a check waiting its turn in the password pool never
// holds a database connection (a storm of them would starve every request).
// The transaction then requires the stored hash to be the one just checked:
// a password changed in between fails as a wrong password would.

const WRONG = 'The current password is not correct.';

/** The stored hash the password was checked against; a field error if it is not the user's password. */
export async function checkCurrentPassword(
  sql: Sql,
  passwords: PasswordHasher,
  principal: Principal,
  password: string,
): Promise<string> {
  const user = await withTenant(sql, principal.user.tenant_id, (tx) =>
    getUserWithHash(tx, principal.user.id),
  );
  if (user?.password_hash == null || !(await passwords.verify(password, user.password_hash)).ok) {
    throw fieldError('current_password', WRONG);
  }
  return user.password_hash;
}

/** Inside the action's transaction: locks the user's row and refuses if its hash is no longer `checked`. */
export async function requirePasswordUnchanged(
  tx: TenantSql,
  userId: string,
  checked: string,
): Promise<void> {
  const [row] = await tx<{ password_hash: string }[]>`
    select password_hash from users where id = ${userId}::uuid for update`;
  if (row?.password_hash !== checked) throw fieldError('current_password', WRONG);
}
