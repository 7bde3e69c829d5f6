import type { FastifyReply, FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import type { App } from '../http/app.ts';
import { attemptSecondStep, type SignInDeps, type StepMethod } from '../signin/second-step.ts';
import { answerStep, CodeBody, challengeIdFrom, showVerifyPage } from '../signin/verify-routes.ts';
import { bodyText, sendPage } from '../web/forms.ts';
import { verifyDeadPage } from '../web/sign-in-pages.ts';
import { recoveryCodeOf } from './recovery-codes.ts';
import { totpCodeOf } from './totp.ts';
import type { TotpService } from './totp-service.ts';

// ACC-8: the verify page's authenticator-app and recovery-code forms
// (/login/verify/:challenge/totp and /recovery). A code that cannot be one
// (empty, 7 digits, letters, too long, a NUL) gets the page again with what
// to type, and costs no attempt; a well-formed code goes through
// attemptSecondStep, which rate-limits, counts a wrong one and audits each.

const Params = Type.Object({ challenge: Type.String({ maxLength: 36 }) }, { additionalProperties: false });
const DEAD = 'This sign-in step has expired or was already used. Sign in again.';

interface Step {
  readonly method: StepMethod;
  /** What to type, shown when the code has the wrong shape. */
  readonly shape: string;
  readonly wellFormed: (input: string) => boolean;
  readonly check: TotpService['checkTotp'];
}

export function registerTotpSteps(app: App, deps: { totp: TotpService; signIn: SignInDeps }): void {
  const { totp, signIn } = deps;
  const route = {
    config: { auth: 'none' as const },
    attachValidation: true,
    schema: { hide: true, params: Params, body: CodeBody },
  };

  const answer = (step: Step) => async (request: FastifyRequest, reply: FastifyReply) => {
    const id = challengeIdFrom(request);
    if (id === undefined) return sendPage(reply, 400, verifyDeadPage(DEAD));
    // Attacker-controlled: the whole body. Only a code of the right shape reaches the check.
    const code = bodyText(request.body, 'code', 64);
    if (request.validationError !== undefined || code === undefined || !step.wellFormed(code)) {
      return showVerifyPage(signIn, request, reply, 400, { error: step.shape });
    }
    const outcome = await attemptSecondStep(signIn, request, reply, id, step.method, (tx, user) =>
      step.check(tx, user, code),
    );
    return answerStep(signIn, request, reply, outcome);
  };

  app.post(
    '/login/verify/:challenge/totp',
    route,
    answer({
      method: 'totp',
      shape: 'Enter the 6 digits your authenticator app shows.',
      wellFormed: (input) => totpCodeOf(input) !== undefined,
      check: totp.checkTotp,
    }),
  );

  app.post(
    '/login/verify/:challenge/recovery',
    route,
    answer({
      method: 'recovery',
      shape: 'Enter one of your recovery codes, as xxxx-xxxx-xxxx-xxxx.',
      wellFormed: (input) => recoveryCodeOf(input) !== undefined,
      // A recovery code is no factor: the step records no factor id (null) when one is spent.
      check: async (tx, user, input) =>
        (await totp.checkRecoveryCode(tx, user, input)) === undefined ? undefined : null,
    }),
  );
}
