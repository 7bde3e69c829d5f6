import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createAccount, testAccountsService, testClient } from '../../test/helpers/accounts.ts';
import { buildTestApp, useTestApp } from '../../test/helpers/app.ts';
import { CURRENT_PARAMS, hashPasswordSync, verifyPasswordSync } from './passwords.ts';

// Passwords are stored as scrypt with a random per-user salt and the
// parameters beside the hash, so they can be raised: a login on an older hash
// re-hashes it. A stolen table gives no plaintext.

const PASSWORD = 'correct horse battery staple';
const PHC = /^\$scrypt\$ln=(\d+),r=(\d+),p=(\d+)\$([A-Za-z0-9_-]+)\$([A-Za-z0-9_-]+)$/;
/** Cheap parameters for tests that do not care about cost. */
const FAST = { ln: 10, r: 8, p: 1 } as const;

describe('hashPasswordSync and verifyPasswordSync', () => {
  test('ACC-2: a hash is a PHC string carrying scrypt parameters (N=2^17, r=8, p=1), a 16-byte salt and a 32-byte key', async () => {
    const hash = hashPasswordSync(PASSWORD);
    const match = PHC.exec(hash);
    assert.ok(match !== null, hash);
    const [, ln, r, p, salt = '', key = ''] = match;
    assert.deepEqual({ ln: Number(ln), r: Number(r), p: Number(p) }, { ln: 17, r: 8, p: 1 });
    assert.deepEqual(CURRENT_PARAMS, { ln: 17, r: 8, p: 1 });
    assert.equal(Buffer.from(salt, 'base64url').length, 16);
    assert.equal(Buffer.from(key, 'base64url').length, 32);
    assert.ok(!hash.includes(PASSWORD));
  });

  test('ACC-2: the salt is random: two hashes of one password differ in salt and key', async () => {
    const [a, b] = [hashPasswordSync(PASSWORD, FAST), hashPasswordSync(PASSWORD, FAST)];
    assert.notEqual(a, b);
    assert.notEqual(PHC.exec(a)?.[4], PHC.exec(b)?.[4]);
    assert.notEqual(PHC.exec(a)?.[5], PHC.exec(b)?.[5]);
    assert.ok(verifyPasswordSync(PASSWORD, a).ok);
    assert.ok(verifyPasswordSync(PASSWORD, b).ok);
  });

  test('ACC-2: the right password verifies; a wrong one does not', async () => {
    const hash = hashPasswordSync(PASSWORD);
    assert.deepEqual(verifyPasswordSync(PASSWORD, hash), { ok: true, needsRehash: false });
    assert.equal(verifyPasswordSync(`${PASSWORD}!`, hash).ok, false);
    const fast = hashPasswordSync(PASSWORD, FAST);
    for (const wrong of ['', 'correct horse battery stapl', `${PASSWORD} `, PASSWORD.toUpperCase()]) {
      assert.equal(verifyPasswordSync(wrong, fast).ok, false, JSON.stringify(wrong));
    }
  });

  test('ACC-2: a password typed in another Unicode normal form still verifies', async () => {
    const composed = 'pässwörd-ümlaut-1234'.normalize('NFC');
    const hash = hashPasswordSync(composed, FAST);
    assert.ok(verifyPasswordSync(composed.normalize('NFD'), hash).ok);
  });

  test('ACC-2: a hash with lower parameters verifies and asks to be re-hashed', async () => {
    const old = hashPasswordSync(PASSWORD, { ln: 14, r: 8, p: 1 });
    assert.match(old, /^\$scrypt\$ln=14,r=8,p=1\$/);
    assert.deepEqual(verifyPasswordSync(PASSWORD, old), { ok: true, needsRehash: true });
    // A wrong password on an old hash is just wrong: nothing to re-hash.
    assert.deepEqual(verifyPasswordSync('not the password', old), { ok: false, needsRehash: false });
  });

  test('ACC-2: a malformed stored hash never verifies (and never throws)', async () => {
    const good = hashPasswordSync(PASSWORD, FAST);
    const [, , params = '', salt = '', key = ''] = good.split('$');
    const malformed = [
      '',
      PASSWORD,
      `$argon2id$v=19$m=65536,t=3,p=4$${salt}$${key}`,
      `$scrypt$${params}$${salt}`,
      `$scrypt$${params}$$${key}`,
      `$scrypt$${params}$${salt}$`,
      `$scrypt$${params}$${salt}$${key}$`,
      `$scrypt$${params}$${salt}$${key.slice(0, -2)}`,
      `$scrypt$${params}$${salt}$${key}==`,
      `$scrypt$ln=99,r=8,p=1$${salt}$${key}`,
      `$scrypt$ln=0,r=8,p=1$${salt}$${key}`,
      // r or p of 0 would silently mean scrypt's defaults.
      `$scrypt$ln=10,r=0,p=1$${salt}$${key}`,
      `$scrypt$ln=10,r=8,p=0$${salt}$${key}`,
      ` ${good}`,
      `${good}\n`,
    ];
    for (const stored of malformed) {
      assert.deepEqual(verifyPasswordSync(PASSWORD, stored), { ok: false, needsRehash: false }, stored);
    }
  });
});

describe('stored passwords', () => {
  const ctx = useTestApp({}, { passwordCost: 'production' });

  async function storedHash(userId: string): Promise<string> {
    const [row] = await ctx.db.superuser<{ password_hash: string }[]>`
      select password_hash from users where id = ${userId}::uuid`;
    assert.ok(row !== undefined);
    return row.password_hash;
  }

  test('ACC-2: signing in on a hash with older parameters re-hashes it with the current ones', async () => {
    const account = await createAccount(ctx.db, ctx.testApp);
    const old = hashPasswordSync(account.password, { ln: 14, r: 8, p: 1 });
    await ctx.db.superuser`update users set password_hash = ${old} where id = ${account.user.id}::uuid`;
    const accounts = testAccountsService(ctx.db, ctx.testApp);
    await accounts.login(
      { login: account.user.username, password: account.password, previousSessionToken: undefined },
      testClient(),
    );
    const upgraded = await storedHash(account.user.id);
    assert.notEqual(upgraded, old);
    assert.match(upgraded, /^\$scrypt\$ln=17,r=8,p=1\$/);
    assert.ok(verifyPasswordSync(account.password, upgraded).ok);
    // And a login on a current hash leaves it alone.
    await accounts.login(
      { login: account.user.username, password: account.password, previousSessionToken: undefined },
      testClient(),
    );
    assert.equal(await storedHash(account.user.id), upgraded);
  });

  test('ACC-2: a failed sign-in on an old hash does not touch it', async () => {
    const account = await createAccount(ctx.db, ctx.testApp);
    const old = hashPasswordSync(account.password, { ln: 14, r: 8, p: 1 });
    await ctx.db.superuser`update users set password_hash = ${old} where id = ${account.user.id}::uuid`;
    await assert.rejects(
      testAccountsService(ctx.db, ctx.testApp).login(
        { login: account.user.username, password: 'a wrong password', previousSessionToken: undefined },
        testClient(),
      ),
      (error: { code?: string }) => error.code === 'login_failed',
    );
    assert.equal(await storedHash(account.user.id), old);
  });

  test('ACC-2: the plaintext password is in no column of the users table', async () => {
    const account = await createAccount(ctx.db, ctx.testApp);
    const [row] = await ctx.db.superuser<{ dump: string }[]>`
      select row_to_json(u)::text as dump from users u where id = ${account.user.id}::uuid`;
    assert.ok(row !== undefined);
    assert.ok(!row.dump.includes(account.password));
    assert.match(await storedHash(account.user.id), /^\$scrypt\$ln=17,r=8,p=1\$/);
  });

  test('ACC-2: an app configured for production refuses cheaper password parameters (the test suite’s), so its hashes are always at the current cost', async () => {
    await assert.rejects(
      buildTestApp(
        ctx.db,
        {
          ENCLAVE_ENV: 'production',
          ENCLAVE_PUBLIC_URL: 'https://enclave.example',
          ENCLAVE_SMTP_URL: 'smtp://mail.example:587',
        },
        { passwordCost: 'test' },
      ),
      /passwordParams is for the test suite/,
    );
  });
});
