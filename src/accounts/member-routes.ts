import type { FastifyReply, FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import type { App } from '../http/app.ts';
import { NextAfter, type PageCursors, PageQuery, readPage } from '../http/page-cursor.ts';
import { ProblemSchema } from '../http/problems.ts';
import { Id, IdParams, Timestamp } from '../http/schemas.ts';
import { requiresSecondFactor } from '../signin/policy.ts';
import { forbiddenPage, notFoundPage } from '../web/dashboard-pages.ts';
import { sendPage } from '../web/forms.ts';
import { badCursorPage, readListPage } from '../web/list-pages.ts';
import { membersNoticeFrom, membersPage, removeMemberPage } from '../web/members-page.ts';
import { frameFor } from './dashboard-routes.ts';
import { AccountsError } from './errors.ts';
import { assignableRoles, type MembersService } from './members.ts';
import { shownError } from './page-routes.ts';
import { type CookieSettings, clearSessionCookie, signedIn } from './principal.ts';
import { may, ROLES, RoleSchema } from './roles.ts';

// /api/v1/members and /dashboard/members: list a tenant's members, change a
// role, remove a member. HTTP only; the members service checks the role
// table (src/accounts/roles.ts) and keeps every tenant an owner.

const errors = {
  400: ProblemSchema,
  401: ProblemSchema,
  403: ProblemSchema,
  404: ProblemSchema,
  409: ProblemSchema,
};

const MemberSchema = Type.Object({
  id: Id,
  username: Type.String(),
  email: Type.String(),
  role: RoleSchema,
  created_at: Timestamp,
});

export function registerMembersApi(app: App, deps: { members: MembersService; cursors: PageCursors }): void {
  const { members } = deps;
  const auth = { auth: 'user' as const };

  app.get(
    '/api/v1/members',
    {
      config: auth,
      schema: {
        operationId: 'listMembers',
        summary: "A page of the tenant's members and their roles, oldest first",
        tags: ['members'],
        querystring: PageQuery,
        response: {
          200: Type.Object({ members: Type.Array(MemberSchema), next_after: NextAfter }),
          ...errors,
        },
      },
    },
    async (request) => {
      const principal = signedIn(request);
      const scope = { list: 'members', tenantId: principal.user.tenant_id };
      // after and limit are attacker-controlled: the cursor must carry our MAC for this tenant's member list.
      const page = await request.withTenant((tx) =>
        readPage(deps.cursors, scope, request.query, (at) => members.list(tx, principal, at)),
      );
      return { members: page.rows, next_after: page.next };
    },
  );

  app.patch(
    '/api/v1/members/:id',
    {
      config: auth,
      schema: {
        operationId: 'changeMemberRole',
        summary: "Change a member's role (owners and admins; only owners touch owners)",
        tags: ['members'],
        params: IdParams,
        body: Type.Object({ role: RoleSchema }, { additionalProperties: false }),
        response: { 200: MemberSchema, ...errors },
      },
    },
    async (request) => {
      const principal = signedIn(request);
      return request.withTenant((tx) =>
        members.changeRole(tx, principal, request.params.id, request.body.role),
      );
    },
  );

  app.delete(
    '/api/v1/members/:id',
    {
      config: auth,
      schema: {
        operationId: 'removeMember',
        summary: 'Remove a member: their account, sessions and API tokens end at once',
        tags: ['members'],
        params: IdParams,
        response: { 204: Type.Null(), ...errors },
      },
    },
    async (request, reply) => {
      const principal = signedIn(request);
      await request.withTenant((tx) => members.remove(tx, principal, request.params.id));
      return reply.status(204).send(null);
    },
  );
}

const form = { additionalProperties: false } as const;
const RoleBody = Type.Object({ role: Type.String({ maxLength: 20 }) }, form);

export function registerMembersPages(
  app: App,
  deps: { members: MembersService; cookies: CookieSettings; cursors: PageCursors },
): void {
  const { members } = deps;
  const user = { auth: 'user' as const };
  const withId = { config: user, attachValidation: true, schema: { hide: true, params: IdParams } };

  const show = async (
    request: FastifyRequest,
    reply: FastifyReply,
    status: number,
    extra: { notice?: string | undefined; error?: string | undefined },
  ) => {
    const principal = signedIn(request);
    // The same cursors as GET /api/v1/members: the tenant's one member list.
    const scope = { list: 'members', tenantId: principal.user.tenant_id };
    const list = await request.withTenant((tx) =>
      readListPage(deps.cursors, scope, '/dashboard/members', request.query, (at) =>
        members.list(tx, principal, at),
      ),
    );
    if (list === undefined) {
      return sendPage(reply, 400, badCursorPage(await frameFor(request), 'members', '/dashboard/members'));
    }
    const requireSecondFactor = await request.withTenant((tx) =>
      requiresSecondFactor(tx, principal.user.tenant_id),
    );
    return sendPage(
      reply,
      status,
      membersPage(await frameFor(request), {
        members: list.rows,
        pager: list.pager,
        currentUserId: principal.user.id,
        assignable: assignableRoles(principal),
        requireSecondFactor,
        canSetPolicy: may(principal, 'tenant.sign_in_policy'),
        ...extra,
      }),
    );
  };

  /** A refused or failed action: 404 page, 403 page, or the list again with the rule broken. */
  const failed = async (request: FastifyRequest, reply: FastifyReply, error: unknown) => {
    if (error instanceof AccountsError && error.code === 'not_found') {
      return sendPage(reply, 404, notFoundPage(await frameFor(request), 'member'));
    }
    if (error instanceof AccountsError && error.code === 'forbidden') {
      return sendPage(reply, 403, forbiddenPage(await frameFor(request), error.message));
    }
    const shown = shownError(reply, error);
    return show(request, reply, shown.status, { error: shown.message });
  };

  app.get('/dashboard/members', { config: user, schema: { hide: true } }, async (request, reply) => {
    try {
      return await show(request, reply, 200, { notice: membersNoticeFrom(request.query) });
    } catch (error) {
      return failed(request, reply, error);
    }
  });

  app.post(
    '/dashboard/members/:id/role',
    { config: user, attachValidation: true, schema: { hide: true, params: IdParams, body: RoleBody } },
    async (request, reply) => {
      if (request.validationError?.validationContext === 'params') {
        return sendPage(reply, 404, notFoundPage(await frameFor(request), 'member'));
      }
      // The role is attacker-controlled form text: only a role of the table goes on.
      const role = ROLES.find((name) => name === request.body?.role);
      if (request.validationError !== undefined || role === undefined) {
        return show(request, reply, 400, { error: 'Choose a role: owner, admin or member.' });
      }
      try {
        await request.withTenant((tx) => members.changeRole(tx, signedIn(request), request.params.id, role));
      } catch (error) {
        return failed(request, reply, error);
      }
      return reply.redirect('/dashboard/members?notice=role-changed', 303);
    },
  );

  // Removing asks first: the GET shows what goes, the POST removes.
  app.get('/dashboard/members/:id/remove', withId, async (request, reply) => {
    if (request.validationError !== undefined) {
      return sendPage(reply, 404, notFoundPage(await frameFor(request), 'member'));
    }
    const principal = signedIn(request);
    const target = await request.withTenant((tx) => members.find(tx, principal, request.params.id));
    if (target === undefined) return sendPage(reply, 404, notFoundPage(await frameFor(request), 'member'));
    if (!assignableRoles(principal).includes(target.role)) {
      return failed(request, reply, new AccountsError('forbidden', 'Your role cannot remove this member.'));
    }
    return sendPage(
      reply,
      200,
      removeMemberPage(await frameFor(request), target, target.id === principal.user.id),
    );
  });

  app.post('/dashboard/members/:id/remove', withId, async (request, reply) => {
    if (request.validationError !== undefined) {
      return sendPage(reply, 404, notFoundPage(await frameFor(request), 'member'));
    }
    const principal = signedIn(request);
    try {
      await request.withTenant((tx) => members.remove(tx, principal, request.params.id));
    } catch (error) {
      return failed(request, reply, error);
    }
    if (request.params.id === principal.user.id) {
      // Their own account is gone, and with it this session.
      clearSessionCookie(reply, deps.cookies);
      return reply.redirect('/login', 303);
    }
    return reply.redirect('/dashboard/members?notice=member-removed', 303);
  });
}
