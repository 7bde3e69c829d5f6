import { Type } from 'typebox';
import { type Migration, pendingMigrations } from '../db/migrator.ts';
import type { App, AppDeps } from './app.ts';
import { ProblemSchema, sendProblem } from './problems.ts';

export function registerHealthRoutes(app: App, deps: Pick<AppDeps, 'sql' | 'migrations'>): void {
  const latest = deps.migrations.at(-1)?.version ?? 0;

  app.get(
    '/healthz',
    {
      schema: {
        operationId: 'checkLiveness',
        summary: 'Process liveness',
        description: 'Answers 200 while the process is up; touches nothing else.',
        tags: ['health'],
        response: { 200: Type.Object({ status: Type.Literal('ok') }) },
      },
    },
    async () => ({ status: 'ok' as const }),
  );

  app.get(
    '/readyz',
    {
      schema: {
        operationId: 'checkReadiness',
        summary: 'Readiness',
        description:
          'Answers 200 when the database is reachable and its schema is at the version this code expects.',
        tags: ['health'],
        response: {
          200: Type.Object({ status: Type.Literal('ready'), schema_version: Type.Integer() }),
          503: ProblemSchema,
        },
      },
    },
    async (request, reply) => {
      let pending: number[];
      try {
        pending = await pendingMigrations(deps.sql, deps.migrations as Migration[]);
      } catch (error) {
        request.log.warn({ err: error }, 'readiness check could not reach the database');
        return sendProblem(request, reply, 'not_ready', { detail: 'the database is unreachable' });
      }
      if (pending.length > 0) {
        return sendProblem(request, reply, 'not_ready', {
          detail: `the database schema is missing migration ${pending[0]}; run enclave migrate`,
        });
      }
      return { status: 'ready' as const, schema_version: latest };
    },
  );
}
