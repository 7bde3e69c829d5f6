import type { FastifyRequest } from 'fastify';
import type { Sql } from 'postgres';
import { withTenant } from '../db/tenant.ts';
import type { App } from '../http/app.ts';
import type { Frame } from '../web/html.ts';
import { sessionPrincipal, sessionTokenFrom } from './principal.ts';
import { may } from './roles.ts';
import type { Principal } from './service.ts';
import { resolveSession } from './sessions.ts';

// The header of every page names who is signed in, also on pages that need no
// sign-in (/docs, /dev/mail, the error pages): there the session cookie is
// resolved on demand, only to draw the header. It grants nothing: a page's
// own access is still decided by its route's `auth`.

declare module 'fastify' {
  interface FastifyRequest {
    /** The signed-in frame for this request's page, or undefined for an anonymous visitor. */
    pageFrame(): Promise<Frame | undefined>;
  }
}

async function frameOf(sql: Sql, principal: Principal): Promise<Frame> {
  const { user } = principal;
  const [tenant] = await withTenant(
    sql,
    user.tenant_id,
    (tx) => tx<{ name: string }[]>`select name from tenants where id = ${user.tenant_id}::uuid`,
  );
  return frameOfPrincipal(principal, tenant?.name ?? '');
}

/** The header of a signed-in page: who, which tenant, and the links the roles table allows them. */
export function frameOfPrincipal(principal: Principal, tenantName: string): Frame {
  return {
    username: principal.user.username,
    tenantName,
    canInvite: canInvite(principal),
    canReadAudit: may(principal, 'audit.read'),
  };
}

/** Tenant owners and admins manage their members' invites; operators invite new tenants. */
export function canInvite(principal: Principal): boolean {
  return may(principal, 'invite.manage') || principal.user.is_operator;
}

async function pagePrincipal(sql: Sql, request: FastifyRequest): Promise<Principal | undefined> {
  if (request.principal !== undefined) return request.principal;
  // A browser signs in with the cookie; a Bearer client gets no page frame.
  const token = request.headers.authorization === undefined ? sessionTokenFrom(request) : undefined;
  const found = token === undefined ? undefined : await resolveSession(sql, token);
  return found === undefined ? undefined : sessionPrincipal(found);
}

export function registerPageFrame(app: App, sql: Sql): void {
  app.decorateRequest('pageFrame', async function pageFrame(this: FastifyRequest) {
    const principal = await pagePrincipal(sql, this);
    return principal === undefined ? undefined : frameOf(sql, principal);
  });
}
