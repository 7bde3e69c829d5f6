import assert from 'node:assert/strict';
import { test } from 'node:test';
import { launchChromium, listeningTestApp } from './helpers/chromium.ts';
import { requireTool } from './helpers/system-tools.ts';

// /docs is an API reference a person can read: Swagger UI, served from
// Enclave's own origin under the strict CSP, listing the operations with
// their curl examples, and linking back to the site.

test('OPS-3: in Chromium, /docs renders the Swagger UI reference from our origin with no CSP violation, an operation and its curl example visible', async (t) => {
  if (!requireTool(t, 'chromium', 'chromium')) return;
  const { base } = await listeningTestApp(t);
  const browser = await launchChromium(t);
  const page = await (await browser.newContext()).newPage();
  const problems: string[] = [];
  const origins = new Set<string>();
  page.on('console', (message) => {
    if (message.type() === 'error' || message.text().includes('Content Security Policy')) {
      problems.push(`${message.text()} @ ${JSON.stringify(message.location())}`);
    }
  });
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('request', (request) => origins.add(new URL(request.url()).origin));

  const response = await page.goto(`${base}/docs`);
  assert.equal(response?.status(), 200);
  assert.match(String(response?.headers()['content-security-policy']), /script-src 'self'/);

  // An operation, by its summary, and once opened, its curl example.
  const operation = page.locator('.opblock-summary', { hasText: "A page of the tenant's agents" });
  await operation.waitFor({ timeout: 30_000 });
  await operation.click();
  await page.getByText('curl "$ENCLAVE_URL/api/v1/agents?limit=100"').first().waitFor({ timeout: 10_000 });

  // The introduction links back to the site.
  assert.equal(await page.getByRole('link', { name: '← Back to Enclave' }).getAttribute('href'), '/');
  assert.deepEqual(problems, [], 'no CSP violation or script error');
  assert.deepEqual([...origins], [base], 'every request went to our own origin');
});
