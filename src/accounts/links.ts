import { randomInt } from 'node:crypto';
import type { Sql } from 'postgres';
import { appendAuditEvent, PLATFORM_TENANT } from '../audit/append.ts';
import { bindTenant, withLookup } from '../db/lookup.ts';
import { isUuid, serviceQuery, type TenantSql, withTenant } from '../db/tenant.ts';
import { accountKey, type RateLimits } from '../http/rate-limits.ts';
import { enqueueJob } from '../jobs/queue.ts';
import { assertRecentSignIn } from '../signin/recent-sign-in.ts';
import { hashToken, mintToken, type TokenKind, tokenKind } from '../tokens.ts';
import { principalActor } from './audit-events.ts';
import { checkCurrentPassword, requirePasswordUnchanged } from './current-password.ts';
import { AccountsError, fieldError } from './errors.ts';
import type { PasswordHasher } from './password-pool.ts';
import type { ClientInfo, Principal } from './service.ts';
import { revokeUserSessions } from './sessions.ts';
import { findUserByLogin, updatePasswordHash } from './users.ts';
import { normalizeEmail, passwordProblem } from './validation.ts';

// ACC-7: one-time links for email verification and account recovery.
//
// A request that needs a link inserts an email_tokens row without a token and
// enqueues the mail job in the same transaction (OPS-2). The job mints the
// token, stores only its SHA-256 with an expiry 60 minutes out, and mails
// it: the plaintext exists only in that job and in the message. A retried
// job mints a fresh token, so the earlier link dies. Redemption compares
// hashes, is single-use, and happens only on POST (mail scanners fetch links).
//
// Audit (AUD-1): requesting and using a link appends its event last in the
// same transaction. Someone holding a link has no principal: the actor is
// `anonymous` and the account the target. Data: ids and the support reference.

export const LINK_MINUTES = 60;
/** A failed send is retried with graphile-worker's exponential backoff, this many times in all. */
export const MAIL_ATTEMPTS = 10;

export type LinkPurpose = 'verify_email' | 'recover';

const TOKEN_KINDS: Readonly<Record<LinkPurpose, TokenKind>> = { verify_email: 'ver', recover: 'rec' };
const MAIL_TASKS = { verify_email: 'send_verification_email', recover: 'send_recovery_email' } as const;

export interface LinkMailPayload {
  readonly tenantId: string;
  readonly tokenId: string;
}

interface LinkRow {
  readonly id: string;
  readonly tenant_id: string;
  readonly user_id: string;
  readonly email: string;
}

export interface LinksDeps {
  readonly sql: Sql;
  readonly rateLimits: Pick<RateLimits, 'consume'>;
  readonly passwords: PasswordHasher;
}

function linkInvalid(): AccountsError {
  return new AccountsError('link_invalid', 'This link is not valid or has expired.');
}

const REFERENCE_ALPHABET = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ';

/** REC-XXXX-XXXX: what a person quotes to support about one recovery request. */
export function supportReference(): string {
  const group = () => Array.from({ length: 4 }, () => REFERENCE_ALPHABET[randomInt(36)]).join('');
  return `REC-${group()}-${group()}`;
}

async function recordRecoveryRequest(tx: TenantSql, clientIp: string, matched: boolean): Promise<string> {
  for (;;) {
    const reference = supportReference();
    const rows = await tx`
      insert into recovery_requests (reference, client_ip, matched)
      values (${reference}, ${clientIp.slice(0, 64)}, ${matched})
      on conflict (reference) do nothing`;
    if (rows.count === 1) return reference;
  }
}

/** Inserts a link row (no token yet) and its mail job, in the caller's transaction; returns the row's id. */
async function queueLinkMail(
  tx: TenantSql,
  link: { tenantId: string; userId: string; purpose: LinkPurpose; email: string; reference: string | null },
): Promise<string> {
  // The user's spent links go when a new one is made: pruning stays within one tenant.
  await tx`
    delete from email_tokens
    where user_id = ${link.userId}::uuid and (used_at is not null or expires_at < now() - interval '1 day')`;
  const [row] = await tx<{ id: string }[]>`
    insert into email_tokens (tenant_id, user_id, purpose, email, support_reference)
    values (${link.tenantId}::uuid, ${link.userId}::uuid, ${link.purpose}, ${link.email}, ${link.reference})
    returning id`;
  if (row === undefined) throw new Error('insert into email_tokens returned no row');
  const payload: LinkMailPayload = { tenantId: link.tenantId, tokenId: row.id };
  await enqueueJob(tx, MAIL_TASKS[link.purpose], payload, {
    jobKey: `email_token:${row.id}`,
    maxAttempts: MAIL_ATTEMPTS,
  });
  return row.id;
}

/**
 * Runs fn on the live link a presented token names, in a transaction bound
 * to the link's tenant. The token comes from a URL anyone can type: its
 * shape is checked, then only its hash is compared.
 */
async function withLiveLink<T>(
  sql: Sql,
  purpose: LinkPurpose,
  token: string,
  fn: (tx: TenantSql, link: LinkRow) => Promise<T>,
): Promise<T> {
  if (tokenKind(token) !== TOKEN_KINDS[purpose]) throw linkInvalid();
  return withLookup(sql, hashToken(token).toString('hex'), async (tx) => {
    const [link] = await tx<LinkRow[]>`
      select id, tenant_id, user_id, email from email_tokens
      where token_hash = enclave.current_lookup() and purpose = ${purpose}
        and used_at is null and expires_at > now()`;
    if (link === undefined) throw linkInvalid();
    await bindTenant(tx, link.tenant_id);
    return fn(tx, link);
  });
}

/** Marks the link used; a concurrent redemption that got there first leaves nothing to mark. */
async function useLink(tx: TenantSql, link: LinkRow): Promise<void> {
  const rows = await tx`
    update email_tokens set used_at = now()
    where id = ${link.id}::uuid and used_at is null and expires_at > now()`;
  if (rows.count !== 1) throw linkInvalid();
}

function uniqueViolation(error: unknown): string | undefined {
  const err = error as { code?: string; constraint_name?: string };
  return err.code === '23505' ? err.constraint_name : undefined;
}

export function createLinksService(deps: LinksDeps) {
  const { sql, rateLimits, passwords } = deps;

  return {
    /** Profile: a new address stays pending until its link is used. Needs the current password and a recent sign-in (ACC-8). */
    async requestEmailChange(principal: Principal, input: { email: string; currentPassword: string }) {
      assertRecentSignIn(principal);
      passwords.admit();
      await rateLimits.consume('email_change', principal.user.id);
      const email = normalizeEmail(input.email);
      if (email === undefined) throw fieldError('email', 'Enter a valid email address.');
      if (email === principal.user.email) throw fieldError('email', 'This is already your email address.');
      const checked = await checkCurrentPassword(sql, passwords, principal, input.currentPassword);
      await withTenant(sql, principal.user.tenant_id, async (tx) => {
        await requirePasswordUnchanged(tx, principal.user.id, checked);
        // Only after the password: whether an address has an account is not told to a mere session holder.
        // users.email is unique across tenants; the lookup policy shows the one row holding it, if any.
        const taken = await withLookup(
          sql,
          email,
          (lookup) => lookup`select 1 from users where email = ${email}`,
        );
        if (taken.length > 0) throw fieldError('email', 'An account with that email address already exists.');
        await tx`update users set pending_email = ${email} where id = ${principal.user.id}::uuid`;
        const linkId = await queueLinkMail(tx, {
          tenantId: principal.user.tenant_id,
          userId: principal.user.id,
          purpose: 'verify_email',
          email,
          reference: null,
        });
        await appendAuditEvent(tx, principal.user.tenant_id, {
          actor: principalActor(principal),
          action: 'account.email_change_requested',
          target: `user:${principal.user.id}`,
          data: { user_id: principal.user.id, link_id: linkId },
        });
      });
    },

    /**
     * Profile (ACC-1): mails a confirmation link to the account's own
     * unverified address, such as the first operator's, whose invite was
     * bound to no address. Shares the email-change bucket.
     */
    async requestVerification(principal: Principal): Promise<void> {
      await rateLimits.consume('email_change', principal.user.id);
      await withTenant(sql, principal.user.tenant_id, async (tx) => {
        // The current address becomes the pending one: verifyEmail then confirms it in place.
        const [user] = await tx<{ id: string; tenant_id: string; email: string }[]>`
          update users set pending_email = email
          where id = ${principal.user.id}::uuid and not email_verified
            and (pending_email is null or pending_email = email)
          returning id, tenant_id, email`;
        if (user === undefined) {
          throw fieldError(
            'email',
            'There is no unconfirmed address to confirm: it is confirmed, or a change is pending.',
          );
        }
        const linkId = await queueLinkMail(tx, {
          tenantId: user.tenant_id,
          userId: user.id,
          purpose: 'verify_email',
          email: user.email,
          reference: null,
        });
        await appendAuditEvent(tx, user.tenant_id, {
          actor: principalActor(principal),
          action: 'account.email_verification_requested',
          target: `user:${user.id}`,
          data: { user_id: user.id, link_id: linkId },
        });
      });
    },

    /** Read-only: is this link live? For the GET pages, which must not change state. */
    async inspectLink(purpose: LinkPurpose, token: string, client: ClientInfo): Promise<void> {
      await rateLimits.consume('link_ip', client.ip);
      await withLiveLink(sql, purpose, token, async () => undefined);
    },

    /** Makes the pending address the account's verified email, once. */
    async verifyEmail(token: string, client: ClientInfo): Promise<{ email: string }> {
      await rateLimits.consume('link_ip', client.ip);
      try {
        return await withLiveLink(sql, 'verify_email', token, async (tx, link) => {
          await useLink(tx, link);
          // The link proves this address only: a later change request supersedes it.
          const [user] = await tx<{ email: string }[]>`
            update users set email = pending_email, email_verified = true, pending_email = null
            where id = ${link.user_id}::uuid and pending_email = ${link.email}
            returning email`;
          if (user === undefined) throw linkInvalid();
          await appendAuditEvent(tx, link.tenant_id, {
            actor: 'anonymous',
            action: 'account.email_verified',
            target: `user:${link.user_id}`,
            data: { user_id: link.user_id, link_id: link.id },
          });
          return user;
        });
      } catch (error) {
        if (uniqueViolation(error) === 'users_email_key') {
          throw new AccountsError('link_invalid', 'This address has since been taken by another account.');
        }
        throw error;
      }
    },

    /**
     * ACC-7: the same answer whether or not the account exists: a new support
     * reference. Both branches normalise, look up and record the request; a
     * link is queued only when the login's account has exactly this email.
     */
    async requestRecovery(input: { login: string; email: string }, client: ClientInfo) {
      await rateLimits.consume('recover_ip', client.ip);
      // Per login too, whether or not it exists, so one account cannot be mailed from many addresses.
      await rateLimits.consume('recover_account', accountKey(input.login));
      const email = normalizeEmail(input.email);
      const user = await findUserByLogin(sql, input.login);
      if (user === undefined || email === undefined || user.email !== email) {
        // No account to name: the platform's chain, with the reference support will be quoted, nothing typed.
        const reference = await withTenant(sql, PLATFORM_TENANT, async (tx) => {
          const recorded = await recordRecoveryRequest(tx, client.ip, false);
          await appendAuditEvent(tx, PLATFORM_TENANT, {
            actor: 'anonymous',
            action: 'account.recovery_requested',
            target: null,
            data: { reference: recorded },
          });
          return recorded;
        });
        return { reference };
      }
      const reference = await withTenant(sql, user.tenant_id, async (tx) => {
        const recorded = await recordRecoveryRequest(tx, client.ip, true);
        const linkId = await queueLinkMail(tx, {
          tenantId: user.tenant_id,
          userId: user.id,
          purpose: 'recover',
          email,
          reference: recorded,
        });
        await appendAuditEvent(tx, user.tenant_id, {
          actor: 'anonymous',
          action: 'account.recovery_requested',
          target: `user:${user.id}`,
          data: { reference: recorded, user_id: user.id, link_id: linkId },
        });
        return recorded;
      });
      return { reference };
    },

    /** Sets a new password through a recovery link, once, and ends every session of the account. */
    async resetPassword(token: string, newPassword: string, client: ClientInfo): Promise<void> {
      passwords.admit();
      await rateLimits.consume('link_ip', client.ip);
      const problem = passwordProblem(newPassword);
      if (problem !== undefined) throw fieldError('new_password', `The new password ${problem}.`);
      const passwordHash = await passwords.hash(newPassword, client.signal);
      await withLiveLink(sql, 'recover', token, async (tx, link) => {
        await useLink(tx, link);
        await updatePasswordHash(tx, link.user_id, passwordHash);
        const revoked = await revokeUserSessions(tx, link.user_id);
        // Other recovery links of this account die with this one.
        await tx`
          update email_tokens set used_at = now()
          where user_id = ${link.user_id}::uuid and purpose = 'recover' and used_at is null`;
        await appendAuditEvent(tx, link.tenant_id, {
          actor: 'anonymous',
          action: 'account.recovery_completed',
          target: `user:${link.user_id}`,
          data: { user_id: link.user_id, link_id: link.id, sessions_revoked: revoked },
        });
      });
    },
  };
}

export type LinksService = ReturnType<typeof createLinksService>;

export interface LinkForMail {
  readonly to: string;
  /** The plaintext token: goes into the message and nowhere else. */
  readonly token: string;
  readonly username: string;
  readonly reference: string | null;
}

/**
 * Job side: mints the token for a queued link and stores its hash and
 * expiry. Undefined when there is nothing to send any more (the link was
 * used, or a newer email change superseded it).
 */
export async function mintLinkForMail(
  sql: Sql,
  purpose: LinkPurpose,
  payload: unknown,
): Promise<LinkForMail | undefined> {
  // The payload is JSON read back from the job table: check it before it names a tenant.
  const { tenantId, tokenId } = (payload ?? {}) as Partial<Record<keyof LinkMailPayload, unknown>>;
  if (!isUuid(tenantId) || !isUuid(tokenId)) {
    throw new Error(`${MAIL_TASKS[purpose]}: the payload needs tenantId and tokenId uuids`);
  }
  const reason = purpose === 'recover' ? 'send an account recovery link' : 'send an email verification link';
  return serviceQuery(sql, { tenantId, reason }, async (tx) => {
    const [row] = await tx<
      { email: string; support_reference: string | null; username: string; pending_email: string | null }[]
    >`
      select t.email, t.support_reference, u.username, u.pending_email
      from email_tokens t join users u on u.id = t.user_id
      where t.id = ${tokenId}::uuid and t.purpose = ${purpose} and t.used_at is null
      for update of t`;
    if (row === undefined) return undefined;
    if (purpose === 'verify_email' && row.pending_email !== row.email) return undefined;
    const minted = mintToken(TOKEN_KINDS[purpose]);
    await tx`
      update email_tokens
      set token_hash = ${minted.hash.toString('hex')}, expires_at = now() + make_interval(mins => ${LINK_MINUTES})
      where id = ${tokenId}::uuid`;
    return { to: row.email, token: minted.token, username: row.username, reference: row.support_reference };
  });
}
