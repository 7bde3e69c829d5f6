import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Sql } from 'postgres';
import { recordFor } from '../accounts/audit-events.ts';
import { frameFor, type ProfileSection } from '../accounts/dashboard-routes.ts';
import { shownError } from '../accounts/page-routes.ts';
import { signedIn } from '../accounts/principal.ts';
import { withTenant } from '../db/tenant.ts';
import type { App } from '../http/app.ts';
import { ProblemSchema, sendProblem } from '../http/problems.ts';
import type { RateLimits } from '../http/rate-limits.ts';
import { assertRecentSignIn, needsReauth, reauthRedirect } from '../signin/recent-sign-in.ts';
import { LAST_WAY_MESSAGE, lockSignInWays } from '../signin/sign-in-ways.ts';
import { confirmPage, notFoundPage } from '../web/dashboard-pages.ts';
import { bodyText, formProblem, sendPage } from '../web/forms.ts';
import {
  BROWSER_BUNDLE_PATH,
  passkeyProblemPage,
  passkeySection,
  renamePasskeyPage,
} from '../web/passkey-section.ts';
import { PasskeyError } from './errors.ts';
import type { PasskeyRegistration } from './registration.ts';
import {
  CreationOptions,
  FactorParams,
  OptionsBody,
  PASSKEY_NAME_MAX,
  RegisterForm,
  RenameForm,
  readRegistrationCredential,
} from './schemas.ts';
import { findPasskey, listPasskeys, removePasskey, renamePasskey } from './store.ts';

// The passkeys of /profile (ACC-8): the options JSON route and the add form
// (its hidden `credential` field holds the browser's answer, put there by
// static/passkeys.js), rename and remove (each a page of its own, so they
// work without JavaScript), and the library's browser bundle, served from
// this origin for the strict CSP.

export interface PasskeyRouteDeps {
  readonly registration: PasskeyRegistration;
  readonly rateLimits: Pick<RateLimits, 'consume'>;
}

/** @simplewebauthn/browser's UMD bundle (it defines SimpleWebAuthnBrowser), read once at start-up. */
function browserBundle(): Buffer {
  const require = createRequire(import.meta.url);
  const entry = require.resolve('@simplewebauthn/browser');
  const root = entry.slice(0, entry.lastIndexOf('/script/'));
  return readFileSync(`${root}/dist/bundle/index.umd.min.js`);
}

/** The /profile section listing the user's passkeys, with the add form. */
export function passkeysProfileSection(sql: Sql): ProfileSection {
  return async (principal) =>
    passkeySection(
      await withTenant(sql, principal.user.tenant_id, (tx) => listPasskeys(tx, principal.user.id)),
    );
}

const NAME_LABELS = { name: 'Passkey name' };
const RENAME_LABELS = { name: 'New name' };

export function registerPasskeyRoutes(app: App, deps: PasskeyRouteDeps): void {
  const { registration, rateLimits } = deps;
  const user = { auth: 'user' as const };
  const hide = { hide: true } as const;
  const byId = { config: user, attachValidation: true, schema: { ...hide, params: FactorParams } };

  const bundle = browserBundle();
  app.get(BROWSER_BUNDLE_PATH, { config: { auth: 'none' }, schema: hide }, async (_request, reply) =>
    reply.header('cache-control', 'public, max-age=3600').type('text/javascript; charset=utf-8').send(bundle),
  );

  const problem = async (
    request: FastifyRequest,
    reply: FastifyReply,
    status: number,
    title: string,
    message: string,
  ) => sendPage(reply, status, passkeyProblemPage(await frameFor(request), title, message));
  const notFound = async (request: FastifyRequest, reply: FastifyReply) =>
    sendPage(reply, 404, notFoundPage(await frameFor(request), 'passkey'));
  /** The passkey of this id if it is the signed-in user's (by id, under the tenant and this user). */
  const ownPasskey = (request: FastifyRequest, id: string) => {
    const principal = signedIn(request);
    return request.withTenant((tx) => findPasskey(tx, principal.user.id, id));
  };

  app.post(
    '/profile/passkeys/options',
    {
      config: user,
      schema: {
        operationId: 'passkeyRegistrationOptions',
        summary: 'Options to add a passkey to your account (WebAuthn registration)',
        description:
          'For the signed-in browser session only (an API token gets 403): the challenge is bound to the session, lasts 5 minutes and works once. An account holds at most 20 passkeys (then 409 passkey_limit). Pass the options to navigator.credentials.create() (or @simplewebauthn/browser startRegistration) and post the answer, as JSON text, in the `credential` field of the form POST /profile/passkeys.',
        tags: ['passkeys'],
        body: OptionsBody,
        response: {
          200: CreationOptions,
          400: ProblemSchema,
          403: ProblemSchema,
          409: ProblemSchema,
          429: ProblemSchema,
        },
      },
    },
    async (request, reply) => {
      const principal = signedIn(request);
      if (principal.sessionId === undefined) {
        return sendProblem(request, reply, 'forbidden', {
          detail: 'passkeys are added from a signed-in browser session, not with an API token',
        });
      }
      await rateLimits.consume('passkey_register', principal.user.id);
      reply.header('cache-control', 'no-store');
      return registration.options(principal, principal.sessionId);
    },
  );

  app.post(
    '/profile/passkeys',
    { config: user, attachValidation: true, schema: { ...hide, body: RegisterForm } },
    async (request, reply) => {
      const notAdded = (status: number, message: string) =>
        problem(request, reply, status, 'Passkey not added', message);
      if (request.validationError !== undefined) {
        return notAdded(
          400,
          formProblem(request.validationError, { ...NAME_LABELS, credential: 'The passkey' }).message,
        );
      }
      const principal = signedIn(request);
      if (principal.sessionId === undefined) {
        return notAdded(403, 'Passkeys are added from a signed-in browser session, not with an API token.');
      }
      const credential = readRegistrationCredential(request.body.credential);
      if (credential === undefined) return notAdded(400, 'The passkey could not be read. Try again.');
      try {
        await rateLimits.consume('passkey_register', principal.user.id);
        await registration.register(principal, principal.sessionId, { name: request.body.name, credential });
      } catch (error) {
        // The library's reason (another origin, a bad signature) is for the operator, not the page.
        if (error instanceof PasskeyError && error.cause instanceof Error) {
          request.log.info({ reason: error.cause.message }, 'passkey registration refused');
        }
        const shown = shownError(reply, error);
        return notAdded(shown.status, shown.message);
      }
      return reply.redirect('/profile?notice=passkey-added#passkeys', 303);
    },
  );

  app.get('/profile/passkeys/:id/rename', byId, async (request, reply) => {
    const passkey =
      request.validationError === undefined ? await ownPasskey(request, request.params.id) : undefined;
    if (passkey === undefined) return notFound(request, reply);
    return sendPage(reply, 200, renamePasskeyPage(await frameFor(request), { passkey }));
  });

  app.post(
    '/profile/passkeys/:id/rename',
    { config: user, attachValidation: true, schema: { ...hide, params: FactorParams, body: RenameForm } },
    async (request, reply) => {
      const params = request.params as { id?: unknown };
      const passkey =
        request.validationError?.validationContext === 'params' || typeof params.id !== 'string'
          ? undefined
          : await ownPasskey(request, params.id);
      if (passkey === undefined) return notFound(request, reply);
      if (request.validationError !== undefined) {
        return sendPage(
          reply,
          400,
          renamePasskeyPage(await frameFor(request), {
            passkey,
            value: bodyText(request.body, 'name', PASSKEY_NAME_MAX),
            error: formProblem(request.validationError, RENAME_LABELS).message,
          }),
        );
      }
      const principal = signedIn(request);
      const { name } = request.body;
      const renamed = await request.withTenant(async (tx) => {
        if (!(await renamePasskey(tx, principal.user.id, passkey.id, name))) return false;
        await recordFor(tx, principal, {
          action: 'factor.renamed',
          target: `user:${principal.user.id}`,
          data: { factor_id: passkey.id, kind: 'passkey' },
        });
        return true;
      });
      if (!renamed) return notFound(request, reply);
      return reply.redirect('/profile?notice=passkey-renamed#passkeys', 303);
    },
  );

  /** ACC-8: removing a passkey needs a sign-in within the last 10 minutes; else sign in again and come back here. */
  const recentSignIn = (request: FastifyRequest, reply: FastifyReply, id: string) => {
    try {
      assertRecentSignIn(signedIn(request));
      return undefined;
    } catch (error) {
      if (needsReauth(error)) return reauthRedirect(reply, `/profile/passkeys/${id}/remove`);
      throw error;
    }
  };

  app.get('/profile/passkeys/:id/remove', byId, async (request, reply) => {
    const passkey =
      request.validationError === undefined ? await ownPasskey(request, request.params.id) : undefined;
    if (passkey === undefined) return notFound(request, reply);
    const reauth = recentSignIn(request, reply, passkey.id);
    if (reauth !== undefined) return reauth;
    return sendPage(
      reply,
      200,
      confirmPage(await frameFor(request), {
        title: `Remove the passkey “${passkey.name}”?`,
        consequence:
          'It no longer signs you in, here or on any device that holds it. You can remove it from the device or password manager too.',
        action: `/profile/passkeys/${passkey.id}/remove`,
        button: 'Remove passkey',
        back: '/profile#passkeys',
      }),
    );
  });

  app.post('/profile/passkeys/:id/remove', byId, async (request, reply) => {
    if (request.validationError !== undefined) return notFound(request, reply);
    const principal = signedIn(request);
    const factorId = request.params.id;
    const reauth = recentSignIn(request, reply, factorId);
    if (reauth !== undefined) return reauth;
    const outcome = await request.withTenant(async (tx) => {
      const ways = await lockSignInWays(tx, principal.user.id);
      // A passkey signs in alone: without a password or an identity, the last one is the account's only way in.
      if (!ways.password && ways.identities === 0 && ways.passkeys <= 1) {
        return (await findPasskey(tx, principal.user.id, factorId)) ? 'last_sign_in_method' : 'not_found';
      }
      if (!(await removePasskey(tx, principal.user.id, factorId))) return 'not_found';
      await recordFor(tx, principal, {
        action: 'factor.removed',
        target: `user:${principal.user.id}`,
        data: { factor_id: factorId, kind: 'passkey' },
      });
      return 'removed';
    });
    if (outcome === 'not_found') return notFound(request, reply);
    if (outcome === 'last_sign_in_method') {
      return problem(request, reply, 409, 'Last way to sign in', LAST_WAY_MESSAGE);
    }
    return reply.redirect('/profile?notice=passkey-removed#passkeys', 303);
  });
}
