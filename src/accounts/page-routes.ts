import type { FastifyReply, FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import { isAppError } from '../errors.ts';
import type { App } from '../http/app.ts';
import { isProblemCode, PROBLEM_TYPES } from '../http/problem-types.ts';
import { RateLimitedError } from '../http/rate-limits.ts';
import { RECENT_SIGN_IN_MINUTES } from '../signin/recent-sign-in.ts';
import { setChallengeCookie, verifyPath } from '../signin/second-step.ts';
import {
  confirmEmailPage,
  emailVerifiedPage,
  type FormErrors,
  LIMITS,
  loginPage,
  messagePage,
  type ProviderButton,
  recoverPage,
  recoverySentPage,
  resetPasswordPage,
  signupPage,
} from '../web/account-pages.ts';
import { bodyText, type FormProblem, formProblem, formProblems, noticeFrom, sendPage } from '../web/forms.ts';
import type { Frame } from '../web/html.ts';
import { DEVICE_COOKIE } from './device-cookies.ts';
import type { LinkPurpose, LinksService } from './links.ts';
import { PasswordChecksBusyError } from './password-pool.ts';
import {
  type CookieSettings,
  clearSessionCookie,
  sessionTokenFrom,
  setDeviceCookie,
  setSessionCookie,
} from './principal.ts';
import type { AccountsService, ClientInfo } from './service.ts';

// The pages of signing up, signing in and out, recovery and email
// verification. HTML only, kept out of OpenAPI (schema.hide). A form that
// fails its schema or the service's rules is shown again with the reason and
// a 4xx; a submitted password is never written back. Anything unexpected
// propagates to the error handler (a 500 problem).

export interface PageDeps {
  readonly accounts: AccountsService;
  readonly links: LinksService;
  readonly cookies: CookieSettings;
  /** Sign-in providers the login and signup pages offer buttons for (ACC-9). */
  readonly providers: readonly ProviderButton[];
}

export function clientInfo(request: FastifyRequest): ClientInfo {
  return { ip: request.ip, userAgent: request.headers['user-agent'] };
}

/**
 * Aborts when the client disconnects before its answer is sent, so work
 * still queued for it (a password check) is dropped rather than done for no one.
 */
export function clientGone(reply: FastifyReply): AbortSignal {
  const gone = new AbortController();
  const response = reply.raw;
  if (response.destroyed) gone.abort();
  else response.once('close', () => response.writableFinished || gone.abort());
  return gone.signal;
}

/** A form error the page can show: status and a message written for the user. */
export interface ShownError {
  readonly status: number;
  readonly code: string;
  readonly message: string;
  readonly field: string | undefined;
}

/** Maps an expected error to what the page shows (setting Retry-After on a 429); rethrows anything else. */
export function shownError(reply: FastifyReply, error: unknown): ShownError {
  if (error instanceof RateLimitedError) {
    reply.header('retry-after', String(error.retryAfterSeconds));
    const minutes = Math.ceil(error.retryAfterSeconds / 60);
    return {
      status: 429,
      code: 'rate_limited',
      message: `Too many attempts. Try again in ${minutes} minute${minutes === 1 ? '' : 's'}.`,
      field: undefined,
    };
  }
  if (error instanceof PasswordChecksBusyError) {
    reply.header('retry-after', String(error.retryAfterSeconds));
    return { status: 429, code: error.code, message: error.message, field: undefined };
  }
  if (isAppError(error) && isProblemCode(error.code) && PROBLEM_TYPES[error.code].status < 500) {
    // A 4xx AppError's message names the rule broken, never the submitted value.
    return {
      status: PROBLEM_TYPES[error.code].status,
      code: error.code,
      message: error.message,
      field: error.field,
    };
  }
  throw error;
}

/**
 * Where a form shows its problems: each by its own field, once; the box above
 * the form says how many to look at, and holds any problem of no field.
 */
export function formErrors(found: FormProblem | readonly FormProblem[]): FormErrors {
  const problems: readonly FormProblem[] = 'message' in found ? [found] : found;
  const placed = problems.filter((problem) => problem.field !== undefined);
  const unplaced = problems
    .filter((problem) => problem.field === undefined)
    .map((problem) => problem.message);
  const count = placed.length;
  const summary =
    count === 0
      ? []
      : [count === 1 ? 'Check the field marked below.' : `Check the ${count} fields marked below.`];
  const form = [...unplaced, ...summary].join(' ');
  return count === 0
    ? { form }
    : { form, fields: Object.fromEntries(placed.map((problem) => [problem.field, problem.message])) };
}

/**
 * Where to go after signing in. `next` is attacker-controlled: only a path on
 * this site is followed — one leading "/", not "//" or "/\" (which browsers
 * read as another host), printable ASCII only.
 */
export function safeNext(next: string | undefined): string | undefined {
  return next !== undefined && /^\/(?![/\\])[\x21-\x7e]*$/.test(next) ? next : undefined;
}

const REAUTH_NOTICE = `This needs a sign-in within the last ${RECENT_SIGN_IN_MINUTES} minutes. Sign in again to go on.`;

const INVITE_NEEDED =
  'Signing up needs an invite link. Ask an operator, or the owner of the tenant you are joining, for one.';

const CHECK_MAIL =
  'We sent a message to the address this invite is for, saying how to go on. Open it to continue.';

function invitePage(reply: FastifyReply, message: string): FastifyReply {
  return sendPage(reply, 400, messagePage('Invite not valid', `${message} ${INVITE_NEEDED}`));
}

function linkPage(reply: FastifyReply, purpose: LinkPurpose, message: string): FastifyReply {
  reply.header('cache-control', 'no-store');
  const again =
    purpose === 'recover'
      ? { href: '/recover', text: 'Ask for a new recovery link' }
      : { href: '/profile', text: 'Ask for a new confirmation link from your profile' };
  return sendPage(
    reply,
    400,
    messagePage('Link not valid', `${message} Links work once and expire after 60 minutes.`, again),
  );
}

const str = (maxLength: number) => Type.String({ maxLength });
const form = { additionalProperties: false } as const;
const SignupBody = Type.Object(
  {
    invite: str(LIMITS.invite),
    email: str(LIMITS.email),
    username: str(LIMITS.username),
    password: str(LIMITS.password),
  },
  form,
);
const LoginBody = Type.Object(
  { login: str(LIMITS.login), password: str(LIMITS.password), next: Type.Optional(str(LIMITS.next)) },
  form,
);
const RecoverBody = Type.Object({ login: str(LIMITS.login), email: str(LIMITS.email) }, form);
const ResetBody = Type.Object({ new_password: str(LIMITS.password) }, form);
const TokenParams = Type.Object({ token: str(100) }, form);

const SIGNUP_LABELS = {
  invite: 'The invite',
  email: 'Email address',
  username: 'Username',
  password: 'Password',
};
const LOGIN_LABELS = { login: 'Username or email', password: 'Password', next: 'The return address' };
const RECOVER_LABELS = { login: 'Username or email', email: 'Email address' };
const RESET_LABELS = { new_password: 'New password' };

export function registerAccountPages(app: App, deps: PageDeps): void {
  const { accounts, links, cookies, providers } = deps;
  const hide = { hide: true } as const;

  app.get('/', { config: { auth: 'optional' }, schema: hide }, async (request, reply) =>
    reply.redirect(request.principal === undefined ? '/login' : '/dashboard', 303),
  );

  app.get('/signup', { config: { auth: 'none' }, schema: hide }, async (request, reply) => {
    const invite = bodyText(request.query, 'invite', LIMITS.invite);
    if (invite === undefined || invite === '') {
      return sendPage(reply, 400, messagePage('Invite needed', INVITE_NEEDED));
    }
    try {
      const found = await accounts.inspectInvite(invite);
      reply.header('cache-control', 'no-store');
      return sendPage(
        reply,
        200,
        signupPage({ invite, boundEmail: found.email, values: {}, errors: {}, providers }),
      );
    } catch (error) {
      return invitePage(reply, shownError(reply, error).message);
    }
  });

  app.post(
    '/signup',
    { config: { auth: 'none' }, attachValidation: true, schema: { ...hide, body: SignupBody } },
    async (request, reply) => {
      const invite = bodyText(request.body, 'invite', LIMITS.invite) ?? '';
      const values = {
        email: bodyText(request.body, 'email', LIMITS.email),
        username: bodyText(request.body, 'username', LIMITS.username),
      };
      const again = async (status: number, errors: FormErrors): Promise<FastifyReply> => {
        try {
          const found = await accounts.inspectInvite(invite);
          return sendPage(
            reply,
            status,
            signupPage({ invite, boundEmail: found.email, values, errors, providers }),
          );
        } catch (error) {
          return invitePage(reply, shownError(reply, error).message);
        }
      };
      if (request.validationError !== undefined) {
        return again(400, formErrors(formProblems(request.validationError, SIGNUP_LABELS)));
      }
      try {
        const signedUp = await accounts.signup(request.body, clientInfo(request));
        if (signedUp.outcome === 'account_exists') {
          // ACC-1: the invite's address has an account; it was mailed, and this page says nothing more.
          reply.header('cache-control', 'no-store');
          return sendPage(reply, 200, messagePage('Check your email', CHECK_MAIL));
        }
        setSessionCookie(reply, signedUp.session.token, cookies);
        return reply.redirect('/dashboard', 303);
      } catch (error) {
        const shown = shownError(reply, error);
        if (shown.code === 'invite_invalid') return invitePage(reply, shown.message);
        return again(shown.status, formErrors(shown));
      }
    },
  );

  app.get('/login', { config: { auth: 'optional' }, schema: hide }, async (request, reply) => {
    const next = safeNext(bodyText(request.query, 'next', LIMITS.next));
    // ACC-8: ?reauth=1 asks a signed-in user to sign in again (a recent sign-in is needed).
    const reauth = bodyText(request.query, 'reauth', 1) === '1';
    if (request.principal !== undefined && !reauth) return reply.redirect(next ?? '/dashboard', 303);
    const notice = reauth ? REAUTH_NOTICE : noticeFrom(request.query);
    return sendPage(reply, 200, loginPage({ next, notice, providers }));
  });

  app.post(
    '/login',
    { config: { auth: 'none' }, attachValidation: true, schema: { ...hide, body: LoginBody } },
    async (request, reply) => {
      const next = safeNext(bodyText(request.body, 'next', LIMITS.next));
      const login = bodyText(request.body, 'login', LIMITS.login);
      if (request.validationError !== undefined) {
        const problem = formProblem(request.validationError, LOGIN_LABELS);
        return sendPage(reply, 400, loginPage({ login, next, error: problem.message, providers }));
      }
      try {
        const signedIn = await accounts.login(
          {
            ...request.body,
            next,
            previousSessionToken: sessionTokenFrom(request),
            deviceCookie: request.cookies[DEVICE_COOKIE],
          },
          { ...clientInfo(request), signal: clientGone(reply) },
        );
        setDeviceCookie(reply, signedIn.deviceCookie, cookies);
        if (signedIn.challenge !== undefined) {
          // ACC-8: the second step; no session until it is passed.
          setChallengeCookie(reply, signedIn.challenge, cookies);
          return reply.redirect(verifyPath(signedIn.challenge.id), 303);
        }
        setSessionCookie(reply, signedIn.session.token, cookies);
        return reply.redirect(next ?? '/dashboard', 303);
      } catch (error) {
        // ACC-6: one message for every failure (unknown login, wrong password, unverified email).
        const shown = shownError(reply, error);
        return sendPage(reply, shown.status, loginPage({ login, next, error: shown.message, providers }));
      }
    },
  );

  app.post('/logout', { config: { auth: 'optional' }, schema: hide }, async (request, reply) => {
    if (request.principal !== undefined) await accounts.logout(request.principal);
    clearSessionCookie(reply, cookies);
    return reply.redirect('/login?notice=signed-out', 303);
  });

  app.get('/recover', { config: { auth: 'none' }, schema: hide }, async (_request, reply) =>
    sendPage(reply, 200, recoverPage({})),
  );

  app.post(
    '/recover',
    { config: { auth: 'none' }, attachValidation: true, schema: { ...hide, body: RecoverBody } },
    async (request, reply) => {
      const values = {
        login: bodyText(request.body, 'login', LIMITS.login),
        email: bodyText(request.body, 'email', LIMITS.email),
      };
      if (request.validationError !== undefined) {
        const problem = formProblem(request.validationError, RECOVER_LABELS);
        return sendPage(reply, 400, recoverPage({ values, error: problem.message }));
      }
      try {
        const { reference } = await links.requestRecovery(request.body, clientInfo(request));
        reply.header('cache-control', 'no-store');
        return sendPage(reply, 200, recoverySentPage(reference));
      } catch (error) {
        const shown = shownError(reply, error);
        return sendPage(reply, shown.status, recoverPage({ values, error: shown.message }));
      }
    },
  );

  /** GET and POST of one link page: the token is checked on both, used only by the POST. */
  const linkRoutes = (
    path: string,
    purpose: LinkPurpose,
    show: (action: string, frame: Frame | undefined) => string,
    redeem: (request: FastifyRequest, reply: FastifyReply, token: string) => Promise<FastifyReply>,
    body?: typeof ResetBody,
  ) => {
    app.get(
      `${path}/:token`,
      { config: { auth: 'none' }, attachValidation: true, schema: { ...hide, params: TokenParams } },
      async (request, reply) => {
        if (request.validationError !== undefined) return linkPage(reply, purpose, 'This link is not valid.');
        try {
          await links.inspectLink(purpose, request.params.token, clientInfo(request));
        } catch (error) {
          const shown = shownError(reply, error);
          if (shown.status === 429)
            return sendPage(reply, 429, messagePage('Too many attempts', shown.message));
          return linkPage(reply, purpose, shown.message);
        }
        reply.header('cache-control', 'no-store');
        // Opened from a mail, often in a signed-in browser: the header says who (page-frame.ts).
        return sendPage(reply, 200, show(`${path}/${request.params.token}`, await request.pageFrame()));
      },
    );
    app.post(
      `${path}/:token`,
      {
        config: { auth: 'none' },
        attachValidation: true,
        schema: { ...hide, params: TokenParams, ...(body === undefined ? {} : { body }) },
      },
      async (request, reply) => {
        reply.header('cache-control', 'no-store');
        const params = request.params as { token?: unknown };
        const token = typeof params.token === 'string' ? params.token : '';
        if (request.validationError !== undefined && request.validationError.validationContext === 'params') {
          return linkPage(reply, purpose, 'This link is not valid.');
        }
        return redeem(request, reply, token);
      },
    );
  };

  linkRoutes('/verify-email', 'verify_email', confirmEmailPage, async (request, reply, token) => {
    try {
      const { email } = await links.verifyEmail(token, clientInfo(request));
      return sendPage(reply, 200, emailVerifiedPage(email, await request.pageFrame()));
    } catch (error) {
      const shown = shownError(reply, error);
      if (shown.status === 429) return sendPage(reply, 429, messagePage('Too many attempts', shown.message));
      return linkPage(reply, 'verify_email', shown.message);
    }
  });

  linkRoutes(
    '/recover',
    'recover',
    (action, frame) => resetPasswordPage({ action }, frame),
    async (request, reply, token) => {
      const action = `/recover/${token}`;
      if (request.validationError !== undefined) {
        const problem = formProblem(request.validationError, RESET_LABELS);
        return sendPage(reply, 400, resetPasswordPage({ action, error: problem.message }));
      }
      const password = bodyText(request.body, 'new_password', LIMITS.password) ?? '';
      try {
        await links.resetPassword(token, password, clientInfo(request));
      } catch (error) {
        const shown = shownError(reply, error);
        if (shown.code === 'link_invalid') return linkPage(reply, 'recover', shown.message);
        return sendPage(reply, shown.status, resetPasswordPage({ action, error: shown.message }));
      }
      clearSessionCookie(reply, cookies);
      return reply.redirect('/login?notice=password-reset', 303);
    },
    ResetBody,
  );
}
