import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { mintInvite as mintAccountInvite } from '../../test/helpers/accounts.ts';
import { buildTestApp, useTestApp } from '../../test/helpers/app.ts';
import {
  getPage,
  mintInvite,
  ORIGIN,
  PASSWORD,
  postForm,
  sessionCookie,
  signUp,
} from '../../test/helpers/pages.ts';

// The signup and sign-in pages: invite-only signup bound to one address
// (ACC-1), one answer for every failed sign-in (ACC-6), redirects that stay
// on this site, and forms that refuse bad input with a 4xx and change nothing.

const ctx = useTestApp();

async function userCount(): Promise<number> {
  const [row] = await ctx.db.superuser<{ count: number }[]>`select count(*)::int as count from users`;
  return row?.count ?? -1;
}

async function tenantCount(): Promise<number> {
  const [row] = await ctx.db.superuser<{ count: number }[]>`select count(*)::int as count from tenants`;
  return row?.count ?? -1;
}

describe('signup page', () => {
  test('ACC-1: a bound invite shows its address read-only; signing up with another address fails and creates nothing', async () => {
    const invite = await mintInvite(ctx.db, { email: 'bound@example.com' });
    const form = await getPage(ctx.testApp.app, `/signup?invite=${invite}`);
    assert.equal(form.statusCode, 200);
    assert.match(
      form.body,
      /<input id="f-email" name="email" type="email" value="bound@example.com" required readonly/,
    );
    assert.match(form.body, /<label for="f-username">Username<\/label>/);
    assert.match(form.body, /<label for="f-password">Password<\/label>/);
    assert.match(form.body, /<form method="post" action="\/signup"/);

    const users = await userCount();
    const response = await postForm(ctx.testApp.app, '/signup', {
      invite,
      email: 'someone-else@example.com',
      username: 'intruder',
      password: PASSWORD,
    });
    assert.equal(response.statusCode, 400);
    assert.match(response.body, /This invite was issued for a different email address\./);
    assert.equal(sessionCookie(response), undefined);
    assert.ok(!response.body.includes(PASSWORD), 'the password is never written back');
    assert.equal(await userCount(), users);
  });

  test('ACC-1: signing up with the bound address creates the account and its tenant, and lands on the dashboard', async () => {
    const tenants = await tenantCount();
    const { cookie } = await signUp(ctx.testApp.app, ctx.db, {
      username: 'founder',
      email: 'Founder@Example.com',
    });
    assert.equal(await tenantCount(), tenants + 1);
    const dashboard = await getPage(ctx.testApp.app, '/dashboard', { cookie });
    assert.equal(dashboard.statusCode, 200);
    assert.match(dashboard.body, /Welcome, founder/);
    assert.match(dashboard.body, /<form method="post" action="\/logout">/);
  });

  test('ACC-1: used, expired, revoked, unknown and missing invites get a clear 400 page with no form, and nothing is created', async () => {
    const used = await mintInvite(ctx.db, { email: 'used@example.com' });
    await postForm(ctx.testApp.app, '/signup', {
      invite: used,
      email: 'used@example.com',
      username: 'used1',
      password: PASSWORD,
    });
    const expired = await mintAccountInvite(ctx.db, {
      kind: 'tenant',
      email: 'late@example.com',
      expiresAt: new Date(Date.now() + 60_000),
    });
    await ctx.db
      .superuser`update invites set expires_at = now() - interval '1 minute' where id = ${expired.id}::uuid`;
    const revoked = await mintAccountInvite(ctx.db, {
      kind: 'tenant',
      email: 'gone@example.com',
      expiresAt: new Date(Date.now() + 60_000),
    });
    await ctx.db.superuser`update invites set revoked_at = now() where id = ${revoked.id}::uuid`;
    const cases = [
      { invite: used, email: 'used@example.com', says: /already been used/ },
      { invite: expired.token, email: 'late@example.com', says: /has expired/ },
      { invite: revoked.token, email: 'gone@example.com', says: /has been revoked/ },
      {
        invite: 'enc_inv_0000000000000000000000000000000000000000000',
        email: 'x@example.com',
        says: /not valid/,
      },
    ];
    const users = await userCount();
    for (const { invite, email, says } of cases) {
      const shown = await getPage(ctx.testApp.app, `/signup?invite=${encodeURIComponent(invite)}`);
      assert.equal(shown.statusCode, 400, `GET with ${String(says)}`);
      assert.match(shown.body, says);
      assert.ok(!shown.body.includes('<form method="post" action="/signup"'), 'no signup form');
      const posted = await postForm(ctx.testApp.app, '/signup', {
        invite,
        email,
        username: 'latecomer',
        password: PASSWORD,
      });
      assert.equal(posted.statusCode, 400, `POST with ${String(says)}`);
      assert.match(posted.body, says);
      assert.ok(!posted.body.includes('<form method="post" action="/signup"'));
      assert.equal(sessionCookie(posted), undefined);
    }
    const missing = await getPage(ctx.testApp.app, '/signup');
    assert.equal(missing.statusCode, 400);
    assert.match(missing.body, /Signing up needs an invite link/);
    assert.equal(await userCount(), users);
  });

  test('ACC-1: a broken field (bad username) is explained on the form, which keeps the other values', async () => {
    const invite = await mintInvite(ctx.db, { email: 'rules@example.com' });
    const response = await postForm(ctx.testApp.app, '/signup', {
      invite,
      email: 'rules@example.com',
      username: 'No Spaces!',
      password: PASSWORD,
    });
    assert.equal(response.statusCode, 400);
    assert.match(response.body, /<p class="error" id="f-username-error">Usernames are 3 to 32 characters/);
    assert.match(response.body, /value="No Spaces!"/);
    assert.ok(!response.body.includes(PASSWORD));
  });
});

describe('login page', () => {
  let alice: { cookie: string };
  before(async () => {
    alice = await signUp(ctx.testApp.app, ctx.db, { username: 'alice', email: 'alice@example.com' });
    await signUp(ctx.testApp.app, ctx.db, { username: 'bob', email: 'bob@example.com' });
    // An address that is pending (not verified) must not sign in.
    await ctx.db.superuser`update users set pending_email = 'alice-new@example.com' where username = 'alice'`;
  });

  test('ACC-6: the login form signs in with the username and with the verified email, one session each', async () => {
    for (const login of ['alice', 'ALICE@example.com']) {
      const response = await postForm(ctx.testApp.app, '/login', { login, password: PASSWORD });
      assert.equal(response.statusCode, 303, login);
      assert.equal(response.headers.location, '/dashboard');
      const cookie = sessionCookie(response);
      assert.ok(cookie !== undefined && cookie !== alice.cookie);
      const dashboard = await getPage(ctx.testApp.app, '/dashboard', { cookie });
      assert.equal(dashboard.statusCode, 200);
      assert.match(dashboard.body, /Welcome, alice/);
    }
  });

  test('ACC-6: an unknown user, a wrong password and an unverified email get the identical answer', async () => {
    const attempts = [
      { login: 'nobody-here', password: PASSWORD },
      { login: 'alice', password: 'not the password at all' },
      { login: 'alice-new@example.com', password: PASSWORD },
    ];
    const answers: { status: number; text: string; cookie: string | undefined }[] = [];
    for (const attempt of attempts) {
      const response = await postForm(ctx.testApp.app, '/login', attempt, { remoteAddress: '10.6.0.1' });
      // The login typed is shown back in its field; everything else must be the same.
      answers.push({
        status: response.statusCode,
        text: response.body.replaceAll(attempt.login, 'LOGIN'),
        cookie: sessionCookie(response),
      });
    }
    const [first, ...rest] = answers;
    assert.equal(first?.status, 401);
    assert.match(first?.text ?? '', /The login or password is not correct\./);
    assert.equal(first?.cookie, undefined);
    for (const answer of rest) assert.deepEqual(answer, first);
  });

  test('ACC-6: after sign-in only a path on this site is followed; anything else goes to the dashboard', async () => {
    const cases: [string, string][] = [
      ['/profile?tab=sessions', '/profile?tab=sessions'],
      ['//evil.example/x', '/dashboard'],
      ['/\\evil.example', '/dashboard'],
      ['https://evil.example/', '/dashboard'],
      ['javascript:alert(1)', '/dashboard'],
    ];
    for (const [next, expected] of cases) {
      const form = await getPage(ctx.testApp.app, `/login?next=${encodeURIComponent(next)}`);
      assert.equal(form.statusCode, 200);
      assert.equal(form.body.includes('name="next"'), expected !== '/dashboard', `form keeps ${next}?`);
      const response = await postForm(ctx.testApp.app, '/login', { login: 'bob', password: PASSWORD, next });
      assert.equal(response.statusCode, 303);
      assert.equal(response.headers.location, expected, next);
    }
  });

  test('ACC-3: an anonymous page request is sent to sign in, and signing out ends the session at once', async () => {
    const anonymous = await getPage(ctx.testApp.app, '/profile');
    assert.equal(anonymous.statusCode, 303);
    assert.equal(anonymous.headers.location, '/login?next=%2Fprofile');
    const signedIn = sessionCookie(
      await postForm(ctx.testApp.app, '/login', { login: 'alice', password: PASSWORD }),
    );
    const out = await postForm(ctx.testApp.app, '/logout', {}, { cookie: signedIn });
    assert.equal(out.statusCode, 303);
    assert.equal(out.headers.location, '/login?notice=signed-out');
    assert.match(String(out.headers['set-cookie']), /enclave_session=;/);
    const after = await getPage(ctx.testApp.app, '/dashboard', { cookie: signedIn });
    assert.equal(after.statusCode, 303);
    const login = await getPage(ctx.testApp.app, '/login?notice=signed-out');
    assert.match(login.body, /<p class="notice" role="status">You have signed out\.<\/p>/);
    const unknownNotice = await getPage(ctx.testApp.app, '/login?notice=%3Cscript%3Ealert(1)%3C%2Fscript%3E');
    assert.ok(!unknownNotice.body.includes('alert(1)'), 'an unknown notice is not reflected');
  });
});

describe('bad input', () => {
  const sendRaw = (
    url: string,
    payload: string | Buffer,
    contentType = 'application/x-www-form-urlencoded',
  ) =>
    ctx.testApp.app.inject({
      method: 'POST',
      url,
      remoteAddress: '10.99.0.1',
      headers: { origin: ORIGIN, 'content-type': contentType },
      payload,
    });

  test('ACC-1: over-long, non-UTF-8, duplicate, unknown and malformed signup fields get a 4xx and create nothing', async () => {
    const invite = await mintInvite(ctx.db, { email: 'fuzz@example.com' });
    const good = { invite, email: 'fuzz@example.com', username: 'fuzzer', password: PASSWORD };
    const users = await userCount();
    const encode = (fields: Record<string, string>) => new URLSearchParams(fields).toString();
    const cases: { name: string; payload: string | Buffer; contentType?: string; says: RegExp }[] = [
      {
        name: 'long username',
        payload: encode({ ...good, username: 'u'.repeat(65) }),
        says: /Username is too long/,
      },
      {
        name: 'long email',
        payload: encode({ ...good, email: `${'e'.repeat(250)}@x.io` }),
        says: /Email address is too long/,
      },
      {
        name: 'long password',
        payload: encode({ ...good, password: 'p'.repeat(4097) }),
        says: /Password is too long/,
      },
      { name: 'long invite', payload: encode({ ...good, invite: 'i'.repeat(201) }), says: /not valid/ },
      {
        name: 'password over 1024 bytes',
        payload: encode({ ...good, password: 'é'.repeat(600) }),
        says: /at most 1024 bytes/,
      },
      {
        name: 'unknown field',
        payload: `${encode(good)}&is_operator=true`,
        says: /a field this page does not accept/,
      },
      {
        name: 'missing field',
        payload: encode({ invite, email: good.email, username: good.username }),
        says: /Password is required/,
      },
      {
        name: 'non-UTF-8 bytes',
        payload: Buffer.from(`${encode(good).replace('fuzzer', 'fuzz')}%FF`),
        says: /not valid UTF-8/,
      },
      {
        name: 'raw non-UTF-8 byte',
        payload: Buffer.concat([Buffer.from(`${encode(good)}&x=`), Buffer.from([0xff])]),
        says: /ASCII|UTF-8/,
      },
      { name: 'duplicate field', payload: `${encode(good)}&username=again`, says: /appears twice/ },
      { name: 'malformed escape', payload: `${encode(good)}%zz`, says: /malformed percent-encoding/ },
      {
        name: 'multipart',
        payload: encode(good),
        contentType: 'multipart/form-data; boundary=x',
        says: /media type/i,
      },
    ];
    for (const { name, payload, contentType, says } of cases) {
      const response = await sendRaw('/signup', payload, contentType);
      assert.ok(response.statusCode >= 400 && response.statusCode < 500, `${name}: ${response.statusCode}`);
      assert.match(response.body, says, name);
      assert.ok(!response.body.includes(PASSWORD), `${name}: the password is not written back`);
      assert.equal(sessionCookie(response), undefined, name);
    }
    assert.equal(await userCount(), users);
    // The same invite still works afterwards: nothing was used up.
    const ok = await sendRaw('/signup', encode(good));
    assert.equal(ok.statusCode, 303);
  });

  test('ACC-6: over-long and unknown login fields are refused with 400 before any account is looked up', async () => {
    const long = await postForm(ctx.testApp.app, '/login', { login: 'l'.repeat(255), password: PASSWORD });
    assert.equal(long.statusCode, 400);
    assert.match(long.body, /Username or email is too long/);
    const unknown = await sendRaw('/login', 'login=alice&password=x&remember=1');
    assert.equal(unknown.statusCode, 400);
    assert.match(unknown.body, /a field this page does not accept/);
  });

  test('OPS-3: the account pages carry no inline script or style, label every input, and keep the Origin on form posts', async () => {
    const invite = await mintInvite(ctx.db, { email: 'csp@example.com' });
    const { cookie } = await signUp(ctx.testApp.app, ctx.db, {
      username: 'csp-user',
      email: 'csp@example.com',
    });
    const pages = [
      await getPage(
        ctx.testApp.app,
        `/signup?invite=${await mintInvite(ctx.db, { email: 'csp2@example.com' })}`,
      ),
      await getPage(ctx.testApp.app, '/login'),
      await getPage(ctx.testApp.app, '/recover'),
      await getPage(ctx.testApp.app, `/signup?invite=${invite}`),
      await getPage(ctx.testApp.app, '/dashboard', { cookie }),
      await getPage(ctx.testApp.app, '/dashboard/settings/tokens', { cookie }),
      await getPage(ctx.testApp.app, '/dashboard/settings/invites', { cookie }),
      await getPage(ctx.testApp.app, '/profile', { cookie }),
      await getPage(ctx.testApp.app, '/dev/mail', { remoteAddress: '127.0.0.1' }),
    ];
    for (const page of pages) {
      assert.match(String(page.headers['content-type']), /^text\/html/);
      assert.match(String(page.headers['content-security-policy']), /script-src 'self';style-src 'self'/);
      // Under no-referrer, browsers post forms with "Origin: null", which the CSRF check refuses.
      assert.equal(page.headers['referrer-policy'], 'same-origin');
      assert.ok(!/<script(?![^>]*\bsrc=)/i.test(page.body), 'no inline <script>');
      assert.ok(!/<style/i.test(page.body), 'no <style> element');
      assert.ok(!/\sstyle=/i.test(page.body), 'no style attribute');
      assert.ok(!/\son[a-z]+=/i.test(page.body), 'no inline event handler');
      for (const [, id] of page.body.matchAll(/<(?:input|select)[^>]*\sid="([^"]+)"/g)) {
        assert.ok(page.body.includes(`<label for="${id}">`), `input ${id} has a label`);
      }
    }
  });

  test('/dev/mail exists in development, for loopback clients only, and not at all in production', async () => {
    for (const remoteAddress of ['127.0.0.1', '::1', '::ffff:127.0.0.1']) {
      assert.equal((await getPage(ctx.testApp.app, '/dev/mail', { remoteAddress })).statusCode, 200);
    }
    // Its recovery links are for the developer at this machine: anyone else gets the 404 of no route.
    const missing = await getPage(ctx.testApp.app, '/no-such-page', { remoteAddress: '203.0.113.9' });
    for (const remoteAddress of ['203.0.113.9', '10.1.2.3', '::ffff:10.1.2.3', '127.0.0.1.example']) {
      const response = await getPage(ctx.testApp.app, '/dev/mail', { remoteAddress });
      assert.equal(response.statusCode, 404, remoteAddress);
      const withoutId = (body: string) => body.replace(/"request_id":"[^"]*"/, '');
      assert.equal(withoutId(response.body), withoutId(missing.body));
      assert.ok(!response.body.includes('Development mail'));
    }
    const production = await buildTestApp(ctx.db, {
      ENCLAVE_ENV: 'production',
      ENCLAVE_PUBLIC_URL: 'https://enclave.example',
      ENCLAVE_SMTP_URL: 'smtp://localhost:2525',
    });
    try {
      const response = await getPage(production.app, '/dev/mail');
      assert.equal(response.statusCode, 404);
      assert.match(String(response.headers['content-type']), /^application\/problem\+json/);
    } finally {
      await production.app.close();
    }
  });
});
