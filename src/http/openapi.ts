import swagger from '@fastify/swagger';
import type { Config } from '../config.ts';
import type { App } from './app.ts';

// OPENAPI 3.1 generated from the route schemas: routes declare everything,
// so the document (and /docs, and the cross-tenant suite later) cannot drift.
export async function registerOpenApi(app: App, config: Pick<Config, 'publicUrl'>): Promise<void> {
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Enclave API',
        version: '1',
        description:
          'Errors are RFC 9457 problem details (application/problem+json) with a stable `code`; see /docs/problems.',
      },
      servers: [{ url: config.publicUrl }],
    },
  });
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
}
