import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import { createAccount, type TestAccount } from '../../test/helpers/accounts.ts';
import { useTestApp } from '../../test/helpers/app.ts';

// RLY-2 on the dashboard: the owner sees a request among the incoming
// connections and approves, denies or revokes it with plain POST forms (no
// JavaScript); revoking asks first. The requester asks with a form.

const ctx = useTestApp();
let owner: TestAccount;
let asker: TestAccount;

ctx.before(async () => {
  owner = await createAccount(ctx.db, ctx.testApp);
  asker = await createAccount(ctx.db, ctx.testApp);
});

const origin = () => new URL(ctx.testApp.config.publicUrl).origin;

function get(account: TestAccount, url: string) {
  return ctx.testApp.app.inject({ method: 'GET', url, headers: { cookie: account.sessionCookie } });
}

function post(account: TestAccount, url: string, form: Record<string, string> = {}) {
  return ctx.testApp.app.inject({
    method: 'POST',
    url,
    headers: {
      cookie: account.sessionCookie,
      origin: origin(),
      'content-type': 'application/x-www-form-urlencoded',
    },
    payload: new URLSearchParams(form).toString(),
  });
}

async function publishedAgent(account: TestAccount): Promise<{ id: string; handle: string }> {
  const handle = `page-${randomBytes(5).toString('hex')}`;
  const created = await ctx.testApp.app.inject({
    method: 'POST',
    url: '/api/v1/agents',
    headers: { authorization: `Bearer ${account.apiToken}` },
    payload: { name: handle, handle, template: 'echo', credentials: { echo_token: 'probe-token-1234' } },
  });
  assert.equal(created.statusCode, 201, created.body);
  const { id } = created.json<{ id: string }>();
  await ctx.db.superuser`update agents set card_published = true where id = ${id}::uuid`;
  return { id, handle };
}

const stateOf = async (handle: string) =>
  (
    await ctx.db.superuser<{ states: string[] }[]>`
      select array_agg(state order by side) as states from relay_connections where target_handle = ${handle}`
  )[0]?.states;

describe('connections dashboard', () => {
  test('RLY-2: a request made with the form appears in the owner’s incoming list; approve and deny are POST buttons, revoke asks first on its own page', async () => {
    const target = await publishedAgent(owner);
    const asked = await post(asker, '/dashboard/connections', {
      handle: target.handle,
      agent_id: '',
      message: 'Hello from the other tenant',
    });
    assert.equal(asked.statusCode, 303, asked.body);
    assert.equal(asked.headers.location, '/dashboard/connections?notice=requested');
    const outgoing = await get(asker, '/dashboard/connections?notice=requested');
    assert.match(outgoing.body, /Your request was sent/);
    assert.match(outgoing.body, new RegExp(target.handle));

    const [row] = await ctx.db.superuser<{ id: string }[]>`
      select id from relay_connections where target_handle = ${target.handle} and side = 'incoming'`;
    assert.ok(row !== undefined);
    const listing = await get(owner, '/dashboard/connections');
    assert.equal(listing.statusCode, 200);
    assert.match(listing.body, /<a href="\/dashboard\/connections">Connections<\/a>/);
    assert.match(listing.body, /Hello from the other tenant/);
    assert.match(
      listing.body,
      new RegExp(`<form method="post" action="/dashboard/connections/${row.id}/approve"`),
    );
    assert.match(
      listing.body,
      new RegExp(`<form method="post" action="/dashboard/connections/${row.id}/deny"`),
    );

    const approved = await post(owner, `/dashboard/connections/${row.id}/approve`);
    assert.equal(approved.statusCode, 303, approved.body);
    assert.deepEqual(await stateOf(target.handle), ['approved', 'approved']);
    // Twice: the page says why, and nothing changes.
    const again = await post(owner, `/dashboard/connections/${row.id}/approve`);
    assert.equal(again.statusCode, 409);
    assert.match(again.body, /cannot be approved now/);

    const confirm = await get(owner, `/dashboard/connections/${row.id}/revoke`);
    assert.equal(confirm.statusCode, 200);
    assert.match(confirm.body, /relay token stops working at once/);
    assert.match(
      confirm.body,
      new RegExp(`<form method="post" action="/dashboard/connections/${row.id}/revoke"`),
    );
    assert.deepEqual(await stateOf(target.handle), ['approved', 'approved']);
    const revoked = await post(owner, `/dashboard/connections/${row.id}/revoke`);
    assert.equal(revoked.statusCode, 303);
    assert.deepEqual(await stateOf(target.handle), ['revoked', 'revoked']);

    // The requester's side may not revoke or approve it: the page says so.
    const wrongSide = await get(asker, `/dashboard/connections/${row.id}/revoke`);
    assert.equal(wrongSide.statusCode, 403);
    assert.match(wrongSide.body, /Only the target agent(&#39;|')s side/);
    assert.equal((await post(asker, `/dashboard/connections/${row.id}/approve`)).statusCode, 403);
  });

  test('RLY-2: the form names the field at fault, and an unknown handle is the same 404 answer as on the API, in words', async () => {
    const bad = await post(asker, '/dashboard/connections', {
      handle: 'Not A Handle',
      agent_id: '',
      message: 'hi',
    });
    assert.equal(bad.statusCode, 400);
    assert.match(bad.body, /id="f-handle-error"/);
    const empty = await post(asker, '/dashboard/connections', {
      handle: 'nobody-here',
      agent_id: '',
      message: '',
    });
    assert.equal(empty.statusCode, 400);
    assert.match(empty.body, /Message is required/);
    const unknown = await post(asker, '/dashboard/connections', {
      handle: `nobody-${randomBytes(4).toString('hex')}`,
      agent_id: '',
      message: 'hi',
    });
    assert.equal(unknown.statusCode, 404);
    assert.match(unknown.body, /no such agent/);
  });

  test('RLY-2: a list page of one direction pages with the API’s cursor and refuses another list’s', async () => {
    const incoming = await get(owner, '/dashboard/connections/incoming');
    assert.equal(incoming.statusCode, 200);
    const cursor = (
      await ctx.testApp.app.inject({
        method: 'GET',
        url: '/api/v1/connections?direction=outgoing&limit=1',
        headers: { authorization: `Bearer ${asker.apiToken}` },
      })
    ).json<{ next_after: string | null }>().next_after;
    const foreign = await get(
      owner,
      `/dashboard/connections/incoming?after=${encodeURIComponent(cursor ?? 'x')}`,
    );
    assert.equal(foreign.statusCode, 400);
    assert.match(foreign.body, /No such page/);
  });
});
