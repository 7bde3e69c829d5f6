import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Type } from 'typebox';
import { useTestApp } from '../../test/helpers/app.ts';
import { ORIGIN, type SignedUp, signUp } from '../../test/helpers/pages.ts';
import { RateLimitedError } from './rate-limits.ts';

// #11 item 12: a browser gets error pages in the site's frame, with the
// signed-in user in the header; the API, and any client that does not rank
// text/html first, keeps problem+json. No page shows an internal message.

const ctx = useTestApp();

// What Chromium sends for a navigation.
const BROWSER = 'text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8';

let user: SignedUp;
ctx.before(async () => {
  const { app } = ctx.testApp;
  app.get('/test/page-crash', async () => {
    throw new Error('connect ECONNREFUSED /var/lib/enclave/secret-path');
  });
  app.get('/test/page-busy', async () => {
    throw new RateLimitedError(42);
  });
  app.post(
    '/test/page-form',
    { schema: { hide: true, body: Type.Object({ code: Type.String({ pattern: '^sk-ant-' }) }) } },
    async () => ({ ok: true }),
  );
  await app.ready();
  user = await signUp(app, ctx.db, { username: 'pagereader', email: 'pagereader@example.com' });
});

function get(url: string, accept: string | undefined, cookie?: string) {
  return ctx.testApp.app.inject({
    method: 'GET',
    url,
    remoteAddress: '127.0.0.1',
    headers: { ...(accept === undefined ? {} : { accept }), ...(cookie === undefined ? {} : { cookie }) },
  });
}

const isHtml = (response: { headers: Record<string, unknown> }) =>
  /^text\/html/.test(String(response.headers['content-type']));
const isProblem = (response: { headers: Record<string, unknown> }) =>
  /^application\/problem\+json/.test(String(response.headers['content-type']));

describe('error pages in the browser', () => {
  test('a browser gets a 404 page in the site frame, with a way on and the request id; no-store, under the CSP', async () => {
    const response = await get('/no/such/page', BROWSER);
    assert.equal(response.statusCode, 404);
    assert.ok(isHtml(response));
    assert.equal(response.headers['cache-control'], 'no-store');
    assert.match(String(response.headers['content-security-policy']), /script-src 'self'/);
    assert.match(response.body, /<header class="top">/);
    assert.match(response.body, /<h1>Not found<\/h1>/);
    assert.match(response.body, /There is no page at this address/);
    assert.match(response.body, /<a href="\/">Home<\/a>/);
    assert.match(response.body, /<a href="\/login">Sign in<\/a>/, 'the anonymous header offers sign-in');
    assert.ok(response.body.includes(String(response.headers['x-request-id'])));
  });

  test('the 404 page names the signed-in user in its header and leads back to the dashboard', async () => {
    const response = await get('/no/such/page', BROWSER, user.cookie);
    assert.equal(response.statusCode, 404);
    assert.match(response.body, /<div class="who"><span>pagereader · pagereader<\/span>/);
    assert.match(response.body, /Back to the dashboard/);
  });

  test('the API, Bearer clients and clients that do not rank HTML first keep problem+json', async () => {
    const cases: [string, string | undefined, Record<string, string>][] = [
      ['/no/such/page', undefined, {}],
      ['/no/such/page', '*/*', {}],
      ['/no/such/page', 'application/json', {}],
      ['/no/such/page', 'application/problem+json, text/html;q=0.5', {}],
      ['/api/v1/no-such-thing', BROWSER, {}],
      ['/no/such/page', BROWSER, { authorization: 'Bearer enc_live_x' }],
    ];
    for (const [url, accept, headers] of cases) {
      const response = await ctx.testApp.app.inject({
        method: 'GET',
        url,
        headers: { ...(accept === undefined ? {} : { accept }), ...headers },
      });
      assert.ok(isProblem(response), `${url} with Accept ${accept} ${JSON.stringify(headers)}`);
    }
  });

  test('a 500 page shows the title and reference only, never the internal message', async () => {
    const response = await get('/test/page-crash', BROWSER);
    assert.equal(response.statusCode, 500);
    assert.ok(isHtml(response));
    assert.match(response.body, /<h1>Internal error<\/h1>/);
    assert.match(response.body, /Something went wrong on our side/);
    assert.ok(!response.body.includes('ECONNREFUSED'));
    assert.ok(!response.body.includes('/var/lib'));
    assert.ok(!/at .*\.ts:\d+/.test(response.body), 'no stack trace');
  });

  test('a 429 page says to wait, with Retry-After', async () => {
    const response = await get('/test/page-busy', BROWSER);
    assert.equal(response.statusCode, 429);
    assert.equal(response.headers['retry-after'], '42');
    assert.match(response.body, /<h1>Too many requests<\/h1>/);
    assert.match(response.body, /Retry after 42 seconds\./);
  });

  test('a 413 page for a form larger than the limit', async () => {
    const response = await ctx.testApp.app.inject({
      method: 'POST',
      url: '/login',
      headers: { accept: BROWSER, origin: ORIGIN, 'content-type': 'application/x-www-form-urlencoded' },
      payload: `login=${'a'.repeat(300 * 1024)}`,
    });
    assert.equal(response.statusCode, 413);
    assert.ok(isHtml(response));
    assert.match(response.body, /<h1>Body too large<\/h1>/);
  });

  test('a validation failure page lists each field in words, never the regular expression', async () => {
    const response = await ctx.testApp.app.inject({
      method: 'POST',
      url: '/test/page-form',
      headers: { accept: BROWSER, origin: ORIGIN, 'content-type': 'application/json' },
      payload: { code: 'nope' },
    });
    assert.equal(response.statusCode, 400);
    assert.ok(isHtml(response));
    assert.match(response.body, /<li>code: does not have the expected format<\/li>/);
    assert.ok(!response.body.includes('^sk-ant-'));
  });
});

describe('the header on public pages', () => {
  test('/docs, /docs/problems and /dev/mail name the signed-in user, and offer sign-in to anyone else', async () => {
    for (const url of ['/docs', '/docs/problems', '/dev/mail']) {
      const signedIn = await get(url, BROWSER, user.cookie);
      assert.equal(signedIn.statusCode, 200, url);
      assert.match(signedIn.body, /<div class="who"><span>pagereader · pagereader<\/span>/, url);
      assert.ok(!signedIn.body.includes('<a href="/login">Sign in</a>'), url);
      const anonymous = await get(url, BROWSER);
      assert.match(anonymous.body, /<a href="\/login">Sign in<\/a>/, url);
    }
  });
});
