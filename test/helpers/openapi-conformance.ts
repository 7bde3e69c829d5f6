import AjvCompiler from '@fastify/ajv-compiler';
import type { App } from '../../src/http/app.ts';

// Every response a test receives is checked against /openapi.json: its status
// must be documented for the operation, its media type be one the document
// lists for that status (none: no body), and a JSON or text body must match
// the schema. A mismatch is recorded, and the app refuses to close quietly
// (see buildTestApp), so the test file fails. Routes the document leaves out
// (pages, static files, unmatched paths) are not checked.

interface MediaType {
  schema?: object;
}

interface ResponseObject {
  content?: Record<string, MediaType>;
}

interface Operation {
  responses?: Record<string, ResponseObject>;
}

export interface OpenApiDocument {
  paths?: Record<string, Record<string, Operation>>;
  components?: object;
}

/** One response as the client received it; body undefined when it was streamed. */
export interface ObservedResponse {
  readonly method: string;
  /** The route pattern as Fastify names it: /api/v1/agents/:id */
  readonly route: string;
  readonly status: number;
  readonly contentType: string | undefined;
  readonly body: string | undefined;
}

type Validate = ((data: unknown) => boolean) & { errors?: unknown };

/** Fastify's own ajv (with its formats), lenient about the document's annotations (x-…, example). */
function createCompiler(): (schema: object) => Validate {
  let compile: ((schema: object) => Validate) | undefined;
  AjvCompiler()(
    {},
    {
      customOptions: { strict: false, allErrors: true, coerceTypes: false, useDefaults: false },
      onCreate: (ajv) => {
        compile = (schema) => ajv.compile(schema);
      },
    },
  );
  if (compile === undefined) throw new Error('ajv was not created');
  return compile;
}

function openApiPath(route: string): string {
  return route.replace(/:([A-Za-z0-9_]+)/g, '{$1}');
}

/**
 * Returns a check that names how a response differs from the document, or
 * undefined when it matches (or the document does not describe its route).
 */
export function createConformanceCheck(
  document: OpenApiDocument,
): (observed: ObservedResponse) => string | undefined {
  const compile = createCompiler();
  const validators = new Map<string, Validate>();
  const validatorFor = (key: string, schema: object) => {
    let validate = validators.get(key);
    if (validate === undefined) {
      // Refs point into the document's components: compile the schema with them beside it.
      validate = compile({ ...schema, components: document.components });
      validators.set(key, validate);
    }
    return validate;
  };

  return (observed) => {
    const path = openApiPath(observed.route);
    const operation = document.paths?.[path]?.[observed.method.toLowerCase()];
    if (operation === undefined) return undefined;
    const name = `${observed.method} ${path} → ${observed.status}`;
    const status = String(observed.status);
    const documented = operation.responses?.[status] ?? operation.responses?.default;
    if (documented === undefined) return `${name}: status ${status} is not documented`;
    const content = documented.content ?? {};
    // Fastify drops a 204's payload (a serialized null) before it is written: the client gets no body.
    const body = observed.status === 204 ? '' : observed.body;
    const mediaType = (observed.contentType ?? '').split(';')[0]?.trim().toLowerCase() ?? '';
    if (Object.keys(content).length === 0) {
      return body === undefined || body === ''
        ? undefined
        : `${name}: documented without a body, but one was sent (${mediaType})`;
    }
    const media = content[mediaType];
    if (media === undefined) {
      return `${name}: content type ${mediaType || '(none)'} is not documented (${Object.keys(content).join(', ')})`;
    }
    if (body === undefined || media.schema === undefined) return undefined;
    let value: unknown = body;
    if (mediaType === 'application/json' || mediaType.endsWith('+json')) {
      try {
        value = JSON.parse(body);
      } catch {
        return `${name}: the body is not JSON`;
      }
    }
    const validate = validatorFor(`${name} ${mediaType}`, media.schema);
    if (validate(value)) return undefined;
    return `${name}: the body does not match the schema: ${JSON.stringify(validate.errors)}`;
  };
}

/** Checks every response the app sends; mismatches() lists those that differ from /openapi.json. */
export function checkResponsesAgainstOpenApi(app: App): { mismatches: () => string[] } {
  const found: string[] = [];
  let check: ((observed: ObservedResponse) => string | undefined) | undefined;
  app.addHook('onSend', async (request, reply, payload) => {
    const route = request.routeOptions.url;
    if (route === undefined) return payload;
    check ??= createConformanceCheck(app.swagger() as OpenApiDocument);
    const header = reply.getHeader('content-type');
    const mismatch = check({
      method: request.method,
      route,
      status: reply.statusCode,
      contentType: typeof header === 'string' ? header : undefined,
      body:
        typeof payload === 'string'
          ? payload
          : Buffer.isBuffer(payload)
            ? payload.toString('utf8')
            : payload === null || payload === undefined
              ? ''
              : undefined,
    });
    if (mismatch !== undefined) found.push(mismatch);
    return payload;
  });
  return { mismatches: () => [...found] };
}
