import type { Sql } from 'postgres';
import { appendAuditEvent, PLATFORM_TENANT } from '../audit/append.ts';
import { withLookup } from '../db/lookup.ts';
import { isUuid, serviceQuery, type TenantSql, withTenant } from '../db/tenant.ts';
import {
  afterPosition,
  boundTenant,
  type PageRequest,
  type PositionedRow,
  positionColumns,
} from '../http/page-cursor.ts';
import { enqueueJob } from '../jobs/queue.ts';
import { hashToken, mintToken } from '../tokens.ts';

// ACC-1: invites are admin-issued, single-use, bound to one email address
// (except the first operator's, which exists only on the console of whoever
// started the server), expire, are revocable, and are stored only as hashes.
//
// TEN-1, TEN-6: the table is under row-level security (0009). A member invite
// belongs to its tenant; signup and operator invites, which create their
// tenant, to the platform. Someone holding a link sees its row through the
// invites_lookup policy, and uses it only through enclave.invite_redeem.
//
// ACC-1, email proof: a member invite is mailed by the send_invite_email job,
// which mints its token, so the token exists only in that mail and redeeming
// it proves the address. Signup invites are shown to the operator who made
// them: they prove nothing, and the address stays unverified until a link
// mailed to it is used.
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

async function insertRow(tx: TenantSql, invite: NewInvite, tokenHash: string | null): Promise<Invite> {
  const [row] = await tx<Invite[]>`
    insert into invites (kind, tenant_id, email, token_hash, created_by, expires_at)
    values (${invite.kind}, ${invite.tenantId}::uuid, ${invite.email}, ${tokenHash},
            ${invite.createdBy}::uuid, ${invite.expiresAt})
    returning ${tx.unsafe(INVITE_COLUMNS)}`;
  if (row === undefined) throw new Error('insert into invites returned no row');
  return row;
}

/**
 * Inserts an invite whose link its maker is shown, in the caller's
 * transaction, which is bound to the invite's chain (inviteChain); see
 * createInvite for the audited action.
 */
export async function insertInvite(
  tx: TenantSql,
  invite: NewInvite,
): Promise<{ invite: Invite; token: string }> {
  const minted = mintToken('inv');
  return { invite: await insertRow(tx, invite, minted.hash.toString('hex')), token: minted.token };
}

/** What an invite is found and redeemed by: the SHA-256 (hex) of its token, as the table keeps it. */
export function inviteTokenHash(token: string): string {
  return hashToken(token).toString('hex');
}

/** The invite a presented token names, whatever its state (the token is attacker-controlled; its hash is compared). */
export async function findInvite(sql: Sql, token: string): Promise<Invite | undefined> {
  return findInviteByHash(sql, inviteTokenHash(token));
}

/** The invite whose token hashes to `tokenHash` (inviteTokenHash), whatever its state. */
export async function findInviteByHash(sql: Sql, tokenHash: string): Promise<Invite | undefined> {
  return withLookup(sql, tokenHash, async (tx) => {
    const [row] = await tx<Invite[]>`
      select ${tx.unsafe(INVITE_COLUMNS)} from invites where token_hash = enclave.current_lookup()`;
    return row;
  });
}

/**
 * ACC-1, ACC-9: the token hashes of the pending invites that were mailed to
 * this address (a provider has verified it), newest first.
 */
export async function findMailedInviteHashes(sql: Sql, email: string): Promise<string[]> {
  return withLookup(sql, email, async (tx) => {
    const rows = await tx<{ token_hash: string }[]>`
      select token_hash from invites
      where email = enclave.current_lookup() and mailed_at is not null and token_hash is not null
        and used_at is null and revoked_at is null and expires_at > now()
      order by created_at desc`;
    return rows.map((row) => row.token_hash);
  });
}

/** What signup learns from using an invite: enclave.invite_redeem's row. */
export interface RedeemedInvite {
  readonly id: string;
  readonly kind: InviteKind;
  readonly tenant_id: string | null;
  readonly email: string | null;
  /** The invite was mailed to its address by the platform: using it proves the address. */
  readonly mailed: boolean;
}

/**
 * Marks the pending invite whose token hashes to `tokenHash` (inviteTokenHash)
 * used by `userId` (inserted later in the same transaction); undefined if
 * another request used, revoked or outlived it first.
 */
export async function redeemInvite(
  tx: TenantSql,
  tokenHash: string,
  userId: string,
): Promise<RedeemedInvite | undefined> {
  const [row] = await tx<RedeemedInvite[]>`
    select invite_id as id, invite_kind as kind, invite_tenant_id as tenant_id, invite_email as email, mailed
    from enclave.invite_redeem(${tokenHash}, ${userId}::uuid)`;
  return row;
}

export interface InviteScope {
  /** Operators see and revoke signup invites; tenant owners their tenant's member invites. */
  readonly operator: boolean;
  readonly tenantId: string;
}

const LIST_LIMIT = 200;

/** The newest LIST_LIMIT invites in the scope, newest first. */
export async function listInvites(sql: Sql, scope: InviteScope): Promise<Invite[]> {
  return (await listInvitePage(sql, scope, { after: undefined, limit: LIST_LIMIT })).slice(0, LIST_LIMIT);
}

/**
 * A page of the invites in the scope, newest first, keyed by (created_at, id)
 * (invites_tenant_page index). Each tenant's invites are read bound to that
 * tenant: the tenant's own, and the platform's for operators; the two pages
 * merge in the same order, so the next page starts after the last row of both.
 */
export async function listInvitePage(
  sql: Sql,
  scope: InviteScope,
  page: PageRequest,
): Promise<(Invite & PositionedRow)[]> {
  const list = (tenantId: string) =>
    withTenant(
      sql,
      tenantId,
      (tx) => tx<(Invite & PositionedRow)[]>`
        select ${tx.unsafe(INVITE_COLUMNS)}, ${positionColumns(tx, 'created_at')} from invites
        where ${boundTenant(tx, tx`coalesce(tenant_id, ${PLATFORM_TENANT}::uuid)`)}
          ${afterPosition(tx, 'created_at', 'desc', page.after)}
        order by created_at desc, id desc limit ${page.limit + 1}::int4`,
    );
  const own = scope.tenantId === PLATFORM_TENANT ? [] : await list(scope.tenantId);
  const platform = scope.operator ? await list(PLATFORM_TENANT) : [];
  // page_at is fixed-width UTC text and page_id lowercase hex: text order is the database's order.
  const newestFirst = (a: PositionedRow, b: PositionedRow) =>
    a.page_at === b.page_at ? b.page_id.localeCompare(a.page_id) : b.page_at.localeCompare(a.page_at);
  return [...own, ...platform].sort(newestFirst).slice(0, page.limit + 1);
}

/** The pending invite with this id within the scope (what revokeInvite would revoke); undefined for any other. */
export async function findPendingInvite(
  sql: Sql,
  scope: InviteScope,
  inviteId: string,
): Promise<Invite | undefined> {
  const findIn = (tenantId: string) =>
    withTenant(sql, tenantId, async (tx) => {
      const [row] = await tx<Invite[]>`
        select ${tx.unsafe(INVITE_COLUMNS)} from invites
        where id = ${inviteId}::uuid and ${boundTenant(tx, tx`coalesce(tenant_id, ${PLATFORM_TENANT}::uuid)`)}
          and used_at is null and revoked_at is null and expires_at > now()`;
      return row;
    });
  const own = scope.tenantId === PLATFORM_TENANT ? undefined : await findIn(scope.tenantId);
  if (own !== undefined || !scope.operator) return own;
  return findIn(PLATFORM_TENANT);
}

async function recordInviteCreated(tx: TenantSql, invite: Invite, actor: string): Promise<void> {
  await appendAuditEvent(tx, inviteChain(invite), {
    actor,
    action: 'invite.created',
    target: `invite:${invite.id}`,
    data: { invite_id: invite.id, kind: invite.kind, expires_at: invite.expires_at.toISOString() },
  });
}

/** Mints an invite whose link its maker is shown, and records `invite.created` by `actor` in the same transaction. */
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

/** A failed send is retried with graphile-worker's backoff, this many times in all. */
export const INVITE_MAIL_ATTEMPTS = 10;

export interface InviteMailPayload {
  readonly tenantId: string;
  readonly inviteId: string;
}

/**
 * A member invite: inserted without a token, with its mail job in the same
 * transaction (OPS-2), and `invite.created` by `actor`. The maker never sees
 * the link.
 */
export async function createMailedInvite(sql: Sql, invite: NewInvite, actor: string): Promise<Invite> {
  const { tenantId } = invite;
  if (invite.kind !== 'member' || tenantId === null || invite.email === null) {
    throw new Error('only a member invite, with its tenant and address, is mailed');
  }
  return withTenant(sql, tenantId, async (tx) => {
    const created = await insertRow(tx, invite, null);
    const payload: InviteMailPayload = { tenantId, inviteId: created.id };
    await enqueueJob(tx, 'send_invite_email', payload, {
      jobKey: `invite:${created.id}`,
      maxAttempts: INVITE_MAIL_ATTEMPTS,
    });
    await recordInviteCreated(tx, created, actor);
    return created;
  });
}

export interface InviteForMail {
  readonly to: string;
  /** The plaintext token: goes into the message and nowhere else. */
  readonly token: string;
  readonly tenantName: string;
  readonly inviter: string | null;
  readonly expiresAt: Date;
}

function inviteMailPayload(task: string, payload: unknown): InviteMailPayload {
  // The payload is JSON read back from the job table: check it before it names a tenant.
  const { tenantId, inviteId } = (payload ?? {}) as Partial<Record<keyof InviteMailPayload, unknown>>;
  if (!isUuid(tenantId) || !isUuid(inviteId)) {
    throw new Error(`${task}: the payload needs tenantId and inviteId uuids`);
  }
  return { tenantId, inviteId };
}

/**
 * Job side of a member invite: mints its token and stores the hash.
 * Undefined when there is nothing to send any more (used, revoked or
 * expired). A retried job mints a fresh token, so the link of a message that
 * did leave the first time stops working.
 */
export async function mintInviteForMail(sql: Sql, payload: unknown): Promise<InviteForMail | undefined> {
  const { tenantId, inviteId } = inviteMailPayload('send_invite_email', payload);
  return serviceQuery(sql, { tenantId, reason: 'mail a member invite' }, async (tx) => {
    const [row] = await tx<
      { email: string; tenant_name: string; inviter: string | null; expires_at: Date }[]
    >`
      select i.email, t.name as tenant_name, u.username as inviter, i.expires_at
      from invites i join tenants t on t.id = i.tenant_id left join users u on u.id = i.created_by
      where i.id = ${inviteId}::uuid and i.kind = 'member'
        and i.used_at is null and i.revoked_at is null and i.expires_at > now()
      for update of i`;
    if (row === undefined) return undefined;
    const minted = mintToken('inv');
    await tx`update invites set token_hash = ${minted.hash.toString('hex')} where id = ${inviteId}::uuid`;
    return {
      to: row.email,
      token: minted.token,
      tenantName: row.tenant_name,
      inviter: row.inviter,
      expiresAt: row.expires_at,
    };
  });
}

/** Job side, after the send: records that the invite was mailed to its address. */
export async function markInviteMailed(sql: Sql, payload: unknown): Promise<void> {
  const { tenantId, inviteId } = inviteMailPayload('send_invite_email', payload);
  await serviceQuery(sql, { tenantId, reason: 'record that a member invite was mailed' }, async (tx) => {
    await tx`update invites set mailed_at = now() where id = ${inviteId}::uuid`;
  });
}

/** Revokes a pending invite within the scope and records `invite.revoked` by `actor`; false if there was none. */
export async function revokeInvite(
  sql: Sql,
  scope: InviteScope,
  inviteId: string,
  actor: string,
): Promise<boolean> {
  // Each transaction is bound to the chain it records in: the tenant's for its member
  // invites, the platform's for signup invites (operators only).
  const revokeIn = (tenantId: string) =>
    withTenant(sql, tenantId, async (tx) => {
      const [revoked] = await tx<{ id: string; kind: InviteKind }[]>`
        update invites set revoked_at = now()
        where id = ${inviteId}::uuid and used_at is null and revoked_at is null
        returning id, kind`;
      if (revoked === undefined) return false;
      await appendAuditEvent(tx, tenantId, {
        actor,
        action: 'invite.revoked',
        target: `invite:${revoked.id}`,
        data: { invite_id: revoked.id, kind: revoked.kind },
      });
      return true;
    });
  if (scope.tenantId !== PLATFORM_TENANT && (await revokeIn(scope.tenantId))) return true;
  return scope.operator && revokeIn(PLATFORM_TENANT);
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
