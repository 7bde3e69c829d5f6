import type { FastifyReply, FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import { frameFor } from '../accounts/dashboard-routes.ts';
import { formErrors, shownError } from '../accounts/page-routes.ts';
import { signedIn } from '../accounts/principal.ts';
import { isUuid, type TenantSql } from '../db/tenant.ts';
import type { App } from '../http/app.ts';
import { boundTenant, DEFAULT_PAGE, type PageCursors } from '../http/page-cursor.ts';
import { IdParams } from '../http/schemas.ts';
import { MULTILINE } from '../http/text-input.ts';
import { confirmPage, forbiddenPage, notFoundPage } from '../web/dashboard-pages.ts';
import { bodyText, formProblems, sendPage } from '../web/forms.ts';
import { badCursorPage, readListPage } from '../web/list-pages.ts';
import { type ThreadPageInput, threadNoticeFrom, threadPage, threadsPage } from '../web/thread-pages.ts';
import {
  authorizeThreadOwner,
  closeThread,
  listMessages,
  listThreads,
  MAX_MESSAGE_BYTES,
  messageProblem,
  postOwnerMessage,
} from './threads.ts';

// The owner's thread pages (RLY-4): the tenant's threads, one thread with
// its messages, the owner's reply and closing. Pages only; the rules live in
// threads.ts. A thread is shown and acted on only by whoever passes
// authorizeThreadOwner (relay.approve on its agent, as for connections): an
// unknown id, a malformed one and another tenant's are the same 404; a
// member on a colleague's agent gets the Not allowed page, as on
// /dashboard/connections.

const LABELS = { text: 'Reply' };

const ReplyBody = Type.Object({ text: Type.String({ ...MULTILINE }) }, { additionalProperties: false });

type Extra = Pick<ThreadPageInput, 'values' | 'errors' | 'notice' | 'error'>;

/** `?after=` of a thread's message pages: the seq the page follows (0 or absent: the first page). */
function afterSeq(query: unknown): number | undefined {
  const after = (query as { after?: unknown } | undefined)?.after;
  if (after === undefined) return 0;
  return typeof after === 'string' && /^\d{1,9}$/.test(after) ? Number(after) : undefined;
}

/** Who wrote each owner message of the page (users.username), by message id. */
async function ownerNames(tx: TenantSql, messageIds: readonly string[]): Promise<Map<string, string>> {
  if (messageIds.length === 0) return new Map();
  const rows = await tx<{ id: string; username: string }[]>`
    select m.id, u.username from relay_messages m join users u on u.id = m.author_user_id
    where ${boundTenant(tx, tx`m.tenant_id`)} and m.id = any(${messageIds}::uuid[])`;
  return new Map(rows.map((row) => [row.id, row.username]));
}

export function registerThreadPages(app: App, deps: { cursors: PageCursors }): void {
  const user = { auth: 'user' as const };
  const hide = { hide: true } as const;
  const byId = { config: user, attachValidation: true, schema: { ...hide, params: IdParams } };

  const notFound = async (request: FastifyRequest, reply: FastifyReply, what = 'thread') =>
    sendPage(reply, 404, notFoundPage(await frameFor(request), what));

  /** The answer to a refused or failed thread action: the same 404 for unknown and foreign, else the page says why. */
  const refused = async (request: FastifyRequest, reply: FastifyReply, error: unknown) => {
    const shown = shownError(reply, error);
    if (shown.status === 404) return notFound(request, reply);
    return sendPage(reply, shown.status, forbiddenPage(await frameFor(request), shown.message));
  };

  app.get('/dashboard/threads', { config: user, schema: hide }, async (request, reply) => {
    const tenantId = signedIn(request).user.tenant_id;
    const agentId = (request.query as { agent_id?: unknown }).agent_id;
    // The filter is attacker-controlled: a uuid or nothing, then looked up under the tenant's RLS.
    if (agentId !== undefined && !isUuid(agentId)) return notFound(request, reply, 'agent');
    const read = await request.withTenant(async (tx) => {
      const [agent] =
        agentId === undefined
          ? [undefined]
          : await tx<{ id: string; handle: string }[]>`
              select id, handle from agents where ${boundTenant(tx)} and id = ${agentId}::uuid`;
      if (agentId !== undefined && agent === undefined) return 'no-agent' as const;
      const list = await readListPage(
        deps.cursors,
        { list: 'threads', tenantId, ...(agentId === undefined ? {} : { of: agentId }) },
        '/dashboard/threads',
        request.query,
        (at) => listThreads(tx, at, { agentId }),
      );
      if (list === undefined) return undefined;
      const ids = [...new Set(list.rows.map((thread) => thread.agent_id))];
      const handles = await tx<{ id: string; handle: string }[]>`
        select id, handle from agents where ${boundTenant(tx)} and id = any(${ids}::uuid[])`;
      return { list, agent, handles: new Map(handles.map((row) => [row.id, row.handle])) };
    });
    if (read === 'no-agent') return notFound(request, reply, 'agent');
    const frame = await frameFor(request);
    if (read === undefined)
      return sendPage(reply, 400, badCursorPage(frame, 'threads', '/dashboard/threads'));
    return sendPage(
      reply,
      200,
      threadsPage(frame, {
        threads: read.list.rows,
        pager: { ...read.list.pager, query: agentId === undefined ? undefined : { agent_id: agentId } },
        handles: read.handles,
        agent: read.agent,
      }),
    );
  });

  /** The thread page, for a principal who passes authorizeThreadOwner; otherwise the refusal. */
  const render = async (
    request: FastifyRequest<{ Params: { id: string } }>,
    reply: FastifyReply,
    status: number,
    extra: Extra,
  ) => {
    const id = request.params.id;
    const path = `/dashboard/threads/${id}`;
    const after = afterSeq(request.query);
    let read: Omit<ThreadPageInput, keyof Extra | 'pager'> & { next: string | null };
    try {
      read = await request.withTenant(async (tx) => {
        const thread = await authorizeThreadOwner(tx, signedIn(request), id);
        const [agent] = await tx<{ handle: string }[]>`
          select handle from agents where ${boundTenant(tx)} and id = ${thread.agent_id}::uuid`;
        const rows = await listMessages(tx, id, { afterSeq: after ?? 0, limit: DEFAULT_PAGE });
        const messages = rows.slice(0, DEFAULT_PAGE);
        const last = messages.at(-1);
        const owners = messages.filter((message) => message.author === 'owner').map((message) => message.id);
        return {
          thread,
          agentHandle: agent?.handle ?? thread.agent_id,
          messages,
          ownerNames: await ownerNames(tx, owners),
          next: rows.length > DEFAULT_PAGE && last !== undefined ? String(last.seq) : null,
        };
      });
    } catch (error) {
      return refused(request, reply, error);
    }
    const frame = await frameFor(request);
    // Checked after the owner check, so a foreign thread's id is 404 whatever the query.
    if (after === undefined) return sendPage(reply, 400, badCursorPage(frame, 'messages', path));
    const { next, ...shown } = read;
    return sendPage(
      reply,
      status,
      threadPage(frame, { ...shown, pager: { path, next, later: after > 0 }, ...extra }),
    );
  };

  app.get('/dashboard/threads/:id', byId, async (request, reply) => {
    if (request.validationError !== undefined) return notFound(request, reply);
    return render(request, reply, 200, { notice: threadNoticeFrom(request.query) });
  });

  app.post(
    '/dashboard/threads/:id/messages',
    { config: user, attachValidation: true, schema: { ...hide, params: IdParams, body: ReplyBody } },
    async (request, reply) => {
      if (!isUuid(request.params.id)) return notFound(request, reply);
      // Text over the limit is not written back into the form: it could not be sent as it is.
      const values = { text: bodyText(request.body, 'text', MAX_MESSAGE_BYTES) };
      if (request.validationError !== undefined) {
        return render(request, reply, 400, {
          values,
          errors: formErrors(formProblems(request.validationError, LABELS)),
        });
      }
      const problem = messageProblem(request.body.text, 'text');
      if (problem !== undefined) {
        const shown = shownError(reply, problem);
        const errors = formErrors({ field: 'text', message: `${LABELS.text} ${shown.message}.` });
        return render(request, reply, shown.status, { values, errors });
      }
      try {
        const principal = signedIn(request);
        await request.withTenant(async (tx) => {
          await authorizeThreadOwner(tx, principal, request.params.id);
          await postOwnerMessage(tx, request.params.id, principal.user.id, request.body.text);
        });
      } catch (error) {
        const shown = shownError(reply, error);
        if (shown.status === 404 || shown.status === 403) return refused(request, reply, error);
        return render(request, reply, shown.status, { values, error: shown.message });
      }
      return reply.redirect(`/dashboard/threads/${request.params.id}?notice=replied`, 303);
    },
  );

  // Closing is confirmed first, on a page of its own (works without JavaScript).
  app.get('/dashboard/threads/:id/close', byId, async (request, reply) => {
    if (request.validationError !== undefined) return notFound(request, reply);
    let requester: string;
    try {
      const thread = await request.withTenant((tx) =>
        authorizeThreadOwner(tx, signedIn(request), request.params.id),
      );
      if (thread.state !== 'open') {
        return render(request, reply, 409, { error: `The thread is ${thread.state} already.` });
      }
      requester = thread.requester_handle ?? 'the person who asked';
    } catch (error) {
      return refused(request, reply, error);
    }
    return sendPage(
      reply,
      200,
      confirmPage(await frameFor(request), {
        title: 'Close this thread?',
        consequence: `${requester} can no longer write in it, and nobody can reply in it. This cannot be undone; a new thread would be needed.`,
        action: `/dashboard/threads/${request.params.id}/close`,
        button: 'Close thread',
        back: `/dashboard/threads/${request.params.id}`,
      }),
    );
  });

  app.post('/dashboard/threads/:id/close', byId, async (request, reply) => {
    if (request.validationError !== undefined) return notFound(request, reply);
    try {
      const principal = signedIn(request);
      await request.withTenant(async (tx) => {
        await authorizeThreadOwner(tx, principal, request.params.id);
        await closeThread(tx, request.params.id);
      });
    } catch (error) {
      const shown = shownError(reply, error);
      if (shown.status === 404 || shown.status === 403) return refused(request, reply, error);
      return render(request, reply, shown.status, { error: shown.message });
    }
    return reply.redirect(`/dashboard/threads/${request.params.id}?notice=closed`, 303);
  });
}
