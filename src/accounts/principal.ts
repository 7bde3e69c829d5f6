import type {} from '@fastify/cookie';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Sql } from 'postgres';
import { type TenantSql, withTenant } from '../db/tenant.ts';
import type { App } from '../http/app.ts';
import { sendProblem } from '../http/problems.ts';
import { tokenKind } from '../tokens.ts';
import { resolveApiToken } from './api-tokens.ts';
import { DEVICE_COOKIE, DEVICE_COOKIE_DAYS, DEVICE_COOKIE_PATH } from './device-cookies.ts';
import type { Principal } from './service.ts';
import { resolveSession, SESSION_COOKIE, SESSION_MINUTES, type SessionPrincipal } from './sessions.ts';

// Who a request acts for. A Bearer token is checked first, then the session
// cookie; both end in the same user check before any data access (ACC-10).
// Routes declare `config.auth`: 'none' (never resolved), 'optional' (resolved
// if present) or 'user' (required: pages redirect to /login, the API
// answers 401). A read-scoped token cannot use a writing method.

export type AuthMode = 'none' | 'optional' | 'user';

declare module 'fastify' {
  interface FastifyContextConfig {
    auth?: AuthMode;
  }
  interface FastifyRequest {
    principal: Principal | undefined;
    /** Runs fn in one transaction bound to the principal's tenant (TEN-3). */
    withTenant<T>(fn: (tx: TenantSql) => Promise<T>): Promise<T>;
  }
}

const READ_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

export interface CookieSettings {
  readonly secure: boolean;
}

export function setSessionCookie(reply: FastifyReply, token: string, settings: CookieSettings): void {
  reply.setCookie(SESSION_COOKIE, token, {
    signed: true,
    httpOnly: true,
    sameSite: 'lax',
    secure: settings.secure,
    path: '/',
    maxAge: SESSION_MINUTES * 60,
  });
}

export function clearSessionCookie(reply: FastifyReply, settings: CookieSettings): void {
  reply.clearCookie(SESSION_COOKIE, { path: '/', httpOnly: true, sameSite: 'lax', secure: settings.secure });
}

/** ACC-5: the device cookie a browser keeps across sign-outs; it carries its own MAC and expiry. */
export function setDeviceCookie(reply: FastifyReply, value: string, settings: CookieSettings): void {
  reply.setCookie(DEVICE_COOKIE, value, {
    httpOnly: true,
    sameSite: 'strict',
    secure: settings.secure,
    path: DEVICE_COOKIE_PATH,
    maxAge: DEVICE_COOKIE_DAYS * 86400,
  });
}

/** The session token from a correctly signed cookie; a tampered signature counts as no cookie. */
export function sessionTokenFrom(request: FastifyRequest): string | undefined {
  const raw = request.cookies[SESSION_COOKIE];
  if (raw === undefined) return undefined;
  const unsigned = request.unsignCookie(raw);
  return unsigned.valid && unsigned.value !== null ? unsigned.value : undefined;
}

type Resolution = { principal: Principal } | { problem: 'unauthenticated' | 'token_wrong_kind' } | undefined;

async function resolve(sql: Sql, request: FastifyRequest): Promise<Resolution> {
  const authorization = request.headers.authorization;
  if (authorization !== undefined) {
    // HTTP auth schemes are case-insensitive (RFC 9110 §11.1): "bearer" is Bearer.
    const match = /^Bearer ([\x21-\x7e]{1,200})$/i.exec(authorization);
    if (match?.[1] === undefined) return { problem: 'unauthenticated' };
    const kind = tokenKind(match[1]);
    if (kind === undefined) return { problem: 'unauthenticated' };
    if (kind !== 'live') return { problem: 'token_wrong_kind' };
    const found = await resolveApiToken(sql, match[1]);
    if (found === undefined) return { problem: 'unauthenticated' };
    return {
      principal: {
        user: found.user,
        via: 'token',
        sessionId: undefined,
        tokenId: found.tokenId,
        scope: found.scope,
        authenticatedAt: undefined,
        secondFactorMissing: found.secondFactorMissing,
      },
    };
  }
  const token = sessionTokenFrom(request);
  if (token === undefined) return undefined;
  const found = await resolveSession(sql, token);
  return found === undefined ? undefined : { principal: sessionPrincipal(found) };
}

/** The principal a live session stands for: it can write, and carries when its sign-in was passed. */
export function sessionPrincipal(found: SessionPrincipal): Principal {
  return {
    user: found.user,
    via: 'session',
    sessionId: found.sessionId,
    tokenId: undefined,
    scope: 'write',
    authenticatedAt: found.authenticatedAt,
    secondFactorMissing: found.secondFactorMissing,
  };
}

/** The principal of a route declaring auth: 'user', whose hook has already turned anonymous requests away. */
export function signedIn(request: FastifyRequest): Principal {
  if (request.principal === undefined)
    throw new Error('route reached without a principal (declare auth: user)');
  return request.principal;
}

/**
 * What a user the tenant's rule holds back (no second factor yet) may still
 * reach: /profile, where factors are set up, and who they are.
 */
function isSetupRoute(request: FastifyRequest): boolean {
  const path = request.routeOptions.url ?? '';
  return (
    path === '/profile' ||
    path.startsWith('/profile/') ||
    path === '/api/v1/me' ||
    path === '/api/v1/me/sign-in-methods' ||
    path === '/logout'
  );
}

/** A route under /api/, or one the API document describes (its clients read JSON, not a login page). */
function isApi(request: FastifyRequest): boolean {
  return request.url.startsWith('/api/') || request.routeOptions.schema?.operationId !== undefined;
}

export function registerPrincipal(app: App, sql: Sql, cookies: CookieSettings): void {
  app.decorateRequest('principal', undefined);
  app.decorateRequest('withTenant', function withPrincipalTenant<
    T,
  >(this: FastifyRequest, fn: (tx: TenantSql) => Promise<T>) {
    const principal = this.principal;
    if (principal === undefined) throw new Error('withTenant needs a signed-in principal (route auth: user)');
    return withTenant(sql, principal.user.tenant_id, fn);
  });

  // onRequest: before the body is read, so an anonymous client cannot make us parse anything.
  // Done-style, like every hook each request passes: routes without auth return at once, and
  // the others continue from the lookup's own promise instead of another async function's.
  app.addHook('onRequest', (request, reply, done) => {
    const mode = request.routeOptions.config.auth ?? 'none';
    if (mode === 'none') return done();
    resolve(sql, request)
      .then((resolution) => admit(request, reply, mode, resolution, cookies))
      .then((proceed) => {
        if (proceed) done();
      }, done);
  });
}

/** Sets the request's principal and returns true to go on, or answers the request (a problem or a redirect) and returns false. */
function admit(
  request: FastifyRequest,
  reply: FastifyReply,
  mode: Exclude<AuthMode, 'none'>,
  resolution: Resolution,
  cookies: CookieSettings,
): boolean {
  if (resolution !== undefined && 'principal' in resolution) {
    request.principal = resolution.principal;
    if (resolution.principal.secondFactorMissing && !isSetupRoute(request)) {
      // ACC-8: the tenant requires a second factor this user has not set up yet.
      if (isApi(request)) sendProblem(request, reply, 'second_factor_required');
      else reply.redirect('/profile?notice=second-factor-required', 303);
      return false;
    }
    if (resolution.principal.via === 'session') {
      // Slide the cookie with the server-side expiry.
      const token = sessionTokenFrom(request);
      if (token !== undefined) setSessionCookie(reply, token, cookies);
    } else if (resolution.principal.scope === 'read' && !READ_METHODS.has(request.method)) {
      sendProblem(request, reply, 'forbidden', { detail: 'this API token is read-only' });
      return false;
    }
    return true;
  }
  if (request.cookies[SESSION_COOKIE] !== undefined && request.headers.authorization === undefined) {
    clearSessionCookie(reply, cookies);
  }
  if (mode === 'optional') {
    // A bad Bearer token is an error even where signing in is optional.
    if (resolution === undefined) return true;
    sendProblem(request, reply, resolution.problem);
    return false;
  }
  if (isApi(request) || resolution !== undefined) {
    reply.header('www-authenticate', 'Bearer');
    sendProblem(request, reply, resolution?.problem ?? 'unauthenticated');
    return false;
  }
  // Only a page can be returned to: after signing in the browser GETs `next`.
  const next = request.method === 'GET' ? `?next=${encodeURIComponent(request.url)}` : '';
  reply.redirect(`/login${next}`, 303);
  return false;
}
