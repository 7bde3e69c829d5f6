import type { FastifyReply, FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import { flashOwner, frameFor, type ProfileSection } from '../accounts/dashboard-routes.ts';
import { shownError } from '../accounts/page-routes.ts';
import type { CookieSettings } from '../accounts/principal.ts';
import { signedIn } from '../accounts/principal.ts';
import { createSecretFlash } from '../accounts/secret-flash.ts';
import type { Principal } from '../accounts/service.ts';
import type { App } from '../http/app.ts';
import { needsReauth, reauthRedirect } from '../signin/recent-sign-in.ts';
import { confirmPage, forbiddenPage } from '../web/dashboard-pages.ts';
import { bodyText, formProblem, sendPage } from '../web/forms.ts';
import {
  recoveryCodesPage,
  totpEnrolPage,
  totpNotice,
  totpPage,
  totpProfileSection as totpSection,
} from '../web/totp-pages.ts';
import { qrSvg } from './qr-svg.ts';
import type { TotpService } from './totp-service.ts';

// The profile's authenticator-app pages (ACC-8), all post/redirect/get:
//   GET  /profile/totp                               state, and the way in or out
//   POST /profile/totp/start                         a fresh pending secret → /profile/totp/enrol
//   GET  /profile/totp/enrol                         QR code and secret of the pending enrolment
//   POST /profile/totp/confirm                       first code → recovery codes (once)
//   GET  /profile/totp/recovery-codes                the codes just made, from the secret flash
//   GET|POST /profile/totp/recovery-codes/regenerate a new set; the old ones stop working
//   GET|POST /profile/totp/remove                    turn it off
// Sign-in methods are managed from a browser session, not with an API token.

export interface TotpPageDeps {
  readonly totp: TotpService;
  readonly cookies: CookieSettings;
  readonly sessionKey: string;
}

const CODE_MAX = 64;
const CodeBody = Type.Object({ code: Type.String({ maxLength: CODE_MAX }) }, { additionalProperties: false });
const CODE_LABELS = { code: 'Code from the app' };

/** The authenticator app's part of /profile: on or off, and the way to /profile/totp. */
export function totpProfileSection(totp: TotpService): ProfileSection {
  return async (principal) => totpSection(await totp.status(principal));
}

export function registerTotpPages(app: App, deps: TotpPageDeps): void {
  const { totp } = deps;
  const shownCodes = createSecretFlash<string[]>('recovery-codes', deps.sessionKey, deps.cookies);
  const hide = { hide: true } as const;
  const page = { config: { auth: 'user' as const }, schema: hide };
  const withCode = {
    config: { auth: 'user' as const },
    attachValidation: true,
    schema: { ...hide, body: CodeBody },
  };

  const overview = async (
    request: FastifyRequest,
    reply: FastifyReply,
    status: number,
    extra: { notice?: string | undefined; error?: string | undefined },
  ) =>
    sendPage(
      reply,
      status,
      totpPage(await frameFor(request), { status: await totp.status(signedIn(request)), ...extra }),
    );

  const enrolPage = async (request: FastifyRequest, reply: FastifyReply, status: number, error?: string) => {
    const principal = signedIn(request);
    const enrolment = await totp.enrolment(principal);
    // None waiting (never started, expired, or confirmed in another tab): the overview says what is next.
    if (enrolment === undefined) return overview(request, reply, 200, {});
    const qr = qrSvg(enrolment.uri, 'QR code to scan with your authenticator app');
    return sendPage(
      reply,
      status,
      totpEnrolPage(await frameFor(request), { qr, secret: enrolment.secret, error }),
    );
  };

  const showCodesNext = (request: FastifyRequest, reply: FastifyReply, codes: string[]) => {
    shownCodes.put(reply, flashOwner(signedIn(request)), codes);
    return reply.redirect('/profile/totp/recovery-codes', 303);
  };

  /** A route of a browser session: an API token gets a page saying sign-in methods are not managed with it. */
  const sessionOnly =
    (handler: (request: FastifyRequest, reply: FastifyReply) => Promise<FastifyReply>) =>
    async (request: FastifyRequest, reply: FastifyReply) =>
      signedIn(request).via === 'session'
        ? handler(request, reply)
        : sendPage(
            reply,
            403,
            forbiddenPage(
              await frameFor(request),
              'Sign-in methods are managed from a signed-in browser, not with an API token.',
            ),
          );

  /** An action from the overview: a refusal is shown there; success redirects. */
  const fromOverview =
    (act: (request: FastifyRequest, reply: FastifyReply) => Promise<FastifyReply>) =>
    async (request: FastifyRequest, reply: FastifyReply) => {
      try {
        return await act(request, reply);
      } catch (error) {
        // Removing and regenerating need a recent sign-in: sign in again, then back here.
        if (needsReauth(error)) return reauthRedirect(reply, '/profile/totp');
        const shown = shownError(reply, error);
        return overview(request, reply, shown.status, { error: shown.message });
      }
    };

  /** GET `path`: the step before an action that cannot be undone (confirmPage), POSTing to `path`. */
  const askFirst = (path: string, question: { title: string; consequence: string; button: string }) =>
    app.get(
      path,
      page,
      sessionOnly(async (request, reply) =>
        sendPage(
          reply,
          200,
          confirmPage(await frameFor(request), { ...question, action: path, back: '/profile/totp' }),
        ),
      ),
    );

  app.get(
    '/profile/totp',
    page,
    sessionOnly((request, reply) => overview(request, reply, 200, { notice: totpNotice(request.query) })),
  );

  /** POST `path`: `act` for the signed-in principal, then on to `then`; a refusal shows the overview. */
  const postAction = (path: string, act: (principal: Principal) => Promise<unknown>, then: string) =>
    app.post(
      path,
      page,
      sessionOnly(
        fromOverview(async (request, reply) => {
          await act(signedIn(request));
          return reply.redirect(then, 303);
        }),
      ),
    );

  postAction('/profile/totp/start', totp.start, '/profile/totp/enrol');

  app.get(
    '/profile/totp/enrol',
    page,
    sessionOnly((request, reply) => enrolPage(request, reply, 200)),
  );

  app.post(
    '/profile/totp/confirm',
    withCode,
    sessionOnly(async (request, reply) => {
      if (request.validationError !== undefined) {
        return enrolPage(request, reply, 400, formProblem(request.validationError, CODE_LABELS).message);
      }
      let codes: string[];
      try {
        codes = await totp.confirm(signedIn(request), bodyText(request.body, 'code', CODE_MAX) ?? '');
      } catch (error) {
        const shown = shownError(reply, error);
        return enrolPage(request, reply, shown.status, shown.message);
      }
      return showCodesNext(request, reply, codes);
    }),
  );

  app.get(
    '/profile/totp/recovery-codes',
    page,
    sessionOnly(async (request, reply) => {
      const codes = shownCodes.take(request, reply, flashOwner(signedIn(request)));
      // Shown once: a reload, or a visit without a fresh set, shows none and says why.
      return sendPage(reply, 200, recoveryCodesPage(await frameFor(request), codes));
    }),
  );

  askFirst('/profile/totp/recovery-codes/regenerate', {
    title: 'Make new recovery codes?',
    consequence:
      'Your current recovery codes stop working at once, used or not. The new ones are shown once.',
    button: 'Make new codes',
  });
  app.post(
    '/profile/totp/recovery-codes/regenerate',
    page,
    sessionOnly(
      fromOverview(async (request, reply) =>
        showCodesNext(request, reply, await totp.regenerateRecoveryCodes(signedIn(request))),
      ),
    ),
  );

  askFirst('/profile/totp/remove', {
    title: 'Remove the authenticator app?',
    consequence:
      'Signing in stops asking for its codes. Unless you have another second step (a passkey, an email code), your recovery codes are deleted too.',
    button: 'Remove',
  });
  postAction('/profile/totp/remove', totp.remove, '/profile/totp?notice=removed');
}
