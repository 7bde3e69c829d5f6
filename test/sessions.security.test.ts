import assert from 'node:assert/strict';
import { createHash, randomUUID } from 'node:crypto';
import { describe, test } from 'node:test';
import { SESSION_COOKIE } from '../src/accounts/sessions.ts';
import {
  createAccount,
  loginAgain,
  mintInvite,
  sessionCookieFor,
  sessionOf,
  testAccountsService,
  testClient,
  uniqueName,
} from './helpers/accounts.ts';
import { buildTestApp, type TestApp, useTestApp } from './helpers/app.ts';
import { setCookies } from './helpers/pages.ts';

// Attack: a stolen, forged, fixed or outlived session cookie keeps acting for
// its user — read by script, sent over plain http, tampered with, replayed
// after sign-out or expiry, or planted before the victim signs in.

const ctx = useTestApp();
let production: TestApp;
const PRODUCTION_URL = 'https://enclave.example';

ctx.before(async () => {
  production = await buildTestApp(ctx.db, {
    ENCLAVE_ENV: 'production',
    ENCLAVE_PUBLIC_URL: PRODUCTION_URL,
    ENCLAVE_SMTP_URL: 'smtp://mail.example:587',
  });
});
ctx.after(() => production.app.close());

function me(app: TestApp, cookie: string | undefined) {
  return app.app.inject({
    method: 'GET',
    url: '/api/v1/me',
    headers: cookie === undefined ? {} : { cookie },
  });
}

function sessionSetCookie(response: { headers: Record<string, unknown> }): string {
  const found = setCookies(response).find((cookie) => cookie.startsWith(`${SESSION_COOKIE}=`));
  assert.ok(found !== undefined, `expected a Set-Cookie for ${SESSION_COOKIE}`);
  return found;
}

function attributes(setCookie: string): Map<string, string> {
  const map = new Map<string, string>();
  for (const part of setCookie.split(';').slice(1)) {
    const [name = '', ...value] = part.trim().split('=');
    map.set(name.toLowerCase(), value.join('='));
  }
  return map;
}

function assertSessionCookieFlags(setCookie: string, secure: boolean): void {
  const attrs = attributes(setCookie);
  assert.ok(attrs.has('httponly'), `HttpOnly: ${setCookie}`);
  assert.equal(attrs.get('samesite')?.toLowerCase(), 'lax', setCookie);
  assert.equal(attrs.get('path'), '/', setCookie);
  assert.equal(attrs.get('max-age'), '1800', setCookie);
  assert.equal(attrs.has('secure'), secure, `Secure ${secure ? 'expected' : 'not expected'}: ${setCookie}`);
}

async function sessionRow(id: string) {
  const [row] = await ctx.db.superuser<
    { token_hash: string; expires_at: Date; last_seen_at: Date; revoked_at: Date | null }[]
  >`select token_hash, expires_at, last_seen_at, revoked_at from sessions where id = ${id}::uuid`;
  assert.ok(row !== undefined, `session ${id} exists`);
  return row;
}

function hasPage(app: TestApp, url: string): boolean {
  return app.app.hasRoute({ method: 'POST', url });
}

describe('session cookies', () => {
  test('ACC-3: the session cookie is HttpOnly, SameSite=Lax, Path=/, Max-Age=1800 and not Secure in development', async () => {
    const account = await createAccount(ctx.db, ctx.testApp);
    const response = await me(ctx.testApp, account.sessionCookie);
    assert.equal(response.statusCode, 200);
    assertSessionCookieFlags(sessionSetCookie(response), false);
  });

  test('ACC-3: with ENCLAVE_ENV=production the session cookie is also Secure', async () => {
    const account = await createAccount(ctx.db, production);
    const response = await me(production, account.sessionCookie);
    assert.equal(response.statusCode, 200);
    assertSessionCookieFlags(sessionSetCookie(response), true);
  });

  test('ACC-3: signing up and signing in through the pages set the same cookie flags', async (t) => {
    for (const app of [ctx.testApp, production]) {
      if (!hasPage(app, '/signup') || !hasPage(app, '/login')) {
        t.skip('the /signup and /login pages are not registered in this build');
        return;
      }
    }
    for (const [app, secure] of [
      [ctx.testApp, false],
      [production, true],
    ] as const) {
      const username = uniqueName();
      const email = `${username}@example.test`;
      const password = 'a long enough password';
      const invite = await mintInvite(ctx.db, { kind: 'tenant', email });
      const signup = await app.app.inject({
        method: 'POST',
        url: '/signup',
        headers: { origin: app.config.publicUrl, 'content-type': 'application/x-www-form-urlencoded' },
        payload: new URLSearchParams({ invite: invite.token, email, username, password }).toString(),
        remoteAddress: testClient().ip,
      });
      assert.equal(signup.statusCode, 303, signup.body);
      assertSessionCookieFlags(sessionSetCookie(signup), secure);
      const login = await app.app.inject({
        method: 'POST',
        url: '/login',
        headers: { origin: app.config.publicUrl, 'content-type': 'application/x-www-form-urlencoded' },
        payload: new URLSearchParams({ login: username, password }).toString(),
        remoteAddress: testClient().ip,
      });
      assert.equal(login.statusCode, 303, login.body);
      assertSessionCookieFlags(sessionSetCookie(login), secure);
    }
  });

  test('ACC-3: only SHA-256 of the session token is stored', async () => {
    const account = await createAccount(ctx.db, ctx.testApp);
    const row = await sessionRow(account.sessionId);
    assert.equal(row.token_hash, createHash('sha256').update(account.sessionToken).digest('hex'));
    const [dump] = await ctx.db.superuser<{ row: string }[]>`
      select row_to_json(s)::text as row from sessions s where id = ${account.sessionId}::uuid`;
    assert.ok(!dump?.row.includes(account.sessionToken), 'the token itself is in no column');
  });

  test('ACC-3: a cookie with a tampered signature is anonymous: 401, and the cookie is cleared', async () => {
    const account = await createAccount(ctx.db, ctx.testApp);
    const signed = ctx.testApp.app.signCookie(account.sessionToken);
    const tampered = [
      // One character of the signature changed.
      `${SESSION_COOKIE}=${encodeURIComponent(`${signed.slice(0, -1)}${signed.endsWith('A') ? 'B' : 'A'}`)}`,
      // The signature of another value.
      `${SESSION_COOKIE}=${encodeURIComponent(`${account.sessionToken}.${ctx.testApp.app.signCookie('other').split('.')[1]}`)}`,
      // The bare token, unsigned.
      `${SESSION_COOKIE}=${account.sessionToken}`,
      // Signed by a different key (another installation's cookie).
      sessionCookieFor(production.app, account.sessionToken),
    ];
    for (const cookie of tampered) {
      const response = await me(ctx.testApp, cookie);
      assert.equal(response.statusCode, 401, cookie);
      assert.equal(response.json<{ code: string }>().code, 'unauthenticated');
      const cleared = sessionSetCookie(response);
      assert.match(cleared, new RegExp(`^${SESSION_COOKIE}=;`), 'the cookie value is emptied');
      const attrs = attributes(cleared);
      assert.ok(
        attrs.get('max-age') === '0' || new Date(attrs.get('expires') ?? '').getTime() <= Date.now(),
        `the cookie is expired: ${cleared}`,
      );
    }
    // The genuine cookie still works.
    assert.equal((await me(ctx.testApp, account.sessionCookie)).statusCode, 200);
  });
});

describe('revocation', () => {
  test('ACC-3: a revoked session fails on its very next request', async () => {
    const account = await createAccount(ctx.db, ctx.testApp);
    const other = await loginAgain(ctx.db, ctx.testApp, account);
    assert.equal((await me(ctx.testApp, other.sessionCookie)).statusCode, 200);
    const revoke = await ctx.testApp.app.inject({
      method: 'DELETE',
      url: `/api/v1/sessions/${other.sessionId}`,
      headers: { cookie: account.sessionCookie, origin: ctx.testApp.config.publicUrl },
    });
    assert.equal(revoke.statusCode, 204, revoke.body);
    assert.ok((await sessionRow(other.sessionId)).revoked_at !== null);
    assert.equal((await me(ctx.testApp, other.sessionCookie)).statusCode, 401);
    assert.equal(
      (await me(ctx.testApp, account.sessionCookie)).statusCode,
      200,
      'the revoking session lives on',
    );
  });

  test('ACC-3: a session can revoke itself, and its cookie is dead at once', async () => {
    const account = await createAccount(ctx.db, ctx.testApp);
    const revoke = await ctx.testApp.app.inject({
      method: 'DELETE',
      url: `/api/v1/sessions/${account.sessionId}`,
      headers: { cookie: account.sessionCookie, origin: ctx.testApp.config.publicUrl },
    });
    assert.equal(revoke.statusCode, 204);
    assert.equal((await me(ctx.testApp, account.sessionCookie)).statusCode, 401);
  });

  test("ACC-3: revoking a session that does not exist, or another user's, answers 404 and changes nothing", async () => {
    const account = await createAccount(ctx.db, ctx.testApp);
    const colleague = await createAccount(ctx.db, ctx.testApp, { kind: 'member', tenantOf: account });
    for (const id of [randomUUID(), colleague.sessionId]) {
      const response = await ctx.testApp.app.inject({
        method: 'DELETE',
        url: `/api/v1/sessions/${id}`,
        headers: { cookie: account.sessionCookie, origin: ctx.testApp.config.publicUrl },
      });
      assert.equal(response.statusCode, 404, id);
      assert.equal(response.json<{ code: string }>().code, 'not_found');
    }
    assert.equal((await sessionRow(colleague.sessionId)).revoked_at, null);
    assert.equal((await me(ctx.testApp, colleague.sessionCookie)).statusCode, 200);
  });

  test('ACC-3: revoking an already revoked session answers 404 (revocation is truthful)', async () => {
    const account = await createAccount(ctx.db, ctx.testApp);
    const other = await loginAgain(ctx.db, ctx.testApp, account);
    const revoke = () =>
      ctx.testApp.app.inject({
        method: 'DELETE',
        url: `/api/v1/sessions/${other.sessionId}`,
        headers: { cookie: account.sessionCookie, origin: ctx.testApp.config.publicUrl },
      });
    assert.equal((await revoke()).statusCode, 204);
    assert.equal((await revoke()).statusCode, 404);
  });

  test("ACC-3: sign out everywhere ends every session of the user, and only the user's", async () => {
    const account = await createAccount(ctx.db, ctx.testApp);
    const second = await loginAgain(ctx.db, ctx.testApp, account);
    const third = await loginAgain(ctx.db, ctx.testApp, account);
    const bystander = await createAccount(ctx.db, ctx.testApp, { kind: 'member', tenantOf: account });
    const response = await ctx.testApp.app.inject({
      method: 'DELETE',
      url: '/api/v1/sessions',
      headers: { cookie: account.sessionCookie, origin: ctx.testApp.config.publicUrl },
    });
    assert.equal(response.statusCode, 200, response.body);
    assert.deepEqual(response.json(), { revoked: 3 });
    for (const cookie of [account.sessionCookie, second.sessionCookie, third.sessionCookie]) {
      assert.equal((await me(ctx.testApp, cookie)).statusCode, 401);
    }
    assert.equal((await me(ctx.testApp, bystander.sessionCookie)).statusCode, 200);
  });

  test('ACC-3: the session list shows live sessions only, marking the current one', async () => {
    const account = await createAccount(ctx.db, ctx.testApp);
    const other = await loginAgain(ctx.db, ctx.testApp, account);
    const gone = await loginAgain(ctx.db, ctx.testApp, account);
    await testAccountsService(ctx.db, ctx.testApp).revokeSession(account.principal, gone.sessionId);
    const response = await ctx.testApp.app.inject({
      method: 'GET',
      url: '/api/v1/sessions',
      headers: { cookie: account.sessionCookie },
    });
    assert.equal(response.statusCode, 200);
    const sessions = response.json<{ sessions: { id: string; current: boolean }[] }>().sessions;
    assert.deepEqual(
      sessions.map((s) => [s.id, s.current]).sort(),
      [
        [account.sessionId, true],
        [other.sessionId, false],
      ].sort(),
    );
    assert.ok(!response.body.includes(account.sessionToken));
  });
});

describe('lifetime', () => {
  test('ACC-3: an expired session is refused (401) even though its cookie is validly signed', async () => {
    const account = await createAccount(ctx.db, ctx.testApp);
    await ctx.db.superuser`
      update sessions set expires_at = now() - interval '1 second' where id = ${account.sessionId}::uuid`;
    const response = await me(ctx.testApp, account.sessionCookie);
    assert.equal(response.statusCode, 401);
    assert.equal(response.json<{ code: string }>().code, 'unauthenticated');
  });

  test('ACC-3: a session stays alive 30 minutes past its last use (sliding expiry)', async () => {
    const account = await createAccount(ctx.db, ctx.testApp);
    await ctx.db.superuser`
      update sessions set last_seen_at = now() - interval '5 minutes', expires_at = now() + interval '25 minutes'
      where id = ${account.sessionId}::uuid`;
    const before = await sessionRow(account.sessionId);
    const [{ now } = { now: new Date(0) }] = await ctx.db.superuser<{ now: Date }[]>`select now() as now`;
    assert.equal((await me(ctx.testApp, account.sessionCookie)).statusCode, 200);
    const afterUse = await sessionRow(account.sessionId);
    assert.ok(afterUse.expires_at > before.expires_at, 'expires_at moved forward');
    assert.ok(afterUse.last_seen_at > before.last_seen_at, 'last_seen_at recorded');
    // 30 minutes from the request (which ran after `now` was read).
    assert.ok(afterUse.expires_at.getTime() >= now.getTime() + 30 * 60_000);
  });

  test('ACC-3: within a minute of the last write, a request does not rewrite the expiry', async () => {
    const account = await createAccount(ctx.db, ctx.testApp);
    const before = await sessionRow(account.sessionId);
    assert.equal((await me(ctx.testApp, account.sessionCookie)).statusCode, 200);
    const afterUse = await sessionRow(account.sessionId);
    assert.equal(afterUse.expires_at.getTime(), before.expires_at.getTime());
  });
});

describe('fixation', () => {
  test('ACC-3: signing in with a session cookie already set revokes that session and starts a new one', async () => {
    const account = await createAccount(ctx.db, ctx.testApp);
    const planted = await loginAgain(ctx.db, ctx.testApp, account);
    const session = sessionOf(
      await testAccountsService(ctx.db, ctx.testApp).login(
        {
          login: account.user.username,
          password: account.password,
          previousSessionToken: planted.sessionToken,
        },
        testClient(),
      ),
    );
    assert.notEqual(session.id, planted.sessionId);
    assert.notEqual(session.token, planted.sessionToken);
    assert.ok((await sessionRow(planted.sessionId)).revoked_at !== null, 'the presented session is revoked');
    assert.equal((await me(ctx.testApp, planted.sessionCookie)).statusCode, 401);
    assert.equal((await me(ctx.testApp, sessionCookieFor(ctx.testApp.app, session.token))).statusCode, 200);
  });

  test('ACC-3: the /login page replaces a presented session cookie (no fixation)', async (t) => {
    if (!hasPage(ctx.testApp, '/login')) {
      t.skip('the /login page is not registered in this build');
      return;
    }
    const account = await createAccount(ctx.db, ctx.testApp);
    const response = await ctx.testApp.app.inject({
      method: 'POST',
      url: '/login',
      headers: {
        origin: ctx.testApp.config.publicUrl,
        cookie: account.sessionCookie,
        'content-type': 'application/x-www-form-urlencoded',
      },
      payload: new URLSearchParams({ login: account.user.username, password: account.password }).toString(),
      remoteAddress: testClient().ip,
    });
    assert.equal(response.statusCode, 303, response.body);
    const fresh = sessionSetCookie(response);
    assert.ok(!fresh.includes(encodeURIComponent(account.sessionToken)), 'a new session token');
    assert.ok((await sessionRow(account.sessionId)).revoked_at !== null);
    assert.equal((await me(ctx.testApp, account.sessionCookie)).statusCode, 401);
  });
});
