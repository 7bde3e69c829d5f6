import type { Sql } from 'postgres';
import {
  type AuditEventInput,
  appendAuditEvent,
  appendPlatformAuditEvent,
  PLATFORM_TENANT,
} from '../audit/append.ts';
import { type TenantSql, withTenant } from '../db/tenant.ts';
import { accountKey } from '../http/rate-limits.ts';
import { type Invite, inviteChain } from './invites.ts';
import type { Principal } from './service.ts';
import type { User } from './users.ts';

// What the accounts capability writes to the audit log (AUD-1), in one
// place: who the actor is, and the events whose shape is more than one call.
// Actors: `user:<id>` for a session, `token:<id>` for an API token,
// `anonymous` for a request with no principal (signup, sign-in, a one-time
// link), `operator:cli` for the console, `system` for jobs. Data holds ids,
// flags and counts: never a password, token, link token or cookie.

/** Who the audit log names for a principal's action: the API token used, or the signed-in user. */
export function principalActor(principal: Pick<Principal, 'via' | 'user' | 'tokenId'>): string {
  return principal.via === 'token' && principal.tokenId !== undefined
    ? `token:${principal.tokenId}`
    : `user:${principal.user.id}`;
}

/** Appends an event by the principal to its tenant's chain, in `tx` (bound to that tenant). */
export function recordFor(
  tx: TenantSql,
  principal: Principal,
  event: Omit<AuditEventInput, 'actor'>,
): Promise<unknown> {
  return appendAuditEvent(tx, principal.user.tenant_id, { actor: principalActor(principal), ...event });
}

/**
 * A signup, in its transaction: `tenant.created` (unless a member joined)
 * and `account.created` in the account's tenant; `invite.accepted` in the
 * invite's chain — the same tenant for a member invite, the platform's for a
 * signup or operator invite. Nobody is signed in yet: the actor is anonymous.
 */
export async function recordSignup(
  tx: TenantSql,
  signup: { tenantId: string; invite: Invite; user: User; sessionId: string },
): Promise<void> {
  const { tenantId, invite, user } = signup;
  if (invite.kind !== 'member') {
    await appendAuditEvent(tx, tenantId, {
      actor: 'anonymous',
      action: 'tenant.created',
      target: `tenant:${tenantId}`,
      data: { tenant_id: tenantId, invite_id: invite.id },
    });
  }
  await appendAuditEvent(tx, tenantId, {
    actor: 'anonymous',
    action: 'account.created',
    target: `user:${user.id}`,
    data: {
      user_id: user.id,
      role: user.role,
      is_operator: user.is_operator,
      invite_id: invite.id,
      session_id: signup.sessionId,
    },
  });
  const accepted = {
    actor: 'anonymous',
    action: 'invite.accepted',
    target: `invite:${invite.id}`,
    data: { invite_id: invite.id, kind: invite.kind, user_id: user.id },
  };
  if (inviteChain(invite) === tenantId) await appendAuditEvent(tx, tenantId, accepted);
  else await appendPlatformAuditEvent(tx, accepted);
}

/** A successful sign-in, in the transaction that starts its session. */
export async function recordLogin(
  tx: TenantSql,
  login: {
    user: User;
    sessionId: string;
    passwordRehashed: boolean;
    sessionsReplaced: number;
    /** How the first step was passed ('password', 'passkey', 'provider:<name>'). */
    firstStep?: string;
    /** The second step's method, when there was one (ACC-8). */
    secondStep?: string | null;
  },
): Promise<void> {
  const { user, sessionId } = login;
  await appendAuditEvent(tx, user.tenant_id, {
    actor: `user:${user.id}`,
    action: 'session.login',
    target: `session:${sessionId}`,
    data: {
      user_id: user.id,
      session_id: sessionId,
      password_rehashed: login.passwordRehashed,
      sessions_replaced: login.sessionsReplaced,
      first_step: login.firstStep ?? 'password',
      second_step: login.secondStep ?? null,
    },
  });
}

/**
 * A failed sign-in, in a transaction of its own (the attempt changes nothing
 * else): for an existing account in its tenant's chain; for an unknown login
 * in the platform's, with only the login's rate-limit key — what was typed
 * as a login may be a password pasted into the wrong field.
 */
export async function recordFailedLogin(
  sql: Sql,
  attempt: { login: string; user: User | undefined },
): Promise<void> {
  const { user } = attempt;
  const tenantId = user?.tenant_id ?? PLATFORM_TENANT;
  await withTenant(sql, tenantId, (tx) =>
    appendAuditEvent(tx, tenantId, {
      actor: 'anonymous',
      action: 'session.login_failed',
      target: user === undefined ? null : `user:${user.id}`,
      data: user === undefined ? { account_key: accountKey(attempt.login) } : { user_id: user.id },
    }),
  );
}
