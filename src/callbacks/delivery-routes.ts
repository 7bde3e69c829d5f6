import { Type } from 'typebox';
import { signedIn } from '../accounts/principal.ts';
import type { App } from '../http/app.ts';
import { NextAfter, type PageCursors, PageQuery, readPage } from '../http/page-cursor.ts';
import { ProblemSchema } from '../http/problems.ts';
import { curlExample, Id, IdParams, NullableTimestamp, Timestamp, TimestampIn } from '../http/schemas.ts';
import { getDelivery, listDeliveries, MAX_REPLAY_FAILED, replayFailed, replayOne } from './delivery-log.ts';

// The delivery log and replay of callback endpoints (RLY-7). HTTP only; the
// rules (who may, what a replay does) are in delivery-log.ts.

const errors = { 400: ProblemSchema, 401: ProblemSchema, 403: ProblemSchema, 404: ProblemSchema };

const State = Type.Union([Type.Literal('pending'), Type.Literal('succeeded'), Type.Literal('failed')]);

const DeliverySchema = Type.Object({
  id: Id,
  endpoint_id: Id,
  event_type: Type.String(),
  webhook_id: Type.String({ description: 'The webhook-id header: the same on every attempt and replay' }),
  state: State,
  attempts: Type.Integer(),
  last_status: Type.Union([Type.Integer(), Type.Null()]),
  next_attempt_at: NullableTimestamp,
  created_at: Timestamp,
  finished_at: NullableTimestamp,
  payload_bytes: Type.Integer({ description: 'The payload’s size in bytes, kept after it expires' }),
  payload_deleted_at: Type.Union([Timestamp, Type.Null()], {
    description:
      'When the payload and the answers’ excerpts were deleted, 30 days after the delivery was created (RLY-9); null while kept',
  }),
});

const AttemptSchema = Type.Object({
  number: Type.Integer(),
  attempted_at: Timestamp,
  status: Type.Union([Type.Integer(), Type.Null()], {
    description: 'The answer’s status; null when none came',
  }),
  latency_ms: Type.Integer(),
  error: Type.Union([Type.String(), Type.Null()], {
    description: 'timeout, refused, dns, forbidden_destination, too_large, tls, connection, …',
  }),
  response_prefix: Type.Union([Type.String(), Type.Null()], { description: 'The answer’s first 1 KB' }),
});

const DeliveryDetailSchema = Type.Object({
  ...DeliverySchema.properties,
  payload: Type.Union([Type.String(), Type.Null()], {
    description: 'The exact body signed and sent; null once expired (payload_deleted_at)',
  }),
  attempt_log: Type.Array(AttemptSchema),
});

export function registerDeliveryRoutes(app: App, deps: { cursors: PageCursors }): void {
  const auth = { auth: 'user' as const };

  app.get(
    '/api/v1/webhook-endpoints/:id/deliveries',
    {
      config: auth,
      schema: {
        operationId: 'listWebhookDeliveries',
        summary: "A page of a callback endpoint's deliveries, newest first",
        tags: ['webhooks'],
        params: IdParams,
        querystring: PageQuery,
        response: {
          200: Type.Object({ deliveries: Type.Array(DeliverySchema), next_after: NextAfter }),
          ...errors,
        },
      },
    },
    async (request) => {
      const principal = signedIn(request);
      const scope = { list: 'webhook-deliveries', tenantId: principal.user.tenant_id, of: request.params.id };
      const page = await request.withTenant((tx) =>
        readPage(deps.cursors, scope, request.query, (at) =>
          listDeliveries(tx, principal, request.params.id, at),
        ),
      );
      return { deliveries: page.rows, next_after: page.next };
    },
  );

  app.get(
    '/api/v1/webhook-deliveries/:id',
    {
      config: auth,
      schema: {
        operationId: 'getWebhookDelivery',
        summary: 'One callback delivery with its payload and every attempt',
        tags: ['webhooks'],
        params: IdParams,
        response: { 200: DeliveryDetailSchema, ...errors },
      },
    },
    async (request) => {
      const principal = signedIn(request);
      return request.withTenant((tx) => getDelivery(tx, principal, request.params.id));
    },
  );

  app.post(
    '/api/v1/webhook-deliveries/:id/replay',
    {
      config: auth,
      schema: {
        operationId: 'replayWebhookDelivery',
        summary: 'Send a finished delivery again: a new attempt series with the same webhook-id',
        tags: ['webhooks'],
        params: IdParams,
        ...curlExample('POST', '/api/v1/webhook-deliveries/{id}/replay'),
        response: {
          202: Type.Object({
            replayed: Type.Boolean({ description: 'false: it is still pending, or its payload expired' }),
          }),
          ...errors,
        },
      },
    },
    async (request, reply) => {
      const principal = signedIn(request);
      const replayed = await request.withTenant((tx) =>
        replayOne(tx, principal, principal.user.tenant_id, request.params.id),
      );
      return reply.status(202).send({ replayed });
    },
  );

  app.post(
    '/api/v1/webhook-endpoints/:id/replay-failed',
    {
      config: auth,
      schema: {
        operationId: 'replayFailedWebhookDeliveries',
        summary: `Send again every delivery of the endpoint that failed since a time (at most ${MAX_REPLAY_FAILED} a call)`,
        tags: ['webhooks'],
        params: IdParams,
        ...curlExample('POST', '/api/v1/webhook-endpoints/{id}/replay-failed', {
          since: '2026-01-01T00:00:00Z',
        }),
        body: Type.Object({ since: TimestampIn }, { additionalProperties: false }),
        response: { 202: Type.Object({ requeued: Type.Integer() }), ...errors },
      },
    },
    async (request, reply) => {
      const principal = signedIn(request);
      const since = new Date(request.body.since);
      const requeued = await request.withTenant((tx) =>
        replayFailed(tx, principal, principal.user.tenant_id, request.params.id, since),
      );
      return reply.status(202).send({ requeued });
    },
  );
}
