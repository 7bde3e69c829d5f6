import type { FastifyReply, FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import type { App } from '../http/app.ts';
import type { PageCursors } from '../http/page-cursor.ts';
import type { RateLimits } from '../http/rate-limits.ts';
import { needsReauth, reauthRedirect } from '../signin/recent-sign-in.ts';
import { LIMITS } from '../web/account-pages.ts';
import {
  confirmPage,
  dashboardPage,
  forbiddenPage,
  invitesPage,
  notFoundPage,
  tokensPage,
} from '../web/dashboard-pages.ts';
import { bodyText, formProblems, noticeFrom, sendPage } from '../web/forms.ts';
import type { Frame, Html } from '../web/html.ts';
import { badCursorPage, readListPage } from '../web/list-pages.ts';
import { type ProfileErrors, profilePage } from '../web/profile-page.ts';
import { inviteLink } from './invites.ts';
import type { LinksService } from './links.ts';
import { canInvite, frameOfPrincipal } from './page-frame.ts';
import { formErrors, shownError } from './page-routes.ts';
import { type CookieSettings, clearSessionCookie, signedIn } from './principal.ts';
import { may } from './roles.ts';
import { createSecretFlash } from './secret-flash.ts';
import { type AccountsService, type Principal, tokenInputProblems } from './service.ts';

// The signed-in pages: /dashboard, its token and invite settings, /profile.
// Every route is auth 'user' (anonymous page requests are sent to /login).
// Actions end in a 303 to a GET page (post/redirect/get): with a fixed
// notice, or, for the two that make a secret (a new token, a new invite
// link), with the secret kept server-side for that GET alone (secret-flash.ts).

export interface DashboardDeps {
  readonly accounts: AccountsService;
  readonly links: LinksService;
  readonly cookies: CookieSettings;
  readonly publicUrl: string;
  readonly rateLimits: Pick<RateLimits, 'consume'>;
  /** Seals the one-time secret cookies (secret-flash.ts). */
  readonly sessionKey: string;
  /** The API's list cursors: a page link and the API's next_after are the same cursor. */
  readonly cursors: PageCursors;
  /** Sections /profile shows for each sign-in method (ACC-8, ACC-9), each reading its own rows. */
  readonly profileSections: readonly ProfileSection[];
}

/** One sign-in method's part of /profile, for the signed-in principal. */
export type ProfileSection = (principal: Principal) => Promise<Html>;

const INVITES_FORBIDDEN = 'Only tenant owners, admins and operators manage invites.';

/** Whose flash a secret is: the session's, or for a page used with a Bearer token, that token's. */
export function flashOwner(principal: Principal): string {
  return principal.sessionId ?? `token:${principal.tokenId ?? ''}`;
}

/** The signed-in frame of a dashboard page: the user, the tenant's name, what they may manage. */
export async function frameFor(request: FastifyRequest): Promise<Frame> {
  const { user } = signedIn(request);
  const [tenant] = await request.withTenant(
    (tx) => tx<{ name: string }[]>`select name from tenants where id = ${user.tenant_id}::uuid`,
  );
  return frameOfPrincipal(signedIn(request), tenant?.name ?? '');
}

/** Page date input (YYYY-MM-DD): the end of that day, UTC. Empty means none. */
function endOfDay(value: string): Date | null | undefined {
  if (value === '') return null;
  if (!/^\d{4}-\d{2}-\d{2}$/.test(value)) return undefined;
  const date = new Date(`${value}T23:59:59.999Z`);
  return Number.isNaN(date.getTime()) || date.toISOString().slice(0, 10) !== value ? undefined : date;
}

const str = (maxLength: number) => Type.String({ maxLength });
const form = { additionalProperties: false } as const;
const IdParams = Type.Object({ id: Type.String({ format: 'uuid' }) }, form);
const TokenBody = Type.Object(
  {
    name: str(100),
    scope: Type.Union([Type.Literal('read'), Type.Literal('write')]),
    expires_at: Type.Optional(str(10)),
  },
  form,
);
const InviteBody = Type.Object(
  {
    email: str(LIMITS.email),
    kind: Type.Optional(Type.Union([Type.Literal('member'), Type.Literal('tenant')])),
    expires_days: Type.Optional(Type.Union([Type.Literal('1'), Type.Literal('7'), Type.Literal('30')])),
  },
  form,
);
const PasswordBody = Type.Object(
  { current_password: str(LIMITS.password), new_password: str(LIMITS.password) },
  form,
);
const EmailBody = Type.Object({ email: str(LIMITS.email), current_password: str(LIMITS.password) }, form);

const TOKEN_LABELS = { name: 'Name', scope: 'Scope', expires_at: 'Expiry' };
const INVITE_LABELS = { email: 'Email address', kind: 'Invite to', expires_days: 'Expiry' };
const PASSWORD_LABELS = { current_password: 'Current password', new_password: 'New password' };
const EMAIL_LABELS = { email: 'New email address', current_password: 'Current password' };

export function registerDashboardPages(app: App, deps: DashboardDeps): void {
  const { accounts, links, cookies } = deps;
  const mintedTokens = createSecretFlash<{ name: string; token: string }>('token', deps.sessionKey, cookies);
  const createdInvites = createSecretFlash<{ link: string | undefined; email: string | null }>(
    'invite',
    deps.sessionKey,
    cookies,
  );
  const user = { auth: 'user' as const };
  const hide = { hide: true } as const;
  const page = { config: user, schema: hide };
  const action = <B>(body: B) => ({ config: user, attachValidation: true, schema: { ...hide, body } });
  const revoke = { config: user, attachValidation: true, schema: { ...hide, params: IdParams } };

  const notFound = async (request: FastifyRequest, reply: FastifyReply, what: string) =>
    sendPage(reply, 404, notFoundPage(await frameFor(request), what));
  const badCursor = async (request: FastifyRequest, reply: FastifyReply, what: string, path: string) =>
    sendPage(reply, 400, badCursorPage(await frameFor(request), what, path));

  app.get('/dashboard', page, async (request, reply) =>
    sendPage(
      reply,
      200,
      dashboardPage(await frameFor(request), {
        pendingEmail: signedIn(request).user.pending_email,
        notice: noticeFrom(request.query),
      }),
    ),
  );

  // API tokens (ACC-10).
  const tokens = async (
    request: FastifyRequest,
    reply: FastifyReply,
    status: number,
    extra: Omit<Parameters<typeof tokensPage>[1], 'tokens' | 'pager'>,
  ) => {
    const principal = signedIn(request);
    // The same cursors as GET /api/v1/tokens: this user's token list.
    const scope = { list: 'tokens', tenantId: principal.user.tenant_id, of: principal.user.id };
    const path = '/dashboard/settings/tokens';
    const list = await readListPage(deps.cursors, scope, path, request.query, (at) =>
      accounts.listApiTokens(principal, at),
    );
    if (list === undefined) return badCursor(request, reply, 'your API tokens', path);
    return sendPage(
      reply,
      status,
      tokensPage(await frameFor(request), { tokens: list.rows, pager: list.pager, ...extra }),
    );
  };

  app.get('/dashboard/settings/tokens', page, async (request, reply) =>
    tokens(request, reply, 200, {
      notice: noticeFrom(request.query),
      minted: mintedTokens.take(request, reply, flashOwner(signedIn(request))),
    }),
  );

  app.post('/dashboard/settings/tokens', action(TokenBody), async (request, reply) => {
    const values = {
      name: bodyText(request.body, 'name', 100),
      scope: bodyText(request.body, 'scope', 10),
      expires_at: bodyText(request.body, 'expires_at', 10),
    };
    if (request.validationError !== undefined) {
      const errors = formErrors(formProblems(request.validationError, TOKEN_LABELS));
      return tokens(request, reply, 400, { values, errors });
    }
    const expiresAt = endOfDay(request.body.expires_at ?? '');
    // Every broken rule at once, each by its field (the service checks the same rules again).
    const problems =
      expiresAt === undefined
        ? [
            ...tokenInputProblems({ name: request.body.name, expiresAt: null }),
            { field: 'expires_at', message: 'Enter the expiry as a date (YYYY-MM-DD).' },
          ]
        : tokenInputProblems({ name: request.body.name, expiresAt });
    if (problems.length > 0 || expiresAt === undefined) {
      return tokens(request, reply, 400, { values, errors: formErrors(problems) });
    }
    try {
      const minted = await accounts.mintApiToken(signedIn(request), {
        name: request.body.name,
        scope: request.body.scope,
        expiresAt,
      });
      mintedTokens.put(reply, flashOwner(signedIn(request)), {
        name: minted.listing.name,
        token: minted.token,
      });
      return reply.redirect('/dashboard/settings/tokens', 303);
    } catch (error) {
      if (needsReauth(error)) return reauthRedirect(reply, '/dashboard/settings/tokens');
      const shown = shownError(reply, error);
      return tokens(request, reply, shown.status, { values, errors: formErrors(shown) });
    }
  });

  // Revoking is confirmed first, on a page of its own (works without JavaScript).
  const confirm = { config: user, attachValidation: true, schema: { ...hide, params: IdParams } };
  const askFirst = async (
    request: FastifyRequest,
    reply: FastifyReply,
    question: Parameters<typeof confirmPage>[1],
  ) => sendPage(reply, 200, confirmPage(await frameFor(request), question));
  app.get('/dashboard/settings/tokens/:id/revoke', confirm, async (request, reply) => {
    // By id, under the tenant and this user, like the revoke itself: wherever it is in the list.
    const token =
      request.validationError === undefined
        ? await accounts.findApiToken(signedIn(request), request.params.id)
        : undefined;
    if (token === undefined) return notFound(request, reply, 'token');
    return askFirst(request, reply, {
      title: `Revoke the token “${token.name}”?`,
      consequence: `Anything that uses ${token.prefix}…${token.last4} is refused from its next request on. This cannot be undone: a new token is needed to take its place.`,
      action: `/dashboard/settings/tokens/${token.id}/revoke`,
      button: 'Revoke token',
      back: '/dashboard/settings/tokens',
    });
  });

  app.post('/dashboard/settings/tokens/:id/revoke', revoke, async (request, reply) => {
    if (
      request.validationError !== undefined ||
      !(await accounts.revokeApiToken(signedIn(request), request.params.id))
    ) {
      return notFound(request, reply, 'token');
    }
    return reply.redirect('/dashboard/settings/tokens?notice=token-revoked', 303);
  });

  // Invites: owners invite members; operators also invite new tenants (ACC-1).
  const inviteKinds = (principal: Principal) =>
    [
      ...(may(principal, 'invite.manage') ? ['member' as const] : []),
      ...(principal.user.is_operator ? ['tenant' as const] : []),
    ] as const;
  const invites = async (
    request: FastifyRequest,
    reply: FastifyReply,
    status: number,
    extra: Omit<Parameters<typeof invitesPage>[1], 'invites' | 'kinds' | 'pager'>,
  ) => {
    const principal = signedIn(request);
    const frame = await frameFor(request);
    if (!canInvite(principal)) {
      return sendPage(reply, 403, forbiddenPage(frame, INVITES_FORBIDDEN));
    }
    // The same cursors as GET /api/v1/invites: an operator's list holds the platform's invites too.
    const scope = {
      list: principal.user.is_operator ? 'invites+platform' : 'invites',
      tenantId: principal.user.tenant_id,
    };
    const path = '/dashboard/settings/invites';
    const list = await readListPage(deps.cursors, scope, path, request.query, (at) =>
      accounts.listInvitePage(principal, at),
    );
    if (list === undefined) return badCursor(request, reply, 'invites', path);
    return sendPage(
      reply,
      status,
      invitesPage(frame, { invites: list.rows, pager: list.pager, kinds: inviteKinds(principal), ...extra }),
    );
  };

  app.get('/dashboard/settings/invites', page, async (request, reply) =>
    invites(request, reply, 200, {
      notice: noticeFrom(request.query),
      created: createdInvites.take(request, reply, flashOwner(signedIn(request))),
    }),
  );

  app.post('/dashboard/settings/invites', action(InviteBody), async (request, reply) => {
    const values = {
      email: bodyText(request.body, 'email', LIMITS.email),
      kind: bodyText(request.body, 'kind', 10),
      expires_days: bodyText(request.body, 'expires_days', 2),
    };
    if (request.validationError !== undefined) {
      const errors = formErrors(formProblems(request.validationError, INVITE_LABELS));
      return invites(request, reply, 400, { values, errors });
    }
    try {
      const created = await accounts.createInvite(signedIn(request), {
        email: request.body.email,
        kind: request.body.kind ?? 'member',
        expiresAt: new Date(Date.now() + Number(request.body.expires_days ?? '7') * 86400_000),
      });
      createdInvites.put(reply, flashOwner(signedIn(request)), {
        link: created.token === undefined ? undefined : inviteLink(deps.publicUrl, created.token),
        email: created.invite.email,
      });
      return reply.redirect('/dashboard/settings/invites', 303);
    } catch (error) {
      const shown = shownError(reply, error);
      return invites(request, reply, shown.status, { values, errors: formErrors(shown) });
    }
  });

  app.get('/dashboard/settings/invites/:id/revoke', confirm, async (request, reply) => {
    const principal = signedIn(request);
    if (!canInvite(principal)) {
      return sendPage(
        reply,
        403,
        forbiddenPage(await frameFor(request), 'Only tenant owners and operators manage invites.'),
      );
    }
    const invite =
      request.validationError === undefined
        ? await accounts.findPendingInvite(principal, request.params.id)
        : undefined;
    if (invite === undefined) return notFound(request, reply, 'invite');
    return askFirst(request, reply, {
      title: `Revoke the invite for ${invite.email ?? 'any address'}?`,
      consequence: 'Its link stops working at once. This cannot be undone: a new invite is needed instead.',
      action: `/dashboard/settings/invites/${invite.id}/revoke`,
      button: 'Revoke invite',
      back: '/dashboard/settings/invites',
    });
  });

  app.post('/dashboard/settings/invites/:id/revoke', revoke, async (request, reply) => {
    if (!canInvite(signedIn(request))) {
      return sendPage(reply, 403, forbiddenPage(await frameFor(request), INVITES_FORBIDDEN));
    }
    if (
      request.validationError !== undefined ||
      !(await accounts.revokeInvite(signedIn(request), request.params.id))
    ) {
      return notFound(request, reply, 'invite');
    }
    return reply.redirect('/dashboard/settings/invites?notice=invite-revoked', 303);
  });

  // Profile: sessions (ACC-3), password (ACC-11), email (ACC-7).
  const profile = async (
    request: FastifyRequest,
    reply: FastifyReply,
    status: number,
    extra: { notice?: string | undefined; errors?: ProfileErrors; newEmail?: string | undefined },
  ) => {
    const principal = signedIn(request);
    // The same cursors as GET /api/v1/sessions: this user's session list.
    const scope = { list: 'sessions', tenantId: principal.user.tenant_id, of: principal.user.id };
    const list = await readListPage(deps.cursors, scope, '/profile', request.query, (at) =>
      accounts.listSessions(principal, at),
    );
    if (list === undefined) return badCursor(request, reply, 'your sessions', '/profile');
    const sections = await Promise.all(deps.profileSections.map((section) => section(principal)));
    return sendPage(
      reply,
      status,
      profilePage(await frameFor(request), {
        user: principal.user,
        sessions: list.rows,
        pager: list.pager,
        currentSessionId: principal.sessionId,
        sections,
        ...extra,
      }),
    );
  };

  app.get('/profile', page, async (request, reply) =>
    profile(request, reply, 200, { notice: noticeFrom(request.query) }),
  );

  // Signing out another session, or every session, asks first (a page that works without JavaScript).
  app.get('/profile/sessions/revoke-all', page, async (request, reply) =>
    askFirst(request, reply, {
      title: 'Sign out everywhere?',
      consequence:
        'Every session of your account ends at once, this one included: each browser and device has to sign in again. API tokens are not affected.',
      action: '/profile/sessions/revoke-all',
      button: 'Sign out everywhere',
      back: '/profile',
    }),
  );

  app.get('/profile/sessions/:id/revoke', confirm, async (request, reply) => {
    const principal = signedIn(request);
    // By id, under the tenant and this user, like the revoke itself: wherever it is in the list.
    const session =
      request.validationError === undefined
        ? await accounts.findSession(principal, request.params.id)
        : undefined;
    if (session === undefined) return notFound(request, reply, 'session');
    const current = session.id === principal.sessionId;
    return askFirst(request, reply, {
      title: current ? 'Sign out of this session?' : 'Sign out that session?',
      consequence: current
        ? 'You are signed out here, and sign in again to continue.'
        : `The session from ${session.user_agent ?? 'an unknown browser'}${session.client_ip === null ? '' : ` at ${session.client_ip}`} ends at once: its next request is refused.`,
      action: `/profile/sessions/${session.id}/revoke`,
      button: 'Sign out',
      back: '/profile',
    });
  });

  app.post('/profile/sessions/revoke-all', { config: user, schema: hide }, async (request, reply) => {
    await accounts.signOutEverywhere(signedIn(request));
    clearSessionCookie(reply, cookies);
    return reply.redirect('/login?notice=signed-out-everywhere', 303);
  });

  app.post('/profile/sessions/:id/revoke', revoke, async (request, reply) => {
    const principal = signedIn(request);
    // ACC-3: revoking what is not this user's live session says so (404), whoever's it is.
    if (
      request.validationError !== undefined ||
      !(await accounts.revokeSession(principal, request.params.id))
    ) {
      return notFound(request, reply, 'session');
    }
    if (request.params.id === principal.sessionId) {
      clearSessionCookie(reply, cookies);
      return reply.redirect('/login?notice=signed-out', 303);
    }
    return reply.redirect('/profile?notice=session-revoked', 303);
  });

  app.post('/profile/password', action(PasswordBody), async (request, reply) => {
    if (request.validationError !== undefined) {
      const problem = formProblems(request.validationError, PASSWORD_LABELS);
      return profile(request, reply, 400, { errors: { password: formErrors(problem) } });
    }
    const principal = signedIn(request);
    try {
      // Checking the current password is a guess too (ACC-5), bounded per user: not the login
      // name's bucket, which strangers can fill, so a sign-in spray cannot block the owner here.
      await deps.rateLimits.consume('password_check', principal.user.id);
      await accounts.changePassword(principal, {
        current: request.body.current_password,
        next: request.body.new_password,
      });
    } catch (error) {
      const shown = shownError(reply, error);
      return profile(request, reply, shown.status, { errors: { password: formErrors(shown) } });
    }
    return reply.redirect('/profile?notice=password-changed', 303);
  });

  app.post('/profile/email/verify', { config: user, schema: hide }, async (request, reply) => {
    try {
      await links.requestVerification(signedIn(request));
    } catch (error) {
      const shown = shownError(reply, error);
      return profile(request, reply, shown.status, { errors: { verify: formErrors(shown) } });
    }
    return reply.redirect('/profile?notice=verification-sent', 303);
  });

  app.post('/profile/email', action(EmailBody), async (request, reply) => {
    const newEmail = bodyText(request.body, 'email', LIMITS.email);
    if (request.validationError !== undefined) {
      const problem = formProblems(request.validationError, EMAIL_LABELS);
      return profile(request, reply, 400, { errors: { email: formErrors(problem) }, newEmail });
    }
    try {
      await links.requestEmailChange(signedIn(request), {
        email: request.body.email,
        currentPassword: request.body.current_password,
      });
    } catch (error) {
      if (needsReauth(error)) return reauthRedirect(reply, '/profile');
      const shown = shownError(reply, error);
      return profile(request, reply, shown.status, { errors: { email: formErrors(shown) }, newEmail });
    }
    return reply.redirect('/profile?notice=email-pending', 303);
  });
}
