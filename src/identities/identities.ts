import type { Sql } from 'postgres';
import { withLookup } from '../db/lookup.ts';
import type { TenantSql } from '../db/tenant.ts';

// ACC-9: identities at providers linked to users (user_identities, 0029):
// the provider's name, its issuer and its id of the person, never a token.
// Found at sign-in before any tenant is known through the lookup policy, by
// "<issuer> <subject>"; everything else runs in the user's tenant.

export interface LinkedIdentity {
  readonly id: string;
  readonly tenant_id: string;
  readonly user_id: string;
}

export interface IdentityListing {
  readonly id: string;
  readonly provider: string;
  readonly created_at: Date;
  readonly last_used_at: Date | null;
}

export interface NewIdentity {
  readonly tenantId: string;
  readonly userId: string;
  readonly provider: string;
  readonly issuer: string;
  readonly subject: string;
}

/** The link of this issuer's subject, whoever's it is. Both values come from a verified ID token or GitHub's API. */
export async function findLinkedIdentity(
  sql: Sql,
  issuer: string,
  subject: string,
): Promise<LinkedIdentity | undefined> {
  return withLookup(sql, `${issuer} ${subject}`, async (tx) => {
    const [row] = await tx<LinkedIdentity[]>`
      select id, tenant_id, user_id from user_identities where lookup_key = enclave.current_lookup()`;
    return row;
  });
}

/** Links an identity in `tx` (bound to the user's tenant); undefined if the identity or this user's provider slot is taken. */
export async function insertIdentity(tx: TenantSql, identity: NewIdentity): Promise<string | undefined> {
  const [row] = await tx<{ id: string }[]>`
    insert into user_identities (tenant_id, user_id, provider, issuer, subject)
    values (${identity.tenantId}::uuid, ${identity.userId}::uuid, ${identity.provider}, ${identity.issuer},
            ${identity.subject})
    on conflict do nothing
    returning id`;
  return row?.id;
}

export async function touchIdentity(tx: TenantSql, identityId: string): Promise<void> {
  await tx`update user_identities set last_used_at = now() where id = ${identityId}::uuid`;
}

export async function listIdentities(tx: TenantSql, userId: string): Promise<IdentityListing[]> {
  return tx<IdentityListing[]>`
    select id, provider, created_at, last_used_at from user_identities
    where user_id = ${userId}::uuid order by created_at, id`;
}

/** Removes the user's identity with this id; its provider, or undefined if the user has none such. */
export async function deleteIdentity(
  tx: TenantSql,
  userId: string,
  identityId: string,
): Promise<string | undefined> {
  const [row] = await tx<{ provider: string }[]>`
    delete from user_identities where id = ${identityId}::uuid and user_id = ${userId}::uuid
    returning provider`;
  return row?.provider;
}
