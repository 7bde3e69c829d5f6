import type { FastifyReply, FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import { frameFor } from '../accounts/dashboard-routes.ts';
import { formErrors, shownError } from '../accounts/page-routes.ts';
import { signedIn } from '../accounts/principal.ts';
import { may } from '../accounts/roles.ts';
import { HANDLE_PATTERN } from '../agents/handles.ts';
import type { TenantSql } from '../db/tenant.ts';
import type { App } from '../http/app.ts';
import type { PageCursors } from '../http/page-cursor.ts';
import type { RateLimits } from '../http/rate-limits.ts';
import { IdParams } from '../http/schemas.ts';
import { MULTILINE } from '../http/text-input.ts';
import {
  type ConnectionFormValues,
  type ConnectionsPageInput,
  connectionsNoticeFrom,
  connectionsPage,
} from '../web/connection-pages.ts';
import { confirmPage, forbiddenPage, notFoundPage } from '../web/dashboard-pages.ts';
import { bodyText, formProblems, sendPage } from '../web/forms.ts';
import { badCursorPage, readListPage } from '../web/list-pages.ts';
import {
  type Connection,
  type Decision,
  type Direction,
  decidableConnection,
  decideConnection,
  listConnections,
  MAX_CONNECTION_MESSAGE,
  requestConnection,
  spendConnectPoints,
} from './connections.ts';

// The connections dashboard (RLY-2): both lists, the request form, and the
// target's approve, deny and revoke. Pages only; the rules live in
// connections.ts, as for the API. /dashboard/connections shows the first page
// of each list; /dashboard/connections/incoming and …/outgoing page one list
// with the API's cursors.

const LABELS = { handle: 'Agent handle', agent_id: 'Who asks', message: 'Message' };
const HANDLE = new RegExp(HANDLE_PATTERN);
const MAX_AGENT_CHOICES = 500;

const RequestBody = Type.Object(
  {
    handle: Type.String({ maxLength: 40 }),
    agent_id: Type.String({ maxLength: 36 }),
    message: Type.String({ ...MULTILINE, minLength: 1, maxLength: MAX_CONNECTION_MESSAGE }),
  },
  { additionalProperties: false },
);

/** The agents this user may act for (members: the ones they created), as [id, handle]. */
async function agentChoices(tx: TenantSql, request: FastifyRequest): Promise<[string, string][]> {
  const principal = signedIn(request);
  const agents = await tx<{ id: string; handle: string; created_by: string | null }[]>`
    select id, handle, created_by from agents order by handle limit ${MAX_AGENT_CHOICES}::int4`;
  return agents
    .filter((agent) => may(principal, 'agent.manage', agent.created_by))
    .map((agent) => [agent.id, agent.handle]);
}

export function registerConnectionPages(
  app: App,
  deps: { cursors: PageCursors; rateLimits: Pick<RateLimits, 'consume'> },
): void {
  const user = { auth: 'user' as const };
  const hide = { hide: true } as const;
  const byId = { config: user, attachValidation: true, schema: { ...hide, params: IdParams } };

  const notFound = async (request: FastifyRequest, reply: FastifyReply) =>
    sendPage(reply, 404, notFoundPage(await frameFor(request), 'connection'));

  /** The page with `only` one list (paged by ?after=) or, without it, the first page of both. */
  const render = async (
    request: FastifyRequest,
    reply: FastifyReply,
    status: number,
    extra: Pick<ConnectionsPageInput, 'values' | 'errors' | 'notice' | 'error'>,
    only?: Direction,
  ) => {
    const tenantId = signedIn(request).user.tenant_id;
    const list = (tx: TenantSql, direction: Direction) =>
      readListPage(
        deps.cursors,
        { list: `connections-${direction}`, tenantId },
        `/dashboard/connections/${direction}`,
        only === direction ? request.query : {},
        (at) => listConnections(tx, direction, at),
      );
    const read = await request.withTenant(async (tx) => ({
      incoming: only === 'outgoing' ? undefined : await list(tx, 'incoming'),
      outgoing: only === 'incoming' ? undefined : await list(tx, 'outgoing'),
      agents: await agentChoices(tx, request),
    }));
    const frame = await frameFor(request);
    const page = only === undefined ? undefined : read[only];
    if (only !== undefined && page === undefined) {
      return sendPage(
        reply,
        400,
        badCursorPage(frame, `${only} connections`, `/dashboard/connections/${only}`),
      );
    }
    const empty = { rows: [], pager: { path: '/dashboard/connections', next: null, later: false } };
    const incoming = read.incoming ?? empty;
    const outgoing = read.outgoing ?? empty;
    return sendPage(
      reply,
      status,
      connectionsPage(frame, {
        incoming: incoming.rows,
        incomingPager: incoming.pager,
        outgoing: outgoing.rows,
        outgoingPager: outgoing.pager,
        agents: read.agents,
        ...extra,
      }),
    );
  };

  app.get('/dashboard/connections', { config: user, schema: hide }, async (request, reply) => {
    // ?handle= comes from the directory's Connect link: attacker-controlled, so kept only if it is a handle.
    const handle = (request.query as { handle?: unknown } | undefined)?.handle;
    const values = typeof handle === 'string' && HANDLE.test(handle) ? { handle } : {};
    return render(request, reply, 200, { values, notice: connectionsNoticeFrom(request.query) });
  });

  for (const direction of ['incoming', 'outgoing'] as const) {
    app.get(`/dashboard/connections/${direction}`, { config: user, schema: hide }, async (request, reply) =>
      render(request, reply, 200, {}, direction),
    );
  }

  app.post(
    '/dashboard/connections',
    { config: user, attachValidation: true, schema: { ...hide, body: RequestBody } },
    async (request, reply) => {
      const values: ConnectionFormValues = {
        handle: bodyText(request.body, 'handle', 40),
        agent_id: bodyText(request.body, 'agent_id', 36),
        message: bodyText(request.body, 'message', MAX_CONNECTION_MESSAGE),
      };
      if (request.validationError !== undefined) {
        const errors = formErrors(formProblems(request.validationError, LABELS));
        return render(request, reply, 400, { values, errors });
      }
      // The handle is attacker-controlled text: checked against the handle rule before it goes anywhere.
      if (!HANDLE.test(request.body.handle)) {
        const errors = formErrors({ field: 'handle', message: 'Agent handle is not a handle.' });
        return render(request, reply, 400, { values, errors });
      }
      // Over the limit, the answer is the 429 page with Retry-After (the error handler's), not the form.
      await spendConnectPoints(deps.rateLimits, signedIn(request).user.id, request.ip);
      try {
        const principal = signedIn(request);
        const { handle, agent_id, message } = request.body;
        await request.withTenant((tx) =>
          requestConnection(tx, principal, { handle, agentId: agent_id === '' ? null : agent_id, message }),
        );
        return reply.redirect('/dashboard/connections?notice=requested', 303);
      } catch (error) {
        const shown = shownError(reply, error);
        return render(request, reply, shown.status, { values, errors: formErrors(shown) });
      }
    },
  );

  const DONE: Readonly<Record<Decision, string>> = { approve: 'approved', deny: 'denied', revoke: 'revoked' };
  const decide = async (
    request: FastifyRequest<{ Params: { id: string } }>,
    reply: FastifyReply,
    decision: Decision,
  ) => {
    if (request.validationError !== undefined) return notFound(request, reply);
    try {
      const principal = signedIn(request);
      await request.withTenant((tx) => decideConnection(tx, principal, request.params.id, decision));
      return reply.redirect(`/dashboard/connections?notice=${DONE[decision]}`, 303);
    } catch (error) {
      const shown = shownError(reply, error);
      if (shown.status === 404) return notFound(request, reply);
      return render(request, reply, shown.status, { error: shown.message });
    }
  };

  app.post('/dashboard/connections/:id/approve', byId, (request, reply) => decide(request, reply, 'approve'));
  app.post('/dashboard/connections/:id/deny', byId, (request, reply) => decide(request, reply, 'deny'));

  // Revoking is confirmed first, on a page of its own (works without JavaScript).
  app.get('/dashboard/connections/:id/revoke', byId, async (request, reply) => {
    if (request.validationError !== undefined) return notFound(request, reply);
    const principal = signedIn(request);
    let connection: Connection;
    try {
      connection = await request.withTenant((tx) => decidableConnection(tx, principal, request.params.id));
    } catch (error) {
      const shown = shownError(reply, error);
      if (shown.status === 404) return notFound(request, reply);
      return sendPage(reply, shown.status, forbiddenPage(await frameFor(request), shown.message));
    }
    return sendPage(
      reply,
      200,
      confirmPage(await frameFor(request), {
        title: `Revoke the connection to ${connection.target_handle}?`,
        consequence: `${connection.requester_handle ?? 'The person who asked'} can no longer reach ${connection.target_handle}: its relay token stops working at once. This cannot be undone; a new request would be needed.`,
        action: `/dashboard/connections/${connection.id}/revoke`,
        button: 'Revoke connection',
        back: '/dashboard/connections',
      }),
    );
  });
  app.post('/dashboard/connections/:id/revoke', byId, (request, reply) => decide(request, reply, 'revoke'));
}
