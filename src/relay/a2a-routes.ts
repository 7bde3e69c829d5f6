import { A2A_PROTOCOL_VERSION, A2A_VERSION_HEADER } from '@a2a-js/sdk';
import { LegacyJsonRpcTransportHandler } from '@a2a-js/sdk/compat/v0_3/server';
import { A2A_ERROR_CODE, VersionNotSupportedError } from '@a2a-js/sdk/errors';
import { JsonRpcTransportHandler, ServerCallContext } from '@a2a-js/sdk/server';
import type { Sql } from 'postgres';
import { Type } from 'typebox';
import type { App } from '../http/app.ts';
import { ProblemSchema } from '../http/problems.ts';
import type { RateLimits } from '../http/rate-limits.ts';
import { type A2ACall, RelayA2AHandler } from './a2a-handler.ts';
import { IDEMPOTENCY_HEADER } from './idempotency.ts';

// POST /a2a/:handle: the relay as A2A JSON-RPC, for any A2A client (RLY-2,
// RLY-3, RLY-4, RLY-6). The card (card-routes.ts) names this URL as the
// agent's JSON-RPC endpoint. @a2a-js/sdk's transport parses the request and
// calls RelayA2AHandler; this route only brings the body and the headers to
// it, and hands what must not be a JSON-RPC answer to the app. A2A-Version 1.0 speaks the 1.0 methods
// (SendMessage, GetTask, CancelTask); no header, or 0.3, the 0.3 ones
// (message/send, tasks/get, tasks/cancel), as the SDK's own server does.
//
// Every JSON-RPC answer, result or error, is a 200, as in the SDK's own
// JSON-RPC server and A2A's JSON-RPC binding; HTTP errors stay RFC 9457
// problems, as on every route. -32001 "no such agent or task" is the one
// answer for every request that may not reach anything (RLY-2); -32700 bad
// JSON, -32600 not a JSON-RPC request, -32601 unknown method, -32602 bad
// params, -32002..-32009 the A2A refusals. A body over the app's limit is
// 413, a rate limit 429 with Retry-After, a replay while the first request
// is in flight 409: problem+json.

const JsonRpcId = Type.Union([Type.String(), Type.Integer(), Type.Null()]);
const JsonRpcErrorSchema = Type.Object(
  {
    jsonrpc: Type.Literal('2.0'),
    id: JsonRpcId,
    error: Type.Object({
      code: Type.Integer({ description: 'JSON-RPC / A2A error code' }),
      message: Type.String(),
      data: Type.Optional(Type.Array(Type.Unknown())),
    }),
  },
  { description: 'A JSON-RPC error response' },
);
const JsonRpcResultSchema = Type.Object(
  { jsonrpc: Type.Literal('2.0'), id: JsonRpcId, result: Type.Unknown() },
  { description: 'A JSON-RPC result: SendMessage answers {task}, GetTask and CancelTask the task' },
);

const RequestSchema = Type.Object(
  {
    jsonrpc: Type.Literal('2.0'),
    id: Type.Optional(JsonRpcId),
    method: Type.String({
      description:
        'SendMessage, GetTask, CancelTask (A2A-Version: 1.0); message/send, tasks/get, tasks/cancel (0.3)',
    }),
    params: Type.Optional(Type.Object({})),
  },
  { description: 'An A2A JSON-RPC request' },
);

// Any handle reaches the handler: a malformed one is as unknown as any other (RLY-2).
const HandleParams = Type.Object({ handle: Type.String() }, { additionalProperties: false });

const BEARER = /^Bearer ([\x21-\x7e]{1,200})$/i;
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** The body as the client sent it, left for the route to parse: a parse failure is a JSON-RPC error here. */
interface RawBody {
  readonly raw: Buffer;
}

interface RpcError {
  readonly code: number;
  readonly message: string;
  readonly data?: unknown[];
}

interface JsonRpcRefusal {
  readonly jsonrpc: '2.0';
  readonly id: string | number | null;
  readonly error: RpcError;
}

type JsonRpcAnswer =
  | { readonly jsonrpc: '2.0'; readonly id: string | number | null; readonly result: unknown }
  | JsonRpcRefusal;

const rpcError = (id: string | number | null, code: number, message: string): JsonRpcRefusal => ({
  jsonrpc: '2.0',
  id,
  error: { code, message },
});

/** The parsed request, or the JSON-RPC error that refuses it (the SDK would call either kind "invalid params"). */
function parseRequest(body: RawBody): { request: Record<string, unknown> } | { refusal: JsonRpcRefusal } {
  let parsed: unknown;
  try {
    // Own "__proto__" keys are harmless to JSON.parse but not to whatever merges the params later.
    parsed = JSON.parse(utf8.decode(body.raw), (key, value: unknown) => {
      if (key === '__proto__') throw new SyntaxError('a "__proto__" key');
      return value;
    });
  } catch {
    return { refusal: rpcError(null, A2A_ERROR_CODE.PARSE_ERROR, 'the body is not valid JSON (UTF-8)') };
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    return {
      refusal: rpcError(
        null,
        A2A_ERROR_CODE.INVALID_REQUEST,
        'the body must be one JSON-RPC 2.0 request object',
      ),
    };
  }
  const request = parsed as Record<string, unknown>;
  const { id } = request;
  const validId = id === undefined || id === null || typeof id === 'string' || Number.isInteger(id);
  if (request.jsonrpc !== '2.0' || typeof request.method !== 'string' || !validId) {
    return {
      refusal: rpcError(
        validId ? ((id as string | number | null | undefined) ?? null) : null,
        A2A_ERROR_CODE.INVALID_REQUEST,
        'not a JSON-RPC 2.0 request: jsonrpc must be "2.0", method a string, id a string, integer or null',
      ),
    };
  }
  return { request };
}

/** The transport's answer, typed. */
function answered(answer: {
  readonly id: string | number | null;
  readonly result?: unknown;
  readonly error?: unknown;
}): JsonRpcAnswer {
  return answer.error === undefined
    ? { jsonrpc: '2.0', id: answer.id, result: answer.result }
    : { jsonrpc: '2.0', id: answer.id, error: answer.error as RpcError };
}

export function registerA2aRoutes(
  app: App,
  deps: { sql: Sql; rateLimits: Pick<RateLimits, 'consume'> },
): void {
  // Its own body parser: bad JSON must answer as JSON-RPC (-32700), not as the app's 400 problem.
  app.register((scope: App, _options, registered) => {
    scope.removeContentTypeParser('application/json');
    scope.addContentTypeParser('application/json', { parseAs: 'buffer' }, (_request, raw: Buffer, done) =>
      done(null, { raw } satisfies RawBody),
    );

    scope.post(
      '/a2a/:handle',
      {
        config: { auth: 'none' },
        schema: {
          operationId: 'a2aJsonRpc',
          summary:
            "The agent's A2A JSON-RPC endpoint: send a message with a relay token, read or cancel the task with a thread token",
          description:
            'Authorization: Bearer enc_relay_… for SendMessage; Bearer enc_thread_… for GetTask and CancelTask. ' +
            'A thread is the task and its context. Unknown or unpublished handles, tokens of another handle, kind or ' +
            'thread, and revoked or expired tokens all answer JSON-RPC error -32001. Idempotency-Key (or the ' +
            "message's messageId) makes a SendMessage replay answer the first task and create nothing.",
          tags: ['relay'],
          params: HandleParams,
          documentedBody: RequestSchema,
          response: {
            200: Type.Union([JsonRpcResultSchema, JsonRpcErrorSchema]),
            409: ProblemSchema,
            413: ProblemSchema,
            415: ProblemSchema,
            429: ProblemSchema,
          },
        },
      },
      async (request) => {
        const parsed = parseRequest(request.body as RawBody);
        if ('refusal' in parsed) return parsed.refusal;
        const rpc = parsed.request;
        const requested = request.headers[A2A_VERSION_HEADER.toLowerCase()];
        const version = typeof requested === 'string' ? requested.trim() : '0.3';
        const id = (rpc.id as string | number | null | undefined) ?? null;
        if (version !== A2A_PROTOCOL_VERSION && version !== '0.3') {
          const error = JsonRpcTransportHandler.mapToJSONRPCError(
            new VersionNotSupportedError({ message: `A2A-Version must be ${A2A_PROTOCOL_VERSION} or 0.3` }),
          );
          return { jsonrpc: '2.0' as const, id, error };
        }
        const bearer = BEARER.exec(request.headers.authorization ?? '')?.[1];
        const key = request.headers[IDEMPOTENCY_HEADER];
        const call: A2ACall = {
          handle: request.params.handle,
          token: bearer,
          clientAddress: request.ip,
          idempotencyKey: Array.isArray(key) ? key.join(', ') : key,
        };
        const handler = new RelayA2AHandler(deps, call);
        const context = new ServerCallContext({ requestedVersion: version });
        const transport =
          version === '0.3'
            ? new LegacyJsonRpcTransportHandler(handler)
            : new JsonRpcTransportHandler(handler);
        let answer = await transport.handle(rpc, context);
        if (Symbol.asyncIterator in answer) {
          // Streams are refused (the card says streaming false): the first event is the refusal.
          const stream = answer;
          answer = await stream.next().then(
            () => rpcError(id, A2A_ERROR_CODE.UNSUPPORTED_OPERATION, 'streaming is not supported'),
            (error: unknown) => ({
              jsonrpc: '2.0',
              id,
              error:
                version === '0.3'
                  ? LegacyJsonRpcTransportHandler.mapToLegacyJSONRPCError(error)
                  : JsonRpcTransportHandler.mapToJSONRPCError(error),
            }),
          );
          await stream.return(undefined);
        }
        if (call.escaped !== undefined) throw call.escaped;
        // The SDK puts a fault's own message in -32603: it is logged, and the client gets a plain 500.
        if (
          'error' in answer &&
          (answer.error as RpcError | undefined)?.code === A2A_ERROR_CODE.INTERNAL_ERROR
        ) {
          throw new Error(`A2A transport fault: ${(answer.error as RpcError).message}`);
        }
        return answered(answer);
      },
    );
    registered();
  });
}
