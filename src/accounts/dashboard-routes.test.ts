import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { before, describe, test } from 'node:test';
import { mailedInviteToken } from '../../test/helpers/accounts.ts';
import { useTestApp } from '../../test/helpers/app.ts';
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

// The signed-in pages: API tokens minted, shown once and revoked (ACC-10);
// sessions listed and revoked (ACC-3); password change (ACC-11); invites
// (ACC-1); and another tenant's ids answered like ids that do not exist (TEN-4).

const ctx = useTestApp();

const TOKENS = '/dashboard/settings/tokens';
const INVITES = '/dashboard/settings/invites';

function ids(body: string, pattern: RegExp): string[] {
  return [...body.matchAll(pattern)].map((match) => match[1] ?? '');
}
const tokenIds = (body: string) => ids(body, /\/dashboard\/settings\/tokens\/([0-9a-f-]{36})\/revoke/g);
const sessionIds = (body: string) => ids(body, /\/profile\/sessions\/([0-9a-f-]{36})\/revoke/g);

async function me(token: string): Promise<number> {
  const response = await ctx.testApp.app.inject({
    method: 'GET',
    url: '/api/v1/me',
    headers: { authorization: `Bearer ${token}` },
  });
  return response.statusCode;
}

/** A form that makes a secret answers 303; the page it names shows the secret, once. */
async function followed(
  posted: { statusCode: number; headers: Record<string, unknown> },
  who: { cookie: string },
) {
  assert.equal(posted.statusCode, 303);
  const location = String(posted.headers.location);
  return getPage(ctx.testApp.app, location, { cookie: withFlash(who.cookie, posted) });
}

const countTokens = async () =>
  (await ctx.db.superuser<{ count: number }[]>`select count(*)::int as count from api_tokens`)[0]?.count;

async function signIn(login: string, password = PASSWORD): Promise<string> {
  const cookie = sessionCookie(await postForm(ctx.testApp.app, '/login', { login, password }));
  assert.ok(cookie !== undefined, `${login} signed in`);
  return cookie;
}

describe('API tokens page', () => {
  let owner: SignedUp;
  before(async () => {
    owner = await signUp(ctx.testApp.app, ctx.db, { username: 'tokener', email: 'tokener@example.com' });
  });

  test('ACC-10: the tokens page mints a token shown once with no-store, lists it by prefix and last 4, and revokes it', async () => {
    const empty = await getPage(ctx.testApp.app, TOKENS, { cookie: owner.cookie });
    assert.equal(empty.statusCode, 200);
    assert.match(empty.body, /No tokens yet\./);

    const posted = await postForm(
      ctx.testApp.app,
      TOKENS,
      { name: 'ci', scope: 'read', expires_at: '' },
      owner,
    );
    assert.equal(posted.headers.location, TOKENS, 'the secret is never in the URL');
    assert.ok(!/enc_live_/.test(posted.body));
    const minted = await followed(posted, owner);
    assert.equal(minted.statusCode, 200);
    assert.equal(minted.headers['cache-control'], 'no-store');
    assert.match(minted.body, /This is the only time it is shown/);
    const token = /enc_live_[0-9A-Za-z]{43}/.exec(minted.body)?.[0];
    assert.ok(token !== undefined, 'the new token is on the page');
    assert.equal(await me(token), 200, 'the token works');

    const listed = await getPage(ctx.testApp.app, TOKENS, { cookie: owner.cookie });
    assert.ok(!listed.body.includes(token), 'the list never shows the token again');
    assert.ok(listed.body.includes(`<code>enc_live_…${token.slice(-4)}</code>`));
    assert.match(listed.body, /<td>ci<\/td>/);
    const [id] = tokenIds(listed.body);
    assert.ok(id !== undefined);

    const revoked = await postForm(ctx.testApp.app, `${TOKENS}/${id}/revoke`, {}, owner);
    assert.equal(revoked.statusCode, 303);
    assert.equal(revoked.headers.location, `${TOKENS}?notice=token-revoked`);
    assert.equal(await me(token), 401, 'a revoked token fails on its next request');
    const notice = await getPage(ctx.testApp.app, revoked.headers.location, { cookie: owner.cookie });
    assert.match(notice.body, /The token was revoked\./);

    for (const again of [id, 'not-a-uuid']) {
      const response = await postForm(ctx.testApp.app, `${TOKENS}/${again}/revoke`, {}, owner);
      assert.equal(response.statusCode, 404, again);
      assert.match(response.body, /There is no such token/);
    }
  });

  test('ACC-10: the mint form explains a bad name, scope or expiry and mints nothing', async () => {
    const [before] = await ctx.db.superuser<
      { count: number }[]
    >`select count(*)::int as count from api_tokens`;
    const cases: [Record<string, string>, RegExp][] = [
      [{ name: 'old', scope: 'read', expires_at: '2020-01-01' }, /The expiry must be in the future\./],
      [{ name: 'odd', scope: 'read', expires_at: '2030-02-30' }, /Enter the expiry as a date/],
      [{ name: 'big', scope: 'admin', expires_at: '' }, /Scope is not valid\./],
      [{ name: '   ', scope: 'write' }, /Give the token a name of 1 to 100 characters\./],
      [{ name: 'n'.repeat(101), scope: 'write' }, /Name is too long\./],
      [{ name: 'x', scope: 'write', owner: 'someone-else' }, /a field this page does not accept/],
    ];
    for (const [fields, says] of cases) {
      const response = await postForm(ctx.testApp.app, TOKENS, fields, owner);
      assert.equal(response.statusCode, 400, String(says));
      assert.match(response.body, says);
      assert.ok(!/enc_live_[0-9A-Za-z]{43}/.test(response.body));
    }
    const [after] = await ctx.db.superuser<
      { count: number }[]
    >`select count(*)::int as count from api_tokens`;
    assert.equal(after?.count, before?.count);
  });

  test('ACC-10: revoking a token asks first, on a page that works without JavaScript; the question alone revokes nothing', async () => {
    const shown = await followed(
      await postForm(ctx.testApp.app, TOKENS, { name: 'askfirst', scope: 'read' }, owner),
      owner,
    );
    const token = /enc_live_[0-9A-Za-z]{43}/.exec(shown.body)?.[0] ?? '';
    assert.match(
      shown.body,
      /<button type="button" class="copy" data-copy="new-token-value" aria-label="Copy the token" hidden>Copy<\/button>/,
    );
    assert.match(shown.body, /<script src="\/static\/copy-text\.js" defer><\/script>/);
    const [id] = tokenIds(shown.body).slice(-1);
    const listed = await getPage(ctx.testApp.app, TOKENS, { cookie: owner.cookie });
    assert.ok(
      listed.body.includes(`<a href="${TOKENS}/${id}/revoke" aria-label="Revoke askfirst">Revoke…</a>`),
    );

    const question = await getPage(ctx.testApp.app, `${TOKENS}/${id}/revoke`, { cookie: owner.cookie });
    assert.equal(question.statusCode, 200);
    assert.match(question.body, /<h1>Revoke the token “askfirst”\?<\/h1>/);
    assert.ok(question.body.includes(`<form method="post" action="${TOKENS}/${id}/revoke"`));
    assert.match(question.body, /<a href="\/dashboard\/settings\/tokens">Cancel<\/a>/);
    assert.equal(await me(token), 200, 'asking revokes nothing');

    for (const unknown of ['00000000-0000-4000-8000-000000000000', 'not-a-uuid']) {
      const missing = await getPage(ctx.testApp.app, `${TOKENS}/${unknown}/revoke`, { cookie: owner.cookie });
      assert.equal(missing.statusCode, 404, unknown);
    }
    const stranger = await signUp(ctx.testApp.app, ctx.db, {
      username: 'asker2',
      email: 'asker2@example.com',
    });
    const foreign = await getPage(ctx.testApp.app, `${TOKENS}/${id}/revoke`, { cookie: stranger.cookie });
    assert.equal(foreign.statusCode, 404, 'another user’s token is not found');
    assert.ok(!foreign.body.includes('askfirst'));

    assert.equal((await postForm(ctx.testApp.app, `${TOKENS}/${id}/revoke`, {}, owner)).statusCode, 303);
    assert.equal(await me(token), 401);
  });

  test('the mint form shows every schema error at once, each once, by its field', async () => {
    const response = await postForm(
      ctx.testApp.app,
      TOKENS,
      { name: 'n'.repeat(101), scope: 'admin', expires_at: '' },
      owner,
    );
    assert.equal(response.statusCode, 400);
    assert.match(response.body, /<p class="error" role="alert">Check the 2 fields marked below\.<\/p>/);
    const expected: [id: string, message: string][] = [
      ['f-name', 'Name is too long.'],
      ['f-scope', 'Scope is not valid.'],
    ];
    for (const [id, message] of expected) {
      assert.equal(response.body.split(message).length - 1, 1, `${message} is shown once`);
      assert.ok(
        response.body.includes(`<p class="error" id="${id}-error">${message}</p>`),
        `${message} by its field`,
      );
    }
  });

  test('the mint form shows the rules checked beyond the schema at once too: a blank name and a past expiry', async () => {
    const before = await countTokens();
    const response = await postForm(
      ctx.testApp.app,
      TOKENS,
      { name: '   ', scope: 'read', expires_at: '2020-01-01' },
      owner,
    );
    assert.equal(response.statusCode, 400);
    assert.match(response.body, /Check the 2 fields marked below\./);
    for (const [id, message] of [
      ['f-name', 'Give the token a name of 1 to 100 characters.'],
      ['f-expires_at', 'The expiry must be in the future.'],
    ]) {
      assert.ok(response.body.includes(`<p class="error" id="${id}-error">${message}</p>`), message);
    }
    const unreadable = await postForm(
      ctx.testApp.app,
      TOKENS,
      { name: '', scope: 'read', expires_at: '31/12' },
      owner,
    );
    assert.match(unreadable.body, /Check the 2 fields marked below\./);
    assert.match(unreadable.body, /Enter the expiry as a date \(YYYY-MM-DD\)\./);
    assert.equal(await countTokens(), before, 'nothing minted');
  });

  test('ACC-10: creating a token is POST-redirect-GET: reloading the page that shows it mints no second token and shows it no more', async () => {
    const before = await countTokens();
    const posted = await postForm(ctx.testApp.app, TOKENS, { name: 'once', scope: 'read' }, owner);
    const flash = setCookies(posted).find((line) => line.startsWith('enclave_flash_token='));
    assert.ok(flash !== undefined, 'the token rides to the next page in a one-time cookie');
    assert.match(flash, /HttpOnly/i);
    assert.match(flash, /SameSite=Strict/i);
    assert.match(flash, /Path=\/dashboard\/settings/);
    assert.ok(!/enc_live_/.test(flash), 'sealed, not the token itself');
    const shown = await followed(posted, owner);
    const token = /enc_live_[0-9A-Za-z]{43}/.exec(shown.body)?.[0];
    assert.ok(token !== undefined, 'the page after the redirect shows the token');
    assert.ok(
      setCookies(shown).some((line) => /^enclave_flash_token=;/.test(line)),
      'the page that shows it clears the cookie',
    );
    const reloaded = await getPage(ctx.testApp.app, TOKENS, { cookie: owner.cookie });
    assert.equal(reloaded.statusCode, 200);
    assert.ok(!reloaded.body.includes(token), 'a reload does not show it again');
    assert.ok(!/This is the only time it is shown/.test(reloaded.body));
    assert.equal(await countTokens(), (before ?? 0) + 1, 'one token row, not two');

    // The sealed cookie opens only in the session that made it: copied into another, it shows nothing.
    const other = await signIn('tokener');
    const mine = await postForm(ctx.testApp.app, TOKENS, { name: 'mine', scope: 'read' }, owner);
    const elsewhere = await getPage(ctx.testApp.app, TOKENS, { cookie: withFlash(other, mine) });
    assert.ok(!/enc_live_[0-9A-Za-z]{43}/.test(elsewhere.body));
  });
});

describe('profile', () => {
  test('ACC-3: /profile lists the live sessions with this one marked; revoking another asks first, then ends it at once; an unknown id is a 404 page', async () => {
    const first = await signUp(ctx.testApp.app, ctx.db, {
      username: 'sessions',
      email: 'sessions@example.com',
    });
    const second = await signIn('sessions');
    const profile = await getPage(ctx.testApp.app, '/profile', { cookie: first.cookie });
    assert.equal(profile.statusCode, 200);
    const listed = sessionIds(profile.body);
    assert.equal(listed.length, 2);
    const current = /<tr class="current">[\s\S]*?\/profile\/sessions\/([0-9a-f-]{36})\/revoke/.exec(
      profile.body,
    )?.[1];
    assert.ok(current !== undefined, 'this session is marked');
    assert.match(profile.body, /\(this session\)/);
    const other = listed.find((id) => id !== current);

    // A link to a question first, which names the session and ends nothing.
    const asked = await getPage(ctx.testApp.app, `/profile/sessions/${other}/revoke`, {
      cookie: first.cookie,
    });
    assert.equal(asked.statusCode, 200);
    assert.match(textOf(asked.body), /Sign out that session\?/);
    assert.equal((await getPage(ctx.testApp.app, '/profile', { cookie: second })).statusCode, 200);
    const unknown = await getPage(ctx.testApp.app, `/profile/sessions/${randomUUID()}/revoke`, {
      cookie: first.cookie,
    });
    assert.equal(unknown.statusCode, 404);

    const revoked = await postForm(ctx.testApp.app, `/profile/sessions/${other}/revoke`, {}, first);
    assert.equal(revoked.statusCode, 303);
    assert.equal(revoked.headers.location, '/profile?notice=session-revoked');
    assert.equal((await getPage(ctx.testApp.app, '/profile', { cookie: second })).statusCode, 303);
    assert.equal((await getPage(ctx.testApp.app, '/profile', { cookie: first.cookie })).statusCode, 200);

    const missing = await postForm(ctx.testApp.app, `/profile/sessions/${other}/revoke`, {}, first);
    assert.equal(missing.statusCode, 404);
    assert.match(missing.body, /There is no such session/);
  });

  test('ACC-3: sign out everywhere asks first, then ends every session of the user, this one included', async () => {
    const first = await signUp(ctx.testApp.app, ctx.db, {
      username: 'everywhere',
      email: 'everywhere@example.com',
    });
    const second = await signIn('everywhere');
    // The profile links to a question first; asking ends nothing.
    const profile = await getPage(ctx.testApp.app, '/profile', { cookie: first.cookie });
    assert.match(profile.body, /<a href="\/profile\/sessions\/revoke-all">Sign out everywhere…<\/a>/);
    const asked = await getPage(ctx.testApp.app, '/profile/sessions/revoke-all', { cookie: first.cookie });
    assert.equal(asked.statusCode, 200);
    assert.match(textOf(asked.body), /Sign out everywhere\?/);
    assert.match(asked.body, /<form method="post" action="\/profile\/sessions\/revoke-all"/);
    const sessionsAfterAsking = await getPage(ctx.testApp.app, '/profile', { cookie: second });
    assert.equal(sessionsAfterAsking.statusCode, 200, 'asking signed nobody out');
    const response = await postForm(ctx.testApp.app, '/profile/sessions/revoke-all', {}, first);
    assert.equal(response.statusCode, 303);
    assert.equal(response.headers.location, '/login?notice=signed-out-everywhere');
    assert.match(String(response.headers['set-cookie']), /enclave_session=;/);
    for (const cookie of [first.cookie, second]) {
      assert.equal((await getPage(ctx.testApp.app, '/dashboard', { cookie })).statusCode, 303);
    }
  });

  test('ACC-11: changing the password needs the current one, signs out the other sessions and keeps this one', async () => {
    const here = await signUp(ctx.testApp.app, ctx.db, { username: 'changer', email: 'changer@example.com' });
    const elsewhere = await signIn('changer');
    const next = 'a different passphrase 77';

    const wrong = await postForm(
      ctx.testApp.app,
      '/profile/password',
      { current_password: 'wrong one!!', new_password: next },
      here,
    );
    assert.equal(wrong.statusCode, 400);
    assert.match(
      wrong.body,
      /<p class="error" id="f-password-current-error">The current password is not correct\.<\/p>/,
    );
    const weak = await postForm(
      ctx.testApp.app,
      '/profile/password',
      { current_password: PASSWORD, new_password: 'short' },
      here,
    );
    assert.equal(weak.statusCode, 400);
    assert.match(weak.body, /The new password must be at least 12 characters\./);
    assert.ok(!weak.body.includes(PASSWORD) && !wrong.body.includes(next), 'no password is written back');
    assert.equal(
      (await getPage(ctx.testApp.app, '/profile', { cookie: elsewhere })).statusCode,
      200,
      'nothing changed yet',
    );

    const changed = await postForm(
      ctx.testApp.app,
      '/profile/password',
      { current_password: PASSWORD, new_password: next },
      here,
    );
    assert.equal(changed.statusCode, 303);
    assert.equal(changed.headers.location, '/profile?notice=password-changed');
    const kept = await getPage(ctx.testApp.app, changed.headers.location, { cookie: here.cookie });
    assert.equal(kept.statusCode, 200, 'this session stays signed in');
    assert.match(kept.body, /Your other sessions were signed out\./);
    assert.equal((await getPage(ctx.testApp.app, '/profile', { cookie: elsewhere })).statusCode, 303);
    assert.equal(
      (await postForm(ctx.testApp.app, '/login', { login: 'changer', password: PASSWORD })).statusCode,
      401,
    );
    await signIn('changer', next);
  });
});

describe('invites page', () => {
  test('ACC-1: an owner invites a member from the page; the invite is mailed, its link is never shown, and it joins that tenant with the address verified; members cannot manage invites', async () => {
    const owner = await signUp(ctx.testApp.app, ctx.db, { username: 'owner1', email: 'owner1@example.com' });
    const form = await getPage(ctx.testApp.app, INVITES, { cookie: owner.cookie });
    assert.equal(form.statusCode, 200);
    assert.match(form.body, /<input type="hidden" name="kind" value="member">/);
    assert.ok(!form.body.includes('new tenant'), 'owners cannot invite tenants');

    const posted = await postForm(
      ctx.testApp.app,
      INVITES,
      { email: 'joiner@example.com', kind: 'member', expires_days: '7' },
      owner,
    );
    assert.equal(posted.headers.location, INVITES, 'the link is never in the URL');
    const created = await followed(posted, owner);
    assert.equal(created.statusCode, 200);
    assert.equal(created.headers['cache-control'], 'no-store');
    assert.match(textOf(created.body), /Invite mailed to joiner@example\.com/);
    assert.ok(!created.body.includes('enc_inv_'), 'the link is not on the page');
    const listed = await getPage(ctx.testApp.app, INVITES, { cookie: owner.cookie });
    assert.ok(
      !textOf(listed.body).includes('Invite mailed to'),
      'the notice is shown once: a reload does not show it again',
    );
    const [rows] = await ctx.db.superuser<
      { count: number }[]
    >`select count(*)::int as count from invites where email = 'joiner@example.com'`;
    assert.equal(rows?.count, 1, 'one invite, not one per page load');
    assert.match(listed.body, /joiner@example\.com/);
    const [invite] = await ctx.db.superuser<{ id: string; tenant_id: string }[]>`
      select id, tenant_id from invites where email = 'joiner@example.com'`;
    assert.ok(invite !== undefined);
    const token = await mailedInviteToken(ctx.db, invite);

    const joined = await postForm(ctx.testApp.app, '/signup', {
      invite: token,
      email: 'joiner@example.com',
      username: 'joiner',
      password: PASSWORD,
    });
    assert.equal(joined.statusCode, 303);
    const member = { cookie: sessionCookie(joined) };
    const dashboard = await getPage(ctx.testApp.app, '/dashboard', member);
    assert.match(dashboard.body, /the tenant <strong>owner1<\/strong>/);
    assert.ok(!dashboard.body.includes(`href="${INVITES}"`), 'members see no Invites link');
    assert.match(
      textOf((await getPage(ctx.testApp.app, '/profile', member)).body),
      /joiner@example\.com \(verified\)/,
    );
    assert.equal((await getPage(ctx.testApp.app, INVITES, member)).statusCode, 403);
    const refused = await postForm(
      ctx.testApp.app,
      INVITES,
      { email: 'x@example.com', kind: 'member' },
      member,
    );
    assert.equal(refused.statusCode, 403);

    const tenant = await postForm(
      ctx.testApp.app,
      INVITES,
      { email: 'new-tenant@example.com', kind: 'tenant' },
      owner,
    );
    assert.equal(tenant.statusCode, 403);
    assert.match(tenant.body, /Only operators can invite new tenants\./);
  });

  test('ACC-1: a revoked invite stops working; operators can also invite new tenants', async () => {
    const operator = await signUp(ctx.testApp.app, ctx.db, {
      username: 'operator1',
      email: 'op@example.com',
      kind: 'operator',
    });
    const form = await getPage(ctx.testApp.app, INVITES, { cookie: operator.cookie });
    assert.match(form.body, /<option value="tenant">new tenant<\/option>/);
    const created = await followed(
      await postForm(
        ctx.testApp.app,
        INVITES,
        { email: 'tenant2@example.com', kind: 'tenant', expires_days: '1' },
        operator,
      ),
      operator,
    );
    assert.equal(created.statusCode, 200);
    const token = /invite=(enc_inv_[0-9A-Za-z]{43})/.exec(created.body)?.[1];
    assert.ok(token !== undefined);
    const id = /\/dashboard\/settings\/invites\/([0-9a-f-]{36})\/revoke/.exec(created.body)?.[1];
    assert.match(created.body, /data-copy="new-invite-link" aria-label="Copy the invite link"/);
    const question = await getPage(ctx.testApp.app, `${INVITES}/${id}/revoke`, { cookie: operator.cookie });
    assert.equal(question.statusCode, 200);
    assert.match(question.body, /<h1>Revoke the invite for tenant2@example\.com\?<\/h1>/);
    assert.equal(
      (await getPage(ctx.testApp.app, `/signup?invite=${token}`)).statusCode,
      200,
      'asking revokes nothing',
    );
    const revoked = await postForm(ctx.testApp.app, `${INVITES}/${id}/revoke`, {}, operator);
    assert.equal(revoked.statusCode, 303);
    assert.equal(revoked.headers.location, `${INVITES}?notice=invite-revoked`);
    const signup = await getPage(ctx.testApp.app, `/signup?invite=${token}`);
    assert.equal(signup.statusCode, 400);
    assert.match(signup.body, /This invite has been revoked\./);
    assert.equal((await postForm(ctx.testApp.app, `${INVITES}/${id}/revoke`, {}, operator)).statusCode, 404);
  });
});

test('TEN-4: another tenant’s token and session ids are answered like ids that do not exist', async () => {
  const victim = await signUp(ctx.testApp.app, ctx.db, { username: 'victim', email: 'victim@example.com' });
  const attacker = await signUp(ctx.testApp.app, ctx.db, {
    username: 'attacker',
    email: 'attacker@example.com',
  });
  const minted = await followed(
    await postForm(ctx.testApp.app, TOKENS, { name: 'secret', scope: 'write' }, victim),
    victim,
  );
  const token = /enc_live_[0-9A-Za-z]{43}/.exec(minted.body)?.[0] ?? '';
  const [tokenId] = tokenIds((await getPage(ctx.testApp.app, TOKENS, { cookie: victim.cookie })).body);
  const [sessionId] = sessionIds(
    (await getPage(ctx.testApp.app, '/profile', { cookie: victim.cookie })).body,
  );

  const foreignToken = await postForm(ctx.testApp.app, `${TOKENS}/${tokenId}/revoke`, {}, attacker);
  const unknownToken = await postForm(
    ctx.testApp.app,
    `${TOKENS}/00000000-0000-4000-8000-000000000000/revoke`,
    {},
    attacker,
  );
  assert.equal(foreignToken.statusCode, 404);
  assert.equal(foreignToken.body, unknownToken.body);
  const foreignSession = await postForm(
    ctx.testApp.app,
    `/profile/sessions/${sessionId}/revoke`,
    {},
    attacker,
  );
  assert.equal(foreignSession.statusCode, 404);
  assert.equal(await me(token), 200, 'the victim’s token still works');
  assert.equal((await getPage(ctx.testApp.app, '/profile', { cookie: victim.cookie })).statusCode, 200);
});
