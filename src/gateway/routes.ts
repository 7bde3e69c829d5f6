import { Type } from 'typebox';
import { signedIn } from '../accounts/principal.ts';
import type { AgentsService } from '../agents/service.ts';
import type { App } from '../http/app.ts';
import { ProblemSchema } from '../http/problems.ts';
import { IdParams } from '../http/schemas.ts';
import { MODEL_PROVIDERS } from './provider-names.ts';
import { MAX_USAGE_ROWS } from './records.ts';
import { modelUsage, setModelLimits } from './service.ts';

// The model gateway's part of the JSON API (AGT-7): an agent's usage per day
// and model, and the limits its tenant sets on it. The gateway itself is
// never routed here: it is served on each instance's own socket only.

const Limits = Type.Object(
  {
    requests_per_minute: Type.Union([Type.Integer({ minimum: 1, maximum: 100_000 }), Type.Null()], {
      description: 'Model calls a minute through the gateway; null: no limit',
    }),
    tokens_per_day: Type.Union([Type.Integer({ minimum: 1, maximum: 1_000_000_000_000 }), Type.Null()], {
      description: 'Input and output tokens a UTC day; null: no limit',
    }),
  },
  { additionalProperties: false },
);

const UsageRow = Type.Object({
  day: Type.String({ format: 'date', description: 'UTC day' }),
  provider: Type.Enum(MODEL_PROVIDERS),
  model: Type.String(),
  requests: Type.Integer({ minimum: 0 }),
  failed: Type.Integer({
    minimum: 0,
    description: 'Calls the provider answered with an error, or never answered',
  }),
  input_tokens: Type.Integer({ minimum: 0 }),
  output_tokens: Type.Integer({ minimum: 0 }),
});

const errors = { 400: ProblemSchema, 401: ProblemSchema, 403: ProblemSchema, 404: ProblemSchema };

export function registerGatewayRoutes(app: App, deps: { agents: Pick<AgentsService, 'authorizeOn'> }): void {
  app.get(
    '/api/v1/agents/:id/usage',
    {
      config: { auth: 'user' as const },
      schema: {
        operationId: 'getAgentModelUsage',
        summary:
          "An agent's model calls through the gateway, per UTC day and model, newest day first, with its limits",
        tags: ['agents'],
        params: IdParams,
        querystring: Type.Object(
          {
            days: Type.Optional(
              Type.Integer({
                minimum: 1,
                maximum: 90,
                default: 30,
                description: 'Days back, today included',
              }),
            ),
          },
          { additionalProperties: false },
        ),
        response: {
          200: Type.Object({
            usage: Type.Array(UsageRow, { maxItems: MAX_USAGE_ROWS }),
            limits: Limits,
          }),
          ...errors,
        },
      },
    },
    async (request) => {
      const principal = signedIn(request);
      const id = request.params.id;
      return request.withTenant((tx) => modelUsage(tx, deps.agents, principal, id, request.query.days ?? 30));
    },
  );

  app.put(
    '/api/v1/agents/:id/model-limits',
    {
      config: { auth: 'user' as const },
      schema: {
        operationId: 'setAgentModelLimits',
        summary:
          "Sets an agent's model-gateway limits; over one, its calls are answered 429 before any upstream call",
        tags: ['agents'],
        params: IdParams,
        body: Limits,
        response: { 200: Limits, ...errors },
      },
    },
    async (request) => {
      const principal = signedIn(request);
      const id = request.params.id;
      return request.withTenant((tx) => setModelLimits(tx, deps.agents, principal, id, request.body));
    },
  );
}
