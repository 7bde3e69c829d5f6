import { Type } from 'typebox';
import { signedIn } from '../accounts/principal.ts';
import type { App } from '../http/app.ts';
import { NextAfter, type PageCursors, PageQuery, readPage } from '../http/page-cursor.ts';
import { ProblemSchema } from '../http/problems.ts';
import type { RateLimits } from '../http/rate-limits.ts';
import { curlExample, IdParams, Timestamp } from '../http/schemas.ts';
import { spendRelayPoints } from './rate-limits.ts';
import { OwnerThreadSchema, ownerThreadView } from './thread-views.ts';
import { listThreads, mintThreadToken, THREAD_TOKEN_MINUTES } from './threads.ts';

// /api/v1/threads: how a signed-in user (session or API token) reaches the
// relay's threads. The owner's side lists its tenant's threads (metadata
// only: bodies are read with a thread token); either side mints a thread
// token (RLY-4), which the data plane (/relay/v1) takes. HTTP only.

export function registerThreadsApi(
  app: App,
  deps: { cursors: PageCursors; rateLimits: Pick<RateLimits, 'consume'> },
): void {
  app.post(
    '/api/v1/threads/:id/access-token',
    {
      config: { auth: 'user' },
      schema: {
        operationId: 'mintThreadToken',
        summary: `A thread token (enc_thread_…, ${THREAD_TOKEN_MINUTES} minutes) to read, answer or close a relay thread: the owner's for a thread with your agent, a participant's for a thread you started`,
        tags: ['relay'],
        ...curlExample('POST', '/api/v1/threads/{id}/access-token'),
        params: IdParams,
        response: {
          201: Type.Object({
            thread_token: Type.String({ description: 'enc_thread_…: shown only in this answer' }),
            holder: Type.Union([Type.Literal('owner'), Type.Literal('participant')], {
              description: 'owner: may also answer (POST /relay/v1/threads/{id}/responses)',
            }),
            expires_at: Timestamp,
          }),
          403: ProblemSchema,
          404: ProblemSchema,
          429: ProblemSchema,
        },
      },
    },
    async (request, reply) => {
      const principal = signedIn(request);
      // RLY-5: before any lookup, per user and per client address.
      await spendRelayPoints(deps.rateLimits, 'token_mint', principal.user.id, request.ip);
      const minted = await request.withTenant((tx) => mintThreadToken(tx, principal, request.params.id));
      // A secret in the body: no cache may keep it.
      reply.header('cache-control', 'no-store');
      return reply
        .status(201)
        .send({ thread_token: minted.token, holder: minted.holder, expires_at: minted.expires_at });
    },
  );

  app.get(
    '/api/v1/threads',
    {
      config: { auth: 'user' },
      schema: {
        operationId: 'listThreads',
        summary:
          "A page of the relay threads with your tenant's agents, most recently active first (no bodies)",
        tags: ['relay'],
        querystring: Type.Object(
          {
            ...PageQuery.properties,
            agent_id: Type.Optional(
              Type.String({ format: 'uuid', description: 'Only the threads of this agent' }),
            ),
          },
          { additionalProperties: false },
        ),
        response: { 200: Type.Object({ threads: Type.Array(OwnerThreadSchema), next_after: NextAfter }) },
      },
    },
    async (request) => {
      const agentId = request.query.agent_id;
      const tenantId = signedIn(request).user.tenant_id;
      // after is attacker-controlled: the cursor must carry our MAC for this tenant's list (of this agent).
      const scope = { list: agentId === undefined ? 'threads' : `threads:${agentId}`, tenantId };
      const page = await request.withTenant((tx) =>
        readPage(deps.cursors, scope, request.query, (at) => listThreads(tx, at, { agentId })),
      );
      return { threads: page.rows.map(ownerThreadView), next_after: page.next };
    },
  );
}
