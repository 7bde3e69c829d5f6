import type { Sql } from 'postgres';
import { bindTenant, withLookup } from '../db/lookup.ts';
import type { TenantSql } from '../db/tenant.ts';
import {
  afterPosition,
  boundTenant,
  type PageRequest,
  type PositionedRow,
  positionColumns,
} from '../http/page-cursor.ts';
import { hashToken, mintToken } from '../tokens.ts';
import { getActingUser, type User } from './users.ts';

// ACC-10: API tokens are enc_live_… secrets shown once; the table keeps their
// SHA-256, last four characters, scope and expiry.

export type TokenScope = 'read' | 'write';

export interface ApiTokenListing {
  readonly id: string;
  readonly name: string;
  readonly prefix: string;
  readonly last4: string;
  readonly scope: TokenScope;
  readonly created_at: Date;
  readonly last_used_at: Date | null;
  readonly expires_at: Date | null;
}

const LISTING = "id, name, 'enc_live_' as prefix, last4, scope, created_at, last_used_at, expires_at";
/** last_used_at is written at most this often per token. */
const TOUCH_SECONDS = 60;

export async function insertApiToken(
  tx: TenantSql,
  token: { tenantId: string; userId: string; name: string; scope: TokenScope; expiresAt: Date | null },
): Promise<{ listing: ApiTokenListing; token: string }> {
  const minted = mintToken('live');
  const [listing] = await tx<ApiTokenListing[]>`
    insert into api_tokens (tenant_id, user_id, name, token_hash, last4, scope, expires_at)
    values (${token.tenantId}::uuid, ${token.userId}::uuid, ${token.name}, ${minted.hash.toString('hex')},
            ${minted.last4}, ${token.scope}, ${token.expiresAt})
    returning ${tx.unsafe(LISTING)}`;
  if (listing === undefined) throw new Error('insert into api_tokens returned no row');
  return { listing, token: minted.token };
}

/** A page of the user's live tokens, newest first, keyed by (created_at, id) (api_tokens_user_page index). */
export async function listApiTokens(
  tx: TenantSql,
  userId: string,
  page: PageRequest,
): Promise<(ApiTokenListing & PositionedRow)[]> {
  return tx<(ApiTokenListing & PositionedRow)[]>`
    select ${tx.unsafe(LISTING)}, ${positionColumns(tx, 'created_at')} from api_tokens
    where ${boundTenant(tx)} and user_id = ${userId}::uuid and revoked_at is null and (expires_at is null or expires_at > now())
      ${afterPosition(tx, 'created_at', 'desc', page.after)}
    order by created_at desc, id desc limit ${page.limit + 1}::int4`;
}

/** The user's live token with this id; undefined for another user's, a revoked or expired one, or none. */
export async function findApiToken(
  tx: TenantSql,
  userId: string,
  tokenId: string,
): Promise<ApiTokenListing | undefined> {
  const [token] = await tx<ApiTokenListing[]>`
    select ${tx.unsafe(LISTING)} from api_tokens
    where id = ${tokenId}::uuid and user_id = ${userId}::uuid and revoked_at is null
      and (expires_at is null or expires_at > now())`;
  return token;
}

export async function revokeApiToken(tx: TenantSql, userId: string, tokenId: string): Promise<boolean> {
  const rows = await tx`
    update api_tokens set revoked_at = now()
    where id = ${tokenId}::uuid and user_id = ${userId}::uuid and revoked_at is null`;
  return rows.count === 1;
}

export interface TokenPrincipal {
  readonly tokenId: string;
  readonly scope: TokenScope;
  readonly user: User;
  readonly secondFactorMissing: boolean;
}

/** The live token and its user for a presented enc_live_ secret (attacker-controlled; only its hash is compared). */
export async function resolveApiToken(sql: Sql, token: string): Promise<TokenPrincipal | undefined> {
  return withLookup(sql, hashToken(token).toString('hex'), async (tx) => {
    const [row] = await tx<
      { id: string; tenant_id: string; user_id: string; scope: TokenScope; stale: boolean }[]
    >`
      select id, tenant_id, user_id, scope,
             coalesce(last_used_at < now() - make_interval(secs => ${TOUCH_SECONDS}), true) as stale
      from api_tokens
      where token_hash = enclave.current_lookup() and revoked_at is null
        and (expires_at is null or expires_at > now())`;
    if (row === undefined) return undefined;
    const [, acting] = await Promise.all([bindTenant(tx, row.tenant_id), getActingUser(tx, row.user_id)]);
    if (acting === undefined) return undefined;
    if (row.stale) await tx`update api_tokens set last_used_at = now() where id = ${row.id}::uuid`;
    return { tokenId: row.id, scope: row.scope, ...acting };
  });
}
