import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, test } from 'node:test';
import { createAccount, type TestAccount } from '../../../test/helpers/accounts.ts';
import { type ProblemBody, useTestApp } from '../../../test/helpers/app.ts';
import { withTenant } from '../../db/tenant.ts';
import { type EgressRecord, insertEgressRecords } from './records.ts';

// AGT-4 through the JSON API: an agent's owner reads its egress records,
// newest first, with exactly the record fields; another tenant's agent and
// an unknown one are the same 404; the page size is validated.

const ctx = useTestApp();
let alice: TestAccount;
let bob: TestAccount;
let agentId: string;
let quietAgentId: string;
const COUNT = 7;

async function onboard(account: TestAccount, handle: string): Promise<string> {
  const response = await ctx.testApp.app.inject({
    method: 'POST',
    url: '/api/v1/agents',
    headers: { authorization: `Bearer ${account.apiToken}` },
    payload: { name: handle, handle, template: 'echo' },
  });
  assert.equal(response.statusCode, 201, response.body);
  return response.json<{ id: string }>().id;
}

ctx.before(async () => {
  [alice, bob] = [await createAccount(ctx.db, ctx.testApp), await createAccount(ctx.db, ctx.testApp)];
  agentId = await onboard(alice, `egress-${process.pid}`);
  quietAgentId = await onboard(alice, `egress-quiet-${process.pid}`);
  const base = Date.now() - 60_000;
  const records: EgressRecord[] = Array.from({ length: COUNT }, (_, n) => ({
    host: `host-${n}.example.com`,
    port: 443,
    method: n % 2 === 0 ? 'CONNECT' : 'HTTP',
    allowed: n !== 3,
    reason: n === 3 ? "not in the agent's egress allowlist" : undefined,
    bytesOut: n * 1000,
    bytesIn: n * 5_000_000_000, // past 32 bits
    durationMs: n * 10,
    startedAt: new Date(base + n * 1000),
  }));
  const tenantId = alice.user.tenant_id;
  await withTenant(ctx.db.app, tenantId, (tx) => insertEgressRecords(tx, { tenantId, agentId }, records));
});

function get(url: string, account: TestAccount) {
  return ctx.testApp.app.inject({
    method: 'GET',
    url,
    headers: { authorization: `Bearer ${account.apiToken}` },
  });
}

interface Listed {
  connections: Record<string, unknown>[];
}

describe('GET /api/v1/agents/:id/egress', () => {
  test("AGT-4: the owner lists the agent's connections newest first, with exactly the record fields", async () => {
    const response = await get(`/api/v1/agents/${agentId}/egress`, alice);
    assert.equal(response.statusCode, 200, response.body);
    const { connections } = response.json<Listed>();
    assert.equal(connections.length, COUNT);
    assert.deepEqual(
      connections.map((row) => row.host),
      Array.from({ length: COUNT }, (_, n) => `host-${COUNT - 1 - n}.example.com`),
    );
    const refused = connections.find((row) => row.host === 'host-3.example.com');
    assert.ok(refused !== undefined);
    assert.deepEqual(Object.keys(refused).sort(), [
      'allowed',
      'bytes_in',
      'bytes_out',
      'duration_ms',
      'host',
      'id',
      'method',
      'port',
      'reason',
      'started_at',
    ]);
    assert.deepEqual(
      { ...refused, id: undefined, started_at: undefined },
      {
        id: undefined,
        host: 'host-3.example.com',
        port: 443,
        method: 'HTTP',
        allowed: false,
        reason: "not in the agent's egress allowlist",
        bytes_out: 3000,
        bytes_in: 15_000_000_000,
        duration_ms: 30,
        started_at: undefined,
      },
    );
    assert.equal(connections[0]?.reason, null);
    const quiet = await get(`/api/v1/agents/${quietAgentId}/egress`, alice);
    assert.deepEqual(
      quiet.json(),
      { connections: [], next_after: null },
      "one agent's records are not another's",
    );
  });

  test('AGT-4: limit picks the newest n', async () => {
    const { connections } = (await get(`/api/v1/agents/${agentId}/egress?limit=2`, alice)).json<Listed>();
    assert.deepEqual(
      connections.map((row) => row.host),
      ['host-6.example.com', 'host-5.example.com'],
    );
  });

  test("AGT-4: another tenant's agent and an unknown agent are the same 404", async () => {
    for (const [account, id] of [
      [bob, agentId],
      [alice, randomUUID()],
    ] as const) {
      const response = await get(`/api/v1/agents/${id}/egress`, account);
      assert.equal(response.statusCode, 404, response.body);
      assert.equal(response.json<ProblemBody>().code, 'not_found');
      assert.ok(!response.body.includes('example.com'));
    }
  });

  test('AGT-4: a limit outside 1..500, a non-numeric one, an unknown parameter or a malformed id is a 400', async () => {
    for (const query of ['limit=0', 'limit=501', 'limit=ten', 'limit=-1', 'other=1']) {
      const response = await get(`/api/v1/agents/${agentId}/egress?${query}`, alice);
      assert.equal(response.statusCode, 400, `${query}: ${response.body}`);
    }
    assert.equal((await get('/api/v1/agents/not-a-uuid/egress', alice)).statusCode, 400);
    assert.equal((await get(`/api/v1/agents/${agentId}/egress?limit=500`, alice)).statusCode, 200);
  });

  test('AGT-4: the route needs a signed-in user', async () => {
    const response = await ctx.testApp.app.inject({ method: 'GET', url: `/api/v1/agents/${agentId}/egress` });
    assert.equal(response.statusCode, 401);
  });
});
