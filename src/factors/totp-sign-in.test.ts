import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { useTestApp } from '../../test/helpers/app.ts';
import { getPage, postForm, sessionCookie, textOf } from '../../test/helpers/pages.ts';
import { type Enrolled, totpDriver } from '../../test/helpers/totp.ts';
import { withTenant } from '../db/tenant.ts';
import { createTotpService } from './totp-service.ts';

// TOTP and recovery codes at sign-in (ACC-8). Attack: someone with the
// password, or a code seen over a shoulder, tries to pass the second step;
// a code works in its window once, never again and never after a later one,
// a recovery code works once, and a malformed one costs nothing and breaks
// nothing.

const ctx = useTestApp();
const { enrol, userOf, factorsOf, shownCodes, passwordStep, unusedCode, signOut, failedAttempts } =
  totpDriver(ctx);

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
    // A window boundary may pass between reading the clock and the server's check, making the
    // code two steps old: that try proves nothing, and the next window tries again.
    for (let attempt = 1; ; attempt++) {
      const first = await passwordStep(enrolled.who);
      const now = enrolled.phone.step();
      // The factor was last used minutes ago: the previous window is later than its last step.
      await ctx.db.superuser`
        update totp_secrets set last_used_step = ${(now - 10n).toString()}::bigint where user_id = ${user.id}::uuid`;
      const previous = enrolled.phone.codeAt(now - 1n);
      const passed = await postForm(ctx.testApp.app, `${first.path}/totp`, { code: previous }, first);
      if (enrolled.phone.step() !== now && attempt < 3) continue;
      assert.equal(passed.statusCode, 303);
      const second = await passwordStep(enrolled.who);
      const twice = await postForm(ctx.testApp.app, `${second.path}/totp`, { code: previous }, second);
      assert.equal(twice.statusCode, 401);
      assert.equal(sessionCookie(twice), undefined);
      return;
    }
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
