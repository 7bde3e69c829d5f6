import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import { PasswordChecksBusyError } from '../accounts/password-pool.ts';
import { asDatabaseUnavailable, DATABASE_RETRY_AFTER_SECONDS } from '../db/timeouts.ts';
import { isAppError } from '../errors.ts';
import { problemPage } from '../web/error-page.ts';
import { sendPage } from '../web/forms.ts';
import type { Frame } from '../web/html.ts';
import type { App } from './app.ts';
import { BodyParseError, discardBody, UnsupportedMediaTypeError } from './body-parsers.ts';
import { isProblemCode, PROBLEM_TYPES, type ProblemCode, problemTypeUri } from './problem-types.ts';
import { RateLimitedError } from './rate-limits.ts';

// RFC 9457 problem details for every error the server answers with. The
// message of a 5xx is logged, never sent: clients get the title and the
// request id to quote. A browser (Accept prefers text/html, outside /api/)
// gets the same problem as an HTML page in the site's frame (error-page.ts);
// this is the one place that chooses.

export const ProblemSchema = Type.Object(
  {
    type: Type.String({ description: 'Where the code is explained: /docs/problems#<code>' }),
    title: Type.String(),
    status: Type.Integer({ minimum: 400, maximum: 599 }),
    detail: Type.Optional(Type.String()),
    code: Type.Unsafe<ProblemCode>({
      type: 'string',
      enum: Object.keys(PROBLEM_TYPES),
      description: 'Stable identifier of the problem type',
    }),
    request_id: Type.String({ description: 'Finds the request in the server log' }),
    errors: Type.Optional(Type.Array(Type.Object({ field: Type.String(), message: Type.String() }))),
  },
  { $id: 'Problem', description: 'RFC 9457 problem details' },
);

interface Problem {
  type: string;
  title: string;
  status: number;
  detail?: string;
  code: ProblemCode;
  request_id: string;
  errors?: FieldError[];
}

interface FieldError {
  field: string;
  message: string;
}

/** The q of the most specific range in `accept` that matches `type` (RFC 9110 §12.5.1); 0 when none does. */
function quality(accept: string, type: string): number {
  const [major] = type.split('/');
  let best = { specificity: -1, q: 0 };
  for (const part of accept.split(',')) {
    const [range = '', ...params] = part.split(';').map((item) => item.trim().toLowerCase());
    const specificity = range === type ? 2 : range === `${major}/*` ? 1 : range === '*/*' ? 0 : -1;
    if (specificity <= best.specificity) continue;
    const qParam = params.find((param) => param.startsWith('q='));
    const q = qParam === undefined ? 1 : Number(qParam.slice(2));
    best = { specificity, q: Number.isFinite(q) ? q : 0 };
  }
  return best.q;
}

/**
 * Whether the client is a browser reading a page: not the API, not a Bearer
 * client, and Accept ranks text/html above JSON. `*\/*` alone (curl, fetch)
 * ranks them equal and keeps problem+json.
 */
export function prefersHtml(request: FastifyRequest): boolean {
  const accept = request.headers.accept;
  if (
    accept === undefined ||
    request.url.startsWith('/api/') ||
    request.headers.authorization !== undefined
  ) {
    return false;
  }
  const json = Math.max(quality(accept, 'application/problem+json'), quality(accept, 'application/json'));
  return quality(accept, 'text/html') > json;
}

/** The frame for an error page: resolved only for a browser, never while the database is what failed. */
async function problemFrame(request: FastifyRequest, error?: unknown): Promise<Frame | undefined> {
  if (!prefersHtml(request) || (error !== undefined && asDatabaseUnavailable(error) !== undefined)) {
    return undefined;
  }
  // The header is a courtesy: failing to draw it must not change the answer.
  return request.pageFrame().catch(() => undefined);
}

export function sendProblem(
  request: FastifyRequest,
  reply: FastifyReply,
  code: ProblemCode,
  extra: Pick<Problem, 'detail' | 'errors'> = {},
  frame?: Frame,
): FastifyReply {
  const type = PROBLEM_TYPES[code];
  const problem: Problem = {
    type: problemTypeUri(code),
    title: type.title,
    status: type.status,
    code,
    request_id: request.id,
    ...extra,
  };
  if (prefersHtml(request)) return sendPage(reply, type.status, problemPage(problem, frame));
  return reply.status(type.status).type('application/problem+json').serializer(JSON.stringify).send(problem);
}

const FASTIFY_CODES: Readonly<Record<string, ProblemCode>> = {
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'unsupported_media_type',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'malformed_body',
  FST_ERR_CTP_INVALID_JSON_BODY: 'malformed_body',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'malformed_body',
  FST_ERR_CTP_EMPTY_TYPE: 'unsupported_media_type',
  FST_ERR_CTP_INVALID_TYPE: 'unsupported_media_type',
};

function validationErrors(error: FastifyError): FieldError[] {
  return (error.validation ?? []).map((issue) => {
    const missing =
      (issue.params as { missingProperty?: string; additionalProperty?: string } | undefined) ?? {};
    const base =
      issue.instancePath === '' ? (error.validationContext ?? 'body') : issue.instancePath.slice(1);
    if (missing.additionalProperty !== undefined) {
      return { field: `${base}/${missing.additionalProperty}`, message: 'is not an accepted field' };
    }
    if (missing.missingProperty !== undefined) {
      return { field: `${base}/${missing.missingProperty}`, message: 'is required' };
    }
    // A person reads these too (error pages, forms): a format rule is named in words, never as its regular expression.
    if (issue.keyword === 'pattern') return { field: base, message: 'does not have the expected format' };
    // ajv's message describes the rule ("must be string"), never the submitted value.
    return { field: base, message: issue.message ?? 'is not valid' };
  });
}

/**
 * Errors the router raises before any route matches (Fastify's
 * `frameworkErrors`): a path parameter over the length limit, a path that is
 * not valid percent-encoding. Fastify's own answers echo the URL, which can
 * carry tokens; these name the problem only.
 */
export function answerFrameworkError(
  error: FastifyError,
  request: FastifyRequest,
  reply: FastifyReply,
): void {
  // No route, so no onSend hook: the request id header is set here.
  reply.header('x-request-id', request.id);
  if (error.code === 'FST_ERR_MAX_PARAM_LENGTH') {
    sendProblem(request, reply, 'uri_too_long');
  } else if (error.code === 'FST_ERR_BAD_URL') {
    sendProblem(request, reply, 'bad_request', { detail: 'the path is not valid percent-encoded UTF-8' });
  } else {
    request.log.error({ err: { code: error.code, message: error.message } }, 'request failed in routing');
    sendProblem(request, reply, 'internal');
  }
}

export function registerProblemHandlers(app: App): void {
  app.setNotFoundHandler(async (request, reply) =>
    sendProblem(request, reply, 'not_found', {}, await problemFrame(request)),
  );

  app.setErrorHandler(async (error: FastifyError, request, reply) => {
    const frame = await problemFrame(request, error);
    const send = (code: ProblemCode, extra: Pick<Problem, 'detail' | 'errors'> = {}) =>
      sendProblem(request, reply, code, extra, frame);
    if (error.validation !== undefined) {
      return send('validation_failed', { errors: validationErrors(error) });
    }
    if (error instanceof RateLimitedError || error instanceof PasswordChecksBusyError) {
      reply.header('retry-after', String(error.retryAfterSeconds));
      return send(error.code, {
        detail: `retry after ${error.retryAfterSeconds} seconds`,
      });
    }
    if (isAppError(error) && isProblemCode(error.code) && PROBLEM_TYPES[error.code].status < 500) {
      // A 4xx AppError's message is written for the client: it names the rule, never the submitted value.
      const errors = error.field === undefined ? undefined : [{ field: error.field, message: error.message }];
      return send(
        error.code,
        errors === undefined ? { detail: error.message } : { detail: error.message, errors },
      );
    }
    if (error.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
      return discardBody(request.raw).then(() => send('body_too_large'));
    }
    if (error instanceof BodyParseError) {
      return send('malformed_body', { detail: error.message });
    }
    if (error instanceof UnsupportedMediaTypeError) {
      return send('unsupported_media_type', { detail: error.message });
    }
    const mapped = error.code === undefined ? undefined : FASTIFY_CODES[error.code];
    if (mapped !== undefined) return send(mapped);
    if (error instanceof SyntaxError && error.statusCode === 400) return send('malformed_body');
    const unavailable = asDatabaseUnavailable(error);
    if (unavailable !== undefined) {
      request.log.warn({ err: error }, 'database unavailable');
      reply.header('retry-after', String(DATABASE_RETRY_AFTER_SECONDS));
      return send('database_unavailable');
    }
    const status = error.statusCode ?? 500;
    if (status >= 400 && status < 500) {
      request.log.info({ err: { code: error.code, message: error.message } }, 'client error');
      return send('bad_request');
    }
    request.log.error({ err: error }, 'request failed');
    return send('internal');
  });
}
