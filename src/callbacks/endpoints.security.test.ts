// The attack: a tenant's user registers a callback URL aimed at the host's
// loopback or a cloud metadata address, hangs an endpoint on another tenant's
// agent or connection, reads or changes another tenant's endpoint, or a member
// manages endpoints of agents they do not own. And the secret: shown once,
// never in a read, verifying with someone else's Standard Webhooks library;
// after a rotation both the new and the previous secret sign for 24 hours.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, test } from 'node:test';
import { Webhook } from 'standardwebhooks';
import { createAccount, type TestAccount } from '../../test/helpers/accounts.ts';
import { type ProblemBody, useTestApp } from '../../test/helpers/app.ts';
import {
  type ApprovedConnection,
  approvedConnection,
  type RelayAgent,
  relayAgent,
} from '../../test/helpers/relay.ts';
import { verifyWebhook } from '../webhooks/signature.ts';
import {
  callbackSecretDeriver,
  endpointSigningSecrets,
  MAX_ENDPOINTS_PER_SUBJECT,
  type SigningRow,
} from './endpoints.ts';

const ctx = useTestApp();
let owner: TestAccount;
let member: TestAccount;
let asker: TestAccount;
let stranger: TestAccount;
let agent: RelayAgent;
let connection: ApprovedConnection;

// A public IP literal: the registration check needs no DNS for it.
const URL_OK = 'https://93.184.215.14/enclave-events';

ctx.before(async () => {
  owner = await createAccount(ctx.db, ctx.testApp);
  member = await createAccount(ctx.db, ctx.testApp, { kind: 'member', tenantOf: owner });
  asker = await createAccount(ctx.db, ctx.testApp);
  stranger = await createAccount(ctx.db, ctx.testApp);
  agent = await relayAgent(ctx, owner);
  connection = await approvedConnection(ctx, owner, asker, agent);
});

function api(
  account: TestAccount,
  method: 'GET' | 'POST' | 'PATCH' | 'DELETE',
  url: string,
  payload?: object,
) {
  return ctx.testApp.app.inject({
    method,
    url,
    headers: { authorization: `Bearer ${account.apiToken}` },
    ...(payload === undefined ? {} : { payload }),
  });
}

interface Endpoint {
  id: string;
  url: string;
  event_types: string[];
  public_key: string | null;
  state: string;
  previous_secret_until: string | null;
  signing_secret?: string;
}

async function register(account: TestAccount, body: object): Promise<Endpoint & { signing_secret: string }> {
  const created = await api(account, 'POST', '/api/v1/webhook-endpoints', {
    url: URL_OK,
    event_types: ['thread.agent_replied'],
    ...body,
  });
  assert.equal(created.statusCode, 201, created.body);
  return created.json();
}

const problem = (response: { json: <T>() => T }) => response.json<ProblemBody>();
const fieldsOf = (body: ProblemBody) => (body.errors ?? []).map((error) => error.field);

async function saltRow(id: string): Promise<SigningRow> {
  const [row] = await ctx.db.superuser<SigningRow[]>`
    select id, secret_salt, previous_salt, previous_salt_until, sign_v1a from callback_endpoints where id = ${id}::uuid`;
  assert.ok(row);
  return row;
}

describe('webhook endpoints: registration', () => {
  test('RLY-7: an owner registers an owner-side endpoint; its whsec_ secret is in the answer once and verifies with standardwebhooks', async () => {
    const created = await register(owner, { agent_id: agent.id, description: 'replies' });
    assert.match(created.signing_secret, /^whsec_[A-Za-z0-9+/=]+$/);
    assert.equal(created.public_key, null);
    // What deliveries are signed with is this secret: sign as deliver.ts will, verify with the package.
    const signing = endpointSigningSecrets(
      callbackSecretDeriver(ctx.testApp.sessionKey),
      await saltRow(created.id),
    );
    assert.deepEqual(signing.secrets, [created.signing_secret]);
    const body = JSON.stringify({ type: 'thread.agent_replied' });
    const at = new Date();
    const signature = new Webhook(created.signing_secret).sign('msg_1', at, body);
    const headers = {
      'webhook-id': 'msg_1',
      'webhook-timestamp': String(Math.floor(at.getTime() / 1000)),
      'webhook-signature': signature,
    };
    assert.deepEqual(new Webhook(created.signing_secret).verify(body, headers), {
      type: 'thread.agent_replied',
    });
    assert.equal(
      verifyWebhook(headers, Buffer.from(body), signing.secrets, { now: at.getTime() / 1000 }).id,
      'msg_1',
    );
    // Reads never carry it.
    const read = await api(owner, 'GET', `/api/v1/webhook-endpoints/${created.id}`);
    assert.equal(read.statusCode, 200, read.body);
    assert.equal('signing_secret' in read.json<object>(), false);
    assert.doesNotMatch(read.body, /whsec_/);
    const listed = await api(owner, 'GET', '/api/v1/webhook-endpoints');
    assert.equal(listed.statusCode, 200);
    assert.doesNotMatch(listed.body, /whsec_/);
    assert.ok(
      listed.json<{ webhook_endpoints: Endpoint[] }>().webhook_endpoints.some((e) => e.id === created.id),
    );
  });

  test('RLY-7: sign_v1a publishes a whpk_ public key that matches the derived signing key', async () => {
    const created = await register(owner, { agent_id: agent.id, sign_v1a: true });
    assert.match(created.public_key ?? '', /^whpk_/);
    const signing = endpointSigningSecrets(
      callbackSecretDeriver(ctx.testApp.sessionKey),
      await saltRow(created.id),
    );
    assert.match(signing.signingKey ?? '', /^whsk_/);
  });

  test('RLY-7: the requester registers a caller-side endpoint on its outgoing connection', async () => {
    const created = await register(asker, {
      connection_id: connection.connectionId,
      event_types: ['thread.agent_replied', 'thread.closed'],
    });
    assert.deepEqual(created.event_types, ['thread.agent_replied', 'thread.closed']);
  });

  test('RLY-12: URLs of each refused class are a 400 naming url, and nothing is stored', async () => {
    const [{ count: before } = { count: 0 }] = await ctx.db.superuser<
      { count: number }[]
    >`select count(*)::int as count from callback_endpoints`;
    const cases: [string, string][] = [
      ['not a url', 'callback_url_invalid'],
      ['https://user:pass@93.184.215.14/x', 'callback_url_credentials'],
      ['ftp://93.184.215.14/x', 'callback_url_scheme'],
      ['https://127.0.0.1/x', 'callback_destination_forbidden'],
      ['https://169.254.169.254/latest/meta-data', 'callback_destination_forbidden'],
      ['https://[::ffff:10.0.0.1]/x', 'callback_destination_forbidden'],
      [`https://93.184.215.14/${'a'.repeat(2000)}`, 'validation_failed'],
    ];
    for (const [url, code] of cases) {
      const refused = await api(owner, 'POST', '/api/v1/webhook-endpoints', {
        url,
        event_types: ['thread.closed'],
        agent_id: agent.id,
      });
      assert.equal(refused.statusCode, 400, `${url.slice(0, 40)}: ${refused.body}`);
      assert.equal(problem(refused).code, code, url.slice(0, 40));
      assert.ok(
        fieldsOf(problem(refused)).some((field) => field.includes('url')),
        refused.body,
      );
    }
    const [{ count: after } = { count: 0 }] = await ctx.db.superuser<
      { count: number }[]
    >`select count(*)::int as count from callback_endpoints`;
    assert.equal(after, before);
  });

  test('RLY-7: an unknown event type, no events, both or neither of agent_id and connection_id are a 400 naming the field', async () => {
    const bad = async (body: object, field: string) => {
      const refused = await api(owner, 'POST', '/api/v1/webhook-endpoints', { url: URL_OK, ...body });
      assert.equal(refused.statusCode, 400, refused.body);
      assert.ok(
        fieldsOf(problem(refused)).some((f) => f.includes(field)),
        refused.body,
      );
    };
    await bad({ event_types: ['thread.exploded'], agent_id: agent.id }, 'event_types');
    await bad({ event_types: [], agent_id: agent.id }, 'event_types');
    await bad({ event_types: ['thread.closed'] }, 'agent_id');
    await bad(
      { event_types: ['thread.closed'], agent_id: agent.id, connection_id: connection.connectionId },
      'agent_id',
    );
  });

  test('RLY-7: an agent has at most 20 endpoints: the next is a 409', async () => {
    const crowded = await relayAgent(ctx, owner, false);
    for (let i = 0; i < MAX_ENDPOINTS_PER_SUBJECT; i++) await register(owner, { agent_id: crowded.id });
    const refused = await api(owner, 'POST', '/api/v1/webhook-endpoints', {
      url: URL_OK,
      event_types: ['thread.closed'],
      agent_id: crowded.id,
    });
    assert.equal(refused.statusCode, 409, refused.body);
    assert.equal(problem(refused).code, 'callback_endpoint_limit');
  });
});

describe('webhook endpoints: who may', () => {
  test("TEN-1: another tenant's agent, connection and endpoint are all 404, as unknown ids are", async () => {
    const own = await register(owner, { agent_id: agent.id });
    for (const body of [
      { agent_id: agent.id },
      { agent_id: randomUUID() },
      { connection_id: randomUUID() },
    ]) {
      const refused = await api(stranger, 'POST', '/api/v1/webhook-endpoints', {
        url: URL_OK,
        event_types: ['thread.closed'],
        ...body,
      });
      assert.equal(refused.statusCode, 404, refused.body);
    }
    // The target's side cannot hang a caller-side endpoint on the incoming row of the same connection.
    const incoming = await api(owner, 'POST', '/api/v1/webhook-endpoints', {
      url: URL_OK,
      event_types: ['thread.closed'],
      connection_id: connection.connectionId,
    });
    assert.equal(incoming.statusCode, 404, incoming.body);
    for (const [method, path] of [
      ['GET', ''],
      ['PATCH', ''],
      ['DELETE', ''],
      ['POST', '/rotate-secret'],
      ['POST', '/enable'],
    ] as const) {
      const probe = await api(
        stranger,
        method,
        `/api/v1/webhook-endpoints/${own.id}${path}`,
        method === 'PATCH' ? { description: 'mine now' } : undefined,
      );
      assert.equal(probe.statusCode, 404, `${method} ${path}: ${probe.body}`);
    }
    const listed = await api(stranger, 'GET', '/api/v1/webhook-endpoints');
    assert.deepEqual(listed.json<{ webhook_endpoints: Endpoint[] }>().webhook_endpoints, []);
    const still = await api(owner, 'GET', `/api/v1/webhook-endpoints/${own.id}`);
    assert.equal(still.statusCode, 200);
  });

  test("TEN-7: a member manages endpoints only of the agents they created: another's is a 403, and the list leaves it out", async () => {
    const owners = await register(owner, { agent_id: agent.id });
    const refused = await api(member, 'POST', '/api/v1/webhook-endpoints', {
      url: URL_OK,
      event_types: ['thread.closed'],
      agent_id: agent.id,
    });
    assert.equal(refused.statusCode, 403, refused.body);
    assert.equal((await api(member, 'GET', `/api/v1/webhook-endpoints/${owners.id}`)).statusCode, 403);
    const mine = await relayAgent(ctx, member, false);
    const created = await register(member, { agent_id: mine.id });
    const listed = (await api(member, 'GET', '/api/v1/webhook-endpoints')).json<{
      webhook_endpoints: Endpoint[];
    }>();
    assert.deepEqual(
      listed.webhook_endpoints.map((e) => e.id),
      [created.id],
    );
  });
});

describe('webhook endpoints: changes', () => {
  test('RLY-7: rotating shows a new secret once; both it and the previous one sign for 24 hours, then only the new one', async () => {
    const created = await register(owner, { agent_id: agent.id });
    const rotated = await api(owner, 'POST', `/api/v1/webhook-endpoints/${created.id}/rotate-secret`);
    assert.equal(rotated.statusCode, 200, rotated.body);
    const after = rotated.json<Endpoint & { signing_secret: string }>();
    assert.notEqual(after.signing_secret, created.signing_secret);
    const until = Date.parse(after.previous_secret_until ?? '');
    assert.ok(Math.abs(until - Date.now() - 24 * 3600_000) < 60_000, after.previous_secret_until ?? 'null');
    const deriver = callbackSecretDeriver(ctx.testApp.sessionKey);
    const row = await saltRow(created.id);
    assert.deepEqual(endpointSigningSecrets(deriver, row).secrets, [
      after.signing_secret,
      created.signing_secret,
    ]);
    assert.deepEqual(endpointSigningSecrets(deriver, row, new Date(until + 1000)).secrets, [
      after.signing_secret,
    ]);
    const [{ count } = { count: 0 }] = await ctx.db.superuser<{ count: number }[]>`
      select count(*)::int as count from audit_events where action = 'webhook_endpoint.secret_rotated' and target = ${`webhook_endpoint:${created.id}`}`;
    assert.equal(count, 1);
  });

  test('RLY-12: a PATCH checks the new URL again; events and description change', async () => {
    const created = await register(owner, { agent_id: agent.id });
    const refused = await api(owner, 'PATCH', `/api/v1/webhook-endpoints/${created.id}`, {
      url: 'https://10.1.2.3/x',
    });
    assert.equal(refused.statusCode, 400, refused.body);
    assert.equal(problem(refused).code, 'callback_destination_forbidden');
    const changed = await api(owner, 'PATCH', `/api/v1/webhook-endpoints/${created.id}`, {
      url: 'https://93.184.215.15/new',
      event_types: ['thread.closed', 'connection.revoked'],
      description: 'new',
    });
    assert.equal(changed.statusCode, 200, changed.body);
    assert.equal(changed.json<Endpoint>().url, 'https://93.184.215.15/new');
    assert.deepEqual(changed.json<Endpoint>().event_types, ['thread.closed', 'connection.revoked']);
  });

  test('RLY-7: enable turns a disabled endpoint back on and resets its failures; delete removes it; each is audited', async () => {
    const created = await register(owner, { agent_id: agent.id });
    await ctx.db.superuser`
      update callback_endpoints set state = 'disabled', disabled_reason = '8 deliveries failed in a row', consecutive_failures = 8
      where id = ${created.id}::uuid`;
    const enabled = await api(owner, 'POST', `/api/v1/webhook-endpoints/${created.id}/enable`);
    assert.equal(enabled.statusCode, 200, enabled.body);
    assert.equal(enabled.json<Endpoint>().state, 'enabled');
    assert.equal(enabled.json<{ consecutive_failures: number }>().consecutive_failures, 0);
    assert.equal(enabled.json<{ disabled_reason: string | null }>().disabled_reason, null);
    const deleted = await api(owner, 'DELETE', `/api/v1/webhook-endpoints/${created.id}`);
    assert.equal(deleted.statusCode, 204);
    assert.equal((await api(owner, 'GET', `/api/v1/webhook-endpoints/${created.id}`)).statusCode, 404);
    const actions = await ctx.db.superuser<{ action: string }[]>`
      select action from audit_events where target = ${`webhook_endpoint:${created.id}`} order by seq`;
    assert.deepEqual(
      actions.map((a) => a.action),
      ['webhook_endpoint.created', 'webhook_endpoint.enabled', 'webhook_endpoint.deleted'],
    );
  });
});
