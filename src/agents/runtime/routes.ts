import { Type } from 'typebox';
import { signedIn } from '../../accounts/principal.ts';
import type { App } from '../../http/app.ts';
import { curlExample, IdParams, Timestamp } from '../../http/schemas.ts';
import { AGENT_ROUTE_ERRORS } from '../routes.ts';
import { type InstanceAction, type InstancesService, type InstanceView, instanceUrl } from './instances.ts';

// /api/v1/agents/:id/instance, …/start|stop|restart and …/logs (AGT-6).
// Starting and stopping are carried out by the runtime's jobs: the answer is
// 202 with the state as it stands and the state asked for.

const errors = AGENT_ROUTE_ERRORS;

const Instance = Type.Object({
  state: Type.Union([
    Type.Literal('stopped'),
    Type.Literal('starting'),
    Type.Literal('running'),
    Type.Literal('crashed'),
    Type.Literal('stopping'),
  ]),
  desired_state: Type.Union([Type.Literal('running'), Type.Literal('stopped')]),
  reason: Type.Union([Type.String(), Type.Null()], { description: 'Why it is stopped or crashed' }),
  crashes: Type.Integer({ description: 'Crashes in a row; restarts back off and stop after 5' }),
  started_at: Type.Union([Timestamp, Type.Null()]),
  url: Type.Union([Type.String(), Type.Null()], {
    description:
      "The instance's unguessable address (AGT-3): for its owner only; null before the first start",
  }),
});

const LogsQuery = Type.Object(
  { lines: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, default: 100 })) },
  { additionalProperties: false },
);

export interface InstanceRoutesDeps {
  readonly instances: InstancesService;
  /** The last lines of an instance's output (the runtime driver's logs). */
  readonly logs: (agentId: string, lines: number) => Promise<string[]>;
  /** https://host[:port] the platform is reached at; instances are `<subdomain>.<agentsDomain>` on the same scheme and port. */
  readonly publicUrl: string;
  readonly agentsDomain: string;
}

export function registerInstanceRoutes(app: App, deps: InstanceRoutesDeps): void {
  const { instances } = deps;
  const url = (subdomain: string) => instanceUrl(deps.publicUrl, deps.agentsDomain, subdomain);
  // The address only for whom roles.ts allows it (AGT-3); the state for every reader.
  const shown = (view: InstanceView | undefined, reach: boolean) =>
    view === undefined
      ? {
          state: 'stopped' as const,
          desired_state: 'stopped' as const,
          reason: null,
          crashes: 0,
          started_at: null,
          url: null,
        }
      : {
          state: view.state,
          desired_state: view.desired_state,
          reason: view.reason,
          crashes: view.crashes,
          started_at: view.started_at,
          url: reach ? url(view.subdomain) : null,
        };

  app.get(
    '/api/v1/agents/:id/instance',
    {
      config: { auth: 'user' },
      schema: {
        operationId: 'getInstance',
        summary: "The agent's instance: its state, the state asked for, and its address",
        tags: ['instances'],
        params: IdParams,
        response: { 200: Instance, ...errors },
      },
    },
    async (request) => {
      const principal = signedIn(request);
      return request.withTenant(async (tx) => {
        const view = await instances.view(tx, request.params.id);
        return shown(view, await instances.mayReach(tx, principal, request.params.id));
      });
    },
  );

  for (const action of ['start', 'stop', 'restart'] as const satisfies readonly InstanceAction[]) {
    app.post(
      `/api/v1/agents/:id/${action}`,
      {
        config: { auth: 'user' },
        schema: {
          operationId: `${action}Agent`,
          summary: `${action[0]?.toUpperCase()}${action.slice(1)} the agent's instance (carried out by a job)`,
          tags: ['instances'],
          ...curlExample('POST', `/api/v1/agents/{id}/${action}`),
          params: IdParams,
          response: { 202: Instance, ...errors },
        },
      },
      async (request, reply) => {
        const principal = signedIn(request);
        const answer = await request.withTenant(async (tx) => {
          const view = await instances.request(tx, principal, request.params.id, action);
          return shown(view, await instances.mayReach(tx, principal, request.params.id));
        });
        return reply.status(202).send(answer);
      },
    );
  }

  app.get(
    '/api/v1/agents/:id/logs',
    {
      config: { auth: 'user' },
      schema: {
        operationId: 'getAgentLogs',
        summary: "The last lines of the agent's output (stdout and stderr)",
        tags: ['instances'],
        params: IdParams,
        querystring: LogsQuery,
        response: { 200: Type.Object({ lines: Type.Array(Type.String()) }), ...errors },
      },
    },
    async (request) => {
      const principal = signedIn(request);
      await request.withTenant((tx) => instances.authorizeReach(tx, principal, request.params.id));
      return { lines: await deps.logs(request.params.id, request.query.lines ?? 100) };
    },
  );
}
