import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { mintInvite, uniqueName } from '../../test/helpers/accounts.ts';
import { buildTestApp } from '../../test/helpers/app.ts';
import { CHROMIUM, launchChromium, pageProblems } from '../../test/helpers/chromium.ts';
import { createTestDatabase } from '../../test/helpers/database.ts';
import { providerEnv, startOpenIdProvider } from '../../test/helpers/identity-providers.ts';
import { freePort } from '../free-port.ts';

// As a new user would: in Chromium, against a real OpenID Provider, sign up
// from an invite link with "Sign up with …", then, in another browser, try
// "Sign in with …" with an address that has no invite.

const skip =
  !existsSync(CHROMIUM) && process.env.ENCLAVE_REQUIRE_ALL !== '1'
    ? `Chromium is not installed at ${CHROMIUM}`
    : false;

test('ACC-9, ACC-1: in Chromium, signing up with the OpenID provider from an invite makes the account; without an invite the page says one is needed', {
  skip,
}, async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'enclave-oidc-browser-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const clientSecret = randomBytes(24).toString('hex');
  const provider = await startOpenIdProvider({
    redirectUri: `${base}/auth/corp/callback`,
    clientId: 'enclave',
    clientSecret,
  });
  t.after(() => provider.close());
  const env = await providerEnv(dir, [
    { name: 'corp', label: 'Corp SSO', issuer: provider.issuer, clientId: 'enclave', clientSecret },
  ]);
  const db = await createTestDatabase();
  t.after(() => db.drop());
  const testApp = await buildTestApp(db, { ...env, ENCLAVE_PORT: String(port) });
  t.after(async () => {
    const closing = testApp.app.close();
    testApp.app.server.closeAllConnections();
    await closing;
  });
  await testApp.app.listen({ port, host: '127.0.0.1' });
  const browser = await launchChromium(t);

  const name = uniqueName('sso');
  const email = `${name}@example.test`;
  const invite = await mintInvite(db, { kind: 'tenant', email });
  provider.signInAs({ sub: `sub-${name}`, email, email_verified: true, preferred_username: name });
  const invited = await browser.newPage();
  const problems = pageProblems(invited);
  await invited.goto(`${base}/signup?invite=${invite.token}`);
  await invited.getByRole('button', { name: 'Sign up with Corp SSO' }).click();
  await invited.waitForURL(`${base}/dashboard`);
  await invited.goto(`${base}/profile`);
  assert.match(await invited.content(), new RegExp(`<dd>${name}</dd>`));
  assert.match(await invited.content(), /Unlink Corp SSO/);

  const stranger = uniqueName('sso');
  provider.signInAs({
    sub: `sub-${stranger}`,
    email: `${stranger}@example.test`,
    email_verified: true,
    preferred_username: stranger,
  });
  const uninvited = await (await browser.newContext()).newPage();
  problems.push(...pageProblems(uninvited));
  await uninvited.goto(`${base}/login`);
  await uninvited.getByRole('button', { name: 'Sign in with Corp SSO' }).click();
  await uninvited.getByRole('heading', { name: 'Invite needed' }).waitFor();
  const [row] = await db.superuser<{ n: number }[]>`
    select count(*)::int4 as n from users where email = ${`${stranger}@example.test`}`;
  assert.equal(row?.n, 0);
  assert.deepEqual(problems, []);
});
