import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { LightMyRequestResponse } from 'fastify';
import { Webhook } from 'standardwebhooks';
import { createAccount, type TestAccount } from '../../test/helpers/accounts.ts';
import { insertAgent } from '../../test/helpers/agents.ts';
import { useTestApp } from '../../test/helpers/app.ts';
import { callbackDeliveryRow } from '../../test/helpers/callbacks.ts';
import { DEFAULT_PAGE } from '../http/page-cursor.ts';
import { signatureHeader, signV1 } from '../webhooks/signature.ts';
import { callbackSecretDeriver, endpointSigningSecrets, type SigningRow } from './endpoints.ts';

// The dashboard pages of callback endpoints (RLY-7), through inject as a
// browser without JavaScript uses them: forms, 303s, the secret-flash cookie.

const ctx = useTestApp();
const ORIGIN = () => new URL(ctx.testApp.config.publicUrl).origin;
const PUBLIC_URL = 'https://93.184.215.14/hooks';

let owner: TestAccount;
let outsider: TestAccount;
let agentId: string;

ctx.before(async () => {
  owner = await createAccount(ctx.db, ctx.testApp);
  outsider = await createAccount(ctx.db, ctx.testApp);
  agentId = await insertAgent(ctx.db.app, owner.user.tenant_id, 'pages');
});

const get = (account: TestAccount, url: string, cookie = '') =>
  ctx.testApp.app.inject({
    method: 'GET',
    url,
    headers: { cookie: [account.sessionCookie, cookie].filter(Boolean).join('; ') },
  });

const post = (account: TestAccount, url: string, fields: Record<string, string> = {}) =>
  ctx.testApp.app.inject({
    method: 'POST',
    url,
    headers: {
      cookie: account.sessionCookie,
      origin: ORIGIN(),
      'content-type': 'application/x-www-form-urlencoded',
    },
    payload: new URLSearchParams(fields).toString(),
  });

/** The flash cookie a 303 set, as a Cookie header part. */
function flashCookie(response: LightMyRequestResponse): string {
  const cookie = response.cookies.find((c) => c.name === 'enclave_flash_webhook-endpoint');
  assert.ok(cookie !== undefined, 'the secret travels in the flash cookie');
  return `${cookie.name}=${cookie.value}`;
}

const secretOn = (body: string) => body.match(/whsec_[A-Za-z0-9+/=]+/)?.[0];

async function create(fields: Record<string, string>): Promise<{ id: string; page: string }> {
  const created = await post(owner, '/dashboard/webhooks', {
    url: PUBLIC_URL,
    'event.thread.agent_replied': 'on',
    agent_id: agentId,
    ...fields,
  });
  assert.equal(created.statusCode, 303, created.body.slice(0, 500));
  const location = String(created.headers.location);
  const id = location.match(/^\/dashboard\/webhooks\/([0-9a-f-]{36})$/)?.[1];
  assert.ok(id !== undefined, location);
  const page = await get(owner, location, flashCookie(created));
  assert.equal(page.statusCode, 200);
  return { id, page: page.body };
}

async function signingRow(id: string): Promise<SigningRow> {
  const [row] = await ctx.db.superuser<SigningRow[]>`
    select id, secret_salt, previous_salt, previous_salt_until, sign_v1a from callback_endpoints where id = ${id}`;
  assert.ok(row !== undefined);
  return row;
}

/** The shown secret verifies, with the standardwebhooks package, what deliveries are signed with now. */
async function assertVerifies(id: string, shown: string): Promise<void> {
  const { secrets } = endpointSigningSecrets(
    callbackSecretDeriver(ctx.testApp.sessionKey),
    await signingRow(id),
  );
  const body = '{"type":"thread.agent_replied"}';
  const timestamp = Math.floor(Date.now() / 1000);
  const headers = {
    'webhook-id': 'msg_pages',
    'webhook-timestamp': String(timestamp),
    'webhook-signature': signatureHeader(
      secrets.map((secret) => signV1(secret, 'msg_pages', timestamp, body)),
    ),
  };
  assert.doesNotThrow(() => new Webhook(shown).verify(body, headers));
}

test('RLY-7: creating a webhook endpoint from the dashboard shows its whsec_ secret once, and it verifies the signatures deliveries carry', async () => {
  const agentPage = await get(owner, `/dashboard/agents/${agentId}`);
  assert.ok(agentPage.body.includes(`href="/dashboard/webhooks?agent_id=${agentId}#new-endpoint"`));
  const list = await get(owner, `/dashboard/webhooks?agent_id=${agentId}`);
  assert.equal(list.statusCode, 200);
  assert.ok(list.body.includes(`value="${agentId}" selected`), 'the agent page’s agent is preselected');
  assert.ok(list.body.includes('href="/dashboard/webhooks"'), 'the nav links the page');

  const { id, page } = await create({ description: 'ci <b>bot</b>', sign_v1a: 'on' });
  const secret = secretOn(page);
  assert.ok(secret !== undefined, 'the secret is on the page the form redirected to');
  assert.match(page, /whpk_/, 'the v1a public key is shown');
  assert.ok(page.includes('ci &lt;b&gt;bot&lt;/b&gt;'), 'the description is escaped');
  await assertVerifies(id, secret);

  const again = await get(owner, `/dashboard/webhooks/${id}`);
  assert.equal(again.statusCode, 200);
  assert.equal(secretOn(again.body), undefined, 'shown once only');
  const listed = await get(owner, '/dashboard/webhooks');
  assert.ok(listed.body.includes(`/dashboard/webhooks/${id}`));
  assert.ok(listed.body.includes('thread.agent_replied'));
});

test('RLY-7: the create form refuses a forbidden URL class, credentials in the URL, no events, and none or both subjects with 400 and the field’s message', async () => {
  const [connection] = await ctx.db.superuser<{ id: string }[]>`select gen_random_uuid() as id`;
  const cases: [string, Record<string, string>, string][] = [
    ['loopback', { url: 'https://127.0.0.1/hook' }, 'f-url-error'],
    ['metadata', { url: 'https://169.254.169.254/latest' }, 'f-url-error'],
    ['credentials', { url: 'https://user:pass@93.184.215.14/x' }, 'f-url-error'],
    ['not a URL', { url: 'not a url' }, 'f-url-error'],
    ['no events', { 'event.thread.agent_replied': '' }, 'f-events-error'],
    ['no subject', { agent_id: '' }, 'f-agent_id-error'],
    ['both subjects', { connection_id: connection?.id ?? '' }, 'f-agent_id-error'],
  ];
  for (const [name, fields, errorId] of cases) {
    const base = { url: PUBLIC_URL, 'event.thread.agent_replied': 'on', agent_id: agentId, ...fields };
    const sent = Object.fromEntries(Object.entries(base).filter(([, value]) => value !== ''));
    const response = await post(owner, '/dashboard/webhooks', sent);
    assert.equal(response.statusCode, 400, `${name}: ${response.body.slice(0, 300)}`);
    assert.ok(response.body.includes(`id="${errorId}"`), `${name}: the message is by its field`);
    assert.equal(secretOn(response.body), undefined);
  }
  const [{ count } = { count: -1 }] = await ctx.db.superuser<{ count: number }[]>`
    select count(*)::int as count from callback_endpoints where url like '%127.0.0.1%' or url like '%user:pass%'`;
  assert.equal(count, 0);
});

test('RLY-7: rotate asks first, then shows the new secret once while the old one still signs; enable turns a disabled endpoint on', async () => {
  const { id, page } = await create({});
  const first = secretOn(page);
  assert.ok(first !== undefined);

  const ask = await get(owner, `/dashboard/webhooks/${id}/rotate`);
  assert.equal(ask.statusCode, 200);
  assert.match(ask.body, new RegExp(`action="/dashboard/webhooks/${id}/rotate"`));
  assert.equal((await signingRow(id)).previous_salt, null, 'asking changes nothing');

  const rotated = await post(owner, `/dashboard/webhooks/${id}/rotate`);
  assert.equal(rotated.statusCode, 303);
  const shown = await get(owner, `/dashboard/webhooks/${id}`, flashCookie(rotated));
  const second = secretOn(shown.body);
  assert.ok(second !== undefined && second !== first, 'a new secret, shown');
  await assertVerifies(id, second);
  await assertVerifies(id, first);

  await ctx.db.superuser`
    update callback_endpoints set state = 'disabled', disabled_reason = '5 deliveries in a row failed',
      consecutive_failures = 5 where id = ${id}`;
  const disabled = await get(owner, `/dashboard/webhooks/${id}`);
  assert.ok(disabled.body.includes('5 deliveries in a row failed'), 'the reason is shown');
  assert.ok(disabled.body.includes(`action="/dashboard/webhooks/${id}/enable"`));
  const enabled = await post(owner, `/dashboard/webhooks/${id}/enable`);
  assert.equal(enabled.statusCode, 303);
  const [row] = await ctx.db.superuser<{ state: string; consecutive_failures: number }[]>`
    select state, consecutive_failures from callback_endpoints where id = ${id}`;
  assert.deepEqual(row, { state: 'enabled', consecutive_failures: 0 });
});

test('RLY-7: the endpoint page shows the delivery log and a delivery’s attempts, and replays one delivery or every failed one since a time', async () => {
  const { id } = await create({});
  const endpoint = { tenantId: owner.user.tenant_id, id, salt: Buffer.alloc(0) };
  const one = await callbackDeliveryRow(ctx.db, endpoint);
  const two = await callbackDeliveryRow(ctx.db, endpoint);
  await ctx.db.superuser`
    update callback_deliveries set state = 'failed', attempts = 7, last_status = 500,
      finished_at = '2026-06-01T12:00:00Z' where id in (${one.id}, ${two.id})`;
  await ctx.db.superuser`
    insert into callback_attempts (tenant_id, delivery_id, number, status, latency_ms, response_prefix)
    values (${owner.user.tenant_id}, ${one.id}, 1, 500, 12, '<b>boom</b>')`;

  const log = await get(owner, `/dashboard/webhooks/${id}?delivery=${one.id}`);
  assert.equal(log.statusCode, 200);
  assert.ok(log.body.includes(one.webhookId), 'the delivery’s attempts are shown');
  assert.ok(log.body.includes('&lt;b&gt;boom&lt;/b&gt;'));
  assert.ok(log.body.includes(`action="/dashboard/webhooks/${id}/deliveries/${one.id}/replay"`));

  const replayed = await post(owner, `/dashboard/webhooks/${id}/deliveries/${one.id}/replay`);
  assert.equal(replayed.statusCode, 303);
  assert.match(String(replayed.headers.location), /notice=replayed/);
  const again = await post(owner, `/dashboard/webhooks/${id}/deliveries/${one.id}/replay`);
  assert.match(String(again.headers.location), /notice=pending/, 'a pending delivery is not replayed twice');

  const bad = await post(owner, `/dashboard/webhooks/${id}/replay-failed`, { since: 'yesterday' });
  assert.equal(bad.statusCode, 400);
  assert.ok(bad.body.includes('id="f-since-error"'));
  const since = await post(owner, `/dashboard/webhooks/${id}/replay-failed`, { since: '2026-06-01T00:00' });
  assert.equal(since.statusCode, 303);
  assert.match(String(since.headers.location), /requeued=1$/, 'only the one still failed');
  const notice = await get(owner, String(since.headers.location));
  assert.ok(notice.body.includes('1 failed delivery was queued again.'));
  const states = await ctx.db.superuser<{ state: string }[]>`
    select state from callback_deliveries where endpoint_id = ${id}`;
  assert.deepEqual(
    states.map((row) => row.state),
    ['pending', 'pending'],
  );
});

test('RLY-7: delete asks first, then removes the endpoint; the change form checks the URL again', async () => {
  const { id } = await create({});
  const changed = await post(owner, `/dashboard/webhooks/${id}`, {
    url: 'https://10.0.0.1/x',
    'event.thread.closed': 'on',
  });
  assert.equal(changed.statusCode, 400);
  assert.ok(changed.body.includes('id="f-url-error"'));
  const saved = await post(owner, `/dashboard/webhooks/${id}`, {
    url: `${PUBLIC_URL}/v2`,
    'event.thread.closed': 'on',
    description: 'renamed',
  });
  assert.equal(saved.statusCode, 303);
  const [row] = await ctx.db.superuser<{ url: string; event_types: string[] }[]>`
    select url, event_types from callback_endpoints where id = ${id}`;
  assert.deepEqual(row, { url: `${PUBLIC_URL}/v2`, event_types: ['thread.closed'] });

  const ask = await get(owner, `/dashboard/webhooks/${id}/delete`);
  assert.equal(ask.statusCode, 200);
  assert.ok(ask.body.includes('This cannot be undone.'));
  const deleted = await post(owner, `/dashboard/webhooks/${id}/delete`);
  assert.equal(deleted.statusCode, 303);
  assert.equal((await get(owner, `/dashboard/webhooks/${id}`)).statusCode, 404);
});

test('TEN-1: another tenant’s webhook endpoint gets the same 404 page as an unknown or malformed id, on every page and action', async () => {
  const { id } = await create({});
  const unknown = '00000000-0000-4000-8000-000000000000';
  const pages = (target: string) => [
    () => get(outsider, `/dashboard/webhooks/${target}`),
    () => get(outsider, `/dashboard/webhooks/${target}/delete`),
    () => get(outsider, `/dashboard/webhooks/${target}/rotate`),
    () => post(outsider, `/dashboard/webhooks/${target}/rotate`),
    () => post(outsider, `/dashboard/webhooks/${target}/enable`),
    () => post(outsider, `/dashboard/webhooks/${target}/delete`),
    () => post(outsider, `/dashboard/webhooks/${target}/replay-failed`, { since: '2026-01-01T00:00' }),
    () => post(outsider, `/dashboard/webhooks/${target}`, { url: PUBLIC_URL, 'event.thread.closed': 'on' }),
  ];
  const reference = await get(outsider, `/dashboard/webhooks/${unknown}`);
  assert.equal(reference.statusCode, 404);
  for (const target of [id, unknown, 'not-a-uuid']) {
    for (const call of pages(target)) {
      const response = await call();
      assert.equal(response.statusCode, 404, `${target}: ${response.body.slice(0, 200)}`);
      assert.equal(response.body, reference.body);
    }
  }
  const listed = await get(outsider, '/dashboard/webhooks');
  assert.ok(!listed.body.includes(id));
  assert.ok(!listed.body.includes(agentId), 'another tenant’s agents are not offered');
  const [row] = await ctx.db.superuser<
    { state: string }[]
  >`select state from callback_endpoints where id = ${id}`;
  assert.equal(row?.state, 'enabled');
});

test('RLY-7: the endpoints list and the delivery log page with the list cursors, and refuse a link of another list with 400', async () => {
  const pager = await createAccount(ctx.db, ctx.testApp);
  const agents = await Promise.all(
    [1, 2, 3].map(() => insertAgent(ctx.db.app, pager.user.tenant_id, 'pager')),
  );
  await ctx.db.superuser`
    insert into callback_endpoints (tenant_id, agent_id, url, event_types, secret_salt)
    select ${pager.user.tenant_id}::uuid, (${agents}::uuid[])[1 + n % 3], ${`${PUBLIC_URL}/n`} || n,
      array['thread.closed'], decode(md5(random()::text), 'hex')
    from generate_series(1, ${DEFAULT_PAGE + 1}) n`;
  const first = await get(pager, '/dashboard/webhooks');
  assert.equal(first.statusCode, 200);
  const next = first.body.match(/href="(\/dashboard\/webhooks\?after=[^"]+)" rel="next"/)?.[1];
  assert.ok(next !== undefined, 'a next page link');
  const second = await get(pager, next.replaceAll('&amp;', '&'));
  assert.equal(second.statusCode, 200);
  assert.equal((second.body.match(/<tr><td><a href="\/dashboard\/webhooks\//g) ?? []).length, 1);

  const { id } = await create({});
  const cursor = new URL(next.replaceAll('&amp;', '&'), 'http://x').searchParams.get('after') ?? '';
  // Another user's list cursor, and one of another list, are not this page's.
  assert.equal((await get(owner, `/dashboard/webhooks?after=${encodeURIComponent(cursor)}`)).statusCode, 400);
  assert.equal(
    (await get(owner, `/dashboard/webhooks/${id}?after=${encodeURIComponent(cursor)}`)).statusCode,
    400,
  );
});
