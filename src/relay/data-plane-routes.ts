import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Sql } from 'postgres';
import { Type } from 'typebox';
import { withTenant } from '../db/tenant.ts';
import type { App } from '../http/app.ts';
import { RELAY_TOKEN_SCHEME, THREAD_TOKEN_SCHEME } from '../http/openapi.ts';
import { ProblemSchema } from '../http/problems.ts';
import type { RateLimits } from '../http/rate-limits.ts';
import { IdParams } from '../http/schemas.ts';
import { MULTILINE } from '../http/text-input.ts';
import { readBearer, refuseBearer } from './bearer.ts';
import { type RelayGrant, resolveRelayToken } from './connections.ts';
import { RelayError } from './errors.ts';
import { IDEMPOTENCY_HEADER, runIdempotent } from './idempotency.ts';
import { type RelayAction, spendRelayPoints } from './rate-limits.ts';
import { MessageSchema, messageView, ThreadSchema, threadView } from './thread-views.ts';
import {
  closeThread,
  getThread,
  listMessages,
  MAX_MESSAGE_BYTES,
  messageProblem,
  postCallerMessage,
  postOwnerMessage,
  resolveThreadToken,
  startThread,
  type ThreadAccess,
} from './threads.ts';

// /relay/v1: the relay's REST data plane (RLY-3, RLY-4, RLY-5, RLY-6).
//
//   POST /relay/v1/threads                    relay token   start a thread (Idempotency-Key)
//   POST /relay/v1/threads/:id/messages       relay token   a follow-up (Idempotency-Key)
//   GET  /relay/v1/threads/:id                thread token  the thread and a page of messages
//   POST /relay/v1/threads/:id/responses      owner's thread token  the owner's answer
//   POST /relay/v1/threads/:id/close          thread token  close it
//
// Each route's own onRequest hook, before the body is read: the Bearer token
// of the route's kind (grammar only), then RLY-5's points for it and the
// client address (before any lookup), then the lookup. Nothing here reads a
// cookie (`bearerOnly`: no CSRF surface). HTTP only: threads.ts does the work.

declare module 'fastify' {
  interface FastifyRequest {
    /** The grant of the request's relay token, set by the relay routes' onRequest hook. */
    relayGrant: RelayGrant | undefined;
    /** What the request's thread token opens, set by the thread routes' onRequest hook. */
    threadAccess: ThreadAccess | undefined;
  }
}

/** The largest page of messages one read returns. */
export const MAX_MESSAGES_PAGE = 200;
/**
 * The body limit of a message route: room for the largest message JSON can
 * carry (each byte escaped as \u00XX is six), so a valid message is never cut
 * off, and a megabyte is refused (413) as it arrives, unread.
 */
export const MESSAGE_BODY_LIMIT = 6 * MAX_MESSAGE_BYTES + 1024;

const TextBody = Type.Object(
  {
    text: Type.String({
      ...MULTILINE,
      description: `The message: at most ${MAX_MESSAGE_BYTES} bytes of UTF-8 (more: 413 message_too_large), not blank; no NUL or other control character but tab and line breaks (400 validation_failed)`,
    }),
  },
  { additionalProperties: false },
);

const IdempotencyHeaders = Type.Object({
  [IDEMPOTENCY_HEADER]: Type.Optional(
    Type.String({
      description:
        'RLY-6: an sf-string, e.g. "3f2a…". A retry with the same key and body within 24 hours answers the first status and body and creates nothing; another body: 422; while the first runs: 409',
    }),
  ),
});

const relayErrors = {
  400: ProblemSchema,
  401: ProblemSchema,
  404: ProblemSchema,
  409: ProblemSchema,
  413: ProblemSchema,
  429: ProblemSchema,
  503: ProblemSchema,
};

export interface DataPlaneDeps {
  readonly sql: Sql;
  readonly rateLimits: Pick<RateLimits, 'consume'>;
}

/** The request's relay grant; the route's hook set it or answered already. */
function grantOf(request: FastifyRequest): RelayGrant {
  if (request.relayGrant === undefined) throw new Error('relay route reached without its token hook');
  return request.relayGrant;
}

/** What the request's thread token opens, for the thread in the path only: another id is as unknown as a missing one. */
function accessTo(request: FastifyRequest, threadId: string): ThreadAccess {
  const access = request.threadAccess;
  if (access === undefined) throw new Error('thread route reached without its token hook');
  if (access.threadId !== threadId) throw new RelayError('not_found', 'no such thread');
  return access;
}

/** Refuses a blank, oversized or non-string text before any key is claimed or row written. */
function checkedText(text: string): string {
  const problem = messageProblem(text);
  if (problem !== undefined) throw problem;
  return text;
}

export function registerRelayDataPlane(app: App, deps: DataPlaneDeps): void {
  const { sql, rateLimits } = deps;
  app.decorateRequest('relayGrant', undefined);
  app.decorateRequest('threadAccess', undefined);

  const admitRelayToken =
    (action: RelayAction) =>
    async (request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply | undefined> => {
      const bearer = readBearer(request.headers.authorization, 'relay');
      if ('problem' in bearer) return refuseBearer(request, reply, bearer.problem, bearer.presented);
      await spendRelayPoints(rateLimits, action, bearer.key, request.ip);
      // A revoked, denied or pending connection's token resolves to nothing, like an unknown one.
      const grant = await resolveRelayToken(sql, bearer.token);
      if (grant === undefined) return refuseBearer(request, reply, 'relay_token_invalid', true);
      request.relayGrant = grant;
      return undefined;
    };

  const admitThreadToken = async (
    request: FastifyRequest,
    reply: FastifyReply,
  ): Promise<FastifyReply | undefined> => {
    const bearer = readBearer(request.headers.authorization, 'thread');
    if ('problem' in bearer) return refuseBearer(request, reply, bearer.problem, bearer.presented);
    await spendRelayPoints(rateLimits, 'read', bearer.key, request.ip);
    const access = await resolveThreadToken(sql, bearer.token);
    if (access === undefined) return refuseBearer(request, reply, 'thread_token_invalid', true);
    request.threadAccess = access;
    return undefined;
  };

  const relayRoute = { auth: 'none' as const, bearerOnly: true };
  const relaySecurity = [{ [RELAY_TOKEN_SCHEME]: [] }];
  const threadSecurity = [{ [THREAD_TOKEN_SCHEME]: [] }];

  app.post(
    '/relay/v1/threads',
    {
      config: relayRoute,
      bodyLimit: MESSAGE_BODY_LIMIT,
      onRequest: admitRelayToken('thread_start'),
      schema: {
        operationId: 'startRelayThread',
        summary:
          'Start a thread with the agent of your approved connection (Authorization: Bearer enc_relay_…); its first message is delivered to the agent',
        tags: ['relay'],
        security: relaySecurity,
        headers: IdempotencyHeaders,
        body: TextBody,
        response: {
          201: Type.Object({ thread: ThreadSchema, message: MessageSchema }),
          ...relayErrors,
          422: ProblemSchema,
        },
      },
    },
    async (request, reply) => {
      const grant = grantOf(request);
      const text = checkedText(request.body.text);
      const answer = await runIdempotent(
        sql,
        request,
        { tenantId: grant.targetTenantId, scope: `relay_token:${grant.connectionId}` },
        { required: false },
        async (tx) => {
          const started = await startThread(tx, grant, text);
          return {
            status: 201,
            body: { thread: threadView(started.thread), message: messageView(started.message) },
          };
        },
      );
      return reply.status(answer.status).send(answer.body);
    },
  );

  app.post(
    '/relay/v1/threads/:id/messages',
    {
      config: relayRoute,
      bodyLimit: MESSAGE_BODY_LIMIT,
      onRequest: admitRelayToken('follow_up'),
      schema: {
        operationId: 'postRelayMessage',
        summary:
          "A follow-up in an open thread of your connection (Bearer enc_relay_…); another connection's thread is 404",
        tags: ['relay'],
        security: relaySecurity,
        params: IdParams,
        headers: IdempotencyHeaders,
        body: TextBody,
        response: { 201: MessageSchema, ...relayErrors, 422: ProblemSchema },
      },
    },
    async (request, reply) => {
      const grant = grantOf(request);
      const text = checkedText(request.body.text);
      const answer = await runIdempotent(
        sql,
        request,
        { tenantId: grant.targetTenantId, scope: `relay_token:${grant.connectionId}` },
        { required: false },
        async (tx) => ({
          status: 201,
          body: messageView(await postCallerMessage(tx, grant, request.params.id, text)),
        }),
      );
      return reply.status(answer.status).send(answer.body);
    },
  );

  app.get(
    '/relay/v1/threads/:id',
    {
      config: relayRoute,
      onRequest: admitThreadToken,
      schema: {
        operationId: 'getRelayThread',
        summary:
          'The thread and a page of its messages in order (Authorization: Bearer enc_thread_… of this thread)',
        tags: ['relay'],
        security: threadSecurity,
        params: IdParams,
        querystring: Type.Object(
          {
            after_seq: Type.Optional(
              Type.Integer({
                minimum: 0,
                default: 0,
                description: 'Messages after this seq (0: from the first)',
              }),
            ),
            limit: Type.Optional(
              Type.Integer({
                minimum: 1,
                maximum: MAX_MESSAGES_PAGE,
                default: 100,
                description: `Messages per page, 1 to ${MAX_MESSAGES_PAGE}`,
              }),
            ),
          },
          { additionalProperties: false },
        ),
        response: {
          200: Type.Object({
            thread: ThreadSchema,
            messages: Type.Array(MessageSchema),
            next_after_seq: Type.Union([Type.Integer(), Type.Null()], {
              description: 'Pass as after_seq for the next page; null on the last page',
            }),
          }),
          ...relayErrors,
        },
      },
    },
    async (request) => {
      const access = accessTo(request, request.params.id);
      const limit = request.query.limit ?? 100;
      const afterSeq = request.query.after_seq ?? 0;
      const { thread, rows } = await withTenant(sql, access.tenantId, async (tx) => ({
        thread: await getThread(tx, access.threadId),
        rows: await listMessages(tx, access.threadId, { afterSeq, limit }),
      }));
      const page = rows.slice(0, limit);
      return {
        thread: threadView(thread),
        messages: page.map(messageView),
        next_after_seq: rows.length > limit ? (page.at(-1)?.seq ?? null) : null,
      };
    },
  );

  app.post(
    '/relay/v1/threads/:id/responses',
    {
      config: relayRoute,
      bodyLimit: MESSAGE_BODY_LIMIT,
      onRequest: admitThreadToken,
      schema: {
        operationId: 'postRelayOwnerResponse',
        summary:
          "The owner's answer in an open thread (the owner's thread token only; a participant's is 403)",
        tags: ['relay'],
        security: threadSecurity,
        params: IdParams,
        body: TextBody,
        response: { 201: MessageSchema, ...relayErrors, 403: ProblemSchema },
      },
    },
    async (request, reply) => {
      const access = accessTo(request, request.params.id);
      if (access.holder !== 'owner') {
        throw new RelayError(
          'forbidden',
          "Only the agent's owner answers here; a participant follows up with the relay token.",
        );
      }
      const text = checkedText(request.body.text);
      const message = await withTenant(sql, access.tenantId, (tx) =>
        postOwnerMessage(tx, access.threadId, access.mintedBy, text),
      );
      return reply.status(201).send(messageView(message));
    },
  );

  app.post(
    '/relay/v1/threads/:id/close',
    {
      config: relayRoute,
      onRequest: admitThreadToken,
      schema: {
        operationId: 'closeRelayThread',
        summary:
          'Close the thread (either holder of a thread token); closing a closed thread answers it as it is',
        tags: ['relay'],
        security: threadSecurity,
        params: IdParams,
        response: { 200: ThreadSchema, ...relayErrors },
      },
    },
    async (request) => {
      const access = accessTo(request, request.params.id);
      return threadView(await withTenant(sql, access.tenantId, (tx) => closeThread(tx, access.threadId)));
    },
  );
}
