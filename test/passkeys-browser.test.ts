import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { BrowserContext, CDPSession, Page } from 'playwright-core';
import { launchChromium, listeningTestApp, pageProblems } from './helpers/chromium.ts';
import { mintInvite, PASSWORD } from './helpers/pages.ts';
import { requireTool } from './helpers/system-tools.ts';

// Passkeys (ACC-8) as a person meets them in Chromium, with the DevTools
// WebAuthn virtual authenticator standing in for the device: a CTAP2
// platform authenticator that keeps discoverable credentials and verifies
// its user. The app's public URL is http://localhost:<port>: WebAuthn needs
// a domain for its RP ID, and allows http on localhost.

interface VirtualAuthenticator {
  readonly cdp: CDPSession;
  readonly id: string;
}

async function addAuthenticator(context: BrowserContext, page: Page): Promise<VirtualAuthenticator> {
  const cdp = await context.newCDPSession(page);
  await cdp.send('WebAuthn.enable', { enableUI: false });
  const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: {
      protocol: 'ctap2',
      transport: 'internal',
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
    },
  });
  return { cdp, id: authenticatorId };
}

async function signUpInBrowser(
  page: Page,
  base: string,
  db: Parameters<typeof mintInvite>[0],
  username: string,
) {
  const invite = await mintInvite(db, { email: `${username}@example.com` });
  await page.goto(`${base}/signup?invite=${invite}`);
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Create account' }).click();
  await page.waitForURL(`${base}/dashboard`);
}

/** The profile's Passkeys section (the second-step section lists passkeys by name too). */
function passkeyList(page: Page) {
  return page.getByRole('region', { name: 'Passkeys' });
}

async function addPasskey(page: Page, base: string, name: string): Promise<void> {
  await page.goto(`${base}/profile`);
  await page.getByLabel('Passkey name').fill(name);
  await page.getByRole('button', { name: 'Add a passkey' }).click();
  await page.waitForURL(`${base}/profile?notice=passkey-added#passkeys`);
}

test('ACC-8: in Chromium, a passkey is added from /profile with a name, renamed, and removed', async (t) => {
  if (!requireTool(t, 'chromium', 'chromium')) return;
  const { db, base } = await listeningTestApp(t, { publicHost: 'localhost' });
  const browser = await launchChromium(t);
  const context = await browser.newContext();
  const page = await context.newPage();
  const violations = pageProblems(page);
  const authenticator = await addAuthenticator(context, page);

  await signUpInBrowser(page, base, db, 'keyholder');
  await addPasskey(page, base, 'Work laptop');
  assert.match((await page.locator('.notice').textContent()) ?? '', /The passkey was added/);
  assert.ok(await passkeyList(page).getByRole('cell', { name: 'Work laptop', exact: true }).isVisible());

  const { credentials } = await authenticator.cdp.send('WebAuthn.getCredentials', {
    authenticatorId: authenticator.id,
  });
  assert.equal(credentials.length, 1);
  assert.equal(credentials[0]?.isResidentCredential, true, 'a discoverable credential');
  const [stored] = await db.superuser<{ credential_id: string; kind: string; name: string }[]>`
    select c.credential_id, f.kind, f.name from passkey_credentials c join user_factors f on f.id = c.factor_id`;
  assert.equal(stored?.kind, 'passkey');
  assert.equal(stored?.name, 'Work laptop');
  assert.equal(
    stored?.credential_id,
    Buffer.from(credentials[0]?.credentialId ?? '', 'base64').toString('base64url'),
  );

  await page.getByRole('link', { name: 'Rename Work laptop' }).click();
  await page.getByLabel('New name').fill('Office laptop');
  await page.getByRole('button', { name: 'Rename passkey' }).click();
  await page.waitForURL(`${base}/profile?notice=passkey-renamed#passkeys`);
  assert.ok(await passkeyList(page).getByRole('cell', { name: 'Office laptop', exact: true }).isVisible());

  await page.getByRole('link', { name: 'Remove Office laptop' }).click();
  await page.getByRole('button', { name: 'Remove passkey' }).click();
  await page.waitForURL(`${base}/profile?notice=passkey-removed#passkeys`);
  assert.match(await page.content(), /You have no passkeys yet/);
  const [left] = await db.superuser<
    { count: number }[]
  >`select count(*)::int as count from passkey_credentials`;
  assert.equal(left?.count, 0);

  const actions = await db.superuser<{ action: string }[]>`
    select action from audit_events where action like 'factor.%' order by seq`;
  assert.deepEqual(
    actions.map((row) => row.action),
    ['factor.enrolled', 'factor.renamed', 'factor.removed'],
  );
  assert.deepEqual(violations, [], 'no CSP violations or page errors');
});

async function signOut(page: Page, base: string): Promise<void> {
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.waitForURL(`${base}/login?notice=signed-out`);
}

async function signInWithPasskey(page: Page, base: string): Promise<void> {
  await page.goto(`${base}/login`);
  await page.getByRole('button', { name: 'Sign in with a passkey' }).click();
}

async function factorEvents(db: Parameters<typeof mintInvite>[0]) {
  return db.superuser<{ action: string; data: Record<string, unknown> }[]>`
    select action, data from audit_events
    where action like 'factor.%' or action like 'passkey.%' or action = 'session.login' order by seq`;
}

test('ACC-8: in Chromium, a passkey alone signs in from /login (no username, no password), and its answer cannot be replayed', async (t) => {
  if (!requireTool(t, 'chromium', 'chromium')) return;
  const { db, base } = await listeningTestApp(t, { publicHost: 'localhost' });
  const browser = await launchChromium(t);
  const context = await browser.newContext();
  const page = await context.newPage();
  const violations = pageProblems(page);
  await addAuthenticator(context, page);

  await signUpInBrowser(page, base, db, 'passwordless');
  await addPasskey(page, base, 'Phone');
  await signOut(page, base);

  const answers: string[] = [];
  page.on('request', (request) => {
    if (request.method() === 'POST' && request.url() === `${base}/login/passkey`) {
      answers.push(request.postData() ?? '');
    }
  });
  await signInWithPasskey(page, base);
  await page.waitForURL(`${base}/dashboard`);
  assert.match((await page.locator('header .who').textContent()) ?? '', /passwordless/);
  const used = (await factorEvents(db)).filter((event) => event.action === 'factor.used');
  assert.equal(used.length, 1);
  assert.equal(used[0]?.data.kind, 'passkey');

  // The same answer again, with a fresh challenge cookie of this browser: refused, no session.
  await signOut(page, base);
  const headers = { origin: base };
  await page.request.post(`${base}/login/passkey/options`, { headers, data: {} });
  const replay = await page.request.post(`${base}/login/passkey`, {
    headers: { ...headers, 'content-type': 'application/x-www-form-urlencoded' },
    data: answers[0] ?? '',
    maxRedirects: 0,
  });
  assert.equal(replay.status(), 401);
  assert.match(await replay.text(), /That passkey did not sign you in/);
  const cookies = await context.cookies(base);
  assert.equal(
    cookies.find((cookie) => cookie.name === 'enclave_session'),
    undefined,
    'no session',
  );
  // And with no challenge at all (the cookie was spent): a 400 that says to try again.
  const stale = await page.request.post(`${base}/login/passkey`, {
    headers: { ...headers, 'content-type': 'application/x-www-form-urlencoded' },
    data: answers[0] ?? '',
    maxRedirects: 0,
  });
  assert.equal(stale.status(), 400);
  assert.deepEqual(violations, [], 'no CSP violations or page errors');
});

test('ACC-8: in Chromium, a cloned authenticator whose signature counter is behind is refused and recorded; the original still signs in', async (t) => {
  if (!requireTool(t, 'chromium', 'chromium')) return;
  const { db, base } = await listeningTestApp(t, { publicHost: 'localhost' });
  const browser = await launchChromium(t);
  const original = await browser.newContext();
  const page = await original.newPage();
  const authenticator = await addAuthenticator(original, page);

  await signUpInBrowser(page, base, db, 'cloned');
  await addPasskey(page, base, 'Security key');
  const { credentials } = await authenticator.cdp.send('WebAuthn.getCredentials', {
    authenticatorId: authenticator.id,
  });
  const exported = credentials[0];
  assert.ok(exported !== undefined);

  // The original signs in once: the stored counter moves past the exported copy's.
  await signOut(page, base);
  await signInWithPasskey(page, base);
  await page.waitForURL(`${base}/dashboard`);
  const [stored] = await db.superuser<
    { sign_count: string }[]
  >`select sign_count::text from passkey_credentials`;
  assert.ok(Number(stored?.sign_count) > exported.signCount, 'the counter advanced');
  await signOut(page, base);

  // A second authenticator holding the exported credential, with its old counter.
  const clone = await browser.newContext();
  const clonePage = await clone.newPage();
  const violations = pageProblems(clonePage);
  const second = await addAuthenticator(clone, clonePage);
  await second.cdp.send('WebAuthn.addCredential', { authenticatorId: second.id, credential: exported });
  const answered = clonePage.waitForResponse(`${base}/login/passkey`);
  await signInWithPasskey(clonePage, base);
  assert.equal((await answered).status(), 401);
  assert.match((await clonePage.locator('.error').first().textContent()) ?? '', /did not sign you in/);
  assert.equal(
    (await clone.cookies(base)).find((cookie) => cookie.name === 'enclave_session'),
    undefined,
    'no session',
  );
  const events = await factorEvents(db);
  const failed = events.filter((event) => event.action === 'factor.failed');
  assert.equal(failed.length, 1);
  assert.equal(failed[0]?.data.reason, 'counter');
  assert.equal(events.filter((event) => event.action === 'passkey.counter_stale').length, 1);

  // The original authenticator's counter is still ahead: it signs in.
  await signInWithPasskey(page, base);
  await page.waitForURL(`${base}/dashboard`);
  assert.deepEqual(violations, [], 'no CSP violations or page errors');
});

test('ACC-8: in Chromium, a passkey is the second step after a password; a passkey of another account is refused for this one’s step', async (t) => {
  if (!requireTool(t, 'chromium', 'chromium')) return;
  const { db, base } = await listeningTestApp(t, { publicHost: 'localhost' });
  const browser = await launchChromium(t);

  // Bob's passkey lives in Bob's browser; Alice's in Alice's.
  const bobs = await browser.newContext();
  const bobPage = await bobs.newPage();
  const violations = pageProblems(bobPage);
  await addAuthenticator(bobs, bobPage);
  await signUpInBrowser(bobPage, base, db, 'bob');
  await addPasskey(bobPage, base, 'Bob key');
  await signOut(bobPage, base);

  // Bob signs in: the password, then his passkey.
  await bobPage.getByLabel('Username or email').fill('bob');
  await bobPage.getByLabel('Password').fill(PASSWORD);
  await bobPage.getByRole('button', { name: 'Sign in', exact: true }).click();
  await bobPage.waitForURL(/\/login\/verify\/[0-9a-f-]{36}$/);
  await bobPage.getByRole('button', { name: 'Use a passkey' }).click();
  await bobPage.waitForURL(`${base}/dashboard`);
  assert.match((await bobPage.locator('header .who').textContent()) ?? '', /bob/);

  const alices = await browser.newContext();
  const alicePage = await alices.newPage();
  await addAuthenticator(alices, alicePage);
  await signUpInBrowser(alicePage, base, db, 'alice');
  await addPasskey(alicePage, base, 'Alice key');
  await signOut(alicePage, base);

  // In Alice's browser, Bob's password passes the first step; the step is then
  // answered with Alice's passkey (the options' list of Bob's passkeys dropped).
  await alicePage.getByLabel('Username or email').fill('bob');
  await alicePage.getByLabel('Password').fill(PASSWORD);
  await alicePage.getByRole('button', { name: 'Sign in', exact: true }).click();
  await alicePage.waitForURL(/\/login\/verify\/[0-9a-f-]{36}$/);
  const answered = alicePage.waitForResponse((response) =>
    /\/login\/verify\/[0-9a-f-]{36}\/passkey$/.test(response.url()),
  );
  // A string, evaluated in the page: this project's types have no DOM.
  await alicePage.evaluate(`(async () => {
    const form = document.querySelector('form[data-passkey]');
    const options = await (await fetch(form.dataset.options, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}',
    })).json();
    delete options.allowCredentials;
    const answer = await SimpleWebAuthnBrowser.startAuthentication({ optionsJSON: options });
    form.elements.namedItem('credential').value = JSON.stringify(answer);
    form.submit();
  })()`);
  assert.equal((await answered).status(), 401);
  await alicePage.getByRole('heading', { name: 'Confirm it is you' }).waitFor();
  assert.match((await alicePage.locator('.error').first().textContent()) ?? '', /not correct/);
  assert.equal(
    (await alices.cookies(base)).find((cookie) => cookie.name === 'enclave_session'),
    undefined,
    'no session',
  );
  const failed = await db.superuser<{ data: { user_id: string; kind: string } }[]>`
    select data from audit_events where action = 'factor.failed'`;
  assert.equal(failed.length, 1);
  assert.equal(failed[0]?.data.kind, 'passkey');
  assert.deepEqual(violations, [], 'no CSP violations or page errors');
});
