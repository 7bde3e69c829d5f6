import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  createAccount,
  sessionOf,
  type TestAccount,
  testAccountsService,
  testClient,
  uniqueName,
} from '../../test/helpers/accounts.ts';
import { useTestApp } from '../../test/helpers/app.ts';
import type { AccountsService } from './service.ts';

// Sign-in takes a username or a verified email through one code path, and
// every failure (no such account, wrong password, unverified email) is the
// same error, so the answer never tells whether an account exists.

const ctx = useTestApp();
let accounts: AccountsService;
let account: TestAccount;

ctx.before(async () => {
  accounts = testAccountsService(ctx.db, ctx.testApp);
  account = await createAccount(ctx.db, ctx.testApp);
});

function login(name: string, password: string) {
  return accounts.login({ login: name, password, previousSessionToken: undefined }, testClient());
}

async function failure(
  promise: Promise<unknown>,
): Promise<{ code: string; message: string; field: unknown }> {
  try {
    await promise;
  } catch (error) {
    const err = error as { code: string; message: string; field: unknown };
    return { code: err.code, message: err.message, field: err.field };
  }
  assert.fail('expected the sign-in to fail');
}

describe('login', () => {
  test('ACC-6: signs in by username, case-insensitively, and starts a session of that user', async () => {
    for (const name of [
      account.user.username,
      account.user.username.toUpperCase(),
      ` ${account.user.username} `,
    ]) {
      const outcome = await login(name, account.password);
      const { user } = outcome;
      const session = sessionOf(outcome);
      assert.equal(user.id, account.user.id);
      const [row] = await ctx.db.superuser<{ user_id: string }[]>`
        select user_id from sessions where id = ${session.id}::uuid and revoked_at is null`;
      assert.equal(row?.user_id, account.user.id);
    }
  });

  test('ACC-6: signs in by verified email, case-insensitively, through the same path', async () => {
    for (const name of [account.user.email, account.user.email.toUpperCase()]) {
      const { user } = await login(name, account.password);
      assert.equal(user.id, account.user.id);
    }
  });

  test('ACC-6: unknown login, wrong password and unverified email all fail with the same code and message', async () => {
    const unverified = await createAccount(ctx.db, ctx.testApp);
    await ctx.db.superuser`update users set email_verified = false where id = ${unverified.user.id}::uuid`;
    const pending = await createAccount(ctx.db, ctx.testApp);
    const pendingEmail = `${uniqueName()}@example.test`;
    await ctx.db
      .superuser`update users set pending_email = ${pendingEmail} where id = ${pending.user.id}::uuid`;

    const failures = [
      await failure(login(`${uniqueName()}`, account.password)),
      await failure(login(`${uniqueName()}@example.test`, account.password)),
      await failure(login(account.user.username, 'not the password at all')),
      await failure(login(account.user.email, 'not the password at all')),
      await failure(login(unverified.user.email, unverified.password)),
      await failure(login(pendingEmail, pending.password)),
      await failure(login('', account.password)),
    ];
    for (const seen of failures) {
      assert.deepEqual(seen, failures[0]);
    }
    assert.equal(failures[0]?.code, 'login_failed');
    assert.equal(
      failures[0]?.field,
      undefined,
      'no field singled out (that would tell which part was wrong)',
    );
    assert.doesNotMatch(failures[0]?.message ?? '', /exist|unknown|verif|email/i);
    // The unverified user can still sign in by username.
    assert.equal((await login(unverified.user.username, unverified.password)).user.id, unverified.user.id);
  });

  test('ACC-6: the login page answers a wrong password and an unknown account identically', async (t) => {
    if (!ctx.testApp.app.hasRoute({ method: 'POST', url: '/login' })) {
      t.skip('the /login page is not registered in this build');
      return;
    }
    const attempt = (name: string) =>
      ctx.testApp.app.inject({
        method: 'POST',
        url: '/login',
        headers: {
          origin: ctx.testApp.config.publicUrl,
          'content-type': 'application/x-www-form-urlencoded',
        },
        payload: new URLSearchParams({ login: name, password: 'not the password at all' }).toString(),
        remoteAddress: testClient().ip,
      });
    const unknownName = uniqueName();
    const wrong = await attempt(account.user.username);
    const unknown = await attempt(unknownName);
    assert.equal(wrong.statusCode, unknown.statusCode);
    assert.ok(wrong.statusCode >= 400 && wrong.statusCode < 500);
    assert.equal(wrong.headers['set-cookie'], undefined);
    // The pages differ only where they echo the login typed in.
    assert.equal(
      wrong.body.replaceAll(account.user.username, 'LOGIN'),
      unknown.body.replaceAll(unknownName, 'LOGIN'),
    );
  });
});
