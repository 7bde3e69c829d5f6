import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import path from 'node:path';
import fastifyStatic from '@fastify/static';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import Fastify, {
  type FastifyBaseLogger,
  type FastifyInstance,
  LogController,
  type RawServerDefault,
} from 'fastify';
import type { Sql } from 'postgres';
import type { Config } from '../config.ts';
import type { Migration } from '../db/migrator.ts';
import type { Logger } from '../logger.ts';
import { registerDocsRoutes } from '../web/docs-page.ts';
import { registerHealthRoutes } from './health-routes.ts';
import { registerOpenApi } from './openapi.ts';
import { registerProblemHandlers } from './problems.ts';
import { registerSecurityHeaders } from './security-headers.ts';

export type App = FastifyInstance<
  RawServerDefault,
  IncomingMessage,
  ServerResponse,
  FastifyBaseLogger,
  TypeBoxTypeProvider
>;

export interface AppDeps {
  readonly config: Config;
  readonly sql: Sql;
  readonly logger: Logger;
  readonly migrations: readonly Migration[];
}

export const BODY_LIMIT_BYTES = 256 * 1024;
const STATIC_DIR = path.join(import.meta.dirname, '..', 'web', 'static');

/**
 * Assembles the HTTP server in a fixed order: external plugins (headers,
 * OpenAPI, static files), then the app's own hooks and error handling, then
 * routes. Returns the instance unstarted, so tests can `inject` into it.
 */
export async function buildApp(deps: AppDeps): Promise<App> {
  const app = Fastify({
    loggerInstance: deps.logger as FastifyBaseLogger,
    // Fastify's own request lines log the URL; ours (onResponse) log the route pattern.
    logController: new LogController({ disableRequestLogging: true }),
    // The request id is ours: a client-sent X-Request-Id is not trusted.
    genReqId: () => randomUUID(),
    requestIdHeader: false,
    bodyLimit: BODY_LIMIT_BYTES,
    return503OnClosing: true,
    ajv: { customOptions: { removeAdditional: false, allErrors: true } },
  }).withTypeProvider<TypeBoxTypeProvider>();
  // The API takes JSON only. Fastify parses text/plain by default, and text/plain is
  // a type a cross-site form may send without a CORS preflight: refuse it (415).
  app.removeContentTypeParser('text/plain');

  await registerSecurityHeaders(app, deps.config);
  await registerOpenApi(app, deps.config);
  await app.register(fastifyStatic, { root: STATIC_DIR, prefix: '/static/', index: false, schemaHide: true });

  registerProblemHandlers(app);
  app.addHook('onSend', async (request, reply) => {
    reply.header('x-request-id', request.id);
  });
  app.addHook('onResponse', async (request, reply) => {
    // The route pattern, not the URL: paths and queries can carry tokens.
    request.log.info(
      {
        method: request.method,
        route: request.routeOptions.url ?? '(unmatched)',
        status: reply.statusCode,
        ms: Math.round(reply.elapsedTime),
      },
      'request',
    );
  });

  registerHealthRoutes(app, deps);
  registerDocsRoutes(app);
  return app;
}
