// Attack: an agent (or whatever runs in its sandbox) uses the model gateway to get a model key, to call a provider as another agent or tenant, to call without limits, or to crash or exhaust the gateway with bad, huge or abandoned requests.
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, test } from 'node:test';
import Anthropic from '@anthropic-ai/sdk';
import { type GatewayAgent, type GatewayFixture, startGatewayFixture } from '../../test/helpers/gateway.ts';
import { sendRaw } from '../../test/helpers/http.ts';
import { withTenant } from '../db/tenant.ts';
import { MAX_CALLS_PER_INSTANCE, MAX_REQUEST_BYTES } from './gateway.ts';
import { type ModelLimits, writeLimits } from './records.ts';

const CANARY = 'sk-ant-CANARY-7f3c9e1d2b4a6f8e0c2d4b6a8f0e2c4d';

let fx: GatewayFixture;
before(async () => {
  fx = await startGatewayFixture({ keys: { anthropic: [CANARY, 'sk-ant-other'], openai: ['sk-openai-a'] } });
});
after(() => fx.close());

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** One raw request to an agent's gateway port (no SDK: the headers are exactly these). */
async function send(
  agent: Pick<GatewayAgent, 'url'>,
  options: { method?: string; path: string; headers?: Record<string, string>; body?: string | Buffer },
): Promise<Answer> {
  const answer = await sendRaw(`${agent.url}${options.path}`, {
    ...options,
    method: options.method ?? 'POST',
  });
  return { ...answer, body: answer.body.toString('utf8') };
}

/** Sets the agent's limits as its page or API would (those routes are tested in routes.test.ts). */
async function setLimits(tenant: string, agent: GatewayAgent, limits: Partial<ModelLimits>): Promise<void> {
  await withTenant(fx.db.app, tenant, (tx) =>
    writeLimits(tx, agent.agentId, { requests_per_minute: null, tokens_per_day: null, ...limits }),
  );
}

const MESSAGE = JSON.stringify({
  model: 'claude-sonnet-4-5',
  max_tokens: 8,
  messages: [{ role: 'user', content: 'hi' }],
});

function ask(agent: GatewayAgent, token: string | null = agent.token, body: string | Buffer = MESSAGE) {
  return send(agent, {
    path: '/anthropic/v1/messages',
    headers: {
      'content-type': 'application/json',
      'anthropic-version': '2023-06-01',
      ...(token === null ? {} : { 'x-api-key': token }),
    },
    body,
  });
}

function problemCode(answer: Answer): string {
  assert.match(String(answer.headers['content-type']), /application\/problem\+json/);
  return (JSON.parse(answer.body) as { code: string }).code;
}

describe('refusals, each before any upstream call', () => {
  test('AGT-7: no token, a malformed token, another instance’s token, a stopped or deleted agent, a provider with no key, an unserved model or path: each a clear 4xx, and the provider is never called', async () => {
    const tenant = await fx.tenant();
    const agent = await fx.agent(tenant, { anthropic: CANARY });
    const neighbour = await fx.agent(tenant, { anthropic: CANARY });
    const stranger = await fx.agent(await fx.tenant(), { anthropic: 'sk-ant-other' });
    const stopped = await fx.agent(tenant, { anthropic: CANARY });
    await withTenant(
      fx.db.app,
      tenant,
      (tx) => tx`
      update agent_instances set desired_state = 'stopped', state = 'stopped' where agent_id = ${stopped.agentId}::uuid`,
    );
    const deleted = await fx.agent(tenant, { anthropic: CANARY });
    await withTenant(fx.db.app, tenant, (tx) => tx`delete from agents where id = ${deleted.agentId}::uuid`);
    const calls = fx.fakes.anthropic.calls.length + fx.fakes.openai.calls.length;
    const cases: [string, Promise<Answer>, number, string][] = [
      ['no token', ask(agent, null), 401, 'agent_token_invalid'],
      ['a malformed token', ask(agent, 'sk-ant-not-an-agent-token'), 401, 'agent_token_invalid'],
      [
        'a token of the same kind that was never minted',
        ask(agent, `enc_agent_${'x'.repeat(43)}`),
        401,
        'agent_token_invalid',
      ],
      ['a neighbour’s token on this socket', ask(agent, neighbour.token), 401, 'agent_token_invalid'],
      ['another tenant’s token on this socket', ask(agent, stranger.token), 401, 'agent_token_invalid'],
      ['a stopped agent', ask(stopped), 403, 'agent_not_running'],
      ['a deleted agent', ask(deleted), 401, 'agent_token_invalid'],
      [
        'a provider the tenant gave no key for',
        send(agent, {
          path: '/openai/v1/chat/completions',
          headers: { authorization: `Bearer ${agent.token}`, 'content-type': 'application/json' },
          body: JSON.stringify({ model: 'gpt-4.1', messages: [] }),
        }),
        409,
        'provider_key_missing',
      ],
      [
        'a model that is not the provider’s',
        ask(agent, agent.token, JSON.stringify({ model: 'gpt-4.1', max_tokens: 1, messages: [] })),
        400,
        'model_not_served',
      ],
      [
        'no model',
        ask(agent, agent.token, JSON.stringify({ max_tokens: 1, messages: [] })),
        400,
        'model_not_served',
      ],
      [
        'an unknown path',
        send(agent, { path: '/anthropic/v1/files', headers: { 'x-api-key': agent.token } }),
        404,
        'not_found',
      ],
      [
        'a path outside every provider',
        send(agent, { path: '/../../etc/passwd', headers: { 'x-api-key': agent.token } }),
        404,
        'not_found',
      ],
      [
        'the wrong method',
        send(agent, { method: 'GET', path: '/anthropic/v1/messages', headers: { 'x-api-key': agent.token } }),
        405,
        'method_not_allowed',
      ],
    ];
    for (const [what, pending, status, code] of cases) {
      const answer = await pending;
      assert.equal(answer.status, status, `${what}: ${answer.body}`);
      assert.equal(problemCode(answer), code, what);
      assert.ok(!answer.body.includes(CANARY), `${what}: the key leaked`);
    }
    assert.equal(
      fx.fakes.anthropic.calls.length + fx.fakes.openai.calls.length,
      calls,
      'an upstream call was made',
    );
  });

  test('AGT-7: a body over the limit is refused with 413 before the upstream call, and a body that is not JSON with 400', async () => {
    const agent = await fx.agent(await fx.tenant(), { anthropic: CANARY });
    const calls = fx.fakes.anthropic.calls.length;
    const huge = await ask(agent, agent.token, Buffer.alloc(MAX_REQUEST_BYTES * 2, 0x20));
    assert.equal(huge.status, 413);
    assert.equal(problemCode(huge), 'body_too_large');
    // The same without a declared length: counted as it arrives, refused once over, the rest read and dropped.
    const streamed = await send(agent, {
      path: '/anthropic/v1/messages',
      headers: { 'x-api-key': agent.token, 'transfer-encoding': 'chunked', connection: 'close' },
      body: Buffer.alloc(MAX_REQUEST_BYTES + 1024 * 1024, 0x20),
    });
    assert.equal(streamed.status, 413);
    assert.equal(problemCode(streamed), 'body_too_large');
    for (const body of ['{"model": "claude-sonnet-4-5",', 'null', '[1,2]', '\u0000\u0000', '']) {
      const answer = await ask(agent, agent.token, body);
      assert.equal(answer.status, 400, JSON.stringify(body));
      assert.equal(problemCode(answer), 'malformed_body');
    }
    assert.equal(fx.fakes.anthropic.calls.length, calls);
  });
});

describe('the upstream’s answers and failures', () => {
  test('AGT-7: the provider’s 429 and 529 reach the agent unchanged, retry-after included', async () => {
    const agent = await fx.agent(await fx.tenant(), { anthropic: CANARY });
    fx.fakes.anthropic.fail({ kind: 'rate_limited', retryAfter: '7' }, { times: 1 });
    const limited = await ask(agent);
    assert.equal(limited.status, 429);
    assert.equal(limited.headers['retry-after'], '7');
    assert.equal((JSON.parse(limited.body) as { type: string }).type, 'error');
    fx.fakes.anthropic.fail({ kind: 'overloaded' }, { times: 1 });
    const overloaded = await ask(agent);
    assert.equal(overloaded.status, 529);
    assert.match(overloaded.body, /overloaded_error/);
  });

  test('AGT-7: an unreachable provider is a 502 naming it, and a silent one a 504; neither names the key', async () => {
    const unreachable = await startGatewayFixture({
      keys: { anthropic: [CANARY] },
      gateway: {
        upstreams: {
          anthropic: 'http://127.0.0.1:1',
          openai: 'http://127.0.0.1:1',
          google: 'http://127.0.0.1:1',
          xai: 'http://127.0.0.1:1',
        },
        timeoutMs: 300,
      },
    });
    try {
      const agent = await unreachable.agent(await unreachable.tenant(), { anthropic: CANARY });
      const answer = await ask(agent);
      assert.equal(answer.status, 502);
      assert.equal(problemCode(answer), 'upstream_unreachable');
      assert.match(answer.body, /Anthropic/);
      assert.ok(!answer.body.includes(CANARY));
      assert.ok(unreachable.logLines().every((line) => !line.includes(CANARY)));
    } finally {
      await unreachable.close();
    }
    const slow = await startGatewayFixture({ keys: { anthropic: [CANARY] }, gateway: { timeoutMs: 200 } });
    try {
      const agent = await slow.agent(await slow.tenant(), { anthropic: CANARY });
      slow.fakes.anthropic.fail({ kind: 'hold' });
      const answer = await ask(agent);
      assert.equal(answer.status, 504);
      assert.equal(problemCode(answer), 'upstream_timeout');
      await slow.fakes.anthropic.waitForAbort(1);
    } finally {
      await slow.close();
    }
  });

  test('VLT-5: an agent that disconnects mid-stream aborts the upstream call, and the key is zeroed', async () => {
    const agent = await fx.agent(await fx.tenant(), { anthropic: CANARY });
    fx.fakes.anthropic.reset();
    fx.fakes.anthropic.fail({ kind: 'stall', afterEvents: 2 }, { times: 1 });
    const returned = fx.returnedKeys.length;
    await new Promise<void>((resolve, reject) => {
      const request = http.request(
        `${agent.url}/anthropic/v1/messages`,
        {
          method: 'POST',
          headers: {
            'x-api-key': agent.token,
            'anthropic-version': '2023-06-01',
            'content-type': 'application/json',
          },
        },
        (response) => {
          response.once('data', () => {
            request.destroy();
            resolve();
          });
        },
      );
      request.on('error', () => undefined);
      request.once('response', (response) => response.once('error', reject));
      request.end(
        JSON.stringify({
          model: 'claude-sonnet-4-5',
          max_tokens: 8,
          stream: true,
          messages: [{ role: 'user', content: 'a b c' }],
        }),
      );
    });
    await fx.fakes.anthropic.waitForAbort(1);
    await agent.listener.close();
    const keys = fx.returnedKeys.slice(returned);
    assert.equal(keys.length, 1);
    assert.ok(keys[0]?.every((byte) => byte === 0));
  });
});

describe('limits', () => {
  test('AGT-7: over its requests per minute an agent gets 429 with Retry-After, before any upstream call', async () => {
    const tenant = await fx.tenant();
    const agent = await fx.agent(tenant, { anthropic: CANARY });
    await setLimits(tenant, agent, { requests_per_minute: 3 });
    const calls = fx.fakes.anthropic.calls.length;
    const answers = [];
    for (let i = 0; i < 5; i++) answers.push(await ask(agent));
    assert.deepEqual(
      answers.map((a) => a.status),
      [200, 200, 200, 429, 429],
    );
    assert.equal(problemCode(answers[3] as Answer), 'rate_limited');
    assert.ok(Number(answers[3]?.headers['retry-after']) >= 1);
    assert.equal(fx.fakes.anthropic.calls.length, calls + 3);
  });

  test('AGT-7: once its tokens per day are used, an agent gets 429 until the UTC day ends', async () => {
    const tenant = await fx.tenant();
    const agent = await fx.agent(tenant, { anthropic: CANARY });
    await setLimits(tenant, agent, { tokens_per_day: 5 });
    const first = await ask(agent); // 1 token in ("hi"), 2 out
    assert.equal(first.status, 200);
    assert.equal((await ask(agent)).status, 200); // 6 in all now: the limit is passed
    const refused = await ask(agent);
    assert.equal(refused.status, 429);
    assert.equal(problemCode(refused), 'token_limit_reached');
    const retry = Number(refused.headers['retry-after']);
    assert.ok(retry >= 1 && retry <= 86_400);
  });

  test('AGT-7: 200 concurrent streams from one agent: at most the per-instance cap run, the rest are told to retry, and every key is zeroed', async () => {
    const agent = await fx.agent(await fx.tenant(), { anthropic: CANARY });
    fx.fakes.anthropic.reset();
    const returned = fx.returnedKeys.length;
    const body = JSON.stringify({
      model: 'claude-sonnet-4-5',
      max_tokens: 8,
      stream: true,
      messages: [{ role: 'user', content: 'x y' }],
    });
    const answers = await Promise.all(Array.from({ length: 200 }, () => ask(agent, agent.token, body)));
    const statuses = answers.map((a) => a.status);
    assert.ok(
      statuses.every((s) => s === 200 || s === 503),
      String(new Set(statuses)),
    );
    const served = statuses.filter((s) => s === 200).length;
    assert.ok(served >= 1);
    for (const answer of answers.filter((a) => a.status === 503)) {
      assert.equal(problemCode(answer), 'gateway_busy');
      assert.equal(answer.headers['retry-after'], '1');
    }
    assert.equal(fx.fakes.anthropic.calls.length, served);
    assert.ok(served <= 200 && MAX_CALLS_PER_INSTANCE < 200);
    await agent.listener.close();
    const keys = fx.returnedKeys.slice(returned);
    assert.equal(keys.length, served);
    assert.ok(keys.every((key) => key.every((byte) => byte === 0)));
  });
});

describe('what the tenant can see, and what no one can', () => {
  test('AGT-7: the first call of each hour per provider appends gateway.key_used, with the provider and model and never the key', async () => {
    const tenant = await fx.tenant();
    const agent = await fx.agent(tenant, { anthropic: CANARY, openai: 'sk-openai-a' });
    for (let i = 0; i < 3; i++) assert.equal((await ask(agent)).status, 200);
    const chat = await send(agent, {
      path: '/openai/v1/chat/completions',
      headers: { authorization: `Bearer ${agent.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-4.1', messages: [{ role: 'user', content: 'q' }] }),
    });
    assert.equal(chat.status, 200);
    const events = await withTenant(
      fx.db.app,
      tenant,
      (tx) => tx<{ actor: string; data: { provider: string; model: string } }[]>`
      select actor, data from audit_events where action = 'gateway.key_used' order by seq`,
    );
    assert.deepEqual(
      events.map((e) => [e.actor, e.data.provider, e.data.model]),
      [
        [`agent:${agent.agentId}`, 'anthropic', 'claude-sonnet-4-5'],
        [`agent:${agent.agentId}`, 'openai', 'gpt-4.1'],
      ],
    );
    assert.ok(!JSON.stringify(events).includes(CANARY));
  });

  test('AGT-7: a canary key appears in no answer, no log line and nowhere in the database but as ciphertext', async () => {
    const tenant = await fx.tenant();
    const agent = await fx.agent(tenant, { anthropic: CANARY });
    const answers = [
      await ask(agent),
      await ask(agent, 'nope'),
      await ask(agent, agent.token, '{'),
      await send(agent, { method: 'GET', path: '/nowhere' }),
    ];
    fx.fakes.anthropic.fail({ kind: 'server_error' }, { times: 1 });
    answers.push(await ask(agent));
    for (const answer of answers) {
      assert.ok(!answer.body.includes(CANARY) && !JSON.stringify(answer.headers).includes(CANARY));
    }
    await agent.listener.close();
    assert.ok(fx.logLines().length > 0);
    assert.ok(fx.logLines().every((line) => !line.includes(CANARY) && !line.includes('CANARY')));
    // Every text column of every table, as the superuser dumps it.
    const tables = await fx.db.superuser<{ table_name: string }[]>`
      select table_name from information_schema.tables where table_schema = 'enclave' and table_type = 'BASE TABLE'`;
    for (const { table_name } of tables) {
      const [row] = await fx.db.superuser.unsafe<{ found: boolean }[]>(
        `select exists (select 1 from enclave.${table_name} t where t::text like '%' || $1 || '%') as found`,
        ['CANARY'],
      );
      assert.equal(row?.found, false, `the canary is in enclave.${table_name}`);
    }
  });
});

test('AGT-7: the official SDK sees the provider’s own errors through the gateway', async () => {
  const agent = await fx.agent(await fx.tenant(), { anthropic: CANARY });
  fx.fakes.anthropic.fail({ kind: 'rate_limited', retryAfter: '3' }, { times: 1 });
  const client = new Anthropic({ apiKey: agent.token, baseURL: `${agent.url}/anthropic`, maxRetries: 0 });
  await assert.rejects(
    client.messages.create({
      model: 'claude-sonnet-4-5',
      max_tokens: 8,
      messages: [{ role: 'user', content: 'a' }],
    }),
    (error: unknown) =>
      error instanceof Anthropic.RateLimitError && error.headers?.get('retry-after') === '3',
  );
});
