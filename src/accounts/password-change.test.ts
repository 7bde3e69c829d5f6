import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  createAccount,
  loginAgain,
  type TestAccount,
  testAccountsService,
  testClient,
} from '../../test/helpers/accounts.ts';
import { useTestApp } from '../../test/helpers/app.ts';
import type { AccountsService } from './service.ts';

// Changing the password needs the current one (a borrowed, unlocked session
// is not enough), and ends every other session of the user, so whoever held
// the old password is signed out everywhere else.

const ctx = useTestApp({}, { passwordCost: 'production' });
let accounts: AccountsService;

ctx.before(async () => {
  accounts = testAccountsService(ctx.db, ctx.testApp);
});

async function storedHash(account: TestAccount): Promise<string> {
  const [row] = await ctx.db.superuser<{ password_hash: string }[]>`
    select password_hash from users where id = ${account.user.id}::uuid`;
  assert.ok(row !== undefined);
  return row.password_hash;
}

async function liveSessions(account: TestAccount): Promise<string[]> {
  const rows = await ctx.db.superuser<{ id: string }[]>`
    select id from sessions where user_id = ${account.user.id}::uuid and revoked_at is null order by id`;
  return rows.map((row) => row.id);
}

function me(cookie: string) {
  return ctx.testApp.app.inject({ method: 'GET', url: '/api/v1/me', headers: { cookie } });
}

/**
 * Keeps every password worker busy until `release()`; `queued()` resolves once
 * a further check waits in the pool's queue.
 */
async function holdPasswordWorkers() {
  const pool = ctx.testApp.app.passwords;
  const { workers } = pool.stats();
  const blockers = Array.from({ length: workers }, () => pool.hash('a password to keep a worker busy'));
  const before = pool.stats().queued;
  return {
    release: () => Promise.all(blockers),
    queued: async () => {
      for (let polls = 0; pool.stats().queued <= before; polls++) {
        if (polls > 24_000) throw new Error('no check was queued');
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    },
  };
}

function rejectsWithField(field: string) {
  return (error: unknown): boolean => {
    const err = error as { code?: string; field?: string; message?: string };
    assert.equal(err.code, 'validation_failed', String(error));
    assert.equal(err.field, field);
    return true;
  };
}

describe('password change', () => {
  test('ACC-11: a wrong current password is a field error, and nothing changes', async () => {
    const account = await createAccount(ctx.db, ctx.testApp);
    const other = await loginAgain(ctx.db, ctx.testApp, account);
    const hash = await storedHash(account);
    const sessions = await liveSessions(account);
    await assert.rejects(
      accounts.changePassword(account.principal, {
        current: 'not my password!',
        next: 'a brand new password',
      }),
      rejectsWithField('current_password'),
    );
    assert.equal(await storedHash(account), hash);
    assert.deepEqual(await liveSessions(account), sessions);
    assert.equal((await me(other.sessionCookie)).statusCode, 200);
  });

  test('ACC-11: the new password must follow the password rules', async () => {
    const account = await createAccount(ctx.db, ctx.testApp);
    const hash = await storedHash(account);
    for (const next of ['short', 'elevenchars', 'x'.repeat(1025), 'é'.repeat(513)]) {
      await assert.rejects(
        accounts.changePassword(account.principal, { current: account.password, next }),
        rejectsWithField('new_password'),
      );
    }
    assert.equal(await storedHash(account), hash);
    // Twelve characters are enough; multi-byte characters count as characters.
    await accounts.changePassword(account.principal, { current: account.password, next: 'ü'.repeat(12) });
    assert.notEqual(await storedHash(account), hash);
  });

  test("ACC-11: a change revokes the user's other sessions but keeps the current one", async () => {
    const account = await createAccount(ctx.db, ctx.testApp);
    const second = await loginAgain(ctx.db, ctx.testApp, account);
    const third = await loginAgain(ctx.db, ctx.testApp, account);
    const colleague = await createAccount(ctx.db, ctx.testApp, { kind: 'member', tenantOf: account });
    const next = 'a brand new password';
    await accounts.changePassword(account.principal, { current: account.password, next });
    assert.deepEqual(await liveSessions(account), [account.sessionId]);
    assert.equal((await me(account.sessionCookie)).statusCode, 200);
    assert.equal((await me(second.sessionCookie)).statusCode, 401);
    assert.equal((await me(third.sessionCookie)).statusCode, 401);
    assert.equal(
      (await me(colleague.sessionCookie)).statusCode,
      200,
      "another user's sessions are untouched",
    );
    // The old password no longer signs in; the new one does.
    await assert.rejects(
      accounts.login(
        { login: account.user.username, password: account.password, previousSessionToken: undefined },
        testClient(),
      ),
      (error: { code?: string }) => error.code === 'login_failed',
    );
    const { user } = await accounts.login(
      { login: account.user.username, password: next, previousSessionToken: undefined },
      testClient(),
    );
    assert.equal(user.id, account.user.id);
  });

  test('ACC-11: the new hash uses the current scrypt parameters', async () => {
    const account = await createAccount(ctx.db, ctx.testApp);
    await accounts.changePassword(account.principal, {
      current: account.password,
      next: 'another new password',
    });
    assert.match(await storedHash(account), /^\$scrypt\$ln=17,r=8,p=1\$/);
  });
  test('ACC-11: the current password is checked before the change opens a transaction: while its check waits for a free password worker, it holds no database connection', async () => {
    const account = await createAccount(ctx.db, ctx.testApp);
    const hash = await storedHash(account);
    const { release, queued } = await holdPasswordWorkers();
    const change = accounts.changePassword(account.principal, {
      current: account.password,
      next: 'a brand new password',
    });
    await queued();
    const [open] = await ctx.db.superuser<{ n: number }[]>`
      select count(*)::int as n from pg_stat_activity
      where datname = current_database() and usename = 'enclave_app' and state like 'idle in transaction%'`;
    assert.equal(open?.n, 0, 'no transaction waits on the password pool');
    await release();
    await change;
    assert.notEqual(await storedHash(account), hash);
  });

  test('ACC-11: a password changed while the current one was being checked makes the change fail as a wrong password would', async () => {
    const account = await createAccount(ctx.db, ctx.testApp);
    const otherHash = await ctx.testApp.app.passwords.hash('changed meanwhile');
    const { release, queued } = await holdPasswordWorkers();
    const change = accounts.changePassword(account.principal, {
      current: account.password,
      next: 'a brand new password',
    });
    await queued();
    // Meanwhile, another session of the user changes the password (as by a recovery link).
    await ctx.db.superuser`update users set password_hash = ${otherHash} where id = ${account.user.id}::uuid`;
    await release();
    await assert.rejects(change, rejectsWithField('current_password'));
  });
});
