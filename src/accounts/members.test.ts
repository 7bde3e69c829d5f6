import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createAccount, type TestAccount } from '../../test/helpers/accounts.ts';
import { useTestApp } from '../../test/helpers/app.ts';
import type { Role } from './roles.ts';

// ACC-12: the members API and page. Removing a member ends their sessions
// and API tokens in the same transaction; a tenant always keeps an owner;
// only an owner touches an owner; members see an agent's address, output and
// egress only on agents they created.

const ctx = useTestApp();
const origin = () => new URL(ctx.testApp.config.publicUrl).origin;

let owner: TestAccount;
let admin: TestAccount;

async function setRole(account: TestAccount, role: Role): Promise<void> {
  await ctx.db.superuser`update users set role = ${role} where id = ${account.user.id}::uuid`;
}

ctx.before(async () => {
  owner = await createAccount(ctx.db, ctx.testApp);
  admin = await createAccount(ctx.db, ctx.testApp, { kind: 'member', tenantOf: owner });
  await setRole(admin, 'admin');
});

const member = () => createAccount(ctx.db, ctx.testApp, { kind: 'member', tenantOf: owner });

function api(as: TestAccount, method: 'GET' | 'PATCH' | 'DELETE' | 'POST', url: string, payload?: object) {
  return ctx.testApp.app.inject({
    method,
    url,
    headers: { authorization: `Bearer ${as.apiToken}` },
    ...(payload === undefined ? {} : { payload }),
  });
}

async function auditActions(action: string): Promise<Record<string, unknown>[]> {
  const rows = await ctx.db.superuser<{ data: Record<string, unknown> }[]>`
    select data from audit_events where tenant_id = ${owner.user.tenant_id}::uuid and action = ${action}
    order by seq`;
  return rows.map((row) => row.data);
}

describe('members', () => {
  test('ACC-12: removing a member ends their sessions and API tokens at once, and is audited', async () => {
    const leaving = await member();
    assert.equal((await api(leaving, 'GET', '/api/v1/me')).statusCode, 200);
    const removed = await api(admin, 'DELETE', `/api/v1/members/${leaving.user.id}`);
    assert.equal(removed.statusCode, 204, removed.body);
    assert.equal((await api(leaving, 'GET', '/api/v1/me')).statusCode, 401, 'the API token no longer works');
    const page = await ctx.testApp.app.inject({
      method: 'GET',
      url: '/api/v1/me',
      headers: { cookie: leaving.sessionCookie },
    });
    assert.equal(page.statusCode, 401, 'the session no longer works');
    const [sessions] = await ctx.db.superuser<{ count: number }[]>`
      select count(*)::int as count from sessions where user_id = ${leaving.user.id}::uuid`;
    assert.equal(sessions?.count, 0);
    const event = (await auditActions('member.removed')).at(-1);
    assert.deepEqual(event, {
      user_id: leaving.user.id,
      username: leaving.user.username,
      role: 'member',
      sessions_revoked: 1,
      tokens_revoked: 1,
    });
    const list = await api(owner, 'GET', '/api/v1/members');
    assert.ok(!list.body.includes(leaving.user.id), 'no longer listed');
  });

  test('ACC-12: a role change is audited with the old and new role, and takes effect on the next request', async () => {
    const rising = await member();
    assert.equal((await api(rising, 'GET', '/api/v1/audit/head')).statusCode, 403);
    const changed = await api(owner, 'PATCH', `/api/v1/members/${rising.user.id}`, { role: 'admin' });
    assert.equal(changed.statusCode, 200, changed.body);
    assert.equal(changed.json<{ role: string }>().role, 'admin');
    assert.equal((await api(rising, 'GET', '/api/v1/audit/head')).statusCode, 200);
    assert.deepEqual((await auditActions('member.role_changed')).at(-1), {
      user_id: rising.user.id,
      from: 'member',
      to: 'admin',
    });
  });

  test('ACC-12: only an owner changes or removes an owner, or makes one', async () => {
    const target = await member();
    for (const [method, url, body] of [
      ['PATCH', `/api/v1/members/${owner.user.id}`, { role: 'member' }],
      ['DELETE', `/api/v1/members/${owner.user.id}`, undefined],
      ['PATCH', `/api/v1/members/${target.user.id}`, { role: 'owner' }],
    ] as const) {
      const response = await api(admin, method, url, body);
      assert.equal(response.statusCode, 403, `${method} ${url}`);
      assert.equal(response.json<{ code: string }>().code, 'forbidden');
    }
    const made = await api(owner, 'PATCH', `/api/v1/members/${target.user.id}`, { role: 'owner' });
    assert.equal(made.statusCode, 200);
    const removed = await api(owner, 'DELETE', `/api/v1/members/${target.user.id}`);
    assert.equal(removed.statusCode, 204, 'an owner removes another owner');
  });

  test('ACC-12: the last owner can neither be demoted nor removed, by themselves or anyone (409 last_owner)', async () => {
    for (const [method, payload] of [
      ['PATCH', { role: 'admin' }],
      ['DELETE', undefined],
    ] as const) {
      const response = await api(owner, method, `/api/v1/members/${owner.user.id}`, payload);
      assert.equal(response.statusCode, 409, `${method}: ${response.body}`);
      assert.equal(response.json<{ code: string }>().code, 'last_owner');
    }
    const [row] = await ctx.db.superuser<{ role: string }[]>`
      select role from users where id = ${owner.user.id}::uuid`;
    assert.equal(row?.role, 'owner');
  });

  test('ACC-12: two owners demoting each other at once leave one owner', async () => {
    const second = await member();
    await setRole(second, 'owner');
    const [a, b] = await Promise.all([
      api(owner, 'PATCH', `/api/v1/members/${second.user.id}`, { role: 'member' }),
      api(second, 'PATCH', `/api/v1/members/${owner.user.id}`, { role: 'member' }),
    ]);
    const statuses = [a.statusCode, b.statusCode].sort();
    assert.ok(
      // Either one demotion wins and the other finds no other owner (409), or the second
      // request's principal was already demoted and is refused (403).
      JSON.stringify(statuses) === '[200,409]' || JSON.stringify(statuses) === '[200,403]',
      `statuses ${statuses}`,
    );
    const owners = await ctx.db.superuser<{ id: string }[]>`
      select id from users where tenant_id = ${owner.user.tenant_id}::uuid and role = 'owner'`;
    assert.equal(owners.length, 1);
    // Put the suite's owner back for the tests after this one.
    await setRole(owner, 'owner');
    await setRole(second, 'member');
  });

  test('a role outside the table, or a body with more, is a 400 naming the field', async () => {
    const target = await member();
    for (const [payload, field] of [
      [{ role: 'boss' }, 'role'],
      [{ role: 'admin', extra: 1 }, 'extra'],
      [{}, 'role'],
    ] as const) {
      const response = await api(owner, 'PATCH', `/api/v1/members/${target.user.id}`, payload);
      assert.equal(response.statusCode, 400, JSON.stringify(payload));
      const problem = response.json<{ code: string; errors?: { field: string }[] }>();
      assert.equal(problem.code, 'validation_failed');
      assert.ok(
        JSON.stringify(problem.errors).includes(field),
        `${JSON.stringify(problem.errors)} names ${field}`,
      );
    }
  });

  test('ACC-12: the members page changes a role and removes a member after a confirmation page; a member sees a read-only list', async () => {
    const target = await member();
    const page = (as: TestAccount, method: 'GET' | 'POST', url: string, body = '') =>
      ctx.testApp.app.inject({
        method,
        url,
        headers: {
          cookie: as.sessionCookie,
          origin: origin(),
          ...(method === 'POST' ? { 'content-type': 'application/x-www-form-urlencoded' } : {}),
        },
        ...(method === 'POST' ? { payload: body } : {}),
      });
    const list = await page(admin, 'GET', '/dashboard/members');
    assert.equal(list.statusCode, 200);
    assert.ok(list.body.includes(`/dashboard/members/${target.user.id}/role`), 'a role form per member');
    assert.ok(
      !list.body.includes(`/dashboard/members/${owner.user.id}/role`),
      'no form for the owner (admin)',
    );
    const changed = await page(admin, 'POST', `/dashboard/members/${target.user.id}/role`, 'role=admin');
    assert.equal(changed.statusCode, 303);
    assert.equal(changed.headers.location, '/dashboard/members?notice=role-changed');
    const bad = await page(admin, 'POST', `/dashboard/members/${target.user.id}/role`, 'role=owner');
    assert.equal(bad.statusCode, 403);
    assert.ok(bad.body.includes('Not allowed'));
    const confirm = await page(owner, 'GET', `/dashboard/members/${target.user.id}/remove`);
    assert.equal(confirm.statusCode, 200);
    assert.ok(confirm.body.includes('Remove member'));
    const removed = await page(owner, 'POST', `/dashboard/members/${target.user.id}/remove`);
    assert.equal(removed.statusCode, 303);
    assert.equal(removed.headers.location, '/dashboard/members?notice=member-removed');
    const plain = await member();
    const readOnly = await page(plain, 'GET', '/dashboard/members');
    assert.equal(readOnly.statusCode, 200);
    assert.ok(readOnly.body.includes(owner.user.username));
    assert.ok(!readOnly.body.includes('/role"'), 'no role forms for a member');
    // The frame offers only what the role may open: no audit log or invites for a member.
    const home = await page(plain, 'GET', '/dashboard');
    assert.ok(
      !home.body.includes('href="/dashboard/audit"') && !home.body.includes('/dashboard/settings/invites'),
    );
    assert.ok(home.body.includes('href="/dashboard/members"'));
    assert.ok((await page(admin, 'GET', '/dashboard')).body.includes('href="/dashboard/audit"'));
    const last = await page(owner, 'POST', `/dashboard/members/${owner.user.id}/remove`);
    assert.equal(last.statusCode, 409);
    assert.ok(last.body.includes('only owner'), 'the page says why');
  });

  test("AGT-3, ACC-12: a member sees the state of a colleague's agent but not its address, output or egress, and no control it may not use", async () => {
    const creator = await member();
    const reader = await member();
    const created = await api(creator, 'POST', '/api/v1/agents', {
      name: 'addressed',
      handle: `addressed-${creator.user.id.slice(0, 8)}`,
      template: 'echo',
    });
    assert.equal(created.statusCode, 201, created.body);
    const id = created.json<{ id: string }>().id;
    const started = await api(creator, 'POST', `/api/v1/agents/${id}/start`);
    assert.equal(started.statusCode, 202);
    const url = started.json<{ url: string | null }>().url;
    assert.ok(url !== null, 'the creator gets the address');
    for (const as of [creator, admin, owner]) {
      const view = await api(as, 'GET', `/api/v1/agents/${id}/instance`);
      assert.equal(view.json<{ url: string | null }>().url, url);
    }
    const view = await api(reader, 'GET', `/api/v1/agents/${id}/instance`);
    assert.equal(view.statusCode, 200);
    assert.equal(view.json<{ url: string | null }>().url, null);
    const subdomain = new URL(url).hostname.split('.')[0] ?? '';
    assert.ok(!view.body.includes(subdomain));
    for (const path of ['logs', 'egress']) {
      assert.equal((await api(reader, 'GET', `/api/v1/agents/${id}/${path}`)).statusCode, 403, path);
    }
    const agentPage = await ctx.testApp.app.inject({
      method: 'GET',
      url: `/dashboard/agents/${id}`,
      headers: { cookie: reader.sessionCookie },
    });
    assert.equal(agentPage.statusCode, 200);
    assert.ok(!agentPage.body.includes(subdomain), 'the page hides the address too');
    // No control the reader may not use is drawn: each says who may instead.
    for (const control of [
      `action="/dashboard/agents/${id}/start"`,
      `action="/dashboard/agents/${id}/stop"`,
      `action="/dashboard/agents/${id}/restart"`,
      `action="/dashboard/agents/${id}"`,
      `action="/dashboard/agents/${id}/credentials"`,
      `href="/dashboard/agents/${id}/delete"`,
    ]) {
      assert.ok(!agentPage.body.includes(control), `a member sees ${control}`);
    }
    assert.match(agentPage.body, /Its creator, the tenant’s admins and owners start and stop it\./);
    const ownPage = await ctx.testApp.app.inject({
      method: 'GET',
      url: `/dashboard/agents/${id}`,
      headers: { cookie: creator.sessionCookie },
    });
    assert.ok(ownPage.body.includes(`action="/dashboard/agents/${id}/stop"`), 'the creator has the controls');
    assert.ok(ownPage.body.includes(`href="/dashboard/agents/${id}/delete"`));
  });
});
