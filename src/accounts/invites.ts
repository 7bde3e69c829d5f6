import type { Sql, TransactionSql } from 'postgres';
import { appendAuditEvent, appendPlatformAuditEvent, PLATFORM_TENANT } from '../audit/append.ts';
import { type TenantSql, withTenant } from '../db/tenant.ts';
import { hashToken, mintToken } from '../tokens.ts';

// ACC-1: invites are admin-issued, single-use, bound to one email address
// (except the first operator's, which exists only on the console of whoever
// started the server), expire, are revocable, and are stored only as hashes.
// The table is global: an invite is redeemed before its tenant exists.
//
// Audit (AUD-1): creating and revoking an invite record `invite.created` /
// `invite.revoked` in the same transaction as the write: member invites in
// their tenant's chain, signup and operator invites (which have no tenant) in
// the platform's. Redeeming one is recorded by signup (`invite.accepted`).

export type InviteKind = 'operator' | 'tenant' | 'member';
export type InviteState = 'pending' | 'used' | 'revoked' | 'expired';

export interface Invite {
  readonly id: string;
  readonly kind: InviteKind;
  readonly tenant_id: string | null;
  readonly email: string | null;
  readonly created_at: Date;
  readonly expires_at: Date;
  readonly state: InviteState;
}

const INVITE_COLUMNS = `id, kind, tenant_id, email, created_at, expires_at,
  case when used_at is not null then 'used' when revoked_at is not null then 'revoked'
       when expires_at <= now() then 'expired' else 'pending' end as state`;

export { DEFAULT_INVITE_DAYS } from './invite-defaults.ts';
export const OPERATOR_INVITE_HOURS = 24;

export interface NewInvite {
  readonly kind: InviteKind;
  readonly email: string | null;
  readonly tenantId: string | null;
  readonly createdBy: string | null;
  readonly expiresAt: Date;
}

/** The chain an invite's events go to: its tenant's, or the platform's for signup and operator invites. */
export function inviteChain(invite: { tenant_id: string | null }): string {
  return invite.tenant_id ?? PLATFORM_TENANT;
}

/** Inserts the row only, in the caller's transaction; see createInvite for the audited action. */
export async function insertInvite(
  sql: Sql | TransactionSql,
  invite: NewInvite,
): Promise<{ invite: Invite; token: string }> {
  const minted = mintToken('inv');
  const [row] = await sql<Invite[]>`
    insert into invites (kind, tenant_id, email, token_hash, created_by, expires_at)
    values (${invite.kind}, ${invite.tenantId}::uuid, ${invite.email}, ${minted.hash.toString('hex')},
            ${invite.createdBy}::uuid, ${invite.expiresAt})
    returning ${sql.unsafe(INVITE_COLUMNS)}`;
  if (row === undefined) throw new Error('insert into invites returned no row');
  return { invite: row, token: minted.token };
}

/** The invite a presented token names, whatever its state (the token is attacker-controlled; its hash is compared). */
export async function findInvite(sql: Sql | TransactionSql, token: string): Promise<Invite | undefined> {
  const [row] = await sql<Invite[]>`
    select ${sql.unsafe(INVITE_COLUMNS)} from invites where token_hash = ${hashToken(token).toString('hex')}`;
  return row;
}

/** Marks a pending invite used; false if another request used, revoked or outlived it first. */
export async function redeemInvite(tx: TransactionSql, inviteId: string, userId: string): Promise<boolean> {
  const rows = await tx`
    update invites set used_at = now(), used_by = ${userId}::uuid
    where id = ${inviteId}::uuid and used_at is null and revoked_at is null and expires_at > now()`;
  return rows.count === 1;
}

export interface InviteScope {
  /** Operators see and revoke signup invites; tenant owners their tenant's member invites. */
  readonly operator: boolean;
  readonly tenantId: string;
}

export async function listInvites(sql: Sql, scope: InviteScope): Promise<Invite[]> {
  return sql<Invite[]>`
    select ${sql.unsafe(INVITE_COLUMNS)} from invites
    where (kind = 'member' and tenant_id = ${scope.tenantId}::uuid)
       or (${scope.operator} and kind in ('tenant', 'operator'))
    order by created_at desc
    limit 200`;
}

async function recordInviteCreated(tx: TenantSql, invite: Invite, actor: string): Promise<void> {
  await appendAuditEvent(tx, inviteChain(invite), {
    actor,
    action: 'invite.created',
    target: `invite:${invite.id}`,
    data: { invite_id: invite.id, kind: invite.kind, expires_at: invite.expires_at.toISOString() },
  });
}

/** Mints an invite and records `invite.created` by `actor` in the same transaction. */
export async function createInvite(
  sql: Sql,
  invite: NewInvite,
  actor: string,
): Promise<{ invite: Invite; token: string }> {
  return withTenant(sql, inviteChain({ tenant_id: invite.tenantId }), async (tx) => {
    const created = await insertInvite(tx, invite);
    await recordInviteCreated(tx, created.invite, actor);
    return created;
  });
}

/** Revokes a pending invite within the scope and records `invite.revoked` by `actor`; false if there was none. */
export async function revokeInvite(
  sql: Sql,
  scope: InviteScope,
  inviteId: string,
  actor: string,
): Promise<boolean> {
  // Bound to the scope's tenant: a member invite's event goes to that chain, a signup invite's to the platform's.
  return withTenant(sql, scope.tenantId, async (tx) => {
    const [revoked] = await tx<{ id: string; kind: InviteKind }[]>`
      update invites set revoked_at = now()
      where id = ${inviteId}::uuid and used_at is null and revoked_at is null
        and ((kind = 'member' and tenant_id = ${scope.tenantId}::uuid)
             or (${scope.operator} and kind in ('tenant', 'operator')))
      returning id, kind`;
    if (revoked === undefined) return false;
    const event = {
      actor,
      action: 'invite.revoked',
      target: `invite:${revoked.id}`,
      data: { invite_id: revoked.id, kind: revoked.kind },
    };
    if (revoked.kind === 'member') await appendAuditEvent(tx, scope.tenantId, event);
    else await appendPlatformAuditEvent(tx, event);
    return true;
  });
}

/**
 * On an installation nobody has signed up to yet, mints the first operator's
 * invite (revoking any earlier one, whose token only an earlier console saw).
 * Returns undefined once an operator exists.
 */
export async function bootstrapOperatorInvite(
  sql: Sql,
  email: string | undefined,
): Promise<{ invite: Invite; token: string } | undefined> {
  return withTenant(sql, PLATFORM_TENANT, async (tx) => {
    await tx`select pg_advisory_xact_lock(hashtext('enclave.operator-invite'))`;
    const [claimed] = await tx`select 1 from invites where kind = 'operator' and used_at is not null limit 1`;
    if (claimed !== undefined) return undefined;
    const superseded = await tx<{ id: string }[]>`
      update invites set revoked_at = now()
      where kind = 'operator' and used_at is null and revoked_at is null
      returning id`;
    const created = await insertInvite(tx, {
      kind: 'operator',
      email: email ?? null,
      tenantId: null,
      createdBy: null,
      expiresAt: new Date(Date.now() + OPERATOR_INVITE_HOURS * 3600_000),
    });
    for (const { id } of superseded) {
      await appendAuditEvent(tx, PLATFORM_TENANT, {
        actor: 'system',
        action: 'invite.revoked',
        target: `invite:${id}`,
        data: { invite_id: id, kind: 'operator' },
      });
    }
    await recordInviteCreated(tx, created.invite, 'system');
    return created;
  });
}

export function inviteLink(publicUrl: string, token: string): string {
  return `${publicUrl}/signup?invite=${encodeURIComponent(token)}`;
}
