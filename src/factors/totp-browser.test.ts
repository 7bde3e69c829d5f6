import assert from 'node:assert/strict';
import { test } from 'node:test';
import decodeQR from '@paulmillr/qr/decode.js';
import { authenticatorFrom } from '../../test/helpers/authenticator.ts';
import { launchChromium, listeningTestApp } from '../../test/helpers/chromium.ts';
import { mintInvite, PASSWORD } from '../../test/helpers/pages.ts';
import { requireTool } from '../../test/helpers/system-tools.ts';

// TOTP as a person meets it (ACC-8), in Chromium under the strict CSP: from
// /profile to the enrolment page, whose QR code Chromium draws as pixels;
// those pixels are decoded as a phone's camera would, the phone's code turns
// the app on, and the next sign-in asks for a code.

test('ACC-8: in Chromium, the QR code on the enrolment page decodes from its pixels to the otpauth URI, its code turns TOTP on, and sign-in then asks for a code, with no CSP violation', async (t) => {
  if (!requireTool(t, 'chromium', 'chromium')) return;
  const { db, base } = await listeningTestApp(t);
  const browser = await launchChromium(t);
  const context = await browser.newContext();
  const page = await context.newPage();
  const violations: string[] = [];
  page.on('console', (message) => {
    if (message.text().includes('Content Security Policy')) violations.push(message.text());
  });
  page.on('pageerror', (error) => violations.push(`page error: ${error.message}`));

  const invite = await mintInvite(db, { email: 'phone@example.com', kind: 'tenant' });
  await page.goto(`${base}/signup?invite=${invite}`);
  await page.getByLabel('Username').fill('phone-user');
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Create account' }).click();
  await page.waitForURL(`${base}/dashboard`);

  await page.goto(`${base}/profile`);
  await page.getByRole('link', { name: 'Set up an authenticator app' }).click();
  await page.waitForURL(`${base}/profile/totp`);
  await page.getByRole('button', { name: 'Set up an authenticator app' }).click();
  await page.waitForURL(`${base}/profile/totp/enrol`);
  const qr = page.getByRole('img', { name: 'QR code to scan with your authenticator app' });
  assert.ok(await qr.isVisible());
  assert.equal(await page.locator('script').count(), 0, 'no script on the page');

  // The camera: Chromium rasterises the page's SVG (in a blank page of its own, where drawing
  // to a canvas is allowed) and hands over the RGBA pixels.
  const svg = await page.locator('figure.qr').innerHTML();
  const camera = await context.newPage();
  // A string, evaluated in the page: this project's types have no DOM.
  const frame = (await camera.evaluate(`(async () => {
    const image = new Image();
    image.src = URL.createObjectURL(new Blob([${JSON.stringify(svg)}], { type: 'image/svg+xml' }));
    await image.decode();
    const canvas = document.createElement('canvas');
    canvas.width = 240;
    canvas.height = 240;
    const drawing = canvas.getContext('2d');
    drawing.fillStyle = '#fff';
    drawing.fillRect(0, 0, 240, 240);
    drawing.drawImage(image, 0, 0, 240, 240);
    return Array.from(drawing.getImageData(0, 0, 240, 240).data);
  })()`)) as number[];
  const uri = decodeQR({ width: 240, height: 240, data: Uint8Array.from(frame) });
  assert.match(uri, /^otpauth:\/\/totp\/Enclave:phone-user\?/);
  const phone = authenticatorFrom(uri);
  const shownSecret = ((await page.locator('#totp-secret').textContent()) ?? '').replaceAll(' ', '');
  assert.equal(shownSecret, phone.uri.searchParams.get('secret'));

  await page.getByLabel('Code from the app').fill(phone.code());
  await page.getByRole('button', { name: 'Turn on' }).click();
  await page.waitForURL(`${base}/profile/totp/recovery-codes`);
  assert.equal(await page.locator('#recovery-codes li').count(), 10);

  await page.getByRole('button', { name: 'Sign out', exact: true }).click();
  await page.waitForURL(/\/login/);
  await page.getByLabel('Username or email').fill('phone-user');
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await page.waitForURL(/\/login\/verify\/[0-9a-f-]{36}$/);
  assert.ok(await page.getByLabel('Code from your authenticator app').isVisible());
  assert.deepEqual(violations, []);
});
