import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createAccount, type TestAccount } from '../../test/helpers/accounts.ts';
import { type ProblemBody, useTestApp } from '../../test/helpers/app.ts';
import { getPage, ORIGIN, postForm, textOf } from '../../test/helpers/pages.ts';
import { storedPasskey } from '../../test/helpers/passkeys.ts';
import { counterIsStale } from './counter.ts';
import { MAX_PASSKEYS } from './registration.ts';

// The passkey routes over HTTP, without a browser: what the options say, who
// may ask for them, and bad input of every kind answered with a 4xx (a
// problem+json for the JSON routes, the page again for the forms), never a 500.
// The ceremonies themselves run in Chromium (test/passkeys-browser.test.ts).

const ctx = useTestApp();
let owner: TestAccount;
ctx.before(async () => {
  owner = await createAccount(ctx.db, ctx.testApp);
});

function postJson(url: string, payload: string, headers: Record<string, string> = {}) {
  return ctx.testApp.app.inject({
    method: 'POST',
    url,
    headers: { origin: ORIGIN, 'content-type': 'application/json', ...headers },
    payload,
  });
}

describe('passkey registration options', () => {
  test('ACC-8: the options ask for a discoverable credential with user verification, bound to the public URL’s host', async () => {
    const response = await postJson('/profile/passkeys/options', '{}', { cookie: owner.sessionCookie });
    assert.equal(response.statusCode, 200);
    assert.equal(response.headers['cache-control'], 'no-store');
    const options = response.json();
    assert.deepEqual(options.rp, { name: 'Enclave', id: new URL(ctx.testApp.config.publicUrl).hostname });
    assert.equal(options.user.name, owner.user.username);
    assert.equal(options.authenticatorSelection.residentKey, 'required');
    assert.equal(options.authenticatorSelection.userVerification, 'required');
    assert.equal(options.attestation, 'none');
    assert.match(options.challenge, /^[A-Za-z0-9_-]{43}$/);
    assert.deepEqual(options.excludeCredentials, []);
    // The challenge is stored only hashed against its binding, and a new one replaces it.
    const again = (await postJson('/profile/passkeys/options', '{}', { cookie: owner.sessionCookie })).json();
    const rows = await ctx.db.superuser<{ challenge: string }[]>`
      select challenge from passkey_challenges where purpose = 'register'`;
    assert.deepEqual(
      rows.map((row) => row.challenge),
      [again.challenge],
    );
  });

  test('ACC-8: an account holds at most 20 passkeys: the options for a 21st are a 409 problem, and no challenge is stored', async () => {
    const account = await createAccount(ctx.db, ctx.testApp);
    for (let n = 0; n < MAX_PASSKEYS; n += 1) await storedPasskey(ctx.db, account.user);
    const registerChallenges = async () =>
      (
        await ctx.db.superuser<{ n: number }[]>`
          select count(*)::int as n from passkey_challenges where purpose = 'register'`
      )[0]?.n;
    const before = await registerChallenges();
    const response = await ctx.testApp.app.inject({
      method: 'POST',
      url: '/profile/passkeys/options',
      headers: { cookie: account.sessionCookie, origin: ORIGIN, 'content-type': 'application/json' },
      payload: '{}',
    });
    assert.equal(response.statusCode, 409, response.body);
    assert.equal(response.json<ProblemBody>().code, 'passkey_limit');
    assert.equal(await registerChallenges(), before);
    // The other tests here count every stored passkey.
    await ctx.db.superuser`delete from user_factors where user_id = ${account.user.id}::uuid`;
  });

  test('ACC-8: an API token cannot add a passkey (the ceremony is bound to a browser session): 403', async () => {
    const response = await ctx.testApp.app.inject({
      method: 'POST',
      url: '/profile/passkeys/options',
      headers: { authorization: `Bearer ${owner.apiToken}`, 'content-type': 'application/json' },
      payload: '{}',
    });
    assert.equal(response.statusCode, 403);
    assert.equal(response.json<ProblemBody>().code, 'forbidden');
  });

  test('ACC-8: bad JSON bodies on the options routes are 4xx problem+json, never 500', async () => {
    const cases: [string, string, Record<string, string>, number, string][] = [
      ['/profile/passkeys/options', '{"a":', {}, 400, 'malformed_body'],
      ['/profile/passkeys/options', '[]', {}, 400, 'validation_failed'],
      ['/profile/passkeys/options', '{"challenge":"x"}', {}, 400, 'validation_failed'],
      ['/profile/passkeys/options', '', {}, 400, 'malformed_body'],
      ['/profile/passkeys/options', '{}', { 'content-type': 'text/plain' }, 415, 'unsupported_media_type'],
      ['/login/passkey/options', '{"a":', {}, 400, 'malformed_body'],
      ['/login/passkey/options', '"x"', {}, 400, 'validation_failed'],
      ['/login/passkey/options', '{"user":"someone"}', {}, 400, 'validation_failed'],
    ];
    for (const [url, payload, headers, status, code] of cases) {
      const response = await postJson(url, payload, { cookie: owner.sessionCookie, ...headers });
      assert.equal(response.statusCode, status, `${url} ${payload}`);
      assert.match(String(response.headers['content-type']), /^application\/problem\+json/);
      assert.equal(response.json<ProblemBody>().code, code, `${url} ${payload}`);
    }
  });

  test('ACC-8: without a session, or with an expired one, the options are a 401 problem the page’s script can read, not a redirect to sign in', async () => {
    for (const cookie of [undefined, 'enclave_session=expired.forged']) {
      const response = await postJson(
        '/profile/passkeys/options',
        '{}',
        cookie === undefined ? {} : { cookie },
      );
      assert.equal(response.statusCode, 401, response.body);
      assert.match(String(response.headers['content-type']), /^application\/problem\+json/);
      assert.equal(response.json<ProblemBody>().code, 'unauthenticated');
    }
  });

  test('ACC-4: the options routes refuse a cross-site request', async () => {
    const response = await postJson('/profile/passkeys/options', '{}', {
      cookie: owner.sessionCookie,
      origin: 'https://evil.example',
    });
    assert.equal(response.statusCode, 403);
    assert.equal(response.json<ProblemBody>().code, 'csrf_rejected');
  });
});

describe('passkey forms with bad input', () => {
  test('ACC-8: an add form whose credential is not a passkey answer shows a page with the reason (400) and stores nothing', async () => {
    const credentials = [
      'not json',
      '{"id":"abc"}',
      JSON.stringify({
        id: 'abc',
        rawId: 'abc',
        type: 'public-key',
        clientExtensionResults: {},
        response: { clientDataJSON: 'e30', attestationObject: '!!' },
      }),
    ];
    for (const credential of credentials) {
      const response = await postForm(
        ctx.testApp.app,
        '/profile/passkeys',
        { name: 'Laptop', credential },
        { cookie: owner.sessionCookie },
      );
      assert.equal(response.statusCode, 400, credential);
      assert.match(textOf(response.body), /Passkey not added The passkey could not be read/);
    }
    const missingName = await postForm(
      ctx.testApp.app,
      '/profile/passkeys',
      { credential: '{}' },
      { cookie: owner.sessionCookie },
    );
    assert.equal(missingName.statusCode, 400);
    assert.match(textOf(missingName.body), /Passkey name is required/);
    const [stored] = await ctx.db.superuser<{ count: number }[]>`
      select count(*)::int as count from user_factors where kind = 'passkey'`;
    assert.equal(stored?.count, 0);
  });

  test('ACC-8: a well-formed answer with no challenge waiting is refused: 400, nothing stored', async () => {
    const other = await createAccount(ctx.db, ctx.testApp);
    const credential = JSON.stringify({
      id: 'AAAA',
      rawId: 'AAAA',
      type: 'public-key',
      clientExtensionResults: {},
      response: { clientDataJSON: 'e30', attestationObject: 'oA' },
    });
    const response = await postForm(
      ctx.testApp.app,
      '/profile/passkeys',
      { name: 'Laptop', credential },
      { cookie: other.sessionCookie },
    );
    assert.equal(response.statusCode, 400);
    assert.match(textOf(response.body), /took too long, or was started again in another tab/);
  });

  test('ACC-8: renaming or removing a passkey that is not the user’s is 404; a bad id is 404; a name too long shows the form again', async () => {
    for (const path of ['/profile/passkeys/00000000-0000-4000-8000-000000000000', '/profile/passkeys/nope']) {
      for (const action of ['rename', 'remove']) {
        const page = await getPage(ctx.testApp.app, `${path}/${action}`, { cookie: owner.sessionCookie });
        assert.equal(page.statusCode, 404, `GET ${path}/${action}`);
        const posted = await postForm(
          ctx.testApp.app,
          `${path}/${action}`,
          action === 'rename' ? { name: 'x' } : {},
          { cookie: owner.sessionCookie },
        );
        assert.equal(posted.statusCode, 404, `POST ${path}/${action}`);
      }
    }
    const own = await storedPasskey(ctx.db, owner.user);
    const tooLong = await postForm(
      ctx.testApp.app,
      `/profile/passkeys/${own}/rename`,
      { name: 'n'.repeat(101) },
      { cookie: owner.sessionCookie },
    );
    assert.equal(tooLong.statusCode, 400);
    assert.match(textOf(tooLong.body), /New name is too long/);
    const [kept] = await ctx.db.superuser<
      { name: string }[]
    >`select name from user_factors where id = ${own}::uuid`;
    assert.equal(kept?.name, 'Stored');
  });
});

describe('removing a passkey', () => {
  test('ACC-8: removing a passkey needs a sign-in within the last 10 minutes: an older session is sent to sign in again, and nothing is removed', async () => {
    const account = await createAccount(ctx.db, ctx.testApp);
    const id = await storedPasskey(ctx.db, account.user);
    await ctx.db.superuser`
      update sessions set authenticated_at = now() - interval '11 minutes' where id = ${account.sessionId}::uuid`;
    const path = `/profile/passkeys/${id}/remove`;
    const asked = await getPage(ctx.testApp.app, path, { cookie: account.sessionCookie });
    const posted = await postForm(ctx.testApp.app, path, {}, { cookie: account.sessionCookie });
    for (const response of [asked, posted]) {
      assert.equal(response.statusCode, 303);
      assert.equal(response.headers.location, `/login?reauth=1&next=${encodeURIComponent(path)}`);
    }
    const [left] = await ctx.db.superuser<{ count: number }[]>`
      select count(*)::int as count from passkey_credentials where factor_id = ${id}::uuid`;
    assert.equal(left?.count, 1);
  });

  test('ACC-8: the last passkey of an account with no password and no identity cannot be removed (409, it stays); with a second passkey one goes', async () => {
    const account = await createAccount(ctx.db, ctx.testApp);
    await ctx.db.superuser`update users set password_hash = null where id = ${account.user.id}::uuid`;
    const remove = (id: string) =>
      postForm(ctx.testApp.app, `/profile/passkeys/${id}/remove`, {}, { cookie: account.sessionCookie });
    const first = await storedPasskey(ctx.db, account.user);
    const refused = await remove(first);
    assert.equal(refused.statusCode, 409);
    assert.match(textOf(refused.body), /This is the only way you can sign in/);
    const second = await storedPasskey(ctx.db, account.user);
    assert.equal((await remove(first)).statusCode, 303);
    assert.equal((await remove(second)).statusCode, 409, 'the remaining passkey is now the last way');
    const left = await ctx.db.superuser<{ id: string }[]>`
      select id from user_factors where user_id = ${account.user.id}::uuid and kind = 'passkey'`;
    assert.deepEqual(
      left.map((row) => row.id),
      [second],
    );
  });

  test('ACC-8: another user’s passkey cannot be renamed or removed: 404, and it stays', async () => {
    const account = await createAccount(ctx.db, ctx.testApp);
    const id = await storedPasskey(ctx.db, account.user);
    for (const action of ['rename', 'remove']) {
      const response = await postForm(
        ctx.testApp.app,
        `/profile/passkeys/${id}/${action}`,
        action === 'rename' ? { name: 'Mine now' } : {},
        { cookie: owner.sessionCookie },
      );
      assert.equal(response.statusCode, 404, action);
    }
    const [kept] = await ctx.db.superuser<
      { name: string }[]
    >`select name from user_factors where id = ${id}::uuid`;
    assert.equal(kept?.name, 'Stored');
  });
});

describe('passkey sign-in with bad input', () => {
  test('ACC-8: /login/passkey with an answer that is not a passkey answer, or with no challenge, shows the sign-in page again with a 400', async () => {
    for (const credential of ['not json', '{}', '{"id":"AAAA","rawId":"AAAA"}']) {
      const response = await postForm(ctx.testApp.app, '/login/passkey', { credential });
      assert.equal(response.statusCode, 400, credential);
      assert.match(textOf(response.body), /The passkey answer could not be read/);
    }
    const answer = JSON.stringify({
      id: 'AAAA',
      rawId: 'AAAA',
      type: 'public-key',
      clientExtensionResults: {},
      response: { clientDataJSON: 'e30', authenticatorData: 'AA', signature: 'AA' },
    });
    const noChallenge = await postForm(ctx.testApp.app, '/login/passkey', { credential: answer });
    assert.equal(noChallenge.statusCode, 400);
    assert.match(textOf(noChallenge.body), /took too long/);
    const broken = await postJson('/login/passkey', '{"credential":');
    assert.equal(broken.statusCode, 400);
    assert.equal(broken.json<ProblemBody>().code, 'malformed_body');
  });

  test('ACC-8: the second step’s passkey routes with no live sign-in of this browser are a 400 (problem+json for the options, the page for the answer)', async () => {
    for (const challenge of ['00000000-0000-4000-8000-000000000000', 'nope']) {
      const options = await postJson(`/login/verify/${challenge}/passkey/options`, '{}');
      assert.equal(options.statusCode, 400, challenge);
      assert.equal(options.json<ProblemBody>().code, 'passkey_challenge_invalid');
      const answer = await postForm(ctx.testApp.app, `/login/verify/${challenge}/passkey`, {
        credential: 'x',
      });
      assert.equal(answer.statusCode, 400, challenge);
      assert.match(textOf(answer.body), /Sign in again/);
    }
    const broken = await postJson('/login/verify/00000000-0000-4000-8000-000000000000/passkey/options', '{"');
    assert.equal(broken.statusCode, 400);
    assert.equal(broken.json<ProblemBody>().code, 'malformed_body');
  });

  test('ACC-5: passkey options from one client address are limited (60 per 15 minutes): then 429 with Retry-After', async () => {
    const ask = () =>
      ctx.testApp.app.inject({
        method: 'POST',
        url: '/login/passkey/options',
        remoteAddress: '10.99.0.1',
        headers: { origin: ORIGIN, 'content-type': 'application/json' },
        payload: '{}',
      });
    for (let i = 0; i < 60; i += 1) assert.equal((await ask()).statusCode, 200);
    const limited = await ask();
    assert.equal(limited.statusCode, 429);
    assert.ok(Number(limited.headers['retry-after']) > 0);
    assert.equal(limited.json<ProblemBody>().code, 'rate_limited');
  });
});

describe('the signature counter rule', () => {
  test('ACC-8: an assertion whose counter does not advance a non-zero stored counter is stale; 0 and 0 means no counter', () => {
    assert.equal(counterIsStale(5, 6), false);
    assert.equal(counterIsStale(5, 5), true, 'a repeated counter: a clone or a replay');
    assert.equal(counterIsStale(5, 4), true);
    assert.equal(counterIsStale(5, 0), true, 'a counter that went back to 0');
    assert.equal(counterIsStale(0, 1), false);
    assert.equal(counterIsStale(0, 0), false, 'an authenticator that keeps no counter');
  });
});
