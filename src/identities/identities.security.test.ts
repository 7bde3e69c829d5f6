import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createAccount, mintInvite, type TestAccount, uniqueName } from '../../test/helpers/accounts.ts';
import { buildTestApp, type TestApp } from '../../test/helpers/app.ts';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/database.ts';
import {
  type Browser,
  type FakeGithub,
  providerEnv,
  startBrowser,
  startFakeGithub,
  startOpenIdProvider,
  type TestOpenIdProvider,
  type TestPerson,
} from '../../test/helpers/identity-providers.ts';
import { FLOW_COOKIE } from './flows.ts';

// The attacks: signing up without an invite by way of a provider; taking
// over an account through a provider that vouches for an address it never
// checked, or through an account whose address was never confirmed; a
// callback forged, replayed or carried to another browser; an ID token minted
// for another application, expired, or without the nonce this browser's
// flow asked for; and the provider's tokens ending up stored or logged. Two
// real OpenID Providers (oidc-provider) and a fake GitHub at its network
// boundary run on local ports; the app is the real one, driven like a
// browser that follows redirects and keeps cookies.

const ORIGIN = 'http://127.0.0.1:3000';

let db: TestDatabase;
let testApp: TestApp;
let env: Record<string, string>;
let dir: string;
let corp: TestOpenIdProvider;
let partner: TestOpenIdProvider;
let github: FakeGithub;
const extraApps: TestApp[] = [];

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'enclave-identities-'));
  const secret = () => randomBytes(24).toString('hex');
  const corpSecret = secret();
  const partnerSecret = secret();
  const githubSecret = secret();
  corp = await startOpenIdProvider({
    redirectUri: `${ORIGIN}/auth/corp/callback`,
    clientId: 'enclave-corp',
    clientSecret: corpSecret,
  });
  partner = await startOpenIdProvider({
    redirectUri: `${ORIGIN}/auth/partner/callback`,
    clientId: 'enclave-partner',
    clientSecret: partnerSecret,
  });
  github = await startFakeGithub({ clientId: 'Iv1.enclave', clientSecret: githubSecret });
  env = await providerEnv(
    dir,
    [
      {
        name: 'corp',
        label: 'Corp SSO',
        issuer: corp.issuer,
        clientId: corp.clientId,
        clientSecret: corpSecret,
      },
      {
        name: 'partner',
        label: 'Partner',
        issuer: partner.issuer,
        clientId: partner.clientId,
        clientSecret: partnerSecret,
      },
    ],
    { url: github.url, clientId: 'Iv1.enclave', clientSecret: githubSecret },
  );
  db = await createTestDatabase();
  testApp = await buildTestApp(db, env);
});

after(async () => {
  for (const extra of extraApps) await extra.app.close();
  await testApp?.app.close();
  await db?.drop();
  await corp?.close();
  await partner?.close();
  await github?.close();
  await rm(dir, { recursive: true, force: true });
});

function person(verified = true): TestPerson {
  const name = uniqueName('op');
  return {
    sub: `sub-${name}`,
    email: `${name}@example.test`,
    email_verified: verified,
    preferred_username: name,
  };
}

async function counts(): Promise<{ users: number; tenants: number; identities: number }> {
  const [row] = await db.superuser<{ users: number; tenants: number; identities: number }[]>`
    select (select count(*)::int4 from users) as users, (select count(*)::int4 from tenants) as tenants,
           (select count(*)::int4 from user_identities) as identities`;
  assert.ok(row);
  return row;
}

/** Starts a sign-in at `provider` in a fresh browser (or the one given) and follows it to the end. */
async function signIn(provider: string, options: { invite?: string; browser?: Browser } = {}) {
  const browser = options.browser ?? startBrowser(testApp.app, ORIGIN);
  const form: Record<string, string> = options.invite === undefined ? {} : { invite: options.invite };
  const answer = await browser.go(`/auth/${provider}/start`, { method: 'POST', form });
  return { browser, answer };
}

/** Starts a sign-in and stops at the provider's redirect back: the callback URL, unrequested. */
async function toCallback(provider: string, browser = startBrowser(testApp.app, ORIGIN)) {
  const stopped = await browser.go(`/auth/${provider}/start`, {
    method: 'POST',
    form: {},
    stopAt: (url) => url.origin === ORIGIN && url.pathname.endsWith('/callback'),
  });
  return { browser, callback: new URL(stopped.url) };
}

async function identitiesOf(userId: string) {
  const rows = await db.superuser<{ provider: string; issuer: string; subject: string; tenant_id: string }[]>`
    select provider, issuer, subject, tenant_id from user_identities where user_id = ${userId}::uuid`;
  return [...rows];
}

async function sessionUser(browser: Browser): Promise<string | undefined> {
  const page = await browser.go('/profile');
  return page.status === 200 ? /<dt>Username<\/dt><dd>([^<]+)<\/dd>/.exec(page.body)?.[1] : undefined;
}

describe('signing up and in through a provider', () => {
  test('ACC-9, ACC-1: a provider sign-in from an invite link creates the account through that invite: the identity linked, no password, the address verified', async () => {
    const who = person();
    const invite = await mintInvite(db, { kind: 'tenant', email: who.email, mailed: false });
    corp.signInAs(who);
    const signup = await startBrowser(testApp.app, ORIGIN).go(`/signup?invite=${invite.token}`);
    assert.match(signup.body, /Sign up with Corp SSO/);
    const { browser, answer } = await signIn('corp', { invite: invite.token });
    assert.equal(answer.status, 200);
    assert.equal(new URL(answer.url).pathname, '/dashboard');
    const [user] = await db.superuser<
      { id: string; password_hash: string | null; email_verified: boolean }[]
    >`
      select id, password_hash, email_verified from users where email = ${who.email}`;
    assert.ok(user);
    assert.equal(user.password_hash, null);
    assert.equal(user.email_verified, true);
    assert.deepEqual(
      (await identitiesOf(user.id)).map(({ provider, issuer, subject }) => ({ provider, issuer, subject })),
      [{ provider: 'corp', issuer: corp.issuer, subject: who.sub }],
    );
    const [used] = await db.superuser<
      { used_by: string }[]
    >`select used_by from invites where id = ${invite.id}::uuid`;
    assert.equal(used?.used_by, user.id);
    assert.equal(await sessionUser(browser), who.preferred_username);
    // Next time the identity alone signs in, with no invite.
    corp.signInAs(who);
    const again = await signIn('corp');
    assert.equal(new URL(again.answer.url).pathname, '/dashboard');
    const events = await db.superuser<{ action: string; data: { first_step?: string } }[]>`
      select action, data from audit_events where actor = ${`user:${user.id}`} order by seq`;
    assert.ok(
      events.some((event) => event.action === 'session.login' && event.data.first_step === 'provider:corp'),
    );
  });

  test('ACC-9, ACC-1: a provider sign-in with no account and no invite gets the invite-needed page, and nothing is created', async () => {
    const before = await counts();
    corp.signInAs(person());
    const { answer } = await signIn('corp');
    assert.equal(answer.status, 403);
    assert.match(answer.body, /Invite needed/);
    assert.match(answer.body, /Accounts are made only by invite/);
    assert.deepEqual(await counts(), before);
  });

  test('ACC-9, ACC-1: a plain provider sign-in redeems the one pending invite mailed to the verified address, and only a mailed one', async () => {
    const owner = await createAccount(db, testApp);
    const who = person();
    const shown = await mintInvite(db, { kind: 'tenant', email: who.email, mailed: false });
    corp.signInAs(who);
    const before = await counts();
    const refused = await signIn('corp');
    assert.equal(refused.answer.status, 403);
    assert.deepEqual(await counts(), before);
    const mailed = await mintInvite(db, { kind: 'member', email: who.email, tenantId: owner.user.tenant_id });
    corp.signInAs(who);
    const { answer } = await signIn('corp');
    assert.equal(new URL(answer.url).pathname, '/dashboard');
    const [user] = await db.superuser<{ id: string; tenant_id: string; role: string }[]>`
      select id, tenant_id, role from users where email = ${who.email}`;
    assert.equal(user?.tenant_id, owner.user.tenant_id);
    assert.equal(user?.role, 'member');
    const invites = await db.superuser<{ id: string; used_by: string | null }[]>`
      select id, used_by from invites where id in (${shown.id}::uuid, ${mailed.id}::uuid) order by id = ${mailed.id}::uuid`;
    assert.deepEqual(
      invites.map((row) => row.used_by),
      [null, user?.id],
    );
  });

  test('ACC-9, ACC-1: an invite bound to another address does not make an account for the provider’s address', async () => {
    const who = person();
    const invite = await mintInvite(db, { kind: 'tenant', email: `${uniqueName()}@example.test` });
    const before = await counts();
    corp.signInAs(who);
    const { answer } = await signIn('corp', { invite: invite.token });
    assert.equal(answer.status, 400);
    assert.match(answer.body, /different email address/);
    assert.deepEqual(await counts(), before);
    const [row] = await db.superuser<
      { used_at: Date | null }[]
    >`select used_at from invites where id = ${invite.id}::uuid`;
    assert.equal(row?.used_at, null);
  });

  test('ACC-9, ACC-1: an invite bound to no address (the first operator’s) is not redeemed through a provider: it takes a password', async () => {
    const who = person();
    const invite = await mintInvite(db, { kind: 'operator', email: null });
    const before = await counts();
    corp.signInAs(who);
    const { answer } = await signIn('corp', { invite: invite.token });
    assert.equal(answer.status, 400);
    assert.match(answer.body, /not bound to an email address/);
    assert.deepEqual(await counts(), before);
    const [row] = await db.superuser<
      { used_at: Date | null }[]
    >`select used_at from invites where id = ${invite.id}::uuid`;
    assert.equal(row?.used_at, null);
  });

  test('ACC-9: email_verified false never links and never creates, even with an invite for that address', async () => {
    const who = person(false);
    const owner = await createAccount(db, testApp, { email: who.email });
    const invite = await mintInvite(db, { kind: 'tenant', email: `x-${who.email}` });
    const before = await counts();
    corp.signInAs(who);
    const plain = await signIn('corp');
    assert.equal(plain.answer.status, 403);
    assert.match(plain.answer.body, /did not confirm your email address/);
    corp.signInAs({ ...who, email: `x-${who.email}` });
    const invited = await signIn('corp', { invite: invite.token });
    assert.equal(invited.answer.status, 403);
    assert.deepEqual(await counts(), before);
    assert.deepEqual(await identitiesOf(owner.user.id), []);
  });
});

describe('linking by verified email', () => {
  let alice: TestAccount;
  let bob: TestAccount;

  before(async () => {
    alice = await createAccount(db, testApp);
    bob = await createAccount(db, testApp);
  });

  test('ACC-9: a provider’s verified email links to the account with that verified address, and signs in to it', async () => {
    const who = { ...person(), email: alice.user.email };
    corp.signInAs(who);
    const { browser, answer } = await signIn('corp');
    assert.equal(new URL(answer.url).pathname, '/dashboard');
    assert.equal(await sessionUser(browser), alice.user.username);
    const linked = await identitiesOf(alice.user.id);
    assert.equal(linked.length, 1);
    assert.equal(linked[0]?.subject, who.sub);
  });

  test('ACC-9, ACC-8: a provider sign-in of a user with a second factor goes on to the second step, with no session yet', async () => {
    const guarded = await createAccount(db, testApp);
    await db.superuser`
      insert into user_factors (tenant_id, user_id, kind, name)
      values (${guarded.user.tenant_id}::uuid, ${guarded.user.id}::uuid, 'email', 'Email')`;
    const [before] = await db.superuser<{ n: number }[]>`
      select count(*)::int4 as n from sessions where user_id = ${guarded.user.id}::uuid`;
    corp.signInAs({ ...person(), email: guarded.user.email });
    const { browser, answer } = await signIn('corp');
    assert.match(new URL(answer.url).pathname, /^\/login\/verify\/[0-9a-f-]{36}$/);
    assert.equal(browser.cookie(ORIGIN, 'enclave_session'), undefined);
    const [after] = await db.superuser<{ n: number }[]>`
      select count(*)::int4 as n from sessions where user_id = ${guarded.user.id}::uuid`;
    assert.equal(after?.n, before?.n);
    const [challenge] = await db.superuser<{ first_step: string }[]>`
      select first_step from sign_in_challenges where user_id = ${guarded.user.id}::uuid`;
    assert.equal(challenge?.first_step, 'provider:corp');
  });

  test('ACC-9: an OIDC identity whose email belongs to another tenant’s user links only to that user, and only when verified', async () => {
    assert.notEqual(alice.user.tenant_id, bob.user.tenant_id);
    const before = await counts();
    const unverified = { ...person(false), email: bob.user.email };
    partner.signInAs(unverified);
    const refused = await signIn('partner');
    assert.equal(refused.answer.status, 403);
    assert.deepEqual(await counts(), before);
    const verified = { ...unverified, email_verified: true };
    partner.signInAs(verified);
    const { browser } = await signIn('partner');
    assert.equal(await sessionUser(browser), bob.user.username);
    const rows = await db.superuser<{ user_id: string; tenant_id: string }[]>`
      select user_id, tenant_id from user_identities where subject = ${verified.sub}`;
    assert.deepEqual([...rows], [{ user_id: bob.user.id, tenant_id: bob.user.tenant_id }]);
  });

  test('ACC-9: an account whose own address was never confirmed is not linked by a provider’s verified email', async () => {
    const unconfirmed = await createAccount(db, testApp, { mailedInvite: false });
    const before = await counts();
    corp.signInAs({ ...person(), email: unconfirmed.user.email });
    const { answer } = await signIn('corp');
    assert.equal(answer.status, 403);
    assert.deepEqual(await counts(), before);
  });
});

describe('a callback that is not what the flow asked for', () => {
  test('ACC-9: a wrong state, or another browser’s callback, is refused and signs nobody in', async () => {
    const victim = await createAccount(db, testApp);
    corp.signInAs({ ...person(), email: victim.user.email });
    const { browser, callback } = await toCallback('corp');
    const forged = new URL(callback);
    forged.searchParams.set('state', randomBytes(32).toString('base64url'));
    const wrong = await browser.go(forged.href);
    assert.equal(wrong.status, 400);
    assert.match(wrong.body, /not started in this browser/);
    const elsewhere = await startBrowser(testApp.app, ORIGIN).go(callback.href);
    assert.equal(elsewhere.status, 400);
    assert.deepEqual(await identitiesOf(victim.user.id), []);
  });

  test('ACC-9: a replayed callback is refused: a flow is used once', async () => {
    const account = await createAccount(db, testApp);
    corp.signInAs({ ...person(), email: account.user.email });
    const { browser, callback } = await toCallback('corp');
    const first = await browser.go(callback.href);
    assert.equal(new URL(first.url).pathname, '/dashboard');
    const replay = await browser.go(callback.href);
    assert.equal(replay.status, 400);
    assert.match(replay.body, /already used/);
  });

  // The reason recorded is the check that failed (openid-client's code).
  for (const [mode, reason, which] of [
    ['no_nonce', 'OAUTH_INVALID_RESPONSE', 'with no nonce'],
    ['wrong_nonce', 'OAUTH_JWT_CLAIM_COMPARISON_FAILED', 'with another flow’s nonce'],
    ['other_audience', 'OAUTH_JWT_CLAIM_COMPARISON_FAILED', 'issued for another application (audience)'],
    ['expired', 'OAUTH_JWT_TIMESTAMP_CHECK_FAILED', 'that has expired'],
  ] as const) {
    test(`ACC-9: an ID token ${which} is refused`, async () => {
      const account = await createAccount(db, testApp);
      corp.signInAs({ ...person(), email: account.user.email });
      corp.misbehave(mode);
      try {
        const { browser, answer } = await signIn('corp');
        assert.equal(answer.status, 400);
        assert.match(answer.body, /Corp SSO did not confirm who you are/);
        assert.equal(await sessionUser(browser), undefined);
      } finally {
        corp.misbehave('none');
      }
      assert.deepEqual(await identitiesOf(account.user.id), []);
      const [failure] = await db.superuser<{ data: { provider: string; reason: string } }[]>`
        select data from audit_events where action = 'identity.sign_in_failed' order by occurred_at desc, seq desc limit 1`;
      assert.equal(failure?.data.provider, 'corp');
      assert.equal(failure?.data.reason, reason);
    });
  }

  test('ACC-9: a flow started before a restart finishes on a new app instance on the same database', async () => {
    const account = await createAccount(db, testApp);
    corp.signInAs({ ...person(), email: account.user.email });
    const { browser, callback } = await toCallback('corp');
    const restarted = await buildTestApp(db, env);
    extraApps.push(restarted);
    browser.useApp(restarted.app);
    const done = await browser.go(callback.href);
    assert.equal(new URL(done.url).pathname, '/dashboard');
    assert.equal(await sessionUser(browser), account.user.username);
  });
});

describe('bad input', () => {
  test('ACC-9: an unknown provider, a malformed one, a bad invite and a callback without state or with the provider’s refusal each get a 4xx page, and nothing is created', async () => {
    const before = await counts();
    const browser = startBrowser(testApp.app, ORIGIN);
    const unknown = await browser.go('/auth/nowhere/start', { method: 'POST', form: {} });
    assert.equal(unknown.status, 404);
    const malformed = await browser.go('/auth/Not%20A%20Name/start', { method: 'POST', form: {} });
    assert.equal(malformed.status, 400);
    const unknownField = await browser.go('/auth/corp/start', { method: 'POST', form: { extra: '1' } });
    assert.equal(unknownField.status, 400);
    const badInvite = await browser.go('/auth/corp/start', {
      method: 'POST',
      form: { invite: 'enc_inv_nope' },
    });
    assert.equal(badInvite.status, 400);
    assert.match(badInvite.body, /Invite not valid/);
    const noState = await browser.go('/auth/corp/callback?code=abc');
    assert.equal(noState.status, 400);
    const noProvider = await browser.go('/auth/nowhere/callback?code=abc&state=x');
    assert.equal(noProvider.status, 404);
    corp.signInAs(person());
    const { browser: refusing, callback } = await toCallback('corp');
    const denied = new URL(callback);
    denied.searchParams.delete('code');
    denied.searchParams.set('error', 'access_denied');
    const refused = await refusing.go(denied.href);
    assert.equal(refused.status, 400);
    assert.match(refused.body, /did not confirm who you are/);
    assert.deepEqual(await counts(), before);
  });
});

describe('GitHub', () => {
  test('ACC-9: GitHub signs in by its verified primary email; an unverified primary links and creates nothing', async () => {
    const account = await createAccount(db, testApp);
    const id = 1_000_000 + Math.floor(Math.random() * 1_000_000);
    github.signInAs({
      id,
      login: 'octo',
      emails: [
        { email: 'other@example.test', primary: false, verified: true },
        { email: account.user.email, primary: true, verified: false },
      ],
    });
    const before = await counts();
    const refused = await signIn('github');
    assert.equal(refused.answer.status, 403);
    assert.deepEqual(await counts(), before);
    github.signInAs({
      id,
      login: 'octo',
      emails: [{ email: account.user.email, primary: true, verified: true }],
    });
    const { browser } = await signIn('github');
    assert.equal(await sessionUser(browser), account.user.username);
    assert.deepEqual(
      (await identitiesOf(account.user.id)).map(({ provider, issuer, subject }) => ({
        provider,
        issuer,
        subject,
      })),
      [{ provider: 'github', issuer: github.url, subject: String(id) }],
    );
  });

  test('ACC-9, ACC-1: GitHub sign-up from an invite takes its username from the login, with a suffix when taken', async () => {
    const taken = await createAccount(db, testApp);
    const email = `${uniqueName()}@example.test`;
    const invite = await mintInvite(db, { kind: 'tenant', email });
    github.signInAs({
      id: 2_000_001,
      login: taken.user.username,
      emails: [{ email, primary: true, verified: true }],
    });
    const { answer } = await signIn('github', { invite: invite.token });
    assert.equal(new URL(answer.url).pathname, '/dashboard');
    const [user] = await db.superuser<
      { username: string }[]
    >`select username from users where email = ${email}`;
    assert.match(user?.username ?? '', new RegExp(`^${taken.user.username}-[0-9a-f]{6}$`));
  });
});

describe('what is kept', () => {
  test('ACC-9: no provider token (access, ID or refresh) is in any table or in the logs, and no flow secret either', async () => {
    const tokens = [...corp.issuedTokens(), ...partner.issuedTokens(), ...github.issuedTokens()];
    assert.ok(tokens.length >= 10, `only ${tokens.length} tokens were issued`);
    const tables = await db.superuser<{ name: string }[]>`
      select format('%I.%I', schemaname, tablename) as name from pg_tables
      where schemaname not in ('pg_catalog', 'information_schema')`;
    const logs = testApp.logLines().join('\n');
    for (const { name } of tables) {
      const rows = await db.superuser.unsafe<{ dump: string }[]>(`select t::text as dump from ${name} t`);
      const dump = rows.map((row) => row.dump).join('\n');
      for (const token of tokens) {
        assert.ok(!dump.includes(token), `a provider token is in ${name}`);
        // An ID token's signature alone would do as well as the whole.
        const signature = token.split('.')[2];
        if (signature !== undefined)
          assert.ok(!dump.includes(signature), `an ID token's signature is in ${name}`);
      }
    }
    for (const token of tokens) assert.ok(!logs.includes(token), 'a provider token is in the logs');
    const browser = startBrowser(testApp.app, ORIGIN);
    corp.signInAs(person());
    await browser.go('/auth/corp/start', {
      method: 'POST',
      form: {},
      stopAt: (url) => url.origin !== ORIGIN,
    });
    const secret = browser.cookie(ORIGIN, FLOW_COOKIE);
    assert.ok(secret !== undefined);
    const [flows] = await db.superuser<{ n: number }[]>`
      select count(*)::int4 as n from identity_flows f where strpos(f::text, ${secret}) > 0`;
    assert.equal(flows?.n, 0);
  });
});

describe('/profile', () => {
  test('ACC-9: a signed-in user links a provider from /profile and unlinks it, each after a recent sign-in; the last way to sign in cannot be unlinked', async () => {
    const account = await createAccount(db, testApp);
    const browser = startBrowser(testApp.app, ORIGIN);
    browser.setCookie(ORIGIN, 'enclave_session', account.sessionCookie.split('=')[1] ?? '');
    const profile = await browser.go('/profile');
    assert.match(profile.body, /Link Corp SSO/);
    // Linking adds a way in, so like unlinking it needs a sign-in within the last 10 minutes (ACC-8).
    await db.superuser`
      update sessions set authenticated_at = now() - interval '11 minutes' where id = ${account.sessionId}::uuid`;
    const staleLink = await browser.go('/profile/link/partner', { method: 'POST' });
    assert.equal(new URL(staleLink.url).pathname, '/login');
    assert.equal(new URL(staleLink.url).searchParams.get('reauth'), '1');
    assert.deepEqual(await identitiesOf(account.user.id), []);
    await db.superuser`update sessions set authenticated_at = now() where id = ${account.sessionId}::uuid`;
    // Linking needs no matching address: the user has just signed in, and the provider proves the rest.
    partner.signInAs(person(false));
    const linked = await browser.go('/profile/link/partner', { method: 'POST' });
    assert.equal(linked.status, 200);
    assert.match(linked.body, /The identity was linked/);
    const [identity] = await db.superuser<{ id: string }[]>`
      select id from user_identities where user_id = ${account.user.id}::uuid`;
    assert.ok(identity);
    assert.match(linked.body, /Unlink Partner/);
    // Unlinking needs a sign-in within the last 10 minutes (ACC-8): an older session is sent to sign in again.
    await db.superuser`
      update sessions set authenticated_at = now() - interval '11 minutes' where id = ${account.sessionId}::uuid`;
    const stale = await browser.go(`/profile/identities/${identity.id}/unlink`, { method: 'POST' });
    assert.equal(new URL(stale.url).pathname, '/login');
    assert.equal(new URL(stale.url).searchParams.get('reauth'), '1');
    assert.equal((await identitiesOf(account.user.id)).length, 1);
    await db.superuser`update sessions set authenticated_at = now() where id = ${account.sessionId}::uuid`;
    // With a password still set, the identity is not the last way in.
    const unlinked = await browser.go(`/profile/identities/${identity.id}/unlink`, { method: 'POST' });
    assert.match(unlinked.body, /The identity was unlinked/);
    assert.deepEqual(await identitiesOf(account.user.id), []);

    // A provider-made account (no password) keeps its only identity.
    const who = person();
    const invite = await mintInvite(db, { kind: 'tenant', email: who.email });
    corp.signInAs(who);
    const made = await signIn('corp', { invite: invite.token });
    const [only] = await db.superuser<{ id: string }[]>`
      select i.id from user_identities i join users u on u.id = i.user_id where u.email = ${who.email}`;
    assert.ok(only);
    const refused = await made.browser.go(`/profile/identities/${only.id}/unlink`, { method: 'POST' });
    assert.equal(refused.status, 409);
    assert.match(refused.body, /only way you can sign in/);
    const [still] = await db.superuser<{ n: number }[]>`
      select count(*)::int4 as n from user_identities where id = ${only.id}::uuid`;
    assert.equal(still?.n, 1);
    // Another user's identity id is not found, and stays.
    const foreign = await browser.go(`/profile/identities/${only.id}/unlink`, { method: 'POST' });
    assert.equal(foreign.status, 404);
    const events = await db.superuser<{ action: string }[]>`
      select action from audit_events where actor = ${`user:${account.user.id}`} and action like 'identity.%'
      order by seq`;
    assert.deepEqual(
      events.map((event) => event.action),
      ['identity.linked', 'identity.unlinked'],
    );
  });
});
