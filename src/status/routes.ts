import type { App } from '../http/app.ts';
import { StatusReportSchema } from './schemas.ts';
import { renderStatusPage } from './status-page.ts';
import type { StatusService } from './status-service.ts';

// RLY-10: public, no authentication, no tenant data. Both answer 200 whatever
// the platform's state: the state is the content. The page is rendered without
// the signed-in frame, whose session lookup would wait on the very database
// that may be down.

export function registerStatusRoutes(app: App, deps: { readonly status: StatusService }): void {
  app.get(
    '/status.json',
    {
      schema: {
        operationId: 'getStatus',
        summary: 'Platform status',
        description:
          'Health of the database, job workers, job queue, callback deliveries, agent instances and audit checkpoints. Public; platform-wide figures only. Answers within seconds even when the database is down (it then says down).',
        tags: ['health'],
        response: { 200: StatusReportSchema },
      },
    },
    async () => deps.status.report(),
  );

  app.get('/status', { schema: { hide: true } }, async (_request, reply) =>
    reply.type('text/html; charset=utf-8').send(renderStatusPage(await deps.status.report())),
  );
}
