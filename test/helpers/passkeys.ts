import { randomBytes } from 'node:crypto';
import type { User } from '../../src/accounts/users.ts';
import type { TestDatabase } from './database.ts';

/**
 * A passkey row for the user as registration would leave it, with a random
 * credential id and key bytes that verify nothing: for routes that only list,
 * rename or remove. Returns its factor id.
 */
export async function storedPasskey(db: TestDatabase, user: Pick<User, 'id' | 'tenant_id'>): Promise<string> {
  const [factor] = await db.superuser<{ id: string }[]>`
    with factor as (
      insert into user_factors (tenant_id, user_id, kind, name)
      values (${user.tenant_id}::uuid, ${user.id}::uuid, 'passkey', 'Stored') returning id)
    insert into passkey_credentials
      (factor_id, tenant_id, credential_id, public_key, sign_count, backup_eligible, backed_up)
    select id, ${user.tenant_id}::uuid, ${randomBytes(16).toString('base64url')}, ${randomBytes(77)}, 3,
           true, true from factor
    returning factor_id as id`;
  if (factor === undefined) throw new Error('no passkey stored');
  return factor.id;
}
