import type { FastifyReply, FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import { unusedRecoveryCodes } from '../factors/recovery-codes.ts';
import type { App } from '../http/app.ts';
import { RateLimitedError } from '../http/rate-limits.ts';
import { bodyText, sendPage } from '../web/forms.ts';
import { verifyDeadPage, verifyPage } from '../web/sign-in-pages.ts';
import { emailCodeMatches, queueEmailCode, spendEmailCode, withLiveChallenge } from './challenges.ts';
import { userFactors } from './factors.ts';
import {
  attemptSecondStep,
  challengeTokenFrom,
  type SignInDeps,
  type StepOutcome,
  verifyPath,
} from './second-step.ts';

// ACC-8: /login/verify/:challenge, the second step of signing in. The page
// shows a form for each kind of factor the user has; this file answers the
// email code's two forms, and the TOTP, recovery and passkey routes answer
// theirs through attemptSecondStep and answerStep.

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const DEAD = 'This sign-in step has expired or was already used. Sign in again.';

const Params = Type.Object({ challenge: Type.String({ maxLength: 36 }) }, { additionalProperties: false });
export const CodeBody = Type.Object(
  { code: Type.String({ maxLength: 64 }) },
  { additionalProperties: false },
);

/** The challenge id from the URL, if it has the shape of one (anything else is answered as a dead step). */
export function challengeIdFrom(request: FastifyRequest): string | undefined {
  const id = (request.params as { challenge?: unknown }).challenge;
  return typeof id === 'string' && UUID.test(id) ? id : undefined;
}

/** Shows the verify page for a live challenge of this browser, or the page that says to sign in again. */
export async function showVerifyPage(
  deps: SignInDeps,
  request: FastifyRequest,
  reply: FastifyReply,
  status: number,
  shown: { error?: string | undefined; notice?: string | undefined } = {},
): Promise<FastifyReply> {
  reply.header('cache-control', 'no-store');
  const id = challengeIdFrom(request);
  const browserToken = challengeTokenFrom(request);
  const live =
    id === undefined || browserToken === undefined
      ? undefined
      : await withLiveChallenge(deps.sql, { id, browserToken }, async (tx, challenge) => {
          const [factors, users, recoveryCodes] = await Promise.all([
            userFactors(tx, challenge.user_id),
            tx<{ email: string }[]>`select email from users where id = ${challenge.user_id}::uuid`,
            unusedRecoveryCodes(tx, challenge.user_id),
          ]);
          return {
            kinds: new Set(factors.map((factor) => factor.kind)),
            email: users[0]?.email ?? '',
            recoveryCodes: recoveryCodes > 0,
          };
        });
  if (id === undefined || live === undefined) return sendPage(reply, 400, verifyDeadPage(DEAD));
  return sendPage(reply, status, verifyPage({ path: verifyPath(id), ...live, ...shown }));
}

/** A form's answer to attemptSecondStep: on to the session, the page again with the reason, or start over. */
export async function answerStep(
  deps: SignInDeps,
  request: FastifyRequest,
  reply: FastifyReply,
  outcome: StepOutcome,
): Promise<FastifyReply> {
  if (outcome.ok) return reply.redirect(outcome.location, 303);
  if (outcome.restart) return sendPage(reply, outcome.status, verifyDeadPage(outcome.message));
  return showVerifyPage(deps, request, reply, outcome.status, { error: outcome.message });
}

export function registerVerifyPages(app: App, deps: SignInDeps): void {
  const hide = { hide: true } as const;
  const none = { auth: 'none' } as const;

  app.get(
    '/login/verify/:challenge',
    { config: none, attachValidation: true, schema: { ...hide, params: Params } },
    async (request, reply) => showVerifyPage(deps, request, reply, 200),
  );

  app.post(
    '/login/verify/:challenge/email',
    { config: none, attachValidation: true, schema: { ...hide, params: Params, body: CodeBody } },
    async (request, reply) => {
      const id = challengeIdFrom(request);
      if (id === undefined) return sendPage(reply, 400, verifyDeadPage(DEAD));
      const code = bodyText(request.body, 'code', 64);
      if (request.validationError !== undefined || code === undefined || code.trim() === '') {
        return showVerifyPage(deps, request, reply, 400, { error: 'Enter the 6-digit code from the email.' });
      }
      const outcome = await attemptSecondStep(
        deps,
        request,
        reply,
        id,
        'email',
        async (tx, user, challenge) => {
          if (!emailCodeMatches(challenge, code)) return undefined;
          const [factor] = await tx<{ id: string }[]>`
          select id from user_factors where user_id = ${user.id}::uuid and kind = 'email'`;
          return factor?.id;
        },
      );
      return answerStep(deps, request, reply, outcome);
    },
  );

  app.post(
    '/login/verify/:challenge/email/send',
    { config: none, attachValidation: true, schema: { ...hide, params: Params } },
    async (request, reply) => {
      const id = challengeIdFrom(request);
      const browserToken = challengeTokenFrom(request);
      if (id === undefined || browserToken === undefined) return sendPage(reply, 400, verifyDeadPage(DEAD));
      try {
        await deps.rateLimits.consume('second_step_ip', request.ip);
      } catch (error) {
        if (!(error instanceof RateLimitedError)) throw error;
        reply.header('retry-after', String(error.retryAfterSeconds));
        return showVerifyPage(deps, request, reply, 429, { error: 'Too many attempts. Try again later.' });
      }
      const sent = await withLiveChallenge(deps.sql, { id, browserToken }, async (tx, challenge) => {
        const factors = await userFactors(tx, challenge.user_id);
        if (!factors.some((factor) => factor.kind === 'email')) return false;
        if (!(await spendEmailCode(tx, challenge.id))) return false;
        await queueEmailCode(tx, challenge.tenant_id, challenge.id);
        return true;
      });
      if (sent === undefined) return sendPage(reply, 400, verifyDeadPage(DEAD));
      return sent
        ? showVerifyPage(deps, request, reply, 200, {
            notice: 'We sent a new code. The codes sent before it no longer work.',
          })
        : showVerifyPage(deps, request, reply, 429, {
            error: 'This sign-in has sent all the codes it may. Use another way below, or sign in again.',
          });
    },
  );
}
