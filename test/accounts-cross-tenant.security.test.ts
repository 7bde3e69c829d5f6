import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, test } from 'node:test';
import { createAccount, loginAgain, mintInvite, type TestAccount } from './helpers/accounts.ts';
import { useTestApp } from './helpers/app.ts';

// Attack: a signed-in user of tenant B names the ids of tenant A's API
// tokens, sessions or invites — to revoke them, or to learn from the answer
// that they exist.

const ctx = useTestApp();
let alice: TestAccount;
let aliceSecond: { sessionId: string; sessionCookie: string };
let aliceInvite: { id: string; token: string };
let mallory: TestAccount;
let malloryOperator: TestAccount;

ctx.before(async () => {
  alice = await createAccount(ctx.db, ctx.testApp);
  aliceSecond = await loginAgain(ctx.db, ctx.testApp, alice);
  aliceInvite = await mintInvite(ctx.db, {
    kind: 'member',
    email: 'bob@example.test',
    tenantId: alice.user.tenant_id,
  });
  mallory = await createAccount(ctx.db, ctx.testApp);
  // An operator of yet another tenant: operators manage signup invites, not tenants' member invites.
  malloryOperator = await createAccount(ctx.db, ctx.testApp, { kind: 'operator' });
});

function as(account: TestAccount, method: 'GET' | 'DELETE', url: string) {
  return ctx.testApp.app.inject({ method, url, headers: { authorization: `Bearer ${account.apiToken}` } });
}

async function aliceRows() {
  return ctx.db.superuser`
    select 'token' as kind, id, revoked_at from api_tokens where user_id = ${alice.user.id}::uuid
    union all select 'session', id, revoked_at from sessions where user_id = ${alice.user.id}::uuid
    union all select 'invite', id, revoked_at from invites where tenant_id = ${alice.user.tenant_id}::uuid
    order by 1, 2`;
}

function outcome(response: { statusCode: number; json: <T>() => T }) {
  return { status: response.statusCode, code: response.json<{ code: string }>().code };
}

describe("another tenant's account resources", () => {
  const targets = () =>
    [
      ['token', '/api/v1/tokens', alice.apiTokenId],
      ['session', '/api/v1/sessions', aliceSecond.sessionId],
      ['invite', '/api/v1/invites', aliceInvite.id],
    ] as const;

  test("TEN-4: revoking tenant A's token, session or invite from tenant B is a 404 exactly like a random id, and A's rows are unchanged", async () => {
    const before = await aliceRows();
    for (const attacker of [mallory, malloryOperator]) {
      for (const [kind, base, id] of targets()) {
        const foreign = await as(attacker, 'DELETE', `${base}/${id}`);
        const random = await as(attacker, 'DELETE', `${base}/${randomUUID()}`);
        assert.deepEqual(outcome(foreign), { status: 404, code: 'not_found' }, kind);
        assert.deepEqual(outcome(foreign), outcome(random), `${kind}: foreign and random ids look the same`);
        // Same body shape too, apart from the request id.
        const strip = (body: string) => body.replace(/"request_id":"[^"]+"/, '');
        assert.equal(strip(foreign.body), strip(random.body), kind);
      }
    }
    assert.deepEqual(await aliceRows(), before);
    // And A's things still work.
    assert.equal((await as(alice, 'GET', '/api/v1/me')).statusCode, 200);
    const session = await ctx.testApp.app.inject({
      method: 'GET',
      url: '/api/v1/me',
      headers: { cookie: aliceSecond.sessionCookie },
    });
    assert.equal(session.statusCode, 200);
  });

  test("TEN-4: tenant B's lists contain none of tenant A's rows", async () => {
    const aliceIds = [alice.apiTokenId, alice.sessionId, aliceSecond.sessionId, aliceInvite.id];
    for (const attacker of [mallory, malloryOperator]) {
      for (const url of ['/api/v1/tokens', '/api/v1/sessions', '/api/v1/invites']) {
        const response = await as(attacker, 'GET', url);
        assert.equal(response.statusCode, 200, url);
        for (const id of aliceIds) assert.ok(!response.body.includes(id), `${url} leaks ${id}`);
        assert.ok(!response.body.includes(alice.user.id));
        assert.ok(!response.body.includes(alice.user.tenant_id));
      }
    }
  });

  test("TEN-4: tenant A's own user sees those rows (so the checks above are not vacuous)", async () => {
    const list = await as(alice, 'GET', '/api/v1/invites');
    assert.ok(
      list.body.includes(aliceInvite.id),
      'the owner sees the tenant invite (the test above is not vacuous)',
    );
    const tokens = await as(alice, 'GET', '/api/v1/tokens');
    assert.ok(tokens.body.includes(alice.apiTokenId));
    const sessions = await as(alice, 'GET', '/api/v1/sessions');
    assert.ok(sessions.body.includes(aliceSecond.sessionId));
  });
});
