import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import { asDatabaseUnavailable, DATABASE_RETRY_AFTER_SECONDS } from '../db/timeouts.ts';
import { isAppError } from '../errors.ts';
import type { App } from './app.ts';
import { BodyParseError, discardBody, UnsupportedMediaTypeError } from './body-parsers.ts';
import { isProblemCode, PROBLEM_TYPES, type ProblemCode, problemTypeUri } from './problem-types.ts';
import { RateLimitedError } from './rate-limits.ts';

// RFC 9457 problem details for every error the server answers with. The
// message of a 5xx is logged, never sent: clients get the title and the
// request id to quote.

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

export function sendProblem(
  request: FastifyRequest,
  reply: FastifyReply,
  code: ProblemCode,
  extra: Pick<Problem, 'detail' | 'errors'> = {},
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
  app.setNotFoundHandler((request, reply) => sendProblem(request, reply, 'not_found'));

  app.setErrorHandler((error: FastifyError, request, reply) => {
    if (error.validation !== undefined) {
      return sendProblem(request, reply, 'validation_failed', { errors: validationErrors(error) });
    }
    if (error instanceof RateLimitedError) {
      reply.header('retry-after', String(error.retryAfterSeconds));
      return sendProblem(request, reply, 'rate_limited', {
        detail: `retry after ${error.retryAfterSeconds} seconds`,
      });
    }
    if (isAppError(error) && isProblemCode(error.code) && PROBLEM_TYPES[error.code].status < 500) {
      // A 4xx AppError's message is written for the client: it names the rule, never the submitted value.
      const errors = error.field === undefined ? undefined : [{ field: error.field, message: error.message }];
      return sendProblem(
        request,
        reply,
        error.code,
        errors === undefined ? { detail: error.message } : { detail: error.message, errors },
      );
    }
    if (error.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
      return discardBody(request.raw).then(() => sendProblem(request, reply, 'body_too_large'));
    }
    if (error instanceof BodyParseError) {
      return sendProblem(request, reply, 'malformed_body', { detail: error.message });
    }
    if (error instanceof UnsupportedMediaTypeError) {
      return sendProblem(request, reply, 'unsupported_media_type', { detail: error.message });
    }
    const mapped = error.code === undefined ? undefined : FASTIFY_CODES[error.code];
    if (mapped !== undefined) return sendProblem(request, reply, mapped);
    if (error instanceof SyntaxError && error.statusCode === 400)
      return sendProblem(request, reply, 'malformed_body');
    const unavailable = asDatabaseUnavailable(error);
    if (unavailable !== undefined) {
      request.log.warn({ err: error }, 'database unavailable');
      reply.header('retry-after', String(DATABASE_RETRY_AFTER_SECONDS));
      return sendProblem(request, reply, 'database_unavailable');
    }
    const status = error.statusCode ?? 500;
    if (status >= 400 && status < 500) {
      request.log.info({ err: { code: error.code, message: error.message } }, 'client error');
      return sendProblem(request, reply, 'bad_request');
    }
    request.log.error({ err: error }, 'request failed');
    return sendProblem(request, reply, 'internal');
  });
}
