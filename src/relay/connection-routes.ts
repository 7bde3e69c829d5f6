import { Type } from 'typebox';
import { signedIn } from '../accounts/principal.ts';
import { HANDLE_PATTERN } from '../agents/handles.ts';
import type { App } from '../http/app.ts';
import { NextAfter, type PageCursors, PageQuery, readPage } from '../http/page-cursor.ts';
import { ProblemSchema } from '../http/problems.ts';
import type { RateLimits } from '../http/rate-limits.ts';
import { curlExample, Id, IdParams, NullableTimestamp, Timestamp } from '../http/schemas.ts';
import { MULTILINE } from '../http/text-input.ts';
import {
  claimRelayToken,
  type Decision,
  decideConnection,
  listConnections,
  MAX_CONNECTION_MESSAGE,
  requestConnection,
  spendConnectPoints,
} from './connections.ts';

// /api/v1/connections: requests, the target's decisions and the requester's
// one claim of the relay token (RLY-2, RLY-3). HTTP only. The response
// schemas are allowlists: no id of the other tenant, and the token appears
// only in the claim's answer.

const errors = {
  400: ProblemSchema,
  401: ProblemSchema,
  403: ProblemSchema,
  404: ProblemSchema,
  409: ProblemSchema,
};

const ConnectionSchema = Type.Object({
  id: Id,
  direction: Type.Union([Type.Literal('incoming'), Type.Literal('outgoing')], {
    description: 'incoming: someone asks to reach your agent; outgoing: you asked',
  }),
  state: Type.Union([
    Type.Literal('pending'),
    Type.Literal('approved'),
    Type.Literal('denied'),
    Type.Literal('revoked'),
  ]),
  target_handle: Type.String(),
  requester_handle: Type.Union([Type.String(), Type.Null()], {
    description: 'The requesting agent; null when a person asked for themselves',
  }),
  agent_id: Type.Union([Id, Type.Null()], {
    description:
      'Your agent in it: the target (incoming), or the requesting agent (outgoing; null for yourself)',
  }),
  message: Type.String(),
  token_claimed: Type.Boolean({ description: 'Whether the relay token was claimed (it can be, once)' }),
  created_at: Timestamp,
  decided_at: NullableTimestamp,
  revoked_at: NullableTimestamp,
});

const DECISIONS: Readonly<Record<Decision, { operationId: string; summary: string }>> = {
  approve: { operationId: 'approveConnection', summary: 'Approve a pending request to one of your agents' },
  deny: { operationId: 'denyConnection', summary: 'Deny a pending request to one of your agents' },
  revoke: {
    operationId: 'revokeConnection',
    summary: 'Revoke a connection (pending or approved): its relay token stops working at once',
  },
};

export function registerConnectionsApi(
  app: App,
  deps: { cursors: PageCursors; rateLimits: Pick<RateLimits, 'consume'> },
): void {
  const auth = { auth: 'user' as const };

  app.post(
    '/api/v1/connections',
    {
      config: auth,
      schema: {
        operationId: 'requestConnection',
        summary: "Ask to connect one of your agents (or yourself) to another tenant's published agent",
        tags: ['connections'],
        ...curlExample('POST', '/api/v1/connections', { handle: 'their-echo', message: 'Hello' }),
        body: Type.Object(
          {
            handle: Type.String({ pattern: HANDLE_PATTERN, description: 'The target agent’s handle' }),
            agent_id: Type.Optional(
              Type.Union([Id, Type.Null()], {
                description: 'Which of your agents asks; omitted or null: you, as a person',
              }),
            ),
            message: Type.String({
              ...MULTILINE,
              minLength: 1,
              maxLength: MAX_CONNECTION_MESSAGE,
              description: 'Shown to the agent’s owner with the request',
            }),
          },
          { additionalProperties: false },
        ),
        response: { 201: ConnectionSchema, ...errors, 429: ProblemSchema },
      },
    },
    async (request, reply) => {
      const principal = signedIn(request);
      await spendConnectPoints(deps.rateLimits, principal.user.id, request.ip);
      const { handle, agent_id, message } = request.body;
      const created = await request.withTenant((tx) =>
        requestConnection(tx, principal, { handle, agentId: agent_id ?? null, message }),
      );
      return reply.status(201).send(created);
    },
  );

  app.get(
    '/api/v1/connections',
    {
      config: auth,
      schema: {
        operationId: 'listConnections',
        summary: 'A page of your incoming or outgoing connections, newest first',
        tags: ['connections'],
        querystring: Type.Object(
          {
            ...PageQuery.properties,
            direction: Type.Union([Type.Literal('incoming'), Type.Literal('outgoing')], {
              default: 'incoming',
            }),
          },
          { additionalProperties: false },
        ),
        response: {
          200: Type.Object({ connections: Type.Array(ConnectionSchema), next_after: NextAfter }),
          ...errors,
        },
      },
    },
    async (request) => {
      const direction = request.query.direction ?? 'incoming';
      const scope = { list: `connections-${direction}`, tenantId: signedIn(request).user.tenant_id };
      // after is attacker-controlled: the cursor must carry our MAC for this tenant's list of this direction.
      const page = await request.withTenant((tx) =>
        readPage(deps.cursors, scope, request.query, (at) => listConnections(tx, direction, at)),
      );
      return { connections: page.rows, next_after: page.next };
    },
  );

  for (const [decision, doc] of Object.entries(DECISIONS) as [Decision, (typeof DECISIONS)[Decision]][]) {
    app.post(
      `/api/v1/connections/:id/${decision}`,
      {
        config: auth,
        schema: {
          ...doc,
          tags: ['connections'],
          params: IdParams,
          response: { 200: ConnectionSchema, ...errors },
        },
      },
      async (request) => {
        const principal = signedIn(request);
        return request.withTenant((tx) => decideConnection(tx, principal, request.params.id, decision));
      },
    );
  }

  app.post(
    '/api/v1/connections/:id/relay-token',
    {
      config: auth,
      schema: {
        operationId: 'claimRelayToken',
        summary: 'Claim the relay token of your approved connection: shown once, a second claim is 409',
        tags: ['connections'],
        params: IdParams,
        response: {
          201: Type.Object({
            relay_token: Type.String({ description: 'enc_relay_…: shown only in this answer, never again' }),
            connection: ConnectionSchema,
          }),
          ...errors,
        },
      },
    },
    async (request, reply) => {
      const principal = signedIn(request);
      const claimed = await request.withTenant((tx) => claimRelayToken(tx, principal, request.params.id));
      // A secret in the body: no cache may keep it.
      reply.header('cache-control', 'no-store');
      return reply.status(201).send({ relay_token: claimed.token, connection: claimed.connection });
    },
  );
}
