import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  anthropicBody,
  anthropicEvents,
  type Completion,
  chatBody,
  chatEvents,
  type ErrorReason,
  errorAnswer,
  fakeReplyText,
  fakeTokenCount,
  googleBody,
  googleChunks,
  googleCountTokensBody,
  lastUserText,
  modelsBody,
  type ProviderName,
  requestTokenCount,
  responsesBody,
  responsesEvents,
  type SseEvent,
} from './fake-provider-formats.ts';

// Fakes of the model providers' HTTP APIs, for tests: the one mock of the
// model gateway's tests, at the network boundary. Each provider is its own
// http server on 127.0.0.1 (OpenAI and xAI share paths, so one server could
// not tell them apart), serving the provider's real paths and wire formats,
// so the official SDKs and the gateway talk to it as to the real thing.
//
//   const fakes = await startFakeProviders({ keys: { anthropic: ['sk-ant-a'] } });
//   fakes.anthropic.url        // 'http://127.0.0.1:PORT', a base URL without /v1
//   fakes.env                  // { ENCLAVE_GATEWAY_ANTHROPIC_URL: …, _OPENAI_, _GOOGLE_, _XAI_ }
//   fakes.anthropic.setKeys(['sk-ant-b'])         // valid keys, changeable at any time
//   fakes.anthropic.fail({ kind: 'rate_limited' }, { times: 1 })   // times defaults to always
//   fakes.anthropic.calls      // every request that arrived whole: RecordedCall[]
//   await fakes.anthropic.waitForCall(1); await fakes.anthropic.waitForAbort(1);
//   await fakes.close()        // ends every socket, held ones included
//
// Served: anthropic POST /v1/messages (JSON, or SSE when "stream": true) and
// POST /v1/messages/count_tokens; openai and xai POST /v1/chat/completions
// (SSE data lines ending [DONE], a usage chunk when
// stream_options.include_usage), POST /v1/responses (SSE typed events) and
// GET /v1/models; google POST /v1beta/models/{model}:generateContent,
// :streamGenerateContent (SSE with ?alt=sse, else a JSON array) and
// :countTokens. Anything else gets the provider's 404.
//
// Checks, in order, each with the provider's real status and error body:
// the key (anthropic x-api-key or Authorization: Bearer; openai and xai Authorization: Bearer; google
// x-goog-api-key or ?key=; a missing key is 401 for anthropic and openai, 403
// for google, 400 for xai; a wrong one 401, 400 API_KEY_INVALID, 400), the
// anthropic-version header (anthropic), the path, then a queued fault, then
// the JSON body.
//
// Answers are deterministic: the reply is "echo: " + the last user message's
// text (fakeReplyText); input tokens are the words of every text in the
// request (requestTokenCount), output tokens the words of the reply
// (fakeTokenCount). Streams send one delta per word.
//
// Faults are queued per provider; each applies to one call (times: n) or to
// every call, after the key check:
//   rate_limited  429 with retry-after (default '1') and the provider's body
//   overloaded    anthropic 529 overloaded_error; the others 503
//   server_error  500
//   slow          waits ms before the headers, then answers normally
//   cut           sends the headers and afterEvents stream events, then
//                 destroys the socket (a JSON answer is cut before any byte)
//   stall         the same, but leaves the connection open, sending nothing
//                 more (a JSON answer is never sent)
//   hold          never answers
// A call is marked aborted when its client closed the connection before the
// answer ended (not when the fake cut it, nor when close() ended it).

export type { ProviderName } from './fake-provider-formats.ts';
export { fakeReplyText, fakeTokenCount, requestTokenCount } from './fake-provider-formats.ts';

export interface RecordedCall {
  readonly provider: ProviderName;
  readonly method: string;
  /** The request target as received, query included. */
  readonly url: string;
  /** The path without the query. */
  readonly path: string;
  /** The credential that arrived (header, or Google's ?key=); undefined when none did. */
  readonly key: string | undefined;
  readonly headers: IncomingHttpHeaders;
  readonly body: Buffer;
  /** The status the fake answered with; undefined while held, or when cut before the headers. */
  status: number | undefined;
  /** True once the client closed the connection before the answer ended. */
  aborted: boolean;
}

export type Fault =
  | { readonly kind: 'rate_limited'; readonly retryAfter?: string }
  | { readonly kind: 'overloaded' }
  | { readonly kind: 'server_error' }
  | { readonly kind: 'slow'; readonly ms: number }
  | { readonly kind: 'cut'; readonly afterEvents: number }
  | { readonly kind: 'stall'; readonly afterEvents: number }
  | { readonly kind: 'hold' };

export interface FakeProvider {
  readonly name: ProviderName;
  /** Base URL, scheme host and port only: the SDKs' and the gateway's upstream (OpenAI's SDK wants url + '/v1'). */
  readonly url: string;
  readonly calls: readonly RecordedCall[];
  /** Replaces the set of keys the fake accepts. */
  setKeys(keys: readonly string[]): void;
  /** Queues a fault for the next `times` authenticated calls (default: every call from now on). */
  fail(fault: Fault, options?: { readonly times?: number }): void;
  clearFaults(): void;
  /** Forgets the recorded calls and the queued faults. */
  reset(): void;
  /** Resolves with the n-th recorded call (1-based, since the last reset) once it has arrived. */
  waitForCall(n?: number): Promise<RecordedCall>;
  /** Resolves with the n-th call its client aborted (1-based, since the last reset). */
  waitForAbort(n?: number): Promise<RecordedCall>;
}

export interface FakeProviders {
  readonly anthropic: FakeProvider;
  readonly openai: FakeProvider;
  readonly google: FakeProvider;
  readonly xai: FakeProvider;
  /** The gateway's upstream settings pointing at these fakes. */
  readonly env: Readonly<Record<string, string>>;
  close(): Promise<void>;
}

export const PROVIDERS: readonly ProviderName[] = ['anthropic', 'openai', 'google', 'xai'];

/** Starts all four fakes; a provider whose keys are not given accepts `test-<provider>-key`. */
export async function startFakeProviders(
  options: { readonly keys?: Partial<Record<ProviderName, readonly string[]>> } = {},
): Promise<FakeProviders> {
  const [anthropic, openai, google, xai] = await Promise.all(
    PROVIDERS.map((name) => startFakeProvider(name, options.keys?.[name] ?? [`test-${name}-key`])),
  );
  if (anthropic === undefined || openai === undefined || google === undefined || xai === undefined) {
    throw new Error('a fake provider did not start');
  }
  const all = [anthropic, openai, google, xai];
  return {
    anthropic,
    openai,
    google,
    xai,
    env: Object.fromEntries(all.map((fake) => [`ENCLAVE_GATEWAY_${fake.name.toUpperCase()}_URL`, fake.url])),
    close: async () => {
      await Promise.all(all.map((fake) => fake.close()));
    },
  };
}

/** The route a request names, or undefined when the provider serves no such path. */
function routeOf(
  provider: ProviderName,
  method: string,
  path: string,
): { route: string; model?: string } | undefined {
  if (provider === 'google') {
    const match = /^\/v1beta\/models\/([^/:]+):(generateContent|streamGenerateContent|countTokens)$/.exec(
      path,
    );
    if (method !== 'POST' || match?.[1] === undefined || match[2] === undefined) return undefined;
    return { route: match[2], model: decodeURIComponent(match[1]) };
  }
  const routes: Record<string, string> =
    provider === 'anthropic'
      ? { 'POST /v1/messages': 'messages', 'POST /v1/messages/count_tokens': 'count_tokens' }
      : {
          'POST /v1/chat/completions': 'chat',
          'POST /v1/responses': 'responses',
          'GET /v1/models': 'models',
        };
  const route = routes[`${method} ${path}`];
  return route === undefined ? undefined : { route };
}

function keyOf(
  provider: ProviderName,
  headers: IncomingHttpHeaders,
  query: URLSearchParams,
): string | undefined {
  switch (provider) {
    case 'anthropic':
      // x-api-key, or Authorization: Bearer, which @anthropic-ai/sdk 1.x sends an apiKey in.
      return headers['x-api-key'] === undefined ? bearer(headers) : String(headers['x-api-key']);
    case 'google':
      return headers['x-goog-api-key'] === undefined
        ? (query.get('key') ?? undefined)
        : String(headers['x-goog-api-key']);
    default:
      return bearer(headers);
  }
}

function bearer(headers: IncomingHttpHeaders): string | undefined {
  return /^Bearer (.+)$/i.exec(headers.authorization ?? '')?.[1];
}

interface QueuedFault {
  readonly fault: Fault;
  remaining: number;
}

type Answer =
  | {
      readonly kind: 'json';
      readonly status: number;
      readonly body: unknown;
      readonly headers?: Record<string, string>;
    }
  | { readonly kind: 'stream'; readonly contentType: string; readonly frames: readonly string[] };

const SAFETY_NET_MS = 10_000;

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

async function startFakeProvider(
  name: ProviderName,
  initialKeys: readonly string[],
): Promise<FakeProvider & { close(): Promise<void> }> {
  let keys = new Set(initialKeys);
  let calls: RecordedCall[] = [];
  let faults: QueuedFault[] = [];
  let serial = 0;
  let closing = false;
  const closed = new AbortController();
  const waiters = new Set<() => void>();
  const notify = (): void => {
    for (const waiter of [...waiters]) waiter();
  };

  function waitFor(what: string, find: () => RecordedCall | undefined): Promise<RecordedCall> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        waiters.delete(check);
        reject(new Error(`fake ${name}: no ${what} within ${SAFETY_NET_MS} ms`));
      }, SAFETY_NET_MS);
      const check = (): void => {
        const found = find();
        if (found === undefined) return;
        clearTimeout(timer);
        waiters.delete(check);
        resolve(found);
      };
      waiters.add(check);
      check();
    });
  }

  function takeFault(): Fault | undefined {
    const queued = faults.find((entry) => entry.remaining > 0);
    if (queued === undefined) return undefined;
    queued.remaining -= 1;
    return queued.fault;
  }

  function refusal(reason: ErrorReason, headers: Record<string, string> = {}): Answer {
    const { status, body } = errorAnswer(name, reason, serial);
    return { kind: 'json', status, body, headers };
  }

  /** The answer to a request that passed every check: the fake's deterministic completion. */
  function complete(
    route: string,
    model: string | undefined,
    body: Record<string, unknown>,
    query: URLSearchParams,
  ): Answer {
    const text = fakeReplyText(lastUserText(name, route, body));
    const c: Completion = {
      model: model ?? (typeof body.model === 'string' ? body.model : 'fake-model'),
      text,
      inputTokens: requestTokenCount(body),
      outputTokens: fakeTokenCount(text),
      serial,
    };
    const json = (answer: unknown): Answer => ({ kind: 'json', status: 200, body: answer });
    const sse = (events: SseEvent[], lineEnd = '\n'): Answer => ({
      kind: 'stream',
      contentType: 'text/event-stream; charset=utf-8',
      frames: events.map(
        (e) =>
          `${e.event === undefined ? '' : `event: ${e.event}${lineEnd}`}data: ${e.data}${lineEnd}${lineEnd}`,
      ),
    });
    const stream = body.stream === true;
    switch (route) {
      case 'messages':
        return stream ? sse(anthropicEvents(c)) : json(anthropicBody(c));
      case 'count_tokens':
        return json({ input_tokens: c.inputTokens });
      case 'chat': {
        const includeUsage = isObject(body.stream_options) && body.stream_options.include_usage === true;
        return stream ? sse(chatEvents(c, includeUsage)) : json(chatBody(c));
      }
      case 'responses':
        return stream ? sse(responsesEvents(c)) : json(responsesBody(c));
      case 'models':
        return json(modelsBody(name === 'xai' ? 'xai' : 'openai'));
      case 'generateContent':
        return json(googleBody(c));
      case 'countTokens':
        return json(googleCountTokensBody(c));
      default: {
        // streamGenerateContent: SSE (CRLF-delimited, as Google sends it) with ?alt=sse, else one JSON array sent piecewise.
        const chunks = googleChunks(c).map((chunk) => JSON.stringify(chunk));
        if (query.get('alt') === 'sse')
          return sse(
            chunks.map((data) => ({ data })),
            '\r\n',
          );
        return {
          kind: 'stream',
          contentType: 'application/json; charset=utf-8',
          frames: [...chunks.map((chunk, index) => `${index === 0 ? '[' : ',\r\n'}${chunk}`), ']'],
        };
      }
    }
  }

  /** Checks the request as the provider would, then answers, unless a queued fault says otherwise. */
  async function handle(call: RecordedCall, query: URLSearchParams, res: ServerResponse): Promise<void> {
    const route = routeOf(name, call.method, call.path);
    let answer: Answer;
    let fault: Fault | undefined;
    if (call.key === undefined) answer = refusal('missing_key');
    else if (!keys.has(call.key)) answer = refusal('invalid_key');
    else if (name === 'anthropic' && call.headers['anthropic-version'] === undefined)
      answer = refusal('missing_version');
    else if (route === undefined) answer = refusal('not_found');
    else {
      fault = takeFault();
      let body: unknown = {};
      try {
        if (call.body.length > 0) body = JSON.parse(call.body.toString('utf8'));
      } catch {
        body = undefined;
      }
      answer = isObject(body) ? complete(route.route, route.model, body, query) : refusal('invalid_json');
    }

    switch (fault?.kind) {
      case 'hold':
        return;
      case 'rate_limited':
        answer = refusal('rate_limited', { 'retry-after': fault.retryAfter ?? '1' });
        break;
      case 'overloaded':
      case 'server_error':
        answer = refusal(fault.kind);
        break;
      case 'slow':
        await sleep(fault.ms, undefined, { signal: closed.signal }).catch(() => undefined);
        break;
    }
    if (res.destroyed || (fault?.kind === 'stall' && answer.kind === 'json')) return;
    if (fault?.kind === 'cut' && answer.kind === 'json') {
      cutByFake.add(call);
      res.destroy();
      return;
    }
    if (answer.kind === 'json') {
      call.status = answer.status;
      res.writeHead(answer.status, { 'content-type': 'application/json', ...answer.headers });
      res.end(JSON.stringify(answer.body));
      return;
    }
    const stopAfter = fault?.kind === 'cut' || fault?.kind === 'stall' ? fault.afterEvents : undefined;
    call.status = 200;
    res.writeHead(200, { 'content-type': answer.contentType, 'cache-control': 'no-cache' });
    res.flushHeaders();
    for (const [index, frame] of answer.frames.entries()) {
      if (index === stopAfter) {
        if (fault?.kind === 'cut') {
          cutByFake.add(call);
          res.destroy();
        }
        return;
      }
      if (res.destroyed) return;
      // Waiting for each frame to be flushed makes a cut land after exactly the frames sent.
      await new Promise<void>((resolve) => res.write(frame, () => resolve()));
    }
    res.end();
  }

  const cutByFake = new WeakSet<RecordedCall>();

  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      serial += 1;
      const target = new URL(req.url ?? '/', 'http://fake');
      const call: RecordedCall = {
        provider: name,
        method: req.method ?? 'GET',
        url: req.url ?? '/',
        path: target.pathname,
        key: keyOf(name, req.headers, target.searchParams),
        headers: req.headers,
        body: Buffer.concat(chunks),
        status: undefined,
        aborted: false,
      };
      calls.push(call);
      res.on('close', () => {
        if (res.writableFinished || closing || cutByFake.has(call)) return;
        call.aborted = true;
        notify();
      });
      notify();
      handle(call, target.searchParams, res).catch((error: unknown) => {
        res.destroy(error instanceof Error ? error : new Error(String(error)));
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  return {
    name,
    url: `http://127.0.0.1:${port}`,
    get calls() {
      return calls;
    },
    setKeys: (next) => {
      keys = new Set(next);
    },
    fail: (fault, options = {}) => {
      faults.push({ fault, remaining: options.times ?? Number.POSITIVE_INFINITY });
    },
    clearFaults: () => {
      faults = [];
    },
    reset: () => {
      calls = [];
      faults = [];
    },
    waitForCall: (n = 1) => waitFor(`call #${n}`, () => calls[n - 1]),
    waitForAbort: (n = 1) => waitFor(`aborted call #${n}`, () => calls.filter((call) => call.aborted)[n - 1]),
    close: async () => {
      closing = true;
      closed.abort();
      const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await stopped;
    },
  };
}
