import type { TenantSql } from '../db/tenant.ts';

// ACC-8: the second factors a user has enrolled, one row each in
// user_factors; a kind's own data (a TOTP secret, a passkey's public key)
// lives in that kind's table, keyed by the factor's id.

export const FACTOR_KINDS = ['email', 'totp', 'passkey'] as const;
export type FactorKind = (typeof FACTOR_KINDS)[number];

export interface Factor {
  readonly id: string;
  readonly kind: FactorKind;
  readonly name: string;
  readonly created_at: Date;
  readonly last_used_at: Date | null;
}

export async function userFactors(tx: TenantSql, userId: string): Promise<Factor[]> {
  return tx<Factor[]>`
    select id, kind, name, created_at, last_used_at from user_factors
    where user_id = ${userId}::uuid order by created_at, id`;
}
