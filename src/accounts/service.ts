import { randomUUID } from 'node:crypto';
import type { Sql, TransactionSql } from 'postgres';
import { appendAuditEvent, PLATFORM_TENANT } from '../audit/append.ts';
import { withLookup } from '../db/lookup.ts';
import { type TenantSql, withTenant } from '../db/tenant.ts';
import type { PageRequest, PositionedRow } from '../http/page-cursor.ts';
import type { RateLimits } from '../http/rate-limits.ts';
import { enqueueJob } from '../jobs/queue.ts';
import type { OpenedChallenge } from '../signin/challenges.ts';
import { assertRecentSignIn } from '../signin/recent-sign-in.ts';
import { secondStepFor } from '../signin/second-step.ts';
import {
  type ApiTokenListing,
  findApiToken,
  insertApiToken,
  listApiTokens,
  revokeApiToken,
  type TokenScope,
} from './api-tokens.ts';
import { principalActor, recordFailedLogin, recordFor, recordLogin, recordSignup } from './audit-events.ts';
import { checkCurrentPassword, requirePasswordUnchanged } from './current-password.ts';
import type { DeviceCookies } from './device-cookies.ts';
import { AccountsError, fieldError } from './errors.ts';
import {
  createInvite,
  createMailedInvite,
  findInvite,
  findInviteByHash,
  findPendingInvite,
  INVITE_MAIL_ATTEMPTS,
  type Invite,
  inviteTokenHash,
  listInvitePage,
  redeemInvite,
  revokeInvite,
} from './invites.ts';
import { admitLogin } from './login-throttle.ts';
import { PasswordChecksBusyError, type PasswordHasher } from './password-pool.ts';
import { authorize } from './roles.ts';
import {
  findSession,
  insertSession,
  listSessions,
  type NewSession,
  revokePresentedSession,
  revokeSession,
  revokeUserSessions,
  type SessionListing,
} from './sessions.ts';
import { findUserByLogin, insertUser, type User, updatePasswordHash } from './users.ts';
import { normalizeEmail, normalizeUsername, passwordProblem } from './validation.ts';

// The accounts capability's domain logic: signup by invite, sign-in, sessions,
// password change, API tokens and invites. Routes (pages and API) call this
// and never touch the tables themselves.
//
// Audit (AUD-1): each action appends its event as the last statement of the
// action's own transaction (the append locks the tenant's chain head until
// commit), so the two commit or roll back together. Event data holds ids,
// flags and counts only: never a password, token or cookie.

export interface Principal {
  readonly user: User;
  readonly via: 'session' | 'token';
  readonly sessionId: string | undefined;
  readonly tokenId: string | undefined;
  /** Sessions can write; API tokens carry their scope. */
  readonly scope: TokenScope;
  /** When a session's sign-in was passed in full; undefined for an API token. */
  readonly authenticatedAt: Date | undefined;
  /** The tenant requires a second factor and this user has none yet: only setup pages are open (ACC-8). */
  readonly secondFactorMissing: boolean;
}

export interface ClientInfo {
  readonly ip: string;
  readonly userAgent: string | undefined;
  /** Aborts when the client disconnects: a password check still queued for it is dropped. */
  readonly signal?: AbortSignal | undefined;
}

export interface AccountsDeps {
  readonly sql: Sql;
  readonly rateLimits: Pick<RateLimits, 'consume' | 'refund'>;
  readonly deviceCookies: DeviceCookies;
  readonly passwords: PasswordHasher;
}

function uniqueViolation(error: unknown): string | undefined {
  const err = error as { code?: string; constraint_name?: string };
  return err.code === '23505' ? err.constraint_name : undefined;
}

/**
 * What signing up ended in. `account_exists` (ACC-1, no enumeration): the
 * address already has an account somewhere, so none was made; that address
 * was mailed instead, and the invite stays as it was, exactly as if it had
 * been ignored.
 */
export type SignupOutcome =
  | { readonly outcome: 'created'; readonly user: User; readonly session: NewSession }
  | { readonly outcome: 'account_exists' };

/** users.email is unique across tenants; the lookup policy shows the one row holding an address, if any. */
async function addressHasAccount(sql: Sql, email: string): Promise<boolean> {
  const rows = await withLookup(sql, email, (tx) => tx`select 1 from users where email = ${email}`);
  return rows.length > 0;
}

/**
 * Mails an address that has an account about an invite to it (a job, OPS-2).
 * Recorded in the platform's chain only: the inviter's tenant chain would
 * tell the inviter. The payload carries the address, not the invite, so the
 * job reads nothing of the inviter's tenant either.
 */
async function mailAccountExists(sql: Sql, invite: Invite, email: string): Promise<void> {
  await withTenant(sql, PLATFORM_TENANT, async (tx) => {
    await enqueueJob(tx, 'send_account_exists_email', { to: email }, { maxAttempts: INVITE_MAIL_ATTEMPTS });
    await appendAuditEvent(tx, PLATFORM_TENANT, {
      actor: 'anonymous',
      action: 'invite.existing_account_mailed',
      target: `invite:${invite.id}`,
      data: { invite_id: invite.id },
    });
  });
}

function usableInvite(invite: Invite | undefined): Invite {
  if (invite === undefined)
    throw new AccountsError('invite_invalid', 'This invite link is not valid.', 'invite');
  if (invite.state === 'used')
    throw new AccountsError('invite_invalid', 'This invite has already been used.', 'invite');
  if (invite.state === 'revoked')
    throw new AccountsError('invite_invalid', 'This invite has been revoked.', 'invite');
  if (invite.state === 'expired')
    throw new AccountsError('invite_invalid', 'This invite has expired.', 'invite');
  return invite;
}

/**
 * A password that checked out: the session, or (ACC-8) the second step's
 * challenge, whose token goes into the browser's cookie.
 */
export type LoginOutcome =
  | {
      readonly user: User;
      readonly session: NewSession;
      readonly challenge: undefined;
      readonly deviceCookie: string;
    }
  | {
      readonly user: User;
      readonly session: undefined;
      readonly challenge: OpenedChallenge;
      readonly deviceCookie: string;
    };

/** What a new account is made of (see createInvitedAccount). */
interface NewAccount {
  /** SHA-256 (hex) of the invite token presented (inviteTokenHash). */
  readonly inviteHash: string;
  readonly invite: Invite;
  readonly email: string;
  readonly username: string;
  /** Null for an account made through a provider: no password signs in to it. */
  readonly passwordHash: string | null;
  /** A provider confirmed the address (its verified email). */
  readonly emailProven: boolean;
  /** Runs in the account's transaction once the user row exists (a provider identity's link). */
  readonly link?: (tx: TenantSql, user: User) => Promise<unknown>;
}

/** Every rule a new API token's name and expiry break, in words (a form shows them all at once). */
export function tokenInputProblems(
  input: { name: string; expiresAt: Date | null },
  now = Date.now(),
): { field: string; message: string }[] {
  const problems: { field: string; message: string }[] = [];
  const name = input.name.trim();
  if (name.length === 0 || name.length > 100) {
    problems.push({ field: 'name', message: 'Give the token a name of 1 to 100 characters.' });
  }
  if (input.expiresAt !== null && input.expiresAt.getTime() <= now) {
    problems.push({ field: 'expires_at', message: 'The expiry must be in the future.' });
  }
  return problems;
}

export function createAccountsService(deps: AccountsDeps) {
  const { sql, rateLimits, deviceCookies, passwords } = deps;

  async function startSession(tx: TransactionSql, user: User, client: ClientInfo): Promise<NewSession> {
    return insertSession(tx, {
      tenantId: user.tenant_id,
      userId: user.id,
      userAgent: client.userAgent,
      clientIp: client.ip,
    });
  }

  /**
   * ACC-1: the one place an account is made, whichever way its owner proved
   * who they are (a password, a provider). The invite is claimed first, in the
   * account's transaction: a failure below gives it back.
   */
  async function createInvitedAccount(account: NewAccount, client: ClientInfo): Promise<SignupOutcome> {
    const { invite, email, username } = account;
    if (await addressHasAccount(sql, email)) {
      await mailAccountExists(sql, invite, email);
      return { outcome: 'account_exists' };
    }
    const tenantId = invite.tenant_id ?? randomUUID();
    const userId = randomUUID();
    try {
      return await withTenant(sql, tenantId, async (tx) => {
        const redeemed = await redeemInvite(tx, account.inviteHash, userId);
        if (redeemed === undefined) {
          throw new AccountsError('invite_invalid', 'This invite has already been used.', 'invite');
        }
        if (redeemed.kind !== 'member')
          await tx`insert into tenants (id, name) values (${tenantId}::uuid, ${username})`;
        const user = await insertUser(tx, {
          id: userId,
          tenantId,
          username,
          email,
          passwordHash: account.passwordHash,
          role: redeemed.kind === 'member' ? 'member' : 'owner',
          isOperator: redeemed.kind === 'operator',
          // Proven by an invite the platform mailed to this very address, or by the provider.
          emailVerified: account.emailProven || (redeemed.mailed && redeemed.email === email),
        });
        await account.link?.(tx, user);
        const session = await startSession(tx, user, client);
        await recordSignup(tx, { tenantId, invite, user, sessionId: session.id });
        return { outcome: 'created' as const, user, session };
      });
    } catch (error) {
      const constraint = uniqueViolation(error);
      if (constraint === 'users_username_key') throw fieldError('username', 'That username is taken.');
      // Taken since the check above: the same answer as if it had been taken before.
      if (constraint === 'users_email_key') {
        await mailAccountExists(sql, invite, email);
        return { outcome: 'account_exists' };
      }
      throw error;
    }
  }

  return {
    /** Looks an invite up for the signup form, without using it. */
    async inspectInvite(token: string): Promise<Invite> {
      return usableInvite(await findInvite(sql, token));
    },

    async signup(
      input: { invite: string; email: string; username: string; password: string },
      client: ClientInfo,
    ): Promise<SignupOutcome> {
      // Overload is refused before any database work (the rate limit included).
      passwords.admit();
      await rateLimits.consume('signup_ip', client.ip);
      const inviteHash = inviteTokenHash(input.invite);
      const invite = usableInvite(await findInviteByHash(sql, inviteHash));
      const email = normalizeEmail(input.email);
      if (email === undefined) throw fieldError('email', 'Enter a valid email address.');
      if (invite.email !== null && invite.email !== email) {
        throw fieldError('email', 'This invite was issued for a different email address.');
      }
      const username = normalizeUsername(input.username);
      if (username === undefined) {
        throw fieldError('username', 'Usernames are 3 to 32 characters: a–z, 0–9, _ and -.');
      }
      const problem = passwordProblem(input.password);
      if (problem !== undefined) throw fieldError('password', `The password ${problem}.`);
      const passwordHash = await passwords.hash(input.password, client.signal);
      return createInvitedAccount(
        { inviteHash, invite, email, username, passwordHash, emailProven: false },
        client,
      );
    },

    /**
     * ACC-1, ACC-9: an account made through a provider, by the invite whose
     * token hashes to `inviteHash`, for the provider's verified address: the
     * same choke point as signup, with no password. `link` adds the identity
     * in the account's own transaction.
     */
    async signupWithProvider(
      input: {
        inviteHash: string;
        email: string;
        username: string;
        link: (tx: TenantSql, user: User) => Promise<unknown>;
      },
      client: ClientInfo,
    ): Promise<SignupOutcome> {
      await rateLimits.consume('signup_ip', client.ip);
      const invite = usableInvite(await findInviteByHash(sql, input.inviteHash));
      // ACC-9: a provider proves an address, so only an invite bound to that address opens an account
      // through it; an invite bound to none (the first operator's, `enclave invite` without one) is
      // redeemed with a password.
      if (invite.email === null) {
        throw new AccountsError(
          'invite_invalid',
          'This invite is not bound to an email address: open it and sign up with a username and password. You can link the provider from your profile afterwards.',
          'invite',
        );
      }
      if (invite.email !== input.email) {
        throw new AccountsError(
          'invite_invalid',
          'This invite was issued for a different email address than the one the provider confirmed.',
          'invite',
        );
      }
      return createInvitedAccount({ ...input, invite, passwordHash: null, emailProven: true }, client);
    },

    /**
     * ACC-6: username or verified email through one path; every failure is the
     * same error after the same work. ACC-5: the attempt is admitted
     * (login-throttle.ts) before any lookup; a device cookie from an earlier
     * sign-in to this login exempts it from the account's bucket, and a success
     * answers with a fresh one. A session cookie presented with the login is
     * revoked (no fixation). When the password pool is full the attempt is
     * refused (429) before any of that: nothing is spent or looked up.
     */
    async login(
      input: {
        login: string;
        password: string;
        previousSessionToken: string | undefined;
        deviceCookie?: string | undefined;
        /** Where to go once signed in; kept on the challenge if a second step follows. */
        next?: string | undefined;
      },
      client: ClientInfo,
    ): Promise<LoginOutcome> {
      passwords.admit();
      const admission = await admitLogin(rateLimits, {
        login: input.login,
        ip: client.ip,
        device: deviceCookies.verify(input.deviceCookie),
      });
      const failed = new AccountsError('login_failed', 'The login or password is not correct.');
      const user = await findUserByLogin(sql, input.login);
      if (user?.password_hash == null) {
        // No such login, or an account with no password: the same work, the same answer.
        await passwords.burn(input.password, client.signal);
        await recordFailedLogin(sql, { login: input.login, user });
        throw failed;
      }
      const check = await passwords.verify(input.password, user.password_hash, client.signal);
      if (!check.ok) {
        await recordFailedLogin(sql, { login: input.login, user });
        throw failed;
      }
      await admission.succeeded();
      // A pool too busy to re-hash leaves the old hash for the next sign-in: this one has succeeded.
      const rehashed = check.needsRehash
        ? await passwords.hash(input.password).catch((error: unknown) => {
            if (error instanceof PasswordChecksBusyError) return undefined;
            throw error;
          })
        : undefined;
      const deviceCookie = deviceCookies.issue(user.username);
      const signedIn = await withTenant(sql, user.tenant_id, async (tx): Promise<LoginOutcome> => {
        if (rehashed !== undefined)
          await tx`update users set password_hash = ${rehashed} where id = ${user.id}::uuid`;
        // ACC-8: with a second factor, no session yet: a challenge only this browser can answer.
        const challenge = await secondStepFor(tx, user, 'password', input.next);
        if (challenge !== undefined) {
          await appendAuditEvent(tx, user.tenant_id, {
            actor: `user:${user.id}`,
            action: 'session.second_step_started',
            target: `user:${user.id}`,
            data: { user_id: user.id, challenge_id: challenge.id, first_step: 'password' },
          });
          return { user, challenge, session: undefined, deviceCookie };
        }
        const replaced = await revokePresentedSession(tx, input.previousSessionToken);
        const session = await startSession(tx, user, client);
        await recordLogin(tx, {
          user,
          sessionId: session.id,
          passwordRehashed: rehashed !== undefined,
          sessionsReplaced: replaced,
        });
        return { user, session, challenge: undefined, deviceCookie };
      });
      return signedIn;
    },

    async logout(principal: Principal): Promise<void> {
      if (principal.sessionId === undefined) return;
      const sessionId = principal.sessionId;
      await withTenant(sql, principal.user.tenant_id, async (tx) => {
        if (!(await revokeSession(tx, principal.user.id, sessionId))) return;
        await recordFor(tx, principal, {
          action: 'session.logout',
          target: `session:${sessionId}`,
          data: { session_id: sessionId },
        });
      });
    },

    async listSessions(principal: Principal, page: PageRequest): Promise<(SessionListing & PositionedRow)[]> {
      return withTenant(sql, principal.user.tenant_id, (tx) => listSessions(tx, principal.user.id, page));
    },

    /** ACC-3: the user's own live session by id, for the page that asks before revoking it. */
    async findSession(principal: Principal, sessionId: string): Promise<SessionListing | undefined> {
      return withTenant(sql, principal.user.tenant_id, (tx) => findSession(tx, principal.user.id, sessionId));
    },

    /** ACC-3: true if revoked; false if the user has no such live session (the caller answers 404). */
    async revokeSession(principal: Principal, sessionId: string): Promise<boolean> {
      return withTenant(sql, principal.user.tenant_id, async (tx) => {
        if (!(await revokeSession(tx, principal.user.id, sessionId))) return false;
        await recordFor(tx, principal, {
          action: 'session.revoked',
          target: `session:${sessionId}`,
          data: { session_id: sessionId, current: sessionId === principal.sessionId },
        });
        return true;
      });
    },

    async signOutEverywhere(principal: Principal): Promise<number> {
      return withTenant(sql, principal.user.tenant_id, async (tx) => {
        const count = await revokeUserSessions(tx, principal.user.id);
        await recordFor(tx, principal, {
          action: 'session.revoked_all',
          target: `user:${principal.user.id}`,
          data: { user_id: principal.user.id, count },
        });
        return count;
      });
    },

    /** ACC-11: needs the current password; ends every other session of the user. */
    async changePassword(principal: Principal, input: { current: string; next: string }): Promise<void> {
      const problem = passwordProblem(input.next);
      if (problem !== undefined) throw fieldError('new_password', `The new password ${problem}.`);
      passwords.admit();
      const checked = await checkCurrentPassword(sql, passwords, principal, input.current);
      const nextHash = await passwords.hash(input.next);
      const userId = principal.user.id;
      await withTenant(sql, principal.user.tenant_id, async (tx) => {
        await requirePasswordUnchanged(tx, userId, checked);
        await updatePasswordHash(tx, userId, nextHash);
        const revoked = await revokeUserSessions(tx, userId, principal.sessionId);
        await recordFor(tx, principal, {
          action: 'account.password_changed',
          target: `user:${userId}`,
          data: { user_id: userId, sessions_revoked: revoked },
        });
      });
    },

    async mintApiToken(
      principal: Principal,
      input: { name: string; scope: TokenScope; expiresAt: Date | null },
    ): Promise<{ listing: ApiTokenListing; token: string }> {
      assertRecentSignIn(principal);
      await rateLimits.consume('token_mint', principal.user.id);
      const [problem] = tokenInputProblems(input);
      if (problem !== undefined) throw fieldError(problem.field, problem.message);
      const name = input.name.trim();
      return withTenant(sql, principal.user.tenant_id, async (tx) => {
        const minted = await insertApiToken(tx, {
          tenantId: principal.user.tenant_id,
          userId: principal.user.id,
          name,
          scope: input.scope,
          expiresAt: input.expiresAt,
        });
        const { listing } = minted;
        // The listing, never the value: last4 is what the token page shows too.
        await recordFor(tx, principal, {
          action: 'token.minted',
          target: `token:${listing.id}`,
          data: {
            token_id: listing.id,
            name: listing.name,
            scope: listing.scope,
            last4: listing.last4,
            expires_at: listing.expires_at?.toISOString() ?? null,
          },
        });
        return minted;
      });
    },

    async listApiTokens(
      principal: Principal,
      page: PageRequest,
    ): Promise<(ApiTokenListing & PositionedRow)[]> {
      return withTenant(sql, principal.user.tenant_id, (tx) => listApiTokens(tx, principal.user.id, page));
    },

    /** ACC-10: the user's own live token by id, for the page that asks before revoking it. */
    async findApiToken(principal: Principal, tokenId: string): Promise<ApiTokenListing | undefined> {
      return withTenant(sql, principal.user.tenant_id, (tx) => findApiToken(tx, principal.user.id, tokenId));
    },

    async revokeApiToken(principal: Principal, tokenId: string): Promise<boolean> {
      return withTenant(sql, principal.user.tenant_id, async (tx) => {
        if (!(await revokeApiToken(tx, principal.user.id, tokenId))) return false;
        await recordFor(tx, principal, {
          action: 'token.revoked',
          target: `token:${tokenId}`,
          data: { token_id: tokenId },
        });
        return true;
      });
    },

    /** A page of the invites the principal may manage (see listInvitePage), for the API and the invites page. */
    async listInvitePage(principal: Principal, page: PageRequest): Promise<(Invite & PositionedRow)[]> {
      if (!principal.user.is_operator) authorize(principal, 'invite.manage');
      return listInvitePage(
        sql,
        { operator: principal.user.is_operator, tenantId: principal.user.tenant_id },
        page,
      );
    },

    /** A pending invite the principal may revoke, by id, for the page that asks before revoking it. */
    async findPendingInvite(principal: Principal, inviteId: string): Promise<Invite | undefined> {
      if (!principal.user.is_operator) authorize(principal, 'invite.manage');
      return findPendingInvite(
        sql,
        { operator: principal.user.is_operator, tenantId: principal.user.tenant_id },
        inviteId,
      );
    },

    async revokeInvite(principal: Principal, inviteId: string): Promise<boolean> {
      if (!principal.user.is_operator) authorize(principal, 'invite.manage');
      return revokeInvite(
        sql,
        { operator: principal.user.is_operator, tenantId: principal.user.tenant_id },
        inviteId,
        principalActor(principal),
      );
    },

    /**
     * Operators invite new tenants and are shown the link (`token`); tenant
     * owners and admins invite members into their tenant, and the invite is mailed to
     * the address, never shown (ACC-1: so that using it proves the address).
     * Whether the address has an account changes nothing here.
     */
    async createInvite(
      principal: Principal,
      input: { email: string; kind: 'tenant' | 'member'; expiresAt: Date },
    ): Promise<{ invite: Invite; token: string | undefined }> {
      if (input.kind === 'tenant' && !principal.user.is_operator) {
        throw new AccountsError('forbidden', 'Only operators can invite new tenants.');
      }
      if (input.kind === 'member') authorize(principal, 'invite.manage');
      const email = normalizeEmail(input.email);
      if (email === undefined) throw fieldError('email', 'Enter a valid email address.');
      if (input.expiresAt.getTime() <= Date.now())
        throw fieldError('expires_at', 'The expiry must be in the future.');
      const actor = principalActor(principal);
      const invite = { email, createdBy: principal.user.id, expiresAt: input.expiresAt };
      if (input.kind === 'member') {
        const mailed = { ...invite, kind: 'member' as const, tenantId: principal.user.tenant_id };
        return { invite: await createMailedInvite(sql, mailed, actor), token: undefined };
      }
      return createInvite(sql, { ...invite, kind: 'tenant', tenantId: null }, actor);
    },
  };
}

export type AccountsService = ReturnType<typeof createAccountsService>;
