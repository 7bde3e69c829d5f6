import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import { type GatewayFixture, startGatewayFixture } from '../../test/helpers/gateway.ts';
import { withTenant } from '../db/tenant.ts';
import { readUsage } from './records.ts';

// AGT-7: an agent reaches each provider through its instance's gateway with
// the official SDK, unchanged but for its base URL, holding only its own
// token; the gateway adds the tenant's key for that one call (VLT-5).

let fx: GatewayFixture;
before(async () => {
  fx = await startGatewayFixture({
    keys: {
      anthropic: ['sk-ant-tenant-a', 'sk-ant-tenant-b', 'sk-ant-rotated'],
      openai: ['sk-openai-tenant-a'],
      google: ['google-tenant-a'],
      xai: ['xai-tenant-a'],
    },
  });
});
after(() => fx.close());

const ALL_KEYS = {
  anthropic: 'sk-ant-tenant-a',
  openai: 'sk-openai-tenant-a',
  google: 'google-tenant-a',
  xai: 'xai-tenant-a',
} as const;

async function usageOf(tenantId: string, agentId: string) {
  return withTenant(fx.db.app, tenantId, (tx) => readUsage(tx, agentId, 1));
}

async function callsOf(tenantId: string, agentId: string) {
  const rows = await withTenant(
    fx.db.app,
    tenantId,
    (tx) => tx<
      {
        provider: string;
        model: string;
        status: number;
        input_tokens: number | null;
        output_tokens: number | null;
        streamed: boolean;
      }[]
    >`
      select provider, model, status, input_tokens::float8 as input_tokens, output_tokens::float8 as output_tokens, streamed
      from gateway_calls where agent_id = ${agentId}::uuid order by created_at`,
  );
  return [...rows];
}

describe('the official SDKs through the gateway', () => {
  test('AGT-7: the Anthropic SDK, given only the agent token, gets the answer; the upstream sees the tenant key and never the token', async () => {
    const tenant = await fx.tenant();
    const agent = await fx.agent(tenant, { anthropic: ALL_KEYS.anthropic });
    const client = new Anthropic({ apiKey: agent.token, baseURL: `${agent.url}/anthropic`, maxRetries: 0 });
    const before = fx.fakes.anthropic.calls.length;
    const message = await client.messages.create({
      model: 'claude-sonnet-4-5',
      max_tokens: 64,
      messages: [{ role: 'user', content: 'hello there' }],
    });
    const block = message.content[0];
    assert.equal(block?.type === 'text' ? block.text : undefined, 'echo: hello there');
    assert.deepEqual([message.usage.input_tokens, message.usage.output_tokens], [2, 3]);
    const call = fx.fakes.anthropic.calls[before];
    assert.equal(call?.key, ALL_KEYS.anthropic);
    assert.ok(!JSON.stringify(call?.headers).includes(agent.token), 'the agent token reached the provider');
    assert.equal(call?.headers['anthropic-version'] !== undefined, true, 'anthropic-version passed on');
  });

  test('AGT-7: a streamed Anthropic message arrives whole through the SDK, and its usage is recorded', async () => {
    const tenant = await fx.tenant();
    const agent = await fx.agent(tenant, { anthropic: ALL_KEYS.anthropic });
    const client = new Anthropic({ apiKey: agent.token, baseURL: `${agent.url}/anthropic`, maxRetries: 0 });
    const stream = client.messages.stream({
      model: 'claude-haiku-4-5',
      max_tokens: 64,
      messages: [{ role: 'user', content: 'one two three' }],
    });
    const final = await stream.finalMessage();
    const block = final.content[0];
    assert.equal(block?.type === 'text' ? block.text : undefined, 'echo: one two three');
    await agent.listener.close();
    const calls = await callsOf(tenant, agent.agentId);
    assert.deepEqual(calls, [
      {
        provider: 'anthropic',
        model: 'claude-haiku-4-5',
        status: 200,
        input_tokens: 3,
        output_tokens: 4,
        streamed: true,
      },
    ]);
    const usage = await usageOf(tenant, agent.agentId);
    assert.equal(usage.length, 1);
    assert.deepEqual(
      { requests: usage[0]?.requests, input: usage[0]?.input_tokens, output: usage[0]?.output_tokens },
      { requests: 1, input: 3, output: 4 },
    );
  });

  test('AGT-7: count_tokens goes to Anthropic with the tenant key', async () => {
    const tenant = await fx.tenant();
    const agent = await fx.agent(tenant, { anthropic: ALL_KEYS.anthropic });
    const client = new Anthropic({ apiKey: agent.token, baseURL: `${agent.url}/anthropic`, maxRetries: 0 });
    const counted = await client.messages.countTokens({
      model: 'claude-sonnet-4-5',
      messages: [{ role: 'user', content: 'a b c d' }],
    });
    assert.equal(counted.input_tokens, 4);
  });

  test('AGT-7: the OpenAI SDK: chat completions (streamed with usage, and not), responses and the model list', async () => {
    const tenant = await fx.tenant();
    const agent = await fx.agent(tenant, { openai: ALL_KEYS.openai });
    const client = new OpenAI({ apiKey: agent.token, baseURL: `${agent.url}/openai/v1`, maxRetries: 0 });
    const completion = await client.chat.completions.create({
      model: 'gpt-4.1-mini',
      messages: [{ role: 'user', content: 'hi' }],
    });
    assert.equal(completion.choices[0]?.message.content, 'echo: hi');
    const stream = await client.chat.completions.create({
      model: 'gpt-4.1-mini',
      messages: [{ role: 'user', content: 'a b' }],
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = '';
    let usage: { prompt_tokens: number; completion_tokens: number } | undefined;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta.content ?? '';
      if (chunk.usage) usage = chunk.usage;
    }
    assert.equal(text, 'echo: a b');
    assert.deepEqual([usage?.prompt_tokens, usage?.completion_tokens], [2, 3]);
    const response = await client.responses.create({ model: 'gpt-4.1-mini', input: 'x y z' });
    assert.equal(response.output_text, 'echo: x y z');
    const models = await client.models.list();
    assert.ok(models.data.length > 0);
    assert.ok(fx.fakes.openai.calls.every((call) => call.key === ALL_KEYS.openai));
    await agent.listener.close();
    const calls = await callsOf(tenant, agent.agentId);
    assert.deepEqual(
      calls.map((c) => [c.model, c.status, c.input_tokens, c.output_tokens, c.streamed]),
      [
        ['gpt-4.1-mini', 200, 1, 2, false],
        ['gpt-4.1-mini', 200, 2, 3, true],
        ['gpt-4.1-mini', 200, 3, 4, false],
        ['models', 200, null, null, false],
      ],
    );
  });

  test('AGT-7: xAI through the OpenAI SDK, and Google AI generateContent, streamed or not', async () => {
    const tenant = await fx.tenant();
    const agent = await fx.agent(tenant, { google: ALL_KEYS.google, xai: ALL_KEYS.xai });
    const grok = new OpenAI({ apiKey: agent.token, baseURL: `${agent.url}/xai/v1`, maxRetries: 0 });
    const completion = await grok.chat.completions.create({
      model: 'grok-4',
      messages: [{ role: 'user', content: 'hey' }],
    });
    assert.equal(completion.choices[0]?.message.content, 'echo: hey');
    assert.equal(fx.fakes.xai.calls.at(-1)?.key, ALL_KEYS.xai);
    const body = JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'sun moon' }] }] });
    const plain = await fetch(`${agent.url}/google/v1beta/models/gemini-2.5-flash:generateContent`, {
      method: 'POST',
      headers: { 'x-goog-api-key': agent.token, 'content-type': 'application/json' },
      body,
    });
    assert.equal(plain.status, 200);
    const answer = (await plain.json()) as { usageMetadata: { promptTokenCount: number } };
    assert.equal(answer.usageMetadata.promptTokenCount, 2);
    // The Google SDKs may send the key as ?key=: it is the agent token here, and never goes upstream.
    const streamed = await fetch(
      `${agent.url}/google/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse&key=${agent.token}`,
      { method: 'POST', headers: { 'content-type': 'application/json' }, body },
    );
    assert.equal(streamed.status, 200);
    assert.match(streamed.headers.get('content-type') ?? '', /text\/event-stream/);
    assert.match(await streamed.text(), /usageMetadata/);
    const last = fx.fakes.google.calls.at(-1);
    assert.equal(last?.key, ALL_KEYS.google);
    assert.equal(last?.url, '/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse');
    await agent.listener.close();
    const calls = await callsOf(tenant, agent.agentId);
    assert.deepEqual(
      calls.map((c) => [c.provider, c.model, c.input_tokens, c.output_tokens, c.streamed]),
      [
        ['xai', 'grok-4', 1, 2, false],
        ['google', 'gemini-2.5-flash', 2, 3, false],
        ['google', 'gemini-2.5-flash', 2, 3, true],
      ],
    );
  });
});

describe('the key for one call only', () => {
  test('VLT-5: a key replaced with PUT is the one the very next call carries, with no restart of the instance', async () => {
    const tenant = await fx.tenant();
    const agent = await fx.agent(tenant, { anthropic: 'sk-ant-tenant-a' });
    const client = new Anthropic({ apiKey: agent.token, baseURL: `${agent.url}/anthropic`, maxRetries: 0 });
    const ask = () =>
      client.messages.create({
        model: 'claude-sonnet-4-5',
        max_tokens: 8,
        messages: [{ role: 'user', content: 'k' }],
      });
    await ask();
    assert.equal(fx.fakes.anthropic.calls.at(-1)?.key, 'sk-ant-tenant-a');
    await fx.setKey(agent, 'anthropic', 'sk-ant-rotated');
    await ask();
    assert.equal(fx.fakes.anthropic.calls.at(-1)?.key, 'sk-ant-rotated');
  });

  test('VLT-5: two tenants’ agents calling at once each reach the provider with their own tenant’s key', async () => {
    const [tenantA, tenantB] = [await fx.tenant(), await fx.tenant()];
    const agentA = await fx.agent(tenantA, { anthropic: 'sk-ant-tenant-a' });
    const agentB = await fx.agent(tenantB, { anthropic: 'sk-ant-tenant-b' });
    const start = fx.fakes.anthropic.calls.length;
    const ask = (agent: typeof agentA, text: string) =>
      new Anthropic({
        apiKey: agent.token,
        baseURL: `${agent.url}/anthropic`,
        maxRetries: 0,
      }).messages.create({
        model: 'claude-sonnet-4-5',
        max_tokens: 8,
        messages: [{ role: 'user', content: text }],
      });
    await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        i % 2 === 0 ? ask(agentA, `from-a ${i}`) : ask(agentB, `from-b ${i}`),
      ),
    );
    const calls = fx.fakes.anthropic.calls.slice(start);
    assert.equal(calls.length, 10);
    for (const call of calls) {
      const text = call.body.toString('utf8');
      assert.equal(call.key, text.includes('from-a') ? 'sk-ant-tenant-a' : 'sk-ant-tenant-b');
    }
  });

  test('VLT-5: every lent key is zeroed once its call has ended', async () => {
    const tenant = await fx.tenant();
    const agent = await fx.agent(tenant, { anthropic: 'sk-ant-tenant-a' });
    const returned = fx.returnedKeys.length;
    const client = new Anthropic({ apiKey: agent.token, baseURL: `${agent.url}/anthropic`, maxRetries: 0 });
    await client.messages.create({
      model: 'claude-sonnet-4-5',
      max_tokens: 8,
      messages: [{ role: 'user', content: 'z' }],
    });
    await agent.listener.close();
    const keys = fx.returnedKeys.slice(returned);
    assert.equal(keys.length, 1);
    assert.ok(keys.every((key) => key.length > 0 && key.every((byte) => byte === 0)));
  });
});

describe('"model": "auto" on /v1/messages, as templates/llm-chat calls it', () => {
  test('AGT-7: with an Anthropic key, auto becomes the default Anthropic model', async () => {
    const tenant = await fx.tenant();
    const agent = await fx.agent(tenant, { anthropic: 'sk-ant-tenant-a' }, 'llm-chat');
    const answer = await fetch(`${agent.url}/v1/messages`, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${agent.token}`,
        'anthropic-version': '2023-06-01',
        'content-type': 'application/json',
      },
      body: JSON.stringify({
        model: 'auto',
        max_tokens: 32,
        messages: [{ role: 'user', content: 'good day' }],
      }),
    });
    assert.equal(answer.status, 200);
    const message = (await answer.json()) as { content: { text: string }[] };
    assert.equal(message.content[0]?.text, 'echo: good day');
    assert.equal(
      JSON.parse(fx.fakes.anthropic.calls.at(-1)?.body.toString() ?? '{}').model,
      'claude-sonnet-4-5',
    );
  });

  test('AGT-7: with only an OpenAI key, auto is answered by OpenAI and comes back as an Anthropic message', async () => {
    const tenant = await fx.tenant();
    const agent = await fx.agent(tenant, { openai: 'sk-openai-tenant-a' }, 'llm-chat');
    const answer = await fetch(`${agent.url}/v1/messages`, {
      method: 'POST',
      headers: { authorization: `Bearer ${agent.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        model: 'auto',
        max_tokens: 32,
        system: 'be brief',
        messages: [{ role: 'user', content: [{ type: 'text', text: 'good night' }] }],
      }),
    });
    assert.equal(answer.status, 200);
    const message = (await answer.json()) as {
      type: string;
      content: { text: string }[];
      usage: { output_tokens: number };
    };
    assert.equal(message.type, 'message');
    assert.equal(message.content[0]?.text, 'echo: good night');
    assert.equal(message.usage.output_tokens, 3);
    const sent = JSON.parse(fx.fakes.openai.calls.at(-1)?.body.toString() ?? '{}');
    assert.equal(sent.model, 'gpt-4.1-mini');
    assert.deepEqual(sent.messages[0], { role: 'system', content: 'be brief' });
    const streamed = await fetch(`${agent.url}/v1/messages`, {
      method: 'POST',
      headers: { authorization: `Bearer ${agent.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        model: 'auto',
        max_tokens: 8,
        stream: true,
        messages: [{ role: 'user', content: 'x' }],
      }),
    });
    assert.equal(streamed.status, 400);
    assert.equal(((await streamed.json()) as { code: string }).code, 'auto_unsupported');
  });
});
