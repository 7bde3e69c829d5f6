import { Type } from 'typebox';
import { signedIn } from '../accounts/principal.ts';
import type { App } from '../http/app.ts';
import { NextAfter, type PageCursors, PageQuery, readPage } from '../http/page-cursor.ts';
import { ProblemSchema } from '../http/problems.ts';
import { curlExample, Id, IdParams, Timestamp } from '../http/schemas.ts';
import { MAX_CALLBACK_URL_LENGTH } from './destination.ts';
import { CALLBACK_EVENT_TYPES, type CallbackEndpoints, type ShownSecret } from './endpoints.ts';

// /api/v1/webhook-endpoints (RLY-7): callback URLs for relay thread events,
// on the owner's side (agent_id) or the caller's (connection_id). HTTP only;
// the rules live in endpoints.ts. The secret appears only in the answers of
// create and rotate-secret (their own schema): a read cannot carry it.

const errors = { 400: ProblemSchema, 401: ProblemSchema, 403: ProblemSchema, 404: ProblemSchema };

const EventTypes = Type.Array(Type.Union(CALLBACK_EVENT_TYPES.map((type) => Type.Literal(type))), {
  minItems: 1,
  maxItems: CALLBACK_EVENT_TYPES.length,
  uniqueItems: true,
  description: `The events to send: ${CALLBACK_EVENT_TYPES.join(', ')}`,
});
const Url = Type.String({ minLength: 1, maxLength: MAX_CALLBACK_URL_LENGTH });
const Description = Type.String({ maxLength: 200 });

const EndpointSchema = Type.Object({
  id: Id,
  agent_id: Type.Union([Id, Type.Null()], {
    description: 'Owner side: events of every thread with this agent',
  }),
  connection_id: Type.Union([Id, Type.Null()], {
    description: 'Caller side: events of the threads opened over this outgoing connection',
  }),
  url: Type.String(),
  description: Type.String(),
  event_types: Type.Array(Type.String()),
  sign_v1a: Type.Boolean({ description: 'Deliveries also carry a v1a (Ed25519) signature' }),
  public_key: Type.Union([Type.String(), Type.Null()], {
    description: 'The whpk_ key that verifies v1a signatures; null without v1a',
  }),
  state: Type.Union([Type.Literal('enabled'), Type.Literal('disabled')]),
  disabled_reason: Type.Union([Type.String(), Type.Null()], {
    description: 'Why deliveries stopped (a run of failures); POST …/enable turns it back on',
  }),
  consecutive_failures: Type.Integer(),
  previous_secret_until: Type.Union([Timestamp, Type.Null()], {
    description: 'After a rotation: until when the previous secret still signs (both signatures are sent)',
  }),
  created_at: Timestamp,
  updated_at: Timestamp,
});

const WithSecretSchema = Type.Object({
  ...EndpointSchema.properties,
  signing_secret: Type.String({
    description: 'The whsec_ secret that verifies v1 signatures: shown in this answer only',
  }),
});

const shown = ({ endpoint, signing_secret }: ShownSecret) => ({ ...endpoint, signing_secret });

export function registerCallbackEndpointRoutes(
  app: App,
  deps: { endpoints: CallbackEndpoints; cursors: PageCursors },
): void {
  const auth = { auth: 'user' as const };
  const tags = ['webhooks'];

  app.post(
    '/api/v1/webhook-endpoints',
    {
      config: auth,
      schema: {
        operationId: 'createWebhookEndpoint',
        summary:
          'Register a callback URL for relay thread events; its whsec_ secret is shown once. Give exactly one of ' +
          'agent_id (your agent: events of its threads) and connection_id (your outgoing connection: events of ' +
          'the threads you open over it). The URL is checked now (RLY-12) and again on every delivery.',
        tags,
        ...curlExample('POST', '/api/v1/webhook-endpoints', {
          url: 'https://example.com/enclave-events',
          event_types: ['thread.agent_replied'],
          agent_id: '00000000-0000-4000-8000-000000000000',
        }),
        body: Type.Object(
          {
            url: Url,
            event_types: EventTypes,
            agent_id: Type.Optional(Id),
            connection_id: Type.Optional(Id),
            description: Type.Optional(Description),
            sign_v1a: Type.Optional(Type.Boolean()),
          },
          { additionalProperties: false },
        ),
        response: { 201: WithSecretSchema, ...errors, 409: ProblemSchema },
      },
    },
    async (request, reply) => {
      const principal = signedIn(request);
      const body = request.body;
      const url = await deps.endpoints.checkUrl(body.url);
      const created = await request.withTenant((tx) =>
        deps.endpoints.create(tx, principal, {
          url,
          eventTypes: body.event_types,
          agentId: body.agent_id,
          connectionId: body.connection_id,
          description: body.description,
          signV1a: body.sign_v1a,
        }),
      );
      return reply.status(201).send(shown(created));
    },
  );

  app.get(
    '/api/v1/webhook-endpoints',
    {
      config: auth,
      schema: {
        operationId: 'listWebhookEndpoints',
        summary: 'A page of the webhook endpoints you manage, oldest first (never their secrets)',
        tags,
        querystring: PageQuery,
        response: {
          200: Type.Object({ webhook_endpoints: Type.Array(EndpointSchema), next_after: NextAfter }),
          ...errors,
        },
      },
    },
    async (request) => {
      const principal = signedIn(request);
      // after is attacker-controlled: the cursor must carry our MAC for this user's list in this tenant.
      const scope = { list: 'webhook-endpoints', tenantId: principal.user.tenant_id, of: principal.user.id };
      const page = await request.withTenant((tx) =>
        readPage(deps.cursors, scope, request.query, (at) => deps.endpoints.list(tx, principal, at)),
      );
      return { webhook_endpoints: page.rows, next_after: page.next };
    },
  );

  app.get(
    '/api/v1/webhook-endpoints/:id',
    {
      config: auth,
      schema: {
        operationId: 'getWebhookEndpoint',
        summary: 'One webhook endpoint (never its secret)',
        tags,
        params: IdParams,
        response: { 200: EndpointSchema, ...errors },
      },
    },
    async (request) => {
      const principal = signedIn(request);
      return request.withTenant((tx) => deps.endpoints.get(tx, principal, request.params.id));
    },
  );

  app.patch(
    '/api/v1/webhook-endpoints/:id',
    {
      config: auth,
      schema: {
        operationId: 'updateWebhookEndpoint',
        summary: 'Change the URL (checked again), the events or the description',
        tags,
        params: IdParams,
        body: Type.Object(
          {
            url: Type.Optional(Url),
            event_types: Type.Optional(EventTypes),
            description: Type.Optional(Description),
          },
          { additionalProperties: false },
        ),
        response: { 200: EndpointSchema, ...errors },
      },
    },
    async (request) => {
      const principal = signedIn(request);
      const body = request.body;
      const url = body.url === undefined ? undefined : await deps.endpoints.checkUrl(body.url);
      return request.withTenant((tx) =>
        deps.endpoints.update(tx, principal, request.params.id, {
          url,
          eventTypes: body.event_types,
          description: body.description,
        }),
      );
    },
  );

  app.delete(
    '/api/v1/webhook-endpoints/:id',
    {
      config: auth,
      schema: {
        operationId: 'deleteWebhookEndpoint',
        summary: 'Delete a webhook endpoint and its delivery log',
        tags,
        params: IdParams,
        response: { 204: Type.Null(), ...errors },
      },
    },
    async (request, reply) => {
      const principal = signedIn(request);
      await request.withTenant((tx) => deps.endpoints.remove(tx, principal, request.params.id));
      return reply.status(204).send(null);
    },
  );

  app.post(
    '/api/v1/webhook-endpoints/:id/rotate-secret',
    {
      config: auth,
      schema: {
        operationId: 'rotateWebhookEndpointSecret',
        summary: 'A new whsec_ secret, shown once; the previous one still signs for 24 hours',
        tags,
        params: IdParams,
        response: { 200: WithSecretSchema, ...errors },
      },
    },
    async (request) => {
      const principal = signedIn(request);
      return shown(
        await request.withTenant((tx) => deps.endpoints.rotateSecret(tx, principal, request.params.id)),
      );
    },
  );

  app.post(
    '/api/v1/webhook-endpoints/:id/enable',
    {
      config: auth,
      schema: {
        operationId: 'enableWebhookEndpoint',
        summary: 'Turn a disabled endpoint back on (its failure count starts again)',
        tags,
        params: IdParams,
        response: { 200: EndpointSchema, ...errors },
      },
    },
    async (request) => {
      const principal = signedIn(request);
      return request.withTenant((tx) => deps.endpoints.enable(tx, principal, request.params.id));
    },
  );
}
