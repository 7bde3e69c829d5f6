import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createAccount, type TestAccount, uniqueName } from '../../test/helpers/accounts.ts';
import { useTestApp } from '../../test/helpers/app.ts';
import {
  getPage,
  latestMail,
  PASSWORD,
  postForm,
  sessionCookie,
  textOf,
  useMailWorker,
} from '../../test/helpers/pages.ts';
import { PLATFORM_TENANT } from '../audit/append.ts';

// Attack: an owner of any tenant invites an address and learns from what
// follows whether that person has an account anywhere (item 7); or an
// address is shown as verified although no link sent to it was ever used,
// because the invite's link was also shown to its maker, or the invite was
// bound to no address at all (item 6).
//
// Member invites go out through the real job queue and mailer (the dev
// outbox); the tests read the links from the mail, as the invitee would.

const ctx = useTestApp();
const mail = useMailWorker(ctx);

/** Signs up through the page with the invite `token` for `email`; the new session's cookie. */
async function signUpWith(token: string, email: string, name: string): Promise<string> {
  const joined = await postForm(ctx.testApp.app, '/signup', {
    invite: token,
    email,
    username: uniqueName(name),
    password: PASSWORD,
  });
  assert.equal(joined.statusCode, 303, joined.body);
  const cookie = sessionCookie(joined);
  assert.ok(cookie !== undefined);
  return cookie;
}

function api(account: TestAccount, method: 'GET' | 'POST', url: string, body?: unknown) {
  return ctx.testApp.app.inject({
    method,
    url,
    headers: {
      authorization: `Bearer ${account.apiToken}`,
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    ...(body === undefined ? {} : { payload: JSON.stringify(body) }),
  });
}

/** An owner invites `email` through the API; resolves once the invite mail has been sent. */
async function inviteByMail(owner: TestAccount, email: string) {
  const sent = mail().next('send_invite_email');
  const response = await api(owner, 'POST', '/api/v1/invites', { email });
  assert.equal(await sent, null, 'the invite mail job succeeded');
  return response;
}

async function inviteMail(to: string): Promise<{ subject: string; body: string; token: string }> {
  const [row] = await ctx.db.superuser<{ subject: string; body: string }[]>`
    select subject, body from dev_outbox where to_address = ${to} order by created_at desc limit 1`;
  assert.ok(row !== undefined, `a mail to ${to}`);
  const token = /\/signup\?invite=(enc_inv_[0-9A-Za-z]+)/.exec(row.body)?.[1];
  assert.ok(token !== undefined, `an invite link in the mail to ${to}: ${row.body}`);
  return { ...row, token };
}

async function mailCount(to: string): Promise<number> {
  const [row] = await ctx.db.superuser<{ n: number }[]>`
    select count(*)::int as n from dev_outbox where to_address = ${to}`;
  return row?.n ?? 0;
}

async function me(cookie: string): Promise<{ email: string; email_verified: boolean }> {
  const response = await ctx.testApp.app.inject({ method: 'GET', url: '/api/v1/me', headers: { cookie } });
  assert.equal(response.statusCode, 200, response.body);
  return response.json();
}

describe('email verified only by a mailed link', () => {
  test('ACC-1: a member invite is mailed through the job queue; its link is in the mail only, mailed_at records it, and signing up with it verifies the address', async () => {
    const owner = await createAccount(ctx.db, ctx.testApp);
    const email = `${uniqueName('joiner')}@example.test`;
    const created = await inviteByMail(owner, email);
    assert.equal(created.statusCode, 201, created.body);
    assert.ok(!created.body.includes('enc_inv_'), 'the inviter never sees the link');
    const { token, subject } = await inviteMail(email);
    assert.match(subject, /invited to join/);
    const [row] = await ctx.db.superuser<{ mailed: boolean }[]>`
      select mailed_at is not null as mailed from invites where email = ${email}`;
    assert.equal(row?.mailed, true);

    const cookie = await signUpWith(token, email, 'joiner');
    assert.deepEqual(await me(cookie).then((m) => [m.email, m.email_verified]), [email, true]);
  });

  test('ACC-1: a signup invite shown to the operator who made it proves nothing: the address stays unverified until the user asks for a link from /profile and uses it', async () => {
    const operator = await createAccount(ctx.db, ctx.testApp, { kind: 'operator' });
    const email = `${uniqueName('tenant')}@example.test`;
    const created = await api(operator, 'POST', '/api/v1/invites', { email, kind: 'tenant' });
    assert.equal(created.statusCode, 201, created.body);
    const token = new URL(created.json<{ link: string }>().link).searchParams.get('invite') ?? '';
    const cookie = await signUpWith(token, email, 'tenant');
    assert.equal((await me(cookie)).email_verified, false);
    const profile = textOf((await getPage(ctx.testApp.app, '/profile', { cookie })).body);
    assert.match(profile, new RegExp(`${email.replace('.', '\\.')} \\(not verified\\)`));
    assert.match(profile, /Send a confirmation link/);

    const sent = mail().next('send_verification_email');
    const asked = await postForm(ctx.testApp.app, '/profile/email/verify', {}, { cookie });
    assert.equal(asked.statusCode, 303, asked.body);
    assert.equal(asked.headers.location, '/profile?notice=verification-sent');
    assert.equal(await sent, null, 'the verification mail job succeeded');
    const link = await latestMail(ctx.db, email);
    assert.equal((await me(cookie)).email_verified, false, 'asking is not verifying');
    const used = await postForm(ctx.testApp.app, `/verify-email/${link.token}`, {});
    assert.equal(used.statusCode, 200, used.body);
    assert.deepEqual(await me(cookie).then((m) => [m.email, m.email_verified]), [email, true]);
    assert.match(textOf((await getPage(ctx.testApp.app, '/profile', { cookie })).body), /\(verified\)/);
    // The link works once; a verified address has nothing left to confirm.
    assert.equal((await postForm(ctx.testApp.app, `/verify-email/${link.token}`, {})).statusCode, 400);
    assert.equal((await postForm(ctx.testApp.app, '/profile/email/verify', {}, { cookie })).statusCode, 400);
  });
});

describe('no account enumeration through invites', () => {
  test('ACC-1: the inviter, the link opener and the mail: inviting an address that has an account looks like inviting one that has none, makes no account, and mails that address instead', async () => {
    const owner = await createAccount(ctx.db, ctx.testApp);
    const existing = await createAccount(ctx.db, ctx.testApp);
    const taken = existing.user.email;
    const fresh = `${uniqueName('fresh')}@example.test`;

    // The inviter's view: the same status and the same fields for both.
    const shapes = [];
    for (const email of [taken, fresh]) {
      const created = await inviteByMail(owner, email);
      assert.equal(created.statusCode, 201, created.body);
      const body = created.json<Record<string, unknown>>();
      shapes.push(Object.keys(body).sort());
      assert.equal(body.state, 'pending');
    }
    assert.deepEqual(shapes[0], shapes[1]);
    const takenMail = await inviteMail(taken);
    const freshMail = await inviteMail(fresh);

    // The link opener's view: the same status and the same page, but for the address and token.
    const pageFor = async (token: string, email: string) => {
      const response = await getPage(ctx.testApp.app, `/signup?invite=${token}`);
      return [response.statusCode, response.body.replaceAll(token, 'TOKEN').replaceAll(email, 'EMAIL')];
    };
    assert.deepEqual(await pageFor(takenMail.token, taken), await pageFor(freshMail.token, fresh));

    const tenantEventsBefore = await tenantEvents(owner.user.tenant_id);
    const told = mail().next('send_account_exists_email');
    const submitted = await postForm(ctx.testApp.app, '/signup', {
      invite: takenMail.token,
      email: taken,
      username: uniqueName('second'),
      password: PASSWORD,
    });
    assert.equal(submitted.statusCode, 200, submitted.body);
    assert.equal(sessionCookie(submitted), undefined, 'no session: no account was made');
    assert.match(textOf(submitted.body), /Check your email/);
    assert.ok(!/already|exists/i.test(textOf(submitted.body)), 'the page does not say why');
    const [accounts] = await ctx.db.superuser<{ n: number }[]>`
      select count(*)::int as n from users where email = ${taken}`;
    assert.equal(accounts?.n, 1);

    // The mail: to that address, saying an account exists, with no link to sign up with.
    assert.equal(await told, null, 'the account-exists mail job succeeded');
    assert.equal(await mailCount(taken), 2, 'the invite, then the notice');
    const [notice] = await ctx.db.superuser<{ subject: string; body: string }[]>`
      select subject, body from dev_outbox where to_address = ${taken} order by created_at desc limit 1`;
    assert.equal(notice?.subject, 'You already have an Enclave account');
    assert.match(notice?.body ?? '', /ask whoever invited you to add\s+your existing account/);
    assert.ok(!notice?.body.includes('enc_inv_'));

    // The inviter's view afterwards: both invites still pending, as if the
    // invitee had ignored the mail, and nothing new in the tenant's audit log.
    const listed = await api(owner, 'GET', '/api/v1/invites');
    const states = listed
      .json<{ invites: { email: string; state: string }[] }>()
      .invites.filter((invite) => invite.email === taken || invite.email === fresh)
      .map((invite) => invite.state);
    assert.deepEqual(states, ['pending', 'pending']);
    assert.deepEqual(await tenantEvents(owner.user.tenant_id), tenantEventsBefore);
    const [platform] = await ctx.db.superuser<{ n: number }[]>`
      select count(*)::int as n from audit_events
      where tenant_id = ${PLATFORM_TENANT}::uuid and action = 'invite.existing_account_mailed'`;
    assert.equal(platform?.n, 1, 'recorded in the platform chain only');
  });
});

async function tenantEvents(tenantId: string): Promise<string[]> {
  const rows = await ctx.db.superuser<{ action: string }[]>`
    select action from audit_events where tenant_id = ${tenantId}::uuid order by seq`;
  return rows.map((row) => row.action);
}
