import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createAccount, type TestAccount } from '../../test/helpers/accounts.ts';
import { insertAgent } from '../../test/helpers/agents.ts';
import { useTestApp } from '../../test/helpers/app.ts';
import { callbackDeliveryRow, callbackEndpoint, type TestEndpoint } from '../../test/helpers/callbacks.ts';
import { withTenant } from '../db/tenant.ts';
import { runRelayRetention } from '../relay/retention.ts';
import { callbackJobKey } from './deliver.ts';

// RLY-7: the delivery log and replay over the API. Who may is probed for
// every role in test/roles.test.ts, and across tenants in
// test/cross-tenant.test.ts; here: what the answers hold.

const ctx = useTestApp();
let owner: TestAccount;
let endpoint: TestEndpoint;

ctx.before(async () => {
  owner = await createAccount(ctx.db, ctx.testApp);
  const agentId = await insertAgent(ctx.db.app, owner.user.tenant_id, 'cb-log');
  endpoint = await callbackEndpoint(ctx.db, 'https://hooks.example/log', {
    tenantId: owner.user.tenant_id,
    agentId,
  });
});

const api = (method: 'GET' | 'POST', url: string, payload?: object) =>
  ctx.testApp.app.inject({
    method,
    url,
    headers: { authorization: `Bearer ${owner.apiToken}` },
    ...(payload === undefined ? {} : { payload }),
  });

async function finish(id: string, state: 'succeeded' | 'failed', finishedAgo: string): Promise<void> {
  await withTenant(ctx.db.app, endpoint.tenantId, async (tx) => {
    await tx`
      insert into callback_attempts (tenant_id, delivery_id, number, status, latency_ms, error, response_prefix)
      values (${endpoint.tenantId}, ${id}, 1, ${state === 'succeeded' ? 200 : 500}, 12, null, 'the answer')`;
    await tx`
      update callback_deliveries
      set state = ${state}, attempts = 1, last_status = ${state === 'succeeded' ? 200 : 500},
        finished_at = now() - ${finishedAgo}::interval
      where id = ${id}`;
  });
}

async function jobs(id: string): Promise<number> {
  const [row] = await ctx.db.superuser<{ count: number }[]>`
    select count(*)::int as count from graphile_worker._private_jobs where key = ${callbackJobKey(id)}`;
  return row?.count ?? -1;
}

describe('the delivery log', () => {
  test('RLY-7: the deliveries of an endpoint page newest first, and one delivery shows its payload and attempts', async () => {
    const made = [];
    for (let i = 0; i < 3; i += 1) made.push(await callbackDeliveryRow(ctx.db, endpoint));
    await finish(made[0]?.id ?? '', 'succeeded', '1 minute');
    const first = await api('GET', `/api/v1/webhook-endpoints/${endpoint.id}/deliveries?limit=2`);
    assert.equal(first.statusCode, 200, first.body);
    const page = first.json<{ deliveries: { id: string }[]; next_after: string | null }>();
    assert.deepEqual(
      page.deliveries.map((d) => d.id),
      [made[2]?.id, made[1]?.id],
    );
    assert.ok(page.next_after !== null);
    const second = await api(
      'GET',
      `/api/v1/webhook-endpoints/${endpoint.id}/deliveries?limit=2&after=${encodeURIComponent(page.next_after)}`,
    );
    const rest = second.json<{ deliveries: { id: string; state: string; attempts: number }[] }>();
    assert.deepEqual(
      rest.deliveries.map((d) => [d.id, d.state, d.attempts]),
      [[made[0]?.id, 'succeeded', 1]],
    );

    const one = await api('GET', `/api/v1/webhook-deliveries/${made[0]?.id}`);
    assert.equal(one.statusCode, 200, one.body);
    const detail = one.json<{
      webhook_id: string;
      payload: string;
      attempt_log: { number: number; status: number; latency_ms: number; response_prefix: string }[];
    }>();
    assert.equal(detail.webhook_id, made[0]?.webhookId);
    assert.equal(detail.payload, made[0]?.payload);
    assert.deepEqual(
      detail.attempt_log.map((a) => [a.number, a.status, a.latency_ms, a.response_prefix]),
      [[1, 200, 12, 'the answer']],
    );
  });

  test('RLY-7: replay starts a new series of a finished delivery (same webhook-id); a pending one is not replayed', async () => {
    const done = await callbackDeliveryRow(ctx.db, endpoint);
    await finish(done.id, 'failed', '1 minute');
    const replayed = await api('POST', `/api/v1/webhook-deliveries/${done.id}/replay`);
    assert.equal(replayed.statusCode, 202, replayed.body);
    assert.deepEqual(replayed.json(), { replayed: true });
    assert.equal(await jobs(done.id), 1);
    const after = (await api('GET', `/api/v1/webhook-deliveries/${done.id}`)).json<{
      state: string;
      webhook_id: string;
    }>();
    assert.deepEqual([after.state, after.webhook_id], ['pending', done.webhookId]);
    const again = await api('POST', `/api/v1/webhook-deliveries/${done.id}/replay`);
    assert.deepEqual(again.json(), { replayed: false });
  });

  test('RLY-7: replay-failed requeues the failed deliveries finished since the time given, and counts them', async () => {
    const old = await callbackDeliveryRow(ctx.db, endpoint);
    const recent = await callbackDeliveryRow(ctx.db, endpoint);
    const fine = await callbackDeliveryRow(ctx.db, endpoint);
    await finish(old.id, 'failed', '3 days');
    await finish(recent.id, 'failed', '1 hour');
    await finish(fine.id, 'succeeded', '1 hour');
    const since = new Date(Date.now() - 86_400_000).toISOString();
    const response = await api('POST', `/api/v1/webhook-endpoints/${endpoint.id}/replay-failed`, { since });
    assert.equal(response.statusCode, 202, response.body);
    assert.deepEqual(response.json(), { requeued: 1 });
    assert.deepEqual([await jobs(old.id), await jobs(recent.id), await jobs(fine.id)], [0, 1, 0]);
  });

  test('RLY-9: a delivery whose payload expired after 30 days reads as expired in the API and on the dashboard (payload null, size and time kept) and is not replayed', async () => {
    const made = await callbackDeliveryRow(ctx.db, endpoint);
    await finish(made.id, 'failed', '31 days');
    await ctx.db.superuser`
      update callback_deliveries set created_at = now() - interval '31 days' where id = ${made.id}::uuid`;
    await runRelayRetention(ctx.db.app, { now: new Date() });
    const one = await api('GET', `/api/v1/webhook-deliveries/${made.id}`);
    assert.equal(one.statusCode, 200, one.body);
    const detail = one.json<{
      state: string;
      payload: string | null;
      payload_bytes: number;
      payload_deleted_at: string | null;
      attempt_log: { number: number; status: number; response_prefix: string | null }[];
    }>();
    assert.deepEqual(
      [detail.state, detail.payload, detail.payload_bytes, detail.payload_deleted_at !== null],
      ['failed', null, Buffer.byteLength(made.payload), true],
    );
    assert.deepEqual(
      detail.attempt_log.map((a) => [a.number, a.status, a.response_prefix]),
      [[1, 500, null]],
    );
    const list = await api('GET', `/api/v1/webhook-endpoints/${endpoint.id}/deliveries?limit=100`);
    const listed = list
      .json<{ deliveries: { id: string; payload_deleted_at: string | null }[] }>()
      .deliveries.find((d) => d.id === made.id);
    assert.ok(listed?.payload_deleted_at, 'the list says it expired');
    const replayed = await api('POST', `/api/v1/webhook-deliveries/${made.id}/replay`);
    assert.deepEqual(replayed.json(), { replayed: false });
    assert.equal(await jobs(made.id), 0);
    const page = await ctx.testApp.app.inject({
      method: 'GET',
      url: `/dashboard/webhooks/${endpoint.id}?delivery=${made.id}`,
      headers: { cookie: owner.sessionCookie },
    });
    assert.equal(page.statusCode, 200, page.body);
    assert.match(
      page.body,
      new RegExp(`Payload expired: the body sent \\(${Buffer.byteLength(made.payload)} bytes\\)`),
    );
  });

  test('RLY-7: a since that is not a time is a 400 naming the field; an unknown endpoint or delivery is a 404', async () => {
    const bad = await api('POST', `/api/v1/webhook-endpoints/${endpoint.id}/replay-failed`, {
      since: 'yesterday',
    });
    assert.equal(bad.statusCode, 400);
    assert.match(bad.body, /since/);
    const unknown = '00000000-0000-4000-8000-000000000000';
    for (const [method, url] of [
      ['GET', `/api/v1/webhook-endpoints/${unknown}/deliveries`],
      ['GET', `/api/v1/webhook-deliveries/${unknown}`],
      ['POST', `/api/v1/webhook-deliveries/${unknown}/replay`],
    ] as const) {
      const response = await api(method, url);
      assert.equal(response.statusCode, 404, `${method} ${url}`);
      assert.equal(response.json<{ code: string }>().code, 'not_found');
    }
  });
});
