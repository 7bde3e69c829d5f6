import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, test } from 'node:test';
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import { type FakeProviders, PROVIDERS, startFakeProviders } from './fake-providers.ts';

// The fake providers are the model gateway tests' one mock, so these tests
// hold them to the real thing: the official SDKs, pointed straight at the
// fakes, must parse every answer and see the usage; plain fetch stands in
// for Google's and xAI's clients.

const KEYS = {
  anthropic: 'sk-ant-one',
  openai: 'sk-openai-one',
  google: 'goog-one',
  xai: 'xai-one',
} as const;

let fakes: FakeProviders;

before(async () => {
  fakes = await startFakeProviders({
    keys: { anthropic: [KEYS.anthropic], openai: [KEYS.openai], google: [KEYS.google], xai: [KEYS.xai] },
  });
});
after(() => fakes.close());
beforeEach(() => {
  for (const name of PROVIDERS) {
    fakes[name].reset();
    fakes[name].setKeys([KEYS[name]]);
  }
});

const anthropic = (options: { apiKey?: string; maxRetries?: number; timeout?: number } = {}): Anthropic =>
  new Anthropic({ apiKey: KEYS.anthropic, baseURL: fakes.anthropic.url, maxRetries: 0, ...options });
const openai = (options: { apiKey?: string; maxRetries?: number } = {}): OpenAI =>
  new OpenAI({ apiKey: KEYS.openai, baseURL: `${fakes.openai.url}/v1`, maxRetries: 0, ...options });
const hello = [{ role: 'user' as const, content: 'hello there' }];

interface GoogleChunk {
  candidates: { content: { parts: { text: string }[] }; finishReason?: string }[];
  usageMetadata: { promptTokenCount: number; candidatesTokenCount: number; totalTokenCount: number };
}
interface GoogleError {
  error: { code: number; status: string; details: { reason?: string }[] };
}
interface ChatCompletion {
  choices: { message: { content: string } }[];
  usage: { total_tokens: number };
}

/** The `event:` names and `data:` payloads of an SSE body, frames split on blank lines (LF or CRLF). */
function parseSse(text: string): { event: string | undefined; data: string }[] {
  return text
    .split(/\r?\n\r?\n/)
    .filter((frame) => frame.trim() !== '')
    .map((frame) => {
      const lines = frame.split(/\r?\n/);
      return {
        event: lines.find((line) => line.startsWith('event: '))?.slice('event: '.length),
        data: lines.find((line) => line.startsWith('data: '))?.slice('data: '.length) ?? '',
      };
    });
}

describe('anthropic fake, through @anthropic-ai/sdk', () => {
  test('messages.create answers an echo with predictable usage, and the call records the key', async () => {
    // @anthropic-ai/sdk 1.x sends an apiKey as Authorization: Bearer; the raw fetch below sends x-api-key.
    const message = await anthropic().messages.create({ model: 'claude-x', max_tokens: 64, messages: hello });
    assert.deepEqual(message.content, [{ type: 'text', text: 'echo: hello there' }]);
    assert.equal(message.model, 'claude-x');
    assert.equal(message.usage.input_tokens, 2);
    assert.equal(message.usage.output_tokens, 3);
    const [call] = fakes.anthropic.calls;
    assert.equal(call?.path, '/v1/messages');
    assert.equal(call?.method, 'POST');
    assert.equal(call?.key, KEYS.anthropic);
    assert.equal(call?.status, 200);
    assert.equal(JSON.parse(call?.body.toString() ?? '').model, 'claude-x');
  });

  test('a streamed message sends the real event sequence and the SDK assembles text and usage', async () => {
    const stream = anthropic().messages.stream({ model: 'claude-x', max_tokens: 64, messages: hello });
    const message = await stream.finalMessage();
    assert.deepEqual(message.content, [{ type: 'text', text: 'echo: hello there' }]);
    assert.equal(message.usage.input_tokens, 2);
    assert.equal(message.usage.output_tokens, 3);

    const raw = await fetch(`${fakes.anthropic.url}/v1/messages`, {
      method: 'POST',
      headers: {
        'x-api-key': KEYS.anthropic,
        'anthropic-version': '2023-06-01',
        'content-type': 'application/json',
      },
      body: JSON.stringify({ model: 'claude-x', max_tokens: 64, stream: true, messages: hello }),
    });
    assert.match(raw.headers.get('content-type') ?? '', /^text\/event-stream/);
    const events = parseSse(await raw.text());
    assert.deepEqual(
      events.map((e) => e.event),
      [
        'message_start',
        'content_block_start',
        'ping',
        'content_block_delta',
        'content_block_delta',
        'content_block_delta',
        'content_block_stop',
        'message_delta',
        'message_stop',
      ],
    );
    assert.deepEqual(JSON.parse(events.at(-2)?.data ?? '').usage, { output_tokens: 3 });
  });

  test('countTokens counts every text of the request', async () => {
    const counted = await anthropic().messages.countTokens({
      model: 'claude-x',
      system: 'be brief',
      messages: hello,
    });
    assert.equal(counted.input_tokens, 4);
    assert.equal(fakes.anthropic.calls[0]?.path, '/v1/messages/count_tokens');
  });

  test('a wrong key is refused with authentication_error, and a key rotated at runtime takes effect', async () => {
    await assert.rejects(
      anthropic({ apiKey: 'sk-ant-wrong' }).messages.create({ model: 'm', max_tokens: 8, messages: hello }),
      (error: unknown) =>
        error instanceof Anthropic.AuthenticationError &&
        error.status === 401 &&
        JSON.stringify(error.error).includes('authentication_error'),
    );
    fakes.anthropic.setKeys(['sk-ant-two']);
    await assert.rejects(
      anthropic().messages.create({ model: 'm', max_tokens: 8, messages: hello }),
      Anthropic.AuthenticationError,
    );
    await anthropic({ apiKey: 'sk-ant-two' }).messages.create({ model: 'm', max_tokens: 8, messages: hello });
    assert.deepEqual(
      fakes.anthropic.calls.map((call) => [call.key, call.status]),
      [
        ['sk-ant-wrong', 401],
        [KEYS.anthropic, 401],
        ['sk-ant-two', 200],
      ],
    );
  });

  test('a 429 is the SDK RateLimitError with retry-after; with a retry left the SDK honours it and succeeds', async () => {
    fakes.anthropic.fail({ kind: 'rate_limited', retryAfter: '7' }, { times: 1 });
    await assert.rejects(
      anthropic().messages.create({ model: 'm', max_tokens: 8, messages: hello }),
      (error: unknown) =>
        error instanceof Anthropic.RateLimitError && error.headers?.get('retry-after') === '7',
    );
    fakes.anthropic.fail({ kind: 'rate_limited', retryAfter: '0.01' }, { times: 1 });
    const message = await anthropic({ maxRetries: 1 }).messages.create({
      model: 'm',
      max_tokens: 8,
      messages: hello,
    });
    assert.equal(message.usage.output_tokens, 3);
    assert.deepEqual(
      fakes.anthropic.calls.map((call) => call.status),
      [429, 429, 200],
    );
  });

  test('overloaded is a 529 OverloadedError and server_error a 500, for as long as told', async () => {
    fakes.anthropic.fail({ kind: 'overloaded' }, { times: 1 });
    fakes.anthropic.fail({ kind: 'server_error' });
    const create = () => anthropic().messages.create({ model: 'm', max_tokens: 8, messages: hello });
    await assert.rejects(create(), Anthropic.OverloadedError);
    await assert.rejects(
      create(),
      (error: unknown) => error instanceof Anthropic.InternalServerError && error.status === 500,
    );
    await assert.rejects(
      create(),
      (error: unknown) => error instanceof Anthropic.InternalServerError && error.status === 500,
    );
    fakes.anthropic.clearFaults();
    await create();
  });

  test('a slow answer trips the SDK timeout', async () => {
    fakes.anthropic.fail({ kind: 'slow', ms: 5_000 }, { times: 1 });
    await assert.rejects(
      anthropic({ timeout: 50 }).messages.create({ model: 'm', max_tokens: 8, messages: hello }),
      Anthropic.APIConnectionTimeoutError,
    );
  });

  test('a stream cut after two events fails in the SDK after those two, and is not an abort', async () => {
    fakes.anthropic.fail({ kind: 'cut', afterEvents: 2 }, { times: 1 });
    const stream = await anthropic().messages.create({
      model: 'm',
      max_tokens: 8,
      messages: hello,
      stream: true,
    });
    const seen: string[] = [];
    await assert.rejects(async () => {
      for await (const event of stream) seen.push(event.type);
    });
    assert.deepEqual(seen, ['message_start', 'content_block_start']);
    assert.equal(fakes.anthropic.calls[0]?.aborted, false);
  });
});

describe('openai fake, through openai', () => {
  test('chat.completions.create answers with usage', async () => {
    const completion = await openai().chat.completions.create({ model: 'gpt-x', messages: hello });
    assert.equal(completion.choices[0]?.message.content, 'echo: hello there');
    assert.deepEqual(completion.usage, { prompt_tokens: 2, completion_tokens: 3, total_tokens: 5 });
    assert.equal(fakes.openai.calls[0]?.key, KEYS.openai);
    assert.equal(fakes.openai.calls[0]?.headers.authorization, `Bearer ${KEYS.openai}`);
  });

  test('a streamed chat ends with a usage chunk when include_usage is set, then [DONE]', async () => {
    const stream = await openai().chat.completions.create({
      model: 'gpt-x',
      messages: hello,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = '';
    let usage: OpenAI.CompletionUsage | null | undefined;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta.content ?? '';
      if (chunk.usage) usage = chunk.usage;
    }
    assert.equal(text, 'echo: hello there');
    assert.deepEqual(usage, { prompt_tokens: 2, completion_tokens: 3, total_tokens: 5 });

    const raw = await fetch(`${fakes.openai.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${KEYS.openai}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-x', stream: true, messages: hello }),
    });
    const events = parseSse(await raw.text());
    assert.equal(events.at(-1)?.data, '[DONE]');
    assert.ok(events.every((e) => e.event === undefined && !e.data.includes('"usage"')));
  });

  test('responses.create answers output_text and usage, streamed or not', async () => {
    const response = await openai().responses.create({ model: 'gpt-x', input: 'hello there' });
    assert.equal(response.output_text, 'echo: hello there');
    assert.equal(response.usage?.input_tokens, 2);
    assert.equal(response.usage?.output_tokens, 3);

    const stream = await openai().responses.create({ model: 'gpt-x', input: hello, stream: true });
    const types: string[] = [];
    let text = '';
    let usage: OpenAI.Responses.ResponseUsage | undefined;
    for await (const event of stream) {
      types.push(event.type);
      if (event.type === 'response.output_text.delta') text += event.delta;
      if (event.type === 'response.completed') usage = event.response.usage ?? undefined;
    }
    assert.equal(types[0], 'response.created');
    assert.equal(types.at(-1), 'response.completed');
    assert.equal(text, 'echo: hello there');
    assert.equal(usage?.total_tokens, 5);
  });

  test('models.list lists models', async () => {
    const models = await openai().models.list();
    assert.deepEqual(
      models.data.map((model) => model.id),
      ['fake-model-small', 'fake-model-large'],
    );
    assert.equal(fakes.openai.calls[0]?.method, 'GET');
  });

  test('a wrong key is AuthenticationError with code invalid_api_key; a 429 is RateLimitError', async () => {
    await assert.rejects(
      openai({ apiKey: 'sk-wrong' }).models.list(),
      (error: unknown) => error instanceof OpenAI.AuthenticationError && error.code === 'invalid_api_key',
    );
    fakes.openai.fail({ kind: 'rate_limited' }, { times: 1 });
    await assert.rejects(
      openai().chat.completions.create({ model: 'gpt-x', messages: hello }),
      (error: unknown) => error instanceof OpenAI.RateLimitError && error.headers.get('retry-after') === '1',
    );
  });
});

describe('google and xai fakes, through fetch', () => {
  const googleBody = JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'hello there' }] }] });

  test('google generateContent takes x-goog-api-key and answers with usageMetadata', async () => {
    const response = await fetch(`${fakes.google.url}/v1beta/models/gemini-x:generateContent`, {
      method: 'POST',
      headers: { 'x-goog-api-key': KEYS.google, 'content-type': 'application/json' },
      body: googleBody,
    });
    assert.equal(response.status, 200);
    const answer = (await response.json()) as GoogleChunk;
    assert.equal(answer.candidates[0]?.content.parts[0]?.text, 'echo: hello there');
    assert.deepEqual(answer.usageMetadata, {
      promptTokenCount: 2,
      candidatesTokenCount: 3,
      totalTokenCount: 5,
    });
    assert.equal(fakes.google.calls[0]?.key, KEYS.google);
  });

  test('google streamGenerateContent?alt=sse takes ?key= and streams chunks, the last with the full usage', async () => {
    const response = await fetch(
      `${fakes.google.url}/v1beta/models/gemini-x:streamGenerateContent?alt=sse&key=${KEYS.google}`,
      { method: 'POST', headers: { 'content-type': 'application/json' }, body: googleBody },
    );
    const chunks = parseSse(await response.text()).map((e) => JSON.parse(e.data) as GoogleChunk);
    assert.equal(
      chunks.map((chunk) => chunk.candidates[0]?.content.parts[0]?.text).join(''),
      'echo: hello there',
    );
    assert.equal(chunks.at(-1)?.candidates[0]?.finishReason, 'STOP');
    assert.deepEqual(chunks.at(-1)?.usageMetadata, {
      promptTokenCount: 2,
      candidatesTokenCount: 3,
      totalTokenCount: 5,
    });
    assert.equal(fakes.google.calls[0]?.key, KEYS.google);
  });

  test('google refuses a wrong key with 400 API_KEY_INVALID and a missing one with 403', async () => {
    const call = (headers: Record<string, string>) =>
      fetch(`${fakes.google.url}/v1beta/models/gemini-x:generateContent`, {
        method: 'POST',
        headers,
        body: googleBody,
      });
    const wrong = await call({ 'x-goog-api-key': 'goog-wrong' });
    assert.equal(wrong.status, 400);
    assert.equal(((await wrong.json()) as GoogleError).error.details[0]?.reason, 'API_KEY_INVALID');
    const missing = await call({});
    assert.equal(missing.status, 403);
    assert.equal(((await missing.json()) as GoogleError).error.status, 'PERMISSION_DENIED');
  });

  test('xai chat completions is OpenAI-shaped behind Bearer auth, and an unknown path is its 404', async () => {
    const post = (path: string, key: string) =>
      fetch(`${fakes.xai.url}${path}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'grok-x', messages: hello }),
      });
    const ok = await post('/v1/chat/completions', KEYS.xai);
    const answer = (await ok.json()) as ChatCompletion;
    assert.equal(answer.choices[0]?.message.content, 'echo: hello there');
    assert.equal(answer.usage.total_tokens, 5);
    assert.equal((await post('/v1/chat/completions', 'xai-wrong')).status, 400);
    assert.equal((await post('/v1/nothing', KEYS.xai)).status, 404);
    assert.deepEqual(
      fakes.xai.calls.map((call) => call.key),
      [KEYS.xai, 'xai-wrong', KEYS.xai],
    );
  });
});

describe('aborts and closing', () => {
  test('a held request the client gives up on is reported as aborted', async () => {
    fakes.openai.fail({ kind: 'hold' }, { times: 1 });
    const controller = new AbortController();
    const pending = openai().chat.completions.create(
      { model: 'gpt-x', messages: hello },
      { signal: controller.signal },
    );
    await fakes.openai.waitForCall(1);
    controller.abort();
    await assert.rejects(pending, OpenAI.APIUserAbortError);
    const aborted = await fakes.openai.waitForAbort(1);
    assert.equal(aborted.key, KEYS.openai);
    assert.equal(aborted.status, undefined);
  });

  test('a stream stalled mid-way and then abandoned by its client is reported as aborted', async () => {
    fakes.anthropic.fail({ kind: 'stall', afterEvents: 1 }, { times: 1 });
    const controller = new AbortController();
    const stream = await anthropic().messages.create(
      { model: 'm', max_tokens: 8, messages: hello, stream: true },
      { signal: controller.signal },
    );
    for await (const event of stream) {
      assert.equal(event.type, 'message_start');
      controller.abort();
    }
    const aborted = await fakes.anthropic.waitForAbort(1);
    assert.equal(aborted.status, 200);
  });

  test('close ends held connections, and the client sees the connection end', async () => {
    const own = await startFakeProviders();
    own.xai.fail({ kind: 'hold' });
    const pending = fetch(`${own.xai.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: 'Bearer test-xai-key' },
      body: '{}',
    });
    await own.xai.waitForCall(1);
    await own.close();
    await assert.rejects(pending, TypeError);
    assert.equal(own.xai.calls[0]?.aborted, false);
  });
});
