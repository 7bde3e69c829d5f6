import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { FastifySchema, RouteOptions } from 'fastify';
import type { Config } from '../config.ts';
import { DOCS_UI_PREFIX } from '../web/docs-page.ts';
import type { App } from './app.ts';
import { PROBLEM_TYPES } from './problem-types.ts';
import { ProblemSchema } from './problems.ts';

// OPENAPI 3.1 generated from the route schemas: routes declare everything,
// so the document (and /docs, and the cross-tenant suite later) cannot drift.
// What every route shares is added here, from the same machinery that
// answers it: errors as application/problem+json (problems.ts), the
// credentials a route takes (principal.ts), and the statuses the central
// hooks answer with (sign-in, CSRF, body parsing, database outage).

declare module 'fastify' {
  interface FastifySchema {
    /**
     * The request body as the document states it, where it says more than
     * the route's validator checks: the service checks the rest and answers
     * the same 400 with a message in words rather than a schema rule.
     */
    documentedBody?: unknown;
  }
}

const API_TOKEN_SCHEME = 'apiToken';
const SESSION_COOKIE_SCHEME = 'sessionCookie';
/** The relay's own Bearer tokens (src/relay/bearer.ts): routes that take them name the scheme in their schema. */
export const RELAY_TOKEN_SCHEME = 'relayToken';
export const THREAD_TOKEN_SCHEME = 'threadToken';
const PROBLEM_REF = { $ref: '#/components/schemas/Problem' };

/** The problem codes an answer of this status may carry, for its description. */
function problemDescription(status: number): string {
  const codes = Object.entries(PROBLEM_TYPES)
    .filter(([, type]) => type.status === status)
    .map(([code]) => code);
  return `Problem details; code: ${codes.join(', ')}`;
}

function problemResponse(status: number) {
  return {
    description: problemDescription(status),
    content: { 'application/problem+json': { schema: ProblemSchema } },
  };
}

/** Statuses the central hooks answer with on this route, whatever its handler does. */
function sharedStatuses(route: RouteOptions): number[] {
  const auth = route.config?.auth ?? 'none';
  const method = String(route.method);
  // Any route: a control character in the path or query is a 400 (text-input.ts), as is broken percent-encoding.
  const statuses = [500, 400];
  // Fastify reads a body sent with any method but GET and HEAD, whether or not the route takes one.
  if (method !== 'GET' && method !== 'HEAD') statuses.push(413, 415);
  // The principal is looked up in the database: an outage is 503 (problems.ts).
  if (auth !== 'none') statuses.push(503);
  if (auth === 'user') statuses.push(401);
  // ACC-4 (csrf.ts): a state-changing request without a Bearer token and not from our origin is refused.
  if (method !== 'GET' && method !== 'HEAD') statuses.push(403);
  return statuses;
}

/** A route's schema as the document shows it. */
function documentedSchema(schema: FastifySchema | undefined, route: RouteOptions): FastifySchema {
  // A route without a schema is not part of the API: the document leaves it out.
  if (schema === undefined) return { hide: true };
  if (schema.hide === true) return schema;
  const declared = { ...(schema.response as Record<string, unknown> | undefined) };
  const response: Record<string, unknown> = {};
  for (const [status, answer] of Object.entries(declared)) {
    response[status] = answer === ProblemSchema ? problemResponse(Number(status)) : answer;
  }
  for (const status of sharedStatuses(route)) {
    response[String(status)] ??= problemResponse(status);
  }
  const auth = route.config?.auth ?? 'none';
  const credentials = [{ [API_TOKEN_SCHEME]: [] }, { [SESSION_COOKIE_SCHEME]: [] }];
  const { documentedBody, ...rest } = schema;
  return {
    ...rest,
    ...(documentedBody === undefined ? {} : { body: documentedBody }),
    response,
    // An empty requirement ({}) is how OpenAPI says "or anonymous". A route with its own Bearer check names its scheme.
    security:
      rest.security ?? (auth === 'user' ? credentials : auth === 'optional' ? [{}, ...credentials] : []),
  };
}

interface DocumentParts {
  components?: { schemas?: Record<string, unknown> };
  paths?: Record<
    string,
    Record<string, { responses?: Record<string, { content?: Record<string, unknown> }> }>
  >;
}

/** One shared Problem schema: every problem+json answer refers to it. */
function shareProblemSchema(document: DocumentParts): void {
  for (const item of Object.values(document.paths ?? {})) {
    for (const operation of Object.values(item)) {
      for (const answer of Object.values(operation.responses ?? {})) {
        if (answer.content?.['application/problem+json'] !== undefined) {
          answer.content['application/problem+json'] = { schema: PROBLEM_REF };
        }
      }
    }
  }
  // Its $id names it for ajv; in the document the component's key names it.
  const problem = Object.fromEntries(Object.entries(ProblemSchema).filter(([key]) => key !== '$id'));
  document.components = {
    ...document.components,
    schemas: { ...document.components?.schemas, Problem: problem },
  };
}

export async function registerOpenApi(app: App, config: Pick<Config, 'publicUrl'>): Promise<void> {
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Enclave API',
        version: '1',
        description:
          '[← Back to Enclave](/)\n\nThe JSON API of Enclave. Errors are RFC 9457 problem details (`application/problem+json`) ' +
          'with a stable `code`; every code is listed at [/docs/problems](/docs/problems). ' +
          'Authenticate with an API token (`Authorization: Bearer enc_live_…`, made at ' +
          '[/dashboard/settings/tokens](/dashboard/settings/tokens)) or, from a browser, the session cookie.',
      },
      servers: [{ url: config.publicUrl }],
      components: {
        securitySchemes: {
          [API_TOKEN_SCHEME]: {
            type: 'http',
            scheme: 'bearer',
            description:
              'An API token (enc_live_…). Read tokens may only read; write tokens may also change.',
          },
          [RELAY_TOKEN_SCHEME]: {
            type: 'http',
            scheme: 'bearer',
            description:
              'A relay token (enc_relay_…), claimed once for an approved connection: starts and follows up relay threads.',
          },
          [THREAD_TOKEN_SCHEME]: {
            type: 'http',
            scheme: 'bearer',
            description:
              'A thread token (enc_thread_…, 60 minutes) from POST /api/v1/threads/{id}/access-token: reads and closes its thread; the owner’s also answers.',
          },
          [SESSION_COOKIE_SCHEME]: {
            type: 'apiKey',
            in: 'cookie',
            name: 'enclave_session',
            description:
              'The session cookie of a signed-in browser. A request that changes state must also come from ' +
              'this site (Origin, or Sec-Fetch-Site: same-origin), or it is refused with 403 csrf_rejected.',
          },
        },
      },
    },
    transform: ({ schema, url, route }) => ({ schema: documentedSchema(schema, route), url }),
    transformObject: (document) => {
      if (!('openapiObject' in document)) throw new Error('the API document is OpenAPI 3, not Swagger 2');
      shareProblemSchema(document.openapiObject as DocumentParts);
      return document.openapiObject;
    },
  });
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
  // Swagger UI reads the document beside the page it runs on: /docs/json for /docs.
  app.get('/docs/json', { schema: { hide: true } }, async () => app.swagger());
  // /docs: Swagger UI, every file of it served from our origin (no CDN) under
  // the site's strict CSP: its page loads only external scripts and styles.
  // BaseLayout: the standalone layout's top bar draws Swagger's logo with an
  // inline <style> (which the CSP refuses) and offers to load any URL's
  // document. The page itself is ours (src/web/docs-page.ts, in the site's
  // frame, naming who is signed in); the plugin serves the files under
  // /docs/ui/, and its own index page there sends the reader to /docs.
  await app.register(swaggerUi, {
    routePrefix: DOCS_UI_PREFIX,
    theme: { title: 'API reference · Enclave' },
    uiHooks: {
      onRequest: (request, reply, done) => {
        if (request.routeOptions.url === `${DOCS_UI_PREFIX}/`) reply.redirect('/docs', 301);
        else done();
      },
    },
    // No badge from validator.swagger.io: the page talks to our origin only.
    validatorUrl: false,
    uiConfig: { layout: 'BaseLayout', deepLinking: true, docExpansion: 'list', defaultModelsExpandDepth: 0 },
  });
}
