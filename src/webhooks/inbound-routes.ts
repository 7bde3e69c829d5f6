import { Type } from 'typebox';
import { signedIn } from '../accounts/principal.ts';
import type { App } from '../http/app.ts';
import { ProblemSchema } from '../http/problems.ts';
import { curlExample, Id, IdParams, Timestamp } from '../http/schemas.ts';
import { type InboundWebhooks, MAX_INBOUND_BODY_BYTES } from './inbound.ts';

// /api/v1/agents/:id/inbound-webhooks (the agent's managers) and the public
// POST /hooks/:endpoint_id (RLY-11). HTTP only. The secret appears in the
// create answer's schema only: a list cannot carry it.

const errors = { 400: ProblemSchema, 401: ProblemSchema, 403: ProblemSchema, 404: ProblemSchema };

const EndpointSchema = Type.Object({
  id: Id,
  agent_id: Id,
  description: Type.String(),
  url: Type.String({ description: 'Where the outside service POSTs its signed events' }),
  created_at: Timestamp,
});

const CreatedSchema = Type.Object({
  ...EndpointSchema.properties,
  signing_secret: Type.String({
    description: 'The endpoint’s whsec_ secret, to sign with: shown in this answer only',
  }),
});

const EndpointParams = Type.Object({ id: Id, endpoint_id: Id });

export function registerInboundWebhookRoutes(
  app: App,
  deps: { inbound: InboundWebhooks; publicUrl: string },
): void {
  const auth = { auth: 'user' as const };
  const urlOf = (id: string) => new URL(`/hooks/${id}`, deps.publicUrl).toString();

  app.post(
    '/api/v1/agents/:id/inbound-webhooks',
    {
      config: auth,
      schema: {
        operationId: 'createInboundWebhook',
        summary: 'Create an inbound webhook endpoint for an agent; its whsec_ secret is shown once',
        tags: ['webhooks'],
        params: IdParams,
        ...curlExample('POST', '/api/v1/agents/{id}/inbound-webhooks', { description: 'CI builds' }),
        body: Type.Object(
          {
            description: Type.Optional(Type.String({ maxLength: 200 })),
          },
          { additionalProperties: false },
        ),
        response: { 201: CreatedSchema, ...errors, 409: ProblemSchema },
      },
    },
    async (request, reply) => {
      const principal = signedIn(request);
      const created = await request.withTenant((tx) =>
        deps.inbound.create(tx, principal, request.params.id, request.body.description ?? ''),
      );
      const { secret, ...endpoint } = created;
      return reply.status(201).send({ ...endpoint, signing_secret: secret, url: urlOf(created.id) });
    },
  );

  app.get(
    '/api/v1/agents/:id/inbound-webhooks',
    {
      config: auth,
      schema: {
        operationId: 'listInboundWebhooks',
        summary: "An agent's inbound webhook endpoints (never their secrets)",
        tags: ['webhooks'],
        params: IdParams,
        response: { 200: Type.Object({ inbound_webhooks: Type.Array(EndpointSchema) }), ...errors },
      },
    },
    async (request) => {
      const principal = signedIn(request);
      const listed = await request.withTenant((tx) => deps.inbound.list(tx, principal, request.params.id));
      return { inbound_webhooks: listed.map((endpoint) => ({ ...endpoint, url: urlOf(endpoint.id) })) };
    },
  );

  app.delete(
    '/api/v1/agents/:id/inbound-webhooks/:endpoint_id',
    {
      config: auth,
      schema: {
        operationId: 'deleteInboundWebhook',
        summary: 'Delete an inbound webhook endpoint: its URL answers 401 from then on',
        tags: ['webhooks'],
        params: EndpointParams,
        response: { 204: Type.Null(), ...errors },
      },
    },
    async (request, reply) => {
      const principal = signedIn(request);
      const { id, endpoint_id } = request.params;
      await request.withTenant((tx) => deps.inbound.remove(tx, principal, id, endpoint_id));
      return reply.status(204).send(null);
    },
  );

  // Its own body parser: the signature covers the exact bytes, so nothing may parse them first.
  app.register((scope: App, _options, registered) => {
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser(
      '*',
      { parseAs: 'buffer', bodyLimit: MAX_INBOUND_BODY_BYTES },
      (_r, raw, done) => done(null, raw),
    );
    scope.post(
      '/hooks/:endpoint_id',
      {
        // No cookie is read, and the signature plays the Bearer token's part: no CSRF surface (csrf.ts).
        config: { auth: 'none', bearerOnly: true },
        bodyLimit: MAX_INBOUND_BODY_BYTES,
        schema: {
          operationId: 'receiveInboundWebhook',
          summary: 'Deliver a Standard Webhooks-signed event to an agent',
          description:
            `Headers webhook-id, webhook-timestamp and webhook-signature (v1, HMAC-SHA256 with the endpoint's ` +
            `whsec_ secret). Body: any bytes up to ${MAX_INBOUND_BODY_BYTES} (413 over it). A webhook-id already ` +
            'received answers 200 "already_received" and is delivered once.',
          tags: ['webhooks'],
          params: Type.Object({ endpoint_id: Type.String({ maxLength: 64 }) }),
          response: {
            200: Type.Object({
              status: Type.Union([Type.Literal('received'), Type.Literal('already_received')]),
            }),
            401: ProblemSchema,
            413: ProblemSchema,
            503: ProblemSchema,
          },
        },
      },
      async (request) => {
        const body = Buffer.isBuffer(request.body) ? request.body : Buffer.alloc(0);
        return { status: await deps.inbound.receive(request.params.endpoint_id, request.headers, body) };
      },
    );
    registered();
  });
}
