import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { test } from 'node:test';
import { createCheckpointService } from '../src/audit/checkpoint-log.ts';
import { canonicalEvent, parseCanonicalEvent } from '../src/audit/event.ts';
import { runVerifier } from '../src/posture/runs.ts';
import { createPostureService } from '../src/posture/verifiers.ts';
import { appendEvents, createTenant, tempAuditSetup } from './helpers/audit.ts';
import { launchChromium, listeningTestApp, pageProblems } from './helpers/chromium.ts';

// OPS-5 as a buyer's reviewer reads it: /security in Chromium with JavaScript
// off, after someone with superuser rights edited an audit row.

test('OPS-5: in Chromium with JavaScript off, /security shows the controls, the posture runs with times, a tampered tenant and seq in red, and what Enclave does not do', async (t) => {
  const { db, base } = await listeningTestApp(t);
  const { setup, dir } = await tempAuditSetup();
  t.after(() => rm(dir, { recursive: true, force: true }));
  const tenant = await createTenant(db);
  await appendEvents(db, tenant, 4);
  const logger = { info: () => {}, error: () => {} };
  await createCheckpointService({
    sql: db.app,
    signing: setup.signing,
    publisher: setup.publisher,
    logger,
  }).makeCheckpoint();
  await db.superuser.begin(async (tx) => {
    await tx`set local session_replication_role = replica`;
    const [row] = await tx<{ canonical: string }[]>`
      select canonical from audit_events where tenant_id = ${tenant}::uuid and seq = 4`;
    assert.ok(row);
    const forged = canonicalEvent({ ...parseCanonicalEvent(row.canonical), action: 'test.forged' });
    await tx`update audit_events set canonical = ${forged} where tenant_id = ${tenant}::uuid and seq = 4`;
  });
  const posture = createPostureService({ sql: db.app, audit: setup });
  await posture.run('chain_integrity');
  await posture.run('tenant_isolation');
  await runVerifier(db.app, 'key_hygiene', async () => {
    throw new Error('vault unreachable');
  });

  const browser = await launchChromium(t);
  const page = await (await browser.newContext({ javaScriptEnabled: false })).newPage();
  const problems = pageProblems(page);
  await page.goto(`${base}/security`);
  assert.equal(await page.getByRole('heading', { level: 1 }).textContent(), 'Security');
  assert.equal(await page.locator('#control-TEN-1 td').nth(1).textContent(), 'enforced');
  assert.equal((await page.locator('table.controls tbody tr').count()) > 50, true, 'every control is listed');

  const chain = page.locator('#posture-chain_integrity');
  assert.equal(await chain.locator('td').nth(1).textContent(), 'FAILED');
  assert.match(
    (await chain.locator('td').nth(3).textContent()) ?? '',
    new RegExp(`tenant ${tenant} at seq 4`),
  );
  assert.equal(await chain.getAttribute('class'), 'result-failed', 'styled red (app.css)');
  assert.equal(await page.locator('#posture-tenant_isolation td').nth(1).textContent(), 'pass');
  assert.match(
    (await page.locator('#posture-tenant_isolation time').getAttribute('datetime')) ?? '',
    /^\d{4}-\d\d-\d\dT/,
  );
  assert.match((await page.locator('#posture-key_hygiene').textContent()) ?? '', /ERROR.*vault unreachable/s);
  assert.equal(await page.locator('#posture-retention_slo td').nth(1).textContent(), 'not run yet');
  assert.equal(await page.getByRole('heading', { name: '3. What Enclave does not do' }).isVisible(), true);
  assert.equal(await page.getByRole('link', { name: '/security.json', exact: true }).isVisible(), true);
  assert.deepEqual(problems, [], 'no CSP violations or page errors');
});
