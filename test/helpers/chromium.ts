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

/** A fresh database and an app listening on 127.0.0.1 at the port of its public URL; both gone after the test. */
export async function listeningTestApp(
  t: TestContext,
): Promise<{ db: TestDatabase; testApp: TestApp; base: string }> {
  const db = await createTestDatabase();
  t.after(() => db.drop());
  const port = await freePort();
  const testApp = await buildTestApp(db, { ENCLAVE_PORT: String(port) });
  t.after(() => testApp.app.close());
  await testApp.app.listen({ port, host: '127.0.0.1' });
  return { db, testApp, base: testApp.config.publicUrl };
}

/** Every CSP violation and uncaught script error on `page` from now on; a test asserts it stays empty. */
export function pageFaults(page: Page): string[] {
  const faults: string[] = [];
  page.on('console', (message) => {
    if (message.text().includes('Content Security Policy')) faults.push(message.text());
  });
  page.on('pageerror', (error) => faults.push(`page error: ${error.message}`));
  return faults;
}
