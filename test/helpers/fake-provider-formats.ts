// The bodies and stream events the fake providers answer with, in each
// provider's real wire format (Anthropic Messages, OpenAI Chat Completions and
// Responses, Google AI generateContent, xAI's OpenAI-shaped API). Pure
// functions: the server in fake-providers.ts decides when to send what.

export type ProviderName = 'anthropic' | 'openai' | 'google' | 'xai';

/** One server-sent event; `event` is the `event:` line, absent where the provider sends data lines only. */
export interface SseEvent {
  readonly event?: string;
  readonly data: string;
}

/** What the fake "generated" for one request, and the token counts it reports. */
export interface Completion {
  readonly model: string;
  readonly text: string;
  readonly inputTokens: number;
  readonly outputTokens: number;
  /** A per-server sequence number, so ids differ between calls and stay predictable. */
  readonly serial: number;
}

/** The fake's tokenizer: one token per whitespace-separated word. */
export function fakeTokenCount(text: string): number {
  return text.split(/\s+/).filter((word) => word !== '').length;
}

/** The fake's answer to a conversation whose last user message is `lastUserText`. */
export function fakeReplyText(lastUserText: string): string {
  return `echo: ${lastUserText}`;
}

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** The text of a message's content: a string, or the `text` of its parts (Anthropic blocks, OpenAI parts, Google parts). */
function contentText(content: unknown): string {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return '';
  return content
    .map((part) => (isObject(part) && typeof part.text === 'string' ? part.text : ''))
    .filter((text) => text !== '')
    .join(' ');
}

/** The last user message's text, wherever the provider's request puts it. */
export function lastUserText(provider: ProviderName, route: string, body: Record<string, unknown>): string {
  if (provider === 'google') {
    const contents = Array.isArray(body.contents) ? body.contents.filter(isObject) : [];
    const last = contents.filter((content) => content.role !== 'model').at(-1);
    return contentText(last?.parts);
  }
  if (route === 'responses' && typeof body.input === 'string') return body.input;
  const list = route === 'responses' ? body.input : body.messages;
  const messages = Array.isArray(list) ? list.filter(isObject) : [];
  return contentText(messages.filter((message) => message.role === 'user').at(-1)?.content);
}

/** Input tokens: the words of every text the request carries (system prompt, instructions and all messages). */
export function requestTokenCount(body: Record<string, unknown>): number {
  let count = 0;
  const visit = (value: unknown, key: string): void => {
    if (typeof value === 'string') {
      if (['text', 'content', 'input', 'system', 'instructions'].includes(key))
        count += fakeTokenCount(value);
    } else if (Array.isArray(value)) {
      for (const item of value) visit(item, key);
    } else if (isObject(value)) {
      for (const [childKey, child] of Object.entries(value)) visit(child, childKey);
    }
  };
  visit(body, '');
  return count;
}

/** The reply cut into the deltas a stream sends: one word (with its trailing space) each. */
function deltas(text: string): string[] {
  return text.match(/\S+\s*/g) ?? [''];
}

const CREATED = 1_700_000_000;

// --- Anthropic Messages ---------------------------------------------------

function anthropicMessage(c: Completion, done: boolean): Json {
  return {
    id: `msg_fake_${c.serial}`,
    type: 'message',
    role: 'assistant',
    model: c.model,
    content: done ? [{ type: 'text', text: c.text }] : [],
    stop_reason: done ? 'end_turn' : null,
    stop_sequence: null,
    usage: {
      input_tokens: c.inputTokens,
      output_tokens: done ? c.outputTokens : 1,
      cache_creation_input_tokens: 0,
      cache_read_input_tokens: 0,
    },
  };
}

export function anthropicBody(c: Completion): Json {
  return anthropicMessage(c, true);
}

export function anthropicEvents(c: Completion): SseEvent[] {
  const event = (type: string, data: Record<string, Json>): SseEvent => ({
    event: type,
    data: JSON.stringify({ type, ...data }),
  });
  return [
    event('message_start', { message: anthropicMessage(c, false) }),
    event('content_block_start', { index: 0, content_block: { type: 'text', text: '' } }),
    event('ping', {}),
    ...deltas(c.text).map((text) =>
      event('content_block_delta', { index: 0, delta: { type: 'text_delta', text } }),
    ),
    event('content_block_stop', { index: 0 }),
    event('message_delta', {
      delta: { stop_reason: 'end_turn', stop_sequence: null },
      usage: { output_tokens: c.outputTokens },
    }),
    event('message_stop', {}),
  ];
}

// --- OpenAI (and xAI) Chat Completions ------------------------------------

function chatUsage(c: Completion): Json {
  return {
    prompt_tokens: c.inputTokens,
    completion_tokens: c.outputTokens,
    total_tokens: c.inputTokens + c.outputTokens,
  };
}

export function chatBody(c: Completion): Json {
  return {
    id: `chatcmpl-fake-${c.serial}`,
    object: 'chat.completion',
    created: CREATED,
    model: c.model,
    choices: [
      {
        index: 0,
        message: { role: 'assistant', content: c.text, refusal: null },
        logprobs: null,
        finish_reason: 'stop',
      },
    ],
    usage: chatUsage(c),
  };
}

/** Chunks as `data:` lines ending with `[DONE]`; a last chunk with empty choices carries usage when asked for. */
export function chatEvents(c: Completion, includeUsage: boolean): SseEvent[] {
  const chunk = (choices: Json[], usage: Json): SseEvent => ({
    data: JSON.stringify({
      id: `chatcmpl-fake-${c.serial}`,
      object: 'chat.completion.chunk',
      created: CREATED,
      model: c.model,
      choices,
      ...(includeUsage ? { usage } : {}),
    }),
  });
  const choice = (delta: Json, finish: string | null): Json => ({
    index: 0,
    delta,
    logprobs: null,
    finish_reason: finish,
  });
  return [
    chunk([choice({ role: 'assistant', content: '', refusal: null }, null)], null),
    ...deltas(c.text).map((content) => chunk([choice({ content }, null)], null)),
    chunk([choice({}, 'stop')], null),
    ...(includeUsage ? [chunk([], chatUsage(c))] : []),
    { data: '[DONE]' },
  ];
}

// --- OpenAI Responses -----------------------------------------------------

function outputMessage(c: Completion, done: boolean): Json {
  return {
    type: 'message',
    id: `msg_fake_${c.serial}`,
    status: done ? 'completed' : 'in_progress',
    role: 'assistant',
    content: done ? [{ type: 'output_text', text: c.text, annotations: [] }] : [],
  };
}

function response(c: Completion, done: boolean): Json {
  return {
    id: `resp_fake_${c.serial}`,
    object: 'response',
    created_at: CREATED,
    status: done ? 'completed' : 'in_progress',
    error: null,
    incomplete_details: null,
    model: c.model,
    output: done ? [outputMessage(c, true)] : [],
    parallel_tool_calls: true,
    tool_choice: 'auto',
    tools: [],
    usage: done
      ? {
          input_tokens: c.inputTokens,
          input_tokens_details: { cached_tokens: 0 },
          output_tokens: c.outputTokens,
          output_tokens_details: { reasoning_tokens: 0 },
          total_tokens: c.inputTokens + c.outputTokens,
        }
      : null,
  };
}

export function responsesBody(c: Completion): Json {
  return response(c, true);
}

export function responsesEvents(c: Completion): SseEvent[] {
  const item = { item_id: `msg_fake_${c.serial}`, output_index: 0, content_index: 0 };
  const steps: [string, Record<string, Json>][] = [
    ['response.created', { response: response(c, false) }],
    ['response.in_progress', { response: response(c, false) }],
    ['response.output_item.added', { output_index: 0, item: outputMessage(c, false) }],
    ['response.content_part.added', { ...item, part: { type: 'output_text', text: '', annotations: [] } }],
    ...deltas(c.text).map((delta): [string, Record<string, Json>] => [
      'response.output_text.delta',
      { ...item, delta, logprobs: [] },
    ]),
    ['response.output_text.done', { ...item, text: c.text, logprobs: [] }],
    ['response.content_part.done', { ...item, part: { type: 'output_text', text: c.text, annotations: [] } }],
    ['response.output_item.done', { output_index: 0, item: outputMessage(c, true) }],
    ['response.completed', { response: response(c, true) }],
  ];
  return steps.map(([type, data], sequence) => ({
    event: type,
    data: JSON.stringify({ type, sequence_number: sequence, ...data }),
  }));
}

export function modelsBody(owner: string): Json {
  const model = (id: string): Json => ({ id, object: 'model', created: CREATED, owned_by: owner });
  return { object: 'list', data: [model('fake-model-small'), model('fake-model-large')] };
}

// --- Google AI generateContent --------------------------------------------

function googleChunk(c: Completion, text: string, outputSoFar: number, finished: boolean): Json {
  return {
    candidates: [
      {
        content: { parts: [{ text }], role: 'model' },
        ...(finished ? { finishReason: 'STOP' } : {}),
        index: 0,
      },
    ],
    usageMetadata: {
      promptTokenCount: c.inputTokens,
      candidatesTokenCount: outputSoFar,
      totalTokenCount: c.inputTokens + outputSoFar,
    },
    modelVersion: c.model,
    responseId: `fake-${c.serial}`,
  };
}

export function googleBody(c: Completion): Json {
  return googleChunk(c, c.text, c.outputTokens, true);
}

/** Each chunk is a whole GenerateContentResponse with running usage; the last has finishReason and the full count. */
export function googleChunks(c: Completion): Json[] {
  const parts = deltas(c.text);
  let soFar = 0;
  return parts.map((text, index) => {
    soFar += fakeTokenCount(text);
    return googleChunk(c, text, soFar, index === parts.length - 1);
  });
}

export function googleCountTokensBody(c: Completion): Json {
  return { totalTokens: c.inputTokens };
}

// --- Errors ---------------------------------------------------------------

/** Why the fake refuses or fails; each provider words and shapes it its own way. */
export type ErrorReason =
  | 'missing_key'
  | 'invalid_key'
  | 'missing_version'
  | 'not_found'
  | 'invalid_json'
  | 'rate_limited'
  | 'overloaded'
  | 'server_error';

export interface ErrorAnswer {
  readonly status: number;
  readonly body: Json;
}

const GOOGLE_STATUS: Record<number, string> = {
  400: 'INVALID_ARGUMENT',
  403: 'PERMISSION_DENIED',
  404: 'NOT_FOUND',
  429: 'RESOURCE_EXHAUSTED',
  500: 'INTERNAL',
  503: 'UNAVAILABLE',
};

function anthropicError(reason: ErrorReason, serial: number): ErrorAnswer {
  const [status, type, message] = (
    {
      missing_key: [401, 'authentication_error', 'x-api-key header is required'],
      invalid_key: [401, 'authentication_error', 'invalid x-api-key'],
      missing_version: [400, 'invalid_request_error', 'anthropic-version: header is required'],
      not_found: [404, 'not_found_error', 'Not Found'],
      invalid_json: [400, 'invalid_request_error', 'There was an issue with the format of your request'],
      rate_limited: [429, 'rate_limit_error', 'Number of request tokens has exceeded your rate limit'],
      overloaded: [529, 'overloaded_error', 'Overloaded'],
      server_error: [500, 'api_error', 'Internal server error'],
    } as const
  )[reason];
  return { status, body: { type: 'error', error: { type, message }, request_id: `req_fake_${serial}` } };
}

function openaiError(reason: ErrorReason): ErrorAnswer {
  const [status, type, code, message] = (
    {
      missing_key: [
        401,
        'invalid_request_error',
        null,
        "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
      ],
      // The real message echoes a masked key; the fake leaves it out, so nothing of a key is ever echoed.
      invalid_key: [401, 'invalid_request_error', 'invalid_api_key', 'Incorrect API key provided.'],
      missing_version: [400, 'invalid_request_error', null, 'Bad request.'],
      not_found: [404, 'invalid_request_error', null, 'Invalid URL'],
      invalid_json: [400, 'invalid_request_error', null, 'We could not parse the JSON body of your request.'],
      rate_limited: [429, 'requests', 'rate_limit_exceeded', 'Rate limit reached for requests.'],
      overloaded: [503, 'server_error', null, 'The engine is currently overloaded, please try again later.'],
      server_error: [500, 'server_error', null, 'The server had an error while processing your request.'],
    } as const
  )[reason];
  return { status, body: { error: { message, type, param: null, code } } };
}

function xaiError(reason: ErrorReason): ErrorAnswer {
  // xAI answers a missing or wrong key with 400, not 401, and a flat {code, error} body.
  const [status, code, error] = (
    {
      missing_key: [400, 'Client specified an invalid argument', 'Incorrect API key provided.'],
      invalid_key: [400, 'Client specified an invalid argument', 'Incorrect API key provided.'],
      missing_version: [400, 'Client specified an invalid argument', 'Bad request.'],
      not_found: [404, 'Some requested entity was not found', 'Not found.'],
      invalid_json: [
        400,
        'Client specified an invalid argument',
        'Failed to parse the request body as JSON.',
      ],
      rate_limited: [429, 'Some resource has been exhausted', 'Too many requests.'],
      overloaded: [503, 'The service is currently unavailable', 'The service is overloaded.'],
      server_error: [500, 'Internal error', 'Internal server error.'],
    } as const
  )[reason];
  return { status, body: { code, error } };
}

function googleError(reason: ErrorReason): ErrorAnswer {
  // Google answers a wrong key with 400 API_KEY_INVALID and a missing one with 403, not 401.
  const [status, message] = (
    {
      missing_key: [
        403,
        "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
      ],
      invalid_key: [400, 'API key not valid. Please pass a valid API key.'],
      missing_version: [400, 'Bad request.'],
      not_found: [404, 'Requested entity was not found.'],
      invalid_json: [400, 'Invalid JSON payload received.'],
      rate_limited: [429, 'Resource has been exhausted (e.g. check quota).'],
      overloaded: [503, 'The model is overloaded. Please try again later.'],
      server_error: [500, 'An internal error has occurred.'],
    } as const
  )[reason];
  const details: Json =
    reason === 'invalid_key'
      ? [
          {
            '@type': 'type.googleapis.com/google.rpc.ErrorInfo',
            reason: 'API_KEY_INVALID',
            domain: 'googleapis.com',
            metadata: { service: 'generativelanguage.googleapis.com' },
          },
        ]
      : [];
  return {
    status,
    body: { error: { code: status, message, status: GOOGLE_STATUS[status] ?? 'UNKNOWN', details } },
  };
}

export function errorAnswer(provider: ProviderName, reason: ErrorReason, serial: number): ErrorAnswer {
  switch (provider) {
    case 'anthropic':
      return anthropicError(reason, serial);
    case 'openai':
      return openaiError(reason);
    case 'xai':
      return xaiError(reason);
    case 'google':
      return googleError(reason);
  }
}
