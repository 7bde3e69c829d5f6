import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Sql } from 'postgres';
import { recordLogin } from '../accounts/audit-events.ts';
import { type CookieSettings, sessionTokenFrom, setSessionCookie } from '../accounts/principal.ts';
import { insertSession, revokePresentedSession } from '../accounts/sessions.ts';
import { getUser, type User } from '../accounts/users.ts';
import { appendAuditEvent } from '../audit/append.ts';
import type { TenantSql } from '../db/tenant.ts';
import { withTenant } from '../db/tenant.ts';
import { RateLimitedError, type RateLimits } from '../http/rate-limits.ts';
import {
  CHALLENGE_COOKIE,
  CHALLENGE_COOKIE_PATH,
  CHALLENGE_MINUTES,
  type Challenge,
  completeChallenge,
  countFailure,
  MAX_FAILED_ATTEMPTS,
  type OpenedChallenge,
  openChallenge,
  withLiveChallenge,
} from './challenges.ts';
import { type FactorKind, userFactors } from './factors.ts';

// ACC-8: every way of signing in ends here. A first step that passed (a
// password, a provider) either starts the session, for a user with no second
// factor, or opens a challenge that only this browser can answer; a method
// that is two factors on its own (a passkey with user verification) starts
// the session directly. The verify page's routes answer the challenge through
// attemptSecondStep, which rate-limits, counts failures and audits each try.

export interface SignInDeps {
  readonly sql: Sql;
  readonly rateLimits: Pick<RateLimits, 'consume'>;
  readonly cookies: CookieSettings;
}

/** How a second step was passed: a factor's kind, or a recovery code. */
export type StepMethod = FactorKind | 'recovery';

/**
 * What a method's check found, inside the challenge's transaction: the id of
 * the factor that matched (null for a recovery code, which is no factor), or
 * undefined for a wrong answer.
 */
export type StepCheck = (
  tx: TenantSql,
  user: User,
  challenge: Challenge,
) => Promise<string | null | undefined>;

export type StepOutcome =
  | { readonly ok: true; readonly location: string }
  | {
      readonly ok: false;
      readonly status: 400 | 401 | 429;
      readonly message: string;
      /** The challenge is dead (expired, used, out of attempts): sign in again from the start. */
      readonly restart: boolean;
    };

export function setChallengeCookie(
  reply: FastifyReply,
  challenge: OpenedChallenge,
  cookies: CookieSettings,
): void {
  reply.setCookie(CHALLENGE_COOKIE, challenge.browserToken, {
    httpOnly: true,
    sameSite: 'lax',
    secure: cookies.secure,
    path: CHALLENGE_COOKIE_PATH,
    maxAge: CHALLENGE_MINUTES * 60,
  });
}

function clearChallengeCookie(reply: FastifyReply, cookies: CookieSettings): void {
  reply.clearCookie(CHALLENGE_COOKIE, {
    path: CHALLENGE_COOKIE_PATH,
    httpOnly: true,
    sameSite: 'lax',
    secure: cookies.secure,
  });
}

export function challengeTokenFrom(request: FastifyRequest): string | undefined {
  const token = request.cookies[CHALLENGE_COOKIE];
  return token !== undefined && /^[A-Za-z0-9_-]{43}$/.test(token) ? token : undefined;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export function verifyPath(challengeId: string): string {
  return `/login/verify/${challengeId}`;
}

/**
 * In the first step's transaction: the challenge to open if the user has a
 * second factor, or undefined if a session may start now.
 */
export async function secondStepFor(
  tx: TenantSql,
  user: User,
  firstStep: string,
  next: string | undefined,
): Promise<OpenedChallenge | undefined> {
  const kinds = new Set((await userFactors(tx, user.id)).map((factor) => factor.kind));
  if (kinds.size === 0) return undefined;
  return openChallenge(tx, {
    tenantId: user.tenant_id,
    userId: user.id,
    firstStep,
    next,
    mailCode: kinds.has('email'),
  });
}

/**
 * After a first step other than the password form passed (a provider): the
 * session, or the second step. Answers the request with the redirect.
 */
export async function beginSignIn(
  deps: SignInDeps,
  request: FastifyRequest,
  reply: FastifyReply,
  input: { user: User; firstStep: string; next: string | undefined },
): Promise<FastifyReply> {
  const { user } = input;
  const started = await withTenant(deps.sql, user.tenant_id, async (tx) => {
    const challenge = await secondStepFor(tx, user, input.firstStep, input.next);
    if (challenge !== undefined) return { challenge };
    return {
      session: await startSession(tx, request, user, { firstStep: input.firstStep, secondStep: null }),
    };
  });
  if ('challenge' in started && started.challenge !== undefined) {
    setChallengeCookie(reply, started.challenge, deps.cookies);
    return reply.redirect(verifyPath(started.challenge.id), 303);
  }
  if (started.session !== undefined) setSessionCookie(reply, started.session.token, deps.cookies);
  return reply.redirect(input.next ?? '/dashboard', 303);
}

/**
 * A sign-in that is two factors on its own (a passkey with user
 * verification): the session starts now, its cookie is set on `reply`.
 * Returns where to go next; the caller redirects or answers JSON.
 */
export async function startSessionFor(
  deps: SignInDeps,
  request: FastifyRequest,
  reply: FastifyReply,
  input: { user: User; method: string; next: string | undefined },
): Promise<string> {
  const { user } = input;
  const session = await withTenant(deps.sql, user.tenant_id, (tx) =>
    startSession(tx, request, user, { firstStep: input.method, secondStep: null }),
  );
  setSessionCookie(reply, session.token, deps.cookies);
  return input.next ?? '/dashboard';
}

async function startSession(
  tx: TenantSql,
  request: FastifyRequest,
  user: User,
  steps: { firstStep: string; secondStep: StepMethod | null },
) {
  const replaced = await revokePresentedSession(tx, sessionTokenFrom(request));
  const session = await insertSession(tx, {
    tenantId: user.tenant_id,
    userId: user.id,
    userAgent: request.headers['user-agent'],
    clientIp: request.ip,
  });
  await recordLogin(tx, {
    user,
    sessionId: session.id,
    passwordRehashed: false,
    sessionsReplaced: replaced,
    firstStep: steps.firstStep,
    secondStep: steps.secondStep,
  });
  return session;
}

const DEAD = 'This sign-in step has expired or was already used. Sign in again.';

/**
 * Answers a challenge with one method's check. ACC-5: each try spends the
 * client's and the account's second-step buckets before anything is
 * compared; ACC-8: a wrong answer counts against the challenge (five and it
 * is dead) and is an audit event, a right one ends the challenge and starts
 * the session (its cookie set on `reply`) in the same transaction.
 */
export async function attemptSecondStep(
  deps: SignInDeps,
  request: FastifyRequest,
  reply: FastifyReply,
  challengeId: string,
  method: StepMethod,
  check: StepCheck,
): Promise<StepOutcome> {
  const browserToken = challengeTokenFrom(request);
  if (!UUID.test(challengeId) || browserToken === undefined) {
    return { ok: false, status: 400, message: DEAD, restart: true };
  }
  try {
    await deps.rateLimits.consume('second_step_ip', request.ip);
    const owner = await withLiveChallenge(
      deps.sql,
      { id: challengeId, browserToken },
      async (_tx, found) => found.user_id,
    );
    if (owner === undefined) return { ok: false, status: 400, message: DEAD, restart: true };
    await deps.rateLimits.consume('second_step_account', owner);
  } catch (error) {
    if (!(error instanceof RateLimitedError)) throw error;
    reply.header('retry-after', String(error.retryAfterSeconds));
    const minutes = Math.ceil(error.retryAfterSeconds / 60);
    const message = `Too many attempts. Try again in ${minutes} minute${minutes === 1 ? '' : 's'}.`;
    return { ok: false, status: 429, message, restart: false };
  }
  const result = await withLiveChallenge(
    deps.sql,
    { id: challengeId, browserToken },
    async (tx, challenge) => {
      const user = await getUser(tx, challenge.user_id);
      if (user === undefined) return { ok: false as const, left: 0 };
      const factorId = await check(tx, user, challenge);
      const actor = `user:${user.id}`;
      if (factorId === undefined) {
        const failed = await countFailure(tx, challenge.id);
        await appendAuditEvent(tx, user.tenant_id, {
          actor: 'anonymous',
          action: 'factor.failed',
          target: actor,
          data: { user_id: user.id, kind: method, challenge_id: challenge.id, failed_attempts: failed },
        });
        return { ok: false as const, left: MAX_FAILED_ATTEMPTS - failed };
      }
      await completeChallenge(tx, challenge.id);
      if (factorId !== null) {
        await tx`update user_factors set last_used_at = now() where id = ${factorId}::uuid`;
      }
      await appendAuditEvent(tx, user.tenant_id, {
        actor,
        action: 'factor.used',
        target: actor,
        data: { user_id: user.id, kind: method, factor_id: factorId, challenge_id: challenge.id },
      });
      const session = await startSession(tx, request, user, {
        firstStep: challenge.first_step,
        secondStep: method,
      });
      return { ok: true as const, session, next: challenge.next_path };
    },
  );
  if (result === undefined) return { ok: false, status: 400, message: DEAD, restart: true };
  if (!result.ok) {
    if (result.left <= 0) {
      clearChallengeCookie(reply, deps.cookies);
      return { ok: false, status: 401, message: `That code is not correct. ${DEAD}`, restart: true };
    }
    const tries = `${result.left} ${result.left === 1 ? 'try' : 'tries'} left`;
    return { ok: false, status: 401, message: `That is not correct (${tries}).`, restart: false };
  }
  clearChallengeCookie(reply, deps.cookies);
  setSessionCookie(reply, result.session.token, deps.cookies);
  return { ok: true, location: result.next ?? '/dashboard' };
}
