import type { TestContext } from 'node:test';
import { type Browser, chromium, type Page } from 'playwright-core';
import { freePort } from '../../src/free-port.ts';
import { buildTestApp, type TestApp } from './app.ts';
import { createTestDatabase, type TestDatabase } from './database.ts';

// For the tests that meet Enclave as a person does: Debian's Chromium, and an
// app listening on the port its public URL names (the URL is the CSRF origin).

export const CHROMIUM = '/usr/bin/chromium';

/** Headless Debian Chromium that talks to nothing but what a test opens; closed after the test. */
export async function launchChromium(t: TestContext): Promise<Browser> {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  t.after(() => browser.close());
  return browser;
}

/**
 * A fresh database and an app listening on 127.0.0.1 at the port of its public URL; both gone after the test.
 * `publicHost` names the public URL's host instead of 127.0.0.1 (WebAuthn needs a domain: "localhost").
 */
export async function listeningTestApp(
  t: TestContext,
  options: { publicHost?: string } = {},
): Promise<{ db: TestDatabase; testApp: TestApp; base: string }> {
  const db = await createTestDatabase();
  t.after(() => db.drop());
  const port = await freePort();
  const testApp = await buildTestApp(db, {
    ENCLAVE_PORT: String(port),
    ...(options.publicHost === undefined
      ? {}
      : { ENCLAVE_PUBLIC_URL: `http://${options.publicHost}:${port}` }),
  });
  t.after(async () => {
    const closing = testApp.app.close();
    // The browser may still hold a connection it opened ahead of need, with no request on it: the
    // server does not count that one as idle, and would wait for it. Here every connection can go.
    testApp.app.server.closeAllConnections();
    await closing;
  });
  await testApp.app.listen({ port, host: '127.0.0.1' });
  return { db, testApp, base: testApp.config.publicUrl };
}

/** Collects the page's CSP violations and uncaught errors; a test ends by asserting the list is empty. */
export function pageProblems(page: Page): string[] {
  const problems: string[] = [];
  page.on('console', (message) => {
    if (message.text().includes('Content Security Policy')) problems.push(message.text());
  });
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  return problems;
}
