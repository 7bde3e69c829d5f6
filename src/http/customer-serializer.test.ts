import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { Type } from 'typebox';
import { createAccount, type TestAccount } from '../../test/helpers/accounts.ts';
import { buildTestApp, type ProblemBody, type TestApp } from '../../test/helpers/app.ts';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/database.ts';
import { checkCustomerPayload, OPERATOR_INTERNAL_FIELDS } from './customer-serializer.ts';

// Attack: a handler returns a row or object that carries an operator-internal
// field (a token hash, a password hash, vault key material). The response
// schema would drop it, but one forgotten schema or a spread in a handler is
// enough; the customer serializer catches it on every route.

let db: TestDatabase;
let development: TestApp;
let production: TestApp;
let account: TestAccount;
const secretValue = `leak-${randomBytes(12).toString('hex')}`;
const LEAK_URL = '/api/v1/test-only/leak';

function addLeakyRoute(testApp: TestApp): void {
  // Test-only: registered on the test app, before it is ready; nothing in src knows it.
  testApp.app.get(LEAK_URL, { config: { auth: 'none' } }, async () => ({
    id: 'row-1',
    items: [{ name: 'ok', nested: { token_hash: secretValue, kept: true } }],
  }));
  // A documented body with a field named like a secret: the schema is metadata, not data.
  testApp.app.post(
    '/api/v1/test-only/password-form',
    { config: { auth: 'none' }, schema: { body: Type.Object({ password: Type.String() }) } },
    async () => ({ ok: true }),
  );
}

before(async () => {
  db = await createTestDatabase();
  development = await buildTestApp(db);
  production = await buildTestApp(db, {
    ENCLAVE_ENV: 'production',
    ENCLAVE_PUBLIC_URL: 'https://enclave.example',
    ENCLAVE_SMTP_URL: 'smtp://mail.example:587',
  });
  addLeakyRoute(development);
  addLeakyRoute(production);
  account = await createAccount(db, development);
});
after(async () => {
  await development.app.close();
  await production.app.close();
  await db.drop();
});

describe('customer serializer', () => {
  test('TEN-8: in development a response carrying a nested token_hash is a 500 internal problem, logged with its path and never its value', async () => {
    const response = await development.app.inject({ method: 'GET', url: LEAK_URL });
    assert.equal(response.statusCode, 500);
    assert.equal(response.json<ProblemBody>().code, 'internal');
    assert.ok(!response.body.includes(secretValue), 'the value is not in the response');
    assert.ok(!response.body.includes('token_hash'), 'the 500 says nothing about the field');
    const lines = development.logLines();
    assert.ok(
      lines.some((line) => line.includes('$.items[0].nested.token_hash') && line.includes('TEN-8')),
      'the violation is logged with the field path',
    );
    assert.ok(!lines.some((line) => line.includes(secretValue)), 'the value is in no log line');
  });

  test('TEN-8: in production the field is stripped from the response and an error is logged', async () => {
    const response = await production.app.inject({ method: 'GET', url: LEAK_URL });
    assert.equal(response.statusCode, 200);
    assert.deepEqual(response.json(), { id: 'row-1', items: [{ name: 'ok', nested: { kept: true } }] });
    assert.ok(!response.body.includes(secretValue));
    const lines = production.logLines();
    const errorLine = lines
      .map((line) => JSON.parse(line) as { level: number; msg: string; fields?: string[] })
      .find((line) => line.msg.includes('TEN-8'));
    assert.ok(errorLine !== undefined, 'the violation is logged');
    assert.equal(errorLine.level, 50, 'at error level');
    assert.deepEqual(errorLine.fields, ['$.items[0].nested.token_hash (operator-internal field)']);
    assert.ok(!lines.some((line) => line.includes(secretValue)), 'the value is in no log line');
  });

  test('TEN-8: ordinary responses (me, tokens, sessions, audit events, problems) pass unchanged', async () => {
    const headers = { authorization: `Bearer ${account.apiToken}` };
    for (const url of ['/api/v1/me', '/api/v1/tokens', '/api/v1/sessions', '/api/v1/audit/events']) {
      const response = await development.app.inject({ method: 'GET', url, headers });
      assert.equal(response.statusCode, 200, url);
    }
    const me = await development.app.inject({ method: 'GET', url: '/api/v1/me', headers });
    assert.equal(me.json<{ id: string }>().id, account.user.id);
    const tokens = await development.app.inject({ method: 'GET', url: '/api/v1/tokens', headers });
    assert.ok(tokens.body.includes(account.apiTokenId));
    const missing = await development.app.inject({ method: 'GET', url: '/api/v1/nothing-here', headers });
    assert.equal(missing.statusCode, 404);
    assert.equal(missing.json<ProblemBody>().code, 'not_found');
    const invalid = await development.app.inject({
      method: 'POST',
      url: '/api/v1/tokens',
      headers,
      payload: { name: '' },
    });
    assert.equal(invalid.json<ProblemBody>().code, 'validation_failed');
    assert.ok(!development.logLines().some((line) => line.includes('TEN-8') && !line.includes(LEAK_URL)));
  });

  test('TEN-8: the OpenAPI document may describe a field named like a secret; it carries no data', async () => {
    const response = await development.app.inject({ method: 'GET', url: '/openapi.json' });
    assert.equal(response.statusCode, 200);
    assert.match(response.body, /"password"/);
  });

  test('TEN-8: every listed field is caught at any depth and in any spelling; client_ip is allowed', () => {
    for (const name of Object.keys(OPERATOR_INTERNAL_FIELDS)) {
      const camel = name.replace(/_([a-z])/g, (_m, c: string) => c.toUpperCase());
      for (const key of new Set([name, camel, name.toUpperCase()])) {
        const { clean, violations } = checkCustomerPayload({ a: [{ b: { [key]: 'v' } }] });
        assert.deepEqual(violations, [{ path: `$.a[0].b.${key}`, reason: 'operator-internal field' }], key);
        assert.deepEqual(clean, { a: [{ b: {} }] });
      }
    }
    const ok = { sessions: [{ client_ip: '10.0.0.1', created_at: new Date() }] };
    assert.deepEqual(checkCustomerPayload(ok), { clean: ok, violations: [] });
    let deep: Record<string, unknown> = {};
    const root = deep;
    for (let i = 0; i < 40; i += 1) {
      const next = {};
      deep.x = next;
      deep = next;
    }
    assert.equal(checkCustomerPayload(root).violations[0]?.reason, 'too deep');
  });
});
