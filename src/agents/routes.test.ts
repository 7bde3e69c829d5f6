import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import type { LightMyRequestResponse } from 'fastify';
import { createAccount, type TestAccount } from '../../test/helpers/accounts.ts';
import { type ProblemBody, useTestApp } from '../../test/helpers/app.ts';
import { withTenant } from '../db/tenant.ts';
import { mintAgentIdentity, resolveAgentIdentity } from './identity.ts';

// AGT-1, VLT-2, VLT-3 through the JSON API: onboarding an agent from a
// template with its credentials, the write-only credential routes, and every
// way a request can be wrong. Credential values are distinctive canaries, and
// no response, audit event or log line may carry one.

// An operator template with a required, formatted credential beside the built-in ones.
const templatesDir = mkdtempSync(path.join(tmpdir(), 'enclave-agent-templates-'));
writeFileSync(
  path.join(templatesDir, 'keyed.json'),
  JSON.stringify({
    id: 'keyed',
    name: 'Keyed',
    description: 'Needs an API key in the kt- format.',
    command: ['node', 'agent.mjs'],
    port: 8080,
    prefix: 'zz',
    model_gateway: false,
    credentials: [
      { name: 'api_key', description: 'The key', required: true, env: 'API_KEY', pattern: '^kt-' },
      { name: 'extra', description: 'Optional', required: false, env: 'EXTRA' },
    ],
  }),
);

const ctx = useTestApp({ ENCLAVE_TEMPLATES_DIR: templatesDir });
let alice: TestAccount;
let bob: TestAccount;
let serial = 0;

ctx.before(async () => {
  [alice, bob] = [await createAccount(ctx.db, ctx.testApp), await createAccount(ctx.db, ctx.testApp)];
});

/** A value no other test uses, long enough to show its last 4. */
function canary(prefix = ''): string {
  serial += 1;
  return `${prefix}CANARY-${process.pid}-${serial}-${'q'.repeat(12)}-${serial}Z`;
}

function api(
  account: TestAccount,
  method: 'GET' | 'POST' | 'PATCH' | 'PUT' | 'DELETE',
  url: string,
  payload?: object,
): Promise<LightMyRequestResponse> {
  return ctx.testApp.app.inject({
    method,
    url,
    headers: { authorization: `Bearer ${account.apiToken}` },
    ...(payload === undefined ? {} : { payload }),
  });
}

function handle(): string {
  serial += 1;
  return `agent-${process.pid}-${serial}`;
}

async function onboard(account: TestAccount, body: Record<string, unknown>) {
  const response = await api(account, 'POST', '/api/v1/agents', {
    name: 'An agent',
    handle: handle(),
    ...body,
  });
  assert.equal(response.statusCode, 201, response.body);
  return response.json<{
    id: string;
    handle: string;
    credentials: { name: string; last4: string | null }[];
  }>();
}

function problem(response: LightMyRequestResponse, status: number, field?: string): ProblemBody {
  assert.equal(response.statusCode, status, response.body);
  assert.match(String(response.headers['content-type']), /^application\/problem\+json/);
  const body = response.json<ProblemBody>();
  if (field !== undefined)
    assert.ok(
      body.errors?.some((error) => error.field === field),
      response.body,
    );
  return body;
}

async function auditRowsText(): Promise<string> {
  const rows = await ctx.db.superuser<{ text: string }[]>`select e::text as text from enclave.audit_events e`;
  return rows.map((row) => row.text).join('\n');
}

describe('agents API', () => {
  test('AGT-1: an onboarded agent belongs to its tenant, with its own credentials, listed by name and last 4 only', async () => {
    const secret = canary();
    const agent = await onboard(alice, { template: 'echo', credentials: { echo_token: secret } });
    assert.deepEqual(
      agent.credentials.map((c) => [c.name, c.last4]),
      [['echo_token', secret.slice(-4)]],
    );
    const other = await onboard(alice, { template: 'echo' });
    const listed = await api(alice, 'GET', `/api/v1/agents/${other.id}/credentials`);
    assert.deepEqual(listed.json(), { credentials: [] }, "one agent's credentials are not another's");
    const list = await api(alice, 'GET', '/api/v1/agents');
    const ids = list.json<{ agents: { id: string }[] }>().agents.map((a) => a.id);
    assert.ok(ids.includes(agent.id) && ids.includes(other.id));
    const bobs = await api(bob, 'GET', '/api/v1/agents');
    assert.ok(!bobs.body.includes(agent.id), "another tenant's list does not show the agent");
    const [row] = await ctx.db.superuser<{ tenant_id: string }[]>`
      select tenant_id from enclave.agents where id = ${agent.id}::uuid`;
    assert.equal(row?.tenant_id, alice.user.tenant_id);
  });

  test('AGT-1: each agent has its own identity token enc_agent_…; only its hash is stored and minting again revokes the last', async () => {
    const [one, two] = [
      await onboard(alice, { template: 'echo' }),
      await onboard(alice, { template: 'echo' }),
    ];
    const mint = (id: string) =>
      withTenant(ctx.db.app, alice.user.tenant_id, (tx) => mintAgentIdentity(tx, id));
    const [tokenOne, tokenTwo] = [(await mint(one.id)) ?? '', (await mint(two.id)) ?? ''];
    assert.ok(tokenOne.startsWith('enc_agent_') && tokenTwo.startsWith('enc_agent_'));
    assert.notEqual(tokenOne, tokenTwo);
    assert.equal((await resolveAgentIdentity(ctx.db.app, tokenOne))?.agentId, one.id);
    assert.equal((await resolveAgentIdentity(ctx.db.app, tokenTwo))?.agentId, two.id);
    const stored = await ctx.db.superuser<{ text: string }[]>`select a::text as text from enclave.agents a`;
    assert.ok(!stored.some((row) => row.text.includes(tokenOne)), 'the token itself is not stored');
    const again = await mint(one.id);
    assert.equal(
      await resolveAgentIdentity(ctx.db.app, tokenOne),
      undefined,
      'the previous token is revoked',
    );
    assert.equal((await resolveAgentIdentity(ctx.db.app, again ?? ''))?.agentId, one.id);
    assert.equal(await resolveAgentIdentity(ctx.db.app, 'enc_live_x'), undefined);
    const foreign = await withTenant(ctx.db.app, bob.user.tenant_id, (tx) => mintAgentIdentity(tx, one.id));
    assert.equal(foreign, undefined, 'another tenant cannot mint an identity for the agent');
  });

  test('VLT-3: the provision request record holds one boolean per credential, and the database refuses anything else', async () => {
    const secret = canary('kt-');
    const agent = await onboard(alice, {
      template: 'keyed',
      support_access: false,
      credentials: { api_key: secret },
    });
    const detail = await api(alice, 'GET', `/api/v1/agents/${agent.id}`);
    const { provision } = detail.json<{ provision: Record<string, unknown> }>();
    assert.deepEqual(
      { ...provision, requested_at: undefined },
      {
        template: 'keyed',
        support_access: false,
        credentials_provided: { api_key: true, extra: false },
        requested_at: undefined,
      },
    );
    const [row] = await ctx.db.superuser<{ text: string }[]>`
      select r::text as text from enclave.agent_provision_requests r where agent_id = ${agent.id}::uuid`;
    assert.ok(row !== undefined && !row.text.includes(secret), 'the record holds no value');
    await assert.rejects(
      ctx.db.superuser`
        insert into enclave.agent_provision_requests
          (tenant_id, agent_id, template_id, support_access, credentials_provided)
        values (${alice.user.tenant_id}::uuid, ${agent.id}::uuid, 'keyed', true, ${ctx.db.superuser.json({ api_key: 'kt-a-value' })})`,
      /check constraint/,
    );
  });

  test('VLT-2: no response, audit event or log line carries a credential value, only its last 4', async () => {
    const values = [canary(), canary(), canary('kt-')] as const;
    const agent = await onboard(alice, { template: 'echo', credentials: { echo_token: values[0] } });
    const responses = [
      await api(alice, 'PUT', `/api/v1/agents/${agent.id}/credentials/echo_token`, { value: values[1] }),
      await api(alice, 'GET', `/api/v1/agents/${agent.id}`),
      await api(alice, 'GET', `/api/v1/agents/${agent.id}/credentials`),
      await api(alice, 'GET', '/api/v1/agents'),
      await api(alice, 'POST', '/api/v1/agents', {
        name: 'x',
        handle: handle(),
        template: 'keyed',
        credentials: { api_key: values[2].replace('kt-', 'no-') },
      }),
      await api(alice, 'PUT', `/api/v1/agents/${agent.id}/credentials/nope`, { value: values[2] }),
    ];
    assert.equal(responses[0]?.statusCode, 200, 'rotated');
    assert.equal(responses[0]?.json<{ last4: string }>().last4, values[1].slice(-4));
    const seen = [
      ...responses.map((response) => `${response.body}\n${JSON.stringify(response.headers)}`),
      await auditRowsText(),
      ...ctx.testApp.logLines(),
    ].join('\n');
    for (const value of values) {
      assert.ok(!seen.includes(value), 'the value appears nowhere');
      assert.ok(!seen.includes(value.replace('kt-', 'no-')), 'nor a refused one');
    }
    assert.ok(seen.includes(values[1].slice(-4) ?? '-'), 'its last 4 do, for correlation');
  });

  test('a PUT that adds a credential (201) is recorded as credential.added, one that replaces it (200) as credential.rotated, with its name and last 4; a refused PUT stores neither row nor event', async () => {
    const carol = await createAccount(ctx.db, ctx.testApp, { kind: 'member', tenantOf: alice });
    const agent = await onboard(alice, { template: 'keyed', credentials: { api_key: canary('kt-') } });
    const url = `/api/v1/agents/${agent.id}/credentials/extra`;
    const recorded = () => ctx.db.superuser<
      { action: string; actor: string; target: string; data: object }[]
    >`
      select action, actor, target, data from enclave.audit_events
      where tenant_id = ${alice.user.tenant_id} and data ->> 'name' = 'extra' order by seq`;
    const [added, rotated] = [canary(), canary()];
    assert.equal((await api(alice, 'PUT', url, { value: added })).statusCode, 201);
    assert.equal((await api(alice, 'PUT', url, { value: rotated })).statusCode, 200);
    problem(await api(carol, 'PUT', url, { value: canary() }), 403);
    problem(await api(bob, 'PUT', url, { value: canary() }), 404);
    problem(
      await api(alice, 'PUT', `/api/v1/agents/${agent.id}/credentials/api_key`, { value: 'no-kt' }),
      400,
    );
    const event = (action: string, value: string) => ({
      action,
      actor: `token:${alice.apiTokenId}`,
      target: `agent:${agent.id}`,
      data: { name: 'extra', last4: value.slice(-4) },
    });
    assert.deepEqual(
      [...(await recorded())],
      [event('credential.added', added), event('credential.rotated', rotated)],
    );
    const lent = await withTenant(ctx.db.app, alice.user.tenant_id, (tx) =>
      ctx.testApp.vault.lendCredential(
        tx,
        { tenantId: alice.user.tenant_id, agentId: agent.id, name: 'extra' },
        (b) => b.toString('utf8'),
      ),
    );
    assert.equal(lent, rotated);
  });

  test('VLT-4: adding or rotating one credential leaves the others as they were', async () => {
    const [key, extra, rotated] = [canary('kt-'), canary(), canary('kt-')];
    const agent = await onboard(alice, { template: 'keyed', credentials: { api_key: key, extra } });
    const before = (await api(alice, 'GET', `/api/v1/agents/${agent.id}/credentials`)).json<{
      credentials: { name: string; updated_at: string }[];
    }>();
    const put = await api(alice, 'PUT', `/api/v1/agents/${agent.id}/credentials/api_key`, { value: rotated });
    assert.equal(put.statusCode, 200);
    const after = (await api(alice, 'GET', `/api/v1/agents/${agent.id}/credentials`)).json<{
      credentials: { name: string; updated_at: string }[];
    }>();
    assert.deepEqual(
      after.credentials.find((c) => c.name === 'extra'),
      before.credentials.find((c) => c.name === 'extra'),
    );
    const lent = await withTenant(ctx.db.app, alice.user.tenant_id, async (tx) => ({
      key: await ctx.testApp.vault.lendCredential(
        tx,
        { tenantId: alice.user.tenant_id, agentId: agent.id, name: 'api_key' },
        (b) => b.toString('utf8'),
      ),
      extra: await ctx.testApp.vault.lendCredential(
        tx,
        { tenantId: alice.user.tenant_id, agentId: agent.id, name: 'extra' },
        (b) => b.toString('utf8'),
      ),
    }));
    assert.deepEqual(lent, { key: rotated, extra });
  });

  test('deleting an agent deletes its credentials and provision record; a required credential is replaced, not deleted', async () => {
    const agent = await onboard(alice, {
      template: 'keyed',
      credentials: { api_key: canary('kt-'), extra: canary() },
    });
    problem(await api(alice, 'DELETE', `/api/v1/agents/${agent.id}/credentials/api_key`), 400, 'name');
    assert.equal(
      (await api(alice, 'DELETE', `/api/v1/agents/${agent.id}/credentials/extra`)).statusCode,
      204,
    );
    problem(await api(alice, 'DELETE', `/api/v1/agents/${agent.id}/credentials/extra`), 404);
    assert.equal((await api(alice, 'DELETE', `/api/v1/agents/${agent.id}`)).statusCode, 204);
    problem(await api(alice, 'GET', `/api/v1/agents/${agent.id}`), 404);
    const left = await ctx.db.superuser<{ n: number }[]>`
      select (select count(*) from enclave.credentials where agent_id = ${agent.id}::uuid)::int
           + (select count(*) from enclave.agent_provision_requests where agent_id = ${agent.id}::uuid)::int as n`;
    assert.equal(left[0]?.n, 0);
    const audit = await auditRowsText();
    assert.match(audit, /agent\.deleted/);
  });

  test('PATCH changes name, description and support access, and is audited', async () => {
    const agent = await onboard(alice, { template: 'echo' });
    const changed = await api(alice, 'PATCH', `/api/v1/agents/${agent.id}`, {
      support_access: false,
      description: 'Answers politely',
    });
    assert.equal(changed.statusCode, 200, changed.body);
    assert.equal(changed.json<{ support_access: boolean }>().support_access, false);
    assert.match(await auditRowsText(), /agent\.updated/);
    problem(await api(alice, 'PATCH', `/api/v1/agents/${agent.id}`, {}), 400);
    problem(await api(alice, 'PATCH', `/api/v1/agents/${agent.id}`, { handle: 'new-handle' }), 400);
  });

  test('AGT-4: PATCH sets an egress allowlist of domains and wildcard subdomains, and null opens it again', async () => {
    const agent = await onboard(alice, { template: 'echo' });
    const url = `/api/v1/agents/${agent.id}`;
    const set = await api(alice, 'PATCH', url, { egress_allowlist: ['api.github.com', '*.example.com'] });
    assert.equal(set.statusCode, 200, set.body);
    assert.deepEqual(set.json<{ egress_allowlist: string[] }>().egress_allowlist, [
      'api.github.com',
      '*.example.com',
    ]);
    for (const bad of [
      ['http://x.com'],
      ['*'],
      ['*.com.'],
      ['exa mple.com'],
      ['localhost'],
      Array(101).fill('a.com'),
    ]) {
      problem(await api(alice, 'PATCH', url, { egress_allowlist: bad }), 400);
    }
    const open = await api(alice, 'PATCH', url, { egress_allowlist: null });
    assert.equal(open.json<{ egress_allowlist: null }>().egress_allowlist, null);
  });

  describe('bad input', () => {
    test('unknown template', async () => {
      problem(
        await api(alice, 'POST', '/api/v1/agents', { name: 'x', handle: handle(), template: 'nope' }),
        400,
        'template',
      );
    });

    test('a missing required credential, or none of a one_of group', async () => {
      const body = await api(alice, 'POST', '/api/v1/agents', {
        name: 'x',
        handle: handle(),
        template: 'keyed',
      });
      assert.match(problem(body, 400, 'credentials/api_key').errors?.[0]?.message ?? '', /required/);
      problem(
        await api(alice, 'POST', '/api/v1/agents', { name: 'x', handle: handle(), template: 'llm-chat' }),
        400,
        'credentials',
      );
    });

    test("a credential failing its template's pattern, an empty one, one of 64 KiB or more, one the template does not take", async () => {
      const send = (credentials: Record<string, string>, template = 'keyed') =>
        api(alice, 'POST', '/api/v1/agents', { name: 'x', handle: handle(), template, credentials });
      const wrong = canary('sk-');
      const refused = problem(await send({ api_key: wrong }), 400, 'credentials/api_key');
      assert.ok(!JSON.stringify(refused).includes(wrong), 'the error names the rule, not the value');
      problem(
        await send({ anthropic_api_key: canary('sk-') }, 'llm-chat'),
        400,
        'credentials/anthropic_api_key',
      );
      problem(await send({ api_key: '' }), 400, 'credentials/api_key');
      const huge = `kt-${'x'.repeat(65_536)}`;
      const tooBig = await send({ api_key: huge });
      assert.equal(tooBig.statusCode, 400);
      assert.ok(!tooBig.body.includes('x'.repeat(100)));
      // Within the character limit but over the byte limit: 4-byte characters.
      problem(await send({ api_key: `kt-${'😀'.repeat(16_400)}` }), 400, 'credentials/api_key');
      problem(await send({ api_key: canary('kt-'), stranger: 'x' }), 400, 'credentials/stranger');
      problem(await send({ api_key: canary('kt-'), 'Bad-Name': 'x' }), 400);
    });

    test('PUT: empty, oversized, malformed-name and undeclared-name credentials, and a bad body', async () => {
      const agent = await onboard(alice, { template: 'keyed', credentials: { api_key: canary('kt-') } });
      const url = `/api/v1/agents/${agent.id}/credentials`;
      problem(await api(alice, 'PUT', `${url}/api_key`, { value: '' }), 400, 'value');
      problem(await api(alice, 'PUT', `${url}/api_key`, { value: `kt-${'x'.repeat(65_536)}` }), 400);
      problem(await api(alice, 'PUT', `${url}/api_key`, { value: 'sk-not-the-format-at-all' }), 400, 'value');
      problem(await api(alice, 'PUT', `${url}/api_key`, { value: 42 }), 400);
      problem(await api(alice, 'PUT', `${url}/api_key`, { value: 'kt-ok', extra: 1 }), 400);
      problem(await api(alice, 'PUT', `${url}/NOT_A_NAME`, { value: 'kt-x' }), 400);
      problem(await api(alice, 'PUT', `${url}/undeclared`, { value: 'kt-x' }), 400, 'name');
      problem(
        await api(alice, 'PUT', `/api/v1/agents/not-a-uuid/credentials/api_key`, { value: 'kt-x' }),
        400,
      );
    });

    test('a handle taken (in any tenant), malformed or reserved', async () => {
      const taken = await onboard(alice, { template: 'echo' });
      const again = (account: TestAccount, h: string) =>
        api(account, 'POST', '/api/v1/agents', { name: 'x', handle: h, template: 'echo' });
      assert.equal(problem(await again(alice, taken.handle), 409).code, 'handle_taken');
      assert.equal(problem(await again(bob, taken.handle), 409).code, 'handle_taken');
      for (const bad of ['ab', 'Upper', '-lead', 'trail-', 'a_b', 'a'.repeat(41), 'dou--ble', 'ünï']) {
        problem(await again(alice, bad), 400);
      }
      for (const reserved of ['admin', 'support', 'enclave-bot']) {
        assert.match(
          problem(await again(alice, reserved), 400, 'handle').errors?.[0]?.message ?? '',
          /reserved/,
        );
      }
    });

    test("another tenant's agent id is a 404, like an unknown one, and changes nothing", async () => {
      const agent = await onboard(alice, { template: 'echo', credentials: { echo_token: canary() } });
      for (const [method, url, body] of [
        ['GET', `/api/v1/agents/${agent.id}`, undefined],
        ['PATCH', `/api/v1/agents/${agent.id}`, { name: 'mine now' }],
        ['DELETE', `/api/v1/agents/${agent.id}`, undefined],
        ['GET', `/api/v1/agents/${agent.id}/credentials`, undefined],
        ['PUT', `/api/v1/agents/${agent.id}/credentials/echo_token`, { value: canary() }],
        ['DELETE', `/api/v1/agents/${agent.id}/credentials/echo_token`, undefined],
      ] as const) {
        problem(await api(bob, method, url, body), 404);
      }
      const still = await api(alice, 'GET', `/api/v1/agents/${agent.id}`);
      assert.equal(still.json<{ name: string; credentials: unknown[] }>().credentials.length, 1);
    });

    test('a read-scoped token cannot onboard, and no token at all is a 401', async () => {
      const reader = await createAccount(ctx.db, ctx.testApp, { tokenScope: 'read' });
      problem(
        await api(reader, 'POST', '/api/v1/agents', { name: 'x', handle: handle(), template: 'echo' }),
        403,
      );
      const anonymous = await ctx.testApp.app.inject({ method: 'GET', url: '/api/v1/agents' });
      assert.equal(anonymous.statusCode, 401);
    });
  });
});
