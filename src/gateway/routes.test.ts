import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createAccount, type TestAccount } from '../../test/helpers/accounts.ts';
import { type ProblemBody, useTestApp } from '../../test/helpers/app.ts';
import { getPage, postForm, textOf } from '../../test/helpers/pages.ts';
import { withTenant } from '../db/tenant.ts';
import { type GatewayCall, insertGatewayCalls } from './records.ts';

// AGT-7 on the API and the agent page: the tenant reads an agent's model
// calls per day and model, and sets its limits; another tenant sees nothing.

const ctx = useTestApp();
let alice: TestAccount;
let bob: TestAccount;
let agentId: string;

ctx.before(async () => {
  [alice, bob] = [await createAccount(ctx.db, ctx.testApp), await createAccount(ctx.db, ctx.testApp)];
  const handle = `chat-${process.pid}`;
  const response = await ctx.testApp.app.inject({
    method: 'POST',
    url: '/api/v1/agents',
    headers: { authorization: `Bearer ${alice.apiToken}` },
    payload: {
      name: handle,
      handle,
      template: 'llm-chat',
      credentials: { anthropic_api_key: 'sk-ant-route-test-0000000000' },
    },
  });
  assert.equal(response.statusCode, 201, response.body);
  agentId = response.json<{ id: string }>().id;
  const now = new Date();
  const call = (model: string, status: number, input: number, output: number): GatewayCall => ({
    provider: 'anthropic',
    model,
    status,
    tokens: status === 200 ? { input, output } : undefined,
    latencyMs: 12,
    streamed: false,
    at: now,
  });
  const tenantId = alice.user.tenant_id;
  await withTenant(ctx.db.app, tenantId, (tx) =>
    insertGatewayCalls(tx, { tenantId, agentId }, [
      call('claude-sonnet-4-5', 200, 10, 20),
      call('claude-sonnet-4-5', 200, 1, 2),
      call('claude-sonnet-4-5', 529, 0, 0),
      call('claude-haiku-4-5', 200, 5, 5),
    ]),
  );
});

function api(method: 'GET' | 'PUT', url: string, account: TestAccount, payload?: unknown) {
  return ctx.testApp.app.inject({
    method,
    url,
    headers: {
      authorization: `Bearer ${account.apiToken}`,
      ...(payload === undefined ? {} : { 'content-type': 'application/json' }),
    },
    ...(payload === undefined ? {} : { payload: JSON.stringify(payload) }),
  });
}

describe('GET /api/v1/agents/:id/usage and PUT …/model-limits', () => {
  test('AGT-7: usage is summed per UTC day and model, failed calls counted apart, with the agent’s limits', async () => {
    const response = await api('GET', `/api/v1/agents/${agentId}/usage`, alice);
    assert.equal(response.statusCode, 200, response.body);
    const body = response.json<{ usage: Record<string, unknown>[]; limits: Record<string, unknown> }>();
    const today = new Date().toISOString().slice(0, 10);
    assert.deepEqual(body.usage, [
      {
        day: today,
        provider: 'anthropic',
        model: 'claude-haiku-4-5',
        requests: 1,
        failed: 0,
        input_tokens: 5,
        output_tokens: 5,
      },
      {
        day: today,
        provider: 'anthropic',
        model: 'claude-sonnet-4-5',
        requests: 3,
        failed: 1,
        input_tokens: 11,
        output_tokens: 22,
      },
    ]);
    assert.deepEqual(body.limits, { requests_per_minute: null, tokens_per_day: null });
  });

  test('AGT-7: limits are set, recorded in the audit log and read back; bad limits are a 400 naming the field', async () => {
    const set = await api('PUT', `/api/v1/agents/${agentId}/model-limits`, alice, {
      requests_per_minute: 30,
      tokens_per_day: 100000,
    });
    assert.equal(set.statusCode, 200, set.body);
    const read = await api('GET', `/api/v1/agents/${agentId}/usage?days=1`, alice);
    assert.deepEqual(read.json<{ limits: unknown }>().limits, {
      requests_per_minute: 30,
      tokens_per_day: 100000,
    });
    const [event] = await withTenant(
      ctx.db.app,
      alice.user.tenant_id,
      (tx) => tx<{ data: unknown }[]>`
      select data from audit_events where action = 'agent.model_limits_set' order by seq desc limit 1`,
    );
    assert.deepEqual(event?.data, { requests_per_minute: 30, tokens_per_day: 100000 });
    for (const bad of [
      { requests_per_minute: 0, tokens_per_day: null },
      { requests_per_minute: -5, tokens_per_day: null },
      { requests_per_minute: 1.5, tokens_per_day: null },
      { requests_per_minute: '30', tokens_per_day: null },
      { requests_per_minute: null, tokens_per_day: 1e300 },
      { requests_per_minute: null },
      { requests_per_minute: null, tokens_per_day: null, key: 'sk-ant-x' },
    ]) {
      const refused = await api('PUT', `/api/v1/agents/${agentId}/model-limits`, alice, bad);
      assert.equal(refused.statusCode, 400, JSON.stringify(bad));
      assert.equal(refused.json<ProblemBody>().code, 'validation_failed');
    }
    for (const days of ['0', '91', 'x', '1e3']) {
      assert.equal(
        (await api('GET', `/api/v1/agents/${agentId}/usage?days=${days}`, alice)).statusCode,
        400,
        days,
      );
    }
  });

  test('TEN-2: another tenant’s agent is a 404 for its usage and its limits, as an unknown one is', async () => {
    for (const response of [
      await api('GET', `/api/v1/agents/${agentId}/usage`, bob),
      await api('PUT', `/api/v1/agents/${agentId}/model-limits`, bob, {
        requests_per_minute: 1,
        tokens_per_day: 1,
      }),
      await api('GET', '/api/v1/agents/00000000-0000-4000-8000-000000000000/usage', alice),
    ]) {
      assert.equal(response.statusCode, 404, response.body);
    }
  });
});

describe('the agent page', () => {
  test('AGT-7: the agent page shows its model calls and sets its limits, with errors by their field', async () => {
    const page = await getPage(ctx.testApp.app, `/dashboard/agents/${agentId}`, {
      cookie: alice.sessionCookie,
    });
    assert.equal(page.statusCode, 200);
    const text = textOf(page.body);
    assert.match(text, /Model calls/);
    assert.match(text, /claude-sonnet-4-5/);
    assert.ok(!page.body.includes('sk-ant-route-test'));
    const bad = await postForm(
      ctx.testApp.app,
      `/dashboard/agents/${agentId}/model-limits`,
      { requests_per_minute: 'lots', tokens_per_day: '0' },
      { cookie: alice.sessionCookie },
    );
    assert.equal(bad.statusCode, 400);
    assert.match(textOf(bad.body), /Give a whole number from 1 to 100,000/);
    assert.match(textOf(bad.body), /Give a whole number from 1 to 1,000,000,000,000/);
    const good = await postForm(
      ctx.testApp.app,
      `/dashboard/agents/${agentId}/model-limits`,
      { requests_per_minute: '12', tokens_per_day: '' },
      { cookie: alice.sessionCookie },
    );
    assert.equal(good.statusCode, 303, good.body);
    const read = await api('GET', `/api/v1/agents/${agentId}/usage`, alice);
    assert.deepEqual(read.json<{ limits: unknown }>().limits, {
      requests_per_minute: 12,
      tokens_per_day: null,
    });
  });
});

test('AGT-7: the model gateway is not served on the public port, not even with a valid agent-shaped token', async () => {
  for (const url of [
    '/v1/messages',
    '/anthropic/v1/messages',
    '/openai/v1/chat/completions',
    '/google/v1beta/models/gemini-2.5-flash:generateContent',
    '/xai/v1/chat/completions',
  ]) {
    const response = await ctx.testApp.app.inject({
      method: 'POST',
      url,
      headers: {
        'x-api-key': `enc_agent_${'a'.repeat(43)}`,
        'content-type': 'application/json',
        accept: 'application/json',
      },
      payload: JSON.stringify({ model: 'claude-sonnet-4-5', messages: [] }),
    });
    // Refused before routing (a cross-site POST) or not found: never answered as a model call.
    assert.ok([403, 404].includes(response.statusCode), `${url}: ${response.body}`);
    assert.ok(['not_found', 'csrf_rejected'].includes(response.json<ProblemBody>().code), url);
    assert.equal(ctx.testApp.app.hasRoute({ method: 'POST', url }), false, url);
  }
});
