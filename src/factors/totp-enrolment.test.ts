import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createAccount } from '../../test/helpers/accounts.ts';
import { useTestApp } from '../../test/helpers/app.ts';
import { scanQrSvg } from '../../test/helpers/authenticator.ts';
import { getPage, postForm, textOf } from '../../test/helpers/pages.ts';
import { shownCodesIn, totpDriver } from '../../test/helpers/totp.ts';

// TOTP enrolment (ACC-8), driven as a new user would: from /profile, scan
// the server-drawn QR code with an authenticator of the test's own
// (test/helpers/authenticator.ts), confirm with its first code, keep the
// recovery codes; and turning it off again.

const ctx = useTestApp();
const { newUser, startEnrolment, enrol, userOf, factorsOf } = totpDriver(ctx);

describe('enrolment from /profile', () => {
  test('ACC-8: the profile links to TOTP set-up; the QR code, scanned as a phone would, is the otpauth URI of the secret shown in text', async () => {
    const who = await newUser();
    const profile = await getPage(ctx.testApp.app, '/profile', { cookie: who.cookie });
    assert.match(profile.body, /href="\/profile\/totp"/);
    const overview = await getPage(ctx.testApp.app, '/profile/totp', { cookie: who.cookie });
    assert.match(textOf(overview.body), /Set up an authenticator app/);

    const { page, phone } = await startEnrolment(who);
    assert.equal(phone.uri.protocol, 'otpauth:');
    assert.equal(phone.uri.host, 'totp');
    assert.equal(decodeURIComponent(phone.uri.pathname), `/Enclave:${who.username}`);
    assert.equal(phone.uri.searchParams.get('issuer'), 'Enclave');
    assert.equal(phone.uri.searchParams.get('algorithm'), 'SHA1');
    assert.equal(phone.uri.searchParams.get('digits'), '6');
    assert.equal(phone.uri.searchParams.get('period'), '30');
    assert.equal(phone.secret.length, 20, 'a 160-bit secret');
    // The same secret in text, for typing in; and never in a form field.
    const shown = /<code class="token" id="totp-secret">([A-Z2-7 ]+)<\/code>/.exec(page)?.[1];
    assert.equal(shown?.replaceAll(' ', ''), phone.uri.searchParams.get('secret'));
    assert.doesNotMatch(page, /type="hidden"/);
    assert.doesNotMatch(page, /<script/i, 'no client script');
    // A reload shows the same pending secret, from the server.
    const again = await getPage(ctx.testApp.app, '/profile/totp/enrol', { cookie: who.cookie });
    assert.equal(scanQrSvg(again.body), phone.uri.href);
  });

  test('ACC-8: a member held back by the tenant rule (second factor required) can enrol TOTP, and is let through once it is on', async () => {
    const who = await newUser();
    const user = await userOf(who);
    await ctx.db
      .superuser`update tenants set require_second_factor = true where id = ${user.tenant_id}::uuid`;
    const held = await getPage(ctx.testApp.app, '/dashboard', { cookie: who.cookie });
    assert.equal(held.statusCode, 303);
    assert.equal(held.headers.location, '/profile?notice=second-factor-required');
    const { phone } = await startEnrolment(who);
    const confirmed = await postForm(
      ctx.testApp.app,
      '/profile/totp/confirm',
      { code: phone.code() },
      { cookie: who.cookie },
    );
    assert.equal(confirmed.statusCode, 303);
    assert.equal((await getPage(ctx.testApp.app, '/dashboard', { cookie: who.cookie })).statusCode, 200);
  });

  test('ACC-8: a wrong first code does not turn TOTP on', async () => {
    const who = await newUser();
    const { phone } = await startEnrolment(who);
    const wrong = String((Number(phone.code()) + 1) % 1_000_000).padStart(6, '0');
    const refused = await postForm(
      ctx.testApp.app,
      '/profile/totp/confirm',
      { code: wrong },
      { cookie: who.cookie },
    );
    assert.equal(refused.statusCode, 400);
    assert.match(textOf(refused.body), /That code is not right/);
    assert.equal(scanQrSvg(refused.body), phone.uri.href, 'the same enrolment is shown again');
    assert.deepEqual(await factorsOf(who), []);
  });

  test('ACC-8: the first valid code turns TOTP on, and ten recovery codes are shown once and stored as hashes', async () => {
    const { who, recoveryCodes } = await enrol();
    assert.equal(recoveryCodes.length, 10);
    assert.equal(new Set(recoveryCodes).size, 10);
    for (const code of recoveryCodes) assert.match(code, /^[a-z2-9]{4}(-[a-z2-9]{4}){3}$/);
    const factors = await factorsOf(who);
    assert.deepEqual(
      factors.map(({ kind, name }) => ({ kind, name })),
      [{ kind: 'totp', name: 'Authenticator app' }],
    );
    // Shown once: the page again, without the one-time cookie, shows none.
    const again = await getPage(ctx.testApp.app, '/profile/totp/recovery-codes', { cookie: who.cookie });
    assert.match(textOf(again.body), /shown only once/);
    assert.deepEqual(shownCodesIn(again.body), []);
    const overview = await getPage(ctx.testApp.app, '/profile/totp', { cookie: who.cookie });
    assert.match(textOf(overview.body), /10 of 10 recovery codes left/);
    const user = await userOf(who);
    const stored = await ctx.db.superuser<{ code_hash: string }[]>`
      select code_hash from recovery_codes where user_id = ${user.id}::uuid`;
    assert.equal(stored.length, 10);
    for (const code of recoveryCodes) {
      assert.ok(!stored.some((row) => row.code_hash.includes(code.replaceAll('-', ''))));
    }
    // AUD-1: the enrolment and the codes are audit events with ids and counts, never a code.
    const events = await ctx.db.superuser<
      { action: string; data: Record<string, unknown>; canonical: string }[]
    >`
      select action, data, canonical from audit_events
      where tenant_id = ${user.tenant_id}::uuid and action in ('factor.enrolled', 'recovery_codes.generated')
      order by seq`;
    assert.deepEqual(
      events.map((event) => event.action),
      ['factor.enrolled', 'recovery_codes.generated'],
    );
    assert.deepEqual(events[0]?.data, { user_id: user.id, kind: 'totp', factor_id: factors[0]?.id });
    assert.deepEqual(events[1]?.data, { user_id: user.id, count: 10, revoked: 0 });
    for (const code of recoveryCodes) assert.ok(!events.some((event) => event.canonical.includes(code)));
  });

  test('ACC-8: bad codes at confirmation (empty, 7 digits, letters, 10 kB, NUL) get the form again with a 4xx, never a 500', async () => {
    const who = await newUser();
    await startEnrolment(who);
    for (const code of ['', '1234567', 'abcdef', '1'.repeat(10_240), '12\u000034', '12345']) {
      const response = await postForm(
        ctx.testApp.app,
        '/profile/totp/confirm',
        { code },
        { cookie: who.cookie },
      );
      assert.ok(
        response.statusCode >= 400 && response.statusCode < 500,
        `${code.length} chars: ${response.statusCode}`,
      );
      assert.match(response.body, /class="error"/, 'the page says what is wrong');
    }
    const unknownField = await postForm(
      ctx.testApp.app,
      '/profile/totp/confirm',
      { code: '123456', secret: 'x' },
      { cookie: who.cookie },
    );
    assert.equal(unknownField.statusCode, 400);
    assert.deepEqual(await factorsOf(who), []);
  });

  test('ACC-5: first-code guesses while confirming are limited per user: the 11th in 15 minutes gets 429 with Retry-After', async () => {
    const who = await newUser();
    const { phone } = await startEnrolment(who);
    const wrong = String((Number(phone.code()) + 500_000) % 1_000_000).padStart(6, '0');
    const statuses: number[] = [];
    for (let i = 0; i < 11; i++) {
      const response = await postForm(
        ctx.testApp.app,
        '/profile/totp/confirm',
        { code: wrong },
        { cookie: who.cookie },
      );
      statuses.push(response.statusCode);
      if (response.statusCode === 429) assert.ok(Number(response.headers['retry-after']) > 0);
    }
    assert.deepEqual(statuses, [...Array(10).fill(400), 429]);
    const right = await postForm(
      ctx.testApp.app,
      '/profile/totp/confirm',
      { code: phone.code() },
      { cookie: who.cookie },
    );
    assert.equal(right.statusCode, 429, 'the right code waits too');
    assert.deepEqual(await factorsOf(who), []);
  });

  test('ACC-8: an API token cannot set up or remove an authenticator app', async () => {
    const account = await createAccount(ctx.db, ctx.testApp);
    const bearer = { authorization: `Bearer ${account.apiToken}` };
    for (const [method, url] of [
      ['GET', '/profile/totp'],
      ['POST', '/profile/totp/start'],
      ['POST', '/profile/totp/remove'],
    ] as const) {
      const response = await ctx.testApp.app.inject({ method, url, headers: bearer });
      assert.equal(response.statusCode, 403, `${method} ${url}`);
    }
    const [pending] = await ctx.db.superuser<{ count: number }[]>`
      select count(*)::int as count from totp_secrets where user_id = ${account.user.id}::uuid`;
    assert.equal(pending?.count, 0);
  });

  test('ACC-8: the TOTP secret is not in the database or the log in plaintext (base32, hex or base64), nor are the recovery codes', async () => {
    const { phone, recoveryCodes } = await enrol();
    const tables = await ctx.db.superuser<{ name: string }[]>`
      select format('%I.%I', schemaname, tablename) as name from pg_tables
      where schemaname in ('public', 'enclave')`;
    let dump = '';
    for (const { name } of tables) {
      const rows = await ctx.db.superuser.unsafe<{ row: string }[]>(`select t::text as row from ${name} t`);
      dump += `${rows.map((r) => r.row).join('\n')}\n`;
    }
    assert.ok(dump.includes('Authenticator app'), 'the dump holds the factor rows');
    const logs = ctx.testApp.logLines().join('\n');
    assert.ok(logs.includes('/profile/totp/confirm'), 'the log holds the requests');
    const secret = phone.secret;
    const forms = [
      phone.uri.searchParams.get('secret') ?? '',
      secret.toString('hex'),
      secret.toString('base64'),
      secret.toString('base64url'),
      ...recoveryCodes,
      ...recoveryCodes.map((code) => code.replaceAll('-', '')),
    ];
    for (const form of forms) {
      assert.ok(form.length >= 16);
      assert.ok(!dump.toLowerCase().includes(form.toLowerCase()), 'a secret in plaintext in the database');
      assert.ok(!logs.toLowerCase().includes(form.toLowerCase()), 'a secret in the log');
    }
  });
});

describe('removal', () => {
  test('ACC-8: removing TOTP deletes the factor, its secret and its recovery codes when no other factor remains', async () => {
    const { who } = await enrol();
    const user = await userOf(who);
    const removed = await postForm(ctx.testApp.app, '/profile/totp/remove', {}, { cookie: who.cookie });
    assert.equal(removed.statusCode, 303);
    assert.equal(removed.headers.location, '/profile/totp?notice=removed');
    assert.deepEqual(await factorsOf(who), []);
    const [left] = await ctx.db.superuser<{ secrets: number; codes: number }[]>`
      select (select count(*)::int from totp_secrets where user_id = ${user.id}::uuid) as secrets,
             (select count(*)::int from recovery_codes where user_id = ${user.id}::uuid) as codes`;
    assert.deepEqual(left, { secrets: 0, codes: 0 });
    const [event] = await ctx.db.superuser<{ data: Record<string, unknown> }[]>`
      select data from audit_events where tenant_id = ${user.tenant_id}::uuid and action = 'factor.removed'`;
    assert.equal(event?.data.kind, 'totp');
    assert.equal(event?.data.recovery_codes_deleted, 10);
  });

  test('ACC-8: removing TOTP keeps the recovery codes while another factor remains', async () => {
    const { who } = await enrol();
    const user = await userOf(who);
    await ctx.db.superuser`
      insert into user_factors (tenant_id, user_id, kind, name) values (${user.tenant_id}::uuid, ${user.id}::uuid, 'email', 'Email')`;
    const removed = await postForm(ctx.testApp.app, '/profile/totp/remove', {}, { cookie: who.cookie });
    assert.equal(removed.statusCode, 303);
    const [left] = await ctx.db.superuser<{ codes: number }[]>`
      select count(*)::int as codes from recovery_codes where user_id = ${user.id}::uuid`;
    assert.equal(left?.codes, 10);
  });
});
