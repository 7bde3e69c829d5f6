import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { LightMyRequestResponse } from 'fastify';
import { insertEgressRecords } from '../src/agents/egress/records.ts';
import { withTenant } from '../src/db/tenant.ts';
import { MAX_PAGE } from '../src/http/page-cursor.ts';
import { createAccount, loginAgain, mintInvite, type TestAccount } from './helpers/accounts.ts';
import { type ProblemBody, useTestApp } from './helpers/app.ts';

// Attack: a reader hands a list route a cursor it did not get from that list
// (altered, made up, from another list, another user's or agent's list, or
// another tenant's) to read past what RLS shows, or to learn from the answer
// that foreign rows exist; or asks for a page so large it is the whole table.
// Every JSON list pages by keyset with a cursor bound to tenant and list, and
// a page is at most MAX_PAGE rows: anything else is a 400 naming the field.

const ctx = useTestApp();
let alice: TestAccount;
let aliceMember: TestAccount;
let bob: TestAccount;
let aliceAgent: string;
let aliceOtherAgent: string;
let bobAgent: string;
let operator: TestAccount;

function get(url: string, account: TestAccount): Promise<LightMyRequestResponse> {
  return ctx.testApp.app.inject({
    method: 'GET',
    url,
    headers: { authorization: `Bearer ${account.apiToken}` },
  });
}

/** Agents made straight in the table, `count` of them in one transaction: one created_at, told apart by id. */
async function insertAgents(tenantId: string, prefix: string, count: number): Promise<string[]> {
  const rows = await withTenant(
    ctx.db.app,
    tenantId,
    (tx) => tx<{ id: string }[]>`
      insert into agents (tenant_id, handle, name, template_id)
      select ${tenantId}::uuid, ${prefix} || '-' || n, ${prefix} || ' ' || n, 'echo'
      from generate_series(1, ${count}::int4) n returning id`,
  );
  return rows.map((row) => row.id);
}

async function insertEgress(tenantId: string, agentId: string, count: number): Promise<void> {
  const base = Date.now() - 3_600_000;
  const records = Array.from({ length: count }, (_, n) => ({
    host: `h${n}.example.com`,
    port: 443,
    method: 'CONNECT' as const,
    allowed: true,
    reason: undefined,
    bytesOut: 1,
    bytesIn: 1,
    durationMs: 1,
    // Pairs share a start time, so the id breaks ties.
    startedAt: new Date(base + Math.floor(n / 2) * 1000),
  }));
  await withTenant(ctx.db.app, tenantId, (tx) => insertEgressRecords(tx, { tenantId, agentId }, records));
}

/** Every page of a list, `limit` rows at a time; `between` runs after the first page. */
async function walk(
  url: string,
  key: string,
  account: TestAccount,
  limit: number,
  between: () => Promise<unknown> = async () => {},
): Promise<{ ids: string[]; pages: number }> {
  const ids: string[] = [];
  let after: string | null = null;
  let pages = 0;
  do {
    const query: string = `limit=${limit}${after === null ? '' : `&after=${encodeURIComponent(after)}`}`;
    const response = await get(`${url}?${query}`, account);
    assert.equal(response.statusCode, 200, response.body);
    const body = response.json<Record<string, unknown>>();
    const rows = body[key] as { id: string }[];
    assert.ok(rows.length <= limit);
    ids.push(...rows.map((row) => row.id));
    after = body.next_after as string | null;
    pages += 1;
    if (pages === 1) await between();
    assert.ok(pages < 1000, 'the walk ends');
  } while (after !== null);
  return { ids, pages };
}

ctx.before(async () => {
  alice = await createAccount(ctx.db, ctx.testApp);
  aliceMember = await createAccount(ctx.db, ctx.testApp, { kind: 'member', tenantOf: alice });
  bob = await createAccount(ctx.db, ctx.testApp);
  [aliceAgent = '', aliceOtherAgent = ''] = await insertAgents(alice.user.tenant_id, 'alice', 2);
  [bobAgent = ''] = await insertAgents(bob.user.tenant_id, 'bob', 3);
  await insertEgress(alice.user.tenant_id, aliceAgent, 9);
  await insertEgress(alice.user.tenant_id, aliceOtherAgent, 3);
  await insertEgress(bob.user.tenant_id, bobAgent, 3);
  for (let n = 0; n < 4; n++) await loginAgain(ctx.db, ctx.testApp, alice);
  for (const account of [alice, aliceMember, bob]) {
    for (let n = 0; n < 4; n++) {
      const minted = await ctx.testApp.app.inject({
        method: 'POST',
        url: '/api/v1/tokens',
        headers: { authorization: `Bearer ${account.apiToken}` },
        payload: { name: `token ${n}`, scope: 'read' },
      });
      assert.equal(minted.statusCode, 201, minted.body);
    }
  }
  for (let n = 0; n < 3; n++) await createAccount(ctx.db, ctx.testApp, { kind: 'member', tenantOf: alice });
  for (let n = 0; n < 2; n++) {
    await mintInvite(ctx.db, { kind: 'member', email: `m${n}@example.test`, tenantId: alice.user.tenant_id });
  }
  operator = await createAccount(ctx.db, ctx.testApp, { kind: 'operator' });
  // The operator's list merges its tenant's invites with the platform's: some of each, interleaved in time.
  for (let n = 0; n < 3; n++) {
    await mintInvite(ctx.db, { kind: 'tenant', email: `t${n}@example.test`, tenantId: null });
    await mintInvite(ctx.db, {
      kind: 'member',
      email: `o${n}@example.test`,
      tenantId: operator.user.tenant_id,
    });
  }
});

/** The paged lists, as alice reads them. */
const lists = () => [
  { url: '/api/v1/agents', key: 'agents' },
  { url: '/api/v1/members', key: 'members' },
  { url: '/api/v1/tokens', key: 'tokens' },
  { url: '/api/v1/sessions', key: 'sessions' },
  { url: '/api/v1/invites', key: 'invites' },
  { url: `/api/v1/agents/${aliceAgent}/egress`, key: 'connections' },
];

describe('keyset pages of the JSON lists', () => {
  test('AGT-1: the agent list pages oldest first: every agent exactly once, agents added between pages once too, ties on created_at broken by id', async () => {
    const first = await insertAgents(alice.user.tenant_id, 'tied', 13);
    const added: string[] = [];
    const { ids, pages } = await walk('/api/v1/agents', 'agents', alice, 4, async () => {
      added.push(...(await insertAgents(alice.user.tenant_id, 'later', 6)));
    });
    assert.equal(new Set(ids).size, ids.length, 'no agent twice');
    const [all] = await withTenant(
      ctx.db.app,
      alice.user.tenant_id,
      (tx) => tx<{ ids: string[] }[]>`select array_agg(id::text order by created_at, id) as ids from agents`,
    );
    assert.deepEqual(ids, all?.ids, 'every agent once, in (created_at, id) order');
    for (const id of [...first, ...added]) assert.ok(ids.includes(id));
    assert.equal(pages, Math.ceil(ids.length / 4));
  });

  test('ACC-10, ACC-3, ACC-12, ACC-1, AGT-4: tokens, sessions, members, invites and egress records page the same way: each row once, in the order of one big page, next_after null at the end', async () => {
    for (const { url, key } of lists()) {
      const whole = (await get(`${url}?limit=${MAX_PAGE}`, alice)).json<Record<string, unknown>>();
      assert.equal(whole.next_after, null, url);
      const expected = (whole[key] as { id: string }[]).map((row) => row.id);
      assert.ok(expected.length >= 5, `${url} has rows to page through (${expected.length})`);
      for (const limit of [1, 2, 3]) {
        const { ids } = await walk(url, key, alice, limit);
        assert.deepEqual(ids, expected, `${url} with limit ${limit}`);
      }
    }
  });

  test("ACC-1: an operator's invite list, the tenant's and the platform's merged, pages as one list", async () => {
    const whole = (await get(`/api/v1/invites?limit=${MAX_PAGE}`, operator)).json<{
      invites: { id: string }[];
    }>();
    const expected = whole.invites.map((invite) => invite.id);
    assert.ok(expected.length >= 9, `both kinds are listed (${expected.length})`);
    for (const limit of [1, 2, 3]) {
      assert.deepEqual((await walk('/api/v1/invites', 'invites', operator, limit)).ids, expected);
    }
  });

  test('AGT-1: limit 0, over the maximum, negative, not a number or past 64 bits is a 400 naming limit; the maximum is served', async () => {
    for (const { url } of lists()) {
      for (const limit of ['0', String(MAX_PAGE + 1), '-1', 'ten', '1e400', '99999999999999999999999']) {
        const response = await get(`${url}?limit=${limit}`, alice);
        assert.equal(response.statusCode, 400, `${url} limit=${limit}: ${response.body}`);
        const problem = response.json<ProblemBody>();
        assert.equal(problem.code, 'validation_failed');
        assert.deepEqual(
          problem.errors?.map((error) => error.field),
          ['limit'],
        );
      }
      assert.equal((await get(`${url}?limit=${MAX_PAGE}`, alice)).statusCode, 200);
      const long = await get(`${url}?after=${'a'.repeat(300)}`, alice);
      assert.equal(long.statusCode, 400);
      assert.deepEqual(
        long.json<ProblemBody>().errors?.map((error) => error.field),
        ['after'],
      );
    }
  });

  test("TEN-7: a cursor altered, made up, from another list, from another user's or agent's list, or from another tenant's is a 400 cursor_invalid that shows nothing", async () => {
    const cursorOf = async (url: string, account: TestAccount): Promise<string> => {
      const body = (await get(`${url}?limit=1`, account)).json<{ next_after: string | null }>();
      assert.ok(body.next_after !== null, `${url} gives a cursor`);
      return body.next_after;
    };
    const agents = await cursorOf('/api/v1/agents', alice);
    const [payload = '', tag = ''] = agents.split('.');
    const probes: { url: string; account: TestAccount; after: string; why: string }[] = [
      { url: '/api/v1/agents', account: alice, after: `${payload}.${tag.slice(1)}A`, why: 'altered' },
      { url: '/api/v1/agents', account: alice, after: payload, why: 'no MAC' },
      { url: '/api/v1/agents', account: alice, after: 'bm90IGEgY3Vyc29y.bm9wZQ', why: 'made up' },
      { url: '/api/v1/members', account: alice, after: agents, why: "the agent list's, on members" },
      { url: '/api/v1/tokens', account: alice, after: agents, why: "the agent list's, on tokens" },
      { url: '/api/v1/agents', account: bob, after: agents, why: "tenant A's, on B's agents" },
      {
        url: '/api/v1/tokens',
        account: alice,
        after: await cursorOf('/api/v1/tokens', aliceMember),
        why: "a colleague's token list's",
      },
      {
        url: `/api/v1/agents/${aliceAgent}/egress`,
        account: alice,
        after: await cursorOf(`/api/v1/agents/${aliceOtherAgent}/egress`, alice),
        why: "another agent's egress list's",
      },
      {
        url: `/api/v1/agents/${bobAgent}/egress`,
        account: bob,
        after: await cursorOf(`/api/v1/agents/${aliceAgent}/egress`, alice),
        why: "tenant A's egress list's, on B's agent",
      },
      {
        url: '/api/v1/members',
        account: bob,
        after: await cursorOf('/api/v1/members', alice),
        why: "tenant A's member list's, on B's",
      },
    ];
    const secrets = [alice.user.id, alice.user.username, aliceAgent, aliceOtherAgent, alice.user.tenant_id];
    for (const probe of probes) {
      const response = await get(`${probe.url}?after=${encodeURIComponent(probe.after)}`, probe.account);
      assert.equal(response.statusCode, 400, `${probe.why}: ${response.body}`);
      const problem = response.json<ProblemBody>();
      assert.equal(problem.code, 'cursor_invalid', probe.why);
      assert.deepEqual(
        problem.errors?.map((error) => error.field),
        ['after'],
      );
      if (probe.account === bob) {
        for (const secret of secrets)
          assert.ok(!response.body.includes(secret), `${probe.why} shows ${secret}`);
      }
    }
    // The genuine cursor still works: the refusals above were about the cursor.
    assert.equal((await get(`/api/v1/agents?after=${encodeURIComponent(agents)}`, alice)).statusCode, 200);
  });

  test("AGT-1: a page of a long agent list walks its index in order; no plan reads the tenant's whole list and sorts it", async () => {
    const big = await createAccount(ctx.db, ctx.testApp);
    await ctx.db.superuser`
      insert into agents (tenant_id, handle, name, template_id)
      select ${big.user.tenant_id}::uuid, 'plan-' || n, 'plan ' || n, 'echo' from generate_series(1, 5000) n`;
    await ctx.db.superuser`analyze agents`;
    // The read of agents.list (src/agents/service.ts): row-level security ORs in the identity lookup policy.
    const plan = await withTenant(ctx.db.app, big.user.tenant_id, async (tx) =>
      (
        await tx.unsafe(
          `explain select id from agents where tenant_id = enclave.current_tenant_id()
           order by created_at, id limit 101`,
        )
      )
        .map((row) => String(row['QUERY PLAN']))
        .join('\n'),
    );
    assert.match(plan, /agents_tenant_page/, plan);
    assert.doesNotMatch(plan, /Seq Scan|Sort/, plan);
    const first = await get('/api/v1/agents?limit=3', big);
    assert.deepEqual(first.json<{ agents: { handle: string }[] }>().agents.length, 3);
  });
});
