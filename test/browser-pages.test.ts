import assert from 'node:assert/strict';
import { test } from 'node:test';
import { launchChromium, listeningTestApp, pageProblems } from './helpers/chromium.ts';
import { mintInvite, PASSWORD } from './helpers/pages.ts';
import { requireTool } from './helpers/system-tools.ts';

// #11 items 12 and 13 as a person meets them in Chromium: a new token is
// shown once after a redirect (a reload mints nothing), copied with its
// button, revoked only after a confirmation page; a page that does not exist
// is an HTML page in the site's frame that still names who is signed in. All
// under the strict CSP without a violation.

test('ACC-10, OPS-3: in Chromium, a new token is shown once after a redirect, copied with its button, and revoked after a confirmation; a 404 is a framed page', async (t) => {
  if (!requireTool(t, 'chromium', 'chromium')) return;
  const { db, base } = await listeningTestApp(t);
  const browser = await launchChromium(t);
  const context = await browser.newContext();
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: base });
  const page = await context.newPage();
  const violations = pageProblems(page);

  const invite = await mintInvite(db, { email: 'pages@example.com', kind: 'operator' });
  await page.goto(`${base}/signup?invite=${invite}`);
  await page.getByLabel('Username').fill('pages-user');
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Create account' }).click();
  await page.waitForURL(`${base}/dashboard`);

  // Create: the POST answers 303, the GET shows the token once.
  await page.goto(`${base}/dashboard/settings/tokens`);
  await page.getByLabel('Name').fill('clip');
  await page.getByRole('button', { name: 'Create token' }).click();
  await page.waitForURL(`${base}/dashboard/settings/tokens`);
  const token = (await page.locator('#new-token-value').textContent()) ?? '';
  assert.match(token, /^enc_live_[0-9A-Za-z]{43}$/);

  const copy = page.getByRole('button', { name: 'Copy the token' });
  assert.equal(await copy.isVisible(), true, 'the script shows the copy button');
  await copy.click();
  await page.getByRole('button', { name: 'Copy the token' }).filter({ hasText: 'Copied' }).waitFor();
  // A string, evaluated in the page: this project's types have no DOM.
  assert.equal(await page.evaluate('navigator.clipboard.readText()'), token);

  // A reload is a GET: no second token, and the first is not shown again.
  await page.reload();
  assert.ok(!(await page.content()).includes(token), 'a reload does not show the token again');
  const [rows] = await db.superuser<{ count: number }[]>`select count(*)::int as count from api_tokens`;
  assert.equal(rows?.count, 1, 'a reload mints no second token');

  // Revoke: a confirmation page first, then the POST.
  await page.getByRole('link', { name: 'Revoke clip' }).click();
  await page.getByRole('heading', { name: 'Revoke the token “clip”?' }).waitFor();
  await page.getByRole('button', { name: 'Revoke token' }).click();
  await page.waitForURL(`${base}/dashboard/settings/tokens?notice=token-revoked`);
  assert.match((await page.locator('.notice').textContent()) ?? '', /The token was revoked\./);

  // A page that does not exist: HTML in the frame, with the user in the header and a way on.
  const missing = await page.goto(`${base}/no/such/page`);
  assert.equal(missing?.status(), 404);
  assert.equal(await page.locator('h1').textContent(), 'Not found');
  assert.match((await page.locator('header .who').textContent()) ?? '', /pages-user/);
  await page.getByRole('link', { name: 'Back to the dashboard' }).click();
  await page.waitForURL(`${base}/dashboard`);

  // The API docs name the user too.
  await page.goto(`${base}/docs`);
  assert.match((await page.locator('header .who').textContent()) ?? '', /pages-user/);

  assert.deepEqual(violations, [], 'no CSP violations or page errors');
});
