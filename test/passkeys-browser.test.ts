import assert from 'node:assert/strict';
import { type TestContext, test } from 'node:test';
import type { Browser, BrowserContext, CDPSession, Page } from 'playwright-core';
import { launchChromium, listeningTestApp, pageProblems } from './helpers/chromium.ts';
import type { TestDatabase } from './helpers/database.ts';
import { mintInvite, PASSWORD } from './helpers/pages.ts';
import { requireTool } from './helpers/system-tools.ts';

// Passkeys (ACC-8) as a person meets them in Chromium, with the DevTools
// WebAuthn virtual authenticator standing in for the device: a CTAP2
// platform authenticator that keeps discoverable credentials and verifies
// its user. The app's public URL is http://localhost:<port>: WebAuthn needs
// a domain for its RP ID, and allows http on localhost.

interface Site {
  readonly db: TestDatabase;
  readonly base: string;
  readonly browser: Browser;
}

/** The app on localhost and a Chromium; undefined (the test skipped) where Chromium is missing. */
async function openSite(t: TestContext): Promise<Site | undefined> {
  if (!requireTool(t, 'chromium', 'chromium')) return undefined;
  const { db, base } = await listeningTestApp(t, { publicHost: 'localhost' });
  return { db, base, browser: await launchChromium(t) };
}

/** A person at their own browser, whose device is a virtual authenticator. */
interface Person {
  readonly context: BrowserContext;
  readonly page: Page;
  readonly cdp: CDPSession;
  readonly authenticatorId: string;
  /** CSP violations and page errors seen so far. */
  readonly problems: string[];
}

async function personAt(site: Site): Promise<Person> {
  const context = await site.browser.newContext();
  const page = await context.newPage();
  const problems = pageProblems(page);
  const cdp = await context.newCDPSession(page);
  await cdp.send('WebAuthn.enable', { enableUI: false });
  return { context, page, cdp, authenticatorId: await addDevice(cdp), problems };
}

/** A platform authenticator with user verification whose passkeys are synced (backup eligible, backed up). */
async function addDevice(cdp: CDPSession): Promise<string> {
  const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: {
      protocol: 'ctap2',
      transport: 'internal',
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
      defaultBackupEligibility: true,
      defaultBackupState: true,
    },
  });
  return authenticatorId;
}

async function signUp(site: Site, person: Person, username: string): Promise<void> {
  const invite = await mintInvite(site.db, { email: `${username}@example.com` });
  await person.page.goto(`${site.base}/signup?invite=${invite}`);
  await person.page.getByLabel('Username').fill(username);
  await person.page.getByLabel('Password').fill(PASSWORD);
  await person.page.getByRole('button', { name: 'Create account' }).click();
  await person.page.waitForURL(`${site.base}/dashboard`);
}

/** The profile's Passkeys section (the second-step section lists passkeys by name too). */
function passkeyList(page: Page) {
  return page.getByRole('region', { name: 'Passkeys' });
}

async function addPasskey(site: Site, page: Page, name: string): Promise<void> {
  await page.goto(`${site.base}/profile`);
  await page.getByLabel('Passkey name').fill(name);
  await page.getByRole('button', { name: 'Add a passkey' }).click();
  await page.waitForURL(`${site.base}/profile?notice=passkey-added#passkeys`);
}

/** A person signed up with one passkey on their device, then signed out. */
async function personWithPasskey(site: Site, username: string, passkeyName: string): Promise<Person> {
  const person = await personAt(site);
  await signUp(site, person, username);
  await addPasskey(site, person.page, passkeyName);
  await signOut(site, person.page);
  return person;
}

async function signOut(site: Site, page: Page): Promise<void> {
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.waitForURL(`${site.base}/login?notice=signed-out`);
}

async function signInWithPasskey(site: Site, page: Page): Promise<void> {
  await page.goto(`${site.base}/login`);
  await page.getByRole('button', { name: 'Sign in with a passkey' }).click();
}

/** The password step; the page then waits at /login/verify/:challenge. */
async function passwordStep(site: Site, page: Page, username: string): Promise<void> {
  await page.goto(`${site.base}/login`);
  await page.getByLabel('Username or email').fill(username);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await page.waitForURL(/\/login\/verify\/[0-9a-f-]{36}$/);
}

async function hasSession(site: Site, person: Person): Promise<boolean> {
  return (await person.context.cookies(site.base)).some((cookie) => cookie.name === 'enclave_session');
}

async function factorEvents(db: TestDatabase) {
  return db.superuser<{ action: string; data: Record<string, unknown> }[]>`
    select action, data from audit_events
    where action like 'factor.%' or action like 'passkey.%' order by seq`;
}

test('ACC-8: in Chromium, passkeys are added from /profile with a name (an answer works once; a second on another device; backup flags stored), renamed, and removed', async (t) => {
  const site = await openSite(t);
  if (site === undefined) return;
  const person = await personAt(site);
  const { page } = person;
  await signUp(site, person, 'keyholder');
  const answers: string[] = [];
  page.on('request', (request) => {
    if (request.method() === 'POST' && request.url() === `${site.base}/profile/passkeys`) {
      answers.push(request.postData() ?? '');
    }
  });
  await addPasskey(site, page, 'Work laptop');
  assert.match((await page.locator('.notice').textContent()) ?? '', /The passkey was added/);
  // The answer again: its challenge was used, so nothing is added.
  const replay = await page.request.post(`${site.base}/profile/passkeys`, {
    headers: { origin: site.base, 'content-type': 'application/x-www-form-urlencoded' },
    data: answers[0] ?? '',
  });
  assert.equal(replay.status(), 400);
  assert.match(await replay.text(), /took too long/);
  assert.ok(await passkeyList(page).getByRole('cell', { name: 'Work laptop', exact: true }).isVisible());

  const { credentials } = await person.cdp.send('WebAuthn.getCredentials', {
    authenticatorId: person.authenticatorId,
  });
  assert.equal(credentials.length, 1);
  assert.equal(credentials[0]?.isResidentCredential, true, 'a discoverable credential');
  const [stored] = await site.db.superuser<
    { credential_id: string; kind: string; name: string; backup_eligible: boolean; backed_up: boolean }[]
  >`
    select c.credential_id, f.kind, f.name, c.backup_eligible, c.backed_up
    from passkey_credentials c join user_factors f on f.id = c.factor_id`;
  assert.equal(stored?.kind, 'passkey');
  assert.equal(stored?.name, 'Work laptop');
  assert.equal(
    stored?.credential_id,
    Buffer.from(credentials[0]?.credentialId ?? '', 'base64').toString('base64url'),
  );
  assert.deepEqual(
    [stored?.backup_eligible, stored?.backed_up],
    [true, true],
    'the backup flags the authenticator reported are stored',
  );

  // A second passkey, on another device: the first device would refuse, since the options exclude its credential.
  await person.cdp.send('WebAuthn.removeVirtualAuthenticator', { authenticatorId: person.authenticatorId });
  await addDevice(person.cdp);
  await addPasskey(site, page, 'Phone');
  assert.ok(await passkeyList(page).getByRole('cell', { name: 'Phone', exact: true }).isVisible());
  assert.ok(await passkeyList(page).getByRole('cell', { name: 'Work laptop', exact: true }).isVisible());

  await page.getByRole('link', { name: 'Rename Work laptop' }).click();
  await page.getByLabel('New name').fill('Office laptop');
  await page.getByRole('button', { name: 'Rename passkey' }).click();
  await page.waitForURL(`${site.base}/profile?notice=passkey-renamed#passkeys`);
  assert.ok(await passkeyList(page).getByRole('cell', { name: 'Office laptop', exact: true }).isVisible());

  await page.getByRole('link', { name: 'Remove Office laptop' }).click();
  await page.getByRole('button', { name: 'Remove passkey' }).click();
  await page.waitForURL(`${site.base}/profile?notice=passkey-removed#passkeys`);
  assert.equal(await passkeyList(page).getByRole('cell', { name: 'Office laptop', exact: true }).count(), 0);
  const left = await site.db.superuser<{ name: string }[]>`
    select f.name from passkey_credentials c join user_factors f on f.id = c.factor_id`;
  assert.deepEqual(
    left.map((row) => row.name),
    ['Phone'],
  );

  assert.deepEqual(
    (await factorEvents(site.db)).map((row) => row.action),
    ['factor.enrolled', 'factor.enrolled', 'factor.renamed', 'factor.removed'],
  );
  assert.deepEqual(person.problems, [], 'no CSP violations or page errors');
});

test('ACC-8: in Chromium, a passkey alone signs in from /login (no username, no password), and its answer cannot be replayed', async (t) => {
  const site = await openSite(t);
  if (site === undefined) return;
  const person = await personWithPasskey(site, 'passwordless', 'Phone');
  const { page } = person;
  const answers: string[] = [];
  page.on('request', (request) => {
    if (request.method() === 'POST' && request.url() === `${site.base}/login/passkey`) {
      answers.push(request.postData() ?? '');
    }
  });
  await signInWithPasskey(site, page);
  await page.waitForURL(`${site.base}/dashboard`);
  assert.match((await page.locator('header .who').textContent()) ?? '', /passwordless/);
  const used = (await factorEvents(site.db)).filter((event) => event.action === 'factor.used');
  assert.equal(used.length, 1);
  assert.equal(used[0]?.data.kind, 'passkey');

  // The same answer again, with a fresh challenge cookie of this browser: refused, no session.
  await signOut(site, page);
  const post = (url: string, data: string | Record<string, never>, form: boolean) =>
    page.request.post(`${site.base}${url}`, {
      headers: {
        origin: site.base,
        ...(form ? { 'content-type': 'application/x-www-form-urlencoded' } : {}),
      },
      data,
      maxRedirects: 0,
    });
  await post('/login/passkey/options', {}, false);
  const replay = await post('/login/passkey', answers[0] ?? '', true);
  assert.equal(replay.status(), 401);
  assert.match(await replay.text(), /That passkey did not sign you in/);
  assert.equal(await hasSession(site, person), false, 'no session');
  // And with no challenge at all (the cookie was spent): a 400 that says to try again.
  assert.equal((await post('/login/passkey', answers[0] ?? '', true)).status(), 400);
  assert.deepEqual(person.problems, [], 'no CSP violations or page errors');
});

test('ACC-8: in Chromium, a cloned authenticator whose signature counter is behind is refused and recorded; the original still signs in', async (t) => {
  const site = await openSite(t);
  if (site === undefined) return;
  const original = await personWithPasskey(site, 'cloned', 'Security key');
  const { credentials } = await original.cdp.send('WebAuthn.getCredentials', {
    authenticatorId: original.authenticatorId,
  });
  const exported = credentials[0];
  assert.ok(exported !== undefined);

  // The original signs in once: the stored counter moves past the exported copy's.
  await signInWithPasskey(site, original.page);
  await original.page.waitForURL(`${site.base}/dashboard`);
  const [stored] = await site.db.superuser<{ sign_count: string }[]>`
    select sign_count::text from passkey_credentials`;
  assert.ok(Number(stored?.sign_count) > exported.signCount, 'the counter advanced');
  await signOut(site, original.page);

  // A second authenticator holding the exported credential, with its old counter.
  const clone = await personAt(site);
  await clone.cdp.send('WebAuthn.addCredential', {
    authenticatorId: clone.authenticatorId,
    credential: exported,
  });
  const answered = clone.page.waitForResponse(`${site.base}/login/passkey`);
  await signInWithPasskey(site, clone.page);
  assert.equal((await answered).status(), 401);
  assert.match((await clone.page.locator('.error').first().textContent()) ?? '', /did not sign you in/);
  assert.equal(await hasSession(site, clone), false, 'no session');
  const events = await factorEvents(site.db);
  const failed = events.filter((event) => event.action === 'factor.failed');
  assert.equal(failed.length, 1);
  assert.equal(failed[0]?.data.reason, 'counter');
  assert.equal(events.filter((event) => event.action === 'passkey.counter_stale').length, 1);

  // The original authenticator's counter is still ahead: it signs in.
  await signInWithPasskey(site, original.page);
  await original.page.waitForURL(`${site.base}/dashboard`);
  assert.deepEqual([...original.problems, ...clone.problems], [], 'no CSP violations or page errors');
});

test('ACC-8: in Chromium, a passkey is the second step after a password; a passkey of another account is refused for this one’s step', async (t) => {
  const site = await openSite(t);
  if (site === undefined) return;
  // Bob's passkey lives in Bob's browser; Alice's in Alice's.
  const bob = await personWithPasskey(site, 'bob', 'Bob key');
  const alice = await personWithPasskey(site, 'alice', 'Alice key');

  // Bob signs in: the password, then his passkey.
  await passwordStep(site, bob.page, 'bob');
  await bob.page.getByRole('button', { name: 'Use a passkey' }).click();
  await bob.page.waitForURL(`${site.base}/dashboard`);
  assert.match((await bob.page.locator('header .who').textContent()) ?? '', /bob/);

  // In Alice's browser, Bob's password passes the first step; the step is then
  // answered with Alice's passkey (the options' list of Bob's passkeys dropped).
  await passwordStep(site, alice.page, 'bob');
  const answered = alice.page.waitForResponse((response) =>
    /\/login\/verify\/[0-9a-f-]{36}\/passkey$/.test(response.url()),
  );
  // A string, evaluated in the page: this project's types have no DOM.
  await alice.page.evaluate(`(async () => {
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
  await alice.page.getByRole('heading', { name: 'Confirm it is you' }).waitFor();
  assert.match((await alice.page.locator('.error').first().textContent()) ?? '', /not correct/);
  assert.equal(await hasSession(site, alice), false, 'no session');
  const failed = (await factorEvents(site.db)).filter((event) => event.action === 'factor.failed');
  assert.equal(failed.length, 1);
  assert.equal(failed[0]?.data.kind, 'passkey');
  assert.deepEqual([...bob.problems, ...alice.problems], [], 'no CSP violations or page errors');
});
