import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createAccount, type TestAccount } from '../../test/helpers/accounts.ts';
import { type ProblemBody, useTestApp } from '../../test/helpers/app.ts';
import { getPage, ORIGIN, postForm, textOf } from '../../test/helpers/pages.ts';
import { counterIsStale } from './counter.ts';

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
    assert.match(textOf(response.body), /took too long, or was started in another tab/);
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
