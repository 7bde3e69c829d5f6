import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Page } from 'playwright-core';
import { createAccount } from './helpers/accounts.ts';
import { insertAgent } from './helpers/agents.ts';
import { launchChromium, listeningTestApp, pageProblems } from './helpers/chromium.ts';
import { PASSWORD } from './helpers/pages.ts';
import { requireTool } from './helpers/system-tools.ts';

// The agent page follows its instance while it starts (AGT-6): in Chromium,
// under the strict CSP, the state line and the buttons change in place as the
// runtime moves the instance on, with no reload; with JavaScript off, the page
// offers a Refresh link instead. The runtime's moves are made in the database,
// as the worker would make them, so the test waits for what the page shows.

/** A safety net only: the page polls every 1.5 s. */
const SHOWN_WITHIN_MS = 20_000;

async function signIn(page: Page, base: string, username: string): Promise<void> {
  await page.goto(`${base}/login`);
  await page.getByLabel('Username or email').fill(username);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await page.waitForURL(`${base}/dashboard`);
}

const stateLine = (page: Page, text: string) =>
  page
    .locator('[data-state-line]')
    .filter({ hasText: new RegExp(`^${text.replace(/[()]/g, '\\$&')}$`) })
    .waitFor({ timeout: SHOWN_WITHIN_MS });

const enabled = async (page: Page) => ({
  start: await page.getByRole('button', { name: 'Start', exact: true }).isEnabled(),
  stop: await page.getByRole('button', { name: 'Stop', exact: true }).isEnabled(),
  restart: await page.getByRole('button', { name: 'Restart', exact: true }).isEnabled(),
});

test('AGT-6: in Chromium, the agent page follows a start to running without a reload, under the strict CSP; without JavaScript it offers Refresh', async (t) => {
  if (!requireTool(t, 'chromium', 'chromium')) return;
  const { db, testApp, base } = await listeningTestApp(t);
  const account = await createAccount(db, testApp, { username: 'state-owner', password: PASSWORD });
  const agentId = await insertAgent(db.app, account.user.tenant_id, 'live-state');
  const runtimeSets = (state: string) =>
    db.superuser`update agent_instances set state = ${state} where agent_id = ${agentId}::uuid`;

  const browser = await launchChromium(t);
  const page = await (await browser.newContext()).newPage();
  const violations = pageProblems(page);
  await signIn(page, base, account.user.username);

  await page.goto(`${base}/dashboard/agents/${agentId}`);
  assert.deepEqual(await enabled(page), { start: true, stop: false, restart: false });
  await page.getByRole('button', { name: 'Start', exact: true }).click();
  await page.waitForURL(`${base}/dashboard/agents/${agentId}?notice=instance-start`);
  assert.equal(await page.locator('[data-state-line]').textContent(), 'Stopped (asked to run)');
  assert.equal(await page.getByRole('link', { name: 'Refresh' }).isVisible(), true);
  // Marks this document: a reload would lose it.
  await page.evaluate("document.body.setAttribute('data-same-document', '')");

  await runtimeSets('starting');
  await stateLine(page, 'Starting… (asked to run)');
  assert.deepEqual(await enabled(page), { start: false, stop: true, restart: false });
  await runtimeSets('running');
  await stateLine(page, 'Running');
  assert.deepEqual(await enabled(page), { start: false, stop: true, restart: true });
  assert.equal(await page.getByRole('link', { name: 'Refresh' }).isVisible(), false, 'settled');
  assert.equal(await page.locator('body[data-same-document]').count(), 1, 'updated in place');

  // Without JavaScript: the state as it is at each load, and a Refresh link while it moves.
  await runtimeSets('stopping');
  await db.superuser`update agent_instances set desired_state = 'stopped' where agent_id = ${agentId}::uuid`;
  const noScript = await (await browser.newContext({ javaScriptEnabled: false })).newPage();
  await signIn(noScript, base, account.user.username);
  await noScript.goto(`${base}/dashboard/agents/${agentId}`);
  assert.equal(await noScript.locator('[data-state-line]').textContent(), 'Stopping…');
  const refresh = noScript.getByRole('link', { name: 'Refresh' });
  assert.equal(await refresh.isVisible(), true);
  await runtimeSets('stopped');
  await refresh.click();
  await noScript.waitForURL(`${base}/dashboard/agents/${agentId}`);
  assert.equal(await noScript.locator('[data-state-line]').textContent(), 'Stopped');
  assert.equal(await noScript.getByRole('link', { name: 'Refresh' }).isVisible(), false);

  assert.deepEqual(violations, [], 'no CSP violations or page errors');
});
