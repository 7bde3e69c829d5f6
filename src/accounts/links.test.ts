import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { before, beforeEach, describe, test } from 'node:test';
import { useTestApp } from '../../test/helpers/app.ts';
import {
  getPage,
  latestMail,
  PASSWORD,
  postForm,
  sessionCookie,
  signUp,
  useMailWorker,
} from '../../test/helpers/pages.ts';

// ACC-7: verification and recovery links are minted by the mail job, stored
// only as SHA-256, work once and expire after 60 minutes; /recover answers
// the same whether or not the account exists. A real worker delivers the
// mail into the dev outbox, and the tests follow the link in it.

const ctx = useTestApp();
const mail = useMailWorker(ctx);

const NEW_PASSWORD = 'a brand new passphrase 42';
const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

/** Asks for recovery and waits until its mail job has run. */
async function recover(login: string, email: string): Promise<string> {
  const sent = mail().next('send_recovery_email');
  const response = await postForm(ctx.testApp.app, '/recover', { login, email });
  assert.equal(response.statusCode, 200);
  assert.equal(await sent, null, 'the mail job succeeded');
  return (await latestMail(ctx.db, email)).token;
}

async function signIn(login: string, password: string): Promise<number> {
  return (await postForm(ctx.testApp.app, '/login', { login, password })).statusCode;
}

describe('account recovery', () => {
  let carol: { cookie: string };
  before(async () => {
    carol = await signUp(ctx.testApp.app, ctx.db, { username: 'carol', email: 'carol@example.com' });
  });
  // Each test asks for carol's recovery again; the per-login bucket has its own test below.
  beforeEach(async () => {
    await ctx.db.superuser`delete from rate_limits where key like 'recover_account%'`;
  });

  test('ACC-5: recovery requests naming one login are limited across client addresses, known or not', async () => {
    for (const login of ['carol', 'nobody-here']) {
      const statuses: number[] = [];
      for (let attempt = 0; attempt < 4; attempt += 1) {
        // postForm gives every request a fresh client address, so only the per-login bucket can stop it.
        statuses.push(
          (await postForm(ctx.testApp.app, '/recover', { login, email: 'x@example.com' })).statusCode,
        );
      }
      assert.deepEqual(statuses, [200, 200, 200, 429], login);
    }
  });

  test('ACC-7: /recover answers the same page for an existing and an unknown account, differing only in the support reference', async () => {
    const sent = mail().next('send_recovery_email');
    const attempts = [
      { login: 'carol', email: 'Carol@Example.com', matches: true },
      { login: 'nobody-at-all', email: 'nobody@example.com', matches: false },
      { login: 'carol', email: 'not-carol@example.com', matches: false },
    ];
    const answers: { status: number; body: string; cacheControl: unknown }[] = [];
    const references: string[] = [];
    for (const attempt of attempts) {
      const response = await postForm(ctx.testApp.app, '/recover', {
        login: attempt.login,
        email: attempt.email,
      });
      const reference = /REC-[0-9A-Z]{4}-[0-9A-Z]{4}/.exec(response.body)?.[0];
      assert.ok(reference !== undefined, 'the page shows a support reference');
      references.push(reference);
      answers.push({
        status: response.statusCode,
        body: response.body.replace(reference, 'REC-XXXX-XXXX'),
        cacheControl: response.headers['cache-control'],
      });
    }
    assert.equal(answers[0]?.status, 200);
    assert.match(answers[0]?.body ?? '', /If an account matches, we have sent a link/);
    assert.deepEqual(answers[1], answers[0]);
    assert.deepEqual(answers[2], answers[0]);
    assert.equal(new Set(references).size, 3, 'each request has its own reference');

    // Each request is on record for support, with whether it matched.
    const rows = await ctx.db.superuser<{ reference: string; matched: boolean }[]>`
      select reference, matched from recovery_requests where reference = any(${references}::text[])`;
    const matched = Object.fromEntries(rows.map((row) => [row.reference, row.matched]));
    assert.deepEqual(
      references.map((reference) => matched[reference]),
      attempts.map((attempt) => attempt.matches),
    );
    // Only the matching request mails a link, to the account's address, quoting its reference.
    assert.equal(await sent, null);
    const message = await latestMail(ctx.db, 'carol@example.com');
    assert.match(message.body, new RegExp(`Support reference: ${references[0]}`));
    const [others] = await ctx.db.superuser<{ count: number }[]>`
      select count(*)::int as count from dev_outbox where to_address <> 'carol@example.com'`;
    assert.equal(others?.count, 0);
  });

  test('ACC-7: a recovery link sets a new password once and signs out every session; a second use fails', async () => {
    const other = sessionCookie(
      await postForm(ctx.testApp.app, '/login', { login: 'carol', password: PASSWORD }),
    );
    assert.ok(other !== undefined);
    const token = await recover('carol', 'carol@example.com');
    const form = await getPage(ctx.testApp.app, `/recover/${token}`);
    assert.equal(form.statusCode, 200);
    assert.equal(form.headers['cache-control'], 'no-store');
    assert.match(form.body, /<label for="f-new_password">New password<\/label>/);

    const reset = await postForm(ctx.testApp.app, `/recover/${token}`, { new_password: NEW_PASSWORD });
    assert.equal(reset.statusCode, 303);
    assert.equal(reset.headers.location, '/login?notice=password-reset');
    for (const cookie of [carol.cookie, other]) {
      const page = await getPage(ctx.testApp.app, '/dashboard', { cookie });
      assert.equal(page.statusCode, 303, 'every session of the account is signed out');
    }
    assert.equal(await signIn('carol', PASSWORD), 401);
    assert.equal(await signIn('carol', NEW_PASSWORD), 303);

    const again = await postForm(ctx.testApp.app, `/recover/${token}`, {
      new_password: 'yet another passphrase',
    });
    assert.equal(again.statusCode, 400);
    assert.match(again.body, /This link is not valid or has expired\./);
    assert.equal((await getPage(ctx.testApp.app, `/recover/${token}`)).statusCode, 400);
    assert.equal(await signIn('carol', NEW_PASSWORD), 303, 'the second use changed nothing');
  });

  test('ACC-7: an expired recovery link fails and changes nothing', async () => {
    const token = await recover('carol', 'carol@example.com');
    const expired = await ctx.db.superuser`
      update email_tokens set expires_at = now() - interval '1 second' where token_hash = ${sha256(token)}`;
    assert.equal(expired.count, 1);
    const form = await getPage(ctx.testApp.app, `/recover/${token}`);
    assert.equal(form.statusCode, 400);
    assert.match(form.body, /This link is not valid or has expired\./);
    assert.ok(!form.body.includes('new_password'), 'no password form');
    const posted = await postForm(ctx.testApp.app, `/recover/${token}`, {
      new_password: 'an expired attempt 123',
    });
    assert.equal(posted.statusCode, 400);
    assert.equal(await signIn('carol', NEW_PASSWORD), 303, 'the password is unchanged');
  });

  test('ACC-7: the link token is only in the mail: its row keeps SHA-256 and a 60-minute expiry, no table holds it', async () => {
    const token = await recover('carol', 'carol@example.com');
    assert.match(token, /^enc_rec_[0-9A-Za-z]{43}$/);
    const [row] = await ctx.db.superuser<{ token_hash: string; minutes: number }[]>`
      select token_hash, extract(epoch from expires_at - now())::int / 60 as minutes
      from email_tokens where token_hash = ${sha256(token)}`;
    assert.ok(row !== undefined, 'the row holds the token’s SHA-256');
    assert.ok(row.minutes >= 58 && row.minutes <= 60, `expires in ${row.minutes} minutes`);
    // Every table but the dev outbox (which is the mail), searched as text for the token.
    const tables = await ctx.db.superuser<{ name: string }[]>`
      select format('%I.%I', schemaname, tablename) as name from pg_tables
      where schemaname in ('enclave', 'graphile_worker') and tablename <> 'dev_outbox'`;
    assert.ok(tables.some((table) => table.name === 'enclave.email_tokens'));
    for (const { name } of tables) {
      const [hit] = await ctx.db.superuser.unsafe<{ count: number }[]>(
        `select count(*)::int as count from ${name} as t where strpos(t::text, $1) > 0`,
        [token],
      );
      assert.equal(hit?.count, 0, `${name} holds the token`);
    }
    // A token of the wrong kind or shape is no link at all.
    const verifyShaped = token.replace('enc_rec_', 'enc_ver_');
    assert.equal((await getPage(ctx.testApp.app, `/recover/${verifyShaped}`)).statusCode, 400);
    assert.equal((await getPage(ctx.testApp.app, `/verify-email/${token}`)).statusCode, 400);
    assert.equal((await getPage(ctx.testApp.app, '/recover/not-a-token')).statusCode, 400);
  });

  test('ACC-7: a weak new password is explained on the form and does not use up the link', async () => {
    const token = await recover('carol', 'carol@example.com');
    const weak = await postForm(ctx.testApp.app, `/recover/${token}`, { new_password: 'short' });
    assert.equal(weak.statusCode, 400);
    assert.match(weak.body, /The new password must be at least 12 characters\./);
    const extra = await postForm(ctx.testApp.app, `/recover/${token}`, {
      new_password: NEW_PASSWORD,
      admin: '1',
    });
    assert.equal(extra.statusCode, 400);
    assert.match(extra.body, /a field this page does not accept/);
    const reset = await postForm(ctx.testApp.app, `/recover/${token}`, {
      new_password: 'the third passphrase 333',
    });
    assert.equal(reset.statusCode, 303);
  });
});

describe('email verification', () => {
  let dave: { cookie: string };
  let erin: { cookie: string };
  before(async () => {
    dave = await signUp(ctx.testApp.app, ctx.db, { username: 'dave', email: 'dave@example.com' });
    erin = await signUp(ctx.testApp.app, ctx.db, { username: 'erin', email: 'erin@example.com' });
  });

  async function changeEmail(email: string, password = PASSWORD, cookie = dave.cookie) {
    return postForm(ctx.testApp.app, '/profile/email', { email, current_password: password }, { cookie });
  }

  async function emailState(username = 'dave') {
    const [row] = await ctx.db.superuser<
      { email: string; pending_email: string | null; email_verified: boolean }[]
    >`
      select email, pending_email, email_verified from users where username = ${username}`;
    return row;
  }

  test('ACC-7: a new address stays pending until its link is confirmed by POST; the link works once', async () => {
    const sent = mail().next('send_verification_email');
    const response = await changeEmail('Dave.New@example.com');
    assert.equal(response.statusCode, 303);
    assert.equal(response.headers.location, '/profile?notice=email-pending');
    assert.equal(await sent, null);
    assert.deepEqual(await emailState(), {
      email: 'dave@example.com',
      pending_email: 'dave.new@example.com',
      email_verified: true,
    });
    assert.equal(await signIn('dave.new@example.com', PASSWORD), 401, 'a pending address does not sign in');

    const { token, subject } = await latestMail(ctx.db, 'dave.new@example.com');
    assert.match(subject, /Confirm your email address/);
    assert.match(token, /^enc_ver_/);
    const confirm = await getPage(ctx.testApp.app, `/verify-email/${token}`);
    assert.equal(confirm.statusCode, 200);
    assert.match(confirm.body, new RegExp(`<form method="post" action="/verify-email/${token}">`));
    assert.equal((await emailState())?.pending_email, 'dave.new@example.com', 'a GET changes nothing');
    // Opened in the browser that is signed in, the page's header names who.
    const signedInConfirm = await getPage(ctx.testApp.app, `/verify-email/${token}`, { cookie: dave.cookie });
    assert.match(signedInConfirm.body, /<div class="who"><span>[^<]* · dave<\/span>/);

    const verified = await postForm(ctx.testApp.app, `/verify-email/${token}`, {});
    assert.equal(verified.statusCode, 200);
    assert.match(verified.body, /Email address verified/);
    assert.deepEqual(await emailState(), {
      email: 'dave.new@example.com',
      pending_email: null,
      email_verified: true,
    });
    assert.equal(await signIn('dave.new@example.com', PASSWORD), 303);

    const again = await postForm(ctx.testApp.app, `/verify-email/${token}`, {});
    assert.equal(again.statusCode, 400);
    assert.match(again.body, /This link is not valid or has expired\./);
  });

  test('ACC-7: a superseded or expired verification link fails', async () => {
    let sent = mail().next('send_verification_email');
    await changeEmail('first-choice@example.com');
    assert.equal(await sent, null);
    const first = await latestMail(ctx.db, 'first-choice@example.com');
    sent = mail().next('send_verification_email');
    await changeEmail('second-choice@example.com');
    assert.equal(await sent, null);
    const second = await latestMail(ctx.db, 'second-choice@example.com');

    const superseded = await postForm(ctx.testApp.app, `/verify-email/${first.token}`, {});
    assert.equal(superseded.statusCode, 400);
    await ctx.db.superuser`
      update email_tokens set expires_at = now() - interval '1 second' where token_hash = ${sha256(second.token)}`;
    const expired = await postForm(ctx.testApp.app, `/verify-email/${second.token}`, {});
    assert.equal(expired.statusCode, 400);
    assert.match(expired.body, /This link is not valid or has expired\./);
    assert.equal((await emailState())?.email, 'dave.new@example.com', 'the address did not change');
  });

  test('ACC-7: an email change needs the current password and an address no account has', async () => {
    const [before] = await ctx.db.superuser<
      { count: number }[]
    >`select count(*)::int as count from email_tokens`;
    const wrong = await changeEmail('third@example.com', 'not my password at all', erin.cookie);
    assert.equal(wrong.statusCode, 400);
    assert.match(
      wrong.body,
      /<p class="error" id="f-email-current-error">The current password is not correct\.<\/p>/,
    );
    const taken = await changeEmail('DAVE.NEW@example.com', PASSWORD, erin.cookie);
    assert.equal(taken.statusCode, 400);
    assert.match(taken.body, /An account with that email address already exists\./);
    const invalid = await changeEmail('not an address', PASSWORD, erin.cookie);
    assert.equal(invalid.statusCode, 400);
    assert.match(invalid.body, /Enter a valid email address\./);
    const [after] = await ctx.db.superuser<
      { count: number }[]
    >`select count(*)::int as count from email_tokens`;
    assert.equal(after?.count, before?.count, 'no link was queued');
    assert.equal((await emailState('erin'))?.pending_email, null);
  });
});

test('OPS-1: neither the server nor the worker logged a password or a link token during these flows', () => {
  const lines = [...ctx.testApp.logLines(), ...mail().logLines()];
  assert.ok(
    lines.some((line) => line.includes('"route":"/recover/:token"')),
    'requests are logged by route',
  );
  assert.ok(
    lines.some((line) => line.includes('"task":"send_recovery_email"')),
    'mail jobs are logged by task',
  );
  for (const secret of [PASSWORD, NEW_PASSWORD, 'enc_rec_', 'enc_ver_']) {
    assert.ok(!lines.some((line) => line.includes(secret)), `a log line holds ${secret.slice(0, 8)}…`);
  }
});
