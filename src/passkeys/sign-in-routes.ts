import { randomBytes } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { safeNext, shownError } from '../accounts/page-routes.ts';
import type { App } from '../http/app.ts';
import { ProblemSchema } from '../http/problems.ts';
import { withLiveChallenge } from '../signin/challenges.ts';
import {
  attemptSecondStep,
  challengeTokenFrom,
  type SignInDeps,
  startSessionFor,
} from '../signin/second-step.ts';
import { answerStep, challengeIdFrom, showVerifyPage } from '../signin/verify-routes.ts';
import { LIMITS, loginPage } from '../web/account-pages.ts';
import { bodyText, sendPage } from '../web/forms.ts';
import { CHALLENGE_SECONDS } from './challenges.ts';
import { ceremonyExpired, PasskeyError } from './errors.ts';
import {
  AssertionForm,
  OptionsBody,
  RequestOptions,
  readAuthenticationCredential,
  StepParams,
} from './schemas.ts';
import type { PasskeySignIn } from './sign-in.ts';

// Signing in with a passkey (ACC-8): passwordless from /login, and as the
// second step of /login/verify/:challenge. Each has an options JSON route
// (called by static/passkeys.js) and a form route the script submits with
// the browser's answer in `credential`. Every route spends the client's
// passkey bucket before any lookup (ACC-5); the account's bucket is spent
// once the credential (passwordless) or the challenge (second step) names one.

export interface PasskeySignInRouteDeps extends SignInDeps {
  readonly passkeys: PasskeySignIn;
}

/** The browser's key to its passwordless ceremony: random, sent only to these routes, stored only hashed. */
const PASSKEY_COOKIE = 'enclave_passkey';
const PASSKEY_COOKIE_PATH = '/login/passkey';

const UNREADABLE = 'The passkey answer could not be read. Try again.';
const NOT_SIGNED_IN = 'That passkey did not sign you in. Try another, or sign in with your password.';
const STEP_GONE = 'This sign-in step has expired or was already used. Sign in again.';

export function registerPasskeySignInRoutes(app: App, deps: PasskeySignInRouteDeps): void {
  const { passkeys, rateLimits, cookies } = deps;
  const none = { auth: 'none' } as const;
  const hide = { hide: true } as const;
  const options = (operationId: string, summary: string, description: string) => ({
    operationId,
    summary,
    description,
    tags: ['passkeys'],
    body: OptionsBody,
    response: { 200: RequestOptions, 400: ProblemSchema, 429: ProblemSchema, 503: ProblemSchema },
  });

  app.post(
    '/login/passkey/options',
    {
      config: none,
      schema: options(
        'passkeySignInOptions',
        'Options to sign in with a passkey alone (WebAuthn authentication, discoverable credentials)',
        'Sets a cookie that binds the challenge to this browser for 5 minutes, once. Pass the options to navigator.credentials.get() (or @simplewebauthn/browser startAuthentication) and post the answer, as JSON text, in the `credential` field of the form POST /login/passkey. User verification is required: the passkey is both factors.',
      ),
    },
    async (request, reply) => {
      await rateLimits.consume('passkey_ip', request.ip);
      const browserKey = randomBytes(32).toString('base64url');
      reply.setCookie(PASSKEY_COOKIE, browserKey, {
        httpOnly: true,
        sameSite: 'strict',
        secure: cookies.secure,
        path: PASSKEY_COOKIE_PATH,
        maxAge: CHALLENGE_SECONDS,
      });
      reply.header('cache-control', 'no-store');
      return passkeys.signInOptions(browserKey);
    },
  );

  app.post(
    '/login/passkey',
    { config: none, attachValidation: true, schema: { ...hide, body: AssertionForm } },
    async (request, reply) => {
      const next = safeNext(bodyText(request.body, 'next', LIMITS.next));
      const again = (status: number, error: string) => sendPage(reply, status, loginPage({ next, error }));
      // The cookie is spent by this answer, whatever it says.
      const browserKey = request.cookies[PASSKEY_COOKIE];
      reply.clearCookie(PASSKEY_COOKIE, {
        httpOnly: true,
        sameSite: 'strict',
        secure: cookies.secure,
        path: PASSKEY_COOKIE_PATH,
      });
      try {
        await rateLimits.consume('passkey_ip', request.ip);
        if (request.validationError !== undefined) return again(400, UNREADABLE);
        const credential = readAuthenticationCredential(request.body.credential);
        if (credential === undefined) return again(400, UNREADABLE);
        if (browserKey === undefined) throw ceremonyExpired();
        const outcome = await passkeys.signIn(browserKey, credential);
        if (!outcome.ok) return again(401, NOT_SIGNED_IN);
        const location = await startSessionFor(deps, request, reply, {
          user: outcome.user,
          method: 'passkey',
          next,
        });
        return reply.redirect(location, 303);
      } catch (error) {
        const shown = shownError(reply, error);
        return again(shown.status, shown.message);
      }
    },
  );

  /** The live sign-in challenge of this URL and browser cookie, for its options route; a 400 problem if none. */
  const stepOptions = async (request: FastifyRequest) => {
    const id = challengeIdFrom(request);
    const browserToken = challengeTokenFrom(request);
    const found =
      id === undefined || browserToken === undefined
        ? undefined
        : await withLiveChallenge(deps.sql, { id, browserToken }, async (tx, challenge) => {
            // ACC-5: the account is known from the step: its bucket too.
            await rateLimits.consume('passkey_account', challenge.user_id);
            return passkeys.stepOptions(tx, challenge.user_id, challenge.id);
          });
    if (found === undefined) throw new PasskeyError('passkey_challenge_invalid', STEP_GONE);
    return found;
  };

  app.post(
    '/login/verify/:challenge/passkey/options',
    {
      config: none,
      schema: {
        ...options(
          'passkeySecondStepOptions',
          'Options to pass the second step of a sign-in with a passkey',
          "For the browser that passed the first step (its sign-in cookie and the URL's challenge id name the same live sign-in). The options list the account's passkeys; post the answer, as JSON text, in the `credential` field of the form POST /login/verify/{challenge}/passkey.",
        ),
        params: StepParams,
      },
    },
    async (request, reply) => {
      await rateLimits.consume('passkey_ip', request.ip);
      reply.header('cache-control', 'no-store');
      return stepOptions(request);
    },
  );

  app.post(
    '/login/verify/:challenge/passkey',
    { config: none, attachValidation: true, schema: { ...hide, params: StepParams, body: AssertionForm } },
    async (request, reply): Promise<FastifyReply> => {
      const id = challengeIdFrom(request);
      if (id === undefined) return showVerifyPage(deps, request, reply, 400);
      const credential =
        request.validationError === undefined
          ? readAuthenticationCredential(request.body.credential)
          : undefined;
      if (credential === undefined) return showVerifyPage(deps, request, reply, 400, { error: UNREADABLE });
      const outcome = await attemptSecondStep(deps, request, reply, id, 'passkey', (tx, user, challenge) =>
        passkeys.checkStep(tx, user, challenge.id, credential),
      );
      return answerStep(deps, request, reply, outcome);
    },
  );
}
