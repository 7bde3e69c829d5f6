import type { TenantSql } from '../db/tenant.ts';

// The ways a user can sign in with no other help: a password, a passkey (it
// signs in alone, as a discoverable credential) or a linked provider identity.
// Unlinking an identity and removing a passkey (ACC-8, ACC-9) each keep at
// least one. The user's row is locked, so two removals at once cannot each
// see the other's way as the one that remains.

export interface SignInWays {
  readonly password: boolean;
  readonly passkeys: number;
  readonly identities: number;
}

export async function lockSignInWays(tx: TenantSql, userId: string): Promise<SignInWays> {
  const [row] = await tx<{ password: boolean; passkeys: number; identities: number }[]>`
    select
      u.password_hash is not null as password,
      (select count(*)::int4 from user_factors where user_id = u.id and kind = 'passkey') as passkeys,
      (select count(*)::int4 from user_identities where user_id = u.id) as identities
    from users u where u.id = ${userId}::uuid
    for update of u`;
  return row ?? { password: false, passkeys: 0, identities: 0 };
}

/** The message both refusals give: what to add first. */
export const LAST_WAY_MESSAGE =
  'This is the only way you can sign in: set a password, add a passkey or link another identity first.';
