import type { FastifyReply, FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import { principalActor } from '../accounts/audit-events.ts';
import { frameFor } from '../accounts/dashboard-routes.ts';
import { signedIn } from '../accounts/principal.ts';
import { HANDLE_PATTERN } from '../agents/handles.ts';
import { isAppError } from '../errors.ts';
import type { App } from '../http/app.ts';
import { notFoundPage } from '../web/dashboard-pages.ts';
import { directoryPage, listingReviewPage, reviewNoticeFrom } from '../web/directory-pages.ts';
import { sendPage } from '../web/forms.ts';
import { type DirectoryDeps, MAX_DIRECTORY_QUERY, readDirectory } from './directory.ts';
import { DirectoryQuerySchema } from './listing-routes.ts';
import { decideListing, type ListingDecision, listingQueue, MAX_REJECT_REASON } from './listings.ts';

// The directory page (/directory, any signed-in user) and the operator's
// listing review (/operator/listings, users.is_operator only: to anyone else
// it does not exist, a 404 page). Pages only; the rules live in directory.ts
// and listings.ts, as for the API and the CLI.

const HandleParams = Type.Object(
  { handle: Type.String({ pattern: HANDLE_PATTERN }) },
  { additionalProperties: false },
);
const ReasonBody = Type.Object(
  { reason: Type.Optional(Type.String({ maxLength: MAX_REJECT_REASON })) },
  { additionalProperties: false },
);

export function registerDirectoryPages(app: App, deps: DirectoryDeps): void {
  const user = { auth: 'user' as const };
  const hide = { hide: true } as const;

  app.get(
    '/directory',
    { config: user, attachValidation: true, schema: { ...hide, querystring: DirectoryQuerySchema } },
    async (request, reply) => {
      const raw = request.query as { q?: unknown };
      const q = typeof raw.q === 'string' ? raw.q.slice(0, MAX_DIRECTORY_QUERY) : '';
      const frame = await frameFor(request);
      if (request.validationError !== undefined) {
        const error = `Search for at most ${MAX_DIRECTORY_QUERY} characters, on one line.`;
        return sendPage(reply, 400, directoryPage(frame, { q, entries: [], error }));
      }
      const { after } = request.query;
      let found: Awaited<ReturnType<typeof readDirectory>>;
      try {
        found = await readDirectory(deps, signedIn(request).user.tenant_id, { q, after });
      } catch (error) {
        if (!isAppError(error) || error.code !== 'cursor_invalid') throw error;
        const message = 'That page link is not valid here: it was changed, or it belongs to another search.';
        return sendPage(reply, 400, directoryPage(frame, { q, entries: [], error: message }));
      }
      const link = (extra: Record<string, string>) =>
        `/directory?${new URLSearchParams({ ...(q === '' ? {} : { q }), ...extra })}`;
      return sendPage(
        reply,
        200,
        directoryPage(frame, {
          q,
          entries: found.entries,
          next: found.next_after === null ? undefined : link({ after: found.next_after }),
          first: after === undefined ? undefined : link({}),
        }),
      );
    },
  );

  /** The operator, or a 404 page for anyone else (answered here; false then). */
  const operatorOnly = async (request: FastifyRequest, reply: FastifyReply): Promise<boolean> => {
    if (signedIn(request).user.is_operator) return true;
    await sendPage(reply, 404, notFoundPage(await frameFor(request), 'page'));
    return false;
  };

  const review = async (
    request: FastifyRequest,
    reply: FastifyReply,
    status: number,
    extra: { notice?: string | undefined; error?: string | undefined },
  ) =>
    sendPage(
      reply,
      status,
      listingReviewPage(await frameFor(request), { queue: await listingQueue(deps.sql), ...extra }),
    );

  app.get('/operator/listings', { config: user, schema: hide }, async (request, reply) => {
    if (!(await operatorOnly(request, reply))) return reply;
    return review(request, reply, 200, { notice: reviewNoticeFrom(request.query) });
  });

  for (const decision of ['approve', 'reject'] as const satisfies readonly ListingDecision[]) {
    app.post(
      `/operator/listings/:handle/${decision}`,
      {
        config: user,
        attachValidation: true,
        schema: { ...hide, params: HandleParams, body: ReasonBody },
      },
      async (request, reply) => {
        if (!(await operatorOnly(request, reply))) return reply;
        if (request.validationError !== undefined) {
          const error =
            request.validationError.validationContext === 'params'
              ? 'No listing of this handle awaits review.'
              : `A reason is at most ${MAX_REJECT_REASON} characters.`;
          return review(request, reply, 400, { error });
        }
        try {
          await decideListing(deps.sql, {
            handle: request.params.handle,
            decision,
            reason: decision === 'reject' ? request.body?.reason : undefined,
            actor: principalActor(signedIn(request)),
          });
        } catch (error) {
          if (!isAppError(error) || error.code !== 'not_found') throw error;
          return review(request, reply, 404, { error: 'No listing of this handle awaits review.' });
        }
        return reply.redirect(
          `/operator/listings?notice=${decision === 'approve' ? 'approved' : 'rejected'}`,
          303,
        );
      },
    );
  }
}
