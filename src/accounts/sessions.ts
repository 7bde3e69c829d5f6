import { createHash, randomBytes } from 'node:crypto';
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
import { getActingUser, type User } from './users.ts';

// ACC-3: a session is a random id in an HMAC-signed cookie; the server keeps
// only SHA-256 of the id, in a row that makes the session revocable. The
// lifetime slides: each use pushes expiry 30 minutes out.

export const SESSION_COOKIE = 'enclave_session';
export const SESSION_MINUTES = 30;
/** Sliding expiry is written at most this often per session, to keep reads cheap. */
const TOUCH_SECONDS = 60;

export function sessionTokenHash(sessionToken: string): string {
  return createHash('sha256').update(sessionToken, 'utf8').digest('hex');
}

export interface NewSession {
  readonly id: string;
  /** Goes into the signed cookie; never stored or logged. */
  readonly token: string;
}

export async function insertSession(
  tx: TenantSql,
  session: { tenantId: string; userId: string; userAgent: string | undefined; clientIp: string },
): Promise<NewSession> {
  const token = randomBytes(32).toString('base64url');
  const [row] = await tx<{ id: string }[]>`
    insert into sessions (tenant_id, user_id, token_hash, expires_at, user_agent, client_ip)
    values (${session.tenantId}::uuid, ${session.userId}::uuid, ${sessionTokenHash(token)},
            now() + make_interval(mins => ${SESSION_MINUTES}), ${session.userAgent?.slice(0, 300) ?? null},
            ${session.clientIp.slice(0, 64)})
    returning id`;
  if (row === undefined) throw new Error('insert into sessions returned no row');
  return { id: row.id, token };
}

export interface SessionPrincipal {
  readonly sessionId: string;
  readonly user: User;
  /** When the session's sign-in was passed in full (the recent sign-in rule reads it). */
  readonly authenticatedAt: Date;
  readonly secondFactorMissing: boolean;
}

/**
 * The session and user a cookie's token names, if it is live: not revoked,
 * not expired, its user still there. Slides its expiry in the same
 * transaction. The token is attacker-controlled; only its hash is compared.
 */
export async function resolveSession(sql: Sql, token: string): Promise<SessionPrincipal | undefined> {
  return withLookup(sql, sessionTokenHash(token), async (tx) => {
    const [session] = await tx<
      { id: string; tenant_id: string; user_id: string; authenticated_at: Date; stale: boolean }[]
    >`
      select id, tenant_id, user_id, authenticated_at,
             last_seen_at < now() - make_interval(secs => ${TOUCH_SECONDS}) as stale
      from sessions
      where token_hash = enclave.current_lookup() and revoked_at is null and expires_at > now()`;
    if (session === undefined) return undefined;
    const [, acting] = await Promise.all([
      bindTenant(tx, session.tenant_id),
      getActingUser(tx, session.user_id),
    ]);
    if (acting === undefined) return undefined;
    if (session.stale) {
      await tx`
        update sessions set last_seen_at = now(), expires_at = now() + make_interval(mins => ${SESSION_MINUTES})
        where id = ${session.id}::uuid`;
    }
    return { sessionId: session.id, authenticatedAt: session.authenticated_at, ...acting };
  });
}

/**
 * Revokes the session a browser presented while signing in again (no
 * fixation); returns how many it revoked (0 or 1).
 */
export async function revokePresentedSession(tx: TenantSql, token: string | undefined): Promise<number> {
  if (token === undefined) return 0;
  const rows = await tx`
    update sessions set revoked_at = now()
    where token_hash = ${sessionTokenHash(token)} and revoked_at is null`;
  return rows.count;
}

export interface SessionListing {
  readonly id: string;
  readonly created_at: Date;
  readonly last_seen_at: Date;
  readonly expires_at: Date;
  readonly user_agent: string | null;
  readonly client_ip: string | null;
}

/**
 * A page of the user's live sessions, newest first. Keyed by (created_at, id)
 * (sessions_user_page index), not by last_seen_at, which every request moves:
 * a key that moves would skip or repeat sessions between pages.
 */
export async function listSessions(
  tx: TenantSql,
  userId: string,
  page: PageRequest,
): Promise<(SessionListing & PositionedRow)[]> {
  return tx<(SessionListing & PositionedRow)[]>`
    select id, created_at, last_seen_at, expires_at, user_agent, client_ip,
           ${positionColumns(tx, 'created_at')} from sessions
    where ${boundTenant(tx)} and user_id = ${userId}::uuid and revoked_at is null and expires_at > now()
      ${afterPosition(tx, 'created_at', 'desc', page.after)}
    order by created_at desc, id desc limit ${page.limit + 1}::int4`;
}

/** The user's live session with this id (what revokeSession would revoke); undefined for any other. */
export async function findSession(
  tx: TenantSql,
  userId: string,
  sessionId: string,
): Promise<SessionListing | undefined> {
  const [session] = await tx<SessionListing[]>`
    select id, created_at, last_seen_at, expires_at, user_agent, client_ip from sessions
    where id = ${sessionId}::uuid and user_id = ${userId}::uuid and revoked_at is null and expires_at > now()`;
  return session;
}

/** True if a live session of this user was revoked; false if there was none to revoke. */
export async function revokeSession(tx: TenantSql, userId: string, sessionId: string): Promise<boolean> {
  const rows = await tx`
    update sessions set revoked_at = now()
    where id = ${sessionId}::uuid and user_id = ${userId}::uuid and revoked_at is null and expires_at > now()`;
  return rows.count === 1;
}

/** Revokes every live session of the user except `keep` (if given); returns how many. */
export async function revokeUserSessions(tx: TenantSql, userId: string, keep?: string): Promise<number> {
  const rows = await tx`
    update sessions set revoked_at = now()
    where user_id = ${userId}::uuid and revoked_at is null and expires_at > now()
      and (${keep ?? null}::uuid is null or id <> ${keep ?? null}::uuid)`;
  return rows.count;
}
