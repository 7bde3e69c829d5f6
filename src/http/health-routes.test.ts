import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import type { Sql } from 'postgres';
import { type ProblemBody, useTestApp } from '../../test/helpers/app.ts';
import { testAuditSetup } from '../../test/helpers/audit.ts';
import { loadConfig } from '../config.ts';
import type { Migration } from '../db/migrator.ts';
import { connect } from '../db/target.ts';
import { createLogger } from '../logger.ts';
import { type App, buildApp } from './app.ts';
import { checkCustomerPayload } from './customer-serializer.ts';

// Liveness answers while the process is up; readiness only when the database
// is reachable and at the schema this code expects, so a load balancer never
// routes to a server that would fail every request.

const ctx = useTestApp();
const extraApps: App[] = [];
const extraPools: Sql[] = [];

ctx.after(async () => {
  for (const app of extraApps) await app.close();
  await Promise.all(extraPools.map((sql) => sql.end({ timeout: 1 })));
});

async function appWith(sql: Sql, migrations: readonly Migration[]): Promise<App> {
  const app = await buildApp({
    config: loadConfig({ ENCLAVE_DATA_DIR: '/nonexistent-enclave-test' }, process.cwd()),
    sql,
    logger: createLogger('silent'),
    migrations,
    sessionKey: randomBytes(32).toString('base64url'),
    rateLimits: ctx.testApp.rateLimits,
    audit: testAuditSetup(),
    relaySigningKey: ctx.testApp.relaySigningKey,
    templates: ctx.testApp.templates,
    vault: ctx.testApp.vault,
    smtpConfigured: false,
    identityProviders: new Map(),
  });
  extraApps.push(app);
  return app;
}

describe('health routes', () => {
  test('/healthz answers 200 ok', async () => {
    const response = await ctx.testApp.app.inject({ method: 'GET', url: '/healthz' });
    assert.equal(response.statusCode, 200);
    assert.deepEqual(response.json(), { status: 'ok' });
  });

  test('/readyz answers 200 with the schema version of the last migration', async () => {
    const last = ctx.db.migrations.at(-1);
    assert.ok(last, 'there is at least one migration');
    const response = await ctx.testApp.app.inject({ method: 'GET', url: '/readyz' });
    assert.equal(response.statusCode, 200);
    assert.deepEqual(response.json(), { status: 'ready', schema_version: last.version });
  });

  test('/readyz answers 503 not_ready when the database lacks a migration this code expects', async () => {
    const last = ctx.db.migrations.at(-1);
    const fake: Migration = {
      version: (last?.version ?? 0) + 1,
      name: 'not_yet_applied',
      sql: 'select 1',
      checksum: '0'.repeat(64),
    };
    const app = await appWith(ctx.db.app, [...ctx.db.migrations, fake]);
    const response = await app.inject({ method: 'GET', url: '/readyz' });
    assert.equal(response.statusCode, 503);
    assert.match(String(response.headers['content-type']), /^application\/problem\+json/);
    const body = response.json<ProblemBody>();
    assert.equal(body.code, 'not_ready');
    assert.equal(body.status, 503);
    assert.match(String(body.detail), new RegExp(`migration ${fake.version}\\b`));
  });

  test('/readyz answers 503 not_ready when the database is unreachable', async () => {
    // Port 1 on loopback: nothing listens, so the connection is refused at once.
    const unreachable = connect({ ...ctx.db.target, host: '127.0.0.1', port: 1 }, ctx.db.appCredentials, {
      max: 1,
    });
    extraPools.push(unreachable);
    const app = await appWith(unreachable, ctx.db.migrations);
    const response = await app.inject({ method: 'GET', url: '/readyz' });
    assert.equal(response.statusCode, 503);
    assert.match(String(response.headers['content-type']), /^application\/problem\+json/);
    const body = response.json<ProblemBody>();
    assert.equal(body.code, 'not_ready');
    assert.equal(body.detail, 'the database is unreachable');
    assert.ok(!response.body.includes(ctx.db.appCredentials.password));
    // Liveness does not depend on the database.
    const health = await app.inject({ method: 'GET', url: '/healthz' });
    assert.equal(health.statusCode, 200);
  });
});

describe('API description', () => {
  test('/openapi.json is OpenAPI 3.1.0 and describes /healthz and /readyz', async () => {
    const response = await ctx.testApp.app.inject({ method: 'GET', url: '/openapi.json' });
    assert.equal(response.statusCode, 200);
    const doc = response.json<{ openapi: string; paths: Record<string, Record<string, unknown>> }>();
    assert.equal(doc.openapi, '3.1.0');
    assert.ok(doc.paths['/healthz']?.get, '/healthz is described');
    assert.ok(doc.paths['/readyz']?.get, '/readyz is described');
    // Hidden plumbing routes stay out of the public description.
    assert.equal(doc.paths['/openapi.json'], undefined);
  });

  test('/docs serves the reference UI, whose document lists /healthz and /readyz', async () => {
    const response = await ctx.testApp.app.inject({ method: 'GET', url: '/docs' });
    assert.equal(response.statusCode, 200);
    assert.match(String(response.headers['content-type']), /^text\/html/);
    assert.match(response.body, /<script src="\/docs\/ui\/static\/swagger-ui-bundle\.js"/);
    const document = await ctx.testApp.app.inject({ method: 'GET', url: '/docs/json' });
    const paths = document.json<{ paths: Record<string, { get?: { summary?: string } }> }>().paths;
    assert.equal(paths['/healthz']?.get?.summary, 'Process liveness');
    assert.equal(paths['/readyz']?.get?.summary, 'Readiness');
  });

  test('TEN-8: every route that answers the OpenAPI document answers it whole, the UI plugin’s own included', async () => {
    // The document's schemas nest deeper than a customer response may (MAX_DEPTH); the check must not cut them.
    const reference = await ctx.testApp.app.inject({ method: 'GET', url: '/openapi.json' });
    assert.ok(checkCustomerPayload(reference.json()).violations.length > 0);
    for (const url of ['/docs/json', '/docs/ui/json']) {
      const response = await ctx.testApp.app.inject({ method: 'GET', url });
      assert.equal(response.statusCode, 200, `${url}: ${response.body.slice(0, 200)}`);
      assert.deepEqual(response.json(), reference.json(), url);
    }
  });
});
