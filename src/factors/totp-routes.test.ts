import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { createAccount } from '../../test/helpers/accounts.ts';
import { useTestApp } from '../../test/helpers/app.ts';
import { type Authenticator, authenticatorFrom, scanQrSvg } from '../../test/helpers/authenticator.ts';
import {
  getPage,
  PASSWORD,
  postForm,
  type SignedUp,
  sessionCookie,
  setCookies,
  signUp,
  textOf,
  withFlash,
} from '../../test/helpers/pages.ts';
import { withTenant } from '../db/tenant.ts';
import { createTotpService } from './totp-service.ts';

// TOTP with recovery codes (ACC-8), driven as a new user would: enrol from
// /profile by scanning the server-drawn QR code with an authenticator of the
// test's own (test/helpers/authenticator.ts), confirm with its first code,
// keep the recovery codes, and use, reuse and revoke codes.

const ctx = useTestApp();

interface Enrolled {
  readonly who: SignedUp;
  readonly phone: Authenticator;
  readonly recoveryCodes: string[];
}

let users = 0;
async function newUser(): Promise<SignedUp> {
  users += 1;
  return signUp(ctx.testApp.app, ctx.db, {
    username: `totp_user_${users}`,
    email: `totp${users}@example.com`,
  });
}

/** Starts enrolment and reads the QR code off the enrolment page. */
async function startEnrolment(who: SignedUp): Promise<{ page: string; phone: Authenticator }> {
  const started = await postForm(ctx.testApp.app, '/profile/totp/start', {}, { cookie: who.cookie });
  assert.equal(started.statusCode, 303);
  assert.equal(started.headers.location, '/profile/totp/enrol');
  const page = await getPage(ctx.testApp.app, '/profile/totp/enrol', { cookie: who.cookie });
  assert.equal(page.statusCode, 200);
  return { page: page.body, phone: authenticatorFrom(scanQrSvg(page.body)) };
}

/** The recovery codes on the page a confirmation (or regeneration) redirects to. */
async function shownCodes(who: SignedUp, posted: { statusCode: number; headers: Record<string, unknown> }) {
  assert.equal(posted.statusCode, 303);
  assert.equal(posted.headers.location, '/profile/totp/recovery-codes');
  const page = await getPage(ctx.testApp.app, '/profile/totp/recovery-codes', {
    cookie: withFlash(who.cookie, posted),
  });
  assert.equal(page.statusCode, 200);
  return shownCodesIn(page.body);
}

function shownCodesIn(page: string): string[] {
  return [...page.matchAll(/<li><code>([a-z0-9-]+)<\/code><\/li>/g)].map((m) => m[1] ?? '');
}

async function enrol(): Promise<Enrolled> {
  const who = await newUser();
  const { phone } = await startEnrolment(who);
  const confirmed = await postForm(
    ctx.testApp.app,
    '/profile/totp/confirm',
    { code: phone.code() },
    { cookie: who.cookie },
  );
  return { who, phone, recoveryCodes: await shownCodes(who, confirmed) };
}

async function userOf(who: SignedUp): Promise<{ id: string; tenant_id: string }> {
  const [user] = await ctx.db.superuser<{ id: string; tenant_id: string }[]>`
    select id, tenant_id from users where username = ${who.username}`;
  assert.ok(user !== undefined);
  return user;
}

async function factorsOf(who: SignedUp): Promise<{ id: string; kind: string; name: string }[]> {
  const rows = await ctx.db.superuser<{ id: string; kind: string; name: string }[]>`
    select f.id, f.kind, f.name from user_factors f join users u on u.id = f.user_id
    where u.username = ${who.username}`;
  return [...rows];
}

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

  test('ACC-8: the TOTP secret is not in the database in plaintext (base32, hex or base64), nor are the recovery codes', async () => {
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
      assert.ok(!dump.toLowerCase().includes(form.toLowerCase()), 'a secret in plaintext');
    }
  });
});

describe('codes at sign-in', () => {
  let enrolled: Enrolled;
  let user: { id: string; tenant_id: string };
  let clock: number;
  const service = () =>
    createTotpService({
      sql: ctx.db.app,
      vault: ctx.testApp.vault,
      rateLimits: ctx.testApp.rateLimits,
      now: () => clock,
    });
  const checkTotp = (code: string) =>
    withTenant(ctx.db.app, user.tenant_id, (tx) => service().checkTotp(tx, user, code));
  const checkRecovery = (code: string) =>
    withTenant(ctx.db.app, user.tenant_id, (tx) => service().checkRecoveryCode(tx, user, code));

  before(async () => {
    enrolled = await enrol();
    user = await userOf(enrolled.who);
    // Well after the confirming code's step: the steps below are all later than it.
    clock = Date.now() + 10 * 60_000;
  });

  const stepNow = () => BigInt(Math.floor(clock / 30_000));

  test('ACC-8: a TOTP code is accepted once; the same code again is refused', async () => {
    clock += 5 * 60_000;
    const code = enrolled.phone.codeAt(stepNow());
    const factorId = await checkTotp(code);
    assert.equal(factorId, (await factorsOf(enrolled.who))[0]?.id);
    assert.equal(await checkTotp(code), undefined);
  });

  test('ACC-8: a code from the previous window works once and is refused the second time', async () => {
    clock += 5 * 60_000;
    const previous = enrolled.phone.codeAt(stepNow() - 1n);
    assert.ok(
      (await checkTotp(previous)) !== undefined,
      'a code from the previous window is accepted (±1 step)',
    );
    assert.equal(await checkTotp(previous), undefined, 'used twice');
  });

  test('ACC-8: after a code is used, a code of an earlier step is refused even inside the window', async () => {
    clock += 5 * 60_000;
    assert.ok((await checkTotp(enrolled.phone.codeAt(stepNow()))) !== undefined);
    assert.equal(await checkTotp(enrolled.phone.codeAt(stepNow() - 1n)), undefined);
    // The next step's code (a phone a little ahead) still works: it is later than the one used.
    assert.ok((await checkTotp(enrolled.phone.codeAt(stepNow() + 1n))) !== undefined);
  });

  test('ACC-8: two sign-ins racing with one code: exactly one is accepted', async () => {
    clock += 5 * 60_000;
    const code = enrolled.phone.codeAt(stepNow());
    const outcomes = await Promise.all([checkTotp(code), checkTotp(code), checkTotp(code)]);
    assert.equal(outcomes.filter((outcome) => outcome !== undefined).length, 1);
  });

  test('ACC-8: codes two steps away are refused, as are malformed ones', async () => {
    clock += 5 * 60_000;
    assert.equal(await checkTotp(enrolled.phone.codeAt(stepNow() - 2n)), undefined);
    assert.equal(await checkTotp(enrolled.phone.codeAt(stepNow() + 2n)), undefined);
    for (const bad of ['', '1234567', 'abcdef', '9'.repeat(10_240), '12\u00003456']) {
      assert.equal(await checkTotp(bad), undefined);
    }
  });

  test('ACC-8: a recovery code works once, typed in any case and with or without dashes', async () => {
    const [first, second] = enrolled.recoveryCodes;
    assert.ok(first !== undefined && second !== undefined);
    assert.ok((await checkRecovery(first.toUpperCase())) !== undefined);
    assert.equal(await checkRecovery(first), undefined, 'used once already');
    assert.ok((await checkRecovery(second.replaceAll('-', ''))) !== undefined);
    for (const bad of ['', 'x'.repeat(10_240), `${first}\u0000`, 'not-a-code']) {
      assert.equal(await checkRecovery(bad), undefined);
    }
    const overview = await getPage(ctx.testApp.app, '/profile/totp', { cookie: enrolled.who.cookie });
    assert.match(textOf(overview.body), /8 of 10 recovery codes left/);
  });

  test('ACC-8: regenerating recovery codes revokes every old one', async () => {
    const old = enrolled.recoveryCodes.slice(2);
    const confirm = await getPage(ctx.testApp.app, '/profile/totp/recovery-codes/regenerate', {
      cookie: enrolled.who.cookie,
    });
    assert.match(confirm.body, /action="\/profile\/totp\/recovery-codes\/regenerate"/);
    const posted = await postForm(
      ctx.testApp.app,
      '/profile/totp/recovery-codes/regenerate',
      {},
      {
        cookie: enrolled.who.cookie,
      },
    );
    const fresh = await shownCodes(enrolled.who, posted);
    assert.equal(fresh.length, 10);
    for (const code of old) assert.equal(await checkRecovery(code), undefined);
    assert.ok((await checkRecovery(fresh[0] ?? '')) !== undefined);
    const [event] = await ctx.db.superuser<{ data: Record<string, unknown> }[]>`
      select data from audit_events where tenant_id = ${user.tenant_id}::uuid
      and action = 'recovery_codes.generated' order by seq desc limit 1`;
    assert.deepEqual(event?.data, { user_id: user.id, count: 10, revoked: 10 });
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

/** Signs in with the password; the verify page's path and the challenge's browser cookie. */
async function passwordStep(who: SignedUp): Promise<{ path: string; cookie: string }> {
  const response = await postForm(ctx.testApp.app, '/login', { login: who.username, password: PASSWORD });
  assert.equal(response.statusCode, 303, response.body);
  const path = String(response.headers.location);
  assert.match(path, /^\/login\/verify\/[0-9a-f-]{36}$/);
  assert.equal(sessionCookie(response), undefined, 'no session before the second step');
  const cookie = setCookies(response)
    .map((line) => line.split(';')[0] ?? '')
    .find((pair) => pair.startsWith('enclave_sign_in=') && pair !== 'enclave_sign_in=');
  assert.ok(cookie !== undefined, 'the challenge cookie is set');
  return { path, cookie };
}

/** The code the phone shows that the server has not yet seen: now's, or the next step's if now's was used. */
async function unusedCode(enrolled: Enrolled): Promise<string> {
  const user = await userOf(enrolled.who);
  const [row] = await ctx.db.superuser<{ last: string }[]>`
    select last_used_step::text as last from totp_secrets where user_id = ${user.id}::uuid`;
  const last = BigInt(row?.last ?? '0');
  const now = enrolled.phone.step();
  return enrolled.phone.codeAt(now > last ? now : last + 1n);
}

async function signOut(cookie: string): Promise<void> {
  const response = await postForm(ctx.testApp.app, '/logout', {}, { cookie });
  assert.equal(response.statusCode, 303);
}

async function failedAttempts(path: string): Promise<number> {
  const id = path.split('/').at(-1) ?? '';
  const [row] = await ctx.db.superuser<{ failed: number }[]>`
    select failed_attempts as failed from sign_in_challenges where id = ${id}::uuid`;
  return row?.failed ?? -1;
}

describe('signing in with the authenticator app', () => {
  test('ACC-8: sign out, then back in with a TOTP code; sign out, then back in with a recovery code', async () => {
    const enrolled = await enrol();
    await signOut(enrolled.who.cookie);

    const first = await passwordStep(enrolled.who);
    const page = await getPage(ctx.testApp.app, first.path, { cookie: first.cookie });
    assert.match(page.body, new RegExp(`action="${first.path}/totp"`));
    assert.match(page.body, new RegExp(`action="${first.path}/recovery"`));
    const passed = await postForm(
      ctx.testApp.app,
      `${first.path}/totp`,
      { code: await unusedCode(enrolled) },
      first,
    );
    assert.equal(passed.statusCode, 303, passed.body);
    assert.equal(passed.headers.location, '/dashboard');
    const session = sessionCookie(passed);
    assert.ok(session !== undefined);
    assert.equal((await getPage(ctx.testApp.app, '/dashboard', { cookie: session })).statusCode, 200);
    await signOut(session);

    const second = await passwordStep(enrolled.who);
    const recovered = await postForm(
      ctx.testApp.app,
      `${second.path}/recovery`,
      { code: enrolled.recoveryCodes[0] ?? '' },
      second,
    );
    assert.equal(recovered.statusCode, 303, recovered.body);
    const again = sessionCookie(recovered);
    assert.ok(again !== undefined);
    assert.equal((await getPage(ctx.testApp.app, '/dashboard', { cookie: again })).statusCode, 200);

    const user = await userOf(enrolled.who);
    const events = await ctx.db.superuser<{ data: Record<string, unknown>; canonical: string }[]>`
      select data, canonical from audit_events where tenant_id = ${user.tenant_id}::uuid and action = 'factor.used'
      order by seq`;
    assert.deepEqual(
      events.map((event) => [event.data.kind, event.data.factor_id]),
      [
        ['totp', (await factorsOf(enrolled.who))[0]?.id],
        ['recovery', null],
      ],
    );
    for (const code of enrolled.recoveryCodes)
      assert.ok(!events.some((event) => event.canonical.includes(code)));
  });

  test('ACC-8: at sign-in, a TOTP code already used is refused, and so is a used recovery code', async () => {
    const enrolled = await enrol();
    await signOut(enrolled.who.cookie);
    const code = await unusedCode(enrolled);
    const first = await passwordStep(enrolled.who);
    const passed = await postForm(ctx.testApp.app, `${first.path}/totp`, { code }, first);
    assert.equal(passed.statusCode, 303);
    const recovery = enrolled.recoveryCodes[1] ?? '';
    const second = await passwordStep(enrolled.who);
    assert.equal(
      (await postForm(ctx.testApp.app, `${second.path}/recovery`, { code: recovery }, second)).statusCode,
      303,
    );

    const third = await passwordStep(enrolled.who);
    const replayed = await postForm(ctx.testApp.app, `${third.path}/totp`, { code }, third);
    assert.equal(replayed.statusCode, 401);
    assert.match(textOf(replayed.body), /not correct/);
    assert.equal(sessionCookie(replayed), undefined);
    const reused = await postForm(ctx.testApp.app, `${third.path}/recovery`, { code: recovery }, third);
    assert.equal(reused.statusCode, 401);
    assert.equal(sessionCookie(reused), undefined);
    assert.equal(await failedAttempts(third.path), 2);
  });

  test('ACC-8: at sign-in, a code from the previous window works once; the same code a second time is refused', async () => {
    const enrolled = await enrol();
    await signOut(enrolled.who.cookie);
    const user = await userOf(enrolled.who);
    // The factor was last used minutes ago: the previous window is later than its last step.
    const now = enrolled.phone.step();
    await ctx.db.superuser`
      update totp_secrets set last_used_step = ${(now - 10n).toString()}::bigint where user_id = ${user.id}::uuid`;
    const previous = enrolled.phone.codeAt(now - 1n);
    const first = await passwordStep(enrolled.who);
    assert.equal(
      (await postForm(ctx.testApp.app, `${first.path}/totp`, { code: previous }, first)).statusCode,
      303,
    );
    const second = await passwordStep(enrolled.who);
    const twice = await postForm(ctx.testApp.app, `${second.path}/totp`, { code: previous }, second);
    assert.equal(twice.statusCode, 401);
    assert.equal(sessionCookie(twice), undefined);
  });

  test('ACC-8: bad codes at the TOTP and recovery steps (empty, 7 digits, letters, 10 kB, NUL) get the verify page again with a 4xx, never a 500', async () => {
    const enrolled = await enrol();
    await signOut(enrolled.who.cookie);
    const step = await passwordStep(enrolled.who);
    for (const form of ['totp', 'recovery']) {
      for (const code of [
        '',
        '1234567',
        'abcdef',
        '7'.repeat(10_240),
        '12\u00003456',
        'abcd-efgh-jkmn-pqr\u0000',
      ]) {
        const response = await postForm(ctx.testApp.app, `${step.path}/${form}`, { code }, step);
        assert.ok(
          response.statusCode >= 400 && response.statusCode < 500,
          `${form} ${code.length}: ${response.statusCode}`,
        );
        assert.match(response.body, /class="error"/);
      }
      const extra = await postForm(
        ctx.testApp.app,
        `${step.path}/${form}`,
        { code: '123456', other: 'x' },
        step,
      );
      assert.equal(extra.statusCode, 400);
    }
    assert.equal(await failedAttempts(step.path), 0, 'a code that cannot be one costs no attempt');
    // The challenge still works with the right code.
    const passed = await postForm(
      ctx.testApp.app,
      `${step.path}/totp`,
      { code: await unusedCode(enrolled) },
      step,
    );
    assert.equal(passed.statusCode, 303);
  });

  test('ACC-8: removing the app and making new recovery codes need a sign-in within the last 10 minutes', async () => {
    const enrolled = await enrol();
    const user = await userOf(enrolled.who);
    await ctx.db.superuser`
      update sessions set authenticated_at = now() - interval '11 minutes' where user_id = ${user.id}::uuid`;
    for (const path of ['/profile/totp/remove', '/profile/totp/recovery-codes/regenerate']) {
      const refused = await postForm(ctx.testApp.app, path, {}, { cookie: enrolled.who.cookie });
      assert.equal(refused.statusCode, 303, path);
      assert.equal(refused.headers.location, '/login?reauth=1&next=%2Fprofile%2Ftotp');
    }
    assert.equal((await factorsOf(enrolled.who)).length, 1, 'still on');
    const [left] = await ctx.db.superuser<{ n: number }[]>`
      select count(*)::int as n from recovery_codes where user_id = ${user.id}::uuid and used_at is null`;
    assert.equal(left?.n, 10, 'the recovery codes stay');
  });
});
