import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { LightMyRequestResponse } from 'fastify';
import { createAccount } from '../../test/helpers/accounts.ts';
import { buildTestApp, type TestApp } from '../../test/helpers/app.ts';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/database.ts';

// Attack: script injected into a page runs, or the page is framed for
// clickjacking, or a production session travels over plain http. The
// headers below are the browser-side half of the defence.

let db: TestDatabase;
let development: TestApp;
let production: TestApp;

before(async () => {
  db = await createTestDatabase();
  development = await buildTestApp(db);
  production = await buildTestApp(db, {
    ENCLAVE_ENV: 'production',
    ENCLAVE_PUBLIC_URL: 'https://enclave.example',
    ENCLAVE_SMTP_URL: 'smtp://mail.example:587',
  });
});
after(async () => {
  await development.app.close();
  await production.app.close();
  await db.drop();
});

function directives(response: LightMyRequestResponse): Map<string, string[]> {
  const header = response.headers['content-security-policy'];
  assert.equal(typeof header, 'string', 'content-security-policy is set');
  const map = new Map<string, string[]>();
  for (const part of String(header).split(';')) {
    const [name, ...values] = part.trim().split(/\s+/);
    if (name !== undefined && name !== '') map.set(name.toLowerCase(), values);
  }
  return map;
}

function assertStrictHeaders(response: LightMyRequestResponse): void {
  const csp = directives(response);
  assert.deepEqual(csp.get('script-src'), ["'self'"]);
  assert.deepEqual(csp.get('frame-ancestors'), ["'none'"]);
  assert.deepEqual(csp.get('object-src'), ["'none'"]);
  assert.deepEqual(csp.get('base-uri'), ["'none'"]);
  assert.deepEqual(csp.get('default-src'), ["'none'"]);
  const raw = String(response.headers['content-security-policy']);
  assert.ok(!raw.includes("'unsafe-inline'"), raw);
  assert.ok(!raw.includes("'unsafe-eval'"), raw);
  assert.ok(!raw.includes('*'), `no wildcard sources: ${raw}`);
  assert.equal(response.headers['x-frame-options'], 'DENY');
  assert.equal(response.headers['x-content-type-options'], 'nosniff');
}

/** Every header the security-header plugin sets (HSTS only in production). */
const SECURITY_HEADERS = [
  'content-security-policy',
  'cross-origin-opener-policy',
  'cross-origin-resource-policy',
  'origin-agent-cluster',
  'referrer-policy',
  'strict-transport-security',
  'x-content-type-options',
  'x-dns-prefetch-control',
  'x-download-options',
  'x-frame-options',
  'x-permitted-cross-domain-policies',
  'x-xss-protection',
];

function securityHeaders(response: LightMyRequestResponse): Record<string, unknown> {
  return Object.fromEntries(SECURITY_HEADERS.map((name) => [name, response.headers[name]]));
}

describe('security headers', () => {
  test('OPS-3: a successful response carries a strict CSP, no framing and nosniff', async () => {
    const response = await development.app.inject({ method: 'GET', url: '/healthz' });
    assert.equal(response.statusCode, 200);
    assertStrictHeaders(response);
  });

  test('OPS-3: error responses carry the same headers', async () => {
    const response = await development.app.inject({ method: 'GET', url: '/no/such/page' });
    assert.equal(response.statusCode, 404);
    assertStrictHeaders(response);
  });

  test('OPS-3: every kind of response carries the same security headers: page, API, problem, 404, static file, redirect, framework error', async () => {
    for (const testApp of [development, production]) {
      const { apiToken } = await createAccount(db, testApp);
      const requests = [
        { kind: 'page', method: 'GET', url: '/login', status: 200 },
        {
          kind: 'API',
          method: 'GET',
          url: '/api/v1/me',
          headers: { authorization: `Bearer ${apiToken}` },
          status: 200,
        },
        { kind: 'API problem', method: 'GET', url: '/api/v1/me', status: 401 },
        { kind: 'query refused', method: 'GET', url: '/login?next=%00', status: 400 },
        {
          kind: 'CSRF refusal',
          method: 'POST',
          url: '/logout',
          headers: { origin: 'https://evil.example' },
          status: 403,
        },
        { kind: '404', method: 'GET', url: '/no/such/page', status: 404 },
        { kind: 'static file', method: 'GET', url: '/static/app.css', status: 200 },
        { kind: 'redirect', method: 'GET', url: '/', status: 303 },
        { kind: 'framework error', method: 'GET', url: '/%zz', status: 400 },
      ] as const;
      const reference = securityHeaders(await testApp.app.inject({ method: 'GET', url: '/healthz' }));
      for (const name of SECURITY_HEADERS) {
        const expected = name === 'strict-transport-security' ? testApp === production : true;
        assert.equal(reference[name] !== undefined, expected, `${name} on /healthz`);
      }
      for (const { kind, status, ...request } of requests) {
        const response = await testApp.app.inject(request);
        assert.equal(response.statusCode, status, `${kind}: ${request.url}`);
        assert.deepEqual(securityHeaders(response), reference, `${kind}: ${request.url}`);
        assertStrictHeaders(response);
      }
    }
  });

  test('OPS-3: development sends no HSTS, so a local http server does not pin https', async () => {
    const response = await development.app.inject({ method: 'GET', url: '/healthz' });
    assert.equal(response.headers['strict-transport-security'], undefined);
  });

  test('OPS-3: production sends HSTS for at least a year, on success and on error', async () => {
    for (const url of ['/healthz', '/no/such/page']) {
      const response = await production.app.inject({ method: 'GET', url });
      const hsts = String(response.headers['strict-transport-security'] ?? '');
      const maxAge = /max-age=(\d+)/.exec(hsts);
      assert.ok(maxAge, `HSTS on ${url}: "${hsts}"`);
      assert.ok(Number(maxAge[1]) >= 31536000, hsts);
      assertStrictHeaders(response);
    }
  });

  test('OPS-3: /docs works under the strict CSP: no inline script or style, scripts and stylesheets from our origin only', async () => {
    const response = await development.app.inject({ method: 'GET', url: '/docs' });
    assert.equal(response.statusCode, 200);
    assert.match(String(response.headers['content-type']), /^text\/html/);
    const page = response.body;
    for (const match of page.matchAll(/<script\b[^>]*>/gi)) {
      assert.match(match[0], /\ssrc=/i, `inline script: ${match[0]}`);
    }
    assert.doesNotMatch(page, /<style\b/i);
    assert.doesNotMatch(page, /\sstyle\s*=/i);
    assert.doesNotMatch(page, /\son[a-z]+\s*=/i, 'no inline event handlers');
    for (const match of page.matchAll(/\s(?:src|href)="([^"]*)"/gi)) {
      assert.match(match[1] ?? '', /^\/(?!\/)/, `served from our origin: ${match[0]}`);
    }
    assertStrictHeaders(response);
  });

  test('OPS-3: the stylesheet is served from our origin as text/css', async () => {
    const response = await development.app.inject({ method: 'GET', url: '/static/app.css' });
    assert.equal(response.statusCode, 200);
    assert.match(String(response.headers['content-type']), /^text\/css/);
    assert.equal(response.headers['x-content-type-options'], 'nosniff');
    assert.ok(response.body.includes('body'));
  });

  test('OPS-3: every page names its icon, served from our origin as SVG (no favicon.ico request that ends in a problem document)', async () => {
    const page = await development.app.inject({ method: 'GET', url: '/login' });
    assert.match(page.body, /<link rel="icon" href="\/static\/favicon\.svg" type="image\/svg\+xml">/);
    const icon = await development.app.inject({ method: 'GET', url: '/static/favicon.svg' });
    assert.equal(icon.statusCode, 200);
    assert.match(String(icon.headers['content-type']), /^image\/svg\+xml/);
    assert.doesNotMatch(icon.body, /<script/i);
  });
});
