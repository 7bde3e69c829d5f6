import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { LightMyRequestResponse } from 'fastify';
import { createAccount, type TestAccount } from '../../test/helpers/accounts.ts';
import { useTestApp } from '../../test/helpers/app.ts';
import {
  getPage,
  postForm,
  sessionCookie,
  setCookies,
  textOf,
  useMailWorker,
} from '../../test/helpers/pages.ts';
import { storedPasskey } from '../../test/helpers/passkeys.ts';
import { recoveryCodeHash } from '../factors/recovery-codes.ts';
import { MAX_FAILED_ATTEMPTS } from './challenges.ts';

// ACC-8, ACC-5. Attack: someone who has a user's password (phished,
// reused) signs in. With a second factor turned on they must also pass the
// step at /login/verify/:challenge: the step is bound to the browser that
// passed the password, its code is mailed and stored only as a hash, five
// wrong codes end it, tries are rate-limited, and no session exists until
// it is passed. A tenant owner can require a factor of every member, and a
// found session cannot turn a factor off without a recent sign-in.

const ctx = useTestApp();
const mailWorker = useMailWorker(ctx);

let address = 0;
/** One client address per test flow, so the per-address buckets of one test do not touch another's. */
function client(): string {
  address += 1;
  return `10.77.${address >> 8}.${address & 255}`;
}

function cookieOf(response: LightMyRequestResponse, name: string): string | undefined {
  const pair = setCookies(response)
    .map((line) => line.split(';')[0] ?? '')
    .find((p) => p.startsWith(`${name}=`));
  return pair === undefined || pair === `${name}=` ? undefined : pair;
}

async function withEmailCode(): Promise<TestAccount> {
  const account = await createAccount(ctx.db, ctx.testApp);
  const on = await postForm(
    ctx.testApp.app,
    '/profile/email-code/enable',
    {},
    { cookie: account.sessionCookie },
  );
  assert.equal(on.statusCode, 303, on.body);
  return account;
}

async function sessionsOf(account: TestAccount): Promise<number> {
  const [row] = await ctx.db.superuser<{ n: number }[]>`
    select count(*)::int as n from sessions where user_id = ${account.user.id}::uuid and revoked_at is null`;
  return row?.n ?? 0;
}

/** Signs in with the password; the second step's path and its browser cookie. */
async function passwordStep(account: TestAccount, remoteAddress = client(), next?: string) {
  const mailed = mailWorker().next('send_sign_in_code');
  const response = await postForm(
    ctx.testApp.app,
    '/login',
    { login: account.user.username, password: account.password, ...(next === undefined ? {} : { next }) },
    { remoteAddress },
  );
  assert.equal(response.statusCode, 303, response.body);
  const location = String(response.headers.location);
  assert.match(location, /^\/login\/verify\/[0-9a-f-]{36}$/);
  assert.equal(sessionCookie(response), undefined, 'no session before the second step');
  const browser = cookieOf(response, 'enclave_sign_in');
  assert.ok(browser !== undefined, 'the challenge cookie is set');
  assert.equal(await mailed, null, 'the code mail was sent');
  return { path: location, cookie: browser, remoteAddress };
}

async function mailedCode(account: TestAccount): Promise<string> {
  const [mail] = await ctx.db.superuser<{ body: string }[]>`
    select body from dev_outbox where to_address = ${account.user.email} order by created_at desc limit 1`;
  const code = /^(\d{6})$/m.exec(mail?.body ?? '')?.[1];
  assert.ok(code !== undefined, 'the mail holds a six-digit code');
  return code;
}

describe('ACC-8: a code by email after the password', () => {
  test('ACC-8: with the email factor on, the password opens a challenge, not a session; the mailed code starts the session', async () => {
    const account = await withEmailCode();
    const before = await sessionsOf(account);
    const step = await passwordStep(account, client(), '/dashboard/agents');
    assert.equal(await sessionsOf(account), before, 'no session row exists before the step is passed');
    const page = await getPage(ctx.testApp.app, step.path, { cookie: step.cookie });
    assert.equal(page.statusCode, 200);
    assert.match(textOf(page.body), /We sent a 6-digit code to .•••@example\.test/);
    const code = await mailedCode(account);
    const passed = await postForm(ctx.testApp.app, `${step.path}/email`, { code }, step);
    assert.equal(passed.statusCode, 303, passed.body);
    assert.equal(passed.headers.location, '/dashboard/agents', 'on to where the sign-in was going');
    const session = sessionCookie(passed);
    assert.ok(session !== undefined);
    assert.equal((await getPage(ctx.testApp.app, '/dashboard', { cookie: session })).statusCode, 200);
    const events = await ctx.db.superuser<{ action: string; data: Record<string, unknown> }[]>`
      select action, data from audit_events where tenant_id = ${account.user.tenant_id}::uuid
      and action in ('factor.enrolled', 'session.second_step_started', 'factor.used', 'session.login')
      order by seq`;
    assert.deepEqual(
      events.map((event) => [event.action, event.data.kind ?? event.data.second_step ?? null]),
      [
        ['factor.enrolled', 'email'],
        ['session.second_step_started', null],
        ['factor.used', 'email'],
        ['session.login', 'email'],
      ],
    );
  });

  test('ACC-8: the step offers a recovery code only to a user who holds an unused one, not for every passkey', async () => {
    const account = await createAccount(ctx.db, ctx.testApp);
    await storedPasskey(ctx.db, account.user);
    const verifyPageOf = async () => {
      const signIn = await postForm(
        ctx.testApp.app,
        '/login',
        { login: account.user.username, password: account.password },
        { remoteAddress: client() },
      );
      const location = String(signIn.headers.location);
      assert.match(location, /^\/login\/verify\//);
      const page = await getPage(ctx.testApp.app, location, { cookie: cookieOf(signIn, 'enclave_sign_in') });
      assert.equal(page.statusCode, 200);
      assert.match(page.body, /id="passkey-step"/);
      return page.body;
    };
    assert.doesNotMatch(
      await verifyPageOf(),
      /id="recovery-step"/,
      'a passkey alone brings no recovery codes',
    );
    await ctx.db.superuser`
      insert into recovery_codes (tenant_id, user_id, code_hash)
      values (${account.user.tenant_id}::uuid, ${account.user.id}::uuid, ${recoveryCodeHash('aaaaa-bbbbb')})`;
    assert.match(await verifyPageOf(), /id="recovery-step"/);
    await ctx.db
      .superuser`update recovery_codes set used_at = now() where user_id = ${account.user.id}::uuid`;
    assert.doesNotMatch(await verifyPageOf(), /id="recovery-step"/, 'every code used: no form');
  });

  test('ACC-8, ACC-9: GET /api/v1/me/sign-in-methods lists the caller’s own factors, recovery codes left and linked identities, never another user’s', async () => {
    const account = await withEmailCode();
    const other = await createAccount(ctx.db, ctx.testApp);
    await storedPasskey(ctx.db, other.user);
    const passkey = await storedPasskey(ctx.db, account.user);
    await ctx.db.superuser`
      insert into recovery_codes (tenant_id, user_id, code_hash)
      values (${account.user.tenant_id}::uuid, ${account.user.id}::uuid, ${recoveryCodeHash('ccccc-ddddd')})`;
    await ctx.db.superuser`
      insert into user_identities (tenant_id, user_id, provider, issuer, subject)
      values (${account.user.tenant_id}::uuid, ${account.user.id}::uuid, 'github', 'https://github.com', '4242')`;
    const response = await ctx.testApp.app.inject({
      method: 'GET',
      url: '/api/v1/me/sign-in-methods',
      headers: { authorization: `Bearer ${account.apiToken}` },
    });
    assert.equal(response.statusCode, 200, response.body);
    const methods = response.json<{
      password_set: boolean;
      second_factor_required: boolean;
      factors: { id: string; kind: string }[];
      recovery_codes_left: number;
      identities: { provider: string }[];
    }>();
    assert.equal(methods.password_set, true);
    assert.equal(methods.second_factor_required, false);
    assert.deepEqual(
      methods.factors.map((factor) => factor.kind),
      ['email', 'passkey'],
    );
    assert.equal(methods.factors[1]?.id, passkey);
    assert.equal(methods.recovery_codes_left, 1);
    assert.deepEqual(
      methods.identities.map((identity) => identity.provider),
      ['github'],
    );
    assert.doesNotMatch(
      response.body,
      /4242|https:\/\/github\.com/,
      'the subject and issuer stay on the server',
    );
    const anonymous = await ctx.testApp.app.inject({ method: 'GET', url: '/api/v1/me/sign-in-methods' });
    assert.equal(anonymous.statusCode, 401);
  });

  test('ACC-8: the code is stored only as a hash, and the step works once', async () => {
    const account = await withEmailCode();
    const step = await passwordStep(account);
    const code = await mailedCode(account);
    const rows = await ctx.db.superuser<{ row: string }[]>`
      select row_to_json(c)::text as row from sign_in_challenges c where user_id = ${account.user.id}::uuid`;
    assert.equal(rows.length, 1);
    assert.ok(!rows[0]?.row.includes(code), 'the plain code is nowhere in the row');
    assert.equal((await postForm(ctx.testApp.app, `${step.path}/email`, { code }, step)).statusCode, 303);
    const replay = await postForm(ctx.testApp.app, `${step.path}/email`, { code }, step);
    assert.equal(replay.statusCode, 400);
    assert.match(textOf(replay.body), /expired or was already used/);
    assert.equal(sessionCookie(replay), undefined);
  });

  test('ACC-8: the challenge is bound to the browser that passed the password: its URL alone, or with another challenge cookie, opens nothing', async () => {
    const victim = await withEmailCode();
    const step = await passwordStep(victim);
    const code = await mailedCode(victim);
    const attacker = await passwordStep(await withEmailCode());
    for (const cookie of [
      undefined,
      attacker.cookie,
      'enclave_sign_in=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA',
    ]) {
      const answer = await postForm(ctx.testApp.app, `${step.path}/email`, { code }, { cookie });
      assert.equal(answer.statusCode, 400, String(cookie));
      assert.equal(sessionCookie(answer), undefined);
      assert.equal((await getPage(ctx.testApp.app, step.path, { cookie })).statusCode, 400);
    }
    // The victim's own browser still can.
    assert.equal((await postForm(ctx.testApp.app, `${step.path}/email`, { code }, step)).statusCode, 303);
  });

  test('ACC-8: a challenge and its code last 10 minutes; an expired challenge, or an expired code, is refused', async () => {
    const account = await withEmailCode();
    const step = await passwordStep(account);
    const code = await mailedCode(account);
    const [lifetimes] = await ctx.db.superuser<{ challenge: number; code: number }[]>`
      select extract(epoch from expires_at - now())::float8 as challenge,
             extract(epoch from email_code_expires_at - now())::float8 as code
      from sign_in_challenges where user_id = ${account.user.id}::uuid`;
    assert.ok(lifetimes);
    for (const [what, seconds] of Object.entries(lifetimes)) {
      assert.ok(seconds > 540 && seconds <= 600, `the ${what} expires 10 minutes on (${seconds} s left)`);
    }
    await ctx.db.superuser`
      update sign_in_challenges set email_code_expires_at = now() - interval '1 second'
      where user_id = ${account.user.id}::uuid`;
    const stale = await postForm(ctx.testApp.app, `${step.path}/email`, { code }, step);
    assert.equal(stale.statusCode, 401, 'an expired code is a wrong one');
    await ctx.db.superuser`
      update sign_in_challenges set expires_at = now() - interval '1 second' where user_id = ${account.user.id}::uuid`;
    const dead = await postForm(ctx.testApp.app, `${step.path}/email`, { code }, step);
    assert.equal(dead.statusCode, 400);
    assert.match(textOf(dead.body), /Sign in again/);
  });

  test(`ACC-8: ${MAX_FAILED_ATTEMPTS} wrong codes end the challenge; each is an audit event; the right code after that is refused`, async () => {
    const account = await withEmailCode();
    const step = await passwordStep(account);
    const code = await mailedCode(account);
    const wrong = code === '000000' ? '111111' : '000000';
    for (let k = 1; k <= MAX_FAILED_ATTEMPTS; k += 1) {
      const answer = await postForm(ctx.testApp.app, `${step.path}/email`, { code: wrong }, step);
      assert.equal(answer.statusCode, 401, answer.body);
    }
    const late = await postForm(ctx.testApp.app, `${step.path}/email`, { code }, step);
    assert.equal(late.statusCode, 400);
    assert.equal(sessionCookie(late), undefined);
    const [failed] = await ctx.db.superuser<{ n: number }[]>`
      select count(*)::int as n from audit_events
      where tenant_id = ${account.user.tenant_id}::uuid and action = 'factor.failed'`;
    assert.equal(failed?.n, MAX_FAILED_ATTEMPTS);
    // Signing in again from the start works.
    const again = await passwordStep(account);
    const fresh = await mailedCode(account);
    assert.equal(
      (await postForm(ctx.testApp.app, `${again.path}/email`, { code: fresh }, again)).statusCode,
      303,
    );
  });

  test('ACC-5: 50 wrong codes in a row are rate-limited (429 with Retry-After within 15 minutes), never a 500', async () => {
    const account = await withEmailCode();
    const statuses: number[] = [];
    let retryAfter: number | undefined;
    for (let round = 0; round < 10 && statuses.length < 50; round += 1) {
      const step = await passwordStep(account);
      for (let k = 0; k < MAX_FAILED_ATTEMPTS; k += 1) {
        const answer = await postForm(ctx.testApp.app, `${step.path}/email`, { code: '000001' }, step);
        statuses.push(answer.statusCode);
        if (answer.statusCode === 429) retryAfter = Number(answer.headers['retry-after']);
      }
    }
    assert.equal(statuses.length, 50);
    assert.ok(
      statuses.every((status) => [400, 401, 429].includes(status)),
      statuses.join(','),
    );
    assert.ok(statuses.includes(429), 'the account bucket ran out');
    assert.ok(retryAfter !== undefined && retryAfter > 0 && retryAfter <= 15 * 60, String(retryAfter));
    assert.equal(await sessionsOf(account), 1, 'only the session made at signup');
  });

  test('ACC-8: bad input on the step: a 10 kB code, NUL bytes, letters, a non-uuid challenge: 4xx pages, never 500', async () => {
    const account = await withEmailCode();
    const step = await passwordStep(account);
    for (const code of ['x'.repeat(10_000), '12\u000034', 'abcdef', '', '1234567']) {
      const answer = await postForm(ctx.testApp.app, `${step.path}/email`, { code }, step);
      assert.ok([400, 401].includes(answer.statusCode), `${answer.statusCode} for ${code.slice(0, 10)}`);
    }
    for (const path of ['/login/verify/not-a-uuid', '/login/verify/../../etc', `${step.path}x`]) {
      const answer = await getPage(ctx.testApp.app, path, { cookie: step.cookie });
      assert.ok(answer.statusCode === 400 || answer.statusCode === 404, `${answer.statusCode} for ${path}`);
    }
    const resend = await postForm(ctx.testApp.app, '/login/verify/not-a-uuid/email/send', {}, step);
    assert.equal(resend.statusCode, 400);
  });

  test('ACC-8: a new code can be sent twice more; the old one stops working', async () => {
    const account = await withEmailCode();
    const step = await passwordStep(account);
    const first = await mailedCode(account);
    const mailed = mailWorker().next('send_sign_in_code');
    const resent = await postForm(ctx.testApp.app, `${step.path}/email/send`, {}, step);
    assert.equal(resent.statusCode, 200, resent.body);
    assert.equal(await mailed, null);
    const second = await mailedCode(account);
    if (second !== first) {
      assert.equal(
        (await postForm(ctx.testApp.app, `${step.path}/email`, { code: first }, step)).statusCode,
        401,
      );
    }
    const third = mailWorker().next('send_sign_in_code');
    assert.equal((await postForm(ctx.testApp.app, `${step.path}/email/send`, {}, step)).statusCode, 200);
    await third;
    const refused = await postForm(ctx.testApp.app, `${step.path}/email/send`, {}, step);
    assert.equal(refused.statusCode, 429, 'three codes per challenge');
    assert.equal(
      (await postForm(ctx.testApp.app, `${step.path}/email`, { code: await mailedCode(account) }, step))
        .statusCode,
      303,
    );
  });
});

describe('ACC-8: recent sign-in and the tenant rule', () => {
  async function ageSignIn(account: TestAccount, minutes: number): Promise<void> {
    await ctx.db.superuser`
      update sessions set authenticated_at = now() - make_interval(mins => ${minutes})
      where id = ${account.sessionId}::uuid`;
  }

  test('ACC-8: turning off a factor, minting an API token and changing the email need a sign-in within 10 minutes', async () => {
    const account = await withEmailCode();
    await ageSignIn(account, 11);
    const off = await postForm(
      ctx.testApp.app,
      '/profile/email-code/disable',
      {},
      { cookie: account.sessionCookie },
    );
    assert.equal(off.statusCode, 303);
    assert.equal(off.headers.location, '/login?reauth=1&next=%2Fprofile');
    const [still] = await ctx.db.superuser<{ n: number }[]>`
      select count(*)::int as n from user_factors where user_id = ${account.user.id}::uuid`;
    assert.equal(still?.n, 1, 'the factor is still on');
    const token = await ctx.testApp.app.inject({
      method: 'POST',
      url: '/api/v1/tokens',
      headers: { cookie: account.sessionCookie, origin: new URL(ctx.testApp.config.publicUrl).origin },
      payload: { name: 'late', scope: 'read' },
    });
    assert.equal(token.statusCode, 403, token.body);
    assert.equal(token.json<{ code: string }>().code, 'reauth_required');
    const email = await postForm(
      ctx.testApp.app,
      '/profile/email',
      { email: 'new-address@example.test', current_password: account.password },
      { cookie: account.sessionCookie },
    );
    assert.equal(email.statusCode, 303);
    assert.match(String(email.headers.location), /^\/login\?reauth=1/);
    // The reauth page asks a signed-in user to sign in again instead of sending them on.
    const reauth = await getPage(ctx.testApp.app, '/login?reauth=1&next=%2Fprofile', {
      cookie: account.sessionCookie,
    });
    assert.equal(reauth.statusCode, 200);
    assert.match(textOf(reauth.body), /Sign in again to go on/);
  });

  test('ACC-8: a sign-in passed in full within 10 minutes can turn the factor off', async () => {
    const account = await withEmailCode();
    const step = await passwordStep(account);
    const passed = await postForm(
      ctx.testApp.app,
      `${step.path}/email`,
      { code: await mailedCode(account) },
      step,
    );
    const cookie = sessionCookie(passed);
    const off = await postForm(ctx.testApp.app, '/profile/email-code/disable', {}, { cookie });
    assert.equal(off.headers.location, '/profile?notice=email-code-off');
    const signIn = await postForm(ctx.testApp.app, '/login', {
      login: account.user.username,
      password: account.password,
    });
    assert.equal(signIn.headers.location, '/dashboard', 'no second step once the factor is off');
  });

  test('ACC-8: an owner with a factor of their own requires one of every member; a member without one reaches only /profile until they set one up', async () => {
    const owner = await createAccount(ctx.db, ctx.testApp);
    const member = await createAccount(ctx.db, ctx.testApp, { kind: 'member', tenantOf: owner });
    const origin = new URL(ctx.testApp.config.publicUrl).origin;
    const put = (account: TestAccount, required: boolean) =>
      ctx.testApp.app.inject({
        method: 'PUT',
        url: '/api/v1/tenant/sign-in-policy',
        headers: { cookie: account.sessionCookie, origin },
        payload: { require_second_factor: required },
      });
    const refused = await put(member, true);
    assert.equal(refused.statusCode, 403);
    assert.equal(refused.json<{ code: string }>().code, 'forbidden');
    const ownerFirst = await put(owner, true);
    assert.equal(ownerFirst.statusCode, 400, 'the owner needs a factor of their own first');
    await postForm(ctx.testApp.app, '/profile/email-code/enable', {}, { cookie: owner.sessionCookie });
    assert.equal((await put(owner, true)).statusCode, 200);
    const dashboard = await getPage(ctx.testApp.app, '/dashboard', { cookie: member.sessionCookie });
    assert.equal(dashboard.statusCode, 303);
    assert.equal(dashboard.headers.location, '/profile?notice=second-factor-required');
    const api = await ctx.testApp.app.inject({
      method: 'GET',
      url: '/api/v1/agents',
      headers: { authorization: `Bearer ${member.apiToken}` },
    });
    assert.equal(api.statusCode, 403);
    assert.equal(api.json<{ code: string }>().code, 'second_factor_required');
    const profile = await getPage(ctx.testApp.app, '/profile', { cookie: member.sessionCookie });
    assert.equal(profile.statusCode, 200);
    assert.match(textOf(profile.body), /Your tenant requires a second step at sign-in/);
    const on = await postForm(
      ctx.testApp.app,
      '/profile/email-code/enable',
      {},
      { cookie: member.sessionCookie },
    );
    assert.equal(on.statusCode, 303);
    assert.equal(
      (await getPage(ctx.testApp.app, '/dashboard', { cookie: member.sessionCookie })).statusCode,
      200,
    );
    const [changed] = await ctx.db.superuser<{ n: number }[]>`
      select count(*)::int as n from audit_events
      where tenant_id = ${owner.user.tenant_id}::uuid and action = 'tenant.sign_in_policy_changed'`;
    assert.equal(changed?.n, 1);
    assert.equal((await put(owner, false)).statusCode, 200);
  });

  test('ACC-8: the email factor needs a confirmed address', async () => {
    const account = await createAccount(ctx.db, ctx.testApp);
    await ctx.db.superuser`update users set email_verified = false where id = ${account.user.id}::uuid`;
    const on = await postForm(
      ctx.testApp.app,
      '/profile/email-code/enable',
      {},
      { cookie: account.sessionCookie },
    );
    assert.equal(on.statusCode, 400);
    assert.match(textOf(on.body), /Confirm your email address first/);
  });
});
