import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { test } from 'node:test';
import { createAccount } from './helpers/accounts.ts';
import { launchChromium, listeningTestApp } from './helpers/chromium.ts';
import { mintInvite, PASSWORD } from './helpers/pages.ts';
import { requireTool } from './helpers/system-tools.ts';

// The pages as a person meets them, in a real browser (Debian's Chromium)
// against a real HTTP server: sign up from an invite link, land on the
// dashboard, mint a token that is shown once, sign out, sign in again. The
// pages must work under the strict CSP without a single violation, and the
// session cookie must be HttpOnly and SameSite=Lax (ACC-3).

const SCREENSHOT = '/tmp/enclave-dashboard.png';

test('ACC-1, ACC-3, ACC-6, ACC-10, OPS-3: in Chromium, sign up from an invite, mint a token, sign out and in again, with no CSP violation', async (t) => {
  if (!requireTool(t, 'chromium', 'chromium')) return;
  // The public URL is the CSRF origin, so the server listens on the port it names.
  const { db, base } = await listeningTestApp(t);
  assert.match(base, /^http:\/\/127\.0\.0\.1:\d+$/);

  const browser = await launchChromium(t);
  const context = await browser.newContext();
  const page = await context.newPage();
  const violations: string[] = [];
  page.on('console', (message) => {
    if (message.text().includes('Content Security Policy')) violations.push(message.text());
  });
  page.on('pageerror', (error) => violations.push(`page error: ${error.message}`));

  // Sign up with the operator's invite: the address is fixed by the invite.
  const invite = await mintInvite(db, { email: 'browser@example.com', kind: 'operator' });
  await page.goto(`${base}/signup?invite=${invite}`);
  assert.equal(await page.getByLabel('Email address').inputValue(), 'browser@example.com');
  assert.equal(await page.getByLabel('Email address').getAttribute('readonly'), '');
  await page.getByLabel('Username').fill('browser-user');
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Create account' }).click();
  await page.waitForURL(`${base}/dashboard`);
  assert.match((await page.locator('h1').textContent()) ?? '', /Welcome, browser-user/);
  assert.match((await page.locator('header .who').textContent()) ?? '', /browser-user · browser-user/);

  const session = (await context.cookies()).find((cookie) => cookie.name === 'enclave_session');
  assert.ok(session !== undefined, 'the session cookie is set');
  assert.equal(session.httpOnly, true);
  assert.equal(session.sameSite, 'Lax');
  assert.equal(session.path, '/');
  assert.ok(session.expires > Date.now() / 1000, 'the cookie expires (30 minutes, sliding)');

  // Mint a token: shown once.
  const nav = page.locator('header nav');
  await nav.getByRole('link', { name: 'Tokens', exact: true }).click();
  await page.waitForURL(`${base}/dashboard/settings/tokens`);
  await page.getByLabel('Name').fill('laptop');
  await page.getByLabel('Scope').selectOption('write');
  await page.getByRole('button', { name: 'Create token' }).click();
  const token = (await page.locator('#new-token-value').textContent()) ?? '';
  assert.match(token, /^enc_live_[0-9A-Za-z]{43}$/);
  await page.goto(`${base}/dashboard/settings/tokens`);
  const listed = await page.content();
  assert.ok(!listed.includes(token), 'the token is not shown again');
  assert.ok(listed.includes(`enc_live_…${token.slice(-4)}`));
  const me = await page.request.get(`${base}/api/v1/me`, { headers: { authorization: `Bearer ${token}` } });
  assert.equal(me.status(), 200);

  // Sign out, then sign in with the username.
  await page.getByRole('button', { name: 'Sign out', exact: true }).click();
  await page.waitForURL(`${base}/login?notice=signed-out`);
  assert.match((await page.locator('.notice').textContent()) ?? '', /You have signed out\./);
  assert.equal(
    (await context.cookies()).find((cookie) => cookie.name === 'enclave_session'),
    undefined,
  );
  await page.goto(`${base}/profile`);
  await page.waitForURL(`${base}/login?next=%2Fprofile`);
  await page.getByLabel('Username or email').fill('browser-user');
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await page.waitForURL(`${base}/profile`);
  assert.match((await page.locator('table').textContent()) ?? '', /\(this session\)/);
  await nav.getByRole('link', { name: 'Dashboard', exact: true }).click();
  await page.waitForURL(`${base}/dashboard`);
  await page.screenshot({ path: SCREENSHOT, fullPage: true });

  assert.deepEqual(violations, [], 'no CSP violations or page errors');
});

test('AGT-1, VLT-2: in Chromium, sign in, onboard an echo agent from its template with a credential, and see only its last 4', async (t) => {
  if (!requireTool(t, 'chromium', 'chromium')) return;
  const { db, testApp, base } = await listeningTestApp(t);
  const account = await createAccount(db, testApp, { username: 'agent-owner', password: PASSWORD });

  const browser = await launchChromium(t);
  const page = await (await browser.newContext()).newPage();
  const violations: string[] = [];
  page.on('console', (message) => {
    if (message.text().includes('Content Security Policy')) violations.push(message.text());
  });
  page.on('pageerror', (error) => violations.push(`page error: ${error.message}`));

  await page.goto(`${base}/login`);
  await page.getByLabel('Username or email').fill(account.user.username);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await page.waitForURL(`${base}/dashboard`);

  // The template picker is a plain GET form: no script involved.
  await page.locator('header nav').getByRole('link', { name: 'Agents', exact: true }).click();
  await page.waitForURL(`${base}/dashboard/agents`);
  await page.getByRole('link', { name: 'Onboard an agent' }).click();
  await page.waitForURL(`${base}/dashboard/agents/new`);
  await page.getByLabel('Echo', { exact: true }).check();
  await page.getByRole('button', { name: 'Continue' }).click();
  await page.waitForURL(`${base}/dashboard/agents/new?template=echo`);

  const canary = `canary-browser-${randomUUID()}`;
  await page.getByLabel('Name', { exact: true }).fill('Browser echo');
  await page.getByLabel('Handle', { exact: true }).fill('browser-echo');
  const token = page.getByLabel('echo_token (optional)');
  assert.equal(await token.getAttribute('type'), 'password');
  assert.equal(await token.getAttribute('autocomplete'), 'new-password');
  await token.fill(canary);
  assert.equal(
    await page.getByLabel('Allow support access').isChecked(),
    true,
    'support access is on by default',
  );
  await page.getByRole('button', { name: 'Onboard agent' }).click();
  await page.waitForURL(/\/dashboard\/agents\/[0-9a-f-]{36}\?notice=agent-created$/);

  assert.equal(await page.locator('h1').textContent(), 'Browser echo');
  const shown = await page.content();
  assert.ok(shown.includes(`…${canary.slice(-4)}`), 'the last 4 are shown');
  assert.ok(!shown.includes(canary), 'the credential is not');
  await page.screenshot({ path: '/tmp/enclave-agent.png', fullPage: true });

  assert.deepEqual(violations, [], 'no CSP violations or page errors');
});
