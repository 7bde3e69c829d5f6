import type { FastifyReply, FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import { clientInfo, safeNext, shownError } from '../accounts/page-routes.ts';
import { setSessionCookie, signedIn } from '../accounts/principal.ts';
import type { App } from '../http/app.ts';
import { needsReauth, reauthRedirect } from '../signin/recent-sign-in.ts';
import { beginSignIn, type SignInDeps } from '../signin/second-step.ts';
import { LIMITS, messagePage } from '../web/account-pages.ts';
import { bodyText, sendPage } from '../web/forms.ts';
import { FLOW_COOKIE, FLOW_MINUTES, type FlowPurpose } from './flows.ts';
import type { IdentitiesService } from './service.ts';

// The pages of provider sign-in (ACC-9): a button posts to
// /auth/:provider/start, which stores the flow and sends the browser to the
// provider; the provider sends it back to /auth/:provider/callback. /profile
// links and unlinks identities. HTML only, kept out of OpenAPI. Every failure
// is a page saying what happened, with a 4xx; nothing is created on one.

export interface IdentityRouteDeps {
  readonly identities: IdentitiesService;
  /** Where a proven identity's sign-in continues: the session, or the second step (ACC-8). */
  readonly signIn: SignInDeps;
}

const form = { additionalProperties: false } as const;
const ProviderParams = Type.Object(
  { provider: Type.String({ pattern: '^[a-z0-9][a-z0-9_-]{0,39}$' }) },
  form,
);
const IdParams = Type.Object({ id: Type.String({ format: 'uuid' }) }, form);
const StartBody = Type.Object(
  {
    invite: Type.Optional(Type.String({ maxLength: LIMITS.invite })),
    next: Type.Optional(Type.String({ maxLength: LIMITS.next })),
  },
  form,
);

const INVITE_NEEDED =
  'Accounts are made only by invite. If you have an invite link, open it and choose the provider there; if you already have an account, sign in with your password and link the provider from your profile.';

const TITLES: Readonly<Record<string, string>> = {
  invite_needed: 'Invite needed',
  invite_invalid: 'Invite not valid',
  identity_flow_invalid: 'Sign-in not valid',
  identity_failed: 'Sign-in failed',
  identity_in_use: 'Identity linked elsewhere',
  last_sign_in_method: 'Last way to sign in',
  not_found: 'Not found',
  rate_limited: 'Too many attempts',
};

function failurePage(
  reply: FastifyReply,
  error: unknown,
  back: { href: string; text: string },
): FastifyReply {
  const shown = shownError(reply, error);
  reply.header('cache-control', 'no-store');
  const message = shown.code === 'invite_needed' ? `${shown.message} ${INVITE_NEEDED}` : shown.message;
  return sendPage(reply, shown.status, messagePage(TITLES[shown.code] ?? 'Sign-in failed', message, back));
}

export function registerIdentityRoutes(app: App, deps: IdentityRouteDeps): void {
  const { identities, signIn } = deps;
  const { cookies } = signIn;
  const hide = { hide: true } as const;
  const toLogin = { href: '/login', text: 'Back to sign-in' };
  const toProfile = { href: '/profile', text: 'Back to your profile' };

  const start = async (
    request: FastifyRequest,
    reply: FastifyReply,
    input: { provider: string; purpose: FlowPurpose; invite?: string | undefined; next?: string | undefined },
  ): Promise<FastifyReply> => {
    await signIn.rateLimits.consume('identity_ip', request.ip);
    const started = await identities.start({
      provider: input.provider,
      purpose: input.purpose,
      principal: request.principal,
      invite: input.invite,
      next: input.next,
      browserCookie: request.cookies[FLOW_COOKIE],
    });
    // Always set, so a browser that started a flow keeps its secret for as long as the flow lives.
    reply.setCookie(FLOW_COOKIE, started.browserSecret, {
      httpOnly: true,
      // Lax: the provider's redirect back is a top-level GET from another site.
      sameSite: 'lax',
      secure: cookies.secure,
      path: '/auth/',
      maxAge: FLOW_MINUTES * 60,
    });
    reply.header('cache-control', 'no-store');
    // Not a redirect: the CSP's form-action 'self' also covers where a form's answer redirects to,
    // so browsers would refuse the provider. A page that moves on by itself (Refresh) is a new
    // navigation, with a link for a browser that does not follow Refresh.
    reply.header('refresh', `0;url=${started.url.href}`);
    return sendPage(
      reply,
      200,
      messagePage(`Continuing to ${started.label}`, `Taking you to ${started.label} to sign in.`, {
        href: started.url.href,
        text: `Continue to ${started.label}`,
      }),
    );
  };

  app.post(
    '/auth/:provider/start',
    {
      config: { auth: 'none' },
      attachValidation: true,
      schema: { ...hide, params: ProviderParams, body: StartBody },
    },
    async (request, reply) => {
      if (request.validationError !== undefined) {
        return sendPage(
          reply,
          400,
          messagePage('Sign-in not valid', 'This sign-in request is not valid.', toLogin),
        );
      }
      try {
        const invite = bodyText(request.body, 'invite', LIMITS.invite);
        return await start(request, reply, {
          provider: request.params.provider,
          purpose: 'sign_in',
          invite: invite === '' ? undefined : invite,
          next: safeNext(bodyText(request.body, 'next', LIMITS.next)),
        });
      } catch (error) {
        return failurePage(reply, error, toLogin);
      }
    },
  );

  app.get(
    '/auth/:provider/callback',
    { config: { auth: 'optional' }, attachValidation: true, schema: { ...hide, params: ProviderParams } },
    async (request, reply) => {
      reply.header('cache-control', 'no-store');
      if (request.validationError !== undefined) {
        return sendPage(reply, 404, messagePage('Not found', 'No such sign-in provider.', toLogin));
      }
      try {
        await signIn.rateLimits.consume('identity_ip', request.ip);
        const outcome = await identities.callback(
          {
            provider: request.params.provider,
            url: request.url,
            state: bodyText(request.query, 'state', 200),
            browserCookie: request.cookies[FLOW_COOKIE],
            principal: request.principal,
          },
          clientInfo(request),
        );
        if (outcome.outcome === 'linked') return reply.redirect('/profile?notice=identity-linked', 303);
        if (outcome.outcome === 'account_exists') {
          return sendPage(
            reply,
            200,
            messagePage(
              'Check your email',
              'We sent a message to the address this invite is for, saying how to go on. Open it to continue.',
            ),
          );
        }
        if (outcome.outcome === 'signed_up') {
          setSessionCookie(reply, outcome.session.token, cookies);
          return reply.redirect('/dashboard', 303);
        }
        return await beginSignIn(signIn, request, reply, {
          user: outcome.user,
          firstStep: `provider:${request.params.provider}`,
          next: safeNext(outcome.next ?? undefined),
        });
      } catch (error) {
        return failurePage(reply, error, request.principal === undefined ? toLogin : toProfile);
      }
    },
  );

  app.post(
    '/profile/link/:provider',
    { config: { auth: 'user' }, attachValidation: true, schema: { ...hide, params: ProviderParams } },
    async (request, reply) => {
      if (request.validationError !== undefined) {
        return sendPage(reply, 404, messagePage('Not found', 'No such sign-in provider.', toProfile));
      }
      try {
        return await start(request, reply, { provider: request.params.provider, purpose: 'link' });
      } catch (error) {
        if (needsReauth(error)) return reauthRedirect(reply, '/profile');
        return failurePage(reply, error, toProfile);
      }
    },
  );

  app.post(
    '/profile/identities/:id/unlink',
    { config: { auth: 'user' }, attachValidation: true, schema: { ...hide, params: IdParams } },
    async (request, reply) => {
      if (request.validationError !== undefined) {
        return sendPage(reply, 404, messagePage('Not found', 'No such linked identity.', toProfile));
      }
      try {
        await identities.unlink(signedIn(request), request.params.id);
      } catch (error) {
        if (needsReauth(error)) return reauthRedirect(reply, '/profile');
        return failurePage(reply, error, toProfile);
      }
      return reply.redirect('/profile?notice=identity-unlinked', 303);
    },
  );
}
