import assert from 'node:assert/strict';
import { test } from 'node:test';
import { withTenant } from '../src/db/tenant.ts';
import { resolveRelayToken } from '../src/relay/connections.ts';
import { startThread } from '../src/relay/threads.ts';
import { createAccount } from './helpers/accounts.ts';
import { insertAgent } from './helpers/agents.ts';
import { callbackDeliveryRow, callbackEndpoint } from './helpers/callbacks.ts';
import { launchChromium, listeningTestApp } from './helpers/chromium.ts';
import { mintInvite, PASSWORD } from './helpers/pages.ts';
import { approvedConnection, relayAgent } from './helpers/relay.ts';
import { requireTool } from './helpers/system-tools.ts';

// Every page at a phone's width (390 px, an iPhone 12 to 15), in Chromium: nothing scrolls
// sideways and every navigation link can be reached on screen.

const WIDTH = 390;

test('OPS-3: in Chromium at 390 px wide, no page scrolls sideways and the navigation stays on screen', async (t) => {
  if (!requireTool(t, 'chromium', 'chromium')) return;
  const { db, testApp, base } = await listeningTestApp(t);
  // An operator too, so the operator's listing review is among the pages.
  const account = await createAccount(db, testApp, {
    kind: 'operator',
    username: 'narrow-owner',
    password: PASSWORD,
  });
  const agentId = await insertAgent(db.app, account.user.tenant_id, 'narrow');
  // A thread another tenant opened with one of the account's agents, its message one long word.
  const target = await relayAgent({ testApp }, account);
  const asker = await createAccount(db, testApp);
  const { connectionId, relayToken } = await approvedConnection({ testApp }, account, asker, target);
  const grant = await resolveRelayToken(db.app, relayToken);
  assert.ok(grant !== undefined);
  const { thread } = await withTenant(db.app, grant.targetTenantId, (tx) =>
    startThread(tx, grant, `${'x'.repeat(400)} wraps`),
  );
  // A pending connection request with a long message (the incoming list), one of the account's own
  // (the outgoing list), and a listing request waiting for the operator.
  const third = await createAccount(db, testApp);
  const other = await relayAgent({ testApp }, asker);
  for (const [from, handle] of [
    [third, target.handle],
    [account, other.handle],
  ] as const) {
    const requested = await testApp.app.inject({
      method: 'POST',
      url: '/api/v1/connections',
      headers: { authorization: `Bearer ${from.apiToken}` },
      payload: { handle, message: `${'y'.repeat(300)} please` },
    });
    assert.equal(requested.statusCode, 201, requested.body);
  }
  const listing = await testApp.app.inject({
    method: 'POST',
    url: `/api/v1/agents/${target.id}/listing`,
    headers: { authorization: `Bearer ${account.apiToken}` },
  });
  assert.equal(listing.statusCode, 200, listing.body);
  // A webhook endpoint with a long URL, and a delivery to show with its attempts.
  const endpoint = await callbackEndpoint(db, `https://hooks.example/${'long-path-'.repeat(30)}`, {
    tenantId: account.user.tenant_id,
    agentId,
  });
  const delivery = await callbackDeliveryRow(db, endpoint);
  const browser = await launchChromium(t);
  const page = await (await browser.newContext({ viewport: { width: WIDTH, height: 844 } })).newPage();

  const signedOut = [
    '/login',
    '/recover',
    '/status',
    `/signup?invite=${await mintInvite(db, { email: 'narrow@example.com' })}`,
  ];
  const signedIn = [
    '/dashboard',
    '/dashboard/agents',
    '/dashboard/agents/new',
    '/dashboard/agents/new?template=echo',
    `/dashboard/agents/${agentId}`,
    '/dashboard/settings/tokens',
    '/dashboard/settings/invites',
    '/dashboard/audit',
    '/dashboard/members',
    '/directory',
    '/dashboard/connections',
    '/dashboard/connections/incoming',
    '/dashboard/connections/outgoing',
    `/dashboard/connections/${connectionId}/revoke`,
    '/dashboard/threads',
    `/dashboard/threads/${thread.id}`,
    `/dashboard/threads/${thread.id}/close`,
    '/operator/listings',
    '/dashboard/webhooks',
    `/dashboard/webhooks/${endpoint.id}?delivery=${delivery.id}`,
    '/profile',
    '/docs',
    '/docs/problems',
  ];
  const overflow: string[] = [];
  const measure = async (url: string) => {
    const response = await page.goto(`${base}${url}`);
    assert.equal(response?.status(), 200, url);
    // The reference is drawn by Swagger UI after the page loads: measure it drawn.
    if (url === '/docs') await page.locator('.opblock-summary').first().waitFor();
    const scroll = Number(await page.evaluate('document.documentElement.scrollWidth'));
    let links = 0;
    for (const link of await page.locator('header nav a').all()) {
      const box = await link.boundingBox();
      if (box === null || box.x < 0 || box.x + box.width > WIDTH) links += 1;
    }
    if (scroll > WIDTH || links > 0)
      overflow.push(`${url}: ${scroll} px wide, ${links} navigation links off screen`);
  };
  for (const url of signedOut) await measure(url);
  await page.goto(`${base}/login`);
  await page.getByLabel('Username or email').fill(account.user.username);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await page.waitForURL(`${base}/dashboard`);
  for (const url of signedIn) await measure(url);
  await page.goto(`${base}/dashboard/agents/${agentId}`);
  await page.screenshot({ path: '/tmp/enclave-narrow-agent.png', fullPage: true });
  assert.deepEqual(overflow, []);
});
